"""Publish benchmark results on the site's Performance page (``docs/performance.md``).

    python bench/publish.py                                   # the newest results in bench/results/
    python bench/publish.py --gateway FILE.json --planner FILE.json --stages FILE.json

Only the part of the page between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` is generated: the
tables, the chart (an inline SVG, so the page needs no script), the targets and the machine. Everything
outside the markers is written by hand (what the numbers mean, what limits the gateway) and kept.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from html import escape
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PAGE = ROOT / "docs" / "performance.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

LABELS = {
    "direct": "direct (upstream alone)",
    "passthrough": "passthrough",
    "gateway-bare": "gateway, bare",
    "gateway-production": "gateway, production",
    "gateway-production-redis": "gateway, production on Redis",
    "gateway-cache-hit": "gateway, cache hit",
    "litellm": "LiteLLM proxy (peer)",
}

SKELETON = f"""# Performance

What the gateway costs on every request, measured side by side in one run on one machine, and how
planner scales with the size of a roadmap. The numbers below come from `bench/gateway.py` and
`bench/planner.py` (see `bench/README.md`); rerun them to check them on your machine.

{START}
{END}
"""


def newest(prefix: str) -> Path | None:
    """The newest ``bench/results/<prefix>-*.json``."""
    found = sorted((HERE / "results").glob(f"{prefix}-*.json"))
    return found[-1] if found else None


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100 or digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def chart(systems: dict[str, dict[str, Any]]) -> str:
    """A horizontal bar chart of requests/s at 32 connections, log scale, as one inline SVG."""
    rows = [
        (LABELS.get(name, name), row["c32"]["rps"], name) for name, row in systems.items() if "c32" in row
    ]
    if not rows:
        return ""
    top = max(rps for _, rps, _ in rows)
    decades = max(2, math.ceil(math.log10(max(top, 10))))
    label_w, bar_w, row_h, pad = 170, 420, 30, 24
    width, height = label_w + bar_w + 90, pad * 2 + row_h * len(rows) + 10

    def x(rps: float) -> float:
        return label_w + bar_w * max(0.0, math.log10(max(rps, 1.0))) / decades

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'style="max-width:{width}px" role="img" '
        'aria-label="Requests per second at 32 connections, log scale">',
        "<title>Requests per second at 32 connections (log scale)</title>",
    ]
    for d in range(decades + 1):
        gx = label_w + bar_w * d / decades
        parts.append(
            f'<line x1="{gx:.1f}" y1="{pad - 6}" x2="{gx:.1f}" y2="{height - pad + 4}" '
            'stroke="currentColor" stroke-opacity="0.2"/>'
        )
        parts.append(
            f'<text x="{gx:.1f}" y="{height - 4}" font-size="11" text-anchor="middle" '
            f'fill="currentColor">{10**d:,}</text>'
        )
    for i, (label, rps, name) in enumerate(rows):
        y = pad + i * row_h
        colour = "#3f51b5" if name.startswith("gateway") else "#9e9e9e"
        if name == "gateway-production":
            colour = "#e65100"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 18}" font-size="13" text-anchor="end" '
            f'fill="currentColor">{escape(label)}</text>'
        )
        parts.append(
            f'<rect x="{label_w}" y="{y + 5}" width="{x(rps) - label_w:.1f}" height="{row_h - 10}" '
            f'fill="{colour}"/>'
        )
        parts.append(
            f'<text x="{x(rps) + 6:.1f}" y="{y + 18}" font-size="12" fill="currentColor">{rps:,.0f}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def gateway_section(result: dict[str, Any]) -> list[str]:
    """Tables, chart, targets and notes of one gateway benchmark run."""
    systems = {k: v for k, v in result["systems"].items() if "error" not in v}
    failed = {k: v["error"].splitlines()[0] for k, v in result["systems"].items() if "error" in v}
    out = [
        "## Gateway overhead",
        "",
        f"One run on {result['time'][:16].replace('T', ' ')} UTC, upstream **{result['upstream']}** on "
        f"loopback, each system pinned to its own core (load generator and upstream on the other), "
        f"{result['duration_s']:g} s per load run; "
        + (
            f"the 32-connection figures are the median of {result['rounds']} runs per system, interleaved "
            "with the other systems' (all started first, the order turned each round)."
            if result.get("rounds", 1) > 1
            else "one 32-connection run per system."
        ),
        "",
        "| system | req/s, 32 conn. | CPU µs per request | p50 / p99, 1 conn. (ms) "
        "| p50 / p99, 32 conn. (ms) "
        "| overhead header p50 (ms) | stream: first chunk (ms) | stream: chunks/s | RSS (MB) "
        "| start to ready (s) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, row in systems.items():
        ovh = row["overhead"]["overhead_ms_p50"]
        out.append(
            f"| {LABELS.get(name, name)} | {row['c32']['rps']:,.0f} "
            f"| {_num(row.get('cpu_us_per_request'), 0)} "
            f"| {row['c1']['p50_us'] / 1000:.2f} / {row['c1']['p99_us'] / 1000:.2f} "
            f"| {row['c32']['p50_us'] / 1000:.2f} / {row['c32']['p99_us'] / 1000:.2f} "
            f"| {_num(ovh, 3) if ovh is not None else '–'} "
            f"| {_num(row['stream']['ttfb_ms_p50'])} | {row['stream']['chunks_per_s']:,.0f} "
            f"| {row['rss_mb']:.0f} | {row['ready_s']:.2f} |"
        )
    for name, error in failed.items():
        out.append(f"| {LABELS.get(name, name)} | failed: {escape(error[:100])} | | | | | | | | |")
    out += [
        "",
        "<figure>",
        chart(systems),
        "<figcaption>Requests per second at 32 connections, log scale.</figcaption>",
        "</figure>",
        "",
    ]
    stacks = {name: row["stack"] for name, row in systems.items() if "stack" in row}
    if stacks:
        out += [
            "### Stacks",
            "",
            "What each system ran on (printed by the servers themselves at start; see bench/README.md).",
            "",
            "| system | server | event loop | HTTP parser | JSON |",
            "|---|---|---|---|---|",
        ]
        for name, stack in stacks.items():
            parts = " | ".join(escape(stack.get(p, "unknown")) for p in ("server", "loop", "http", "json"))
            out.append(f"| {LABELS.get(name, name)} | {parts} |")
        out += [*(f"- **{escape(w)}**" for w in result.get("stack_warnings", [])), ""]
    out += ["### Targets", "", "| target | measured | goal | |", "|---|--:|--:|---|"]
    for row in result["targets"]:
        unit = {"x": "×", "": ""}.get(row["unit"], f" {row['unit']}")
        value = "not measured" if row["value"] is None else f"{row['value']:.3f}{unit}"
        verdict = "" if row["met"] is None else ("met" if row["met"] else "**missed**")
        rounds = row.get("rounds")
        if verdict and rounds is not None and not rounds["every_round"]:
            # The median's verdict, but the rounds alone straddle the goal: at the line, said as such.
            verdict += f", not in every round ({rounds['low']:.1f} to {rounds['high']:.1f}{unit})"
        name = row["target"].strip().replace("->", "→").replace(" - ", " − ")
        if row["target"].startswith(" "):
            name = f"↳ {name}"
        op = {">=": "≥", "<=": "≤"}[row["op"]]
        out.append(f"| {name} | {value} | {op} {row['goal']:g}{unit} | {verdict} |")
    extra = result["ratios"].get("measured_overhead_vs_direct_ms")
    if extra is not None:
        out += [
            "",
            "At one connection the whole extra hop (gateway, production p50 minus direct p50) is "
            f"{extra:.3f} ms.",
        ]
    soak = result.get("soak")
    if soak:
        out += [
            "",
            "### Soak",
            "",
            f"{soak['requests']:,} requests against gateway, production at 32 connections. Resident memory "
            f"{soak['rss_at_first_segment_mb']:.1f} MB after the first tenth, "
            f"{soak['rss_at_end_mb']:.1f} MB at the end: **{soak['growth'] * 100:+.1f} %**.",
            "",
            "| requests | RSS (MB) | req/s |",
            "|--:|--:|--:|",
        ]
        for sample in soak["samples"]:
            rps = f"{sample['rps']:,.0f}" if sample.get("rps") else "–"
            out.append(f"| {sample['requests']:,} | {sample['rss_mb']:.1f} | {rps} |")
    notes = [f"{LABELS.get(k, k)}: {n}" for k, v in systems.items() for n in v.get("notes", [])]
    if notes:
        out += ["", *[f"- {n}" for n in notes]]
    return out


def planner_section(result: dict[str, Any]) -> list[str]:
    """The planner validate and site build tables."""
    out = [
        "## Planner at scale",
        "",
        "`planner validate` (every rule, in process) against loading only the same files' front matter with "
        "python-frontmatter; the CLI columns compare two processes (Python start-up and imports included).",
        "",
        "| plans | validate | front matter only | ratio (goal ≤ 2×) | ratio of CPU time "
        "| CLI | front matter, process | ratio |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in result["validate"]:
        cpu = f"{row['ratio_cpu']:.2f}×" if "ratio_cpu" in row else "–"
        out.append(
            f"| {row['plans']:,} | {row['validate']['median_s'] * 1000:,.0f} ms "
            f"| {row['frontmatter']['median_s'] * 1000:,.0f} ms | {row['ratio']:.2f}× "
            f"{'' if row['meets_target'] else '(**missed**)'} | {cpu} "
            f"| {row['validate_cli']['median_s'] * 1000:,.0f} ms "
            f"| {row['frontmatter_cli']['median_s'] * 1000:,.0f} ms | {row['ratio_cli']:.2f}× |"
        )
    site = result.get("site")
    if site is not None:
        out += ["", f"Site build of {result.get('site_plans', 0):,} plans:"]
        if "skipped" in site:
            out.append(f"not measured ({escape(site['skipped'][:200])}).")
        else:
            verdict = "met" if site["meets_target"] else "**missed**"
            out += [
                "",
                "| build | time |",
                "|---|--:|",
                f"| `mkdocs build` with the planner plugin | {site['plugin']['median_s']:.2f} s |",
                f"| plain `mkdocs build` of the same {site['pages']:,} pages, pre-rendered "
                f"| {site['plain']['median_s']:.2f} s |",
                f"| ratio (goal ≤ 1.3×) | {site['ratio']:.2f}× {verdict} |",
                *(
                    [f"| ratio of CPU time (both builds' processes) | {site['ratio_cpu']:.2f}× |"]
                    if "ratio_cpu" in site
                    else []
                ),
                *(
                    [
                        "| for reference: plain `mkdocs build` with the Markdown extensions the plugin "
                        f"turns on | {site['plain_extensions']['median_s']:.2f} s |",
                        f"| ratio to it, wall / CPU time | {site['ratio_extensions']:.2f}× / "
                        f"{site['ratio_extensions_cpu']:.2f}× |",
                    ]
                    if "plain_extensions" in site
                    else []
                ),
            ]
    return out


def stages_section(result: dict[str, Any]) -> list[str]:
    """What each feature's stage costs, from bench/stages.py (in process, no server, no network)."""
    # A `--metrics` run has only production with and without metrics: compare with the latter then.
    reference = "bare" if "bare" in result else "production, no metrics"
    base = result[reference]["cpu_us"]
    out = [
        "## What each feature costs",
        "",
        "CPU time per request inside one process (`bench/stages.py`: the ASGI app called directly, the "
        "upstream an in-memory mock, so neither the server nor the network is counted), adding one feature "
        "at a time to the bare gateway.",
        "",
        f"| configuration | CPU µs per request | more than {reference} |",
        "|---|--:|--:|",
    ]
    for name, row in result.items():
        if not isinstance(row, dict) or "cpu_us" not in row:
            continue
        out.append(f"| {name} | {row['cpu_us']:,.0f} | {row['cpu_us'] - base:+,.0f} |")
    cost = result.get("metrics_cost")
    if cost:
        out += [
            "",
            f"Prometheus metrics (`features.metrics`, on by default): production with / without them = "
            f"{cost['ratio']:.3f} ({cost['us']:+.1f} µs, {100 * cost['share']:.1f} % of the production "
            f"path's CPU); their recording calls timed alone take {cost['recording_us']:.1f} µs per request "
            f"({100 * cost['recording_share']:.1f} %). `python bench/stages.py --metrics`.",
        ]
    return out


