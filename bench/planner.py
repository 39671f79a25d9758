"""Planner at scale: ``planner validate`` and the site build on generated roadmaps.

    python bench/planner.py                      # 1,000 and 10,000 plans, site build of 1,000
    python bench/planner.py --counts 200 --site-plans 0 --repeat 1   # a quick look

For each plan count it writes a project into a temporary folder (``pyproject.toml`` with ``[tool.planner]``,
``plans/`` with valid plans that depend on earlier ones, a few completed designs in ``docs/design/``) and
times:

- ``planner validate`` in process (``planner.rules.validate``, every rule) and as the CLI (one process,
  Python start-up and imports included);
- the baseline: loading only the same files' front matter with python-frontmatter (``frontmatter.load``,
  its default YAML loader), in process and as a process of its own (to compare with the CLI) -- and, for
  reference, with libyaml's loader, which planner itself uses.

For the site it builds the same roadmap with mkdocs through planner's mkdocs plugin and as plain Markdown
pages written beforehand by ``planner render --out``, and reports the ratio (the target); for reference it
also builds the plain pages with the Markdown extensions the plugin turns on, which the first plain build
lacks. The builds alternate, so a change in the shared machine's load touches each alike.

Targets (issue 9): validate <= 2 x the front-matter baseline, site build <= 1.3 x the plain build.
Results go to stdout and to ``bench/results/planner-<time>.json`` (or ``--json PATH``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
# This file is bench/planner.py: without this, `import planner` would find it instead of the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from bench import exclusive  # noqa: E402

RESULTS = HERE / "results"
VALIDATE_TARGET = 2.0
SITE_TARGET = 1.3

PRIORITIES = (("HIGH", "High"), ("MEDIUM", "Medium"), ("LOW", "Low"))
COMPLEXITIES = ("Simple", "Moderate", "Complex")
ESTIMATES = ("2 days", "3-5 days", "1 week", "2 weeks", "1-2 weeks", "1 month")
WORDS = [
    "gateway",
    "request",
    "cache",
    "key",
    "tenant",
    "budget",
    "ledger",
    "upstream",
    "provider",
    "stream",
    "chunk",
    "route",
    "replica",
    "store",
    "counter",
    "window",
    "token",
    "price",
    "model",
    "latency",
    "retry",
    "failover",
    "cooldown",
    "header",
    "client",
    "config",
    "reload",
]
DESIGNS = 10

PYPROJECT = """[project]
name = "bench-roadmap"
version = "0"

[tool.planner]
plans_dir = "plans"
design_dir = "docs/design"
"""


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def _paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(_sentence(rng, rng.randint(8, 16)) for _ in range(sentences))


def plan_text(rng: random.Random, index: int, priority: str, deps: list[str], in_progress: bool) -> str:
    """One valid plan in the canonical form, with every template section written."""
    title = f"Feature {index:05d}"
    status = "In Progress" if in_progress else rng.choice(("Proposed", "Planned"))
    dep_list = ", ".join(deps)
    steps = "\n".join(f"{n}. {_sentence(rng, 8)}" for n in range(1, rng.randint(3, 6)))
    return f"""---
title: {title}
status: {status}
priority: {priority}
complexity: {rng.choice(COMPLEXITIES)}
estimate: {rng.choice(ESTIMATES)}
dependencies: [{dep_list}]
feature: feature-{index:05d}
owner: team-{index % 7}
updated: 2026-11-{1 + index % 28:02d}
---
# {title}

## Goal

{_paragraph(rng, 2)}

## User Benefit

- {_sentence(rng, 10)}
- {_sentence(rng, 12)}

## Design Proposal

{_paragraph(rng, 4)}

{_paragraph(rng, 3)}

## Implementation Steps

{steps}

## Open Questions

- {_sentence(rng, 9)[:-1]}?

## Alternatives Considered

{_paragraph(rng, 2)}
"""


def write_project(root: Path, count: int, seed: int = 9) -> list[Path]:
    """A planner project with ``count`` valid plans whose dependencies form a DAG; returns the plan files."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    plans, designs = root / "plans", root / "docs" / "design"
    plans.mkdir(parents=True, exist_ok=True)
    designs.mkdir(parents=True, exist_ok=True)
    design_slugs = [f"done-{i:02d}" for i in range(DESIGNS)]
    for slug in design_slugs:
        text = f"---\ntitle: Done {slug}\nfeature: {slug}\n---\n# Done {slug}\n\n{_paragraph(rng, 2)}\n"
        (designs / f"{slug}.md").write_text(text, encoding="utf-8")
    files = []
    slugs: list[str] = []
    for i in range(count):
        slug = f"feature-{i:05d}"
        prefix, priority = PRIORITIES[i % 3]
        # Every twentieth plan is In Progress and waits only on completed designs, so none is blocked.
        in_progress = i % 20 == 19
        if in_progress:
            deps = rng.sample(design_slugs, 2)
        else:
            # Mostly recent plans (roadmaps cluster), sometimes any earlier one: always a DAG.
            pool = slugs[-50:] if rng.random() < 0.8 else slugs
            deps = rng.sample(pool, min(len(pool), rng.randint(0, 3)))
        path = plans / f"{prefix}-{slug}.md"
        path.write_text(plan_text(rng, i, priority, deps, in_progress), encoding="utf-8")
        files.append(path)
        slugs.append(slug)
    return files


