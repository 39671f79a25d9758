"""Runtime virtual keys: create, list, read, update, rotate and revoke, each audited.

:class:`KeyAdmin` is the one implementation behind every door (``/admin/v1``, the LiteLLM aliases).
Keys from the config file are listed and read here too (source ``config``) but never changed: the file
is their source of truth, so a change through the API would be undone by the next reload.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.admin.access import AdminPrincipal
from gateway.admin.directory import KeyDirectory
from gateway.admin.records import KeyRecord, digest_hex, hint, iso, new_id, new_secret, public_view
from gateway.admin.schemas import KeyCreate, KeyRotate, KeyUpdate
from gateway.admin.store import AdminStore, IdempotencyClaim
from gateway.auth import key_id
from gateway.errors import GatewayError, invalid_request

R = TypeVar("R")  # a runtime record (key or team) in a mixed page

if TYPE_CHECKING:
    from gateway.config import GatewayConfig, KeyConfig

CONFIG_PREFIX = "cfg_"
IDEMPOTENCY_TTL_S = 24 * 3600
MAX_PAGE = 100


def not_found(key: str) -> GatewayError:
    """404 for an unknown key id."""
    return GatewayError(404, f"No key with id '{key}'.", "invalid_request_error", "key_not_found", param="id")


def read_only(key: str) -> GatewayError:
    """409 for a change to a key from the config file."""
    return GatewayError(
        409,
        f"The key '{key}' is defined in the config file; change it there (and reload), not through the API.",
        "invalid_request_error",
        "key_read_only",
        param="id",
    )


def precondition_failed(etag: str) -> GatewayError:
    """412: ``If-Match`` names another version of the key than the stored one."""
    return GatewayError(
        412,
        f"The key changed since you read it (its ETag is now {etag}); read it again and retry.",
        "invalid_request_error",
        "precondition_failed",
        param="If-Match",
    )


def encode_cursor(data: dict[str, Any]) -> str:
    """An opaque pagination cursor."""
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    """The data of a cursor made by :func:`encode_cursor`; 400 naming ``cursor`` otherwise."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise bad_cursor()
    return data


def bad_cursor() -> GatewayError:
    """400 naming ``cursor``: it is not one this API made."""
    return invalid_request("Invalid cursor: pass the next_cursor of a previous page.", param="cursor")


def page_size(limit: int | None) -> int:
    """``limit`` checked (1 to 100, default 50); 400 naming ``limit`` otherwise."""
    if limit is None:
        return 50
    if not 1 <= limit <= MAX_PAGE:
        raise invalid_request(f"limit must be between 1 and {MAX_PAGE}.", param="limit")
    return limit


async def mixed_page(
    cursor: str | None,
    limit: int | None,
    fixed: Sequence[dict[str, Any]],
    runtime: Callable[[str | None, int], Awaitable[Sequence[R]]],
    view: Callable[[R], dict[str, Any]],
    position: Callable[[R], str],
) -> dict[str, Any]:
    """A page of ``fixed`` entries (the config file's, by index) then the store's runtime records
    (``runtime(after, n)``, in ``position`` order), with an opaque ``next_cursor`` (None on the last page)."""
    size = page_size(limit)
    where = decode_cursor(cursor) if cursor else {"config": 0}
    items: list[dict[str, Any]] = []
    after: str | None = None
    if "config" in where:
        start = where["config"]
        if not isinstance(start, int) or start < 0:
            raise bad_cursor()
        items = list(fixed[start : start + size])
        if start + len(items) < len(fixed):
            return {"data": items, "next_cursor": encode_cursor({"config": start + len(items)})}
    else:
        last = where.get("after")
        if not isinstance(last, str):
            raise bad_cursor()
        after = last
    room = size - len(items)
    # One more than fits tells whether another page follows.
    records = await runtime(after, room + 1)
    page = records[:room]
    items.extend(view(r) for r in page)
    if len(records) <= room:
        return {"data": items, "next_cursor": None}
    return {
        "data": items,
        "next_cursor": encode_cursor({"after": position(page[-1]) if page else after or ""}),
    }


