"""Unique ids without a system call per id: a random per-process prefix plus a counter.

``uuid.uuid4()`` and ``secrets.randbits`` each read the kernel's random source (a system call) for every id,
a measurable share of a request's CPU. An :class:`IdSource` reads it once per process (again after a
``fork``, so two workers never share a prefix) and counts from there: ids stay unique within a process by
the counter, and across processes and replicas by the random prefix. The ids are unique, not secret (request
ids, lease ids naming a concurrency slot or a budget reservation): nothing relies on them being unguessable.

A fork is noticed by a hook (``os.register_at_fork``), not by asking ``os.getpid()`` for every id: that is
a system call too, and the profile of a loaded gateway showed it.
"""

from __future__ import annotations

import itertools
import os
import secrets
import weakref
from collections.abc import Callable

# Lease ids are Lua doubles in Redis: 52 bits, split into a random prefix and a counter.
_LEASE_COUNTER_BITS = 24
_LEASE_PREFIX_BITS = 52 - _LEASE_COUNTER_BITS


class IdSource:
    """Request ids (32 hex digits, like ``uuid4().hex``) and 52-bit integer ids, unique across processes."""

    def __init__(self) -> None:
        self._seed()
        # A weak reference: the hook (which cannot be removed) must not keep a discarded source alive.
        seed = weakref.WeakMethod(self._seed)
        os.register_at_fork(after_in_child=lambda: _call(seed))

    def _seed(self) -> None:
        self._hex_prefix = secrets.token_hex(10)  # 80 random bits; 12 hex digits of counter follow
        self._hex_counter = itertools.count()
        self._int_prefix = secrets.randbits(_LEASE_PREFIX_BITS) << _LEASE_COUNTER_BITS
        self._int_counter = itertools.count()

    def hex32(self) -> str:
        """A new 32-hex-digit id."""
        return f"{self._hex_prefix}{next(self._hex_counter) & 0xFFFFFFFFFFFF:012x}"

    def int52(self) -> int:
        """A new non-negative integer id below 2**52 (exact in a double)."""
        n = next(self._int_counter)
        if n >> _LEASE_COUNTER_BITS:
            # The counter ran out: a fresh random prefix, so no id repeats within this process.
            self._int_prefix = secrets.randbits(_LEASE_PREFIX_BITS) << _LEASE_COUNTER_BITS
            self._int_counter = itertools.count(1)
            n = 0
        return self._int_prefix | n


def _call(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    """Call ``method`` unless its object is gone."""
    bound = method()
    if bound is not None:
        bound()
