"""Reloading without a restart: SIGHUP, or a change the watch sees, re-reads the connections file and secrets;
a valid file applies to new steps while running ones finish on the old connection; an invalid one is
rejected, loudly, and the old kept."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Emulator, Journeys, RunningService, build_service, start_service_process
from otp_step_client import StepExecutorClient


@pytest.fixture
def connections_copy(connections_file: Path, tmp_path: Path) -> Path:
    """A connections file of this test's own, to rewrite (its secret files are the suite's, by absolute path)."""
    path = tmp_path / "connections.toml"
    shutil.copy(connections_file, path)
    return path


def _table(path: Path, name: str) -> str:
    """The TOML table of connection `name`, as written by harness.write_connections."""
    text = path.read_text()
    start = text.index(f'[connections."{name}"]')
    end = text.find("\n[connections.", start + 1)
    return text[start : end if end != -1 else len(text)].strip() + "\n"


def _add_copy(path: Path, of: str, name: str) -> None:
    table = _table(path, of).replace(f'[connections."{of}"]', f'[connections."{name}"]')
    path.write_text(path.read_text() + "\n" + table)


def _until(condition: object, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.02)


@pytest.fixture
def reloadable(connections_copy: Path) -> Iterator[RunningService]:
    # The watch is off: these tests reload explicitly and count on no other reload racing theirs.
    service = build_service(connections_copy, grace_seconds="1", reload_poll_seconds="0")
    service.start()
    yield service
    service.stop(grace=1)


@pytest.fixture
def own_journeys(reloadable: RunningService, emulator: Emulator) -> Iterator[Journeys]:
    with StepExecutorClient(f"127.0.0.1:{reloadable.port}", timeout=10) as client:
        yield Journeys(client, emulator)
    emulator.clear_faults()


def test_a_valid_file_adds_a_connection_and_an_invalid_one_is_rejected_with_the_old_kept(
    reloadable: RunningService,
    own_journeys: Journeys,
    connections_copy: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    demo_before = reloadable.runner.connection("demo")
    _add_copy(connections_copy, "demo", "added")
    with caplog.at_level(logging.INFO, logger="otp_step_service.app.reload"):
        assert reloadable.run(reloadable.service.reload()) is True
    assert "changed or added: added; removed: none" in caplog.text
    # Unchanged connections are kept as they were (warm clients), the new one serves at once.
    assert reloadable.runner.connection("demo") is demo_before
    assert own_journeys.generate("ada@example.com", connection="added")[0].WhichOneof("outcome") == "success"

    good = connections_copy.read_text()
    connections_copy.write_text(
        good.replace('[connections."added"]', '[connections."added"]\ncolour = "blue"')
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="otp_step_service.app.reload"):
        assert reloadable.run(reloadable.service.reload()) is False
    assert "configuration reload rejected, the running configuration is kept" in caplog.text
    assert "connections.added.colour" in caplog.text
    assert own_journeys.generate("ada@example.com", connection="added")[0].WhichOneof("outcome") == "success"

    # A secret file that cannot be read rejects the whole reload too.
    demo = _table(connections_copy, "demo")
    secret_line = next(line for line in demo.splitlines() if line.startswith("client_secret_file"))
    broken = demo.replace('"demo"', '"broken"').replace(
        secret_line, 'client_secret_file = "/nonexistent/secret"'
    )
    secret_missing = good + "\n" + broken
    connections_copy.write_text(secret_missing)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="otp_step_service.app.reload"):
        assert reloadable.run(reloadable.service.reload()) is False
    assert "connections.broken.client_secret_file: cannot read /nonexistent/secret" in caplog.text
    assert "broken" not in reloadable.runner.connections


def test_a_step_in_flight_finishes_on_the_old_secret_while_new_steps_use_the_new_one(
    reloadable: RunningService, own_journeys: Journeys, connections_copy: Path, emulator: Emulator
) -> None:
    # A rotated secret: here, a wrong one, so the test can tell which secret each step used.
    wrong = connections_copy.parent / "rotated.secret"
    wrong.write_text("not-the-secret")
    text = connections_copy.read_text()
    demo = _table(connections_copy, "demo")
    secret_line = next(line for line in demo.splitlines() if line.startswith("client_secret_file"))
    emulator.inject(operation="InitiateAuth", latency_ms=1500, count=1)
    outcome: list[str | None] = []
    in_flight = threading.Thread(
        target=lambda: outcome.append(own_journeys.generate("ada@example.com")[0].WhichOneof("outcome"))
    )
    in_flight.start()
    _until(lambda: reloadable.service.server.admission.steps_in_flight == 1, "the step is in flight")
    connections_copy.write_text(
        text.replace(demo, demo.replace(secret_line, f'client_secret_file = "{wrong}"'))
    )
    assert reloadable.run(reloadable.service.reload()) is True
    new_step = own_journeys.generate("ada@example.com")[0]
    assert new_step.WhichOneof("outcome") == "failure", new_step
    in_flight.join(timeout=10)
    # The old connection's clients stayed open for it: the reload closes them only once no step uses them.
    assert outcome == ["success"]
    reloader = reloadable.service.reloader
    assert reloader is not None
    _until(lambda: reloader.retired_open == 0, "the retired connection is closed")


def test_sighup_reloads_the_serving_process(
    connections_copy: Path, tmp_path: Path, emulator: Emulator
) -> None:
    log = tmp_path / "service.log"
    process, port = start_service_process(
        connections_copy, log, env={"OTP_STEP_SELF_TEST": "off", "OTP_STEP_RELOAD_POLL_SECONDS": "0"}
    )
    try:
        _add_copy(connections_copy, "demo", "after-sighup")
        os.kill(process.pid, signal.SIGHUP)
        _until(lambda: "configuration reloaded" in log.read_text(), "the reload is logged")
        with StepExecutorClient(f"127.0.0.1:{port}", timeout=10) as client:
            journeys = Journeys(client, emulator)
            response, _ = journeys.generate("ada@example.com", connection="after-sighup")
            assert response.WhichOneof("outcome") == "success", response
        connections_copy.write_text("not [valid toml")
        os.kill(process.pid, signal.SIGHUP)
        _until(lambda: "reload rejected" in log.read_text(), "the rejection is logged")
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_the_watch_reloads_a_changed_file_or_secret_without_sighup_and_keeps_the_old_on_an_invalid_one(
    connections_copy: Path, tmp_path: Path, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    # demo's secret in a file of this test's own, so the test can rotate it (the suite's file is shared).
    demo = _table(connections_copy, "demo")
    secret_line = next(line for line in demo.splitlines() if line.startswith("client_secret_file"))
    suite_secret = Path(secret_line.split("=", 1)[1].strip().strip('"'))
    own_secret = tmp_path / "demo.secret"
    own_secret.write_text(suite_secret.read_text())
    text = connections_copy.read_text().replace(secret_line, f'client_secret_file = "{own_secret}"')
    connections_copy.write_text(text)
    service = build_service(connections_copy, grace_seconds="1", reload_poll_seconds="0.1")
    service.start()
    try:
        with (
            StepExecutorClient(f"127.0.0.1:{service.port}", timeout=10) as client,
            caplog.at_level(logging.INFO, logger="otp_step_service"),
        ):
            journeys = Journeys(client, emulator)
            assert service.service.watch is not None
            # The file changes: a new step sees the new connection, no SIGHUP, no call to reload().
            _add_copy(connections_copy, "demo", "watched")
            _until(lambda: "watched" in service.runner.connections, "the watch applies the new file")
            assert (
                journeys.generate("ada@example.com", connection="watched")[0].WhichOneof("outcome")
                == "success"
            )

            # An invalid file is rejected once and the running configuration kept.
            valid = connections_copy.read_text()
            connections_copy.write_text(valid + "\nnot [valid toml")
            _until(lambda: "reload rejected" in caplog.text, "the invalid file is rejected")
            assert (
                journeys.generate("ada@example.com", connection="watched")[0].WhichOneof("outcome")
                == "success"
            )
            rejected = caplog.text.count("reload rejected")
            # Not retried while nothing changes: the watch remembers what it rejected.
            assert service.run(_checked(service)) is None
            assert caplog.text.count("reload rejected") == rejected

            # Only the secret file changes (rotated to a wrong one): the next new step uses it.
            connections_copy.write_text(valid)
            _until(lambda: caplog.text.count("configuration reloaded") >= 2, "the valid file is back")
            demo_before = service.runner.connection("demo")
            own_secret.write_text("rotated-and-wrong")
            _until(lambda: service.runner.connection("demo") is not demo_before, "the secret is re-read")
            assert journeys.generate("ada@example.com")[0].WhichOneof("outcome") == "failure"
    finally:
        service.stop(grace=1)


async def _checked(service: RunningService) -> bool | None:
    assert service.service.watch is not None
    return await service.service.watch.check()


def test_a_large_file_is_parsed_off_the_event_loop_and_one_beyond_the_bound_is_refused_unread(
    reloadable: RunningService, connections_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The attack: a 20 MB connections file stalled health probes for 440-520 ms while the loop parsed it.
    # Here a file just inside the bound (many unknown keys: parsed in full, then rejected), probed meanwhile.
    good = connections_copy.read_text()
    bulk = "".join(f'k{i} = "{"x" * 24}"\n' for i in range(110_000))
    connections_copy.write_text(good + "\n[padding]\n" + bulk)
    assert connections_copy.stat().st_size < 4 * 1024 * 1024
    probes: list[float] = []
    done = threading.Event()
    with StepExecutorClient(f"127.0.0.1:{reloadable.port}", timeout=10) as client:
        client.health()

        def probe() -> None:
            while not done.is_set():
                started = time.perf_counter()
                client.health()
                probes.append(time.perf_counter() - started)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            started = time.perf_counter()
            assert not reloadable.run(reloadable.service.reload())  # rejected: [padding] is no table of ours
            took = time.perf_counter() - started
        finally:
            done.set()
            prober.join(10)
    assert took > 0.2, took  # long enough for a stall to show
    assert len(probes) >= 3 and max(probes) < took / 2, (took, max(probes), len(probes))
    # Beyond the bound: refused before anything is parsed, the running configuration kept.
    connections_copy.write_text(good + "#" * (4 * 1024 * 1024) + "\n")
    caplog.set_level(logging.ERROR)
    assert not reloadable.run(reloadable.service.reload())
    assert any("refused unread" in r.getMessage() for r in caplog.records)
    assert "demo" in reloadable.runner.connections
