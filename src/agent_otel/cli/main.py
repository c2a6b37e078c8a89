"""The ``agent-otel`` command: ``main(argv=None) -> int``.

Subcommands: ``view``, ``stats``, ``tail``, ``export`` (this package) and ``demo`` (``cli/demo.py``,
which exposes ``add_parser(subparsers)`` setting ``func``). Each subcommand's ``func(args) -> int``
returns the exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from agent_otel.cli._common import EXIT_USAGE

DESCRIPTION = """\
agent-otel: OpenTelemetry for AI agents. Read, summarise, follow and replay the crash-safe JSONL
record that agent-otel writes next to its OTLP export (one OTLP/JSON span per line, written when a
span starts and again when it ends, so a killed run still leaves its open spans behind)."""

EPILOG = """\
commands in short:
  agent-otel demo                             run an offline demo agent and show its record
  agent-otel view [PATH]                      conversations > turns > span trees
  agent-otel stats [PATH]                     tokens, latency, errors per model / tool / conversation
  agent-otel tail [PATH]                      follow live runs
  agent-otel export [PATH] --endpoint http://localhost:4317
                                              replay to Jaeger/Tempo/a Collector (OTLP gRPC or HTTP)

PATH is a record file or a directory of *.jsonl files. Without it, the commands read the record
agent-otel writes: $AGENT_OTEL_JSONL_FILE when set, else $AGENT_OTEL_JSONL_DIR (default
./agent-otel-traces). Run `agent-otel COMMAND --help` for each command's manual."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    from agent_otel.cli import demo, export, stats, tail, view

    parser = argparse.ArgumentParser(
        prog="agent-otel",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    try:
        from importlib.metadata import version

        ver = version("agent-otel")
    except Exception:  # pragma: no cover - not installed as a distribution
        ver = "unknown"
    parser.add_argument("--version", action="version", version=f"agent-otel {ver}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.add_parser(sub)
    view.add_parser(sub)
    stats.add_parser(sub)
    tail.add_parser(sub)
    export.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its exit status."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("agent-otel: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error. Point stdout at devnull so the
        # interpreter's final flush does not complain again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
