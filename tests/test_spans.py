"""The span factory (agent_otel.spans): taxonomy, handle operations, the one-LLM-span rule, never raising."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agent_otel import attributes as attrs
from agent_otel import spans
from agent_otel.attributes import Category


def finished(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    """The finished spans by name (names are unique within each test)."""
    out = {s.name: s for s in exporter.get_finished_spans()}
    assert len(out) == len(exporter.get_finished_spans()), "span names are not unique in this test"
    return out


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


# --- taxonomy: names, kinds, categories, operation names ------------------------------------------


def test_agent_span_taxonomy(span_exporter: InMemorySpanExporter) -> None:
    h = spans.start_agent(
        "bot", agent_id="a-1", conversation_id="conv-9", attributes={"custom": 1, "none": None}
    )
    assert h.recording and h.owned and h.category is Category.AGENT
    h.end()
    (s,) = span_exporter.get_finished_spans()
    assert s.name == "invoke_agent bot"
    assert s.kind is SpanKind.INTERNAL
    assert s.attributes[attrs.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert s.attributes[attrs.GEN_AI_AGENT_NAME] == "bot"
    assert s.attributes[attrs.GEN_AI_AGENT_ID] == "a-1"
    assert s.attributes[attrs.GEN_AI_CONVERSATION_ID] == "conv-9"
    assert s.attributes[attrs.CATEGORY] == "agent"
    assert s.attributes["custom"] == 1
    assert "none" not in s.attributes
    assert s.status.status_code is StatusCode.UNSET
    assert s.instrumentation_scope.name == spans.INSTRUMENTATION_SCOPE


def test_agent_without_name(span_exporter: InMemorySpanExporter) -> None:
    spans.start_agent().end()
    (s,) = span_exporter.get_finished_spans()
    assert s.name == "invoke_agent"
    assert attrs.GEN_AI_AGENT_NAME not in s.attributes


def test_workflow_node_tool_llm_taxonomy(span_exporter: InMemorySpanExporter) -> None:
    spans.start_workflow("x").end()
    spans.start_node("x", step=3, triggers=["start", "tools"]).end()
    spans.start_llm(
        model="gpt-4o", provider="openai", server_address="api.example.com", server_port=443, stream=True
    ).end()
    spans.start_tool("t", call_id="call_1", description="does t").end()
    got = finished(span_exporter)
    assert set(got) == {"invoke_workflow x", "node x", "chat gpt-4o", "execute_tool t"}

    wf = got["invoke_workflow x"]
    assert wf.kind is SpanKind.INTERNAL
    assert wf.attributes[attrs.GEN_AI_OPERATION_NAME] == "invoke_workflow"
    assert wf.attributes[attrs.GEN_AI_WORKFLOW_NAME] == "x"
    assert wf.attributes[attrs.CATEGORY] == "workflow"

    node = got["node x"]
    assert node.kind is SpanKind.INTERNAL
    assert node.attributes[attrs.NODE_NAME] == "x"
    assert node.attributes[attrs.NODE_STEP] == 3
    assert node.attributes[attrs.NODE_TRIGGERS] == ("start", "tools")
    assert node.attributes[attrs.CATEGORY] == "node"

    llm = got["chat gpt-4o"]
    assert llm.kind is SpanKind.CLIENT
    assert llm.attributes[attrs.GEN_AI_OPERATION_NAME] == "chat"
    assert llm.attributes[attrs.GEN_AI_PROVIDER_NAME] == "openai"
    assert llm.attributes[attrs.GEN_AI_REQUEST_MODEL] == "gpt-4o"
    assert llm.attributes[attrs.SERVER_ADDRESS] == "api.example.com"
    assert llm.attributes[attrs.SERVER_PORT] == 443
    assert llm.attributes[attrs.GEN_AI_REQUEST_STREAM] is True
    assert llm.attributes[attrs.CATEGORY] == "llm"

    tool = got["execute_tool t"]
    assert tool.kind is SpanKind.INTERNAL
    assert tool.attributes[attrs.GEN_AI_OPERATION_NAME] == "execute_tool"
    assert tool.attributes[attrs.GEN_AI_TOOL_NAME] == "t"
    assert tool.attributes[attrs.GEN_AI_TOOL_CALL_ID] == "call_1"
    assert tool.attributes[attrs.GEN_AI_TOOL_TYPE] == "function"
    assert tool.attributes[attrs.GEN_AI_TOOL_DESCRIPTION] == "does t"
    assert tool.attributes[attrs.CATEGORY] == "tool"
    assert tool.attributes[attrs.TOOL_OUTCOME] == "success"


def test_llm_other_operation_and_no_model(span_exporter: InMemorySpanExporter) -> None:
    spans.start_llm(model="text-embedding-3-small", provider="openai", operation="embeddings").end()
    spans.start_llm(model=None, provider="anthropic").end()
    got = finished(span_exporter)
    assert got["embeddings text-embedding-3-small"].attributes[attrs.GEN_AI_OPERATION_NAME] == "embeddings"
    bare = got["chat"]
    assert attrs.GEN_AI_REQUEST_MODEL not in bare.attributes
    assert attrs.GEN_AI_REQUEST_STREAM not in bare.attributes
    assert bare.attributes[attrs.GEN_AI_PROVIDER_NAME] == "anthropic"


def test_explicit_parent_and_start_time(span_exporter: InMemorySpanExporter) -> None:
    agent = spans.start_agent("bot")
    other = spans.start_workflow("other")
    t0 = time.time_ns() - 5_000_000_000
    # Current context has `other` active, but the explicit parent wins.
    with other.activate():
        tool = spans.start_tool("t", parent=agent.context, start_time=t0)
    tool.end(end_time=t0 + 1000)
    other.end()
    agent.end()
    got = finished(span_exporter)
    assert parent_id(got["execute_tool t"]) == got["invoke_agent bot"].context.span_id
    assert got["execute_tool t"].start_time == t0
    assert got["execute_tool t"].end_time == t0 + 1000
    assert got["execute_tool t"].context.trace_id == got["invoke_agent bot"].context.trace_id


def test_current_context_is_the_default_parent(span_exporter: InMemorySpanExporter) -> None:
    agent = spans.start_agent("bot")
    with agent.activate():
        node = spans.start_node("n")
        with node.activate():
            spans.start_tool("t").end()
        node.end()
    agent.end()
    got = finished(span_exporter)
    assert parent_id(got["execute_tool t"]) == got["node n"].context.span_id
    assert parent_id(got["node n"]) == got["invoke_agent bot"].context.span_id
    assert got["invoke_agent bot"].parent is None
    assert trace.get_current_span() is trace.INVALID_SPAN  # activate() detached


def test_agent_inside_a_callers_span_stays_a_child(
    span_exporter: InMemorySpanExporter, tracer_provider: TracerProvider
) -> None:
    tracer = tracer_provider.get_tracer("http")
    with tracer.start_as_current_span("GET /chat") as server:
        spans.start_agent("bot").end()
    got = finished(span_exporter)
    assert parent_id(got["invoke_agent bot"]) == server.get_span_context().span_id


# --- fail / validation / end ----------------------------------------------------------------------


class MyError(Exception):
    class Nested(ValueError):
        pass


def test_fail_with_exception(span_exporter: InMemorySpanExporter) -> None:
    h = spans.start_agent("bot")
    err = MyError.Nested("bad input")
    h.fail(err)
    assert h.failed and not h.ended
    h.end()
    (s,) = span_exporter.get_finished_spans()
    assert s.status.status_code is StatusCode.ERROR
    assert s.status.description == "Nested: bad input"
    assert s.attributes[attrs.ERROR_TYPE] == "MyError.Nested"
    assert attrs.INTERRUPTED not in s.attributes
    (event,) = s.events
    assert event.name == "exception"
    assert str(event.attributes["exception.type"]).endswith("Nested")
    assert event.attributes["exception.message"] == "bad input"


def test_fail_without_exception(span_exporter: InMemorySpanExporter) -> None:
    h = spans.start_llm(model="m", provider="p")
    h.fail(error_type="rate_limited", message="429 from provider")
    h.end()
    h2 = spans.start_llm(model="m2", provider="p")
    h2.fail()
    h2.end()
    got = finished(span_exporter)
    s = got["chat m"]
    assert s.status.status_code is StatusCode.ERROR
    assert s.status.description == "429 from provider"
    assert s.attributes[attrs.ERROR_TYPE] == "rate_limited"
    assert not s.events
    assert got["chat m2"].attributes[attrs.ERROR_TYPE] == attrs.ERROR_TYPE_OTHER


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), asyncio.CancelledError(), SystemExit(3)])
def test_interruptions_are_marked(span_exporter: InMemorySpanExporter, exc: BaseException) -> None:
    h = spans.start_agent("bot")
    h.fail(exc)
    h.end()
    (s,) = span_exporter.get_finished_spans()
    assert s.status.status_code is StatusCode.ERROR
    assert s.attributes[attrs.INTERRUPTED] is True
    assert s.attributes[attrs.ERROR_TYPE] == type(exc).__qualname__


def test_fail_with_exception_whose_str_raises(span_exporter: InMemorySpanExporter) -> None:
    class Weird(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    h = spans.start_tool("t")
    h.fail(Weird())
    h.end()
    (s,) = span_exporter.get_finished_spans()
    assert s.status.status_code is StatusCode.ERROR
    assert s.attributes[attrs.ERROR_TYPE].endswith("Weird")
    assert s.attributes[attrs.TOOL_OUTCOME] == "error"


def test_tool_failure_outcome(span_exporter: InMemorySpanExporter) -> None:
    h = spans.start_tool("t")
    h.fail(ValueError("boom"))
    h.end()
    (s,) = span_exporter.get_finished_spans()
    assert s.attributes[attrs.TOOL_OUTCOME] == "error"
    assert s.attributes[attrs.ERROR_TYPE] == "ValueError"


def test_validation_error(span_exporter: InMemorySpanExporter) -> None:
    h = spans.start_tool("t")
    h.validation_error("x must be an int")
    h.end()
    h2 = spans.start_tool("u")
    h2.validation_error(error_type="SchemaError")
    h2.end()
    got = finished(span_exporter)
    s = got["execute_tool t"]
    assert s.status.status_code is StatusCode.ERROR
    assert s.status.description == "x must be an int"
    assert s.attributes[attrs.ERROR_TYPE] == "ToolValidationError"
    assert s.attributes[attrs.TOOL_OUTCOME] == "validation_error"
    u = got["execute_tool u"]
    assert u.attributes[attrs.ERROR_TYPE] == "SchemaError"
    assert u.attributes[attrs.TOOL_OUTCOME] == "validation_error"


def test_tool_outcome_defaults_to_success(span_exporter: InMemorySpanExporter) -> None:
    spans.start_tool("t").end()
    (s,) = span_exporter.get_finished_spans()
    assert s.attributes[attrs.TOOL_OUTCOME] == "success"


def test_set_outcome_none_means_no_outcome(span_exporter: InMemorySpanExporter) -> None:
    h = spans.start_tool("paused")
    h.set_outcome(None)
    h.end()
    h2 = spans.start_tool("skipped")
    h2.set_outcome("skipped")
    h2.end()
    got = finished(span_exporter)
    assert attrs.TOOL_OUTCOME not in got["execute_tool paused"].attributes
    assert got["execute_tool paused"].status.status_code is StatusCode.UNSET
    assert got["execute_tool skipped"].attributes[attrs.TOOL_OUTCOME] == "skipped"


def test_a_failure_keeps_its_outcome_whatever_set_outcome_said(span_exporter: InMemorySpanExporter) -> None:
    h = spans.start_tool("t")
    h.set_outcome(None)
    h.fail(ValueError("boom"))
    h.end()
    (s,) = span_exporter.get_finished_spans()
    assert s.attributes[attrs.TOOL_OUTCOME] == "error"


@pytest.mark.parametrize("through", ["set_attribute", "set_attributes"])
def test_an_interrupt_set_through_the_handle_means_no_outcome(
    span_exporter: InMemorySpanExporter, through: str
) -> None:
    """LangGraph interrupt() inside a tool: a pause, neither a success nor a failure."""
    h = spans.start_tool("t")
    if through == "set_attribute":
        h.set_attribute(attrs.INTERRUPT, True)
    else:
        h.set_attributes({attrs.INTERRUPT: True})
    h.end()
    (s,) = span_exporter.get_finished_spans()
    assert s.attributes[attrs.INTERRUPT] is True
    assert attrs.TOOL_OUTCOME not in s.attributes


def test_the_outcome_is_decided_by_the_handle_not_read_back_from_the_span(
    span_exporter: InMemorySpanExporter,
) -> None:
    h = spans.start_tool("t")
    h.span.set_attribute(attrs.INTERRUPT, True)  # behind the handle's back: not its business
    h.end()
    (s,) = span_exporter.get_finished_spans()
    assert s.attributes[attrs.TOOL_OUTCOME] == "success"


def test_other_categories_record_no_outcome(span_exporter: InMemorySpanExporter) -> None:
    h = spans.start_node("n")
    h.set_outcome("success")
    h.end()
    (s,) = span_exporter.get_finished_spans()
    assert attrs.TOOL_OUTCOME not in s.attributes


def test_end_is_idempotent_and_later_calls_are_noops(
    span_exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    h = spans.start_tool("t")
    t_end = time.time_ns()
    h.end(end_time=t_end)
    with caplog.at_level(logging.WARNING):
        h.end()
        h.end(end_time=t_end + 10)
        h.fail(ValueError("late"))
        h.add_event("late")
        h.set_attribute("late", 1)
        h.validation_error("late")
    assert h.ended
    (s,) = span_exporter.get_finished_spans()
    assert s.end_time == t_end
    assert s.status.status_code is StatusCode.UNSET
    assert s.attributes[attrs.TOOL_OUTCOME] == "success"
    assert not s.events
    assert "late" not in s.attributes
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_span_ended_elsewhere_then_handle_calls(
    span_exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """The interruption handling ends SDK spans directly; the handle must not then warn or double-end."""
    h = spans.start_agent("bot")
    h.span.end()
    with caplog.at_level(logging.WARNING):
        h.fail(KeyboardInterrupt())
        h.set_attribute("k", "v")
        h.end()
    assert len(span_exporter.get_finished_spans()) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_set_usage_response_event(span_exporter: InMemorySpanExporter) -> None:
    h = spans.start_llm(model="gpt-4o", provider="openai")
    h.set_usage(
        input_tokens=10,
        output_tokens=5,
        cache_read_input_tokens=2,
        cache_creation_input_tokens=1,
        reasoning_output_tokens=3,
    )
    h.set_response(model="gpt-4o-2024-08-06", response_id="resp_1", finish_reasons=["stop", "length"])
    h.add_event("first_chunk", {"n": 1})
    h.set_attributes({"a": 1, "b": None})
    h.set_attribute("bad", object())  # not a valid attribute value: dropped, never raises
    h.end()
    (s,) = span_exporter.get_finished_spans()
    a = s.attributes
    assert a[attrs.GEN_AI_USAGE_INPUT_TOKENS] == 10
    assert a[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert a[attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 2
    assert a[attrs.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 1
    assert a[attrs.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 3
    assert a[attrs.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024-08-06"
    assert a[attrs.GEN_AI_RESPONSE_ID] == "resp_1"
    assert a[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop", "length")
    assert a["a"] == 1 and "b" not in a
    assert [e.name for e in s.events] == ["first_chunk"]


def test_partial_usage_sets_only_given(span_exporter: InMemorySpanExporter) -> None:
    h = spans.start_llm(model="m", provider="p")
    h.set_usage(output_tokens=7)
    h.set_response(finish_reasons=[])
    h.end()
    (s,) = span_exporter.get_finished_spans()
    assert s.attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == 7
    assert attrs.GEN_AI_USAGE_INPUT_TOKENS not in s.attributes
    assert attrs.GEN_AI_RESPONSE_FINISH_REASONS not in s.attributes


def test_tool_result_and_arguments_need_content_capture(span_exporter: InMemorySpanExporter) -> None:
    h = spans.start_tool("t")
    h.set_tool_arguments({"q": "secret"})
    h.set_tool_result({"answer": "secret"})
    h.end()
    (s,) = span_exporter.get_finished_spans()
    assert attrs.GEN_AI_TOOL_CALL_ARGUMENTS not in s.attributes
    assert attrs.GEN_AI_TOOL_CALL_RESULT not in s.attributes


def test_tool_result_and_arguments_with_content_capture(
    span_exporter: InMemorySpanExporter, capture_content: None
) -> None:
    h = spans.start_tool("t")
    h.set_tool_arguments({"q": "weather"})
    h.set_tool_result("sunny")
    h.end()
    (s,) = span_exporter.get_finished_spans()
    assert s.attributes[attrs.GEN_AI_TOOL_CALL_ARGUMENTS] == '{"q":"weather"}'
    assert s.attributes[attrs.GEN_AI_TOOL_CALL_RESULT] == "sunny"


# --- the one-LLM-span rule -------------------------------------------------------------------------


def test_nested_llm_merges_into_the_active_one(span_exporter: InMemorySpanExporter) -> None:
    outer = spans.start_llm(model="gpt-4o", provider="openai", attributes={"outer.only": "x"})
    with outer.activate():
        assert spans.active_llm() is outer
        inner = spans.start_llm(
            model="gpt-4o",
            provider="openai",
            server_address="api.openai.com",
            server_port=443,
            attributes={"inner.only": "y", "outer.only": "overwritten?"},
        )
        assert not inner.owned
        assert inner.recording
        assert inner.span is outer.span
        assert inner.context is outer.context
        inner.set_usage(input_tokens=11, output_tokens=4)
        inner.set_response(model="gpt-4o-2024", response_id="r1", finish_reasons=["stop"])
        inner.fail(ValueError("merged handles do not fail the outer span"))
        inner.end()
        assert spans.active_llm() is outer  # the outer is still open
        inner.add_event("chunk")
    outer.set_usage(output_tokens=4)
    outer.end()
    (s,) = span_exporter.get_finished_spans()
    assert s.name == "chat gpt-4o"
    a = s.attributes
    assert a[attrs.SERVER_ADDRESS] == "api.openai.com"
    assert a[attrs.SERVER_PORT] == 443
    assert a["inner.only"] == "y"
    assert a["outer.only"] == "x"  # a merged handle fills what the outer lacks, never overwrites
    assert a[attrs.GEN_AI_USAGE_INPUT_TOKENS] == 11
    assert a[attrs.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024"
    assert a[attrs.GEN_AI_RESPONSE_ID] == "r1"
    assert s.status.status_code is StatusCode.UNSET
    assert [e.name for e in s.events] == ["chunk"]


def test_merged_handle_fills_model_and_provider_the_outer_lacks(span_exporter: InMemorySpanExporter) -> None:
    outer = spans.start_llm(model=None, provider="langchain")
    inner = spans.start_llm(model="claude-x", provider="anthropic", stream=True, parent=outer.context)
    assert not inner.owned
    outer.end()
    (s,) = span_exporter.get_finished_spans()
    assert s.attributes[attrs.GEN_AI_REQUEST_MODEL] == "claude-x"
    assert s.attributes[attrs.GEN_AI_PROVIDER_NAME] == "langchain"
    assert s.attributes[attrs.GEN_AI_REQUEST_STREAM] is True


def test_explicit_parent_llm_context_merges(span_exporter: InMemorySpanExporter) -> None:
    outer = spans.start_llm(model="gpt-4o", provider="openai")
    inner = spans.start_llm(model="gpt-4o", provider="openai", parent=outer.context)
    assert not inner.owned and inner.span is outer.span
    assert spans.active_llm(outer.context) is outer
    assert spans.active_llm() is None  # nothing activated in the current context
    inner.end()
    outer.end()
    assert len(span_exporter.get_finished_spans()) == 1


def test_after_the_outer_ended_a_new_call_gets_its_own_span(span_exporter: InMemorySpanExporter) -> None:
    outer = spans.start_llm(model="a", provider="p")
    ctx = outer.context
    outer.end()
    assert spans.active_llm(ctx) is None
    second = spans.start_llm(model="b", provider="p", parent=ctx)
    assert second.owned
    second.end()
    got = finished(span_exporter)
    assert set(got) == {"chat a", "chat b"}
    assert parent_id(got["chat b"]) == got["chat a"].context.span_id


def test_non_llm_spans_inside_an_llm_are_separate(span_exporter: InMemorySpanExporter) -> None:
    outer = spans.start_llm(model="a", provider="p")
    with outer.activate():
        spans.start_tool("t").end()
    outer.end()
    got = finished(span_exporter)
    assert parent_id(got["execute_tool t"]) == got["chat a"].context.span_id


def test_llm_inside_a_tool_inside_an_llm_is_still_merged_only_by_context(
    span_exporter: InMemorySpanExporter,
) -> None:
    """The rule follows the context: anything under an activated LLM handle merges."""
    outer = spans.start_llm(model="a", provider="p")
    tool = spans.start_tool("t", parent=outer.context)
    inner = spans.start_llm(model="b", provider="p", parent=tool.context)
    assert not inner.owned
    tool.end()
    outer.end()
    assert {s.name for s in span_exporter.get_finished_spans()} == {"chat a", "execute_tool t"}


# --- non-recording handles ---------------------------------------------------------------------------


def test_filtered_node_children_parent_to_the_grandparent(
    span_exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent_otel import config

    monkeypatch.setenv("AGENT_OTEL_CATEGORIES", "agent,tool")
    config.reload_settings()
    agent = spans.start_agent("bot")
    node = spans.start_node("n", parent=agent.context)
    assert not node.recording
    assert node.context is agent.context
    with node.activate():
        tool = spans.start_tool("t")
    node.set_attribute("k", "v")
    node.fail(ValueError("x"))
    node.end()
    tool.end()
    agent.end()
    got = finished(span_exporter)
    assert set(got) == {"invoke_agent bot", "execute_tool t"}
    assert parent_id(got["execute_tool t"]) == got["invoke_agent bot"].context.span_id


def test_disabled_sdk_gives_noop_handles(
    span_exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent_otel import config

    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    config.reload_settings()
    h = spans.start_agent("bot")
    assert not h.recording
    h.fail(ValueError("x"))
    h.end()
    assert span_exporter.get_finished_spans() == ()


def test_sampled_out_parent_propagates(otel: Any) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    provider = TracerProvider(sampler=ALWAYS_OFF)
    exporter = InMemorySpanExporter()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans.set_tracer_provider(provider)
    try:
        agent = spans.start_agent("bot")
        assert not agent.recording
        tool = spans.start_tool("t", parent=agent.context)
        assert not tool.recording
        # The non-recording span carries the trace id down, as OTel sampling expects.
        assert tool.span.get_span_context().trace_id == agent.span.get_span_context().trace_id
        tool.end()
        agent.end()
        assert exporter.get_finished_spans() == ()
    finally:
        spans.set_tracer_provider(otel[0])


# --- never raising ----------------------------------------------------------------------------------


class ExplodingTracer(trace.Tracer):
    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        raise RuntimeError("SDK is broken")

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("SDK is broken")


@pytest.mark.parametrize(
    "start",
    [
        lambda: spans.start_agent("bot"),
        lambda: spans.start_workflow("w"),
        lambda: spans.start_node("n"),
        lambda: spans.start_llm(model="m", provider="p"),
        lambda: spans.start_tool("t"),
    ],
)
def test_sdk_failure_gives_a_warning_and_a_noop_handle(
    span_exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    start: Any,
) -> None:
    monkeypatch.setattr(spans._Factory, "tracer", ExplodingTracer())
    monkeypatch.setattr(spans._Factory, "start_warned", False)
    parent_ctx = context_api.get_current()
    with caplog.at_level(logging.WARNING, logger="agent_otel"):
        h = start()
        assert not h.recording
        assert h.context is parent_ctx
        with h.activate():
            pass
        h.set_usage(input_tokens=1)
        h.set_response(model="m")
        h.set_tool_result("r")
        h.add_event("e")
        h.fail(ValueError("x"))
        h.validation_error("v")
        h.end()
        h.end()
    assert any("could not start" in r.getMessage() for r in caplog.records)
    assert span_exporter.get_finished_spans() == ()


def test_llm_failure_inside_sdk_does_not_mark_llm_active(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spans._Factory, "tracer", ExplodingTracer())
    h = spans.start_llm(model="m", provider="p")
    assert spans.active_llm(h.context) is None


def test_a_broken_sdk_warns_once_not_per_span(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(spans._Factory, "tracer", ExplodingTracer())
    monkeypatch.setattr(spans._Factory, "start_warned", False)
    with caplog.at_level(logging.DEBUG, logger="agent_otel"):
        for _ in range(5):
            spans.start_tool("t").end()
    levels = [r.levelno for r in caplog.records if "could not start" in r.getMessage()]
    assert levels == [logging.WARNING] + [logging.DEBUG] * 4


def test_global_provider_used_when_none_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without set_tracer_provider the factory uses the global provider (a no-op proxy here)."""
    monkeypatch.setattr(spans._Factory, "tracer", None)
    h = spans.start_agent("bot")
    h.end()
    assert h.ended
    assert spans._Factory.tracer is not None  # cached: a proxy that follows the global provider


def test_error_type_of() -> None:
    assert spans.error_type_of(ValueError()) == "ValueError"
    assert spans.error_type_of(MyError.Nested()) == "MyError.Nested"


def test_caller_attributes_cannot_change_the_category(span_exporter: InMemorySpanExporter) -> None:
    spans.start_tool("t", attributes={attrs.CATEGORY: "agent", attrs.GEN_AI_TOOL_TYPE: "extension"}).end()
    (s,) = span_exporter.get_finished_spans()
    assert s.attributes[attrs.CATEGORY] == "tool"
    assert s.attributes[attrs.GEN_AI_TOOL_TYPE] == "extension"  # other keys: the caller's value wins
