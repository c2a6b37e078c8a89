"""Entry points for ``opentelemetry-instrument``: distro, configurator and the ``jsonl`` exporter name.

With agent-otel installed, ``opentelemetry-instrument python app.py`` gets OTLP batch export (the
SDK's own, configured by ``OTEL_*``) *and* the crash-safe JSONL processor (``AGENT_OTEL_*``).
``OTEL_TRACES_EXPORTER=otlp,jsonl`` works too. The configurator never raises: a bad exporter name
or protocol is a warning, and the JSONL record keeps working whatever else fails — start-up
swallows configurator exceptions and would otherwise leave the app with no telemetry at all.
"""

from __future__ import annotations

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

from agent_otel.config import (
    JSONL_EXPORTER,
    OTLP_GRPC,
    OTLP_HTTP,
    TRACES_EXPORTER_ENV,
    otlp_protocol,
    otlp_protocol_variables,
    reload_settings,
    warn_unsupported_otlp_protocols,
)
from agent_otel.setup import ensure_record

_logger = logging.getLogger(__name__)


class AgentOtelDistro(BaseDistro):
    """Defaults like the OpenTelemetry distro (OTLP traces and metrics), and our configurator first."""

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault(TRACES_EXPORTER_ENV, "otlp")
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


# signal -> (exporter names variable, entry-point group)
_SIGNALS = {
    "traces": (TRACES_EXPORTER_ENV, "opentelemetry_traces_exporter"),
    "metrics": ("OTEL_METRICS_EXPORTER", "opentelemetry_metrics_exporter"),
    "logs": ("OTEL_LOGS_EXPORTER", "opentelemetry_logs_exporter"),
}
_PROTOCOLS = {OTLP_GRPC: "otlp_proto_grpc", OTLP_HTTP: "otlp_proto_http"}


def _known_exporter(name: str, signal: str = "traces") -> bool:
    """True when the SDK can build exporter ``name`` (``otlp`` resolved by :func:`config.otlp_protocol`)."""
    if name == "none":
        return True
    group = _SIGNALS[signal][1]
    if name == "otlp":
        name = _PROTOCOLS[otlp_protocol(signal, warn=False)]
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


class AgentOtelConfigurator(_OTelSDKConfigurator):
    """The SDK's configurator plus the crash-safe JSONL processor; never raises.

    With ``OTEL_SDK_DISABLED=true`` it sets nothing up. Otherwise, for the SDK's own configuration
    only, it presents a cleaned-up environment: exporter names the SDK cannot build are left out
    (``jsonl`` included: the record is a span processor, see :func:`setup.ensure_record`), and for
    each signal exporting over ``otlp`` the transport :func:`config.otlp_protocol` resolves is put in
    ``OTEL_EXPORTER_OTLP_{SIGNAL}_PROTOCOL``. Every variable it touched is restored afterwards, so
    the application and its child processes see the environment as the user set it.
    """

    def _configure(self, **kwargs: Any) -> None:
        settings = reload_settings()
        if not settings.enabled:
            return
        warn_unsupported_otlp_protocols()
        originals: dict[str, str | None] = {}

        def present(name: str, value: str) -> None:
            originals.setdefault(name, os.environ.get(name))
            os.environ[name] = value

        try:
            for signal, (env_name, _) in _SIGNALS.items():
                raw = os.environ.get(env_name)
                if raw is None and signal != "traces":
                    continue  # unset: the SDK's own default, nothing to check
                usable, _ = usable_exporter_names(raw or "", signal)
                present(env_name, ",".join(usable) or "none")
                if any(n.lower() == "otlp" for n in usable):
                    present(otlp_protocol_variables(signal)[0], otlp_protocol(signal, warn=False))
            super()._configure(**kwargs)
        except Exception:
            _logger.warning(
                "agent-otel: the OpenTelemetry SDK could not be configured from the environment; "
                "continuing with the JSONL record only",
                exc_info=True,
            )
        finally:
            for name, raw in originals.items():
                if raw is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = raw
        try:
            provider = trace.get_tracer_provider()
            if not isinstance(provider, TracerProvider):
                provider = TracerProvider(resource=Resource.create())
                trace.set_tracer_provider(provider)
        except Exception:
            _logger.warning("agent-otel: no tracer provider could be set up", exc_info=True)
            return
        ensure_record(provider, settings)
