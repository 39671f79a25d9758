"""planner's pytest plugin: the `feature(slug)` marker and per-feature evidence.

Loaded in every pytest run through the `pytest11` entry point. It always registers the marker and the
gateway options (`--gateway-url`, `--gateway-key`, `--gateway-master-key`) that acceptance tests read. Given
`--planner-evidence PATH` it records each marked test's outcome and writes the evidence file (see
`planner.evidence`) atomically at the end of the session.

How an outcome is counted, per test and per feature it is marked with:

- passed: every phase passed (an unexpected pass of a non-strict `xfail` counts as passed: the behaviour
  was observed working).
- failed: setup, call or teardown failed or errored, or the test is an expected failure (`xfail`): a
  known-broken behaviour is not evidence that the feature works, so it must not let a feature look green.
- skipped: skipped in setup or call; skipped tests prove nothing either way.
- A test module that cannot be collected counts as one failed test of the feature its file name names
  (`tests/acceptance/test_response_caching.py` -> `response-caching`).

Tests that never ran (deselected, or after `-x` stopped the run) are not recorded. A run that is
interrupted (Ctrl-C, a collection error without `--continue-on-collection-errors`) or that pytest could not
start leaves the previous evidence file as it was.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from planner.evidence import Evidence, FeatureEvidence, RecordedTest, write_evidence

PLUGIN_NAME = "planner-evidence"
SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_TEST_FILE_RE = re.compile(r"(?:^|/)test_([a-z0-9_]+)\.py$")
# Worst outcome wins when a test reports several phases.
_RANK = {"passed": 0, "skipped": 1, "failed": 2}
_BROKEN_RUN = (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.USAGE_ERROR)


@dataclass
class GatewayInfo:
    """What the acceptance fixture learnt about the gateway under test (see `record_gateway`)."""

    url: str | None = None
    version: str | None = None
    features: dict[str, bool] | None = None


@dataclass(eq=False)  # pluggy keeps plugins in a set: identity hashing
class EvidenceRecorder:
    """Collects outcomes during one session; registered as a plugin only when evidence is asked for."""

    path: Path
    rootdir: Path
    progress_fd: int | None = None
    slugs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # nodeid -> feature slugs
    outcomes: dict[str, str] = field(default_factory=dict)  # nodeid -> outcome
    gateway: GatewayInfo = field(default_factory=GatewayInfo)

    def _progress(self, line: str) -> None:
        if self.progress_fd is not None:
            try:
                os.write(self.progress_fd, (line + "\n").encode("utf-8"))
            except OSError:
                # The reader went away (the user interrupted `planner track`); the run itself carries on.
                self.progress_fd = None

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            slugs = feature_slugs(item)
            if slugs:
                self.slugs[item.nodeid] = slugs

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._progress(f"collected {len(session.items)}")

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            match = _TEST_FILE_RE.search(report.nodeid)
            if match:
                self.slugs[report.nodeid] = (match.group(1).replace("_", "-"),)
                self.outcomes[report.nodeid] = "failed"

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = phase_outcome(report)
        if outcome is not None:
            previous = self.outcomes.get(report.nodeid, "passed")
            self.outcomes[report.nodeid] = max(previous, outcome, key=_RANK.__getitem__)
        if report.when == "teardown":
            self._progress(f"done {self.outcomes.get(report.nodeid, 'passed')} {report.nodeid}")

    def evidence(self) -> Evidence:
        """The evidence gathered so far, one entry per feature slug."""
        per_feature: dict[str, list[RecordedTest]] = {}
        for nodeid, slugs in self.slugs.items():
            outcome = self.outcomes.get(nodeid)
            if outcome is None:
                continue  # collected but never ran
            for slug in slugs:
                per_feature.setdefault(slug, []).append(RecordedTest(nodeid, outcome))
        features = {
            slug: FeatureEvidence(
                passed=sum(t.outcome == "passed" for t in tests),
                failed=sum(t.outcome == "failed" for t in tests),
                skipped=sum(t.outcome == "skipped" for t in tests),
                tests=tuple(sorted(tests, key=lambda t: t.name)),
            )
            for slug, tests in per_feature.items()
        }
        return Evidence(
            generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
            git_commit=git_commit(self.rootdir),
            gateway_version=self.gateway.version,
            gateway_url=self.gateway.url,
            features=features,
            gateway_features=self.gateway.features,
        )

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        # An interrupted or broken run keeps the previous evidence: half a run would read as missing tests.
        if exitstatus in (
            pytest.ExitCode.INTERRUPTED,
            pytest.ExitCode.INTERNAL_ERROR,
            pytest.ExitCode.USAGE_ERROR,
        ):
            return
        write_evidence(self.path, self.evidence())


def feature_slugs(item: pytest.Item) -> tuple[str, ...]:
    """The slugs a test is marked with; a malformed marker is a usage error naming the test."""
    slugs: list[str] = []
    for marker in item.iter_markers("feature"):
        if len(marker.args) != 1 or marker.kwargs or not isinstance(marker.args[0], str):
            raise pytest.UsageError(f"{item.nodeid}: use @pytest.mark.feature('slug') with exactly one slug")
        slug = marker.args[0]
        if not SLUG_RE.match(slug):
            raise pytest.UsageError(f"{item.nodeid}: feature slug {slug!r} is not lowercase-with-hyphens")
        if slug not in slugs:
            slugs.append(slug)
    return tuple(slugs)


def phase_outcome(report: pytest.TestReport) -> str | None:
    """The outcome one phase report contributes, or None when it says nothing (a passing setup/teardown)."""
    xfailed = hasattr(report, "wasxfail")
    if report.failed:
        return "failed"
    if report.skipped:
        # An xfail is reported as skipped; it is a known failure, not an absence of evidence.
        return "failed" if xfailed else "skipped"
    if report.when == "call":
        return "passed"
    return None


def git_commit(root: Path) -> str | None:
    """`git rev-parse HEAD` in `root`, with `-dirty` when the work tree differs from it; None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if status.strip() else "") if head else None


