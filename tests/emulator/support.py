"""Helpers for the emulator tests: a boto3 client on the emulator, JSON over HTTP, polling, the demo."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.config import Config
from cognito_emulator import SeedResult
from cognito_emulator.passwordless import secret_hash
from cognito_emulator.seed import cognito_client

REGION = "us-east-1"


def make_client(endpoint_url: str) -> Any:
    """boto3 cognito-idp client with dummy credentials and no retries (each call is one request)."""
    config = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10)
    return cognito_client(endpoint_url, REGION, config)


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """A JSON request to the emulator's control endpoints; returns (status, decoded body)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def poll(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Call ``predicate`` until it returns something truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@dataclass
class Demo:
    """The seeded demo pool, with shortcuts for the calls the tests make."""

    endpoint_url: str
    seed: SeedResult
    client: Any

    def secret_hash(self, username: str) -> str:
        """SECRET_HASH for ``username`` with the demo client's secret."""
        return secret_hash(
            username=username, client_id=self.seed.client_id, client_secret=self.seed.client_secret
        )

    def start(self, username: str, preferred: str | None = None, **extra: str) -> dict[str, Any]:
        """InitiateAuth USER_AUTH (with SECRET_HASH)."""
        params = {"USERNAME": username, "SECRET_HASH": self.secret_hash(username), **extra}
        if preferred:
            params["PREFERRED_CHALLENGE"] = preferred
        response: dict[str, Any] = self.client.initiate_auth(
            ClientId=self.seed.client_id, AuthFlow="USER_AUTH", AuthParameters=params
        )
        return response

    def answer(self, challenge: str, session: str, username: str, **responses: str) -> dict[str, Any]:
        """RespondToAuthChallenge (with SECRET_HASH)."""
        response: dict[str, Any] = self.client.respond_to_auth_challenge(
            ClientId=self.seed.client_id,
            ChallengeName=challenge,
            Session=session,
            ChallengeResponses={"USERNAME": username, "SECRET_HASH": self.secret_hash(username), **responses},
        )
        return response

    def outbox(self, destination: str | None = None) -> list[dict[str, Any]]:
        """Messages from ``GET /_outbox``."""
        return outbox(self.endpoint_url, destination)

    def last_code(self, destination: str) -> str:
        """The code of the newest message to ``destination``."""
        messages = self.outbox(destination)
        assert messages, f"nothing was sent to {destination}"
        return str(messages[-1]["code"])

    def user(self, username: str) -> dict[str, Any]:
        """AdminGetUser, with attributes flattened into ``attrs``."""
        response: dict[str, Any] = self.client.admin_get_user(
            UserPoolId=self.seed.user_pool_id, Username=username
        )
        response["attrs"] = {a["Name"]: a["Value"] for a in response["UserAttributes"]}
        return response


def outbox(endpoint_url: str, destination: str | None = None) -> list[dict[str, Any]]:
    """Messages from ``GET /_outbox`` of the emulator at ``endpoint_url``."""
    query = "" if destination is None else "?" + urllib.parse.urlencode({"destination": destination})
    status, body = http("GET", f"{endpoint_url}/_outbox{query}")
    assert status == 200
    messages: list[dict[str, Any]] = body["messages"]
    return messages
