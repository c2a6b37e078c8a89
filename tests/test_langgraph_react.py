"""A prebuilt ReAct agent (``create_react_agent``) on real LangGraph: the span tree of a turn.

The scripted chat model requests ``get_weather`` once, then answers: one turn is 2 LLM calls and 1
tool call, and must read agent -> node(agent) -> LLM -> node(tools) -> tool -> node(agent) -> LLM.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from opentelemetry.trace import SpanKind, StatusCode

from _lc_fakes import REACT_TURN, ScriptedChatModel, descendants, get_weather, lc, named, one, span_tree
from agent_otel import attributes as attrs
from agent_otel import session

__all__ = ["lc"]

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from langgraph.prebuilt import create_react_agent


def _agent(**kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_react_agent(ScriptedChatModel(**kwargs.pop("model", {})), [get_weather], **kwargs)


def _ask(city: str = "Paris") -> dict[str, Any]:
    return {"messages": [HumanMessage(f"weather in {city}")]}


def _check_turn(finished: list[Any], conversation: str | None) -> None:
    """Assert the exact ReAct tree, categories, kinds, parents and statuses of one turn."""
    assert span_tree(finished) == REACT_TURN
    agent = one(finished, "invoke_agent LangGraph")
    assert agent.parent is None
    assert agent.attributes[attrs.CATEGORY] == "agent"
    assert agent.attributes[attrs.GEN_AI_AGENT_NAME] == "LangGraph"
    assert agent.attributes.get(attrs.GEN_AI_CONVERSATION_ID) == conversation
    assert attrs.INTERRUPT not in agent.attributes
    nodes = named(finished, "node agent") + named(finished, "node tools")
    for node in nodes:
        assert node.attributes[attrs.CATEGORY] == "node"
        assert node.parent.span_id == agent.context.span_id
    steps = {n.name: [] for n in nodes}
    for n in sorted(nodes, key=lambda s: s.start_time):
        steps[n.name].append(n.attributes[attrs.NODE_STEP])
    assert steps == {"node agent": [1, 3], "node tools": [2]}
    llms = named(finished, "chat scripted-1")
    assert [s.kind for s in llms] == [SpanKind.CLIENT, SpanKind.CLIENT]
    assert [s.attributes[attrs.CATEGORY] for s in llms] == ["llm", "llm"]
    assert llms[0].attributes[attrs.LLM_TOOL_CALL_NAMES] == ("get_weather",)
    assert llms[0].attributes[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)
    assert llms[1].attributes[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    tool = one(finished, "execute_tool get_weather")
    assert tool.attributes[attrs.CATEGORY] == "tool"
    assert tool.attributes[attrs.GEN_AI_TOOL_CALL_ID] == llms[0].attributes[attrs.LLM_TOOL_CALL_IDS][0]
    assert tool.attributes[attrs.TOOL_OUTCOME] == "success"
    assert {s.context.trace_id for s in finished} == {agent.context.trace_id}
    assert all(s.status.status_code is StatusCode.UNSET for s in finished)
    assert all(s.end_time >= s.start_time for s in finished)


def test_react_turn_sync(lc: Any) -> None:
    out = _agent().invoke(_ask(), {"configurable": {"thread_id": "conv-1"}})
    assert out["messages"][-1].content == "Answer: sunny in Paris"
    _check_turn(list(lc.get_finished_spans()), "conv-1")


async def test_react_turn_async(lc: Any) -> None:
    out = await _agent().ainvoke(_ask(), {"configurable": {"thread_id": "conv-a"}})
    assert out["messages"][-1].content == "Answer: sunny in Paris"
    _check_turn(list(lc.get_finished_spans()), "conv-a")


def test_turns_are_traces_grouped_by_thread_id(lc: Any) -> None:
    agent = _agent(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "conv-2"}}
    agent.invoke(_ask("Paris"), config)
    agent.invoke(_ask("Rome"), config)
    finished = list(lc.get_finished_spans())
    runs = named(finished, "invoke_agent LangGraph")
    assert len(runs) == 2
    assert runs[0].context.trace_id != runs[1].context.trace_id
    assert [r.attributes[attrs.GEN_AI_CONVERSATION_ID] for r in runs] == ["conv-2", "conv-2"]
    for run in runs:
        assert {s.context.trace_id for s in descendants(finished, run)} == {run.context.trace_id}
        assert len(descendants(finished, run)) == 6


def test_session_gives_the_conversation_when_no_thread_id(lc: Any) -> None:
    with session("sess-9"):
        _agent().invoke(_ask())
    assert (
        one(lc.get_finished_spans(), "invoke_agent LangGraph").attributes[attrs.GEN_AI_CONVERSATION_ID]
        == "sess-9"
    )


def test_turn_inside_a_callers_span_is_its_child(lc: Any, tracer_provider: Any) -> None:
    tracer = tracer_provider.get_tracer("web")
    with tracer.start_as_current_span("POST /chat") as request:
        _agent().invoke(_ask())
    finished = list(lc.get_finished_spans())
    agent = one(finished, "invoke_agent LangGraph")
    assert agent.parent.span_id == request.get_span_context().span_id
    assert span_tree(finished) == ["POST /chat", *("  " + line for line in REACT_TURN)]


def test_stream_keeps_consumer_code_out_of_the_run(lc: Any, tracer_provider: Any) -> None:
    tracer = tracer_provider.get_tracer("consumer")
    updates = []
    for chunk in _agent().stream(_ask(), {"configurable": {"thread_id": "s"}}, stream_mode="updates"):
        with tracer.start_as_current_span("handle chunk"):
            updates.append(next(iter(chunk)))
    assert updates == ["agent", "tools", "agent"]
    finished = list(lc.get_finished_spans())
    consumers = named(finished, "handle chunk")
    assert len(consumers) == 3 and all(c.parent is None for c in consumers)
    _check_turn([s for s in finished if s.name != "handle chunk"], "s")


async def test_astream_keeps_consumer_code_out_of_the_run(lc: Any, tracer_provider: Any) -> None:
    tracer = tracer_provider.get_tracer("consumer")
    async for _chunk in _agent().astream(_ask(), stream_mode="updates"):
        with tracer.start_as_current_span("handle chunk"):
            pass
    finished = list(lc.get_finished_spans())
    assert all(c.parent is None for c in named(finished, "handle chunk"))
    _check_turn([s for s in finished if s.name != "handle chunk"], None)


def test_stream_closed_early_ends_the_run(lc: Any) -> None:
    stream = _agent().stream(_ask(), stream_mode="updates")
    first = next(stream)
    assert "agent" in first
    stream.close()
    finished = list(lc.get_finished_spans())
    assert span_tree(finished) == ["invoke_agent LangGraph", "  node agent", "    chat scripted-1"]
    assert one(finished, "invoke_agent LangGraph").status.status_code is StatusCode.UNSET


def test_batch_gives_one_trace_per_input(lc: Any) -> None:
    configs = [{"configurable": {"thread_id": "b1"}}, {"configurable": {"thread_id": "b2"}}]
    outs = _agent().batch([_ask("Paris"), _ask("Rome")], configs)
    assert [o["messages"][-1].content for o in outs] == ["Answer: sunny in Paris", "Answer: sunny in Rome"]
    finished = list(lc.get_finished_spans())
    runs = named(finished, "invoke_agent LangGraph")
    assert sorted(r.attributes[attrs.GEN_AI_CONVERSATION_ID] for r in runs) == ["b1", "b2"]
    for run in runs:
        assert run.parent is None
        below = descendants(finished, run)
        assert span_tree([run, *below]) == REACT_TURN
        city = "Paris" if run.attributes[attrs.GEN_AI_CONVERSATION_ID] == "b1" else "Rome"
        tool = next(s for s in below if s.name == "execute_tool get_weather")
        assert tool.attributes[attrs.GEN_AI_TOOL_CALL_ID] == f"call_{city.lower()}"


def test_two_threads_two_conversations(lc: Any) -> None:
    """Two turns at once in two threads, interleaved by a slow model: no span crosses over."""
    agent = _agent(model={"delay": 0.02})
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(city: str) -> None:
        try:
            barrier.wait()
            agent.invoke(_ask(city), {"configurable": {"thread_id": f"thread-{city}"}})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in ("Paris", "Oslo")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    finished = list(lc.get_finished_spans())
    runs = named(finished, "invoke_agent LangGraph")
    assert len(runs) == 2
    assert runs[0].start_time < runs[1].end_time and runs[1].start_time < runs[0].end_time  # overlapped
    for run in runs:
        city = run.attributes[attrs.GEN_AI_CONVERSATION_ID].removeprefix("thread-")
        below = descendants(finished, run)
        assert span_tree([run, *below]) == REACT_TURN
        tool = next(s for s in below if s.name == "execute_tool get_weather")
        assert tool.attributes[attrs.GEN_AI_TOOL_CALL_ID] == f"call_{city.lower()}"
    assert len(finished) == 14


async def test_two_tasks_two_conversations(lc: Any) -> None:
    agent = _agent(model={"delay": 0.02})
    await asyncio.gather(
        agent.ainvoke(_ask("Paris"), {"configurable": {"thread_id": "task-Paris"}}),
        agent.ainvoke(_ask("Oslo"), {"configurable": {"thread_id": "task-Oslo"}}),
    )
    finished = list(lc.get_finished_spans())
    runs = named(finished, "invoke_agent LangGraph")
    assert len(runs) == 2 and len(finished) == 14
    for run in runs:
        city = run.attributes[attrs.GEN_AI_CONVERSATION_ID].removeprefix("task-")
        below = descendants(finished, run)
        assert span_tree([run, *below]) == REACT_TURN
        assert (
            next(s for s in below if s.name.startswith("execute_tool")).attributes[attrs.GEN_AI_TOOL_CALL_ID]
            == f"call_{city.lower()}"
        )


def test_graph_name_is_the_agent_name(lc: Any) -> None:
    _agent(name="weather_bot").invoke(_ask())
    agent = one(lc.get_finished_spans(), "invoke_agent weather_bot")
    assert agent.attributes[attrs.GEN_AI_AGENT_NAME] == "weather_bot"


@pytest.mark.parametrize("mode", ["values", "messages", "debug"])
def test_stream_modes_give_the_same_tree(lc: Any, mode: str) -> None:
    list(_agent().stream(_ask(), stream_mode=mode))
    assert span_tree(list(lc.get_finished_spans())) == REACT_TURN
