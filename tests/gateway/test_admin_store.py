"""The admin store's two backends (SQLite, Redis) behave the same, and the key directory's cache honours
changes within its sync interval."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis

from gateway.admin.directory import KeyDirectory
from gateway.admin.records import KeyRecord, digest_hex, hint, new_id, new_secret
from gateway.admin.redis_store import RedisAdminStore
from gateway.admin.sqlite_store import SQLiteAdminStore
from gateway.admin.store import AdminStore, IdempotencyClaim, admin_database_beside

pytestmark = pytest.mark.anyio


def record(secret: str, name: str = "svc") -> KeyRecord:
    now = time.time()
    return KeyRecord(
        id=new_id(), name=name, digest=digest_hex(secret), hint=hint(secret), created_at=now, updated_at=now
    )


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[AdminStore]:
    if request.param == "sqlite":
        backend: AdminStore = SQLiteAdminStore(str(tmp_path) + "/admin.sqlite3")
    else:
        # A database of its own on the session's server: the admin store's keys have fixed names.
        url = request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/7"
        redis.Redis.from_url(url).flushdb()
        backend = RedisAdminStore(url)
    yield backend
    await backend.close()


async def test_a_key_is_found_by_id_and_digest_and_each_change_bumps_the_version(store: AdminStore) -> None:
    secret = new_secret()
    rec = record(secret)
    before = await store.version()
    await store.insert_key(rec)
    assert await store.version() == before + 1
    assert await store.key_by_id(rec.id) == rec
    assert await store.key_by_digest(digest_hex(secret)) == rec
    assert await store.key_by_digest(digest_hex(new_secret())) is None
    assert await store.key_by_id("key_missing") is None


async def test_replace_is_compare_and_set_and_indexes_the_new_digest(store: AdminStore) -> None:
    old, new = new_secret(), new_secret()
    rec = record(old)
    await store.insert_key(rec)
    rotated = rec.model_copy(
        update={"digest": digest_hex(new), "previous_digest": rec.digest, "revision": rec.revision + 1}
    )
    assert await store.replace_key(rotated, rec.revision)
    # A second writer holding the old revision loses.
    assert not await store.replace_key(rec.model_copy(update={"name": "lost"}), rec.revision)
    assert (await store.key_by_id(rec.id)) == rotated
    assert (await store.key_by_digest(digest_hex(new))) == rotated
    assert (await store.key_by_digest(digest_hex(old))) == rotated  # previous secret, still indexed
    # Once the previous digest is dropped, the old secret finds nothing.
    dropped = rotated.model_copy(update={"previous_digest": None, "revision": rotated.revision + 1})
    assert await store.replace_key(dropped, rotated.revision)
    assert await store.key_by_digest(digest_hex(old)) is None


async def test_keys_are_listed_in_creation_order_from_a_position(store: AdminStore) -> None:
    records = [record(new_secret(), f"k{i}") for i in range(5)]
    for rec in records:
        await store.insert_key(rec)
    first = await store.list_keys(None, 2)
    assert [r.name for r in first] == ["k0", "k1"]
    rest = await store.list_keys(first[-1].id, 10)
    assert [r.name for r in rest] == ["k2", "k3", "k4"]


async def test_audit_entries_are_numbered_and_paged(store: AdminStore) -> None:
    for i in range(3):
        assert await store.append_audit({"action": f"a{i}"}) == i + 1
    assert [e["action"] for e in await store.list_audit(0, 2)] == ["a0", "a1"]
    assert await store.list_audit(1, 5) == [{"seq": 2, "action": "a1"}, {"seq": 3, "action": "a2"}]


async def test_an_idempotency_claim_is_taken_once(store: AdminStore) -> None:
    first = IdempotencyClaim("h1", {"id": "key_1"})
    assert await store.claim("token", first, 60) is None
    assert await store.claim("token", IdempotencyClaim("h2", {"id": "key_2"}), 60) == first


async def test_runtime_keys_survive_reopening_the_sqlite_file(tmp_path: object) -> None:
    path = str(tmp_path) + "/admin.sqlite3"
    rec = record(new_secret())
    first = SQLiteAdminStore(path)
    await first.insert_key(rec)
    await first.close()
    again = SQLiteAdminStore(path)
    assert await again.key_by_id(rec.id) == rec
    await again.close()


def test_the_admin_database_sits_beside_the_ledger() -> None:
    assert admin_database_beside("/var/lib/gw/usage.sqlite3") == "/var/lib/gw/usage-admin.sqlite3"
    assert admin_database_beside(":memory:") == ":memory:"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_directory_sees_a_change_made_elsewhere_once_the_sync_interval_passed(
    tmp_path: object,
) -> None:
    path = str(tmp_path) + "/admin.sqlite3"
    here, elsewhere = SQLiteAdminStore(path), SQLiteAdminStore(path)  # two replicas sharing the file
    clock = Clock()
    directory = KeyDirectory(here, 0.5, clock=clock)
    secret = new_secret()
    rec = record(secret)
    await elsewhere.insert_key(rec)
    identity = await directory.identify(bytes.fromhex(digest_hex(secret)))
    assert identity is not None and identity.key_id == rec.id and identity.name == "svc"
    revoked = rec.model_copy(update={"revoked_at": time.time(), "revision": 2})
    assert await elsewhere.replace_key(revoked, 1)
    # Within the interval the cached answer stands; past it, the version moved and the cache is dropped.
    clock.now = 0.2
    assert await directory.identify(bytes.fromhex(digest_hex(secret))) is not None
    clock.now = 0.6
    assert await directory.identify(bytes.fromhex(digest_hex(secret))) is None
    await here.close()
    await elsewhere.close()


async def test_expiry_and_the_rotation_grace_period_are_checked_on_every_lookup() -> None:
    store = SQLiteAdminStore(":memory:")
    wall = Clock()
    wall.now = 1000.0
    directory = KeyDirectory(store, 0.5, wall=wall)
    old, new = new_secret(), new_secret()
    rec = record(new).model_copy(
        update={"previous_digest": digest_hex(old), "previous_until": 1010.0, "expires_at": 1020.0}
    )
    await store.insert_key(rec)
    assert await directory.identify(bytes.fromhex(digest_hex(old))) is not None
    wall.now = 1010.0
    assert await directory.identify(bytes.fromhex(digest_hex(old))) is None
    assert await directory.identify(bytes.fromhex(digest_hex(new))) is not None
    wall.now = 1020.0
    assert await directory.identify(bytes.fromhex(digest_hex(new))) is None
    await store.close()
