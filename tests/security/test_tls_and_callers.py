"""Only known callers get in: TLS, mTLS, bearer tokens, callers and tenancy, per-caller rate, rotation.

Real sockets, real certificates (a throw-away CA made here), a real JWKS served over HTTP by this test.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from harness import Emulator, RunningService, build_service, exported, free_port
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from otp_step_client import SERVICE_CONFIG, Credentials, Journey, Step, StepExecutorClient, StepExecutorError
from otp_step_demo.local_ca import Issued, LocalCa
from otp_step_service.config.settings import ServiceSettings, SettingsError
from prometheus_client.parser import text_string_to_metric_families
from stepexecutor.v1 import step_executor_pb2 as pb

ISSUER = "https://issuer.example.test"
AUDIENCE = "otp-step-service"
ORCHESTRATOR = "spiffe://example.test/ns/prod/sa/orchestrator"

CALLERS = f"""
[callers.orchestrator]
certificate_identities = ["{ORCHESTRATOR}"]
token_subjects = ["orchestrator-worker"]
connections = ["demo", "tokens"]

[callers.tenant-a]
certificate_identities = ["tenant-a.internal"]
connections = ["demo"]
tenant = "tenant-a"

[callers.noisy]
token_subjects = ["noisy-worker"]
connections = ["*"]
steps_per_second = 2

[callers.cognito-app]
token_subjects = ["app-client-1"]
connections = ["demo"]

[callers.slow]
token_subjects = ["slow-worker"]
connections = ["demo"]
steps_per_second = 0.1

