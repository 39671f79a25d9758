"""Smoke tests for bench/: the benchmarks run and produce well-formed results (nothing is timed here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_planner_bench_validates_generated_plans(tmp_path: Path) -> None:
    out = tmp_path / "planner.json"
    proc = run("planner.py", "--counts", "25", "--site-plans", "0", "--repeat", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    [row] = result["validate"]
    # The generated plans are valid (the script refuses to time a roadmap with errors) and all were read.
    assert row["plans"] == 25
    assert row["warnings"] == 0
    for key in ("validate", "validate_cli", "frontmatter", "frontmatter_cli", "frontmatter_libyaml"):
        assert len(row[key]["runs_s"]) == 1
        assert row[key]["median_s"] > 0
    assert row["ratio"] == pytest.approx(row["validate"]["median_s"] / row["frontmatter"]["median_s"])
    assert row["ratio_cpu"] > 0 and row["validate"]["cpu_median_s"] > 0
    assert row["target"] == 2.0
    assert "ratio" in proc.stdout and "target <= 2x" in proc.stdout
    assert result["machine"]["python"].startswith("3.")


def test_planner_bench_projects_have_dependencies(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from bench.planner import write_project
    finally:
        sys.path.remove(str(ROOT))
    from planner.config import load_config
    from planner.rules import validate

    write_project(tmp_path, 60)
    result = validate(load_config(tmp_path))
    assert result.problems == []
    assert len(result.plans) == 60
    assert sum(len(plan.dependencies) for plan in result.plans) > 30
    assert {plan.status for plan in result.plans} == {"Proposed", "Planned", "In Progress"}


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (scripts/test installs it)")
def test_gateway_bench_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "gateway.json"
    proc = run(
        "gateway.py", "--quick", "--rounds", "2", "--systems", "direct,gateway-production", "--json", str(out)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["upstream"] in ("nginx", "mock-upstream")
    assert list(result["systems"]) == ["direct", "gateway-production"]
    for name, row in result["systems"].items():
        assert "error" not in row, name
        for load in ("c32", "c1"):
            assert row[load]["requests"] > 0
            assert row[load]["errors"] == 0
            assert 0 < row[load]["p50_us"] <= row[load]["p99_us"]
        assert row["stream"]["statuses"] == {"200": row["stream"]["requests"]}
        assert row["stream"]["chunks_per_stream"] == 200
        assert row["rss_mb"] > 0
        assert row["cpu_us_per_request"] >= 0
        # Interleaved rounds: the figure is the median of each system's two 32-connection runs.
        assert len(row["rounds"]) == 2 and all(r["errors"] == 0 for r in row["rounds"])
        cpus = sorted(r["cpu_us_per_request"] for r in row["rounds"])
        assert row["cpu_us_per_request"] == pytest.approx(sum(cpus) / 2)
    gateway = result["systems"]["gateway-production"]
    assert gateway["ready_s"] > 0
    assert gateway["cpu_us_per_request"] > 0
    assert gateway["overhead"]["overhead_ms_p50"] >= 0
    assert gateway["overhead"]["statuses"] == {"200": gateway["overhead"]["requests"]}
    # Production misses the cache on every request, the overhead samples too (they once repeated wrk's
    # prompts and measured cache hits).
    assert gateway["overhead"]["cache"] == {"MISS": gateway["overhead"]["requests"]}
    targets = {row["target"]: row for row in result["targets"]}
    assert targets["gateway start to /ready"]["value"] == gateway["ready_s"]
    assert "gateway-production" in proc.stdout and "targets (issue 20)" in proc.stdout
    # Every figure says what it ran on: the gateway prints its stack at start and the harness reports it.
    stack = gateway["stack"]
    assert stack["server"].startswith("uvicorn ") and stack["loop"].startswith("uvloop ")
    assert stack["http"].startswith("httptools ") and stack["json"].startswith("orjson ")
    assert set(result["systems"]["direct"]["stack"]) == {"server", "loop", "http", "json"}
    assert f"{'gateway-production':<26}{stack['server']} · loop {stack['loop']}" in proc.stdout
    assert result["stack_warnings"] == []

    # Publishing rewrites only the generated block of the page and keeps what was written by hand.
    page = tmp_path / "performance.md"
    page.write_text(
        "# Performance\n\nWritten by hand.\n\n<!-- bench:start -->\nold\n<!-- bench:end -->\n\nAfter.\n"
    )
    published = run(
        "publish.py", "--gateway", str(out), "--planner", str(out.parent / "none.json"), "--page", str(page)
    )
    assert published.returncode == 2  # a results file that does not exist is an error, not an empty page
    proc = run("publish.py", "--gateway", str(out), "--page", str(page))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = page.read_text()
    assert text.startswith("# Performance\n\nWritten by hand.\n") and text.endswith(
        "<!-- bench:end -->\n\nAfter.\n"
    )
    assert "\nold\n" not in text
    assert "| direct (upstream alone) |" in text
    assert "| gateway, production |" in text
    parts = " | ".join(stack[part] for part in ("server", "loop", "http", "json"))
    assert f"| gateway, production | {parts} |" in text
    assert text.count("<svg") == 1 and "<rect" in text


def test_idle_bench_measures_the_overhead_header_as_is_and_with_cpus_awake(tmp_path: Path) -> None:
    out = tmp_path / "idle.json"
    proc = run("idle.py", "--rounds", "2", "--requests", "30", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["system"] == "gateway-production" and result["rounds"] == 2
    figures, median = result["overhead_ms"], result["median_ms"]
    assert len(figures["as_is"]) == 2 and all(value > 0 for value in figures["as_is"])
    if result["awake_unavailable"] is None:
        # Both ways measured, interleaved, and the share is what the medians say.
        assert len(figures["awake"]) == 2 and all(value > 0 for value in figures["awake"])
        assert result["host_share"] == pytest.approx((median["as_is"] - median["awake"]) / median["as_is"])
        assert "CPUs held awake (PM QoS 0)" in proc.stdout
    else:
        # Not root, or no PM QoS device: said, and the as-is figure still measured.
        assert figures["awake"] == [] and median["awake"] is None and result["host_share"] is None
        assert "not measured" in proc.stdout


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (scripts/test installs it)")
def test_hit_floor_bench_compares_a_purpose_built_hit_with_the_gateways(tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    proc = run("hit_floor.py", "--rounds", "1", "--duration", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    figures, medians = result["cpu_us_per_request"], result["median_cpu_us"]
    assert set(figures) == {"floor", "gateway-cache-hit", "gateway-cache-hit, cache only"}
    assert all(len(values) == 1 and values[0] > 0 for values in figures.values())
    assert result["gateway_vs_floor"] == pytest.approx(medians["gateway-cache-hit"] / medians["floor"])
    assert "a hit written for that one purpose" in proc.stdout


def test_varying_loads_never_repeat_a_prompt_across_runs() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from bench import clients, wrk
    finally:
        sys.path.remove(str(ROOT))
    varying = wrk.Load("http://127.0.0.1:1/v1/chat/completions", '{"p":"@PROMPT@"}', vary=True, nonce="n")
    fixed = wrk.Load("http://127.0.0.1:1/v1/chat/completions", '{"p":"@PROMPT@"}', nonce="n")
    # wrk's counter restarts with every run, so each run of a varying load needs its own nonce.
    nonces = [line for line in wrk.script(varying).splitlines() if line.startswith("local nonce")]
    assert len(nonces) == 1 and nonces[0] != next(
        line for line in wrk.script(varying).splitlines() if line.startswith("local nonce")
    )
    assert wrk.script(fixed) == wrk.script(fixed)  # the cache-hit load repeats one prompt on purpose
    # The sequential clients' prompts never take the shape of wrk's (nonce-<run>-<n>).
    assert clients._body(varying, 1) == b'{"p":"n-c1"}'


def test_ledger_bench_compares_each_sink_with_no_ledger(tmp_path: Path) -> None:
    out = tmp_path / "ledger.json"
    proc = run("ledger.py", "--requests", "50", "--rounds", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert {"no ledger", "sqlite"} <= set(result)
    for name, row in result.items():
        assert row["written"] is True, name  # every record reached the sink inside the measured time
        assert row["cpu_us"] > 0 and row["ratio"] == pytest.approx(
            row["cpu_us"] / result["no ledger"]["cpu_us"]
        )


def test_stages_bench_measures_the_metrics_cost(tmp_path: Path) -> None:
    out = tmp_path / "stages.json"
    proc = run("stages.py", "--metrics", "--requests", "30", "--rounds", "2", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert set(result) == {"production (miss)", "production, no metrics", "metrics_cost"}
    for name in ("production (miss)", "production, no metrics"):
        assert result[name]["statuses"] == {"200": 30 + 30}  # warm-up requests included
    cost = result["metrics_cost"]
    on, off = result["production (miss)"]["cpu_us"], result["production, no metrics"]["cpu_us"]
    assert cost["ratio"] == pytest.approx(on / off)
    assert cost["recording_us"] > 0
    assert "production with / without metrics" in proc.stdout


def test_json_codecs_bench_compares_the_libraries(tmp_path: Path) -> None:
    out = tmp_path / "codecs.json"
    proc = run("json_codecs.py", "--number", "20", "--rounds", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert set(result["versions"]) == {"json", "orjson", "msgspec"}
    ops = {(row["payload"], row["op"]) for row in result["rows"]}
    assert ("answer", "dumps") in ops and ("request (small)", "dumps_sorted") in ops
    for row in result["rows"]:
        # The standard library is always measured and is its own baseline; orjson is a dependency.
        assert row["speedup"]["json"] == pytest.approx(1.0)
        assert row["us"]["orjson"] > 0
    assert "orjson x" in proc.stdout


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_store_trips_bench_counts_round_trips_by_feature(tmp_path: Path) -> None:
    out = tmp_path / "trips.json"
    proc = run("store_trips.py", "--requests", "10", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert list(result) == ["cache miss", "cache hit", "refused"]
    for name, row in result.items():
        assert row["requests"] == 10, name
        assert isinstance(row["round_trips"], int) and row["round_trips"] > 0, name
        # Every request of a path takes the same trips, so the count per request is a whole number.
        assert row["round_trips_exact"] == row["round_trips"], name
        assert sum(row["by_feature"].values()) == pytest.approx(row["round_trips"]), name
        assert all(n > 0 for n in row["by_feature"].values()), name
        assert row["redis_cpu_us"] >= 0 and row["gateway_cpu_us"] > 0
    assert (result["cache miss"]["status"], result["cache hit"]["status"], result["refused"]["status"]) == (
        200, 200, 429,
    )  # fmt: skip
    # One admission trip before the upstream (the rate limit's and budget's script with the cache's read,
    # even for a request the rate limit then refuses), one pipeline after it; a hit and a refusal have
    # nothing to write after theirs.
    trips = [result[path]["round_trips"] for path in ("cache miss", "cache hit", "refused")]
    assert trips == [2, 1, 1]
    assert all("cache" in f and "rl" in f for row in result.values() for f in row["by_feature"])


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_store_trips_bench_with_clients_at_once_shares_writes(tmp_path: Path) -> None:
    out = tmp_path / "trips.json"
    proc = run("store_trips.py", "--requests", "20", "--concurrency", "10", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert all(row["requests"] == 20 and row["concurrency"] == 10 for row in result.values())
    # Trips asked for together share a write: fewer writes than the 2, 1 and 1 a request takes alone.
    alone = {"cache miss": 2, "cache hit": 1, "refused": 1}
    for name, row in result.items():
        assert 0 < row["round_trips_exact"] < alone[name], name
    assert "trips/req" in proc.stdout


def test_console_bench_compares_cpu_per_request_with_the_console_open_and_closed(tmp_path: Path) -> None:
    out = tmp_path / "console.json"
    proc = run("console.py", "--seconds", "1", "--rounds", "1", "--poll", "0.05", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    closed, opened = result["phases"]["closed"], result["phases"]["open"]
    assert closed["runs"][0]["requests"] > 0 and opened["runs"][0]["requests"] > 0
    assert closed["runs"][0]["live_events"] == 0 and closed["runs"][0]["overview_polls"] == 0
    # The console was really open: its live stream delivered rows and the overview was fetched.
    assert opened["runs"][0]["live_events"] >= 1 and opened["runs"][0]["overview_polls"] >= 1
    assert result["ratio"] == pytest.approx(opened["cpu_us_per_request"] / closed["cpu_us_per_request"])
    assert result["target"] == 1.05 and "ratio open/closed" in proc.stdout


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_multi_region_bench_counts_global_trips_per_mode(tmp_path: Path) -> None:
    out = tmp_path / "multi-region.json"
    proc = run("multi_region.py", "--quick", "--delay-ms", "5", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["delay_ms"] == 5
    modes = result["modes"]
    assert list(modes)[:3] == ["all regional", "budgets global", "everything global"]
    measured = {name: row for name, row in modes.items() if "skipped" not in row}
    for name, row in measured.items():
        assert row["requests"] == 10, name
        assert 0 < row["p50_ms"] <= row["p99_ms"], name
    # The baseline never leaves the region; a global budget reserves and settles there (2 trips), and with
    # everything there the one admission script and the one after-answer pipeline are those same 2 trips.
    assert measured["all regional"]["global_trips"] == 0
    assert measured["budgets global"]["global_trips"] == 2
    assert measured["everything global"]["global_trips"] == 2
    # A lower bound, not a speed: each global trip waits out the simulated link both ways.
    assert measured["budgets global"]["p50_ms"] >= 2 * 2 * 5
    # Partitioned rate limits take no global trip on the hot path, or are skipped with the gateway's reason.
    for name, budgets in (("rate limits partitioned", 0), ("rl partitioned + budgets global", 2)):
        assert modes[name].get("skipped") or modes[name]["global_trips"] == budgets, name
    assert "global trips/req" in proc.stdout


def test_a_ratio_met_only_by_the_median_of_rounds_that_straddle_the_goal_is_said_to_be_at_the_line() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from bench.gateway import ratios, verdicts
        from bench.publish import gateway_section
    finally:
        sys.path.remove(str(ROOT))

    def system(cpu: list[float]) -> dict[str, object]:
        rounds = [{"rps": 1e6 / c, "cpu_us_per_request": c, "errors": 0} for c in cpu]
        middle = sorted(cpu)[len(cpu) // 2]
        return {"c32": {"rps": 1e6 / middle}, "cpu_us_per_request": middle, "rounds": rounds}

    # Rounds are paired by index (the systems take turns within a round): peer/production 30.4, 32.6, 26.1.
    systems = {
        "gateway-production": system([409.0, 413.0, 461.0]),
        "litellm": system([12444.0, 13451.0, 12024.0]),
        "passthrough": system([505.0, 510.0, 519.0]),
    }
    measured = ratios(systems)
    assert measured["production_vs_peer_cpu_rounds"] == pytest.approx([12444 / 409, 13451 / 413, 12024 / 461])
    result = {"ratios": measured, "systems": systems}
    rows = {(row["target"], row["goal"]): row for row in verdicts(result)}
    peer = rows[("  same, by CPU time per request", 30.0)]
    assert peer["met"] is True  # the median of the ratios' parts: 12,444 / 413
    low, high = 12024 / 461, 13451 / 413
    assert peer["rounds"] == {"low": pytest.approx(low), "high": pytest.approx(high), "every_round": False}
    passthrough = rows[("  same, by CPU time per request", 1.0)]
    assert passthrough["rounds"]["every_round"] is True  # every round alone meets it too
    assert "rounds" not in rows[("gateway-production / peer req/s", 30.0)]  # only the CPU ratios are paired
    page = "\n".join(
        gateway_section(
            {
                **result,
                "targets": list(rows.values()),
                "time": "2026-12-05T01:32:07Z",
                "upstream": "nginx",
                "duration_s": 10,
                "rounds": 3,
                "systems": {},
            }
        )
    )
    assert "| met, not in every round (26.1 to 32.6×) |" in page
