"""The pytest plugin's counting, run in an inner pytest session on a tiny test file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from planner.evidence import load_evidence

pytest_plugins = ["pytester"]

SAMPLE = """
import pytest

pytestmark = pytest.mark.feature("alpha")

def test_pass():
    pass

def test_fail():
    assert 1 == 2

def test_skip():
    pytest.skip("not here")

@pytest.mark.xfail(reason="known broken")
def test_xfail():
    assert False

@pytest.mark.xfail(reason="fixed meanwhile")
def test_xpass():
    pass

@pytest.fixture
def broken():
    raise RuntimeError("setup exploded")

def test_setup_error(broken):
    pass

@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("teardown exploded")

def test_teardown_error(bad_teardown):
    pass

@pytest.mark.feature("beta")
def test_two_features():
    pass

def test_unmarked_is_counted_for_module_feature():
    pass
"""


ONE_TEST = "import pytest\n\n@pytest.mark.feature('{slug}')\ndef {name}({arg}):\n    pass\n"

# Inner sessions inherit this session's warnings-as-errors; other installed plugins are not under test.
INNER = ("-p", "no:cacheprovider", "-p", "no:asyncio")


def run_inner(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, Path]:
    path = pytester.path / "out" / "evidence.json"
    result = pytester.runpytest(*INNER, "--planner-evidence", str(path), *args)
    return result, path


def outcomes(path: Path, slug: str) -> dict[str, str]:
    evidence = load_evidence(path)
    assert evidence is not None
    fe = evidence.features[slug]
    return {t.name.split("::")[-1]: t.outcome for t in fe.tests}


def test_counts_every_outcome_per_feature(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sample=SAMPLE)
    result, path = run_inner(pytester)
    result.assert_outcomes(passed=4, failed=1, skipped=1, xfailed=1, xpassed=1, errors=2)
    assert outcomes(path, "alpha") == {
        "test_pass": "passed",
        "test_fail": "failed",
        "test_skip": "skipped",
        "test_xfail": "failed",
        "test_xpass": "passed",
        "test_setup_error": "failed",
        "test_teardown_error": "failed",
        "test_two_features": "passed",
        "test_unmarked_is_counted_for_module_feature": "passed",
    }
    evidence = load_evidence(path)
    assert evidence is not None
    alpha = evidence.features["alpha"]
    assert (alpha.passed, alpha.failed, alpha.skipped) == (4, 4, 1)
    assert outcomes(path, "beta") == {"test_two_features": "passed"}
    assert evidence.gateway_url is None and evidence.generated_at.endswith("+00:00")


def test_unmarked_tests_are_not_evidence(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result, path = run_inner(pytester)
    result.assert_outcomes(passed=1)
    evidence = load_evidence(path)
    assert evidence is not None and evidence.features == {}


def test_no_file_without_the_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one="import pytest\n\n@pytest.mark.feature('alpha')\ndef test_a():\n    pass\n")
    result = pytester.runpytest(*INNER, "--strict-markers")
    result.assert_outcomes(passed=1)  # the marker is registered, so --strict-markers accepts it
    assert not list(pytester.path.rglob("evidence.json"))


def test_deselected_tests_are_not_recorded(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sample=SAMPLE)
    _, path = run_inner(pytester, "-k", "test_pass")
    assert outcomes(path, "alpha") == {"test_pass": "passed"}


def test_collection_error_fails_the_feature_named_by_the_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_rate_limiting="import does_not_exist\n")
    pytester.makepyfile(
        test_other="import pytest\n\n@pytest.mark.feature('other')\ndef test_o():\n    pass\n"
    )
    _, path = run_inner(pytester, "--continue-on-collection-errors")
    assert outcomes(path, "rate-limiting") == {"test_rate_limiting.py": "failed"}
    assert outcomes(path, "other") == {"test_o": "passed"}


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("feature()", "feature('slug', step=N)"),
        ("feature('alpha', stage=1)", "feature('slug', step=N)"),
        ("feature('Not A Slug')", "not lowercase-with-hyphens"),
        ("feature('alpha', step=0)", "a step is the number of an Implementation Step"),
        ("feature('alpha', step='3')", "a step is the number of an Implementation Step"),
    ],
)
def test_malformed_marker_is_a_usage_error(pytester: pytest.Pytester, marker: str, message: str) -> None:
    pytester.makepyfile(test_bad=f"import pytest\n\n@pytest.mark.{marker}\ndef test_b():\n    pass\n")
    result, _ = run_inner(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*test_bad.py::test_b*{message}*"])


def test_gateway_info_recorded_by_a_fixture(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
import pytest
from planner.pytest_plugin import record_gateway

@pytest.fixture
def gateway(request):
    record_gateway(request.config, url="http://127.0.0.1:1", version="9.9", features={"alpha": True})
"""
    )
    pytester.makepyfile(
        test_g="import pytest\n\n@pytest.mark.feature('alpha')\ndef test_g(gateway):\n    pass\n"
    )
    _, path = run_inner(pytester)
    evidence = load_evidence(path)
    assert evidence is not None
    assert (evidence.gateway_url, evidence.gateway_version) == ("http://127.0.0.1:1", "9.9")
    assert evidence.gateway_features == {"alpha": True}


