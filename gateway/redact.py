"""Secret redaction for text that reaches clients, logs and ``GET /admin/config``.

Most error messages are written by the gateway and hold no secret, but some quote an upstream's own
error message (``Upstream error: ...``), and upstreams do echo credentials back, whole or in part: an
OpenAI-compatible server that rejects a key may answer ``Incorrect API key provided: sk-...`` with a few
characters cut or masked. So every error rendered to a client goes through :meth:`Redactor.body`, which
replaces each configured secret VALUE (upstream API keys, every header value sent upstream or to a tracing
backend, the Redis password, TLS key passwords) with ``[redacted]``, and also every run of at least
:data:`NEAR_MISS` characters that appears inside one of them. It goes by value, not by a list of header
names, so a credential under a name nobody foresaw (``x-honeycomb-team``, ``cookie``) is covered. It runs
on error paths only, never on a successful response.

Virtual keys and the master key are held as digests only (gateway/key_digests.py): a word of the text
(at least 8 characters between spaces, quotes or brackets) is hashed and redacted when it is one of them.
Near-misses of them cannot be found without the plaintext; they are never sent upstream, so no upstream
can quote them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gateway.errors import GatewayError
from gateway.key_digests import presented_digest, stored_digest

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

REDACTED = "[redacted]"
# Shorter values (e.g. an organization header like "org-1") are too likely to be ordinary words.
MIN_SECRET_LENGTH = 6
NEAR_MISS = 8
"""A run of this many characters found inside a secret is redacted: an upstream quoting a key minus a
few characters, or masking its middle, still quotes runs this long. Seven characters would hit words."""
# A near-miss is looked for inside the secret's parts, so URL and cookie syntax it shares with ordinary
# text ("https://", "session=") is not a secret.
# Only runs with a digit or a capital letter count: a lower-case word inside a secret ("upstream" in
# "sk-upstream-2f9c...") is no secret, while a random key's runs almost all have one (all but 0.1 %).
# A word that may be a virtual key: what lies between spaces, quotes and brackets, at least 8 long.
_WORD = re.compile(r"[^\s\"'<>()\[\]{},;]{8,}")
_KEYLIKE = re.compile(r"[0-9A-Z]")
_PARTS = re.compile(r"[\s:/@?&=,;\"'<>()\[\]{}]+")


def config_key_digests(config: GatewayConfig) -> Iterator[bytes]:
    """The digests of the virtual keys, the master key and the metrics scrape token of ``config``."""
    stored = [key.key for key in config.auth.keys]
    if config.auth.master_key:
        stored.append(config.auth.master_key)
    if config.features.metrics.token:
        stored.append(config.features.metrics.token)
    return (stored_digest(value) for value in stored)


def config_secrets(config: GatewayConfig) -> Iterator[str]:
    """Every credential ``config`` holds in plaintext (what the gateway sends somewhere)."""
    for provider in config.providers:
        yield provider.api_key or ""
        headers = provider.options.get("headers")
        if isinstance(headers, dict):
            yield from (value for value in headers.values() if isinstance(value, str))
        if provider.tls is not None:
            yield provider.tls.client_key_password or ""
    if config.server.tls is not None:
        yield config.server.tls.key_password or ""
    if config.features.tracing is not None:
        yield from config.features.tracing.headers.values()  # e.g. a tracing backend's API key
    for url in (config.state.redis_url, config.state.global_redis_url):
        if url:
            yield urlsplit(url).password or ""
    if config.usage.postgres_url:
        yield urlsplit(config.usage.postgres_url).password or ""


class Redactor:
    """Replaces known secrets in text; one compiled pattern, longest secret first."""

    def __init__(self, secrets: Iterable[str], digests: Iterable[bytes] = ()) -> None:
        self.secrets = frozenset(s for s in secrets if len(s) >= MIN_SECRET_LENGTH)
        # Virtual keys and the master key, known by digest only: a word of the text is hashed and
        # compared, so an exact quote of a key is redacted without the key being held.
        self.digests = frozenset(digests)
        found = sorted(self.secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, found))) if found else None
        self._runs = frozenset(
            run
            for secret in self.secrets
            for part in _PARTS.split(secret)
            for i in range(len(part) - NEAR_MISS + 1)
            if _KEYLIKE.search(run := part[i : i + NEAR_MISS])
        )

    def extended(self, secrets: Iterable[str], digests: Iterable[bytes] = ()) -> Redactor:
        """A redactor for these secrets and ``secrets`` (after a reload: old and new credentials)."""
        return Redactor([*self.secrets, *secrets], [*self.digests, *digests])

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Redactor:
        """A redactor for every secret in ``config``."""
        return cls(config_secrets(config), config_key_digests(config))

    def text(self, text: str) -> str:
        """``text`` with every secret, and every near-miss of one, replaced by ``[redacted]``."""
        if self._pattern is not None:
            text = self._pattern.sub(REDACTED, text)
        if self.digests:
            text = _WORD.sub(self._hashed_key, text)
        if not self._runs or len(text) < NEAR_MISS:
            return text
        # Mark every window of NEAR_MISS characters found in a secret; overlapping windows merge into one
        # redacted span, so a key minus its last two characters disappears whole.
        spans: list[list[int]] = []
        for i in range(len(text) - NEAR_MISS + 1):
            if text[i : i + NEAR_MISS] in self._runs:
                if spans and i <= spans[-1][1]:
                    spans[-1][1] = i + NEAR_MISS
                else:
                    spans.append([i, i + NEAR_MISS])
        if not spans:
            return text
        out, last = [], 0
        for start, end in spans:
            out += [text[last:start], REDACTED]
            last = end
        out.append(text[last:])
        return "".join(out)

    def _hashed_key(self, match: re.Match[str]) -> str:
        word = match.group()
        if presented_digest(word) in self.digests:
            return REDACTED
        # A key at the end of a sentence: "Invalid key sk-....".
        bare = word.rstrip(".:!?")
        if bare != word and presented_digest(bare) in self.digests:
            return REDACTED + word[len(bare) :]
        return word

    def contains_secret(self, text: str) -> bool:
        """Whether ``text`` holds a secret or a near-miss of one."""
        return self.text(text) != text

    def body(self, error: GatewayError) -> dict[str, Any]:
        """The OpenAI error envelope of ``error``, its message and param redacted."""
        body = error.body()
        inner = body["error"]
        for field in ("message", "param", "code"):
            if isinstance(inner[field], str):
                inner[field] = self.text(inner[field])
        return body
