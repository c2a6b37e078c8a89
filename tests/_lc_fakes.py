"""Offline fakes for the LangChain / LangGraph tests and the bench: a scripted chat model and tools.

:class:`ScriptedChatModel` is a real ``BaseChatModel`` (so LangChain's own generate/stream paths run)
whose answer is a pure function of the conversation so far — no hidden counter — which keeps it
deterministic when several threads or tasks share one instance:

* last message from the user  -> an assistant message requesting ``tool_calls`` (if any), else text;
* last message a tool result  -> a final text answer quoting the tool result.

Every answer carries ``usage_metadata`` and OpenAI-style ``response_metadata`` (model name, finish
reason, response id), like a real provider integration.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import ToolException, tool
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from agent_otel.instrumentation import langchain as lc_instrumentation


@pytest.fixture
def lc(otel: Any) -> Iterator[Any]:
    """LangChain + LangGraph instrumented for one test; yields the in-memory exporter of ``otel``."""
    assert lc_instrumentation.instrument()
    try:
        yield otel[1]
    finally:
        lc_instrumentation.uninstrument()


@dataclass
class Metered:
    """The span exporter of ``otel`` and the in-memory reader of the meter provider LangChain records to."""

    exporter: Any
    reader: InMemoryMetricReader
    meter_provider: MeterProvider

    def points(self, metric: str) -> list[HistogramDataPoint]:
        data = self.reader.get_metrics_data()
        return [
            point
            for resource in (data.resource_metrics if data else ())
            for scope in resource.scope_metrics
            for m in scope.metrics
            if m.name == metric
            for point in m.data.data_points  # type: ignore[union-attr]
        ]

    def count(self, metric: str) -> int:
        """How many values ``metric`` recorded, over all its attribute sets."""
        return sum(point.count for point in self.points(metric))


@pytest.fixture
def lc_metered(otel: Any) -> Iterator[Metered]:
    """Like ``lc``, with the ``gen_ai.client.*`` metrics going to an in-memory reader."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    lc_instrumentation.uninstrument()
    assert lc_instrumentation.instrument(meter_provider=provider)
    try:
        yield Metered(otel[1], reader, provider)
    finally:
        lc_instrumentation.uninstrument()
        provider.shutdown()


ToolPlan = Callable[[str], list[dict[str, Any]]]
"""Maps the user's text to the tool calls the model requests: ``[{"name", "args", "id"}]``."""


def weather_plan(text: str) -> list[dict[str, Any]]:
    """Ask ``get_weather`` for the city named last in the user's text."""
    city = text.rsplit(" ", 1)[-1].strip("?") or "Paris"
    return [{"name": "get_weather", "args": {"city": city}, "id": f"call_{city.lower()}"}]


