"""The pool under test: where it is, its app clients and the throw-away users the suite signs in.

Three ways to get one, all through the public cognito-idp API (so the same code runs against the emulator
and against AWS):

- :func:`create_pool` makes a throw-away pool and app client (the local emulator mode uses it too), and
  :meth:`PoolUnderTest.clean_up` deletes the pool;
- :func:`named_pool` uses a pool and app client the user names, adds throw-away users and app clients to it,
  and :meth:`PoolUnderTest.clean_up` deletes exactly those.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions

from ..passwordless import secret_hash

log = logging.getLogger(__name__)

#: Prefix of every name the suite creates, so a left-over is easy to spot and delete by hand.
NAME_PREFIX = "otp-conformance"


@dataclass(frozen=True)
class AppClient:
    """An app client of the pool. ``secret`` is a secret: never logged or reported."""

    client_id: str
    secret: str | None
    label: str

    def secret_hash(self, username: str) -> str | None:
        """SECRET_HASH for ``username`` [doc], or None when the client has no secret."""
        return (
            None
            if self.secret is None
            else secret_hash(username=username, client_id=self.client_id, client_secret=self.secret)
        )

    def __repr__(self) -> str:
        return f"AppClient({self.label}, {self.client_id}, secret={'***' if self.secret else None})"


@dataclass(frozen=True)
class TestUser:
    """A throw-away user the suite created; ``role`` says what it is for."""

    role: str
    username: str
    email: str | None = None
    phone_number: str | None = None


@dataclass
class PoolUnderTest:
    """A pool, its main app client (the one the service would use) and what the suite added to it."""

    cognito: Any
    region: str
    endpoint_url: str | None
    user_pool_id: str
    main_client: AppClient
    created_pool: bool
    extra_clients: dict[str, AppClient] = field(default_factory=dict)
    users: dict[str, TestUser] = field(default_factory=dict)
    setup_problems: dict[str, str] = field(default_factory=dict)
    """What could not be created (role or client label → error name): the rules needing it are not checked."""

    @property
    def issuer(self) -> str:
        """The ID tokens' ``iss`` [doc]."""
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.user_pool_id}"

    @property
    def jwks_url(self) -> str:
        """Where the pool's signing keys are: the emulator serves them under its own URL."""
        if self.endpoint_url:
            return f"{self.endpoint_url.rstrip('/')}/{self.user_pool_id}/.well-known/jwks.json"
        return f"{self.issuer}/.well-known/jwks.json"

    def describe_client(self, client: AppClient) -> dict[str, Any]:
        """DescribeUserPoolClient's ``UserPoolClient`` (its ``ClientSecret`` is dropped here)."""
        described: dict[str, Any] = self.cognito.describe_user_pool_client(
            UserPoolId=self.user_pool_id, ClientId=client.client_id
        )["UserPoolClient"]
        described.pop("ClientSecret", None)
        return described

    # ---- what the suite adds ---------------------------------------------------------------------------
    def add_client(self, label: str, **settings: Any) -> AppClient | None:
        """A throw-away app client without a secret; None (and a setup problem) when Cognito refuses."""
        try:
            created = self.cognito.create_user_pool_client(
                UserPoolId=self.user_pool_id,
                ClientName=f"{NAME_PREFIX}-{label}",
                GenerateSecret=False,
                AuthSessionValidity=3,
                **settings,
            )["UserPoolClient"]
        except botocore.exceptions.ClientError as exc:
            self.setup_problems[label] = _error_name(exc)
            return None
        client = AppClient(created["ClientId"], None, label)
        self.extra_clients[label] = client
        return client

    def add_user(
        self,
        role: str,
        *,
        email: str | None = None,
        phone_number: str | None = None,
        password: bool = True,
        disabled: bool = False,
    ) -> TestUser | None:
        """AdminCreateUser (no message sent) with verified channels, a permanent password if asked."""
        username = f"{NAME_PREFIX}-{role}-{secrets.token_hex(3)}"
        attributes = []
        if email:
            attributes += [{"Name": "email", "Value": email}, {"Name": "email_verified", "Value": "true"}]
        if phone_number:
            attributes += [
                {"Name": "phone_number", "Value": phone_number},
                {"Name": "phone_number_verified", "Value": "true"},
            ]
        try:
            self.cognito.admin_create_user(
                UserPoolId=self.user_pool_id,
                Username=username,
                UserAttributes=attributes,
                MessageAction="SUPPRESS",
            )
            # Registered before the next calls, so clean_up deletes it even if they fail.
            user = TestUser(role, username, email, phone_number)
            self.users[role] = user
            if password:
                # Nobody signs in with it; it only makes PASSWORD a factor of this user.
                self.cognito.admin_set_user_password(
                    UserPoolId=self.user_pool_id,
                    Username=username,
                    Password=secrets.token_urlsafe(18) + "aA1!",
                    Permanent=True,
                )
            if disabled:
                self.cognito.admin_disable_user(UserPoolId=self.user_pool_id, Username=username)
        except botocore.exceptions.ClientError as exc:
            self.setup_problems[role] = _error_name(exc)
            return None
        return user

    def sign_up_user(self, role: str, email: str) -> TestUser | None:
        """SignUp through the main client: an UNCONFIRMED user, as a self-registered one is."""
        username = f"{NAME_PREFIX}-{role}-{secrets.token_hex(3)}"
        request: dict[str, Any] = {
            "ClientId": self.main_client.client_id,
            "Username": username,
            "Password": secrets.token_urlsafe(18) + "aA1!",
            "UserAttributes": [{"Name": "email", "Value": email}],
        }
        hashed = self.main_client.secret_hash(username)
        if hashed is not None:
            request["SecretHash"] = hashed
        try:
            self.cognito.sign_up(**request)
        except botocore.exceptions.ClientError as exc:
            self.setup_problems[role] = _error_name(exc)
            return None
        user = TestUser(role, username, email)
        self.users[role] = user
        return user

    def user_status(self, user: TestUser) -> tuple[str, dict[str, str]]:
        """AdminGetUser: the user's status and attributes."""
        got = self.cognito.admin_get_user(UserPoolId=self.user_pool_id, Username=user.username)
        return str(got["UserStatus"]), {a["Name"]: a.get("Value", "") for a in got.get("UserAttributes", [])}

    def clean_up(self) -> list[str]:
        """Delete what the suite created; returns what could not be deleted (to say so in the report)."""
        left: list[str] = []
        if self.created_pool:
            try:
                self.cognito.delete_user_pool(UserPoolId=self.user_pool_id)
            except botocore.exceptions.ClientError as exc:
                left.append(f"user pool {self.user_pool_id} ({_error_name(exc)})")
            return left
        for user in self.users.values():
            try:
                self.cognito.admin_delete_user(UserPoolId=self.user_pool_id, Username=user.username)
            except botocore.exceptions.ClientError as exc:
                left.append(f"user {user.username} ({_error_name(exc)})")
        for client in self.extra_clients.values():
            try:
                self.cognito.delete_user_pool_client(UserPoolId=self.user_pool_id, ClientId=client.client_id)
            except botocore.exceptions.ClientError as exc:
                left.append(f"app client {client.client_id} ({_error_name(exc)})")
        return left


