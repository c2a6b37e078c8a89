"""Custom LangGraph graphs: parallel branches, Send fan-out, subgraphs, interrupts, errors, cancellation."""

from __future__ import annotations

import asyncio
import itertools
import operator
import threading
import warnings
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import GraphRecursionError
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send, interrupt
from opentelemetry.trace import StatusCode

from _lc_fakes import ScriptedChatModel, descendants, get_weather, lc, named, one, span_tree
from agent_otel import attributes as attrs
from agent_otel import spans

__all__ = ["lc"]

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from langgraph.prebuilt import create_react_agent


class State(TypedDict):
    items: Annotated[list[str], operator.add]


def _linear(name: str, *steps: str) -> Any:
    g = StateGraph(State)
    for step in steps:
        g.add_node(step, lambda s, _v=step: {"items": [_v]})
    g.add_edge(START, steps[0])
    for a, b in itertools.pairwise(steps):
        g.add_edge(a, b)
    return g.compile(name=name)


def _pipeline(tracer: Any) -> Any:
    """plan -> (a | b | worker x2 via Send) -> join -> sub (a subgraph node) -> caller (calls a graph)."""
    inner = _linear("inner", "sub_1", "sub_2")
    helper = _linear("helper", "h_1")

    def a(state: State) -> dict[str, Any]:
        with tracer.start_as_current_span("inside a") as span:
            span.set_attribute("thread", threading.current_thread().name)
        return {"items": ["a"]}

    async def b(state: State) -> dict[str, Any]:
        await asyncio.sleep(0)
        with tracer.start_as_current_span("inside b"):
            return {"items": ["b"]}

    def b_sync(state: State) -> dict[str, Any]:
        with tracer.start_as_current_span("inside b"):
            return {"items": ["b"]}

    def caller(state: State) -> dict[str, Any]:
        return {"items": helper.invoke({"items": []})["items"]}

    g = StateGraph(State)
    g.add_node("plan", lambda s: {"items": ["p"]})
    g.add_node("a", a)
    g.add_node("b", b if tracer.async_b else b_sync)
    g.add_node("worker", lambda s: {"items": ["w" + s["items"][0]]})
    g.add_node("join", lambda s: {"items": ["j"]})
    g.add_node("sub", inner)
    g.add_node("caller", caller)
    g.add_edge(START, "plan")
    g.add_edge("plan", "a")
    g.add_edge("plan", "b")
    g.add_conditional_edges("plan", lambda s: [Send("worker", {"items": [x]}) for x in ("1", "2")])
    g.add_edge(["a", "b", "worker"], "join")
    g.add_edge("join", "sub")
    g.add_edge("sub", "caller")
    g.add_edge("caller", END)
    return g.compile(name="pipeline")


PIPELINE_TREE = [
    "invoke_agent pipeline",
    "  node a",
    "    inside a",
    "  node b",
    "    inside b",
    "  node caller",
    "    invoke_workflow helper",
    "      node h_1",
    "  node join",
    "  node plan",
    "  node sub",
    "    node sub_1",
    "    node sub_2",
    "  node worker",
    "  node worker",
]


class _Tracer:
    def __init__(self, provider: Any, async_b: bool) -> None:
        self._tracer = provider.get_tracer("user-code")
        self.async_b = async_b

    def start_as_current_span(self, name: str) -> Any:
        return self._tracer.start_as_current_span(name)


def _check_pipeline(finished: list[Any]) -> None:
    assert span_tree(finished, order="name") == PIPELINE_TREE
    agent = one(finished, "invoke_agent pipeline")
    steps = {s.name: s.attributes.get(attrs.NODE_STEP) for s in finished if s.name.startswith("node ")}
    assert steps == {
        "node plan": 1, "node a": 2, "node b": 2, "node worker": 2, "node join": 3, "node sub": 4,
        "node sub_1": 1, "node sub_2": 2, "node caller": 5, "node h_1": 1,
    }  # fmt: skip
    workers = named(finished, "node worker")
    assert [w.attributes[attrs.NODE_TRIGGERS] for w in workers] == [("__pregel_push",)] * 2
    assert one(finished, "node join").attributes[attrs.NODE_TRIGGERS] == (
        "branch:to:join",
        "join:a+b+worker:join",
    )
    workflow = one(finished, "invoke_workflow helper")
    assert workflow.attributes[attrs.CATEGORY] == "workflow"
    assert workflow.attributes[attrs.GEN_AI_WORKFLOW_NAME] == "helper"
    assert {s.context.trace_id for s in finished} == {agent.context.trace_id}
    assert all(s.status.status_code is StatusCode.UNSET for s in finished)
    assert len({s.attributes.get(attrs.NODE_TASK_ID) for s in finished if s.name.startswith("node ")}) == 11


