"""Read agent-otel's crash-safe JSONL record.

The record (see ``jsonl/processor.py``) is a file, or a directory of files, in which every line is one
OTLP/JSON ``TracesData`` object. agent-otel writes each span twice: a *start record* when the span
starts (no ``endTimeUnixNano``, no ``status``, attribute ``agent_otel.start_record = true``) and an
*end record* with the complete span when it ends. This module turns such files back into spans:

* :func:`read` reads a file or a directory (``*.jsonl``, recursively) and merges start and end records
  by ``(traceId, spanId)``: an end record always wins, duplicates are harmless. A span that has only a
  start record never ended (its process was killed); it is returned with ``finished = False``.
* :func:`recover` turns such an unfinished span into a *recovered* span: status ERROR,
  ``error.type = "agent_otel.unfinished"``, ``agent_otel.recovered = true``, and an end time equal to the
  last sign of life of its trace in its file (see :func:`recover` for the exact rule).
* :class:`FileCursor` / :func:`read_from` read a file incrementally from a byte offset, for ``tail``: an
  incomplete last line (no newline yet) is left for the next call, so a line being written is picked
  up once it is complete.

Lines that do not parse (a torn last line after a crash, a corrupt line in the middle) and lines whose
JSON does not have the OTLP/JSON shape (a field of the wrong type anywhere: a ``status`` that is not an
object, attributes that are not an array, a time that is not an integer...) are skipped and reported as
:class:`CorruptLine` (``file:line: reason``); they never stop the read, and every record that
:func:`parse_line` returns is safe to merge, show and export.

This module depends on the record *format* only (its attribute names come from
:mod:`agent_otel.attributes`), never on OpenTelemetry SDK classes: spans are plain dataclasses holding
decoded attributes and the original OTLP/JSON dictionaries (used by the exporter). It uses ``orjson``
when it is installed, else the standard ``json`` module.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import dataclasses
import gc
import json as _json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from agent_otel.attributes import ERROR_TYPE, RECOVERED, START_RECORD, UNFINISHED_ERROR_TYPE


def _std_loads(data: bytes) -> Any:
    """``json.loads`` that, like orjson, rejects lone UTF-16 surrogates (``"\\ud800"``): Python would
    accept them and then fail to print the string."""
    doc = _json.loads(data)
    if b"\\ud" in data or b"\\uD" in data:
        _json.dumps(doc, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError on a lone surrogate
    return doc


_STD_JSON_ERRORS: tuple[type[BaseException], ...] = (ValueError, RecursionError)

try:  # pragma: no cover - exercised whichever way the environment is
    import orjson as _orjson

    def _loads(data: bytes) -> Any:
        return _orjson.loads(data)

    _JSON_ERRORS: tuple[type[BaseException], ...] = (_orjson.JSONDecodeError, UnicodeDecodeError)
except ImportError:  # pragma: no cover
    _loads = _std_loads
    _JSON_ERRORS = _STD_JSON_ERRORS

__all__ = [
    "CorruptLine",
    "FileCursor",
    "ReadResult",
    "Record",
    "Span",
    "SpanEvent",
    "decode_attributes",
    "decode_value",
    "find_files",
    "merge_records",
    "parse_line",
    "read",
    "read_from",
    "recover",
]

#: Status message given to recovered spans.
RECOVERED_STATUS_MESSAGE = "span never ended: its process stopped before closing it (killed?)"

STATUS_OK = 1
STATUS_ERROR = 2

_MAX_LINE = 1 << 20  # the writer keeps lines below 1 MiB; longer "lines" are reported, not parsed
_CHUNK = 1 << 20
_TAIL_CHUNK = 1 << 16  # FileCursor.skip_to_end looks for the last newline this many bytes at a time


@dataclass(frozen=True)
class CorruptLine:
    """A line that could not be read. ``torn`` is true for an unterminated last line of a file."""

    path: str
    line: int
    reason: str
    torn: bool = False

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class Record:
    """One span as found on one line: a START or an END record, with its resource and scope."""

    span: dict[str, Any]
    resource: dict[str, Any]
    scope: dict[str, Any]
    path: str
    line: int
    is_start: bool

    @property
    def key(self) -> tuple[str, str]:
        return (self.span["traceId"], self.span["spanId"])


@dataclass
class SpanEvent:
    """A span event (e.g. ``exception``), with decoded attributes."""

    name: str
    time_unix_nano: int
    attributes: dict[str, Any]


@dataclass
class Span:
    """A span rebuilt from the record.

    ``finished`` is true when an end record was seen. For an unfinished span ``end_time_unix_nano`` is
    ``None`` and ``last_seen_unix_nano`` holds the latest timestamp seen for its trace in its file (the
    end time :func:`recover` gives it). ``otlp``, ``otlp_resource`` and ``otlp_scope`` are the original
    OTLP/JSON dictionaries; treat them as read-only.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int
    start_time_unix_nano: int
    end_time_unix_nano: int | None
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    events: list[SpanEvent]
    resource: dict[str, Any]
    scope_name: str
    scope_version: str
    path: str
    line: int
    finished: bool
    otlp: dict[str, Any]
    otlp_resource: dict[str, Any]
    otlp_scope: dict[str, Any]
    last_seen_unix_nano: int = 0
    recovered: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.trace_id, self.span_id)

    @property
    def duration_ns(self) -> int | None:
        """End minus start, or ``None`` while the span has no end time."""
        if self.end_time_unix_nano is None:
            return None
        return max(0, self.end_time_unix_nano - self.start_time_unix_nano)

    @property
    def is_error(self) -> bool:
        return self.status_code == STATUS_ERROR

    @property
    def service_name(self) -> str | None:
        value = self.resource.get("service.name")
        return str(value) if value is not None else None


