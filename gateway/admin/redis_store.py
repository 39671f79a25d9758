"""The Redis admin store: runtime keys, audit log and idempotency claims shared by every replica.

Every key carries the hash tag ``{admin}`` so a change's steps (record, digest index, version) sit in one
Redis Cluster slot and run as one Lua script. Records are JSON strings; ``ids`` is a sorted set of every
record id (all scores 0, so ZRANGEBYLEX walks them in id order for pagination). Unlike the feature
state, the admin store never fails open: an unreachable Redis is an error (503), because answering
"unknown key" or "not revoked" from nothing would be wrong either way.
"""

from __future__ import annotations

import json
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.admin.records import KeyRecord, TeamRecord
from gateway.admin.store import IdempotencyClaim
from gateway.stores import StoreUnavailable
from gateway.stores.redis_url import close, connect

_P = "gw:admin:{admin}:"
VERSION = _P + "version"
IDS = _P + "ids"
AUDIT = _P + "audit"
AUDIT_SEQ = _P + "audit-seq"
TEAMS = _P + "teams"

# KEYS: record, ids, version, digest index keys...; ARGV: record json, id, expected revision (0: insert).
_WRITE = """
local current = redis.call('GET', KEYS[1])
local expected = tonumber(ARGV[3])
if expected == 0 then
  if current then return 0 end
else
  if not current then return 0 end
  if tonumber(cjson.decode(current)['revision']) ~= expected then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
for i = 4, #KEYS do redis.call('SET', KEYS[i], ARGV[2]) end
redis.call('INCR', KEYS[3])
return 1
"""

# KEYS: teams hash, version; ARGV: name, expected revision (0: insert), team json ('' deletes).
_TEAM_WRITE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
local expected = tonumber(ARGV[2])
if expected == 0 then
  if current then return 0 end
else
  if not current then return 0 end
  if tonumber(cjson.decode(current)['revision'] or 1) ~= expected then return 0 end
end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
redis.call('INCR', KEYS[2])
return 1
"""

# KEYS: seq, log; ARGV: entry json without seq. The list index of entry n is n - 1.
_APPEND = """
local n = redis.call('INCR', KEYS[1])
redis.call('RPUSH', KEYS[2], ARGV[1])
return n
"""


def _record_key(key_id: str) -> str:
    return _P + "key:" + key_id


def _digest_key(digest: str) -> str:
    return _P + "digest:" + digest


class RedisAdminStore:
    """An :class:`~gateway.admin.store.AdminStore` in the Redis at ``url``."""

    backend = "redis"

    def __init__(self, url: str, *, timeout: float = 1.0) -> None:
        self._client = connect(url, timeout=timeout)
        self._write = self._client.register_script(_WRITE)
        self._append = self._client.register_script(_APPEND)
        self._team_write = self._client.register_script(_TEAM_WRITE)

    async def _do(self, command: Any) -> Any:
        try:
            return await command
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable("the admin store is unavailable") from exc

    async def version(self) -> int:
        """The change counter."""
        return int(await self._do(self._client.get(VERSION)) or 0)

    async def _store(self, record: KeyRecord, revision: int) -> bool:
        digests = [_digest_key(record.digest)]
        if record.previous_digest:
            digests.append(_digest_key(record.previous_digest))
        done = await self._do(
            self._write(
                keys=[_record_key(record.id), IDS, VERSION, *digests],
                args=[record.model_dump_json(), record.id, revision],
            )
        )
        return bool(done)

    async def insert_key(self, record: KeyRecord) -> None:
        """Add ``record``; a record with the same id is an error (ids are random, so it is a bug)."""
        if not await self._store(record, 0):
            raise RuntimeError(f"key record {record.id} already exists")

    async def replace_key(self, record: KeyRecord, revision: int) -> bool:
        """Compare-and-set on the stored revision."""
        return await self._store(record, revision)

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        """The record with ``key_id``."""
        raw = await self._do(self._client.get(_record_key(key_id)))
        return None if raw is None else KeyRecord.model_validate_json(raw)

    async def key_by_digest(self, digest: str) -> KeyRecord | None:
        """The record a digest index points at, if it still holds that digest (an index left by an old
        rotation may point at a record that moved on)."""
        key_id = await self._do(self._client.get(_digest_key(digest)))
        if key_id is None:
            return None
        record = await self.key_by_id(key_id.decode())
        if record is None or digest not in (record.digest, record.previous_digest):
            return None
        return record

    async def list_keys(self, after: str | None, limit: int) -> list[KeyRecord]:
        """Records after ``after`` in id order."""
        start = f"({after}" if after else "-"
        ids = await self._do(self._client.zrangebylex(IDS, start, "+", start=0, num=limit))
        if not ids:
            return []
        raws = await self._do(self._client.mget([_record_key(i.decode()) for i in ids]))
        return [KeyRecord.model_validate_json(raw) for raw in raws if raw is not None]

    async def append_audit(self, entry: dict[str, Any]) -> int:
        """Append ``entry``; returns its sequence number."""
        return int(await self._do(self._append(keys=[AUDIT_SEQ, AUDIT], args=[json.dumps(entry)])))

    async def list_audit(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Entries after ``after``, oldest first."""
        raws = await self._do(self._client.lrange(AUDIT, after, after + limit - 1))
        return [{"seq": after + i + 1, **json.loads(raw)} for i, raw in enumerate(raws)]

    async def claim(self, token: str, claim: IdempotencyClaim, ttl_s: int) -> IdempotencyClaim | None:
        """SET NX with a TTL; the existing claim when there is one."""
        key = _P + "idem:" + token
        value = json.dumps({"body_hash": claim.body_hash, "payload": claim.payload})
        if await self._do(self._client.set(key, value, nx=True, ex=max(1, ttl_s))):
            return None
        raw = await self._do(self._client.get(key))
        if raw is None:  # expired between the two calls: this claim may take its place
            return await self.claim(token, claim, ttl_s)
        existing = json.loads(raw)
        return IdempotencyClaim(existing["body_hash"], existing["payload"])

    async def insert_team(self, record: TeamRecord) -> bool:
        """HSETNX in the teams hash, bumping the version in the same script."""
        return await self._team_change(record.name, 0, record.model_dump_json())

    async def replace_team(self, record: TeamRecord, revision: int) -> bool:
        """Compare-and-set on the stored revision."""
        return await self._team_change(record.name, revision, record.model_dump_json())

    async def delete_team(self, name: str, revision: int) -> bool:
        """Delete if the stored revision is ``revision``."""
        return await self._team_change(name, revision, "")

    async def _team_change(self, name: str, revision: int, team: str) -> bool:
        done = await self._do(self._team_write(keys=[TEAMS, VERSION], args=[name, revision, team]))
        return bool(done)

    async def team(self, name: str) -> TeamRecord | None:
        """The team called ``name``."""
        raw = await self._do(self._client.hget(TEAMS, name))
        return None if raw is None else TeamRecord.parse(raw)

    async def list_teams(self, after: str | None, limit: int) -> list[TeamRecord]:
        """Teams after ``after`` in name order (a hash has no order: every name is read and sorted; teams
        are few, unlike keys)."""
        names = sorted(n.decode() for n in await self._do(self._client.hkeys(TEAMS)))
        chosen = [n for n in names if after is None or n > after][:limit]
        if not chosen:
            return []
        raws = await self._do(self._client.hmget(TEAMS, chosen))
        return [TeamRecord.parse(raw) for raw in raws if raw is not None]

    async def close(self) -> None:
        """Close the connection pool."""
        await close(self._client)
