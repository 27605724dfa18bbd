"""The emulator's demo pool as the fleet tests use it: a connections file of their own (limits sized for many
journeys to a few addresses), and users of their own (one per load thread, so a thread's code is its own)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from cognito_emulator.connections_file import write_connections_file
from harness import Emulator


def fleet_connections(
    path: Path, emulator: Emulator, tables: dict[str, dict[str, Any]], endpoint_url: str | None = None
) -> Path:
    """Write `tables` (connection name → settings beyond the base) to `path`, each on the seeded pool's app
    client; `endpoint_url` to reach Cognito through something else (a proxy)."""
    seed = emulator.seed
    secret = path.with_name(path.stem + ".secret")
    secret.write_text(seed.client_secret)
    base = {
        "region": seed.region,
        "user_pool_id": seed.user_pool_id,
        "client_id": seed.client_id,
        "client_secret_file": str(secret),
        "endpoint_url": endpoint_url or seed.endpoint_url,
        # Many journeys to a few addresses: the per-address caps are not what these tests are about.
        "send_limit": 1000,
        "ip_send_limit": 100000,
        "lockout_threshold": 100,
    }
    write_connections_file(path, {name: {**base, **values} for name, values in tables.items()})
    return path


def new_users(emulator: Emulator, count: int) -> list[str]:
    """`count` fresh confirmed users who sign in by email: their addresses."""
    admin = emulator.admin()
    pool = emulator.seed.user_pool_id
    emails = []
    for _ in range(count):
        name = f"fleet-{secrets.token_hex(4)}"
        email = f"{name}@example.com"
        admin.admin_create_user(
            UserPoolId=pool,
            Username=name,
            UserAttributes=[
                {"Name": "email", "Value": email},
                {"Name": "email_verified", "Value": "true"},
                {"Name": "given_name", "Value": "Fleet"},
            ],
            MessageAction="SUPPRESS",
        )
        # Confirms the user; nobody signs in with it (the pool's PASSWORD factor only needs one to exist).
        password = secrets.token_urlsafe(18) + "aA1!"
        admin.admin_set_user_password(UserPoolId=pool, Username=name, Password=password, Permanent=True)
        emails.append(email)
    return emails
