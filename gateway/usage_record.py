"""One usage record (a request as the ledger keeps it), the errors of a ledger, and what a query may group by.

Shared by the ledger (:mod:`gateway.ledger`) and every sink it writes to (:mod:`gateway.usage_sink`), so a
sink never imports the ledger that drives it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from operator import attrgetter
from typing import Any, Literal

from gateway.answers import MAX_TOKENS
from gateway.pricing import MAX_NANOS

UsageSource = Literal["reported", "estimated", "none"]
CacheStatus = Literal["HIT", "MISS", "BYPASS"]
GroupBy = Literal["key", "team", "model", "route", "day", "region", "endpoint", "status", "cache_status"]

MAX_INT = 2**63 - 1  # SQLite INTEGER, PostgreSQL BIGINT


class LedgerError(Exception):
    """The ledger's store cannot be opened (not an SQLite file, no permission, no server...)."""


class LedgerUnavailable(LedgerError):
    """The ledger cannot be read right now (closed, deleted and not recreatable, unreadable, server down)."""


class LedgerNotQueryable(LedgerUnavailable):
    """The ledger's sink keeps no queryable store (the JSONL sink ships records to a log pipeline)."""


# Not frozen: a frozen dataclass's __init__ sets each of the 26 fields through object.__setattr__, 4.3 us
# per request against 1.0 us. Nothing changes a record once made (storable() makes a changed copy).
@dataclass(slots=True)
class UsageRecord:
    """One request as the ledger keeps it; treat it as immutable (the ledger, the live feed and the
    metrics all read the same record).

    ``ts`` is when the request arrived (Unix seconds) and ``day`` its local date in the budgets' time zone.
    ``usage_source`` says where the token counts come from: ``reported`` by the upstream, ``estimated`` by the
    gateway (no usage reported, or a stream cut short), or ``none`` (nothing was generated, e.g. an error).
    ``route`` is ``provider/model`` of the upstream that answered, None for a cache hit or a failure.
    ``attempts`` counts provider attempts (retries and failover included); ``ttft_ms`` is the time to the
    first streamed chunk (None for complete responses).

    Added in schema version 2: ``cached_tokens`` (prompt tokens the upstream served from its prompt cache,
    ``usage.prompt_tokens_details.cached_tokens``); ``avoided_cost_nanos`` (what a response-cache hit would
    have cost upstream); ``cache_status`` (the ``x-gateway-cache`` answer, None without a cache stage);
    ``error_code`` (the error envelope's ``code`` of a refused or failed request); ``overhead_ms`` (time
    spent in the gateway, upstream excluded); ``region`` (the answering route's region, or
    the replica's ``server.region`` when no upstream answered). Schema version 3
    (SQLite 5): ``reservation_id``, the budget reservation the request held (None without a budget).
    Schema version 4 (SQLite 6): ``trace_id``, the request's trace id when ``features.tracing`` is on (the
    one its spans carry), else its request id, so the console's log links a row to its trace.
    """

    ts: float
    day: str
    request_id: str
    key_name: str
    team: str | None
    model: str
    route: str | None
    endpoint: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    usage_source: UsageSource
    cost_nanos: int
    latency_ms: float
    status: int
    cache_hit: bool
    attempts: int = 0
    ttft_ms: float | None = None
    cached_tokens: int = 0
    avoided_cost_nanos: int = 0
    cache_status: str | None = None
    error_code: str | None = None
    overhead_ms: float | None = None
    region: str | None = None
    reservation_id: str | None = None
    trace_id: str | None = None


COLUMNS = tuple(f.name for f in fields(UsageRecord))
as_row = attrgetter(*COLUMNS)
"""A record's values in :data:`COLUMNS` order (``dataclasses.astuple`` deep-copies, at 40 times the cost)."""
# Query dimensions and the column each reads.
GROUP_COLUMNS: dict[str, str] = {
    "key": "key_name",
    "team": "team",
    "model": "model",
    "route": "route",
    "day": "day",
    "region": "region",
    "endpoint": "endpoint",
    "status": "status",
    "cache_status": "cache_status",
}
SUMMARY_FIELDS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cost_nanos",
    "cache_hits",
    "errors",
    "estimated",
    "cached_tokens",
    "avoided_cost_nanos",
)


