from pathlib import Path

import pytest

from planner.evidence import (
    Evidence,
    EvidenceError,
    FeatureEvidence,
    RecordedTest,
    load_evidence,
    write_evidence,
)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / ".planner" / "evidence.json"
    evidence = Evidence(
        generated_at="2026-11-26T04:00:00+00:00",
        git_commit="abc",
        gateway_version="0.1.0",
        gateway_url=None,
        features={"rate-limiting": FeatureEvidence(2, 1, 0, (RecordedTest("t::a", "passed"),))},
    )
    write_evidence(path, evidence)
    assert load_evidence(path) == evidence
    fe = evidence.for_feature("rate-limiting")
    assert fe is not None and fe.progress == pytest.approx(2 / 3) and not fe.all_green


def test_missing_is_none_and_garbage_names_the_file(tmp_path: Path) -> None:
    assert load_evidence(tmp_path / "nope.json") is None
    bad = tmp_path / "evidence.json"
    bad.write_text("{not json")
    with pytest.raises(EvidenceError, match=r"evidence\.json"):
        load_evidence(bad)


def test_skipped_only_is_not_green() -> None:
    assert not FeatureEvidence(passed=0, failed=0, skipped=3).all_green
    assert FeatureEvidence(passed=0, failed=0, skipped=3).progress is None
