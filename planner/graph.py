"""The dependency graph between plans: cycles, dependents and an order that puts dependencies first.

All functions are linear in the number of plans plus dependencies; dependencies on slugs that are not
among `plans` (completed designs, typos) are ignored here and reported by the rules.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable

from planner.model import Plan


def adjacency(plans: Iterable[Plan]) -> dict[str, list[str]]:
    """slug -> the slugs it depends on that are themselves plans (duplicate slugs merge)."""
    graph: dict[str, list[str]] = {}
    plans = list(plans)
    for plan in plans:
        graph.setdefault(plan.slug, [])
    for plan in plans:
        edges = graph[plan.slug]
        for dep in plan.dependencies:
            if dep in graph and dep not in edges:
                edges.append(dep)
    return graph


def find_cycles(plans: Iterable[Plan]) -> list[list[str]]:
    """One cycle per strongly connected group, as a path that ends where it starts: [a, b, a].

    A plan depending on itself gives [a, a]. Cycles are sorted, and each starts at its smallest slug.
    """
    graph = adjacency(plans)
    cycles = []
    for component in _strongly_connected(graph):
        members = set(component)
        start = min(component)
        if len(component) == 1:
            if start in graph[start]:
                cycles.append([start, start])
            continue
        cycles.append(_cycle_through(graph, members, start))
    return sorted(cycles)


def dependents(plans: Iterable[Plan], slug: str) -> list[str]:
    """The slugs of plans that list `slug` as a dependency, sorted."""
    return sorted({plan.slug for plan in plans if slug in plan.dependencies and plan.slug != slug})


def topological_order(plans: Iterable[Plan]) -> list[str]:
    """Every plan's slug, each after the plans it depends on; ties broken by slug.

    Plans caught in a cycle cannot be ordered: they come last, sorted by slug.
    """
    graph = adjacency(plans)
    waiting = {slug: len(deps) for slug, deps in graph.items()}
    users: dict[str, list[str]] = {slug: [] for slug in graph}
    for slug, deps in graph.items():
        for dep in deps:
            users[dep].append(slug)
    ready = [slug for slug, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        slug = heapq.heappop(ready)
        order.append(slug)
        for user in users[slug]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    placed = set(order)
    order.extend(sorted(slug for slug in graph if slug not in placed))
    return order


def format_cycle(cycle: list[str]) -> str:
    """`a -> b -> a`."""
    return " -> ".join(cycle)


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative so that long dependency chains cannot overflow the stack."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, edge = work.pop()
            if edge == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            edges = graph[node]
            if edge < len(edges):
                work.append((node, edge + 1))
                child = edges[edge]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _cycle_through(graph: dict[str, list[str]], members: set[str], start: str) -> list[str]:
    """The shortest path start -> ... -> start inside one strongly connected group (breadth first)."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in graph[node]:
            if child not in members:
                continue
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError("a strongly connected group always has a cycle")  # pragma: no cover
