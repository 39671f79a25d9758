"""Everything the admin API needs at run time, opened once per gateway and kept across reloads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.admin.access import FailedLogins
from gateway.admin.directory import KeyDirectory
from gateway.admin.keys import KeyAdmin
from gateway.admin.store import AdminStore, open_admin_store
from gateway.admin.teams import TeamAdmin
from gateway.stores import Store

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


@dataclass(frozen=True)
class AdminService:
    """The admin store, the request path's key directory over it, key and team management, failed logins."""

    store: AdminStore
    directory: KeyDirectory
    keys: KeyAdmin
    teams: TeamAdmin
    failed_logins: FailedLogins

    @classmethod
    def open(cls, config: GatewayConfig, state: Store, current: Callable[[], GatewayConfig]) -> AdminService:
        """The service for ``config``; ``current()`` returns the running config (it changes on reload)."""
        store = open_admin_store(config)
        directory = KeyDirectory(store, config.admin.sync_interval_s)
        keys = KeyAdmin(store, directory, current)
        return cls(store, directory, keys, TeamAdmin(store, directory, current), FailedLogins(state))

    async def close(self) -> None:
        """Close the admin store."""
        await self.store.close()
