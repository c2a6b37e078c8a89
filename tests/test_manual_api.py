"""The manual API (agent/workflow/node/llm/tool): context managers and decorators of every function shape."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import inspect
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import agent_otel
from agent_otel import attributes as attrs
from agent_otel import spans
from agent_otel.spans import SpanHandle


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    got = exporter.get_finished_spans()
    out = {s.name: s for s in got}
    assert len(out) == len(got), [s.name for s in got]
    return out


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def current_span_id() -> int:
    return trace.get_current_span().get_span_context().span_id


class Boom(Exception):
    pass


# --- context managers --------------------------------------------------------------------------------


def test_context_manager_yields_the_handle_and_makes_it_current(span_exporter: InMemorySpanExporter) -> None:
    with agent_otel.agent("bot", agent_id="a1", conversation_id="c1") as h:
        assert isinstance(h, SpanHandle)
        assert current_span_id() == h.span.get_span_context().span_id
    assert trace.get_current_span() is trace.INVALID_SPAN
    (s,) = span_exporter.get_finished_spans()
    assert s.name == "invoke_agent bot"
    assert s.attributes[attrs.GEN_AI_AGENT_ID] == "a1"
    assert s.attributes[attrs.GEN_AI_CONVERSATION_ID] == "c1"
    assert s.status.status_code is StatusCode.UNSET


def test_context_manager_exception_is_reraised_unchanged(span_exporter: InMemorySpanExporter) -> None:
    err = Boom("bad")
    with pytest.raises(Boom) as info, agent_otel.workflow("w"):
        raise err
    assert info.value is err
    (s,) = span_exporter.get_finished_spans()
    assert s.status.status_code is StatusCode.ERROR
    assert s.attributes[attrs.ERROR_TYPE] == "Boom"
    assert [e.name for e in s.events] == ["exception"]


def test_keyboard_interrupt_marks_interrupted(span_exporter: InMemorySpanExporter) -> None:
    with pytest.raises(KeyboardInterrupt), agent_otel.agent("bot"):
        raise KeyboardInterrupt
    (s,) = span_exporter.get_finished_spans()
    assert s.attributes[attrs.INTERRUPTED] is True
    assert s.attributes[attrs.ERROR_TYPE] == "KeyboardInterrupt"


async def test_async_context_manager(span_exporter: InMemorySpanExporter) -> None:
    async with agent_otel.node("n", step=2) as h:
        await asyncio.sleep(0)
        assert current_span_id() == h.span.get_span_context().span_id
    (s,) = span_exporter.get_finished_spans()
    assert s.name == "node n"
    assert s.attributes[attrs.NODE_STEP] == 2


def test_llm_scope_records_outcome(span_exporter: InMemorySpanExporter) -> None:
    with agent_otel.llm("gpt-4o", provider="openai", server_address="localhost", server_port=8080) as h:
        h.set_usage(input_tokens=3, output_tokens=2)
        h.set_response(model="gpt-4o-mini", finish_reasons=["stop"])
        # A provider wrapper underneath (e.g. the openai instrumentation) merges into this span.
        inner = spans.start_llm(model="gpt-4o", provider="openai", server_port=9999)
        assert not inner.owned
        inner.set_response(response_id="r-1")
        inner.end()
    (s,) = span_exporter.get_finished_spans()
    assert s.name == "chat gpt-4o"
    assert s.kind is SpanKind.CLIENT
    assert s.attributes[attrs.GEN_AI_USAGE_INPUT_TOKENS] == 3
    assert s.attributes[attrs.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini"
    assert s.attributes[attrs.GEN_AI_RESPONSE_ID] == "r-1"
    assert s.attributes[attrs.SERVER_PORT] == 8080


def test_llm_requires_a_provider() -> None:
    """gen_ai.provider.name is required by the conventions: no made-up default."""
    with pytest.raises(TypeError):
        agent_otel.llm("m")  # type: ignore[call-arg]
    with pytest.raises(TypeError):

        @agent_otel.llm  # type: ignore[call-arg]
        def call() -> None:
            pass


def test_llm_decorator_with_a_provider(span_exporter: InMemorySpanExporter) -> None:
    @agent_otel.llm("m", provider="local")
    def call() -> int:
        return 1

    assert call() == 1
    (s,) = span_exporter.get_finished_spans()
    assert s.name == "chat m"
    assert s.attributes[attrs.GEN_AI_PROVIDER_NAME] == "local"


def test_tool_context_manager_validation_error(span_exporter: InMemorySpanExporter) -> None:
    with agent_otel.tool("search", call_id="c1") as t:
        t.validation_error("query must not be empty")
    (s,) = span_exporter.get_finished_spans()
    assert s.attributes[attrs.TOOL_OUTCOME] == "validation_error"
    assert s.attributes[attrs.GEN_AI_TOOL_CALL_ID] == "c1"
    assert s.status.status_code is StatusCode.ERROR


def test_tool_validation_error_then_raise_keeps_the_outcome(span_exporter: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError), agent_otel.tool("search") as t:
        t.validation_error("bad args")
        raise ValueError("bad args")
    (s,) = span_exporter.get_finished_spans()
    assert s.attributes[attrs.TOOL_OUTCOME] == "validation_error"
    assert s.attributes[attrs.ERROR_TYPE] == "ToolValidationError"
    assert [e.name for e in s.events] == ["exception"]


def test_one_scope_object_reused_concurrently_in_threads(span_exporter: InMemorySpanExporter) -> None:
    scope = agent_otel.tool("shared")
    barrier = threading.Barrier(4)

    def work(i: int) -> int:
        with scope as h:
            barrier.wait(timeout=5)  # all four are inside the same scope object at once
            h.set_attribute("worker", i)
            if i % 2:
                raise Boom(str(i))
            return h.span.get_span_context().span_id

    results: list[Any] = []
    with ThreadPoolExecutor(4) as pool:
        for fut in [pool.submit(work, i) for i in range(4)]:
            try:
                results.append(fut.result())
            except Boom:
                results.append("boom")
    got = span_exporter.get_finished_spans()
    assert len(got) == 4
    for s in got:
        failed = s.attributes["worker"] % 2 == 1
        assert (s.status.status_code is StatusCode.ERROR) == failed
        assert s.attributes[attrs.TOOL_OUTCOME] == ("error" if failed else "success")


async def test_one_scope_object_reused_concurrently_in_tasks(span_exporter: InMemorySpanExporter) -> None:
    scope = agent_otel.node("shared")

    async def work(i: int) -> None:
        async with scope as h:
            await asyncio.sleep(0.001 * (5 - i))
            h.set_attribute("worker", i)
            assert current_span_id() == h.span.get_span_context().span_id

    await asyncio.gather(*(work(i) for i in range(5)))
    got = span_exporter.get_finished_spans()
    assert sorted(s.attributes["worker"] for s in got) == [0, 1, 2, 3, 4]


def test_same_scope_nested_in_itself(span_exporter: InMemorySpanExporter) -> None:
    scope = agent_otel.node("rec")
    with scope as outer, scope as inner:
        assert inner.span is not outer.span
    a, b = span_exporter.get_finished_spans()  # inner ends first
    assert parent_of(a) == b.context.span_id


# --- a ``with`` block exited in another context (generators resumed elsewhere) -------------------------


def test_with_in_a_generator_closed_in_another_context_ends_its_span(
    span_exporter: InMemorySpanExporter,
) -> None:
    """The repro: Starlette's iterate_in_threadpool runs each next() in a fresh context copy."""

    def gen() -> Iterator[int]:
        with agent_otel.agent("a"):
            yield 1
            yield 2

    g = gen()
    assert contextvars.copy_context().run(next, g) == 1
    g.close()
    (s,) = span_exporter.get_finished_spans()
    assert s.name == "invoke_agent a"
    assert s.status.status_code is StatusCode.UNSET
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing leaked into this context


