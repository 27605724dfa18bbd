"""The bench's PNG chart from a canned results document (no load run): `python -m bench.chart` writes a real
PNG with one bar per scenario, and says which figures it drew.

Run as a process, as `python -m bench` runs: inside the tests, `bench` is this test package."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from matplotlib.image import imread

ROOT = Path(__file__).resolve().parents[2]


def _scenario(key: str, title: str, unit: str, rps: float, p99: float) -> dict[str, Any]:
    # The fields report.to_json writes that the chart reads, and a few it does not, as in a real file.
    return {
        "key": key,
        "title": title,
        "unit": unit,
        "median": {"rps": rps, "p50_ms": p99 / 3, "p95_ms": p99 / 1.5, "p99_ms": p99, "cpu_cores": {}},
        "errors": {},
        "runs": [],
        "notes": [],
        "extra": {},
    }


DOCUMENT = {
    "machine": {"cpus": 2, "cpu_model": "test", "python": "3.11"},
    "plan": {"quick": True, "repetitions": 1, "seconds": 1.0, "concurrency": 50},
    "scenarios": [
        _scenario("1-transport-floor", "Transport floor", "req/s", 1000.0, 4.0),
        _scenario("2-service-cost", "Service cost", "req/s", 250.0, 80.0),
        _scenario("5-journeys", "Journeys end to end", "journeys/s", 31.0, 120.0),
    ],
    "targets": [],
}


def _png_text(path: Path) -> dict[str, str]:
    """The PNG's tEXt chunks (keyword → text), read chunk by chunk from the file."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    texts, offset = {}, 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"tEXt":
            keyword, _, text = body.partition(b"\0")
            texts[keyword.decode("latin-1")] = text.decode("latin-1")
        offset += 12 + length
        if kind == b"IEND":
            break
    return texts


def test_a_valid_png_is_written_beside_the_results_with_every_scenario(tmp_path: Path) -> None:
    results = tmp_path / "20261201-120000" / "results.json"
    results.parent.mkdir()
    results.write_text(json.dumps(DOCUMENT))
    finished = subprocess.run(
        [sys.executable, "-m", "bench.chart", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 0, finished.stderr
    png = results.with_name("summary.png")
    assert finished.stdout.strip() == str(png)

    pixels = imread(png, format="png")  # the whole file decodes, not only its signature
    height, width, _ = pixels.shape
    assert width > 1000 and height > 200
    # Not a blank canvas: bars and labels in more than a few colours.
    assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[2])[::50]}) > 10

    text = _png_text(png)
    assert text["Title"] == "Load test: quick smoke, figures meaningless; 1 s per run, 50 in flight; 2 CPUs"
    assert text["Description"] == (
        "1-transport-floor: 1,000.0 req/s, p99 4.0 ms; 2-service-cost: 250.0 req/s, p99 80.0 ms; "
        "5-journeys: 31.0 journeys/s, p99 120.0 ms"
    )


def test_more_scenarios_make_a_taller_chart(tmp_path: Path) -> None:
    many = {**DOCUMENT, "scenarios": DOCUMENT["scenarios"] * 6}
    sizes = []
    for name, document in (("few", DOCUMENT), ("many", many)):
        results = tmp_path / name / "results.json"
        results.parent.mkdir()
        results.write_text(json.dumps(document))
        subprocess.run([sys.executable, "-m", "bench.chart", str(results)], cwd=ROOT, check=True, timeout=60)
        sizes.append(imread(results.with_name("summary.png"), format="png").shape[0])
    assert sizes[1] > sizes[0] * 2  # every label keeps its row
