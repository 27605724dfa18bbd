"""Authentication and authorization of callers: who is calling, and may it run this step.

`Authentication` is the outermost interceptor (before Admission): it names the caller of every call except
health checks, from

1. a bearer token (`authorization: Bearer <JWT>`), when one is sent: verified against the configured issuer's
   JWKS (signature, exp, nbf, aud, iss, an allowed asymmetric algorithm; never `none`; or, opted in, a
   Cognito access token's client_id and token_use instead of aud); the caller is the token's `sub`;
2. else the client certificate verified by the TLS handshake (mTLS): its SPIFFE-style URI SAN, else its first
   DNS SAN, else its subject CN.

The identity must belong to a `[callers.<name>]` table. A missing or bad credential ends the call with
UNAUTHENTICATED and the same short message whatever went wrong (why is logged, never the token); a verified
identity that is not a caller gets PERMISSION_DENIED. The caller is then in a context variable, where
Admission (its per-caller bound) and the servicer (`authorize`: connection and tenant) read it.

Every refusal is counted by a bounded reason (`refusals`, read by the metrics at scrape time as
`otp_rejected_calls_total{reason}`): NO_CREDENTIAL, INVALID_TOKEN, TOKENS_NOT_CONFIGURED (UNAUTHENTICATED);
UNKNOWN_CALLER, CONNECTION_NOT_PERMITTED, TENANT_MISMATCH (PERMISSION_DENIED); CALLER_RATE_LIMITED
(RESOURCE_EXHAUSTED); CHALLENGE_STORE_UNAVAILABLE (UNAVAILABLE). Never why a token failed in detail, which
the log line gives.

Steps per second per caller are taken from a `StepRate` (step_rate.py): in this process with the in-memory
store, in Redis with a Redis store so every instance draws on one allowance per caller. When that Redis
fails, the step is refused with UNAVAILABLE (`CHALLENGE_STORE_UNAVAILABLE`, retryable): fail closed, as the
store's own failures are, rather than let a caller past its rate while the shared count is out of reach.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any, NoReturn

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2

from otp_step_service.config.callers import Caller, Callers
from otp_step_service.steps.errors import ChallengeStoreError, TokenVerificationError
from otp_step_service.steps.ports import BearerTokenVerifier
from otp_step_service.steps.step_rate import StepRate
from otp_step_service.transport.interception import HandlerInterceptor, rebuilt
from otp_step_service.transport.status import ERROR_DOMAIN, abort

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

_CALLER: ContextVar[Caller | None] = ContextVar("otp_step_caller", default=None)
# The Authentication's refusal counts, beside the caller, so `authorize` (called by the servicer, which holds
# no reference to it) counts its denials where the other refusals are.
_REFUSALS: ContextVar[Counter[str] | None] = ContextVar("otp_step_refusals", default=None)

# One message for every authentication failure: which check failed would help a forger more than a caller.
UNAUTHENTICATED_MESSAGE = "authentication required"


def current_caller() -> Caller | None:
    """The authenticated caller of the call being served (None when authentication is off)."""
    return _CALLER.get()


def caller_key(context: Context) -> str:
    """What per-caller bounds count by: the authenticated caller's name, else the client's host (the peer
    address without its port: `ipv4:10.0.0.7:53512` and `ipv4:10.0.0.7:53600` are one caller)."""
    caller = _CALLER.get()
    if caller is not None:
        return f"caller:{caller.name}"
    peer = context.peer()
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() and host not in ("ipv4", "ipv6") else peer


async def authorize(context: Context, connection: str, tenant_id: str | None) -> None:
    """PERMISSION_DENIED (with ErrorInfo) unless the caller may use `connection` for `tenant_id` (None: the
    call belongs to no journey, as CheckConnection)."""
    caller = _CALLER.get()
    if caller is None:
        return
    if not caller.may_use(connection.strip()):
        # The same answer whether or not the connection exists: a caller cannot probe for other names.
        await _deny(context, "CONNECTION_NOT_PERMITTED", "this caller may not use this connection")
    if caller.tenant is not None and tenant_id is not None and tenant_id != caller.tenant:
        await _deny(context, "TENANT_MISMATCH", "journey.tenant_id is not this caller's tenant")


async def _deny(context: Context, reason: str, message: str) -> NoReturn:
    refusals = _REFUSALS.get()
    if refusals is not None:
        refusals[reason] += 1
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)
    await abort(context, code_pb2.PERMISSION_DENIED, message, info)


def certificate_identity(context: Context) -> str | None:
    """The verified client certificate's identity: URI SAN, else DNS SAN, else subject CN (None: no cert)."""
    auth = context.auth_context()
    for prop in ("peer_uri", "peer_dns", "x509_common_name"):
        for value in auth.get(prop, ()):
            return bytes(value).decode("utf-8", "replace")
    return None


