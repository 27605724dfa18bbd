"""What WAIT costs per step, side by side in one run: the challenge store's bookkeeping of one Generate
(begin_send + finish_send) and one Validate (begin_attempt + finish_attempt) against a real primary with one
replica, with OTP_STEP_STORE_MIN_REPLICAS=0 (no WAIT) and =1 (WAIT for the replica after each script that adds
to a security counter).

`python -m bench.store_wait [--steps 2000] [--rounds 3] [--concurrency 8]`. The two stores alternate in rounds on
the same processes, so the machine's noise spreads over both. Per configuration: step latency p50 / p99 (the
store's part of a step, both of its operations), the service process's CPU per step, and redis-server's
(primary + replica) CPU per step, from `INFO cpu`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import redis
from otp_step_service.adapters.redis_store import RedisChallengeStore
from otp_step_service.adapters.sealing import SessionSealer
from otp_step_service.app.stores import redis_challenge_store
from otp_step_service.steps.challenges import (
    AttemptRequest,
    Challenge,
    ChallengeKey,
    Judgement,
    SendRequest,
    SendResult,
)
from otp_step_service.steps.errors import ChallengeStoreError
from otp_step_service.steps.outcomes import Channel

from bench.processes import free_port

FAILURES: dict[int, list[int]] = {}


def _server(port: int, folder: Path, *extra: str) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: `make redis`"
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
            *extra,
        ],
        cwd=folder,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port).ping()
            return process
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)


def _cpu(port: int) -> float:
    info = redis.Redis(port=port).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _one_journey(store: RedisChallengeStore, index: int) -> float:
    """The store's work in one Generate and one (wrong-code) Validate; seconds it took."""
    now = time.time()
    key = ChallengeKey("demo", f"run-{uuid.uuid4().hex}", f"user{index % 500}@example.com")
    challenge = Challenge(
        "u", "s" * 1200, Channel.EMAIL, "u***", now + 300, 3, nonce=uuid.uuid4().hex, sent_at=now
    )
    request = SendRequest(
        key=key,
        placeholder=replace(challenge, pending=True),
        now=now,
        cooldown_seconds=30,
        sends_subject=f"sends:{index % 500}",
        send_limit=1_000_000,
        send_window_seconds=3600,
        lockout_subject=f"failures:{index % 500}",
        lockout_threshold=1_000_000,
    )
    started = time.perf_counter()
    await store.begin_send(request)
    await store.finish_send(request, SendResult.SENT, challenge)
    grant = await store.begin_attempt(AttemptRequest(key, now, request.lockout_subject, 1_000_000, 3600))
    await store.finish_attempt(key, challenge.nonce, Judgement.WRONG, (request.lockout_subject,))
    assert grant.challenge is not None
    return time.perf_counter() - started


async def _drive(store: RedisChallengeStore, steps: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue = iter(range(steps))
    failures = FAILURES.setdefault(id(store), [0])

    async def worker() -> None:
        for index in queue:
            try:
                latencies.append(await _one_journey(store, index))
            except ChallengeStoreError:  # a WAIT that timed out: counted apart, as the step would fail
                failures[0] += 1

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.process_time() - cpu


async def _main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="store-wait-"))
    primary_port, replica_port = free_port(), free_port()
    processes = [_server(primary_port, folder / "primary")]
    processes.append(_server(replica_port, folder / "replica", "--replicaof", "127.0.0.1", str(primary_port)))
    try:
        deadline = time.monotonic() + 10
        while redis.Redis(port=primary_port).info("replication").get("slave0", {}).get("state") != "online":
            assert time.monotonic() < deadline, "the replica did not sync"
            await asyncio.sleep(0.05)
        keys = folder / "challenge.keys"
        keys.write_text(SessionSealer.new_key_line("bench") + "\n")
        keys.chmod(0o600)
        sealer = SessionSealer.from_file(keys)
        url = f"redis://127.0.0.1:{primary_port}/0"
        stores = {
            wait: redis_challenge_store(url, sealer, min_replicas=wait, max_connections=64) for wait in (0, 1)
        }
        for store in stores.values():
            await _drive(store, 50, args.concurrency)  # warm: scripts loaded, connections open
        results: dict[int, tuple[list[float], float, float]] = {0: ([], 0.0, 0.0), 1: ([], 0.0, 0.0)}
        for _ in range(args.rounds):
            for wait, store in stores.items():
                redis_cpu = _cpu(primary_port) + _cpu(replica_port)
                latencies, cpu = await _drive(store, args.steps, args.concurrency)
                redis_cpu = _cpu(primary_port) + _cpu(replica_port) - redis_cpu
                seen, own, theirs = results[wait]
                results[wait] = (seen + latencies, own + cpu, theirs + redis_cpu)
        print(
            f"{'MIN_REPLICAS':>12} {'journeys':>8} {'p50 ms':>8} {'p99 ms':>8} {'service CPU ms':>15} {'redis CPU ms':>13}"
        )
        for wait, (latencies, own, theirs) in results.items():
            count = len(latencies)
            cuts = statistics.quantiles(latencies, n=100)
            print(
                f"{FAILURES.get(id(stores[wait]), [0])[0]:>6} {wait:>12} {count:>8} {cuts[49] * 1000:>8.2f} {cuts[98] * 1000:>8.2f} "
                f"{own / count * 1000:>15.3f} {theirs / count * 1000:>13.3f}"
            )
        print("per journey: one Generate's and one Validate's store operations (4 scripts, 3 of them WAITed)")
        for store in stores.values():
            await store.aclose()
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store_wait", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="journeys per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