def test_parallel_send_and_subgraphs_sync(lc: Any, tracer_provider: Any) -> None:
    out = _pipeline(_Tracer(tracer_provider, async_b=False)).invoke({"items": []})
    assert set(out["items"]) == {"p", "a", "b", "w1", "w2", "j", "sub_1", "sub_2", "h_1"}
    finished = list(lc.get_finished_spans())
    _check_pipeline(finished)
    # "a" and "b" ran concurrently on LangGraph's thread pool and still found their node span.
    assert one(finished, "inside a").attributes["thread"] != threading.main_thread().name


async def test_parallel_send_and_subgraphs_async(lc: Any, tracer_provider: Any) -> None:
    """Async run: sync nodes run in the executor (threads), async nodes as tasks."""
    out = await _pipeline(_Tracer(tracer_provider, async_b=True)).ainvoke({"items": []})
    assert set(out["items"]) == {"p", "a", "b", "w1", "w2", "j", "sub_1", "sub_2", "h_1"}
    finished = list(lc.get_finished_spans())
    _check_pipeline(finished)
    assert one(finished, "inside a").attributes["thread"] != threading.main_thread().name


def _approval_graph() -> Any:
    def ask(state: State) -> dict[str, Any]:
        answer = interrupt("approve?")
        return {"items": [f"answer:{answer}"]}

    g = StateGraph(State)
    g.add_node("prepare", lambda s: {"items": ["prepared"]})
    g.add_node("ask", ask)
    g.add_node("act", lambda s: {"items": ["acted"]})
    g.add_edge(START, "prepare")
    g.add_edge("prepare", "ask")
    g.add_edge("ask", "act")
    return g.compile(checkpointer=InMemorySaver(), name="approval")


def _check_pause_and_resume(finished: list[Any]) -> None:
    runs = named(finished, "invoke_agent approval")
    assert len(runs) == 2
    paused, resumed = runs
    assert paused.context.trace_id != resumed.context.trace_id
    assert [r.attributes[attrs.GEN_AI_CONVERSATION_ID] for r in runs] == ["hitl-1", "hitl-1"]
    assert paused.attributes[attrs.INTERRUPT] is True
    assert attrs.GRAPH_RESUME not in paused.attributes
    assert resumed.attributes[attrs.GRAPH_RESUME] is True
    assert attrs.INTERRUPT not in resumed.attributes
    assert span_tree([paused, *descendants(finished, paused)]) == [
        "invoke_agent approval",
        "  node prepare",
        "  node ask",
    ]
    ask_paused = next(s for s in descendants(finished, paused) if s.name == "node ask")
    assert ask_paused.attributes[attrs.INTERRUPT] is True
    assert span_tree([resumed, *descendants(finished, resumed)]) == [
        "invoke_agent approval",
        "  node ask",
        "  node act",
    ]
    assert all(s.status.status_code is StatusCode.UNSET for s in finished)


def test_interrupt_and_resume_sync(lc: Any) -> None:
    graph = _approval_graph()
    config = {"configurable": {"thread_id": "hitl-1"}}
    first = graph.invoke({"items": []}, config)
    assert first["__interrupt__"][0].value == "approve?"
    done = graph.invoke(Command(resume="yes"), config)
    assert done["items"][-2:] == ["answer:yes", "acted"]
    _check_pause_and_resume(list(lc.get_finished_spans()))


async def test_interrupt_and_resume_async(lc: Any) -> None:
    graph = _approval_graph()
    config = {"configurable": {"thread_id": "hitl-1"}}
    chunks = [c async for c in graph.astream({"items": []}, config, stream_mode="updates")]
    assert "__interrupt__" in chunks[-1]
    await graph.ainvoke(Command(resume="ok"), config)
    _check_pause_and_resume(list(lc.get_finished_spans()))


def test_interrupt_inside_a_subgraph_pauses_the_whole_run(lc: Any) -> None:
    def ask(state: State) -> dict[str, Any]:
        return {"items": [interrupt("inner question")]}

    inner = StateGraph(State)
    inner.add_node("ask", ask)
    inner.add_edge(START, "ask")
    outer = StateGraph(State)
    outer.add_node("sub", inner.compile(name="inner"))
    outer.add_edge(START, "sub")
    graph = outer.compile(checkpointer=InMemorySaver(), name="outer")
    out = graph.invoke({"items": []}, {"configurable": {"thread_id": "n"}})
    assert out["__interrupt__"][0].value == "inner question"
    finished = list(lc.get_finished_spans())
    assert span_tree(finished) == ["invoke_agent outer", "  node sub", "    node ask"]
    for span in finished:
        assert span.attributes[attrs.INTERRUPT] is True, span.name
        assert span.status.status_code is StatusCode.UNSET