def machine_section(gateway: dict[str, Any] | None, planner: dict[str, Any] | None) -> list[str]:
    """Where the numbers came from."""
    info = (gateway or planner or {}).get("machine", {})
    out = ["## Machine", ""]
    cpu = info.get("Model name") or info.get("cpu") or "unknown CPU"
    out.append(f"- CPU: {cpu}, {info.get('CPU(s)', info.get('cpus'))} logical CPUs")
    if info.get("Hypervisor vendor"):
        out.append(f"- virtualised ({info['Hypervisor vendor']})")
    out.append(f"- Python {info.get('python')}, {info.get('platform')}")
    if "packages" in info:
        out.append("- " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()))
    for tool in ("nginx", "wrk"):
        if info.get(tool):
            out.append(f"- {info[tool]}")
    load = (gateway or {}).get("load_average")
    if load:
        out.append(
            "- load average (1 min) at start and end of the gateway run: "
            f"{load['start']:.2f}, {load['end']:.2f}"
            " (the machine was shared with other work: treat single numbers as noisy, ratios as the result)"
        )
    return out


def render(
    gateway: dict[str, Any] | None, planner: dict[str, Any] | None, stages: dict[str, Any] | None = None
) -> str:
    """The generated block (between the markers)."""
    lines: list[str] = []
    if gateway:
        lines += [*gateway_section(gateway), ""]
    if stages:
        lines += [*stages_section(stages), ""]
    if planner:
        lines += [*planner_section(planner), ""]
    lines += machine_section(gateway, planner)
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        "apt-get install nginx wrk            # the upstream and the load generator",
        "python3 -m venv bench/.venv-litellm && bench/.venv-litellm/bin/pip install 'litellm[proxy]'",
        "python bench/gateway.py --peer litellm --soak",
        "python bench/stages.py",
        "python bench/planner.py",
        "python bench/publish.py              # rewrites the numbers on this page",
        "```",
    ]
    return "\n".join(lines)


