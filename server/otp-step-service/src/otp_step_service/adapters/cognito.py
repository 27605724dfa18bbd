"""Cognito's passwordless sign-in through aiobotocore: the CognitoGateway for one connection.

aiobotocore is botocore on asyncio: the same service model, serializers, exceptions and retry configuration
boto3 uses, so the requests are exactly boto3's, without a thread per call. Three things here are deliberate:
- Every call is bounded by `CallTimeout`: the connection's call timeout, shrunk to what the caller's deadline
  leaves (asyncio.timeout cancels the HTTP request itself, so nothing outlives its step).
- Retries are by operation (`RetryPolicy`): InitiateAuth and challenge answers are retried only on throttling,
  which Cognito rejects before doing anything; a timeout or 5xx may already have sent a code (or judged one),
  so those are never re-sent. Reads (GetUser, Describe*) retry transient faults too.
- Each request is counted in the step's `CognitoRequests` as it leaves (botocore's `before-send` event), so a
  step cancelled mid-call still knows whether Cognito may have acted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import hashlib
import hmac
import logging
import secrets
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol, TypeAlias

import aiobotocore
import botocore
import botocore.exceptions
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session

from otp_step_service.adapters.call_policy import CallTimeout, RetryPolicy, read_retries, throttle_retries
from otp_step_service.adapters.cognito_errors import classify
from otp_step_service.steps.circuit_breaker import CircuitBreaker
from otp_step_service.steps.cognito_failures import failure_for
from otp_step_service.steps.deadline import Deadline
from otp_step_service.steps.model import (
    AuthChallenge,
    CheckStatus,
    CognitoError,
    CognitoErrorKind,
    CognitoRequests,
    ConnectionCheck,
    EndUser,
)
from otp_step_service.steps.outcomes import Channel, CognitoTokens, ErrorCategory

log = logging.getLogger(__name__)

USER_AGENT = f"otp-step-service aiobotocore/{aiobotocore.__version__} botocore/{botocore.__version__}"


def secret_hash(*, username: str, client_id: str, client_secret: str) -> str:
    """Cognito's SECRET_HASH: base64(HMAC-SHA256(key=client secret, msg=USERNAME + client id)) [doc].

    Keyword-only, in the order of the message: the emulator's twin takes the same arguments the same way.
    """
    digest = hmac.new(client_secret.encode(), (username + client_id).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


# The step whose requests the `before-send` hook counts: one per asyncio task, so concurrent steps never mix.
_step_requests: contextvars.ContextVar[CognitoRequests | None] = contextvars.ContextVar(
    "cognito_step_requests", default=None
)


def _count_request(**_: Any) -> None:
    requests = _step_requests.get()
    if requests is not None:
        requests.sent += 1


@cache  # a handful of operations, named on every call
def _api_name(operation: str) -> str:
    """botocore's method name as the API names it (initiate_auth → InitiateAuth): the metrics' operation."""
    return "".join(part.title() for part in operation.split("_"))


@dataclass(frozen=True, slots=True)
class CognitoTarget:
    """Where and how to reach one pool's app client. `client_secret` never leaves this process."""

    region: str
    user_pool_id: str
    client_id: str
    client_secret: str | None
    endpoint_url: str | None
    admin_api: bool
    http_pool_size: int
    connect_timeout: float
    call_timeout: float
    throttle_retries: int
    channels: tuple[Channel, ...]
    circuit_failure_threshold: int = 5
    circuit_open_seconds: float = 30.0

    def __repr__(self) -> str:
        return f"CognitoTarget({self.region}, {self.user_pool_id}, {self.client_id}, secret=<redacted>)"


class CallSpan(Protocol):
    """The client span of one Cognito call: ended by `answered` or `failed`, or on leaving the block."""

    def __enter__(self) -> CallSpan: ...

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None: ...

    def answered(self, metadata: Mapping[str, Any] | None) -> None: ...

    def failed(self, error_type: str, system: bool, metadata: Mapping[str, Any] | None) -> None: ...


#: Opens the span of one call: (API operation, region, server address). Observability provides the real one.
CallSpans: TypeAlias = Callable[[str, str, str], CallSpan]


