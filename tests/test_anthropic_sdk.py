"""anthropic SDK instrumentation over the real SDK and a real socket: calls, streams, errors, SDK tracing."""

from __future__ import annotations

import gc
import json
from typing import Any

import anthropic
import httpx2
import pytest
import wrapt
from opentelemetry.trace import SpanKind, StatusCode

from _sdk_fakes import (
    WEATHER_TOOL_ANTHROPIC,
    Rig,
    _anthropic_server,
    anthropic_client,
    anthropic_rig,
    async_anthropic_client,
    global_tracer_provider,
    user,
)
from agent_otel import attributes as attrs
from agent_otel import config, spans
from agent_otel.fakes.anthropic_server import Reply, Usage
from agent_otel.instrumentation import _call, _genai_metrics
from agent_otel.instrumentation import anthropic as instrumentation

__all__ = ["_anthropic_server", "anthropic_rig", "global_tracer_provider"]

SDK_SCOPE = "com.anthropic.sdk.python"
LONG = "one two three four five six"


def _create(client: Any, text: str = "hi", **kwargs: Any) -> Any:
    return client.messages.create(model="claude-test-1", max_tokens=256, messages=user(text), **kwargs)


def test_create_span_attributes_and_tool_use(anthropic_rig: Rig) -> None:
    anthropic_rig.server.script(
        Reply.tool_call(
            "get_weather",
            {"city": "Oslo"},
            usage=Usage(
                input_tokens=10, output_tokens=4, cached_input_tokens=100, cache_creation_input_tokens=20
            ),
        )
    )
    message = _create(
        anthropic_client(anthropic_rig),
        "weather in Oslo?",
        tools=[WEATHER_TOOL_ANTHROPIC],
        stop_sequences=["STOP"],
    )
    span = anthropic_rig.one_llm()
    assert span.name == "chat claude-test-1" and span.kind is SpanKind.CLIENT
    assert span.instrumentation_scope.name == "agent_otel"
    a = span.attributes
    assert a[attrs.GEN_AI_PROVIDER_NAME] == "anthropic" and a[attrs.GEN_AI_REQUEST_MAX_TOKENS] == 256
    assert a[attrs.GEN_AI_REQUEST_STOP_SEQUENCES] == ("STOP",)
    assert (a[attrs.SERVER_ADDRESS], a[attrs.SERVER_PORT]) == ("127.0.0.1", anthropic_rig.server.port)
    assert a[attrs.GEN_AI_RESPONSE_ID] == message.id and a[attrs.GEN_AI_RESPONSE_MODEL] == "claude-test-1"
    assert a[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_use",)
    assert a[attrs.GEN_AI_USAGE_INPUT_TOKENS] == 130  # input + cache read + cache creation (semconv)
    assert a[attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 100
    assert a[attrs.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 20
    assert a[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == 4
    assert a[attrs.LLM_TOOL_CALL_NAMES] == ("get_weather",) and a[attrs.LLM_TOOL_CALL_IDS] == (
        message.content[0].id,
    )
    assert a[attrs.ANTHROPIC_REQUEST_ID].startswith("req_")
    assert attrs.GEN_AI_INPUT_MESSAGES not in a and not any("Oslo" in str(v) for v in a.values())


def test_content_capture(anthropic_rig: Rig, capture_content: None) -> None:
    messages = [
        {"role": "user", "content": "weather in Oslo?"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Snow"}]},
    ]
    client = anthropic_client(anthropic_rig)
    client.messages.create(
        model="claude-test-1",
        max_tokens=64,
        system="Be brief.",
        messages=messages,
        tools=[WEATHER_TOOL_ANTHROPIC],
    )
    a = anthropic_rig.one_llm().attributes
    assert json.loads(a[attrs.GEN_AI_SYSTEM_INSTRUCTIONS]) == [{"type": "text", "content": "Be brief."}]
    inputs = json.loads(a[attrs.GEN_AI_INPUT_MESSAGES])
    assert inputs[1]["parts"] == [
        {"type": "tool_call", "id": "toolu_1", "name": "get_weather", "arguments": {"city": "Oslo"}}
    ]
    assert inputs[2]["parts"] == [{"type": "tool_call_response", "id": "toolu_1", "response": "Snow"}]
    outputs = json.loads(a[attrs.GEN_AI_OUTPUT_MESSAGES])
    assert outputs == [
        {
            "role": "assistant",
            "finish_reason": "end_turn",
            "parts": [{"type": "text", "content": "Here is what I found. get_weather says: Snow."}],
        }
    ]
    assert json.loads(a[attrs.GEN_AI_TOOL_DEFINITIONS])[0]["name"] == "get_weather"


async def test_async_create_and_metrics(anthropic_rig: Rig) -> None:
    anthropic_rig.server.script(
        Reply(text="ok", usage=Usage(input_tokens=3, output_tokens=2, cached_input_tokens=1))
    )
    message = await _create(async_anthropic_client(anthropic_rig))
    assert message.content[0].text == "ok"
    (duration,) = anthropic_rig.points(_genai_metrics.OPERATION_DURATION)
    assert duration.attributes[attrs.GEN_AI_PROVIDER_NAME] == "anthropic" and duration.count == 1
    tokens = {
        p.attributes[attrs.GEN_AI_TOKEN_TYPE]: p.sum for p in anthropic_rig.points(_genai_metrics.TOKEN_USAGE)
    }
    assert tokens == {"input": 4, "output": 2}


def test_stream_true_full_read(anthropic_rig: Rig, capture_content: None) -> None:
    anthropic_rig.server.script(Reply(text=LONG, usage=Usage(input_tokens=7, output_tokens=6)))
    stream = _create(anthropic_client(anthropic_rig), stream=True)
    assert isinstance(stream, anthropic.Stream)
    types = [event.type for event in stream]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    span = anthropic_rig.one_llm()
    a = span.attributes
    assert a[attrs.GEN_AI_REQUEST_STREAM] is True and a[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("end_turn",)
    assert (a[attrs.GEN_AI_USAGE_INPUT_TOKENS], a[attrs.GEN_AI_USAGE_OUTPUT_TOKENS]) == (7, 6)
    assert a[attrs.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0
    assert json.loads(a[attrs.GEN_AI_OUTPUT_MESSAGES])[0]["parts"] == [{"type": "text", "content": LONG}]


def test_stream_early_break_gc_and_close(anthropic_rig: Rig) -> None:
    client = anthropic_client(anthropic_rig)
    stream = _create(client, LONG, stream=True)
    for _ in stream:
        break
    del stream
    gc.collect()
    assert len(anthropic_rig.llm_spans()) == 1
    span = anthropic_rig.llm_spans()[0]
    assert attrs.GEN_AI_USAGE_OUTPUT_TOKENS not in span.attributes  # message_start's count is a placeholder
    stream = _create(client, LONG, stream=True)
    next(stream)
    stream.close()
    assert len(anthropic_rig.llm_spans()) == 2


def test_stream_helper_text_stream_and_final_message(anthropic_rig: Rig, capture_content: None) -> None:
    client = anthropic_client(anthropic_rig)
    with client.messages.stream(
        model="claude-test-1",
        max_tokens=64,
        messages=user("weather in Oslo?"),
        tools=[WEATHER_TOOL_ANTHROPIC],
    ) as stream:
        final = stream.get_final_message()
    with client.messages.stream(model="claude-test-1", max_tokens=64, messages=user(LONG)) as stream:
        text = "".join(stream.text_stream)
    assert text == f"You said: {LONG}"
    first, second = anthropic_rig.llm_spans()
    a = first.attributes
    assert a[attrs.GEN_AI_RESPONSE_ID] == final.id and a[attrs.LLM_TOOL_CALL_IDS] == (final.content[0].id,)
    assert a[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_use",) and a[attrs.GEN_AI_REQUEST_STREAM] is True
    assert json.loads(a[attrs.GEN_AI_OUTPUT_MESSAGES])[0]["parts"] == [
        {"type": "tool_call", "id": final.content[0].id, "name": "get_weather", "arguments": {"city": "Oslo"}}
    ]
    assert second.attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == 8


def test_stream_helper_exit_without_reading(anthropic_rig: Rig) -> None:
    client = anthropic_client(anthropic_rig)
    with client.messages.stream(model="claude-test-1", max_tokens=64, messages=user(LONG)):
        pass
    span = anthropic_rig.one_llm()
    assert (
        span.status.status_code is StatusCode.UNSET
        and attrs.GEN_AI_RESPONSE_FINISH_REASONS not in span.attributes
    )


async def test_async_stream_helper_and_async_stream(anthropic_rig: Rig) -> None:
    client = async_anthropic_client(anthropic_rig)
    async with client.messages.stream(model="claude-test-1", max_tokens=64, messages=user("hi")) as stream:
        text = "".join([t async for t in stream.text_stream])
    assert text == "You said: hi"
    stream = await _create(client, LONG, stream=True)
    async for _ in stream:
        break
    await stream.close()
    first, second = anthropic_rig.llm_spans()
    assert first.attributes[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("end_turn",)
    assert second.attributes[attrs.GEN_AI_RESPONSE_ID].startswith("msg_")


def test_errors_retries_and_timeouts(anthropic_rig: Rig) -> None:
    anthropic_rig.server.script(
        Reply.error(529, retry_after=0.001),
        Reply.error(400, "nope"),
        Reply.hang(1.0),
        Reply(text=LONG, disconnect_after_chunks=4),
    )
    client = anthropic_client(anthropic_rig, max_retries=1)
    with pytest.raises(anthropic.BadRequestError):
        _create(client)
    with pytest.raises(anthropic.APITimeoutError):
        _create(anthropic_client(anthropic_rig, timeout=0.1))
    with pytest.raises(httpx2.RemoteProtocolError):  # the anthropic SDK does not wrap mid-stream failures
        list(_create(anthropic_client(anthropic_rig), stream=True))
    failed, timed_out, dropped = anthropic_rig.llm_spans()
    assert failed.status.status_code is StatusCode.ERROR and failed.attributes[attrs.ERROR_TYPE] == "400"
    assert failed.attributes[attrs.HTTP_REQUEST_RESEND_COUNT] == 1
    assert [e.name for e in failed.events] == [attrs.LLM_RETRY_EVENT, "exception"]
    assert failed.events[0].attributes[attrs.HTTP_RESPONSE_STATUS_CODE] == 529
    assert timed_out.attributes[attrs.ERROR_TYPE] == "APITimeoutError"
    assert dropped.attributes[attrs.ERROR_TYPE] == "RemoteProtocolError"


def test_one_span_not_two_inside_an_active_llm_handle(
    anthropic_rig: Rig, global_tracer_provider: Any
) -> None:
    outer = spans.start_llm(model="claude-test-1", provider="anthropic")
    with outer.activate():
        message = _create(anthropic_client(anthropic_rig))
    outer.end()
    (span,) = anthropic_rig.spans()  # no agent-otel span, no SDK span
    assert span.context.span_id == outer.span.get_span_context().span_id
    assert span.attributes[attrs.GEN_AI_RESPONSE_ID] == message.id


# --------------------------------------------------------------------------- the SDK's own tracing


def test_default_sdk_tracing_is_replaced_for_traced_calls(
    anthropic_rig: Rig, global_tracer_provider: Any
) -> None:
    client = anthropic_client(anthropic_rig)
    assert client._tracer is not None  # the SDK would trace this call
    _create(client)
    list(_create(client, stream=True))
    client.messages.count_tokens(model="claude-test-1", messages=user("hi"))
    by_scope = [(s.instrumentation_scope.name, s.name) for s in anthropic_rig.spans()]
    assert by_scope == [
        ("agent_otel", "chat claude-test-1"),
        ("agent_otel", "chat claude-test-1"),
        (SDK_SCOPE, "anthropic.messages.count_tokens"),
    ]


def test_explicitly_configured_sdk_tracing_is_kept_and_adopted(
    anthropic_rig: Rig, global_tracer_provider: Any
) -> None:
    client = anthropic_client(anthropic_rig, open_telemetry={"traces": {"content_mode": "content"}})
    agent = spans.start_agent("a")
    with agent.activate():
        _create(client)
    agent.end()
    (span,) = anthropic_rig.llm_spans()
    assert span.instrumentation_scope.name == SDK_SCOPE and span.name == "anthropic.messages.create"
    assert span.parent.span_id == agent.span.get_span_context().span_id
    assert span.attributes[attrs.GEN_AI_INPUT_MESSAGES]  # what the user configured the SDK to record
    assert [s.name for s in anthropic_rig.spans()] == ["anthropic.messages.create", "invoke_agent a"]
    assert len(anthropic_rig.points(_genai_metrics.OPERATION_DURATION)) == 1  # metrics still recorded


@pytest.mark.parametrize(
    ("policy", "explicit", "expected_scope"),
    [
        ("replace", True, "agent_otel"),
        ("keep", False, SDK_SCOPE),
    ],
)
def test_sdk_spans_setting(
    anthropic_rig: Rig,
    global_tracer_provider: Any,
    monkeypatch: pytest.MonkeyPatch,
    policy: str,
    explicit: bool,
    expected_scope: str,
) -> None:
    monkeypatch.setenv("AGENT_OTEL_ANTHROPIC_SDK_SPANS", policy)
    config.reload_settings()
    options = {"open_telemetry": {"tracer_provider": global_tracer_provider}} if explicit else {}
    _create(anthropic_client(anthropic_rig, **options))
    (span,) = anthropic_rig.spans()
    assert span.instrumentation_scope.name == expected_scope
    assert span.attributes[attrs.CATEGORY] == "llm"


def test_sdk_tracing_off_gives_our_span(anthropic_rig: Rig, global_tracer_provider: Any) -> None:
    _create(anthropic_client(anthropic_rig, open_telemetry=False))
    assert [s.instrumentation_scope.name for s in anthropic_rig.spans()] == ["agent_otel"]


# --------------------------------------------------------------------------- robustness


def test_fault_in_extraction_leaves_the_result_untouched(
    anthropic_rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("extractor bug")

    monkeypatch.setattr(instrumentation._MessagesCall, "extract_response", broken)
    monkeypatch.setattr(instrumentation._MessagesCall, "complete_stream", broken)
    client = anthropic_client(anthropic_rig)
    assert _create(client).content[0].text == "You said: hi"
    assert [e.type for e in _create(client, stream=True)][-1] == "message_stop"
    assert len(anthropic_rig.llm_spans()) == 2


def test_uninstrument_restores_the_originals(anthropic_rig: Rig, global_tracer_provider: Any) -> None:
    import anthropic._base_client as base
    from anthropic.resources.messages.messages import AsyncMessages, Messages

    assert isinstance(Messages.__dict__["create"], wrapt.FunctionWrapper)
    assert instrumentation.instrument()
    instrumentation.uninstrument()
    for owner in (Messages, AsyncMessages):
        for name in ("create", "stream", "parse"):
            assert not isinstance(owner.__dict__[name], wrapt.FunctionWrapper)
    assert not isinstance(base.start_api_call_span, wrapt.FunctionWrapper)
    _create(anthropic_client(anthropic_rig))
    assert [s.instrumentation_scope.name for s in anthropic_rig.spans()] == [SDK_SCOPE]  # the SDK's own again


def test_both_sdk_layers_share_one_implementation(anthropic_rig: Rig) -> None:
    """openai and anthropic differ only in what they extract: server lookup and call wrappers are shared."""
    import openai.resources.chat.completions.completions as chat

    from agent_otel.instrumentation import openai as oa

    assert oa.instrument()
    try:
        assert oa._server_of.__code__ is instrumentation._server_of.__code__
        for sync, asynchronous in (
            (chat.Completions.create, chat.AsyncCompletions.create),
            (anthropic.resources.messages.Messages.create, anthropic.resources.messages.AsyncMessages.create),
        ):
            assert sync._self_wrapper.__code__ is _call.sync_wrapper(None).__code__
            assert asynchronous._self_wrapper.__code__ is _call.async_wrapper(None).__code__
    finally:
        oa.uninstrument()
    for module in (oa, instrumentation):
        assert not hasattr(module, "_SERVER_CACHE") and not hasattr(module, "_is_raw")
