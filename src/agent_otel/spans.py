"""The span factory: the only code that opens and closes taxonomy spans.

Every instrumentation (and the manual API) calls ``start_agent`` / ``start_workflow`` /
``start_node`` / ``start_llm`` / ``start_tool`` and gets a :class:`SpanHandle`. The factory applies
the taxonomy (name, kind, category, ``gen_ai.operation.name``), the session's conversation id, the
category filter, and the one-LLM-span rule. Nothing here raises into the caller: a handle whose
span could not be started, or whose category is filtered out, is a non-recording handle whose
``context`` is the parent's, so children still parent correctly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

from agent_otel import attributes as attrs
from agent_otel import content
from agent_otel.attributes import Category, Operation
from agent_otel.config import get_settings
from agent_otel.context import current_session
from agent_otel.version import __version__

_logger = logging.getLogger(__name__)

INSTRUMENTATION_SCOPE = "agent_otel"

SpanFilter = Callable[[str, str, Mapping[str, Any]], bool]
"""A span filter: ``(category, span_name, start_attributes) -> keep?`` (Koog's message filter)."""

_LLM_KEY = context_api.create_key("agent_otel.active_llm")
_INTERRUPT = attrs.INTERRUPT

# Exceptions that mean "the run was stopped", not "the code failed".
_INTERRUPTIONS: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit, asyncio.CancelledError)


class _Factory:
    """Process-wide factory configuration: which tracer, which extra filter. Replaced, not mutated."""

    tracer: trace.Tracer | None = None
    span_filter: SpanFilter | None = None
    # Warn once (then log at debug) so a broken filter or SDK cannot flood the application's logs.
    filter_warned = False
    start_warned = False


def set_tracer_provider(tracer_provider: trace.TracerProvider | None) -> None:
    """Create taxonomy spans with ``tracer_provider`` (None: the global provider)."""
    if tracer_provider is None:
        _Factory.tracer = None
    else:
        _Factory.tracer = tracer_provider.get_tracer(INSTRUMENTATION_SCOPE, __version__)


def set_span_filter(span_filter: SpanFilter | None) -> None:
    """Install a callable that decides, per span, whether it is recorded (None removes it).

    The filter gets ``(category, span_name, start_attributes)`` (a read-only mapping) and returns
    True to record the span. A filter that raises never reaches the caller: the span is *kept*
    (failing open loses no telemetry; the filter is a noise control, redaction is the privacy
    control) and a warning is logged the first time.
    """
    _Factory.span_filter = span_filter
    _Factory.filter_warned = False


def _tracer() -> trace.Tracer:
    tracer = _Factory.tracer
    if tracer is None:
        # A ProxyTracer until the global provider is set, then the real one: cheap either way.
        tracer = _Factory.tracer = trace.get_tracer(INSTRUMENTATION_SCOPE, __version__)
    return tracer


def error_type_of(exc: BaseException) -> str:
    """The low-cardinality ``error.type`` of an exception: its class's qualified name."""
    return type(exc).__qualname__


