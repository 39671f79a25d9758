"""The server stack ``gateway run`` serves on: uvicorn with uvloop's event loop and httptools' HTTP parser.

Measured with ``bench/gateway.py`` (nginx upstream, 32 connections, server pinned to one core, CPU time per
request of the server process, same config, one machine; docs/performance.md has the runs): uvicorn on
uvloop and httptools took 30 % off a bare FastAPI proxy's CPU per request, 17 % off the bare gateway's,
25 % off a cache hit's and 7 % off the production config's, against asyncio's loop and h11. uvicorn's
default (``"auto"``) would pick them only when they happen to be installed; the gateway depends on both and
asks for them by name, so a default install is the fast stack and a missing one is said, once, at start,
instead of silently serving slower.

Granian was measured against this stack with the same benchmark (``--server granian``): no clear gain in
CPU per request, more memory, and no ``ssl.SSLContext`` (gateway/tls.py's floor) or ``uvicorn.Server``
(gateway/shutdown.py's drain) to build on, so the gateway stays on uvicorn.

Where they cannot be used (uvloop has no Windows build; a platform without wheels and no compiler) the
server falls back to asyncio and h11 and logs which and why: slower, never broken.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

logger = logging.getLogger("gateway.server")


@dataclass(frozen=True)
class ServerStack:
    """The uvicorn options for the loop and the HTTP parser, and why any fast one is missing."""

    loop: Literal["uvloop", "asyncio"]
    http: Literal["httptools", "h11"]
    fallbacks: list[str] = field(default_factory=list)

    def uvicorn_options(self) -> dict[str, str]:
        """``loop`` and ``http`` for ``uvicorn.Config``/``uvicorn.run``."""
        return {"loop": self.loop, "http": self.http}

    def describe(self, json: str | None = "orjson") -> str:
        """One line naming each part with its version, as ``bench/`` reads it from the server's output:
        ``server=uvicorn 0.30.1; loop=uvloop 0.21.0; http=httptools 0.6.4; json=orjson 3.10.7``
        (``json`` is the JSON library's package, None for a server that parses none)."""
        parts = (("server", "uvicorn"), ("loop", self.loop), ("http", self.http))
        text = "; ".join(f"{part}={name} {_version(name)}" for part, name in parts)
        return f"{text}; json={f'{json} {_version(json)}' if json else 'none'}"


def _version(package: str) -> str:
    if package == "asyncio":
        return "(stdlib)"
    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def _importable(module: str) -> str | None:
    """None when ``module`` imports, else why not (the exception's type and message, one line)."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken build raising anything while loading
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    return None


def fast_stack() -> ServerStack:
    """uvloop and httptools when they import here; asyncio and h11 otherwise, with the reason logged."""
    fallbacks = []
    loop: Literal["uvloop", "asyncio"] = "uvloop"
    problem = _importable("uvloop")
    if problem is not None:
        loop = "asyncio"
        fallbacks.append(f"uvloop unavailable ({problem}): serving on asyncio's event loop, slower")
    http: Literal["httptools", "h11"] = "httptools"
    problem = _importable("httptools")
    if problem is not None:
        http = "h11"
        fallbacks.append(f"httptools unavailable ({problem}): parsing HTTP with h11, slower")
    for line in fallbacks:
        logger.warning(line)
    return ServerStack(loop, http, fallbacks)


def freeze_startup_heap() -> None:
    """Move every object alive after start-up (modules, the config, FastAPI's routes, pydantic's schemas,
    the runtime) out of the garbage collector's reach, so its full collections stop re-scanning them.

    Measured in process (bench/stages.py's production config, ``gc.callbacks`` timing each collection): the
    rare full collections of that start-up heap cost 17-31 us per request on average, about 3 % of a
    request's CPU, and 0.0-0.3 us once frozen. Collected first, so no garbage is frozen with it. Young
    collections cost under 1 us per request (reference counting frees almost everything a request makes),
    so their threshold is left at Python's default: raising it measured no gain.
    """
    gc.collect()
    gc.freeze()


def forwarded_allow_ips() -> str:
    """The peers trusted to set the client address and scheme (``X-Forwarded-For``/``-Proto``): uvicorn's
    own default, ``$FORWARDED_ALLOW_IPS`` or loopback. ``gateway run`` turns uvicorn's proxy-headers
    middleware off and applies it with these to the routes that read either (gateway/front.py)."""
    return os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
