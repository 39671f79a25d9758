"""Virtual keys: lookup by digest, no raw key kept, Bearer and x-api-key, the master key."""

from __future__ import annotations

import pytest

from gateway.auth import KeyRing, key_id, presented_key
from gateway.config import AuthConfig, KeyConfig
from gateway.errors import GatewayError

RING = KeyRing(
    AuthConfig(
        master_key="sk-master-key-1",
        keys=[
            KeyConfig(name="alice", key="sk-alice-key-1", team="research"),
            KeyConfig(name="bob", key="sk-bob-key-22", models=["a", "b"]),
        ],
    )
)


def test_identify_known_and_unknown_keys() -> None:
    alice = RING.identify("sk-alice-key-1")
    assert alice is not None and alice.name == "alice" and alice.team == "research" and alice.models is None
    bob = RING.identify("sk-bob-key-22")
    assert bob is not None and bob.models == frozenset({"a", "b"})
    assert RING.identify("sk-alice-key-2") is None
    assert RING.identify("") is None and RING.identify(None) is None


def test_raw_keys_are_not_kept() -> None:
    state = repr(vars(RING)) + repr(
        [vars(i) if hasattr(i, "__dict__") else i for i in RING._buckets.values()]
    )
    assert "sk-alice-key-1" not in state and "sk-master-key-1" not in state


def test_key_id_is_stable_short_and_not_the_key() -> None:
    assert key_id("sk-alice-key-1") == key_id("sk-alice-key-1")
    assert len(key_id("sk-alice-key-1")) == 16 and "alice" not in key_id("sk-alice-key-1")
    alice = RING.identify("sk-alice-key-1")
    assert alice is not None and alice.key_id == key_id("sk-alice-key-1")


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"authorization": "Bearer abc"}, "abc"),
        ({"authorization": "bearer   abc  "}, "abc"),
        ({"authorization": "Basic abc"}, None),
        ({"authorization": "Bearer "}, None),
        ({"x-api-key": "xyz"}, "xyz"),
        ({"authorization": "Bearer abc", "x-api-key": "xyz"}, "abc"),
        ({}, None),
    ],
)
def test_presented_key(headers: dict[str, str], key: str | None) -> None:
    assert presented_key(headers) == key


def test_authenticate_raises_401() -> None:
    with pytest.raises(GatewayError) as missing:
        RING.authenticate({})
    assert missing.value.status == 401 and "Missing API key" in missing.value.message
    with pytest.raises(GatewayError) as wrong:
        RING.authenticate({"authorization": "Bearer sk-nope-nope"})
    assert wrong.value.status == 401 and "sk-nope" not in wrong.value.message


def test_master_key() -> None:
    assert RING.is_master({"authorization": "Bearer sk-master-key-1"})
    assert not RING.is_master({"authorization": "Bearer sk-alice-key-1"})
    master = RING.identify("sk-master-key-1")
    assert master is not None and master.is_master and master.models is None
    assert not KeyRing(AuthConfig()).is_master({"authorization": "Bearer sk-master-key-1"})
