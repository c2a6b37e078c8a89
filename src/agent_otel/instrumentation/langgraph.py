"""LangGraph instrumentation: a graph run is an agent span, every node execution a node span.

Called by :func:`agent_otel.instrumentation.langchain.instrument` when LangGraph is installed.

What is patched (no callback handler is injected; see ``_langchain_context`` for the parenting rule):

* ``Pregel.stream`` / ``astream`` — every run (``invoke``, ``ainvoke``, ``batch``, ``stream``,
  ``astream``, ``stream_events`` all end here). A top-level run is ``invoke_agent {graph name}``
  with ``gen_ai.conversation.id`` = the config's ``thread_id``; the span is current while the graph
  computes each step, and not while the caller consumes a streamed chunk. The span starts at the
  first ``next()`` in the context the run was *called* in: a new trace when there is no active span,
  a child of the caller's span otherwise. ``invoke``/``ainvoke`` are wrapped too: on that path the
  run span is simply current for the whole call (no switching around each chunk).
* A graph run *inside a node* is a subgraph, not a new agent: when the node's runnable is the
  subgraph itself (``add_node("sub", compiled_subgraph)``) the node span already names it and no
  span is added; when node code calls a graph (``other_graph.invoke(...)`` in a node function), an
  ``invoke_workflow {name}`` span groups that graph's nodes under the calling node. A graph run
  inside a *tool* is an agent used as a tool (multi-agent), so it gets its own agent span.
* ``run_with_retry`` / ``arun_with_retry`` as used by the Pregel runner — every task execution
  (nodes, ``Send`` fan-out, functional-API tasks), in whatever thread or asyncio task LangGraph runs
  it: ``node {name}`` with step, triggers and task id, current while the node runs.
* ``ToolNode._validate_tool_call`` — a call to a tool the ``ToolNode`` does not have never reaches a
  tool, so it gets its tool span here: ``execute_tool {name}``, outcome ``validation_error``,
  ``error.type`` ``ToolNotFound`` (``attributes.TOOL_NOT_FOUND_ERROR_TYPE``).
* ``PregelLoop._suppress_interrupt`` — where a run that pauses (``interrupt()``, static
  ``interrupt_before``/``after``) ends quietly: the run span gets ``agent_otel.graph.interrupt``.

Statuses: ``GraphInterrupt`` is a pause (attribute, status unset); ``ParentCommand`` is navigation
(no error); ``GraphRecursionError`` or a node exception fail the node and the run; cancellation and
``KeyboardInterrupt`` end the open spans as interrupted (``SpanHandle.fail`` marks them).
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from opentelemetry import context as otel_context

from agent_otel import attributes as attrs
from agent_otel import content, spans
from agent_otel.instrumentation import _langchain_context as lcctx
from agent_otel.instrumentation import _patching
from agent_otel.instrumentation._langchain_context import GraphErrors
from agent_otel.instrumentation._langchain_extract import MAPPING
from agent_otel.instrumentation._safe import guard

_logger = logging.getLogger(__name__)

PACKAGE = "langgraph"
MIN_LANGGRAPH = (0, 3)

# LangGraph's own bookkeeping tasks (writing the input into the channels): no span.
_HIDDEN_TASKS = frozenset({"__start__", "__end__"})

# Module paths of the Pregel runner / loop: private in LangGraph 1.x, public names before.
_RUNNER_MODULES = ("langgraph.pregel._runner", "langgraph.pregel.runner")
_LOOP_MODULES = ("langgraph.pregel._loop", "langgraph.pregel.loop")


class _State:
    patched: ClassVar[list[_patching.Patched]] = []
    active: bool = False
    command: type | None = None


def instrument() -> bool:
    """Patch LangGraph's run, task and interrupt paths. Idempotent.

    Returns False (debug log) when LangGraph is missing, older than 0.3, or its Pregel class
    cannot be found. Node spans need the runner module; if a future LangGraph moves it, runs are
    still traced and a debug line says nodes are not.
    """
    if _State.active:
        return True
    if not _patching.supported(PACKAGE, MIN_LANGGRAPH):
        return False
    try:
        importlib.import_module("langgraph.pregel")
    except Exception:
        _logger.debug("agent-otel: langgraph cannot be imported; LangGraph not instrumented", exc_info=True)
        return False
    if not lcctx.load_graph_errors():
        _logger.debug("agent-otel: langgraph.errors not found; LangGraph not instrumented")
        return False
    try:
        from langgraph.types import Command

        _State.command = Command
    except Exception:
        _State.command = None

    targets: list[tuple[str, str, Callable[..., Any]]] = [
        ("langgraph.pregel", "Pregel.stream", _wrap_stream),
        ("langgraph.pregel", "Pregel.astream", _wrap_astream),
        ("langgraph.pregel", "Pregel.invoke", _wrap_invoke),
        ("langgraph.pregel", "Pregel.ainvoke", _wrap_ainvoke),
        ("langgraph.prebuilt.tool_node", "ToolNode._validate_tool_call", _wrap_validate_tool_call),
    ]
    runner = _first_module(_RUNNER_MODULES)
    if runner is not None and hasattr(runner, "run_with_retry"):
        targets.append((runner.__name__, "run_with_retry", _wrap_run_with_retry))
        targets.append((runner.__name__, "arun_with_retry", _wrap_arun_with_retry))
    else:
        _logger.debug("agent-otel: LangGraph runner not found; graph nodes get no spans")
    patched = _patching.patch_all(targets)
    loop = _first_module(_LOOP_MODULES)
    if loop is not None:
        patched += _patching.replace_all(
            [(loop.__name__, "PregelLoop._suppress_interrupt", _suppress_interrupt_wrapper)]
        )
    _State.patched = patched
    _State.active = True
    return True


def uninstrument() -> None:
    """Undo every patch of :func:`instrument`."""
    _patching.unpatch_all(reversed(_State.patched))
    _State.patched = []
    _State.active = False


def _first_module(names: tuple[str, ...]) -> Any:
    for name in names:
        try:
            return importlib.import_module(name)
        except Exception:
            continue
    return None


# --------------------------------------------------------------------------- graph runs


def _configurable(config: Any) -> Mapping[str, Any]:
    if isinstance(config, MAPPING):
        conf = config.get("configurable")
        if isinstance(conf, MAPPING):
            return conf
    return {}


def _is_node_runnable(proc: Any, graph: Any) -> bool:
    """True when ``graph`` is the runnable of the node whose task runs ``proc`` (a subgraph node).

    A node's task runs ``RunnableSeq(node runnable, *writers)``; the runnable may be the graph itself
    or a ``RunnableBinding`` of it (``graph.with_config(...)``).
    """
    steps = getattr(proc, "steps", None)
    bound = steps[0] if steps else proc
    return bound is graph or getattr(bound, "bound", None) is graph


class _GraphRun:
    """One call of ``Pregel.stream``/``astream``: decides its span kind, starts it lazily, ends it."""

    __slots__ = ("args", "instance", "kind", "kwargs", "parent", "run")

    def __init__(self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        self.instance = instance
        self.args = args
        self.kwargs = kwargs
        self.parent = otel_context.get_current()
        self.run: lcctx.RunState | None = None
        scope = lcctx.current_scope(self.parent)
        if scope is not None and scope.kind == lcctx.NODE:
            # A subgraph: its nodes go under the calling node; a graph that *is* the node adds nothing.
            self.kind = "none" if _is_node_runnable(scope.bound, instance) else "workflow"
        else:
            self.kind = "agent"

    def _name(self) -> str:
        config = self.args[1] if len(self.args) > 1 else self.kwargs.get("config")
        run_name = config.get("run_name") if isinstance(config, MAPPING) else None
        if isinstance(run_name, str) and run_name:
            return run_name
        name = getattr(self.instance, "name", None)
        return name if isinstance(name, str) and name else "LangGraph"

    def _conversation_id(self) -> str | None:
        config = self.args[1] if len(self.args) > 1 else self.kwargs.get("config")
        thread_id = _configurable(config).get("thread_id")
        if thread_id is None:
            thread_id = _configurable(getattr(self.instance, "config", None)).get("thread_id")
        return str(thread_id) if thread_id is not None else None

    @guard
    def begin(self) -> otel_context.Context | None:
        if self.kind == "none":
            return None
        input_ = self.args[0] if self.args else self.kwargs.get("input")
        extra = None
        if _State.command is not None and isinstance(input_, _State.command) and input_.resume is not None:
            extra = {attrs.GRAPH_RESUME: True}
        if self.kind == "agent":
            handle = spans.start_agent(
                self._name(), conversation_id=self._conversation_id(), parent=self.parent, attributes=extra
            )
        else:
            handle = spans.start_workflow(self._name(), parent=self.parent, attributes=extra)
        self.run = lcctx.RunState(handle)
        return lcctx.scoped_context(lcctx.Scope(lcctx.RUN, handle, self.run), handle.context)

    @guard
    def finish(self, exc: BaseException | None, closed: bool) -> None:
        run = self.run
        if run is None or run.handle is None:
            return
        handle = run.handle
        if run.interrupted or (exc is not None and isinstance(exc, GraphErrors.interrupt)):
            handle.set_attribute(attrs.INTERRUPT, True)
        if exc is not None and not isinstance(exc, GraphErrors.bubble_up):
            handle.fail(exc)
        handle.end()


# ``invoke``/``ainvoke`` consume their own ``stream``/``astream`` and make no spans while doing so, so
# they hold the run span current for the whole call and tell the one ``stream`` call they make (by
# this one-shot marker in the context) to pass through: no per-chunk context switching on that path.
_INVOKE_KEY = otel_context.create_key("agent_otel.langgraph.invoke")


def _claimed_by_invoke(instance: Any) -> bool:
    """True (once) when this ``stream`` call is the one made by our ``invoke`` wrapper of ``instance``."""
    marker = otel_context.get_value(_INVOKE_KEY)
    if type(marker) is list and marker and marker[0] is instance:
        marker[0] = None
        return True
    return False


def _wrap_stream(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``Pregel.stream``: the run span is current while the graph computes, not while chunks are consumed."""
    inner = wrapped(*args, **kwargs)
    if _claimed_by_invoke(instance):
        return inner
    run = _plan(instance, args, kwargs)
    if run is None:
        return inner
    return lcctx.iterate_in_context(inner, run.begin, None, run.finish)


