"""``agent-otel stats``: aggregate numbers over a record.

Per model (calls, tokens, latency p50/p95, errors), per tool (calls, failures, validation errors,
latency), per conversation (turns, tokens) and the runs that were interrupted or killed.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from agent_otel.attributes import Category
from agent_otel.cli import _common as c
from agent_otel.jsonl.reader import ReadResult, Span

DESCRIPTION = """\
Summarise a record: what the agents cost and where they failed.

  models         per model: calls, errors (status ERROR or never ended), input/output tokens,
                 latency p50/p95 (finished calls only)
  tools          per tool: calls, failures (status ERROR), validation errors (error.type
                 ToolValidationError or agent_otel.tool.outcome=validation_error), latency p50/p95
  conversations  per gen_ai.conversation.id: turns (agent runs), traces, LLM calls, tokens, errors
  interrupted    runs ended by Ctrl-C/SIGTERM/exit (agent_otel.interrupted) and runs whose process was
                 killed (spans that never ended), with the time their run was last seen

PATH is a record file or a directory of *.jsonl files; without it, the record agent-otel writes
($AGENT_OTEL_JSONL_FILE when set, else $AGENT_OTEL_JSONL_DIR, default ./agent-otel-traces) is read.
The filters are those of `agent-otel view`:
--category keeps only the spans of those categories, the others choose whole traces.
Percentiles interpolate linearly between the two nearest samples."""

EPILOG = """\
examples:
  agent-otel stats                                the record in $AGENT_OTEL_JSONL_DIR (or _FILE)
  agent-otel stats agent-otel-traces/
  agent-otel stats traces/ --since 24h
  agent-otel stats traces/ --conversation chat-42
  agent-otel stats traces/ --json | jq '.models'

