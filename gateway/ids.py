"""Unique ids without a system call per id: a random per-process prefix plus a counter.

``uuid.uuid4()`` and ``secrets.randbits`` each read the kernel's random source (a system call) for every id,
a measurable share of a request's CPU. An :class:`IdSource` reads it once per process (again after a
``fork``, so two workers never share a prefix) and counts from there: ids stay unique within a process by
the counter, and across processes and replicas by the random prefix.
"""

from __future__ import annotations

import itertools
import os
import secrets

# Lease ids are Lua doubles in Redis: 52 bits, split into a random prefix and a counter.
_LEASE_COUNTER_BITS = 24
_LEASE_PREFIX_BITS = 52 - _LEASE_COUNTER_BITS


class IdSource:
    """Request ids (32 hex digits, like ``uuid4().hex``) and 52-bit integer ids, unique across processes."""

    def __init__(self) -> None:
        self._pid = -1
        self._seed()

    def _seed(self) -> None:
        self._pid = os.getpid()
        self._hex_prefix = secrets.token_hex(10)  # 80 random bits; 12 hex digits of counter follow
        self._hex_counter = itertools.count()
        self._int_prefix = secrets.randbits(_LEASE_PREFIX_BITS) << _LEASE_COUNTER_BITS
        self._int_counter = itertools.count()

    def hex32(self) -> str:
        """A new 32-hex-digit id."""
        if os.getpid() != self._pid:
            self._seed()
        return f"{self._hex_prefix}{next(self._hex_counter) & 0xFFFFFFFFFFFF:012x}"

    def int52(self) -> int:
        """A new non-negative integer id below 2**52 (exact in a double)."""
        if os.getpid() != self._pid:
            self._seed()
        n = next(self._int_counter)
        if n >> _LEASE_COUNTER_BITS:
            # The counter ran out: a fresh random prefix, so no id repeats within this process.
            self._int_prefix = secrets.randbits(_LEASE_PREFIX_BITS) << _LEASE_COUNTER_BITS
            self._int_counter = itertools.count(1)
            n = 0
        return self._int_prefix | n
