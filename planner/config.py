"""The planner's settings, defaulting to the reference template.

They are read from the project root's `planner.toml` (or `.planner.toml`), whose keys are top-level, else from
`[tool.planner]` in its pyproject.toml: a repository without Python packaging needs no pyproject.toml just to
configure its roadmap, and a Python project may keep everything in one file (as ruff and mypy allow).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_STATUSES = ("Proposed", "Planned", "In Progress", "Completed")
# States that close a proposal without completing it, as mature proposal processes have (PEP 1: Rejected,
# Withdrawn, Deferred, Superseded). A closed plan stays in plans/ as a record; it is neither scheduled nor
# judged by `planner track`, and the site lists it on its state's archive page.
DEFAULT_CLOSED_STATUSES = ("Rejected", "Withdrawn", "Deferred", "Superseded")
SUPERSEDED = "Superseded"  # the closing state that must name its successor in `superseded_by`
DEFAULT_PRIORITIES = ("High", "Medium", "Low")
DEFAULT_COMPLEXITIES = ("Simple", "Moderate", "Complex")
DEFAULT_SECTIONS = (
    "Goal",
    "User Benefit",
    "Design Proposal",
    "Implementation Steps",
    "Open Questions",
    "Alternatives Considered",
)
# Working days per unit: a week is five working days, a month twenty.
DEFAULT_UNITS = {"day": 1.0, "week": 5.0, "month": 20.0}


@dataclass(frozen=True)
class Readiness:
    """`[tool.planner.readiness]`: the checklist page of the features that must be verified before a release.

    `priorities` None means the two most urgent configured priorities.
    """

    enabled: bool = True
    title: str = "Readiness"
    priorities: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PlannerConfig:
    """Everything a project may configure; `root` is the project root (see `find_root`)."""

    root: Path = field(default_factory=Path.cwd)
    plans_dir: str = "plans"
    design_dir: str = "docs/design"
    statuses: tuple[str, ...] = DEFAULT_STATUSES  # the lifecycle in order; closing states may be listed too
    closed_statuses: tuple[str, ...] = DEFAULT_CLOSED_STATUSES
    priorities: tuple[str, ...] = DEFAULT_PRIORITIES
    complexities: tuple[str, ...] = DEFAULT_COMPLEXITIES
    sections: tuple[str, ...] = DEFAULT_SECTIONS
    units: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_UNITS))
    lanes: int = 2
    # What each priority means to this project, shown beside it on the site: `[tool.planner.priority_labels]`.
    priority_labels: dict[str, str] = field(default_factory=dict)
    readiness: Readiness = field(default_factory=Readiness)

    @property
    def readiness_priorities(self) -> tuple[str, ...]:
        """The priorities on the readiness page (none when it is turned off)."""
        if not self.readiness.enabled:
            return ()
        if self.readiness.priorities is not None:
            return self.readiness.priorities
        return self.priorities[:2]

    @property
    def lifecycle(self) -> tuple[str, ...]:
        """The open-to-done states in order (`statuses` without any closing state listed in it)."""
        return tuple(s for s in self.statuses if s not in self.closed_statuses)

    @property
    def completed_status(self) -> str:
        """The state reached through `planner complete`: `Completed`, else the lifecycle's last."""
        return "Completed" if "Completed" in self.lifecycle else self.lifecycle[-1]

    @property
    def in_progress_status(self) -> str | None:
        """`In Progress`, else the state before the completed one (None for a one-state lifecycle)."""
        if "In Progress" in self.lifecycle:
            return "In Progress"
        open_states = [s for s in self.lifecycle if s != self.completed_status]
        return open_states[-1] if open_states else None

    @property
    def all_statuses(self) -> tuple[str, ...]:
        """Every status a plan may have: the lifecycle, then the closing states."""
        return self.lifecycle + tuple(s for s in self.closed_statuses if s not in self.lifecycle)

    def is_closed(self, status: str) -> bool:
        return status in self.closed_statuses

    @property
    def plans_path(self) -> Path:
        return self.root / self.plans_dir

    @property
    def design_path(self) -> Path:
        return self.root / self.design_dir


class ConfigError(Exception):
    """The planner config holds a value of the wrong type; the message names the file and the key."""


# The planner's own config files, in order of preference; `planner init` writes the first.
CONFIG_FILES = ("planner.toml", ".planner.toml")
_PYPROJECT_TABLE = re.compile(r"^\[tool\.planner(?:\]|\.)", re.M)


def config_file(folder: Path) -> Path | None:
    """The planner config in `folder`: planner.toml, .planner.toml, or pyproject.toml with [tool.planner]."""
    for name in CONFIG_FILES:
        if (folder / name).is_file():
            return folder / name
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file():
        try:
            text = pyproject.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        # A text test, not a TOML parse: a broken pyproject.toml is reported by load_config, not here.
        if _PYPROJECT_TABLE.search(text):
            return pyproject
    return None


def find_root(start: Path | None = None) -> Path:
    """The project root for `start` (default: the cwd): the nearest folder at or above it holding the
    planner config; else the nearest holding mkdocs.yml; else .git; else pyproject.toml; else `start`.

    Each kind of marker is looked for all the way up before the next kind: a `.git` or a sub-package's
    pyproject.toml below the folder that configures the roadmap must not become the root (`cd plans &&
    planner new LOW-x` must write plans/LOW-x.md, not plans/plans/LOW-x.md).
    """
    here = (start or Path.cwd()).resolve()
    folders = (here, *here.parents)
    markers: tuple[Callable[[Path], bool], ...] = (
        lambda folder: config_file(folder) is not None,
        lambda folder: (folder / "mkdocs.yml").is_file(),
        lambda folder: (folder / ".git").exists(),  # a folder, or a file in a git worktree
        lambda folder: (folder / "pyproject.toml").is_file(),
    )
    for marker in markers:
        for folder in folders:
            if marker(folder):
                return folder
    return here


