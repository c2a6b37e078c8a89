"""LangChain tools as tool spans: call ids, failures, handled ToolExceptions, invalid arguments, pauses."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import StructuredTool, ToolException, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import interrupt
from opentelemetry.trace import SpanKind, StatusCode

from _lc_fakes import ScriptedChatModel, broken_tool, count_letters, get_weather, lc, named, one, span_tree
from agent_otel import attributes as attrs

__all__ = ["lc"]

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from langgraph.prebuilt import ToolNode, create_react_agent


def _agent(plan: Any, tools: list[Any], **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_react_agent(ScriptedChatModel(plan=plan), tools, **kwargs)


def _calls(name: str, args: dict[str, Any], call_id: str = "call_1") -> Any:
    return lambda text: [{"name": name, "args": args, "id": call_id}]


def test_tool_span_outside_a_graph(lc: Any) -> None:
    assert get_weather.invoke({"city": "Oslo"}) == "sunny in Oslo"
    msg = get_weather.invoke(
        {"type": "tool_call", "name": "get_weather", "args": {"city": "Rome"}, "id": "c9"}
    )
    assert isinstance(msg, ToolMessage) and msg.content == "sunny in Rome"
    first, second = named(lc.get_finished_spans(), "execute_tool get_weather")
    assert first.kind is SpanKind.INTERNAL
    assert first.attributes[attrs.GEN_AI_TOOL_NAME] == "get_weather"
    assert first.attributes[attrs.GEN_AI_TOOL_TYPE] == "function"
    assert first.attributes[attrs.GEN_AI_TOOL_DESCRIPTION] == "Return the weather for a city."
    assert attrs.GEN_AI_TOOL_CALL_ID not in first.attributes
    assert second.attributes[attrs.GEN_AI_TOOL_CALL_ID] == "c9"
    assert second.attributes[attrs.TOOL_OUTCOME] == "success"
    assert attrs.GEN_AI_TOOL_CALL_ARGUMENTS not in second.attributes


def test_code_inside_a_tool_is_its_child(lc: Any, tracer_provider: Any) -> None:
    """An HTTP-client span made in the tool body (any instrumentation) hangs under the tool span."""
    tracer = tracer_provider.get_tracer("http-client")

    @tool
    def fetch(url: str) -> str:
        """Fetch a URL."""
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT):
            return "ok"

    _agent(_calls("fetch", {"url": "http://x"}), [fetch]).invoke({"messages": [HumanMessage("go")]})
    assert span_tree(list(lc.get_finished_spans())) == [
        "invoke_agent LangGraph",
        "  node agent",
        "    chat scripted-1",
        "  node tools",
        "    execute_tool fetch",
        "      GET",
        "  node agent",
        "    chat scripted-1",
    ]


async def test_async_tool_and_sync_tool_in_async_run(lc: Any, tracer_provider: Any) -> None:
    tracer = tracer_provider.get_tracer("http-client")

    @tool
    async def afetch(url: str) -> str:
        """Fetch a URL, async."""
        with tracer.start_as_current_span("GET async"):
            return "ok"

    @tool
    def sfetch(url: str) -> str:
        """Fetch a URL, sync (runs in a thread under ainvoke)."""
        with tracer.start_as_current_span("GET sync"):
            return "ok"

    def plan(text: str) -> list[dict[str, Any]]:
        return [
            {"name": "afetch", "args": {"url": "a"}, "id": "call_a"},
            {"name": "sfetch", "args": {"url": "s"}, "id": "call_s"},
        ]

    await _agent(plan, [afetch, sfetch]).ainvoke({"messages": [HumanMessage("go")]})
    assert span_tree(list(lc.get_finished_spans()), order="name") == [
        "invoke_agent LangGraph",
        "  node agent",
        "    chat scripted-1",
        "  node agent",
        "    chat scripted-1",
        "  node tools",
        "    execute_tool afetch",
        "      GET async",
        "  node tools",
        "    execute_tool sfetch",
        "      GET sync",
    ]


def test_raising_tool_fails_and_the_run_fails(lc: Any) -> None:
    """LangGraph's default ToolNode handler re-raises non-validation errors: the run fails too."""
    with pytest.raises(RuntimeError, match="weather service down"):
        _agent(_calls("broken_tool", {"city": "Oslo"}), [broken_tool]).invoke(
            {"messages": [HumanMessage("go")]}
        )
    finished = list(lc.get_finished_spans())
    assert span_tree(finished) == [
        "invoke_agent LangGraph",
        "  node agent",
        "    chat scripted-1",
        "  node tools",
        "    execute_tool broken_tool",
    ]
    for name in ("execute_tool broken_tool", "node tools", "invoke_agent LangGraph"):
        span = one(finished, name)
        assert span.status.status_code is StatusCode.ERROR, name
        assert span.attributes[attrs.ERROR_TYPE] == "RuntimeError"
    tool_span = one(finished, "execute_tool broken_tool")
    assert tool_span.attributes[attrs.TOOL_OUTCOME] == "error"
    assert tool_span.attributes[attrs.GEN_AI_TOOL_CALL_ID] == "call_1"
    assert [e.name for e in tool_span.events] == ["exception"]


