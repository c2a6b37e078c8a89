"""A home-grown agent instrumented with agent-otel's manual API (no SDK, no network).

Run it directly (``python examples/home_grown_agent.py``) or with zero-code setup
(``opentelemetry-instrument python examples/home_grown_agent.py``), then look at the record::

    agent-otel view agent-otel-traces/

The agent is a tiny plan -> act -> answer strategy graph in the style of Koog's agents: each user
turn is an agent run, the strategy a workflow, each step a node, the "model" an LLM call with
token usage, and each tool call a tool span — including a tool whose arguments fail validation
and one that raises.
"""

from __future__ import annotations

import asyncio
import re

import agent_otel


class ToolValidationError(ValueError):
    """The model asked for a tool with arguments that do not fit its schema."""


def fake_model(prompt: str) -> tuple[str, int, int]:
    """A deterministic stand-in for an LLM: decides which tool to use from the prompt."""
    if "weather" in prompt:
        decision = "get_weather:city=Paris"
    elif re.search(r"\d+\s*[-+*/]\s*\d+", prompt):
        decision = "calculator:expression=" + re.findall(r"\d+\s*[-+*/]\s*\d+", prompt)[0]
    elif "convert" in prompt:
        decision = "convert_currency:amount=lots"  # bad arguments: validation must catch it
    else:
        decision = "search:query=" + prompt
    return decision, len(prompt.split()), len(decision.split())


@agent_otel.tool
def get_weather(city: str) -> str:
    return f"Sunny in {city}"


@agent_otel.tool
def calculator(expression: str) -> str:
    left, op, right = re.match(r"(\d+)\s*([-+*/])\s*(\d+)", expression).groups()  # type: ignore[union-attr]
    return str(
        {"+": int.__add__, "-": int.__sub__, "*": int.__mul__, "/": int.__floordiv__}[op](
            int(left), int(right)
        )
    )


@agent_otel.tool
def search(query: str) -> str:
    raise TimeoutError("search backend timed out")


def convert_currency(amount: str) -> str:
    with agent_otel.tool("convert_currency") as span:
        if not amount.replace(".", "", 1).isdigit():
            span.validation_error(f"amount must be a number, got {amount!r}")
            raise ToolValidationError(amount)
        return f"{float(amount) * 0.92:.2f} EUR"


TOOLS = {
    "get_weather": get_weather,
    "calculator": calculator,
    "search": search,
    "convert_currency": convert_currency,
}


async def run_turn(question: str) -> str:
    """One user turn: plan (LLM) -> act (tool) -> answer."""
    with agent_otel.agent("koog-style-agent"), agent_otel.workflow("plan-act-answer"):
        with agent_otel.node("plan"), agent_otel.llm("fake-model-1", provider="local") as llm:
            decision, tokens_in, tokens_out = fake_model(question)
            llm.set_usage(input_tokens=tokens_in, output_tokens=tokens_out)
            llm.set_response(model="fake-model-1", finish_reasons=["tool_call"])
        name, _, arg = decision.partition(":")
        key, _, value = arg.partition("=")
        with agent_otel.node("act"):
            try:
                observation = TOOLS[name](**{key: value})
            except Exception as exc:  # the agent reports tool failures instead of crashing
                observation = f"tool failed: {type(exc).__name__}"
        with agent_otel.node("answer"):
            await asyncio.sleep(0)
            return f"{question} -> {observation}"


async def main() -> None:
    agent_otel.instrument()  # a no-op under opentelemetry-instrument, which already set things up
    with agent_otel.session(conversation_id="example-conversation", user_id="demo-user"):
        for question in ("What's the weather?", "What is 6 * 7?", "search the docs", "convert 10 USD"):
            print(await run_turn(question))


if __name__ == "__main__":
    asyncio.run(main())
