"""Three instances behind one client using the shipped service config: calls spread over all of them, a
journey begun on one goes on on another, and the server's maximum connection age recycles connections under
steady traffic without failing a call."""

from __future__ import annotations

import time
from pathlib import Path

from harness import Emulator, Journeys, build_service
from otp_step_client import StepExecutorClient


def test_journeys_spread_over_three_instances_and_survive_connection_recycling(
    connections_file: Path, redis_url: str, emulator: Emulator, keys_file: Path
) -> None:
    services = [
        build_service(
            connections_file,
            challenge_store=redis_url,
            challenge_keys_file=str(keys_file),
            max_connection_age_seconds="1",
            max_connection_age_grace_seconds="1",
        )
        for _ in range(3)
    ]
    for service in services:
        service.start()
    try:
        target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in services)
        with StepExecutorClient(target, timeout=10) as client:
            journeys = Journeys(client, emulator)
            started = time.monotonic()
            done = 0
            # Past two connection ages: every connection is recycled at least once while journeys run.
            while done < 9 or time.monotonic() - started < 2.5:
                assert done < 200, "bounded"
                email = ("ada", "grace")[done % 2] + "@example.com"
                before = len(emulator.outbox(email))
                sent, journey = journeys.generate(email)
                assert sent.WhichOneof("outcome") == "success", sent
                code = emulator.latest_code(email, after=before)
                assert journeys.validate(journey, email, code).WhichOneof("outcome") == "success"
                done += 1
        generated = [len(s.store.sessions) for s in services]
        assert all(generated), f"round_robin reached every instance: {generated}"
    finally:
        for service in services:
            service.stop()