def test_static_interrupt_before_tools(lc: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = create_react_agent(
            ScriptedChatModel(), [get_weather], checkpointer=InMemorySaver(), interrupt_before=["tools"]
        )
    config = {"configurable": {"thread_id": "review"}}
    agent.invoke({"messages": [HumanMessage("weather in Paris")]}, config)
    agent.invoke(None, config)
    finished = list(lc.get_finished_spans())
    first, second = named(finished, "invoke_agent LangGraph")
    assert first.attributes[attrs.INTERRUPT] is True
    assert attrs.INTERRUPT not in second.attributes
    assert span_tree([first, *descendants(finished, first)]) == [
        "invoke_agent LangGraph",
        "  node agent",
        "    chat scripted-1",
    ]
    assert span_tree([second, *descendants(finished, second)]) == [
        "invoke_agent LangGraph",
        "  node tools",
        "    execute_tool get_weather",
        "  node agent",
        "    chat scripted-1",
    ]


class NodeBroke(Exception):
    pass


def test_node_exception_fails_node_and_run_and_reaches_caller_unchanged(lc: Any) -> None:
    boom = NodeBroke("bad input")

    def explode(state: State) -> dict[str, Any]:
        raise boom

    g = StateGraph(State)
    g.add_node("ok", lambda s: {"items": ["ok"]})
    g.add_node("explode", explode)
    g.add_edge(START, "ok")
    g.add_edge("ok", "explode")
    with pytest.raises(NodeBroke) as caught:
        g.compile().invoke({"items": []})
    assert caught.value is boom
    finished = list(lc.get_finished_spans())
    assert span_tree(finished) == ["invoke_agent LangGraph", "  node ok", "  node explode"]
    for name in ("invoke_agent LangGraph", "node explode"):
        span = one(finished, name)
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes[attrs.ERROR_TYPE] == "NodeBroke"
    assert one(finished, "node ok").status.status_code is StatusCode.UNSET


def test_recursion_limit_fails_the_run(lc: Any) -> None:
    g = StateGraph(State)
    g.add_node("ping", lambda s: {"items": ["ping"]})
    g.add_node("pong", lambda s: {"items": ["pong"]})
    g.add_edge(START, "ping")
    g.add_edge("ping", "pong")
    g.add_edge("pong", "ping")
    with pytest.raises(GraphRecursionError):
        g.compile().invoke({"items": []}, {"recursion_limit": 4})
    finished = list(lc.get_finished_spans())
    agent = one(finished, "invoke_agent LangGraph")
    assert agent.status.status_code is StatusCode.ERROR
    assert agent.attributes[attrs.ERROR_TYPE] == "GraphRecursionError"
    nodes = [s for s in finished if s.name.startswith("node ")]
    assert len(nodes) == 4 and all(n.status.status_code is StatusCode.UNSET for n in nodes)


async def test_cancelled_run_ends_open_spans_as_interrupted(lc: Any) -> None:
    started = asyncio.Event()

    async def slow(state: State) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(30)
        return {"items": ["never"]}

    g = StateGraph(State)
    g.add_node("slow", slow)
    g.add_edge(START, "slow")
    task = asyncio.create_task(g.compile().ainvoke({"items": []}))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    finished = list(lc.get_finished_spans())
    assert span_tree(finished) == ["invoke_agent LangGraph", "  node slow"]
    for span in finished:
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes[attrs.ERROR_TYPE] == "CancelledError"
        assert span.attributes[attrs.INTERRUPTED] is True


def test_keyboard_interrupt_ends_open_spans_as_interrupted(lc: Any) -> None:
    def stop(state: State) -> dict[str, Any]:
        raise KeyboardInterrupt

    g = StateGraph(State)
    g.add_node("stop", stop)
    g.add_edge(START, "stop")
    with pytest.raises(KeyboardInterrupt):
        g.compile().invoke({"items": []})
    finished = list(lc.get_finished_spans())
    assert span_tree(finished) == ["invoke_agent LangGraph", "  node stop"]
    for span in finished:
        assert span.attributes[attrs.ERROR_TYPE] == "KeyboardInterrupt"
        assert span.attributes[attrs.INTERRUPTED] is True


def test_agent_used_as_a_tool_is_its_own_agent_span(lc: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weather_agent = create_react_agent(ScriptedChatModel(), [get_weather], name="weather_agent")

    @tool
    def ask_weather_agent(city: str) -> str:
        """Delegate to the weather agent."""
        out = weather_agent.invoke({"messages": [HumanMessage(f"weather in {city}")]})
        return out["messages"][-1].content

    def plan(text: str) -> list[dict[str, Any]]:
        return [{"name": "ask_weather_agent", "args": {"city": "Lima"}, "id": "call_sup"}]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        supervisor = create_react_agent(ScriptedChatModel(plan=plan), [ask_weather_agent], name="supervisor")
    supervisor.invoke({"messages": [HumanMessage("weather please")]})
    assert span_tree(list(lc.get_finished_spans())) == [
        "invoke_agent supervisor",
        "  node agent",
        "    chat scripted-1",
        "  node tools",
        "    execute_tool ask_weather_agent",
        "      invoke_agent weather_agent",
        "        node agent",
        "          chat scripted-1",
        "        node tools",
        "          execute_tool get_weather",
        "        node agent",
        "          chat scripted-1",
        "  node agent",
        "    chat scripted-1",
    ]


def test_functional_api_tasks_are_nodes(lc: Any) -> None:
    from langgraph.func import entrypoint, task

    @task
    def double(x: int) -> int:
        return 2 * x

    @entrypoint()
    def workflow(xs: list[int]) -> list[int]:
        return [f.result() for f in [double(x) for x in xs]]

    assert workflow.invoke([1, 2]) == [2, 4]
    assert span_tree(list(lc.get_finished_spans()), order="name") == [
        "invoke_agent LangGraph",
        "  node workflow",
        "    node double",
        "    node double",
    ]


def test_broken_span_factory_never_breaks_the_graph(lc: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("factory bug")

    monkeypatch.setattr(spans, "start_node", boom)
    monkeypatch.setattr(spans, "start_agent", boom)
    out = _linear("g", "x", "y").invoke({"items": []})
    assert out == {"items": ["x", "y"]}
    assert list(lc.get_finished_spans()) == []


def test_category_filter_keeps_parenting(lc: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With node spans filtered out, LLM and tool spans hang directly under the agent span."""
    from agent_otel import config

    monkeypatch.setenv("AGENT_OTEL_CATEGORIES", "agent,llm,tool")
    config.reload_settings()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        create_react_agent(ScriptedChatModel(), [get_weather]).invoke(
            {"messages": [HumanMessage("weather in Oslo")]}
        )
    assert span_tree(list(lc.get_finished_spans())) == [
        "invoke_agent LangGraph",
        "  chat scripted-1",
        "  execute_tool get_weather",
        "  chat scripted-1",
    ]


def test_subgraph_node_with_config_adds_no_span(lc: Any) -> None:
    g = StateGraph(State)
    g.add_node("sub", _linear("inner", "s1").with_config(tags=["x"]))
    g.add_edge(START, "sub")
    g.compile(name="outer").invoke({"items": []})
    assert span_tree(list(lc.get_finished_spans())) == ["invoke_agent outer", "  node sub", "    node s1"]


def test_graph_invoking_itself_from_a_node_is_a_workflow(lc: Any) -> None:
    holder: dict[str, Any] = {}

    def recurse(state: State) -> dict[str, Any]:
        if len(state["items"]) < 1:
            return {"items": holder["graph"].invoke({"items": ["inner"]})["items"]}
        return {"items": ["leaf"]}

    g = StateGraph(State)
    g.add_node("recurse", recurse)
    g.add_edge(START, "recurse")
    holder["graph"] = graph = g.compile(name="selfish")
    graph.invoke({"items": []})
    assert span_tree(list(lc.get_finished_spans())) == [
        "invoke_agent selfish",
        "  node recurse",
        "    invoke_workflow selfish",
        "      node recurse",
    ]


def test_langgraph_control_flow_exceptions_are_loaded_once_for_both_layers(lc: Any) -> None:
    from langgraph.errors import GraphBubbleUp, GraphInterrupt

    from agent_otel.instrumentation import _langchain_context as lcctx
    from agent_otel.instrumentation import langchain as lc_instrumentation
    from agent_otel.instrumentation import langgraph as lg_instrumentation

    assert lcctx.GraphErrors.interrupt == (GraphInterrupt,)
    assert lcctx.GraphErrors.bubble_up == (GraphBubbleUp,)
    for state in (lc_instrumentation._State, lg_instrumentation._State):
        assert not hasattr(state, "interrupt") and not hasattr(state, "bubble_up")