class Times(list[float]):
    """Wall-clock seconds of each run, with the process CPU seconds of each run in ``cpu``."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu: list[float] = []


def _timed(
    fn: Callable[[], Any], repeat: int, warmup: bool = True, in_process: bool = True
) -> tuple[Times, Any]:
    """Run ``fn`` once untimed (imports, OS file cache), then ``repeat`` timed runs.

    CPU time is this process's ``in_process``, else that of the child processes ``fn`` waited for.
    """
    result = fn() if warmup else None
    times = Times()
    clock = time.process_time if in_process else _children_cpu
    for _ in range(repeat):
        cpu, started = clock(), time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
        times.cpu.append(clock() - cpu)
    return times, result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _summary(times: list[float]) -> dict[str, Any]:
    summary = {"median_s": statistics.median(times), "min_s": min(times), "runs_s": list(times)}
    cpu = getattr(times, "cpu", None)
    if cpu:
        # CPU time is the work itself and holds on a busy machine, where wall time also counts waiting
        # for a core.
        summary["cpu_median_s"] = statistics.median(cpu)
    return summary


def bench_validate(root: Path, files: list[Path], repeat: int) -> dict[str, Any]:
    """In-process validate, the CLI, and the two front-matter-only baselines, on one project."""
    import frontmatter
    import yaml
    from frontmatter.default_handlers import YAMLHandler

    from planner.config import load_config
    from planner.rules import validate

    def run_validate() -> Any:
        return validate(load_config(root))

    def front_matter_only() -> int:
        return sum(len(frontmatter.load(str(path)).metadata) for path in files)

    class CHandler(YAMLHandler):
        def load(self, fm: str, **kwargs: object) -> Any:
            return yaml.load(fm, Loader=yaml.CSafeLoader)

    handler = CHandler()

    def front_matter_libyaml() -> int:
        total = 0
        for path in files:
            total += len(frontmatter.loads(path.read_text(encoding="utf-8"), handler=handler).metadata)
        return total

    validate_times, validation = _timed(run_validate, repeat)
    errors = [str(p) for p in validation.errors]
    if errors or len(validation.plans) != len(files):
        raise SystemExit(
            f"generated plans are not valid ({len(errors)} errors, e.g. {errors[:3]}): fix write_project"
        )
    baseline_times, _ = _timed(front_matter_only, repeat)
    libyaml_times, _ = _timed(front_matter_libyaml, repeat)
    cli_times, _ = _timed(lambda: _cli_validate(root), repeat, warmup=False, in_process=False)
    cli_base_times, _ = _timed(lambda: _cli_frontmatter(root), repeat, warmup=False, in_process=False)
    result = {
        "plans": len(files),
        "warnings": len(validation.warnings),
        "validate": _summary(validate_times),
        "validate_cli": _summary(cli_times),
        "frontmatter_cli": _summary(cli_base_times),
        "frontmatter": _summary(baseline_times),
        "frontmatter_libyaml": _summary(libyaml_times),
    }
    base = result["frontmatter"]["median_s"]
    result["ratio"] = result["validate"]["median_s"] / base
    result["ratio_cli"] = result["validate_cli"]["median_s"] / result["frontmatter_cli"]["median_s"]
    result["ratio_libyaml"] = result["validate"]["median_s"] / result["frontmatter_libyaml"]["median_s"]
    result["ratio_cpu"] = result["validate"]["cpu_median_s"] / result["frontmatter"]["cpu_median_s"]
    result["ratio_cli_cpu"] = (
        result["validate_cli"]["cpu_median_s"] / result["frontmatter_cli"]["cpu_median_s"]
    )
    result["target"] = VALIDATE_TARGET
    result["meets_target"] = result["ratio"] <= VALIDATE_TARGET
    return result


def _planner_command() -> list[str]:
    exe = shutil.which("planner")
    return [exe] if exe else [sys.executable, "-c", "from planner.cli import main; main()"]


def _cli_validate(root: Path) -> None:
    proc = subprocess.run(
        [*_planner_command(), "validate"], cwd=root, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"planner validate failed in {root}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


FRONTMATTER_SCRIPT = """
import pathlib, frontmatter
files = sorted(p for p in pathlib.Path("plans").glob("*.md") if p.name != "README.md")
print(sum(len(frontmatter.load(str(p)).metadata) for p in files))
"""


def _cli_frontmatter(root: Path) -> None:
    """The baseline as a process of its own, to compare with the CLI (start-up and imports included)."""
    subprocess.run([sys.executable, "-c", FRONTMATTER_SCRIPT], cwd=root, capture_output=True, check=True)


PLUGIN_MKDOCS = """site_name: Bench roadmap
docs_dir: docs
theme:
  name: material
