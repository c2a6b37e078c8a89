"""Shared pieces of the ``agent-otel`` subcommands: loading a record, filters, span facts, traces.

Everything here works on :class:`agent_otel.jsonl.reader.Span` (plain data), never on SDK classes.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from agent_otel import attributes as attrs
from agent_otel.attributes import Category, Operation
from agent_otel.jsonl import reader
from agent_otel.jsonl.reader import ReadResult, Span

#: The span categories, in the order of the taxonomy (choices of ``--category``).
CATEGORIES = tuple(c.value for c in Category)

# Spans without agent_otel.span.category (written by other instrumentations) get one from their
# gen_ai.operation.name.
_OPERATION_CATEGORY = {
    Operation.INVOKE_AGENT.value: Category.AGENT.value,
    "create_agent": Category.AGENT.value,  # a GenAI operation agent-otel itself does not write
    Operation.INVOKE_WORKFLOW.value: Category.WORKFLOW.value,
    Operation.CHAT.value: Category.LLM.value,
    Operation.TEXT_COMPLETION.value: Category.LLM.value,
    Operation.GENERATE_CONTENT.value: Category.LLM.value,
    Operation.EMBEDDINGS.value: Category.LLM.value,
    Operation.EXECUTE_TOOL.value: Category.TOOL.value,
}
_TOOL_SPAN_PREFIX = Operation.EXECUTE_TOOL.value + " "

NO_CONVERSATION = "(no conversation)"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


# ------------------------------------------------------------------------------------------ span facts


def category(span: Span) -> str | None:
    """The span's ``agent_otel.span.category``, else one inferred from ``gen_ai.operation.name``."""
    value = span.attributes.get(attrs.CATEGORY)
    if isinstance(value, str) and value:
        return value
    op = span.attributes.get(attrs.GEN_AI_OPERATION_NAME)
    return _OPERATION_CATEGORY.get(op) if isinstance(op, str) else None


def model(span: Span) -> str | None:
    a = span.attributes
    value = a.get(attrs.GEN_AI_RESPONSE_MODEL) or a.get(attrs.GEN_AI_REQUEST_MODEL)
    return str(value) if value else None


def tokens(span: Span) -> tuple[int | None, int | None]:
    def _get(key: str) -> int | None:
        v = span.attributes.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        return int(v)

    return _get(attrs.GEN_AI_USAGE_INPUT_TOKENS), _get(attrs.GEN_AI_USAGE_OUTPUT_TOKENS)


def tool_name(span: Span) -> str | None:
    value = span.attributes.get(attrs.GEN_AI_TOOL_NAME)
    if value:
        return str(value)
    if span.name.startswith(_TOOL_SPAN_PREFIX):
        return span.name[len(_TOOL_SPAN_PREFIX) :]
    return None


def conversation(span: Span) -> str | None:
    value = span.attributes.get(attrs.GEN_AI_CONVERSATION_ID)
    return str(value) if value not in (None, "") else None


def error_type(span: Span) -> str | None:
    value = span.attributes.get(attrs.ERROR_TYPE)
    return str(value) if value not in (None, "") else None


def is_interrupted(span: Span) -> bool:
    return span.attributes.get(attrs.INTERRUPTED) is True


def is_validation_error(span: Span) -> bool:
    return (
        span.attributes.get(attrs.TOOL_OUTCOME) == attrs.TOOL_OUTCOME_VALIDATION_ERROR
        or error_type(span) == attrs.TOOL_VALIDATION_ERROR_TYPE
    )


def is_problem(span: Span) -> bool:
    """True for a span with status ERROR or one that never ended."""
    return span.is_error or not span.finished


def status_word(span: Span) -> str:
    if not span.finished and not span.recovered:
        return "unfinished"
    if span.status_code == reader.STATUS_ERROR:
        return "error"
    if span.status_code == reader.STATUS_OK:
        return "ok"
    return "unset"


def effective_end(span: Span) -> int:
    """End time, or for an unfinished span the last time its run was seen alive."""
    if span.end_time_unix_nano is not None:
        return span.end_time_unix_nano
    return max(span.last_seen_unix_nano, span.start_time_unix_nano)


# ----------------------------------------------------------------------------------------------- traces


@dataclass
class Node:
    span: Span
    children: list[Node] = field(default_factory=list)
    orphan: bool = False  # the parent span id is not in the record


