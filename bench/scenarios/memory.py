"""Memory: the service's RSS sampled while it serves sustained load."""

from __future__ import annotations

import contextlib
import threading
import time

from bench.processes import rss_bytes
from bench.scenarios.core import Bench, ScenarioResult
from bench.stack import (
    start_standin,
)


# ---------------------------------------------------------------------------------------------------------
# Memory: RSS of the service over a sustained GenerateOtp load.
def memory(bench: Bench) -> None:
    """Sample the service's RSS every second under sustained load; compare the end with the early value."""
    plan = bench.plan
    standin = start_standin(bench.logs, "standin-memory")
    # Challenges live `memory_challenge_seconds` here, so the challenge store reaches its steady size (up to
    # twice rate x lifetime, with the expiry grace) before the early sample: what grows after that is not the
    # store.
    connections = bench.standin_connection(
        standin,
        name="standin-memory",
        session_validity_seconds=plan.memory_challenge_seconds,
        # Per-identifier send counters live a window; every request here is a new identifier, so the window
        # is shortened like the challenges' lifetime, for the same reason (see the comment above).
        send_window_seconds=max(10, plan.memory_challenge_seconds),
    )
    service = bench.service("service-memory", connections)
    scenario = ScenarioResult(
        "m-memory",
        f"Memory: sustained GenerateOtp for {plan.memory_seconds:g} s (challenges live {plan.memory_challenge_seconds} s)",
        "req/s",
    )
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(OSError):
                samples.append((round(time.monotonic() - started, 2), rss_bytes(service.process.pid)))
            stop.wait(1.0 if not plan.quick else 0.25)

    with bench.running(standin.process, service.process):
        sampler = threading.Thread(target=sample, daemon=True)
        bench.say(f"memory: {plan.memory_seconds:g} s of sustained load")
        sampler.start()
        result = bench.ghz(
            service,
            bench.generate_load(plan.memory_seconds),
            {"service": service.process, "stand-in": standin.process},
        )
        stop.set()
        sampler.join()
    scenario.runs.append(result)
    scenario.step_errors = bench.step_errors(service)
    early = next(
        (rss for t, rss in samples if t >= plan.memory_early_seconds), samples[0][1] if samples else 0
    )
    end = samples[-1][1] if samples else 0
    first_second = next((rss for t, rss in samples if t >= 1.0), early)
    at_lifetime = next((rss for t, rss in samples if t >= plan.memory_challenge_seconds), early)
    created = result.rps * max(plan.memory_challenge_seconds - 1.0, 1.0)
    per_challenge = max(at_lifetime - first_second, 0) / created if created else 0.0
    scenario.extra = {
        "rss_early_bytes": early,
        "rss_end_bytes": end,
        "rss_ratio": end / early if early else 0.0,
        "samples": samples,
        "approx_bytes_per_live_challenge": round(per_challenge),
        "store_at_default_lifetime_bytes": round(per_challenge * result.rps * 360),
    }
    scenario.notes.append(
        "The in-memory challenge store holds one entry per Generate until it expires, then as long again (so "
        "Validate can still say CHALLENGE_EXPIRED): up to 2 x rate x lifetime entries. "
        f"At {result.rps:.0f} req/s and the default 3-minute lifetime that is about "
        f"{result.rps * 360:,.0f} challenges, ~{per_challenge * result.rps * 360 / 2**20:,.0f} MiB "
        f"(~{per_challenge / 1024:,.1f} KiB each, estimated from the first {plan.memory_challenge_seconds} s)."
    )
    bench.results.append(scenario)
