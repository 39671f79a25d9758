"""Rate-limit status of keys (config file or runtime), over the rate-limit stage (features/ratelimit.py).

One implementation for every door: ``GET /admin/v1/keys/{id}/rate-limit`` reads one key, GraphQL's
``Key.rateLimits`` a page of keys at once (its DataLoader hands the whole page here). A read never spends
allowance or frees a slot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.admin.keys import CONFIG_PREFIX, KeyAdmin
from gateway.admin.records import TeamRecord
from gateway.features.ratelimit import RateLimitStage
from gateway.pipeline import KeyIdentity


class RateLimits:
    """Rate-limit status of keys; ``stage()`` is the running rate-limit stage."""

    def __init__(self, keys: KeyAdmin, stage: Callable[[], RateLimitStage]) -> None:
        self.keys = keys
        self.stage = stage

    async def key_status(self, key_id: str) -> dict[str, Any]:
        """The limits of the key with API id ``key_id``: what is used and remaining now (404 when unknown)."""
        return (await self.of_views([await self.keys.get(key_id)]))[0]

    async def of_views(self, views: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The status of each key, given as the admin API shows it (``KeyAdmin.get`` or ``page``): one
        admin-store read per distinct runtime team and one state-store read for them all."""
        teams: dict[str, TeamRecord | None] = {}
        for view in views:
            team = view.get("team")
            if view["source"] != "config" and team is not None and team not in teams:
                teams[team] = await self.keys.store.team(team)
        identities = [_identity(view, teams) for view in views]
        statuses = await self.stage().status(identities)
        return [
            {"key_id": view["id"], "name": view["name"], "limits": limits}
            for view, limits in zip(views, statuses, strict=True)
        ]


def _identity(view: dict[str, Any], teams: dict[str, TeamRecord | None]) -> KeyIdentity:
    """The identity requests made with the key run as, as far as rate limits go: a config-file key's
    limits are the stage's own (by its id) and its team brings none; a runtime key carries its rpm/tpm and
    its runtime team's, exactly as ``KeyRecord.identity`` builds them for a request."""
    if view["source"] == "config":
        own_id = view["id"].removeprefix(CONFIG_PREFIX)
        return KeyIdentity(name=view["name"], key_id=own_id, team=view["team"])
    team = teams.get(view["team"]) if view.get("team") is not None else None
    return KeyIdentity(
        name=view["name"],
        key_id=view["id"],
        team=view.get("team"),
        rpm=view.get("rpm"),
        tpm=view.get("tpm"),
        team_rpm=None if team is None else team.rpm,
        team_tpm=None if team is None else team.tpm,
    )
