"""A rolling restart of three service processes under steady journeys (SIGTERM with a drain notice, wait for
exit, start again on the same port, next) loses no journey for a client using the shipped service config."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import redis
from harness import Emulator, Journeys, connections_subset, free_port, start_service_process
from otp_step_client import StepExecutorClient


def test_a_rolling_restart_loses_no_journey(
    connections_file: Path, redis_url: str, emulator: Emulator, keys_file: Path, tmp_path: Path
) -> None:
    env = {
        "OTP_STEP_CHALLENGE_STORE": redis_url,
        "OTP_STEP_CHALLENGE_KEYS_FILE": str(keys_file),
        "OTP_STEP_SELF_TEST": "off",
        "OTP_STEP_DRAIN_NOTICE_SECONDS": "0.5",
        "OTP_STEP_GRACE_SECONDS": "5",
    }
    # The journeys' counters start at zero: two identifiers, taken in turn, stay far under their send budget
    # (1000 a window) however fast the machine runs journeys, and whatever earlier tests sent to them.
    redis.Redis.from_url(redis_url).flushdb()
    ports = [free_port() for _ in range(3)]
    # Only the connection the journeys use: each restart is then a second or two, not twenty on a loaded machine.
    connections_file = connections_subset(connections_file, tmp_path / "connections.toml", ["demo"])
    processes = [
        start_service_process(connections_file, tmp_path / f"s{i}.log", env, listen=f"127.0.0.1:{port}")[0]
        for i, port in enumerate(ports)
    ]
    outcomes: Counter[str] = Counter()
    stop = threading.Event()

    def steady_journeys() -> None:
        target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
        with StepExecutorClient(target, timeout=15) as client:
            journeys = Journeys(client, emulator)
            while not stop.is_set() and sum(outcomes.values()) < 5000:  # bounded
                email = ("ada", "grace")[sum(outcomes.values()) % 2] + "@example.com"
                before = len(emulator.outbox(email))
                sent, journey = journeys.generate(email)
                if sent.WhichOneof("outcome") != "success":
                    outcomes["generate: " + sent.failure.message] += 1
                    continue
                code = emulator.latest_code(email, after=before)
                done = journeys.validate(journey, email, code)
                outcomes[
                    "ok" if done.WhichOneof("outcome") == "success" else "validate: " + done.failure.message
                ] += 1

    driver = threading.Thread(target=steady_journeys)
    driver.start()
    try:
        deadline = time.monotonic() + 10
        while outcomes["ok"] < 3:
            assert time.monotonic() < deadline and driver.is_alive(), outcomes
            time.sleep(0.05)
        for i, port in enumerate(ports):
            processes[i].send_signal(signal.SIGTERM)
            assert processes[i].wait(timeout=20) == 0
            processes[i] = start_service_process(
                connections_file, tmp_path / f"s{i}-again.log", env, listen=f"127.0.0.1:{port}"
            )[0]
            seen = outcomes["ok"]
            deadline = time.monotonic() + 15
            while outcomes["ok"] < seen + 3:  # journeys go on before the next instance restarts
                assert time.monotonic() < deadline and driver.is_alive(), outcomes
                time.sleep(0.05)
    finally:
        stop.set()
        driver.join(30)
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=20)
    assert set(outcomes) == {"ok"}, outcomes
    print(f"\nrolling restart of 3 instances: {outcomes['ok']} journeys, none lost")
