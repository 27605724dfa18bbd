"""Metrics overhead: the same load with metrics off and on (scraped), side by side."""

from __future__ import annotations

import threading
import urllib.request

from bench.processes import free_port
from bench.scenarios.core import Bench, ScenarioResult
from bench.stack import (
    start_standin,
)


def metrics_overhead(bench: Bench) -> None:
    """Throughput with metrics off and on (OTP_STEP_METRICS_LISTEN, scraped every second as Prometheus
    would), same load, interleaved and side by side, the services on a core of their own; and CPU per step at
    a fixed rate below saturation, side by side."""
    with bench.pinned():
        _metrics_overhead(bench)


def _metrics_overhead(bench: Bench) -> None:
    plan = bench.plan
    repetitions = plan.repetitions if plan.quick else max(plan.repetitions, 5)
    standin = start_standin(bench.logs, "standin-metrics", cpus=bench.load_cpus)
    connections = bench.standin_connection(standin, name="standin-metrics")
    scrape = f"127.0.0.1:{free_port()}"
    off = bench.service("service-metrics-off", connections)
    on = bench.service("service-metrics-on", connections, env={"OTP_STEP_METRICS_LISTEN": scrape})
    off_result = ScenarioResult("x-metrics-off", "Service cost, metrics off", "req/s")
    on_result = ScenarioResult("x-metrics-on", "Service cost, metrics on (scraped every second)", "req/s")
    pairs = ((off, off_result), (on, on_result))
    scraping = threading.Event()
    scrapes: list[int] = []

    def scraper() -> None:
        while not scraping.wait(1.0):
            try:
                with urllib.request.urlopen(f"http://{scrape}/metrics", timeout=2) as answer:
                    scrapes.append(len(answer.read()))
            except OSError:
                scrapes.append(-1)

    thread = threading.Thread(target=scraper, name="metrics-scraper", daemon=True)
    with bench.running(standin.process, *(service.process for service, _ in pairs)):
        thread.start()
        try:
            for service, _ in pairs:
                bench.ghz(service, bench.generate_load(plan.warmup_seconds), {"service": service.process})
            for rep in range(repetitions):
                bench.say(f"metrics: repetition {rep + 1}/{repetitions}")
                for service, scenario in pairs:
                    watched = {"service": service.process, "stand-in": standin.process}
                    scenario.runs.append(bench.ghz(service, bench.generate_load(plan.seconds), watched))
            bench.throughput_side_by_side("metrics", pairs, repetitions)
            bench.cpu_per_step_at_fixed_rate("metrics", pairs, repetitions)
        finally:
            scraping.set()
            thread.join(timeout=5)
    on_result.extra["scrapes"] = len(scrapes)
    on_result.extra["failed_scrapes"] = sum(1 for size in scrapes if size < 0)
    on_result.extra["scrape_bytes"] = max(scrapes, default=0)
    for service, scenario in pairs:
        scenario.step_errors = bench.step_errors(service)
    bench.results += [result for _, result in pairs]