plugins:
  - search
  - planner
"""

PLAIN_MKDOCS = """site_name: Bench roadmap
docs_dir: {docs}
theme:
  name: material
plugins:
  - search
"""


def markdown_extensions_yaml() -> str:
    """The Markdown extensions planner's plugin turns on, as mkdocs.yml text (the mermaid fence's format is
    a Python name, which yaml.safe_dump cannot write)."""
    from planner.mkdocs_plugin import MERMAID_FENCE, REQUIRED_EXTENSIONS

    lines = ["markdown_extensions:", *(f"  - {name}" for name in REQUIRED_EXTENSIONS)]
    fence = MERMAID_FENCE["format"]
    lines += [
        "  - pymdownx.superfences:",
        "      custom_fences:",
        f"        - name: {MERMAID_FENCE['name']}",
        f"          class: {MERMAID_FENCE['class']}",
        f"          format: !!python/name:{fence.__module__}.{fence.__name__}",  # type: ignore[attr-defined]
    ]
    return "\n".join(lines) + "\n"


# Like planner's plugin: past this many plans, plan pages are left out of the navigation, which would
# otherwise list every plan on every page (output quadratic in the number of plans).
NAV_PLANS_LIMIT = 50


def plain_nav(docs: Path) -> list[Any]:
    """The navigation the plugin build has, for the plain build: same pages, same nav, same output size."""
    pages = sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.md"))
    plans = [p for p in pages if p.startswith("roadmap/plans/")]
    hide_plans = len(plans) > NAV_PLANS_LIMIT
    nav: list[Any] = [p for p in pages if "/" not in p]
    folders: dict[str, list[str]] = {}
    for page in pages:
        if "/" in page and not (hide_plans and page in plans):
            folders.setdefault(page.split("/", 1)[0], []).append(page)
    for folder, entries in folders.items():
        entries.sort(key=lambda p: (not p.endswith("/index.md"), p.count("/"), p))
        nav.append({folder.capitalize(): entries})
    return nav


def bench_site(root: Path, repeat: int) -> dict[str, Any]:
    """``mkdocs build`` with the planner plugin against a plain build of ``planner render --out`` pages."""
    try:
        from importlib.metadata import entry_points

        plugins = {ep.name for ep in entry_points(group="mkdocs.plugins")}
    except Exception:  # pragma: no cover - metadata is always there on 3.11
        plugins = set()
    if "planner" not in plugins:
        return {
            "skipped": "planner's mkdocs plugin is not installed (no 'planner' mkdocs.plugins entry point)"
        }
    (root / "docs").mkdir(exist_ok=True)
    index = root / "docs" / "index.md"
    if not index.exists():
        index.write_text("# Bench roadmap\n", encoding="utf-8")
    (root / "mkdocs.yml").write_text(PLUGIN_MKDOCS, encoding="utf-8")
    static = root / "static-docs"
    render = subprocess.run(
        [*_planner_command(), "render", "--out", str(static)], cwd=root, capture_output=True, text=True
    )
    if render.returncode != 0:
        return {"skipped": f"`planner render --out` failed: {(render.stderr or render.stdout)[-500:]}"}
    # The plain build gets the same hand-written pages the plugin build has, plus the rendered ones.
    for page in (root / "docs").rglob("*.md"):
        target = static / page.relative_to(root / "docs")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(page, target)
    plain = PLAIN_MKDOCS.format(docs=static.name) + yaml.safe_dump(
        {"nav": plain_nav(static)}, sort_keys=False
    )
    (root / "mkdocs-plain.yml").write_text(plain, encoding="utf-8")
    # For reference, not the target: the same plain build with the Markdown extensions the pages need, which
    # the plugin turns on (without them admonitions and Markdown inside HTML show as text). The difference
    # between this build and the plugin's is what the plugin itself costs.
    (root / "mkdocs-plain-ext.yml").write_text(plain + markdown_extensions_yaml(), encoding="utf-8")
    pages = sum(1 for _ in static.rglob("*.md"))

    def build(config: str, out: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "-q", "-f", config, "-d", out],
            cwd=root,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"mkdocs build -f {config} failed:\n{proc.stderr[-2000:]}")

    builds = {
        "plugin": ("mkdocs.yml", "site-plugin"),
        "plain": ("mkdocs-plain.yml", "site-plain"),
        "plain_extensions": ("mkdocs-plain-ext.yml", "site-plain-ext"),
    }
    times = {name: Times() for name in builds}
    try:
        for config, out in builds.values():  # untimed: imports, the OS file cache
            build(config, out)
        # Alternated, so a change in the shared machine's load touches every build alike.
        for _ in range(repeat):
            for name, (config, out) in builds.items():
                run, _ = _timed(functools.partial(build, config, out), 1, warmup=False, in_process=False)
                times[name].append(run[0])
                times[name].cpu.append(run.cpu[0])
    except RuntimeError as exc:
        return {"skipped": str(exc)[-800:]}
    result: dict[str, Any] = {"pages": pages, **{name: _summary(runs) for name, runs in times.items()}}
    result["ratio"] = result["plugin"]["median_s"] / result["plain"]["median_s"]
    result["ratio_cpu"] = result["plugin"]["cpu_median_s"] / result["plain"]["cpu_median_s"]
    result["ratio_extensions"] = result["plugin"]["median_s"] / result["plain_extensions"]["median_s"]
    result["ratio_extensions_cpu"] = (
        result["plugin"]["cpu_median_s"] / result["plain_extensions"]["cpu_median_s"]
    )
    result["target"] = SITE_TARGET
    result["meets_target"] = result["ratio"] <= SITE_TARGET
    return result


def machine() -> dict[str, Any]:
    """Where the numbers came from."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def report(results: dict[str, Any]) -> str:
    """The table printed at the end."""
    lines = ["", "planner validate (median of runs)", ""]
    lines.append(
        f"{'plans':>7}  {'validate':>10}  {'CLI':>10}  {'frontmatter':>12}  {'fm+libyaml':>11}  "
        f"{'ratio':>6}  target <= {VALIDATE_TARGET:g}x"
    )
    for row in results["validate"]:
        verdict = "ok" if row["meets_target"] else "MISSED"
        lines.append(
            f"{row['plans']:>7,}  {_ms(row['validate']['median_s']):>10}  "
            f"{_ms(row['validate_cli']['median_s']):>10}  {_ms(row['frontmatter']['median_s']):>12}  "
            f"{_ms(row['frontmatter_libyaml']['median_s']):>11}  {row['ratio']:>5.2f}x  {verdict}"
            f"  (CPU time {row['ratio_cpu']:.2f}x, as processes {row['ratio_cli']:.2f}x,"
            f" vs libyaml {row['ratio_libyaml']:.2f}x)"
        )
    site = results.get("site")
    if site is not None:
        lines += ["", f"site build, {results['site_plans']:,} plans"]
        if "skipped" in site:
            lines.append(f"  not measured: {site['skipped']}")
        else:
            verdict = "ok" if site["meets_target"] else "MISSED"
            lines.append(
                f"  plugin {site['plugin']['median_s']:.2f} s, plain mkdocs {site['plain']['median_s']:.2f} s"
                f" ({site['pages']:,} pages): {site['ratio']:.2f}x, target <= {SITE_TARGET:g}x  {verdict}"
                f"  (CPU time {site['ratio_cpu']:.2f}x)"
            )
            lines.append(
                f"  for reference, plain mkdocs with the plugin's Markdown extensions"
                f" {site['plain_extensions']['median_s']:.2f} s: plugin {site['ratio_extensions']:.2f}x"
                f" (CPU time {site['ratio_extensions_cpu']:.2f}x)"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--counts", default="1000,10000", help="comma-separated plan counts (default: 1000,10000)"
    )
    parser.add_argument(
        "--site-plans", type=int, default=1000, help="plans in the site build comparison (0 skips it)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median reported)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the JSON results")
    parser.add_argument("--keep", action="store_true", help="keep the generated projects (prints where)")
    args = parser.parse_args(argv)
    exclusive.hold("bench/planner.py")
    counts = [int(c) for c in args.counts.split(",") if c.strip()]

    results: dict[str, Any] = {
        "benchmark": "planner",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "validate": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="planner-bench-"))
    try:
        for count in counts:
            root = workdir / f"plans-{count}"
            files = write_project(root, count)
            repeat = args.repeat if count <= 2000 else max(1, min(args.repeat, 3))
            row = bench_validate(root, files, repeat)
            results["validate"].append(row)
            print(
                f"{count:,} plans: validate {_ms(row['validate']['median_s'])}, "
                f"front matter only {_ms(row['frontmatter']['median_s'])} -> {row['ratio']:.2f}x",
                flush=True,
            )
        if args.site_plans > 0:
            root = workdir / f"site-{args.site_plans}"
            write_project(root, args.site_plans)
            results["site_plans"] = args.site_plans
            results["site"] = bench_site(root, max(1, min(args.repeat, 3)))
    finally:
        if args.keep:
            print(f"projects kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(report(results))
    out = args.json or RESULTS / f"planner-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