[callers.budgeted]
token_subjects = ["budgeted-worker"]
connections = ["demo"]
send_budget_per_minute = 2
"""


class Jwks:
    """An issuer's signing key and its JWKS served on 127.0.0.1 (the test's identity provider)."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        ec_public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec_key.public_key()))
        # "k1" names its algorithm; "k-rsa" and "k-ec" do not (a JWKS may omit `alg`), so only their key
        # types say what they verify.
        keys = [
            {**public, "kid": "k1", "use": "sig", "alg": "RS256"},
            {**public, "kid": "k-rsa", "use": "sig"},
            {**ec_public, "kid": "k-ec", "use": "sig"},
        ]
        document = json.dumps({"keys": keys}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(document)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def token(self, subject: str = "orchestrator-worker", *, kid: str = "k1", **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + 300, **claims}
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": kid})

    def close(self) -> None:
        self._server.shutdown()


@dataclass
class Pki:
    """The CA, the server's files and the clients' certificates."""

    ca: LocalCa
    folder: Path
    cert: Path
    key: Path
    ca_file: Path
    orchestrator: Issued
    tenant_a: Issued
    stranger: Issued  # signed by the CA, but no caller names it
    expired: Issued
    foreign: Issued  # signed by another CA

    def credentials(self, client: Issued | None = None, token: str | None = None) -> Credentials:
        return Credentials(
            root_certificates=self.ca.pem,
            certificate_chain=client.certificate if client else None,
            private_key=client.key if client else None,
            token=token,
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("tls")
    ca = LocalCa()
    cert, key = ca.server().write(folder, "server")
    ca_file = folder / "ca.crt"
    ca_file.write_bytes(ca.pem)
    return Pki(
        ca,
        folder,
        cert,
        key,
        ca_file,
        orchestrator=ca.issue("orchestrator", uris=(ORCHESTRATOR,), dns=("ignored.internal",), client=True),
        tenant_a=ca.issue("tenant-a", dns=("tenant-a.internal",), client=True),
        stranger=ca.issue("stranger", dns=("stranger.internal",), client=True),
        expired=ca.issue("orchestrator", uris=(ORCHESTRATOR,), client=True, expired=True),
        foreign=LocalCa("another CA").issue("orchestrator", uris=(ORCHESTRATOR,), client=True),
    )


@pytest.fixture(scope="module")
def jwks() -> Iterator[Jwks]:
    issuer = Jwks()
    yield issuer
    issuer.close()


@pytest.fixture(scope="module")
def callers_file(connections_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("callers") / "connections.toml"
    path.write_text(connections_file.read_text() + CALLERS)
    return path


def _token_settings(jwks: Jwks) -> dict[str, str]:
    return {"token_issuer": ISSUER, "token_audience": AUDIENCE, "token_jwks_url": jwks.url}


@pytest.fixture(scope="module")
def mtls(pki: Pki, jwks: Jwks, callers_file: Path) -> Iterator[RunningService]:
    """mTLS required, bearer tokens accepted on top."""
    service = build_service(
        callers_file,
        tls_cert=str(pki.cert),
        tls_key=str(pki.key),
        tls_client_ca=str(pki.ca_file),
        metrics_listen=f"127.0.0.1:{free_port()}",
        **_token_settings(jwks),
    )
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def tokens_only(pki: Pki, jwks: Jwks, callers_file: Path) -> Iterator[RunningService]:
    """TLS without client certificates: callers authenticate with bearer tokens."""
    service = build_service(
        callers_file,
        tls_cert=str(pki.cert),
        tls_key=str(pki.key),
        metrics_listen=f"127.0.0.1:{free_port()}",
        **_token_settings(jwks),
    )
    service.start()
    yield service
    service.stop()


def _client(service: RunningService, credentials: Credentials) -> StepExecutorClient:
    return StepExecutorClient(f"127.0.0.1:{service.port}", timeout=5, credentials=credentials)


def _generate(client: StepExecutorClient, connection: str = "demo", tenant: str = "") -> Any:
    journey = Journey("auth-test", run_id=f"run-{time.monotonic_ns()}", step_id="send", tenant_id=tenant)
    return client.generate_otp(journey, Step(connection, "ada@example.com", channel="EMAIL"))


def _invalid_generate(client: StepExecutorClient) -> None:
    """A step the service refuses as INVALID_ARGUMENT once admitted (cheap: no Cognito call)."""
    client.generate_otp(Journey("auth-test", "run", "send"), Step("demo", ""))


def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(StepExecutorError) as raised:
        call()
    return raised.value.code


# --- TLS and mTLS ---------------------------------------------------------------------------------------------


def test_a_plaintext_client_cannot_call_a_tls_server(mtls: RunningService) -> None:
    with _client(mtls, Credentials()) as client:
        assert _code(client.health) is grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("who", ["no certificate", "another CA", "expired"])
def test_a_client_without_a_valid_certificate_fails_the_handshake(
    mtls: RunningService, pki: Pki, who: str
) -> None:
    client_cert = {"no certificate": None, "another CA": pki.foreign, "expired": pki.expired}[who]
    with _client(mtls, pki.credentials(client_cert)) as client:
        assert _code(client.health) is grpc.StatusCode.UNAVAILABLE


def test_a_client_that_does_not_trust_the_server_ca_fails(mtls: RunningService, pki: Pki) -> None:
    credentials = Credentials(
        root_certificates=LocalCa("not the server's").pem,
        certificate_chain=pki.orchestrator.certificate,
        private_key=pki.orchestrator.key,
    )
    with _client(mtls, credentials) as client:
        assert _code(client.health) is grpc.StatusCode.UNAVAILABLE


def test_the_uri_san_names_the_caller_and_its_step_runs(
    mtls: RunningService, pki: Pki, emulator: Emulator
) -> None:
    with _client(mtls, pki.credentials(pki.orchestrator)) as client:
        response = _generate(client)
    assert response.WhichOneof("outcome") == "success", response


# --- Callers and tenancy --------------------------------------------------------------------------------------


def test_a_caller_cannot_use_another_callers_connection(mtls: RunningService, pki: Pki) -> None:
    with _client(mtls, pki.credentials(pki.tenant_a)) as client:
        with pytest.raises(StepExecutorError) as raised:
            _generate(client, connection="tokens", tenant="tenant-a")
        with pytest.raises(StepExecutorError) as unknown:
            _generate(client, connection="no-such-connection", tenant="tenant-a")
        with pytest.raises(StepExecutorError) as check:
            client.check_connection("tokens")
    assert raised.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert (raised.value.reason, raised.value.domain) == ("CONNECTION_NOT_PERMITTED", "stepexecutor.v1")
    # The same answer for a name that does not exist: a caller cannot probe for connections.
    assert (unknown.value.code, unknown.value.message) == (raised.value.code, raised.value.message)
    assert check.value.code is grpc.StatusCode.PERMISSION_DENIED


def test_a_tenant_bound_caller_runs_only_its_tenants_journeys(mtls: RunningService, pki: Pki) -> None:
    with _client(mtls, pki.credentials(pki.tenant_a)) as client:
        with pytest.raises(StepExecutorError) as raised:
            _generate(client, tenant="tenant-b")
        assert raised.value.code is grpc.StatusCode.PERMISSION_DENIED
        assert raised.value.reason == "TENANT_MISMATCH"
        assert _generate(client, tenant="tenant-a").WhichOneof("outcome") == "success"


def test_a_verified_certificate_no_caller_names_is_denied(mtls: RunningService, pki: Pki) -> None:
    with _client(mtls, pki.credentials(pki.stranger)) as client, pytest.raises(StepExecutorError) as raised:
        _generate(client)
    assert raised.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert raised.value.reason == "UNKNOWN_CALLER"


# --- Bearer tokens --------------------------------------------------------------------------------------------


def _bad_tokens(jwks: Jwks) -> dict[str, str]:
    now = int(time.time())
    unsigned = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "orchestrator-worker", "exp": now + 300},
        key=None,
        algorithm="none",
        headers={"kid": "k1"},
    )
    return {
        "expired": jwks.token(exp=now - 120),
        "not yet valid": jwks.token(nbf=now + 600),
        "wrong audience": jwks.token(aud="someone-else"),
        "wrong issuer": jwks.token(iss="https://evil.example.test"),
        "alg none": unsigned,
        "unknown kid": jwks.token(kid="k-unknown"),
        "signed by another key": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "orchestrator-worker", "exp": now + 300},
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256",
            headers={"kid": "k1"},
        ),
        "garbage": "not-a-jwt",
    }