def check_models(config: GatewayConfig, models: list[str] | str | None) -> None:
    """400 naming ``models[i]`` when a listed model is not one of ``config``'s aliases."""
    if not isinstance(models, list):
        return
    known = {m.name for m in config.models}
    for i, model in enumerate(models):
        if model not in known:
            raise invalid_request(f"models[{i}]: unknown model '{model}'.", param=f"models[{i}]")


def check_regions(config: GatewayConfig, regions: list[str] | None) -> None:
    """400 naming ``allowed_regions[i]`` when no route of ``config`` is in that region (as the config file's
    keys are checked: a typo would otherwise leave the key no route at all)."""
    known = sorted({route.region for model in config.models for route in model.routes if route.region})
    for i, region in enumerate(regions or ()):
        if region not in known:
            where = f"regions on routes: {', '.join(known)}" if known else "no route has a region"
            raise invalid_request(
                f"allowed_regions[{i}]: no route is in region '{region}' ({where}).",
                param=f"allowed_regions[{i}]",
            )


def config_key_id(entry: KeyConfig) -> str:
    """The API id of a key from the config file (from its digest's short hash, as in the usage ledger)."""
    return CONFIG_PREFIX + key_id(entry.key)


def config_key_view(entry: KeyConfig) -> dict[str, Any]:
    """A config-file key as the API shows it: read-only, and nothing of its secret."""
    return {
        "id": config_key_id(entry),
        "name": entry.name,
        "source": "config",
        "read_only": True,
        "key": None,
        "models": entry.models,
        "rpm": entry.rpm,
        "tpm": entry.tpm,
        "budget": None if entry.budget is None else entry.budget.model_dump(mode="json", exclude_none=True),
        "team": entry.team,
        "allowed_regions": entry.allowed_regions,
    }


def _seal(secret: str, idempotency_key: str) -> str:
    # The replayed answer must carry the secret again, but the store must not: it keeps the secret XORed
    # with a keystream derived from the Idempotency-Key, which is itself stored only hashed (another domain).
    stream = hashlib.shake_256(b"gw-idempotency-seal\0" + idempotency_key.encode()).digest(len(secret))
    return base64.b64encode(bytes(a ^ b for a, b in zip(secret.encode(), stream, strict=True))).decode()


def _unseal(sealed: str, idempotency_key: str) -> str:
    raw = base64.b64decode(sealed)
    stream = hashlib.shake_256(b"gw-idempotency-seal\0" + idempotency_key.encode()).digest(len(raw))
    return bytes(a ^ b for a, b in zip(raw, stream, strict=True)).decode()


