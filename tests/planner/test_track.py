"""`planner track`: every verdict rule of `judge`, the table, and the command end to end."""

from __future__ import annotations

import json
import shutil
import socket
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from uvicorn_server import run_server

from gateway import __version__ as gateway_version
from gateway.app import create_app
from gateway.catalog import CATALOG
from gateway.config import load_config as load_gateway_config
from planner.cli import main
from planner.evidence import Evidence, FeatureEvidence, RecordedTest, load_evidence
from planner.model import Design, Plan, Section, Step
from planner.track import FeatureVerdict, format_table, judge, judge_recorded

REPO = Path(__file__).resolve().parents[2]


def plan(slug: str, status: str, feature: str | None = None, steps: int = 1) -> Plan:
    body = "\n".join(f"{n}. Step {n} of {slug}." for n in range(1, steps + 1))
    return Plan(
        path=Path(f"plans/HIGH-{slug}.md"),
        slug=slug,
        file_priority="High",
        title=slug.title(),
        status=status,
        priority="High",
        complexity="Simple",
        estimate=None,
        estimate_text="1 week",
        dependencies=(),
        feature=feature or slug,
        owner=None,
        updated=None,
        h1=None,
        sections=(Section("Implementation Steps", body, 20),) if steps else (),
        body="",
        legacy=False,
    )


def design(slug: str, steps: int = 1) -> Design:
    declared = tuple(Step(n, f"Step {n} of {slug}.") for n in range(1, steps + 1))
    return Design(
        path=Path(f"docs/design/{slug}.md"), slug=slug, title=slug.title(), feature=slug, steps=declared
    )


def ran(
    slug: str, passed: int = 0, failed: int = 0, skipped: int = 0, steps: tuple[int, ...] = (1,)
) -> FeatureEvidence:
    """Recorded tests of `slug`, each verifying `steps`."""
    base = f"tests/acceptance/test_{slug}.py"
    recorded = [RecordedTest(f"{base}::test_ok_{i}", "passed", steps) for i in range(passed)]
    recorded += [
        RecordedTest(f"{base}::test_bad_{i}", "failed", steps, f"assert {i} == 1") for i in range(failed)
    ]
    recorded += [RecordedTest(f"{base}::test_skip_{i}", "skipped", steps, "no TLS") for i in range(skipped)]
    return FeatureEvidence(passed, failed, skipped, tuple(recorded))


def evidence(
    features: dict[str, FeatureEvidence] | None = None,
    reported: dict[str, bool] | None = None,
    url: str | None = None,
) -> Evidence:
    return Evidence("2026-11-26T04:00:00+00:00", "abc123", "0.1.0", url, features or {}, reported)


def only(plans: list[Plan], designs: list[Design], ev: Evidence, slug: str) -> FeatureVerdict:
    rows = {row.slug: row for row in judge(plans, designs, ev).features}
    return rows[slug]


def test_completed_with_a_failing_test_is_an_error_naming_it() -> None:
    row = only([plan("caching", "Completed")], [], evidence({"caching": ran("caching", 2, 1)}), "caching")
    assert row.verdict == "error" and row.regression
    assert "marked Completed" in row.message and "test_caching.py::test_bad_0" in row.message
    assert (row.passed, row.failed) == (2, 1)
    assert row.failures == (("tests/acceptance/test_caching.py::test_bad_0", "assert 0 == 1"),)


def test_completed_without_any_test_is_an_error() -> None:
    row = only([plan("caching", "Completed")], [], evidence({}), "caching")
    assert row.verdict == "error" and "no acceptance test of `caching` ran" in row.message
    assert row.progress == 0 and row.regression


def test_completed_with_only_skipped_tests_is_unverified_not_a_regression() -> None:
    """TLS tests skip against a live gateway: that proves nothing either way."""
    row = only([], [design("tls")], evidence({"tls": ran("tls", skipped=7)}), "tls")
    assert row.verdict == "warning" and not row.regression
    assert row.message == "unverified: no acceptance test of `tls` ran (7 skipped: no TLS)"
    assert (row.steps_done, row.steps_total) == (0, 1)


