"""Evidence: per-feature acceptance-test outcomes recorded by `planner track` in `.planner/evidence*.json`.

File format (version 2; version 1, without `steps`, `message`, `dirty` and `fingerprint`, is read too)::

    {"version": 2, "generated_at": "2026-11-26T04:00:00+00:00", "git_commit": "f6ad2cb...", "dirty": false,
     "fingerprint": "sha256 of the files the evidence depends on (see `planner.fingerprint`)",
     "inputs": {"gateway": "sha256...", "tests": "sha256...", ...},
     "gateway_version": "0.1.0", "gateway_url": null,
     "features": {"response-caching": {"passed": 4, "failed": 1, "skipped": 0, "tests": [
         {"name": "tests/acceptance/test_response_caching.py::test_hit", "outcome": "failed",
          "steps": [4], "message": "AssertionError: assert 'MISS' == 'HIT'"}]}},
     "gateway_features": {"response-caching": true}}

`steps` are the Implementation Steps the test verifies (`@pytest.mark.feature("slug", step=4)`); `message`
is what pytest reported for a failed test (the crash line) or the reason of a skipped one.
`gateway_features` is what the gateway's `GET /admin/features` reported.

Evidence is kept per target: the in-process gateway's in `.planner/evidence.json`, a live gateway's in
`.planner/evidence-HOST-PORT.json` (`evidence_path`), so a live run does not erase the local record.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

EVIDENCE_PATH = Path(".planner") / "evidence.json"
OUTCOMES = ("passed", "failed", "skipped")
VERSION = 2


def evidence_path(gateway_url: str | None = None) -> Path:
    """Where the evidence of one target lives, relative to the project root.

    The in-process gateway's is `.planner/evidence.json`; a live gateway's is named for its host and port,
    `http://127.0.0.1:8000` -> `.planner/evidence-127.0.0.1-8000.json`.
    """
    if not gateway_url:
        return EVIDENCE_PATH
    try:
        parts = urlsplit(gateway_url if "://" in gateway_url else f"http://{gateway_url}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        name = f"{parts.hostname or 'gateway'}-{port}"
    except ValueError:  # not a URL (`http://[::1`): still one file per distinct text
        name = gateway_url
    return EVIDENCE_PATH.with_name(f"evidence-{re.sub(r'[^A-Za-z0-9.-]+', '_', name).strip('_')}.json")


@dataclass(frozen=True)
class RecordedTest:
    name: str
    outcome: str  # one of OUTCOMES
    steps: tuple[int, ...] = ()  # the Implementation Steps of this feature the test verifies
    message: str | None = None  # failure message or skip reason, as pytest reported it (trimmed)


@dataclass(frozen=True)
class FeatureEvidence:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    tests: tuple[RecordedTest, ...] = ()

    @property
    def recorded(self) -> int:
        """Every recorded test, skipped ones included (the counts, so a file without test names counts)."""
        return self.passed + self.failed + self.skipped

    @property
    def total(self) -> int:
        """Tests that ran to a verdict; skipped tests prove nothing either way."""
        return self.passed + self.failed

    @property
    def progress(self) -> float | None:
        """Share of tests passing (the old, test-based measure; `planner.track` measures steps)."""
        return self.passed / self.total if self.total else None

    @property
    def all_green(self) -> bool:
        return self.total > 0 and self.failed == 0

    def for_step(self, number: int) -> tuple[RecordedTest, ...]:
        """The recorded tests that name step `number`."""
        return tuple(t for t in self.tests if number in t.steps)


@dataclass(frozen=True)
class Evidence:
    generated_at: str
    git_commit: str | None  # HEAD when the run started; a version 1 file may end it with `-dirty`
    gateway_version: str | None
    gateway_url: str | None
    features: dict[str, FeatureEvidence] = field(default_factory=dict)
    # What the gateway's `GET /admin/features` reported (slug -> enabled by its config); None when the run
    # could not ask (no master key for a live gateway, or no acceptance test started a gateway).
    gateway_features: dict[str, bool] | None = None
    dirty: bool = False  # the working tree differed from HEAD in the files the evidence depends on
    fingerprint: str | None = None  # of those files when the run started; None when unknown (version 1)
    inputs: dict[str, str] = field(default_factory=dict)  # per input path (`gateway`, `tests`...) its hash

    def for_feature(self, slug: str) -> FeatureEvidence | None:
        return self.features.get(slug)

    @property
    def commit(self) -> str | None:
        """The commit without any `-dirty` mark."""
        return self.git_commit.removesuffix("-dirty") if self.git_commit else None

    @property
    def from_dirty_tree(self) -> bool:
        return self.dirty or bool(self.git_commit and self.git_commit.endswith("-dirty"))

    def commit_label(self, length: int = 7) -> str:
        """`abc1234`, `abc1234 (dirty)` or `unknown`: the commit as people read it."""
        if not self.commit:
            return "unknown"
        return self.commit[:length] + (" (dirty)" if self.from_dirty_tree else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "generated_at": self.generated_at,
            "git_commit": self.git_commit,
            "dirty": self.dirty,
            "fingerprint": self.fingerprint,
            "inputs": dict(sorted(self.inputs.items())),
            "gateway_version": self.gateway_version,
            "gateway_url": self.gateway_url,
            "features": {
                slug: {
                    "passed": fe.passed,
                    "failed": fe.failed,
                    "skipped": fe.skipped,
                    "tests": [_test_json(t) for t in fe.tests],
                }
                for slug, fe in sorted(self.features.items())
            },
            "gateway_features": (
                None if self.gateway_features is None else dict(sorted(self.gateway_features.items()))
            ),
        }


def _test_json(test: RecordedTest) -> dict[str, Any]:
    data: dict[str, Any] = {"name": test.name, "outcome": test.outcome, "steps": list(test.steps)}
    if test.message is not None:
        data["message"] = test.message
    return data


def _test(data: dict[str, Any]) -> RecordedTest:
    message = data.get("message")
    return RecordedTest(
        str(data["name"]),
        str(data["outcome"]),
        tuple(int(n) for n in data.get("steps", ())),
        None if message is None else str(message),
    )


class EvidenceError(Exception):
    """The evidence file exists but cannot be read; the message names the file and the problem."""


def load_evidence(path: Path) -> Evidence | None:
    """The recorded evidence, or None when no run has recorded any yet."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        version = data.get("version", 1)
        if version not in (1, VERSION):
            raise ValueError(f"version {version!r} is newer than this planner reads (up to {VERSION})")
        features = {
            str(slug): FeatureEvidence(
                passed=int(fe["passed"]),
                failed=int(fe["failed"]),
                skipped=int(fe["skipped"]),
                tests=tuple(_test(t) for t in fe.get("tests", [])),
            )
            for slug, fe in data["features"].items()
        }
        reported = data.get("gateway_features")
        gateway_features = None if reported is None else {str(k): bool(v) for k, v in reported.items()}
        fingerprint = data.get("fingerprint")
        return Evidence(
            generated_at=str(data["generated_at"]),
            git_commit=data.get("git_commit"),
            gateway_version=data.get("gateway_version"),
            gateway_url=data.get("gateway_url"),
            features=features,
            gateway_features=gateway_features,
            dirty=bool(data.get("dirty", False)),
            fingerprint=None if fingerprint is None else str(fingerprint),
            inputs={str(k): str(v) for k, v in (data.get("inputs") or {}).items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        # A KeyError's text is the bare key (`'failed'`): say what it means.
        reason = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise EvidenceError(
            f"{path}: not a readable evidence file ({reason}); run `planner track` again"
        ) from exc


def write_evidence(path: Path, evidence: Evidence) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(evidence.to_json(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