@dataclass
class Trace:
    trace_id: str
    spans: list[Span]
    roots: list[Node]
    conversation_id: str | None
    start: int
    end: int

    @property
    def duration_ns(self) -> int:
        return max(0, self.end - self.start)

    @property
    def has_problem(self) -> bool:
        return any(is_problem(s) for s in self.spans)

    @property
    def unfinished(self) -> list[Span]:
        return [s for s in self.spans if not s.finished]

    @property
    def service(self) -> str | None:
        for s in self.spans:
            if s.service_name:
                return s.service_name
        return None

    def root_span(self) -> Span | None:
        return self.roots[0].span if self.roots else None


def build_tree(spans: Sequence[Span]) -> list[Node]:
    """Arrange spans into trees by ``parentSpanId``; children and roots sorted by start time.

    A span whose parent is not among ``spans`` becomes a root marked ``orphan``.
    """
    nodes = {s.span_id: Node(s) for s in spans}
    roots: list[Node] = []
    for s in spans:
        node = nodes[s.span_id]
        parent = nodes.get(s.parent_span_id) if s.parent_span_id else None
        if parent is not None and parent is not node:
            parent.children.append(node)
        else:
            node.orphan = bool(s.parent_span_id)
            roots.append(node)

    def _sort(ns: list[Node]) -> None:
        ns.sort(key=lambda n: (n.span.start_time_unix_nano, n.span.name))
        for n in ns:
            _sort(n.children)

    _sort(roots)
    return roots


def trace_conversation(spans: Sequence[Span], roots: Sequence[Node]) -> str | None:
    for n in roots:
        c = conversation(n.span)
        if c:
            return c
    for s in spans:
        c = conversation(s)
        if c:
            return c
    return None


def build_traces(spans: Iterable[Span]) -> list[Trace]:
    """Group spans by trace id; traces sorted by start time."""
    by_trace: dict[str, list[Span]] = {}
    for s in spans:
        by_trace.setdefault(s.trace_id, []).append(s)
    traces = []
    for tid, ss in by_trace.items():
        roots = build_tree(ss)
        start = min(s.start_time_unix_nano for s in ss)
        end = max(effective_end(s) for s in ss)
        traces.append(Trace(tid, ss, roots, trace_conversation(ss, roots), start, end))
    traces.sort(key=lambda t: (t.start, t.trace_id))
    return traces


def group_by_conversation(traces: Iterable[Trace]) -> list[tuple[str | None, list[Trace]]]:
    """Conversations in order of their first trace; the traces without a conversation come last."""
    groups: dict[str | None, list[Trace]] = {}
    for t in traces:
        groups.setdefault(t.conversation_id, []).append(t)
    named = [(k, v) for k, v in groups.items() if k is not None]
    named.sort(key=lambda kv: kv[1][0].start)
    if None in groups:
        named.append((None, groups[None]))
    return named


# ---------------------------------------------------------------------------------------------- filters

_REL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, *, now: float | None = None) -> int:
    """Parse ``--since``/``--until``: an ISO 8601 time (local time when no offset), a relative age such as
    ``30s``, ``15m``, ``2h``, ``7d`` (that long ago), or ``now``. Returns Unix nanoseconds."""
    import time as _time

    current = _time.time() if now is None else now
    t = text.strip()
    if t.lower() == "now":
        return int(current * 1e9)
    m = _REL.match(t)
    if m:
        return int((current - float(m.group(1)) * _UNIT_S[m.group(2).lower()]) * 1e9)
    try:
        dt = _dt.datetime.fromisoformat(t.replace("Z", "+00:00") if t.endswith("Z") else t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use ISO 8601 (2026-07-01T12:00, 2026-07-01 12:00:00+02:00) "
            "or an age like 30s, 15m, 2h, 7d"
        ) from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # local time
    return int(dt.timestamp() * 1e9)


