"""agent_otel.session: conversation/user ids on every span, nesting, threads, tasks, notebook re-runs."""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import agent_otel
from agent_otel import attributes as attrs
from agent_otel import spans
from agent_otel.context import current_session

CONV = attrs.GEN_AI_CONVERSATION_ID


def test_every_span_in_a_session_carries_the_ids(span_exporter: InMemorySpanExporter) -> None:
    with agent_otel.session(conversation_id="conv-1", user_id="alice") as s:
        assert s.conversation_id == "conv-1" and s.user_id == "alice"
        assert current_session() is s
        with agent_otel.agent("bot"), agent_otel.workflow("w"), agent_otel.node("n"):
            with agent_otel.llm("m", provider="p"):
                pass
            with agent_otel.tool("t"):
                pass
    assert current_session() is None
    got = span_exporter.get_finished_spans()
    assert len(got) == 5
    for span in got:
        assert span.attributes[CONV] == "conv-1", span.name
        assert span.attributes[attrs.USER_ID] == "alice", span.name


def test_no_session_no_ids(span_exporter: InMemorySpanExporter) -> None:
    spans.start_agent("bot").end()
    (s,) = span_exporter.get_finished_spans()
    assert CONV not in s.attributes and attrs.USER_ID not in s.attributes


def test_session_without_id_makes_a_fresh_one(span_exporter: InMemorySpanExporter) -> None:
    with agent_otel.session() as a:
        spans.start_agent("a").end()
    with agent_otel.session() as b:
        spans.start_agent("b").end()
    assert a.conversation_id != b.conversation_id
    assert len(a.conversation_id) == 32
    assert a.user_id is None
    first, second = span_exporter.get_finished_spans()
    assert first.attributes[CONV] == a.conversation_id
    assert second.attributes[CONV] == b.conversation_id
    assert attrs.USER_ID not in first.attributes


def test_explicit_conversation_id_wins_and_user_id_stays(span_exporter: InMemorySpanExporter) -> None:
    with agent_otel.session(conversation_id="outer", user_id="bob"):
        spans.start_agent("bot", conversation_id="explicit").end()
        spans.start_tool("t", attributes={CONV: "from-attrs"}).end()
    agent, tool = span_exporter.get_finished_spans()
    assert agent.attributes[CONV] == "explicit"
    assert tool.attributes[CONV] == "from-attrs"
    assert agent.attributes[attrs.USER_ID] == "bob"
    assert tool.attributes[attrs.USER_ID] == "bob"


def test_nested_sessions(span_exporter: InMemorySpanExporter) -> None:
    with agent_otel.session("outer", user_id="u1"):
        spans.start_agent("a1").end()
        with agent_otel.session("inner"):
            spans.start_agent("a2").end()
            with agent_otel.session("innermost", user_id="u2"):
                spans.start_agent("a3").end()
            spans.start_agent("a4").end()
        spans.start_agent("a5").end()
    ids = {
        s.name: (s.attributes[CONV], s.attributes.get(attrs.USER_ID))
        for s in span_exporter.get_finished_spans()
    }
    assert ids == {
        "invoke_agent a1": ("outer", "u1"),
        "invoke_agent a2": ("inner", "u1"),  # an inner session keeps the outer user
        "invoke_agent a3": ("innermost", "u2"),
        "invoke_agent a4": ("inner", "u1"),
        "invoke_agent a5": ("outer", "u1"),
    }


def test_session_restored_after_an_exception(span_exporter: InMemorySpanExporter) -> None:
    with pytest.raises(RuntimeError), agent_otel.session("s1"):
        raise RuntimeError
    assert current_session() is None


def test_session_as_a_sync_decorator(span_exporter: InMemorySpanExporter) -> None:
    @agent_otel.session(conversation_id="decorated")
    def turn() -> str:
        spans.start_agent("bot").end()
        session = current_session()
        assert session is not None
        return session.conversation_id

    assert turn() == "decorated"
    assert turn() == "decorated"
    assert current_session() is None
    assert [s.attributes[CONV] for s in span_exporter.get_finished_spans()] == ["decorated"] * 2


def test_session_left_open_in_a_generator_closed_elsewhere(span_exporter: InMemorySpanExporter) -> None:
    def body() -> None:
        def gen():  # type: ignore[no-untyped-def]
            with agent_otel.session("in-gen"):
                yield 1
                yield 2

        g = gen()
        next(g)
        # Closed from a different context (e.g. GC in another thread): must not raise.
        errors: list[BaseException] = []

        def close() -> None:
            try:
                g.close()
            except BaseException as exc:  # pragma: no cover - the failure we guard against
                errors.append(exc)

        t = threading.Thread(target=close)
        t.start()
        t.join()
        assert errors == []

    # A suspended generator's session stays set in its caller's context (contextvars have no
    # generator scoping), so run it in a throwaway context to keep this test's context clean.
    contextvars.copy_context().run(body)
    assert current_session() is None


