"""Evidence: per-feature acceptance-test outcomes recorded by `planner track` in `.planner/evidence.json`.

File format (version 1)::

    {"version": 1, "generated_at": "2026-11-26T04:00:00+00:00", "git_commit": "f6ad2cb...",
     "gateway_version": "0.1.0", "gateway_url": null,
     "features": {"response-caching": {"passed": 4, "failed": 1, "skipped": 0, "tests": [
         {"name": "tests/acceptance/test_response_caching.py::test_hit", "outcome": "passed"}]}},
     "gateway_features": {"response-caching": true}}

`gateway_features` (added later, optional) is what the gateway's `GET /admin/features` reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVIDENCE_PATH = Path(".planner") / "evidence.json"
OUTCOMES = ("passed", "failed", "skipped")


@dataclass(frozen=True)
class RecordedTest:
    name: str
    outcome: str  # one of OUTCOMES


@dataclass(frozen=True)
class FeatureEvidence:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    tests: tuple[RecordedTest, ...] = ()

    @property
    def total(self) -> int:
        """Tests that ran to a verdict; skipped tests prove nothing either way."""
        return self.passed + self.failed

    @property
    def progress(self) -> float | None:
        return self.passed / self.total if self.total else None

    @property
    def all_green(self) -> bool:
        return self.total > 0 and self.failed == 0


@dataclass(frozen=True)
class Evidence:
    generated_at: str
    git_commit: str | None
    gateway_version: str | None
    gateway_url: str | None
    features: dict[str, FeatureEvidence] = field(default_factory=dict)
    # What the gateway's `GET /admin/features` reported (slug -> enabled by its config); None when the run
    # could not ask (no master key for a live gateway, or no acceptance test started a gateway).
    gateway_features: dict[str, bool] | None = None

    def for_feature(self, slug: str) -> FeatureEvidence | None:
        return self.features.get(slug)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "generated_at": self.generated_at,
            "git_commit": self.git_commit,
            "gateway_version": self.gateway_version,
            "gateway_url": self.gateway_url,
            "features": {
                slug: {
                    "passed": fe.passed,
                    "failed": fe.failed,
                    "skipped": fe.skipped,
                    "tests": [{"name": t.name, "outcome": t.outcome} for t in fe.tests],
                }
                for slug, fe in sorted(self.features.items())
            },
            "gateway_features": (
                None if self.gateway_features is None else dict(sorted(self.gateway_features.items()))
            ),
        }


class EvidenceError(Exception):
    """The evidence file exists but cannot be read; the message names the file and the problem."""


def load_evidence(path: Path) -> Evidence | None:
    """The recorded evidence, or None when no run has recorded any yet."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        features = {
            str(slug): FeatureEvidence(
                passed=int(fe["passed"]),
                failed=int(fe["failed"]),
                skipped=int(fe["skipped"]),
                tests=tuple(RecordedTest(str(t["name"]), str(t["outcome"])) for t in fe.get("tests", [])),
            )
            for slug, fe in data["features"].items()
        }
        reported = data.get("gateway_features")
        gateway_features = None if reported is None else {str(k): bool(v) for k, v in reported.items()}
        return Evidence(
            generated_at=str(data["generated_at"]),
            git_commit=data.get("git_commit"),
            gateway_version=data.get("gateway_version"),
            gateway_url=data.get("gateway_url"),
            features=features,
            gateway_features=gateway_features,
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