class CallMetrics(Protocol):
    """What the gateway records of its calls: each try and its latency, and each retry."""

    def call(self, operation: str, error_type: str, seconds: float) -> None: ...

    def retry(self, operation: str, error_type: str) -> None: ...


class _Untraced:
    """No span: what a gateway built without tracing records."""

    def __enter__(self) -> _Untraced:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        return None

    def answered(self, metadata: Mapping[str, Any] | None) -> None:
        return None

    def failed(self, error_type: str, system: bool, metadata: Mapping[str, Any] | None) -> None:
        return None


def _untraced(operation: str, region: str, server_address: str) -> CallSpan:
    return _Untraced()


class AioCognitoGateway:
    """CognitoGateway over aiobotocore for one connection: one client, its HTTP connection pool sized for the
    service's concurrency, botocore's own retries off (the RetryPolicy decides per operation)."""

    def __init__(
        self,
        target: CognitoTarget,
        session: AioSession | None = None,
        metrics: CallMetrics | None = None,
        spans: CallSpans = _untraced,
    ) -> None:
        self._target = target
        self._metrics = metrics
        self._spans = spans
        self.breaker = CircuitBreaker(target.circuit_failure_threshold, target.circuit_open_seconds)
        self._session = session or get_session()
        self._client: Any = None
        self._clients = contextlib.AsyncExitStack()
        self._opening = asyncio.Lock()
        self._timeout = CallTimeout(target.call_timeout)
        self._auth_retries = throttle_retries(target.throttle_retries)
        self._read_retries = read_retries()
        self._server_address = (
            urllib.parse.urlsplit(
                target.endpoint_url or f"https://cognito-idp.{target.region}.amazonaws.com"
            ).hostname
            or ""
        )

    # -- CognitoGateway ---------------------------------------------------------------------------------
    async def start_user_auth(
        self,
        username: str,
        preferred: Channel,
        end_user: EndUser,
        deadline: Deadline,
        requests: CognitoRequests,
    ) -> AuthChallenge:
        """InitiateAuth / AdminInitiateAuth with USER_AUTH and PREFERRED_CHALLENGE."""
        params = {"USERNAME": username, "PREFERRED_CHALLENGE": preferred.challenge_name}
        response = await self._auth_call("initiate", username, params, end_user, deadline, requests)
        return self._challenge(response, username)

    async def select_challenge(
        self,
        username: str,
        session: str,
        channel: Channel,
        end_user: EndUser,
        deadline: Deadline,
        requests: CognitoRequests,
    ) -> AuthChallenge:
        """Answer SELECT_CHALLENGE with EMAIL_OTP / SMS_OTP."""
        responses = {"USERNAME": username, "ANSWER": channel.challenge_name}
        response = await self._auth_call(
            "respond",
            username,
            responses,
            end_user,
            deadline,
            requests,
            challenge="SELECT_CHALLENGE",
            session=session,
        )
        return self._challenge(response, username)

    async def answer_otp(
        self,
        username: str,
        session: str,
        channel: Channel,
        code: str,
        end_user: EndUser,
        deadline: Deadline,
        requests: CognitoRequests,
    ) -> CognitoTokens:
        """Answer EMAIL_OTP / SMS_OTP with the code."""
        responses = {"USERNAME": username, f"{channel.challenge_name}_CODE": code}
        response = await self._auth_call(
            "respond",
            username,
            responses,
            end_user,
            deadline,
            requests,
            challenge=channel.challenge_name,
            session=session,
        )
        result = response.get("AuthenticationResult")
        if not result:
            name = response.get("ChallengeName", "none")
            raise CognitoError(
                CognitoErrorKind.UNEXPECTED,
                "UnexpectedChallenge",
                f"Cognito asked for a further challenge {name}",
            )
        return CognitoTokens(
            id_token=result["IdToken"],
            access_token=result["AccessToken"],
            refresh_token=result.get("RefreshToken", ""),
            expires_in=int(result.get("ExpiresIn", 0)),
            token_type=result.get("TokenType", "Bearer"),
        )

    async def user_attributes(
        self, username: str, tokens: CognitoTokens, deadline: Deadline
    ) -> dict[str, str]:
        """GetUser with the access token (public API) or AdminGetUser (admin API)."""
        t = self._target
        if t.admin_api:
            response = await self._read(
                deadline, "admin_get_user", UserPoolId=t.user_pool_id, Username=username
            )
        else:
            response = await self._read(deadline, "get_user", AccessToken=tokens.access_token)
        return {a["Name"]: a.get("Value", "") for a in response.get("UserAttributes", [])}

    async def self_test(self, deadline: Deadline) -> Sequence[ConnectionCheck]:
        """Probe USER_AUTH with a made-up user (no code is ever sent), then read the pool's settings."""
        checks = [await self._probe_user_auth(deadline)]
        checks.extend(await self._describe_checks(deadline))
        return checks

    async def warm_up(self) -> None:
        """Create the client now, so the first journeys do not pay for it."""
        await self._ensure_client()

    async def aclose(self) -> None:
        """Close the client and its connection pool."""
        await self._clients.aclose()
        self._client = None

    # -- calls ------------------------------------------------------------------------------------------
    async def _auth_call(
        self,
        kind: str,
        username: str,
        parameters: dict[str, str],
        end_user: EndUser,
        deadline: Deadline,
        requests: CognitoRequests,
        *,
        challenge: str = "",
        session: str = "",
    ) -> dict[str, Any]:
        t = self._target
        parameters = self._with_secret_hash(parameters, username)
        request: dict[str, Any] = {"ClientId": t.client_id}
        if kind == "initiate":
            request |= {"AuthFlow": "USER_AUTH", "AuthParameters": parameters}
        else:
            request |= {"ChallengeName": challenge, "Session": session, "ChallengeResponses": parameters}
        if t.admin_api:
            request["UserPoolId"] = t.user_pool_id
            if end_user.ip_address:
                request["ContextData"] = {
                    "IpAddress": end_user.ip_address,
                    "ServerName": "otp-step-service",
                    "ServerPath": "/stepexecutor.v1.StepExecutor",
                    "HttpHeaders": [{"headerName": "User-Agent", "headerValue": end_user.user_agent}],
                    **({"EncodedData": end_user.encoded_data} if end_user.encoded_data else {}),
                }
            operation = "admin_initiate_auth" if kind == "initiate" else "admin_respond_to_auth_challenge"
        else:
            context = {"IpAddress": end_user.ip_address, "EncodedData": end_user.encoded_data}
            if any(context.values()):
                request["UserContextData"] = {k: v for k, v in context.items() if v}
            operation = "initiate_auth" if kind == "initiate" else "respond_to_auth_challenge"
        return await self._call(self._auth_retries, deadline, operation, request, requests)

    def _with_secret_hash(self, parameters: dict[str, str], username: str) -> dict[str, str]:
        """`parameters` plus SECRET_HASH when the app client has a secret."""
        t = self._target
        if t.client_secret is None:
            return parameters
        return {
            **parameters,
            "SECRET_HASH": secret_hash(
                username=username, client_id=t.client_id, client_secret=t.client_secret
            ),
        }

    async def _read(self, deadline: Deadline, operation: str, **request: Any) -> dict[str, Any]:
        return await self._call(self._read_retries, deadline, operation, request, CognitoRequests())

    async def _call(
        self,
        retries: RetryPolicy,
        deadline: Deadline,
        operation: str,
        request: Mapping[str, Any],
        requests: CognitoRequests,
    ) -> dict[str, Any]:
        retry = 0
        metrics = self._metrics
        while True:
            if not self.breaker.allow():
                # Fail fast while Cognito is down: the step gets the same retryable COGNITO_UNAVAILABLE a real
                # outage gives, without waiting out a timeout; nothing was sent, so nothing is counted.
                raise CognitoError(
                    CognitoErrorKind.UNAVAILABLE,
                    "CircuitOpen",
                    "Cognito has been failing on this connection; not called (circuit open)",
                    reached_cognito=False,
                )
            started = time.perf_counter()
            try:
                response = await self._send(
                    await self._ensure_client(), deadline, operation, request, requests
                )
            except CognitoError as error:
                self.breaker.record(error.kind)
                if metrics is not None:
                    metrics.call(_api_name(operation), error.kind.value, time.perf_counter() - started)
                pause = retries.pause(retry)
                if not retries.should_retry(error.kind, retry, pause, self._timeout, deadline):
                    raise
                if metrics is not None:
                    metrics.retry(_api_name(operation), error.kind.value)
                retry += 1
                await asyncio.sleep(pause)
            except BaseException:
                self.breaker.release()  # cancelled: no answer either way
                raise
            else:
                self.breaker.record(None)
                if metrics is not None:
                    metrics.call(_api_name(operation), "", time.perf_counter() - started)
                return response

    async def _send(
        self,
        client: Any,
        deadline: Deadline,
        operation: str,
        request: Mapping[str, Any],
        requests: CognitoRequests,
    ) -> dict[str, Any]:
        """One API call in its client span, bounded by its budget; failures as CognitoError."""
        budget = self._timeout.budget(deadline)
        if budget is None:
            raise CognitoError(
                CognitoErrorKind.TIMEOUT,
                "DeadlineExceeded",
                "no time left for the Cognito call",
                reached_cognito=False,
            )
        sent_before = requests.sent
        token = _step_requests.set(requests)
        try:
            with self._spans(
                client.meta.method_to_api_mapping[operation], self._target.region, self._server_address
            ) as span:
                try:
                    async with asyncio.timeout(budget):
                        response: dict[str, Any] = await getattr(client, operation)(**request)
                except TimeoutError:
                    error = CognitoError(
                        CognitoErrorKind.TIMEOUT,
                        "ReadTimeoutError" if requests.sent > sent_before else "ConnectTimeoutError",
                        "no answer within the time budget",
                        reached_cognito=requests.sent > sent_before,
                    )
                    span.failed(error.cognito_error, True, None)
                    raise error from None
                except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                    error = classify(exc)
                    system = failure_for(error).category is ErrorCategory.SYSTEM
                    answer = getattr(exc, "response", None)  # a dict from Cognito; None or absent otherwise
                    span.failed(
                        error.cognito_error,
                        system,
                        answer.get("ResponseMetadata") if isinstance(answer, dict) else None,
                    )
                    raise error from None
                span.answered(response.get("ResponseMetadata"))
                return response
        finally:
            _step_requests.reset(token)

    async def _ensure_client(self) -> Any:
        if self._client is None:
            async with self._opening:
                if self._client is None:
                    self._client = await self._open_client()
        return self._client

    async def _open_client(self) -> Any:
        t = self._target
        config = AioConfig(
            region_name=t.region,
            max_pool_connections=t.http_pool_size,
            connect_timeout=t.connect_timeout,
            # A backstop only: each call's real bound is its CallTimeout budget (asyncio.timeout).
            read_timeout=t.call_timeout + 1,
            # Retries are the RetryPolicy's business, per operation.
            retries={"mode": "standard", "total_max_attempts": 1},
            # The requests are built here from validated values; botocore's per-call model validation would
            # only re-check them, at a measurable share of each step's CPU (see docs, Load testing).
            parameter_validation=False,
            # botocore otherwise rebuilds and sanitizes its User-Agent for every request (~9% of a step's CPU,
            # py-spy under load); a fixed one costs nothing and still names the SDK.
            user_agent=USER_AGENT,
        )
        client = await self._clients.enter_async_context(
            self._session.create_client("cognito-idp", endpoint_url=t.endpoint_url, config=config)
        )
        client.meta.events.register("before-send.cognito-identity-provider", _count_request)
        return client

    # -- response shapes --------------------------------------------------------------------------------
    @staticmethod
    def _challenge(response: Mapping[str, Any], username: str) -> AuthChallenge:
        if "AuthenticationResult" in response:
            # USER_AUTH never signs in without a factor here; a pool that does is not one this step can use.
            raise CognitoError(
                CognitoErrorKind.MISCONFIGURED,
                "UnexpectedAuthenticationResult",
                "Cognito signed the user in without asking for a code",
            )
        parameters = response.get("ChallengeParameters", {}) or {}
        return AuthChallenge(
            name=str(response.get("ChallengeName", "")),
            session=str(response.get("Session", "")),
            # With alias sign-in Cognito names the real username; follow-up calls (and SECRET_HASH) use it.
            username=str(parameters.get("USERNAME", "") or username),
            destination=str(parameters.get("CODE_DELIVERY_DESTINATION", "")),
            available=tuple(response.get("AvailableChallenges", []) or ()),
        )

    # -- self-test --------------------------------------------------------------------------------------
    async def _probe_user_auth(self, deadline: Deadline) -> ConnectionCheck:
        name = "user_auth_flow"
        probe = f"otp-step-self-test-{secrets.token_hex(6)}"  # no such user: nothing can be delivered
        try:
            await self._call(
                self._auth_retries,
                deadline,
                "initiate_auth",
                {
                    "ClientId": self._target.client_id,
                    "AuthFlow": "USER_AUTH",
                    "AuthParameters": self._with_secret_hash({"USERNAME": probe}, probe),
                },
                CognitoRequests(),
            )
        except CognitoError as error:
            if error.kind is CognitoErrorKind.USER_NOT_FOUND:
                pass
            elif error.kind is CognitoErrorKind.SECRET_INVALID:
                return ConnectionCheck(
                    name, CheckStatus.FAILED, f"the client secret is wrong or missing: {error.detail}"
                )
            elif error.kind is CognitoErrorKind.MISCONFIGURED:
                return ConnectionCheck(
                    name,
                    CheckStatus.FAILED,
                    f"{error.cognito_error}: {error.detail} — add ALLOW_USER_AUTH to the app client's "
                    "ExplicitAuthFlows and check the pool and client ids",
                )
            else:
                return ConnectionCheck(name, CheckStatus.SKIPPED, f"{error.cognito_error}: {error.detail}")
        return ConnectionCheck(
            name, CheckStatus.PASSED, "the app client accepts USER_AUTH and the client secret is right"
        )

    async def _describe_checks(self, deadline: Deadline) -> list[ConnectionCheck]:
        t = self._target
        try:
            client = (
                await self._read(
                    deadline, "describe_user_pool_client", UserPoolId=t.user_pool_id, ClientId=t.client_id
                )
            )["UserPoolClient"]
            pool = (await self._read(deadline, "describe_user_pool", UserPoolId=t.user_pool_id))["UserPool"]
        except CognitoError as error:
            return [
                ConnectionCheck(
                    "pool_settings",
                    CheckStatus.SKIPPED,
                    f"cannot read the pool's settings ({error.cognito_error}); grant "
                    "cognito-idp:DescribeUserPool and DescribeUserPoolClient to check them",
                )
            ]
        checks = []
        flows = client.get("ExplicitAuthFlows", []) or []
        checks.append(
            ConnectionCheck(
                "app_client_allows_user_auth",
                CheckStatus.PASSED if "ALLOW_USER_AUTH" in flows else CheckStatus.FAILED,
                f"ExplicitAuthFlows = {flows}"
                + ("" if "ALLOW_USER_AUTH" in flows else " — add ALLOW_USER_AUTH"),
            )
        )
        has_secret = bool(client.get("ClientSecret"))
        configured = t.client_secret is not None
        checks.append(
            ConnectionCheck(
                "client_secret_configured",
                CheckStatus.PASSED if has_secret == configured else CheckStatus.FAILED,
                "the app client "
                + ("has" if has_secret else "has no")
                + " secret and the connection "
                + ("sets" if configured else "sets no")
                + " client secret",
            )
        )
        factors = (pool.get("Policies", {}).get("SignInPolicy", {}) or {}).get("AllowedFirstAuthFactors", [])
        for channel in t.channels:
            offered = channel.challenge_name in factors
            checks.append(
                ConnectionCheck(
                    f"pool_offers_{channel.challenge_name.lower()}",
                    CheckStatus.PASSED if offered else CheckStatus.FAILED,
                    f"AllowedFirstAuthFactors = {factors}"
                    + (
                        ""
                        if offered
                        else f" — add {channel.challenge_name} to use the {channel.value} channel"
                    ),
                )
            )
        mfa = pool.get("MfaConfiguration", "OFF")
        checks.append(
            ConnectionCheck(
                "mfa_not_required",
                CheckStatus.FAILED if mfa == "ON" else CheckStatus.PASSED,
                f"MfaConfiguration = {mfa}"
                + (" — passwordless sign-in needs MFA OFF or OPTIONAL" if mfa == "ON" else ""),
            )
        )
        return checks
