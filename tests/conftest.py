"""Shared fixtures: an in-memory tracer provider wired into the span factory, and clean settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent_otel import config, content, spans

_AGENT_OTEL_VARS = ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "OTEL_SDK_DISABLED")


@pytest.fixture(autouse=True)
def _clean_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Every test starts from default settings, with any JSONL record going to a temp directory."""
    import os

    for name in list(os.environ):
        if name.startswith("AGENT_OTEL_") or name in _AGENT_OTEL_VARS:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AGENT_OTEL_JSONL_DIR", str(tmp_path_factory.mktemp("records")))
    config.reload_settings()
    yield
    spans.set_span_filter(None)
    content.set_redactor(None)
    config.reload_settings()


@pytest.fixture
def otel() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A TracerProvider with an in-memory exporter (SimpleSpanProcessor: spans land at once),
    wired into agent_otel.spans for the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans.set_tracer_provider(provider)
    yield provider, exporter
    spans.set_tracer_provider(None)
    provider.shutdown()


@pytest.fixture
def span_exporter(otel: tuple[TracerProvider, InMemorySpanExporter]) -> InMemorySpanExporter:
    """The in-memory exporter of ``otel``: ``span_exporter.get_finished_spans()``."""
    return otel[1]


@pytest.fixture
def tracer_provider(otel: tuple[TracerProvider, InMemorySpanExporter]) -> TracerProvider:
    """The provider of ``otel`` (pass it to instrumentations that take ``tracer_provider``)."""
    return otel[0]


@pytest.fixture
def capture_content(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Turn message content capture on for one test."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    config.reload_settings()
    yield
