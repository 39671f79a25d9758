"""`planner track`: run the acceptance tests, then judge each plan's status against the evidence.

Judging (`judge`) is a pure function of the plans, the completed designs and the evidence; running
(`run_acceptance`) starts pytest in a subprocess with planner's plugin, which writes the evidence file.

Verdict rules, one row per feature (a plan's `feature`, a design's `feature`, or a slug found only in the
evidence or in the gateway's `/admin/features`):

- Completed (a plan marked Completed, or a design in `docs/design/`) with a failing test, or with no test
  that ran → error ("regression" for a design); all passing → ok.
- In Progress → info, with progress = passed / (passed + failed).
- Proposed or Planned with every test passing → warning, "implemented ahead of its plan".
- Acceptance tests but no plan or design → warning; reported by the gateway but no plan or design → warning.
- A verified feature (all its tests pass) that the gateway's `/admin/features` does not report → error
  against a live gateway (`--gateway-url`), warning against the in-process one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import httpx

from planner.evidence import Evidence, FeatureEvidence
from planner.model import Design, Plan

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


@dataclass(frozen=True)
class FeatureVerdict:
    """One row of the track table."""

    slug: str
    status: str | None  # None: no plan or design covers the feature
    passed: int
    failed: int
    skipped: int
    progress: float | None
    verdict: Verdict
    message: str
    # --- Fields the site renders (roadmap-site branch). Conservative stand-ins until step-based progress and
    # evidence v2 land: the roadmap-evidence branch's definitions of these fields replace these at merge.
    steps_done: int = 0
    steps_total: int = 0
    stale: str | None = None  # why the evidence is stale (e.g. "from commit abc1234"); None when fresh
    failures: tuple[tuple[str, str], ...] = ()  # (test name, failure message)
    regression: bool = False  # a Completed feature whose acceptance tests fail or did not run
    # --- end of the roadmap-site stand-ins

    def to_json(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "status": self.status,
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "progress": None if self.progress is None else round(self.progress, 4),
            "verdict": self.verdict,
            "message": self.message,
        }


@dataclass(frozen=True)
class TrackReport:
    """Every feature's verdict plus the evidence they were judged on."""

    features: tuple[FeatureVerdict, ...]
    evidence: Evidence

    @property
    def errors(self) -> int:
        return sum(f.verdict == "error" for f in self.features)

    @property
    def warnings(self) -> int:
        return sum(f.verdict == "warning" for f in self.features)

    def to_json(self) -> dict[str, Any]:
        return {
            "features": [f.to_json() for f in self.features],
            "summary": {"errors": self.errors, "warnings": self.warnings},
        }


class TrackError(Exception):
    """The acceptance run could not produce evidence; the message says why."""


def judge(plans: Sequence[Plan], designs: Sequence[Design], evidence: Evidence) -> TrackReport:
    """Compare each feature's status with its evidence (see the module docstring for the rules)."""
    rows: list[FeatureVerdict] = []
    covered: set[str] = set()
    for design in designs:
        covered.add(design.feature)
        rows.append(_judge_one(design.slug, COMPLETED, design.feature, evidence, design=True))
    for plan in plans:
        covered.add(plan.feature)
        rows.append(_judge_one(plan.slug, plan.status, plan.feature, evidence, design=False))
    reported = set(evidence.gateway_features or ())
    for feature in sorted((set(evidence.features) | reported) - covered):
        fe = evidence.for_feature(feature)
        if fe is not None:
            message = f"{_counts(fe)}, but no plan or design covers this feature"
        else:
            message = "the gateway reports this feature, but no plan or design covers it"
        rows.append(_row(feature, None, fe, "warning", message))
    rows.sort(key=lambda r: r.slug)
    rows = [_mark_regression(r) for r in rows]  # roadmap-site stand-in; see FeatureVerdict
    return TrackReport(tuple(rows), evidence)


