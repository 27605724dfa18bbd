"""The PNG chart beside the Markdown summary: throughput and p99 per scenario, for people to look at.

Drawn from the results document (`results.json`'s `scenarios`, what `report.to_json` writes), so an earlier
run's chart can be drawn again from its folder:

    python -m bench.chart bench-results/latest/results.json            # writes summary.png beside it

Two panels side by side, one bar per scenario in the summary's order: throughput (each bar labelled with its
value and unit, since journeys/s and req/s share the axis) and p99 latency in milliseconds. The PNG's
Description carries the same figures as text, for readers who cannot see the image.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# The Figure itself, not pyplot: no global figure registry, no backend or display to choose (the bench runs
# on servers and in CI); savefig renders a PNG through Agg by itself.
from matplotlib.figure import Figure

from bench.report import CHART_NAME, chart_subtitle

__all__ = ["CHART_NAME", "describe", "draw", "write_chart"]


def _label(scenario: Mapping[str, Any]) -> str:
    return f"{scenario['key']} {scenario['title']}"


def describe(scenarios: Sequence[Mapping[str, Any]]) -> str:
    """The chart's figures as text: one `key: throughput unit, p99 ms` per scenario."""
    return "; ".join(
        f"{s['key']}: {s['median']['rps']:,.1f} {s['unit']}, p99 {s['median']['p99_ms']:,.1f} ms"
        for s in scenarios
    )


def draw(scenarios: Sequence[Mapping[str, Any]], subtitle: str = "") -> Figure:
    """The chart as a matplotlib Figure: left throughput, right p99, one bar per scenario."""
    throughput = [float(s["median"]["rps"]) for s in scenarios]
    p99 = [float(s["median"]["p99_ms"]) for s in scenarios]
    rows = list(range(len(scenarios)))
    # Tall enough for every label, whatever the number of scenarios (a quick run has all of them too).
    figure = Figure(figsize=(14, 1.2 + 0.38 * max(len(scenarios), 1)), layout="constrained")
    left, right = figure.subplots(1, 2, sharey=True)
    left.barh(rows, throughput, color="#4878a8")
    left.set_title("Throughput (median of the runs)")
    left.set_xlabel("per second")
    for row, value, scenario in zip(rows, throughput, scenarios, strict=True):
        left.annotate(
            f" {value:,.0f} {scenario['unit']}", (value, row), va="center", fontsize=8, annotation_clip=False
        )
    right.barh(rows, p99, color="#c8743c")
    right.set_title("p99 latency (median of the runs)")
    right.set_xlabel("ms")
    for row, value in zip(rows, p99, strict=True):
        right.annotate(f" {value:,.1f}", (value, row), va="center", fontsize=8, annotation_clip=False)
    left.set_yticks(rows, [_label(s) for s in scenarios], fontsize=8)
    left.invert_yaxis()  # the summary's first scenario on top, as in the table
    for axes in (left, right):
        axes.margins(x=0.25)  # room for the value labels
        axes.grid(axis="x", alpha=0.3)
    figure.suptitle("Load test" + (f": {subtitle}" if subtitle else ""))
    return figure


def write_chart(scenarios: Sequence[Mapping[str, Any]], path: Path, subtitle: str = "") -> Path:
    """Draw throughput and p99 per scenario into the PNG `path` (its Description: `describe`); returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "Title": "Load test" + (f": {subtitle}" if subtitle else ""),
        "Description": describe(scenarios),
    }
    draw(scenarios, subtitle).savefig(path, format="png", dpi=110, metadata=metadata)
    return path


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.chart RESULTS_JSON [PNG]`: draw a results document's chart."""
    parser = argparse.ArgumentParser(prog="python -m bench.chart", description=main.__doc__)
    parser.add_argument("results", type=Path, help="a results.json written by `python -m bench`")
    parser.add_argument("png", type=Path, nargs="?", help=f"where to write it (default: {CHART_NAME} beside)")
    args = parser.parse_args(argv)
    document = json.loads(args.results.read_text())
    subtitle = chart_subtitle(document.get("plan", {}), document.get("machine", {}))
    path = write_chart(document["scenarios"], args.png or args.results.with_name(CHART_NAME), subtitle)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
