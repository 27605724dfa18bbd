"""Cognito's passwordless sign-in through boto3: the CognitoGateway for one connection.

Three things here are deliberate:
- Every call is bounded by what is left of the step's deadline. botocore has no per-call timeout, so clients
  are kept per timeout bucket (rounded *down*, so a call never outlives its deadline) and reused.
- Retries are by operation. InitiateAuth and challenge answers are retried only on throttling, which Cognito
  rejects before doing anything; a timeout or 5xx may already have sent a code (or judged one), so those are
  never re-sent. Reads (GetUser, Describe*) use botocore's standard retry mode.
- The worker pool and each client's connection pool are sized together (`max_pool_connections`), so 50
  concurrent steps never queue behind botocore's default 10 connections.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import random
import secrets
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from otp_step_service.steps.cognito_failures import failure_for
from otp_step_service.steps.deadline import Deadline
from otp_step_service.steps.outcomes import Channel, CognitoTokens, ErrorCategory
from otp_step_service.steps.ports import (
    AuthChallenge,
    CheckStatus,
    CognitoError,
    CognitoErrorKind,
    ConnectionCheck,
    EndUser,
)
from otp_step_service.telemetry import CognitoCallSpan

log = logging.getLogger(__name__)

# Read-timeout buckets (seconds). A call gets the largest bucket that fits in its usable budget.
_TIMEOUT_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0)
# Kept back from the deadline so a timed-out call still leaves time to answer the caller with an outcome.
_ANSWER_MARGIN = 0.05

_CONFIGURATION_ERRORS = frozenset(
    {
        "InvalidParameterException",
        "ResourceNotFoundException",
        "InvalidSmsRoleAccessPolicyException",
        "InvalidSmsRoleTrustRelationshipException",
        "InvalidEmailRoleAccessPolicyException",
        "InvalidUserPoolConfigurationException",
        "UnsupportedOperationException",
        "ForbiddenException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "MFAMethodNotFoundException",
    }
)
_KINDS: Mapping[str, CognitoErrorKind] = {
    "UserNotFoundException": CognitoErrorKind.USER_NOT_FOUND,
    "CodeMismatchException": CognitoErrorKind.CODE_MISMATCH,
    "ExpiredCodeException": CognitoErrorKind.CODE_EXPIRED,
    "UserNotConfirmedException": CognitoErrorKind.USER_NOT_READY,
    "PasswordResetRequiredException": CognitoErrorKind.USER_NOT_READY,
    "TooManyRequestsException": CognitoErrorKind.THROTTLED,
    "InternalErrorException": CognitoErrorKind.UNAVAILABLE,
    "UnexpectedLambdaException": CognitoErrorKind.TRIGGER_FAILED,
    "UserLambdaValidationException": CognitoErrorKind.TRIGGER_FAILED,
    "InvalidLambdaResponseException": CognitoErrorKind.TRIGGER_FAILED,
    **{name: CognitoErrorKind.MISCONFIGURED for name in _CONFIGURATION_ERRORS},
}


def secret_hash(client_secret: str, username: str, client_id: str) -> str:
    """Cognito's SECRET_HASH: base64(HMAC-SHA256(secret, USERNAME + client id)) [doc]."""
    digest = hmac.new(client_secret.encode(), (username + client_id).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def classify(exc: Exception) -> CognitoError:
    """Sort a botocore failure into a CognitoError whose detail is safe to return."""
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        name = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if name == "NotAuthorizedException":
            return CognitoError(_not_authorized_kind(message), name, message)
        kind = _KINDS.get(name)
        if kind is None:
            kind = CognitoErrorKind.UNAVAILABLE if status >= 500 else CognitoErrorKind.UNEXPECTED
        return CognitoError(kind, name, message)
    if isinstance(exc, botocore.exceptions.ConnectTimeoutError):
        return CognitoError(
            CognitoErrorKind.TIMEOUT,
            type(exc).__name__,
            "no connection within the time budget",
            reached_cognito=False,
        )
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return CognitoError(
            CognitoErrorKind.UNAVAILABLE,
            type(exc).__name__,
            "Cognito could not be reached",
            reached_cognito=False,
        )
    if isinstance(exc, botocore.exceptions.ReadTimeoutError):
        return CognitoError(CognitoErrorKind.TIMEOUT, type(exc).__name__, "no answer within the time budget")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return CognitoError(
            CognitoErrorKind.MISCONFIGURED,
            "NoCredentialsError",
            "the admin API needs IAM credentials (standard AWS credential chain)",
        )
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        # Refused or dropped connections, DNS failures, broken responses: Cognito is out of reach.
        return CognitoError(CognitoErrorKind.UNAVAILABLE, type(exc).__name__, "Cognito could not be reached")
    raise exc


def _not_authorized_kind(message: str) -> CognitoErrorKind:
    # NotAuthorizedException covers several situations told apart only by message [obs]; unknown messages
    # fall back to the generic kind, never to a wrong specific one.
    text = message.lower()
    if "secret" in text:
        return CognitoErrorKind.SECRET_INVALID
    if "disabled" in text:
        return CognitoErrorKind.USER_DISABLED
    if "session" in text:
        return CognitoErrorKind.SESSION_INVALID
    return CognitoErrorKind.NOT_AUTHORIZED


@dataclass(frozen=True, slots=True)
class CognitoTarget:
    """Where and how to reach one pool's app client. `client_secret` never leaves this process."""

    region: str
    user_pool_id: str
    client_id: str
    client_secret: str | None
    endpoint_url: str | None
    admin_api: bool
    max_connections: int = 64
    connect_timeout: float = 2.0
    call_timeout: float = 5.0
    throttle_retries: int = 2
    channels: tuple[Channel, ...] = (Channel.EMAIL, Channel.SMS)

    def __repr__(self) -> str:
        return f"CognitoTarget({self.region}, {self.user_pool_id}, {self.client_id}, secret=<redacted>)"


class BotoCognitoGateway:
    """CognitoGateway over boto3 for one connection."""

    def __init__(self, target: CognitoTarget, session: boto3.session.Session | None = None) -> None:
        self._target = target
        self._session = session or boto3.session.Session()
        self._clients: dict[tuple[float, str], Any] = {}
        self._lock = threading.Lock()  # boto3 client creation is not thread-safe; calls on clients are
        self._server_address = (
            urllib.parse.urlsplit(
                target.endpoint_url or f"https://cognito-idp.{target.region}.amazonaws.com"
            ).hostname
            or ""
        )

    # -- CognitoGateway ---------------------------------------------------------------------------------
    def start_user_auth(
        self, username: str, preferred: Channel, end_user: EndUser, deadline: Deadline
    ) -> AuthChallenge:
        """InitiateAuth / AdminInitiateAuth with USER_AUTH and PREFERRED_CHALLENGE."""
        params = {"USERNAME": username, "PREFERRED_CHALLENGE": preferred.challenge_name}
        response = self._auth_call("initiate", username, params, end_user, deadline)
        return self._challenge(response, username)

    def select_challenge(
        self, username: str, session: str, channel: Channel, end_user: EndUser, deadline: Deadline
    ) -> AuthChallenge:
        """Answer SELECT_CHALLENGE with EMAIL_OTP / SMS_OTP."""
        responses = {"USERNAME": username, "ANSWER": channel.challenge_name}
        response = self._auth_call(
            "respond", username, responses, end_user, deadline, challenge="SELECT_CHALLENGE", session=session
        )
        return self._challenge(response, username)

    def answer_otp(
        self, username: str, session: str, channel: Channel, code: str, end_user: EndUser, deadline: Deadline
    ) -> CognitoTokens:
        """Answer EMAIL_OTP / SMS_OTP with the code."""
        responses = {"USERNAME": username, f"{channel.challenge_name}_CODE": code}
        response = self._auth_call(
            "respond",
            username,
            responses,
            end_user,
            deadline,
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

    def user_attributes(self, username: str, tokens: CognitoTokens, deadline: Deadline) -> dict[str, str]:
        """GetUser with the access token (public API) or AdminGetUser (admin API)."""
        t = self._target
        if t.admin_api:
            response = self._read(deadline, "admin_get_user", UserPoolId=t.user_pool_id, Username=username)
        else:
            response = self._read(deadline, "get_user", AccessToken=tokens.access_token)
        return {a["Name"]: a.get("Value", "") for a in response.get("UserAttributes", [])}

    def self_test(self, deadline: Deadline) -> Sequence[ConnectionCheck]:
        """Probe USER_AUTH with a made-up user (no code is ever sent), then read the pool's settings."""
        checks = [self._probe_user_auth(deadline)]
        checks.extend(self._describe_checks(deadline))
        return checks

    # -- calls ------------------------------------------------------------------------------------------
    def _auth_call(
        self,
        kind: str,
        username: str,
        parameters: dict[str, str],
        end_user: EndUser,
        deadline: Deadline,
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
        return self._call_retrying_throttles(deadline, operation, request)

    def _call_retrying_throttles(
        self, deadline: Deadline, operation: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        # Throttling is the one fault Cognito answers before acting, so it is the one fault safe to retry for
        # calls that send or judge codes. Backoff: full jitter, capped by the deadline.
        attempt = 0
        while True:
            try:
                return self._send(self._client(deadline, retries="none"), operation, request)
            except CognitoError as error:
                attempt += 1
                if error.kind is not CognitoErrorKind.THROTTLED or attempt > self._target.throttle_retries:
                    raise error from None
                pause = random.uniform(0, min(1.0, 0.05 * 2**attempt))
                left = deadline.remaining()
                if left is not None and left <= pause + _TIMEOUT_BUCKETS[0] * 1.25:
                    raise error from None
                time.sleep(pause)

    def _with_secret_hash(self, parameters: dict[str, str], username: str) -> dict[str, str]:
        """`parameters` plus SECRET_HASH when the app client has a secret."""
        t = self._target
        if t.client_secret is None:
            return parameters
        return {**parameters, "SECRET_HASH": secret_hash(t.client_secret, username, t.client_id)}

    def _read(self, deadline: Deadline, operation: str, **request: Any) -> dict[str, Any]:
        return self._send(self._client(deadline, retries="standard"), operation, request)

    def _send(self, client: Any, operation: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """One API call (botocore's own retries included) in its client span; failures as CognitoError."""
        with CognitoCallSpan(
            client.meta.method_to_api_mapping[operation], self._target.region, self._server_address
        ) as span:
            try:
                response: dict[str, Any] = getattr(client, operation)(**request)
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

    def _client(self, deadline: Deadline, retries: str) -> Any:
        left = deadline.remaining()
        budget = self._target.call_timeout
        if left is not None:
            budget = min(budget, left * 0.9 - _ANSWER_MARGIN)
        # Connecting may take up to a quarter of the bucket on top of the read timeout: both fit the budget.
        budget /= 1.25
        if budget < _TIMEOUT_BUCKETS[0]:
            raise CognitoError(
                CognitoErrorKind.TIMEOUT,
                "DeadlineExceeded",
                "no time left for the Cognito call",
                reached_cognito=False,
            )
        bucket = max(b for b in _TIMEOUT_BUCKETS if b <= budget)
        key = (bucket, retries)
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = self._new_client(bucket, retries)
                    self._clients[key] = client
        return client

    def _new_client(self, read_timeout: float, retries: str) -> Any:
        t = self._target
        config = botocore.config.Config(
            region_name=t.region,
            max_pool_connections=t.max_connections,
            connect_timeout=min(t.connect_timeout, read_timeout / 4),
            read_timeout=read_timeout,
            retries=(
                {"mode": "standard", "total_max_attempts": 1}
                if retries == "none"
                else {"mode": "standard", "total_max_attempts": 3}
            ),
            tcp_keepalive=True,
            # The requests are built here from validated values; botocore's per-call model validation
            # would only re-check them, at a measurable share of each step's CPU (see README, Load testing).
            parameter_validation=False,
        )
        return self._session.client("cognito-idp", endpoint_url=t.endpoint_url, config=config)

    def warm_up(self) -> None:
        """Create the default clients now, so the first journeys do not pay for it."""
        self._client(Deadline(None), retries="none")
        self._client(Deadline(None), retries="standard")

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
    def _probe_user_auth(self, deadline: Deadline) -> ConnectionCheck:
        name = "user_auth_flow"
        probe = f"otp-step-self-test-{secrets.token_hex(6)}"  # no such user: nothing can be delivered
        try:
            self._call_retrying_throttles(
                deadline,
                "initiate_auth",
                {
                    "ClientId": self._target.client_id,
                    "AuthFlow": "USER_AUTH",
                    "AuthParameters": self._with_secret_hash({"USERNAME": probe}, probe),
                },
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

    def _describe_checks(self, deadline: Deadline) -> list[ConnectionCheck]:
        t = self._target
        try:
            client = self._read(
                deadline, "describe_user_pool_client", UserPoolId=t.user_pool_id, ClientId=t.client_id
            )["UserPoolClient"]
            pool = self._read(deadline, "describe_user_pool", UserPoolId=t.user_pool_id)["UserPool"]
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
