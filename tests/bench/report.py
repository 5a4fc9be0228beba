"""Benchmark results: median and spread of repeated runs, the printed table, the JSON file."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Measure:
    """One quantity measured over several runs."""

    name: str
    unit: str
    runs: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def low(self) -> float:
        return min(self.runs)

    @property
    def high(self) -> float:
        return max(self.runs)

    def text(self) -> str:
        """``median (low-high) unit``, with digits suited to the size."""
        return f"{_num(self.median)} ({_num(self.low)}-{_num(self.high)}) {self.unit}"

    def as_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "median": self.median, "min": self.low, "max": self.high,
                "runs": self.runs}


@dataclass(frozen=True)
class Check:
    """A target of the issue and whether the median met it."""

    text: str
    met: bool


@dataclass
class ScenarioResult:
    number: int
    title: str
    workload: dict[str, Any]
    measures: list[Measure] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, unit: str, runs: list[float]) -> Measure:
        measure = Measure(name, unit, runs)
        self.measures.append(measure)
        return measure

    def check(self, text: str, met: bool) -> None:
        self.checks.append(Check(text, met))

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.number,
            "title": self.title,
            "workload": self.workload,
            "measures": {m.name: m.as_dict() for m in self.measures},
            "targets": [asdict(c) for c in self.checks],
        }


def ratio_runs(numerators: list[float], denominators: list[float]) -> list[float]:
    """Per-run ratios of paired runs (run i of one consumer against run i of the other)."""
    return [n / d for n, d in zip(numerators, denominators, strict=True)]


def _num(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(results: list[ScenarioResult]) -> str:
    """A plain-text table: one line per measure, then the targets of each scenario."""
    rows = [("#", "scenario", "measure", "median (min-max)")]
    for result in results:
        number, title = str(result.number), result.title
        for measure in result.measures:
            rows.append((number, title, measure.name, measure.text()))
            number = title = ""
        for check in result.checks:
            rows.append(("", "", "target: " + check.text, "met" if check.met else "NOT MET"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(c.ljust(w) for c, w in zip(rows[0], widths, strict=True)).rstrip(), rule]
    for row in rows[1:]:
        if row[0] and lines[-1] != rule:
            lines.append("  ".join("-" * w for w in widths))
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    lines.append(rule)
    return "\n".join(lines)


def write_json(path: Path, results: list[ScenarioResult], environment: dict[str, Any]) -> None:
    document = {"environment": environment, "scenarios": [r.as_dict() for r in results]}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
