"""Where the suite reads the codes Cognito sends: the emulator's outbox, a command, or a mailbox URL.

A code source only answers "what is the newest code sent to this destination?". The suite asks once before
it makes Cognito send and then polls until the answer changes, so a source needs no notion of time or of
which message is new (codes are 8 random digits: two in a row are equal once in 10^8).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, Protocol

#: Codes of 6 to 8 digits are picked out of free text: the suite checks the length itself (a rule).
_CODE_IN_TEXT = re.compile(r"(?<!\d)(\d{6,8})(?!\d)")
#: Environment variables a code command receives.
ENV_DESTINATION = "CONFORMANCE_DESTINATION"
ENV_MEDIUM = "CONFORMANCE_MEDIUM"


class CodeSourceError(RuntimeError):
    """The code source failed (a command that exits non-zero, an unreachable mailbox)."""


class CodeSource(Protocol):
    """Reads the newest code sent to a destination (an email address or an E.164 phone number)."""

    def latest(self, destination: str, medium: str) -> str | None:
        """The newest code sent to ``destination`` by ``medium`` (EMAIL or SMS), or None if none yet."""
        ...

    def describe(self) -> str:
        """A short, secret-free description for the report."""
        ...


class OutboxCodeSource:
    """The emulator's outbox (``GET /_outbox?destination=...``)."""

    def __init__(self, endpoint_url: str) -> None:
        self._endpoint_url = endpoint_url.rstrip("/")

    def latest(self, destination: str, medium: str) -> str | None:
        """The code of the newest outbox message to ``destination``."""
        newest = self._newest(destination)
        return None if newest is None else str(newest["code"])

    def latest_message(self, destination: str, medium: str) -> str | None:
        """The text of the newest outbox message to ``destination`` (it holds a code: never report it)."""
        newest = self._newest(destination)
        return None if newest is None else str(newest.get("message") or "")

    def _newest(self, destination: str) -> dict[str, Any] | None:
        query = urllib.parse.urlencode({"destination": destination})
        messages = _get_json(f"{self._endpoint_url}/_outbox?{query}").get("messages") or []
        return dict(messages[-1]) if messages else None

    def describe(self) -> str:
        """``emulator outbox``."""
        return "emulator outbox"


class CommandCodeSource:
    """A command that prints the newest code; it gets ``CONFORMANCE_DESTINATION`` / ``CONFORMANCE_MEDIUM``.

    The command is split like a shell would (``shlex``) but run without a shell. Its output may be the code
    alone or any text: the last 6-8 digit number in it counts. Empty output means "nothing yet".
    """

    def __init__(self, command: str | Sequence[str], timeout_seconds: float = 20.0) -> None:
        self._argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not self._argv:
            raise ValueError("the code command is empty")
        self._timeout = timeout_seconds

    def latest(self, destination: str, medium: str) -> str | None:
        """Run the command once and pick the code out of its output."""
        env = {**os.environ, ENV_DESTINATION: destination, ENV_MEDIUM: medium}
        try:
            finished = subprocess.run(
                self._argv, env=env, capture_output=True, text=True, timeout=self._timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CodeSourceError(f"code command {self._argv[0]!r} failed: {type(exc).__name__}") from None
        if finished.returncode != 0:
            # stderr is not shown: a mailbox tool may print credentials or message text there.
            raise CodeSourceError(f"code command {self._argv[0]!r} exited with {finished.returncode}")
        return _last_code(finished.stdout)

    def describe(self) -> str:
        """The command's program name (not its arguments: they may hold a mailbox password)."""
        return f"command {os.path.basename(self._argv[0])}"


class MailboxCodeSource:
    """A mailbox over HTTP: ``url`` with ``{destination}`` replaced (URL-encoded) is fetched with GET.

    The answer may be the emulator outbox's JSON (``{"messages": [{"code": ...}]}``), a JSON list of messages
    (newest last; ``code``, ``text``, ``body`` or ``message`` fields), or plain text: the newest code wins.
    """

    def __init__(self, url: str) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("the mailbox URL must start with http:// or https://")
        self._url = url

    def latest(self, destination: str, medium: str) -> str | None:
        """Fetch the mailbox and pick the newest code."""
        url = self._url.replace("{destination}", urllib.parse.quote(destination, safe=""))
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - http(s) checked above
                raw = response.read().decode("utf-8", "replace")
        except OSError as exc:
            raise CodeSourceError(f"mailbox unreachable: {type(exc).__name__}") from None
        try:
            body: Any = json.loads(raw)
        except ValueError:
            return _last_code(raw)
        messages = body.get("messages") if isinstance(body, dict) else body
        if not isinstance(messages, list):
            return _last_code(raw)
        for message in reversed(messages):
            if not isinstance(message, dict):
                continue
            for name in ("code", "text", "body", "message"):
                code = _last_code(str(message.get(name) or ""))
                if code:
                    return code
        return None

    def describe(self) -> str:
        """The mailbox's scheme and host (the path or query may carry a token)."""
        parts = urllib.parse.urlsplit(self._url)
        return f"mailbox {parts.scheme}://{parts.hostname}"


def wait_for_new_code(
    source: CodeSource, destination: str, medium: str, before: str | None, timeout_seconds: float
) -> str | None:
    """Poll ``source`` until its newest code differs from ``before``; None when the deadline passes."""
    deadline = time.monotonic() + timeout_seconds
    pause = 0.02
    while True:
        code = source.latest(destination, medium)
        if code is not None and code != before:
            return code
        if time.monotonic() >= deadline:
            return None
        # Grows to one poll per 2 s: a real mailbox takes seconds, the outbox milliseconds.
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 2.0)


def _last_code(text: str) -> str | None:
    found = _CODE_IN_TEXT.findall(text)
    return found[-1] if found else None


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the emulator's own URL
        body: dict[str, Any] = json.loads(response.read() or b"{}")
    return body
