"""A real Jaeger v2 (the pinned build in .bin/, from `make tools`) run with a test's config file, on free
loopback ports named by environment variables the config reads."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from harness import free_port

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def running_jaeger(
    config: Path, port_names: Sequence[str], log_dir: Path, ready_port: str, ready_path: str
) -> Iterator[dict[str, int]]:
    """Start Jaeger with `config`, a free port for each of `port_names`, and return once
    `http://127.0.0.1:<ready_port>/<ready_path>` answers; stopped on exit."""
    binary = shutil.which("jaeger", path=str(ROOT / ".bin")) or shutil.which("jaeger")
    assert binary, "Jaeger is missing: run `make tools`"
    ports = {name: free_port() for name in port_names}
    log = log_dir / "jaeger.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [binary, "--config", f"file:{config}"],
            env={**os.environ, **{k: str(v) for k, v in ports.items()}},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                url = f"http://127.0.0.1:{ports[ready_port]}/{ready_path}"
                with urllib.request.urlopen(url, timeout=5):  # loopback only
                    break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "Jaeger did not start: " + log.read_text()
                time.sleep(0.1)
        yield ports
    finally:
        process.terminate()
        process.wait(timeout=15)