def test_progress_lines_and_git_commit(tmp_path: Path) -> None:
    """A real subprocess, as `planner track` runs it: progress on a pipe, the commit of a dirty tree."""
    (tmp_path / "test_p.py").write_text(
        "import pytest\n\n@pytest.mark.feature('alpha')\ndef test_a():\n    pass\n\n"
        "@pytest.mark.feature('alpha')\ndef test_b():\n    assert False\n"
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "test_p.py"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=tmp_path, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "notes.txt").write_text("not committed\n")  # under tests/: evidence depends on it
    read_fd, write_fd = os.pipe()
    evidence_path = tmp_path / ".planner" / "evidence.json"
    proc = subprocess.run(
        [
            sys.executable,  # the Python running this suite, not whichever `python` is first on PATH
            "-m",
            "pytest",
            "-q",
            *INNER,
            "--planner-evidence",
            str(evidence_path),
            "--planner-progress-fd",
            str(write_fd),
        ],
        cwd=tmp_path,
        pass_fds=(write_fd,),
        capture_output=True,
        text=True,
        check=False,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as progress:
        lines = progress.read().splitlines()
    assert proc.returncode == 1
    assert lines == ["collected 2", "done passed test_p.py::test_a", "done failed test_p.py::test_b"]
    data = json.loads(evidence_path.read_text())
    assert (data["version"], data["git_commit"], data["dirty"]) == (2, head, True)  # notes.txt: uncommitted
    assert data["fingerprint"] and set(data["inputs"]) >= {"gateway", "tests", "plans", "docs"}
    assert data["features"]["alpha"]["failed"] == 1
    failed = [t for t in data["features"]["alpha"]["tests"] if t["outcome"] == "failed"]
    assert failed[0]["message"].startswith("assert False")


def test_an_interrupted_run_keeps_the_previous_evidence(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ok=ONE_TEST.format(slug="alpha", name="test_a", arg=""))
    _, path = run_inner(pytester)
    before = path.read_text()
    pytester.makepyfile(test_broken="import does_not_exist\n")  # without --continue-on-collection-errors
    result, _ = run_inner(pytester)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert path.read_text() == before


STEPS = """
import pytest

pytestmark = pytest.mark.feature("alpha")


@pytest.mark.feature("alpha", step=2)
@pytest.mark.feature("beta", step=(1, 3))
def test_two_features_with_steps():
    pass


@pytest.mark.feature("alpha", step=[1, 2])
def test_list_of_steps():
    detail = "Authorization: Bearer sk-live-secret-1234 was refused for sk-given-key "
    raise AssertionError(detail + "x" * 900)


def test_no_step():
    pytest.skip("needs a live gateway")
"""


def test_steps_and_messages_are_recorded_without_secrets(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_steps=STEPS)
    _, path = run_inner(pytester, "--gateway-key", "sk-given-key")
    evidence = load_evidence(path)
    assert evidence is not None
    alpha = {t.name.split("::")[-1]: t for t in evidence.features["alpha"].tests}
    beta = {t.name.split("::")[-1]: t for t in evidence.features["beta"].tests}
    assert alpha["test_two_features_with_steps"].steps == (2,) and alpha["test_list_of_steps"].steps == (1, 2)
    assert beta["test_two_features_with_steps"].steps == (1, 3)
    assert alpha["test_no_step"].steps == () and alpha["test_no_step"].message == "needs a live gateway"
    message = alpha["test_list_of_steps"].message
    assert message is not None and message.startswith("AssertionError: Authorization: Bearer *** was refused")
    assert "sk-live-secret" not in message and "sk-given-key" not in message and "***" in message
    assert len(message) <= 500 and message.endswith("…")
    assert alpha["test_two_features_with_steps"].message is None  # passed: nothing to say


def test_planner_feature_runs_only_that_features_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_steps=STEPS)
    result, path = run_inner(pytester, "--planner-feature", "beta")
    result.assert_outcomes(passed=1, deselected=2)
    evidence = load_evidence(path)
    assert evidence is not None and set(evidence.features) == {"alpha", "beta"}
    assert [t.name.split("::")[-1] for t in evidence.features["alpha"].tests] == [
        "test_two_features_with_steps"
    ]
