"""The Grafana dashboard in deploy/ reads only metrics that Moorage exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from moorage.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "moorage.json"


def _exported() -> set[str]:
    names = {"moorage_events_pending"}  # read from the database at scrape time
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


def test_every_panel_queries_an_exported_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = _exported()
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            found = set(re.findall(r"\bmoorage_[a-z_]+", target["expr"]))
            assert found, f"{panel['title']}: no moorage metric in {target['expr']}"
            used |= found
    assert used <= exported, f"unknown metrics: {sorted(used - exported)}"
    # and every metric Moorage exports has a panel (histogram parts count once)
    wanted = {n for n in exported if not n.endswith(("_count", "_sum"))}
    assert wanted <= used, f"metrics without a panel: {sorted(wanted - used)}"
