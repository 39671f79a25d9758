"""Ids from a per-process random prefix and a counter: unique, well formed, a new prefix after a fork."""

from __future__ import annotations

import os
import re

from gateway.ids import IdSource


def test_request_ids_are_32_hex_digits_and_unique() -> None:
    source = IdSource()
    made = [source.hex32() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in made)
    assert len(set(made)) == len(made)


def test_two_sources_do_not_share_a_prefix() -> None:
    assert IdSource().hex32()[:20] != IdSource().hex32()[:20]
    assert IdSource().int52() >> 24 != IdSource().int52() >> 24


def test_integer_ids_fit_in_a_double_and_stay_unique_past_the_counter() -> None:
    source = IdSource()
    made = [source.int52() for _ in range(1000)]
    assert len(set(made)) == len(made)
    assert all(0 <= i < 2**52 and float(i) == i for i in made)
    source._int_counter = iter([2**24, 2**24 + 1])  # the counter ran out: a new prefix, no repeat
    assert source.int52() not in made


def test_a_forked_child_gets_a_new_prefix() -> None:
    source = IdSource()
    before_hex, before_int = source.hex32(), source.int52()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave without running the parent's pytest
        try:
            os.write(write, f"{source.hex32()} {source.int52()}".encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        child_hex, child_int = os.read(read, 200).decode().split()
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert child_hex[:20] != before_hex[:20] and child_hex.endswith("0" * 12)
    assert int(child_int) >> 24 != before_int >> 24
    # The parent goes on where it was.
    assert source.hex32()[:20] == before_hex[:20]


def test_a_discarded_source_is_not_kept_alive_by_its_fork_hook() -> None:
    import gc
    import weakref

    ref = weakref.ref(IdSource())
    gc.collect()
    assert ref() is None
