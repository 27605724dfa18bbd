"""What the steps need from the outside world, as interfaces: Cognito, ID-token verification, the store.

Adapters (aiobotocore, PyJWT, Redis) implement these; the steps never see SDK or gRPC types. Cognito's errors
arrive already sorted into `CognitoErrorKind`, so each step decides what an error means for a journey. Every
port is asynchronous: a step waiting on Cognito or Redis costs the service one coroutine, not a thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .challenges import (
    AttemptGrant,
    AttemptRequest,
    Challenge,
    ChallengeKey,
    Judgement,
    SendRequest,
    SendReservation,
    SendResult,
)
from .deadline import Deadline
from .model import AuthChallenge, CognitoRequests, ConnectionCheck, ConnectionPolicy, EndUser
from .outcomes import Channel, CognitoTokens


class CognitoGateway(Protocol):
    """Cognito's passwordless sign-in for one connection (pool + app client + secret).

    Each call counts the requests it sends in `requests`, so a cancelled step still knows whether Cognito may
    have acted.
    """

    async def start_user_auth(
        self,
        username: str,
        preferred: Channel,
        end_user: EndUser,
        deadline: Deadline,
        requests: CognitoRequests,
    ) -> AuthChallenge:
        """InitiateAuth USER_AUTH with PREFERRED_CHALLENGE. Never retried on a fault that may have sent a code."""

    async def select_challenge(
        self,
        username: str,
        session: str,
        channel: Channel,
        end_user: EndUser,
        deadline: Deadline,
        requests: CognitoRequests,
    ) -> AuthChallenge:
        """Answer SELECT_CHALLENGE with the channel's challenge; Cognito then sends the code."""

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
        """Answer EMAIL_OTP / SMS_OTP with the code; tokens on success."""

    async def user_attributes(
        self, username: str, tokens: CognitoTokens, deadline: Deadline
    ) -> dict[str, str]:
        """The user's attributes (GetUser with the access token, or AdminGetUser)."""

    async def self_test(self, deadline: Deadline) -> Sequence[ConnectionCheck]:
        """Check that the connection can run the steps, without sending any code."""

    async def warm_up(self) -> None:
        """Prepare what the first step would otherwise pay for (clients, connections)."""

    async def aclose(self) -> None:
        """Close the HTTP connections."""


class IdTokenVerifier(Protocol):
    """Verifies ID tokens of one pool and app client."""

    async def verify(self, id_token: str) -> Mapping[str, Any]:
        """The verified claims, or TokenVerificationError."""

    async def warm_up(self) -> None:
        """Fetch the pool's signing keys ahead of the first Validate."""

    async def aclose(self) -> None:
        """Close the key fetcher's connections."""


class BearerTokenVerifier(Protocol):
    """Verifies a caller's bearer token; failures raise TokenVerificationError saying which check failed."""

    async def subject(self, token: str) -> str:
        """The verified token's subject (`sub`)."""
        ...

    async def aclose(self) -> None:
        """Release what verification holds (the key fetcher's HTTP client)."""
        ...


class ChallengeStore(Protocol):
    """Keeps challenges and the windowed counters (codes sent, wrong codes) behind them.

    Each step's bookkeeping is two atomic operations: `begin_*` decides and counts before Cognito is asked,
    `finish_*` settles what Cognito's answer (or its absence) means. Stores may be shared by several service
    instances (Redis), so each operation is atomic on the store itself. Failures raise ChallengeStoreError; a
    `begin_*` that fails leaves nothing counted that the store knows it took (a count on a primary whose replica
    did not take it is given back), and a `begin_send` whose reply was lost releases the reservation it may
    have made (when the store answers that release in time). A settle that stores what Cognito did
    (finish_send SENT, MAYBE_SENT, LOST; finish_attempt WRONG) may be made again after a failure: it changes
    nothing twice. The others give counts back and are made once.
    """

    async def begin_send(self, request: SendRequest) -> SendReservation:
        """Decide whether Generate may send a code: neither the identifier nor its Cognito user locked out,
        no live code within the cooldown (or the same execution's code to replay), under the identifier's,
        the user's and the connection's send budgets. On RESERVED the send is counted and the key is held by
        the pending placeholder until `finish_send`. The same execution's placeholder whose lease
        (`Challenge.lease_until`) lives answers IN_FLIGHT; one whose lease ran out is replaced (RESERVED,
        `took_over`), its counts kept."""

    async def finish_send(
        self, request: SendRequest, result: SendResult, challenge: Challenge | None
    ) -> None:
        """Settle the reservation `request` made: SENT / MAYBE_SENT / LOST store `challenge` in its place
        (MAYBE_SENT, LOST: an unusable one that still holds the cooldown), NOT_SENT releases the key and gives back
        one event of every counter begin_send added to, only while the key holds this very reservation (made
        again, or for a reservation that was never made, it changes nothing). A challenge naming its user (`Challenge.user`)
        records which user the identifier reached, and counts the send for them if begin_send could not; a
        decoy's records it only where the identifier reached no user yet."""

    async def begin_attempt(self, request: AttemptRequest) -> AttemptGrant:
        """Spend one attempt and count one wrong code for the identifier and its user before Cognito judges
        the code, so concurrent Validates can never try more codes than any cap allows; a locked identifier
        or user touches nothing (a locked user, when `hide_user_lockout` asks, is decided as one who is not,
        and spends the attempt and the identifier's count as USER_LOCKED). Expired or exhausted challenges
        are removed."""

    async def finish_attempt(
        self, key: ChallengeKey, nonce: str, judgement: Judgement, lockout_subjects: Sequence[str]
    ) -> None:
        """Settle what Cognito's judgement means for the challenge `nonce` and the wrong-code counters
        begin_attempt added to (`challenges.user_lockout_subjects`)."""

    async def load(self, key: ChallengeKey) -> Challenge | None:
        """The live, usable challenge, or None (missing, pending, unusable or expired)."""

    async def events(self, connection: str, subject: str) -> int:
        """A counter's value within its current window (`connection`: the connection the counter belongs to,
        unless it is a caller's, see `challenges.caller_scope`)."""

    async def aclose(self) -> None:
        """Release the store's connections."""


@dataclass(frozen=True, slots=True)
class Connection:
    """A configured Cognito connection: its policy and the adapters that reach its pool."""

    policy: ConnectionPolicy
    gateway: CognitoGateway
    verifier: IdTokenVerifier
