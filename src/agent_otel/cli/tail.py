"""``agent-otel tail``: follow a record live and print spans as they start and end."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, TextIO

from agent_otel.cli import _common as c
from agent_otel.cli.view import error_text, span_json
from agent_otel.jsonl import reader
from agent_otel.jsonl.reader import CorruptLine, FileCursor, Record, Span

DESCRIPTION = """\
Follow a record file, or every *.jsonl file in a directory (new files included), as agents write it,
and print each span when it starts (▶) and when it ends (✓ ok, ✗ error) with its duration, model,
tokens and error - indented under its parent. The record is polled (--interval); a line still being
written is printed once it is complete. Ctrl-C stops.

Without PATH, the record agent-otel writes is followed: $AGENT_OTEL_JSONL_FILE when set, else
$AGENT_OTEL_JSONL_DIR (default ./agent-otel-traces).

By default only what is written from now on is shown; --from-start first replays what is already
there. --once prints what is there and exits; --timeout stops after that many seconds.
The filters are those of `agent-otel view`, applied to each span: --errors shows only spans that
ended with an error, --conversation matches spans of a trace seen with that conversation id."""

EPILOG = """\
examples:
  agent-otel tail                                    follow $AGENT_OTEL_JSONL_DIR (or _FILE)
  agent-otel tail agent-otel-traces/                 follow every process writing there
  agent-otel tail agent-otel-traces/ --category llm  only LLM calls
  agent-otel tail run.jsonl --from-start --errors    replay, then follow, errors only
  agent-otel tail traces/ --once --json              print what is there as JSON lines, exit

exit status: 0 on Ctrl-C, --once or --timeout; 1 when PATH does not exist."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "tail",
        help="follow a record live, printing spans as they start and end",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_path_argument(p)
    c.add_filter_arguments(p)
    f = p.add_argument_group("following")
    f.add_argument("--from-start", action="store_true", help="first show what the files already hold")
    f.add_argument("--once", action="store_true", help="show what the files hold now and exit")
    f.add_argument("--timeout", type=float, metavar="SECONDS", help="stop following after SECONDS")
    f.add_argument(
        "--interval", type=float, default=0.25, metavar="SECONDS", help="poll interval (default 0.25)"
    )
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="one JSON object per line: {event, span fields}")
    out.add_argument(
        "--color", choices=("auto", "always", "never"), default="auto", help="colour (default: auto)"
    )
    p.set_defaults(func=run)
    return p


class Follower:
    """Polls a file or a directory; files appearing in a directory later are read from their start."""

    def __init__(self, path: str | Path, *, from_start: bool) -> None:
        self.path = Path(path)
        self.cursors: dict[Path, FileCursor] = {}
        for f in self._files():
            self.cursors[f] = FileCursor(f, at_end=not from_start)

    def _files(self) -> list[Path]:
        try:
            return reader.find_files(self.path)
        except FileNotFoundError:
            return []

    def poll(self, *, final: bool = False) -> tuple[list[Record], list[CorruptLine]]:
        records: list[Record] = []
        corrupt: list[CorruptLine] = []
        files = self._files()
        for f in files:
            cur = self.cursors.get(f)
            if cur is None:
                cur = self.cursors[f] = FileCursor(f)
            r, bad = cur.poll(final=final)
            records.extend(r)
            corrupt.extend(bad)
        if len(self.cursors) > len(files):  # files deleted (or rotated away and removed): forget them
            present = set(files)
            self.cursors = {f: cur for f, cur in self.cursors.items() if f in present}
        return records, corrupt


_MISSING = object()


