"""How a challenge is written in Redis: JSON whose Cognito session and username are sealed
(`sealing.SessionSealer`, bound to the challenge's key), so nothing secret is in Redis in clear."""

from __future__ import annotations

import json
from typing import Any

from otp_step_service.adapters.sealing import SessionSealer
from otp_step_service.steps.challenges import Challenge
from otp_step_service.steps.errors import ChallengeStoreError
from otp_step_service.steps.outcomes import Channel


def encode_challenge(challenge: Challenge, sealer: SessionSealer, context: str) -> str:
    """The challenge as stored under its key (`context`: the key's storage name, which the seal is bound to)."""
    return json.dumps(
        {
            "username": sealer.seal(challenge.username, context),
            "session": sealer.seal(challenge.session, context),
            "channel": challenge.channel.value,
            "masked_destination": challenge.masked_destination,
            "expires_at": challenge.expires_at,
            "max_attempts": challenge.max_attempts,
            "attempts_used": challenge.attempts_used,
            "step_execution_id": challenge.step_execution_id,
            "sent_at": challenge.sent_at,
            "nonce": challenge.nonce,
            "pending": challenge.pending,
            "decoy": challenge.decoy,
            "unusable": challenge.unusable,
            "user": challenge.user,
            "lease_until": challenge.lease_until,
        }
    )


def decode_challenge(raw: str | bytes, sealer: SessionSealer, context: str) -> Challenge:
    """The challenge stored under the key named `context` (fields an earlier version did not write default).

    A value that is no challenge (not this JSON, a field missing or of another type) is a store failure, as a
    seal that does not open is: something else wrote the key, and the step fails retryably, never INTERNAL."""
    try:
        return _decoded(json.loads(raw), sealer, context)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ChallengeStoreError(f"a stored challenge is malformed ({type(exc).__name__})") from None


def _decoded(data: dict[str, Any], sealer: SessionSealer, context: str) -> Challenge:
    return Challenge(
        username=sealer.open(data["username"], context),
        session=sealer.open(data["session"], context),
        channel=Channel(data["channel"]),
        masked_destination=data["masked_destination"],
        expires_at=float(data["expires_at"]),
        max_attempts=int(data["max_attempts"]),
        attempts_used=int(data["attempts_used"]),
        step_execution_id=data.get("step_execution_id", ""),
        sent_at=float(data.get("sent_at", 0.0)),
        nonce=str(data.get("nonce", "")),
        pending=bool(data.get("pending", False)),
        decoy=bool(data.get("decoy", False)),
        unusable=bool(data.get("unusable", False)),
        user=str(data.get("user", "")),
        lease_until=float(data.get("lease_until", 0.0)),
    )


def text(value: Any) -> str:
    """A Redis reply as str (replies are bytes unless the client decodes them)."""
    return value.decode() if isinstance(value, bytes) else str(value)
