"""docs/metrics.md and metrics/definitions.py list the same metrics, types and labels."""

from __future__ import annotations

import re
from pathlib import Path

from qtoaster.metrics.definitions import FAMILIES

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(qtoaster_\w+)` \| (\w+) \| ([^|]*) \|", re.MULTILINE)


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    return {
        name: (kind, tuple(re.findall(r"`(\w+)`", labels)))
        for name, kind, labels in ROW.findall(DOC.read_text())
    }


def registered() -> dict[str, tuple[str, tuple[str, ...]]]:
    found = {}
    for family in FAMILIES:
        (metric,) = family.collect()
        name = metric.name + ("_total" if metric.type == "counter" else "")
        found[name] = (metric.type, tuple(family._labelnames))
    return found


def test_the_doc_lists_every_metric_and_only_those() -> None:
    assert documented() == registered()


def test_every_name_is_prefixed_and_counters_end_in_total() -> None:
    for name, (kind, _) in documented().items():
        assert name.startswith("qtoaster_")
        assert name.endswith("_total") == (kind == "counter"), name
