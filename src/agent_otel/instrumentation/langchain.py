"""LangChain instrumentation: chat model calls as LLM spans, tools as tool spans (and LangGraph).

``instrument()`` is the entry point the AgentInstrumentor calls for the LangChain family: it patches
langchain-core here and, when LangGraph is installed, :mod:`agent_otel.instrumentation.langgraph`
(graph runs, nodes, interrupts).

What is patched, and why there (no callback handler is injected):

* ``BaseChatModel._generate_with_cache`` / ``_agenerate_with_cache`` — the one place every
  ``invoke``/``batch``/``generate`` call reaches once per model call, with LangChain's run manager
  (whose metadata already holds ``ls_provider`` / ``ls_model_name``: no second lookup). The LLM span
  is *active* around the real call, so an openai/anthropic SDK instrumentation underneath merges
  into it (the factory's one-LLM-span rule) instead of opening a second span. The LangChain call owns
  the model call (``_call.LLMCall.claim``): it records the ``gen_ai.client.*`` metrics and the content,
  once; the SDK layer beneath only adds what it alone knows (server address and port).
* ``BaseChatModel.stream`` / ``astream`` — direct streaming calls, which bypass the above.
* ``BaseTool.run`` / ``arun`` — every tool call (``@tool``, ``StructuredTool``, ``ToolNode``), with
  the call id; the tool span is current while the tool body runs (HTTP calls inside are children).
* ``langchain_core.tools.base._handle_tool_error`` / ``_handle_validation_error`` — LangChain turns
  a ``ToolException`` / invalid arguments into an error *message* when ``handle_tool_error`` /
  ``handle_validation_error`` is set; these hooks still mark the tool span failed / invalid.
* Only with ``AGENT_OTEL_LANGCHAIN_CHAIN_SPANS=true``: ``invoke``/``ainvoke`` of sequences,
  parallels, lambdas, prompt templates and output parsers become workflow spans.

Every wrapper calls the user's method exactly once, outside any ``try`` that holds extraction code,
and returns its value or lets its exception through unchanged.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from opentelemetry import context as otel_context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from agent_otel import attributes as attrs
from agent_otel import content, spans
from agent_otel.attributes import Operation
from agent_otel.config import get_settings
from agent_otel.instrumentation import _langchain_context as lcctx
from agent_otel.instrumentation import _langchain_extract as extract
from agent_otel.instrumentation import _patching
from agent_otel.instrumentation._call import LLMCall, _perf_ns, async_wrapper, sync_wrapper
from agent_otel.instrumentation._genai_metrics import GenAIMetrics, metrics_for
from agent_otel.instrumentation._langchain_extract import MAPPING
from agent_otel.instrumentation._safe import guard

_logger = logging.getLogger(__name__)

PACKAGE = "langchain-core"
MIN_LANGCHAIN_CORE = (0, 3)

_CHAT_MODELS = "langchain_core.language_models.chat_models"
_TOOLS = "langchain_core.tools.base"

_REQUEST_KEYS = {
    "ls_temperature": attrs.GEN_AI_REQUEST_TEMPERATURE,
    "ls_max_tokens": attrs.GEN_AI_REQUEST_MAX_TOKENS,
    "ls_stop": attrs.GEN_AI_REQUEST_STOP_SEQUENCES,
}


class _State:
    """Module state: what is patched (to undo it), the metrics, and the pydantic validation error types."""

    patched: ClassVar[list[_patching.Patched]] = []
    active: bool = False
    langgraph: bool = False
    metrics: GenAIMetrics | None = None
    validation_errors: tuple[type[BaseException], ...] = ()


def instrument(
    *, tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> bool:
    """Patch langchain-core (and LangGraph if present). Idempotent.

    Returns False (with a debug log) when langchain-core is missing or older than 0.3.
    ``meter_provider`` (default: the global one) gets the ``gen_ai.client.*`` histograms of chat model
    calls; ``tracer_provider`` is accepted for the instrumentor's calling convention only (the caller
    applies it through ``spans.set_tracer_provider``).
    """
    if _State.active:
        return True
    if not _patching.supported(PACKAGE, MIN_LANGCHAIN_CORE):
        return False
    try:
        importlib.import_module("langchain_core")
        importlib.import_module(_CHAT_MODELS)
    except Exception:
        _logger.debug("agent-otel: langchain-core cannot be imported; not instrumented", exc_info=True)
        return False
    _State.metrics = metrics_for(meter_provider)
    _State.validation_errors = _validation_errors()
    lcctx.load_graph_errors()
    targets: list[tuple[str, str, Callable[..., Any]]] = [
        (_CHAT_MODELS, "BaseChatModel._generate_with_cache", _wrap_generate),
        (_CHAT_MODELS, "BaseChatModel._agenerate_with_cache", _wrap_agenerate),
        (_CHAT_MODELS, "BaseChatModel.stream", _wrap_stream),
        (_CHAT_MODELS, "BaseChatModel.astream", _wrap_astream),
        (_TOOLS, "BaseTool.run", _wrap_tool_run),
        (_TOOLS, "BaseTool.arun", _wrap_tool_arun),
        # Absent in other versions (skipped with a debug log): handled tool errors are then not marked.
        (_TOOLS, "_handle_tool_error", _wrap_handle_tool_error),
        (_TOOLS, "_handle_validation_error", _wrap_handle_validation_error),
    ]
    if get_settings().langchain_chain_spans:
        targets += _chain_span_targets()
    _State.patched = _patching.patch_all(targets)
    _State.active = True

    from agent_otel.instrumentation import langgraph as _langgraph

    _State.langgraph = _langgraph.instrument()
    return True


def uninstrument() -> None:
    """Undo every patch of :func:`instrument` (LangGraph's too)."""
    if _State.langgraph:
        from agent_otel.instrumentation import langgraph as _langgraph

        _langgraph.uninstrument()
        _State.langgraph = False
    _patching.unpatch_all(reversed(_State.patched))
    _State.patched = []
    _State.active = False


def _validation_errors() -> tuple[type[BaseException], ...]:
    """pydantic's ValidationError types (v2, and v1's when present): a tool's invalid arguments."""
    found: list[type[BaseException]] = []
    try:
        from pydantic import ValidationError

        found.append(ValidationError)
        from pydantic.v1 import ValidationError as ValidationErrorV1

        found.append(ValidationErrorV1)
    except Exception:
        pass
    return tuple(found)


# --------------------------------------------------------------------------- chat models


class _ChatModelCall(LLMCall):
    """One chat model call: it owns the LLM span and the metrics of the model call (see ``_call``).

    ``response`` accumulates the chunks of a stream (class default None: a ``generate`` call reads its
    ``ChatResult`` at once).
    """

    response: extract.Response | None = None

    def extract_response(self, response: Any) -> None:
        self._put(extract.read_chat_result(response))
        if self.capture:
            msgs = extract.output_messages(response)
            if msgs is not None:
                self.pending[attrs.GEN_AI_OUTPUT_MESSAGES] = content.to_json(msgs, kind="output_messages")

    def on_chunk(self, chunk: Any) -> None:
        """One streamed message chunk (overrides ``LLMCall.on_chunk``: one call per chunk, guarded here)."""
        try:
            if self.first_chunk_ns is None:
                self.first_chunk_ns = _perf_ns()
            self.response.add_message(chunk)  # type: ignore[union-attr]  # set by _StreamTrace.begin
        except Exception:
            _logger.debug("agent-otel: stream chunk extraction failed", exc_info=True)

    def complete_stream(self) -> None:
        response = self.response
        if response is not None and response.finish_reasons:
            response.finish_reasons = response.finish_reasons[-1:]
        self._put(response)

    def _put(self, response: extract.Response | None) -> None:
        if response is None:
            return
        if response.model is not None:
            self.response_model = response.model
        if response.input_tokens is not None:
            self.input_tokens = response.input_tokens
        if response.output_tokens is not None:
            self.output_tokens = response.output_tokens
        self.put_response(response.model, response.response_id, response.finish_reasons or None)
        put = self.put
        put(attrs.GEN_AI_USAGE_INPUT_TOKENS, response.input_tokens)
        put(attrs.GEN_AI_USAGE_OUTPUT_TOKENS, response.output_tokens)
        put(attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, response.cache_read_tokens)
        put(attrs.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, response.cache_creation_tokens)
        put(attrs.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, response.reasoning_tokens)
        if response.tool_call_names:
            self.pending[attrs.LLM_TOOL_CALL_NAMES] = response.tool_call_names
        if response.tool_call_ids:
            self.pending[attrs.LLM_TOOL_CALL_IDS] = response.tool_call_ids


def _ls_params(instance: Any, run_manager: Any, stop: Any, kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    """LangSmith params of this call: from the run manager's metadata (free), else computed."""
    metadata = getattr(run_manager, "metadata", None)
    if isinstance(metadata, MAPPING) and "ls_provider" in metadata:
        return metadata
    get = getattr(instance, "_get_ls_params", None)
    if get is None:
        return {}
    extra = {k: v for k, v in kwargs.items() if k not in ("stop", "run_manager", "messages")}
    return get(stop=stop, **extra)  # type: ignore[no-any-return]


def _start_llm(
    instance: Any,
    messages: Any,
    stop: Any,
    run_manager: Any,
    kwargs: Mapping[str, Any],
    stream: bool,
    parent: otel_context.Context | None = None,
) -> _ChatModelCall:
    """Start the LLM span of a chat model call and claim the model call (may raise: callers guard)."""
    params = _ls_params(instance, run_manager, stop, kwargs)
    model = params.get("ls_model_name")
    model = model if isinstance(model, str) else None
    provider = extract.provider_name(params.get("ls_provider"), type(instance))
    handle = spans.start_llm(
        model=model,
        provider=provider,
        stream=stream,
        parent=parent,
        attributes=extract.request_attributes(params, _REQUEST_KEYS) or None,
    )
    capture = handle.recording and content.capture_enabled()
    if capture:
        _record_request_content(handle, messages, kwargs)
    call = _ChatModelCall(
        handle,
        _State.metrics,
        operation=Operation.CHAT.value,
        provider=provider,
        request_model=model,
        server_address=None,  # reported by the SDK layer beneath, when there is one
        server_port=None,
        capture=capture,
        plain=True,
    )
    call.claim()
    return call


@guard
def _record_request_content(handle: spans.SpanHandle, messages: Any, kwargs: Mapping[str, Any]) -> None:
    if messages is not None:
        msgs = extract.input_messages(messages)
        if msgs is not None:
            handle.set_attribute(attrs.GEN_AI_INPUT_MESSAGES, content.to_json(msgs, kind="input_messages"))
    tools = kwargs.get("tools")
    if tools:
        handle.set_attribute(attrs.GEN_AI_TOOL_DEFINITIONS, content.to_json(tools, kind="tool_definitions"))


@guard
def _fail(handle: spans.SpanHandle, exc: BaseException) -> None:
    handle.fail(exc)
    handle.end()


def _start_generate(instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> _ChatModelCall:
    """``_generate_with_cache(messages, stop, run_manager, **kwargs)``: one LLM span per model call."""
    messages = args[0] if args else kwargs.get("messages")
    stop = args[1] if len(args) > 1 else kwargs.get("stop")
    run_manager = args[2] if len(args) > 2 else kwargs.get("run_manager")
    return _start_llm(instance, messages, stop, run_manager, kwargs, False)


# ``BaseChatModel._generate_with_cache`` / ``_agenerate_with_cache``: the LLM span is active during the call.
_wrap_generate = sync_wrapper(_start_generate)
_wrap_agenerate = async_wrapper(_start_generate)


class _StreamTrace:
    """Callbacks for :func:`iterate_in_context` over ``BaseChatModel.stream``/``astream``."""

    __slots__ = ("args", "call", "instance", "kwargs", "parent")

    def __init__(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.instance = instance
        self.args = args
        self.kwargs = kwargs
        self.parent = otel_context.get_current()
        self.call: _ChatModelCall | None = None

    @guard
    def begin(self) -> otel_context.Context | None:
        messages = None
        if content.capture_enabled():
            convert = getattr(self.instance, "_convert_input", None)
            source = self.args[0] if self.args else self.kwargs.get("input")
            messages = convert(source).to_messages() if convert is not None else None
        extra = {k: v for k, v in self.kwargs.items() if k not in ("config", "input", "stop")}
        call = _start_llm(self.instance, messages, self.kwargs.get("stop"), None, extra, True, self.parent)
        call.response = extract.Response()
        self.call = call
        return call.context

    def on_item(self, chunk: Any) -> None:
        if self.call is not None:
            self.call.on_chunk(chunk)  # never raises

    def finish(self, exc: BaseException | None, closed: bool) -> None:
        if self.call is not None:
            self.call.on_end(exc)  # never raises


def _wrap_stream(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``BaseChatModel.stream``: one LLM span for the whole stream, active while it produces chunks."""
    inner = wrapped(*args, **kwargs)
    trace = _StreamTrace(instance, args, kwargs)
    return lcctx.iterate_in_context(inner, trace.begin, trace.on_item, trace.finish)


def _wrap_astream(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``BaseChatModel.astream``: the async twin of :func:`_wrap_stream`."""
    inner = wrapped(*args, **kwargs)
    trace = _StreamTrace(instance, args, kwargs)
    return lcctx.aiterate_in_context(inner, trace.begin, trace.on_item, trace.finish)


# --------------------------------------------------------------------------- tools


@guard
def _start_tool(instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[lcctx.Scope, Any]:
    name = getattr(instance, "name", None) or type(instance).__name__
    description = getattr(instance, "description", None)
    handle = spans.start_tool(
        str(name),
        call_id=kwargs.get("tool_call_id"),
        description=description if isinstance(description, str) and description else None,
    )
    if handle.recording and content.capture_enabled():
        tool_input = args[0] if args else kwargs.get("tool_input")
        filt = getattr(instance, "_filter_injected_args", None)
        if isinstance(tool_input, dict) and filt is not None:
            tool_input = filt(tool_input)
        handle.set_tool_arguments(tool_input)
    scope = lcctx.Scope(lcctx.TOOL, handle)
    return scope, lcctx.scoped_context(scope, handle.context)


@guard
def _finish_tool(scope: lcctx.Scope, result: Any, exc: BaseException | None) -> None:
    handle = scope.handle
    if handle is None:
        return
    if exc is not None:
        if isinstance(exc, lcctx.GraphErrors.interrupt):
            handle.set_attribute(attrs.INTERRUPT, True)
        elif isinstance(exc, lcctx.GraphErrors.bubble_up):
            pass  # LangGraph control flow (Command to a parent graph): not a failure
        elif not scope.settled:
            if _State.validation_errors and isinstance(exc, _State.validation_errors):
                handle.validation_error(extract.validation_message(exc))
            else:
                handle.fail(exc)
        handle.end()
        return
    if not scope.settled and getattr(result, "status", None) == "error" and hasattr(result, "tool_call_id"):
        # The tool itself returned an error ToolMessage.
        handle.fail(error_type=attrs.ERROR_TYPE_OTHER, message="tool returned status=error")
    if handle.recording and content.capture_enabled():
        handle.set_tool_result(
            getattr(result, "content", result) if hasattr(result, "tool_call_id") else result
        )
    handle.end()


def _wrap_tool_run(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``BaseTool.run``: a tool span, current while the tool body runs."""
    started = _start_tool(instance, args, kwargs)
    if started is None:
        return wrapped(*args, **kwargs)
    scope, ctx = started
    token = otel_context.attach(ctx)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        _finish_tool(scope, None, exc)
        raise
    finally:
        otel_context.detach(token)
    _finish_tool(scope, result, None)
    return result


async def _wrap_tool_arun(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``BaseTool.arun``: the async twin of :func:`_wrap_tool_run`."""
    started = _start_tool(instance, args, kwargs)
    if started is None:
        return await wrapped(*args, **kwargs)
    scope, ctx = started
    token = otel_context.attach(ctx)
    try:
        result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        _finish_tool(scope, None, exc)
        raise
    finally:
        otel_context.detach(token)
    _finish_tool(scope, result, None)
    return result


@guard
def _mark_handled(exc: Any, validation: bool) -> None:
    scope = lcctx.current_scope()
    if scope is None or scope.kind != lcctx.TOOL or scope.handle is None or scope.settled:
        return
    scope.settled = True
    if validation:
        scope.handle.validation_error(extract.validation_message(exc))
    elif isinstance(exc, BaseException):
        scope.handle.fail(exc)


def _wrap_handle_tool_error(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``_handle_tool_error(e, flag=...)``: the tool raised a ToolException LangChain will handle."""
    _mark_handled(args[0] if args else kwargs.get("e"), False)
    return wrapped(*args, **kwargs)


def _wrap_handle_validation_error(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``_handle_validation_error(e, flag=...)``: invalid tool arguments LangChain will handle."""
    _mark_handled(args[0] if args else kwargs.get("e"), True)
    return wrapped(*args, **kwargs)


# --------------------------------------------------------------------------- optional chain spans


def _chain_span_targets() -> list[tuple[str, str, Callable[..., Any]]]:
    """Workflow spans for glue runnables (``AGENT_OTEL_LANGCHAIN_CHAIN_SPANS=true`` only)."""
    classes = [
        ("langchain_core.runnables.base", "RunnableSequence"),
        ("langchain_core.runnables.base", "RunnableParallel"),
        ("langchain_core.runnables.base", "RunnableLambda"),
        ("langchain_core.prompts.base", "BasePromptTemplate"),
        ("langchain_core.output_parsers.base", "BaseOutputParser"),
        ("langchain_core.output_parsers.base", "BaseGenerationOutputParser"),
    ]
    targets: list[tuple[str, str, Callable[..., Any]]] = []
    for module_name, class_name in classes:
        try:
            own = vars(getattr(importlib.import_module(module_name), class_name))
        except Exception:
            _logger.debug("agent-otel: %s.%s not found; no chain spans for it", module_name, class_name)
            continue
        # Only methods the class defines itself: an inherited one is patched on the class that defines it.
        if "invoke" in own:
            targets.append((module_name, f"{class_name}.invoke", _wrap_chain_invoke))
        if "ainvoke" in own:
            targets.append((module_name, f"{class_name}.ainvoke", _wrap_chain_ainvoke))
    return targets


@guard
def _start_chain(instance: Any) -> spans.SpanHandle:
    get_name = getattr(instance, "get_name", None)
    name = get_name() if callable(get_name) else type(instance).__name__
    return spans.start_workflow(str(name))


def _wrap_chain_invoke(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    handle = _start_chain(instance)
    if handle is None:
        return wrapped(*args, **kwargs)
    try:
        with handle.activate():
            result = wrapped(*args, **kwargs)
    except BaseException as exc:
        _fail(handle, exc)
        raise
    handle.end()
    return result


async def _wrap_chain_ainvoke(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    handle = _start_chain(instance)
    if handle is None:
        return await wrapped(*args, **kwargs)
    try:
        with handle.activate():
            result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        _fail(handle, exc)
        raise
    handle.end()
    return result
