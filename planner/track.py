"""`planner track`: run the acceptance tests, then judge each plan's status against the evidence.

Judging (`judge`) is a pure function of the plans, the completed designs and the evidence; running
(`run_acceptance`) starts pytest in a subprocess with planner's plugin, which writes the evidence file;
`judge_recorded` loads a target's recorded evidence, works out whether it is stale and judges it (what the
site calls).

Progress is declared scope: each item of a plan's *Implementation Steps* is a criterion, and acceptance
tests name the steps they verify (`@pytest.mark.feature("slug", step=3)`). A step is done when at least one
linked test was recorded and every linked test passed (a failed or skipped one leaves it not done); a step
no test names is not done. progress = done steps / all steps.

Verdict rules, one row per feature (a plan's `feature`, a design's `feature`, or a slug found only in the
evidence or in the gateway's `/admin/features`):

- Completed (a plan marked Completed, or a design in `docs/design/`): a failing test, or no test recorded
  at all → error (`regression` for a design); tests that were all skipped, or steps no passing test
  verifies → warning ("unverified"); every step done → ok.
- In Progress → info, with progress = done steps / all steps.
- Proposed or Planned with every step done → warning, "implemented ahead of its plan".
- Acceptance tests but no plan or design → warning; reported by the gateway but no plan or design → warning.
- A verified feature (all its tests pass) that the gateway's `/admin/features` does not report → error
  against a live gateway (`--gateway-url`), warning against the in-process one.
- Tests naming a step the plan does not have → warning.

Staleness never changes a verdict: every row carries the same `stale` text when the evidence was recorded
from other files than the ones in the working tree now (see `planner.fingerprint`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from planner.config import DEFAULT_CLOSED_STATUSES
from planner.evidence import Evidence, FeatureEvidence, RecordedTest, evidence_path, load_evidence
from planner.fingerprint import staleness
from planner.model import Design, Plan, Step

Verdict = Literal["ok", "info", "warning", "error"]
_SEVERITY: dict[str, int] = {"ok": 0, "info": 1, "warning": 2, "error": 3}

ACCEPTANCE_DIR = "tests/acceptance"
COMPLETED = "Completed"
IN_PROGRESS = "In Progress"
NOT_STARTED = ("Proposed", "Planned")
# Environment variables through which keys reach the pytest subprocess (never on its command line, which
# any local user can read with `ps`); the plugin reads them as the defaults of its --gateway-* options.
KEY_ENV = "PLANNER_GATEWAY_KEY"
MASTER_KEY_ENV = "PLANNER_GATEWAY_MASTER_KEY"
_NAMED_TESTS = 5


# A step whose own note says it is unfinished, as plans write it: "*(Partly built: ...)*", "(Not built.)".
_UNFINISHED_NOTE = re.compile(r"\((?:partly|not(?: yet)?) built\b", re.IGNORECASE)


@dataclass(frozen=True)
class StepResult:
    """One Implementation Step and the recorded tests that verify it."""

    number: int
    text: str
    tests: tuple[RecordedTest, ...]

    @property
    def declared_unfinished(self) -> bool:
        """The plan itself says the step is partly built or not built: passing tests of the part that exists
        must not make the roadmap claim more than its author does."""
        return _UNFINISHED_NOTE.search(self.text) is not None

    @property
    def done(self) -> bool:
        """At least one linked test was recorded, every linked test passed, and the plan does not call the
        step unfinished."""
        return (
            bool(self.tests)
            and all(t.outcome == "passed" for t in self.tests)
            and not self.declared_unfinished
        )

    @property
    def state(self) -> str:
        """`done`, `failing`, `unfinished per the plan`, `unverified` (only skipped tests) or `no test`."""
        if self.done:
            return "done"
        if any(t.outcome == "failed" for t in self.tests):
            return "failing"
        if self.declared_unfinished:
            return "unfinished per the plan"
        return "unverified" if self.tests else "no test"

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "text": self.text,
            "done": self.done,
            "state": self.state,
            "tests": [{"name": t.name, "outcome": t.outcome} for t in self.tests],
        }


@dataclass(frozen=True)
class FeatureVerdict:
    """One row of the track table: what the site, `track` and `show` say about one feature."""

    slug: str
    status: str | None  # None: no plan or design covers the feature
    passed: int
    failed: int
    skipped: int
    progress: float | None  # steps_done / steps_total; None when the plan declares no steps
    verdict: Verdict
    message: str
    steps_done: int = 0
    steps_total: int = 0
    stale: str | None = None  # why the evidence is out of date (`from commit abc1234; ...`); None: fresh
    failures: tuple[tuple[str, str], ...] = ()  # (test name, failure message) of each failing test
    regression: bool = False  # Completed, yet a linked test fails or no test was recorded
    steps: tuple[StepResult, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "status": self.status,
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "progress": None if self.progress is None else round(self.progress, 4),
            "steps_done": self.steps_done,
            "steps_total": self.steps_total,
            "verdict": self.verdict,
            "message": self.message,
            "regression": self.regression,
            "stale": self.stale,
            "failures": [{"test": name, "message": message} for name, message in self.failures],
            "steps": [step.to_json() for step in self.steps],
        }


@dataclass(frozen=True)
class TrackReport:
    """Every feature's verdict plus the evidence they were judged on."""

    features: tuple[FeatureVerdict, ...]
    evidence: Evidence
    stale: str | None = None

    @property
    def errors(self) -> int:
        return sum(f.verdict == "error" for f in self.features)

    @property
    def warnings(self) -> int:
        return sum(f.verdict == "warning" for f in self.features)

    def feature(self, slug: str) -> FeatureVerdict | None:
        return next((f for f in self.features if f.slug == slug), None)

    def to_json(self) -> dict[str, Any]:
        ev = self.evidence
        return {
            "features": [f.to_json() for f in self.features],
            "summary": {"errors": self.errors, "warnings": self.warnings},
            "evidence": {
                "generated_at": ev.generated_at,
                "git_commit": ev.commit,
                "dirty": ev.from_dirty_tree,
                "gateway_url": ev.gateway_url,
                "gateway_version": ev.gateway_version,
                "stale": self.stale,
            },
        }