def _read_table(root: Path) -> tuple[dict[str, object], Path | None]:
    """The config table in `root` and the file it came from (None: no config, the defaults)."""
    path = next((root / name for name in CONFIG_FILES if (root / name).is_file()), root / "pyproject.toml")
    if not path.is_file():
        return {}, None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if path.name != "pyproject.toml":
        return data, path
    tool = data.get("tool", {})
    table = tool.get("planner", {}) if isinstance(tool, dict) else {}
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.planner] must be a table, not {type(table).__name__}")
    return table, path


def load_config(root: Path | None = None) -> PlannerConfig:
    """Read the planner config of `root` (found upwards from the cwd by `find_root` when not given)."""
    root = find_root(root) if root is None else root.resolve()
    table, source = _read_table(root)
    try:
        return _from_table(root, table)
    except ConfigError as exc:
        if source is None or source.name == "pyproject.toml":
            raise
        # The messages name keys as `[tool.planner] key`; in planner.toml the keys are top-level.
        raise ConfigError(f"{source.name}: {str(exc).replace('[tool.planner] ', '')}") from exc


def _from_table(root: Path, table: dict[str, object]) -> PlannerConfig:
    kwargs: dict[str, object] = {"root": root}
    for key in ("plans_dir", "design_dir"):
        if key in table:
            kwargs[key] = _expect(table[key], str, key)
    for key in ("statuses", "priorities", "complexities", "sections", "closed_statuses"):
        if key in table:
            values = _expect(table[key], list, key)
            if not all(isinstance(v, str) and v for v in values) or (not values and key != "closed_statuses"):
                raise ConfigError(f"[tool.planner] {key}: expected a non-empty list of strings")
            kwargs[key] = tuple(values)
    closed = kwargs.get("closed_statuses", DEFAULT_CLOSED_STATUSES)
    if set(kwargs.get("statuses", DEFAULT_STATUSES)) <= set(closed):  # type: ignore[call-overload]
        raise ConfigError("[tool.planner] statuses: list at least one state that is not a closing state")
    if "units" in table:
        units = _expect(table["units"], dict, "units")
        if not all(isinstance(v, int | float) and v > 0 for v in units.values()):
            raise ConfigError("[tool.planner] units: expected positive numbers of working days per unit")
        kwargs["units"] = {str(k): float(v) for k, v in units.items()}
    if "lanes" in table:
        lanes = _expect(table["lanes"], int, "lanes")
        if lanes < 1:
            raise ConfigError("[tool.planner] lanes: expected a whole number of at least 1")
        kwargs["lanes"] = lanes
    if "priority_labels" in table:
        labels = _expect(table["priority_labels"], dict, "priority_labels")
        if not all(isinstance(v, str) for v in labels.values()):
            raise ConfigError("[tool.planner] priority_labels: expected text for each priority")
        known: tuple[str, ...] = kwargs.get("priorities", DEFAULT_PRIORITIES)  # type: ignore[assignment]
        strays = sorted(set(labels) - set(known))
        if strays:
            raise ConfigError(
                f"[tool.planner] priority_labels: {', '.join(strays)} is not a configured priority "
                f"({', '.join(known)})"
            )
        kwargs["priority_labels"] = {str(k): v for k, v in labels.items()}
    if "readiness" in table:
        priorities: tuple[str, ...] = kwargs.get("priorities", DEFAULT_PRIORITIES)  # type: ignore[assignment]
        kwargs["readiness"] = _readiness(table["readiness"], priorities)
    unknown = sorted(set(table) - {f for f in PlannerConfig.__dataclass_fields__ if f != "root"})
    if unknown:
        raise ConfigError(f"[tool.planner] unknown key(s): {', '.join(unknown)}")
    return PlannerConfig(**kwargs)  # type: ignore[arg-type]


def _readiness(value: object, priorities: tuple[str, ...]) -> Readiness:
    """`readiness = false`, or a table with `enabled`, `title` and `priorities`."""
    if isinstance(value, bool):
        return Readiness(enabled=value)
    table = _expect(value, dict, "readiness")
    unknown = sorted(set(table) - {"enabled", "title", "priorities"})
    if unknown:
        raise ConfigError(f"[tool.planner.readiness] unknown key(s): {', '.join(unknown)}")
    enabled = _expect(table.get("enabled", True), bool, "readiness.enabled")
    title = _expect(table.get("title", "Readiness"), str, "readiness.title")
    if not title.strip():
        raise ConfigError("[tool.planner.readiness] title: expected a non-empty title")
    chosen: tuple[str, ...] | None = None
    if "priorities" in table:
        listed = _expect(table["priorities"], list, "readiness.priorities")
        strays = [p for p in listed if p not in priorities]
        if strays or not listed:
            raise ConfigError(
                "[tool.planner.readiness] priorities: expected a non-empty list of configured priorities "
                f"({', '.join(priorities)})"
                + (f"; not configured: {', '.join(map(str, strays))}" if strays else "")
            )
        chosen = tuple(listed)
    return Readiness(enabled=enabled, title=title, priorities=chosen)


def _expect(value: object, kind: type, key: str) -> Any:
    if not isinstance(value, kind):
        raise ConfigError(f"[tool.planner] {key}: expected {kind.__name__}, got {type(value).__name__}")
    return value