def _time_arg(text: str) -> int:
    return parse_time(text)


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the filters shared by view, stats and tail."""
    g = parser.add_argument_group("filters")
    g.add_argument(
        "--conversation",
        "-c",
        action="append",
        metavar="ID",
        help="only this conversation (gen_ai.conversation.id); repeatable. "
        "Use --conversation none for traces without one.",
    )
    g.add_argument(
        "--trace", "-t", action="append", metavar="ID", help="only traces whose id starts with ID; repeatable"
    )
    g.add_argument(
        "--category",
        action="append",
        choices=CATEGORIES,
        metavar="CAT",
        help=f"only spans of this category ({', '.join(CATEGORIES)}); repeatable",
    )
    g.add_argument(
        "--errors", "-e", action="store_true", help="only traces with an error or a span that never ended"
    )
    g.add_argument(
        "--since", type=_time_arg, metavar="TIME", help="only traces that started at/after TIME (e.g. 1h)"
    )
    g.add_argument("--until", type=_time_arg, metavar="TIME", help="only traces that started before TIME")


@dataclass
class Filters:
    """The filters of view/stats/tail. Trace-level filters choose traces; ``categories`` chooses spans."""

    conversations: list[str] | None = None
    traces: list[str] | None = None
    categories: list[str] | None = None
    errors: bool = False
    since: int | None = None
    until: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Filters:
        return cls(
            conversations=getattr(args, "conversation", None),
            traces=[t.lower() for t in args.trace] if getattr(args, "trace", None) else None,
            categories=getattr(args, "category", None),
            errors=bool(getattr(args, "errors", False)),
            since=getattr(args, "since", None),
            until=getattr(args, "until", None),
        )

    def conversation_ok(self, conv: str | None) -> bool:
        if not self.conversations:
            return True
        if conv is None:
            return any(c.lower() in ("none", NO_CONVERSATION) for c in self.conversations)
        return conv in self.conversations

    def trace_id_ok(self, trace_id: str) -> bool:
        return not self.traces or any(trace_id.startswith(t) for t in self.traces)

    def time_ok(self, start: int) -> bool:
        if self.since is not None and start < self.since:
            return False
        return not (self.until is not None and start >= self.until)

    def trace_ok(self, trace: Trace) -> bool:
        return (
            self.trace_id_ok(trace.trace_id)
            and self.conversation_ok(trace.conversation_id)
            and self.time_ok(trace.start)
            and (not self.errors or trace.has_problem)
        )

    def span_ok(self, span: Span) -> bool:
        return not self.categories or category(span) in self.categories

    def select(self, traces: Iterable[Trace]) -> list[Trace]:
        """The traces that pass, each reduced to the spans of the chosen categories (re-treed)."""
        out = []
        for t in traces:
            if not self.trace_ok(t):
                continue
            if self.categories:
                kept = [s for s in t.spans if self.span_ok(s)]
                if not kept:
                    continue
                t = Trace(t.trace_id, kept, _reparent(t, kept), t.conversation_id, t.start, t.end)
            out.append(t)
        return out


def _reparent(trace: Trace, kept: list[Span]) -> list[Node]:
    """Tree of ``kept`` where each span hangs under its nearest kept ancestor."""
    by_id = {s.span_id: s for s in trace.spans}
    kept_ids = {s.span_id for s in kept}
    nodes = {s.span_id: Node(s) for s in kept}
    roots: list[Node] = []
    for s in kept:
        parent = s.parent_span_id
        seen = set()
        while parent and parent not in kept_ids and parent in by_id and parent not in seen:
            seen.add(parent)
            parent = by_id[parent].parent_span_id
        if parent and parent in kept_ids and parent != s.span_id:
            nodes[parent].children.append(nodes[s.span_id])
        else:
            roots.append(nodes[s.span_id])
    for n in nodes.values():
        n.children.sort(key=lambda c: c.span.start_time_unix_nano)
    roots.sort(key=lambda n: n.span.start_time_unix_nano)
    return roots


# ------------------------------------------------------------------------------------------ load/report

PATH_HELP = (
    "a record file or a directory of *.jsonl files; default: the record agent-otel writes, "
    "$AGENT_OTEL_JSONL_FILE when set, else $AGENT_OTEL_JSONL_DIR (default ./agent-otel-traces)"
)


def add_path_argument(parser: argparse.ArgumentParser) -> None:
    """The optional PATH argument of view, stats, tail and export (see :func:`record_path`)."""
    parser.add_argument("path", metavar="PATH", nargs="?", help=PATH_HELP)


def record_path(args: argparse.Namespace) -> tuple[str, str | None]:
    """The record to read and, when PATH was not given, the setting it came from.

    Without PATH: ``AGENT_OTEL_JSONL_FILE`` when set, else ``AGENT_OTEL_JSONL_DIR`` (default
    ``agent-otel-traces``), as :func:`agent_otel.config.get_settings` reads them - where agent-otel
    writes its record.
    """
    path = getattr(args, "path", None)
    if path:
        return path, None
    from agent_otel.config import get_settings

    settings = get_settings()
    if settings.jsonl_file:
        return settings.jsonl_file, "AGENT_OTEL_JSONL_FILE"
    return settings.jsonl_dir, "AGENT_OTEL_JSONL_DIR"


def path_note(source: str | None) -> str:
    """`` (PATH not given: ...)`` for error messages about a defaulted path, else ``""``."""
    if source is None:
        return ""
    return f" (no PATH given: the default comes from {source}, the record agent-otel writes)"


def load(path: str, err: TextIO, *, max_shown: int = 5, source: str | None = None) -> ReadResult | None:
    """Read ``path`` and print problems to ``err``. ``None`` (message printed) when nothing was read.

    ``source`` names the setting ``path`` came from when the user gave no PATH (see :func:`record_path`).
    """
    try:
        result = reader.read(path)
    except FileNotFoundError as exc:
        print(f"agent-otel: error: {exc}{path_note(source)}", file=err)
        return None
    except OSError as exc:
        print(f"agent-otel: error: cannot read {path}: {exc}", file=err)
        return None
    report_corrupt(result, err, max_shown=max_shown)
    if not result.files:
        print(f"agent-otel: error: no *.jsonl record files under {path}{path_note(source)}", file=err)
        return None
    if not result.spans:
        what = "is empty" if not result.corrupt else "has no readable span records"
        where = result.files[0] if len(result.files) == 1 else f"{path} ({len(result.files)} files)"
        print(f"agent-otel: error: {where} {what}", file=err)
        return None
    return result


def report_corrupt(result: ReadResult, err: TextIO, *, max_shown: int = 5) -> None:
    """One warning line with counts, then the first few ``file:line: reason`` lines."""
    if not result.corrupt:
        return
    n = len(result.corrupt)
    torn = len(result.torn)
    detail = f" ({torn} torn last line{'s' if torn != 1 else ''})" if torn else ""
    print(f"agent-otel: warning: skipped {n} unreadable line{'s' if n != 1 else ''}{detail}", file=err)
    for c in result.corrupt[:max_shown]:
        print(f"  {c}", file=err)
    if n > max_shown:
        print(f"  … and {n - max_shown} more", file=err)


# ----------------------------------------------------------------------------------------------- output


def use_color(stream: TextIO, choice: str = "auto") -> bool:
    """Colour on ``always``; on ``auto`` only for a terminal and when ``NO_COLOR`` is unset."""
    import os

    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    return _isatty(stream) and os.environ.get("TERM") != "dumb"


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def terminal_width(stream: TextIO) -> int | None:
    """The terminal width when ``stream`` is a terminal, else ``None`` (no truncation)."""
    import shutil

    if not _isatty(stream):
        return None
    return max(40, shutil.get_terminal_size((100, 24)).columns)


_CODES = {
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
    "bold": "1",
    "dim": "2",
}


class Style:
    """Wraps text in ANSI colours when enabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles or not text:
            return text
        codes = ";".join(_CODES[s] for s in styles if s in _CODES)
        return f"\x1b[{codes}m{text}\x1b[0m"


