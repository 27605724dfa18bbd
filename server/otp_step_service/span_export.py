"""Span export in a companion process: steps pay for recording spans, not for encoding and sending them.

Why a process. Encoding a span for OTLP costs the SDK's Python encoder ~45-75 µs (more with an event), about as
much as recording it; with the SDK's BatchSpanProcessor that work runs on a thread of the server's own process
and takes the GIL from the steps. Measured under ghz, the export thread alone held ~17 % of the server's GIL
time (README, "Tracing overhead"). Here the server only turns each finished span into plain tuples and queues
it; a background thread ships the queue every 100 ms, one `marshal` blob per batch, over a socketpair to a
child process. The child rebuilds the spans and hands them to the SDK's own BatchSpanProcessor and OTLP
exporter, configured by the same OTEL_* variables, on another core.

What does not change: spans, attributes, events, parentage and the resource are the SDK's, exported by the
SDK's exporter. Telemetry still never breaks a step: the queue is bounded (OTEL_BSP_MAX_QUEUE_SIZE) and drops
spans when full; a dead or stuck exporter process costs spans (counted and logged), never a journey, and is
restarted at most every 10 s. The child ends when the server closes the socket (or dies): it exports what it
holds, then exits.

    OTP_STEP_SPAN_EXPORT=process   # default: this module
    OTP_STEP_SPAN_EXPORT=thread    # the SDK's BatchSpanProcessor in the server's own process

Wire format (parent -> child): frames of a 5-byte header (kind, big-endian length) and a `marshal` payload.
`marshal` is only ever read from the inherited end of a private socketpair, never from the network.
"""

from __future__ import annotations

import collections
import logging
import marshal
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

log = logging.getLogger(__name__)

SPANS = b"S"  # payload: list of span records
FLUSH = b"F"  # payload: timeout in ms; the child flushes its exporter and answers FLUSHED
FLUSHED = b"K"  # payload: bool
_HEADER = struct.Struct("!cI")

SHIP_INTERVAL = 0.1  # seconds between shipments (or sooner, when a batch is full)
_SEND_TIMEOUT = 5.0  # a child that reads nothing for this long is taken for dead
_RESTART_PAUSE = 10.0
_STOP_TIMEOUT = 10.0

Record = tuple[Any, ...]


# -- records: a finished span as plain values (marshal-able) and back -----------------------------------
def _context_record(context: SpanContext | None) -> tuple[int, int, bool, int] | None:
    if context is None:
        return None
    return (context.trace_id, context.span_id, context.is_remote, int(context.trace_flags))


def _span_context(record: Sequence[Any] | None, trace_state: TraceState | None = None) -> SpanContext | None:
    if record is None:
        return None
    trace_id, span_id, is_remote, flags = record
    return SpanContext(trace_id, span_id, is_remote, TraceFlags(flags), trace_state)


def span_record(span: ReadableSpan) -> Record:
    """The span as nested tuples, dicts and scalars: what `marshal` can carry."""
    context = span.context
    scope = span.instrumentation_scope
    status = span.status
    return (
        span.name,
        _context_record(context),
        tuple(context.trace_state.items()) if context is not None and context.trace_state else (),
        _context_record(span.parent),
        span.kind.value,
        span.start_time,
        span.end_time,
        dict(span.attributes or {}),
        span.dropped_attributes,
        tuple((e.name, e.timestamp, dict(e.attributes or {})) for e in span.events),
        span.dropped_events,
        tuple((_context_record(link.context), dict(link.attributes or {})) for link in span.links),
        span.dropped_links,
        status.status_code.value,
        status.description,
        (scope.name, scope.version, scope.schema_url) if scope is not None else None,
    )