def publish(
    page: Path,
    gateway: dict[str, Any] | None,
    planner: dict[str, Any] | None,
    stages: dict[str, Any] | None = None,
) -> None:
    """Replace the generated block of ``page`` (creating the page from a skeleton if needed), atomically."""
    text = page.read_text(encoding="utf-8") if page.exists() else SKELETON
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    new = f"{head}{START}\n{render(gateway, planner, stages)}\n{END}{tail}"
    tmp = page.with_suffix(".md.tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write benchmark results to docs/performance.md.")
    parser.add_argument("--gateway", type=Path, default=None, help="gateway results JSON (default: newest)")
    parser.add_argument("--planner", type=Path, default=None, help="planner results JSON (default: newest)")
    parser.add_argument("--stages", type=Path, default=None, help="stages results JSON (default: newest)")
    parser.add_argument("--page", type=Path, default=PAGE)
    args = parser.parse_args(argv)
    gateway_path = args.gateway or newest("gateway")
    planner_path = args.planner or newest("planner")
    stages_path = args.stages or newest("stages")
    if gateway_path is None and planner_path is None:
        print("no results: run bench/gateway.py and/or bench/planner.py first", file=sys.stderr)
        return 2
    for path in (gateway_path, planner_path, stages_path):
        if path is not None and not path.is_file():
            print(f"error: no results file {path}", file=sys.stderr)
            return 2
    gateway = json.loads(gateway_path.read_text()) if gateway_path else None
    planner = json.loads(planner_path.read_text()) if planner_path else None
    stages = json.loads(stages_path.read_text()) if stages_path else None
    publish(args.page, gateway, planner, stages)
    print(
        f"wrote {args.page} from {', '.join(str(p) for p in (gateway_path, planner_path, stages_path) if p)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