def record_gateway(
    config: pytest.Config,
    *,
    url: str | None = None,
    version: str | None = None,
    features: dict[str, bool] | None = None,
) -> None:
    """Tell the evidence recorder about the gateway under test (a no-op unless evidence is being recorded).

    `url` is the live gateway's URL (leave it None for an in-process gateway), `version` and `features` are
    what its `GET /admin/features` reported.
    """
    recorder = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if isinstance(recorder, EvidenceRecorder):
        recorder.gateway = GatewayInfo(
            url=url or recorder.gateway.url,
            version=version or recorder.gateway.version,
            features=features if features is not None else recorder.gateway.features,
        )


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("planner", "planner: acceptance tests as evidence")
    group.addoption(
        "--planner-evidence",
        metavar="PATH",
        default=None,
        help="record per-feature outcomes of tests marked feature(slug) and write them to PATH",
    )
    group.addoption(
        "--planner-progress-fd",
        metavar="FD",
        type=int,
        default=None,
        help="write a line per finished test to this file descriptor (used by planner track)",
    )
    group.addoption(
        "--gateway-url", metavar="URL", default=None, help="run acceptance tests against this live gateway"
    )
    # Keys default to environment variables so that `planner track` need not put them on a command line.
    group.addoption(
        "--gateway-key",
        metavar="KEY",
        default=os.environ.get("PLANNER_GATEWAY_KEY"),
        help="a virtual key of that gateway allowed every model (default: $PLANNER_GATEWAY_KEY)",
    )
    group.addoption(
        "--gateway-master-key",
        metavar="KEY",
        default=os.environ.get("PLANNER_GATEWAY_MASTER_KEY"),
        help="that gateway's master key, for admin routes (default: $PLANNER_GATEWAY_MASTER_KEY)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "feature(slug): an acceptance test of the roadmap feature `slug` (planner track counts it)",
    )
    path = config.getoption("planner_evidence")
    if path:
        recorder = EvidenceRecorder(
            path=Path(path).resolve(),
            rootdir=Path(str(config.rootpath)),
            progress_fd=config.getoption("planner_progress_fd"),
        )
        config.pluginmanager.register(recorder, PLUGIN_NAME)
