"""``AgentInstrumentor``: the ``opentelemetry_instrumentor`` entry point of agent-otel.

It instruments every supported library that is installed (openai, anthropic, langchain/langgraph)
and makes sure the crash-safe JSONL processor sits on the SDK tracer provider — whichever
configurator set that provider up (:func:`agent_otel.setup.ensure_record`). With
``OTEL_SDK_DISABLED=true`` it does nothing.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

_logger = logging.getLogger(__name__)

# Library modules under agent_otel.instrumentation, each with instrument(...) -> bool and uninstrument().
LIBRARIES = ("openai", "anthropic", "langchain")


class AgentInstrumentor(BaseInstrumentor):
    """Instruments agent libraries with the agent-otel taxonomy; missing libraries are skipped."""

    _active: tuple[str, ...] = ()

    def instrumentation_dependencies(self) -> Collection[str]:
        # Every library is optional and version-checked by its own module.
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        from agent_otel import spans
        from agent_otel.config import reload_settings
        from agent_otel.setup import ensure_record

        settings = reload_settings()
        if not settings.enabled:  # OTEL_SDK_DISABLED=true: patch nothing, hook nothing
            return
        tracer_provider = kwargs.get("tracer_provider")
        # Under any configurator (ours, the SDK's, a vendor's): the same record as everywhere else.
        ensure_record(tracer_provider or trace.get_tracer_provider(), settings)
        spans.set_tracer_provider(tracer_provider)
        active = []
        for name in LIBRARIES:
            try:
                module = importlib.import_module(f"agent_otel.instrumentation.{name}")
                if module.instrument(
                    tracer_provider=tracer_provider, meter_provider=kwargs.get("meter_provider")
                ):
                    active.append(name)
            except Exception:
                _logger.warning(
                    "agent-otel: instrumenting %s failed; it is left uninstrumented", name, exc_info=True
                )
        AgentInstrumentor._active = tuple(active)

    def _uninstrument(self, **kwargs: Any) -> None:
        for name in AgentInstrumentor._active:
            try:
                importlib.import_module(f"agent_otel.instrumentation.{name}").uninstrument()
            except Exception:
                _logger.warning("agent-otel: uninstrumenting %s failed", name, exc_info=True)
        AgentInstrumentor._active = ()
