"""Throughput of the emulator against a stock moto server, side by side in one run (loopback only).

    python -m cognito_emulator.bench            # ~40 s: 8 boto3 threads, 4 s per measurement
    python -m cognito_emulator.bench --quick    # smoke run, a few seconds, figures meaningless

Both servers run as separate processes (``python -m moto.server`` and ``python -m cognito_emulator``),
get the same pool, app client and users, and are measured one after the other with the same client:

- ``same-call``: InitiateAuth USER_PASSWORD_AUTH with a wrong password. Identical moto code answers it
  on both servers (NotAuthorizedException), so this isolates the serving stack.
- ``user-auth``: InitiateAuth USER_AUTH with PREFERRED_CHALLENGE=EMAIL_OTP. The emulator sends a code
  and opens a session; stock moto answers the same request with InvalidParameterException (it has no
  USER_AUTH), the closest it can do.
- ``sign-in`` (emulator only): USER_AUTH + RespondToAuthChallenge with the code from the outbox, tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError

from .seed import cognito_client

REGION = "us-east-1"
PASSWORD = "Bench-Passw0rd!"


@dataclass
class Measurement:
    """Calls completed by all threads in a timed window."""

    server: str
    workload: str
    calls: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Calls per second."""
        return self.calls / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        """One human-readable result line."""
        lat = sorted(self.latencies_ms) or [0.0]
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return (
            f"{self.server:<9} {self.workload:<10} {self.rate:8.1f} calls/s  "
            f"p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  ({self.calls} calls, {self.errors} unexpected)"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, process: subprocess.Popen[bytes], deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback URL we built
                return
        except OSError:
            time.sleep(0.05)  # polling a server that is starting, with a deadline
    raise TimeoutError(f"{url} did not come up within {deadline_s}s")


@contextlib.contextmanager
def _server_process(kind: str) -> Iterator[str]:
    port = _free_port()
    env = dict(os.environ)
    if kind == "moto":
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        probe = f"http://127.0.0.1:{port}/moto-api/"
    else:
        # Works whether or not the package is installed: put its parent directory on the path.
        package_parent = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
        cmd = [sys.executable, "-m", "cognito_emulator", "--host", "127.0.0.1", "--port", str(port)]
        probe = f"http://127.0.0.1:{port}/_health"
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_up(probe, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _client(endpoint_url: str, threads: int) -> Any:
    config = Config(retries={"total_max_attempts": 1}, max_pool_connections=threads * 2)
    return cognito_client(endpoint_url, REGION, config)


def _seed(endpoint_url: str, users: int) -> tuple[str, str]:
    client = _client(endpoint_url, 1)
    pool_id = client.create_user_pool(
        PoolName="bench",
        Policies={"SignInPolicy": {"AllowedFirstAuthFactors": ["PASSWORD", "EMAIL_OTP", "SMS_OTP"]}},
    )["UserPool"]["Id"]
    client_id = client.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName="bench",
        ExplicitAuthFlows=["ALLOW_USER_AUTH", "ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]
    for i in range(users):
        name = f"user{i:05d}"
        client.admin_create_user(
            UserPoolId=pool_id,
            Username=name,
            MessageAction="SUPPRESS",
            UserAttributes=[{"Name": "email", "Value": f"{name}@example.com"}],
        )
        client.admin_set_user_password(UserPoolId=pool_id, Username=name, Password=PASSWORD, Permanent=True)
    return pool_id, client_id


Call = Callable[[Any, str], None]


def _same_call(client_id: str) -> Call:
    def call(client: Any, username: str) -> None:
        try:
            client.initiate_auth(
                ClientId=client_id,
                AuthFlow="USER_PASSWORD_AUTH",
                AuthParameters={"USERNAME": username, "PASSWORD": "wrong-password"},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "NotAuthorizedException":
                raise
            return
        raise AssertionError("a wrong password was accepted")

    return call


def _user_auth(client_id: str, expect_error: str | None) -> Call:
    def call(client: Any, username: str) -> None:
        try:
            client.initiate_auth(
                ClientId=client_id,
                AuthFlow="USER_AUTH",
                AuthParameters={"USERNAME": username, "PREFERRED_CHALLENGE": "EMAIL_OTP"},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != expect_error:
                raise
            return
        if expect_error:
            raise AssertionError(f"expected {expect_error}")

    return call


def _sign_in(client_id: str, endpoint_url: str) -> Call:
    def call(client: Any, username: str) -> None:
        started = client.initiate_auth(
            ClientId=client_id,
            AuthFlow="USER_AUTH",
            AuthParameters={"USERNAME": username, "PREFERRED_CHALLENGE": "EMAIL_OTP"},
        )
        url = f"{endpoint_url}/_outbox?destination={username}@example.com"
        with urllib.request.urlopen(url) as response:  # noqa: S310 - loopback URL we built
            code = json.load(response)["messages"][-1]["code"]
        client.respond_to_auth_challenge(
            ClientId=client_id,
            ChallengeName="EMAIL_OTP",
            Session=started["Session"],
            ChallengeResponses={"USERNAME": username, "EMAIL_OTP_CODE": code},
        )

    return call


def _measure(
    server: str, workload: str, endpoint_url: str, call: Call, threads: int, users: int, seconds: float
) -> Measurement:
    clients = [_client(endpoint_url, threads) for _ in range(threads)]
    for c in clients:  # warm each client's connection and botocore's caches outside the window
        with contextlib.suppress(ClientError):
            call(c, "user00000")
    start = threading.Barrier(threads + 1)
    stop_at: list[float] = []
    results: list[tuple[int, int, list[float]]] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        client, calls, errors, latencies = clients[index], 0, 0, []
        start.wait()
        i = index
        while time.perf_counter() < stop_at[0]:
            username = f"user{i % users:05d}"
            i += threads
            t0 = time.perf_counter()
            try:
                call(client, username)
            except Exception:
                errors += 1
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            calls += 1
        with lock:
            results.append((calls, errors, latencies))

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    stop_at.append(time.perf_counter() + seconds)
    t_start = time.perf_counter()
    start.wait()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t_start
    return Measurement(
        server=server,
        workload=workload,
        calls=sum(r[0] for r in results),
        errors=sum(r[1] for r in results),
        seconds=elapsed,
        latencies_ms=[x for r in results for x in r[2]],
    )


def run(threads: int = 8, users: int = 200, seconds: float = 4.0) -> list[Measurement]:
    """Run every workload on both servers; returns the measurements in the order printed."""
    results: list[Measurement] = []
    with _server_process("moto") as moto_url, _server_process("emulator") as emu_url:
        moto_pool = _seed(moto_url, users)
        emu_pool = _seed(emu_url, users)
        for workload, moto_call, emu_call in (
            ("same-call", _same_call(moto_pool[1]), _same_call(emu_pool[1])),
            (
                "user-auth",
                _user_auth(moto_pool[1], "InvalidParameterException"),
                _user_auth(emu_pool[1], None),
            ),
        ):
            results.append(_measure("moto", workload, moto_url, moto_call, threads, users, seconds))
            results.append(_measure("emulator", workload, emu_url, emu_call, threads, users, seconds))
        results.append(
            _measure("emulator", "sign-in", emu_url, _sign_in(emu_pool[1], emu_url), threads, users, seconds)
        )
    return results


def main(argv: list[str] | None = None) -> int:
    """Entry point: print one line per measurement and the emulator/moto ratios."""
    parser = argparse.ArgumentParser(
        prog="python -m cognito_emulator.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--threads", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--users", type=int, default=200, help="users seeded per server (default 200)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each measurement (default 4)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 users, 0.3 s windows")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.seconds = 10, 0.3
    print(
        f"{args.threads} client threads, {args.users} users, {args.seconds:g} s per measurement", flush=True
    )
    results = run(threads=args.threads, users=args.users, seconds=args.seconds)
    for m in results:
        print(m.line(), flush=True)
    by_key = {(m.server, m.workload): m for m in results}
    for workload in ("same-call", "user-auth"):
        moto_rate = by_key[("moto", workload)].rate
        ratio = by_key[("emulator", workload)].rate / moto_rate if moto_rate else float("inf")
        print(f"ratio emulator/moto {workload}: {ratio:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