@dataclass
class ReadResult:
    """What :func:`read` found: merged spans (in order of first appearance) and what it skipped."""

    spans: list[Span] = field(default_factory=list)
    corrupt: list[CorruptLine] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    records: int = 0
    start_records: int = 0
    end_records: int = 0

    @property
    def unfinished(self) -> list[Span]:
        """Spans that have a start record and no end record."""
        return [s for s in self.spans if not s.finished]

    @property
    def torn(self) -> list[CorruptLine]:
        return [c for c in self.corrupt if c.torn]


# --------------------------------------------------------------------------------------------- decoding


def decode_value(value: Mapping[str, Any] | None) -> Any:
    """Decode one OTLP/JSON ``AnyValue`` to a Python value (``None`` for an empty or unknown value).

    ``intValue`` (a decimal string or a number) becomes ``int``, ``doubleValue`` ``float`` (also from the
    strings ``"NaN"``/``"Infinity"``), ``arrayValue`` a list, ``kvlistValue`` a dict and ``bytesValue``
    (base64) ``bytes``.
    """
    if not value:
        return None
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [decode_value(v) for v in (value["arrayValue"] or {}).get("values") or ()]
    if "kvlistValue" in value:
        return {
            kv.get("key", ""): decode_value(kv.get("value"))
            for kv in (value["kvlistValue"] or {}).get("values") or ()
        }
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    return None


def decode_attributes(attributes: Iterable[Mapping[str, Any]] | None) -> dict[str, Any]:
    """Decode an OTLP/JSON attribute list ``[{"key": k, "value": {...}}]`` into a dict.

    A malformed entry is skipped; it never makes the whole list unreadable. (:func:`parse_line` does not
    let records with malformed entries through at all.)
    """
    out: dict[str, Any] = {}
    for kv in attributes or ():
        try:
            out[kv["key"]] = decode_value(kv.get("value"))
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error):
            continue
    return out


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _norm_id(value: Any, size: int) -> str | None:
    """Return a lowercase hex id of ``size`` bytes; accept hex (OTLP/JSON) or base64 (proto JSON)."""
    if not isinstance(value, str):
        return None
    if len(value) == 2 * size:
        try:
            ok = len(bytes.fromhex(value)) == size  # fromhex skips spaces: "ab cd" is not an id
        except ValueError:
            return None
        return value.lower() if ok else None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == size else None