def test_many_concurrent_sessions_in_threads(span_exporter: InMemorySpanExporter) -> None:
    barrier = threading.Barrier(8)

    def run(i: int) -> None:
        with agent_otel.session(conversation_id=f"conv-{i}", user_id=f"user-{i}"):
            barrier.wait(timeout=10)  # all eight sessions are open at the same time
            for turn in range(5):
                with agent_otel.agent(f"bot-{i}"), agent_otel.node(f"step-{turn}"):
                    with agent_otel.llm("m", provider="p"):
                        pass
                    with agent_otel.tool("t"):
                        pass

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, range(8)))

    got = span_exporter.get_finished_spans()
    assert len(got) == 8 * 5 * 4
    by_trace: dict[int, set[tuple[str, str]]] = defaultdict(set)
    for s in got:
        by_trace[s.context.trace_id].add((s.attributes[CONV], s.attributes[attrs.USER_ID]))
    assert len(by_trace) == 40  # one trace per turn
    for pairs in by_trace.values():
        assert len(pairs) == 1  # no trace mixes ids
        ((conv, user),) = pairs
        assert conv.split("-")[1] == user.split("-")[1]
    for s in got:
        if s.name.startswith("invoke_agent"):
            assert s.name == f"invoke_agent bot-{s.attributes[CONV].split('-')[1]}"


async def test_many_concurrent_sessions_in_tasks(span_exporter: InMemorySpanExporter) -> None:
    @agent_otel.agent("bot")
    async def turn(i: int) -> str:
        await asyncio.sleep(0.001 * (i % 3))
        with agent_otel.tool(f"tool-{i}"):
            await asyncio.sleep(0)
        session = current_session()
        assert session is not None
        return session.conversation_id

    async def conversation(i: int) -> list[str]:
        with agent_otel.session(conversation_id=f"conv-{i}"):
            return [await turn(i), await turn(i)]

    results = await asyncio.gather(*(conversation(i) for i in range(20)))
    assert results == [[f"conv-{i}"] * 2 for i in range(20)]
    assert current_session() is None
    for s in span_exporter.get_finished_spans():
        if s.name.startswith("execute_tool"):
            assert s.attributes[CONV] == f"conv-{s.name.split('-')[1]}"
    trace_convs: dict[int, set[str]] = defaultdict(set)
    for s in span_exporter.get_finished_spans():
        trace_convs[s.context.trace_id].add(s.attributes[CONV])
    assert len(trace_convs) == 40
    assert all(len(v) == 1 for v in trace_convs.values())


async def test_task_started_inside_a_session_inherits_it(span_exporter: InMemorySpanExporter) -> None:
    async def background() -> None:
        await asyncio.sleep(0)
        spans.start_tool("bg").end()

    with agent_otel.session("parent-conv"):
        task = asyncio.create_task(background())
    spans.start_tool("outside").end()
    await task
    got = {s.name: s for s in span_exporter.get_finished_spans()}
    assert got["execute_tool bg"].attributes[CONV] == "parent-conv"
    assert CONV not in got["execute_tool outside"].attributes


_NOTEBOOK_CELL = """
import logging, warnings
logging.basicConfig(level=logging.WARNING)
warnings.simplefilter("error")
import agent_otel

def cell():
    provider = agent_otel.instrument()
    with agent_otel.session(conversation_id="nb-conv", user_id="nb-user"):
        with agent_otel.agent("nb-bot"):
            with agent_otel.tool("calc"):
                pass
    return provider

p1 = cell()
p2 = cell()   # the user re-runs the cell
assert p1 is p2, "a second instrument() made a new provider"
from agent_otel.setup import jsonl_processor_of
procs = [p for p in p1._active_span_processor._span_processors if p is jsonl_processor_of(p1)]
assert len(procs) == 1, p1._active_span_processor._span_processors
p1.force_flush()
print("OK")
"""


def test_rerunning_a_notebook_cell(tmp_path: Path) -> None:
    """Calling instrument() and a session again (a re-run cell) works and adds nothing twice."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENT_OTEL_"))}
    env.update({"AGENT_OTEL_JSONL_DIR": str(tmp_path), "OTEL_SERVICE_NAME": "nb"})
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_NOTEBOOK_CELL)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"
    assert "already instrumented" not in proc.stderr
    # The second instrument() does nothing again: any warning line (e.g. a library that could not
    # be instrumented) appears once, never once per call.
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == len(set(warnings)), proc.stderr
    files = list(tmp_path.glob("*.jsonl"))
    assert len(files) == 1
    records = [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]
    spans_ = [r["resourceSpans"][0]["scopeSpans"][0]["spans"][0] for r in records]
    # Two runs x two spans, each with exactly one start and one end record (no second processor).
    assert len(spans_) == 8
    per_span: dict[str, int] = defaultdict(int)
    for sp in spans_:
        per_span[sp["spanId"]] += 1
        values = {a["key"]: a["value"] for a in sp["attributes"]}
        assert values[CONV] == {"stringValue": "nb-conv"}
        assert values[attrs.USER_ID] == {"stringValue": "nb-user"}
    assert sorted(per_span.values()) == [2, 2, 2, 2]
