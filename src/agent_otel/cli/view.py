"""``agent-otel view``: the trajectory viewer.

Groups a record's spans by conversation (``gen_ai.conversation.id``), then by trace (one user turn),
then prints each trace as a span tree with durations, model, tokens, tool names and status. Spans that
never ended are marked; ``--json`` gives the same structure for scripts.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any, TextIO

from agent_otel import attributes as attrs
from agent_otel.attributes import Category
from agent_otel.cli import _common as c
from agent_otel.jsonl.reader import ReadResult, Span

DESCRIPTION = """\
Show the local record as a trajectory: conversations, their turns (one trace per turn), and each
turn's span tree - agent runs, workflow/graph nodes, LLM calls and tool calls - with duration, model,
token counts, tool names and status.

PATH is a record file or a directory (every *.jsonl below it is read). Without PATH, the record
agent-otel writes is read: $AGENT_OTEL_JSONL_FILE when set, else $AGENT_OTEL_JSONL_DIR
(default ./agent-otel-traces).
Spans whose process was killed before they ended are shown with "never ended (process killed?)" and a
lower bound on their duration (up to the last record of their run). Unreadable lines (a torn last line
after a crash, a corrupt line) are skipped with a warning on stderr.

Colour and truncation to the terminal width are used only when stdout is a terminal; NO_COLOR=1 or
--color never turns colour off."""

EPILOG = """\
examples:
  agent-otel view                                       the record in $AGENT_OTEL_JSONL_DIR (or _FILE)
  agent-otel view agent-otel-traces/                    every conversation and turn
  agent-otel view run.jsonl --errors                    only turns with an error or a killed span
  agent-otel view traces/ -c chat-42 --since 2h         one conversation, last two hours
  agent-otel view traces/ --category llm --category tool
                                                        only LLM and tool calls (under their turn)
  agent-otel view traces/ --trace 4bf92f35 --json | jq '.conversations[0].traces[0].spans'