def _describe(exc: BaseException) -> str:
    """``"ClassName: message"`` (just the class name when the message is empty or unprintable)."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class SpanHandle:
    """One taxonomy span and the operations instrumentations perform on it.

    Every method is safe: it never raises and does nothing once the span has ended. ``end`` is
    idempotent, so whichever path finishes first (return, exception, stream close, GC) wins.
    """

    __slots__ = ("_context", "_outcome", "_parent", "category", "ended", "failed", "owned", "span")

    def __init__(self, span: Span, category: Category, parent: context_api.Context, owned: bool = True):
        self.span = span
        self.category = category
        self.owned = owned
        self.ended = not owned
        self.failed = False
        self._parent = parent
        self._context: context_api.Context | None = None
        # What ``end`` records as the tool outcome of a tool that did not fail (see set_outcome).
        self._outcome: str | None = attrs.TOOL_OUTCOME_SUCCESS

    @property
    def recording(self) -> bool:
        """True when the span records data (not filtered out, not sampled away)."""
        return self.span.is_recording()

    @property
    def context(self) -> context_api.Context:
        """The context children of this span start in (the parent's when not recording)."""
        ctx = self._context
        if ctx is None:
            if self.span is INVALID_SPAN:
                ctx = self._parent
            else:
                ctx = trace.set_span_in_context(self.span, self._parent)
                if self.category is Category.LLM:
                    ctx = context_api.set_value(_LLM_KEY, self, ctx)
            self._context = ctx
        return ctx

    @contextmanager
    def activate(self) -> Iterator[SpanHandle]:
        """Make this span current for the block (and, for LLM spans, mark an LLM call as active)."""
        token = context_api.attach(self.context)
        try:
            yield self
        finally:
            context_api.detach(token)

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute; None is ignored, and so is anything once the span has ended.

        On a merged LLM handle (``owned`` False) the value only fills a key the outer span lacks.
        """
        if value is None:
            return
        try:
            if key == _INTERRUPT and value:
                self._outcome = None  # paused by a graph interrupt(): see set_outcome
            span = self.span
            if not span.is_recording():  # ended (maybe by interruption handling), filtered, sampled out
                return
            if not self.owned and key in getattr(span, "attributes", ()):
                return
            span.set_attribute(key, value)
        except Exception:
            _logger.debug("agent-otel: could not set %s", key, exc_info=True)

    def set_attributes(self, values: Mapping[str, Any]) -> None:
        """Set several attributes; None values are ignored (merged handles: see ``set_attribute``)."""
        try:
            if values.get(_INTERRUPT):
                self._outcome = None  # paused by a graph interrupt(): see set_outcome
            if not self.owned:
                for key, value in values.items():
                    self.set_attribute(key, value)
                return
            span = self.span
            if span.is_recording():
                span.set_attributes({k: v for k, v in values.items() if v is not None})
        except Exception:
            _logger.debug("agent-otel: could not set attributes", exc_info=True)

    def set_usage(
        self,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cache_read_input_tokens: int | None = None,
        cache_creation_input_tokens: int | None = None,
        reasoning_output_tokens: int | None = None,
    ) -> None:
        """Record token usage (``gen_ai.usage.*``)."""
        self.set_attribute(attrs.GEN_AI_USAGE_INPUT_TOKENS, input_tokens)
        self.set_attribute(attrs.GEN_AI_USAGE_OUTPUT_TOKENS, output_tokens)
        self.set_attribute(attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, cache_read_input_tokens)
        self.set_attribute(attrs.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, cache_creation_input_tokens)
        self.set_attribute(attrs.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, reasoning_output_tokens)

    def set_response(
        self,
        model: str | None = None,
        response_id: str | None = None,
        finish_reasons: Sequence[str] | None = None,
    ) -> None:
        """Record what the model answered with (``gen_ai.response.*``)."""
        self.set_attribute(attrs.GEN_AI_RESPONSE_MODEL, model)
        self.set_attribute(attrs.GEN_AI_RESPONSE_ID, response_id)
        if finish_reasons:
            self.set_attribute(attrs.GEN_AI_RESPONSE_FINISH_REASONS, [str(r) for r in finish_reasons])

    def set_tool_arguments(self, value: Any) -> None:
        """Record a tool call's arguments, only when content capture is on."""
        if content.capture_enabled():
            self.set_attribute(
                attrs.GEN_AI_TOOL_CALL_ARGUMENTS, content.to_json(value, kind="tool_arguments")
            )

    def set_tool_result(self, value: Any) -> None:
        """Record a tool call's result, only when content capture is on."""
        if content.capture_enabled():
            self.set_attribute(attrs.GEN_AI_TOOL_CALL_RESULT, content.to_json(value, kind="tool_result"))

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        """Add a span event (merged LLM handles add it to the outer span)."""
        try:
            if not self.span.is_recording():
                return
            self.span.add_event(name, attributes)
        except Exception:
            _logger.debug("agent-otel: could not add event %s", name, exc_info=True)

    def fail(
        self,
        exc: BaseException | None = None,
        *,
        error_type: str | None = None,
        message: str | None = None,
    ) -> None:
        """Mark the span failed: status ERROR, ``error.type``, and an exception event. Does not end it.

        Interruptions (KeyboardInterrupt, SystemExit, task cancellation) also set
        ``agent_otel.interrupted``.
        """
        if self.ended:
            return
        try:
            if not self.span.is_recording():  # filtered out, sampled out, or ended elsewhere
                return
            if self.failed:
                # Already failed (e.g. a validation error, then the exception it raised): the first
                # outcome stands; the exception is still recorded as an event.
                if exc is not None:
                    self.span.record_exception(exc)
                return
            self.failed = True
            if error_type is None:
                error_type = error_type_of(exc) if exc is not None else attrs.ERROR_TYPE_OTHER
            if message is None and exc is not None:
                message = _describe(exc)
            self.span.set_status(Status(StatusCode.ERROR, message))
            self.span.set_attribute(attrs.ERROR_TYPE, error_type)
            if self.category is Category.TOOL:
                self.span.set_attribute(attrs.TOOL_OUTCOME, attrs.TOOL_OUTCOME_ERROR)
            if exc is not None:
                if isinstance(exc, _INTERRUPTIONS):
                    self.span.set_attribute(attrs.INTERRUPTED, True)
                self.span.record_exception(exc)
        except Exception:
            _logger.debug("agent-otel: could not record failure", exc_info=True)

    def validation_error(
        self, message: str | None = None, *, error_type: str = attrs.TOOL_VALIDATION_ERROR_TYPE
    ) -> None:
        """Mark a tool call whose arguments failed validation (its own outcome, status ERROR)."""
        if self.ended:
            return
        self.fail(error_type=error_type, message=message or error_type)
        self.set_attribute(attrs.TOOL_OUTCOME, attrs.TOOL_OUTCOME_VALIDATION_ERROR)

    def set_outcome(self, outcome: str | None) -> None:
        """Choose the outcome ``end`` records on a tool span that did not fail (``agent_otel.tool.outcome``).

        The default is ``"success"``. None means *no outcome*: the call neither succeeded nor failed
        (a tool paused by a LangGraph ``interrupt()``, waiting for a human). A failed tool keeps the
        outcome its failure set (``error`` / ``validation_error``). Setting ``agent_otel.graph.interrupt``
        through this handle implies ``set_outcome(None)``. Other categories record no outcome.
        """
        self._outcome = outcome

    def end(self, end_time: int | None = None) -> None:
        """End the span exactly once (later calls do nothing)."""
        if self.ended:
            return
        self.ended = True
        # An LLM handle's context holds the handle itself: drop it so the pair is freed without the GC.
        self._context = None
        try:
            span = self.span
            if not span.is_recording():  # never started, or already ended by interruption handling
                return
            if self.category is Category.TOOL and not self.failed and self._outcome is not None:
                span.set_attribute(attrs.TOOL_OUTCOME, self._outcome)
            span.end(end_time)
        except Exception:
            _logger.debug("agent-otel: could not end span", exc_info=True)


def active_llm(ctx: context_api.Context | None = None) -> SpanHandle | None:
    """The LLM handle active in ``ctx`` (default: the current context), if any and not yet ended."""
    handle = context_api.get_value(_LLM_KEY, ctx)
    if isinstance(handle, SpanHandle) and not handle.ended:
        return handle
    return None


def _start(
    category: Category,
    name: str,
    kind: SpanKind,
    base: dict[str, Any],
    parent: context_api.Context | None,
    attributes: Mapping[str, Any] | None,
    start_time: int | None,
) -> SpanHandle:
    parent_ctx = context_api.get_current() if parent is None else parent
    try:
        settings = get_settings()
        if not settings.enabled or category.value not in settings.categories:
            return SpanHandle(INVALID_SPAN, category, parent_ctx)
        if attributes:
            base.update((k, v) for k, v in attributes.items() if v is not None)
        base[attrs.CATEGORY] = category.value  # after the caller's attributes: the category is ours
        session = current_session()
        if session is not None:
            base.setdefault(attrs.GEN_AI_CONVERSATION_ID, session.conversation_id)
            if session.user_id is not None:
                base.setdefault(attrs.USER_ID, session.user_id)
        span_filter = _Factory.span_filter
        if span_filter is not None and not _keep(span_filter, category, name, base):
            return SpanHandle(INVALID_SPAN, category, parent_ctx)
        span = _tracer().start_span(
            name, context=parent_ctx, kind=kind, attributes=base, start_time=start_time
        )
        return SpanHandle(span, category, parent_ctx)
    except Exception:
        log = _logger.debug if _Factory.start_warned else _logger.warning
        _Factory.start_warned = True
        log("agent-otel: could not start a %s span; continuing without it", category.value, exc_info=True)
        return SpanHandle(INVALID_SPAN, category, parent_ctx)


def _keep(span_filter: SpanFilter, category: Category, name: str, base: dict[str, Any]) -> bool:
    """Ask the user's filter; a filter that raises keeps the span (see :func:`set_span_filter`)."""
    try:
        return bool(span_filter(category.value, name, MappingProxyType(base)))
    except Exception:
        log = _logger.debug if _Factory.filter_warned else _logger.warning
        _Factory.filter_warned = True
        log("agent-otel: the span filter raised on %r; the span is kept", name, exc_info=True)
        return True


def start_agent(
    name: str | None = None,
    *,
    agent_id: str | None = None,
    conversation_id: str | None = None,
    parent: context_api.Context | None = None,
    attributes: Mapping[str, Any] | None = None,
    start_time: int | None = None,
) -> SpanHandle:
    """Start an agent run span (one user turn): ``invoke_agent {name}``, INTERNAL."""
    base: dict[str, Any] = {attrs.GEN_AI_OPERATION_NAME: Operation.INVOKE_AGENT.value}
    if name:
        base[attrs.GEN_AI_AGENT_NAME] = name
    if agent_id:
        base[attrs.GEN_AI_AGENT_ID] = agent_id
    if conversation_id:
        base[attrs.GEN_AI_CONVERSATION_ID] = str(conversation_id)
    span_name = attrs.span_name(Operation.INVOKE_AGENT.value, name)
    return _start(Category.AGENT, span_name, SpanKind.INTERNAL, base, parent, attributes, start_time)


def start_workflow(
    name: str,
    *,
    parent: context_api.Context | None = None,
    attributes: Mapping[str, Any] | None = None,
    start_time: int | None = None,
) -> SpanHandle:
    """Start a workflow / strategy span: ``invoke_workflow {name}``, INTERNAL."""
    base: dict[str, Any] = {
        attrs.GEN_AI_OPERATION_NAME: Operation.INVOKE_WORKFLOW.value,
        attrs.GEN_AI_WORKFLOW_NAME: name,
    }
    span_name = attrs.span_name(Operation.INVOKE_WORKFLOW.value, name)
    return _start(Category.WORKFLOW, span_name, SpanKind.INTERNAL, base, parent, attributes, start_time)


def start_node(
    name: str,
    *,
    step: int | None = None,
    triggers: Sequence[str] | None = None,
    parent: context_api.Context | None = None,
    attributes: Mapping[str, Any] | None = None,
    start_time: int | None = None,
) -> SpanHandle:
    """Start a graph node span: ``node {name}``, INTERNAL (no GenAI convention exists for nodes yet)."""
    base: dict[str, Any] = {attrs.NODE_NAME: name}
    if step is not None:
        base[attrs.NODE_STEP] = step
    if triggers:
        base[attrs.NODE_TRIGGERS] = [str(t) for t in triggers]
    span_name = attrs.span_name(attrs.NODE_SPAN_PREFIX, name)
    return _start(Category.NODE, span_name, SpanKind.INTERNAL, base, parent, attributes, start_time)


def start_llm(
    *,
    model: str | None,
    provider: str,
    operation: str = Operation.CHAT.value,
    server_address: str | None = None,
    server_port: int | None = None,
    stream: bool = False,
    parent: context_api.Context | None = None,
    attributes: Mapping[str, Any] | None = None,
    start_time: int | None = None,
) -> SpanHandle:
    """Start a model call span: ``{operation} {model}``, CLIENT.

    If an LLM handle is already active in the parent context (a higher layer such as LangChain
    holds the span for this very call), no second span is made: the returned handle is *merged*
    (``owned`` False) — its attributes go onto the outer span, and ``fail``/``end`` do nothing.
    """
    outer = active_llm(parent)
    if outer is not None:
        merged = SpanHandle(outer.span, Category.LLM, outer._parent, owned=False)
        merged._context = outer.context
        # Fill what the outer span lacks (a merged handle never overwrites the owner's values).
        merged.set_attribute(attrs.GEN_AI_REQUEST_MODEL, model or None)
        merged.set_attribute(attrs.GEN_AI_PROVIDER_NAME, provider or None)
        merged.set_attribute(attrs.SERVER_ADDRESS, server_address)
        merged.set_attribute(attrs.SERVER_PORT, server_port)
        merged.set_attribute(attrs.GEN_AI_REQUEST_STREAM, True if stream else None)
        if attributes:
            merged.set_attributes(attributes)
        return merged
    base: dict[str, Any] = {
        attrs.GEN_AI_OPERATION_NAME: operation,
        attrs.GEN_AI_PROVIDER_NAME: provider,
    }
    if model:
        base[attrs.GEN_AI_REQUEST_MODEL] = model
    if server_address:
        base[attrs.SERVER_ADDRESS] = server_address
    if server_port is not None:
        base[attrs.SERVER_PORT] = server_port
    if stream:
        base[attrs.GEN_AI_REQUEST_STREAM] = True
    span_name = attrs.span_name(operation, model)
    return _start(Category.LLM, span_name, SpanKind.CLIENT, base, parent, attributes, start_time)


def start_tool(
    name: str,
    *,
    call_id: str | None = None,
    tool_type: str | None = "function",
    description: str | None = None,
    parent: context_api.Context | None = None,
    attributes: Mapping[str, Any] | None = None,
    start_time: int | None = None,
) -> SpanHandle:
    """Start a tool call span: ``execute_tool {name}``, INTERNAL."""
    base: dict[str, Any] = {
        attrs.GEN_AI_OPERATION_NAME: Operation.EXECUTE_TOOL.value,
        attrs.GEN_AI_TOOL_NAME: name,
    }
    if call_id:
        base[attrs.GEN_AI_TOOL_CALL_ID] = str(call_id)
    if tool_type:
        base[attrs.GEN_AI_TOOL_TYPE] = tool_type
    if description:
        base[attrs.GEN_AI_TOOL_DESCRIPTION] = description
    span_name = attrs.span_name(Operation.EXECUTE_TOOL.value, name)
    return _start(Category.TOOL, span_name, SpanKind.INTERNAL, base, parent, attributes, start_time)