def test_completed_and_green_is_ok_and_points_to_complete() -> None:
    row = only([plan("caching", "Completed")], [], evidence({"caching": ran("caching", 3)}), "caching")
    assert row.verdict == "ok" and "planner complete caching" in row.message and row.progress == 1.0


def test_a_completed_design_that_fails_is_a_regression() -> None:
    row = only([], [design("caching")], evidence({"caching": ran("caching", 1, 1)}), "caching")
    assert (row.verdict, row.status, row.regression) == ("error", "Completed", True)
    assert row.message.startswith("regression: 1 of 2 acceptance tests fail")


def test_a_completed_design_without_tests_is_a_regression() -> None:
    row = only([], [design("caching")], evidence(), "caching")
    assert row.verdict == "error" and row.message.startswith("regression") and row.regression


def test_a_completed_design_that_passes_is_ok() -> None:
    row = only([], [design("caching")], evidence({"caching": ran("caching", 2)}), "caching")
    assert row.verdict == "ok" and row.message == "1/1 steps done; 2 of 2 acceptance tests passing"
    assert not row.regression and row.stale is None


def test_a_completed_design_with_a_step_no_test_verifies_is_unverified() -> None:
    row = only([], [design("caching", steps=3)], evidence({"caching": ran("caching", 2)}), "caching")
    assert row.verdict == "warning" and not row.regression
    assert row.message == "unverified: 1/3 steps done; step 2, 3: no test"


def test_in_progress_progress_counts_steps_not_tests() -> None:
    """Every test passing is not 100%: two of the four declared steps have no test yet."""
    fe = ran("caching", 3, steps=(1, 2))
    row = only([plan("caching", "In Progress", steps=4)], [], evidence({"caching": fe}), "caching")
    assert row.verdict == "info" and row.progress == pytest.approx(0.5)
    assert (row.steps_done, row.steps_total) == (2, 4)
    assert row.message == "in progress: 2/4 steps done; 3 of 3 acceptance tests passing"
    assert [s.state for s in row.steps] == ["done", "done", "no test", "no test"]


def test_a_step_with_a_failing_or_skipped_test_is_not_done() -> None:
    tests = (
        RecordedTest("t::a", "passed", (1, 2)),
        RecordedTest("t::b", "failed", (1,), "boom"),
        RecordedTest("t::c", "skipped", (2,), "live"),
        RecordedTest("t::d", "passed", (3,)),
    )
    fe = FeatureEvidence(2, 1, 1, tests)
    row = only([plan("caching", "In Progress", steps=3)], [], evidence({"caching": fe}), "caching")
    assert [s.state for s in row.steps] == ["failing", "unverified", "done"]
    assert row.progress == pytest.approx(1 / 3) and row.failures == (("t::b", "boom"),)
    empty = only([plan("caching", "In Progress")], [], evidence(), "caching")
    assert empty.verdict == "info" and empty.progress == 0


def test_a_step_the_plan_calls_partly_built_is_not_done_whatever_its_tests_say() -> None:
    """Tests of the part that exists must not make the roadmap claim more than the plan's author does."""
    body = (
        "1. Add the store. *(Done.)*\n"
        "2. Add the endpoints. *(Partly built: cache purge is not built.)*\n"
        "3. Document it. (Not built.)"
    )
    partial = replace(
        plan("caching", "In Progress", steps=3), sections=(Section("Implementation Steps", body, 20),)
    )
    fe = ran("caching", 3, steps=(1, 2, 3))
    row = only([partial], [], evidence({"caching": fe}), "caching")
    assert [s.state for s in row.steps] == ["done", "unfinished per the plan", "unfinished per the plan"]
    assert (row.steps_done, row.steps_total) == (1, 3)
    done = replace(partial, status="Completed")
    assert only([done], [], evidence({"caching": fe}), "caching").verdict == "warning"


def test_tests_naming_a_step_the_plan_does_not_have_are_a_warning() -> None:
    fe = ran("caching", 1, steps=(1, 9))
    row = only([plan("caching", "In Progress", steps=2)], [], evidence({"caching": fe}), "caching")
    assert row.verdict == "warning" and "step(s) 9, which the plan does not declare (it has 2)" in row.message


