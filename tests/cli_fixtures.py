"""Records made by real instrumented runs, for the reader/CLI/export tests.

* :func:`write_real_run` runs a home-grown agent through ``agent_otel.spans`` with a real
  ``TracerProvider`` and the crash-safe ``JsonlSpanProcessor``: one conversation with three turns
  (LLM calls with tokens, tools that succeed, a tool validation error, a failing tool, a turn
  interrupted by KeyboardInterrupt) and one workflow trace outside any conversation.
* :func:`killed_run` runs an agent in a subprocess and SIGKILLs it while its agent and tool spans
  are open.
* :func:`with_corrupt_lines` copies a record with a garbage line in the middle and a torn last line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from agent_otel import spans
from agent_otel.context import session
from agent_otel.jsonl.processor import JsonlSpanProcessor
from agent_otel.jsonl.writer import RecordWriter

CONVERSATION = "conv-weather"
KILLED_CONVERSATION = "conv-killed"
MODEL = "gpt-4o-mini"
RESPONSE_MODEL = "gpt-4o-mini-2024-07-18"


def write_real_run(directory: Path, service: str = "fixture-agent") -> Path:
    """Record a small agent run into ``directory``; returns the record file.

    Spans: 3 ``invoke_agent weather-bot`` turns in conversation ``conv-weather``:
      turn 1: chat (100->20 tok), execute_tool get_weather, chat (130->25 tok)
      turn 2: chat (101->20 tok), execute_tool book_flight (validation error),
              execute_tool get_stock_price (ConnectionError), chat (131->25 tok)
      turn 3: chat (102->20 tok), then the agent is interrupted (KeyboardInterrupt)
    and one ``invoke_workflow nightly-report`` trace (no conversation) with ``node summarise``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    processor = JsonlSpanProcessor(RecordWriter(directory=directory, service_name=service))
    provider.add_span_processor(processor)
    spans.set_tracer_provider(provider)
    try:
        with session(conversation_id=CONVERSATION):
            for turn in range(3):
                agent = spans.start_agent("weather-bot")
                with agent.activate():
                    _llm(100 + turn, 20)
                    if turn == 0:
                        tool = spans.start_tool("get_weather", call_id="call-1")
                        tool.set_tool_result("sunny")
                        time.sleep(0.002)
                        tool.end()
                    if turn == 1:
                        bad = spans.start_tool("book_flight", call_id="call-2")
                        bad.validation_error("missing required argument 'destination'")
                        bad.end()
                        failing = spans.start_tool("get_stock_price", call_id="call-3")
                        failing.fail(ConnectionError("market data service unreachable"))
                        failing.end()
                    if turn == 2:
                        agent.fail(KeyboardInterrupt())
                    else:
                        _llm(130 + turn, 25)
                agent.end()
        wf = spans.start_workflow("nightly-report")
        with wf.activate():
            node = spans.start_node("summarise", step=1)
            node.end()
        wf.end()
    finally:
        provider.shutdown()
        spans.set_tracer_provider(None)
    assert processor.path is not None
    return Path(processor.path)


def _llm(tokens_in: int, tokens_out: int) -> None:
    llm = spans.start_llm(model=MODEL, provider="openai", server_address="127.0.0.1", server_port=8000)
    time.sleep(0.001)
    llm.set_usage(input_tokens=tokens_in, output_tokens=tokens_out)
    llm.set_response(model=RESPONSE_MODEL, response_id="chatcmpl-1", finish_reasons=["stop"])
    llm.end()


KILLED_SCRIPT = r"""
import sys, time
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from agent_otel import spans
from agent_otel.context import session
from agent_otel.jsonl.processor import JsonlSpanProcessor
from agent_otel.jsonl.writer import RecordWriter

provider = TracerProvider(resource=Resource.create({"service.name": "killed-agent"}))
writer = RecordWriter(directory=sys.argv[1], service_name="killed-agent")
provider.add_span_processor(JsonlSpanProcessor(writer))
spans.set_tracer_provider(provider)
with session(conversation_id="conv-killed"):
    agent = spans.start_agent("researcher")
    with agent.activate():
        llm = spans.start_llm(model="gpt-4o", provider="openai")
        time.sleep(0.01)
        llm.set_usage(input_tokens=50, output_tokens=10)
        llm.end()
        tool = spans.start_tool("slow_search", call_id="call-9")
        time.sleep(0.05)
        print("READY", flush=True)
        time.sleep(60)
"""


def killed_run(directory: Path, timeout: float = 20.0) -> Path:
    """Run :data:`KILLED_SCRIPT` in a subprocess, SIGKILL it with two spans open; returns its file.

    The record holds: ``invoke_agent researcher`` (start only), ``chat gpt-4o`` (start + end,
    50->10 tok), ``execute_tool slow_search`` (start only).
    """
    directory.mkdir(parents=True, exist_ok=True)
    before = set(directory.glob("*.jsonl"))
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SCRIPT, str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "READY" not in line:
            raise AssertionError(f"killed-run script did not start: {line!r} {proc.stderr.read()!r}")
        if time.monotonic() > deadline:
            raise AssertionError("killed-run script too slow")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    new = sorted(set(directory.glob("*.jsonl")) - before)
    assert len(new) == 1, new
    return new[0]


def with_corrupt_lines(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` with a garbage line after line 3 and a torn (unterminated) last line.

    The garbage is line 4 of ``dst``; the torn line is the last one.
    """
    lines = src.read_bytes().splitlines(keepends=True)
    torn = lines[1][: len(lines[1]) // 2]
    out = [*lines[:3], b'{"resourceSpans": [ this is not json\n', *lines[3:], torn.rstrip(b"\n")]
    dst.write_bytes(b"".join(out))
    return dst