def test_bad_or_missing_tokens_are_unauthenticated_and_nothing_leaks(
    tokens_only: RunningService, pki: Pki, jwks: Jwks, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = _bad_tokens(jwks)
    answers: dict[str, tuple[grpc.StatusCode, str]] = {}
    for name, token in {"missing": None, **bad}.items():
        with (
            _client(tokens_only, pki.credentials(token=token)) as client,
            pytest.raises(StepExecutorError) as raised,
        ):
            _generate(client)
        answers[name] = (raised.value.code, raised.value.message)
    assert set(answers.values()) == {(grpc.StatusCode.UNAUTHENTICATED, "authentication required")}, answers
    good = jwks.token()
    with _client(tokens_only, pki.credentials(token=good)) as client:
        assert _generate(client).WhichOneof("outcome") == "success"
    secrets = [*bad.values(), good, pki.orchestrator.key.decode(), pki.key.read_text()]
    refusals = [r.getMessage() for r in caplog.records if "unauthenticated" in r.getMessage()]
    assert len(refusals) >= len(bad), "the refusals are logged (with why, not the token)"
    for record in caplog.records:
        line = record.getMessage()
        for secret in secrets:
            for part in secret.split("."):  # no token, nor its signature, nor any key material
                if len(part) > 20:
                    assert part not in line, (record.name, line)


def test_a_token_whose_algorithm_does_not_fit_its_keys_type_is_refused_and_counted(
    tokens_only: RunningService, pki: Pki, jwks: Jwks, caplog: pytest.LogCaptureFixture
) -> None:
    # Algorithm / key-type confusion: an ES256 header naming an RSA key (or the reverse) used to reach PyJWT
    # with a key of the wrong type, which raised TypeError: UNKNOWN for the caller, a stack trace per call.
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "orchestrator-worker", "exp": now + 300}
    confused = {
        "ES256 naming an RSA key with alg": jwt.encode(body, jwks.ec_key, "ES256", headers={"kid": "k1"}),
        "ES256 naming an RSA key": jwt.encode(body, jwks.ec_key, "ES256", headers={"kid": "k-rsa"}),
        "RS256 naming an EC key": jwt.encode(body, jwks.key, "RS256", headers={"kid": "k-ec"}),
    }
    good = jwt.encode(body, jwks.ec_key, "ES256", headers={"kid": "k-ec"})
    caplog.set_level(logging.INFO)
    before = _rejected(tokens_only)
    for name, token in confused.items():
        with _client(tokens_only, pki.credentials(token=token)) as client:
            assert _code(lambda: _generate(client)) is grpc.StatusCode.UNAUTHENTICATED, name
    assert _moved(before, _rejected(tokens_only)) == {"INVALID_TOKEN": len(confused)}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no stack trace per bad token"
    with _client(tokens_only, pki.credentials(token=good)) as client:  # the EC key itself still verifies
        assert _generate(client).WhichOneof("outcome") == "success"


def test_a_cached_token_is_refused_once_past_its_exp(
    tokens_only: RunningService, pki: Pki, jwks: Jwks
) -> None:
    # exp 25 s ago: still inside the 30 s leeway, so verified and cached, and past it about 5 s from now.
    token = jwks.token(exp=int(time.time()) - 25)
    with _client(tokens_only, pki.credentials(token=token)) as client:
        assert _code(lambda: _invalid_generate(client)) is grpc.StatusCode.INVALID_ARGUMENT  # admitted
        assert _code(lambda: _invalid_generate(client)) is grpc.StatusCode.INVALID_ARGUMENT  # the cache
        deadline = time.monotonic() + 20
        while (code := _code(lambda: _invalid_generate(client))) is grpc.StatusCode.INVALID_ARGUMENT:
            assert time.monotonic() < deadline, "a cached token is still accepted past its exp"
            time.sleep(0.05)
    assert code is grpc.StatusCode.UNAUTHENTICATED


def _access_token(jwks: Jwks, **claims: Any) -> str:
    """A Cognito-style access token (client credentials): no aud, client_id and token_use instead."""
    now = int(time.time())
    body = {"iss": ISSUER, "sub": "app-client-1", "client_id": "app-client-1", "token_use": "access"}
    body = {**body, "scope": "otp-steps/run", "iat": now, "exp": now + 300, **claims}
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None}, jwks.key, "RS256", headers={"kid": "k1"}
    )


