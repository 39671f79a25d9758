"""``features.websocket``: whether ``GET /v1/ws/chat`` is served, which browser origins may open it, and the
per-connection limits (gateway/routes/ws.py).

Read when a socket opens, from the config running then: a hot reload applies to the next connection, never to
sockets already open (they keep the limits they were accepted with).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gateway.cors import Origin


class WebSocketConfig(BaseModel):
    """The WebSocket transport's switch, ``Origin`` allow-list and limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # Browsers send `Origin` on a WebSocket handshake and the same-origin policy does not apply to it: this
    # list is what stops a page on another site from opening a socket. None (unset) or ['*']: any origin (the
    # protocol carries no ambient credential, so such a page still needs a key). Clients that send no Origin
    # (servers, SDKs) are always allowed: the header is a browser's statement, not an authentication.
    allowed_origins: list[Origin] | None = None
    # Requests in flight on one connection; the next gets a `chat.error` 429 `too_many_in_flight`.
    max_concurrent: int = Field(default=4, ge=1, le=256)
    # One client message; larger closes the socket with 1009.
    max_message_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    # A connection with nothing in flight that receives nothing for this long is closed with 1001.
    idle_timeout_s: float = Field(default=300.0, gt=0, le=86400)
    # Frames queued for a slow reader before the producing requests wait (bounded memory per socket).
    send_queue: int = Field(default=64, ge=1, le=4096)

    def admits(self, origin: str | None) -> bool:
        """Whether a handshake carrying ``origin`` (None: no ``Origin`` header) may open a socket."""
        if origin is None or self.allowed_origins is None or "*" in self.allowed_origins:
            return True
        return origin.lower() in self.allowed_origins
