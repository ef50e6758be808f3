"""A benchmark's figures, printed as a table and written as `bench/results/<name>.json`."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import stats


@dataclass
class Figure:
    """One measured quantity: the median of `runs`, beside the baseline's median if it has one.

    `met` is None when the figure has no goal of its own.
    """

    name: str
    unit: str
    runs: list[float]
    baseline_runs: list[float] = field(default_factory=list)
    goal: str | None = None
    met: bool | None = None

    @property
    def value(self) -> float | None:
        return stats.median(self.runs)

    @property
    def baseline(self) -> float | None:
        return stats.median(self.baseline_runs)

    @property
    def ratio(self) -> float | None:
        return stats.ratio(self.value, self.baseline)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(value=self.value, baseline=self.baseline, ratio=self.ratio)
        return data


@dataclass
class Report:
    name: str
    title: str
    baseline: str  # what the baseline is, in words ("none" when the issue names none)
    goal: str
    command: str
    mode: str  # "full" or "smoke"
    machine: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Raw per-run measurements and anything else worth keeping (profiles, EXPLAIN plans).
    details: dict[str, Any] = field(default_factory=dict)
    # Further tables printed after the figures (a benchmark's own breakdown).
    appendix: list[str] = field(default_factory=list)
    date: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    duration_s: float | None = None

    def figure(self, name: str) -> Figure:
        return next(f for f in self.figures if f.name == name)

    @property
    def goal_met(self) -> bool | None:
        verdicts = [f.met for f in self.figures if f.met is not None]
        return all(verdicts) if verdicts else None

    @property
    def ratio(self) -> float | None:
        """The headline ratio: the first figure that has a baseline."""
        return next((f.ratio for f in self.figures if f.ratio is not None), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "date": self.date,
            "mode": self.mode,
            "command": self.command,
            "machine": self.machine,
            "baseline": self.baseline,
            "goal": self.goal,
            "goal_met": self.goal_met,
            "ratio": self.ratio,
            "figures": [f.as_json() for f in self.figures],
            "settings": self.settings,
            "notes": self.notes,
            "duration_s": self.duration_s,
            "details": self.details,
        }

    def write(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{self.name}.json"
        path.write_text(json.dumps(self.as_json(), indent=2, default=str) + "\n")
        return path

    def table(self) -> str:
        head = ["figure", "value", "baseline", "ratio", "goal", "met"]
        rows = [head]
        for f in self.figures:
            rows.append(
                [
                    f"{f.name} ({f.unit})",
                    _num(f.value),
                    _num(f.baseline),
                    "" if f.ratio is None else f"{f.ratio:.2f}",
                    f.goal or "",
                    {True: "yes", False: "NO", None: ""}[f.met],
                ]
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [f"== {self.name}: {self.title} [{self.mode}]", f"baseline: {self.baseline}"]
        for i, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        verdict = {True: "met", False: "NOT met", None: "no goal"}[self.goal_met]
        lines.append(f"goal: {self.goal} -> {verdict}")
        lines.extend(f"note: {n}" for n in self.notes)
        lines.extend(self.appendix)
        return "\n".join(lines)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"
