"""`planner track` and `planner complete`: thin commands over `planner.track` and `planner.complete`."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from planner.complete import CompleteError
from planner.complete import complete as complete_feature
from planner.config import ConfigError, PlannerConfig, load_config
from planner.evidence import EVIDENCE_PATH, EvidenceError, evidence_path, load_evidence
from planner.fingerprint import staleness
from planner.model import Step
from planner.rules import validate
from planner.track import (
    KEY_ENV,
    MASTER_KEY_ENV,
    TrackError,
    format_table,
    judge,
    run_acceptance,
    step_results,
)

_STEP_MARK = {"done": "[x]", "failing": "[!]", "unverified": "[?]", "no test": "[ ]"}


def _config() -> PlannerConfig:
    try:
        return load_config()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


class _Progress:
    """A progress bar on stderr fed by the plugin's progress lines (`collected N`, `done ...`)."""

    def __init__(self, stack: ExitStack) -> None:
        self.stack = stack
        self.bar: Any = None

    def __call__(self, line: str) -> None:
        if line.startswith("collected "):
            total = int(line.split()[1])
            self.bar = self.stack.enter_context(
                click.progressbar(length=total, label="acceptance tests", file=sys.stderr, show_pos=True)
            )
        elif line.startswith("done ") and self.bar is not None:
            self.bar.update(1)


@click.command()
@click.option("--gateway-url", metavar="URL", help="Verify this live gateway instead of an in-process one.")
@click.option(
    "--gateway-key",
    metavar="KEY",
    envvar=KEY_ENV,
    help=f"A key of the live gateway allowed every model (or ${KEY_ENV}).",
)
@click.option(
    "--gateway-master-key",
    metavar="KEY",
    envvar=MASTER_KEY_ENV,
    help=f"The live gateway's master key, to read /admin/features (or ${MASTER_KEY_ENV}).",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--no-run",
    is_flag=True,
    help=f"Judge the last recorded evidence again ({EVIDENCE_PATH}, or that of --gateway-url).",
)
def track(
    gateway_url: str | None, gateway_key: str | None, gateway_master_key: str | None, fmt: str, no_run: bool
) -> None:
    """Run the acceptance tests and check every plan's status against them.

    Evidence is kept per target: the in-process gateway's in .planner/evidence.json, a live gateway's in
    .planner/evidence-HOST-PORT.json. Exits 1 when a Completed feature has a failing test or none at all,
    or on another error verdict; tests that were only skipped leave a step unverified (a warning).
    """
    config = _config()
    target_path = config.root / evidence_path(gateway_url)
    if gateway_url and not gateway_key and not no_run:
        raise click.UsageError(f"--gateway-url needs --gateway-key (or ${KEY_ENV})")
    try:
        if not no_run:
            with ExitStack() as stack:
                run_acceptance(
                    config.root,
                    target_path,
                    gateway_url=gateway_url,
                    gateway_key=gateway_key,
                    gateway_master_key=gateway_master_key,
                    on_progress=_Progress(stack),
                )
        evidence = load_evidence(target_path)
    except (TrackError, EvidenceError) as exc:
        raise click.ClickException(str(exc)) from exc
    if evidence is None:
        hint = "run `planner track` without --no-run" if no_run else "the acceptance run recorded none"
        raise click.ClickException(f"no evidence at {target_path}: {hint}")
    validation = validate(config)
    report = judge(
        validation.plans,
        validation.designs,
        evidence,
        stale=staleness(config.root, evidence),
        closed=config.closed_statuses,
    )
    if validation.errors:
        click.echo(
            f"note: {len(validation.errors)} plan problem(s) found; `planner validate` lists them", err=True
        )
    if evidence.gateway_url and evidence.gateway_features is None:
        click.echo(
            "note: the gateway's /admin/features could not be read (give --gateway-master-key); "
            "verified features were not checked against it",
            err=True,
        )
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(format_table(report))
    if report.errors:
        sys.exit(1)


def step_lines(root: Path, feature: str, steps: tuple[Step, ...], width: int = 100) -> list[str]:
    """`planner show`'s step list: each Implementation Step with whether the recorded evidence verifies it.

    `[x]` done, `[!]` a linked test fails, `[?]` its tests were skipped, `[ ]` no test names it.
    """
    if not steps:
        return ["steps: none declared (number them under `## Implementation Steps`)"]
    try:
        evidence = load_evidence(root / EVIDENCE_PATH)
    except EvidenceError as exc:
        return [f"steps: {len(steps)}; {exc}"]
    if evidence is None:
        return [f"steps: {len(steps)}, not verified yet: run `planner track`"]
    results = step_results(steps, evidence.for_feature(feature))
    stale = staleness(root, evidence)
    note = f"; evidence is stale ({stale})" if stale else f"; evidence from commit {evidence.commit_label()}"
    lines = [f"steps: {sum(r.done for r in results)}/{len(results)} done{note}"]
    for result in results:
        text = f"  {_STEP_MARK[result.state]} {result.number}. {result.text}"
        lines.append(text if len(text) <= width else text[: width - 1] + "…")
    return lines


@click.command()
@click.argument("slug")
def complete(slug: str) -> None:
    """Verify the In Progress feature SLUG and move it from plans/ to its design page in docs/design/.

    Runs SLUG's acceptance tests (against the in-process gateway) and refuses unless every Implementation
    Step is verified by passing tests and none fails; the design page records priority, owner, date,
    commit and the steps with their tests.
    """
    config = _config()

    def run(root: Path, evidence_file: Path, feature: str) -> None:
        click.echo(f"running the acceptance tests of `{feature}`...", err=True)
        with ExitStack() as stack:
            run_acceptance(root, evidence_file, feature=feature, on_progress=_Progress(stack))

    try:
        done = complete_feature(config, slug, run=run)
    except (CompleteError, EvidenceError) as exc:
        raise click.ClickException(str(exc)) from exc
    for warning in done.warnings:
        click.echo(f"warning: {warning}", err=True)
    design = done.design_path.relative_to(config.root).as_posix()
    plan = done.removed_plan.relative_to(config.root).as_posix()
    staged = " (staged in git)" if done.staged else ""
    click.echo(f"completed {slug}: {len(done.steps)} of {len(done.steps)} steps verified")
    click.echo(f"wrote {design}, removed {plan}{staged}")
