"""The demo pool, app client and users, created through the public API (boto3) of a running emulator.

moto generates pool and client ids at random, so :func:`seed_demo` returns them in a :class:`SeedResult`
and :func:`write_connection_files` writes what the service reads: a connections TOML file and the client
secret in its own file (mode 0600), never in the TOML itself.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import boto3
from botocore.config import Config

from cognito_emulator.connections_file import write_connections_file, write_secret_file

DEMO_POOL_NAME = "demo-passwordless"
DEMO_CLIENT_NAME = "otp-steps"
#: Dummy credentials: moto accepts anything, and real credentials must never reach the emulator.
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass(frozen=True)
class SeedUser:
    """A demo user as seeded."""

    username: str
    given_name: str
    family_name: str
    email: str | None = None
    phone_number: str | None = None
    status: Literal["CONFIRMED", "UNCONFIRMED"] = "CONFIRMED"
    enabled: bool = True


#: Fictional people at reserved addresses (example.com, +1 555 555 01xx).
DEMO_USERS: tuple[SeedUser, ...] = (
    SeedUser("ada", "Ada", "Lovelace", email="ada@example.com", phone_number="+15555550100"),
    SeedUser("grace", "Grace", "Hopper", email="grace@example.com"),
    SeedUser("alan", "Alan", "Turing", phone_number="+15555550101"),
    SeedUser("hedy", "Hedy", "Lamarr", email="hedy@example.com", status="UNCONFIRMED"),
    SeedUser("edsger", "Edsger", "Dijkstra", email="edsger@example.com", enabled=False),
)


@dataclass(frozen=True)
class SeedResult:
    """Where the demo lives. ``client_secret`` is a secret: do not log it."""

    endpoint_url: str
    region: str
    user_pool_id: str
    client_id: str
    client_secret: str
    users: tuple[SeedUser, ...]

    def user(self, username: str) -> SeedUser:
        """The seeded user called ``username``."""
        for user in self.users:
            if user.username == username:
                return user
        raise KeyError(username)

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return (
            f"SeedResult(endpoint_url={self.endpoint_url!r}, region={self.region!r}, "
            f"user_pool_id={self.user_pool_id!r}, client_id={self.client_id!r}, client_secret='***', "
            f"users={[u.username for u in self.users]!r})"
        )


def cognito_client(endpoint_url: str, region: str = "us-east-1", config: Config | None = None) -> Any:
    """A boto3 cognito-idp client for the emulator, with dummy credentials (and botocore `config`)."""
    return boto3.client(
        "cognito-idp",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=DUMMY_CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=DUMMY_CREDENTIALS["aws_secret_access_key"],
        config=config,
    )


def seed_demo(endpoint_url: str, region: str = "us-east-1") -> SeedResult:
    """Create the demo pool ``demo-passwordless``, its app client ``otp-steps`` and the demo users.

    Sign-in names: the pool uses ``AliasAttributes=["email", "phone_number"]`` (not ``UsernameAttributes``)
    so users keep readable usernames (``ada``, ``alan``) and can also sign in with a verified email or
    phone number. The unconfirmed user's email is unverified, so only ``hedy`` works for her.
    """
    client = cognito_client(endpoint_url, region)
    pool = client.create_user_pool(
        PoolName=DEMO_POOL_NAME,
        UserPoolTier="ESSENTIALS",
        Policies={"SignInPolicy": {"AllowedFirstAuthFactors": ["PASSWORD", "EMAIL_OTP", "SMS_OTP"]}},
        AliasAttributes=["email", "phone_number"],
        AutoVerifiedAttributes=["email", "phone_number"],
        MfaConfiguration="OFF",
    )["UserPool"]
    app_client = client.create_user_pool_client(
        UserPoolId=pool["Id"],
        ClientName=DEMO_CLIENT_NAME,
        GenerateSecret=True,
        ExplicitAuthFlows=["ALLOW_USER_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        PreventUserExistenceErrors="ENABLED",
        AuthSessionValidity=3,
    )["UserPoolClient"]
    for user in DEMO_USERS:
        _create_user(client, pool["Id"], app_client, user)
    return SeedResult(
        endpoint_url=endpoint_url,
        region=region,
        user_pool_id=pool["Id"],
        client_id=app_client["ClientId"],
        client_secret=app_client["ClientSecret"],
        users=DEMO_USERS,
    )


def _create_user(client: Any, pool_id: str, app_client: dict[str, Any], user: SeedUser) -> None:
    confirmed = user.status == "CONFIRMED"
    attributes = [
        {"Name": "given_name", "Value": user.given_name},
        {"Name": "family_name", "Value": user.family_name},
    ]
    if user.email:
        attributes.append({"Name": "email", "Value": user.email})
        attributes.append({"Name": "email_verified", "Value": "true" if confirmed else "false"})
    if user.phone_number:
        attributes.append({"Name": "phone_number", "Value": user.phone_number})
        attributes.append({"Name": "phone_number_verified", "Value": "true" if confirmed else "false"})
    # Nobody signs in with these; they only satisfy the password policy and the PASSWORD factor.
    password = secrets.token_urlsafe(18) + "aA1!"
    if confirmed:
        client.admin_create_user(
            UserPoolId=pool_id, Username=user.username, UserAttributes=attributes, MessageAction="SUPPRESS"
        )
        client.admin_set_user_password(
            UserPoolId=pool_id, Username=user.username, Password=password, Permanent=True
        )
    else:
        from .passwordless import secret_hash

        client.sign_up(
            ClientId=app_client["ClientId"],
            SecretHash=secret_hash(
                username=user.username,
                client_id=app_client["ClientId"],
                client_secret=app_client["ClientSecret"],
            ),
            Username=user.username,
            Password=password,
            UserAttributes=[a for a in attributes if not a["Name"].endswith("_verified")],
        )
    if not user.enabled:
        client.admin_disable_user(UserPoolId=pool_id, Username=user.username)


def write_connection_files(
    result: SeedResult,
    connections_path: Path,
    secret_path: Path,
    name: str = "demo",
    api: Literal["public", "admin"] = "public",
) -> None:
    """Write ``[connections.<name>]`` to ``connections_path`` and the client secret to ``secret_path``.

    The TOML file is replaced as a whole. The secret file is created with mode 0600 (and tightened to
    0600 if it existed).
    """
    secret_path = write_secret_file(Path(secret_path).resolve(), result.client_secret)
    table = {
        "region": result.region,
        "user_pool_id": result.user_pool_id,
        "client_id": result.client_id,
        "client_secret_file": str(secret_path),
        "endpoint_url": result.endpoint_url,
        "api": api,
    }
    write_connections_file(Path(connections_path), {name: table})
