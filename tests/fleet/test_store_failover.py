"""A Redis primary dies (kill -9) under load: behind Sentinel, and in a Cluster. Six threads run journeys
(Generate, a wrong code, the right code) through three service processes, with the shipped client config,
while the primary serving them dies. Every step ends OK or typed and retryable (never INTERNAL, never another
code); every thread succeeds again within 10 s at the test's settings (Sentinel's down-after 1 s, the
cluster's node timeout 1 s), measured from the kill; and a journey begun before the kill keeps its counted
wrong code after it (the store WAITs for the replica before Cognito is asked)."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from harness import Emulator, Journeys, free_port, start_service_process, wrong_code
from otp_step_client import Journey, StepExecutorClient
from otp_step_service.adapters.sealing import SessionSealer
from otp_step_service.app.stores import redis_challenge_store
from otp_step_service.steps.challenges import AttemptRequest, AttemptVerdict, ChallengeKey
from otp_step_service.steps.errors import ChallengeStoreError
from redis_topology import MASTER, Cluster, RedisNode, SentinelSet, _server_args, replicas_online, until
from stepexecutor.v1 import step_executor_pb2 as pb

from .emulated_pool import fleet_connections, new_users
from .step_outcomes import OK, STORE_UNAVAILABLE, step_kind

RECOVERY_SECONDS = 10.0
THREADS = 6
USERS_PER_THREAD = 4
CONNECTION = "fleet"
# What each step of a journey may end with while a primary dies: done, or the typed retryable store failure.
ALLOWED = {
    "generate": {OK, STORE_UNAVAILABLE},
    "wrong": {"FAILURE_CODE_INVALID_CODE", STORE_UNAVAILABLE},
    "right": {OK, STORE_UNAVAILABLE},
}


@dataclass(frozen=True)
class Step:
    """One step a load thread ran."""

    thread: int
    name: str
    kind: str
    started: float
    ended: float


@dataclass
class Load:
    """Threads running journeys, each with its own client (round_robin over the three instances, the shipped
    service config) and users of its own (so the latest code in an outbox is the thread's), taken in turn:
    every journey leaves one wrong code counted, and the lockout allows 100 per address."""

    target: str
    emulator: Emulator
    users: list[list[str]]
    steps: list[Step] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for index, emails in enumerate(self.users):
            thread = threading.Thread(target=self._run, args=(index, emails), name=f"load-{index}")
            thread.start()
            self._threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(30)
        assert not any(t.is_alive() for t in self._threads), "a load thread did not finish"

    def ok_since(self, moment: float, name: str = "") -> Counter[int]:
        """OK steps (named `name`, or any) begun at or after `moment`, per thread."""
        with self._lock:
            return Counter(
                s.thread
                for s in self.steps
                if s.kind == OK and s.started >= moment and (not name or s.name == name)
            )

    def kinds_since(self, moment: float) -> Counter[str]:
        """What the steps begun at or after `moment` ended with."""
        with self._lock:
            return Counter(f"{s.name} {s.kind}" for s in self.steps if s.started >= moment)

    def _record(self, thread: int, name: str, call: Callable[[], object]) -> str:
        started = time.monotonic()
        kind = step_kind(call)  # type: ignore[arg-type]
        with self._lock:
            self.steps.append(Step(thread, name, kind, started, time.monotonic()))
        return kind

    def _run(self, index: int, emails: list[str]) -> None:
        deadline = time.monotonic() + 120  # bounded whatever happens
        with StepExecutorClient(self.target, timeout=10) as client:
            journeys = Journeys(client, self.emulator)
            turn = 0
            while not self.stop.is_set() and time.monotonic() < deadline:
                self._journey(index, journeys, emails[turn % len(emails)])
                turn += 1

    def _journey(self, index: int, journeys: Journeys, email: str) -> None:
        """Generate, a wrong code, the right code; a Generate that fails ends the journey (the next is new)."""
        before = len(self.emulator.outbox(email))
        journey = journeys.journey()
        sent = self._record(
            index, "generate", lambda: journeys.generate(email, connection=CONNECTION, journey=journey)[0]
        )
        if sent != OK:
            return
        code = self.emulator.latest_code(email, after=before)
        self._record(index, "wrong", lambda: _wrong(journeys, journey, email, code))
        self._record(index, "right", lambda: journeys.validate(journey, email, code, connection=CONNECTION))


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[SentinelSet]:
    topology = SentinelSet(tmp_path / "sentinel")
    try:
        yield topology.start()
    finally:
        topology.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    topology = Cluster(tmp_path / "cluster")
    try:
        yield topology.start()
    finally:
        topology.stop()


@dataclass(frozen=True)
class Recovery:
    """Seconds from the kill: to the replica's promotion (as Redis tells it), to the first step that
    succeeded, and to each thread's first success."""

    promoted: float
    first: float
    threads: list[float]

    def __str__(self) -> str:
        return (
            f"promoted {self.promoted:.2f} s, first success {self.first:.2f} s, every thread "
            f"{statistics.median(self.threads):.2f} s p50 / {max(self.threads):.2f} s max ("
            + ", ".join(f"{t:.2f}" for t in sorted(self.threads))
            + ")"
        )


def _fleet(
    url: str, connections: Path, keys_file: Path, folder: Path
) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    env = {
        "OTP_STEP_CHALLENGE_STORE": url,
        "OTP_STEP_CHALLENGE_KEYS_FILE": str(keys_file),
        "OTP_STEP_SELF_TEST": "off",
    }
    with ThreadPoolExecutor(3) as pool:
        started = list(
            pool.map(lambda i: start_service_process(connections, folder / f"service{i}.log", env), range(3))
        )
    return [process for process, _ in started], [port for _, port in started]


def _ride_out_a_failover(
    url: str,
    fail: Callable[[], None],
    promoted: Callable[[], bool],
    emulator: Emulator,
    keys_file: Path,
    folder: Path,
    what: str,
) -> Recovery:
    """Load through three instances while `fail()` takes the primary away; `promoted()` says when Redis has
    finished (a new primary named, or the old one turned into a replica). Runs until every thread has had
    three steps succeed since then."""
    connections = fleet_connections(folder / "connections.toml", emulator, {CONNECTION: {}})
    processes, ports = _fleet(url, connections, keys_file, folder)
    kept_user, *users = new_users(emulator, THREADS * USERS_PER_THREAD + 1)
    users_of = [users[i::THREADS] for i in range(THREADS)]
    load = Load("ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports), emulator, users_of)
    try:
        with StepExecutorClient(f"127.0.0.1:{ports[0]}", timeout=10) as client:
            journeys = Journeys(client, emulator)
            # Begun before: a challenge with one wrong code spent.
            before = len(emulator.outbox(kept_user))
            sent, kept = journeys.generate(kept_user, connection=CONNECTION)
            assert sent.WhichOneof("outcome") == "success", sent
            code = emulator.latest_code(kept_user, after=before)
            assert _wrong(journeys, kept, kept_user, code).failure.attempts_remaining == 2

            load.start()
            warm = time.monotonic()
            # Every user has had a code: its Cognito user is known (an address's first code goes out alone,
            # and one lost in the failover would hold the address for the reservation's life).
            while not _all_ran(load.ok_since(warm, "generate"), USERS_PER_THREAD):
                assert time.monotonic() - warm < 60, load.ok_since(warm, "generate")
                time.sleep(0.05)
            failed = time.monotonic()
            fail()
            promotion: float | None = None
            while promotion is None or not _all_ran(load.ok_since(failed + promotion), 3):
                assert time.monotonic() - failed < 40, (
                    promotion,
                    load.kinds_since(failed + (promotion or 0)),
                )
                if promotion is None and _safely(promoted):
                    promotion = time.monotonic() - failed
                time.sleep(0.05)
            load.finish()

            # After: the wrong code counted before the failover is still counted, and the journey goes on.
            after = _wrong(journeys, kept, kept_user, code)
            assert after.failure.attempts_remaining == 1, after
            right = journeys.validate(kept, kept_user, code, connection=CONNECTION)
            assert right.WhichOneof("outcome") == "success", right
    finally:
        load.finish()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)
    # Never another code: a CHALLENGE_NOT_FOUND here is a Generate that succeeded on writes Redis then lost.
    unexpected = [s for s in load.steps if s.kind not in ALLOWED[s.name]]
    assert not unexpected, unexpected[:5]
    since = [s for s in load.steps if s.started >= failed]
    per_thread = [
        min(s.ended for s in since if s.thread == t and s.kind == OK) - failed for t in range(THREADS)
    ]
    recovery = Recovery(promotion, min(per_thread), per_thread)
    outcomes = Counter(f"{s.name} {s.kind}" for s in since)
    print(f"\n{what}: {recovery}; steps since: {dict(outcomes)}")
    assert max(per_thread) <= RECOVERY_SECONDS, recovery
    return recovery


def _all_ran(ok: Counter[int], steps: int) -> bool:
    return len(ok) == THREADS and min(ok.values()) >= steps


def _safely(condition: Callable[[], bool]) -> bool:
    """`condition()`, False while Redis cannot answer it."""
    try:
        return condition()
    except (redis.RedisError, OSError):
        return False


def _wrong(journeys: Journeys, journey: Journey, email: str, code: str) -> pb.ValidateOtpResponse:
    return journeys.validate(journey, email, wrong_code(code), connection=CONNECTION)


def test_a_sentinel_failover_under_load_is_ridden_out_and_loses_no_counter(
    sentinel: SentinelSet, emulator: Emulator, keys_file: Path, tmp_path: Path
) -> None:
    primary = sentinel.primary()
    _ride_out_a_failover(
        sentinel.url,
        primary.kill,
        lambda: sentinel.primary().port != primary.port,
        emulator,
        keys_file,
        tmp_path,
        f"Sentinel, kill -9 of the primary on {primary.port}",
    )


def test_a_sentinel_switchover_under_load_loses_no_write_the_old_primary_took(
    sentinel: SentinelSet, emulator: Emulator, keys_file: Path, tmp_path: Path
) -> None:
    """SENTINEL FAILOVER (an operator's switchover): the replica is promoted while the old primary lives on,
    accepting writes with no replica, until the sentinels turn it into a replica and it throws them away.
    A WAIT there falls short as when a replica dies; the service asks the sentinels before going on, so no
    step succeeds on writes that are then lost (unset OTP_STEP_STORE_MIN_REPLICAS, as in production)."""
    primary = sentinel.primary()
    _ride_out_a_failover(
        sentinel.url,
        lambda: sentinel.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", MASTER),
        lambda: primary.client().info("replication")["role"] == "slave",
        emulator,
        keys_file,
        tmp_path,
        f"Sentinel, switchover away from {primary.port}",
    )


def test_a_cluster_primary_failover_under_load_is_ridden_out_and_loses_no_counter(
    cluster: Cluster, emulator: Emulator, keys_file: Path, tmp_path: Path
) -> None:
    from otp_step_service.adapters.redis_store import connection_tag

    # The primary serving the connection's slot (every key of a journey on it is there), and its replica.
    primary = cluster.primary_of(connection_tag(CONNECTION))
    replica = cluster.replica_of(primary)
    _ride_out_a_failover(
        cluster.url,
        primary.kill,
        lambda: replica.client().info("replication")["role"] == "master",
        emulator,
        keys_file,
        tmp_path,
        f"Cluster, kill -9 of the primary on {primary.port}",
    )


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[RedisNode, RedisNode]]:
    """A primary and its replica, in sync."""
    primary_port, replica_port = free_port(), free_port()
    primary = RedisNode(primary_port, tmp_path / "primary", _server_args(primary_port)).start()
    replica_args = _server_args(replica_port, "--replicaof", "127.0.0.1", str(primary_port))
    replica = RedisNode(replica_port, tmp_path / "replica", replica_args).start()
    try:
        until(lambda: replicas_online(primary), 10, "replica in sync")
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


