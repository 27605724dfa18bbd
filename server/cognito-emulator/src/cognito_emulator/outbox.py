"""The outbox: every code the emulator "sends" by email or SMS, readable over ``GET /_outbox``."""

from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

DeliveryMedium = Literal["EMAIL", "SMS"]


@dataclass(frozen=True)
class OutboxMessage:
    """One delivered message. ``to_json`` is the fixed contract other tools read."""

    id: int
    destination: str
    medium: DeliveryMedium
    code: str
    message: str
    sent_at: datetime
    subject: str | None
    username: str
    user_pool_id: str
    client_id: str

    def to_json(self) -> dict[str, Any]:
        """The message as served by ``GET /_outbox`` (``sent_at`` in RFC 3339, UTC, milliseconds)."""
        return {
            "id": self.id,
            "destination": self.destination,
            "medium": self.medium,
            "code": self.code,
            "message": self.message,
            "subject": self.subject,
            "sent_at": self.sent_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "username": self.username,
            "user_pool_id": self.user_pool_id,
            "client_id": self.client_id,
        }


class Outbox:
    """Thread-safe, bounded list of sent messages, oldest first."""

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self._messages: deque[OutboxMessage] = deque(maxlen=limit)
        self._ids = itertools.count(1)

    def deliver(
        self,
        *,
        destination: str,
        medium: DeliveryMedium,
        code: str,
        message: str,
        subject: str | None,
        username: str,
        user_pool_id: str,
        client_id: str,
    ) -> OutboxMessage:
        """Record a message as sent and return it."""
        with self._lock:
            item = OutboxMessage(
                id=next(self._ids),
                destination=destination,
                medium=medium,
                code=code,
                message=message,
                sent_at=datetime.now(UTC),
                subject=subject,
                username=username,
                user_pool_id=user_pool_id,
                client_id=client_id,
            )
            self._messages.append(item)
            return item

    def messages(self, destination: str | None = None) -> list[OutboxMessage]:
        """Messages oldest first, only those to ``destination`` when given (emails compare case-blind)."""
        with self._lock:
            items = list(self._messages)
        if destination is None:
            return items
        wanted = _normalise(destination)
        return [m for m in items if _normalise(m.destination) == wanted]

    def clear(self) -> int:
        """Forget every message; how many there were."""
        with self._lock:
            count = len(self._messages)
            self._messages.clear()
            return count

    def resize(self, limit: int) -> None:
        """Change the bound, keeping the newest messages."""
        with self._lock:
            if self._messages.maxlen != limit:
                self._messages = deque(self._messages, maxlen=limit)


def _normalise(destination: str) -> str:
    # Email local parts are case-sensitive in theory, but Cognito matches them case-blind and so do
    # people reading the outbox; phone numbers have no case.
    return destination.strip().lower()
