"""planner's pytest plugin: the `feature(slug, step=N)` marker and per-feature evidence.

Loaded in every pytest run through the `pytest11` entry point. It always registers the marker and the
gateway options (`--gateway-url`, `--gateway-key`, `--gateway-master-key`) that acceptance tests read. Given
`--planner-evidence PATH` it records each marked test's outcome and writes the evidence file (see
`planner.evidence`) atomically at the end of the session.

A test names the feature it verifies and the Implementation Steps of that feature's plan it verifies:
`@pytest.mark.feature("slug", step=3)` or `step=(3, 4)`. A module-wide `pytestmark = feature("slug")` plus
a per-test `feature("slug", step=N)` is the usual shape; the steps of all markers of one slug add up.

How an outcome is counted, per test and per feature it is marked with:

- passed: every phase passed (an unexpected pass of a non-strict `xfail` counts as passed: the behaviour
  was observed working).
- failed: setup, call or teardown failed or errored, or the test is an expected failure (`xfail`): a
  known-broken behaviour is not evidence that the feature works, so it must not let a feature look green.
- skipped: skipped in setup or call; skipped tests prove nothing either way.
- A test module that cannot be collected counts as one failed test of the feature its file name names
  (`tests/acceptance/test_response_caching.py` -> `response-caching`).

A failed test's message (the crash line pytest reports) and a skipped test's reason are recorded, trimmed,
with the gateway keys given to the run and any `Bearer` token replaced by `***`.

Tests that never ran (deselected, or after `-x` stopped the run) are not recorded. A run that is
interrupted (Ctrl-C, a collection error without `--continue-on-collection-errors`) or that pytest could not
start leaves the previous evidence file as it was.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from planner.evidence import Evidence, FeatureEvidence, RecordedTest, write_evidence
from planner.fingerprint import TreeState, tree_state

PLUGIN_NAME = "planner-evidence"
SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_TEST_FILE_RE = re.compile(r"(?:^|/)test_([a-z0-9_]+)\.py$")
# Worst outcome wins when a test reports several phases.
_RANK = {"passed": 0, "skipped": 1, "failed": 2}
_BROKEN_RUN = (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.USAGE_ERROR)
MESSAGE_CHARS = 500
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",]+")


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
    # nodeid -> {feature slug: the steps of it the test verifies}
    slugs: dict[str, dict[str, tuple[int, ...]]] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)  # nodeid -> outcome
    messages: dict[str, str] = field(default_factory=dict)  # nodeid -> failure message or skip reason
    gateway: GatewayInfo = field(default_factory=GatewayInfo)
    secrets: tuple[str, ...] = ()  # values never written to the evidence (the gateway keys of this run)
    # The files as they were when the run started: evidence describes the code the tests imported.
    tree: TreeState = field(default_factory=lambda: TreeState(None, False))

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
            steps = feature_steps(item)
            if steps:
                self.slugs[item.nodeid] = steps

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._progress(f"collected {len(session.items)}")

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            match = _TEST_FILE_RE.search(report.nodeid)
            if match:
                self.slugs[report.nodeid] = {match.group(1).replace("_", "-"): ()}
                self.outcomes[report.nodeid] = "failed"
                self.messages[report.nodeid] = self._clean(f"cannot be collected: {crash_message(report)}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = phase_outcome(report)
        if outcome is not None:
            previous = self.outcomes.get(report.nodeid, "passed")
            worst = max(previous, outcome, key=_RANK.__getitem__)
            self.outcomes[report.nodeid] = worst
            if outcome == worst != "passed" and report.nodeid not in self.messages:
                self.messages[report.nodeid] = self._clean(phase_message(report))
        if report.when == "teardown":
            self._progress(f"done {self.outcomes.get(report.nodeid, 'passed')} {report.nodeid}")

    def evidence(self) -> Evidence:
        """The evidence gathered so far, one entry per feature slug."""
        per_feature: dict[str, list[RecordedTest]] = {}
        for nodeid, slugs in self.slugs.items():
            outcome = self.outcomes.get(nodeid)
            if outcome is None:
                continue  # collected but never ran
            message = self.messages.get(nodeid) if outcome != "passed" else None
            for slug, steps in slugs.items():
                per_feature.setdefault(slug, []).append(RecordedTest(nodeid, outcome, steps, message))
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
            git_commit=self.tree.commit,
            gateway_version=self.gateway.version,
            gateway_url=self.gateway.url,
            features=features,
            gateway_features=self.gateway.features,
            dirty=self.tree.dirty,
            fingerprint=self.tree.fingerprint,
            inputs=self.tree.inputs,
        )

    def _clean(self, text: str) -> str:
        """A message fit to keep: no secret, one paragraph at most MESSAGE_CHARS long."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        text = _BEARER.sub(r"\1***", text).strip()
        return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        # An interrupted or broken run keeps the previous evidence: half a run would read as missing tests.
        if exitstatus in (
            pytest.ExitCode.INTERRUPTED,
            pytest.ExitCode.INTERNAL_ERROR,
            pytest.ExitCode.USAGE_ERROR,
        ):
            return
        write_evidence(self.path, self.evidence())