def _begin_attempt(node: RedisNode, keys_file: Path, min_replicas: int) -> AttemptVerdict:
    """One begin_attempt (for a challenge nobody made) through a store on `node` alone."""
    store = redis_challenge_store(
        f"redis://127.0.0.1:{node.port}/0", SessionSealer.from_file(keys_file), min_replicas=min_replicas
    )

    async def attempt() -> AttemptVerdict:
        try:
            key = ChallengeKey(CONNECTION, "run", "ada@example.com")
            return (
                await store.begin_attempt(AttemptRequest(key, time.time(), "failures:ada", 10, 900))
            ).verdict
        finally:
            await store.aclose()

    return asyncio.run(attempt())


def test_a_replica_refuses_the_store_scripts_so_a_demoted_primary_cannot_answer_a_step(
    pair: tuple[RedisNode, RedisNode], keys_file: Path
) -> None:
    """A connection left on a primary the sentinels demoted (redis-py does not follow +switch-master) must not
    answer a step from a replica's data, which may not hold the challenge yet: the replica refuses the store's
    scripts (READONLY), the step fails retryably, and redis-py's next connection asks the sentinels."""
    _, replica = pair
    with pytest.raises(ChallengeStoreError, match="ReadOnlyError"):
        _begin_attempt(replica, keys_file, min_replicas=0)


