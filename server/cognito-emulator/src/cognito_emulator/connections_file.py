"""Writing the service's connections file: the one writer the seed, the benches and the tests share.

The service reads the file (`otp_step_service.config.connections`); what writes it for local runs lives here,
beside the emulator it usually points at, so the TOML is spelled in one place.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

Tables = Mapping[str, Mapping[str, Any]]


def _value(value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, tuple):
        value = list(value)
    # json.dumps writes valid TOML for strings, numbers, booleans and flat arrays of them (same escapes,
    # lower-case true/false).
    return json.dumps(value)


def connections_toml(connections: Tables, callers: Tables | None = None) -> str:
    """`[connections."<name>"]` tables, then `[callers."<name>"]` ones; None values are left out."""
    lines: list[str] = []
    for section, tables in (("connections", connections), ("callers", callers or {})):
        for name, values in tables.items():
            lines.append(f"[{section}.{json.dumps(name)}]")
            lines.extend(f"{key} = {_value(value)}" for key, value in values.items() if value is not None)
            lines.append("")
    return "\n".join(lines)


def write_connections_file(path: Path, connections: Tables, callers: Tables | None = None) -> Path:
    """Replace `path` with the tables (its folder made if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(connections_toml(connections, callers), encoding="utf-8")
    return path


def write_secret_file(path: Path, secret: str) -> Path:
    """Write a client secret readable by its owner only (mode 0600, tightened if the file existed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, secret.encode())
    finally:
        os.close(fd)
    return path
