"""LangChain instrumentation: chat model calls as LLM spans, tools as tool spans (and LangGraph).

``instrument()`` is the entry point the AgentInstrumentor calls for the LangChain family: it patches
langchain-core here and, when LangGraph is installed, :mod:`agent_otel.instrumentation.langgraph`
(graph runs, nodes, interrupts).

What is patched, and why there (no callback handler is injected):

* ``BaseChatModel._generate_with_cache`` / ``_agenerate_with_cache`` — the one place every
  ``invoke``/``batch``/``generate`` call reaches once per model call, with LangChain's run manager
  (whose metadata already holds ``ls_provider`` / ``ls_model_name``: no second lookup). The LLM span
  is *active* around the real call, so an openai/anthropic SDK instrumentation underneath merges
  into it (the factory's one-LLM-span rule) instead of opening a second span.
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
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from opentelemetry import context as otel_context

from agent_otel import attributes as attrs
from agent_otel import content, spans
from agent_otel.config import get_settings
from agent_otel.instrumentation import _langchain_context as lcctx
from agent_otel.instrumentation import _langchain_extract as extract
from agent_otel.instrumentation._langchain_extract import MAPPING
from agent_otel.instrumentation._safe import guard

_logger = logging.getLogger(__name__)

MIN_LANGCHAIN_CORE = (0, 3)

_REQUEST_KEYS = {
    "ls_temperature": attrs.GEN_AI_REQUEST_TEMPERATURE,
    "ls_max_tokens": attrs.GEN_AI_REQUEST_MAX_TOKENS,
    "ls_stop": attrs.GEN_AI_REQUEST_STOP_SEQUENCES,
}


class _State:
    """Module state: what is patched (to undo it) and the optional LangGraph exception types."""

    patched: ClassVar[list[tuple[Any, str]]] = []
    active: bool = False
    langgraph: bool = False
    # LangGraph's control-flow exceptions (interrupt / parent command): not tool failures.
    bubble_up: tuple[type[BaseException], ...] = ()
    interrupt: tuple[type[BaseException], ...] = ()
    validation_errors: tuple[type[BaseException], ...] = ()


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def instrument(*, tracer_provider: Any = None, meter_provider: Any = None) -> bool:
    """Patch langchain-core (and LangGraph if present). Idempotent.

    Returns False (with a debug log) when langchain-core is missing or older than 0.3. The tracer
    provider is chosen by the span factory (``spans.set_tracer_provider``), not here.
    """
    if _State.active:
        return True
    try:
        import langchain_core
        from langchain_core.language_models.chat_models import BaseChatModel
        from langchain_core.tools import BaseTool
    except Exception:
        _logger.debug("agent-otel: langchain-core is not installed; LangChain not instrumented")
        return False
    version = getattr(langchain_core, "__version__", "0")
    if _version_tuple(version) < MIN_LANGCHAIN_CORE:
        _logger.debug("agent-otel: langchain-core %s is older than 0.3; LangChain not instrumented", version)
        return False
    _load_exception_types()

    _patch(BaseChatModel, "_generate_with_cache", _wrap_generate)
    _patch(BaseChatModel, "_agenerate_with_cache", _wrap_agenerate)
    _patch(BaseChatModel, "stream", _wrap_stream)
    _patch(BaseChatModel, "astream", _wrap_astream)
    _patch(BaseTool, "run", _wrap_tool_run)
    _patch(BaseTool, "arun", _wrap_tool_arun)
    try:
        tools_base = importlib.import_module("langchain_core.tools.base")
        _patch(tools_base, "_handle_tool_error", _wrap_handle_tool_error)
        _patch(tools_base, "_handle_validation_error", _wrap_handle_validation_error)
    except Exception:
        _logger.debug("agent-otel: langchain tool error hooks not found; handled tool errors not marked")
    if get_settings().langchain_chain_spans:
        _patch_chain_spans()
    _State.active = True

    from agent_otel.instrumentation import langgraph as _langgraph

    _State.langgraph = _langgraph.instrument()
    return True


def uninstrument() -> None:
    """Undo every patch of :func:`instrument` (LangGraph's too)."""
    from opentelemetry.instrumentation.utils import unwrap

    if _State.langgraph:
        from agent_otel.instrumentation import langgraph as _langgraph

        _langgraph.uninstrument()
        _State.langgraph = False
    for owner, name in reversed(_State.patched):
        try:
            unwrap(owner, name)
        except Exception:
            _logger.debug("agent-otel: could not unwrap %r.%s", owner, name, exc_info=True)
    _State.patched = []
    _State.active = False


def _patch(owner: Any, name: str, wrapper: Callable[..., Any]) -> None:
    """Wrap ``owner.name`` with ``wrapper`` if it exists (a missing private name is skipped)."""
    import wrapt

    if getattr(owner, name, None) is None:
        _logger.debug("agent-otel: %r has no %s; not patched", owner, name)
        return
    try:
        wrapt.wrap_function_wrapper(owner, name, wrapper)
        _State.patched.append((owner, name))
    except Exception:
        _logger.debug("agent-otel: could not patch %r.%s", owner, name, exc_info=True)


def _load_exception_types() -> None:
    validation: list[type[BaseException]] = []
    try:
        from pydantic import ValidationError

        validation.append(ValidationError)
        from pydantic.v1 import ValidationError as ValidationErrorV1

        validation.append(ValidationErrorV1)
    except Exception:
        pass
    _State.validation_errors = tuple(validation)
    try:
        from langgraph.errors import GraphBubbleUp, GraphInterrupt

        _State.bubble_up = (GraphBubbleUp,)
        _State.interrupt = (GraphInterrupt,)
    except Exception:
        _State.bubble_up = _State.interrupt = ()


# --------------------------------------------------------------------------- chat models


class _LLMCall:
    """One chat model call being traced (for streams: the chunks seen so far)."""

    __slots__ = ("first_chunk_ns", "handle", "response", "start_ns")

    def __init__(self, handle: spans.SpanHandle) -> None:
        self.handle = handle
        self.response: extract.Response | None = None
        self.start_ns = time.monotonic_ns()
        self.first_chunk_ns: int | None = None


def _ls_params(instance: Any, run_manager: Any, stop: Any, kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    """LangSmith params of this call: from the run manager's metadata (free), else computed."""
    metadata = getattr(run_manager, "metadata", None)
    if isinstance(metadata, MAPPING) and "ls_provider" in metadata:
        return metadata
    get = getattr(instance, "_get_ls_params", None)
    if get is None:
        return {}
    extra = {k: v for k, v in kwargs.items() if k not in ("stop", "run_manager", "messages")}
    return get(stop=stop, **extra)


@guard
def _start_llm(
    instance: Any,
    messages: Any,
    stop: Any,
    run_manager: Any,
    kwargs: Mapping[str, Any],
    stream: bool,
    parent: otel_context.Context | None = None,
) -> spans.SpanHandle:
    params = _ls_params(instance, run_manager, stop, kwargs)
    model = params.get("ls_model_name")
    handle = spans.start_llm(
        model=model if isinstance(model, str) else None,
        provider=extract.provider_name(params.get("ls_provider"), type(instance)),
        stream=stream,
        parent=parent,
        attributes=extract.request_attributes(params, _REQUEST_KEYS) or None,
    )
    if handle.recording and content.capture_enabled():
        _record_request_content(handle, messages, kwargs)
    return handle


@guard
def _record_request_content(handle: spans.SpanHandle, messages: Any, kwargs: Mapping[str, Any]) -> None:
    if messages is not None:
        msgs = extract.input_messages(messages)
        if msgs is not None:
            handle.set_attribute(attrs.GEN_AI_INPUT_MESSAGES, content.to_json(msgs, kind="input_messages"))
    tools = kwargs.get("tools")
    if tools:
        handle.set_attribute(attrs.GEN_AI_TOOL_DEFINITIONS, content.to_json(tools, kind="tool_definitions"))


def _apply_response(handle: spans.SpanHandle, response: extract.Response | None) -> None:
    if response is None:
        return
    handle.set_response(
        model=response.model, response_id=response.response_id, finish_reasons=response.finish_reasons or None
    )
    handle.set_usage(
        input_tokens=response.input_tokens,
        output_tokens=response.output_tokens,
        cache_read_input_tokens=response.cache_read_tokens,
        cache_creation_input_tokens=response.cache_creation_tokens,
        reasoning_output_tokens=response.reasoning_tokens,
    )
    if response.tool_call_names:
        handle.set_attribute(attrs.LLM_TOOL_CALL_NAMES, response.tool_call_names)
    if response.tool_call_ids:
        handle.set_attribute(attrs.LLM_TOOL_CALL_IDS, response.tool_call_ids)


@guard
def _finish_llm(handle: spans.SpanHandle, result: Any) -> None:
    if handle.recording:
        _apply_response(handle, extract.read_chat_result(result))
        if content.capture_enabled():
            msgs = extract.output_messages(result)
            if msgs is not None:
                handle.set_attribute(
                    attrs.GEN_AI_OUTPUT_MESSAGES, content.to_json(msgs, kind="output_messages")
                )
    handle.end()


@guard
def _fail(handle: spans.SpanHandle, exc: BaseException) -> None:
    handle.fail(exc)
    handle.end()


def _generate_args(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    messages = args[0] if args else kwargs.get("messages")
    stop = args[1] if len(args) > 1 else kwargs.get("stop")
    run_manager = args[2] if len(args) > 2 else kwargs.get("run_manager")
    return messages, stop, run_manager


def _wrap_generate(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``BaseChatModel._generate_with_cache``: one LLM span per model call, active during it."""
    messages, stop, run_manager = _generate_args(args, kwargs)
    handle = _start_llm(instance, messages, stop, run_manager, kwargs, False)
    if handle is None:
        return wrapped(*args, **kwargs)
    token = otel_context.attach(handle.context)  # == handle.activate(): marks the LLM call active
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        _fail(handle, exc)
        raise
    finally:
        otel_context.detach(token)
    _finish_llm(handle, result)
    return result


async def _wrap_agenerate(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``BaseChatModel._agenerate_with_cache``: the async twin of :func:`_wrap_generate`."""
    messages, stop, run_manager = _generate_args(args, kwargs)
    handle = _start_llm(instance, messages, stop, run_manager, kwargs, False)
    if handle is None:
        return await wrapped(*args, **kwargs)
    token = otel_context.attach(handle.context)
    try:
        result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        _fail(handle, exc)
        raise
    finally:
        otel_context.detach(token)
    _finish_llm(handle, result)
    return result


class _StreamTrace:
    """Callbacks for :func:`iterate_in_context` over ``BaseChatModel.stream``/``astream``."""

    __slots__ = ("args", "call", "instance", "kwargs", "parent")

    def __init__(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.instance = instance
        self.args = args
        self.kwargs = kwargs
        self.parent = otel_context.get_current()
        self.call: _LLMCall | None = None

    @guard
    def begin(self) -> otel_context.Context | None:
        messages = None
        if content.capture_enabled():
            convert = getattr(self.instance, "_convert_input", None)
            source = self.args[0] if self.args else self.kwargs.get("input")
            messages = convert(source).to_messages() if convert is not None else None
        extra = {k: v for k, v in self.kwargs.items() if k not in ("config", "input", "stop")}
        handle = _start_llm(self.instance, messages, self.kwargs.get("stop"), None, extra, True, self.parent)
        if handle is None:
            return None
        self.call = _LLMCall(handle)
        self.call.response = extract.Response()
        return handle.context

    @guard
    def on_item(self, chunk: Any) -> None:
        call = self.call
        if call is None or call.response is None:
            return
        if call.first_chunk_ns is None:
            call.first_chunk_ns = time.monotonic_ns()
        call.response.add_message(chunk)

    @guard
    def finish(self, exc: BaseException | None, closed: bool) -> None:
        call = self.call
        if call is None:
            return
        handle = call.handle
        if handle.recording:
            response = call.response
            if response is not None and response.finish_reasons:
                response.finish_reasons = response.finish_reasons[-1:]
            _apply_response(handle, response)
            if call.first_chunk_ns is not None:
                ttfc = (call.first_chunk_ns - call.start_ns) / 1e9
                handle.set_attribute(attrs.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, ttfc)
        if exc is not None:
            handle.fail(exc)
        handle.end()


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
        if _State.interrupt and isinstance(exc, _State.interrupt):
            handle.set_attribute(attrs.INTERRUPT, True)
        elif _State.bubble_up and isinstance(exc, _State.bubble_up):
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


def _patch_chain_spans() -> None:
    """Give glue runnables workflow spans (``AGENT_OTEL_LANGCHAIN_CHAIN_SPANS=true`` only)."""
    targets = [
        ("langchain_core.runnables.base", "RunnableSequence"),
        ("langchain_core.runnables.base", "RunnableParallel"),
        ("langchain_core.runnables.base", "RunnableLambda"),
        ("langchain_core.prompts.base", "BasePromptTemplate"),
        ("langchain_core.output_parsers.base", "BaseOutputParser"),
        ("langchain_core.output_parsers.base", "BaseGenerationOutputParser"),
    ]
    for module_name, class_name in targets:
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except Exception:
            _logger.debug("agent-otel: %s.%s not found; no chain spans for it", module_name, class_name)
            continue
        if "invoke" in vars(cls):
            _patch(cls, "invoke", _wrap_chain_invoke)
        if "ainvoke" in vars(cls):
            _patch(cls, "ainvoke", _wrap_chain_ainvoke)


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
