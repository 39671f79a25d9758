"""`planner list` and `planner show`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from click.testing import CliRunner
from plan_docs import plan_text

from planner.cli import main


def roadmap(root: Path) -> None:
    plans = root / "plans"
    plans.joinpath("HIGH-response-caching.md").write_text(
        plan_text(status="Planned", estimate="3-5 days", dependencies="[usage-tracking]")
    )
    plans.joinpath("MEDIUM-usage-tracking.md").write_text(plan_text("Usage Tracking", priority="Medium"))
    plans.joinpath("LOW-admin-api.md").write_text(
        plan_text("Admin API", priority="Low", estimate="~2 weeks", dependencies="[usage-tracking]")
    )
    plans.joinpath("README.md").write_text("# Conventions\n")


def test_list_table_sorted_by_priority(root: Path, runner: CliRunner) -> None:
    roadmap(root)
    result = runner.invoke(main, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "SLUG",
        "PRIORITY",
        "STATUS",
        "OWNER",
        "COMPLEXITY",
        "ESTIMATE",
        "DEPENDS",
        "ON",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["response-caching", "usage-tracking", "admin-api"]


def test_list_json(root: Path, runner: CliRunner) -> None:
    roadmap(root)
    data = json.loads(runner.invoke(main, ["list", "--format", "json"]).output)
    assert data[0] == {
        "slug": "response-caching",
        "title": "Response Caching",
        "status": "Planned",
        "priority": "High",
        "complexity": "Moderate",
        "estimate": "3-5 days",
        "working_days": {"low": 3.0, "high": 5.0, "approximate": False},
        "dependencies": ["usage-tracking"],
        "feature": "response-caching",
        "owner": None,
        "path": "plans/HIGH-response-caching.md",
    }


def test_list_csv(root: Path, runner: CliRunner) -> None:
    roadmap(root)
    rows = list(csv.DictReader(io.StringIO(runner.invoke(main, ["list", "--format", "csv"]).output)))
    assert [row["slug"] for row in rows] == ["response-caching", "usage-tracking", "admin-api"]
    assert rows[2]["low_days"] == "10" and rows[2]["estimate"] == "~2 weeks"


def test_list_filters(root: Path, runner: CliRunner) -> None:
    roadmap(root)
    result = runner.invoke(main, ["list", "--status", "planned", "--format", "json"])
    assert [p["slug"] for p in json.loads(result.output)] == ["response-caching"]
    result = runner.invoke(main, ["list", "--priority", "Low", "--priority", "medium", "--format", "json"])
    assert [p["slug"] for p in json.loads(result.output)] == ["usage-tracking", "admin-api"]
    result = runner.invoke(main, ["list", "--status", "Completed"])
    assert result.exit_code == 0
    assert "no plans match" in result.output


def test_list_bad_filter_is_a_usage_error(root: Path, runner: CliRunner) -> None:
    result = runner.invoke(main, ["list", "--status", "Planed"])
    assert result.exit_code == 2
    assert "did you mean 'Planned'?" in result.output


def test_list_notes_errors(root: Path, runner: CliRunner) -> None:
    roadmap(root)
    (root / "plans" / "LOW-broken.md").write_text(plan_text("Broken", priority="Low", status="Nope"))
    result = runner.invoke(main, ["list"])
    assert result.exit_code == 0
    assert "broken" in result.output
    assert "run `planner validate`" in result.output


def test_show_text(root: Path, runner: CliRunner) -> None:
    roadmap(root)
    result = runner.invoke(main, ["show", "usage-tracking"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage Tracking (usage-tracking)\n")
    assert "dependents:   admin-api, response-caching" in result.output
    assert "estimate:     1 week (5 working days)" in result.output
    assert "## Goal\nServe repeated prompts" in result.output


def test_show_json(root: Path, runner: CliRunner) -> None:
    roadmap(root)
    data = json.loads(runner.invoke(main, ["show", "HIGH-response-caching", "--format", "json"]).output)
    assert data["slug"] == "response-caching"
    assert data["dependents"] == []
    assert data["sections"][0]["title"] == "Goal"
    assert data["problems"] == []


def test_show_unknown(root: Path, runner: CliRunner) -> None:
    roadmap(root)
    result = runner.invoke(main, ["show", "admin"])
    assert result.exit_code == 1
    assert "no plan 'admin'" in result.output
    assert "did you mean 'admin-api'?" in result.output


def completed(root: Path) -> None:
    """Two completed features: one design page keeping its priority, one written before pages kept it."""
    roadmap(root)
    design = root / "docs" / "design"
    design.mkdir(parents=True)
    design.joinpath("rate-limiting.md").write_text(
        "---\ntitle: Rate Limiting\npriority: High\nfeature: rate-limiting\nstatus: Completed\n"
        "completed: 2026-11-26\n---\n# Rate Limiting\n\n## Goal\n\nLimit requests.\n"
    )
    design.joinpath("tracing.md").write_text("---\ntitle: Tracing\n---\n# Tracing\n\n## Goal\n\nSpans.\n")
    design.joinpath("metrics.md").write_text("---\ntitle: Metrics\npriority: low\n---\n# Metrics\n")
    design.joinpath("index.md").write_text("# Design decisions\n")
    (root / "plans" / "LOW-admin-api.md").write_text(
        plan_text("Admin API", priority="Low", dependencies="[usage-tracking, rate-limiting]")
    )


def test_list_includes_completed_features(root: Path, runner: CliRunner) -> None:
    completed(root)
    result = runner.invoke(main, ["list"])
    assert result.exit_code == 0, result.output
    slugs = [line.split()[0] for line in result.output.splitlines()[1:]]
    assert slugs == ["rate-limiting", "response-caching", "usage-tracking", "admin-api", "metrics", "tracing"]
    result = runner.invoke(main, ["list", "--status", "Completed", "--format", "json"])
    data = json.loads(result.output)
    assert [(d["slug"], d["status"], d["priority"]) for d in data] == [
        ("rate-limiting", "Completed", "High"),
        ("metrics", "Completed", "Low"),  # `priority: low` on the page
        ("tracing", "Completed", None),
    ]
    assert data[0]["path"] == "docs/design/rate-limiting.md"
    rows = list(csv.DictReader(io.StringIO(runner.invoke(main, ["list", "--format", "csv"]).output)))
    assert rows[0]["slug"] == "rate-limiting" and rows[0]["status"] == "Completed"
    high = runner.invoke(main, ["list", "--priority", "High", "--format", "json"]).output
    assert [d["slug"] for d in json.loads(high)] == ["rate-limiting", "response-caching"]


def test_list_closing_states(root: Path, runner: CliRunner) -> None:
    roadmap(root)
    (root / "plans" / "LOW-old-cache.md").write_text(
        plan_text("Old Cache", priority="Low", status="Superseded", extra="superseded_by: response-caching\n")
    )
    result = runner.invoke(main, ["list", "--status", "superseded"])
    assert result.exit_code == 0, result.output
    assert "Superseded by response-caching" in result.output
    data = json.loads(runner.invoke(main, ["list", "--status", "Superseded", "--format", "json"]).output)
    assert data[0]["superseded_by"] == "response-caching"


def test_show_a_completed_feature(root: Path, runner: CliRunner) -> None:
    completed(root)
    result = runner.invoke(main, ["show", "rate-limiting"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Rate Limiting (rate-limiting)\n")
    assert "status:     Completed (design page)" in result.output
    assert "priority:   High" in result.output
    assert "dependents: admin-api" in result.output
    assert "## Goal\n\nLimit requests." in result.output
    assert "title: Rate Limiting" not in result.output
    data = json.loads(runner.invoke(main, ["show", "rate-limiting", "--format", "json"]).output)
    assert (data["status"], data["priority"], data["completed"]) == ("Completed", "High", "2026-11-26")
    assert data["dependents"] == ["admin-api"]


def test_list_shows_owner_and_health(root: Path, runner: CliRunner) -> None:
    roadmap(root)
    path = root / "plans" / "HIGH-response-caching.md"
    text = path.read_text()
    path.write_text(text.replace("---\n#", "owner: ana\nhealth: at risk\ntarget: 2027-01-15\n---\n#", 1))
    lines = runner.invoke(main, ["list"]).output.splitlines()
    caching = next(line for line in lines if line.startswith("response-caching"))
    assert "Planned (at risk)" in caching and " ana " in caching
    data = json.loads(runner.invoke(main, ["list", "--format", "json"]).output)
    assert (data[0]["owner"], data[0]["health"], data[0]["target"]) == ("ana", "at risk", "2027-01-15")
