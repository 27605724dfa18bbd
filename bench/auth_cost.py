"""What authentication costs per call, measured with ghz on long-lived channels, in one run:

- plaintext, no authentication;
- TLS + bearer token (RS256) verified on every call (OTP_STEP_TOKEN_CACHE_SECONDS=0);
- TLS + the same token with the verified-token cache (the default).

`python -m bench.auth_cost [--calls 4000] [--concurrency 16] [--rounds 2]`. Each port is its own server
process (started together, driven one at a time, in turns, so the machine's noise spreads over all three).
The call is a ValidateOtp for a run with no code sent: the whole authentication, admission and step path,
and no Cognito request (the connection points at a closed port it never needs). Throw-away CA and signing
key, made here; the JWKS is served by this process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cognito_emulator.connections_file import write_connections_file
from cryptography.hazmat.primitives.asymmetric import rsa
from otp_step_demo.local_ca import LocalCa

from bench.ghz import find_ghz

ISSUER = "https://issuer.bench.test"
AUDIENCE = "otp-step-service"
VALIDATE = "stepexecutor.v1.StepExecutor.ValidateOtp"
SERVE = [sys.executable, "-m", "otp_step_service", "serve", "--listen", "127.0.0.1:0", "--self-test", "off"]
REQUEST = {
    "journey": {"journey_id": "auth-cost", "journey_run_id": "no-code-sent", "step_id": "check"},
    "step": {"connection": "demo", "user_identifier": "ada@example.com"},
    "otp_code": "12345678",
}


def _serve_jwks(document: bytes) -> str:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/jwks.json"


def _start(
    work: Path, name: str, connections: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int]:
    log = work / f"{name}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [*SERVE, "--connections", str(connections)],
            env={**os.environ, **env},
            stderr=sink,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"\(port (\d+);", log.read_text())
        if found:
            return process, int(found.group(1))
        if process.poll() is not None:
            raise RuntimeError(f"{name} did not start: {log.read_text()}")
        time.sleep(0.05)
    process.terminate()
    raise RuntimeError(f"{name} did not start within 30 s")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU the server process has used (Linux /proc): steadier than rps on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ghz(ghz: str, port: int, flags: Sequence[str], calls: int, concurrency: int) -> dict[str, Any]:
    command = [ghz, *flags, "--call", VALIDATE, "-d", json.dumps(REQUEST), "-n", str(calls)]
    command += ["-c", str(concurrency), "--connections", "4", "-O", "json", f"127.0.0.1:{port}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    report: dict[str, Any] = json.loads(done.stdout)
    if report.get("statusCodeDistribution") != {"OK": calls}:
        raise RuntimeError(f"not every call succeeded: {report.get('statusCodeDistribution')} {done.stderr}")
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print one row per port and round."""
    parser = argparse.ArgumentParser(prog="python -m bench.auth_cost", description=__doc__)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    ghz = find_ghz()
    work = Path(tempfile.mkdtemp(prefix="auth-cost-"))
    ca = LocalCa()
    cert, key = ca.server().write(work, "server")
    ca_file = work / "ca.crt"
    ca_file.write_bytes(ca.pem)
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing.public_key()))
    jwks_url = _serve_jwks(json.dumps({"keys": [{**public, "kid": "k1", "alg": "RS256"}]}).encode())
    now = int(time.time())
    token = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench-worker", "iat": now, "exp": now + 3600},
        signing,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    connections = work / "connections.toml"
    write_connections_file(
        connections,
        {
            "demo": {
                "region": "us-east-1",
                "user_pool_id": "us-east-1_bench",
                "client_id": "bench",
                "endpoint_url": "http://127.0.0.1:9",
            }
        },
        {"bench": {"token_subjects": ["bench-worker"], "connections": ["*"]}},
    )
    tls = {"OTP_STEP_TLS_CERT": str(cert), "OTP_STEP_TLS_KEY": str(key)}
    tokens = {"OTP_STEP_TOKEN_ISSUER": ISSUER, "OTP_STEP_TOKEN_AUDIENCE": AUDIENCE}
    tokens["OTP_STEP_TOKEN_JWKS_URL"] = jwks_url
    bearer = json.dumps({"authorization": f"Bearer {token}"})
    token_flags = ["--cacert", str(ca_file), "-m", bearer, "--reflect-metadata", bearer]
    ports = {
        "plaintext, no authentication": ({}, ["--insecure"]),
        "TLS + token, verified every call": (
            {**tls, **tokens, "OTP_STEP_TOKEN_CACHE_SECONDS": "0"},
            token_flags,
        ),
        "TLS + token, verified-token cache": ({**tls, **tokens}, token_flags),
    }
    running = {
        name: _start(work, f"port{i}", connections, env) for i, (name, (env, _)) in enumerate(ports.items())
    }
    try:
        print(f"ghz -n {args.calls} -c {args.concurrency} --connections 4 --call {VALIDATE} (no code sent)")
        print("| port | round | rps | average ms | p99 ms | server CPU per call |")
        print("| --- | --- | --- | --- | --- | --- |")
        for round_number in range(1, args.rounds + 1):
            for name, (_, flags) in ports.items():
                process, port = running[name]
                cpu = _cpu_seconds(process.pid)
                report = _ghz(ghz, port, flags, args.calls, args.concurrency)
                per_call_ms = (_cpu_seconds(process.pid) - cpu) / args.calls * 1000
                p99 = next(d["latency"] for d in report["latencyDistribution"] if d["percentage"] == 99)
                print(
                    f"| {name} | {round_number} | {report['rps']:.0f} | {report['average'] / 1e6:.1f} "
                    f"| {p99 / 1e6:.1f} | {per_call_ms:.2f} ms |",
                    flush=True,
                )
    finally:
        for process, _ in running.values():
            process.terminate()
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
