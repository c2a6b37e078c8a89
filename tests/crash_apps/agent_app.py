"""A small home-grown agent run as a subprocess by the crash-safety tests (never imported by pytest).

Usage: ``python tests/crash_apps/agent_app.py MODE``. Environment:

- ``CRASH_DONE``: how many tool spans complete before the app reports ``ready`` (default 5).
- ``CRASH_HANDLER``: ``before`` / ``after``: install a user SIGTERM handler before / after
  ``agent_otel.instrument()``; it writes ``CRASH_MARKER`` and exits with status 143.
  ``graceful``: install (before ``instrument()``) a handler that writes ``CRASH_MARKER`` and only asks
  the ``wait`` mode to stop; the run then ends its spans normally and exits 0.
- ``CRASH_SPANS``: spans written by the ``spam`` and ``plain`` modes (default 200).
- ``CRASH_NO_INSTRUMENT=1``: do not call ``agent_otel.instrument()`` (``opentelemetry-instrument`` runs).
- ``CRASH_WITH_LIBS=1``: let ``instrument()`` see openai/anthropic/langchain. By default they are made
  unimportable: this app uses the manual API only, and importing them costs seconds per process.

Modes, after ``ready`` is printed (with spans open):

- ``wait``: sleep until the test kills it (SIGKILL, SIGTERM, SIGINT);
- ``kbd``: raise ``KeyboardInterrupt``;  ``exit``: ``os._exit(3)``;
- ``spin``: keep writing spans until killed;
- ``fork``: fork a child that records its own span and exits with ``sys.exit`` inside the parent's
  open spans; the parent then ends its spans normally;
- ``plain``: end everything normally;
- ``slow_exit``: end everything normally, then print ``exiting`` from a slow exit hook (the test sends
  SIGTERM then); ``CRASH_NO_THREADS_AT_EXIT=1`` makes threads unavailable there, as Python >= 3.12 does.
``spam`` writes ``CRASH_SPANS`` spans (no ``ready``) — several of these share one explicit file.

The ``ready`` line is ``ready <json>``: the names and span ids of the spans open at that moment.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
import time
from typing import Any


def _user_handler(signum: int, frame: Any) -> None:
    with open(os.environ["CRASH_MARKER"], "w", encoding="utf-8") as fh:
        fh.write(f"handled {signum}\n")
    sys.exit(143)


_STOP = threading.Event()


def _graceful_handler(signum: int, frame: Any) -> None:
    with open(os.environ["CRASH_MARKER"], "w", encoding="utf-8") as fh:
        fh.write(f"handled {signum}\n")
    _STOP.set()


def _slow_exit_hook() -> None:
    """An exit hook that takes its time (think: flushing to a collector that is down)."""
    if os.environ.get("CRASH_NO_THREADS_AT_EXIT") == "1":
        # What Python >= 3.12 does at interpreter shutdown: no new threads.
        def refuse(self: threading.Thread) -> None:
            raise RuntimeError("can't create new thread at interpreter shutdown")

        threading.Thread.start = refuse  # type: ignore[method-assign]
    print("exiting", flush=True)
    time.sleep(30)


def _span_id(handle: Any) -> str:
    return format(handle.span.get_span_context().span_id, "016x")


def block_agent_libraries() -> None:
    """Make the agent libraries unimportable here (as if not installed): instrument() then skips them."""
    for name in ("openai", "anthropic", "langchain", "langchain_core", "langchain_openai", "langgraph"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def main() -> None:
    mode = sys.argv[1]
    if os.environ.get("CRASH_WITH_LIBS") != "1":
        block_agent_libraries()
    handler = os.environ.get("CRASH_HANDLER", "")
    if handler == "before":
        signal.signal(signal.SIGTERM, _user_handler)
    elif handler == "graceful":
        signal.signal(signal.SIGTERM, _graceful_handler)

    import agent_otel
    from agent_otel import spans

    if os.environ.get("CRASH_NO_INSTRUMENT") != "1":
        agent_otel.instrument()
    if handler == "after":
        signal.signal(signal.SIGTERM, _user_handler)

    if mode == "spam":
        count = int(os.environ.get("CRASH_SPANS", "200"))
        tag = os.environ.get("CRASH_TAG", str(os.getpid()))
        with agent_otel.agent(f"spam-{tag}"):
            for i in range(count):
                with agent_otel.tool(f"spam-{tag}-{i}") as t:
                    t.set_attribute("payload", "x" * (i % 300))
        return

    done = int(os.environ.get("CRASH_DONE", "5"))
    with agent_otel.session(conversation_id="conv-crash"):
        with agent_otel.agent("crash-agent") as run:
            for i in range(done):
                with agent_otel.tool(f"done-{i}", call_id=f"c{i}") as t:
                    t.set_attribute("step", i)
            # Opened outside any with-block: only the interruption handling can end this one.
            loose = spans.start_tool("loose", call_id="loose")
            with agent_otel.node("think", step=1) as node:
                with agent_otel.llm("fake-model", provider="fake") as call:
                    call.set_usage(input_tokens=3, output_tokens=5)
                    handles = {
                        "invoke_agent crash-agent": run,
                        "execute_tool loose": loose,
                        "node think": node,
                        "chat fake-model": call,
                    }
                    open_ids = {name: _span_id(h) for name, h in handles.items()}
                    print("ready " + json.dumps(open_ids), flush=True)
                    _act(mode, agent_otel)
            loose.end()


def _act(mode: str, agent_otel: Any) -> None:
    if mode == "wait":
        if _STOP.wait(60):  # a graceful SIGTERM handler asked us to finish the turn
            return
        sys.exit(9)  # never reached in the tests: they stop the process first
    elif mode == "kbd":
        raise KeyboardInterrupt
    elif mode == "exit":
        os._exit(3)
    elif mode == "spin":
        i = 0
        while True:
            with agent_otel.tool(f"spin-{i}") as t:
                t.set_attribute("blob", "y" * (i % 5000))
            i += 1
    elif mode == "fork":
        pid = os.fork()
        if pid == 0:
            with agent_otel.tool("child-tool"):
                pass
            sys.exit(0)  # leaves the parent's with-blocks (in this child) by SystemExit
        _, status = os.waitpid(pid, 0)
        print(f"child {os.waitstatus_to_exitcode(status)}", flush=True)
    elif mode == "slow_exit":
        atexit.register(_slow_exit_hook)  # runs before agent-otel's own exit hook (last in, first out)
    elif mode == "plain":
        for i in range(int(os.environ.get("CRASH_SPANS", "3"))):
            with agent_otel.tool(f"plain-{i}"):
                pass
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