def readable_span(record: Sequence[Any], resource: Resource) -> ReadableSpan:
    """The ReadableSpan a record was made from (the exporter's input)."""
    (
        name,
        context,
        trace_state,
        parent,
        kind,
        start,
        end,
        attributes,
        _dropped_attributes,
        events,
        _dropped_events,
        links,
        _dropped_links,
        status_code,
        status_description,
        scope,
    ) = record
    return ReadableSpan(
        name,
        context=_span_context(context, TraceState(list(trace_state)) if trace_state else None),
        parent=_span_context(parent),
        resource=resource,
        attributes=attributes,
        events=[
            Event(event_name, event_attributes, timestamp)
            for event_name, timestamp, event_attributes in events
        ],
        links=[Link(_span_context(link_context), link_attributes) for link_context, link_attributes in links],  # type: ignore[arg-type]
        kind=SpanKind(kind),
        status=Status(StatusCode(status_code), status_description),
        start_time=start,
        end_time=end,
        instrumentation_scope=InstrumentationScope(*scope) if scope is not None else None,
    )


# -- the server's side ------------------------------------------------------------------------------------
class SpanShipper(SpanProcessor):
    """Queues finished, sampled spans and ships them to an exporter process (started here)."""

    def __init__(
        self,
        max_queue_size: int | None = None,
        batch_size: int | None = None,
        command: Sequence[str] | None = None,
        restart_pause: float = _RESTART_PAUSE,
    ) -> None:
        self._max_queue = max_queue_size or _env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self._batch = max(
            1, min(batch_size or _env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), self._max_queue)
        )
        self._command = list(command or [sys.executable, "-m", "otp_step_service.span_export"])
        self._queue: collections.deque[Record] = collections.deque()
        self._io = threading.Lock()  # one writer on the socket at a time: the shipper thread or force_flush
        self._wake = threading.Event()
        self._stopping = False
        self._socket: socket.socket | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._restart_pause = restart_pause
        self.dropped = 0  # spans lost to a full queue or a dead exporter process
        self._reported_dropped = 0
        self._start_child()
        self._thread = threading.Thread(target=self._run, name="span-shipper", daemon=True)
        self._thread.start()

    @property
    def exporter_pid(self) -> int | None:
        """The exporter process's pid, while there is one."""
        return self._child.pid if self._child is not None and self._socket is not None else None

    # SpanProcessor ---------------------------------------------------------------------------------------
    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue the span (a few µs); drop it when the queue is full."""
        if span.context is None or not span.context.trace_flags.sampled or self._stopping:
            return
        if len(self._queue) >= self._max_queue:
            self.dropped += 1
            return
        self._queue.append(span_record(span))
        if len(self._queue) >= self._batch:
            self._wake.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Ship what is queued and wait until the exporter process has exported it."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._io:
            self._ship_queued()
            if self._socket is None:
                return False
            try:
                self._send(FLUSH, marshal.dumps(timeout_millis))
                return bool(self._receive_ack(deadline))
            except OSError as exc:
                self._lost(exc)
                return False

    def shutdown(self) -> None:
        """Ship the rest, close the socket, and give the exporter process time to export and exit."""
        self._stopping = True
        self._wake.set()
        self._thread.join(_STOP_TIMEOUT)
        with self._io:
            self._ship_queued()
            sock, child = self._socket, self._child
            self._socket = None
        self._report_dropped()
        if sock is not None:
            sock.close()  # end of stream: the child exports what it holds, then exits
        if child is not None:
            try:
                child.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("span exporter process did not stop in %.0f s; killing it", _STOP_TIMEOUT)
                child.kill()
                child.wait()

    # the shipper thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(SHIP_INTERVAL)
            self._wake.clear()
            with self._io:
                if self._socket is None and time.monotonic() - self._started_at >= self._restart_pause:
                    self._start_child()
                self._ship_queued()
            self._report_dropped()

    def _ship_queued(self) -> None:
        queue = self._queue
        while queue:
            batch = [queue.popleft() for _ in range(min(len(queue), self._batch))]
            if self._socket is None:
                self.dropped += len(batch)
                continue
            try:
                self._send(SPANS, marshal.dumps(batch))
            except (OSError, ValueError) as exc:  # ValueError: a value marshal cannot carry
                self.dropped += len(batch)
                if isinstance(exc, OSError):
                    self._lost(exc)

    def _send(self, kind: bytes, payload: bytes) -> None:
        assert self._socket is not None
        self._socket.sendall(_HEADER.pack(kind, len(payload)) + payload)

    def _receive_ack(self, deadline: float) -> bool:
        assert self._socket is not None
        frame = bytearray()
        while len(frame) < _HEADER.size or len(frame) < _HEADER.size + _HEADER.unpack_from(frame)[1]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the span exporter process did not confirm the flush in time")
            self._socket.settimeout(left)
            chunk = self._socket.recv(65536)
            if not chunk:
                raise ConnectionResetError("the span exporter process closed the connection")
            frame += chunk
        self._socket.settimeout(_SEND_TIMEOUT)
        kind, length = _HEADER.unpack_from(frame)
        answer = bytes(frame[_HEADER.size : _HEADER.size + length])
        return kind == FLUSHED and bool(marshal.loads(answer))  # noqa: S302 - from our own child

    # the exporter process ----------------------------------------------------------------------------------
    def _start_child(self) -> None:
        self._started_at = time.monotonic()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        # The child imports this package the way this process did, whatever put it on sys.path.
        package_root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        try:
            self._child = subprocess.Popen(
                [*self._command, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except OSError as exc:
            log.warning("span export: cannot start the exporter process (%s); spans are dropped", exc)
            ours.close()
            return
        finally:
            theirs.close()
        ours.settimeout(_SEND_TIMEOUT)
        self._socket = ours

    def _lost(self, exc: BaseException) -> None:
        code = self._child.poll() if self._child is not None else None
        log.warning(
            "span export: the exporter process is gone (%s%s); spans are dropped until it is restarted",
            type(exc).__name__,
            f", exit code {code}" if code is not None else "",
        )
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        if self._child is not None and code is None:
            self._child.kill()  # stuck rather than gone: a partial frame leaves the stream unusable anyway
            self._child.wait()

    def _report_dropped(self) -> None:
        dropped = self.dropped
        if dropped > self._reported_dropped and (self._stopping or dropped - self._reported_dropped >= 1000):
            log.warning("span export: %d spans dropped so far (queue full or exporter down)", dropped)
            self._reported_dropped = dropped


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


# -- the exporter process ---------------------------------------------------------------------------------
def serve(connection: socket.socket, processor: SpanProcessor, resource: Resource) -> None:
    """Read frames until the server closes the stream; export every span through `processor`."""
    reader = connection.makefile("rb")
    try:
        while True:
            header = reader.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return  # the server closed the stream (or died)
            kind, length = _HEADER.unpack(header)
            payload = reader.read(length)
            if len(payload) < length:
                return
            if kind == SPANS:
                for record in marshal.loads(payload):  # noqa: S302 - from our parent, see the module doc
                    processor.on_end(readable_span(record, resource))
            elif kind == FLUSH:
                flushed = processor.force_flush(int(marshal.loads(payload)))  # noqa: S302 - from our parent
                answer = marshal.dumps(bool(flushed))
                connection.sendall(_HEADER.pack(FLUSHED, len(answer)) + answer)
    finally:
        processor.shutdown()


def main(argv: Sequence[str] | None = None, make_exporter: Callable[[], SpanExporter] | None = None) -> int:
    """`python -m otp_step_service.span_export FD`: export the spans that arrive on the inherited socket FD."""
    from otp_step_service.step_log import configure_logging
    from otp_step_service.telemetry import otlp_exporter, tracing_resource

    args = list(sys.argv[1:] if argv is None else argv)
    # Ctrl-C reaches the whole process group: the server decides when this process ends (by closing the
    # socket), so the spans of its last steps are still exported.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(os.environ.get("OTP_STEP_LOG_LEVEL", "INFO"))
    connection = socket.socket(fileno=int(args[0]))
    connection.settimeout(None)
    serve(connection, BatchSpanProcessor((make_exporter or otlp_exporter)()), tracing_resource())
    return 0


if __name__ == "__main__":
    sys.exit(main())
