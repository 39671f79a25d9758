"""The admin store's two backends (SQLite, Redis) behave the same, and the key directory's cache honours
changes within its sync interval."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis

from gateway.admin.directory import KeyDirectory
from gateway.admin.records import KeyRecord, TeamRecord, digest_hex, hint, new_id, new_secret
from gateway.admin.redis_store import RedisAdminStore
from gateway.admin.sqlite_store import SQLiteAdminStore
from gateway.admin.store import AdminStore, IdempotencyClaim, admin_database_beside
from gateway.features.budgets import BudgetConfig

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


def team(name: str, **fields: object) -> TeamRecord:
    now = time.time()
    return TeamRecord.model_validate({"name": name, "created_at": now, "updated_at": now, **fields})


async def test_a_team_is_inserted_once_changed_by_revision_and_deleted_each_bumping_the_version(
    store: AdminStore,
) -> None:
    rec = team("research", budget={"limit_usd": "5", "period": "daily"}, models=["m"], rpm=3, tpm=900)
    before = await store.version()
    assert await store.insert_team(rec)
    assert not await store.insert_team(team("research"))  # the name is taken
    assert await store.version() == before + 1
    assert await store.team("research") == rec
    assert await store.team("other") is None
    changed = rec.model_copy(update={"rpm": 10, "revision": 2})
    assert await store.replace_team(changed, 1)
    assert not await store.replace_team(rec.model_copy(update={"tpm": 1}), 1)  # a stale writer loses
    assert await store.team("research") == changed
    assert await store.version() == before + 2
    assert not await store.delete_team("research", 1)
    assert await store.delete_team("research", 2)
    assert await store.team("research") is None
    assert await store.version() == before + 3


async def test_teams_are_listed_in_name_order_from_a_position(store: AdminStore) -> None:
    for name in ["c", "a", "d", "b"]:
        assert await store.insert_team(team(name))
    first = await store.list_teams(None, 2)
    assert [t.name for t in first] == ["a", "b"]
    assert [t.name for t in await store.list_teams("b", 10)] == ["c", "d"]


async def test_a_team_stored_before_teams_had_records_is_read_as_one_without_limits() -> None:
    old = (
        '{"team_id": "legacy", "team_alias": "legacy", "source": "api", "budget": null, "metadata": {"a": 1}}'
    )
    rec = TeamRecord.parse(old)
    assert (rec.name, rec.budget, rec.models, rec.rpm, rec.metadata) == ("legacy", None, None, None, {"a": 1})


async def test_a_runtime_key_carries_its_runtime_teams_budget_models_and_limits() -> None:
    store = SQLiteAdminStore(":memory:")
    clock = Clock()
    directory = KeyDirectory(store, 0.5, clock=clock)
    secret = new_secret()
    await store.insert_key(record(secret).model_copy(update={"team": "t", "models": ["a", "b"]}))
    budget = BudgetConfig(limit_usd="2", period="monthly")
    await store.insert_team(team("t", budget=budget, models=["b", "c"], rpm=7, tpm=70))
    identity = await directory.identify(bytes.fromhex(digest_hex(secret)))
    assert identity is not None
    assert identity.models == frozenset({"b"})  # the team's list narrows the key's
    assert (identity.team, identity.team_budget, identity.team_rpm, identity.team_tpm) == ("t", budget, 7, 70)
    # A change to the team is seen once the sync interval passed, like a change to a key.
    rec = await store.team("t")
    assert rec is not None
    assert await store.replace_team(rec.model_copy(update={"models": None, "revision": 2}), 1)
    clock.now = 0.6
    identity = await directory.identify(bytes.fromhex(digest_hex(secret)))
    assert identity is not None and identity.models == frozenset({"a", "b"})
    await store.close()
