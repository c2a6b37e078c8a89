"""openai streams: the LLM span ends exactly once however the stream ends, with data from the chunks."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from typing import Any

import openai
import pytest
from opentelemetry.trace import StatusCode

from _sdk_fakes import (
    WEATHER_TOOL_OPENAI,
    WEATHER_TOOL_RESPONSES,
    Rig,
    _openai_server,
    async_openai_client,
    openai_client,
    openai_rig,
    user,
)
from agent_otel import attributes as attrs
from agent_otel import spans
from agent_otel.fakes.openai_server import Reply, Usage
from agent_otel.instrumentation import _genai_metrics
from agent_otel.instrumentation._streams import AsyncStreamProxy, SyncStreamProxy

__all__ = ["_openai_server", "openai_rig"]

LONG = "one two three four five six seven eight nine ten"


def _stream(client: Any, text: str = LONG, **kwargs: Any) -> Any:
    return client.chat.completions.create(model="gpt-4o-mini", messages=user(text), stream=True, **kwargs)


def test_full_read_records_usage_finish_reason_and_time_to_first_chunk(openai_rig: Rig) -> None:
    openai_rig.server.script(
        Reply(text=LONG, usage=Usage(input_tokens=5, output_tokens=10, cached_input_tokens=2))
    )
    stream = _stream(openai_client(openai_rig), stream_options={"include_usage": True})
    assert isinstance(stream, openai.Stream)  # the proxy keeps the SDK type
    assert stream.response.status_code == 200  # ... and its attributes
    assert openai_rig.llm_spans() == []
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == LONG
    span = openai_rig.one_llm()
    a = span.attributes
    assert span.status.status_code is StatusCode.UNSET
    assert a[attrs.GEN_AI_REQUEST_STREAM] is True
    assert a[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[attrs.GEN_AI_RESPONSE_ID].startswith("chatcmpl-")
    assert (a[attrs.GEN_AI_USAGE_INPUT_TOKENS], a[attrs.GEN_AI_USAGE_OUTPUT_TOKENS]) == (5, 10)
    assert a[attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 2
    ttfc = a[attrs.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert 0 < ttfc < (span.end_time - span.start_time) / 1e9


def test_streamed_tool_calls_and_content(openai_rig: Rig, capture_content: None) -> None:
    stream = _stream(openai_client(openai_rig), "weather in Paris and in Oslo?", tools=[WEATHER_TOOL_OPENAI])
    chunks = list(stream)
    ids = [tc.id for c in chunks for tc in (c.choices[0].delta.tool_calls or []) if tc.id]
    a = openai_rig.one_llm().attributes
    assert a[attrs.LLM_TOOL_CALL_IDS] == tuple(ids) and a[attrs.LLM_TOOL_CALL_NAMES] == ("get_weather",)
    assert a[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)
    out = json.loads(a[attrs.GEN_AI_OUTPUT_MESSAGES])
    assert out == [
        {
            "role": "assistant",
            "finish_reason": "tool_calls",
            "parts": [
                {"type": "tool_call", "id": ids[0], "name": "get_weather", "arguments": {"city": "Paris"}}
            ],
        }
    ]


def test_early_break_then_garbage_collection_ends_the_span(openai_rig: Rig) -> None:
    stream = _stream(openai_client(openai_rig))
    for _ in stream:
        break
    assert openai_rig.llm_spans() == []
    del stream
    gc.collect()
    span = openai_rig.one_llm()
    assert span.status.status_code is StatusCode.UNSET
    assert attrs.GEN_AI_RESPONSE_FINISH_REASONS not in span.attributes
    assert span.attributes[attrs.GEN_AI_RESPONSE_ID].startswith("chatcmpl-")


def test_close_ends_the_span_once(openai_rig: Rig) -> None:
    stream = _stream(openai_client(openai_rig))
    next(stream)
    stream.close()
    assert len(openai_rig.llm_spans()) == 1
    stream.close()
    del stream
    gc.collect()
    assert len(openai_rig.llm_spans()) == 1


def test_context_manager_and_dropped_unread_stream(openai_rig: Rig) -> None:
    client = openai_client(openai_rig)
    with _stream(client) as stream:
        assert next(iter(stream)).choices
    assert len(openai_rig.llm_spans()) == 1
    _stream(client)  # never read, dropped at once
    gc.collect()
    assert len(openai_rig.llm_spans()) == 2


def test_exception_mid_stream_fails_the_span(openai_rig: Rig) -> None:
    openai_rig.server.script(Reply(text=LONG, disconnect_after_chunks=3))
    stream = _stream(openai_client(openai_rig))
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 3
    span = openai_rig.one_llm()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[attrs.ERROR_TYPE] == "APIConnectionError"
    assert [e.name for e in span.events] == ["exception"]


def test_caller_code_between_chunks_is_not_under_the_llm_span(openai_rig: Rig, otel: Any) -> None:
    agent = spans.start_agent("a")
    with agent.activate():
        for _ in _stream(openai_client(openai_rig), "a b c"):
            tool = spans.start_tool("between")
            tool.end()
    agent.end()
    by_name = {s.name: s for s in otel[1].get_finished_spans()}
    agent_id = by_name["invoke_agent a"].context.span_id
    assert by_name["chat gpt-4o-mini"].parent.span_id == agent_id
    assert by_name["execute_tool between"].parent.span_id == agent_id


def test_chat_completions_stream_helper(openai_rig: Rig) -> None:
    client = openai_client(openai_rig)
    with client.chat.completions.stream(
        model="gpt-4o-mini", messages=user("hi there"), stream_options={"include_usage": True}
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    a = openai_rig.one_llm().attributes
    assert a[attrs.GEN_AI_RESPONSE_ID] == final.id
    assert a[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == final.usage.completion_tokens == 4


def test_responses_stream_full_and_helper(openai_rig: Rig) -> None:
    client = openai_client(openai_rig)
    events = list(
        client.responses.create(
            model="gpt-4o-mini", input="weather in Rome?", stream=True, tools=[WEATHER_TOOL_RESPONSES]
        )
    )
    final = events[-1].response
    with client.responses.stream(model="gpt-4o-mini", input="hello") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    assert text == "You said: hello"
    first, second = openai_rig.llm_spans()
    a = first.attributes
    assert a[attrs.GEN_AI_RESPONSE_ID] == final.id and a[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == (
        "tool_calls",
    )
    assert a[attrs.LLM_TOOL_CALL_NAMES] == ("get_weather",)
    assert a[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == final.usage.output_tokens
    assert a[attrs.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0
    assert second.attributes[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)


async def test_async_stream_full_read(openai_rig: Rig) -> None:
    client = async_openai_client(openai_rig)
    openai_rig.server.script(Reply(text=LONG))
    stream = await _astream(client, stream_options={"include_usage": True})
    assert isinstance(stream, openai.AsyncStream)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == LONG
    a = openai_rig.one_llm().attributes
    assert a[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",) and a[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == 10


async def _astream(client: Any, **kwargs: Any) -> Any:
    return await client.chat.completions.create(
        model="gpt-4o-mini", messages=user(LONG), stream=True, **kwargs
    )


async def test_async_early_break_close_and_async_with(openai_rig: Rig) -> None:
    client = async_openai_client(openai_rig)
    stream = await _astream(client)
    async for _ in stream:
        break
    await stream.close()
    assert len(openai_rig.llm_spans()) == 1
    async with await _astream(client) as stream:
        await stream.__anext__()
    assert len(openai_rig.llm_spans()) == 2
    stream = await _astream(client)
    await stream.__anext__()
    await stream.aclose()
    assert len(openai_rig.llm_spans()) == 3


async def test_async_dropped_stream_ends_by_gc(openai_rig: Rig) -> None:
    stream = await _astream(async_openai_client(openai_rig))
    await stream.__anext__()
    del stream
    gc.collect()
    assert len(openai_rig.llm_spans()) == 1


async def test_cancelled_consumer_marks_the_span_interrupted(openai_rig: Rig) -> None:
    openai_rig.server.script(Reply(text=LONG, chunk_delay=0.5))
    stream = await _astream(async_openai_client(openai_rig))

    async def consume() -> None:
        async for _ in stream:
            pass

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    span = openai_rig.one_llm()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[attrs.ERROR_TYPE] == "CancelledError"
    assert span.attributes[attrs.INTERRUPTED] is True


class _InterruptedObserver:
    """An observer whose end is hit by a Ctrl-C (KeyboardInterrupt is not an Exception)."""

    def on_chunk(self, chunk: Any) -> None:
        pass

    def on_end(self, error: BaseException | None) -> None:
        raise KeyboardInterrupt


@pytest.mark.parametrize("proxy_cls", [SyncStreamProxy, AsyncStreamProxy])
def test_a_finalizer_never_raises(proxy_cls: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    proxy = proxy_cls(iter([1, 2]), _InterruptedObserver())
    del proxy
    gc.collect()
    assert unraisable == []


def test_a_stream_ended_by_the_garbage_collector_records_its_metrics_after(openai_rig: Rig) -> None:
    client = openai_client(openai_rig)
    stream = _stream(client)
    next(stream)
    cycle: list[Any] = [stream]
    cycle.append(cycle)  # only the cycle collector can free the stream now
    del stream, cycle
    gc.collect()
    assert len(openai_rig.llm_spans()) == 1  # the finalizer ended the span
    # ... but did not record into the metrics SDK, whose locks the collector may have interrupted.
    assert openai_rig.points(_genai_metrics.OPERATION_DURATION) == []
    client.chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
    assert sum(p.count for p in openai_rig.points(_genai_metrics.OPERATION_DURATION)) == 2