def _is_start(span: Mapping[str, Any]) -> bool:
    if _int(span.get("endTimeUnixNano")) == 0:
        return True
    for kv in span.get("attributes") or ():
        if kv.get("key") == START_RECORD:
            return bool((kv.get("value") or {}).get("boolValue"))
    return False


# ------------------------------------------------------------------------------------------ validation
#
# A line is accepted only when every field the reader, the CLI or the exporter uses has its OTLP/JSON
# type: objects are objects, arrays arrays, strings strings, ids valid, times and counts integers in
# range (a JSON integer or a decimal string, as OTLP/JSON writes 64-bit integers), attribute values
# decodable. ``null`` stands for an absent field (proto3 JSON). Fields nobody reads are not checked.
# Anything else raises ValueError with a short reason, and the line is reported as corrupt.

_U32 = 1 << 32
_U64 = 1 << 64
_I32 = 1 << 31
_I64 = 1 << 63
_MAX_VALUE_DEPTH = 64  # arrays/maps nested deeper than this are rejected (the SDK writes none at all)
_SPAN_KINDS = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
_STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bad(what: str, value: Any, expected: str) -> NoReturn:
    raise ValueError(f"{what} is {_json_type(value)}, expected {expected}")


def _obj(value: Any, what: str) -> dict[str, Any]:
    """An optional object field (``None`` when absent)."""
    if value is None:
        return {}
    if type(value) is not dict:
        _bad(what, value, "an object")
    return value


def _arr(value: Any, what: str) -> list[Any]:
    """An optional array field."""
    if value is None:
        return []
    if type(value) is not list:
        _bad(what, value, "an array")
    return value


def _string(obj: Mapping[str, Any], key: str, what: str) -> None:
    value = obj.get(key)
    if value is not None and type(value) is not str:
        _bad(what, value, "a string")


def _uint(value: Any, what: str, limit: int = _U64) -> int:
    """An optional unsigned integer: a JSON integer or a decimal string, below ``limit``."""
    if value is None:
        return 0
    if type(value) is int:
        n = value
    elif type(value) is str and value.isdigit() and value.isascii() and len(value) <= 20:
        n = int(value)
    else:
        _bad(what, value, "an unsigned integer")
    if not 0 <= n < limit:
        raise ValueError(f"{what} is out of range ({_short_repr(value)})")
    return n


def _enum(obj: dict[str, Any], key: str, what: str, names: Mapping[str, int]) -> None:
    """An enum field (an integer, or its name as proto JSON allows); a name is rewritten as its number."""
    value = obj.get(key)
    if type(value) is str and value in names:
        obj[key] = names[value]
    else:
        _uint(value, what, _I32)


