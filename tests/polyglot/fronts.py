"""What stands between an example orchestrator and the service in the fleet tests, each real on loopback:

- `NameServer`: a DNS server on UDP answering one name with several A records, like a headless Service;
- `Gate`: one instance address of that name. It refuses (accepts and closes at once, as an instance that is
  not up) until it is opened, then forwards the bytes to an upstream as they are, reading the HTTP/2 frames
  each way: the calls, the client's pings, the server's GOAWAYs;
- `FlakyFront`: a gRPC server answering the first calls of a method UNAVAILABLE (an instance going away) and
  passing every other call on to the service;
- `HeldOutbox`: the emulator's outbox, holding a destination's new codes back until released (the user takes
  their time to read the email), so a connection stays idle as long as a test needs.

Gates and the name server run on one asyncio loop in a thread of their own; the tests read what they saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading
import time
import urllib.request
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, urlencode, urlsplit

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import grpc

T = TypeVar("T")

# HTTP/2 frame types (RFC 9113, section 6).
HEADERS, PING, GOAWAY, DATA = 0x1, 0x6, 0x7, 0x0
ACK = 0x1
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Loop:
    """An asyncio loop in a daemon thread, for the parts that serve while the test waits on processes."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class _NameServerProtocol(asyncio.DatagramProtocol):
    def __init__(self, records: Mapping[str, Sequence[str]]) -> None:
        self.records = records
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass asyncio.DatagramTransport (3.11).
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA | dns.flags.RA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        if name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)  # _grpc_config.<name> (TXT) included: no config by DNS
        elif question.rdtype == dns.rdatatype.A:
            response.answer.append(
                dns.rrset.from_text_list(question.name, 1, "IN", "A", list(self.records[name]))
            )
        # Any other type of a known name (AAAA): no records, no error.
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


class NameServer:
    """DNS on 127.0.0.1:`port` (UDP): each name in `records` has those A records (a 1 s TTL)."""

    def __init__(self, loop: Loop, records: Mapping[str, Sequence[str]]) -> None:
        self._loop = loop
        transport, _ = loop.run(
            loop.loop.create_datagram_endpoint(
                lambda: _NameServerProtocol(records), local_addr=("127.0.0.1", 0)
            )
        )
        self._transport = transport
        self.port: int = transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        self._loop.loop.call_soon_threadsafe(self._transport.close)


@dataclass(frozen=True)
class Frame:
    """One HTTP/2 frame seen on a connection: when, which way, its type and flags."""

    at: float  # time.monotonic()
    from_client: bool
    kind: int
    flags: int
    payload: bytes  # kept for GOAWAY only


@dataclass
class Connection:
    """One client connection a gate forwarded, and the frames seen on it."""

    frames: list[Frame] = field(default_factory=list)

    def calls(self) -> int:
        """Calls the client opened: a unary call's first frame is its HEADERS (the client sends no trailers)."""
        return sum(1 for f in self.frames if f.from_client and f.kind == HEADERS)

    def idle_pings(self, quiet: float = 2.0) -> list[float]:
        """When the client sent a PING on an idle connection: no HEADERS or DATA either way in the `quiet`
        seconds before it. Pings that follow data closely are flow-control (BDP) probes, not keepalive."""
        pings, last_activity = [], float("-inf")
        for frame in list(self.frames):
            if frame.kind in (HEADERS, DATA):
                last_activity = frame.at
            elif (
                frame.kind == PING
                and frame.from_client
                and not frame.flags & ACK
                and frame.at - last_activity >= quiet
            ):
                pings.append(frame.at)
        return pings

    def goaways(self) -> list[tuple[int, bytes]]:
        """GOAWAY frames the server sent: (error code, debug data) — too_many_pings is ENHANCE_YOUR_CALM (11)."""
        return [
            (int.from_bytes(f.payload[4:8], "big"), f.payload[8:])
            for f in list(self.frames)
            if not f.from_client and f.kind == GOAWAY
        ]


class _FrameReader:
    """Splits one direction of a connection into frames (the client's side starts with the preface)."""

    def __init__(self, client: bool) -> None:
        self._buffer = bytearray()
        self._preface = len(_PREFACE) if client else 0

    def feed(self, data: bytes) -> Iterator[tuple[int, int, bytes]]:
        self._buffer += data
        if self._preface:
            skipped = min(self._preface, len(self._buffer))
            del self._buffer[:skipped]
            self._preface -= skipped
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                return
            kind, flags = self._buffer[3], self._buffer[4]
            payload = bytes(self._buffer[9 : 9 + length]) if kind == GOAWAY else b""
            del self._buffer[: 9 + length]
            yield kind, flags, payload


