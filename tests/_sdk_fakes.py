"""Shared rig for the openai / anthropic SDK instrumentation tests.

Import the fixtures into a test module (``from _sdk_fakes import openai_rig, ...``). Each rig instruments one
SDK for one test with an in-memory meter provider (the span side comes from conftest's ``otel`` fixture), and
talks to a scripted server over a real loopback socket (one server per test session, cleared per test).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent_otel import attributes as attrs
from agent_otel.fakes.anthropic_server import FakeAnthropicServer
from agent_otel.fakes.openai_server import FakeOpenAIServer

WEATHER_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALC_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "calculator",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}
WEATHER_TOOL_RESPONSES = {
    "type": "function",
    "name": "get_weather",
    **{k: v for k, v in WEATHER_TOOL_OPENAI["function"].items() if k != "name"},
}  # type: ignore[union-attr]
WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@dataclass
class Rig:
    """One instrumented SDK, its scripted server, and where its telemetry lands."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    server: Any
    module: Any

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def llm_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if (s.attributes or {}).get(attrs.CATEGORY) == "llm"]

    def one_llm(self) -> ReadableSpan:
        found = self.llm_spans()
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]

    def points(self, metric: str) -> list[HistogramDataPoint]:
        data = self.reader.get_metrics_data()
        out: list[HistogramDataPoint] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        out.extend(m.data.data_points)  # type: ignore[arg-type]
        return out


@pytest.fixture(scope="session")
def _openai_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="session")
def _anthropic_server() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer() as server:
        yield server


def _rig(module: Any, server: Any, otel: Any) -> Iterator[Rig]:
    server.clear()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    module.uninstrument()
    assert module.instrument(tracer_provider=otel[0], meter_provider=provider)
    try:
        yield Rig(otel[1], reader, server, module)
    finally:
        module.uninstrument()
        provider.shutdown()
        server.clear()


@pytest.fixture
def openai_rig(otel: Any, _openai_server: FakeOpenAIServer) -> Iterator[Rig]:
    """openai instrumented (spans -> ``otel``; metrics -> ``rig.reader``) against the scripted server."""
    from agent_otel.instrumentation import openai as module

    yield from _rig(module, _openai_server, otel)


@pytest.fixture
def anthropic_rig(otel: Any, _anthropic_server: FakeAnthropicServer) -> Iterator[Rig]:
    """anthropic instrumented against its scripted server (the SDK's own tracing at its defaults)."""
    from agent_otel.instrumentation import anthropic as module

    yield from _rig(module, _anthropic_server, otel)


@pytest.fixture
def global_tracer_provider(otel: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make ``otel``'s provider the global one for the test (the anthropic SDK traces with the global one)."""
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", otel[0])
    return otel[0]


def openai_client(rig: Rig, **kwargs: Any) -> Any:
    import openai

    kwargs.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=rig.server.base_url, api_key="sk-fake", **kwargs)


def async_openai_client(rig: Rig, **kwargs: Any) -> Any:
    import openai

    kwargs.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=rig.server.base_url, api_key="sk-fake", **kwargs)


def anthropic_client(rig: Rig, **kwargs: Any) -> Any:
    import anthropic

    kwargs.setdefault("max_retries", 0)
    return anthropic.Anthropic(base_url=rig.server.base_url, api_key="sk-ant-fake", **kwargs)


def async_anthropic_client(rig: Rig, **kwargs: Any) -> Any:
    import anthropic

    kwargs.setdefault("max_retries", 0)
    return anthropic.AsyncAnthropic(base_url=rig.server.base_url, api_key="sk-ant-fake", **kwargs)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


__all__ = [
    "CALC_TOOL_OPENAI",
    "WEATHER_TOOL_ANTHROPIC",
    "WEATHER_TOOL_OPENAI",
    "WEATHER_TOOL_RESPONSES",
    "Rig",
    "_anthropic_server",
    "_openai_server",
    "anthropic_client",
    "anthropic_rig",
    "async_anthropic_client",
    "async_openai_client",
    "global_tracer_provider",
    "openai_client",
    "openai_rig",
    "user",
]