class KeyAdmin:
    """Key management over an :class:`AdminStore`; ``config()`` is the running config (it can reload)."""

    def __init__(
        self,
        store: AdminStore,
        directory: KeyDirectory,
        config: Callable[[], GatewayConfig],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.directory = directory
        self.config = config
        self.clock = clock

    def config_key(self, key: str) -> KeyConfig | None:
        """The config-file key with API id ``key``, or None."""
        if not key.startswith(CONFIG_PREFIX):
            return None
        return next((e for e in self.config().auth.keys if config_key_id(e) == key), None)

    def _check_models(self, models: list[str] | str | None) -> None:
        check_models(self.config(), models)

    def _check_name(self, name: str) -> None:
        if any(entry.name == name for entry in self.config().auth.keys):
            # Budgets and usage are kept per key name: sharing one with a config key would mix them.
            raise GatewayError(
                409,
                f"name: the config file already defines a key named '{name}'.",
                "invalid_request_error",
                "name_taken",
                param="name",
            )

    async def _audit(
        self,
        actor: AdminPrincipal,
        action: str,
        target: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        request_id: str | None,
    ) -> None:
        await self.store.append_audit(
            {
                "at": iso(self.clock()),
                "actor": {"id": actor.id, "name": actor.name},
                "action": action,
                "target": target,
                "before": before,
                "after": after,
                "request_id": request_id,
            }
        )

    async def create(
        self,
        spec: KeyCreate,
        actor: AdminPrincipal,
        *,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Create a key; the answer holds its ``secret``, the only time it is shown.

        With ``idempotency_key`` a repeat of the same body by the same caller answers the first result
        again (secret included) instead of creating a second key; another body is 422.
        """
        self._check_models(spec.models)
        check_regions(self.config(), spec.allowed_regions)
        self._check_name(spec.name)
        record_id, secret = new_id(), new_secret()
        if idempotency_key is not None:
            replay = await self._claim(spec, actor, idempotency_key, record_id, secret)
            if replay is not None:
                return replay
        now = self.clock()
        record = KeyRecord(
            id=record_id,
            name=spec.name,
            digest=digest_hex(secret),
            hint=hint(secret),
            models=None if spec.models == "*" else list(spec.models),
            rpm=spec.rpm,
            tpm=spec.tpm,
            budget=spec.budget,
            team=spec.team,
            metadata=spec.metadata,
            expires_at=None if spec.expires_at is None else spec.expires_at.timestamp(),
            allowed_regions=spec.allowed_regions,
            created_at=now,
            updated_at=now,
        )
        await self.store.insert_key(record)
        self.directory.forget()
        view = public_view(record)
        await self._audit(actor, "key.create", record.id, None, view, request_id)
        return {**view, "secret": secret}

    async def _claim(
        self, spec: KeyCreate, actor: AdminPrincipal, idempotency_key: str, record_id: str, secret: str
    ) -> dict[str, Any] | None:
        if not 1 <= len(idempotency_key) <= 255:
            raise invalid_request("Idempotency-Key must be 1 to 255 characters.", param="Idempotency-Key")
        # Scoped to the caller: two admins choosing the same key never see each other's answer.
        token = hashlib.sha256(f"{actor.id}\0{idempotency_key}".encode()).hexdigest()
        body_hash = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()
        claim = IdempotencyClaim(body_hash, {"id": record_id, "sealed": _seal(secret, idempotency_key)})
        existing = await self.store.claim(token, claim, IDEMPOTENCY_TTL_S)
        if existing is None:
            return None
        if existing.body_hash != body_hash:
            raise GatewayError(
                422,
                "This Idempotency-Key was used with a different body; use a new key for a new request.",
                "invalid_request_error",
                "idempotency_key_reused",
                param="Idempotency-Key",
            )
        record = await self.store.key_by_id(existing.payload["id"])
        if record is None:
            raise GatewayError(
                409,
                "A request with this Idempotency-Key is still in progress; retry shortly.",
                "invalid_request_error",
                "idempotency_in_progress",
                param="Idempotency-Key",
            )
        return {**public_view(record), "secret": _unseal(existing.payload["sealed"], idempotency_key)}

    async def get(self, key: str) -> dict[str, Any]:
        """One key (runtime or config file), never its secret; 404 when unknown."""
        if (entry := self.config_key(key)) is not None:
            return config_key_view(entry)
        record = await self.store.key_by_id(key)
        if record is None:
            raise not_found(key)
        return public_view(record)

    async def page(self, cursor: str | None, limit: int | None) -> dict[str, Any]:
        """A page of keys: config-file keys first, then runtime keys in creation order."""
        fixed = [config_key_view(e) for e in self.config().auth.keys]
        return await mixed_page(cursor, limit, fixed, self.store.list_keys, public_view, lambda r: r.id)

    async def _runtime(self, key: str, if_match: str | None) -> KeyRecord:
        if self.config_key(key) is not None:
            raise read_only(key)
        record = await self.store.key_by_id(key)
        if record is None:
            raise not_found(key)
        if if_match is not None and if_match.strip() not in (record.etag, "*"):
            raise precondition_failed(record.etag)
        return record

    async def _replace(
        self,
        before: KeyRecord,
        after: KeyRecord,
        action: str,
        actor: AdminPrincipal,
        request_id: str | None,
    ) -> dict[str, Any]:
        if not await self.store.replace_key(after, before.revision):
            current = await self.store.key_by_id(before.id)
            raise precondition_failed(current.etag if current is not None else "gone")
        self.directory.forget()
        view = public_view(after)
        await self._audit(actor, action, before.id, public_view(before), view, request_id)
        return view

    async def update(
        self,
        key: str,
        change: KeyUpdate,
        actor: AdminPrincipal,
        *,
        if_match: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Change the fields sent in ``change``; 412 when ``if_match`` is not the key's current ETag."""
        record = await self._runtime(key, if_match)
        fields = change.model_fields_set
        values: dict[str, Any] = {}
        for field in fields:
            value = getattr(change, field)
            if field == "name":
                if value is None:
                    raise invalid_request("name: may not be null.", param="name")
                self._check_name(value)
            elif field == "models":
                self._check_models(value)
                value = None if value in (None, "*") else list(value)
            elif field == "metadata":
                value = value or {}
            elif field == "expires_at":
                value = None if value is None else value.timestamp()
            elif field == "allowed_regions":
                check_regions(self.config(), value)
            values[field] = value
        updated = record.model_copy(
            update={**values, "revision": record.revision + 1, "updated_at": self.clock()}
        )
        return await self._replace(record, updated, "key.update", actor, request_id)

    async def rotate(
        self,
        key: str,
        spec: KeyRotate,
        actor: AdminPrincipal,
        *,
        if_match: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """A new secret (in the answer, once); the old one keeps working for the grace period."""
        record = await self._runtime(key, if_match)
        if record.revoked_at is not None:
            raise GatewayError(409, f"The key '{key}' is revoked.", "invalid_request_error", "key_revoked")
        grace = (
            spec.grace_period_s if spec.grace_period_s is not None else self.config().admin.rotation_grace_s
        )
        now = self.clock()
        secret = new_secret()
        rotated = record.model_copy(
            update={
                "digest": digest_hex(secret),
                "hint": hint(secret),
                "previous_digest": record.digest if grace > 0 else None,
                "previous_until": now + grace if grace > 0 else None,
                "revision": record.revision + 1,
                "updated_at": now,
            }
        )
        view = await self._replace(record, rotated, "key.rotate", actor, request_id)
        return {**view, "secret": secret}

    async def revoke(
        self,
        key: str,
        actor: AdminPrincipal,
        *,
        if_match: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Revoke the key (and any previous secret still in its grace period); its usage history stays."""
        record = await self._runtime(key, if_match)
        if record.revoked_at is not None:
            return public_view(record)
        now = self.clock()
        revoked = record.model_copy(
            update={
                "revoked_at": now,
                "previous_until": None,
                "revision": record.revision + 1,
                "updated_at": now,
            }
        )
        return await self._replace(record, revoked, "key.revoke", actor, request_id)

    async def audit(self, cursor: str | None, limit: int | None) -> dict[str, Any]:
        """A page of the audit log, oldest first."""
        size = page_size(limit)
        after = decode_cursor(cursor).get("seq") if cursor else 0
        if not isinstance(after, int) or after < 0:
            raise bad_cursor()
        entries = await self.store.list_audit(after, size + 1)
        page = entries[:size]
        more = len(entries) > size
        return {"data": page, "next_cursor": encode_cursor({"seq": page[-1]["seq"]}) if more else None}

    async def find(self, key: str) -> KeyRecord | None:
        """The runtime key with record id ``key``, or whose current or previous secret is ``key`` (the
        LiteLLM calls name keys by their secret)."""
        if key.startswith("key_"):
            return await self.store.key_by_id(key)
        return await self.store.key_by_digest(digest_hex(key))

    async def of_team(self, team: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The keys of ``team`` (config-file keys, then runtime keys), up to ``limit`` runtime records
        scanned (a compatibility read, not a hot path)."""
        found = [config_key_view(e) for e in self.config().auth.keys if e.team == team]
        after: str | None = None
        scanned = 0
        while scanned < limit:
            page = await self.store.list_keys(after, MAX_PAGE)
            if not page:
                break
            scanned += len(page)
            found.extend(public_view(r) for r in page if r.team == team)
            after = page[-1].id
        return found
