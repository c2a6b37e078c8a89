"""What agent-otel adds to one LangGraph ReAct turn (2 LLM calls + 1 tool call), content capture off.

Run: ``python bench/bench_langgraph.py [--turns N] [--rounds R]``. Offline: a scripted chat model (a
real ``BaseChatModel``) and a ``@tool``, in a real ``create_react_agent`` graph. Each round runs N turns
uninstrumented, N instrumented (``agent_otel.instrumentation.langchain``) and N uninstrumented again,
on the same graph, so both sides see the same machine state; the table shows, over R rounds,

- CPU µs per turn without and with instrumentation (best round; process time, so a busy machine's
  waiting is not counted), and the difference (the budget: ≤ 400 µs), with the median-of-rounds
  difference beside it and the noise floor (how far two plain runs of the same round differ),
- spans per turn (agent, nodes, LLM calls, tool calls), and spans/s while instrumented,

for two tracer-provider set-ups: the OpenTelemetry SDK with a span processor that drops spans (the
instrumentation + SDK cost), and the SDK with agent-otel's crash-safe JSONL record (a start and an end
record per span, fsync ``interval``) — what a default ``agent_otel.instrument()`` writes locally.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from agent_otel import config, spans
from agent_otel.instrumentation import langchain as lc_instrumentation

BUDGET_US = 400.0


class BenchChatModel(BaseChatModel):
    """Requests ``get_weather`` after a user message; answers after a tool result (stateless)."""

    @property
    def _llm_type(self) -> str:
        return "bench-chat"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "openai"
        params["ls_model_name"] = "bench-model"
        return params

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> BenchChatModel:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        usage = {"input_tokens": 20, "output_tokens": 5, "total_tokens": 25}
        if isinstance(messages[-1], ToolMessage):
            msg = AIMessage(
                content=f"It is {messages[-1].content}.",
                usage_metadata=usage,
                response_metadata={"model_name": "bench-model", "finish_reason": "stop"},
            )
        else:
            msg = AIMessage(
                content="",
                usage_metadata=usage,
                tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}],
                response_metadata={"model_name": "bench-model", "finish_reason": "tool_calls"},
            )
        return ChatResult(generations=[ChatGeneration(message=msg)])


@tool
def get_weather(city: str) -> str:
    """Return the weather for a city."""
    return f"sunny in {city}"


class CountingProcessor(SpanProcessor):
    """Counts ended spans and drops them."""

    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


def _build_agent() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from langgraph.prebuilt import create_react_agent

        return create_react_agent(BenchChatModel(), [get_weather])


def _turns(agent: Any, n: int) -> float:
    """Run ``n`` turns; return CPU µs per turn (process time: all threads, not time spent waiting)."""
    inputs = {"messages": [HumanMessage("What is the weather in Paris?")]}
    cfg = {"configurable": {"thread_id": "bench"}}
    gc.collect()
    t0 = time.process_time()
    for _ in range(n):
        agent.invoke(inputs, cfg)
    return (time.process_time() - t0) / n * 1e6


def measure(
    agent: Any, provider: TracerProvider, counter: CountingProcessor, turns: int, rounds: int
) -> dict[str, float]:
    """Rounds of plain / instrumented / plain turns: best round and median of each side.

    The second plain run of each round gives the noise floor: how far two identical runs differ.
    """
    spans.set_tracer_provider(provider)
    base, inst, again, per_turn = [], [], [], []
    for _ in range(rounds):
        base.append(_turns(agent, turns))
        lc_instrumentation.instrument()
        before = counter.ended
        inst.append(_turns(agent, turns))
        per_turn.append((counter.ended - before) / turns)
        lc_instrumentation.uninstrument()
        again.append(_turns(agent, turns))
    spans.set_tracer_provider(None)
    plain = base + again
    spt = statistics.median(per_turn)
    return {
        "base": min(plain),
        "inst": min(inst),
        "added": min(inst) - min(plain),
        "added_median": statistics.median(inst) - statistics.median(plain),
        "noise": abs(min(again) - min(base)),
        "spans": spt,
        "spans_per_s": spt / min(inst) * 1e6,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=25, help="turns per round and side (default 25)")
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds (default 40)")
    args = parser.parse_args(argv)

    config.reload_settings({})  # content capture off, all categories
    agent = _build_agent()
    _turns(agent, 20)  # warm-up: imports, caches
    lc_instrumentation.instrument()
    _turns(agent, 20)
    lc_instrumentation.uninstrument()

    results = []
    counter = CountingProcessor()
    sdk = TracerProvider()
    sdk.add_span_processor(counter)
    results.append(("SDK, spans dropped", measure(agent, sdk, counter, args.turns, args.rounds)))

    from agent_otel.jsonl.processor import JsonlSpanProcessor
    from agent_otel.jsonl.writer import RecordWriter

    with tempfile.TemporaryDirectory() as tmp:
        counter2 = CountingProcessor()
        jsonl = TracerProvider()
        writer = RecordWriter(directory=tmp, fsync="interval", fsync_interval_ms=1000, service_name="bench")
        jsonl.add_span_processor(JsonlSpanProcessor(writer))
        jsonl.add_span_processor(counter2)
        results.append(
            ("SDK + crash-safe JSONL record", measure(agent, jsonl, counter2, args.turns, args.rounds))
        )
        jsonl.shutdown()

    print(
        f"LangGraph ReAct turn (2 LLM calls + 1 tool call), content capture off; {args.rounds} rounds x "
        f"{args.turns} turns per side; CPU µs per turn, best round"
    )
    header = ("tracer provider", "plain", "traced", "added", "(median)", "noise", "spans", "spans/s")
    print("{:30} {:>7} {:>7} {:>6} {:>8} {:>6} {:>6} {:>8}".format(*header))
    for label, r in results:
        print(
            f"{label:30} {r['base']:7.0f} {r['inst']:7.0f} {r['added']:6.0f} {r['added_median']:8.0f} "
            f"{r['noise']:6.0f} {r['spans']:6.1f} {r['spans_per_s']:8.0f}"
        )
    added = results[0][1]["added"]
    verdict = "within" if added <= BUDGET_US else "OVER"
    print(
        f"budget: <= {BUDGET_US:.0f} µs added per turn (SDK): {added:.0f} µs, {verdict} budget "
        f"(noise: two plain runs differ by {results[0][1]['noise']:.0f} µs)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