class Authentication(HandlerInterceptor):
    """Names the caller of each call (see the module docstring) and applies its steps-per-second rate."""

    def __init__(
        self,
        callers: Callers,
        *,
        tokens: BearerTokenVerifier | None,
        certificates: bool,
        open_methods: frozenset[str],
        step_methods: frozenset[str],
        steps_per_second: float,
        rate: StepRate,
    ) -> None:
        self._callers = callers
        self._tokens = tokens
        self._certificates = certificates
        self._open = open_methods
        self._steps = step_methods
        self._steps_per_second = steps_per_second
        self._rate = rate
        self.refusals: Counter[str] = Counter()
        """Calls refused, by reason (see the module docstring): plain counts, read at scrape time."""

    @property
    def callers(self) -> Callers:
        """The known callers now."""
        return self._callers

    def replace_callers(self, callers: Callers) -> None:
        """Authenticate the next calls against `callers` (a reload): one removed or narrowed is refused from
        its next call on; calls already admitted carry the Caller they were admitted as and finish."""
        self._callers = callers

    @property
    def authenticates(self) -> bool:
        """Whether callers must authenticate (else only the rate applies, per peer)."""
        return self._tokens is not None or self._certificates

    def wrap(self, handler: Any, details: grpc.HandlerCallDetails) -> Any:
        """Every method but the open ones runs once its caller is admitted (named, and within its rate)."""
        if details.method in self._open:
            return handler
        metadata = details.invocation_metadata or ()
        is_step = details.method in self._steps
        admit = self._admit

        if handler.request_streaming and not handler.response_streaming:
            inner_su = handler.stream_unary

            async def guarded_unary(requests: Any, context: Context) -> Any:
                _CALLER.set(await admit(context, metadata, is_step))
                return await inner_su(requests, context)

            return rebuilt(handler, guarded_unary)
        if handler.request_streaming and handler.response_streaming:
            inner_ss = handler.stream_stream

            async def guarded_stream(requests: Any, context: Context) -> AsyncIterator[Any]:
                _CALLER.set(await admit(context, metadata, is_step))
                result = inner_ss(requests, context)
                if inspect.isasyncgen(result):
                    async for response in result:
                        yield response
                else:
                    await result

            return rebuilt(handler, guarded_stream)
        # Admission serves every unary method as client-streaming, and the API has no other shapes; a new
        # one must be added here rather than slip through unauthenticated.
        raise RuntimeError(f"{details.method}: no authentication for this kind of method")

    async def _admit(self, context: Context, metadata: Any, is_step: bool) -> Caller | None:
        _REFUSALS.set(self.refusals)
        caller = await self._authenticate(context, metadata) if self.authenticates else None
        if is_step:
            rate = caller.steps_per_second if caller is not None and caller.steps_per_second else None
            rate = rate or self._steps_per_second
            if rate > 0:
                await self._take_step(context, caller.name if caller is not None else context.peer(), rate)
        return caller

    async def _take_step(self, context: Context, key: str, rate: float) -> None:
        try:
            decision = await self._rate.take(key, rate)
        except ChallengeStoreError as exc:
            self.refusals["CHALLENGE_STORE_UNAVAILABLE"] += 1
            log.warning("step rate unavailable (the shared store failed: %s); step refused", exc)
            await abort(
                context,
                code_pb2.UNAVAILABLE,
                "the shared store that counts this caller's steps could not be reached: retry",
                error_details_pb2.ErrorInfo(reason="CHALLENGE_STORE_UNAVAILABLE", domain=ERROR_DOMAIN),
                error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=200_000_000)),
            )
        if not decision.allowed:
            self.refusals["CALLER_RATE_LIMITED"] += 1
            wait = max(decision.retry_after_seconds, 0.001)
            await abort(
                context,
                code_pb2.RESOURCE_EXHAUSTED,
                f"this caller is above its {rate:g} steps per second: back off and retry",
                error_details_pb2.ErrorInfo(reason="CALLER_RATE_LIMITED", domain=ERROR_DOMAIN),
                error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(seconds=int(wait), nanos=int(wait % 1 * 1e9))
                ),
            )

    async def _authenticate(self, context: Context, metadata: Any) -> Caller:
        token = _bearer(metadata)
        if token is not None:
            if self._tokens is None:
                await self._refuse(
                    context, "TOKENS_NOT_CONFIGURED", "a bearer token was sent but tokens are not configured"
                )
            try:
                subject = await self._tokens.subject(token)
            except TokenVerificationError as exc:
                await self._refuse(context, "INVALID_TOKEN", f"bearer token rejected: {exc}")
            except Exception as exc:  # a token the checks above did not foresee is still a bad token
                await self._refuse(context, "INVALID_TOKEN", f"bearer token rejected: {type(exc).__name__}")
            caller = self._callers.by_token_subject.get(subject)
        else:
            identity = certificate_identity(context) if self._certificates else None
            if identity is None:
                await self._refuse(context, "NO_CREDENTIAL", "no credential")
            subject = identity
            caller = self._callers.by_certificate.get(identity)
        if caller is None:
            log.warning("authenticated identity %r is not a configured caller", subject)
            await _deny(context, "UNKNOWN_CALLER", "this identity is not a configured caller")
        return caller

    async def _refuse(self, context: Context, reason: str, why: str) -> NoReturn:
        # `why` never includes the credential; the caller only learns that it did not authenticate.
        self.refusals[reason] += 1
        log.info("call refused, unauthenticated: %s (peer %s)", why, context.peer())
        await abort(context, code_pb2.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE, reason=reason)

    async def aclose(self) -> None:
        """Close the token key fetcher and the step rate's connections."""
        if self._tokens is not None:
            await self._tokens.aclose()
        await self._rate.aclose()


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata:
        if key == "authorization":
            scheme, _, credential = str(value).partition(" ")
            return credential.strip() if scheme.lower() == "bearer" else ""
    return None
