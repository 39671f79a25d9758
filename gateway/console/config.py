"""``features.console``: whether the gateway serves the admin console at ``/console`` (off by default).

Apart from the console's routes so ``gateway.config`` imports no template engine.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ConsoleConfig(BaseModel):
    """``features.console``: ``enabled`` mounts ``/console`` at start; the session settings bound logins."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    # A console session ends this long after login, whatever its use: a stolen cookie does not last.
    session_ttl_s: int = Field(default=8 * 3600, gt=0, le=7 * 86400)
    # Without a shared (Redis) state store, sessions live in this process's memory: past this many the
    # least recently used is dropped, so logins cannot exhaust memory. Read at start.
    max_sessions: int = Field(default=1000, gt=0)
