"""`planner init`: the files a new roadmap starts from, written without overwriting anything.

The planner config (`planner.toml`), `plans/README.md` (the conventions), `plans/_template.md` (the default
template, for the team to edit), `docs/index.md` (the site's home page) and `mkdocs.yml` with the planner
plugin. An existing mkdocs.yml keeps every byte: the plugin is added to its `plugins:` list as text, and the
result is read back to prove nothing else changed.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import yaml

from planner.config import PlannerConfig, config_file, load_config
from planner.edit import read_exact, write_atomic
from planner.parse import priority_prefixes
from planner.scaffold import TEMPLATE_NAME

Outcome = Literal["created", "kept", "updated"]
CONFIG_NAME = "planner.toml"
PLUGIN = "planner"


class StarterError(Exception):
    """A file `planner init` cannot write or change safely; the message names it and says what to do."""


@dataclass(frozen=True)
class Written:
    """One file `planner init` looked at, and what it did with it."""

    path: Path
    outcome: Outcome
    note: str = ""


def init_project(root: Path) -> list[Written]:
    """Create the starter files under `root` (made if missing); existing files are kept as they are,
    except mkdocs.yml, which gets the planner plugin when it lacks it."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    done: list[Written] = []
    existing_config = config_file(root)
    if existing_config is None:
        done.append(_create(root / CONFIG_NAME, _starter("planner.toml.j2", config=PlannerConfig(root=root))))
    else:
        done.append(Written(existing_config, "kept", "the planner config is already there"))
    config = load_config(root)
    mkdocs_path = root / "mkdocs.yml"
    mkdocs = _read_mkdocs(mkdocs_path) if mkdocs_path.is_file() else {}
    docs_dir = str(mkdocs.get("docs_dir") or "docs")
    roadmap_dir = _roadmap_dir(mkdocs)
    site_name = str(mkdocs.get("site_name") or f"{_words(root.name)} roadmap")
    prefixes = list(priority_prefixes(config))
    done.append(
        _create(
            config.plans_path / "README.md",
            _starter(
                "plans-README.md.j2",
                config=config,
                prefixes=", ".join(f"`{p}`" for p in prefixes),
                example_prefix=prefixes[0],
                len_complexities=len(config.complexities),
            ),
        )
    )
    default_template = files("planner").joinpath("templates/plan.md.j2").read_text(encoding="utf-8")
    done.append(_create(config.plans_path / TEMPLATE_NAME, default_template))
    done.append(
        _create(
            root / docs_dir / "index.md",
            _starter("index.md.j2", site_name=site_name, plans_dir=config.plans_dir, roadmap_dir=roadmap_dir),
        )
    )
    if mkdocs_path.is_file():
        result = add_plugin(mkdocs_path)
        if _nav_misses(mkdocs.get("nav"), roadmap_dir):
            hint = (
                f"its nav lists no {roadmap_dir}/: add `- Roadmap: {roadmap_dir}/` to show the roadmap there"
            )
            result = Written(result.path, result.outcome, f"{result.note}; {hint}")
        done.append(result)
    else:
        design = _inside(config.design_dir, docs_dir)
        text = _starter("mkdocs.yml.j2", site_name=site_name, docs_dir=docs_dir, roadmap_dir=roadmap_dir)
        if design is None:
            text = text.replace("  - Design decisions: design/\n", "")
        else:
            text = text.replace("design/\n", f"{design}/\n")
        done.append(_create(mkdocs_path, text))
    return done


def add_plugin(path: Path) -> Written:
    """Add `planner` to mkdocs.yml's `plugins:` as text, so comments, order and tags all stay.

    The result is parsed again: the plugin must be listed and every other setting equal to before,
    or nothing is written and the error says what to add by hand.
    """
    text = read_exact(path)
    before = _read_mkdocs(path, text)
    if PLUGIN in _plugin_names(before.get("plugins")):
        return Written(path, "kept", "the planner plugin is already enabled")
    new_text = _with_plugin(text, before)
    try:
        after = _load_yaml(new_text)
    except yaml.YAMLError:
        after = None
    unchanged = isinstance(after, dict) and {k: v for k, v in after.items() if k != "plugins"} == {
        k: v for k, v in before.items() if k != "plugins"
    }
    expected = [*_plugin_names(before.get("plugins", ["search"])), PLUGIN]
    if not unchanged or not isinstance(after, dict) or _plugin_names(after.get("plugins")) != expected:
        raise StarterError(
            f"{path}: cannot add the planner plugin safely to its `plugins:` setting; "
            "add `- planner` to that list by hand"
        )
    write_atomic(path, new_text)
    return Written(path, "updated", "added the planner plugin")


