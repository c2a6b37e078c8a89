"""Encode SDK spans as OTLP/JSON ``TracesData`` lines: the record format.

One line holds one span (lowerCamelCase keys, hex ids, enums as integers, 64-bit integers as
decimal strings), so any OTLP/JSON reader and the Collector's ``otlp_json_file`` receiver read our
files. A *start record* is the span as it started, marked with ``agent_otel.start_record``; the
*end record* is the complete span. Lines are kept under :data:`MAX_LINE_BYTES` by truncating the
largest string values (their keys listed in ``agent_otel.truncated``) — a span is never dropped.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from agent_otel.attributes import START_RECORD, TRUNCATED

try:  # optional speed-up (the ``fast`` extra); the stdlib encoder is the fallback
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

MAX_LINE_BYTES = 1024 * 1024 - 1024  # the Collector's file receiver truncates lines over 1 MiB
_TRUNCATION_STEPS = (256 * 1024, 64 * 1024, 16 * 1024, 4 * 1024, 1024, 256)
_START_MARKER = {"key": START_RECORD, "value": {"boolValue": True}}


def _dumps_std(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


if _orjson is not None:
    _orjson_dumps = _orjson.dumps

    def dumps(obj: Any) -> bytes:
        """Compact JSON as UTF-8 bytes."""
        return _orjson_dumps(obj)

else:  # pragma: no cover - depends on the environment
    dumps = _dumps_std


def _any_value(value: Any) -> dict[str, Any]:
    kind = type(value)
    if kind is str:
        return {"stringValue": value}
    if kind is bool:
        return {"boolValue": value}
    if kind is int:
        return {"intValue": str(value)}
    if kind is float:
        if math.isfinite(value):
            return {"doubleValue": value}
        return {"doubleValue": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_any_value(v) for v in value]}}
    if isinstance(value, (bytes, bytearray)):
        return {"bytesValue": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, bool):
        return {"boolValue": bool(value)}
    if isinstance(value, int):
        return {"intValue": str(int(value))}
    if isinstance(value, float):
        return _any_value(float(value))
    if isinstance(value, str):
        return {"stringValue": str(value)}
    try:
        return {"stringValue": str(value)}
    except Exception:
        return {"stringValue": f"<unrepresentable {type(value).__name__}>"}


def encode_attributes(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """OTLP/JSON ``KeyValue`` list for an attribute mapping."""
    if not attributes:
        return []
    return [{"key": key, "value": _any_value(value)} for key, value in attributes.items()]


def encode_resource(resource: Resource) -> dict[str, Any]:
    """OTLP/JSON ``Resource``."""
    return {"attributes": encode_attributes(resource.attributes)}


def encode_scope(scope: InstrumentationScope | None) -> dict[str, Any]:
    """OTLP/JSON ``InstrumentationScope``."""
    if scope is None:
        return {"name": ""}
    out: dict[str, Any] = {"name": scope.name}
    if scope.version:
        out["version"] = scope.version
    return out


def _span_body(span: ReadableSpan, *, start: bool) -> dict[str, Any]:
    ctx = span.context
    body: dict[str, Any] = {
        "traceId": format(ctx.trace_id, "032x"),
        "spanId": format(ctx.span_id, "016x"),
    }
    if ctx.trace_state:
        body["traceState"] = ctx.trace_state.to_header()
    parent = span.parent
    if parent is not None:
        body["parentSpanId"] = format(parent.span_id, "016x")
    body["flags"] = int(ctx.trace_flags) | 0x100 | (0x200 if parent is not None and parent.is_remote else 0)
    body["name"] = span.name
    body["kind"] = span.kind.value + 1
    body["startTimeUnixNano"] = str(span.start_time or 0)
    attributes = encode_attributes(span.attributes)
    if start:
        attributes.append(_START_MARKER)
        body["attributes"] = attributes
        return body
    body["endTimeUnixNano"] = str(span.end_time or span.start_time or 0)
    body["attributes"] = attributes
    dropped = span.dropped_attributes
    if dropped:
        body["droppedAttributesCount"] = dropped
    if span.events:
        body["events"] = [
            {"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": encode_attributes(e.attributes)}
            for e in span.events
        ]
        if span.dropped_events:
            body["droppedEventsCount"] = span.dropped_events
    if span.links:
        body["links"] = [
            {
                "traceId": format(link.context.trace_id, "032x"),
                "spanId": format(link.context.span_id, "016x"),
                "attributes": encode_attributes(link.attributes),
            }
            for link in span.links
        ]
        if span.dropped_links:
            body["droppedLinksCount"] = span.dropped_links
    status = span.status
    code = status.status_code.value
    body["status"] = {"code": code, "message": status.description} if status.description else {"code": code}
    return body


class LineEncoder:
    """Turns spans into record lines (bytes ending in ``\\n``).

    The resource and scope parts of a line are encoded once per resource/scope object and reused,
    so per-span work is the span body only. Thread-safe: the caches only ever gain entries.
    """

    def __init__(self) -> None:
        self._frames: dict[tuple[int, int], tuple[bytes, bytes, Resource, Any]] = {}

    def _frame(self, span: ReadableSpan) -> tuple[bytes, bytes]:
        resource = span.resource
        scope = span.instrumentation_scope
        key = (id(resource), id(scope))
        frame = self._frames.get(key)
        if frame is None or frame[2] is not resource or frame[3] is not scope:
            # scopeSpans first: the first KB of a file then holds ids, which keeps files distinguishable.
            head = b'{"resourceSpans":[{"scopeSpans":[{"scope":' + dumps(encode_scope(scope)) + b',"spans":['
            tail = b']}],"resource":' + dumps(encode_resource(resource)) + b"}]}\n"
            frame = (head, tail, resource, scope)
            if len(self._frames) > 64:
                self._frames.clear()
            self._frames[key] = frame
        return frame[0], frame[1]

    def encode(self, span: ReadableSpan, *, start: bool) -> bytes:
        """One record line for ``span``: a start record (``start=True``) or the complete span."""
        head, tail = self._frame(span)
        body = _span_body(span, start=start)
        line = head + _dump_body(body) + tail
        if len(line) > MAX_LINE_BYTES:
            line = head + _shrink(body, MAX_LINE_BYTES - len(head) - len(tail)) + tail
        return line


def _dump_body(body: dict[str, Any]) -> bytes:
    try:
        return dumps(body)
    except (TypeError, ValueError):
        # Lone surrogates (str that is not valid UTF-8) and similar: replace what cannot be encoded.
        return _dumps_std(_scrub(body))


def _scrub(obj: Any) -> Any:
    if isinstance(obj, str):
        return obj.encode("utf-8", "replace").decode("utf-8")
    if isinstance(obj, dict):
        return {k: _scrub(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrub(v) for v in obj]
    return obj


def _string_values(kvs: Iterable[dict[str, Any]]) -> Iterable[tuple[str, dict[str, Any]]]:
    for kv in kvs:
        value = kv["value"]
        if "stringValue" in value:
            yield kv["key"], value
        elif "arrayValue" in value:
            for item in value["arrayValue"]["values"]:
                if "stringValue" in item:
                    yield kv["key"], item


def _all_string_values(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = list(_string_values(body.get("attributes", ())))
    for event in body.get("events", ()):
        found.extend(_string_values(event.get("attributes", ())))
    return found


def _shrink(body: dict[str, Any], budget: int) -> bytes:
    """Truncate the longest string values until the span fits ``budget`` bytes."""
    truncated: set[str] = set()
    values = _all_string_values(body)
    encoded = _dump_body(body)
    for cap in _TRUNCATION_STEPS:
        for key, value in values:
            text = value["stringValue"]
            if len(text) > cap:
                value["stringValue"] = text[:cap] + f"…[truncated {len(text)} chars]"
                truncated.add(key)
        _mark_truncated(body, truncated)
        encoded = _dump_body(body)
        if len(encoded) <= budget:
            return encoded
    # Still too large (thousands of attributes or events): keep identity, timing and status.
    body.pop("events", None)
    body["attributes"] = body.get("attributes", [])[:64]
    truncated.add("*")
    _mark_truncated(body, truncated)
    return _dump_body(body)


def _mark_truncated(body: dict[str, Any], keys: Sequence[str] | set[str]) -> None:
    if not keys:
        return
    attributes = [kv for kv in body.get("attributes", []) if kv["key"] != TRUNCATED]
    attributes.append({"key": TRUNCATED, "value": _any_value(sorted(keys))})
    body["attributes"] = attributes
