"""Event filtering (Koog's messageFilter): by category setting and by a Python callable."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import agent_otel
from agent_otel import attributes as attrs
from agent_otel import config, spans


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    got = exporter.get_finished_spans()
    out = {s.name: s for s in got}
    assert len(out) == len(got), [s.name for s in got]
    return out


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def run_turn() -> None:
    """agent > workflow > node > (llm, tool), with the manual API."""
    with agent_otel.agent("bot"), agent_otel.workflow("graph"), agent_otel.node("think"):
        with agent_otel.llm("m", provider="p") as h:
            h.set_usage(input_tokens=1)
        with agent_otel.tool("search"):
            pass


@pytest.fixture
def categories(monkeypatch: pytest.MonkeyPatch) -> Any:
    def set_categories(value: str) -> None:
        monkeypatch.setenv("AGENT_OTEL_CATEGORIES", value)
        config.reload_settings()

    return set_categories


def test_everything_recorded_by_default(span_exporter: InMemorySpanExporter) -> None:
    run_turn()
    assert len(span_exporter.get_finished_spans()) == 5


def test_only_agent_and_llm(span_exporter: InMemorySpanExporter, categories: Any) -> None:
    categories("agent,llm")
    run_turn()
    got = by_name(span_exporter)
    assert set(got) == {"invoke_agent bot", "chat m"}
    # the dropped workflow and node do not break the tree: the LLM call hangs off the agent
    assert parent_of(got["chat m"]) == got["invoke_agent bot"].context.span_id
    assert got["chat m"].attributes[attrs.GEN_AI_USAGE_INPUT_TOKENS] == 1


def test_dropping_the_agent_keeps_the_callers_parent(
    span_exporter: InMemorySpanExporter, tracer_provider: TracerProvider, categories: Any
) -> None:
    categories("tool")
    with tracer_provider.get_tracer("app").start_as_current_span("request") as request:
        run_turn()
    got = by_name(span_exporter)
    assert set(got) == {"request", "execute_tool search"}
    assert parent_of(got["execute_tool search"]) == request.get_span_context().span_id


def test_exceptions_still_propagate_through_dropped_spans(
    span_exporter: InMemorySpanExporter, categories: Any
) -> None:
    categories("agent")
    err = KeyError("k")

    @agent_otel.node
    def step() -> None:
        raise err

    with pytest.raises(KeyError) as info, agent_otel.agent("bot"):
        step()
    assert info.value is err
    (agent,) = span_exporter.get_finished_spans()
    assert agent.status.status_code is StatusCode.ERROR


def test_callable_drops_debug_tools(span_exporter: InMemorySpanExporter) -> None:
    def no_debug_tools(category: str, name: str, attributes: Mapping[str, Any]) -> bool:
        return not (
            category == "tool" and str(attributes.get(attrs.GEN_AI_TOOL_NAME, "")).startswith("debug_")
        )

    agent_otel.set_span_filter(no_debug_tools)
    with agent_otel.agent("bot"):
        with agent_otel.tool("debug_dump"):
            with agent_otel.llm("m", provider="p"):
                pass
        with agent_otel.tool("search"):
            pass
    got = by_name(span_exporter)
    assert set(got) == {"invoke_agent bot", "execute_tool search", "chat m"}
    assert parent_of(got["chat m"]) == got["invoke_agent bot"].context.span_id

    agent_otel.set_span_filter(None)
    with agent_otel.tool("debug_dump"):
        pass
    assert "execute_tool debug_dump" in by_name(span_exporter)


def test_filter_sees_category_name_and_start_attributes(span_exporter: InMemorySpanExporter) -> None:
    seen: list[tuple[str, str, dict[str, Any]]] = []

    def spy(category: str, name: str, attributes: Mapping[str, Any]) -> bool:
        seen.append((category, name, dict(attributes)))
        with pytest.raises(TypeError):
            attributes["x"] = 1  # type: ignore[index]  # read-only: the filter cannot edit our span
        return True

    agent_otel.set_span_filter(spy)
    with agent_otel.session("conv-1"):
        run_turn()
    assert [(c, n) for c, n, _ in seen] == [
        ("agent", "invoke_agent bot"),
        ("workflow", "invoke_workflow graph"),
        ("node", "node think"),
        ("llm", "chat m"),
        ("tool", "execute_tool search"),
    ]
    for category, _, attributes in seen:
        assert attributes[attrs.CATEGORY] == category
        assert attributes[attrs.GEN_AI_CONVERSATION_ID] == "conv-1"
    assert seen[3][2][attrs.GEN_AI_REQUEST_MODEL] == "m"
    assert "x" not in span_exporter.get_finished_spans()[0].attributes


def test_filter_not_asked_for_merged_llm_handles(span_exporter: InMemorySpanExporter) -> None:
    calls: list[str] = []
    agent_otel.set_span_filter(lambda c, n, a: calls.append(n) or True)
    with agent_otel.llm("m", provider="p"):
        inner = spans.start_llm(model="m", provider="p")
        assert not inner.owned
    assert calls == ["chat m"]
    assert len(span_exporter.get_finished_spans()) == 1


def test_dropped_llm_then_nested_call_is_filtered_too(span_exporter: InMemorySpanExporter) -> None:
    agent_otel.set_span_filter(lambda c, n, a: c != "llm")
    with agent_otel.agent("bot"), agent_otel.llm("m", provider="p") as outer:
        assert not outer.recording
        inner = spans.start_llm(model="m", provider="p")
        assert not inner.recording
        inner.end()
    assert [s.name for s in span_exporter.get_finished_spans()] == ["invoke_agent bot"]


def test_truthy_and_falsy_filter_results(span_exporter: InMemorySpanExporter) -> None:
    agent_otel.set_span_filter(lambda c, n, a: "yes" if c == "agent" else 0)  # type: ignore[arg-type,return-value]
    run_turn()
    assert [s.name for s in span_exporter.get_finished_spans()] == ["invoke_agent bot"]


def test_category_setting_and_filter_combine(span_exporter: InMemorySpanExporter, categories: Any) -> None:
    categories("agent,tool")
    agent_otel.set_span_filter(lambda c, n, a: c != "agent")
    run_turn()
    assert [s.name for s in span_exporter.get_finished_spans()] == ["execute_tool search"]


def test_a_raising_filter_keeps_the_span_and_warns_once(
    span_exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(category: str, name: str, attributes: Mapping[str, Any]) -> bool:
        raise ZeroDivisionError("filter bug")

    agent_otel.set_span_filter(broken)
    with caplog.at_level(logging.DEBUG, logger="agent_otel"):
        run_turn()  # never raises into the caller
        run_turn()
    assert len(span_exporter.get_finished_spans()) == 10  # kept: failing open loses nothing
    messages = [r for r in caplog.records if "span filter raised" in r.getMessage()]
    assert [r.levelno for r in messages] == [logging.WARNING] + [logging.DEBUG] * 9
    # Installing a (new) filter re-arms the warning.
    agent_otel.set_span_filter(broken)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="agent_otel"):
        spans.start_tool("t").end()
    assert any("span filter raised" in r.getMessage() for r in caplog.records)


def test_a_filter_raising_base_exception_is_not_swallowed(span_exporter: InMemorySpanExporter) -> None:
    """Only Exception is contained: a KeyboardInterrupt in the filter still stops the program."""

    def interrupted(category: str, name: str, attributes: Mapping[str, Any]) -> bool:
        raise KeyboardInterrupt

    agent_otel.set_span_filter(interrupted)
    with pytest.raises(KeyboardInterrupt):
        spans.start_tool("t")


def test_instrument_accepts_a_filter(
    monkeypatch: pytest.MonkeyPatch, span_exporter: InMemorySpanExporter
) -> None:
    from agent_otel import setup

    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")  # only the hooks: no provider, no libraries
    setup.instrument(span_filter=lambda c, n, a: c == "tool")
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    config.reload_settings()
    run_turn()
    assert [s.name for s in span_exporter.get_finished_spans()] == ["execute_tool search"]