class Recent:
    """A dict that keeps only its ``limit`` most recently used entries (set or read)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._data: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any, default: Any = None) -> Any:
        value = self._data.get(key, _MISSING)
        if value is _MISSING:
            return default
        self._data.move_to_end(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self.limit:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class Printer:
    """Turns records into output lines, applying the filters; remembers parents and conversations.

    What it remembers - each span's depth, each trace's conversation, which spans started and ended
    (to drop duplicate records) - is kept for the ``remember`` most recently seen spans and traces only,
    so a tail running for days does not grow. A span forgotten that way (more than ``remember`` other
    spans went by since it was last seen) has its children printed unindented, and a duplicate of its
    records printed again.
    """

    REMEMBER = 10_000

    def __init__(
        self,
        out: TextIO,
        err: TextIO,
        filters: c.Filters,
        *,
        as_json: bool,
        style: c.Style,
        remember: int = REMEMBER,
    ) -> None:
        self.out, self.err, self.filters = out, err, filters
        self.as_json = as_json
        self.style = style
        self.sym = c.Symbols.for_stream(out)
        self.depth = Recent(remember)  # span id -> depth
        self.trace_conv = Recent(remember)  # trace id -> conversation id
        self.ended = Recent(remember)  # (trace id, span id) -> True once its end was handled, else False
        self.printed = 0

    def _conv(self, span: Span) -> str | None:
        conv = c.conversation(span)
        if conv:
            if self.trace_conv.get(span.trace_id) is None:
                self.trace_conv[span.trace_id] = conv
            return conv
        return self.trace_conv.get(span.trace_id)

    def _passes(self, span: Span, is_end: bool) -> bool:
        f = self.filters
        if not f.trace_id_ok(span.trace_id) or not f.span_ok(span):
            return False
        if f.conversations and not f.conversation_ok(self._conv(span)):
            return False
        if not f.time_ok(span.start_time_unix_nano):
            return False
        return not (f.errors and not (is_end and span.is_error))

    def handle(self, records: list[Record]) -> None:
        for rec in records:
            span = reader.merge_records([rec])[0]
            self._conv(span)
            key = span.key
            depth = self.depth.get(span.span_id)
            if depth is None:
                parent = self.depth.get(span.parent_span_id) if span.parent_span_id else None
                depth = 0 if parent is None else parent + 1
                self.depth[span.span_id] = depth
            ended = self.ended.get(key)
            if rec.is_start:
                if ended is not None:  # started (or even ended) before
                    continue
                self.ended[key] = False
            else:
                if ended:
                    continue
                self.ended[key] = True
            if not self._passes(span, not rec.is_start):
                continue
            self._print(span, "start" if rec.is_start else "end", depth)
        self.out.flush()

    def _print(self, span: Span, event: str, depth: int) -> None:
        self.printed += 1
        if self.as_json:
            d = {"event": event, **span_json(span)}
            d.pop("children", None)
            self.out.write(json.dumps(d, ensure_ascii=False) + "\n")
            return
        st, sym = self.style, self.sym
        ts = span.start_time_unix_nano if event == "start" else (span.end_time_unix_nano or 0)
        indent = "  " * min(depth, 12)
        parts = [st(c.fmt_time(ts, date=False), "dim"), " ", indent]
        if event == "start":
            parts.append(st(sym.start, "blue") + " " + span.name)
            extra = []
            conv = self._conv(span)
            if depth == 0:
                if conv:
                    extra.append(f"conversation {conv}")
                extra.append(f"trace {c.short_id(span.trace_id)}")
            m = c.model(span)
            if m and c.category(span) == "llm" and m not in span.name:
                extra.append(m)
            if extra:
                parts.append("  " + st(" · ".join(extra), "dim"))
        else:
            if span.is_error:
                parts.append(st(sym.error, "red", "bold"))
            else:
                parts.append(st(sym.ok, "green"))
            parts.append(f" {span.name}  {c.fmt_duration(span.duration_ns)}")
            tin, tout = c.tokens(span)
            if tin is not None or tout is not None:
                parts.append("  " + st(f"{c.fmt_int(tin)}{sym.arrow}{c.fmt_int(tout)} tok", "dim"))
            if span.is_error:
                parts.append("  " + st(error_text(span), "red"))
        self.out.write("".join(parts).rstrip() + "\n")

    def warn(self, corrupt: list[CorruptLine]) -> None:
        for x in corrupt:
            print(f"agent-otel: warning: skipped unreadable line {x}", file=self.err)


def run(
    args: argparse.Namespace,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Follow ``args.path`` (default: see :func:`_common.record_path`) until Ctrl-C, ``--once``,
    ``--timeout`` or (for embedding) ``stop`` is set."""
    out = out or sys.stdout
    err = err or sys.stderr
    name, source = c.record_path(args)
    path = Path(name)
    if not path.exists():
        print(f"agent-otel: error: no such file or directory: {path}{c.path_note(source)}", file=err)
        return c.EXIT_FAILURE
    if args.interval <= 0:
        print("agent-otel: error: --interval must be positive", file=err)
        return c.EXIT_USAGE
    follower = Follower(path, from_start=args.from_start or args.once)
    printer = Printer(
        out,
        err,
        c.Filters.from_args(args),
        as_json=args.json,
        style=c.Style(c.use_color(out, args.color)),
    )
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    try:
        while True:
            records, corrupt = follower.poll(final=args.once)
            printer.warn(corrupt)
            printer.handle(records)
            if args.once or (stop is not None and stop.is_set()):
                break
            wait = args.interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wait = min(wait, left)
            if stop is not None:
                stop.wait(wait)
            else:
                time.sleep(wait)
    except KeyboardInterrupt:
        try:
            out.flush()
        except (OSError, ValueError):
            pass
    return c.EXIT_OK
