"""The service works as the documented least-privilege Redis user, its password from a file that may rotate;
and what one journey costs the Redis primary, measured with INFO commandstats."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from harness import Emulator, Journeys, build_service, free_port, wrong_code
from otp_step_client import StepExecutorClient
from redis_topology import SERVICE_USER as USER
from redis_topology import RedisNode, _server_args


@pytest.fixture
def locked_down(tmp_path: Path) -> Iterator[RedisNode]:
    """A fresh redis-server whose only non-admin user is the documented one."""
    port = free_port()
    node = RedisNode(port, tmp_path / "redis", _server_args(port)).start()
    try:
        yield node
    finally:
        node.stop()


class Watcher(threading.Thread):
    """MONITOR in a thread: every command the primary runs, until stopped."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(daemon=True)
        self._client = client
        self._stopping = threading.Event()
        self.seen: list[dict[str, Any]] = []
        self._ready = threading.Event()

    def run(self) -> None:
        with self._client.monitor() as monitor:
            self._ready.set()
            while not self._stopping.is_set():
                self.seen.append(monitor.next_command())

    def start(self) -> None:
        super().start()
        assert self._ready.wait(5)

    def stop(self) -> list[dict[str, Any]]:
        """The commands seen, less the ones stopping it sent."""
        self._stopping.set()
        self._client.ping()  # wakes the monitor
        self.join(5)
        return [c for c in self.seen if c["command"] not in ("PING", "INFO commandstats", "INFO stats")]


def _journey(journeys: Journeys, emulator: Emulator, identifier: str = "ada@example.com") -> None:
    before = len(emulator.outbox(identifier))
    sent, journey = journeys.generate(identifier)
    assert sent.WhichOneof("outcome") == "success", sent
    code = emulator.latest_code(identifier, after=before)
    assert journeys.validate(journey, identifier, code).WhichOneof("outcome") == "success"


def test_the_service_runs_as_the_least_privilege_user_and_follows_a_rotated_password(
    locked_down: RedisNode, connections_file: Path, emulator: Emulator, keys_file: Path, tmp_path: Path
) -> None:
    admin = locked_down.client()
    locked_down.add_service_user("first-secret")
    password = tmp_path / "redis.password"
    password.write_text("first-secret\n")
    service = build_service(
        connections_file,
        challenge_store=f"redis://{USER}@127.0.0.1:{locked_down.port}/0",
        challenge_store_password_file=str(password),
        challenge_keys_file=str(keys_file),
    )
    service.start()
    try:
        with StepExecutorClient(f"127.0.0.1:{service.port}", timeout=10) as client:
            journeys = Journeys(client, emulator)
            _journey(journeys, emulator)
            # Only the prefix: the user can neither read other keys nor run anything beyond its list.
            as_service = redis.Redis(port=locked_down.port, username=USER, password="first-secret")
            with pytest.raises(redis.exceptions.NoPermissionError):
                as_service.get("someone-else:key")
            with pytest.raises(redis.exceptions.NoPermissionError):
                as_service.keys("*")
            with pytest.raises(redis.exceptions.NoPermissionError):
                as_service.flushall()
            # Rotation: the new password in Redis and in the file, every open connection cut.
            admin.execute_command("ACL", "SETUSER", USER, "resetpass", ">second-secret")
            password.write_text("second-secret\n")
            admin.client_kill_filter(user=USER)
            _journey(journeys, emulator)
    finally:
        service.stop()


def _full_journey(journeys: Journeys, emulator: Emulator, email: str) -> None:
    before = len(emulator.outbox(email))
    sent, journey = journeys.generate(email)
    assert sent.WhichOneof("outcome") == "success", sent
    code = emulator.latest_code(email, after=before)
    assert journeys.validate(journey, email, wrong_code(code))
    assert journeys.validate(journey, email, code).WhichOneof("outcome") == "success"


def test_one_journey_costs_the_primary_a_handful_of_commands(
    locked_down: RedisNode, connections_file: Path, emulator: Emulator, keys_file: Path
) -> None:
    """Generate, one wrong code, the right code: the commands and bytes one primary carries (printed with -s)."""
    service = build_service(
        connections_file,
        challenge_store=f"redis://127.0.0.1:{locked_down.port}/0",
        challenge_keys_file=str(keys_file),
    )
    service.start()
    admin = locked_down.client()
    users = ["ada", "grace"]
    runs = 2 * len(users)  # four wrong codes per identifier, each journey ending in a success: no lockout
    try:
        with StepExecutorClient(f"127.0.0.1:{service.port}", timeout=10) as client:
            journeys = Journeys(client, emulator)
            _journey(journeys, emulator)  # warm: scripts loaded, connections open
            admin.config_resetstat()
            for index in range(runs):
                _full_journey(journeys, emulator, f"{users[index % len(users)]}@example.com")
            stats = admin.info("commandstats")
            traffic = admin.info("stats")  # before MONITOR, whose output would count
            watcher = Watcher(locked_down.client())
            watcher.start()
            for index in range(runs):
                _full_journey(journeys, emulator, f"{users[index % len(users)]}@example.com")
            sent = watcher.stop()
    finally:
        service.stop()
    calls = {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name not in ("cmdstat_config|resetstat", "cmdstat_info")
    }
    # commandstats counts the commands scripts call too; MONITOR tells the ones on the wire apart.
    wire = sum(1 for c in sent if c["client_type"] != "lua") / runs
    executed = sum(calls.values()) / runs
    bytes_in = int(traffic["total_net_input_bytes"]) / runs
    bytes_out = int(traffic["total_net_output_bytes"]) / runs
    print(
        f"\nper journey: {wire:.1f} commands sent ({calls.get('evalsha', 0) / runs:.1f} EVALSHA), "
        f"{executed:.1f} executed counting the scripts' own, {bytes_in:.0f} B in, {bytes_out:.0f} B out; {calls}"
    )
    # Generate: the alias read, begin_send, finish_send; each Validate: begin_attempt (run again naming the
    # user's counter when the challenge has one) and finish_attempt.
    assert wire <= 9, calls
    assert bytes_in < 20_000 and bytes_out < 20_000
