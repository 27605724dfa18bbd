"""The challenge store and the step rate the settings name: the one place concrete stores are built.

OTP_STEP_CHALLENGE_STORE is parsed by `config.store_url`; `memory` keeps both in this process, any Redis URL
puts both in that Redis (one, Sentinel-managed or a Cluster), shared by every instance and process using it.
"""

from __future__ import annotations

from pathlib import Path

from otp_step_service.adapters.memory_store import InMemoryChallengeStore
from otp_step_service.adapters.redis_connection import StoreSecrets, redis_client
from otp_step_service.adapters.redis_store import RedisChallengeStore
from otp_step_service.adapters.sealing import SessionSealer
from otp_step_service.config.settings import ServiceSettings
from otp_step_service.config.store_url import parse_store_url
from otp_step_service.steps.clock import SYSTEM_CLOCK, Clock
from otp_step_service.steps.errors import ConfigurationError
from otp_step_service.steps.ports import ChallengeStore
from otp_step_service.steps.step_rate import InProcessStepRate, StepRate


def store_secrets(settings: ServiceSettings) -> StoreSecrets:
    """The store's password and TLS files from the settings."""
    return StoreSecrets(
        password_file=settings.challenge_store_password_file,
        ca_file=settings.challenge_store_ca_file,
        cert_file=settings.challenge_store_cert_file,
        key_file=settings.challenge_store_key_file,
    )


def challenge_store(
    url: str,
    keys_file: Path | None = None,
    clock: Clock = SYSTEM_CLOCK,
    max_connections: int = 256,
    *,
    secrets: StoreSecrets | None = None,
    min_replicas: int | None = None,
) -> ChallengeStore:
    """The store named by OTP_STEP_CHALLENGE_STORE (a shared one seals sessions with OTP_STEP_CHALLENGE_KEYS_FILE)."""
    address = parse_store_url(url)
    if not address.shared:
        return InMemoryChallengeStore(clock)
    if keys_file is None:
        raise ConfigurationError(
            "OTP_STEP_CHALLENGE_KEYS_FILE is required with a shared challenge store: Cognito sessions are sealed "
            "at rest (see docs/configuration.md)"
        )
    client = redis_client(address, secrets or StoreSecrets(), max_connections)
    return RedisChallengeStore(
        client, SessionSealer.from_file(keys_file), clock=clock, min_replicas=min_replicas
    )


def redis_challenge_store(
    url: str,
    sealer: SessionSealer,
    *,
    max_connections: int = 256,
    clock: Clock = SYSTEM_CLOCK,
    secrets: StoreSecrets | None = None,
    min_replicas: int | None = 0,
) -> RedisChallengeStore:
    """A Redis store for any store URL but `memory`, sealing with `sealer` (tests, benchmarks, tools)."""
    client = redis_client(parse_store_url(url), secrets or StoreSecrets(), max_connections)
    return RedisChallengeStore(client, sealer, clock=clock, min_replicas=min_replicas)


def step_rate(settings: ServiceSettings, clock: Clock = SYSTEM_CLOCK) -> StepRate:
    """Where per-caller steps per second are counted: in this process beside the in-memory store, in the same
    Redis as a Redis store (shared by every instance and process that uses it)."""
    address = parse_store_url(settings.challenge_store)
    if not address.shared:
        return InProcessStepRate(clock)
    from otp_step_service.adapters.redis_rate import RedisStepRate

    return RedisStepRate(redis_client(address, store_secrets(settings), 64), clock=clock)
