"""What the site shows: the plans, the completed designs and the recorded evidence, read once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import TYPE_CHECKING

from planner.config import PlannerConfig
from planner.evidence import EVIDENCE_PATH, Evidence, EvidenceError, FeatureEvidence, load_evidence
from planner.history import History, read_history
from planner.model import Design, Plan

if TYPE_CHECKING:  # the planner core's diagnostics and verdicts; only their shape is needed here
    from planner.problems import Problem
    from planner.track import FeatureVerdict, TrackReport

COMPLETED = "Completed"
IN_PROGRESS = "In Progress"
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
class FeatureState:
    """A plan's or design's status together with `planner track`'s verdict on it, in words.

    Every page shows this and only this, so the site can never disagree with `planner track`: the verdict
    (`judge`) is computed once per build, and this class only words it. It never claims more than the
    evidence file holds: without evidence it says "not verified yet".
    """

    status: str
    verdict: FeatureVerdict | None  # None without evidence (or for a plan that track does not judge)
    result: FeatureEvidence | None  # the recorded tests, for the page that lists them
    evidence: Evidence | None
    completed_status: str = COMPLETED
    in_progress_status: str | None = IN_PROGRESS

    @property
    def regression(self) -> bool:
        """Completed, but a linked acceptance test fails or none ran: drift the site must show in red."""
        return self.verdict is not None and self.verdict.regression

    @property
    def stale(self) -> str | None:
        """`stale: from commit abc1234` when the evidence no longer matches the tree it describes."""
        if self.verdict is None or not self.verdict.stale:
            return None
        return f"stale: {self.verdict.stale}"

    @property
    def level(self) -> str:
        """ok, info, warning or error (track's verdict), or `none` without evidence; names a CSS class."""
        if self.verdict is None:
            return "none"
        return "error" if self.regression else self.verdict.verdict

    @property
    def all_green(self) -> bool:
        return self.verdict is not None and self.verdict.passed > 0 and self.verdict.failed == 0

    @property
    def verified(self) -> bool:
        """Done as far as the evidence shows: every declared step verified (when the plan declares
        steps) and every recorded acceptance test passing. In Progress work without declared steps is
        never verified: passing tests show only that what exists works, not that the scope is done."""
        v = self.verdict
        if v is None or not self.all_green or self.regression:
            return False
        if v.steps_total:
            return v.steps_done == v.steps_total
        return self.status == self.completed_status

    @property
    def progress(self) -> float | None:
        """Done steps / declared steps; for a Completed feature without steps, its tests' pass rate."""
        v = self.verdict
        if v is None:
            return None
        if v.steps_total:
            return v.steps_done / v.steps_total
        if self.status == self.completed_status and v.passed + v.failed:
            return v.passed / (v.passed + v.failed)
        return None

    @property
    def when(self) -> str:
        """`recorded 2026-11-26 at commit abc1234`, or "" without evidence."""
        return verified_when(self.evidence, "recorded") if self.evidence is not None else ""

    def _tests(self) -> str:
        v = self.verdict
        assert v is not None
        ran = v.passed + v.failed
        skipped = f" ({v.skipped} skipped)" if v.skipped else ""
        return f"{v.passed} of {ran} passing{skipped}"

    @property
    def short(self) -> str:
        """`3/7 steps` or `4/5 tests` for board cards, or an em dash when nothing ran; the regression and
        stale marks are badges next to it (`flags` in the templates)."""
        v = self.verdict
        if v is None:
            return "—"
        if v.steps_total:
            return f"{v.steps_done}/{v.steps_total} steps"
        if v.passed + v.failed:
            return f"{v.passed}/{v.passed + v.failed} tests"
        return "no test ran"

    @property
    def brief(self) -> str:
        """`3 of 7 steps verified` or `4 of 5 passing` for tables, whose page says once when."""
        v = self.verdict
        if self.evidence is None or v is None:
            return NOT_VERIFIED
        ran = v.passed + v.failed
        none_ran = "no acceptance test ran" + (f" ({v.skipped} skipped)" if v.skipped else "")
        if v.steps_total:
            tests = f"tests {self._tests()}" if ran else none_ran
            return f"{v.steps_done} of {v.steps_total} steps verified, {tests}"
        if not ran:
            return none_ran
        if self.status == self.in_progress_status:
            return f"tests {self._tests()}; no steps linked to tests, so no progress measured"
        return self._tests()

    @property
    def text(self) -> str:
        """A sentence for a plan's or design's page: the verdict, then when the evidence was recorded."""
        v = self.verdict
        if self.evidence is None or v is None:
            return NOT_VERIFIED
        if self.regression:
            head = v.message
        elif v.passed + v.failed == 0:
            skipped = f" ({v.skipped} skipped)" if v.skipped else ""
            head = f"No acceptance test of this feature ran{skipped}"
        else:
            noun = "test" if v.passed + v.failed == 1 else "tests"
            skipped = f" ({v.skipped} skipped)" if v.skipped else ""
            head = f"{v.passed} of {v.passed + v.failed} acceptance {noun} passing{skipped}"
            if v.steps_total:
                head = f"{v.steps_done} of {v.steps_total} steps verified; {head}"
        tail = f"; {self.stale}" if self.stale else ""
        return f"{head} (evidence {self.when}{tail})"


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

    @cached_property
    def report(self) -> TrackReport | None:
        """`planner track`'s verdict on every feature, judged once from the recorded evidence."""
        if self.evidence is None:
            return None
        # The tracker's rules and staleness check; imported late to keep start-up light.
        from planner.fingerprint import staleness
        from planner.track import judge

        stale = staleness(self.config.root, self.evidence)
        return judge(self.plans, self.designs, self.evidence, stale=stale, closed=self.config.closed_statuses)

    @cached_property
    def history(self) -> History:
        """When each plan entered each status, from git (empty outside a repository)."""
        return read_history(self.config)

    @cached_property
    def _verdicts(self) -> dict[str, FeatureVerdict]:
        return {row.slug: row for row in self.report.features} if self.report is not None else {}

    def state(self, slug: str) -> FeatureState:
        """The status and verdict of the plan or completed design `slug`."""
        plan = self.plans_by_slug.get(slug)
        design = self.designs_by_slug.get(slug)
        status = plan.status if plan is not None else self.config.completed_status
        feature = plan.feature if plan is not None else (design.feature if design is not None else slug)
        result = self.evidence.for_feature(feature) if self.evidence is not None else None
        return FeatureState(
            status,
            self._verdicts.get(slug),
            result,
            self.evidence,
            self.config.completed_status,
            self.config.in_progress_status,
        )

    @cached_property
    def regressions(self) -> tuple[str, ...]:
        """Slugs of Completed features whose acceptance tests fail or did not run."""
        return tuple(r.slug for r in (self.report.features if self.report else ()) if r.regression)

    @cached_property
    def stale(self) -> str | None:
        """The first staleness reason track gives (evidence is one file, so one reason covers it)."""
        return next((r.stale for r in (self.report.features if self.report else ()) if r.stale), None)

    def is_closed(self, plan: Plan) -> bool:
        return self.config.is_closed(plan.status)

    @cached_property
    def open_plans(self) -> tuple[Plan, ...]:
        """Plans still on the roadmap: not closed (Rejected, Withdrawn, Deferred, Superseded)."""
        return tuple(p for p in self.plans if not self.is_closed(p))

    @cached_property
    def closed_plans(self) -> dict[str, tuple[Plan, ...]]:
        """Closing state → its plans, for the archive pages (every configured state, empty or not)."""
        return {
            state: tuple(p for p in self.plans if p.status == state) for state in self.config.closed_statuses
        }

    @cached_property
    def invalid_plans(self) -> tuple[Plan, ...]:
        """Plans whose status is not a configured one (validation reports them; the site marks them)."""
        allowed = set(self.config.all_statuses)
        return tuple(p for p in self.plans if p.status not in allowed)

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

    def blockers(self, slug: str) -> tuple[str, ...]:
        """The dependencies of plan ``slug`` that are not finished: open plans of this roadmap (a completed
        design, a Completed plan or an unknown slug does not block; validation reports unknown ones)."""
        plan = self.plans_by_slug.get(slug)
        if plan is None or plan.status == self.config.completed_status or self.config.is_closed(plan.status):
            return ()
        return tuple(
            d
            for d in plan.dependencies
            if d in self.plans_by_slug
            and d not in self.design_slugs
            and self.plans_by_slug[d].status != self.config.completed_status
        )

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