def _check_value(value: Any, what: str, depth: int = 0) -> None:
    """An ``AnyValue``, checked the way :func:`decode_value` (and the exporter) will read it."""
    if value is None:
        return
    if type(value) is not dict:
        _bad(what, value, "an object")
    if not value:
        return
    if "stringValue" in value:
        if type(value["stringValue"]) is not str:
            _bad(f"{what} stringValue", value["stringValue"], "a string")
    elif "boolValue" in value:
        if type(value["boolValue"]) is not bool:
            _bad(f"{what} boolValue", value["boolValue"], "true or false")
    elif "intValue" in value:
        v = value["intValue"]
        n = None
        if type(v) is int:
            n = v
        elif type(v) is str and v.isascii() and len(v) <= 21 and (v[1:] if v[:1] == "-" else v).isdigit():
            n = int(v)
        if n is None or not -_I64 <= n < _I64:
            _bad(f"{what} intValue", v, "a 64-bit integer")
    elif "doubleValue" in value:
        v = value["doubleValue"]
        if type(v) not in (str, int, float):
            _bad(f"{what} doubleValue", v, "a number")
        try:
            float(v)
        except (ValueError, OverflowError):
            raise ValueError(f"{what} doubleValue is not a number ({_short_repr(v)})") from None
    elif "arrayValue" in value or "kvlistValue" in value:
        if depth >= _MAX_VALUE_DEPTH:
            raise ValueError(f"{what} is nested too deeply")
        if "arrayValue" in value:
            arr = _obj(value["arrayValue"], f"{what} arrayValue")
            for item in _arr(arr.get("values"), f"{what} arrayValue values"):
                _check_value(item, f"{what} array element", depth + 1)
        else:
            kvl = _obj(value["kvlistValue"], f"{what} kvlistValue")
            _check_attributes(kvl.get("values"), what, depth + 1)
    elif "bytesValue" in value:
        v = value["bytesValue"]
        if type(v) is not str:
            _bad(f"{what} bytesValue", v, "a base64 string")
        try:
            base64.b64decode(v)
        except (binascii.Error, ValueError):
            raise ValueError(f"{what} bytesValue is not valid base64") from None
    # any other key: a value kind this reader does not know; read as None


def _check_attributes(attributes: Any, what: str, depth: int = 0) -> None:
    """A ``KeyValue`` array: objects with a string ``key`` and an ``AnyValue`` ``value``."""
    if attributes is None:
        return
    if type(attributes) is not list:
        _bad(f"{what} attributes", attributes, "an array")
    for kv in attributes:
        if type(kv) is dict:  # the common case, a string value, decided inline
            key = kv.get("key")
            value = kv.get("value")
            if type(key) is str and type(value) is dict and type(value.get("stringValue")) is str:
                continue
        _check_key_value(kv, what, depth)


def _check_key_value(kv: Any, what: str, depth: int) -> None:
    if type(kv) is not dict:
        _bad(f"{what} attribute", kv, "an object")
    key = kv.get("key")
    if type(key) is not str:
        _bad(f"{what} attribute key", key, "a string")
    _check_value(kv.get("value"), f"attribute {key!r} value", depth)


def _check_id(obj: dict[str, Any], key: str, size: int, what: str, *, required: bool) -> None:
    """Validate an id and rewrite it as lowercase hex; ``""``/absent is accepted unless ``required``."""
    value = obj.get(key)
    if not required and (value is None or value == ""):
        return
    norm = _norm_id(value, size)
    if norm is None:
        raise ValueError(f"{what} without a valid {key}" if required else f"{what} with an invalid {key}")
    obj[key] = norm


