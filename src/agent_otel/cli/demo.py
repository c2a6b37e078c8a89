"""``agent-otel demo``: an offline tool-calling agent, recorded, then shown.

A small home-grown agent runs three user turns of one conversation through the real ``openai`` SDK
against the bundled scripted OpenAI-compatible server (a real socket on 127.0.0.1, no network, no
key). It calls tools — one of which fails — and every turn, LLM call and tool call becomes a span:
in the crash-safe JSONL record, and in Jaeger/Tempo too when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.
At the end the record is printed with ``agent-otel view``.
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import os
from typing import Any

DESCRIPTION = """\
Run an offline demo agent and show what agent-otel recorded.

The agent answers three questions of one conversation with the real openai SDK, talking to a scripted
OpenAI-compatible server on 127.0.0.1 (no network, no API key). It uses two tools that work
(get_weather, calculator) and one that fails (get_stock_price), so the record shows agent turns,
LLM calls with token counts, tool calls and a failure.

Spans go to the crash-safe JSONL record (AGENT_OTEL_JSONL_DIR, default ./agent-otel-traces) and, when
OTEL_EXPORTER_OTLP_ENDPOINT is set (e.g. http://localhost:4317 with the docker compose stack), to the
Collector and on to Jaeger. The record is then printed as a trajectory (agent-otel view)."""

EPILOG = """\
examples:
  agent-otel demo                                   run, record to ./agent-otel-traces, show it
  agent-otel demo --dir /tmp/demo-traces --no-view  record elsewhere, print only the file name
  OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 agent-otel demo
                                                    also send the spans to a local Collector/Jaeger"""

QUESTIONS = (
    "What's the weather in Paris?",
    "What is 12 * 7?",
    "What is the stock price of ACME?",
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_stock_price",
            "description": "Latest price of a stock ticker.",
            "parameters": {
                "type": "object",
                "properties": {"ticker": {"type": "string"}},
                "required": ["ticker"],
            },
        },
    },
]

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _arith(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _arith(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_arith(node.left), _arith(node.right))
    raise ValueError("unsupported expression")


def get_weather(city: str = "Paris") -> str:
    return f"Sunny, 21°C in {city}"


def calculator(expression: str) -> str:
    return str(_arith(ast.parse(expression, mode="eval")))


def get_stock_price(ticker: str = "ACME") -> str:
    raise ConnectionError("market data service unreachable")


TOOL_FUNCTIONS = {"get_weather": get_weather, "calculator": calculator, "get_stock_price": get_stock_price}


def run_turn(client: Any, messages: list[dict[str, Any]], question: str, model: str) -> str:
    """One user turn of the home-grown agent: model → tools → model, until the model answers."""
    import agent_otel

    messages.append({"role": "user", "content": question})
    with agent_otel.agent("demo-agent"):
        for _ in range(4):  # a bounded tool loop
            response = client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
            message = response.choices[0].message
            if not message.tool_calls:
                messages.append({"role": "assistant", "content": message.content})
                return message.content or ""
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls:
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call.id,
                        "content": _call_tool(call.function.name, call.function.arguments, call.id),
                    }
                )
    return ""


def _call_tool(name: str, arguments: str, call_id: str) -> str:
    import agent_otel

    try:
        with agent_otel.tool(name, call_id=call_id) as span:
            kwargs = json.loads(arguments or "{}")
            span.set_tool_arguments(kwargs)
            result = TOOL_FUNCTIONS[name](**kwargs)
            span.set_tool_result(result)
            return result
    except Exception as exc:  # the agent reports a failed tool to the model, like real agents do
        return f"error: {type(exc).__name__}: {exc}"


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the process exit status."""
    try:
        import openai
    except ImportError:
        print("agent-otel demo needs the openai SDK: pip install 'agent-otel[demo]'")
        return 2

    import agent_otel
    from agent_otel.fakes.openai_server import FakeOpenAIServer
    from agent_otel.setup import jsonl_processor_of

    if args.dir:
        os.environ["AGENT_OTEL_JSONL_DIR"] = args.dir
    os.environ.setdefault("OTEL_SERVICE_NAME", "agent-otel-demo")
    provider = agent_otel.instrument()
    processor = jsonl_processor_of(provider)

    with FakeOpenAIServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-demo", max_retries=0)
        messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a helpful assistant."}]
        with agent_otel.session(conversation_id=args.conversation):
            for question in QUESTIONS:
                answer = run_turn(client, messages, question, args.model)
                print(f"user:  {question}\nagent: {answer}\n")
    provider.force_flush()

    path = processor.path if processor is not None else None
    if path is None:
        print("No JSONL record was written (AGENT_OTEL_JSONL=false?).")
        return 0
    print(f"Recorded to {path}\n")
    if not args.no_view:
        from agent_otel.cli.main import main as cli_main

        return cli_main(["view", str(path)])
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``demo`` on the ``agent-otel`` command line."""
    parser = subparsers.add_parser(
        "demo",
        help="run an offline demo agent and show its record",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dir", help="record directory (default: AGENT_OTEL_JSONL_DIR or ./agent-otel-traces)"
    )
    parser.add_argument("--model", default="gpt-4o-mini", help="model name sent to the scripted server")
    parser.add_argument(
        "--conversation", default="demo-conversation", help="gen_ai.conversation.id of the run"
    )
    parser.add_argument("--no-view", action="store_true", help="do not print the record after the run")
    parser.set_defaults(func=run)
