"""docs/alerts.yml: it parses, has a Prometheus rule for each built-in rule, and names only metrics
that actors/metrics.py exports (promtool is not available here: the PromQL itself is not checked)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from actors import metrics
from actors.pure.alerts import RULES

DOC = Path(__file__).resolve().parent.parent / "docs" / "alerts.yml"


def test_alerts_yml_covers_every_builtin_rule_with_exported_metrics():
    doc = yaml.safe_load(DOC.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {r["labels"]["rule"] for r in rules} == set(RULES)
    exported = set()
    for name, spec in metrics.FAMILIES.items():
        kind = spec[2]
        exported |= {name + "_total"} if kind == "counter" else {name, name + "_bucket", name + "_sum", name + "_count"}
    for r in rules:
        assert r["alert"].startswith("Llmbus") and r["labels"]["severity"] in ("warning", "critical")
        used = set(re.findall(r"\bllmbus_[a-z_]+", r["expr"]))
        assert used and used <= exported, (r["alert"], used - exported)