def record_from_row(row: Any) -> UsageRecord:
    """A :class:`UsageRecord` from a row of :data:`COLUMNS` (booleans stored as integers are converted)."""
    values = dict(zip(COLUMNS, tuple(row), strict=True))
    values["stream"] = bool(values["stream"])
    values["cache_hit"] = bool(values["cache_hit"])
    return UsageRecord(**values)


def storable_text(value: str) -> str:
    """``value`` as UTF-8 can encode it (a lone surrogate escaped) and without NUL (PostgreSQL refuses it)."""
    return _text(value).replace("\x00", "")


def _text(value: str) -> str:
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate: SQLite would refuse the whole batch
        return value.encode("utf-8", "backslashreplace").decode()
    return value


_BOUNDS = (
    ("prompt_tokens", MAX_TOKENS),
    ("completion_tokens", MAX_TOKENS),
    ("cached_tokens", MAX_TOKENS),
    ("attempts", MAX_INT),
    ("status", 999),
    ("cost_nanos", MAX_NANOS),
    ("avoided_cost_nanos", MAX_NANOS),
)
_TEXT = ("request_id", "key_name", "team", "model", "route", "endpoint", "day", "cache_status", "error_code",
         "region", "reservation_id", "trace_id")  # fmt: skip


_BOUND_VALUES = attrgetter(*(name for name, _ in _BOUNDS))
_TEXT_VALUES = attrgetter(*_TEXT)


def _clean(record: UsageRecord) -> bool:
    """Whether :func:`storable` has nothing to change in ``record``, checked in one expression per kind.

    Every request's record is clean; asking each field in a loop (getattr, a bound, a text test) cost
    2.2 us of every request. False only means "look field by field": :func:`storable` then decides.
    """
    prompt, completion, cached, attempts, status, cost, avoided = _BOUND_VALUES(record)
    if not (
        type(prompt) is int
        and type(completion) is int
        and type(cached) is int
        and type(attempts) is int
        and type(status) is int
        and type(cost) is int
        and type(avoided) is int
        and 0 <= prompt <= MAX_TOKENS
        and 0 <= completion <= MAX_TOKENS
        and 0 <= cached <= MAX_TOKENS
        and 0 <= attempts <= MAX_INT
        and 0 <= status <= 999
        and 0 <= cost <= MAX_NANOS
        and 0 <= avoided <= MAX_NANOS
    ):
        return False
    try:
        text = "".join(filter(None, _TEXT_VALUES(record)))  # None (and "") is clean
    except TypeError:  # a value of another type: the field-by-field walk decides
        return False
    return text.isascii() and "\x00" not in text


def storable(record: UsageRecord) -> UsageRecord:
    """``record`` with every value a database can store and sum: counts and costs within their bounds
    (``MAX_TOKENS``, ``MAX_NANOS``), text UTF-8 can encode and without NUL. Clean records (normally all)
    are returned as is."""
    return record if _clean(record) else storable_fields(record)


def storable_fields(record: UsageRecord) -> UsageRecord:
    """:func:`storable`, field by field: the record with each value out of bounds or unstorable replaced."""
    changes: dict[str, Any] = {}
    for name, most in _BOUNDS:
        value = getattr(record, name)
        if type(value) is not int or not 0 <= value <= most:
            changes[name] = min(max(int(value), 0), most) if isinstance(value, int) else 0
    for name in _TEXT:
        value = getattr(record, name)
        if isinstance(value, str) and not (value.isascii() and "\x00" not in value):  # the common case: clean
            text = _text(value).replace("\x00", "")  # PostgreSQL text cannot hold NUL
            if text != value:
                changes[name] = text
    return replace(record, **changes) if changes else record