exit status: 0 when the record was read, 1 when nothing could be read."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "stats",
        help="per-model, per-tool and per-conversation numbers; interrupted runs",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_path_argument(p)
    c.add_filter_arguments(p)
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print JSON")
    out.add_argument(
        "--color", choices=("auto", "always", "never"), default="auto", help="colour (default: auto)"
    )
    p.set_defaults(func=run)
    return p


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` with linear interpolation; ``None`` for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return xs[lo]
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class _Agg:
    calls: int = 0
    errors: int = 0
    validation: int = 0
    unfinished: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    durations: list[int] = field(default_factory=list)

    def add(self, span: Span) -> None:
        self.calls += 1
        if not span.finished:
            self.unfinished += 1
        if span.finished and span.duration_ns is not None:
            self.durations.append(span.duration_ns)
        tin, tout = c.tokens(span)
        self.input_tokens += tin or 0
        self.output_tokens += tout or 0

    def latency(self) -> dict[str, float | None]:
        p50 = percentile(self.durations, 0.5)
        p95 = percentile(self.durations, 0.95)
        return {
            "p50_ms": None if p50 is None else p50 / 1e6,
            "p95_ms": None if p95 is None else p95 / 1e6,
        }


def compute(traces: list[c.Trace]) -> dict[str, Any]:
    """The statistics as plain data (what ``--json`` prints)."""
    models: dict[str, _Agg] = {}
    tools: dict[str, _Agg] = {}
    convs: dict[str | None, dict[str, Any]] = {}
    problems: list[dict[str, Any]] = []
    for t in traces:
        cv = convs.setdefault(
            t.conversation_id,
            {"turns": 0, "traces": 0, "llm_calls": 0, "input_tokens": 0, "output_tokens": 0, "errors": 0},
        )
        cv["traces"] += 1
        agent_runs = 0
        for s in t.spans:
            cat = c.category(s)
            if cat == Category.AGENT:
                agent_runs += 1
            if s.is_error or not s.finished:
                cv["errors"] += 1
            if cat == Category.LLM:
                agg = models.setdefault(c.model(s) or "(unknown model)", _Agg())
                agg.add(s)
                if s.is_error or not s.finished:
                    agg.errors += 1
                tin, tout = c.tokens(s)
                cv["llm_calls"] += 1
                cv["input_tokens"] += tin or 0
                cv["output_tokens"] += tout or 0
            elif cat == Category.TOOL:
                agg = tools.setdefault(c.tool_name(s) or s.name or "(unnamed tool)", _Agg())
                agg.add(s)
                if c.is_validation_error(s):
                    agg.validation += 1
                elif s.is_error:
                    agg.errors += 1
        cv["turns"] += agent_runs or 1
        interrupted = [s for s in t.spans if c.is_interrupted(s)]
        unfinished = t.unfinished
        if interrupted or unfinished:
            root = t.root_span()
            if unfinished:
                what = f"killed: {len(unfinished)} span{'s' if len(unfinished) != 1 else ''} never ended"
            else:
                reasons = sorted({c.error_type(s) or "interrupted" for s in interrupted})
                what = "interrupted: " + ", ".join(reasons)
            files = sorted({s.path for s in (unfinished or interrupted)})
            problems.append(
                {
                    "trace_id": t.trace_id,
                    "conversation_id": t.conversation_id,
                    "root": root.name if root else None,
                    "what": what,
                    "unfinished_spans": len(unfinished),
                    "interrupted_spans": len(interrupted),
                    "start_time": c.iso_time(t.start),
                    "last_seen_time": c.iso_time(t.end),
                    "files": files,
                }
            )

    def _model_row(name: str, a: _Agg) -> dict[str, Any]:
        return {
            "model": name,
            "calls": a.calls,
            "errors": a.errors,
            "input_tokens": a.input_tokens,
            "output_tokens": a.output_tokens,
            **a.latency(),
        }

    def _tool_row(name: str, a: _Agg) -> dict[str, Any]:
        return {
            "tool": name,
            "calls": a.calls,
            "failures": a.errors,
            "validation_errors": a.validation,
            "unfinished": a.unfinished,
            **a.latency(),
        }

    return {
        "models": [_model_row(k, v) for k, v in sorted(models.items(), key=lambda kv: -kv[1].calls)],
        "tools": [_tool_row(k, v) for k, v in sorted(tools.items(), key=lambda kv: -kv[1].calls)],
        "conversations": [{"conversation_id": k, **v} for k, v in convs.items()],
        "interrupted": problems,
        "totals": {
            "traces": len(traces),
            "spans": sum(len(t.spans) for t in traces),
            "llm_calls": sum(a.calls for a in models.values()),
            "tool_calls": sum(a.calls for a in tools.values()),
            "input_tokens": sum(a.input_tokens for a in models.values()),
            "output_tokens": sum(a.output_tokens for a in models.values()),
        },
    }


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    path, source = c.record_path(args)
    result = c.load(path, err, source=source)
    if result is None:
        return c.EXIT_FAILURE
    traces = c.Filters.from_args(args).select(c.build_traces(result.spans))
    data = compute(traces)
    if args.json:
        data["corrupt_lines"] = len(result.corrupt)
        c.dump_json(data, out)
        return c.EXIT_OK
    render(data, result, out, c.Style(c.use_color(out, args.color)))
    return c.EXIT_OK


def _ms(v: float | None) -> str:
    return "-" if v is None else c.fmt_duration(int(v * 1e6))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """Plain text table, columns padded; ``right`` says which columns are right-aligned."""
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(x)) for w, x in zip(widths, r, strict=False)]

    def _fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            (x.rjust(w) if ra else x.ljust(w)) for x, w, ra in zip(cells, widths, right, strict=False)
        ).rstrip()

    return [_fmt(headers)] + [_fmt(r) for r in rows]


def render(data: dict[str, Any], result: ReadResult, out: TextIO, style: c.Style) -> None:
    def section(title: str, lines: list[str]) -> None:
        print(style(title, "bold"), file=out)
        if not lines:
            print(style("  (none)", "dim"), file=out)
        for i, line in enumerate(lines):
            print("  " + (style(line, "dim") if i == 0 else line), file=out)
        print(file=out)

    section(
        "Models",
        table(
            ["model", "calls", "errors", "input tok", "output tok", "p50", "p95"],
            [
                [
                    m["model"],
                    str(m["calls"]),
                    str(m["errors"]),
                    c.fmt_int(m["input_tokens"]),
                    c.fmt_int(m["output_tokens"]),
                    _ms(m["p50_ms"]),
                    _ms(m["p95_ms"]),
                ]
                for m in data["models"]
            ],
            [False, True, True, True, True, True, True],
        )
        if data["models"]
        else [],
    )
    section(
        "Tools",
        table(
            ["tool", "calls", "failures", "validation errors", "p50", "p95"],
            [
                [
                    t["tool"],
                    str(t["calls"]),
                    str(t["failures"]),
                    str(t["validation_errors"]),
                    _ms(t["p50_ms"]),
                    _ms(t["p95_ms"]),
                ]
                for t in data["tools"]
            ],
            [False, True, True, True, True, True],
        )
        if data["tools"]
        else [],
    )
    section(
        "Conversations",
        table(
            ["conversation", "turns", "traces", "LLM calls", "input tok", "output tok", "errors"],
            [
                [
                    cv["conversation_id"] or c.NO_CONVERSATION,
                    str(cv["turns"]),
                    str(cv["traces"]),
                    str(cv["llm_calls"]),
                    c.fmt_int(cv["input_tokens"]),
                    c.fmt_int(cv["output_tokens"]),
                    str(cv["errors"]),
                ]
                for cv in data["conversations"]
            ],
            [False, True, True, True, True, True, True],
        )
        if data["conversations"]
        else [],
    )
    section(
        "Interrupted or killed runs",
        table(
            ["trace", "conversation", "root span", "what", "last seen"],
            [
                [
                    c.short_id(p["trace_id"]),
                    p["conversation_id"] or "-",
                    p["root"] or "-",
                    p["what"],
                    _local(p["last_seen_time"]),
                ]
                for p in data["interrupted"]
            ],
            [False, False, False, False, False],
        )
        if data["interrupted"]
        else [],
    )
    tot = data["totals"]
    text = (
        f"{tot['traces']} traces, {tot['spans']} spans, {tot['llm_calls']} LLM calls, "
        f"{tot['tool_calls']} tool calls, tokens {c.fmt_int(tot['input_tokens'])} in / "
        f"{c.fmt_int(tot['output_tokens'])} out, from {len(result.files)} file"
        f"{'s' if len(result.files) != 1 else ''}"
    )
    print(style(text, "dim"), file=out)


def _local(iso: str | None) -> str:
    if not iso:
        return "-"
    import datetime as _dt

    dt = _dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    return dt.strftime("%Y-%m-%d %H:%M:%S")