class TrackError(Exception):
    """The acceptance run could not produce evidence; the message says why."""


def judge(
    plans: Sequence[Plan],
    designs: Sequence[Design],
    evidence: Evidence,
    *,
    stale: str | None = None,
    closed: Collection[str] = DEFAULT_CLOSED_STATUSES,
) -> TrackReport:
    """Compare each feature's status with its evidence (see the module docstring for the rules).

    `stale` is `planner.fingerprint.staleness` of the evidence, copied onto every row; `closed` are the
    configured closing states (Rejected, Withdrawn, ...), whose plans claim nothing and are not judged.
    """
    rows: list[FeatureVerdict] = []
    covered: set[str] = set()
    for design in designs:
        covered.add(design.feature)
        rows.append(_judge_one(design.slug, COMPLETED, design.feature, design.steps, evidence, design=True))
    for plan in plans:
        covered.add(plan.feature)
        if plan.status in closed:
            message = f"closed as {plan.status}: off the roadmap, so its tests prove nothing either way"
            rows.append(_row(plan.slug, plan.status, evidence.for_feature(plan.feature), "ok", message, ()))
            continue
        rows.append(_judge_one(plan.slug, plan.status, plan.feature, plan.steps, evidence, design=False))
    reported = set(evidence.gateway_features or ())
    for feature in sorted((set(evidence.features) | reported) - covered):
        fe = evidence.for_feature(feature)
        if fe is not None:
            message = f"{_counts(fe)}, but no plan or design covers this feature"
        else:
            message = "the gateway reports this feature, but no plan or design covers it"
        rows.append(_row(feature, None, fe, "warning", message, ()))
    rows.sort(key=lambda r: r.slug)
    if stale is not None:
        rows = [_with_stale(row, stale) for row in rows]
    return TrackReport(tuple(rows), evidence, stale)


def judge_recorded(
    root: Path, plans: Sequence[Plan], designs: Sequence[Design], *, gateway_url: str | None = None
) -> TrackReport | None:
    """Judge the evidence recorded for one target (the in-process gateway, or `gateway_url`), with its
    staleness against the files under `root` now; None when that target has no evidence yet.

    Raises `planner.evidence.EvidenceError` when the file exists but cannot be read.
    """
    evidence = load_evidence(root / evidence_path(gateway_url))
    if evidence is None:
        return None
    return judge(plans, designs, evidence, stale=staleness(root, evidence))


def _with_stale(row: FeatureVerdict, stale: str) -> FeatureVerdict:
    return FeatureVerdict(**{**row.__dict__, "stale": stale})


def step_results(steps: Sequence[Step], fe: FeatureEvidence | None) -> tuple[StepResult, ...]:
    """Each declared step with the recorded tests that name it.

    A failing test that names no step (a test file that cannot be collected is one) counts against every
    step: something of the feature is broken and nothing says what, so no step can be claimed done.
    """
    tests = fe.tests if fe is not None else ()
    unplaced = tuple(t for t in tests if t.outcome == "failed" and not t.steps)
    return tuple(
        StepResult(s.number, s.text, tuple(t for t in tests if s.number in t.steps) + unplaced) for s in steps
    )


