"""`mixed_page`: config-file entries first, then the store's runtime records, with opaque cursors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from gateway.admin.keys import mixed_page
from gateway.errors import GatewayError

pytestmark = pytest.mark.anyio

FIXED = [{"id": f"cfg_{i}"} for i in range(3)]
RUNTIME = [f"k{i:02d}" for i in range(5)]


async def runtime(after: str | None, n: int) -> Sequence[str]:
    return [r for r in RUNTIME if after is None or r > after][:n]


def as_item(record: str) -> dict[str, Any]:
    return {"id": record}


async def every_page(limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page: dict[str, Any] = await mixed_page(cursor, limit, FIXED, runtime, as_item, lambda r: r)
        pages.append([item["id"] for item in page["data"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 8, 100])
async def test_every_entry_once_in_order_whatever_the_page_size(limit: int) -> None:
    pages = await every_page(limit)
    assert [i for page in pages for i in page] == [f["id"] for f in FIXED] + RUNTIME
    assert all(len(page) <= limit for page in pages) and all(pages[:-1])  # no empty page but maybe the last


async def test_the_last_page_says_so_when_it_is_exactly_full() -> None:
    page = await mixed_page(None, 8, FIXED, runtime, as_item, lambda r: r)
    assert len(page["data"]) == 8 and page["next_cursor"] is None


@pytest.mark.parametrize("cursor", ["nonsense", "eyJjb25maWciOiAtMX0", "eyJhZnRlciI6IDN9"])
async def test_a_cursor_this_api_did_not_make_is_a_400_naming_cursor(cursor: str) -> None:
    with pytest.raises(GatewayError) as error:
        await mixed_page(cursor, 2, FIXED, runtime, as_item, lambda r: r)
    assert error.value.status == 400 and error.value.param == "cursor"
