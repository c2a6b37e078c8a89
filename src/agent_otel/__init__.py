"""agent-otel: OpenTelemetry for AI agents.

Zero-code: ``opentelemetry-instrument python my_agent.py``. From code: ``agent_otel.instrument()``.
Home-grown agents: the :func:`agent`, :func:`workflow`, :func:`node`, :func:`llm` and :func:`tool`
context managers/decorators, and :func:`session` to group turns into a conversation.
"""

from agent_otel.attributes import Category
from agent_otel.content import set_redactor
from agent_otel.context import Session, current_session, session
from agent_otel.instrumentation import AgentInstrumentor
from agent_otel.manual import SpanScope, agent, llm, node, tool, workflow
from agent_otel.setup import instrument
from agent_otel.spans import SpanHandle, set_span_filter
from agent_otel.version import __version__

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
