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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_START_MARKER_BYTES = b'{"key":"' + START_RECORD.encode() + b'","value":{"boolValue":true}}'
_FRAGMENT_CACHE_SIZE = 4096
_MAX_DEPTH = 32  # nested arrays / maps deeper than this are written as their string form

JsonDumps = Callable[[Any], bytes]
"""A JSON encoder: object -> compact UTF-8 bytes (raises TypeError/ValueError on what it cannot encode)."""


def dumps_stdlib(obj: Any) -> bytes:
    """Compact JSON as UTF-8 bytes with the standard library (the fallback encoder)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def orjson_available() -> bool:
    """True when the fast encoder (orjson) is installed and used by default."""
    return _orjson is not None


if _orjson is not None:
    dumps: JsonDumps = _orjson.dumps
else:  # pragma: no cover - depends on the environment
    dumps = dumps_stdlib


def _any_value(value: Any, depth: int = 0) -> dict[str, Any]:
    """OTLP/JSON ``AnyValue`` for an attribute value (anything the SDK lets through, and more)."""
    kind = type(value)
    if kind is str:
        return {"stringValue": value}
    if kind is bool:
        return {"boolValue": value}
    if kind is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return {"intValue": str(value)}
        return {"stringValue": str(value)}  # OTLP ints are 64-bit: keep the digits rather than fail
    if kind is float:
        if math.isfinite(value):
            return {"doubleValue": value}
        return {"doubleValue": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    if (kind is tuple or kind is list) and depth < _MAX_DEPTH:
        return {"arrayValue": {"values": [_any_value(v, depth + 1) for v in value]}}
    if value is None:
        return {}  # an empty AnyValue
    if isinstance(value, str):  # str subclasses (str enums): their text, as the OTLP exporters send it
        return {"stringValue": str.__str__(value)}
    if isinstance(value, bool):
        return {"boolValue": bool(value)}
    if isinstance(value, int):
        return _any_value(int(value))
    if isinstance(value, float):
        return _any_value(float(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytesValue": base64.b64encode(bytes(value)).decode("ascii")}
    if depth < _MAX_DEPTH:
        if isinstance(value, (list, tuple)):
            return {"arrayValue": {"values": [_any_value(v, depth + 1) for v in value]}}
        if isinstance(value, Mapping):
            return {
                "kvlistValue": {
                    "values": [{"key": str(k), "value": _any_value(v, depth + 1)} for k, v in value.items()]
                }
            }
    try:
        return {"stringValue": str(value)}
    except Exception:
        return {"stringValue": f"<unrepresentable {type(value).__name__}>"}


def _snapshot(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """A plain-dict copy of an attribute mapping.

    SDK attributes (a read-only view of ``BoundedAttributes``) copy to a dict in C, which is much
    cheaper than iterating the view; it is also a consistent snapshot.
    """
    if not attributes:
        return {}
    try:
        return attributes.copy()  # type: ignore[attr-defined,no-any-return]
    except Exception:
        return dict(attributes.items())


def _encode_items(items: Iterable[tuple[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    append = out.append
    for key, value in items:  # the common types inline: this loop is the hot path of the record
        kind = type(value)
        if kind is str:
            append({"key": key, "value": {"stringValue": value}})
        elif kind is int and _INT64_MIN <= value <= _INT64_MAX:
            append({"key": key, "value": {"intValue": str(value)}})
        elif kind is bool:
            append({"key": key, "value": {"boolValue": value}})
        else:
            append({"key": key, "value": _any_value(value)})
    return out


def encode_attributes(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """OTLP/JSON ``KeyValue`` list for an attribute mapping."""
    if not attributes:
        return []
    return _encode_items(_snapshot(attributes).items())


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
    """The OTLP/JSON span object of a start record (``start=True``) or an end record.

    The general path: every span can be written this way (``LineEncoder._span_bytes`` is the fast
    path for plain spans and writes the same JSON).
    """
    ctx = span.context
    parent = span.parent
    if parent is None:
        body: dict[str, Any] = {"traceId": "%032x" % ctx.trace_id, "spanId": "%016x" % ctx.span_id}  # noqa: UP031
        flags = ctx.trace_flags | 0x100
    else:
        body = {
            "traceId": "%032x" % ctx.trace_id,  # noqa: UP031
            "spanId": "%016x" % ctx.span_id,  # noqa: UP031
            "parentSpanId": "%016x" % parent.span_id,  # noqa: UP031
        }
        flags = ctx.trace_flags | (0x300 if parent.is_remote else 0x100)
    if ctx.trace_state:
        body["traceState"] = ctx.trace_state.to_header()
    body["flags"] = flags
    body["name"] = span.name
    body["kind"] = span.kind._value_ + 1
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
    # ``span.events`` / ``span.links`` copy the SDK's bounded list into a new tuple on each access;
    # the underlying sequence answers "any?" without that copy (the property is the fallback).
    events = getattr(span, "_events", None)
    if events is None:
        events = span.events
    if events:
        body["events"] = [
            {"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": encode_attributes(e.attributes)}
            for e in events
        ]
        if span.dropped_events:
            body["droppedEventsCount"] = span.dropped_events
    links = getattr(span, "_links", None)
    if links is None:
        links = span.links
    if links:
        body["links"] = [
            {
                "traceId": f"{link.context.trace_id:032x}",
                "spanId": f"{link.context.span_id:016x}",
                "attributes": encode_attributes(link.attributes),
            }
            for link in links
        ]
        if span.dropped_links:
            body["droppedLinksCount"] = span.dropped_links
    status = span.status
    code = status.status_code._value_
    body["status"] = {"code": code, "message": status.description} if status.description else {"code": code}
    return body


class LineEncoder:
    """Turns spans into record lines (bytes ending in ``\\n``).

    The resource and scope parts of a line are encoded once per resource/scope object and reused,
    so per-span work is the span body only. Thread-safe: the cache is a plain dictionary that is
    only added to or cleared, and ``_last`` is replaced whole.

    Args:
        json_dumps: the JSON encoder (default: orjson when installed, else :func:`dumps_stdlib`).
    """

    def __init__(self, json_dumps: JsonDumps | None = None) -> None:
        self._dumps: JsonDumps = json_dumps or dumps
        self._frames: dict[tuple[int, int], tuple[bytes, bytes, Resource, Any]] = {}
        self._last: tuple[bytes, bytes, Any, Any] = (b"", b"", object(), object())  # the last frame used
        self._str_kv: dict[tuple[str, str], bytes] = {}  # fast-path fragments, see _kv_bytes
        self._key_prefix: dict[str, bytes] = {}

    def _frame(self, span: ReadableSpan) -> tuple[bytes, bytes]:
        resource = span.resource
        scope = span.instrumentation_scope
        last = self._last
        if last[2] is resource and last[3] is scope:
            return last[0], last[1]
        key = (id(resource), id(scope))
        frame = self._frames.get(key)
        if frame is None or frame[2] is not resource or frame[3] is not scope:
            # scopeSpans first: the first KB of a file then holds ids, which keeps files distinguishable.
            scope_json = _dump_safe(encode_scope(scope), self._dumps)
            resource_json = _dump_safe(encode_resource(resource), self._dumps)
            head = b'{"resourceSpans":[{"scopeSpans":[{"scope":' + scope_json + b',"spans":['
            tail = b']}],"resource":' + resource_json + b"}]}\n"
            frame = (head, tail, resource, scope)
            if len(self._frames) > 64:
                self._frames.clear()
            self._frames[key] = frame
        self._last = frame
        return frame[0], frame[1]

    def encode(self, span: ReadableSpan, *, start: bool) -> bytes:
        """One record line for ``span``: a start record (``start=True``) or the complete span."""
        last = self._last
        if last[2] is span.resource and last[3] is span.instrumentation_scope:
            head, tail = last[0], last[1]
        else:
            head, tail = self._frame(span)
        try:
            encoded = self._span_bytes(span, start)
        except (TypeError, ValueError, OverflowError):  # e.g. a lone surrogate: the general path copes
            encoded = None
        if encoded is not None:
            line = head + encoded + tail
            if len(line) <= MAX_LINE_BYTES:
                return line
        body = _span_body(span, start=start)
        try:
            encoded = self._dumps(body)
        except (TypeError, ValueError):
            encoded = _dump_safe(body, self._dumps)
        line = head + encoded + tail
        if len(line) > MAX_LINE_BYTES:
            line = head + _shrink(body, MAX_LINE_BYTES - len(head) - len(tail), self._dumps) + tail
        return line

    # -- the fast path ---------------------------------------------------------------------------
    # Most spans are plain: str/int/bool/float attributes, no events, links or trace state. Their
    # JSON is assembled from byte fragments, with the fragments of repeated (key, value) pairs —
    # operation, provider, model, category, conversation — cached. Anything else returns None and
    # takes the general path (``_span_body``), which produces the same JSON.

    def _kv_bytes(self, key: str, value: Any) -> bytes | None:
        kind = type(value)
        if kind is str:
            cache = self._str_kv
            fragment = cache.get((key, value))
            if fragment is None:
                fragment = self._dumps({"key": key, "value": {"stringValue": value}})
                if len(value) <= 128:
                    if len(cache) >= _FRAGMENT_CACHE_SIZE:
                        cache.clear()  # keeps what is hot now, bounds memory
                    cache[(key, value)] = fragment
            return fragment
        prefix = self._key_prefix.get(key)
        if prefix is None:
            if len(self._key_prefix) >= _FRAGMENT_CACHE_SIZE:
                self._key_prefix.clear()
            prefix = self._key_prefix[key] = b'{"key":' + self._dumps(key) + b',"value":'
        if kind is int:
            if _INT64_MIN <= value <= _INT64_MAX:
                return prefix + b'{"intValue":"%d"}}' % value
            return None
        if kind is bool:
            return prefix + (b'{"boolValue":true}}' if value else b'{"boolValue":false}}')
        if kind is float and math.isfinite(value):
            return prefix + b'{"doubleValue":' + self._dumps(value) + b"}}"
        return None

    def _span_bytes(self, span: ReadableSpan, start: bool) -> bytes | None:
        ctx = span.context
        if ctx.trace_state:
            return None
        if not start and (getattr(span, "_events", None) or getattr(span, "_links", None)):
            return None
        fragments = []
        source = span.attributes
        if source:
            kv_bytes, cached, append = self._kv_bytes, self._str_kv.get, fragments.append
            for key, value in source.copy().items():  # type: ignore[attr-defined]
                fragment = cached((key, value)) if type(value) is str else None  # the common case, inline
                if fragment is None:
                    fragment = kv_bytes(key, value)
                    if fragment is None:
                        return None
                append(fragment)
        name = self._dumps(span.name)
        parent = span.parent
        if parent is None:
            ids = b'{"traceId":"%032x","spanId":"%016x","flags":%d' % (
                ctx.trace_id,
                ctx.span_id,
                ctx.trace_flags | 0x100,
            )
        else:
            ids = b'{"traceId":"%032x","spanId":"%016x","parentSpanId":"%016x","flags":%d' % (
                ctx.trace_id,
                ctx.span_id,
                parent.span_id,
                ctx.trace_flags | (0x300 if parent.is_remote else 0x100),
            )
        common = (
            ids
            + b',"name":'
            + name
            + b',"kind":%d,"startTimeUnixNano":"%d"' % (span.kind._value_ + 1, span.start_time or 0)
        )
        if start:
            fragments.append(_START_MARKER_BYTES)
            return common + b',"attributes":[' + b",".join(fragments) + b"]}"
        if span.dropped_attributes:
            return None
        status = span.status
        if status.description:
            status_bytes = b'{"code":%d,"message":%s}' % (
                status.status_code._value_,
                self._dumps(status.description),
            )
        else:
            status_bytes = b'{"code":%d}' % status.status_code._value_
        return (
            common
            + b',"endTimeUnixNano":"%d","attributes":[' % (span.end_time or span.start_time or 0)
            + b",".join(fragments)
            + b'],"status":'
            + status_bytes
            + b"}"
        )


def _dump_safe(obj: dict[str, Any], json_dumps: JsonDumps) -> bytes:
    try:
        return json_dumps(obj)
    except (TypeError, ValueError):
        # Lone surrogates (str that is not valid UTF-8) and similar: replace what cannot be encoded.
        return dumps_stdlib(_scrub(obj))


def _scrub(obj: Any) -> Any:
    if isinstance(obj, str):
        return obj.encode("utf-8", "replace").decode("utf-8")
    if isinstance(obj, dict):
        return {_scrub(k): _scrub(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrub(v) for v in obj]
    return obj


# -- keeping a line under MAX_LINE_BYTES --------------------------------------------------------------

_TextRef = tuple[str, dict[str, Any], str]  # (attribute key, the AnyValue dict, "stringValue" | "bytesValue")


def _text_values(key: str, value: dict[str, Any]) -> Iterator[_TextRef]:
    if "stringValue" in value:
        yield key, value, "stringValue"
    elif "bytesValue" in value:
        yield key, value, "bytesValue"
    elif "arrayValue" in value:
        for item in value["arrayValue"]["values"]:
            yield from _text_values(key, item)
    elif "kvlistValue" in value:
        for kv in value["kvlistValue"]["values"]:
            yield from _text_values(key, kv["value"])


def _all_text_values(body: dict[str, Any]) -> list[_TextRef]:
    found: list[_TextRef] = []
    for kv in body.get("attributes", ()):
        found.extend(_text_values(kv["key"], kv["value"]))
    for item in (*body.get("events", ()), *body.get("links", ())):
        for kv in item.get("attributes", ()):
            found.extend(_text_values(kv["key"], kv["value"]))
    return found


def _cap_text(text: str, cap: int) -> str:
    return text if len(text) <= cap else text[:cap] + f"…[truncated {len(text)} chars]"


def _shrink(body: dict[str, Any], budget: int, json_dumps: JsonDumps = dumps) -> bytes:
    """Truncate the longest string (and bytes) values until the span fits ``budget`` bytes.

    Truncated attribute keys are listed in ``agent_otel.truncated``. If that is not enough
    (thousands of attributes or events, a huge name, key or status message) the span keeps its
    identity, timing, status and first attributes; the start marker of a start record always stays.
    """
    truncated: set[str] = set()
    original: dict[int, int] = {}
    refs = _all_text_values(body)
    for cap in _TRUNCATION_STEPS:
        changed = False
        for key, value, field in refs:
            text = value[field]
            if len(text) <= cap:
                continue
            changed = True
            full = original.setdefault(id(value), len(text))
            if field == "bytesValue":
                value[field] = text[: cap - cap % 4]  # whole base64 quanta: still valid base64
            else:
                value[field] = text[:cap] + f"…[truncated {full} chars]"
            truncated.add(key)
        if not changed:
            continue
        _mark_truncated(body, truncated)
        encoded = _dump_safe(body, json_dumps)
        if len(encoded) <= budget:
            return encoded

    # Still too large: keep identity, timing, status and the first attributes.
    is_start = any(kv["key"] == START_RECORD for kv in body.get("attributes", ()))
    events = body.pop("events", None)
    if events:
        body["droppedEventsCount"] = body.get("droppedEventsCount", 0) + len(events)
    links = body.pop("links", None)
    if links:
        body["droppedLinksCount"] = body.get("droppedLinksCount", 0) + len(links)
    attributes = [kv for kv in body.get("attributes", ()) if kv["key"] not in (START_RECORD, TRUNCATED)]
    kept = attributes[:64]
    if len(kept) < len(attributes):
        body["droppedAttributesCount"] = body.get("droppedAttributesCount", 0) + len(attributes) - len(kept)
    for kv in kept:
        kv["key"] = _cap_text(kv["key"], 256)
    body["name"] = _cap_text(str(body.get("name", "")), 1024)
    status = body.get("status")
    if status and "message" in status:
        status["message"] = _cap_text(str(status["message"]), 1024)
    truncated.add("*")
    body["attributes"] = [*kept, _START_MARKER] if is_start else kept
    _mark_truncated(body, truncated)
    encoded = _dump_safe(body, json_dumps)
    if len(encoded) <= budget:
        return encoded
    # Last resort: identity, timing and status only.
    keep = (
        "traceId",
        "spanId",
        "traceState",
        "parentSpanId",
        "flags",
        "name",
        "kind",
        "startTimeUnixNano",
        "endTimeUnixNano",
        "status",
    )
    minimal = {k: body[k] for k in keep if k in body}
    minimal["attributes"] = [_START_MARKER] if is_start else []
    _mark_truncated(minimal, {"*"})
    return _dump_safe(minimal, json_dumps)


def _mark_truncated(body: dict[str, Any], keys: Sequence[str] | set[str]) -> None:
    if not keys:
        return
    attributes = [kv for kv in body.get("attributes", []) if kv["key"] != TRUNCATED]
    attributes.append({"key": TRUNCATED, "value": _any_value(sorted(keys))})
    body["attributes"] = attributes