def test_with_in_a_generator_stepped_in_fresh_copies_ends_once(
    span_exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    def gen() -> Iterator[int]:
        with agent_otel.tool("t") as h:
            h.set_attribute("entered", True)
            yield 1
            yield 2

    g = gen()
    with caplog.at_level(logging.ERROR):
        assert list(iter(lambda: contextvars.copy_context().run(next, g, None), None)) == [1, 2]
    (s,) = span_exporter.get_finished_spans()
    assert s.attributes[attrs.TOOL_OUTCOME] == "success"
    assert not caplog.records, caplog.text  # no "Failed to detach context"


def test_with_in_a_generator_failing_in_another_context_records_the_error(
    span_exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    def gen() -> Iterator[int]:
        with agent_otel.tool("t"):
            yield 1

    g = gen()
    entered = contextvars.copy_context()
    entered.run(next, g)
    later = entered.run(contextvars.copy_context)  # a copy taken while the block is open: sees the entry
    with pytest.raises(Boom), caplog.at_level(logging.ERROR):
        later.run(g.throw, Boom("late"))
    assert not caplog.records, caplog.text  # no "Failed to detach context" from the OTel API
    (s,) = span_exporter.get_finished_spans()
    assert s.status.status_code is StatusCode.ERROR
    assert s.attributes[attrs.ERROR_TYPE] == "Boom"
    assert s.attributes[attrs.TOOL_OUTCOME] == "error"


def test_with_in_a_generator_collected_in_another_context_ends_its_span(
    span_exporter: InMemorySpanExporter,
) -> None:
    def gen() -> Iterator[int]:
        with agent_otel.node("n"):
            yield 1

    g = gen()
    contextvars.copy_context().run(next, g)
    del g
    gc.collect()
    assert [s.name for s in span_exporter.get_finished_spans()] == ["node n"]


async def test_async_with_in_an_async_generator_closed_in_another_task_ends_its_span(
    span_exporter: InMemorySpanExporter,
) -> None:
    async def agen() -> AsyncIterator[int]:
        async with agent_otel.agent("a"):
            yield 1
            yield 2

    ag = agen()
    assert await asyncio.create_task(ag.__anext__()) == 1  # entered in the task's context copy
    await ag.aclose()
    (s,) = span_exporter.get_finished_spans()
    assert s.name == "invoke_agent a"


def test_shared_scope_exits_close_their_own_entries(span_exporter: InMemorySpanExporter) -> None:
    scope = agent_otel.tool("shared")

    def gen() -> Iterator[int]:
        with scope as h:
            h.set_attribute("who", "generator")
            yield 1

    def scenario() -> None:
        foreign = gen()
        contextvars.copy_context().run(next, foreign)  # its entry is invisible from here on
        local = gen()
        next(local)  # entered in this very context
        with scope as mine:
            mine.set_attribute("who", "block")
            foreign.close()
            local.close()
            assert mine.recording and not mine.ended  # neither close took this block's entry
            assert current_span_id() == mine.span.get_span_context().span_id
        assert [s.attributes["who"] for s in span_exporter.get_finished_spans()] == [
            "generator",
            "generator",
            "block",
        ]
        assert scope._entries == []

    contextvars.copy_context().run(scenario)  # the local generator's attachment stays in there


def test_shared_scope_through_exit_stacks_in_threads(span_exporter: InMemorySpanExporter) -> None:
    """``ExitStack`` enters and exits from different frames: the context tells the entries apart."""
    scope = agent_otel.node("shared")
    barrier = threading.Barrier(2)

    def work(i: int) -> int:
        with contextlib.ExitStack() as stack:
            h = stack.enter_context(scope)
            h.set_attribute("worker", i)
            barrier.wait(timeout=5)
            if i == 0:
                stack.close()  # worker 0 exits first, while worker 1 is still inside
                barrier.wait(timeout=5)
                return h.span.get_span_context().span_id
            barrier.wait(timeout=5)
            assert h.recording, "worker 0's exit must not close worker 1's span"
            return h.span.get_span_context().span_id

    with ThreadPoolExecutor(2) as pool:
        ids = list(pool.map(work, range(2)))
    got = {s.attributes["worker"]: s.context.span_id for s in span_exporter.get_finished_spans()}
    assert got == {0: ids[0], 1: ids[1]}


def test_exit_without_enter_does_nothing(span_exporter: InMemorySpanExporter) -> None:
    scope = agent_otel.node("n")
    scope.__exit__(None, None, None)
    assert span_exporter.get_finished_spans() == ()


# --- sync decorators ---------------------------------------------------------------------------------


def test_sync_decorator_returns_value_and_keeps_metadata(span_exporter: InMemorySpanExporter) -> None:
    @agent_otel.agent("bot")
    def run(x: int, *, y: int = 1) -> dict[str, int]:
        """Run it."""
        return {"sum": x + y}

    result = run(2, y=3)
    assert result == {"sum": 5}
    assert run.__name__ == "run" and run.__doc__ == "Run it."
    (s,) = span_exporter.get_finished_spans()
    assert s.name == "invoke_agent bot"


def test_sync_decorator_reraises_the_same_exception(span_exporter: InMemorySpanExporter) -> None:
    err = Boom("x")

    @agent_otel.node("n")
    def step() -> None:
        raise err

    with pytest.raises(Boom) as info:
        step()
    assert info.value is err
    assert info.value.__traceback__ is not None
    (s,) = span_exporter.get_finished_spans()
    assert s.status.status_code is StatusCode.ERROR


def test_each_call_is_its_own_span(span_exporter: InMemorySpanExporter) -> None:
    @agent_otel.tool
    def lookup(key: str) -> str:
        return key.upper()

    assert [lookup("a"), lookup("b")] == ["A", "B"]
    got = span_exporter.get_finished_spans()
    assert [s.name for s in got] == ["execute_tool lookup", "execute_tool lookup"]
    assert got[0].context.trace_id != got[1].context.trace_id  # two roots, two traces


@pytest.mark.parametrize(
    ("decorate", "expected"),
    [
        (agent_otel.agent, "invoke_agent my_func"),
        (agent_otel.workflow, "invoke_workflow my_func"),
        (agent_otel.node, "node my_func"),
        (agent_otel.tool, "execute_tool my_func"),
        (lambda f: agent_otel.agent()(f), "invoke_agent my_func"),
        (lambda f: agent_otel.workflow()(f), "invoke_workflow my_func"),
        (lambda f: agent_otel.node(step=1)(f), "node my_func"),
        (lambda f: agent_otel.tool(call_id="c")(f), "execute_tool my_func"),
        (lambda f: agent_otel.llm(provider="openai")(f), "chat"),
    ],
)
def test_bare_and_unnamed_decorators_use_the_function_name(
    span_exporter: InMemorySpanExporter, decorate: Any, expected: str
) -> None:
    def my_func() -> int:
        return 7

    assert decorate(my_func)() == 7
    (s,) = span_exporter.get_finished_spans()
    assert s.name == expected


def test_decorated_method(span_exporter: InMemorySpanExporter, capture_content: None) -> None:
    class Agent:
        @agent_otel.tool
        def search(self, query: str) -> list[str]:
            return [query]

    assert Agent().search("q") == ["q"]
    (s,) = span_exporter.get_finished_spans()
    assert s.name == "execute_tool search"
    assert json.loads(s.attributes[attrs.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"query": "q"}


# --- tool arguments / results --------------------------------------------------------------------------


def test_tool_decorator_records_io_only_with_content_capture(span_exporter: InMemorySpanExporter) -> None:
    @agent_otel.tool
    def add(a: int, b: int) -> int:
        return a + b

    assert add(1, b=2) == 3
    (s,) = span_exporter.get_finished_spans()
    assert attrs.GEN_AI_TOOL_CALL_ARGUMENTS not in s.attributes
    assert attrs.GEN_AI_TOOL_CALL_RESULT not in s.attributes
    assert s.attributes[attrs.TOOL_OUTCOME] == "success"


def test_tool_decorator_records_io_with_content_capture(
    span_exporter: InMemorySpanExporter, capture_content: None
) -> None:
    @agent_otel.tool("adder", description="adds")
    def add(a: int, b: int = 10, *rest: int, **extra: Any) -> dict[str, int]:
        return {"total": a + b + sum(rest)}

    assert add(1, 2, 3, flag=True) == {"total": 6}
    (s,) = span_exporter.get_finished_spans()
    assert s.name == "execute_tool adder"
    assert s.attributes[attrs.GEN_AI_TOOL_DESCRIPTION] == "adds"
    assert json.loads(s.attributes[attrs.GEN_AI_TOOL_CALL_ARGUMENTS]) == {
        "a": 1,
        "b": 2,
        "rest": [3],
        "extra": {"flag": True},
    }
    assert json.loads(s.attributes[attrs.GEN_AI_TOOL_CALL_RESULT]) == {"total": 6}


def test_tool_decorator_failure_records_arguments_not_result(
    span_exporter: InMemorySpanExporter, capture_content: None
) -> None:
    @agent_otel.tool
    def broken(x: int) -> int:
        raise ZeroDivisionError("nope")

    with pytest.raises(ZeroDivisionError):
        broken(1)
    (s,) = span_exporter.get_finished_spans()
    assert json.loads(s.attributes[attrs.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"x": 1}
    assert attrs.GEN_AI_TOOL_CALL_RESULT not in s.attributes
    assert s.attributes[attrs.TOOL_OUTCOME] == "error"
    assert s.attributes[attrs.ERROR_TYPE] == "ZeroDivisionError"


def test_other_decorators_never_record_io(span_exporter: InMemorySpanExporter, capture_content: None) -> None:
    @agent_otel.agent
    def bot(secret: str) -> str:
        return secret

    bot("s3cret")
    (s,) = span_exporter.get_finished_spans()
    assert "s3cret" not in json.dumps(dict(s.attributes))


def test_tool_raising_inside_agent_fails_both(span_exporter: InMemorySpanExporter) -> None:
    @agent_otel.tool
    def fetch(url: str) -> str:
        raise ConnectionError(url)

    @agent_otel.agent("bot")
    def turn() -> str:
        return fetch("http://x")

    with pytest.raises(ConnectionError):
        turn()
    got = by_name(span_exporter)
    tool, agent = got["execute_tool fetch"], got["invoke_agent bot"]
    assert parent_of(tool) == agent.context.span_id
    for s in (tool, agent):
        assert s.status.status_code is StatusCode.ERROR
        assert s.attributes[attrs.ERROR_TYPE] == "ConnectionError"
    assert tool.attributes[attrs.TOOL_OUTCOME] == "error"


def test_tool_failure_handled_by_agent(span_exporter: InMemorySpanExporter) -> None:
    @agent_otel.tool
    def flaky() -> None:
        raise TimeoutError

    with agent_otel.agent("bot"):
        try:
            flaky()
        except TimeoutError:
            pass
    got = by_name(span_exporter)
    assert got["execute_tool flaky"].status.status_code is StatusCode.ERROR
    assert got["invoke_agent bot"].status.status_code is StatusCode.UNSET


# --- nesting ----------------------------------------------------------------------------------------


def test_nesting_builds_the_tree(span_exporter: InMemorySpanExporter) -> None:
    @agent_otel.tool
    def search(q: str) -> str:
        return q

    @agent_otel.node("think")
    def think() -> None:
        with agent_otel.llm("m", provider="p") as h:
            h.set_usage(input_tokens=1, output_tokens=1)
        search("x")

    with agent_otel.agent("bot"), agent_otel.workflow("graph"):
        think()
        with agent_otel.node("act"):
            search("y")  # second call: same name, so tell the two apart by parent

    got = span_exporter.get_finished_spans()
    names = {s.context.span_id: s.name for s in got}
    edges = sorted((s.name, names.get(parent_of(s))) for s in got)  # type: ignore[arg-type]
    assert edges == [
        ("chat m", "node think"),
        ("execute_tool search", "node act"),
        ("execute_tool search", "node think"),
        ("invoke_agent bot", None),
        ("invoke_workflow graph", "invoke_agent bot"),
        ("node act", "invoke_workflow graph"),
        ("node think", "invoke_workflow graph"),
    ]
    assert len({s.context.trace_id for s in got}) == 1


# --- async functions ------------------------------------------------------------------------------


async def test_async_decorator(span_exporter: InMemorySpanExporter) -> None:
    @agent_otel.tool
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        with agent_otel.node("inner"):
            pass
        return x * 2

    assert inspect.iscoroutinefunction(fetch)
    assert await fetch(21) == 42
    got = by_name(span_exporter)
    assert parent_of(got["node inner"]) == got["execute_tool fetch"].context.span_id


async def test_async_decorator_reraises_same_exception(span_exporter: InMemorySpanExporter) -> None:
    err = Boom("async")

    @agent_otel.agent("bot")
    async def run() -> None:
        await asyncio.sleep(0)
        raise err

    with pytest.raises(Boom) as info:
        await run()
    assert info.value is err
    (s,) = span_exporter.get_finished_spans()
    assert s.status.status_code is StatusCode.ERROR


async def test_cancelled_task_is_marked_interrupted(span_exporter: InMemorySpanExporter) -> None:
    started = asyncio.Event()

    @agent_otel.agent("bot")
    async def run() -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(run())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (s,) = span_exporter.get_finished_spans()
    assert s.attributes[attrs.INTERRUPTED] is True
    assert s.attributes[attrs.ERROR_TYPE] == "CancelledError"


async def test_async_tool_records_io(span_exporter: InMemorySpanExporter, capture_content: None) -> None:
    @agent_otel.tool
    async def fetch(url: str) -> dict[str, str]:
        return {"body": "ok"}

    await fetch("http://a")
    (s,) = span_exporter.get_finished_spans()
    assert json.loads(s.attributes[attrs.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"url": "http://a"}
    assert json.loads(s.attributes[attrs.GEN_AI_TOOL_CALL_RESULT]) == {"body": "ok"}


# --- generators ------------------------------------------------------------------------------------


def test_generator_full_read(span_exporter: InMemorySpanExporter) -> None:
    seen_parent: list[int] = []

    @agent_otel.node("stream")
    def numbers(n: int) -> Iterator[int]:
        for i in range(n):
            seen_parent.append(current_span_id())
            yield i

    assert inspect.isgeneratorfunction(numbers)
    gen = numbers(3)
    assert span_exporter.get_finished_spans() == ()
    outside = current_span_id()
    out = []
    for item in gen:
        assert current_span_id() == outside  # the consumer's code is not under the span
        out.append(item)
    assert out == [0, 1, 2]
    (s,) = span_exporter.get_finished_spans()
    assert s.status.status_code is StatusCode.UNSET
    assert set(seen_parent) == {s.context.span_id}


def test_generator_return_value_and_send(span_exporter: InMemorySpanExporter) -> None:
    @agent_otel.workflow("echo")
    def echo() -> Any:
        total = 0
        while True:
            got = yield total
            if got is None:
                return total
            total += got

    def driver() -> Any:
        return (yield from echo())

    d = driver()
    assert next(d) == 0
    assert d.send(2) == 2
    assert d.send(3) == 5
    with pytest.raises(StopIteration) as stop:
        d.send(None)
    assert stop.value.value == 5
    assert len(span_exporter.get_finished_spans()) == 1


def test_generator_early_break_ends_ok(span_exporter: InMemorySpanExporter) -> None:
    cleaned = []

    @agent_otel.node("stream")
    def numbers() -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            cleaned.append(current_span_id())

    for i in numbers():
        if i == 2:
            break
    (s,) = span_exporter.get_finished_spans()
    assert s.status.status_code is StatusCode.UNSET
    assert cleaned == [s.context.span_id]  # the generator's cleanup ran with its span current


def test_generator_explicit_close(span_exporter: InMemorySpanExporter) -> None:
    @agent_otel.tool
    def items() -> Iterator[str]:
        yield "a"
        yield "b"

    gen = items()
    assert next(gen) == "a"
    gen.close()
    gen.close()
    (s,) = span_exporter.get_finished_spans()
    assert s.attributes[attrs.TOOL_OUTCOME] == "success"


def test_generator_close_with_misbehaving_generator_still_ends(span_exporter: InMemorySpanExporter) -> None:
    @agent_otel.node("stubborn")
    def stubborn() -> Iterator[int]:
        try:
            yield 1
        finally:
            yield 2  # yields during close(): Python raises RuntimeError

    gen = stubborn()
    next(gen)
    with pytest.raises(RuntimeError):
        gen.close()
    assert len(span_exporter.get_finished_spans()) == 1


def test_generator_raising(span_exporter: InMemorySpanExporter) -> None:
    err = Boom("mid-stream")

    @agent_otel.node("stream")
    def numbers() -> Iterator[int]:
        yield 1
        raise err

    with pytest.raises(Boom) as info:
        list(numbers())
    assert info.value is err
    (s,) = span_exporter.get_finished_spans()
    assert s.status.status_code is StatusCode.ERROR


def test_generator_exception_thrown_in_and_handled(span_exporter: InMemorySpanExporter) -> None:
    @agent_otel.node("resilient")
    def resilient() -> Iterator[str]:
        try:
            yield "first"
        except Boom:
            yield "recovered"
        yield "last"

    gen = resilient()
    assert next(gen) == "first"
    assert gen.throw(Boom("in")) == "recovered"
    assert list(gen) == ["last"]
    (s,) = span_exporter.get_finished_spans()
    assert s.status.status_code is StatusCode.UNSET


def test_generator_exception_thrown_in_not_handled(span_exporter: InMemorySpanExporter) -> None:
    err = Boom("thrown")

    @agent_otel.node("fragile")
    def fragile() -> Iterator[int]:
        yield 1
        yield 2

    gen = fragile()
    next(gen)
    with pytest.raises(Boom) as info:
        gen.throw(err)
    assert info.value is err
    (s,) = span_exporter.get_finished_spans()
    assert s.status.status_code is StatusCode.ERROR
    assert s.attributes[attrs.ERROR_TYPE] == "Boom"


def test_generator_never_started_makes_no_span(span_exporter: InMemorySpanExporter) -> None:
    @agent_otel.node("lazy")
    def lazy() -> Iterator[int]:
        yield 1

    gen = lazy()
    del gen
    assert span_exporter.get_finished_spans() == ()


# --- async generators -------------------------------------------------------------------------------


async def test_async_generator_full_read(span_exporter: InMemorySpanExporter) -> None:
    @agent_otel.llm("m", provider="p")
    async def tokens() -> AsyncIterator[str]:
        for t in ("a", "b"):
            await asyncio.sleep(0)
            yield t

    assert inspect.isasyncgenfunction(tokens)
    assert [t async for t in tokens()] == ["a", "b"]
    (s,) = span_exporter.get_finished_spans()
    assert s.name == "chat m"
    assert s.status.status_code is StatusCode.UNSET


async def test_async_generator_early_break_ends_at_once(span_exporter: InMemorySpanExporter) -> None:
    cleaned = []

    @agent_otel.node("astream")
    async def numbers() -> AsyncIterator[int]:
        try:
            for i in range(100):
                yield i
        finally:
            cleaned.append(current_span_id())

    agen = numbers()
    async for i in agen:
        if i == 1:
            break
    await agen.aclose()  # what `async with contextlib.aclosing(...)` does
    (s,) = span_exporter.get_finished_spans()
    assert s.status.status_code is StatusCode.UNSET
    assert cleaned == [s.context.span_id]


async def test_async_generator_raising(span_exporter: InMemorySpanExporter) -> None:
    err = Boom("async stream")

    @agent_otel.node("astream")
    async def numbers() -> AsyncIterator[int]:
        yield 1
        raise err

    with pytest.raises(Boom) as info:
        async for _ in numbers():
            pass
    assert info.value is err
    (s,) = span_exporter.get_finished_spans()
    assert s.status.status_code is StatusCode.ERROR


async def test_async_generator_athrow_and_asend(span_exporter: InMemorySpanExporter) -> None:
    @agent_otel.node("chat")
    async def conversation() -> Any:
        reply = "hello"
        while True:
            try:
                got = yield reply
            except Boom:
                reply = "sorry"
                continue
            reply = f"echo {got}"

    agen = conversation()
    assert await agen.asend(None) == "hello"
    assert await agen.asend("x") == "echo x"
    assert await agen.athrow(Boom()) == "sorry"
    await agen.aclose()
    (s,) = span_exporter.get_finished_spans()
    assert s.status.status_code is StatusCode.UNSET


async def test_async_generator_athrow_unhandled(span_exporter: InMemorySpanExporter) -> None:
    err = Boom("athrow")

    @agent_otel.node("fragile")
    async def fragile() -> AsyncIterator[int]:
        yield 1
        yield 2

    agen = fragile()
    await agen.__anext__()
    with pytest.raises(Boom) as info:
        await agen.athrow(err)
    assert info.value is err
    (s,) = span_exporter.get_finished_spans()
    assert s.status.status_code is StatusCode.ERROR