def _with_plugin(text: str, config: dict[str, Any]) -> str:
    eol = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"^plugins\s*:", line)), None)
    if start is None:
        # mkdocs' default plugin list is [search]: listing plugins replaces it, so search is named too.
        ending = "" if not text or text.endswith(("\n", "\r")) else eol
        return f"{text}{ending}{eol}plugins:{eol}  - search{eol}  - {PLUGIN}{eol}"
    head = lines[start]
    flow = re.match(r"^(plugins\s*:\s*\[)(.*)\](\s*(?:#.*)?)$", head.rstrip("\r\n"))
    if flow:
        items = flow[2].strip()
        joined = f"{items}, {PLUGIN}" if items else PLUGIN
        lines[start] = f"{flow[1]}{joined}]{flow[3]}{eol if head.endswith(chr(10)) else ''}"
        return "".join(lines)
    end = start + 1
    last = start  # the block's last line that is not blank or a comment
    indent: str | None = None
    mapping = isinstance(config.get("plugins"), dict)
    while end < len(lines):
        line = lines[end]
        stripped = line.strip()
        if stripped and not line[0].isspace() and not line.startswith("-") and not stripped.startswith("#"):
            break  # the next top-level key
        if stripped and not stripped.startswith("#"):
            if indent is None:
                indent = line[: len(line) - len(line.lstrip())]
            last = end
        end += 1
    indent = "  " if indent is None else indent
    entry = f"{indent}{PLUGIN}: {{}}" if mapping else f"{indent}- {PLUGIN}"
    if not lines[last].endswith(("\n", "\r")):
        lines[last] += eol
    lines.insert(last + 1, entry + eol)
    return "".join(lines)


def _plugin_names(plugins: object) -> list[str]:
    if isinstance(plugins, dict):
        return [str(name) for name in plugins]
    if isinstance(plugins, list):
        return [str(next(iter(item))) if isinstance(item, dict) and item else str(item) for item in plugins]
    return []


class _TolerantLoader(yaml.SafeLoader):
    """Reads mkdocs.yml's tags (`!ENV`, `!relative`, `!!python/name:...`) as plain values, never running
    anything: `planner init` only needs to compare settings, not to build the site."""


def _tag_value(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> object:
    if isinstance(node, yaml.ScalarNode):
        return (suffix, loader.construct_scalar(node))
    if isinstance(node, yaml.SequenceNode):
        return (suffix, tuple(loader.construct_sequence(node, deep=True)))
    return (suffix, repr(loader.construct_mapping(node, deep=True)))  # type: ignore[arg-type]


_TolerantLoader.add_multi_constructor("!", _tag_value)
_TolerantLoader.add_multi_constructor("tag:yaml.org,2002:python/", _tag_value)


def _load_yaml(text: str) -> object:
    return yaml.load(text, Loader=_TolerantLoader)  # a SafeLoader: constructs plain data only


def _read_mkdocs(path: Path, text: str | None = None) -> dict[str, Any]:
    try:
        data = _load_yaml(read_exact(path) if text is None else text)
    except yaml.YAMLError as exc:
        raise StarterError(f"{path}: not valid YAML ({exc}); fix it, then run `planner init` again") from exc
    except UnicodeDecodeError as exc:
        raise StarterError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StarterError(f"{path}: expected a mapping of settings, found {type(data).__name__}")
    return data


def _roadmap_dir(mkdocs: dict[str, Any]) -> str:
    """The plugin's `roadmap_dir` when mkdocs.yml sets it, else the default `roadmap`."""
    plugins = mkdocs.get("plugins")
    options: object = None
    if isinstance(plugins, dict):
        options = plugins.get(PLUGIN)
    elif isinstance(plugins, list):
        options = next((item[PLUGIN] for item in plugins if isinstance(item, dict) and PLUGIN in item), None)
    if isinstance(options, dict) and isinstance(options.get("roadmap_dir"), str):
        return str(options["roadmap_dir"]).strip("/")
    return "roadmap"


def _nav_misses(nav: object, roadmap_dir: str) -> bool:
    """Whether an explicit navigation leaves the generated roadmap pages out (no nav: mkdocs lists all)."""
    if not isinstance(nav, list):
        return False

    def entries(items: object) -> list[str]:
        found: list[str] = []
        for item in items if isinstance(items, list) else [items]:
            if isinstance(item, dict):
                for value in item.values():
                    found.extend(entries(value))
            elif isinstance(item, str):
                found.append(item)
        return found

    return not any(entry.strip("/").startswith(roadmap_dir) for entry in entries(nav))


def _inside(path: str, folder: str) -> str | None:
    """`path` relative to `folder` when it lies inside it (`docs/design` in `docs` -> `design`)."""
    parts, base = Path(path).parts, Path(folder).parts
    return "/".join(parts[len(base) :]) if parts[: len(base)] == base and len(parts) > len(base) else None


def _words(name: str) -> str:
    words = re.sub(r"[-_.]+", " ", name).strip()
    return words[:1].upper() + words[1:] if words else "Project"


def _starter(name: str, **values: object) -> str:
    import jinja2

    source = files("planner").joinpath(f"templates/starter/{name}").read_text(encoding="utf-8")
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True, autoescape=False
    )
    return env.from_string(source).render(**values)


def _create(path: Path, text: str) -> Written:
    """Write `path` unless it exists; an existing file is never touched.

    The text goes to a temporary file first and is then hard-linked into place: readers never see half a
    file, and unlike a rename the link fails when `path` appeared in the meantime instead of replacing it.
    """
    if path.exists():
        return Written(path, "kept", "already there")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
            os.chmod(temp, 0o666 & ~_umask())
            os.link(temp, path)
        finally:
            os.unlink(temp)
    except FileExistsError:
        return Written(path, "kept", "already there")
    except OSError as exc:
        raise StarterError(f"cannot write {path}: {exc.strerror}") from exc
    return Written(path, "created")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
