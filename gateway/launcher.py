"""The `gateway` command's entry point: says how to install the gateway when only the planner is installed.

The distribution's core dependencies are the planner's; the gateway's (FastAPI, uvicorn, redis, ...) are
the `gateway` extra. Without them `gateway` would end in an ImportError traceback; this names the fix.
"""

from __future__ import annotations

import sys

INSTALL_HINT = "pip install 'llm-gateway-planner[gateway]'"


def main() -> None:
    try:
        from gateway.cli import main as cli
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] == "gateway":
            raise
        sys.exit(
            f"gateway: {exc.name} is not installed; the gateway's dependencies are an extra: {INSTALL_HINT}"
        )
    cli()
