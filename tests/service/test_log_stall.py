"""A stalled stderr never stalls steps: the event loop only queues log records."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from harness import Emulator, free_port
from otp_step_client import Journey, Step, StepExecutorClient

STEPS = 600  # each logs one step.completed line of ~400 bytes: several times a 64 KiB pipe


def _unread_bytes(fd: int) -> int:
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


def test_steps_run_on_while_nobody_reads_the_services_stderr(
    connections_file: Path, emulator: Emulator
) -> None:
    port = free_port()
    command = [sys.executable, "-m", "otp_step_service", "serve", "--listen", f"127.0.0.1:{port}"]
    process = subprocess.Popen(
        [*command, "--connections", str(connections_file)],
        env={**os.environ, "OTP_STEP_SELF_TEST": "off", "OTP_STEP_LOG_LEVEL": "INFO"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # never read: the pipe fills and every write to it blocks
        start_new_session=True,
    )
    assert process.stderr is not None
    try:
        with StepExecutorClient(f"127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.health() == "SERVING":
                        break
                except Exception:  # not listening yet
                    pass
                assert process.poll() is None and time.monotonic() < deadline, "the service did not start"
                time.sleep(0.05)
            started = time.monotonic()
            for n in range(STEPS):
                response = client.generate_otp(
                    Journey("stall", run_id=f"run-{n}", step_id="send-code"),
                    Step("demo", "not an identifier", channel="EMAIL", abort_on_failure=True),
                    timeout=5,
                )
                assert response.WhichOneof("outcome") is not None
            took = time.monotonic() - started
        # The pipe really was full (so a write on the loop would have blocked), and the steps did not wait.
        assert _unread_bytes(process.stderr.fileno()) >= 60_000
        assert took < 30, f"{STEPS} steps took {took:.1f} s with stderr stalled"
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # its writer thread is blocked on the full pipe
        process.wait(timeout=10)
        process.stderr.close()
