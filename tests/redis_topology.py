"""Real Redis topologies for tests: Debian's redis-server as a primary with a replica and three sentinels, and as
a 6-node cluster (three primaries, three replicas). Every process is started on free loopback ports, stopped by
its pid, and waited for with a deadline (never a bare sleep).

With `tls` (a `Tls`, certificates from a throw-away CA) every node speaks TLS only (no plaintext port),
requires a client certificate, and replicates, gossips and is watched over TLS too; `add_service_user` puts the
documented least-privilege user (deploy/redis/otp-steps.acl) on every data node (ACLs are not replicated)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from harness import free_port, kill_process, stop_process

MASTER = "otp"
ACL_FILE = Path(__file__).resolve().parents[1] / "deploy" / "redis" / "otp-steps.acl"
SERVICE_USER = "otp-steps"


def acl_rules() -> list[str]:
    """The rules of the documented service user, as ACL SETUSER takes them."""
    line = next(x for x in ACL_FILE.read_text().splitlines() if x.startswith(f"user {SERVICE_USER} "))
    return line.split()[2:]


@dataclass(frozen=True)
class Tls:
    """TLS for a topology: one CA, a server certificate every node serves (127.0.0.1 and localhost), and a
    client certificate that the nodes present to each other (replication, the cluster bus, sentinels) and a
    test may give the service."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    client_cert_file: Path
    client_key_file: Path

    @classmethod
    def issue(cls, folder: Path) -> Tls:
        """A fresh CA and its certificates, written to `folder`."""
        from otp_step_demo.local_ca import LocalCa

        ca = LocalCa("redis test CA")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ca.crt").write_bytes(ca.pem)
        cert, key = ca.server().write(folder, "server")
        client_cert, client_key = ca.issue("otp-step-service", client=True).write(folder, "client")
        return cls(folder / "ca.crt", cert, key, client_cert, client_key)

    def options(self, port: int) -> list[tuple[str, str]]:
        """redis-server (and sentinel) settings: TLS only on `port`, client certificates required, and TLS
        for what a node opens itself (replication, the sentinels' links)."""
        return [
            ("port", "0"),
            ("tls-port", str(port)),
            ("tls-cert-file", str(self.cert_file)),
            ("tls-key-file", str(self.key_file)),
            ("tls-client-cert-file", str(self.client_cert_file)),
            ("tls-client-key-file", str(self.client_key_file)),
            ("tls-ca-cert-file", str(self.ca_file)),
            ("tls-auth-clients", "yes"),
            ("tls-replication", "yes"),
        ]

    def server_args(self, port: int) -> list[str]:
        """`options` as redis-server's command-line arguments."""
        return [arg for name, value in self.options(port) for arg in (f"--{name}", value)]

    def client_options(self) -> dict[str, object]:
        """redis-py's options for a client of these nodes."""
        return {
            "ssl": True,
            "ssl_ca_certs": str(self.ca_file),
            "ssl_certfile": str(self.client_cert_file),
            "ssl_keyfile": str(self.client_key_file),
        }

    def cli_args(self) -> list[str]:
        """redis-cli's options for the same."""
        return [
            *("--tls", "--cacert", str(self.ca_file)),
            *("--cert", str(self.client_cert_file), "--key", str(self.client_key_file)),
        ]


