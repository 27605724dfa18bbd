"""Store failures of every kind leave as ChallengeStoreError (a retryable step failure), never as a crash."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from otp_step_service.adapters.redis_connection import ScriptNotSentError, failure_reason, lost_under_redis_py
from otp_step_service.adapters.redis_encoding import decode_challenge
from otp_step_service.adapters.redis_rate import RedisStepRate
from otp_step_service.adapters.sealing import SessionSealer
from otp_step_service.steps.errors import ChallengeStoreError
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import AuthenticationError, ConnectionError, NoPermissionError, ResponseError


async def _take_from_an_unreachable_cluster() -> None:
    # Port 1 on loopback refuses at once: no node answers, so the cluster client cannot even learn its slots.
    cluster = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", 1)])
    try:
        await RedisStepRate(cluster).take("caller", 5.0)
    finally:
        await cluster.aclose()


def test_a_cluster_with_no_reachable_node_is_a_store_failure_not_a_crash() -> None:
    with pytest.raises(ChallengeStoreError, match="RedisClusterException"):
        asyncio.run(_take_from_an_unreachable_cluster())


def _raised_from(error: Exception, cause: BaseException) -> Exception:
    try:
        raise error from cause
    except Exception as raised:
        return raised


def test_a_failure_an_operator_must_mend_says_what_to_check_and_nothing_the_server_said() -> None:
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "unable to get local issuer certificate"
    untrusted = _raised_from(
        ConnectionError("Error 1 connecting to 10.0.0.7:6379. otp-steps:{c:secret}"), verify
    )
    assert failure_reason(untrusted) == (
        "ConnectionError: TLS certificate verify failed (unable to get local issuer certificate): check "
        "OTP_STEP_CHALLENGE_STORE_CA_FILE and the names in the server's certificate"
    )
    required = ssl.SSLError(1, "tlsv13 alert certificate required")
    required.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert "TLSV13_ALERT_CERTIFICATE_REQUIRED): a Redis that requires client certificates needs " in (
        failure_reason(_raised_from(ConnectionError("reading"), required))
    )
    assert "OTP_STEP_CHALLENGE_STORE_PASSWORD_FILE" in failure_reason(AuthenticationError("invalid pair"))
    refused = failure_reason(NoPermissionError("No permissions to access key 'otp-steps:{c:secret}'"))
    assert "otp-steps.acl" in refused and "secret" not in refused
    # Anything else: its type only (a server's message may quote a key or a value).
    assert failure_reason(ResponseError("ERR Error running script: otp-steps:{c:secret}")) == "ResponseError"


def _raised_in(filename: str) -> AttributeError:
    """The AttributeError of a write on a writer already gone, raised by code that claims to live in
    `filename` (where redis-py's connection code lives, say)."""
    namespace: dict[str, object] = {}
    exec(compile("def write(writer):\n    writer.writelines([b'PING'])", filename, "exec"), namespace)
    try:
        namespace["write"](None)  # type: ignore[operator]
    except AttributeError as error:
        return error
    raise AssertionError("no error")


def test_a_connection_closed_under_redis_py_is_a_store_failure_and_a_bug_of_ours_is_not() -> None:
    assert lost_under_redis_py(_raised_in("/venv/site-packages/redis/asyncio/connection.py"))
    assert lost_under_redis_py(_raised_in("/usr/lib/python3.12/asyncio/selector_events.py"))
    assert not lost_under_redis_py(_raised_in("/app/otp_step_service/adapters/redis_store.py"))


def test_a_script_that_was_never_sent_reads_as_what_kept_it_from_being_sent() -> None:
    # Told apart from a lost reply inside the store (nothing to release), and logged as its cause.
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "self-signed certificate"
    untrusted = _raised_from(ConnectionError("Error 1 connecting"), verify)
    unsent = _raised_from(ScriptNotSentError("ConnectionError"), untrusted)
    assert failure_reason(unsent) == failure_reason(untrusted)
    assert failure_reason(unsent).startswith("ConnectionError: TLS certificate verify failed (self-signed")


def test_a_stored_value_that_is_no_sealed_token_is_not_quoted_in_the_error() -> None:
    # The store's error message reaches the log: a value stored in clear (no "<key id>:" in front) may be a
    # session, and once was quoted whole as the "key id".
    sealer = SessionSealer([("k1", bytes(32))])
    for stored in ("AYABeJ-a-cognito-session-in-clear", "k1\nAYABeJ-session", "x" * 40 + ":AAAA"):
        with pytest.raises(ChallengeStoreError) as refused:
            sealer.open(stored, "challenge:aaa")
        assert "AYABeJ" not in str(refused.value) and "x" * 33 not in str(refused.value)
        assert str(refused.value) == "a stored challenge is not sealed (its value names no key id)"
    with pytest.raises(ChallengeStoreError, match="key id 'k0', which"):
        sealer.open("k0:AAAA", "challenge:aaa")


@pytest.mark.parametrize(
    "stored",
    [b"not json", b"[1, 2]", b'{"username": "k1:AAAA"}', b'{"channel": "pigeon"}', b"\xff\xfe"],
    ids=["not-json", "not-an-object", "fields-missing", "unknown-channel", "not-utf8"],
)
def test_a_stored_value_that_is_no_challenge_is_a_store_failure_not_a_crash(stored: bytes) -> None:
    sealer = SessionSealer([("k1", bytes(32))])
    with pytest.raises(ChallengeStoreError, match=r"malformed|not sealed|does not open"):
        decode_challenge(stored, sealer, "challenge:abc")
