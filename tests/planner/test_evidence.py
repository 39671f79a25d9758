import json
import subprocess
from pathlib import Path

import pytest

from planner.evidence import (
    Evidence,
    EvidenceError,
    FeatureEvidence,
    RecordedTest,
    evidence_path,
    load_evidence,
    write_evidence,
)
from planner.fingerprint import TreeState, staleness, tree_state


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


def test_version_2_round_trip_keeps_steps_messages_and_tree_state(tmp_path: Path) -> None:
    path = tmp_path / "evidence.json"
    evidence = Evidence(
        generated_at="2026-12-04T05:00:00+00:00",
        git_commit="0123456789abcdef",
        gateway_version="0.2.0",
        gateway_url=None,
        features={
            "alpha": FeatureEvidence(
                1,
                1,
                0,
                (RecordedTest("t::a", "passed", (1, 2)), RecordedTest("t::b", "failed", (3,), "boom")),
            )
        },
        dirty=True,
        fingerprint="f" * 64,
        inputs={"gateway": "g", "tests": "t"},
    )
    write_evidence(path, evidence)
    assert json.loads(path.read_text())["version"] == 2
    assert load_evidence(path) == evidence
    assert evidence.commit_label() == "0123456 (dirty)"
    fe = evidence.for_feature("alpha")
    assert fe is not None and [t.name for t in fe.for_step(2)] == ["t::a"]


def test_version_1_files_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "evidence.json"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "generated_at": "2026-11-26T04:00:00+00:00",
                "git_commit": "abc-dirty",
                "gateway_version": "0.1.0",
                "gateway_url": None,
                "features": {
                    "alpha": {
                        "passed": 1,
                        "failed": 0,
                        "skipped": 0,
                        "tests": [{"name": "t::a", "outcome": "passed"}],
                    }
                },
            }
        )
    )
    evidence = load_evidence(path)
    assert evidence is not None and evidence.fingerprint is None
    assert evidence.features["alpha"].tests == (RecordedTest("t::a", "passed"),)
    assert evidence.commit == "abc" and evidence.from_dirty_tree
    path.write_text(path.read_text().replace('"version": 1', '"version": 7'))
    with pytest.raises(EvidenceError, match="version 7 is newer"):
        load_evidence(path)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        (None, "evidence.json"),
        ("http://127.0.0.1:8000", "evidence-127.0.0.1-8000.json"),
        ("https://gw.example.com/", "evidence-gw.example.com-443.json"),
        ("localhost:9", "evidence-localhost-9.json"),
        ("http://[::1", "evidence-http_1.json"),
    ],
)
def test_evidence_is_kept_per_target(url: str | None, name: str) -> None:
    assert evidence_path(url) == Path(".planner") / name


def git(root: Path, *args: str) -> str:
    base = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    return subprocess.run([*base, *args], cwd=root, check=True, capture_output=True, text=True).stdout


def recorded_at(state: TreeState) -> Evidence:
    return Evidence(
        "now",
        state.commit,
        None,
        None,
        {},
        dirty=state.dirty,
        fingerprint=state.fingerprint,
        inputs=state.inputs,
    )


def test_staleness_follows_the_files_evidence_depends_on(tmp_path: Path) -> None:
    for folder in ("gateway", "tests", "plans"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.py").write_text("one\n")
    (tmp_path / "README.md").write_text("readme\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "one")
    state = tree_state(tmp_path)
    assert not state.dirty and state.commit == git(tmp_path, "rev-parse", "HEAD").strip()
    evidence = recorded_at(state)
    assert staleness(tmp_path, evidence) is None
    (tmp_path / "README.md").write_text("not an input\n")
    assert staleness(tmp_path, evidence) is None
    (tmp_path / "gateway" / "a.py").write_text("two\n")  # an edit, not committed
    stale = staleness(tmp_path, evidence)
    assert stale == f"from commit {state.commit[:7]}; changed since: gateway/"  # type: ignore[index]
    (tmp_path / "tests" / "new_test.py").write_text("untracked\n")
    assert staleness(tmp_path, evidence) == f"from commit {state.commit[:7]}; changed since: gateway/, tests/"  # type: ignore[index]
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "two")
    head = git(tmp_path, "rev-parse", "HEAD").strip()
    assert f"HEAD is now {head[:7]}" in (staleness(tmp_path, evidence) or "")
    # Evidence recorded from a dirty tree is fresh for exactly that tree.
    (tmp_path / "plans" / "a.py").write_text("draft\n")
    dirty = tree_state(tmp_path)
    assert dirty.dirty and staleness(tmp_path, recorded_at(dirty)) is None
    assert recorded_at(dirty).commit_label() == f"{head[:7]} (dirty)"


def test_staleness_outside_git_hashes_the_files(tmp_path: Path) -> None:
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "a.py").write_text("one\n")
    evidence = recorded_at(tree_state(tmp_path))
    assert evidence.commit is None and staleness(tmp_path, evidence) is None
    (tmp_path / "gateway" / "a.py").write_text("two\n")
    assert staleness(tmp_path, evidence) == "from commit unknown; changed since: gateway/"


def test_version_1_evidence_is_stale_when_head_moved(tmp_path: Path) -> None:
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "x.md").write_text("x\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "one")
    v1 = Evidence("then", "0" * 40, None, None, {})
    assert (
        staleness(tmp_path, v1)
        == f"from commit 0000000; HEAD is now {git(tmp_path, 'rev-parse', 'HEAD')[:7]}"
    )