def _wrap_astream(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``Pregel.astream``: the async twin of :func:`_wrap_stream`."""
    inner = wrapped(*args, **kwargs)
    if _claimed_by_invoke(instance):
        return inner
    run = _plan(instance, args, kwargs)
    if run is None:
        return inner
    return lcctx.aiterate_in_context(inner, run.begin, None, run.finish)


@guard
def _begin_invoke(instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[_GraphRun, Any]:
    run = _GraphRun(instance, args, kwargs)
    ctx = run.begin()
    if ctx is None:
        return None
    return run, otel_context.set_value(_INVOKE_KEY, [instance], ctx)


def _wrap_invoke(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``Pregel.invoke``: the run span, current for the whole call (see :data:`_INVOKE_KEY`)."""
    started = _begin_invoke(instance, args, kwargs)
    if started is None:
        return wrapped(*args, **kwargs)
    run, ctx = started
    token = otel_context.attach(ctx)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        run.finish(exc, False)
        raise
    finally:
        otel_context.detach(token)
    run.finish(None, False)
    return result


async def _wrap_ainvoke(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``Pregel.ainvoke``: the async twin of :func:`_wrap_invoke`."""
    started = _begin_invoke(instance, args, kwargs)
    if started is None:
        return await wrapped(*args, **kwargs)
    run, ctx = started
    token = otel_context.attach(ctx)
    try:
        result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        run.finish(exc, False)
        raise
    finally:
        otel_context.detach(token)
    run.finish(None, False)
    return result


@guard
def _plan(instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> _GraphRun:
    return _GraphRun(instance, args, kwargs)


# --------------------------------------------------------------------------- nodes


@guard
def _start_node(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[lcctx.Scope, Any, bool]:
    """Start the node span of a task: (its scope, the context to attach, capture the output?)."""
    task = args[0] if args else kwargs.get("task")
    name = getattr(task, "name", None)
    if not isinstance(name, str) or name in _HIDDEN_TASKS:
        return None
    config = getattr(task, "config", None)
    metadata = config.get("metadata") if isinstance(config, MAPPING) else None
    step = metadata.get("langgraph_step") if isinstance(metadata, MAPPING) else None
    triggers = getattr(task, "triggers", None)
    task_id = getattr(task, "id", None)
    handle = spans.start_node(
        name,
        step=step if isinstance(step, int) else None,
        triggers=list(triggers) if triggers else None,
        attributes={attrs.NODE_TASK_ID: task_id} if isinstance(task_id, str) else None,
    )
    capture = handle.recording and content.capture_enabled()
    if capture:
        handle.set_attribute(
            attrs.NODE_INPUT, content.to_json(getattr(task, "input", None), kind="node_input")
        )
    enclosing = lcctx.current_scope()
    # ``bound`` holds the task's runnable; _GraphRun resolves it only for a graph run inside the node.
    scope = lcctx.Scope(
        lcctx.NODE, handle, enclosing.run if enclosing is not None else None, getattr(task, "proc", None)
    )
    return scope, lcctx.scoped_context(scope, handle.context), capture


@guard
def _finish_node(scope: lcctx.Scope, exc: BaseException | None, task: Any) -> None:
    """End a node span: interrupts are pauses, ``ParentCommand`` is navigation, the rest failures."""
    handle = scope.handle
    if handle is None:
        return
    if exc is None:
        if task is not None:
            writes = getattr(task, "writes", None)
            if writes:
                output = [{"channel": w[0], "value": w[1]} for w in list(writes) if isinstance(w, tuple)]
                handle.set_attribute(attrs.NODE_OUTPUT, content.to_json(output, kind="node_output"))
    elif isinstance(exc, GraphErrors.interrupt):
        handle.set_attribute(attrs.INTERRUPT, True)
        if scope.run is not None:
            scope.run.interrupted = True
    elif not isinstance(exc, GraphErrors.bubble_up):
        handle.fail(exc)
    handle.end()


def _wrap_run_with_retry(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``run_with_retry(task, ...)``: a node span around one task, in the thread that runs it."""
    started = _start_node(args, kwargs)
    if started is None:
        return wrapped(*args, **kwargs)
    scope, ctx, capture = started
    token = otel_context.attach(ctx)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        _finish_node(scope, exc, None)
        raise
    finally:
        otel_context.detach(token)
    if capture:
        _finish_node(scope, None, args[0] if args else kwargs.get("task"))
    else:
        scope.handle.end()  # type: ignore[union-attr]  # never raises
    return result


async def _wrap_arun_with_retry(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``arun_with_retry(task, ...)``: the async twin of :func:`_wrap_run_with_retry`."""
    started = _start_node(args, kwargs)
    if started is None:
        return await wrapped(*args, **kwargs)
    scope, ctx, capture = started
    token = otel_context.attach(ctx)
    try:
        result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        _finish_node(scope, exc, None)
        raise
    finally:
        otel_context.detach(token)
    if capture:
        _finish_node(scope, None, args[0] if args else kwargs.get("task"))
    else:
        scope.handle.end()  # type: ignore[union-attr]  # never raises
    return result


# --------------------------------------------------------------------------- unknown tools


@guard
def _record_unknown_tool(call: Any) -> None:
    if not isinstance(call, MAPPING):
        return
    name = str(call.get("name") or "unknown")
    handle = spans.start_tool(name, call_id=call.get("id"))
    handle.validation_error(
        f"the model requested tool {name!r}, which the ToolNode does not have",
        error_type=attrs.TOOL_NOT_FOUND_ERROR_TYPE,
    )
    handle.end()


def _wrap_validate_tool_call(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``ToolNode._validate_tool_call``: a call to a tool the node lacks is a tool validation error."""
    result = wrapped(*args, **kwargs)
    if result is not None:
        _record_unknown_tool(args[0] if args else kwargs.get("call"))
    return result


# --------------------------------------------------------------------------- interrupts


@guard
def _mark_interrupted(exc_value: Any) -> None:
    if not isinstance(exc_value, GraphErrors.interrupt):
        return
    scope = lcctx.current_scope()
    if scope is not None and scope.run is not None:
        scope.run.interrupted = True


def _suppress_interrupt_wrapper(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``PregelLoop._suppress_interrupt``: a top-level run pausing ends there, without an exception."""

    @functools.wraps(original)
    def _suppress_interrupt(self: Any, exc_type: Any, exc_value: Any, traceback: Any) -> Any:
        result = original(self, exc_type, exc_value, traceback)
        if result:
            _mark_interrupted(exc_value)
        return result

    return _suppress_interrupt
