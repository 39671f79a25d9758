"""What the site shows: the plans, the completed designs and the recorded evidence, read once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import TYPE_CHECKING

from planner.config import PlannerConfig
from planner.evidence import EVIDENCE_PATH, Evidence, EvidenceError, FeatureEvidence, load_evidence
from planner.model import Design, Plan

if TYPE_CHECKING:  # the planner core's diagnostics; only their shape is needed here
    from planner.problems import Problem

COMPLETED = "Completed"
NOT_VERIFIED = "not verified yet"


def verified_when(evidence: Evidence, verb: str = "verified") -> str:
    """`verified 2026-11-26 at commit abc1234`, noting a run on a work tree with uncommitted changes."""
    text = f"{verb} {evidence.generated_at[:10]}"
    commit = evidence.git_commit
    if commit:
        dirty = commit.endswith("-dirty")
        text += f" at commit {commit.removesuffix('-dirty')[:7]}"
        if dirty:
            text += " with uncommitted changes"
    return text


@dataclass(frozen=True)
class Verification:
    """A feature's verified progress in words; never claims more than the evidence file holds."""

    feature: str
    result: FeatureEvidence | None
    evidence: Evidence | None

    @property
    def verified(self) -> bool:
        """Every acceptance test that ran passed (and at least one ran)."""
        return self.result is not None and self.result.all_green

    @property
    def progress(self) -> float | None:
        return self.result.progress if self.result is not None else None

    @property
    def when(self) -> str:
        """`verified 2026-11-26 at commit abc1234`, or '' without evidence."""
        return verified_when(self.evidence) if self.evidence is not None else ""

    @property
    def short(self) -> str:
        """`4/5` for tables, or an em dash when nothing ran."""
        if self.result is None or self.result.total == 0:
            return "—"
        return f"{self.result.passed}/{self.result.total}"

    @property
    def brief(self) -> str:
        """`4 of 5 passing` for tables, whose page states once when the evidence was recorded."""
        if self.evidence is None:
            return NOT_VERIFIED
        if self.result is None or self.result.total == 0:
            return "no acceptance tests recorded"
        skipped = f" ({self.result.skipped} skipped)" if self.result.skipped else ""
        return f"{self.result.passed} of {self.result.total} passing{skipped}"

    @property
    def text(self) -> str:
        """`4 of 5 acceptance tests passing, verified 2026-11-26 at commit abc1234`."""
        if self.evidence is None:
            return NOT_VERIFIED
        if self.result is None or self.result.total == 0:
            skipped = f", {self.result.skipped} skipped" if self.result and self.result.skipped else ""
            return f"{NOT_VERIFIED}: no acceptance tests recorded{skipped} ({self.when})"
        r = self.result
        noun = "test" if r.total == 1 else "tests"
        skipped = f" ({r.skipped} skipped)" if r.skipped else ""
        return f"{r.passed} of {r.total} acceptance {noun} passing{skipped}, {self.when}"


@dataclass(frozen=True)
class Roadmap:
    """Everything the pages are made from. `today` anchors the timeline's calendar dates."""

    config: PlannerConfig
    plans: tuple[Plan, ...]
    designs: tuple[Design, ...] = ()
    evidence: Evidence | None = None
    problems: tuple[Problem, ...] = ()
    today: date = field(default_factory=date.today)
    evidence_error: str | None = None  # the evidence file exists but could not be read

    def verification(self, feature: str) -> Verification:
        result = self.evidence.for_feature(feature) if self.evidence is not None else None
        return Verification(feature, result, self.evidence)

    @cached_property
    def plans_by_slug(self) -> dict[str, Plan]:
        return {p.slug: p for p in self.plans}

    @cached_property
    def designs_by_slug(self) -> dict[str, Design]:
        return {d.slug: d for d in self.designs}

    @cached_property
    def plan_slugs(self) -> frozenset[str]:
        return frozenset(p.slug for p in self.plans)

    @cached_property
    def design_slugs(self) -> frozenset[str]:
        return frozenset(d.slug for d in self.designs)

    @cached_property
    def dependents(self) -> dict[str, tuple[str, ...]]:
        """Slug → slugs of the plans that depend on it, sorted."""
        found: dict[str, list[str]] = {}
        for plan in self.plans:
            for dep in plan.dependencies:
                found.setdefault(dep, []).append(plan.slug)
        return {slug: tuple(sorted(set(users))) for slug, users in found.items()}

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]


def load_roadmap(config: PlannerConfig, *, today: date | None = None) -> Roadmap:
    """Validate the project's plans (the same rules as `planner validate`) and read its evidence.

    Invalid plans are reported in `problems`; the plans that could be read are still rendered, so a
    site being served shows the roadmap while someone fixes a typo.
    """
    from planner.rules import validate  # the planner core's validation; imported late to keep start-up light

    result = validate(config)
    evidence, evidence_error = None, None
    try:
        evidence = load_evidence(config.root / EVIDENCE_PATH)
    except EvidenceError as exc:
        evidence_error = str(exc)
    return Roadmap(
        config=config,
        plans=tuple(sorted(result.plans, key=lambda p: p.slug)),
        designs=tuple(sorted(result.designs, key=lambda d: d.slug)),
        evidence=evidence,
        problems=tuple(result.problems),
        today=today or date.today(),
        evidence_error=evidence_error,
    )


def sort_plans(plans: Sequence[Plan], priorities: Sequence[str]) -> list[Plan]:
    """Most urgent first: by priority in the configured order, then by title."""
    order = {name: i for i, name in enumerate(priorities)}
    return sorted(plans, key=lambda p: (order.get(p.priority, len(order)), p.title.lower(), p.slug))