def _judge_one(
    slug: str, status: str, feature: str, steps: Sequence[Step], evidence: Evidence, *, design: bool
) -> FeatureVerdict:
    fe = evidence.for_feature(feature)
    results = step_results(steps, fe)
    done = sum(r.done for r in results)
    progress = f"{done}/{len(results)} steps done" if results else "no Implementation Steps declared"
    regression = False
    verdict: Verdict
    if status == COMPLETED:
        claim = "regression" if design else "marked Completed"
        if fe is None or not fe.recorded:
            verdict, message, regression = "error", f"{claim}: no acceptance test of `{feature}` ran", True
        elif fe.failed:
            verdict, message, regression = "error", f"{claim}: {_failing(fe)}", True
        elif fe.total == 0:
            verdict = "warning"
            message = f"unverified: no acceptance test of `{feature}` ran ({fe.skipped} skipped{_reason(fe)})"
        elif not results:
            verdict, message = "warning", f"{_counts(fe)}, but {progress}: nothing says what done means"
        elif done < len(results):
            verdict, message = "warning", f"unverified: {progress}; {_open_steps(results)}"
        else:
            verdict, message = "ok", f"{progress}; {_counts(fe)}"
            if not design:
                message += f"; run `planner complete {slug}` to move it to the design docs"
    elif status == IN_PROGRESS:
        verdict = "info"
        message = f"in progress: {progress}"
        if fe is not None and fe.recorded:
            message += f"; {_failing(fe) if fe.failed else _counts(fe)}"
        else:
            message += "; no acceptance test ran yet"
    elif status in NOT_STARTED:
        if results and done == len(results):
            verdict, message = "warning", f"implemented ahead of its plan: {progress}; {_counts(fe)}"
        else:
            verdict = "ok"
            message = _counts(fe) if fe is not None and fe.recorded else "no acceptance test ran yet"
    else:
        verdict, message = "info", f"status {status!r} is not one that track judges"
    declared = {s.number for s in steps}
    unknown = sorted({n for t in (fe.tests if fe else ()) for n in t.steps} - declared)
    if unknown and steps:
        verdict = verdict if _SEVERITY[verdict] >= _SEVERITY["warning"] else "warning"
        listed = ", ".join(map(str, unknown))
        message += f"; tests name step(s) {listed}, which the plan does not declare (it has {len(steps)})"
    verified = fe is not None and fe.all_green
    if verified and evidence.gateway_features is not None and feature not in evidence.gateway_features:
        live = evidence.gateway_url is not None
        missing: Verdict = "error" if live else "warning"
        if _SEVERITY[missing] > _SEVERITY[verdict]:
            verdict = missing
        where = f"the gateway at {evidence.gateway_url}" if live else "the gateway"
        message += f"; verified, but {where} does not report `{feature}` in /admin/features"
    return _row(slug, status, fe, verdict, message, results, regression=regression)


def _row(
    slug: str,
    status: str | None,
    fe: FeatureEvidence | None,
    verdict: Verdict,
    message: str,
    results: tuple[StepResult, ...],
    *,
    regression: bool = False,
) -> FeatureVerdict:
    fe = fe or FeatureEvidence()
    done = sum(r.done for r in results)
    return FeatureVerdict(
        slug,
        status,
        fe.passed,
        fe.failed,
        fe.skipped,
        done / len(results) if results else None,
        verdict,
        message,
        steps_done=done,
        steps_total=len(results),
        failures=tuple((t.name, t.message or "") for t in fe.tests if t.outcome == "failed"),
        regression=regression,
        steps=results,
    )


def _counts(fe: FeatureEvidence | None) -> str:
    if fe is None or fe.total == 0:
        return f"no acceptance test ran ({fe.skipped} skipped)" if fe is not None else "no acceptance tests"
    text = f"{fe.passed} of {fe.total} acceptance tests passing"
    return text + (f" ({fe.skipped} skipped)" if fe.skipped else "")


def _reason(fe: FeatureEvidence) -> str:
    reasons = sorted({t.message for t in fe.tests if t.outcome == "skipped" and t.message})
    return f": {reasons[0]}" if len(reasons) == 1 else ""


def _open_steps(results: Sequence[StepResult]) -> str:
    by_state: dict[str, list[str]] = {}
    for r in results:
        if not r.done:
            by_state.setdefault(r.state, []).append(str(r.number))
    return "; ".join(f"step {', '.join(numbers)}: {state}" for state, numbers in by_state.items())


def _failing(fe: FeatureEvidence) -> str:
    names = [t.name for t in fe.tests if t.outcome == "failed"]
    shown = ", ".join(names[:_NAMED_TESTS])
    more = f" and {len(names) - _NAMED_TESTS} more" if len(names) > _NAMED_TESTS else ""
    return f"{fe.failed} of {fe.total} acceptance tests fail: {shown}{more}"


