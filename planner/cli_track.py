"""`planner track` and `planner complete`: thin commands over `planner.track` and `planner.complete`."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from typing import Any

import click

from planner.complete import CompleteError
from planner.complete import complete as complete_feature
from planner.config import ConfigError, PlannerConfig, load_config
from planner.evidence import EVIDENCE_PATH, EvidenceError, load_evidence
from planner.rules import validate
from planner.track import KEY_ENV, MASTER_KEY_ENV, TrackError, format_table, judge, run_acceptance


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
@click.option("--no-run", is_flag=True, help=f"Judge the last recorded evidence ({EVIDENCE_PATH}) again.")
def track(
    gateway_url: str | None, gateway_key: str | None, gateway_master_key: str | None, fmt: str, no_run: bool
) -> None:
    """Run the acceptance tests and check every plan's status against them.

    Exits 1 when a Completed feature has failing or missing tests, or another error verdict.
    """
    config = _config()
    evidence_path = config.root / EVIDENCE_PATH
    if no_run and gateway_url:
        raise click.UsageError("--no-run judges recorded evidence; --gateway-url needs a run")
    if gateway_url and not gateway_key:
        raise click.UsageError(f"--gateway-url needs --gateway-key (or ${KEY_ENV})")
    try:
        if not no_run:
            with ExitStack() as stack:
                run_acceptance(
                    config.root,
                    evidence_path,
                    gateway_url=gateway_url,
                    gateway_key=gateway_key,
                    gateway_master_key=gateway_master_key,
                    on_progress=_Progress(stack),
                )
        evidence = load_evidence(evidence_path)
    except (TrackError, EvidenceError) as exc:
        raise click.ClickException(str(exc)) from exc
    if evidence is None:
        hint = "run `planner track` without --no-run" if no_run else "the acceptance run recorded none"
        raise click.ClickException(f"no evidence at {evidence_path}: {hint}")
    validation = validate(config)
    report = judge(validation.plans, validation.designs, evidence)
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


@click.command()
@click.argument("slug")
def complete(slug: str) -> None:
    """Move the verified feature SLUG from plans/ to its design page in docs/design/.

    Refused unless the recorded evidence (`planner track`) shows every acceptance test of SLUG passing.
    """
    config = _config()
    try:
        done = complete_feature(config, slug)
    except (CompleteError, EvidenceError) as exc:
        raise click.ClickException(str(exc)) from exc
    for warning in done.warnings:
        click.echo(f"warning: {warning}", err=True)
    design = done.design_path.relative_to(config.root).as_posix()
    plan = done.removed_plan.relative_to(config.root).as_posix()
    staged = " (staged in git)" if done.staged else ""
    click.echo(f"completed {slug}: wrote {design}, removed {plan}{staged}")
