"""Fixtures of the image and chart tests: a folder the container can read, holding a connections file."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Emulator, write_connections

sys.path.insert(0, str(Path(__file__).parent))
from podman import share, shared_folder


@pytest.fixture(scope="module")
def mounted(emulator: Emulator) -> Iterator[Path]:
    """A folder mounted read-only into containers: connections.toml and the Cognito client secret."""
    with shared_folder() as folder:
        secret = folder / "demo.secret"
        secret.write_text(emulator.seed.client_secret)
        write_connections(
            folder / "connections.toml",
            emulator.seed,
            secret,
            {
                "legacy": emulator.seed.client_id,
                "legacy_secret": "unused",
                "no_user_auth": emulator.seed.client_id,
            },
        )
        share(folder)
        yield folder
