"""openai SDK instrumentation: one LLM span per call, over the real SDK and a real socket (non-streamed)."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from _sdk_fakes import (
    CALC_TOOL_OPENAI,
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
from agent_otel import content, spans
from agent_otel.fakes.openai_server import Reply, Usage
from agent_otel.instrumentation import _genai_metrics

__all__ = ["_openai_server", "openai_rig"]


def test_chat_create_span_attributes(openai_rig: Rig) -> None:
    client = openai_client(openai_rig)
    openai_rig.server.script(
        Reply(
            text="Sure.",
            usage=Usage(input_tokens=11, output_tokens=7, cached_input_tokens=4, reasoning_tokens=2),
        )
    )
    result = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=user("hi"),
        temperature=0.2,
        top_p=0.9,
        max_completion_tokens=50,
        seed=7,
        stop=["END"],
        n=2,
        frequency_penalty=0.1,
        presence_penalty=0.3,
        service_tier="auto",
        response_format={"type": "json_object"},
    )
    assert result.choices[0].message.content == "Sure."
    span = openai_rig.one_llm()
    assert span.name == "chat gpt-4o-mini" and span.kind is SpanKind.CLIENT and span.parent is None
    assert span.status.status_code is StatusCode.UNSET
    a = span.attributes
    port = openai_rig.server.port
    assert a[attrs.GEN_AI_OPERATION_NAME] == "chat" and a[attrs.GEN_AI_PROVIDER_NAME] == "openai"
    assert (a[attrs.SERVER_ADDRESS], a[attrs.SERVER_PORT]) == ("127.0.0.1", port)
    assert a[attrs.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    assert a[attrs.GEN_AI_REQUEST_TEMPERATURE] == 0.2 and a[attrs.GEN_AI_REQUEST_TOP_P] == 0.9
    assert a[attrs.GEN_AI_REQUEST_MAX_TOKENS] == 50 and a[attrs.GEN_AI_REQUEST_SEED] == 7
    assert a[attrs.GEN_AI_REQUEST_STOP_SEQUENCES] == ("END",) and a[attrs.GEN_AI_REQUEST_CHOICE_COUNT] == 2
    assert (
        a[attrs.GEN_AI_REQUEST_FREQUENCY_PENALTY] == 0.1 and a[attrs.GEN_AI_REQUEST_PRESENCE_PENALTY] == 0.3
    )
    assert a[attrs.OPENAI_REQUEST_SERVICE_TIER] == "auto" and a[attrs.GEN_AI_OUTPUT_TYPE] == "json"
    assert attrs.GEN_AI_REQUEST_STREAM not in a
    assert a[attrs.GEN_AI_RESPONSE_ID] == result.id and a[attrs.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini"
    assert a[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop", "stop")
    assert a[attrs.GEN_AI_USAGE_INPUT_TOKENS] == 11 and a[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == 7
    assert a[attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 4
    assert a[attrs.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 2
    assert a[attrs.OPENAI_RESPONSE_SYSTEM_FINGERPRINT] == "fp_fake"
    for key in (attrs.GEN_AI_INPUT_MESSAGES, attrs.GEN_AI_OUTPUT_MESSAGES, attrs.GEN_AI_TOOL_DEFINITIONS):
        assert key not in a  # content capture is off by default


def test_tool_calls_recorded_ids_and_names_without_content(openai_rig: Rig) -> None:
    client = openai_client(openai_rig)
    result = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=user("What's the weather in Paris, and 12 * 7?"),
        tools=[WEATHER_TOOL_OPENAI, CALC_TOOL_OPENAI],
    )
    calls = result.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "calculator"]
    a = openai_rig.one_llm().attributes
    assert a[attrs.LLM_TOOL_CALL_NAMES] == ("get_weather", "calculator")
    assert a[attrs.LLM_TOOL_CALL_IDS] == tuple(c.id for c in calls)
    assert a[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)
    assert not any("Paris" in str(v) for v in a.values())  # arguments only with content capture


def test_content_capture_records_messages_in_semconv_schema(openai_rig: Rig, capture_content: None) -> None:
    client = openai_client(openai_rig)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_x",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_x", "content": "Sunny"},
        {"role": "user", "content": [{"type": "text", "text": "And the weather in Rome?"}]},
    ]
    client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL_OPENAI])
    a = openai_rig.one_llm().attributes
    inputs = json.loads(a[attrs.GEN_AI_INPUT_MESSAGES])
    assert [m["role"] for m in inputs] == ["system", "user", "assistant", "tool", "user"]
    assert inputs[0]["parts"] == [{"type": "text", "content": "Be brief."}]
    assert inputs[2]["parts"] == [
        {"type": "tool_call", "id": "call_x", "name": "get_weather", "arguments": {"city": "Paris"}}
    ]
    assert inputs[3]["parts"] == [{"type": "tool_call_response", "id": "call_x", "response": "Sunny"}]
    assert inputs[4]["parts"] == [{"type": "text", "content": "And the weather in Rome?"}]
    outputs = json.loads(a[attrs.GEN_AI_OUTPUT_MESSAGES])
    assert outputs[0]["role"] == "assistant" and outputs[0]["finish_reason"] == "tool_calls"
    assert outputs[0]["parts"][0]["type"] == "tool_call"
    assert outputs[0]["parts"][0]["arguments"] == {"city": "Rome"}
    assert json.loads(a[attrs.GEN_AI_TOOL_DEFINITIONS])[0]["function"]["name"] == "get_weather"


def test_redaction_hook_applies_and_a_raising_hook_keeps_the_span(
    openai_rig: Rig, capture_content: None
) -> None:
    client = openai_client(openai_rig)
    seen: list[str] = []

    def redact(kind: str, value: Any) -> Any:
        seen.append(kind)
        return "[hidden]" if kind == "input_messages" else value

    content.set_redactor(redact)
    client.chat.completions.create(model="m", messages=user("secret 123"))
    a = openai_rig.one_llm().attributes
    assert a[attrs.GEN_AI_INPUT_MESSAGES] == "[hidden]" and "input_messages" in seen
    assert "output_messages" in seen

    def broken(kind: str, value: Any) -> Any:
        raise RuntimeError("redactor bug")

    openai_rig.exporter.clear()
    content.set_redactor(broken)
    result = client.chat.completions.create(model="m", messages=user("secret 123"))
    assert result.choices[0].message.content == "You said: secret 123"
    a = openai_rig.one_llm().attributes
    assert a[attrs.GEN_AI_INPUT_MESSAGES] == content.REDACTION_FAILED
    assert a[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] > 0  # the rest of the span is intact


async def test_async_chat_and_parent_is_the_callers_span(openai_rig: Rig, otel: Any) -> None:
    client = async_openai_client(openai_rig)
    tracer = otel[0].get_tracer("test")
    with tracer.start_as_current_span("request") as outer:
        result = await client.chat.completions.create(model="gpt-4o-mini", messages=user("hello"))
    assert result.choices[0].message.content == "You said: hello"
    span = openai_rig.one_llm()
    assert span.parent is not None and span.parent.span_id == outer.get_span_context().span_id
    assert span.attributes[attrs.GEN_AI_RESPONSE_ID] == result.id


def test_responses_api_sync(openai_rig: Rig, capture_content: None) -> None:
    client = openai_client(openai_rig)
    result = client.responses.create(
        model="gpt-4o-mini",
        input="weather in Rome?",
        instructions="Be brief.",
        tools=[WEATHER_TOOL_RESPONSES],
        max_output_tokens=64,
        temperature=0.5,
    )
    call = result.output[0]
    span = openai_rig.one_llm()
    a = span.attributes
    assert span.name == "chat gpt-4o-mini"
    assert a[attrs.GEN_AI_RESPONSE_ID] == result.id and a[attrs.GEN_AI_REQUEST_MAX_TOKENS] == 64
    assert a[attrs.GEN_AI_REQUEST_TEMPERATURE] == 0.5
    assert a[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)
    assert a[attrs.LLM_TOOL_CALL_NAMES] == ("get_weather",) and a[attrs.LLM_TOOL_CALL_IDS] == (call.call_id,)
    assert a[attrs.GEN_AI_USAGE_INPUT_TOKENS] == result.usage.input_tokens
    assert json.loads(a[attrs.GEN_AI_SYSTEM_INSTRUCTIONS]) == [{"type": "text", "content": "Be brief."}]
    assert json.loads(a[attrs.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": "weather in Rome?"}]}
    ]
    out = json.loads(a[attrs.GEN_AI_OUTPUT_MESSAGES])
    assert out[0]["parts"][0] == {
        "type": "tool_call",
        "id": call.call_id,
        "name": "get_weather",
        "arguments": {"city": "Rome"},
    }


async def test_responses_api_async_with_function_output(openai_rig: Rig) -> None:
    client = async_openai_client(openai_rig)
    items = [
        {"role": "user", "content": "weather in Rome?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "Rainy"},
    ]
    result = await client.responses.create(model="gpt-4o-mini", input=items)
    assert "Rainy" in result.output_text
    a = openai_rig.one_llm().attributes
    assert a[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert attrs.LLM_TOOL_CALL_NAMES not in a


def test_responses_incomplete_finish_reason(openai_rig: Rig) -> None:
    client = openai_client(openai_rig)
    openai_rig.server.script(Reply(text="cut", finish_reason="length"))
    client.responses.create(model="gpt-4o-mini", input="long story")
    assert openai_rig.one_llm().attributes[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("length",)


async def test_embeddings_sync_and_async(openai_rig: Rig) -> None:
    client = openai_client(openai_rig)
    result = client.embeddings.create(
        model="text-embedding-3-small", input=["one two", "three"], dimensions=16
    )
    assert len(result.data[0].embedding) == 16
    await async_openai_client(openai_rig).embeddings.create(
        model="text-embedding-3-small", input="x", encoding_format="float"
    )
    first, second = openai_rig.llm_spans()
    assert first.name == "embeddings text-embedding-3-small" and first.kind is SpanKind.CLIENT
    assert first.attributes[attrs.GEN_AI_OPERATION_NAME] == "embeddings"
    assert first.attributes[attrs.GEN_AI_USAGE_INPUT_TOKENS] == 3
    assert first.attributes[attrs.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 16
    assert attrs.GEN_AI_USAGE_OUTPUT_TOKENS not in first.attributes
    assert second.attributes[attrs.GEN_AI_REQUEST_ENCODING_FORMATS] == ("float",)


def test_with_raw_response(openai_rig: Rig) -> None:
    client = openai_client(openai_rig)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=user("hi"))
    assert raw.headers["x-request-id"].startswith("req_")
    parsed = raw.parse()
    a = openai_rig.one_llm().attributes
    assert a[attrs.GEN_AI_RESPONSE_ID] == parsed.id
    assert a[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == parsed.usage.completion_tokens


def test_with_raw_response_of_a_stream(openai_rig: Rig) -> None:
    client = openai_client(openai_rig)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=user("hello stream"),
        stream=True,
        stream_options={"include_usage": True},
    )
    assert openai_rig.llm_spans() == []  # still streaming
    stream = raw.parse()
    assert raw.parse() is stream
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "You said: hello stream"
    a = openai_rig.one_llm().attributes
    assert a[attrs.GEN_AI_REQUEST_STREAM] is True and a[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] > 0


def test_with_streaming_response(openai_rig: Rig) -> None:
    client = openai_client(openai_rig)
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=user("hi")
    ) as r:
        assert openai_rig.llm_spans() == []
        completion = r.parse()
    assert openai_rig.one_llm().attributes[attrs.GEN_AI_RESPONSE_ID] == completion.id
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=user("hi")
    ) as r:
        next(r.iter_lines())  # read without parsing: the span ends when the block closes the response
    assert len(openai_rig.llm_spans()) == 2


async def test_async_with_streaming_response(openai_rig: Rig) -> None:
    client = async_openai_client(openai_rig)
    async with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=user("hi")
    ) as r:
        completion = await r.parse()
    assert openai_rig.one_llm().attributes[attrs.GEN_AI_RESPONSE_ID] == completion.id


def test_chat_completions_parse_helper(openai_rig: Rig) -> None:
    from pydantic import BaseModel

    class Answer(BaseModel):
        value: int

    client = openai_client(openai_rig)
    openai_rig.server.script(Reply(text='{"value": 84}'))
    result = client.chat.completions.parse(model="gpt-4o-mini", messages=user("12*7"), response_format=Answer)
    assert result.choices[0].message.parsed == Answer(value=84)
    a = openai_rig.one_llm().attributes
    assert a[attrs.GEN_AI_OUTPUT_TYPE] == "json" and a[attrs.GEN_AI_RESPONSE_ID] == result.id


def test_one_span_not_two_inside_an_active_llm_handle(openai_rig: Rig) -> None:
    client = openai_client(openai_rig)
    outer = spans.start_llm(model="gpt-4o-mini", provider="openai")
    with outer.activate():
        result = client.chat.completions.create(model="gpt-4o-mini", messages=user("hi"), temperature=0.4)
    outer.end()
    span = openai_rig.one_llm()
    assert span.context.span_id == outer.span.get_span_context().span_id
    a = span.attributes
    assert a[attrs.GEN_AI_RESPONSE_ID] == result.id and a[attrs.SERVER_ADDRESS] == "127.0.0.1"
    assert a[attrs.GEN_AI_REQUEST_TEMPERATURE] == 0.4 and a[attrs.GEN_AI_USAGE_INPUT_TOKENS] == 1
    # A manual LLM span records no metrics and claims no call: the SDK call records its one point.
    (point,) = openai_rig.points(_genai_metrics.OPERATION_DURATION)
    assert point.count == 1 and point.attributes[attrs.SERVER_ADDRESS] == "127.0.0.1"


def test_merged_call_fills_but_never_overwrites_the_owners_attributes(openai_rig: Rig) -> None:
    client = openai_client(openai_rig)
    outer = spans.start_llm(model="gpt-4o-mini", provider="openai")
    outer.set_attribute(attrs.GEN_AI_RESPONSE_MODEL, "owner-model")
    with outer.activate():
        result = client.chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
    outer.end()
    a = openai_rig.one_llm().attributes
    assert a[attrs.GEN_AI_RESPONSE_MODEL] == "owner-model"  # the owner's value stands
    assert a[attrs.GEN_AI_RESPONSE_ID] == result.id  # what the owner lacked is filled


def _azure_handler(request: httpx2.Request) -> httpx2.Response:
    body = {
        "id": "chatcmpl-az",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    return httpx2.Response(200, json=body)


def test_azure_provider_and_server_from_base_url(openai_rig: Rig) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint="https://myres.openai.azure.com",
        api_key="k",
        api_version="2024-10-21",
        http_client=httpx2.Client(transport=httpx2.MockTransport(_azure_handler)),
    )
    client.chat.completions.create(model="gpt-4o", messages=user("hi"))
    a = openai_rig.one_llm().attributes
    assert a[attrs.GEN_AI_PROVIDER_NAME] == "azure.ai.openai"
    assert (a[attrs.SERVER_ADDRESS], a[attrs.SERVER_PORT]) == ("myres.openai.azure.com", 443)


def test_http_layer_runs_inside_the_llm_span(openai_rig: Rig) -> None:
    seen: list[Any] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(trace.get_current_span().get_span_context().span_id)
        return _azure_handler(request)

    client = openai.OpenAI(
        base_url="http://llm.internal:8080/v1",
        api_key="k",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    client.chat.completions.create(model="gpt-4o", messages=user("hi"))
    span = openai_rig.one_llm()
    assert seen == [span.context.span_id]  # an HTTP client span would parent under the LLM span
    assert (span.attributes[attrs.SERVER_ADDRESS], span.attributes[attrs.SERVER_PORT]) == (
        "llm.internal",
        8080,
    )
    assert trace.get_current_span().get_span_context().is_valid is False  # and it was detached


@pytest.mark.parametrize("disabled", ["category", "sdk"])
def test_filtered_llm_category_makes_no_span_but_the_call_works(
    openai_rig: Rig, disabled: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent_otel import config

    if disabled == "category":
        monkeypatch.setenv("AGENT_OTEL_CATEGORIES", "agent,tool")
    else:
        monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    config.reload_settings()
    result = openai_client(openai_rig).chat.completions.create(model="m", messages=user("hi"))
    assert result.choices[0].message.content == "You said: hi"
    assert openai_rig.spans() == []