def _check_span(span: Any) -> None:
    if type(span) is not dict:
        _bad("span", span, "an object")
    _check_id(span, "traceId", 16, "span", required=True)
    _check_id(span, "spanId", 8, "span", required=True)
    if "parentSpanId" in span:
        _check_id(span, "parentSpanId", 8, "span", required=False)
    if type(span.get("name")) is not str:
        _string(span, "name", 'span "name"')
    kind = span.get("kind")
    if not (type(kind) is int and 0 <= kind < _I32):
        _enum(span, "kind", 'span "kind"', _SPAN_KINDS)
    for key in ("startTimeUnixNano", "endTimeUnixNano"):
        t = span.get(key)
        if not (type(t) is str and len(t) < 20 and t.isdigit() and t.isascii()):  # else check in full
            _uint(t, f'span "{key}"')
    _check_attributes(span.get("attributes"), "span")
    for key in _SPAN_OPTIONAL_U32:
        if key in span:
            _uint(span[key], f'span "{key}"', _U32)
    if "traceState" in span:
        _string(span, "traceState", 'span "traceState"')
    if "events" in span:
        for ev in _arr(span["events"], 'span "events"'):
            if type(ev) is not dict:
                _bad("span event", ev, "an object")
            _string(ev, "name", 'event "name"')
            _uint(ev.get("timeUnixNano"), 'event "timeUnixNano"')
            _check_attributes(ev.get("attributes"), "event")
            _uint(ev.get("droppedAttributesCount"), 'event "droppedAttributesCount"', _U32)
    if "links" in span:
        for link in _arr(span["links"], 'span "links"'):
            if type(link) is not dict:
                _bad("span link", link, "an object")
            _check_id(link, "traceId", 16, "link", required=False)
            _check_id(link, "spanId", 8, "link", required=False)
            _string(link, "traceState", 'link "traceState"')
            _uint(link.get("flags"), 'link "flags"', _U32)
            _check_attributes(link.get("attributes"), "link")
            _uint(link.get("droppedAttributesCount"), 'link "droppedAttributesCount"', _U32)
    if "status" in span:
        status = _obj(span["status"], 'span "status"')
        if status:
            _enum(status, "code", 'span "status" "code"', _STATUS_CODES)
            _string(status, "message", 'span "status" "message"')


_SPAN_OPTIONAL_U32 = ("flags", "droppedAttributesCount", "droppedEventsCount", "droppedLinksCount")


def _check_resource_or_scope(obj: dict[str, Any], what: str) -> None:
    if what == "scope":
        _string(obj, "name", 'scope "name"')
        _string(obj, "version", 'scope "version"')
    _check_attributes(obj.get("attributes"), what)
    _uint(obj.get("droppedAttributesCount"), f'{what} "droppedAttributesCount"', _U32)


class _LastValid:
    """The last resource and scope found valid. Every line repeats its resource and scope, almost always
    the same ones: comparing with the last valid one (a C-level ``==``) is cheaper than checking again."""

    resource: dict[str, Any] | None = None
    scope: dict[str, Any] | None = None


def _check_resource(resource: dict[str, Any]) -> None:
    if resource and resource != _LastValid.resource:
        _check_resource_or_scope(resource, "resource")
        _LastValid.resource = resource


def _check_scope(scope: dict[str, Any]) -> None:
    if scope and scope != _LastValid.scope:
        _check_resource_or_scope(scope, "scope")
        _LastValid.scope = scope


def parse_line(data: bytes, path: str = "", line: int = 0) -> list[Record]:
    """Parse one line of the record into its span records.

    Raises ``ValueError`` with a short human reason when the line is not an OTLP/JSON ``TracesData``
    holding spans with valid ids, or when any field has the wrong JSON type (see the validation notes
    above); the records returned are then safe to merge, show and export. Ids are rewritten as lowercase
    hex and enum names as numbers. A ``TracesData`` holding no spans gives an empty list. Our writer puts
    exactly one span on a line; lines with several spans (e.g. from the stock file exporter) are accepted.
    """
    try:
        doc = _loads(data)
    except _JSON_ERRORS as exc:
        raise ValueError(f"not valid JSON ({_short(exc)})") from None
    if not isinstance(doc, dict) or "resourceSpans" not in doc:
        raise ValueError("not an OTLP TracesData object (no resourceSpans)")
    records: list[Record] = []
    try:
        for rs in _arr(doc["resourceSpans"], '"resourceSpans"'):
            if type(rs) is not dict:
                _bad("a resourceSpans item", rs, "an object")
            resource = _obj(rs.get("resource"), '"resource"')
            _check_resource(resource)
            _string(rs, "schemaUrl", 'resourceSpans "schemaUrl"')
            for ss in _arr(rs.get("scopeSpans"), '"scopeSpans"'):
                if type(ss) is not dict:
                    _bad("a scopeSpans item", ss, "an object")
                scope = _obj(ss.get("scope"), '"scope"')
                _check_scope(scope)
                _string(ss, "schemaUrl", 'scopeSpans "schemaUrl"')
                for span in _arr(ss.get("spans"), '"spans"'):
                    _check_span(span)
                    records.append(Record(span, resource, scope, path, line, _is_start(span)))
    except RecursionError:
        raise ValueError("malformed TracesData (nested too deeply)") from None
    except (AttributeError, TypeError, KeyError) as exc:  # a safety net: the checks above should catch all
        raise ValueError(f"malformed TracesData ({_short(exc)})") from None
    return records


