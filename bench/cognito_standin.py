"""A canned cognito-idp responder for load tests: not an emulator.

It answers every `AWSCognitoIdentityProviderService.InitiateAuth` with the same, valid EMAIL_OTP challenge
(a fresh Session each time, USERNAME echoed back), every `RespondToAuthChallenge` with `CodeMismatchException`
(no code is ever right: a Validate load is wrong codes), and nothing else: no users, no codes, no state. Its job is to
cost so little that a benchmark of the service measures the service, where the emulator (a few hundred calls
per second per process) would hide it. An optional delay before each answer stands in for Cognito's latency.

    python -m bench.cognito_standin --port 0 [--delay-ms 100]

prints `cognito-standin listening on http://127.0.0.1:PORT` once it accepts connections. Plain asyncio on
one thread: HTTP/1.1 with keep-alive, one request at a time per connection (botocore does not pipeline).

Other requests: `GET /_stats` answers `{"initiate_auth": n, "respond": n, "other": n}`; the pool's JWKS path answers an
empty key set (the service fetches it when it starts); any other target gets a cognito-style
`InvalidParameterException` (HTTP 400), so a misdirected benchmark fails loudly instead of measuring nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import sys
from typing import Any

INITIATE_AUTH = b"awscognitoidentityproviderservice.initiateauth"
RESPOND_TO_AUTH_CHALLENGE = b"awscognitoidentityproviderservice.respondtoauthchallenge"
_JSON = b"application/x-amz-json-1.1"
# Cognito sessions are opaque base64 blobs of roughly 900 characters [obs]; the service keeps one per
# challenge, so their size matters for the memory measurement.
_SESSION_PREFIX = secrets.token_urlsafe(680)
_MAX_HEADER = 64 * 1024


class StandinStats:
    """Requests answered, by kind."""

    def __init__(self) -> None:
        self.initiate_auth = 0
        self.respond = 0
        self.other = 0


def _response(status: bytes, body: bytes, content_type: bytes = _JSON, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type
        + b"\r\nContent-Length: " + str(len(body)).encode()
        + b"\r\nx-amzn-RequestId: 00000000-0000-4000-8000-000000000000\r\n" + extra + b"\r\n" + body
    )  # fmt: skip


def initiate_auth_answer(request_body: bytes, serial: int) -> bytes:
    """The canned EMAIL_OTP challenge for one InitiateAuth request body."""
    try:
        parameters = json.loads(request_body).get("AuthParameters", {})
        username = str(parameters.get("USERNAME", "user"))
    except (ValueError, AttributeError):
        username = "user"
    body = {
        "ChallengeName": "EMAIL_OTP",
        "Session": f"{_SESSION_PREFIX}{serial:012d}",
        "ChallengeParameters": {
            "CODE_DELIVERY_DELIVERY_MEDIUM": "EMAIL",
            "CODE_DELIVERY_DESTINATION": "a***@e***",
            "USERNAME": username,
        },
    }
    return _response(b"200 OK", json.dumps(body, separators=(",", ":")).encode())


_BAD_TARGET = _response(
    b"400 Bad Request",
    b'{"__type":"InvalidParameterException","message":"the load-test stand-in answers InitiateAuth only"}',
    extra=b"x-amzn-ErrorType: InvalidParameterException\r\n",
)
# What Cognito answers a wrong EMAIL_OTP code with (the session stays usable for the next attempt).
_CODE_MISMATCH = _response(
    b"400 Bad Request",
    b'{"__type":"CodeMismatchException","message":"Invalid code received for user"}',
    extra=b"x-amzn-ErrorType: CodeMismatchException\r\n",
)
_EMPTY_JWKS = _response(b"200 OK", b'{"keys":[]}', b"application/json")
_NOT_FOUND = _response(b"404 Not Found", b"{}", b"application/json")


class _Connection(asyncio.Protocol):
    def __init__(self, stats: StandinStats, delay: float) -> None:
        self._stats = stats
        self._delay = delay
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_HEADER and self._transport is not None:
                    self._transport.close()
                return
            head = self._buffer[:end].split(b"\r\n")
            length, target = 0, b""
            for line in head[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"x-amz-target":
                    target = value.strip().lower()
            if len(self._buffer) < end + 4 + length:
                return
            body = self._buffer[end + 4 : end + 4 + length]
            self._buffer = self._buffer[end + 4 + length :]
            self._answer(self._route(head[0], target, body))

    def _route(self, request_line: bytes, target: bytes, body: bytes) -> bytes:
        if target.endswith(INITIATE_AUTH):
            self._stats.initiate_auth += 1
            return initiate_auth_answer(body, self._stats.initiate_auth)
        if target.endswith(RESPOND_TO_AUTH_CHALLENGE):
            self._stats.respond += 1
            return _CODE_MISMATCH
        self._stats.other += 1
        path = request_line.split(b" ")[1] if request_line.count(b" ") >= 2 else b"/"
        if request_line.startswith(b"GET "):
            if path == b"/_stats":
                stats = {
                    "initiate_auth": self._stats.initiate_auth,
                    "respond": self._stats.respond,
                    "other": self._stats.other,
                }
                return _response(b"200 OK", json.dumps(stats).encode(), b"application/json")
            if path.endswith(b"/.well-known/jwks.json"):
                return _EMPTY_JWKS
            return _NOT_FOUND
        return _BAD_TARGET

    def _answer(self, response: bytes) -> None:
        if self._delay > 0:
            self._loop.call_later(self._delay, self._write, response)
        else:
            self._write(response)

    def _write(self, response: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(response)


async def serve(host: str, port: int, delay: float, ready: Any = print) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stats = StandinStats()
    server = await loop.create_server(lambda: _Connection(stats, delay), host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    ready(f"cognito-standin listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m bench.cognito_standin`."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.cognito_standin", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="wait this long before each answer")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
