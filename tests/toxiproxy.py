"""Toxiproxy for tests: a real TCP proxy between the service and what it calls (Redis, Cognito), whose faults
("toxics") a test adds and removes over Toxiproxy's HTTP API while traffic flows.

The toxics the fleet tests use, and what they do to a connection through the proxy:
- `latency` (`latency` ms): every chunk of data is held that long;
- `timeout` with `timeout` 0: a blackhole — data is dropped and the connection stays open, so the caller waits
  on its own timeout; removing the toxic closes the connections it held;
- `reset_peer` with `timeout` 0: the connection is reset (TCP RST) as soon as data arrives.
Each acts on one direction: `upstream` (the service's requests) or `downstream` (the answers). A fault on the
answers is the hard case: the request was acted on, and the service cannot know it.

The server is started on a free loopback port and stopped by its pid (`running_toxiproxy`)."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import free_port, http_json

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Toxic:
    """A toxic on a proxy, as Toxiproxy names it."""

    proxy: Proxy
    name: str

    def remove(self) -> None:
        """Take the fault away (connections a blackhole held are closed)."""
        http_json("DELETE", f"{self.proxy.api}/proxies/{self.proxy.name}/toxics/{self.name}")


@dataclass(frozen=True)
class Proxy:
    """One proxy: listens on 127.0.0.1:`port`, forwards to its upstream."""

    api: str
    name: str
    port: int

    @property
    def address(self) -> str:
        """host:port to give the service instead of the upstream's."""
        return f"127.0.0.1:{self.port}"

    def add(self, kind: str, stream: str = "downstream", **attributes: Any) -> Toxic:
        """Add a toxic of `kind` (latency, timeout, reset_peer...) on `stream` (upstream / downstream)."""
        name = f"{kind}_{stream}"
        body = {"name": name, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes}
        http_json("POST", f"{self.api}/proxies/{self.name}/toxics", body)
        return Toxic(self, name)

    @contextmanager
    def toxic(self, kind: str, stream: str = "downstream", **attributes: Any) -> Iterator[Toxic]:
        """The toxic for the block's duration."""
        added = self.add(kind, stream, **attributes)
        try:
            yield added
        finally:
            added.remove()


@dataclass(frozen=True)
class Toxiproxy:
    """A running toxiproxy-server, by its API's URL."""

    api: str

    def proxy(self, name: str, upstream: str) -> Proxy:
        """A new proxy to `upstream` (host:port) on a free loopback port."""
        port = free_port()
        body = {"name": name, "listen": f"127.0.0.1:{port}", "upstream": upstream, "enabled": True}
        http_json("POST", f"{self.api}/proxies", body)
        return Proxy(self.api, name, port)

    def reset(self) -> None:
        """Every proxy enabled, every toxic removed."""
        http_json("POST", f"{self.api}/reset")


@contextmanager
def running_toxiproxy(folder: Path) -> Iterator[Toxiproxy]:
    """toxiproxy-server on a free loopback port for the block; its log in `folder`."""
    binary = shutil.which("toxiproxy-server", path=str(ROOT / ".bin")) or shutil.which("toxiproxy-server")
    assert binary, "toxiproxy-server is missing: run `make tools` (tools/toxiproxy pins it)"
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "toxiproxy.log").open("ab") as log:
        process = subprocess.Popen(
            [binary, "-host", "127.0.0.1", "-port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"LOG_LEVEL": "warn"},
        )
    api = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                http_json("GET", f"{api}/proxies")
                break
            except (urllib.error.URLError, OSError):
                assert process.poll() is None, (folder / "toxiproxy.log").read_text()
                assert time.monotonic() < deadline, "toxiproxy-server did not start within 10 s"
                time.sleep(0.05)
        yield Toxiproxy(api)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