def _judge_one(slug: str, status: str, feature: str, evidence: Evidence, *, design: bool) -> FeatureVerdict:
    fe = evidence.for_feature(feature)
    verdict: Verdict
    if status == COMPLETED:
        claim = "regression" if design else "marked Completed"
        if fe is None or fe.total == 0:
            skipped = f" ({fe.skipped} skipped)" if fe is not None and fe.skipped else ""
            verdict, message = "error", f"{claim}: no acceptance test of `{feature}` ran{skipped}"
        elif fe.failed:
            verdict, message = "error", f"{claim}: {_failing(fe)}"
        else:
            verdict, message = "ok", _counts(fe)
            if not design:
                message += f"; run `planner complete {slug}` to move it to the design docs"
    elif status == IN_PROGRESS:
        verdict = "info"
        message = _counts(fe) if fe is not None and fe.total else "in progress; no acceptance test ran yet"
    elif status in NOT_STARTED:
        if fe is not None and fe.all_green:
            verdict, message = "warning", f"implemented ahead of its plan: {_counts(fe)}"
        else:
            verdict = "ok"
            message = _counts(fe) if fe is not None and fe.total else "no acceptance test ran yet"
    else:
        verdict, message = "info", f"status {status!r} is not one that track judges"
    verified = fe is not None and fe.all_green
    if verified and evidence.gateway_features is not None and feature not in evidence.gateway_features:
        live = evidence.gateway_url is not None
        missing: Verdict = "error" if live else "warning"
        if _SEVERITY[missing] > _SEVERITY[verdict]:
            verdict = missing
        where = f"the gateway at {evidence.gateway_url}" if live else "the gateway"
        message += f"; verified, but {where} does not report `{feature}` in /admin/features"
    return _row(slug, status, fe, verdict, message)


def _mark_regression(row: FeatureVerdict) -> FeatureVerdict:
    """roadmap-site stand-in: Completed (a plan or a design) with a failing test, or none that ran."""
    if row.status == COMPLETED and (row.failed or not row.passed):
        return replace(row, regression=True)
    return row


def _row(
    slug: str, status: str | None, fe: FeatureEvidence | None, verdict: Verdict, message: str
) -> FeatureVerdict:
    fe = fe or FeatureEvidence()
    return FeatureVerdict(slug, status, fe.passed, fe.failed, fe.skipped, fe.progress, verdict, message)


def _counts(fe: FeatureEvidence | None) -> str:
    if fe is None or fe.total == 0:
        return f"no acceptance test ran ({fe.skipped} skipped)" if fe is not None else "no acceptance tests"
    text = f"{fe.passed} of {fe.total} acceptance tests passing"
    return text + (f" ({fe.skipped} skipped)" if fe.skipped else "")


def _failing(fe: FeatureEvidence) -> str:
    names = [t.name for t in fe.tests if t.outcome == "failed"]
    shown = ", ".join(names[:_NAMED_TESTS])
    more = f" and {len(names) - _NAMED_TESTS} more" if len(names) > _NAMED_TESTS else ""
    return f"{fe.failed} of {fe.total} acceptance tests fail: {shown}{more}"


def format_table(report: TrackReport) -> str:
    """The human-readable table, one row per feature, then the summary and where the evidence came from."""
    header = ("FEATURE", "STATUS", "PASS", "FAIL", "SKIP", "PROGRESS", "VERDICT")
    body = [
        (
            f.slug,
            f.status or "-",
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
    ev = report.evidence
    gateway = ev.gateway_url or "in-process gateway"
    version = f" {ev.gateway_version}" if ev.gateway_version else ""
    lines.append("")
    commit = "unknown"
    if ev.git_commit:
        head, dirty, _ = ev.git_commit.partition("-dirty")
        commit = head[:12] + dirty
    lines.append(
        f"{report.errors} error(s), {report.warnings} warning(s); evidence from {ev.generated_at} "
        f"at commit {commit} against {gateway}{version}"
    )
    return "\n".join(lines)


def check_reachable(url: str) -> None:
    """Fail early, before every test fails alike, when nothing answers at the live gateway's URL."""
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
) -> AcceptanceRun:
    """Run `tests/acceptance` under `root` with planner's plugin writing `evidence_path`.

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
