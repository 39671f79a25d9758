"""deploy/: the Grafana dashboard and the Prometheus alert rules read only families the gateway registers.

The acceptance test checks the same against a running gateway's /metrics; this one needs no server and also
catches a family that exists only after its first event (a labelled counter never incremented)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from gateway.metrics import GatewayMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "gateway-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}


def registered_names() -> set[str]:
    """Every series name of a fresh gateway's registry, with the suffixes PromQL sees."""
    names: set[str] = set()
    for family in GatewayMetrics().registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
    return names


def metric_names(expression: str) -> set[str]:
    """The gateway metric names an expression reads (label matchers and strings removed first)."""
    bare = re.sub(r'"[^"]*"', "", expression)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    return {word for word in IDENTIFIER.findall(bare) if word.startswith("gateway_")}


def expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    out = [
        (f"dashboard: {panel['title']}", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    rules = yaml.safe_load(ALERTS.read_text())
    out += [(f"alert: {rule['alert']}", rule["expr"]) for group in rules["groups"] for rule in group["rules"]]
    return out


@pytest.mark.parametrize(("where", "expression"), expressions())
def test_every_query_names_registered_families(where: str, expression: str) -> None:
    names = metric_names(expression)
    assert names, f"{where} reads no gateway metric"
    assert names <= registered_names(), f"{where}: unknown {sorted(names - registered_names())}"


def test_the_name_extraction_sees_through_labels_and_functions() -> None:
    expression = (
        'histogram_quantile(0.95, sum by (le) (rate(gateway_ttft_seconds_bucket{model=~"gateway_x"}[5m])))'
    )
    assert metric_names(expression) == {"gateway_ttft_seconds_bucket"}
    assert "gateway_ttft_seconds_bucket" in registered_names()
    assert "gateway_requests_total" in registered_names()
    assert "gateway_not_a_metric_total" not in registered_names()


def test_the_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] and dashboard["title"]
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"])