def test_cognito_access_tokens_are_accepted_only_when_opted_in_for_their_app_client(
    tokens_only: RunningService, pki: Pki, jwks: Jwks, callers_file: Path
) -> None:
    service = build_service(
        callers_file,
        tls_cert=str(pki.cert),
        tls_key=str(pki.key),
        token_access_client_ids="app-client-1, app-client-2",
        **_token_settings(jwks),
    )
    service.start()
    refused = {
        "another app client": _access_token(jwks, client_id="app-client-9"),
        "no client_id": _access_token(jwks, client_id=None),
        "an id token's token_use": _access_token(jwks, token_use="id"),
        "no token_use": _access_token(jwks, token_use=None),
        "expired": _access_token(jwks, exp=int(time.time()) - 120),
        "another issuer": _access_token(jwks, iss="https://evil.example.test"),
    }
    try:
        admitted = {
            "access token": _access_token(jwks),
            "a token with aud, as before": jwks.token(),
        }
        for name, token in admitted.items():
            with _client(service, pki.credentials(token=token)) as client:
                assert _code(lambda: _invalid_generate(client)) is grpc.StatusCode.INVALID_ARGUMENT, name
        for name, token in refused.items():
            with _client(service, pki.credentials(token=token)) as client:
                assert _code(lambda: _invalid_generate(client)) is grpc.StatusCode.UNAUTHENTICATED, name
    finally:
        service.stop()
    # Not opted in: the same access token has no aud, and is refused.
    with _client(tokens_only, pki.credentials(token=_access_token(jwks))) as client:
        assert _code(lambda: _invalid_generate(client)) is grpc.StatusCode.UNAUTHENTICATED


def test_access_tokens_alone_need_no_audience_but_tokens_need_one_of_the_two(jwks: Jwks) -> None:
    settings = ServiceSettings.from_env(
        token_issuer=ISSUER, token_jwks_url=jwks.url, token_access_client_ids="app-client-1"
    )
    assert settings.token_audience is None
    with pytest.raises(SettingsError, match="OTP_STEP_TOKEN_ACCESS_CLIENT_IDS"):
        ServiceSettings.from_env(token_issuer=ISSUER, token_jwks_url=jwks.url)


def test_reflection_needs_a_credential_health_does_not(
    tokens_only: RunningService, pki: Pki, jwks: Jwks
) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    channel = pki.credentials().channel(f"127.0.0.1:{tokens_only.port}")
    with channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
        answer = list(
            stub.ServerReflectionInfo(
                iter([request]), timeout=5, metadata=[("authorization", f"Bearer {jwks.token()}")]
            )
        )
        assert "stepexecutor.v1.StepExecutor" in {s.name for s in answer[0].list_services_response.service}
    with _client(tokens_only, pki.credentials()) as client:
        assert client.health() == "SERVING"


def _key_material(*pems: bytes | str) -> list[str]:
    """The base64 lines of PEM private keys (any one of them in a span would be a leak)."""
    lines = []
    for pem in pems:
        text = pem.decode() if isinstance(pem, bytes) else pem
        lines += [line for line in text.splitlines() if line and not line.startswith("-----")]
    return lines


def test_no_span_carries_a_token_its_segments_key_material_or_the_authorization_metadata(
    pki: Pki, jwks: Jwks, callers_file: Path, span_exporter: InMemorySpanExporter
) -> None:
    from cryptography.hazmat.primitives import serialization

    service = build_service(
        callers_file,
        tracing=True,
        tls_cert=str(pki.cert),
        tls_key=str(pki.key),
        tls_client_ca=str(pki.ca_file),
        **_token_settings(jwks),
    )
    service.start()
    span_exporter.clear()
    good, bad = jwks.token(), _bad_tokens(jwks)
    try:
        with _client(service, pki.credentials(pki.orchestrator, token=good)) as client:  # mTLS + token
            assert _generate(client).WhichOneof("outcome") == "success"
            assert _code(lambda: _invalid_generate(client)) is grpc.StatusCode.INVALID_ARGUMENT
            assert client.check_connection("demo")
        with _client(service, pki.credentials(pki.orchestrator)) as client:  # mTLS alone
            assert _generate(client).WhichOneof("outcome") == "success"
        for token in bad.values():
            with _client(service, pki.credentials(pki.orchestrator, token=token)) as client:
                assert _code(lambda: _generate(client)) is grpc.StatusCode.UNAUTHENTICATED
    finally:
        service.stop()
    spans = span_exporter.get_finished_spans()
    names = [s.name for s in spans]
    # The scan below means something only if the calls were traced, down to the step and Cognito.
    assert names.count("/stepexecutor.v1.StepExecutor/GenerateOtp") >= 3, names
    assert "cognito_otp_generate" in names and "/stepexecutor.v1.StepExecutor/CheckConnection" in names
    signing_key = jwks.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    secrets = [part for token in (good, *bad.values()) for part in token.split(".") if len(part) >= 8]
    secrets += _key_material(pki.orchestrator.key, pki.key.read_bytes(), signing_key)
    for span in spans:
        dump = exported([span])
        assert "authorization" not in dump.lower() and "bearer" not in dump.lower(), dump
        for secret in secrets:
            assert secret not in dump, (span.name, secret[:6])


# --- Per-caller rate ------------------------------------------------------------------------------------------


def test_the_rate_limit_holds_back_the_noisy_caller_only(
    tokens_only: RunningService, pki: Pki, jwks: Jwks
) -> None:
    noisy_codes = []
    with (
        _client(tokens_only, pki.credentials(token=jwks.token("noisy-worker"))) as noisy,
        _client(tokens_only, pki.credentials(token=jwks.token())) as quiet,
    ):
        for _ in range(8):
            try:
                _invalid_generate(noisy)
            except StepExecutorError as exc:
                noisy_codes.append((exc.code, exc.reason))
            assert _code(lambda: _invalid_generate(quiet)) is grpc.StatusCode.INVALID_ARGUMENT
    assert (grpc.StatusCode.RESOURCE_EXHAUSTED, "CALLER_RATE_LIMITED") in noisy_codes
    assert (grpc.StatusCode.INVALID_ARGUMENT, "") in noisy_codes  # its first steps, within its burst, ran


