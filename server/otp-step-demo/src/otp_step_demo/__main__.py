"""`make run`: the local emulator (seeded), optionally Jaeger, and the service — one command, Ctrl-C stops all.

The emulator and Jaeger run as child processes; the service runs in this process in the foreground, exactly
as `python -m otp_step_service serve` would, reading the connections file the seed wrote.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cognito_emulator.settings import DEFAULT_PORT as EMULATOR_PORT
from otp_step_service.app.cli import main as serve
from otp_step_service.config.settings import DEFAULT_LISTEN

JAEGER_UI = "http://127.0.0.1:16686"
# `make run` exposes metrics; the service alone does not unless OTP_STEP_METRICS_LISTEN says where.
METRICS_LISTEN = "127.0.0.1:9464"


def _wait_http(url: str, process: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with code {process.returncode} (is its port already in use?)")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback only
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not answer {url} within {timeout:.0f} s")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        # As the servers themselves bind: connections lingering in TIME_WAIT do not make a port busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _banner(listen: str, emulator: str, jaeger: bool, client_flags: str = "") -> str:
    venv_bin = Path(sys.executable).parent
    step = f"{venv_bin}/otp-step --target {listen}{client_flags}"
    return f"""
================================================================================================
 Cognito OTP steps are running.
   StepExecutor (gRPC, health, reflection): {listen}
   Local Cognito emulator:                  {emulator}   (outbox: {emulator}/_outbox)
   Prometheus metrics:                      http://{os.environ.get("OTP_STEP_METRICS_LISTEN", "")}/metrics
   {"Jaeger UI:                               " + JAEGER_UI if jaeger else "Tracing: off (make run JAEGER=1 starts Jaeger and traces into it)"}

 Try a whole journey (another terminal):
   {step} generate --identifier ada@example.com --channel email --run demo-1
   CODE=$(curl -s '{emulator}/_outbox?destination=ada@example.com' \\
          | python3 -c 'import json, sys; print(json.load(sys.stdin)["messages"][-1]["code"])')
   {step} validate --identifier ada@example.com --run demo-1 --code "$CODE"

 SMS: --identifier +15555550101 --channel sms (user alan). Other demo users: grace@example.com,
 hedy@example.com (unconfirmed), edsger@example.com (disabled), nobody@example.com (does not exist).
 Connection self-test: {step} check-connection demo   ·   ghz: see the docs, "Load testing".
 Ctrl-C stops everything.
================================================================================================
"""


def main(argv: list[str] | None = None) -> int:
    """Start the emulator (and Jaeger), then serve until interrupted."""
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument("--emulator-port", type=int, default=EMULATOR_PORT)
    parser.add_argument("--listen", default=DEFAULT_LISTEN)
    parser.add_argument("--run-dir", type=Path, default=Path("var") / "run")
    parser.add_argument("--jaeger", action="store_true", help="start a local Jaeger and export traces to it")
    parser.add_argument("--tls", action="store_true", help="mTLS with a throw-away local CA (var/run/tls/)")
    args = parser.parse_args(argv)

    # A SIGTERM before the service takes over signal handling must still stop the children (finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    metrics_listen = os.environ.setdefault("OTP_STEP_METRICS_LISTEN", METRICS_LISTEN)
    for port, what in (
        (args.emulator_port, "EMULATOR_PORT"),
        (int(args.listen.rsplit(":", 1)[1]), "SERVICE_ADDR"),
        *([(int(metrics_listen.rsplit(":", 1)[1]), "OTP_STEP_METRICS_LISTEN")] if metrics_listen else []),
    ):
        if not _port_free(port):
            raise SystemExit(
                f"port {port} is in use (an earlier `make run`?); stop it or choose another {what}=..."
            )
    # The emulator accepts any credentials; dummies let the admin API and the self-test's Describe calls work
    # without touching (or needing) real AWS credentials.
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        os.environ.setdefault(name, value)
    run_dir = args.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    connections = run_dir / "connections.toml"
    connections.unlink(missing_ok=True)
    emulator_url = f"http://127.0.0.1:{args.emulator_port}"
    children: list[subprocess.Popen[bytes]] = []
    try:
        emulator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cognito_emulator",
                "--port",
                str(args.emulator_port),
                "--seed",
                "--connections",
                str(connections),
                "--secret-file",
                str(run_dir / "demo.secret"),
            ],
            stdout=(run_dir / "emulator.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        children.append(emulator)
        _wait_http(f"{emulator_url}/_health", emulator, "the emulator")
        deadline = time.monotonic() + 30
        while not connections.exists():
            if time.monotonic() > deadline:
                raise SystemExit("the emulator did not write the connections file")
            time.sleep(0.05)
        if args.jaeger:
            jaeger_bin = shutil.which("jaeger", path=str(Path(".bin").resolve())) or shutil.which("jaeger")
            if not jaeger_bin:
                raise SystemExit("Jaeger is not installed: run `make tools` (or `make run JAEGER=1`)")
            jaeger = subprocess.Popen(
                [jaeger_bin], stdout=(run_dir / "jaeger.log").open("wb"), stderr=subprocess.STDOUT
            )
            children.append(jaeger)
            _wait_http(JAEGER_UI, jaeger, "Jaeger")
            os.environ.setdefault("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
            os.environ.setdefault("OTEL_SERVICE_NAME", "otp-step-service")
        flags = ""
        if args.tls:
            from otp_step_demo import tls as demo_tls

            os.environ.update(demo_tls.prepare(run_dir, connections))
            flags = demo_tls.client_flags(run_dir)
        print(_banner(args.listen, emulator_url, args.jaeger, flags), file=sys.stderr, flush=True)
        if args.tls:
            print(demo_tls.banner(args.listen, run_dir), file=sys.stderr, flush=True)
        return serve(["serve", "--listen", args.listen, "--connections", str(connections)])
    finally:
        for child in reversed(children):
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    sys.exit(main())
