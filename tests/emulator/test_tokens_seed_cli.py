"""ID tokens against the served JWKS, the seed, settings, the CLI and the bench script."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jwt
import pytest
from botocore.exceptions import ClientError
from cognito_emulator import (
    EmulatorServer,
    EmulatorSettings,
    SettingsError,
    seed_demo,
    write_connection_files,
)
from cognito_emulator.bench import main as bench_main

from .support import REGION, Demo, http, make_client, poll

SERVER_DIR = Path(__file__).resolve().parents[2] / "server" / "cognito-emulator" / "src"


def sign_in(demo: Demo, username: str = "ada") -> dict[str, Any]:
    started = demo.start(username, "EMAIL_OTP")
    code = demo.last_code(demo.seed.user(username).email or "")
    result: dict[str, Any] = demo.answer("EMAIL_OTP", started["Session"], username, EMAIL_OTP_CODE=code)[
        "AuthenticationResult"
    ]
    return result


# ---- tokens -------------------------------------------------------------------------------------------
def test_the_id_token_verifies_against_the_served_jwks(demo: Demo) -> None:
    tokens = sign_in(demo)
    pool_id = demo.seed.user_pool_id
    jwks = jwt.PyJWKClient(f"{demo.endpoint_url}/{pool_id}/.well-known/jwks.json")
    key = jwks.get_signing_key_from_jwt(tokens["IdToken"])

    claims = jwt.decode(
        tokens["IdToken"],
        key.key,
        algorithms=["RS256"],
        audience=demo.seed.client_id,
        issuer=f"https://cognito-idp.{REGION}.amazonaws.com/{pool_id}",
    )
    assert claims["token_use"] == "id"
    assert claims["cognito:username"] == "ada"
    assert claims["email"] == "ada@example.com"
    assert claims["email_verified"] is True
    assert claims["given_name"] == "Ada"
    assert {"sub", "auth_time", "iat", "exp"} <= set(claims)


def test_a_tampered_token_does_not_verify(demo: Demo) -> None:
    tokens = sign_in(demo)
    key = jwt.PyJWKClient(
        f"{demo.endpoint_url}/{demo.seed.user_pool_id}/.well-known/jwks.json"
    ).get_signing_key_from_jwt(tokens["IdToken"])
    header, payload, signature = tokens["IdToken"].split(".")
    forged = ".".join([header, payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB"), signature])
    with pytest.raises(jwt.InvalidTokenError):
        jwt.decode(forged, key.key, algorithms=["RS256"], audience=demo.seed.client_id)


def test_the_access_token_works_for_get_user(demo: Demo) -> None:
    tokens = sign_in(demo, "grace")
    user = demo.client.get_user(AccessToken=tokens["AccessToken"])
    assert user["Username"] == "grace"


def test_get_user_works_for_a_user_created_by_an_admin_who_signed_in_with_a_code(demo: Demo) -> None:
    pool = demo.seed.user_pool_id
    demo.client.admin_create_user(
        UserPoolId=pool,
        Username="margaret",
        MessageAction="SUPPRESS",
        UserAttributes=[
            {"Name": "email", "Value": "margaret@example.com"},
            {"Name": "email_verified", "Value": "true"},
        ],
    )
    assert demo.user("margaret")["UserStatus"] == "FORCE_CHANGE_PASSWORD"
    started = demo.start("margaret", preferred="EMAIL_OTP")
    tokens = demo.answer(
        "EMAIL_OTP", started["Session"], "margaret", EMAIL_OTP_CODE=demo.last_code("margaret@example.com")
    )["AuthenticationResult"]
    user = demo.client.get_user(AccessToken=tokens["AccessToken"])
    assert {a["Name"]: a["Value"] for a in user["UserAttributes"]}["email"] == "margaret@example.com"


def test_the_refresh_token_works_with_the_secret_hash(demo: Demo) -> None:
    tokens = sign_in(demo)
    refreshed = demo.client.initiate_auth(
        ClientId=demo.seed.client_id,
        AuthFlow="REFRESH_TOKEN_AUTH",
        AuthParameters={"REFRESH_TOKEN": tokens["RefreshToken"], "SECRET_HASH": demo.secret_hash("ada")},
    )
    assert "IdToken" in refreshed["AuthenticationResult"]


# ---- expiry (its own emulator with a 1 s lifetime) ----------------------------------------------------
def test_an_expired_session_is_not_authorized(fresh: EmulatorServer) -> None:
    with EmulatorServer(port=0, settings=EmulatorSettings(code_lifetime_seconds=1)) as short:
        demo = Demo(short.endpoint_url, seed_demo(short.endpoint_url), make_client(short.endpoint_url))
        started = demo.start("ada", "EMAIL_OTP")
        code = demo.last_code("ada@example.com")

        def expired() -> bool:
            # Answering another challenge is refused without spending an attempt, until the session expires.
            try:
                demo.answer("SMS_OTP", started["Session"], "ada", SMS_OTP_CODE=code)
            except ClientError as exc:
                return exc.response["Error"]["Code"] == "NotAuthorizedException"
            raise AssertionError("the wrong challenge was accepted")

        poll(expired, timeout=5)
        with pytest.raises(ClientError) as excinfo:
            demo.answer("EMAIL_OTP", started["Session"], "ada", EMAIL_OTP_CODE=code)
        assert excinfo.value.response["Error"]["Code"] == "NotAuthorizedException"


def test_the_session_lifetime_defaults_to_auth_session_validity(demo: Demo, emulator: EmulatorServer) -> None:
    demo.start("ada", "EMAIL_OTP")
    [session] = list(emulator.runtime.sessions._sessions.values())
    assert session.lifetime_seconds == 3 * 60


# ---- settings -----------------------------------------------------------------------------------------
def test_settings_come_from_the_environment() -> None:
    settings = EmulatorSettings.from_env(
        {"COGNITO_EMULATOR_ATTEMPT_CAP": "5", "COGNITO_EMULATOR_CODE_LIFETIME_SECONDS": "1.5"}
    )
    assert (settings.attempt_cap, settings.code_lifetime_seconds) == (5, 1.5)
    with pytest.raises(SettingsError, match="attempt_cap"):
        EmulatorSettings.from_env({"COGNITO_EMULATOR_ATTEMPT_CAP": "0"})


def test_settings_can_be_changed_over_http(fresh: EmulatorServer) -> None:
    status, body = http("POST", f"{fresh.endpoint_url}/_settings", {"attempt_cap": 5})
    assert status == 200
    assert body["attempt_cap"] == 5
    assert fresh.settings.attempt_cap == 5
    status, body = http("POST", f"{fresh.endpoint_url}/_settings", {"attempt_cap": -1})
    assert status == 400
    assert "attempt_cap" in body["error"]


# ---- seed ---------------------------------------------------------------------------------------------
def test_the_seed_creates_the_demo_pool_client_and_users(fresh: EmulatorServer) -> None:
    result = seed_demo(fresh.endpoint_url)
    client = make_client(fresh.endpoint_url)
    pool = client.describe_user_pool(UserPoolId=result.user_pool_id)["UserPool"]
    assert pool["Name"] == "demo-passwordless"
    assert pool["Policies"]["SignInPolicy"]["AllowedFirstAuthFactors"] == ["PASSWORD", "EMAIL_OTP", "SMS_OTP"]
    app_client = client.describe_user_pool_client(UserPoolId=result.user_pool_id, ClientId=result.client_id)[
        "UserPoolClient"
    ]
    assert app_client["ClientName"] == "otp-steps"
    assert app_client["ClientSecret"] == result.client_secret
    assert {"ALLOW_USER_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"} <= set(app_client["ExplicitAuthFlows"])
    assert app_client["PreventUserExistenceErrors"] == "ENABLED"
    assert app_client["AuthSessionValidity"] == 3

    states = {
        u["Username"]: (u["UserStatus"], u["Enabled"])
        for u in client.list_users(UserPoolId=result.user_pool_id)["Users"]
    }
    assert states == {
        "ada": ("CONFIRMED", True),
        "grace": ("CONFIRMED", True),
        "alan": ("CONFIRMED", True),
        "hedy": ("UNCONFIRMED", True),
        "edsger": ("CONFIRMED", False),
    }
    assert "secret" not in repr(result).replace("client_secret='***'", "")


def test_connection_files_are_written_as_the_service_reads_them(
    fresh: EmulatorServer, tmp_path: Path
) -> None:
    result = seed_demo(fresh.endpoint_url)
    connections, secret = tmp_path / "connections.toml", tmp_path / "secrets" / "demo.secret"
    write_connection_files(result, connections, secret)

    assert tomllib.loads(connections.read_text()) == {
        "connections": {
            "demo": {
                "region": "us-east-1",
                "user_pool_id": result.user_pool_id,
                "client_id": result.client_id,
                "client_secret_file": str(secret.resolve()),
                "endpoint_url": fresh.endpoint_url,
                "api": "public",
            }
        }
    }
    assert secret.read_text() == result.client_secret
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert result.client_secret not in connections.read_text()


# ---- CLI and bench ------------------------------------------------------------------------------------
def test_the_cli_serves_and_seeds(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SERVER_DIR), os.environ.get("PYTHONPATH")])),
    }
    connections, secret = tmp_path / "c.toml", tmp_path / "demo.secret"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cognito_emulator",
            "--port",
            "0",
            "--seed",
            "--connections",
            str(connections),
            "--secret-file",
            str(secret),
            "--attempt-cap",
            "4",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("cognito-emulator listening on http://127.0.0.1:")
        assert lines[1].startswith("seeded pool ")
        assert lines[2].startswith("wrote ")
        endpoint = lines[0].split()[-1]
        assert http("GET", f"{endpoint}/_settings")[1]["attempt_cap"] == 4
        assert tomllib.loads(connections.read_text())["connections"]["demo"]["endpoint_url"] == endpoint
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_the_bench_runs_in_quick_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--quick", "--threads", "2"]) == 0
    output = capsys.readouterr().out
    assert "ratio emulator/moto user-auth" in output
    assert " 0 unexpected" in output