class ScriptedChatModel(BaseChatModel):
    """A chat model that requests tools per ``plan`` and then answers from the tool results."""

    plan: Callable[[str], list[dict[str, Any]]] = weather_plan
    model_name: str = "scripted-1"
    provider: str = "openai"
    delay: float = 0.0
    fail_with: BaseException | None = None
    temperature: float | None = None
    max_tokens: int | None = None

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = self.provider
        return params

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        """Tools are implied by ``plan``; binding returns the model itself."""
        return self

    def _answer(self, messages: list[BaseMessage]) -> AIMessage:
        if self.fail_with is not None:
            raise self.fail_with
        last = messages[-1]
        n_in = sum(len(str(m.content)) for m in messages)
        usage = {"input_tokens": n_in, "output_tokens": 7, "total_tokens": n_in + 7}
        if isinstance(last, ToolMessage):
            results = [str(m.content) for m in messages if isinstance(m, ToolMessage)]
            return AIMessage(
                content="Answer: " + "; ".join(results),
                usage_metadata=usage,
                response_metadata={
                    "model_name": self.model_name,
                    "finish_reason": "stop",
                    "id": "resp-final",
                },
            )
        text = str(last.content) if isinstance(last, HumanMessage) else ""
        calls = self.plan(text)
        if calls:
            return AIMessage(
                content="",
                tool_calls=[{**c, "type": "tool_call"} for c in calls],
                usage_metadata=usage,
                response_metadata={
                    "model_name": self.model_name,
                    "finish_reason": "tool_calls",
                    "id": "resp-tools",
                },
            )
        return AIMessage(
            content="Hello!",
            usage_metadata=usage,
            response_metadata={"model_name": self.model_name, "finish_reason": "stop", "id": "resp-hello"},
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.delay:
            import time

            time.sleep(self.delay)
        return ChatResult(generations=[ChatGeneration(message=self._answer(messages))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.delay:
            await asyncio.sleep(self.delay)
        return ChatResult(generations=[ChatGeneration(message=self._answer(messages))])

    def _chunks(self, messages: list[BaseMessage]) -> list[ChatGenerationChunk]:
        full = self._answer(messages)
        text = str(full.content)
        chunks = [
            ChatGenerationChunk(message=AIMessageChunk(content=text[i : i + 4]))
            for i in range(0, len(text), 4)
        ]
        last = AIMessageChunk(
            content="",
            tool_call_chunks=[
                {"name": c["name"], "args": str(c["args"]).replace("'", '"'), "id": c["id"], "index": i}
                for i, c in enumerate(full.tool_calls)
            ],
            usage_metadata=full.usage_metadata,
            response_metadata=full.response_metadata,
        )
        return [*chunks, ChatGenerationChunk(message=last)]

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from self._chunks(messages)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages):
            yield chunk


@tool
def get_weather(city: str) -> str:
    """Return the weather for a city."""
    return f"sunny in {city}"


@tool
def broken_tool(city: str) -> str:
    """A tool that always raises."""
    raise RuntimeError(f"weather service down for {city}")


def _raise_tool_exception(city: str) -> str:
    raise ToolException(f"no data for {city}")


@tool(parse_docstring=False)
def count_letters(word: str, times: int) -> int:
    """Count the letters of a word, times ``times``."""
    return len(word) * times


# --------------------------------------------------------------------------- span-tree helpers


def span_tree(finished: Sequence[Any], *, order: str = "start") -> list[str]:
    """Render finished spans as indented lines (two spaces per level), one root after another.

    Siblings are ordered by start time (``order="start"``) or by name then start (``order="name"``,
    for branches that run in parallel). A span whose parent is not among ``finished`` is a root.
    """
    ids = {s.context.span_id for s in finished}
    children: dict[Any, list[Any]] = {}
    roots = []
    for s in finished:
        if s.parent is None or s.parent.span_id not in ids:
            roots.append(s)
        else:
            children.setdefault(s.parent.span_id, []).append(s)

    def key(s: Any) -> Any:
        return (s.name, s.start_time) if order == "name" else (s.start_time, s.name)

    lines: list[str] = []

    def walk(span: Any, depth: int) -> None:
        lines.append("  " * depth + span.name)
        for child in sorted(children.get(span.context.span_id, []), key=key):
            walk(child, depth + 1)

    for root in sorted(roots, key=key):
        walk(root, 0)
    return lines


def named(finished: Sequence[Any], name: str) -> list[Any]:
    """The finished spans called ``name``, in start order."""
    return sorted((s for s in finished if s.name == name), key=lambda s: s.start_time)


def one(finished: Sequence[Any], name: str) -> Any:
    """The single finished span called ``name`` (asserts there is exactly one)."""
    found = named(finished, name)
    assert len(found) == 1, f"expected one {name!r}, got {len(found)}: {[s.name for s in finished]}"
    return found[0]


def descendants(finished: Sequence[Any], root: Any) -> list[Any]:
    """Every finished span below ``root`` (any depth)."""
    below = {root.context.span_id}
    out: list[Any] = []
    changed = True
    while changed:
        changed = False
        for s in finished:
            if s.parent is not None and s.parent.span_id in below and s.context.span_id not in below:
                below.add(s.context.span_id)
                out.append(s)
                changed = True
    return out


REACT_TURN = [
    "invoke_agent LangGraph",
    "  node agent",
    "    chat scripted-1",
    "  node tools",
    "    execute_tool get_weather",
    "  node agent",
    "    chat scripted-1",
]
"""The span tree of one ReAct turn (2 LLM calls + 1 tool call) with the scripted model."""
