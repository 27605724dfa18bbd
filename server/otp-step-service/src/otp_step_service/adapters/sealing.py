"""Cognito sessions (and usernames) sealed at rest in the shared store: AES-256-GCM, keys rotated by key id.

A Redis that is read by the wrong person (a replica, a backup, a `MONITOR`) must not hand out sign-in
sessions. The store's scripts never need those two fields, so only they are sealed: each value becomes
`<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`, bound to the challenge's storage key (associated data), so a
sealed session cannot be copied into another journey's challenge.

Keys file (`OTP_STEP_CHALLENGE_KEYS_FILE`): one `<key id> <base64 of 32 random bytes>` per line; the first
line seals, every line opens. Rotate by putting a new key first and dropping the old one once every challenge
sealed with it has expired (twice the session validity at most).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from otp_step_service.steps.errors import ChallengeStoreError, ConfigurationError

_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class SessionSealer:
    """Seals and opens strings with the first of `keys` / any of them."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ConfigurationError("the challenge keys file holds no key")
        self._current = keys[0][0]
        self._current_key = keys[0][1]
        self._keys = {kid: AESGCM(key) for kid, key in keys}

    def derived_key(self, purpose: str) -> bytes:
        """A key for another `purpose` (the decoy masks), derived from the sealing key: rotated with it."""
        return hmac.new(
            self._current_key, b"otp-step-service\x00" + purpose.encode(), hashlib.sha256
        ).digest()

    @classmethod
    def from_file(cls, path: Path) -> SessionSealer:
        """Keys from `path` (see the module docstring); errors name the line, never a key."""
        try:
            lines = [line.strip() for line in path.read_text().splitlines()]
        except OSError as exc:
            raise ConfigurationError(
                f"OTP_STEP_CHALLENGE_KEYS_FILE: cannot read {path} ({exc.strerror})"
            ) from None
        keys: list[tuple[str, bytes]] = []
        for number, line in enumerate(lines, start=1):
            if not line or line.startswith("#"):
                continue
            kid, _, encoded = line.partition(" ")
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except binascii.Error:
                key = b""
            if not _KEY_ID.match(kid) or len(key) != 32:
                raise ConfigurationError(
                    f"OTP_STEP_CHALLENGE_KEYS_FILE {path}, line {number}: expected '<key id> <base64 of 32 bytes>' "
                    "(make one with: python -c \"import os,base64; print('k1', base64.b64encode(os.urandom(32)).decode())\")"
                )
            keys.append((kid, key))
        return cls(keys)

    @staticmethod
    def new_key_line(kid: str = "k1") -> str:
        """A fresh keys-file line (tests, `make run`, the bench)."""
        return f"{kid} {base64.b64encode(os.urandom(32)).decode()}"

    def seal(self, plaintext: str, context: str) -> str:
        """`plaintext` sealed with the current key, bound to `context` (the storage key)."""
        nonce = os.urandom(12)
        sealed = self._keys[self._current].encrypt(nonce, plaintext.encode(), context.encode())
        return f"{self._current}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, token: str, context: str) -> str:
        """The plaintext of `token`, or ChallengeStoreError (unknown key id, tampered, other context)."""
        kid, _, encoded = token.partition(":")
        key = self._keys.get(kid)
        if key is None:
            # The message is logged: it names the key id only when the stored value starts with one (a value
            # without ':' would be all of it, and a value in clear may be a session).
            if not _KEY_ID.fullmatch(kid):
                raise ChallengeStoreError("a stored challenge is not sealed (its value names no key id)")
            raise ChallengeStoreError(f"a challenge is sealed with key id {kid!r}, which the keys file lacks")
        try:
            raw = base64.b64decode(encoded)
            return key.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except (binascii.Error, InvalidTag, ValueError):
            raise ChallengeStoreError(
                "a sealed challenge does not open: tampered, or moved from another key"
            ) from None
