"""What evidence depends on, and whether it has changed since: the basis of "stale" in track and the site.

Acceptance evidence is only as current as the files it was produced from: the gateway package, the tests,
the plans and the docs (documentation steps are verified by tests that read them). A `TreeState` records,
for each of those inputs, a content hash: in a git work tree the input's object id at HEAD plus a hash of
every file `git status` reports changed or untracked under it (two cheap git calls, no file reading
unless the tree is dirty); outside git a hash over the files themselves.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from planner.evidence import Evidence

# Paths (relative to the project root) whose content the acceptance evidence depends on.
INPUTS = ("gateway", "tests", "plans", "docs", "pyproject.toml")
_SKIPPED_DIRS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})


@dataclass(frozen=True)
class TreeState:
    """The project's files as one run saw them."""

    commit: str | None  # HEAD, None outside git
    dirty: bool  # the working tree differs from HEAD in some input
    inputs: dict[str, str] = field(default_factory=dict)  # input path -> content hash

    @property
    def fingerprint(self) -> str:
        """One hash over every input's hash (what the evidence file records)."""
        text = "\n".join(f"{name}={digest}" for name, digest in sorted(self.inputs.items()))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tree_state(root: Path) -> TreeState:
    """The commit, dirty flag and input hashes of the project at `root`."""
    head = _git(root, "rev-parse", "HEAD")
    if head is None:
        return TreeState(None, False, {name: _hash_files(root, name) for name in INPUTS})
    listing = _git(root, "ls-tree", "HEAD", "--", *INPUTS) or ""
    status = _git(
        root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames", "--", *INPUTS
    )
    digests = {name: hashlib.sha256() for name in INPUTS}
    for line in listing.splitlines():
        meta, _, path = line.partition("\t")
        if path in digests:
            digests[path].update(meta.split()[-1].encode("ascii"))
    changed = [entry[3:] for entry in (status or "").split("\0") if len(entry) > 3]
    for path in sorted(changed):
        name = next((n for n in INPUTS if path == n or path.startswith(n + "/")), None)
        if name is not None:
            digests[name].update(b"\0" + path.encode("utf-8") + b"\0" + _file_hash(root / path))
    return TreeState(head, bool(changed), {name: d.hexdigest() for name, d in digests.items()})


def staleness(root: Path, evidence: Evidence, current: TreeState | None = None) -> str | None:
    """Why `evidence` no longer describes the project at `root`, or None when it still does.

    The text names the commit the evidence came from and what changed since, e.g.
    `from commit abc1234; changed since: gateway/, tests/`.
    """
    now = current if current is not None else tree_state(root)
    origin = f"from commit {evidence.commit_label()}"
    if evidence.fingerprint is None:
        # A version 1 file knows only its commit.
        if evidence.commit and now.commit and evidence.commit != now.commit:
            return f"{origin}; HEAD is now {now.commit[:7]}"
        if evidence.from_dirty_tree:
            return f"{origin}, with uncommitted changes it did not record"
        return None
    if evidence.fingerprint == now.fingerprint:
        return None
    recorded = evidence.inputs
    changed = [name for name in INPUTS if recorded.get(name) != now.inputs.get(name)] if recorded else []
    what = "; files changed since"
    if changed:
        what = "; changed since: " + ", ".join(_label(root, name) for name in changed)
    head = f"; HEAD is now {now.commit[:7]}" if now.commit and now.commit != evidence.commit else ""
    return origin + head + what


def _label(root: Path, name: str) -> str:
    return f"{name}/" if (root / name).is_dir() else name


def _file_hash(path: Path) -> bytes:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return b"missing"  # deleted (or unreadable): still a difference from HEAD


def _hash_files(root: Path, name: str) -> str:
    digest = hashlib.sha256()
    top = root / name
    files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
    for path in files:
        if _SKIPPED_DIRS.intersection(path.relative_to(root).parts):
            continue
        digest.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0" + _file_hash(path))
    return digest.hexdigest()


def _git(root: Path, *args: str) -> str | None:
    """Output of a read-only git command, or None outside git or on failure."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip("\n") if done.returncode == 0 else None
