"""A real Prometheus (Debian's `prometheus` package) for the tests: started on a free loopback port with a
generated configuration that scrapes the service every second, and queried through its HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

INSTALL = "install it with `make prometheus` (apt-get install -y prometheus), or `make tools`"
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def binary(name: str) -> str:
    """The path of `name` (prometheus, promtool), failing the test loudly when it is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: {INSTALL}")
    return path


class Prometheus:
    """One Prometheus process scraping `targets` every second; stopped with `stop()`."""

    def __init__(self, folder: Path, port: int, targets: list[str], rule_files: list[Path]) -> None:
        self.url = f"http://127.0.0.1:{port}"
        config = folder / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML: no YAML writer needed
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
                    "rule_files": [str(p) for p in rule_files],
                    "scrape_configs": [
                        {"job_name": "otp-step-service", "static_configs": [{"targets": targets}]}
                    ],
                }
            )
        )
        self._log = (folder / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._log_path = folder / "prometheus.log"
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("prometheus did not become ready:\n" + self._log_path.read_text()[-2000:])
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` of a success, AssertionError with Prometheus' error otherwise."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        assert body.get("status") == "success", (
            f"{path} {params}: {body.get('errorType')}: {body.get('error')}"
        )
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) of `expr` now."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The one value `expr` has now, or None when it has no sample."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} has {len(result)} series"
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, expected: float, timeout: float = 20) -> None:
        """Poll until `expr` equals `expected` (a scrape a second, so a few seconds at most)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.value(expr)
            if got == expected:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr} is {got}, expected {expected} (after {timeout:.0f} s)")
            time.sleep(0.2)

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
        """Poll `condition` until it holds, failing with `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout:.0f} s: {what}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop Prometheus."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
