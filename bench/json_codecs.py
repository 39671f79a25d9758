"""JSON libraries on the gateway's own payloads: stdlib ``json`` against ``orjson`` and ``msgspec``.

    python bench/json_codecs.py                  # 3 rounds, about 20 s
    python bench/json_codecs.py --rounds 1 --number 2000 --json out.json

Times what a chat request costs the gateway in JSON work, per payload and per operation, the way the
gateway does it (bytes in, bytes out, compact separators): the client's request body decoded, the upstream
body encoded, the upstream's answer decoded, the answer encoded for the client, one SSE chunk encoded and
decoded, and the cache key's sorted dump. Prints microseconds per operation (best of the rounds, CPU time)
and each library's speed-up over the standard library; writes JSON to ``bench/results/``. A library that is
not installed is reported as missing, not skipped silently. ``gateway/jsonio.py`` says which one the
gateway uses and why.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from bench import exclusive  # noqa: E402
from bench.nginx import chat_body  # noqa: E402

RESULTS = HERE / "results"

_LONG = (
    "Summarise the following design note for a reviewer who has not read it, in five bullet points, "
    "keeping every number: the gateway keeps one canonical request model inside and adapters at the edges; "
)


def payloads() -> dict[str, Any]:
    """The gateway's real shapes: the benchmark's request and answer, a longer chat with tools, a chunk."""
    small = {
        "model": "bench",
        "messages": [
            {"role": "system", "content": "You are a benchmark."},
            {"role": "user", "content": "bench-prompt-000123: say hello"},
        ],
        "max_tokens": 64,
    }
    large = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a careful assistant. " * 8},
            *(
                {
                    "role": "user" if i % 2 == 0 else "assistant",
                    "content": f"{_LONG * 3} (turn {i}, é ü 漢字)",
                }
                for i in range(12)
            ),
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": f"lookup_{i}",
                    "description": "Look a record up by id and return its fields.",
                    "parameters": {
                        "type": "object",
                        "properties": {"id": {"type": "string"}, "fields": {"type": "array"}},
                        "required": ["id"],
                    },
                },
            }
            for i in range(4)
        ],
        "temperature": 0.2,
        "max_tokens": 512,
        "stream": False,
    }
    answer = json.loads(chat_body())
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "bench",
        "choices": [{"index": 0, "delta": {"content": "Hel"}, "logprobs": None, "finish_reason": None}],
    }
    return {
        "request (small)": small,
        "request (12 turns, tools)": large,
        "answer": answer,
        "SSE chunk": chunk,
    }


def codecs() -> dict[str, dict[str, Callable[..., Any]] | str]:
    """Each library's loads, dumps (compact, to bytes) and sorted dumps; a string when it is missing."""
    out: dict[str, dict[str, Callable[..., Any]] | str] = {
        "json": {
            "loads": json.loads,
            "dumps": lambda v: json.dumps(v, separators=(",", ":")).encode(),
            "dumps_sorted": lambda v: json.dumps(v, separators=(",", ":"), sort_keys=True).encode(),
        }
    }
    try:
        import orjson

        out["orjson"] = {
            "loads": orjson.loads,
            "dumps": orjson.dumps,
            "dumps_sorted": lambda v: orjson.dumps(v, option=orjson.OPT_SORT_KEYS),
        }
    except ImportError:
        out["orjson"] = "not installed (pip install orjson)"
    try:
        import msgspec

        encoder = msgspec.json.Encoder()
        sorted_encoder = msgspec.json.Encoder(order="sorted")
        decoder = msgspec.json.Decoder()
        out["msgspec"] = {
            "loads": decoder.decode,
            "dumps": encoder.encode,
            "dumps_sorted": sorted_encoder.encode,
        }
    except ImportError:
        out["msgspec"] = "not installed (pip install msgspec)"
    return out


def per_op_us(fn: Callable[[Any], Any], arg: Any, number: int, rounds: int) -> float:
    """CPU microseconds per call of ``fn(arg)``: the best of ``rounds`` rounds of ``number`` calls."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(number):
            fn(arg)
        best = min(best, time.process_time() - start)
    return best * 1e6 / number


def run(number: int, rounds: int) -> dict[str, Any]:
    """Every library, payload and operation; the ratios are the stdlib's time over the library's."""
    data = payloads()
    libs = codecs()
    rows: list[dict[str, Any]] = []
    for payload, value in data.items():
        encoded = json.dumps(value, separators=(",", ":")).encode()
        ops = [("loads", encoded), ("dumps", value)]
        if payload.startswith("request"):
            ops.append(("dumps_sorted", value))  # the cache key's canonical dump
        for op, arg in ops:
            row: dict[str, Any] = {"payload": payload, "bytes": len(encoded), "op": op, "us": {}}
            for name, lib in libs.items():
                if isinstance(lib, dict):
                    row["us"][name] = per_op_us(lib[op], arg, number, rounds)
            rows.append(row)
    for row in rows:
        base = row["us"]["json"]
        row["speedup"] = {name: base / us for name, us in row["us"].items() if us}
    versions: dict[str, str] = {}
    for name, lib in libs.items():
        if isinstance(lib, str):
            versions[name] = lib
            continue
        module = sys.modules.get(name)
        versions[name] = getattr(module, "__version__", "stdlib") if name != "json" else "stdlib"
    return {
        "benchmark": "json_codecs",
        "number": number,
        "rounds": rounds,
        "versions": versions,
        "rows": rows,
    }


def table(result: dict[str, Any]) -> str:
    """µs per operation and the speed-up over the standard library, one line per payload and operation."""
    names = list(result["versions"])
    present = [n for n in names if n in result["rows"][0]["us"]]
    head = f"{'payload':<28}{'op':<14}{'bytes':>7}" + "".join(f"{n + ' us':>12}" for n in present)
    head += "".join(f"{n + ' x':>11}" for n in present if n != "json")
    lines = [head]
    for row in result["rows"]:
        line = f"{row['payload']:<28}{row['op']:<14}{row['bytes']:>7}"
        line += "".join(f"{row['us'][n]:>12.2f}" for n in present)
        line += "".join(f"{row['speedup'][n]:>10.1f}x" for n in present if n != "json")
        lines.append(line)
    lines.append(
        "(CPU microseconds per call, best of the rounds; x = the standard library's time / this one's)"
    )
    for name, version in result["versions"].items():
        lines.append(f"  {name}: {version}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="JSON libraries on the gateway's payloads (see bench/README.md)"
    )
    parser.add_argument("--number", type=int, default=20_000, help="calls per round (default 20,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best is kept (default 3)")
    parser.add_argument(
        "--json", type=Path, default=None, help="where to write the JSON (default bench/results/)"
    )
    args = parser.parse_args(argv)
    exclusive.hold("bench/json_codecs.py")
    result = run(args.number, args.rounds)
    print(table(result))
    out = args.json or RESULTS / f"json-codecs-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