def feature_steps(item: pytest.Item) -> dict[str, tuple[int, ...]]:
    """The slugs a test is marked with, each with the steps it verifies; a malformed marker is a usage
    error naming the test."""
    found: dict[str, set[int]] = {}
    for marker in item.iter_markers("feature"):
        if len(marker.args) != 1 or set(marker.kwargs) - {"step"} or not isinstance(marker.args[0], str):
            raise pytest.UsageError(
                f"{item.nodeid}: use @pytest.mark.feature('slug') or @pytest.mark.feature('slug', step=N)"
            )
        slug = marker.args[0]
        if not SLUG_RE.match(slug):
            raise pytest.UsageError(f"{item.nodeid}: feature slug {slug!r} is not lowercase-with-hyphens")
        found.setdefault(slug, set()).update(_steps(item, marker.kwargs.get("step")))
    return {slug: tuple(sorted(steps)) for slug, steps in found.items()}


def _steps(item: pytest.Item, value: object) -> tuple[int, ...]:
    values = value if isinstance(value, list | tuple | set | frozenset) else () if value is None else (value,)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise pytest.UsageError(
            f"{item.nodeid}: step={value!r}: a step is the number of an Implementation Step (1, 2, ...) "
            "or a tuple of them"
        )
    return tuple(values)


def crash_message(report: pytest.CollectReport | pytest.TestReport) -> str:
    """What pytest says went wrong, in one line: the crash message, else the last line of the report."""
    crash = getattr(report.longrepr, "reprcrash", None)
    message = getattr(crash, "message", None)
    if isinstance(message, str) and message.strip():
        return message
    lines = [line for line in str(report.longrepr or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "failed"


def phase_message(report: pytest.TestReport) -> str:
    """The message of a failed, xfailed or skipped phase."""
    if hasattr(report, "wasxfail"):
        return f"expected to fail (xfail){': ' + report.wasxfail if report.wasxfail else ''}"
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")  # (file, line, reason)
    where = "" if report.when == "call" else f"error in {report.when}: "
    return where + crash_message(report)


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
        "--planner-feature",
        metavar="SLUG",
        default=None,
        help="run only the tests marked feature(SLUG) (used by planner complete)",
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--planner-feature SLUG`: deselect every test not marked with SLUG."""
    wanted = config.getoption("planner_feature")
    if not wanted:
        return
    keep = [item for item in items if wanted in feature_steps(item)]
    dropped = [item for item in items if wanted not in feature_steps(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "feature(slug, step=N): an acceptance test of the roadmap feature `slug` that verifies step N (or a "
        "tuple of steps) of its Implementation Steps (planner track counts it)",
    )
    path = config.getoption("planner_evidence")
    if path:
        rootdir = Path(str(config.rootpath))
        keys = (config.getoption("gateway_key"), config.getoption("gateway_master_key"))
        recorder = EvidenceRecorder(
            path=Path(path).resolve(),
            rootdir=rootdir,
            progress_fd=config.getoption("planner_progress_fd"),
            secrets=tuple(key for key in keys if key),
            tree=tree_state(rootdir),
        )
        config.pluginmanager.register(recorder, PLUGIN_NAME)