def test_stale_text_is_copied_onto_every_row() -> None:
    report = judge([plan("a", "Planned")], [design("b")], evidence(), stale="from commit abc1234")
    assert {row.stale for row in report.features} == {"from commit abc1234"}
    assert "stale (from commit abc1234)" in format_table(report)


@pytest.mark.parametrize("status", ["Proposed", "Planned"])
def test_not_started_but_all_green_is_ahead_of_its_plan(status: str) -> None:
    row = only([plan("caching", status)], [], evidence({"caching": ran("caching", 2)}), "caching")
    assert row.verdict == "warning" and "implemented ahead of its plan" in row.message


@pytest.mark.parametrize("fe", [None, ran("caching", 1, 1)])
def test_not_started_and_not_green_is_fine(fe: FeatureEvidence | None) -> None:
    row = only([plan("caching", "Planned")], [], evidence({"caching": fe} if fe else {}), "caching")
    assert row.verdict == "ok"


@pytest.mark.parametrize("fe", [None, ran("caching", 2), ran("caching", 0, 1)])
@pytest.mark.parametrize("status", ["Rejected", "Withdrawn", "Deferred", "Superseded"])
def test_a_closed_plan_claims_nothing_and_is_not_judged(status: str, fe: FeatureEvidence | None) -> None:
    row = only([plan("caching", status)], [], evidence({"caching": fe} if fe else {}), "caching")
    assert row.verdict == "ok" and not row.regression and row.steps_total == 0
    assert row.message.startswith(f"closed as {status}")


def test_closing_states_are_the_configured_ones() -> None:
    rows = judge([plan("caching", "Shelved")], [], evidence(), closed=("Shelved",)).features
    assert rows[0].message.startswith("closed as Shelved")


def test_tests_without_a_plan_are_a_warning() -> None:
    row = only([], [], evidence({"orphan": ran("orphan", 1)}), "orphan")
    assert (row.verdict, row.status) == ("warning", None) and "no plan or design" in row.message


def test_reported_by_the_gateway_without_a_plan_is_a_warning() -> None:
    row = only([], [], evidence(reported={"secret-feature": True}), "secret-feature")
    assert row.verdict == "warning" and "the gateway reports this feature" in row.message


def test_verified_but_not_reported_by_a_live_gateway_is_an_error() -> None:
    ev = evidence({"caching": ran("caching", 2)}, reported={"other": True}, url="http://127.0.0.1:9")
    row = only([plan("caching", "In Progress")], [], ev, "caching")
    assert row.verdict == "error" and "does not report `caching` in /admin/features" in row.message


def test_verified_but_not_reported_in_process_is_a_warning() -> None:
    ev = evidence({"caching": ran("caching", 2)}, reported={"other": True})
    assert only([plan("caching", "In Progress")], [], ev, "caching").verdict == "warning"


def test_reported_features_and_unknown_reports_are_not_flagged() -> None:
    ev = evidence({"caching": ran("caching", 2)}, reported={"caching": False}, url="http://127.0.0.1:9")
    assert only([plan("caching", "In Progress")], [], ev, "caching").verdict == "info"
    ev = evidence({"caching": ran("caching", 2)}, reported=None, url="http://127.0.0.1:9")
    assert only([plan("caching", "In Progress")], [], ev, "caching").verdict == "info"


def test_evidence_is_looked_up_by_the_plans_feature_key() -> None:
    row = only(
        [plan("smart-cache", "Completed", feature="caching")],
        [],
        evidence({"caching": ran("c", 1)}),
        "smart-cache",
    )
    assert row.verdict == "ok"
    assert "caching" not in {
        r.slug for r in judge([plan("smart-cache", "Planned", "caching")], [], evidence()).features
    }


