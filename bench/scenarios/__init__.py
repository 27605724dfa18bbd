"""The scenarios, one module a group. Each starts what it needs, runs interleaved repetitions, and records CPU
per process; `core` holds the plan, the results and the `Bench` they share."""

from bench.scenarios.core import LITTLE_DELAY_MS, Bench, Plan, ScenarioResult, machine
from bench.scenarios.floors import floors_and_service_cost
from bench.scenarios.journeys import journeys
from bench.scenarios.latency import latency_hiding
from bench.scenarios.memory import memory
from bench.scenarios.metrics import metrics_overhead
from bench.scenarios.scaling import scaling
from bench.scenarios.store_wait import store_wait
from bench.scenarios.tracing import tracing_overhead

__all__ = [
    "LITTLE_DELAY_MS",
    "Bench",
    "Plan",
    "ScenarioResult",
    "floors_and_service_cost",
    "journeys",
    "latency_hiding",
    "machine",
    "memory",
    "metrics_overhead",
    "scaling",
    "store_wait",
    "tracing_overhead",
]
