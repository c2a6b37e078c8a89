"""One-line setup: a tracer provider with OTLP export (when asked for) and the crash-safe record.

``agent_otel.instrument()`` (notebooks, scripts) and the ``opentelemetry-instrument`` entry points
(:mod:`agent_otel.distro`) both end up here, so the two paths configure the same pipeline.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from agent_otel import content, interrupt, spans
from agent_otel.config import (
    OTLP_GRPC,
    OTLP_HTTP,
    Settings,
    otlp_protocol,
    reload_settings,
    traces_exporter_names,
)
from agent_otel.jsonl.processor import JsonlSpanProcessor

_logger = logging.getLogger(__name__)

_JSONL_ATTR = "_agent_otel_jsonl"


def service_name(resource: Resource | None) -> str:
    """The ``service.name`` of a resource (``app`` when unknown)."""
    if resource is None:
        return "app"
    return str(resource.attributes.get("service.name") or "app")


def jsonl_processor_of(provider: Any) -> JsonlSpanProcessor | None:
    """The crash-safe processor attached to ``provider`` by agent-otel, if any."""
    return getattr(provider, _JSONL_ATTR, None)


def attach_jsonl(provider: Any, settings: Settings) -> JsonlSpanProcessor | None:
    """Add the crash-safe JSONL processor to an SDK ``provider`` once (later calls return the same one)."""
    existing = jsonl_processor_of(provider)
    if existing is not None or not settings.jsonl_enabled or not isinstance(provider, TracerProvider):
        return existing
    processor = JsonlSpanProcessor.from_settings(settings, service_name(provider.resource))
    provider.add_span_processor(processor)
    setattr(provider, _JSONL_ATTR, processor)
    interrupt.register(processor, provider)
    return processor


def ensure_record(provider: Any, settings: Settings) -> JsonlSpanProcessor | None:
    """Set up the crash-safe record for ``provider``: the one place that decides it.

    Used by :func:`instrument`, the ``opentelemetry-instrument`` configurator and
    ``AgentInstrumentor`` (under any configurator), so every path gets the same record. With
    ``settings.enabled`` false (``OTEL_SDK_DISABLED=true``) it does nothing at all. Otherwise it adds
    the JSONL processor when ``settings.jsonl_enabled`` (``AGENT_OTEL_JSONL``, forced on when
    ``OTEL_TRACES_EXPORTER`` names ``jsonl``) and ``provider`` is an SDK provider, and installs the
    interruption hooks (exit hook, excepthook chain, SIGTERM handler unless
    ``AGENT_OTEL_HANDLE_SIGNALS=false``). Idempotent; never raises (a failure is a warning).
    Returns the processor attached to ``provider``, if any.
    """
    if not settings.enabled:
        return None
    processor = None
    try:
        processor = attach_jsonl(provider, settings)
    except Exception:
        _logger.warning("agent-otel: the JSONL record could not be set up", exc_info=True)
    try:
        interrupt.install(settings.handle_signals)
    except Exception:
        _logger.warning("agent-otel: the interruption hooks could not be installed", exc_info=True)
    return processor


# Exporter names in OTEL_TRACES_EXPORTER that mean OTLP, and the transport each one names (None: by
# the protocol rule, config.otlp_protocol).
_OTLP_EXPORTER_NAMES = {"otlp": None, "otlp_proto_grpc": OTLP_GRPC, "otlp_proto_http": OTLP_HTTP}


def otlp_requested(environ: Any = None) -> bool:
    """True when the environment asks for OTLP export.

    ``OTEL_TRACES_EXPORTER``, when set, decides (``otlp`` in it, or not: ``none`` or ``jsonl`` mean
    no OTLP even with an endpoint configured); unset, an ``OTEL_EXPORTER_OTLP_*ENDPOINT`` does.
    """
    env = os.environ if environ is None else environ
    names = traces_exporter_names(env)
    if names:
        return any(n in _OTLP_EXPORTER_NAMES for n in names)
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def otlp_span_exporter(environ: Any = None) -> Any:
    """The OTLP span exporter the environment asks for: the transport named in ``OTEL_TRACES_EXPORTER``
    (``otlp_proto_http`` / ``otlp_proto_grpc``), else the one :func:`config.otlp_protocol` resolves."""
    env = os.environ if environ is None else environ
    named = [_OTLP_EXPORTER_NAMES[n] for n in traces_exporter_names(env) if n in _OTLP_EXPORTER_NAMES]
    protocol = (named[0] if named else None) or otlp_protocol("traces", env)
    if protocol == OTLP_GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def _new_provider() -> TracerProvider:
    provider = TracerProvider(resource=Resource.create())
    if otlp_requested():
        try:
            provider.add_span_processor(BatchSpanProcessor(otlp_span_exporter()))
        except Exception:
            _logger.warning(
                "agent-otel: OTLP export could not be set up; the JSONL record still works", exc_info=True
            )
    if "console" in traces_exporter_names():  # as the SDK's configurator does
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    return provider


def instrument(
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    span_filter: spans.SpanFilter | None = None,
    redactor: content.Redactor | None = None,
) -> Any:
    """Set up agent-otel from code; idempotent (a second call changes nothing but the hooks given).

    Uses ``tracer_provider`` if given, else the global SDK provider if one is set, else creates one
    (with OTLP batch export when ``OTEL_TRACES_EXPORTER`` names ``otlp``, or, that variable unset,
    when ``OTEL_EXPORTER_OTLP_*ENDPOINT`` is set, over the transport :func:`config.otlp_protocol`
    resolves; console export when it names ``console``) and makes it global. Sets up the crash-safe
    record (:func:`ensure_record`) and instruments every supported library that is installed.
    With ``OTEL_SDK_DISABLED=true`` it does none of this. Returns the tracer provider in use.
    Never raises: a failing step is a warning, and the rest of the set-up still happens.
    """
    settings = reload_settings()
    if span_filter is not None:
        spans.set_span_filter(span_filter)
    if redactor is not None:
        content.set_redactor(redactor)
    if not settings.enabled:
        return trace.get_tracer_provider()
    provider = tracer_provider
    if provider is None:
        try:
            provider = trace.get_tracer_provider()
            if not isinstance(provider, TracerProvider):
                provider = _new_provider()
                trace.set_tracer_provider(provider)
        except Exception:
            _logger.warning("agent-otel: tracing set-up failed; continuing without it", exc_info=True)
            return provider if provider is not None else trace.get_tracer_provider()
    ensure_record(provider, settings)
    spans.set_tracer_provider(provider)

    from agent_otel.instrumentation import AgentInstrumentor

    try:
        instrumentor = AgentInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider, meter_provider=meter_provider)
    except Exception:
        _logger.warning("agent-otel: instrumenting libraries failed; manual spans still work", exc_info=True)
    return provider