def _short(exc: BaseException, limit: int = 80) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------ file access


def find_files(path: str | os.PathLike[str]) -> list[Path]:
    """The record files under ``path``: the file itself, or every ``*.jsonl`` below a directory, sorted.

    Raises ``FileNotFoundError`` when ``path`` does not exist. Hidden files and directories (name starting
    with ``.``) under a directory are skipped.
    """
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.exists():
        raise FileNotFoundError(f"no such file or directory: {p}")
    if not p.is_dir():
        raise FileNotFoundError(f"not a file or directory: {p}")
    found: list[Path] = []
    for root, dirs, files in os.walk(p):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".jsonl") and not name.startswith("."):
                found.append(Path(root) / name)
    return found


def _iter_lines(fh: Any, offset: int) -> Iterator[tuple[bytes, int, bool]]:
    """Yield ``(line, offset_after_line, terminated)`` from ``offset``; reads in chunks."""
    fh.seek(offset)
    pending = b""
    pos = offset
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            break
        buf = pending + chunk if pending else chunk
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            pos += nl + 1 - start
            yield line, pos, True
            start = nl + 1
        pending = buf[start:]
    if pending:
        yield pending, pos + len(pending), False


def read_from(
    path: str | os.PathLike[str],
    offset: int = 0,
    *,
    line_no: int = 1,
    final: bool = True,
) -> tuple[list[Record], list[CorruptLine], int, int]:
    """Read the records of one file from byte ``offset`` (which must be at a line start).

    Returns ``(records, corrupt_lines, next_offset, next_line_no)``; ``line_no`` is the number of the line
    at ``offset``. With ``final=False`` (following a live file) an unterminated last line is *not*
    consumed: ``next_offset`` stays at its start so the next call reads it once it is complete. With
    ``final=True`` such a line is parsed if it parses and reported as a torn line otherwise.
    """
    records: list[Record] = []
    corrupt: list[CorruptLine] = []
    spath = str(path)
    with open(path, "rb") as fh:
        next_offset = offset
        for raw, end, terminated in _iter_lines(fh, offset):
            if not terminated and not final:
                break
            next_offset = end
            no = line_no
            line_no += 1
            if not raw.strip():
                continue
            if len(raw) > _MAX_LINE * 4:
                corrupt.append(CorruptLine(spath, no, f"line too long ({len(raw)} bytes)", not terminated))
                continue
            try:
                records.extend(parse_line(raw, spath, no))
            except ValueError as exc:
                reason = str(exc)
                if not terminated:
                    reason = f"torn last line, {reason}"
                corrupt.append(CorruptLine(spath, no, reason, not terminated))
    return records, corrupt, next_offset, line_no


def _after_last_newline(fh: Any, size: int) -> int:
    """The offset just after the last newline in the first ``size`` bytes of ``fh`` (0 if none)."""
    pos = size
    while pos > 0:
        n = min(_TAIL_CHUNK, pos)
        pos -= n
        fh.seek(pos)
        i = fh.read(n).rfind(b"\n")
        if i >= 0:
            return pos + i + 1
    return 0


def _count_newlines(fh: Any, end: int) -> int:
    """How many newlines the first ``end`` bytes of ``fh`` hold, read in chunks."""
    fh.seek(0)
    count = 0
    left = end
    while left > 0:
        chunk = fh.read(min(_CHUNK, left))
        if not chunk:
            break
        count += chunk.count(b"\n")
        left -= len(chunk)
    return count


