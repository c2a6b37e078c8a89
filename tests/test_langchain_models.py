"""LangChain chat models as LLM spans: attributes, streams, errors, content, one span per SDK call."""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry.trace import SpanKind, StatusCode

from _lc_fakes import (
    REACT_TURN,
    Metered,
    ScriptedChatModel,
    get_weather,
    lc,
    lc_metered,
    named,
    one,
    span_tree,
)
from agent_otel import attributes as attrs
from agent_otel import config, content, spans
from agent_otel.instrumentation import _genai_metrics as gm
from agent_otel.instrumentation import _langchain_extract as extract
from agent_otel.instrumentation import langchain as lc_instrumentation
from agent_otel.instrumentation._call import LLMCall

__all__ = ["lc", "lc_metered"]


def _no_tools(text: str) -> list[dict[str, Any]]:
    return []


def test_invoke_is_one_llm_span(lc: Any) -> None:
    model = ScriptedChatModel(plan=_no_tools, temperature=0.3, max_tokens=99)
    answer = model.invoke([HumanMessage("hi")], stop=["END"])
    assert answer.content == "Hello!"
    span = one(lc.get_finished_spans(), "chat scripted-1")
    assert span.parent is None and span.kind is SpanKind.CLIENT
    a = span.attributes
    assert a[attrs.CATEGORY] == "llm"
    assert a[attrs.GEN_AI_OPERATION_NAME] == "chat"
    assert a[attrs.GEN_AI_PROVIDER_NAME] == "openai"
    assert a[attrs.GEN_AI_REQUEST_MODEL] == "scripted-1"
    assert a[attrs.GEN_AI_REQUEST_TEMPERATURE] == 0.3
    assert a[attrs.GEN_AI_REQUEST_MAX_TOKENS] == 99
    assert a[attrs.GEN_AI_REQUEST_STOP_SEQUENCES] == ("END",)
    assert a[attrs.GEN_AI_RESPONSE_MODEL] == "scripted-1"
    assert a[attrs.GEN_AI_RESPONSE_ID] == "resp-hello"
    assert a[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[attrs.GEN_AI_USAGE_INPUT_TOKENS] == 2 and a[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == 7
    assert attrs.GEN_AI_REQUEST_STREAM not in a
    assert not any(k in a for k in (attrs.GEN_AI_INPUT_MESSAGES, attrs.GEN_AI_OUTPUT_MESSAGES))
    assert span.status.status_code is StatusCode.UNSET


async def test_ainvoke_and_abatch(lc: Any) -> None:
    model = ScriptedChatModel()
    await model.ainvoke("weather in Oslo")
    await model.abatch(["weather in Rome", "weather in Lima"])
    finished = named(lc.get_finished_spans(), "chat scripted-1")
    assert len(finished) == 3
    assert sorted(s.attributes[attrs.LLM_TOOL_CALL_IDS][0] for s in finished) == [
        "call_lima",
        "call_oslo",
        "call_rome",
    ]
    assert all(s.attributes[attrs.LLM_TOOL_CALL_NAMES] == ("get_weather",) for s in finished)


def test_stream_is_one_span_with_time_to_first_chunk(lc: Any, tracer_provider: Any) -> None:
    tracer = tracer_provider.get_tracer("consumer")
    chunks = []
    for chunk in ScriptedChatModel().stream("weather in Kyiv"):
        with tracer.start_as_current_span("consume"):
            chunks.append(chunk)
    assert len(chunks) >= 2
    finished = list(lc.get_finished_spans())
    span = one(finished, "chat scripted-1")
    a = span.attributes
    assert a[attrs.GEN_AI_REQUEST_STREAM] is True
    assert a[attrs.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0
    assert a[attrs.LLM_TOOL_CALL_IDS] == ("call_kyiv",)
    assert a[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)
    assert a[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == 7
    assert all(c.parent is None for c in named(finished, "consume"))


async def test_astream_closed_early_still_ends(lc: Any) -> None:
    stream = ScriptedChatModel(plan=_no_tools).astream("hi")
    async for _chunk in stream:
        break
    await stream.aclose()
    span = one(lc.get_finished_spans(), "chat scripted-1")
    assert span.attributes[attrs.GEN_AI_REQUEST_STREAM] is True
    assert span.status.status_code is StatusCode.UNSET


class ModelDown(Exception):
    pass


def test_model_error_fails_the_span_and_reaches_the_caller(lc: Any) -> None:
    err = ModelDown("503")
    with pytest.raises(ModelDown) as caught:
        ScriptedChatModel(fail_with=err).invoke("hi")
    assert caught.value is err
    span = one(lc.get_finished_spans(), "chat scripted-1")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[attrs.ERROR_TYPE] == "ModelDown"


def test_content_capture_records_semconv_messages(lc: Any, capture_content: None) -> None:
    model = ScriptedChatModel().bind_tools([get_weather])
    model.invoke(
        [SystemMessage("be brief"), HumanMessage("weather in Oslo")], tools=[{"name": "get_weather"}]
    )
    a = one(lc.get_finished_spans(), "chat scripted-1").attributes
    assert json.loads(a[attrs.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "weather in Oslo"}]},
    ]
    assert json.loads(a[attrs.GEN_AI_OUTPUT_MESSAGES]) == [
        {
            "role": "assistant",
            "parts": [
                {"type": "tool_call", "id": "call_oslo", "name": "get_weather", "arguments": {"city": "Oslo"}}
            ],
            "finish_reason": "tool_calls",
        }
    ]
    assert json.loads(a[attrs.GEN_AI_TOOL_DEFINITIONS]) == [{"name": "get_weather"}]


def test_sdk_instrumentation_below_merges_into_the_langchain_span(lc: Any) -> None:
    """What the openai/anthropic wrappers do inside a LangChain call: start_llm gets the merged handle."""
    seen = []

    class SdkLikeModel(ScriptedChatModel):
        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
            inner = spans.start_llm(model="gpt-x", provider="openai", server_address="api.example.com")
            seen.append(inner.owned)
            inner.set_response(response_id="sdk-id")
            inner.end()
            return super()._generate(messages, stop, run_manager, **kwargs)

    SdkLikeModel(plan=_no_tools).invoke("hi")
    span = one(lc.get_finished_spans(), "chat scripted-1")
    assert seen == [False]
    assert span.attributes[attrs.SERVER_ADDRESS] == "api.example.com"


@pytest.mark.parametrize(
    ("ls_provider", "expected"),
    [
        ("openai", "openai"),
        ("azure", "azure.ai.openai"),
        ("anthropic", "anthropic"),
        ("google_genai", "gcp.gen_ai"),
        ("google_vertexai", "gcp.vertex_ai"),
        ("amazon_bedrock", "aws.bedrock"),
        ("mistral", "mistral_ai"),
        ("xai", "x_ai"),
        ("ollama", "ollama"),
        (None, "scriptedchatmodel"),
    ],
)
def test_provider_names(ls_provider: str | None, expected: str) -> None:
    assert extract.provider_name(ls_provider, ScriptedChatModel) == expected


def test_validation_message_withholds_values() -> None:
    from pydantic import BaseModel, ValidationError

    class Args(BaseModel):
        times: int

    with pytest.raises(ValidationError) as caught:
        Args(times="secret-value")
    text = extract.validation_message(caught.value)
    assert "secret-value" not in text and "times: int_parsing" in text


# --------------------------------------------------------------------------- over the real openai SDK


@pytest.fixture
def openai_server() -> Any:
    oa = pytest.importorskip("agent_otel.instrumentation.openai")
    from agent_otel.fakes.openai_server import FakeOpenAIServer

    assert oa.instrument()
    try:
        with FakeOpenAIServer() as server:
            yield server
    finally:
        oa.uninstrument()


def _chat_openai(server: Any, **kwargs: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model="gpt-4o-mini",
        base_url=server.base_url,
        api_key="sk-fake",
        max_retries=0,
        stream_usage=True,
        **kwargs,
    )


def _check_openai_llm(span: Any) -> None:
    a = span.attributes
    assert a[attrs.GEN_AI_PROVIDER_NAME] == "openai"
    assert a[attrs.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    assert a[attrs.SERVER_ADDRESS] == "127.0.0.1"  # only the SDK layer knows: merged into our span
    assert a[attrs.GEN_AI_RESPONSE_ID].startswith("chatcmpl-")
    assert a[attrs.GEN_AI_USAGE_INPUT_TOKENS] > 0


def test_chat_openai_react_turn_one_llm_span_per_call(lc: Any, openai_server: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from langgraph.prebuilt import create_react_agent

        agent = create_react_agent(_chat_openai(openai_server), [get_weather])
    out = agent.invoke({"messages": [HumanMessage("What is the weather in Paris?")]})
    assert "sunny in Paris" in out["messages"][-1].content or out["messages"][-1].content
    assert len(openai_server.requests) == 2
    finished = list(lc.get_finished_spans())
    assert span_tree(finished) == [line.replace("scripted-1", "gpt-4o-mini") for line in REACT_TURN]
    llms = named(finished, "chat gpt-4o-mini")
    assert len(llms) == 2
    for span in llms:
        _check_openai_llm(span)
    assert llms[0].attributes[attrs.LLM_TOOL_CALL_NAMES] == ("get_weather",)


async def test_chat_openai_async_and_stream_one_span_each(lc: Any, openai_server: Any) -> None:
    model = _chat_openai(openai_server)
    await model.ainvoke("hello there")
    chunks = [c async for c in model.astream("hello again")]
    assert chunks
    list(model.stream("and again"))
    llms = named(lc.get_finished_spans(), "chat gpt-4o-mini")
    assert len(llms) == 3 and len(openai_server.requests) == 3
    for span in llms:
        _check_openai_llm(span)
    assert [s.attributes.get(attrs.GEN_AI_REQUEST_STREAM, False) for s in llms] == [False, True, True]


# --------------------------------------------------------------------------- metrics

_SCRIPTED_LABELS = {
    attrs.GEN_AI_OPERATION_NAME: "chat",
    attrs.GEN_AI_PROVIDER_NAME: "openai",
    attrs.GEN_AI_REQUEST_MODEL: "scripted-1",
    attrs.GEN_AI_RESPONSE_MODEL: "scripted-1",
}


def _check_llm_metrics(metered: Metered, calls: int, streams: int) -> None:
    (duration,) = metered.points(gm.OPERATION_DURATION)  # one low-cardinality attribute set
    assert dict(duration.attributes) == _SCRIPTED_LABELS and duration.count == calls
    tokens = {p.attributes[attrs.GEN_AI_TOKEN_TYPE]: p for p in metered.points(gm.TOKEN_USAGE)}
    assert set(tokens) == {"input", "output"}
    assert tokens["output"].count == calls and tokens["output"].sum == 7 * calls
    assert tokens["input"].count == calls
    (ttfc,) = metered.points(gm.TIME_TO_FIRST_CHUNK)
    assert dict(ttfc.attributes) == _SCRIPTED_LABELS and ttfc.count == streams


def test_llm_calls_record_genai_metrics(lc_metered: Metered) -> None:
    model = ScriptedChatModel(plan=_no_tools)
    model.invoke("hi")
    assert list(model.stream("hi"))
    _check_llm_metrics(lc_metered, calls=2, streams=1)
    assert issubclass(lc_instrumentation._ChatModelCall, LLMCall)  # one call type, one clock


async def test_async_llm_calls_record_genai_metrics(lc_metered: Metered) -> None:
    model = ScriptedChatModel(plan=_no_tools)
    await model.ainvoke("hi")
    assert [c async for c in model.astream("hi")]
    _check_llm_metrics(lc_metered, calls=2, streams=1)


def test_failed_llm_call_records_its_duration_with_error_type(lc_metered: Metered) -> None:
    with pytest.raises(ModelDown):
        ScriptedChatModel(fail_with=ModelDown("503")).invoke("hi")
    (duration,) = lc_metered.points(gm.OPERATION_DURATION)
    assert duration.count == 1 and duration.attributes[attrs.ERROR_TYPE] == "ModelDown"
    assert lc_metered.points(gm.TOKEN_USAGE) == []


@pytest.fixture
def openai_metered(lc_metered: Metered) -> Any:
    """The openai SDK instrumented too, recording to the same meter provider, against a scripted server."""
    oa = pytest.importorskip("agent_otel.instrumentation.openai")
    from agent_otel.fakes.openai_server import FakeOpenAIServer

    oa.uninstrument()
    assert oa.instrument(meter_provider=lc_metered.meter_provider)
    try:
        with FakeOpenAIServer() as server:
            yield server
    finally:
        oa.uninstrument()


def test_chat_openai_over_the_sdk_records_each_call_once(lc_metered: Metered, openai_metered: Any) -> None:
    model = _chat_openai(openai_metered)
    model.invoke("hello")
    assert list(model.stream("hello again"))
    assert len(openai_metered.requests) == 2
    assert len(named(lc_metered.exporter.get_finished_spans(), "chat gpt-4o-mini")) == 2
    assert lc_metered.count(gm.OPERATION_DURATION) == 2  # not 0 (merged SDK layer), not 4 (both layers)
    assert lc_metered.count(gm.TIME_TO_FIRST_CHUNK) == 1
    assert lc_metered.count(gm.TOKEN_USAGE) == 4  # input + output, per call
    for point in lc_metered.points(gm.OPERATION_DURATION):
        a = point.attributes
        assert a[attrs.GEN_AI_PROVIDER_NAME] == "openai" and a[attrs.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
        # Only the SDK layer knows the server: the owner of the call records it.
        assert a[attrs.SERVER_ADDRESS] == "127.0.0.1" and isinstance(a[attrs.SERVER_PORT], int)


def test_chat_openai_api_error_is_recorded_once_with_the_status_code(
    lc_metered: Metered, openai_metered: Any
) -> None:
    import openai

    from agent_otel.fakes.openai_server import Reply

    openai_metered.script(Reply(status=429))
    with pytest.raises(openai.RateLimitError):
        _chat_openai(openai_metered).invoke("hello")
    span = one(lc_metered.exporter.get_finished_spans(), "chat gpt-4o-mini")
    assert span.status.status_code is StatusCode.ERROR and span.attributes[attrs.ERROR_TYPE] == "429"
    (duration,) = lc_metered.points(gm.OPERATION_DURATION)
    assert duration.count == 1 and duration.attributes[attrs.ERROR_TYPE] == "429"


def test_chat_openai_content_is_serialised_once(
    lc: Any, openai_server: Any, capture_content: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    kinds: list[str] = []
    real = content.to_json

    def counting(value: Any, *, kind: str) -> Any:
        kinds.append(kind)
        return real(value, kind=kind)

    monkeypatch.setattr(content, "to_json", counting)
    _chat_openai(openai_server).invoke("hello")
    # LangChain owns the call: the SDK layer beneath serialises neither the prompt nor the answer again.
    assert sorted(kinds) == ["input_messages", "output_messages"]
    a = one(lc.get_finished_spans(), "chat gpt-4o-mini").attributes
    assert json.loads(a[attrs.GEN_AI_OUTPUT_MESSAGES])[0]["role"] == "assistant"


# --------------------------------------------------------------------------- setup


def test_instrument_is_idempotent_and_uninstrument_removes_spans(otel: Any) -> None:
    exporter = otel[1]
    lc_instrumentation.uninstrument()
    assert lc_instrumentation.instrument()
    assert lc_instrumentation.instrument()
    ScriptedChatModel(plan=_no_tools).invoke("hi")
    assert len(exporter.get_finished_spans()) == 1
    lc_instrumentation.uninstrument()
    ScriptedChatModel(plan=_no_tools).invoke("hi")
    assert len(exporter.get_finished_spans()) == 1


def test_uninstrument_restores_every_patched_function(otel: Any) -> None:
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.tools import BaseTool
    from langgraph.pregel import Pregel
    from langgraph.pregel._loop import PregelLoop

    lc_instrumentation.uninstrument()
    owners = [
        (BaseChatModel, "_generate_with_cache"),
        (BaseChatModel, "stream"),
        (BaseTool, "run"),
        (Pregel, "invoke"),
        (PregelLoop, "_suppress_interrupt"),  # replaced by a plain function, not a wrapt proxy
    ]
    originals = [vars(owner)[name] for owner, name in owners]
    assert lc_instrumentation.instrument()
    patched = [vars(owner)[name] for owner, name in owners]
    assert all(new is not old for new, old in zip(patched, originals, strict=True))
    lc_instrumentation.uninstrument()
    assert [vars(owner)[name] for owner, name in owners] == originals


def test_missing_langchain_returns_false(monkeypatch: pytest.MonkeyPatch) -> None:
    lc_instrumentation.uninstrument()
    monkeypatch.setitem(sys.modules, "langchain_core", None)
    assert lc_instrumentation.instrument() is False


def test_old_langchain_returns_false(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    from agent_otel.instrumentation.langchain import PACKAGE

    lc_instrumentation.uninstrument()
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "0.2.43" if name == PACKAGE else real(name))
    assert lc_instrumentation.instrument() is False


def test_missing_langgraph_keeps_langchain(otel: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_otel.instrumentation import langgraph as lg_instrumentation

    lc_instrumentation.uninstrument()
    monkeypatch.setitem(sys.modules, "langgraph.pregel", None)
    assert lg_instrumentation.instrument() is False
    try:
        assert lc_instrumentation.instrument()
        assert lc_instrumentation._State.langgraph is False
        ScriptedChatModel(plan=_no_tools).invoke("hi")
        assert len(otel[1].get_finished_spans()) == 1
    finally:
        lc_instrumentation.uninstrument()


def test_glue_runnables_get_no_spans_by_default(lc: Any) -> None:
    chain = (
        ChatPromptTemplate.from_messages([("human", "{q}")])
        | ScriptedChatModel(plan=_no_tools)
        | StrOutputParser()
    )
    assert chain.invoke({"q": "hi"}) == "Hello!"
    assert span_tree(list(lc.get_finished_spans())) == ["chat scripted-1"]


def test_chain_spans_setting(otel: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_OTEL_LANGCHAIN_CHAIN_SPANS", "true")
    config.reload_settings()
    assert lc_instrumentation.instrument()
    try:
        chain = (
            ChatPromptTemplate.from_messages([("human", "{q}")])
            | ScriptedChatModel(plan=_no_tools)
            | StrOutputParser()
        )
        assert chain.invoke({"q": "hi"}) == "Hello!"
    finally:
        lc_instrumentation.uninstrument()
    assert span_tree(list(otel[1].get_finished_spans())) == [
        "invoke_workflow RunnableSequence",
        "  invoke_workflow ChatPromptTemplate",
        "  chat scripted-1",
        "  invoke_workflow StrOutputParser",
    ]


def test_sdk_called_directly_in_a_node_is_under_the_node(lc: Any, openai_server: Any) -> None:
    """A node that calls the openai SDK itself (no LangChain model): its LLM span is the node's child."""
    import openai
    from langgraph.graph import START, MessagesState, StateGraph

    client = openai.OpenAI(base_url=openai_server.base_url, api_key="sk-fake", max_retries=0)

    def call_model(state: MessagesState) -> dict[str, Any]:
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        return {"messages": [("ai", reply.choices[0].message.content)]}

    g = StateGraph(MessagesState)
    g.add_node("call_model", call_model)
    g.add_edge(START, "call_model")
    g.compile(name="raw_sdk").invoke({"messages": [("human", "hi")]}, {"configurable": {"thread_id": "raw"}})
    finished = list(lc.get_finished_spans())
    assert span_tree(finished) == ["invoke_agent raw_sdk", "  node call_model", "    chat gpt-4o-mini"]
    _check_openai_llm(one(finished, "chat gpt-4o-mini"))