def test_summary_counts_and_json_shape() -> None:
    report = judge(
        [plan("a", "Completed"), plan("b", "Planned"), plan("c", "In Progress")],
        [],
        evidence({"b": ran("b", 1), "c": ran("c", 1, 1)}),
    )
    data = report.to_json()
    assert data["summary"] == {"errors": 1, "warnings": 1}
    assert [f["slug"] for f in data["features"]] == ["a", "b", "c"]
    assert set(data["features"][2]) == {
        "slug",
        "status",
        "passed",
        "failed",
        "skipped",
        "progress",
        "steps_done",
        "steps_total",
        "verdict",
        "message",
        "regression",
        "stale",
        "failures",
        "steps",
    }
    assert data["features"][2]["progress"] == 0.0  # its one step has a failing test
    assert data["features"][2]["failures"] == [
        {"test": "tests/acceptance/test_c.py::test_bad_0", "message": "assert 0 == 1"}
    ]
    assert data["evidence"]["git_commit"] == "abc123" and data["evidence"]["stale"] is None
    table = format_table(report)
    assert table.splitlines()[0].split()[:3] == ["FEATURE", "STATUS", "STEPS"]
    assert "1 error(s), 1 warning(s)" in table and "abc123" in table
    assert "failing tests:\n  tests/acceptance/test_c.py::test_bad_0: assert 0 == 1" in table


# End to end: `planner track` on a small project of its own, running real pytest subprocesses.

PLAN = """---
title: {title}
status: {status}
priority: High
complexity: Simple
estimate: 3 days
dependencies: []
feature: {slug}
---
# {title}

## Goal

Goal.

## User Benefit

Benefit.

## Design Proposal

Design.

## Implementation Steps

1. Step.

## Open Questions

- None?

## Alternatives Considered

- None.
"""

ACCEPTANCE = """
import pytest

@pytest.mark.feature("alpha", step=1)
def test_alpha_works():
    pass

@pytest.mark.feature("alpha", step=1)
def test_alpha_also_works():
    assert {alpha_ok}

@pytest.mark.feature("beta", step=1)
def test_beta_works():
    pass
"""


def make_project(
    root: Path, alpha: str = "In Progress", beta: str = "Planned", alpha_ok: bool = False
) -> Path:
    (root / "pyproject.toml").write_text('[project]\nname = "demo"\n')
    for slug, status in (("alpha", alpha), ("beta", beta)):
        path = root / "plans" / f"HIGH-{slug}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(PLAN.format(title=slug.title(), status=status, slug=slug))
    tests_dir = root / "tests" / "acceptance"
    tests_dir.mkdir(parents=True, exist_ok=True)
    (tests_dir / "test_demo.py").write_text(ACCEPTANCE.format(alpha_ok=alpha_ok))
    return root


def set_status(root: Path, slug: str, status: str) -> None:
    path = root / "plans" / f"HIGH-{slug}.md"
    text = path.read_text()
    path.write_text(text.replace(text.splitlines()[2], f"status: {status}", 1))


