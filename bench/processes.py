"""Child processes: start with a log file, wait until ready, stop politely; CPU and memory from /proc.

CPU is read per process (all threads) from /proc/<pid>/stat, so each scenario can say how much of the two
cores the service, the stand-in and the load generator each used. Short-lived load generators are reaped
with os.wait4, whose rusage covers the whole life of the child.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class Cores:
    """Where a scenario group runs its processes: the measured servers on `service`, everything that loads
    or stands in for them (ghz, the Cognito stand-in, Jaeger) on `load`, so a saturated server is measured
    on a core of its own rather than against its own load generator."""

    service: frozenset[int]
    load: frozenset[int]

    @classmethod
    def split(cls) -> Cores | None:
        """The first CPU this process may use for the servers, the others for the rest; None with one CPU."""
        usable = sorted(os.sched_getaffinity(0))
        if len(usable) < 2:
            return None
        return cls(frozenset(usable[:1]), frozenset(usable[1:]))


def on_cpus(cpus: frozenset[int] | None) -> list[str]:
    """A command prefix binding the program (and every thread it starts) to `cpus`: util-linux's taskset,
    which sets the affinity before exec. Not a pre-exec hook in Python: the harness has threads (gRPC's),
    and a fork with a Python hook can deadlock in the child; nor an affinity set after the start: a Go
    program (ghz, Jaeger) has started its threads by then."""
    if cpus is None or not shutil.which("taskset"):
        return []
    return ["taskset", "--cpu-list", ",".join(str(cpu) for cpu in sorted(cpus))]


# Ports free_port has handed out: the kernel may give the port it just probed and closed to the next probe,
# so two ports taken before either is bound could be one (about 1 in 14,000 a pair, dozens of pairs a run).
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1, never one this process handed out before (the race with other binders is
    accepted: nothing else binds loopback here)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by every thread of `pid` and of its live descendants
    (a service run with OTP_STEP_PROCESSES forks its servers)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        raw = stat.read()
    # The command name (field 2) may contain spaces; fields after its closing parenthesis are fixed.
    fields = raw[raw.rindex(b")") + 2 :].split()
    total = (int(fields[11]) + int(fields[12])) / _TICKS
    for child in _children(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += cpu_seconds(child)
    return total


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as listing:
            return [int(child) for child in listing.read().split()]
    except OSError:
        return []


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid`."""
    with open(f"/proc/{pid}/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `check` until it is true, or raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready within {timeout:g} s")
        time.sleep(interval)


class ProcessFailedError(RuntimeError):
    """A child process exited early or did not become ready; the message points at its log."""


@dataclass
class ManagedProcess:
    """A long-lived child (service, stand-in, emulator, Jaeger) whose output goes to a log file.

    Every one started is remembered, so `stop_all()` can end what a failed scenario left running.
    """

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls,
        name: str,
        command: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        cpus: frozenset[int] | None = None,
    ) -> ManagedProcess:
        """Start `command` with stdout and stderr appended to `log_path` (bound to `cpus`, if given)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                [*on_cpus(cpus), *command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
            )
        process = cls(name, popen, log_path)
        _STARTED.append(process)
        return process

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.popen.pid

    def alive(self) -> bool:
        """True while the child runs."""
        return self.popen.poll() is None

    def wait_ready(self, check: Callable[[], bool], timeout: float = 60.0) -> None:
        """Poll `check` until it is true; fail early (with the log's tail) if the child exits."""

        def ready() -> bool:
            if not self.alive():
                raise ProcessFailedError(
                    f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}"
                )
            return check()

        try:
            wait_until(ready, timeout, self.name)
        except TimeoutError:
            raise ProcessFailedError(f"{self.name} not ready in {timeout:g} s:\n{self.log_tail()}") from None

    def cpu_seconds(self) -> float:
        """CPU used so far (0 once the child is gone)."""
        try:
            return cpu_seconds(self.pid)
        except (FileNotFoundError, ProcessLookupError):
            return 0.0

    def rss_bytes(self) -> int:
        """Current resident size."""
        return rss_bytes(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the child's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        return self.popen.returncode


@dataclass(frozen=True, slots=True)
class Finished:
    """A short-lived child that ran to completion."""

    returncode: int
    cpu_seconds: float
    wall_seconds: float
    stdout: bytes
    stderr: bytes


def run_to_completion(
    command: Sequence[str],
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    cpus: frozenset[int] | None = None,
) -> Finished:
    """Run a load generator (bound to `cpus`, if given); its CPU comes from the kernel's rusage of the
    reaped child."""
    started = time.monotonic()
    popen = subprocess.Popen(
        [*on_cpus(cpus), *command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
        cwd=cwd,
    )
    try:
        # communicate() would reap the child with waitpid and lose its rusage: read the pipes, then wait4.
        stdout, stderr = _drain(popen, timeout)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()
        raise
    _, status, usage = os.wait4(popen.pid, 0)
    popen.returncode = os.waitstatus_to_exitcode(status)
    return Finished(
        returncode=popen.returncode,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        wall_seconds=time.monotonic() - started,
        stdout=stdout,
        stderr=stderr,
    )


def _drain(popen: subprocess.Popen[bytes], timeout: float) -> tuple[bytes, bytes]:
    # Read both pipes to EOF without reaping the child (EOF comes when it exits and closes them).
    assert popen.stdout is not None
    assert popen.stderr is not None
    chunks: dict[int, list[bytes]] = {popen.stdout.fileno(): [], popen.stderr.fileno(): []}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for pipe in (popen.stdout, popen.stderr):
            selector.register(pipe, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(popen.args, timeout)
            for key, _ in selector.select(timeout=left):
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fd].append(data)
                else:
                    selector.unregister(key.fileobj)
    return b"".join(chunks[popen.stdout.fileno()]), b"".join(chunks[popen.stderr.fileno()])


_STARTED: list[ManagedProcess] = []


def stop_all() -> None:
    """Stop every child still running (a scenario that failed half-way leaves none behind)."""
    while _STARTED:
        _STARTED.pop().stop(timeout=5)
