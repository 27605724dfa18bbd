"""The emulator's own state beside moto's: settings, outbox, sessions and faults of one server.

moto keeps pools and users in process-wide globals, but everything the emulator adds belongs to one
:class:`EmulatorRuntime`. The server binds its runtime to each request (a context variable), so the
Cognito backend, deep inside moto's call stack, finds the right outbox and settings.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from .faults import FaultRegistry
from .outbox import Outbox
from .sessions import SessionStore
from .settings import EmulatorSettings


class EmulatorRuntime:
    """Settings, outbox, USER_AUTH sessions and faults of one emulator."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self._settings = settings
        self._settings_lock = threading.Lock()
        self.outbox = Outbox(settings.outbox_limit)
        self.sessions = SessionStore()
        self.faults = FaultRegistry()

    @property
    def settings(self) -> EmulatorSettings:
        """The current settings (replaced as a whole, so a request always sees a consistent set)."""
        return self._settings

    def update_settings(self, changes: Mapping[str, Any]) -> EmulatorSettings:
        """Apply a partial update (validated) and return the new settings."""
        with self._settings_lock:
            self._settings = self._settings.updated(changes)
            self.outbox.resize(self._settings.outbox_limit)
            return self._settings

    def reset(self) -> None:
        """Forget messages, sessions and faults (what ``POST /moto-api/reset`` does on our side)."""
        self.outbox.clear()
        self.sessions.clear()
        self.faults.clear()


_current: ContextVar[EmulatorRuntime | None] = ContextVar("cognito_emulator_runtime", default=None)
_fallback: EmulatorRuntime | None = None
_fallback_lock = threading.Lock()


def current_runtime() -> EmulatorRuntime:
    """The runtime of the request being served; a process default when moto is used without our server."""
    runtime = _current.get()
    if runtime is not None:
        return runtime
    global _fallback
    with _fallback_lock:
        if _fallback is None:
            _fallback = EmulatorRuntime(EmulatorSettings.from_env())
        return _fallback


@contextmanager
def bound_runtime(runtime: EmulatorRuntime) -> Iterator[None]:
    """Make ``runtime`` current for the code inside the ``with`` block (one request)."""
    token = _current.set(runtime)
    try:
        yield
    finally:
        _current.reset(token)
