"""OTLP span encoding straight to the protobuf wire format: the request bytes the SDK's encoder would make.

The SDK's encoder (opentelemetry-exporter-otlp-proto-common) builds a protobuf object for every span, every
attribute and every value before serializing them: about 40 µs of CPU per span here, more than recording
the span costs. Writing the wire format directly costs a fifth of that, and most of a step's attributes
repeat from span to span (the RPC's names, the connection, the step type, the outcome), so each distinct
key and value is encoded once and reused. The bytes decode to the message the SDK's `encode_spans` builds
(tests/unit/test_span_encoding.py holds the two equal), so a collector sees the same spans.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

_FIXED64 = struct.Struct("<Q").pack
_DOUBLE = struct.Struct("<d").pack
_FIXED32 = struct.Struct("<I").pack

# Span.flags: the span's parent context says whether it is remote (opentelemetry-proto's SpanFlags).
_FLAGS_LOCAL = _FIXED32(0x100)  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_FLAGS_REMOTE = _FIXED32(0x300)  # ... | SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
# Span.kind, tag and value, by SpanKind's value (INTERNAL 0 ... CONSUMER 4): the OTLP enum is one more.
_KINDS = {kind.value: b"\x30" + bytes((kind.value + 1,)) for kind in SpanKind}
# Field tags (field number << 3 | wire type) of the messages written here.
_SPAN_TRACE_ID = b"\x0a\x10"  # 16 bytes, always
_SPAN_ID = b"\x12\x08"
_SPAN_TRACE_STATE = b"\x1a"
_SPAN_PARENT_ID = b"\x22\x08"
_SPAN_NAME = b"\x2a"
_SPAN_START = b"\x39"
_SPAN_END = b"\x41"
_SPAN_ATTRIBUTE = b"\x4a"
_SPAN_DROPPED_ATTRIBUTES = b"\x50"
_SPAN_EVENT = b"\x5a"
_SPAN_DROPPED_EVENTS = b"\x60"
_SPAN_LINK = b"\x6a"
_SPAN_DROPPED_LINKS = b"\x70"
_SPAN_STATUS = b"\x7a"
_SPAN_FLAGS = b"\x85\x01"
_EVENT_TIME = b"\x09"
_EVENT_NAME = b"\x12"
_EVENT_ATTRIBUTE = b"\x1a"
_EVENT_DROPPED_ATTRIBUTES = b"\x20"
_LINK_TRACE_ID = b"\x0a\x10"
_LINK_SPAN_ID = b"\x12\x08"
_LINK_ATTRIBUTE = b"\x22"
_LINK_DROPPED_ATTRIBUTES = b"\x28"
_LINK_FLAGS = b"\x35"

# Encoded key-value pairs kept for reuse; a bound, so unique values (run ids, request ids) cannot grow it
# without limit: when full it starts again empty.
_CACHE_LIMIT = 8192


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 is written as its two's complement, ten bytes
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [_varint(n) for n in range(0x4000)]


def _length(size: int) -> bytes:
    return _SMALL[size] if size < 0x4000 else _varint(size)


def _delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + _length(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """An AnyValue message (the SDK's `_encode_value`, in its order of type checks)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _delimited(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _delimited(b"\x3a", value)
    if isinstance(value, Sequence):
        items = b"".join(_delimited(b"\x0a", _any_value(item)) for item in value)
        return _delimited(b"\x2a", items)
    if isinstance(value, Mapping):
        pairs = b"".join(_delimited(b"\x0a", _key_value(str(k), v)) for k, v in value.items())
        return _delimited(b"\x32", pairs)
    raise TypeError(f"not an attribute value: {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    return _delimited(b"\x0a", key.encode()) + _delimited(b"\x12", _any_value(value))


class SpanEncoder:
    """Encodes ended spans, one at a time, and requests made of encoded spans; what repeats between spans
    (attribute pairs, names, the resource and the scope) is encoded once.

    One thread at a time: its caches are plain dicts, and a (resource, scope) group is numbered as it is
    first seen (the span processor encodes under its sending lock).
    """

    def __init__(self) -> None:
        # Per field tag, (key, value) -> the tagged KeyValue, for str values (a str is never equal to another
        # type, whereas True == 1 == 1.0 would collide; numbers are cheap to write anyway).
        self._pairs: dict[bytes, dict[tuple[str, str], bytes]] = {}
        # Keys whose values hardly repeat (run ids, request ids): written each time, not cached.
        self._volatile: set[str] = set()
        self._names: dict[str, bytes] = {}
        # (id(resource), id(scope)) -> (resource, scope, group number); the objects are kept to check that an
        # id was not reused; group number -> its encoded parts.
        self._group_ids: dict[tuple[int, int], tuple[Any, Any, int]] = {}
        self._groups: list[_Group] = []

    def encode(self, spans: Iterable[ReadableSpan]) -> bytes:
        """The serialized ExportTraceServiceRequest of `spans`."""
        return self.request(self.span(span) for span in spans)

    def span(self, span: ReadableSpan) -> tuple[int, bytes]:
        """One span, encoded (a `ScopeSpans.spans` field), and the group (resource and scope) it goes in."""
        resource, scope = span.resource, span.instrumentation_scope
        known = self._group_ids.get((id(resource), id(scope)))
        if known is None or known[0] is not resource or known[1] is not scope:
            known = self._new_group(resource, scope)
        return known[2], self._span(span)

    def request(self, spans: Iterable[tuple[int, bytes]]) -> bytes:
        """The serialized ExportTraceServiceRequest of spans encoded by `span`: one ResourceSpans per resource,
        one ScopeSpans per scope in it, as the SDK's encoder groups them."""
        by_group: dict[int, list[bytes]] = {}
        for group, encoded in spans:
            found = by_group.get(group)
            if found is None:
                by_group[group] = [encoded]
            else:
                found.append(encoded)
        by_resource: dict[int, list[bytes]] = {}
        for number, encoded_spans in by_group.items():
            parts = self._groups[number]
            scope_spans = _delimited(b"\x12", parts.scope + b"".join(encoded_spans) + parts.scope_schema)
            by_resource.setdefault(parts.resource_group, []).append(scope_spans)
        resource_spans = []
        for number, scopes in by_resource.items():
            parts = self._groups[number]
            body = parts.resource + b"".join(scopes) + parts.resource_schema
            resource_spans.append(_delimited(b"\x0a", body))
        return b"".join(resource_spans)

    def _new_group(self, resource: Any, scope: Any) -> tuple[Any, Any, int]:
        number = len(self._groups)
        same_resource = next(
            (g.resource_group for g in self._groups if g.resource_object is resource), number
        )
        resource_attributes = b"".join(
            _delimited(b"\x0a", _key_value(k, v)) for k, v in (resource.attributes or {}).items()
        )
        scope_body = b""
        if scope is not None:
            scope_body = _delimited(b"\x0a", scope.name.encode()) if scope.name else b""
            scope_body += _delimited(b"\x12", scope.version.encode()) if scope.version else b""
            scope_body += b"".join(
                _delimited(b"\x1a", _key_value(k, v)) for k, v in (scope.attributes or {}).items()
            )
        self._groups.append(
            _Group(
                resource_object=resource,
                resource_group=same_resource,
                resource=_delimited(b"\x0a", resource_attributes),
                resource_schema=_delimited(b"\x1a", resource.schema_url.encode())
                if resource.schema_url
                else b"",
                scope=_delimited(b"\x0a", scope_body),
                scope_schema=_delimited(b"\x1a", scope.schema_url.encode())
                if scope is not None and scope.schema_url
                else b"",
            )
        )
        known = (resource, scope, number)
        self._group_ids[id(resource), id(scope)] = known
        return known

    def _attributes(self, tag: bytes, attributes: Any, parts: list[bytes]) -> int:
        """Appends the tagged KeyValues of `attributes` to `parts`; the count the SDK dropped (which an
        empty container may carry too: the limit dropped every attribute).

        Each (key, value) pair is looked up whole, by `map` (no Python code per attribute when they are
        all known); only the ones not cached are written here.
        """
        if not attributes:
            return int(getattr(attributes, "dropped", 0))
        # A BoundedAttributes' Mapping interface costs a Python call per key: its plain dict is read.
        plain = getattr(attributes, "_dict", None)
        items = list((attributes if plain.__class__ is not dict else plain).items())
        pairs = self._pairs.get(tag)
        if pairs is None:
            pairs = self._pairs[tag] = {}
        try:
            encoded: list[bytes | None] = list(map(pairs.get, items))
        except TypeError:  # a mapping value is no dict key; only str values are ever cached
            encoded = [pairs.get(item) if item[1].__class__ is str else None for item in items]
        index = -1
        while None in encoded:
            index = encoded.index(None, index + 1)
            key, value = items[index]
            written = _delimited(tag, _key_value(key, value))
            # str values only: a str is never equal to another type, whereas True == 1 == 1.0.
            if value.__class__ is str and key not in self._volatile:
                if len(pairs) >= _CACHE_LIMIT:
                    self._forget(pairs)
                pairs[key, value] = written
            encoded[index] = written
        parts += encoded  # type: ignore[arg-type]  # no None left
        dropped: int = getattr(attributes, "dropped", 0)
        return dropped

    def _forget(self, pairs: dict[tuple[str, str], bytes]) -> None:
        """A full cache starts again empty; a key that filled a good part of it is one whose values do not
        repeat, and is no longer cached."""
        per_key = Counter(key for key, _ in pairs)
        self._volatile.update(key for key, count in per_key.items() if count > _CACHE_LIMIT // 8)
        pairs.clear()

    def _span(self, span: ReadableSpan) -> bytes:
        """One Span, with its field tag (ScopeSpans.spans) and length."""
        context: Any = span.get_span_context()
        parent = span.parent
        name = self._names.get(span.name)
        if name is None:
            if len(self._names) >= _CACHE_LIMIT:
                self._names.clear()
            name = self._names[span.name] = _delimited(_SPAN_NAME, span.name.encode())
        parts = [
            _SPAN_TRACE_ID,
            context.trace_id.to_bytes(16, "big"),
            _SPAN_ID,
            context.span_id.to_bytes(8, "big"),
        ]
        if context.trace_state:
            parts.append(_delimited(_SPAN_TRACE_STATE, _trace_state(context.trace_state)))
        flags = _FLAGS_LOCAL
        if parent is not None:
            parts += (_SPAN_PARENT_ID, parent.span_id.to_bytes(8, "big"))
            if parent.is_remote:
                flags = _FLAGS_REMOTE
        parts += (
            name,
            _KINDS[span.kind._value_],
            _SPAN_START,
            _FIXED64(span.start_time or 0),
            _SPAN_END,
            _FIXED64(span.end_time or 0),
        )
        # The SDK's containers, read without their public views: ReadableSpan.attributes wraps a
        # BoundedAttributes whose Mapping interface costs a Python call per key, .events and .links copy
        # their BoundedList under its lock (pinned SDK; tests/unit/test_span_encoding.py).
        raw: Any = span
        dropped = self._attributes(_SPAN_ATTRIBUTE, raw._attributes, parts)
        if dropped:
            parts += (_SPAN_DROPPED_ATTRIBUTES, _varint(dropped))
        events = _entries(raw._events)
        if events:
            for event in events:
                body = [_EVENT_TIME, _FIXED64(event.timestamp), _delimited(_EVENT_NAME, event.name.encode())]
                dropped = self._attributes(_EVENT_ATTRIBUTE, event.attributes, body)
                if dropped:
                    body += (_EVENT_DROPPED_ATTRIBUTES, _varint(dropped))
                parts.append(_delimited(_SPAN_EVENT, b"".join(body)))
        if getattr(raw._events, "dropped", 0):
            parts += (_SPAN_DROPPED_EVENTS, _varint(raw._events.dropped))
        links = _entries(raw._links)
        if links:
            for link in links:
                body = [_LINK_TRACE_ID, link.context.trace_id.to_bytes(16, "big")]
                body += (_LINK_SPAN_ID, link.context.span_id.to_bytes(8, "big"))
                # No trace_state: the SDK's encoder writes none for links either.
                dropped = self._attributes(_LINK_ATTRIBUTE, link.attributes, body)
                if dropped:
                    body += (_LINK_DROPPED_ATTRIBUTES, _varint(dropped))
                body += (_LINK_FLAGS, _FLAGS_REMOTE if link.context.is_remote else _FLAGS_LOCAL)
                parts.append(_delimited(_SPAN_LINK, b"".join(body)))
        if getattr(raw._links, "dropped", 0):
            parts += (_SPAN_DROPPED_LINKS, _varint(raw._links.dropped))
        parts += (_status(span.status), _SPAN_FLAGS, flags)
        return _delimited(b"\x12", b"".join(parts))


def _entries(entries: Any) -> Any:
    """The items of a BoundedList (its deque, without the copy its iteration makes), or of a sequence."""
    queue = getattr(entries, "_dq", None)
    return entries if queue is None else queue


def _trace_state(trace_state: Any) -> bytes:
    return ",".join(f"{key}={value}" for key, value in trace_state.items()).encode()


_STATUS_CACHE: dict[tuple[int, str | None], bytes] = {}


def _status(status: Any) -> bytes:
    if status is None:
        return b""
    code: int = status.status_code._value_  # the member's value without the enum's descriptor
    key = (code, status.description)
    encoded = _STATUS_CACHE.get(key)
    if encoded is None:
        body = _delimited(b"\x12", status.description.encode()) if status.description else b""
        body += b"\x18" + _varint(code) if code else b""
        encoded = _delimited(_SPAN_STATUS, body)
        if len(_STATUS_CACHE) < 256:  # descriptions vary only with ERROR statuses, a few kinds of them
            _STATUS_CACHE[key] = encoded
    return encoded


@dataclass(frozen=True, slots=True)
class _Group:
    """The encoded parts of one (resource, scope) pair; `resource_group` is the first group of its resource."""

    resource_object: Any
    resource_group: int
    resource: bytes
    resource_schema: bytes
    scope: bytes
    scope_schema: bytes