class Gate:
    """One address (host:port) of the name: refuses until `open(upstream)`, then forwards and observes."""

    def __init__(self, loop: Loop, host: str, port: int) -> None:
        self._loop = loop
        self.host, self.port = host, port
        self.upstream: tuple[str, int] | None = None
        self.refused: list[float] = []  # when each refused connection came
        self.connections: list[Connection] = []
        self._server = loop.run(asyncio.start_server(self._accept, host, port))
        self.port = self._server.sockets[0].getsockname()[1]

    def open(self, upstream: str) -> None:
        """Forward every connection from now on to `upstream` (host:port)."""
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))

    def close(self) -> None:
        self._loop.run(self._close())

    async def _close(self) -> None:
        self._server.close()
        for task in [t for t in asyncio.all_tasks() if t.get_name().startswith(f"gate-{id(self)}")]:
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.upstream is None:
            self.refused.append(time.monotonic())
            writer.transport.abort()  # a reset before any byte: the client's connection attempt fails
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        connection = Connection()
        self.connections.append(connection)
        name = f"gate-{id(self)}"
        await asyncio.gather(
            asyncio.create_task(self._pipe(reader, upstream_writer, connection, True), name=name),
            asyncio.create_task(self._pipe(upstream_reader, writer, connection, False), name=name),
            return_exceptions=True,
        )

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: Connection, from_client: bool
    ) -> None:
        frames = _FrameReader(client=from_client)
        try:
            while data := await reader.read(65536):
                now = time.monotonic()
                for kind, flags, payload in frames.feed(data):
                    connection.frames.append(Frame(now, from_client, kind, flags, payload))
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@dataclass(frozen=True)
class Call:
    """One call a FlakyFront received."""

    method: str  # "GenerateOtp"
    request: bytes
    previous_attempts: str | None  # the grpc-previous-rpc-attempts header a gRPC library's retry sets
    answered_unavailable: bool


class FlakyFront:
    """A gRPC server on 127.0.0.1: the first `unavailable[method]` calls of each method are answered
    UNAVAILABLE (as by an instance going away), every other call is passed on to `upstream` as it is (bytes
    in, bytes out; the traceparent and the deadline with it). `options`: the server's channel options."""

    def __init__(
        self, upstream: str, unavailable: Mapping[str, int], options: Sequence[tuple[str, Any]]
    ) -> None:
        self.calls: list[Call] = []
        self._unavailable = dict(unavailable)
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(upstream)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=list(options))
        self._server.add_generic_rpc_handlers([_PassOn(self)])
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answer(self, path: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        method = path.rpartition("/")[2]
        metadata = dict(context.invocation_metadata())
        with self._lock:
            refuse = self._unavailable.get(method, 0) > 0
            if refuse:
                self._unavailable[method] -= 1
            previous = metadata.get("grpc-previous-rpc-attempts")
            self.calls.append(Call(method, request, str(previous) if previous else None, refuse))
        if refuse:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the instance is going away")
        remaining = context.time_remaining()
        try:
            pass_on = cast("grpc.UnaryUnaryMultiCallable[bytes, bytes]", self._channel.unary_unary(path))
            return pass_on(
                request,
                timeout=remaining if remaining is not None else 10,
                metadata=tuple((k, str(v)) for k, v in metadata.items() if k == "traceparent"),
            )
        except grpc.RpcError as error:
            context.abort(error.code(), error.details() or "")

    def of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def close(self) -> None:
        self._server.stop(grace=None).wait(10)
        self._channel.close()


class _PassOn(grpc.GenericRpcHandler):
    def __init__(self, front: FlakyFront) -> None:
        self._front = front

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        path = str(handler_call_details.method)
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: self._front.answer(path, request, context)
        )


class HeldOutbox:
    """The emulator's outbox (`upstream`, its /_outbox URL) on a port of its own; `hold(destination)` freezes
    that destination's messages as they are until `release(destination)`."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream
        self._held: dict[str, bytes] = {}
        outbox = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urlsplit(self.path).query
                destination = parse_qs(query).get("destination", [""])[0]
                body = outbox._held.get(destination)
                if body is None:
                    with urllib.request.urlopen(f"{outbox._upstream}?{query}", timeout=10) as answer:
                        body = answer.read()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/_outbox"

    def hold(self, destination: str) -> None:
        query = urlencode({"destination": destination})
        with urllib.request.urlopen(f"{self._upstream}?{query}", timeout=10) as answer:
            body = answer.read()
        json.loads(body)  # what the examples will parse
        self._held[destination] = body

    def release(self, destination: str) -> None:
        self._held.pop(destination, None)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def running(*parts: Gate | NameServer | FlakyFront | HeldOutbox) -> Iterator[None]:
    """Close these parts when the block ends, whatever happens."""
    try:
        yield
    finally:
        for part in reversed(parts):
            with contextlib.suppress(Exception):
                part.close()