@pytest.mark.parametrize("min_replicas", [0, 1])
def test_a_primary_with_an_empty_script_cache_is_given_the_scripts_again(
    pair: tuple[RedisNode, RedisNode], keys_file: Path, min_replicas: int
) -> None:
    """A restarted or newly promoted primary has no scripts: NOSCRIPT, SCRIPT LOAD, and the step goes on."""
    primary, _ = pair
    assert _begin_attempt(primary, keys_file, min_replicas) is AttemptVerdict.NOT_FOUND
    primary.client().script_flush()
    assert _begin_attempt(primary, keys_file, min_replicas) is AttemptVerdict.NOT_FOUND


@pytest.fixture
def one_node_cluster(tmp_path: Path) -> Iterator[RedisNode]:
    """A Redis Cluster of one primary serving every slot and no replica: nothing can fail it over."""
    # An explicit bus port: the default (port + 10000) is no port at all for a free port above 55535.
    port, bus = free_port(), free_port()
    args = _server_args(
        port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", str(bus)
    )
    node = RedisNode(port, tmp_path / "node", args).start()
    try:
        node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        until(lambda: node.client().cluster("info")["cluster_state"] == "ok", 10, "cluster state ok")
        yield node
    finally:
        node.stop()


def test_a_cluster_primary_back_on_its_port_serves_again_however_many_steps_failed_meanwhile(
    one_node_cluster: RedisNode, keys_file: Path
) -> None:
    """A primary that restarts within the node timeout, a network blip, a cluster without replicas: the
    node comes back where it was. Every step sent to it meanwhile fails retryably, and more of them than the
    store has connections per node must not use those up: once the node answers, steps (scripts and reads)
    succeed again. Before, each refused connect kept its connection, and the node, back, was refused for good
    (MaxConnectionsError) until the service restarted."""
    node = one_node_cluster
    max_connections = 4
    store = redis_challenge_store(
        f"redis+cluster://127.0.0.1:{node.port}",
        SessionSealer.from_file(keys_file),
        max_connections=max_connections,
    )
    key = ChallengeKey(CONNECTION, "run", "ada@example.com")

    async def step(read: bool = False) -> AttemptVerdict:
        if read:
            assert await store.load(key) is None
        return (await store.begin_attempt(AttemptRequest(key, time.time(), "failures:ada", 10, 900))).verdict

    async def scenario() -> tuple[Counter[str], float]:
        try:
            assert await step() is AttemptVerdict.NOT_FOUND
            node.kill()
            failed: Counter[str] = Counter()
            for _ in range(3 * max_connections):
                with pytest.raises(ChallengeStoreError) as refused:
                    await step()
                failed[str(refused.value)] += 1
            node.start()  # the same port and nodes.conf: the same node, its slots kept
            started = time.monotonic()
            refused = ""
            while time.monotonic() - started < RECOVERY_SECONDS:
                try:
                    assert await step(read=True) is AttemptVerdict.NOT_FOUND
                    return failed, time.monotonic() - started
                except ChallengeStoreError as exc:
                    refused = str(exc)
                    await asyncio.sleep(0.05)
            raise AssertionError(f"still refused {RECOVERY_SECONDS} s after the restart: {refused}")
        finally:
            await store.aclose()

    failed, recovered = asyncio.run(scenario())
    print(f"\nwhile the node was down: {dict(failed)}; serving again {recovered:.2f} s after its restart")
    assert set(failed) <= {"ConnectionError", "RedisClusterException", "TimeoutError"}, failed
