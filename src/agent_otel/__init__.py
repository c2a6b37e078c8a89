"""agent-otel: OpenTelemetry for AI agents.

Zero-code: ``opentelemetry-instrument python my_agent.py``. From code: ``agent_otel.instrument()``.
Home-grown agents: the :func:`agent`, :func:`workflow`, :func:`node`, :func:`llm` and :func:`tool`
context managers/decorators, and :func:`session` to group turns into a conversation.

Every public name is imported on first use (PEP 562), so ``import agent_otel`` costs next to
nothing, and the record reader and the CLI (``agent_otel.jsonl.reader``, ``agent_otel.cli``), which
import this package first, never load the OpenTelemetry SDK or the instrumentor through it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agent_otel.version import __version__

if TYPE_CHECKING:
    from agent_otel.attributes import Category
    from agent_otel.content import set_redactor
    from agent_otel.context import Session, current_session, session
    from agent_otel.instrumentation import AgentInstrumentor
    from agent_otel.manual import SpanScope, agent, llm, node, tool, workflow
    from agent_otel.setup import instrument
    from agent_otel.spans import SpanHandle, set_span_filter

# public name -> the module that defines it
_LAZY = {
    "AgentInstrumentor": "agent_otel.instrumentation",
    "Category": "agent_otel.attributes",
    "Session": "agent_otel.context",
    "SpanHandle": "agent_otel.spans",
    "SpanScope": "agent_otel.manual",
    "agent": "agent_otel.manual",
    "current_session": "agent_otel.context",
    "instrument": "agent_otel.setup",
    "llm": "agent_otel.manual",
    "node": "agent_otel.manual",
    "session": "agent_otel.context",
    "set_redactor": "agent_otel.content",
    "set_span_filter": "agent_otel.spans",
    "tool": "agent_otel.manual",
    "workflow": "agent_otel.manual",
}

__all__ = [
    "AgentInstrumentor",
    "Category",
    "Session",
    "SpanHandle",
    "SpanScope",
    "__version__",
    "agent",
    "current_session",
    "instrument",
    "llm",
    "node",
    "session",
    "set_redactor",
    "set_span_filter",
    "tool",
    "workflow",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups are plain module attributes
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
