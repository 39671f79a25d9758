"""Opt-in body logging (``usage.log_bodies``): each request's prompt and answer, redacted, in their own table.

Prompts are often personal data, so bodies are off by default and, when on, kept apart from the usage
records: their own table (``usage_bodies``), their own retention (``log_bodies.retention_days``, default 7,
shorter than the records'), and redacted before they are queued. Redaction replaces e-mail addresses and
strings that look like credentials (``sk-...`` keys, ``Bearer`` tokens) plus every match of the configured
``log_bodies.redact`` patterns with ``[redacted]``; a body is cut at ``log_bodies.max_chars`` characters.

Bodies are best effort: a batch the sink refuses is dropped and counted (``bodies_dropped``), never spilled
to disk next to the database, because a spill file of prompts would outlive their retention.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.usage_record import storable_text

REDACTED = "[redacted]"
BUILT_IN_PATTERNS = (
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",  # e-mail addresses
    r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{12,}",  # API keys in the common sk-... form
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}",  # bearer tokens
)


class LogBodiesConfig(BaseModel):
    """``usage.log_bodies``: present turns body logging on."""

    model_config = ConfigDict(extra="forbid")

    retention_days: int = Field(default=7, ge=1)
    max_chars: int = Field(default=20_000, gt=0)
    redact: list[str] = Field(default_factory=list)

    @field_validator("redact")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for index, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"[{index}] is not a regular expression: {exc}") from None
        return patterns


@dataclass(frozen=True, slots=True)
class BodyRecord:
    """One request's redacted prompt (``request``, the JSON of its messages or input) and answer text."""

    ts: float
    day: str
    request_id: str
    key_name: str
    request: str
    response: str


BODY_COLUMNS = ("ts", "day", "request_id", "key_name", "request", "response")


class Redaction:
    """The built-in patterns and ``extra`` ones, each compiled once (apart, so each keeps its own flags)."""

    def __init__(self, extra: list[str] | tuple[str, ...] = ()) -> None:
        self.patterns = [re.compile(pattern) for pattern in (*BUILT_IN_PATTERNS, *extra)]

    def text(self, text: str) -> str:
        """``text`` with every match replaced by ``[redacted]``."""
        for pattern in self.patterns:
            text = pattern.sub(REDACTED, text)
        return text


def prompt_text(body: dict[str, Any]) -> str:
    """What the client sent as the prompt: its ``messages`` (or ``input``, ``prompt``) as compact JSON."""
    for name in ("messages", "input", "prompt"):
        if name in body:
            return json.dumps(body[name], ensure_ascii=False, separators=(",", ":"), default=str)
    return ""


def body_record(
    config: LogBodiesConfig,
    redaction: Redaction,
    *,
    ts: float,
    day: str,
    request_id: str,
    key_name: str,
    request: str,
    response: str,
) -> BodyRecord:
    """A redacted, length-capped :class:`BodyRecord` (cut before redacting, so redaction stays bounded)."""
    cut = config.max_chars
    return BodyRecord(
        ts=ts,
        day=day,
        request_id=request_id,
        key_name=key_name,
        request=storable_text(redaction.text(request[:cut])),
        response=storable_text(redaction.text(response[:cut])),
    )
