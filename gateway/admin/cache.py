"""Cache purge for the admin API: by model alias, by key, both, or all, over generation tokens
(gateway/features/cache_generations.py). Audited; effective at once on every replica sharing the store."""

from __future__ import annotations

from typing import Any

from gateway.admin.access import AdminPrincipal
from gateway.admin.keys import KeyAdmin, iso
from gateway.admin.schemas import CachePurge
from gateway.auth import key_id as config_key_hash
from gateway.errors import GatewayError, invalid_request
from gateway.features import cache_generations
from gateway.features.cache import CacheConfig
from gateway.stores import Store, StoreUnavailable


class CacheAdmin:
    """Purges the response cache in ``store`` for keys and models known to ``keys`` (and its config)."""

    def __init__(self, keys: KeyAdmin, store: Store) -> None:
        self.keys = keys
        self.store = store

    async def _tenant(self, key_id: str) -> str:
        # With no cache section there are no shared groups: every key is its own tenant.
        cache = self.keys.config().features.cache or CacheConfig()
        entry = self.keys.config_key(key_id)
        if entry is not None:
            return cache.tenant_of(entry.name, config_key_hash(entry.key))
        record = await self.keys.store.key_by_id(key_id)
        if record is None:
            raise GatewayError(
                404, f"key_id: no key with id '{key_id[:200]}'.", "invalid_request_error", "key_not_found",
                param="key_id",
            )  # fmt: skip
        return cache.tenant_of(record.name, record.id)

    async def purge(self, spec: CachePurge, actor: AdminPrincipal, request_id: str | None) -> dict[str, Any]:
        """Make the entries ``spec`` names unreachable (audited). Purging a key that shares its cache with a
        group (``features.cache.shared``) purges the group's entries: they are the ones it reads."""
        if spec.model is not None and spec.model not in {m.name for m in self.keys.config().models}:
            raise invalid_request(f"model: unknown model '{spec.model}'.", param="model")
        tenant = None if spec.key_id is None else await self._tenant(spec.key_id)
        try:
            kept = await cache_generations.purge(self.store, model=spec.model, tenant=tenant)
        except StoreUnavailable:
            kept = False
        if not kept:
            raise GatewayError(
                503, "The cache could not be purged: the shared state store cannot be reached.",
                "service_unavailable", "state_store_unavailable",
            )  # fmt: skip
        target = spec.model_dump(exclude_defaults=True)
        shared = tenant is not None and tenant.startswith("group:")
        result = {"purged": target, "shared_group": tenant[6:] if shared and tenant else None}
        await self.keys.store.append_audit(
            {"at": iso(self.keys.clock()), "actor": {"id": actor.id, "name": actor.name},
             "action": "cache.purge", "target": target, "before": None, "after": result,
             "request_id": request_id}
        )  # fmt: skip
        return result