def test_error_handled_by_tool_node_still_fails_the_tool(lc: Any) -> None:
    tools = ToolNode([broken_tool], handle_tool_errors=True)
    out = _agent(_calls("broken_tool", {"city": "Oslo"}), tools).invoke({"messages": [HumanMessage("go")]})
    assert out["messages"][2].status == "error"
    finished = list(lc.get_finished_spans())
    tool_span = one(finished, "execute_tool broken_tool")
    assert tool_span.status.status_code is StatusCode.ERROR
    assert tool_span.attributes[attrs.ERROR_TYPE] == "RuntimeError"
    assert one(finished, "invoke_agent LangGraph").status.status_code is StatusCode.UNSET
    assert all(s.status.status_code is StatusCode.UNSET for s in named(finished, "node tools"))


def test_tool_exception_handled_by_the_tool_is_a_failed_tool(lc: Any) -> None:
    def lookup(city: str) -> str:
        raise ToolException(f"no data for {city}")

    flaky = StructuredTool.from_function(
        lookup, name="lookup", description="Look up.", handle_tool_error=True
    )
    out = _agent(_calls("lookup", {"city": "Oslo"}, "call_t"), [flaky]).invoke(
        {"messages": [HumanMessage("go")]}
    )
    tool_msg = out["messages"][2]
    assert tool_msg.content == "no data for Oslo" and tool_msg.status == "error"
    finished = list(lc.get_finished_spans())
    span = one(finished, "execute_tool lookup")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[attrs.ERROR_TYPE] == "ToolException"
    assert span.attributes[attrs.TOOL_OUTCOME] == "error"
    assert span.attributes[attrs.GEN_AI_TOOL_CALL_ID] == "call_t"
    assert one(finished, "invoke_agent LangGraph").status.status_code is StatusCode.UNSET
    assert len(named(finished, "chat scripted-1")) == 2


def test_invalid_arguments_are_a_validation_error(lc: Any) -> None:
    plan = _calls("count_letters", {"word": "kiwi", "times": "many-secret"})
    out = _agent(plan, [count_letters]).invoke({"messages": [HumanMessage("count")]})
    assert out["messages"][2].status == "error"  # ToolNode told the model; the turn went on
    finished = list(lc.get_finished_spans())
    assert len(named(finished, "chat scripted-1")) == 2
    span = one(finished, "execute_tool count_letters")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[attrs.ERROR_TYPE] == "ToolValidationError"
    assert span.attributes[attrs.TOOL_OUTCOME] == "validation_error"
    assert "times" in span.status.description
    assert "many-secret" not in span.status.description  # content capture is off
    assert one(finished, "invoke_agent LangGraph").status.status_code is StatusCode.UNSET


def test_invalid_arguments_handled_by_the_tool(lc: Any) -> None:
    strict = StructuredTool.from_function(
        lambda word, times: len(word) * times,
        name="strict",
        description="Strict.",
        args_schema=count_letters.args_schema,
        handle_validation_error="bad arguments",
    )
    assert strict.invoke({"word": "kiwi", "times": "x"}) == "bad arguments"
    span = one(lc.get_finished_spans(), "execute_tool strict")
    assert span.attributes[attrs.TOOL_OUTCOME] == "validation_error"
    assert span.status.status_code is StatusCode.ERROR


def test_interrupt_inside_a_tool_is_a_pause(lc: Any) -> None:
    @tool
    def ask_human(question: str) -> str:
        """Ask the human."""
        return str(interrupt(question))

    agent = _agent(_calls("ask_human", {"question": "ok?"}), [ask_human], checkpointer=InMemorySaver())
    out = agent.invoke({"messages": [HumanMessage("go")]}, {"configurable": {"thread_id": "h"}})
    assert out["__interrupt__"][0].value == "ok?"
    finished = list(lc.get_finished_spans())
    span = one(finished, "execute_tool ask_human")
    assert span.attributes[attrs.INTERRUPT] is True
    assert span.status.status_code is StatusCode.UNSET
    assert attrs.TOOL_OUTCOME not in span.attributes  # paused: neither a success nor a failure yet
    assert one(finished, "invoke_agent LangGraph").attributes[attrs.INTERRUPT] is True


def test_content_capture_records_arguments_and_result(lc: Any, capture_content: None) -> None:
    _agent(_calls("get_weather", {"city": "Oslo"}), [get_weather]).invoke({"messages": [HumanMessage("go")]})
    finished = list(lc.get_finished_spans())
    span = one(finished, "execute_tool get_weather")
    assert json.loads(span.attributes[attrs.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"city": "Oslo"}
    assert span.attributes[attrs.GEN_AI_TOOL_CALL_RESULT] == "sunny in Oslo"
    node = named(finished, "node agent")[0]
    assert "go" in node.attributes[attrs.NODE_INPUT]
    assert "messages" in node.attributes[attrs.NODE_OUTPUT]


def test_unknown_tool_is_a_validation_error(lc: Any) -> None:
    out = _agent(_calls("no_such_tool", {"x": 1}, "call_u"), [get_weather]).invoke(
        {"messages": [HumanMessage("go")]}
    )
    assert out["messages"][2].status == "error"
    finished = list(lc.get_finished_spans())
    span = one(finished, "execute_tool no_such_tool")
    assert span.attributes[attrs.GEN_AI_TOOL_CALL_ID] == "call_u"
    assert span.attributes[attrs.TOOL_OUTCOME] == "validation_error"
    assert span.attributes[attrs.ERROR_TYPE] == "ToolNotFound"
    assert span.parent.span_id == named(finished, "node tools")[0].context.span_id