def invoke(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    monkeypatch.chdir(root)
    return CliRunner().invoke(main, ["track", *args])


def test_track_runs_writes_evidence_and_judges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = invoke(make_project(tmp_path), monkeypatch, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = {row["slug"]: row for row in data["features"]}
    assert rows["alpha"] == {
        "slug": "alpha",
        "status": "In Progress",
        "passed": 1,
        "failed": 1,
        "skipped": 0,
        "progress": 0.0,
        "steps_done": 0,
        "steps_total": 1,
        "verdict": "info",
        "message": "in progress: 0/1 steps done; 1 of 2 acceptance tests fail: "
        "tests/acceptance/test_demo.py::test_alpha_also_works",
        "regression": False,
        "stale": None,
        "failures": [
            {"test": "tests/acceptance/test_demo.py::test_alpha_also_works", "message": "assert False"}
        ],
        "steps": [
            {
                "number": 1,
                "text": "Step.",
                "done": False,
                "state": "failing",
                "tests": [
                    {"name": "tests/acceptance/test_demo.py::test_alpha_also_works", "outcome": "failed"},
                    {"name": "tests/acceptance/test_demo.py::test_alpha_works", "outcome": "passed"},
                ],
            }
        ],
    }
    assert rows["beta"]["verdict"] == "warning" and "ahead of its plan" in rows["beta"]["message"]
    assert data["summary"] == {"errors": 0, "warnings": 1}
    evidence = load_evidence(tmp_path / ".planner" / "evidence.json")
    assert evidence is not None and evidence.features["alpha"].failed == 1
    assert "acceptance tests" in result.stderr  # the progress bar's label


def test_completed_with_a_failing_test_exits_1_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = invoke(make_project(tmp_path, alpha="Completed"), monkeypatch)
    assert result.exit_code == 1
    assert (
        "marked Completed: 1 of 2 acceptance tests fail: tests/acceptance/test_demo.py::test_alpha_also_works"
        in (result.stdout)
    )
    assert "1 error(s), 1 warning(s)" in result.stdout


def test_no_run_rejudges_the_last_evidence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_project(tmp_path, alpha_ok=True)
    assert invoke(root, monkeypatch).exit_code == 0
    (root / "tests" / "acceptance" / "test_demo.py").unlink()  # --no-run must not run anything
    set_status(root, "alpha", "Completed")
    set_status(root, "beta", "Completed")
    result = invoke(root, monkeypatch, "--no-run")
    assert result.exit_code == 0, result.output
    assert "run `planner complete alpha`" in result.stdout
    set_status(root, "beta", "In Progress")
    (root / "plans" / "HIGH-gamma.md").write_text(
        PLAN.format(title="Gamma", status="Completed", slug="gamma")
    )
    result = invoke(root, monkeypatch, "--no-run")
    assert result.exit_code == 1 and "marked Completed: no acceptance test of `gamma` ran" in result.stdout


def test_no_run_without_evidence_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = invoke(make_project(tmp_path), monkeypatch, "--no-run")
    assert result.exit_code == 1
    assert ".planner/evidence.json" in result.output and "without --no-run" in result.output


def test_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_project(tmp_path)
    monkeypatch.delenv("PLANNER_GATEWAY_KEY", raising=False)
    assert invoke(root, monkeypatch, "--gateway-url", "http://127.0.0.1:9").exit_code == 2
    # --no-run with --gateway-url judges that target's own record, which does not exist yet.
    result = invoke(root, monkeypatch, "--no-run", "--gateway-url", "http://127.0.0.1:9")
    assert result.exit_code == 1 and ".planner/evidence-127.0.0.1-9.json" in result.output
    shutil.rmtree(root / "tests")
    result = invoke(root, monkeypatch)
    assert result.exit_code == 1 and "no acceptance tests folder" in result.output


def test_a_broken_test_file_fails_its_feature(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_project(tmp_path, alpha_ok=True)
    (root / "tests" / "acceptance" / "test_beta.py").write_text("import no_such_module\n")
    result = invoke(root, monkeypatch, "--format", "json")
    rows = {row["slug"]: row for row in json.loads(result.stdout)["features"]}
    assert (rows["alpha"]["passed"], rows["beta"]["failed"]) == (2, 1)
    assert rows["beta"]["verdict"] == "ok"  # Planned, and not green any more


def test_an_unreachable_gateway_is_reported_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        result = invoke(root, monkeypatch, "--gateway-url", url, "--gateway-key", "k")
    assert result.exit_code == 1 and f"cannot reach the gateway at {url}" in result.output
    assert not (root / ".planner").exists()


LIVE_TEST = """
import pytest

@pytest.mark.feature("alpha")
def test_models_listed(gateway):
    assert gateway.live
    reply = gateway.client.get("/v1/models", headers=gateway.headers())
    assert reply.status_code == 200
    assert "mock-echo" in {m["id"] for m in reply.json()["data"]}
"""


def test_live_mode_against_a_gateway_on_a_loopback_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acceptance conftest in live mode: evidence names the URL, and /admin/features is checked."""
    root = make_project(tmp_path, alpha="In Progress")
    acceptance = root / "tests" / "acceptance"
    (acceptance / "test_demo.py").write_text(LIVE_TEST)
    shutil.copy(REPO / "tests" / "acceptance" / "conftest.py", acceptance / "conftest.py")
    app = create_app(load_gateway_config(REPO / "tests" / "acceptance" / "gateway.yaml"))
    with run_server(app) as url:
        result = invoke(
            root,
            monkeypatch,
            "--gateway-url",
            url,
            "--gateway-key",
            "sk-acceptance",
            "--gateway-master-key",
            "sk-acceptance-master",
            "--format",
            "json",
        )
    port = url.rpartition(":")[2]
    evidence = load_evidence(root / ".planner" / f"evidence-127.0.0.1-{port}.json")  # kept per target
    assert evidence is not None, result.output
    assert not (root / ".planner" / "evidence.json").exists()  # the in-process record is not touched
    assert (evidence.gateway_url, evidence.gateway_version) == (url, gateway_version)
    assert evidence.gateway_features is not None  # read from /admin/features with the master key
    assert set(evidence.gateway_features) == {f.slug for f in CATALOG}
    assert evidence.features["alpha"].passed == 1
    rows = {row["slug"]: row for row in json.loads(result.stdout)["features"]}
    # `alpha` passes but this gateway build's catalog does not list it: an error against a live gateway.
    assert "alpha" not in {f.slug for f in CATALOG}
    assert rows["alpha"]["verdict"] == "error"
    assert f"the gateway at {url} does not report `alpha` in /admin/features" in rows["alpha"]["message"]
    assert result.exit_code == 1
    assert "sk-acceptance" not in result.output  # keys travel in the environment, never printed


IN_PROCESS_TEST = """
import pytest

@pytest.mark.feature("alpha")
def test_in_process(gateway):
    assert not gateway.live and gateway.url.startswith("http://127.0.0.1:")
    assert gateway.client.get("/v1/models", headers=gateway.headers()).status_code == 200
    assert gateway.client.get("/admin/features", headers=gateway.admin_headers()).status_code == 200
"""


def test_in_process_gateway_reports_its_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The acceptance conftest by default: a gateway per module on a loopback port, its build recorded."""
    root = make_project(tmp_path)
    acceptance = root / "tests" / "acceptance"
    (acceptance / "test_demo.py").write_text(IN_PROCESS_TEST)
    for name in ("conftest.py", "gateway.yaml"):
        shutil.copy(REPO / "tests" / "acceptance" / name, acceptance / name)
    result = invoke(root, monkeypatch, "--format", "json")
    evidence = load_evidence(root / ".planner" / "evidence.json")
    assert evidence is not None, result.output
    assert evidence.features["alpha"].passed == 1, result.output
    assert (evidence.gateway_url, evidence.gateway_version) == (None, gateway_version)
    assert evidence.gateway_features is not None
    assert set(evidence.gateway_features) == {f.slug for f in CATALOG}
    row = next(r for r in json.loads(result.stdout)["features"] if r["slug"] == "alpha")
    assert row["verdict"] == "warning" and "does not report `alpha`" in row["message"]  # in-process: no error


def test_show_lists_the_steps_with_what_the_evidence_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path)
    monkeypatch.chdir(root)
    before = CliRunner().invoke(main, ["show", "alpha"])
    assert "steps: 1, not verified yet: run `planner track`" in before.output
    assert invoke(root, monkeypatch).exit_code == 0
    shown = CliRunner().invoke(main, ["show", "alpha"])
    assert shown.exit_code == 0, shown.output
    assert "steps: 0/1 done; evidence from commit unknown" in shown.output  # not a git work tree
    assert "[!] 1. Step." in shown.output  # a linked test fails
    set_status(root, "beta", "In Progress")  # plans/ changed since the run: the evidence is stale
    assert (
        "evidence is stale (from commit unknown; changed since: plans/)"
        in CliRunner().invoke(main, ["show", "beta"]).output
    )
    data = json.loads(CliRunner().invoke(main, ["show", "beta", "--format", "json"]).output)
    assert data["steps"] == [{"number": 1, "text": "Step."}]


def test_judge_recorded_is_what_the_site_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One call: the target's recorded evidence, judged, with its staleness; None before any run."""
    root = make_project(tmp_path, alpha_ok=True)
    plans = [plan("alpha", "In Progress"), plan("beta", "Planned")]
    assert judge_recorded(root, plans, []) is None
    assert invoke(root, monkeypatch).exit_code == 0
    report = judge_recorded(root, plans, [])
    assert report is not None and report.stale is None
    alpha = report.feature("alpha")
    assert alpha is not None and (alpha.steps_done, alpha.steps_total, alpha.progress) == (1, 1, 1.0)
    (root / "tests" / "acceptance" / "test_demo.py").write_text(ACCEPTANCE.format(alpha_ok=False))
    stale = judge_recorded(root, plans, [])
    assert stale is not None and stale.stale == "from commit unknown; changed since: tests/"
    assert all(row.stale == stale.stale for row in stale.features)
    assert judge_recorded(root, plans, [], gateway_url="http://127.0.0.1:9") is None  # another target