class FileCursor:
    """Incremental reader of one growing file, for following a live record.

    Each :meth:`poll` returns the records and corrupt lines completed since the previous call. A line
    still being written (no newline yet) is kept for a later call. If the file shrinks (truncated or
    replaced) the cursor starts again from the beginning.
    """

    def __init__(self, path: str | os.PathLike[str], *, at_end: bool = False) -> None:
        self.path = Path(path)
        self.offset = 0
        self.line_no = 1
        self._inode: tuple[int, int] | None = None
        if at_end:
            self.skip_to_end()

    def skip_to_end(self) -> None:
        """Position after the last complete line; a partial last line is left for :meth:`poll`.

        The last newline is found by reading backwards from the end of the file; the lines before it are
        counted in chunks (so later reports keep their line numbers). Memory use does not grow with the
        file.
        """
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                offset = _after_last_newline(fh, st.st_size)
                lines = _count_newlines(fh, offset)
        except OSError:
            return
        self.offset = offset
        self.line_no = lines + 1
        self._inode = (st.st_dev, st.st_ino)

    def poll(self, *, final: bool = False) -> tuple[list[Record], list[CorruptLine]]:
        """Read what was appended since the last call (``final=True`` also takes an unterminated line)."""
        try:
            st = self.path.stat()
        except OSError:
            return [], []
        ident = (st.st_dev, st.st_ino)
        if (self._inode is not None and ident != self._inode) or st.st_size < self.offset:
            self.offset, self.line_no = 0, 1
        self._inode = ident
        if st.st_size == self.offset:
            return [], []
        try:
            records, corrupt, self.offset, self.line_no = read_from(
                self.path, self.offset, line_no=self.line_no, final=final
            )
        except OSError:
            return [], []
        return records, corrupt


# ---------------------------------------------------------------------------------------------- merging


def _record_times(span: Mapping[str, Any]) -> int:
    t = max(_int(span.get("startTimeUnixNano")), _int(span.get("endTimeUnixNano")))
    for ev in span.get("events") or ():
        t = max(t, _int(ev.get("timeUnixNano")))
    return t


def _to_span(rec: Record, last_seen: int) -> Span:
    # rec comes from parse_line, which checked the type of every field read here.
    s = rec.span
    attrs = decode_attributes(s.get("attributes"))
    attrs.pop(START_RECORD, None)
    status = s.get("status") or {}
    scope = rec.scope
    end = _int(s.get("endTimeUnixNano"))
    finished = not rec.is_start
    events = [
        SpanEvent(
            name=ev.get("name") or "",
            time_unix_nano=_int(ev.get("timeUnixNano")),
            attributes=decode_attributes(ev.get("attributes")),
        )
        for ev in s.get("events") or ()
    ]
    return Span(
        trace_id=s["traceId"],
        span_id=s["spanId"],
        parent_span_id=s.get("parentSpanId") or None,
        name=s.get("name") or "",
        kind=_int(s.get("kind"), 1),
        start_time_unix_nano=_int(s.get("startTimeUnixNano")),
        end_time_unix_nano=end if finished and end else None,
        status_code=_int(status.get("code")),
        status_message=status.get("message") or "",
        attributes=attrs,
        events=events,
        resource=decode_attributes(rec.resource.get("attributes")),
        scope_name=scope.get("name") or "",
        scope_version=scope.get("version") or "",
        path=rec.path,
        line=rec.line,
        finished=finished,
        otlp=s,
        otlp_resource=rec.resource,
        otlp_scope=rec.scope,
        last_seen_unix_nano=last_seen,
    )


