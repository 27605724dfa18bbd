"""The direct boto3 floor: the service's own Cognito calls in a bare thread loop, no gRPC. Its own process.

    python -m bench.boto_load initiate --endpoint URL --client-id ID --secret-file F --threads 50 \
        --max-calls 100000 --max-seconds 4
    python -m bench.boto_load sign-in --endpoint URL --client-id ID --secret-file F --threads 50 \
        --users-file users.json [--get-user]

`initiate`: InitiateAuth USER_AUTH / EMAIL_OTP with SECRET_HASH, one new user name per call, as GenerateOtp
makes it. `sign-in` (the emulator): InitiateAuth for every user in the file, then (untimed) the codes from the
emulator's outbox, then RespondToAuthChallenge with each code (and GetUser with `--get-user`, as Validate
does); journeys per second = users / (initiate time + respond time), the way ghz's two phases are counted.

The boto3 client is configured like the service's (connection pool = threads, no retries, keep-alive), and
created and warmed before timing starts. Prints one JSON object: each phase's calls, errors, seconds,
percentiles and the CPU this process used while timed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
from otp_step_service.adapters.cognito import secret_hash  # computed per call, as the service does

REGION = "us-east-1"


@dataclass
class Phase:
    """One timed phase."""

    name: str
    calls: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values (0 when empty)."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def run_phase(
    name: str, threads: int, call: Callable[[int], None], max_calls: int, max_seconds: float
) -> Phase:
    """Call `call(n)` for n = 0, 1, ... from `threads` threads until `max_calls` or `max_seconds`."""
    numbers = itertools.count()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    stop_at = time.perf_counter() + max_seconds

    def worker(mine: list[float]) -> None:
        while time.perf_counter() < stop_at:
            n = next(numbers)  # itertools.count is atomic under the GIL
            if n >= max_calls:
                return
            started = time.perf_counter()
            try:
                call(n)
            except Exception as exc:  # every failure is counted, by kind, never hidden
                with lock:
                    errors[_error_kind(exc)] += 1
                continue
            mine.append((time.perf_counter() - started) * 1000)

    pool = [threading.Thread(target=worker, args=(latencies[i],), daemon=True) for i in range(threads)]
    cpu, wall = time.process_time(), time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    phase = Phase(name, seconds=time.perf_counter() - wall, cpu_seconds=time.process_time() - cpu)
    values = sorted(itertools.chain.from_iterable(latencies))
    phase.ok = len(values)
    phase.errors = dict(errors)
    phase.calls = phase.ok + sum(errors.values())
    phase.p50_ms = statistics.median(values) if values else 0.0
    phase.p95_ms = percentile(values, 0.95)
    phase.p99_ms = percentile(values, 0.99)
    return phase


def _error_kind(exc: Exception) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return f"cognito:{exc.response.get('Error', {}).get('Code', 'Unknown')}"
    return f"client:{type(exc).__name__}"


def make_client(endpoint: str, threads: int) -> Any:
    """A cognito-idp client configured like the service's (see otp_step_service.adapters.cognito)."""
    config = botocore.config.Config(
        region_name=REGION,
        max_pool_connections=threads,
        connect_timeout=2.0,
        read_timeout=5.0,
        retries={"mode": "standard", "total_max_attempts": 1},
        tcp_keepalive=True,
    )
    return boto3.session.Session().client("cognito-idp", endpoint_url=endpoint, config=config)


def initiate(client: Any, client_id: str, secret: str, username: str) -> dict[str, Any]:
    """InitiateAuth USER_AUTH preferring EMAIL_OTP, as GenerateOtp sends it."""
    answer: dict[str, Any] = client.initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_AUTH",
        AuthParameters={
            "USERNAME": username,
            "PREFERRED_CHALLENGE": "EMAIL_OTP",
            "SECRET_HASH": secret_hash(username=username, client_id=client_id, client_secret=secret),
        },
    )
    if answer.get("ChallengeName") != "EMAIL_OTP":
        raise RuntimeError(f"unexpected challenge {answer.get('ChallengeName')}")
    return answer


def outbox_codes(endpoint: str) -> dict[str, str]:
    """The newest code sent to each destination (the emulator's outbox)."""
    with urllib.request.urlopen(f"{endpoint}/_outbox", timeout=30) as answer:  # noqa: S310 - loopback
        messages = json.load(answer)["messages"]
    return {m["destination"]: m["code"] for m in messages}


def clear_outbox(endpoint: str) -> None:
    """Empty the emulator's outbox."""
    request = urllib.request.Request(f"{endpoint}/_outbox", method="DELETE")  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=30):  # noqa: S310 - loopback
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m bench.boto_load`."""
    parser = argparse.ArgumentParser(prog="python -m bench.boto_load")
    parser.add_argument("mode", choices=("initiate", "sign-in"))
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--secret-file", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--max-calls", type=int, default=100_000)
    parser.add_argument("--max-seconds", type=float, default=4.0)
    parser.add_argument("--warmup-calls", type=int, default=200)
    parser.add_argument("--users-file", type=Path, help="sign-in: JSON list of email addresses")
    parser.add_argument("--get-user", action="store_true", help="sign-in: GetUser after each sign-in")
    args = parser.parse_args(argv)
    secret = args.secret_file.read_text().strip()
    client = make_client(args.endpoint, args.threads)
    phases: list[Phase] = []
    observed: Counter[str] = Counter()
    lock = threading.Lock()
    if args.mode == "initiate":

        def one(n: int) -> None:
            initiate(client, args.client_id, secret, f"boto{n}@example.com")

        run_phase("warm-up", args.threads, one, args.warmup_calls, args.max_seconds)
        phases.append(run_phase("initiate", args.threads, one, args.max_calls, args.max_seconds))
    else:
        users: list[str] = json.loads(args.users_file.read_text())
        client.list_user_pools(MaxResults=1)  # warm the client outside the timed phases
        clear_outbox(args.endpoint)
        started: dict[int, tuple[str, str]] = {}

        def start(n: int) -> None:
            answer = initiate(client, args.client_id, secret, users[n])
            started[n] = (answer["Session"], answer["ChallengeParameters"]["USERNAME"])

        phases.append(run_phase("initiate", args.threads, start, len(users), args.max_seconds))
        codes = outbox_codes(args.endpoint)

        def respond(n: int) -> None:
            session, username = started[n]
            answer = client.respond_to_auth_challenge(
                ClientId=args.client_id,
                ChallengeName="EMAIL_OTP",
                Session=session,
                ChallengeResponses={
                    "USERNAME": username,
                    "EMAIL_OTP_CODE": codes[users[n]],
                    "SECRET_HASH": secret_hash(
                        username=username, client_id=args.client_id, client_secret=secret
                    ),
                },
            )
            tokens = answer["AuthenticationResult"]
            if args.get_user:
                try:
                    client.get_user(AccessToken=tokens["AccessToken"])
                except botocore.exceptions.ClientError as exc:
                    # The service makes this call and falls back to the ID token when it fails; so does this
                    # floor. (The emulator rejects its own access tokens here: observed, not an error.)
                    with lock:
                        observed[f"get_user:{_error_kind(exc)}"] += 1

        phases.append(run_phase("respond", args.threads, respond, len(users), args.max_seconds))
    print(json.dumps({"phases": [asdict(p) for p in phases], "observed": dict(observed)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