@dataclass(frozen=True)
class Symbols:
    ok: str
    error: str
    unfinished: str
    tee: str
    last: str
    pipe: str
    blank: str
    start: str
    end: str
    arrow: str
    ellipsis: str

    @classmethod
    def for_stream(cls, stream: TextIO) -> Symbols:
        enc = (getattr(stream, "encoding", None) or "ascii").lower()
        try:
            "✓✗⚠├└│─▶■→…".encode(enc)
        except (UnicodeEncodeError, LookupError):
            return ASCII
        return UNICODE


UNICODE = Symbols("✓", "✗", "⚠", "├─ ", "└─ ", "│  ", "   ", "▶", "■", "→", "…")
ASCII = Symbols("+", "x", "!", "|- ", "`- ", "|  ", "   ", ">", "#", "->", "...")


def fmt_duration(ns: int | None) -> str:
    if ns is None:
        return "?"
    if ns < 1_000:
        return f"{ns} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.0f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.0f} ms" if ns >= 10_000_000 else f"{ns / 1e6:.1f} ms"
    s = ns / 1e9
    if s < 60:
        return f"{s:.2f} s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def fmt_time(ns: int, *, date: bool = True) -> str:
    """Local time with milliseconds."""
    if ns <= 0:
        return "?"
    dt = _dt.datetime.fromtimestamp(ns / 1e9)
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if date else dt.strftime("%H:%M:%S.%f")[:-3]


def iso_time(ns: int | None) -> str | None:
    if not ns:
        return None
    return _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def fmt_int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def short_id(trace_id: str) -> str:
    return trace_id[:16]


def json_safe(value: Any) -> Any:
    """Attribute values as JSON: bytes become base64 strings."""
    import base64

    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):  # NaN, ±Infinity: not JSON
        return None
    return value


def dump_json(obj: Any, out: TextIO) -> None:
    import json

    json.dump(obj, out, indent=2, ensure_ascii=False)
    out.write("\n")


def truncate(text: str, width: int | None, ellipsis: str = "…") -> str:
    if width is None or len(text) <= width:
        return text
    return text[: max(0, width - len(ellipsis))] + ellipsis