def format_table(report: TrackReport) -> str:
    """The human-readable table, one row per feature, then failures, the summary, where the evidence came
    from and whether it is stale."""
    header = ("FEATURE", "STATUS", "STEPS", "PASS", "FAIL", "SKIP", "PROGRESS", "VERDICT")
    body = [
        (
            f.slug,
            f.status or "-",
            f"{f.steps_done}/{f.steps_total}" if f.steps_total else "-",
            str(f.passed),
            str(f.failed),
            str(f.skipped),
            "-" if f.progress is None else f"{f.progress:.0%}",
            f.verdict,
        )
        for f in report.features
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)) + "  MESSAGE"]
    for cells, f in zip(body, report.features, strict=True):
        lines.append(
            "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)) + "  " + f.message
        )
    failures = [(f.slug, name, message) for f in report.features for name, message in f.failures]
    if failures:
        lines += ["", "failing tests:"]
        # The first line of each message: assertion diffs follow it in the JSON output.
        lines += [f"  {name}: {(message or '(no message)').splitlines()[0]}" for _, name, message in failures]
    ev = report.evidence
    gateway = ev.gateway_url or "in-process gateway"
    version = f" {ev.gateway_version}" if ev.gateway_version else ""
    lines.append("")
    lines.append(
        f"{report.errors} error(s), {report.warnings} warning(s); evidence from {ev.generated_at} "
        f"at commit {ev.commit_label(12)} against {gateway}{version}"
    )
    if report.stale:
        lines.append(f"stale ({report.stale}): run `planner track` to refresh it")
    return "\n".join(lines)


def check_reachable(url: str) -> None:
    """Fail early, before every test fails alike, when nothing answers at the live gateway's URL."""
    import httpx  # here, not at the top: the site build imports this module for `judge` alone

    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=10)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL (`http://[::1`) is not an HTTPError
        raise TrackError(f"cannot reach the gateway at {url}: {exc}") from exc


@dataclass(frozen=True)
class AcceptanceRun:
    """What the pytest subprocess left behind: its exit code and combined output."""

    returncode: int
    output: str


def run_acceptance(
    root: Path,
    evidence_path: Path,
    *,
    gateway_url: str | None = None,
    gateway_key: str | None = None,
    gateway_master_key: str | None = None,
    on_progress: Callable[[str], None] = lambda line: None,
    feature: str | None = None,
) -> AcceptanceRun:
    """Run `tests/acceptance` under `root` with planner's plugin writing `evidence_path`.

    With `feature`, only the tests marked with that feature run (the plugin's `--planner-feature`).

    `on_progress` gets the plugin's progress lines as they come: `collected N`, then
    `done OUTCOME NODEID` per test. Raises TrackError when pytest could not run the tests at all.
    """
    folder = root / ACCEPTANCE_DIR
    if not folder.is_dir():
        raise TrackError(f"{folder}: no acceptance tests folder (one test_<slug>.py per feature goes there)")
    if gateway_url:
        check_reachable(gateway_url)
    env = dict(os.environ)
    command = [
        sys.executable,
        "-m",
        "pytest",
        ACCEPTANCE_DIR,
        "-q",
        "-p",
        "no:cacheprovider",
        "--continue-on-collection-errors",
        "--planner-evidence",
        str(evidence_path),
    ]
    if gateway_url:
        command += ["--gateway-url", gateway_url]
    if feature:
        command += ["--planner-feature", feature]
    for name, value in ((KEY_ENV, gateway_key), (MASTER_KEY_ENV, gateway_master_key)):
        env.pop(name, None)
        if value:
            env[name] = value
    read_fd, write_fd = os.pipe()
    command += ["--planner-progress-fd", str(write_fd)]
    with tempfile.TemporaryFile() as output:
        try:
            proc = subprocess.Popen(
                command, cwd=root, env=env, stdout=output, stderr=subprocess.STDOUT, pass_fds=(write_fd,)
            )
        except OSError as exc:
            os.close(read_fd)
            raise TrackError(f"could not start pytest: {exc}") from exc
        finally:
            os.close(write_fd)  # the child holds its own copy; ours would keep the pipe from ending
        with os.fdopen(read_fd, encoding="utf-8", errors="replace") as progress:
            for line in progress:
                on_progress(line.rstrip("\n"))
        returncode = proc.wait()
        output.seek(0)
        text = output.read().decode("utf-8", errors="replace")
    if returncode not in (0, 1, 5):  # 5: no tests collected, which is evidence too (of nothing)
        tail = "\n".join(text.splitlines()[-30:])
        raise TrackError(f"pytest could not run the acceptance tests (exit code {returncode}):\n{tail}")
    return AcceptanceRun(returncode, text)