# --- Refusals in the metrics ---------------------------------------------------------------------------------


def _rejected(service: RunningService) -> dict[str, float]:
    """`otp_rejected_calls_total` by reason, scraped from the service's real metrics endpoint."""
    metrics = service.service.metrics
    assert metrics is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "otp_rejected_calls_total"
    }


def _moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def test_every_authentication_and_authorization_refusal_is_counted_by_its_reason(
    mtls: RunningService, tokens_only: RunningService, pki: Pki, jwks: Jwks
) -> None:
    tokens_before, mtls_before = _rejected(tokens_only), _rejected(mtls)
    for token in (None, "not-a-jwt", jwks.token(exp=int(time.time()) - 120)):
        with _client(tokens_only, pki.credentials(token=token)) as client:
            assert _code(lambda: _generate(client)) is grpc.StatusCode.UNAUTHENTICATED
    limited = 0
    with _client(tokens_only, pki.credentials(token=jwks.token("noisy-worker"))) as noisy:
        for _ in range(8):
            try:
                _invalid_generate(noisy)
            except StepExecutorError as exc:
                limited += exc.reason == "CALLER_RATE_LIMITED"
    assert limited
    with _client(mtls, pki.credentials(pki.stranger)) as stranger:
        assert _code(lambda: _generate(stranger)) is grpc.StatusCode.PERMISSION_DENIED
    with _client(mtls, pki.credentials(pki.tenant_a)) as tenant_a:
        assert _code(lambda: _generate(tenant_a, connection="tokens", tenant="tenant-a")) is (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert _code(lambda: _generate(tenant_a, tenant="tenant-b")) is grpc.StatusCode.PERMISSION_DENIED
    # Exactly these refusals moved, each under its own reason; the token is in no label.
    assert _moved(tokens_before, _rejected(tokens_only)) == {
        "NO_CREDENTIAL": 1,
        "INVALID_TOKEN": 2,
        "CALLER_RATE_LIMITED": limited,
    }
    assert _moved(mtls_before, _rejected(mtls)) == {
        "UNKNOWN_CALLER": 1,
        "CONNECTION_NOT_PERMITTED": 1,
        "TENANT_MISMATCH": 1,
    }


def _answer(call: Any) -> tuple[grpc.StatusCode, str]:
    """The status and ErrorInfo reason of a call that the service refuses one way or another."""
    with pytest.raises(StepExecutorError) as raised:
        call()
    return raised.value.code, raised.value.reason


def test_instances_sharing_redis_hold_a_caller_to_one_rate_across_them(
    pki: Pki, jwks: Jwks, callers_file: Path, redis_url: str, keys_file: Path
) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    shared = {
        "challenge_store": redis_url,
        "challenge_keys_file": str(keys_file),
        "steps_per_second_per_caller": "50",  # the quiet caller is limited too, by its own allowance
        "tls_cert": str(pki.cert),
        "tls_key": str(pki.key),
        **_token_settings(jwks),
    }
    instances = [build_service(callers_file, **shared), build_service(callers_file, **shared)]
    for instance in instances:
        instance.start()
    slow_token, quiet_token = jwks.token("slow-worker"), jwks.token()
    try:
        slow = [_client(i, pki.credentials(token=slow_token)) for i in instances]
        quiet = [_client(i, pki.credentials(token=quiet_token)) for i in instances]
        # One step every 10 s for the slow caller: each instance alone would allow its first step.
        slow_answers = [_answer(lambda c=c: _invalid_generate(c)) for c in (*slow, *slow)]
        quiet_answers = [_answer(lambda c=c: _invalid_generate(c)) for c in (*quiet, *quiet)]
        for client in (*slow, *quiet):
            client.close()
    finally:
        for instance in instances:
            instance.stop()
    refusals = [i.service.server.security.authentication for i in instances]
    # Counted where refused, for otp_rejected_calls_total{reason="CALLER_RATE_LIMITED"}.
    assert sum(a.refusals["CALLER_RATE_LIMITED"] for a in refusals if a is not None) == 3
    admitted = (grpc.StatusCode.INVALID_ARGUMENT, "")
    limited = (grpc.StatusCode.RESOURCE_EXHAUSTED, "CALLER_RATE_LIMITED")
    assert slow_answers == [admitted, limited, limited, limited]
    assert quiet_answers == [admitted] * 4


def test_steps_are_refused_while_the_shared_rate_store_is_unreachable(
    pki: Pki, jwks: Jwks, callers_file: Path, keys_file: Path
) -> None:
    from harness import free_port

    service = build_service(
        callers_file,
        challenge_store=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        challenge_keys_file=str(keys_file),
        tls_cert=str(pki.cert),
        tls_key=str(pki.key),
        **_token_settings(jwks),
    )
    service.start()
    try:
        with _client(service, pki.credentials(token=jwks.token("noisy-worker"))) as client:
            with pytest.raises(StepExecutorError) as raised:
                _invalid_generate(client)
            assert client.health() == "SERVING"  # probes are not steps: they never touch the store
        authentication = service.service.server.security.authentication
        assert authentication is not None
        # The client's service config retries GenerateOtp on UNAVAILABLE: each attempt was refused.
        attempts = SERVICE_CONFIG["methodConfig"][0]["retryPolicy"]["maxAttempts"]  # type: ignore[index]
        assert authentication.refusals["CHALLENGE_STORE_UNAVAILABLE"] == attempts
    finally:
        service.stop()
    error = raised.value
    assert (error.code, error.reason, error.retryable) == (
        grpc.StatusCode.UNAVAILABLE,
        "CHALLENGE_STORE_UNAVAILABLE",
        True,
    )


# --- Certificate rotation -------------------------------------------------------------------------------------


def _served_serial(port: int, ca: bytes) -> int:
    """The serial number of the certificate a new handshake gets."""
    context = ssl.create_default_context(cadata=ca.decode())
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_a_rotated_certificate_reaches_new_handshakes_while_open_channels_keep_working(
    pki: Pki, jwks: Jwks, callers_file: Path, tmp_path: Path
) -> None:
    cert, key = pki.ca.server().write(tmp_path, "server")
    service = build_service(callers_file, tls_cert=str(cert), tls_key=str(key), **_token_settings(jwks))
    service.start()
    failures: list[BaseException] = []
    stop = threading.Event()
    try:
        before = _served_serial(service.port, pki.ca.pem)
        with _client(service, pki.credentials(token=jwks.token())) as kept:
            assert _generate(kept).WhichOneof("outcome") == "success"

            def keep_calling() -> None:
                while not stop.is_set():
                    try:
                        kept.health()
                        _code(lambda: _invalid_generate(kept))
                    except BaseException as exc:
                        failures.append(exc)
                        return

            caller = threading.Thread(target=keep_calling)
            caller.start()
            rotated = pki.ca.server()
            # Key first, then the chain, each by rename: a handshake never sees half a file.
            for name, data in (("server.key", rotated.key), ("server.crt", rotated.certificate)):
                staged = tmp_path / f"{name}.new"
                staged.write_bytes(data)
                os.replace(staged, tmp_path / name)
            deadline = time.monotonic() + 10
            while (after := _served_serial(service.port, pki.ca.pem)) == before:
                assert time.monotonic() < deadline, "the rotated certificate was never served"
                time.sleep(0.05)
            assert after == x509.load_pem_x509_certificate(rotated.certificate).serial_number
            assert _generate(kept).WhichOneof("outcome") == "success"  # the kept channel still works
            stop.set()
            caller.join(timeout=10)
        assert not failures, failures
    finally:
        stop.set()
        service.stop()


# --- Safe defaults --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"listen": "0.0.0.0:50051"}, "OTP_STEP_TLS_CERT"),
        ({"listen": "0.0.0.0:50051", "allow_insecure": "true"}, "callers must authenticate"),
        ({"tls_cert": "a.crt"}, "go together"),
        ({"token_issuer": ISSUER}, "together"),
        ({"token_algorithms": "none"}, "OTP_STEP_TOKEN_ALGORITHMS"),
        ({"token_algorithms": "HS256"}, "OTP_STEP_TOKEN_ALGORITHMS"),
        ({"metrics_listen": "0.0.0.0:9464"}, "OTP_STEP_METRICS_ALLOW_REMOTE"),
    ],
)
def test_settings_refuse_an_open_port(settings: dict[str, str], complaint: str) -> None:
    with pytest.raises(SettingsError, match=complaint):
        ServiceSettings.from_env(**settings)


