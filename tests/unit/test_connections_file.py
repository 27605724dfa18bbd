"""The connections file: read once, bounded in size, and no connection promising more attempts than its pool."""

from __future__ import annotations

from pathlib import Path

import pytest
from otp_step_service.config.connections import load_configuration
from otp_step_service.steps.errors import ConfigurationError

TABLE = """
[connections.demo]
region = "us-east-1"
user_pool_id = "us-east-1_AbC123"
client_id = "client1"
"""

CALLER = """
[callers.orchestrator]
token_subjects = ["worker"]
connections = ["demo"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "connections.toml"
    path.write_text(text)
    return path


def test_max_attempts_above_the_pools_cap_is_refused_at_load(tmp_path: Path) -> None:
    # Above the pool's cap a real user's session ends at Cognito (ATTEMPTS_EXHAUSTED) while a decoy's goes
    # on (INVALID_CODE): the fourth wrong code would tell them apart.
    with pytest.raises(
        ConfigurationError, match=r"connections.demo: .*max_attempts = 5 is above .*pool_max_attempts"
    ):
        load_configuration(_write(tmp_path, TABLE + "max_attempts = 5\n"))
    declared = load_configuration(_write(tmp_path, TABLE + "max_attempts = 5\npool_max_attempts = 5\n"))
    assert declared.sources["demo"][0].max_attempts == 5


def test_one_read_gives_the_connections_the_callers_and_the_watched_files(tmp_path: Path) -> None:
    (tmp_path / "demo.secret").write_text("s3cret\n")
    path = _write(tmp_path, TABLE + 'client_secret_file = "demo.secret"\n' + CALLER)
    configuration = load_configuration(path)
    assert configuration.sources["demo"][1] == "s3cret"
    assert configuration.callers.by_token_subject["worker"].name == "orchestrator"
    assert configuration.files == (path, tmp_path / "demo.secret")


def test_a_file_beyond_the_size_bound_is_refused_unread(tmp_path: Path) -> None:
    path = _write(tmp_path, TABLE + "#" * 5000 + "\n")
    with pytest.raises(ConfigurationError, match="larger than"):
        load_configuration(path, max_bytes=4096)
    assert load_configuration(path, max_bytes=8192).sources
