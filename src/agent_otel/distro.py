"""Entry points for ``opentelemetry-instrument``: distro, configurator and the ``jsonl`` exporter name.

With agent-otel installed, ``opentelemetry-instrument python app.py`` gets OTLP batch export (the
SDK's own, configured by ``OTEL_*``) *and* the crash-safe JSONL processor (``AGENT_OTEL_*``).
``OTEL_TRACES_EXPORTER=otlp,jsonl`` works too. The configurator never raises: a bad exporter name
or protocol is a warning, and the JSONL record keeps working whatever else fails — start-up
swallows configurator exceptions and would otherwise leave the app with no telemetry at all.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.distro import BaseDistro
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from agent_otel import interrupt
from agent_otel.config import reload_settings
from agent_otel.setup import attach_jsonl

_logger = logging.getLogger(__name__)

JSONL_EXPORTER = "jsonl"
_TRACES_EXPORTER_ENV = "OTEL_TRACES_EXPORTER"


class AgentOtelDistro(BaseDistro):
    """Defaults like the OpenTelemetry distro (OTLP traces and metrics), and our configurator first."""

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault(_TRACES_EXPORTER_ENV, "otlp")
        os.environ.setdefault("OTEL_METRICS_EXPORTER", "otlp")
        # With several configurators installed the SDK takes the first found; make it ours.
        os.environ.setdefault("OTEL_PYTHON_CONFIGURATOR", "agent_otel")


class JsonlExporterName(SpanExporter):
    """Makes ``jsonl`` a known name in ``OTEL_TRACES_EXPORTER``.

    The record itself is written by a span processor, not by an exporter behind a batch queue; our
    configurator takes ``jsonl`` out of the list, and under another configurator this exporter
    does nothing while the instrumentor attaches the real processor.
    """

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


# signal -> (exporter names variable, entry-point group, OTLP protocol variable)
_SIGNALS = {
    "traces": (_TRACES_EXPORTER_ENV, "opentelemetry_traces_exporter", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
    "metrics": (
        "OTEL_METRICS_EXPORTER",
        "opentelemetry_metrics_exporter",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    ),
    "logs": ("OTEL_LOGS_EXPORTER", "opentelemetry_logs_exporter", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"),
}
_PROTOCOLS = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}


def _known_exporter(name: str, signal: str = "traces") -> bool:
    """True when the SDK can build exporter ``name`` (``otlp`` resolved by protocol, as the SDK does)."""
    if name == "none":
        return True
    _, group, protocol_env = _SIGNALS[signal]
    if name == "otlp":
        protocol = (
            os.environ.get(protocol_env) or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
        ).strip()
        name = _PROTOCOLS.get(protocol, "otlp_proto_grpc")
    return any(ep.name == name for ep in entry_points(group=group))


def usable_exporter_names(raw: str, signal: str = "traces") -> tuple[list[str], bool]:
    """Split an ``OTEL_*_EXPORTER`` value into the names the SDK can build and whether ``jsonl`` was named.

    Unknown names (and ``otlp`` whose transport is not installed) are dropped with a warning: the
    SDK would raise on them and lose all telemetry.
    """
    env_name = _SIGNALS[signal][0]
    names = [n.strip() for n in raw.split(",") if n.strip() and n.strip().lower() != "none"]
    wants_jsonl = signal == "traces" and any(n.lower() == JSONL_EXPORTER for n in names)
    usable = []
    for name in names:
        if signal == "traces" and name.lower() == JSONL_EXPORTER:
            continue
        if _known_exporter(name, signal):
            usable.append(name)
        else:
            _logger.warning("agent-otel: %s names unknown exporter %r; it is skipped", env_name, name)
    return usable, wants_jsonl


def _protocol_ok() -> bool:
    """Replace every unsupported OTLP protocol setting by grpc (with a warning); False if any was."""
    ok = True
    for var in (
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
    ):
        value = os.environ.get(var)
        if value is not None and value.strip() and value.strip() not in _PROTOCOLS:
            _logger.warning(
                "agent-otel: %s=%r is not supported (grpc or http/protobuf); using grpc", var, value
            )
            os.environ[var] = "grpc"
            ok = False
    return ok


class AgentOtelConfigurator(_OTelSDKConfigurator):
    """The SDK's configurator plus the crash-safe JSONL processor; never raises."""

    def _configure(self, **kwargs: Any) -> None:
        settings = reload_settings()
        _protocol_ok()
        originals: dict[str, str | None] = {}
        wants_jsonl = False
        for signal, (env_name, _, _) in _SIGNALS.items():
            raw = os.environ.get(env_name)
            if raw is None and signal != "traces":
                continue  # unset: the SDK's own default, nothing to check
            usable, wanted = usable_exporter_names(raw or "", signal)
            wants_jsonl = wants_jsonl or wanted
            originals[env_name] = raw
            os.environ[env_name] = ",".join(usable) or "none"
        if wants_jsonl and not settings.jsonl_enabled:
            settings = dataclasses.replace(settings, jsonl_enabled=True)
        try:
            super()._configure(**kwargs)
        except Exception:
            _logger.warning(
                "agent-otel: the OpenTelemetry SDK could not be configured from the environment; "
                "continuing with the JSONL record only",
                exc_info=True,
            )
        finally:
            for env_name, raw in originals.items():
                if raw:
                    os.environ[env_name] = raw
                else:
                    os.environ.pop(env_name, None)
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider(resource=Resource.create())
            trace.set_tracer_provider(provider)
        try:
            attach_jsonl(provider, settings)
            interrupt.install(settings.handle_signals)
        except Exception:
            _logger.warning("agent-otel: the JSONL record could not be set up", exc_info=True)
