"""Metrics overhead: the same load with metrics off and on (scraped), side by side."""

from __future__ import annotations

import http.client
import threading
import urllib.request

from bench.processes import free_port
from bench.scenarios.core import SIDE_BY_SIDE_PAIRS, SIDE_BY_SIDE_WINDOWS, Bench, ScenarioResult
from bench.stack import (
    start_standin,
)


def metrics_overhead(bench: Bench) -> None:
    """Throughput with metrics off and on (OTP_STEP_METRICS_LISTEN, scraped every second as Prometheus
    would), same load, interleaved, the services on a core of their own; then both judged side by side, on
    fresh process pairs as the tracing group is: saturated (steps per CPU second) and at a fixed rate below
    saturation (CPU per step)."""
    with bench.pinned():
        _metrics_overhead(bench)


def _metrics_overhead(bench: Bench) -> None:
    plan = bench.plan
    repetitions = plan.repetitions if plan.quick else max(plan.repetitions, 5)
    standin = start_standin(bench.logs, "standin-metrics", cpus=bench.load_cpus)
    connections = bench.standin_connection(standin, name="standin-metrics")
    # One scrape address for every metrics-on service: they run one at a time, each started after the last
    # one stopped, and the scraper follows whichever is listening.
    scrape = f"127.0.0.1:{free_port()}"
    on_env = {"OTP_STEP_METRICS_LISTEN": scrape}
    off_result = ScenarioResult("x-metrics-off", "Service cost, metrics off", "req/s")
    on_result = ScenarioResult("x-metrics-on", "Service cost, metrics on (scraped every second)", "req/s")
    scraping = threading.Event()
    scrapes: list[int] = []

    def scraper() -> None:
        while not scraping.wait(1.0):
            try:
                with urllib.request.urlopen(f"http://{scrape}/metrics", timeout=2) as answer:
                    scrapes.append(len(answer.read()))
            except (OSError, http.client.HTTPException):
                # Between two services nothing listens, and a stopping one may cut its answer short.
                scrapes.append(-1)

    thread = threading.Thread(target=scraper, name="metrics-scraper", daemon=True)
    thread.start()
    try:
        with bench.running(standin.process):
            off = bench.service("service-metrics-off", connections)
            on = bench.service("service-metrics-on", connections, env=on_env)
            pairs = ((off, off_result), (on, on_result))
            with bench.running(*(service.process for service, _ in pairs)):
                for service, _ in pairs:
                    bench.ghz(service, bench.generate_load(plan.warmup_seconds), {"service": service.process})
                for rep in range(repetitions):
                    bench.say(f"metrics: repetition {rep + 1}/{repetitions}")
                    for service, scenario in pairs:
                        watched = {"service": service.process, "stand-in": standin.process}
                        scenario.runs.append(bench.ghz(service, bench.generate_load(plan.seconds), watched))
            for service, scenario in pairs:
                bench.add_step_errors(service, scenario)
            bench.side_by_side_pairs(
                "metrics",
                connections,
                ({}, off_result),
                [("on", on_env, on_result)],
                pairs=1 if plan.quick else SIDE_BY_SIDE_PAIRS,
                windows=1 if plan.quick else SIDE_BY_SIDE_WINDOWS,
            )
    finally:
        scraping.set()
        thread.join(timeout=5)
    on_result.extra.pop("pair_spans", None)  # no tracing here
    on_result.extra["scrapes"] = sum(1 for size in scrapes if size >= 0)
    on_result.extra["failed_scrapes"] = scrapes.count(-1)  # mostly while no metrics-on service ran
    on_result.extra["scrape_bytes"] = max(scrapes, default=0)
    bench.results += [off_result, on_result]