def merge_records(records: Iterable[Record]) -> list[Span]:
    """Merge start and end records by ``(traceId, spanId)``, keeping the order of first appearance.

    The first end record of a span wins over any start record; later duplicates are ignored. Each
    unfinished span gets ``last_seen_unix_nano`` = the latest time (start, end or event time) among all
    records of the same trace in the same file, and at least its own start time.
    """
    best: dict[tuple[str, str], Record] = {}
    last_seen: dict[tuple[str, str], int] = {}
    for rec in records:
        key = rec.key
        cur = best.get(key)
        if cur is None or (cur.is_start and not rec.is_start):
            best[key] = rec
        lk = (rec.path, rec.span["traceId"])
        t = _record_times(rec.span)
        if t > last_seen.get(lk, 0):
            last_seen[lk] = t
    return [_to_span(rec, last_seen.get((rec.path, rec.span["traceId"]), 0)) for rec in best.values()]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many long-lived containers (it would rescan them all
    repeatedly: about half the time of a large read). The parsed records hold no cycles."""
    enabled = gc.isenabled()
    if enabled:
        gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read(path: str | os.PathLike[str]) -> ReadResult:
    """Read a record file or directory and merge its records into spans.

    Raises ``FileNotFoundError`` for a missing path. Unreadable lines and files are reported in
    ``ReadResult.corrupt`` and skipped.
    """
    with _gc_paused():
        return _read(path)


def _read(path: str | os.PathLike[str]) -> ReadResult:
    result = ReadResult(files=[str(f) for f in find_files(path)])
    all_records: list[Record] = []
    for f in result.files:
        try:
            records, bad, _, _ = read_from(f)
        except OSError as exc:
            result.corrupt.append(CorruptLine(f, 0, f"cannot read file: {exc.strerror or exc}"))
            continue
        result.corrupt.extend(bad)
        all_records.extend(records)
    result.records = len(all_records)
    result.start_records = sum(1 for r in all_records if r.is_start)
    result.end_records = result.records - result.start_records
    result.spans = merge_records(all_records)
    return result


# --------------------------------------------------------------------------------------------- recovery


def recover(span: Span, end_time_unix_nano: int | None = None) -> Span:
    """Return a copy of an unfinished span made into a complete, *recovered* span.

    The copy has status ERROR with :data:`RECOVERED_STATUS_MESSAGE`, ``error.type =
    "agent_otel.unfinished"`` (replacing any earlier value), ``agent_otel.recovered = true``, no
    ``agent_otel.start_record`` attribute, and an end time of ``end_time_unix_nano`` if given, else
    ``span.last_seen_unix_nano`` - the latest timestamp recorded for the span's trace in the span's file,
    i.e. the last sign of life of that run before the process died - and never earlier than the span's
    start. ``otlp`` is rewritten to match, so the copy can be exported as is. A finished span is
    returned unchanged.
    """
    if span.finished:
        return span
    end = end_time_unix_nano if end_time_unix_nano is not None else span.last_seen_unix_nano
    end = max(end, span.start_time_unix_nano)
    otlp = copy.copy(span.otlp)
    attrs = [
        kv
        for kv in otlp.get("attributes") or ()
        if kv.get("key") not in (START_RECORD, ERROR_TYPE, RECOVERED)
    ]
    attrs.append({"key": ERROR_TYPE, "value": {"stringValue": UNFINISHED_ERROR_TYPE}})
    attrs.append({"key": RECOVERED, "value": {"boolValue": True}})
    otlp["attributes"] = attrs
    otlp["endTimeUnixNano"] = str(end)
    otlp["status"] = {"code": STATUS_ERROR, "message": RECOVERED_STATUS_MESSAGE}
    attributes = dict(span.attributes)
    attributes[ERROR_TYPE] = UNFINISHED_ERROR_TYPE
    attributes[RECOVERED] = True
    return dataclasses.replace(
        span,
        end_time_unix_nano=end,
        status_code=STATUS_ERROR,
        status_message=RECOVERED_STATUS_MESSAGE,
        attributes=attributes,
        events=list(span.events),
        otlp=otlp,
        recovered=True,
    )
