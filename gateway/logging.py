"""Structured access logs: one JSON object per request on the ``gateway.access`` logger.

Records carry ids, names, timings and statuses only: never a key, an upstream credential, a prompt or a
completion. Building a record is skipped entirely when the logger is disabled.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

ACCESS_LOGGER = "gateway.access"
ERROR_LOGGER = "gateway.error"


class AccessLog:
    """Writes access records; a thin seam so tests can capture them with ``caplog``."""

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)

    def enabled(self) -> bool:
        """Whether records would be written (checked before building one)."""
        return self.logger.isEnabledFor(logging.INFO)

    def write(self, record: dict[str, Any]) -> None:
        """Write one access record."""
        self.logger.info(json.dumps(record, separators=(",", ":"), default=str))


def log_error(request_id: str, exc: BaseException) -> None:
    """Log an unexpected error by type only: messages may carry secrets, tracebacks must not be logged."""
    logging.getLogger(ERROR_LOGGER).error(
        json.dumps({"ts": round(time.time(), 3), "request_id": request_id, "error": type(exc).__name__})
    )


def configure_logging(level: str = "info") -> None:
    """Send gateway logs to stderr, one line each (``gateway run`` calls this)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in (ACCESS_LOGGER, ERROR_LOGGER, "gateway"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(level.upper())
