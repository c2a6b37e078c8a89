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

Lines that do not parse (a torn last line after a crash, a corrupt line in the middle) are skipped and
reported as :class:`CorruptLine` (``file:line: reason``); they never stop the read.

This module depends on the record *format* only, never on OpenTelemetry SDK classes: spans are plain
dataclasses holding decoded attributes and the original OTLP/JSON dictionaries (used by the exporter).
It uses ``orjson`` when it is installed, else the standard ``json`` module.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import gc
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # pragma: no cover - exercised whichever way the environment is
    import orjson as _orjson

    def _loads(data: bytes) -> Any:
        return _orjson.loads(data)

    _JSON_ERRORS: tuple[type[BaseException], ...] = (_orjson.JSONDecodeError, UnicodeDecodeError)
except ImportError:  # pragma: no cover
    import json as _json

    def _loads(data: bytes) -> Any:
        return _json.loads(data)

    _JSON_ERRORS = (ValueError, UnicodeDecodeError)

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
    "iter_records",
    "merge_records",
    "parse_line",
    "read",
    "read_from",
    "recover",
]

# These names mirror agent_otel.attributes (kept local so the reader has no dependency beyond the format;
# tests/test_reader.py checks they agree).
START_RECORD = "agent_otel.start_record"
RECOVERED = "agent_otel.recovered"
UNFINISHED_ERROR_TYPE = "agent_otel.unfinished"
ERROR_TYPE = "error.type"

#: Status message given to recovered spans.
RECOVERED_STATUS_MESSAGE = "span never ended: its process stopped before closing it (killed?)"

STATUS_UNSET = 0
STATUS_OK = 1
STATUS_ERROR = 2

_MAX_LINE = 1 << 20  # the writer keeps lines below 1 MiB; longer "lines" are reported, not parsed
_CHUNK = 1 << 20


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
    def trace_id(self) -> str:
        return self.span["traceId"]

    @property
    def span_id(self) -> str:
        return self.span["spanId"]

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

    def with_recovered(self) -> list[Span]:
        """All spans, with every unfinished span replaced by its :func:`recover` ed version."""
        return [s if s.finished else recover(s) for s in self.spans]


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

    A malformed entry is skipped; it never makes the whole list unreadable.
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
            bytes.fromhex(value)
        except ValueError:
            return None
        return value.lower()
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


def parse_line(data: bytes, path: str = "", line: int = 0) -> list[Record]:
    """Parse one line of the record into its span records.

    Raises ``ValueError`` with a short human reason when the line is not an OTLP/JSON ``TracesData``
    holding spans with valid ids. A ``TracesData`` holding no spans gives an empty list. Our writer puts
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
        for rs in doc["resourceSpans"] or ():
            resource = rs.get("resource") or {}
            for ss in rs.get("scopeSpans") or ():
                scope = ss.get("scope") or {}
                for span in ss.get("spans") or ():
                    trace_id = _norm_id(span.get("traceId"), 16)
                    span_id = _norm_id(span.get("spanId"), 8)
                    if trace_id is None or span_id is None:
                        raise ValueError("span without a valid traceId/spanId")
                    span["traceId"], span["spanId"] = trace_id, span_id
                    parent = span.get("parentSpanId")
                    if parent:
                        norm = _norm_id(parent, 8)
                        if norm is None:
                            raise ValueError("span with an invalid parentSpanId")
                        span["parentSpanId"] = norm
                    _int(span.get("startTimeUnixNano"))
                    records.append(Record(span, resource, scope, path, line, _is_start(span)))
    except (AttributeError, TypeError) as exc:
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


def iter_records(path: str | os.PathLike[str], corrupt: list[CorruptLine] | None = None) -> Iterator[Record]:
    """Yield every record of a file or directory in file order; append skipped lines to ``corrupt``."""
    for f in find_files(path):
        try:
            records, bad, _, _ = read_from(f)
        except OSError as exc:
            if corrupt is not None:
                corrupt.append(CorruptLine(str(f), 0, f"cannot read file: {exc.strerror or exc}"))
            continue
        if corrupt is not None:
            corrupt.extend(bad)
        yield from records


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
        """Position after the last complete line (counting lines, so later reports keep their numbers)."""
        try:
            data = self.path.read_bytes()
            st = self.path.stat()
        except OSError:
            return
        last_nl = data.rfind(b"\n")
        self.offset = last_nl + 1
        self.line_no = data.count(b"\n", 0, self.offset) + 1
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
    s = rec.span
    attrs = decode_attributes(s.get("attributes"))
    attrs.pop(START_RECORD, None)
    status = s.get("status") or {}
    scope = rec.scope or {}
    end = _int(s.get("endTimeUnixNano"))
    finished = not rec.is_start
    events = [
        SpanEvent(
            name=str(ev.get("name", "")),
            time_unix_nano=_int(ev.get("timeUnixNano")),
            attributes=decode_attributes(ev.get("attributes")),
        )
        for ev in s.get("events") or ()
        if isinstance(ev, dict)
    ]
    return Span(
        trace_id=s["traceId"],
        span_id=s["spanId"],
        parent_span_id=s.get("parentSpanId") or None,
        name=str(s.get("name", "")),
        kind=_int(s.get("kind"), 1),
        start_time_unix_nano=_int(s.get("startTimeUnixNano")),
        end_time_unix_nano=end if finished and end else None,
        status_code=_int(status.get("code")),
        status_message=str(status.get("message") or ""),
        attributes=attrs,
        events=events,
        resource=decode_attributes((rec.resource or {}).get("attributes")),
        scope_name=str(scope.get("name") or ""),
        scope_version=str(scope.get("version") or ""),
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
    return Span(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        name=span.name,
        kind=span.kind,
        start_time_unix_nano=span.start_time_unix_nano,
        end_time_unix_nano=end,
        status_code=STATUS_ERROR,
        status_message=RECOVERED_STATUS_MESSAGE,
        attributes=attributes,
        events=list(span.events),
        resource=span.resource,
        scope_name=span.scope_name,
        scope_version=span.scope_version,
        path=span.path,
        line=span.line,
        finished=False,
        otlp=otlp,
        otlp_resource=span.otlp_resource,
        otlp_scope=span.otlp_scope,
        last_seen_unix_nano=span.last_seen_unix_nano,
        recovered=True,
    )