exit status: 0 when the record was read (even if some lines were skipped or no trace matched the
filters), 1 when nothing could be read (missing path, no *.jsonl files, no span records)."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "view",
        help="show the record as conversations > turns > span trees",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_path_argument(p)
    c.add_filter_arguments(p)
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print JSON (conversations > traces > span trees)")
    out.add_argument(
        "--color", choices=("auto", "always", "never"), default="auto", help="colour (default: auto)"
    )
    out.add_argument(
        "--attributes", "-a", action="store_true", help="also list every attribute of each span (text output)"
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    path, source = c.record_path(args)
    result = c.load(path, err, source=source)
    if result is None:
        return c.EXIT_FAILURE
    filters = c.Filters.from_args(args)
    traces = filters.select(c.build_traces(result.spans))
    if args.json:
        c.dump_json(to_json(traces, result), out)
        return c.EXIT_OK
    if not traces:
        print("agent-otel: no trace matches the filters", file=err)
        return c.EXIT_OK
    style = c.Style(c.use_color(out, args.color))
    render(
        traces,
        result,
        out,
        style=style,
        symbols=c.Symbols.for_stream(out),
        width=c.terminal_width(out),
        show_attributes=args.attributes,
    )
    return c.EXIT_OK


# ------------------------------------------------------------------------------------------------ text


def _conversation_header(conv: str | None, traces: list[c.Trace]) -> tuple[str, str]:
    spans = [s for t in traces for s in t.spans]
    llm = [s for s in spans if c.category(s) == Category.LLM]
    tin = sum(c.tokens(s)[0] or 0 for s in llm)
    tout = sum(c.tokens(s)[1] or 0 for s in llm)
    turns = sum(1 for s in spans if c.category(s) == Category.AGENT) or len(traces)
    errors = sum(1 for s in spans if s.is_error and s.finished)
    unfinished = sum(1 for s in spans if not s.finished)
    parts = [
        f"{turns} turn{'s' if turns != 1 else ''}",
        f"{len(llm)} LLM call{'s' if len(llm) != 1 else ''}",
    ]
    if tin or tout:
        parts.append(f"tokens {c.fmt_int(tin)} in / {c.fmt_int(tout)} out")
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if unfinished:
        parts.append(f"{unfinished} never ended")
    title = f"conversation {conv}" if conv else c.NO_CONVERSATION
    return title, " · ".join(parts)


def _details(span: Span, sym: c.Symbols) -> list[tuple[str, tuple[str, ...]]]:
    """The detail segments after the duration: (text, styles)."""
    parts: list[tuple[str, tuple[str, ...]]] = []
    cat = c.category(span)
    m = c.model(span)
    if m and cat in (Category.LLM, None):
        parts.append((m, ("cyan",)))
    tin, tout = c.tokens(span)
    if tin is not None or tout is not None:
        parts.append((f"{c.fmt_int(tin)}{sym.arrow}{c.fmt_int(tout)} tok", ("dim",)))
    if cat == Category.TOOL:
        name = c.tool_name(span)
        if name and not span.name.endswith(name):
            parts.append((f"tool {name}", ()))
    if not span.finished and not span.recovered:
        parts.append((f"{sym.unfinished} never ended (process killed?)", ("yellow", "bold")))
    elif span.is_error:
        text = error_text(span)
        parts.append((text, ("red",)))
    return parts


def error_text(span: Span) -> str:
    """``ERROR <error.type>: <first line of the status message>`` (without repeating the type)."""
    et = c.error_type(span) or ""
    msg = (span.status_message or "").strip().splitlines()[0].strip() if span.status_message.strip() else ""
    if et and msg.startswith(et):
        msg = msg[len(et) :].lstrip(":").strip()
    text = "ERROR" + (f" {et}" if et else "") + (f": {msg}" if msg else "")
    if c.is_interrupted(span):
        text += " (interrupted)"
    elif c.is_validation_error(span) and et != attrs.TOOL_VALIDATION_ERROR_TYPE:
        text += " (validation error)"
    return text


def _symbol(span: Span, sym: c.Symbols) -> tuple[str, tuple[str, ...]]:
    if not span.finished and not span.recovered:
        return sym.unfinished, ("yellow", "bold")
    if span.is_error:
        return sym.error, ("red", "bold")
    return sym.ok, ("green",)


def _duration(span: Span) -> str:
    if span.finished or span.recovered:
        return c.fmt_duration(span.duration_ns)
    lower = c.effective_end(span) - span.start_time_unix_nano
    return "≥" + c.fmt_duration(lower) if lower > 0 else "?"


def _tree_rows(nodes: list[c.Node], prefix: str, sym: c.Symbols, top: bool) -> list[tuple[str, c.Node]]:
    """(connector prefix, node) in display order."""
    rows: list[tuple[str, c.Node]] = []
    for i, node in enumerate(nodes):
        last = i == len(nodes) - 1
        if top:
            conn, child_prefix = "", ""
        else:
            conn = prefix + (sym.last if last else sym.tee)
            child_prefix = prefix + (sym.blank if last else sym.pipe)
        rows.append((conn, node))
        rows.extend(_tree_rows(node.children, child_prefix, sym, top=False))
    return rows


def render(
    traces: list[c.Trace],
    result: ReadResult,
    out: TextIO,
    *,
    style: c.Style,
    symbols: c.Symbols,
    width: int | None,
    show_attributes: bool = False,
) -> None:
    """Write the text view of ``traces`` to ``out``."""
    sym = symbols
    indent = "    "
    name_w = 0
    for trace in traces:
        for conn, n in _tree_rows(trace.roots, "", sym, top=True):
            name_w = max(name_w, len(conn) + 2 + len(n.span.name or "(unnamed)") + 2)
    name_w = min(name_w, 64)
    for conv, ctraces in c.group_by_conversation(traces):
        title, summary = _conversation_header(conv, ctraces)
        segs = [(title, ("bold", "magenta")), (f"  {summary}", ("dim",))]
        print(_render_segments(segs, width, style, sym), file=out)
        for turn, trace in enumerate(ctraces, 1):
            head = [
                f"turn {turn}",
                f"trace {trace.trace_id}",
                c.fmt_time(trace.start),
                c.fmt_duration(trace.duration_ns),
            ]
            if trace.service:
                head.append(trace.service)
            if trace.unfinished:
                n = len(trace.unfinished)
                head.append(f"{sym.unfinished} {n} span{'s' if n != 1 else ''} never ended")
            text = "  " + " · ".join(head)
            print(style(c.truncate(text, width), "bold"), file=out)
            rows = _tree_rows(trace.roots, "", sym, top=True)
            for conn, node in rows:
                span = node.span
                s_text, s_style = _symbol(span, sym)
                left = f"{indent}{conn}"
                name = span.name or "(unnamed)"
                label = f"{s_text} {name}"
                pad = max(1, name_w - len(conn) - len(label))
                dur = _duration(span).rjust(9)
                plain = f"{left}{label}{' ' * pad}{dur}"
                segs = [(left, ("dim",)), (s_text, s_style), (f" {name}", ()), (" " * pad, ()), (dur, ())]
                for text, st in _details(span, sym):
                    segs.append(("  " + text, st))
                    plain += "  " + text
                if node.orphan:
                    t = f"  (parent {span.parent_span_id} not in record)"
                    segs.append((t, ("dim",)))
                    plain += t
                print(_render_segments(segs, width, style, sym), file=out)
                if show_attributes:
                    pad_attr = indent + " " * (len(conn) + 4)
                    for k in sorted(span.attributes):
                        v = span.attributes[k]
                        line = f"{pad_attr}{k} = {v!r}"
                        print(style(c.truncate(line, width, sym.ellipsis), "dim"), file=out)
        print(file=out)
    _footer(traces, result, out, style, width)


def _render_segments(
    segs: list[tuple[str, tuple[str, ...]]], width: int | None, style: c.Style, sym: c.Symbols
) -> str:
    """Join styled segments, cutting the plain text at ``width`` (when given)."""
    out = []
    used = 0
    for text, st in segs:
        if width is not None and used + len(text) > width:
            room = width - used
            if room > len(sym.ellipsis):
                out.append(style(text[: room - len(sym.ellipsis)] + sym.ellipsis, *st))
            break
        out.append(style(text, *st))
        used += len(text)
    return "".join(out).rstrip()


def _footer(
    traces: list[c.Trace], result: ReadResult, out: TextIO, style: c.Style, width: int | None
) -> None:
    spans = [s for t in traces for s in t.spans]
    convs = {t.conversation_id for t in traces if t.conversation_id}
    unfinished = sum(1 for s in spans if not s.finished)
    errors = sum(1 for s in spans if s.is_error and s.finished)
    nfiles = len(result.files)
    text = (
        f"{len(convs)} conversation{'s' if len(convs) != 1 else ''}, {len(traces)} "
        f"trace{'s' if len(traces) != 1 else ''}, {len(spans)} span{'s' if len(spans) != 1 else ''} "
        f"({errors} error{'s' if errors != 1 else ''}, {unfinished} never ended) "
        f"from {nfiles} file{'s' if nfiles != 1 else ''}"
    )
    if result.corrupt:
        text += f"; {len(result.corrupt)} unreadable line{'s' if len(result.corrupt) != 1 else ''} skipped"
    print(style("\n".join(textwrap.wrap(text, width or 200)), "dim"), file=out)


# ------------------------------------------------------------------------------------------------ json


def span_json(span: Span, children: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON form of one span (shared with ``tail --json``)."""
    tin, tout = c.tokens(span)
    d: dict[str, Any] = {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "category": c.category(span),
        "kind": span.kind,
        "status": c.status_word(span),
        "status_message": span.status_message or None,
        "error_type": c.error_type(span),
        "start_time": c.iso_time(span.start_time_unix_nano),
        "end_time": c.iso_time(span.end_time_unix_nano),
        "start_time_unix_nano": span.start_time_unix_nano,
        "end_time_unix_nano": span.end_time_unix_nano,
        "duration_ms": None if span.duration_ns is None else span.duration_ns / 1e6,
        "finished": span.finished,
        "recovered": span.recovered,
        "interrupted": c.is_interrupted(span),
        "last_seen_time": None if span.finished else c.iso_time(c.effective_end(span)),
        "conversation_id": c.conversation(span),
        "model": c.model(span),
        "input_tokens": tin,
        "output_tokens": tout,
        "tool_name": c.tool_name(span),
        "service": span.service_name,
        "attributes": c.json_safe(span.attributes),
        "events": [
            {"name": e.name, "time": c.iso_time(e.time_unix_nano), "attributes": c.json_safe(e.attributes)}
            for e in span.events
        ],
        "file": span.path,
        "line": span.line,
    }
    if children is not None:
        d["children"] = children
    return d


def _node_json(node: c.Node) -> dict[str, Any]:
    return span_json(node.span, [_node_json(ch) for ch in node.children])


def to_json(traces: list[c.Trace], result: ReadResult) -> dict[str, Any]:
    """``{"conversations": [{"conversation_id", "traces": [{..., "spans": [tree]}]}], "summary", ...}``."""
    convs = []
    for conv, ctraces in c.group_by_conversation(traces):
        convs.append(
            {
                "conversation_id": conv,
                "traces": [
                    {
                        "trace_id": t.trace_id,
                        "start_time": c.iso_time(t.start),
                        "duration_ms": t.duration_ns / 1e6,
                        "service": t.service,
                        "span_count": len(t.spans),
                        "unfinished_count": len(t.unfinished),
                        "has_error": t.has_problem,
                        "spans": [_node_json(n) for n in t.roots],
                    }
                    for t in ctraces
                ],
            }
        )
    spans = [s for t in traces for s in t.spans]
    return {
        "conversations": convs,
        "summary": {
            "files": len(result.files),
            "records": result.records,
            "traces": len(traces),
            "spans": len(spans),
            "unfinished": sum(1 for s in spans if not s.finished),
            "errors": sum(1 for s in spans if s.is_error),
        },
        "corrupt_lines": [
            {"file": x.path, "line": x.line, "reason": x.reason, "torn": x.torn} for x in result.corrupt
        ],
    }