def test_metrics_beyond_loopback_are_served_only_when_asked() -> None:
    assert ServiceSettings(metrics_listen="127.0.0.1:9464").metrics_on_loopback
    assert not ServiceSettings(metrics_listen="0.0.0.0:9464", metrics_allow_remote=True).metrics_on_loopback
    assert ServiceSettings(metrics_listen="[::]:9464", allow_insecure=True).metrics_listen == "[::]:9464"


def test_plaintext_beyond_loopback_with_tokens_is_allowed_when_asked(jwks: Jwks) -> None:
    settings = ServiceSettings.from_env(
        listen="0.0.0.0:50051", allow_insecure="true", **_token_settings(jwks)
    )
    assert settings.allow_insecure and not settings.listens_on_loopback


def test_the_allow_insecure_flag_is_what_lets_the_process_serve_plaintext_beyond_loopback(
    callers_file: Path, jwks: Jwks, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys

    from harness import start_service_process

    env = {
        **os.environ,
        "OTP_STEP_SELF_TEST": "off",
        **{f"OTP_STEP_{k.upper()}": v for k, v in _token_settings(jwks).items()},
    }
    env.pop("OTP_STEP_ALLOW_INSECURE", None)
    serve = [sys.executable, "-m", "otp_step_service", "serve", "--connections", str(callers_file)]
    refused = subprocess.run(
        [*serve, "--listen", "0.0.0.0:0"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert refused.returncode == 2, refused.stderr
    assert "beyond loopback" in refused.stderr and "--allow-insecure" in refused.stderr
    log_file = tmp_path / "service.log"
    process, port = start_service_process(
        callers_file, log_file, env, listen="0.0.0.0:0", flags=["--allow-insecure"]
    )
    try:
        with StepExecutorClient(f"127.0.0.1:{port}", timeout=5) as client:
            assert client.health() == "SERVING"  # plaintext, as asked
            assert _code(lambda: _invalid_generate(client)) is grpc.StatusCode.UNAUTHENTICATED
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    warnings = [
        json.loads(line)
        for line in log_file.read_text().splitlines()
        if "SERVING PLAINTEXT BEYOND LOOPBACK" in line
    ]
    assert len(warnings) == 1 and warnings[0]["level"] == "WARNING", log_file.read_text()
    assert "--allow-insecure" in warnings[0]["message"]


# --- The CLI and the configuration ----------------------------------------------------------------------------


def test_the_cli_calls_over_mtls_and_with_a_token(
    mtls: RunningService,
    tokens_only: RunningService,
    pki: Pki,
    jwks: Jwks,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from otp_step_client.cli import main

    cert, key = pki.orchestrator.write(tmp_path, "orchestrator")
    tls = ["--cacert", str(pki.ca_file)]
    assert (
        main(
            [
                "--target",
                f"127.0.0.1:{mtls.port}",
                *tls,
                "--cert",
                str(cert),
                "--key",
                str(key),
                "check-connection",
                "demo",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["ok"] is True
    target = ["--target", f"127.0.0.1:{tokens_only.port}", *tls]
    assert main([*target, "check-connection", "demo"]) == 2
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    monkeypatch.setenv("OTP_STEP_TOKEN", jwks.token())
    assert main([*target, "check-connection", "demo"]) == 0


def test_a_caller_naming_a_missing_connection_is_a_configuration_error(
    connections_file: Path, tmp_path: Path
) -> None:
    from otp_step_service.config.connections import load_connections_file
    from otp_step_service.steps.errors import ConfigurationError

    path = tmp_path / "connections.toml"
    path.write_text(
        connections_file.read_text() + '[callers.x]\ntoken_subjects = ["x"]\nconnections = ["nope"]\n'
    )
    with pytest.raises(ConfigurationError, match=r"callers\.x\.connections: no connection named nope"):
        load_connections_file(path)


def test_ghz_drives_the_service_over_mtls_and_with_a_bearer_token(
    mtls: RunningService, tokens_only: RunningService, pki: Pki, jwks: Jwks, tmp_path: Path
) -> None:
    import shutil
    import subprocess

    ghz = shutil.which("ghz", path=str(Path(__file__).resolve().parents[2] / ".bin")) or shutil.which("ghz")
    assert ghz, "ghz is missing: run `make tools`"
    cert, key = pki.orchestrator.write(tmp_path, "orchestrator")
    bearer = json.dumps({"authorization": f"Bearer {jwks.token()}"})
    runs = {
        "mtls": (mtls, ["--cacert", str(pki.ca_file), "--cert", str(cert), "--key", str(key)]),
        "token": (tokens_only, ["--cacert", str(pki.ca_file), "-m", bearer, "--reflect-metadata", bearer]),
    }
    # A Validate for a run with no code sent: through authentication and admission, no Cognito call.
    data = json.dumps(
        {
            "journey": {"journey_id": "ghz", "journey_run_id": "ghz-none", "step_id": "check"},
            "step": {"connection": "demo", "user_identifier": "ada@example.com"},
            "otp_code": "12345678",
        }
    )
    for name, (service, flags) in runs.items():
        result = subprocess.run(
            [
                ghz,
                *flags,
                "--call",
                "stepexecutor.v1.StepExecutor.ValidateOtp",
                "-d",
                data,
                "-n",
                "50",
                "-c",
                "5",
                "-O",
                "json",
                f"127.0.0.1:{service.port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert json.loads(result.stdout)["statusCodeDistribution"] == {"OK": 50}, (name, result.stderr)


def test_a_callers_send_budget_holds_only_that_caller_back(
    tokens_only: RunningService, pki: Pki, jwks: Jwks
) -> None:
    # "budgeted": 2 codes per minute over all its connections, whoever they go to; "orchestrator" has none.
    with _client(tokens_only, pki.credentials(token=jwks.token("budgeted-worker"))) as budgeted:
        answers = [_generate(budgeted) for _ in range(3)]
    with _client(tokens_only, pki.credentials(token=jwks.token("orchestrator-worker"))) as other:
        unaffected = _generate(other)
    assert [a.WhichOneof("outcome") for a in answers[:2]] == ["success", "success"]
    assert answers[2].failure.code == pb.FAILURE_CODE_SEND_BUDGET_EXHAUSTED
    assert 0 < answers[2].failure.retry_after_seconds <= 60
    assert unaffected.WhichOneof("outcome") == "success"


def test_a_refused_call_has_its_span_with_the_reason_and_no_credential_or_identity(
    pki: Pki, jwks: Jwks, callers_file: Path, span_exporter: InMemorySpanExporter
) -> None:
    service = build_service(
        callers_file, tracing=True, tls_cert=str(pki.cert), tls_key=str(pki.key), **_token_settings(jwks)
    )
    service.start()
    span_exporter.clear()
    bad = _bad_tokens(jwks)
    refused: dict[str, grpc.StatusCode] = {}
    try:
        with _client(service, pki.credentials(token=next(iter(bad.values())))) as client:
            refused["INVALID_TOKEN"] = _code(lambda: _generate(client))
        with _client(service, pki.credentials(token=jwks.token("unknown-subject"))) as client:
            refused["UNKNOWN_CALLER"] = _code(lambda: _generate(client))
        with _client(service, pki.credentials(token=jwks.token("noisy-worker"))) as client:
            for _ in range(8):
                with contextlib.suppress(StepExecutorError):
                    _invalid_generate(client)
    finally:
        service.stop()
    spans = [
        s for s in span_exporter.get_finished_spans() if s.name == "/stepexecutor.v1.StepExecutor/GenerateOtp"
    ]
    by_reason = {str((s.attributes or {}).get("error.type")): s for s in spans}
    assert refused == {
        "INVALID_TOKEN": grpc.StatusCode.UNAUTHENTICATED,
        "UNKNOWN_CALLER": grpc.StatusCode.PERMISSION_DENIED,
    }
    for reason, code in (*refused.items(), ("CALLER_RATE_LIMITED", grpc.StatusCode.RESOURCE_EXHAUSTED)):
        span = by_reason[reason]
        assert span.kind is SpanKind.SERVER and span.attributes is not None
        assert span.attributes["rpc.grpc.status_code"] == code.value[0]
        assert span.status.status_code is StatusCode.UNSET  # a refusal is not a failure of the service
        dump = exported([span])
        assert "unknown-subject" not in dump and "noisy-worker" not in dump and "bearer" not in dump.lower()
        assert not any(part in dump for token in bad.values() for part in token.split(".") if len(part) >= 8)


# --- Callers reloaded -----------------------------------------------------------------------------------------


def _load(client: StepExecutorClient, stop: threading.Event, seen: list[tuple[float, str]]) -> None:
    """Generate after Generate on "demo" until `stop`: (when the call started, how it ended)."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            _generate(
                client
            )  # its outcome (a code sent, or held back by the cooldown) is the step's business
            outcome = "ran"
        except StepExecutorError as exc:
            outcome = f"{exc.code.name}:{exc.reason}"
        seen.append((started, outcome))


def test_a_caller_removed_or_narrowed_by_a_reload_is_refused_from_its_next_call_under_load(
    pki: Pki, jwks: Jwks, callers_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "connections.toml"
    base = callers_file.read_text()
    path.write_text(
        base
        + '\n[callers.revocable]\ntoken_subjects = ["revocable-worker"]\nconnections = ["demo"]\n'
        + '\n[callers.narrowed]\ntoken_subjects = ["narrowed-worker"]\nconnections = ["demo", "tokens"]\n'
    )
    service = build_service(path, tls_cert=str(pki.cert), tls_key=str(pki.key), **_token_settings(jwks))
    service.start()
    caplog.set_level(logging.INFO)
    stop = threading.Event()
    seen: dict[str, list[tuple[float, str]]] = {"revocable": [], "narrowed": []}
    clients = {name: _client(service, pki.credentials(token=jwks.token(f"{name}-worker"))) for name in seen}
    threads = [threading.Thread(target=_load, args=(clients[n], stop, seen[n])) for n in seen]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while min(len(s) for s in seen.values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        # Revoke one caller, narrow the other to "tokens": the file a stolen credential's owner would write.
        path.write_text(
            base + '\n[callers.narrowed]\ntoken_subjects = ["narrowed-worker"]\nconnections = ["tokens"]\n'
        )
        assert service.run(service.service.reload())
        reloaded = time.monotonic()
        while min(sum(t > reloaded for t, _ in s) for s in seen.values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        for client in clients.values():
            client.close()
        service.stop()
    after = {name: {o for t, o in s if t > reloaded} for name, s in seen.items()}
    assert after == {
        "revocable": {"PERMISSION_DENIED:UNKNOWN_CALLER"},
        "narrowed": {"PERMISSION_DENIED:CONNECTION_NOT_PERMITTED"},
    }, after
    for name, calls in seen.items():
        before = [o for t, o in calls if t <= reloaded]
        assert before[0] == "ran", (name, before)  # it was live
        # In flight at the reload: finished one way or the other, never cut off with an error of its own.
        assert set(before) <= {"ran", *after[name]}, (name, before)
    reload_line = next(r.getMessage() for r in caplog.records if "configuration reloaded" in r.getMessage())
    assert "callers: removed: revocable; changed: narrowed" in reload_line, reload_line