def create_pool(cognito: Any, region: str, endpoint_url: str | None) -> PoolUnderTest:
    """A throw-away pool shaped like the demo one: Essentials, EMAIL_OTP / SMS_OTP / PASSWORD first factors,
    no aliases (so several test users can share one mailbox), MFA off, a message template of our own, and an
    app client with a secret, ALLOW_USER_AUTH and PreventUserExistenceErrors=ENABLED."""
    pool = cognito.create_user_pool(
        PoolName=f"{NAME_PREFIX}-{secrets.token_hex(4)}",
        UserPoolTier="ESSENTIALS",
        Policies={"SignInPolicy": {"AllowedFirstAuthFactors": ["PASSWORD", "EMAIL_OTP", "SMS_OTP"]}},
        MfaConfiguration="OFF",
        DeletionProtection="INACTIVE",
        VerificationMessageTemplate={
            "EmailMessage": "Your conformance sign-in code is {####}",
            "EmailSubject": "Conformance sign-in code",
            "DefaultEmailOption": "CONFIRM_WITH_CODE",
        },
    )["UserPool"]
    try:
        client = cognito.create_user_pool_client(
            UserPoolId=pool["Id"],
            ClientName=f"{NAME_PREFIX}-main",
            GenerateSecret=True,
            ExplicitAuthFlows=["ALLOW_USER_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
            PreventUserExistenceErrors="ENABLED",
            AuthSessionValidity=3,
        )["UserPoolClient"]
    except botocore.exceptions.ClientError:
        cognito.delete_user_pool(UserPoolId=pool["Id"])
        raise
    return PoolUnderTest(
        cognito=cognito,
        region=region,
        endpoint_url=endpoint_url,
        user_pool_id=pool["Id"],
        main_client=AppClient(client["ClientId"], client.get("ClientSecret"), "main"),
        created_pool=True,
    )


def named_pool(
    cognito: Any,
    region: str,
    endpoint_url: str | None,
    user_pool_id: str,
    client_id: str,
    client_secret: str | None,
) -> PoolUnderTest:
    """The pool and app client the user named. Without a secret given, DescribeUserPoolClient supplies it."""
    if client_secret is None:
        described = cognito.describe_user_pool_client(UserPoolId=user_pool_id, ClientId=client_id)
        client_secret = described["UserPoolClient"].get("ClientSecret")
    return PoolUnderTest(
        cognito=cognito,
        region=region,
        endpoint_url=endpoint_url,
        user_pool_id=user_pool_id,
        main_client=AppClient(client_id, client_secret, "main"),
        created_pool=False,
    )


def _error_name(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "ClientError"))