def _binary(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: run `make tools` (apt-get install redis-server)"
    return found


def until(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Poll `condition` until true; the seconds it took. Fails the test after `seconds`."""
    start = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - start
        except (redis.RedisError, OSError):
            pass
        assert time.monotonic() - start < seconds, f"{what}: not within {seconds} s"
        time.sleep(0.05)


@dataclass
class RedisNode:
    """One redis-server (or sentinel) process."""

    port: int
    folder: Path
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    password: str | None = None
    tls: Tls | None = None

    def start(self) -> RedisNode:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [_binary("redis-server"), *self.args],
            cwd=self.folder,
            stdout=(self.folder / "log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        until(self._answers, 10, f"redis on {self.port}")
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.folder / "log").read_text(errors="replace").strip().splitlines()[-5:]
            raise AssertionError(
                f"redis on {self.port} exited ({self.process.returncode}): " + " | ".join(log)
            )
        return bool(self.client().ping())

    def client(self) -> redis.Redis:
        tls = self.tls.client_options() if self.tls else {}
        return redis.Redis(
            port=self.port, password=self.password, socket_timeout=1, socket_connect_timeout=1, **tls
        )

    def add_service_user(self, password: str) -> None:
        """The documented least-privilege user, with `password`."""
        admin = self.client()
        admin.acl_setuser(SERVICE_USER, reset=True)
        admin.execute_command("ACL", "SETUSER", SERVICE_USER, *acl_rules(), f">{password}")

    def kill(self) -> None:
        """kill -9: no shutdown, no save, connections reset."""
        kill_process(self.process)

    def stop(self) -> None:
        stop_process(self.process, timeout=10)


def _server_args(port: int, *extra: str, tls: Tls | None = None) -> list[str]:
    # No 5 s pause before a replica's first sync (repl-diskless-sync-delay's default).
    listen = tls.server_args(port) if tls else ["--port", str(port)]
    base = [*listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return [*base, "--repl-diskless-sync-delay", "0", *extra]


def replicas_online(node: RedisNode, count: int = 1) -> bool:
    """Whether `node` has `count` replicas that finished their sync."""
    info = node.client().info("replication")
    online = [info[f"slave{i}"] for i in range(int(info["connected_slaves"]))]
    return sum(1 for r in online if r.get("state") == "online") >= count


@dataclass
class SentinelSet:
    """A primary, one replica and three sentinels watching them (quorum 2, 1 s down-after)."""

    folder: Path
    password: str | None = None
    tls: Tls | None = None
    servers: list[RedisNode] = field(default_factory=list)
    sentinels: list[RedisNode] = field(default_factory=list)

    def start(self) -> SentinelSet:
        auth = ["--requirepass", self.password, "--masterauth", self.password] if self.password else []
        tls = self.tls
        primary = RedisNode(
            p := free_port(),
            self.folder / "primary",
            _server_args(p, *auth, tls=tls),
            password=self.password,
            tls=tls,
        )
        replica_port = free_port()
        replica = RedisNode(
            replica_port,
            self.folder / "replica",
            _server_args(replica_port, "--replicaof", "127.0.0.1", str(p), *auth, tls=tls),
            password=self.password,
            tls=tls,
        )
        self.servers = [primary.start(), replica.start()]
        until(lambda: replicas_online(primary), 10, "replica in sync")
        for index in range(3):
            port = free_port()
            folder = self.folder / f"sentinel{index}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"
            listen = [f"{name} {value}" for name, value in tls.options(port)] if tls else [f"port {port}"]
            lines = [
                *listen,
                "bind 127.0.0.1",
                f"sentinel monitor {MASTER} 127.0.0.1 {p} 2",
                f"sentinel down-after-milliseconds {MASTER} 1000",
                f"sentinel failover-timeout {MASTER} 5000",
                f"sentinel parallel-syncs {MASTER} 1",
            ]
            if self.password:
                lines.append(f"sentinel auth-pass {MASTER} {self.password}")
            conf.write_text("\n".join(lines) + "\n")
            node = RedisNode(port, folder, [str(conf), "--sentinel"], tls=tls)
            self.sentinels.append(node.start())
        until(
            lambda: all(
                int(s.client().sentinel_master(MASTER)["num-other-sentinels"]) == 2
                and int(s.client().sentinel_master(MASTER)["num-slaves"]) == 1
                for s in self.sentinels
            ),
            15,
            "sentinels see each other and the replica",
        )
        return self

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}+sentinel://{auth}{hosts}/{MASTER}"

    def primary(self) -> RedisNode:
        """The server the sentinels name as primary now."""
        _, port = self.sentinels[0].client().sentinel_get_master_addr_by_name(MASTER)
        return next(s for s in self.servers if s.port == int(port))

    def flush(self) -> None:
        self.primary().client().flushall()

    def add_service_user(self, password: str) -> None:
        """The documented user on both servers (ACLs are not replicated)."""
        for node in self.servers:
            node.add_service_user(password)

    def stop(self) -> None:
        for node in [*self.sentinels, *self.servers]:
            node.stop()


@dataclass
class Cluster:
    """A 6-node Redis Cluster: three primaries, one replica each (1 s node timeout)."""

    folder: Path
    tls: Tls | None = None
    nodes: list[RedisNode] = field(default_factory=list)

    def start(self) -> Cluster:
        tls = self.tls
        for index in range(6):
            port, bus = free_port(), free_port()
            # With TLS the cluster bus is TLS too, and the nodes announce their TLS port to clients.
            bus_tls = ["--tls-cluster", "yes"] if tls else []
            args = _server_args(
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--cluster-port",
                str(bus),
                *bus_tls,
                tls=tls,
            )
            self.nodes.append(RedisNode(port, self.folder / f"node{index}", args, tls=tls).start())
        subprocess.run(
            [
                _binary("redis-cli"),
                *(tls.cli_args() if tls else []),
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        until(
            lambda: all(n.client().cluster("info")["cluster_state"] == "ok" for n in self.nodes),
            20,
            "cluster state ok",
        )
        until(lambda: len(self.primaries()) == 3 and self._replicas_synced(), 20, "replicas in sync")
        return self

    def _replicas_synced(self) -> bool:
        return all(replicas_online(n) for n in self.primaries())

    def primaries(self) -> list[RedisNode]:
        alive = [n for n in self.nodes if n.process is not None and n.process.poll() is None]
        return [n for n in alive if n.client().info("replication")["role"] == "master"]

    def primary_of(self, key: str) -> RedisNode:
        slot = int(self.primaries()[0].client().cluster("keyslot", key))
        for node in self.primaries():
            for entry in node.client().cluster("slots"):
                if entry[0] <= slot <= entry[1] and int(entry[2][1]) == node.port:
                    return node
        raise AssertionError(f"no primary serves slot {slot}")

    def replica_of(self, primary: RedisNode) -> RedisNode:
        """The replica of `primary`."""
        for node in self.nodes:
            info = node.client().info("replication")
            if info["role"] == "slave" and int(info["master_port"]) == primary.port:
                return node
        raise AssertionError(f"no replica of {primary.port}")

    @property
    def url(self) -> str:
        scheme = "rediss+cluster" if self.tls else "redis+cluster"
        return f"{scheme}://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def flush(self) -> None:
        for node in self.primaries():
            node.client().flushall()

    def add_service_user(self, password: str) -> None:
        """The documented user on every node (a replica promoted later must know it too)."""
        for node in self.nodes:
            node.add_service_user(password)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
