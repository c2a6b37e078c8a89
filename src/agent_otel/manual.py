"""The manual API for home-grown agents: context managers and decorators over the span factory.

Each of :func:`agent`, :func:`workflow`, :func:`node`, :func:`llm` and :func:`tool` returns a
:class:`SpanScope` that works three ways::

    with agent_otel.tool("search", call_id="c1") as t:   # context manager, yields the SpanHandle
        t.set_tool_result(hits)

    @agent_otel.agent("planner")                           # decorator: sync, async, generators
    async def plan(question): ...

    @agent_otel.tool                                       # bare decorator: named after the function
    def search(query): ...                                 # (so is ``@agent_otel.tool()`` without a name)

An exception leaving the block or function ends the span with status ERROR (``error.type`` = the
exception class; interruptions also set ``agent_otel.interrupted``) and is re-raised unchanged.
A generator closed early ends its span normally. One scope object may be entered by several
threads or tasks at once.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
from collections.abc import Callable, Generator
from contextvars import ContextVar, Token
from typing import Any, TypeVar

from opentelemetry import context as context_api

from agent_otel import content, spans
from agent_otel.spans import SpanHandle

F = TypeVar("F", bound=Callable[..., Any])

# The scopes entered with ``with`` in this thread/task and not yet exited: (scope, entry). Kept in
# a ContextVar, not on the scope, so one scope object can be entered concurrently from several
# threads or asyncio tasks (a module-level ``search = agent_otel.tool("search")``).
_OPEN: ContextVar[tuple[tuple[SpanScope, _Entry], ...]] = ContextVar("agent_otel_open_scopes", default=())

_getframe = getattr(sys, "_getframe", None)


def _where(frame: Any) -> tuple[int, Any] | None:
    """Identify the frame running a ``with`` statement (it calls both ``__enter__`` and ``__exit__``).

    The id is unique among live frames, and a ``with`` block's frame lives until the block exits;
    the code object guards against an id reused by another function's frame.
    """
    return (id(frame), frame.f_code) if frame is not None else None


class _Entry:
    """One entry into a scope: its span handle, the token of the context it attached, and where."""

    __slots__ = ("handle", "token", "where")

    def __init__(self, handle: SpanHandle, token: object, where: tuple[int, Any] | None) -> None:
        self.handle = handle
        self.token = token
        self.where = where


def _detach(token: Any) -> None:
    """Detach a context token, silently skipping it when it belongs to another context.

    The block may exit in a copy of the context it was entered in (a generator resumed in a
    ``contextvars.copy_context()``): the copy cannot reset the token, and ``context_api.detach``
    would log that as an error. With the API's contextvars runtime the token is a
    :class:`contextvars.Token`, reset here directly; any other runtime goes through the API.
    """
    if isinstance(token, Token):
        try:
            token.var.reset(token)
        except (ValueError, RuntimeError):  # another context's token, or already used
            pass
    else:
        context_api.detach(token)  # type: ignore[arg-type]


class SpanScope:
    """A taxonomy span to open around a block or a function (see the module docstring).

    Its span ends exactly once per entry, whichever context the block exits in: a generator with a
    ``with agent_otel.agent(...)`` block may be resumed or closed in another context (Starlette's
    ``iterate_in_threadpool`` runs each step in a fresh context copy; the garbage collector closes
    abandoned ones anywhere). The exit is matched to its entry by the frame of the ``with``
    statement, else by the entries this context made, else it takes the latest open entry; the
    context is detached only where it was attached.
    """

    def __init__(
        self,
        start: Callable[[], SpanHandle],
        *,
        record_io: bool = False,
        for_function: Callable[[str], Callable[[], SpanHandle]] | None = None,
    ) -> None:
        self._start_span = start
        self._record_io = record_io  # tool decorator: record arguments and result (content capture only)
        # For a scope made without a name: how to start the span named after the decorated function.
        self._for_function = for_function
        # Every entry not yet exited, whatever context made it, in entry order.
        self._entries: list[_Entry] = []
        self._lock = threading.Lock()

    # -- context manager -----------------------------------------------------------------------

    def __enter__(self) -> SpanHandle:
        return self._open(_getframe(1) if _getframe is not None else None)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._close(_getframe(1) if _getframe is not None else None, exc)

    async def __aenter__(self) -> SpanHandle:
        return self._open(_getframe(1) if _getframe is not None else None)

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._close(_getframe(1) if _getframe is not None else None, exc)

    def _open(self, caller: Any) -> SpanHandle:
        handle = self._start_span()
        entry = _Entry(handle, context_api.attach(handle.context), _where(caller))
        with self._lock:
            self._entries.append(entry)
        _OPEN.set((*_OPEN.get(), (self, entry)))
        return handle

    def _close(self, caller: Any, exc: BaseException | None) -> None:
        opened = _OPEN.get()
        with self._lock:
            entry = self._match(opened, _where(caller))
            if entry is None:
                return  # exited without being entered: nothing to close
            try:
                self._entries.remove(entry)
            except ValueError:  # already closed by an exit that could not tell entries apart
                pass
        for i in range(len(opened) - 1, -1, -1):
            if opened[i][1] is entry:
                _OPEN.set(opened[:i] + opened[i + 1 :])
                if i == len(opened) - 1:
                    _detach(entry.token)  # attached in this context (or the one it was copied from)
                # else: a block entered later is still open here (a generator closed out of order);
                # resetting now would take that block's context away too.
                break
        # else: entered in a context this one cannot see; its attachment went with that context.
        handle = entry.handle
        if exc is not None and not isinstance(exc, GeneratorExit):
            handle.fail(exc)
        handle.end()

    def _match(self, opened: tuple[tuple[SpanScope, _Entry], ...], where: Any) -> _Entry | None:
        """The entry an exit closes: entered by the same frame, in this context, else in any context
        (a generator resumed in a context copy is still the same frame); else this context's latest
        entry (an ``ExitStack`` enters and exits from different frames); else the latest of all."""
        if where is not None:
            for scope, entry in reversed(opened):
                if scope is self and entry.where == where:
                    return entry
            for entry in reversed(self._entries):
                if entry.where == where:
                    return entry
        for scope, entry in reversed(opened):
            if scope is self:
                return entry
        return self._entries[-1] if self._entries else None

    # -- decorator -----------------------------------------------------------------------------

    def __call__(self, fn: F) -> F:
        start, record_io = self._start_span, self._record_io
        if self._for_function is not None:
            start = self._for_function(getattr(fn, "__name__", None) or "")

        def begin(args: tuple[Any, ...], kwargs: dict[str, Any]) -> SpanHandle:
            handle = start()
            if record_io and handle.recording and content.capture_enabled():
                handle.set_tool_arguments(_call_arguments(fn, args, kwargs))
            return handle

        def finish(handle: SpanHandle, result: Any) -> None:
            if record_io and handle.recording:
                handle.set_tool_result(result)
            handle.end()

        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def agen_wrapper(*args: Any, **kwargs: Any) -> Any:
                # The async twin of _drive_gen, inlined: an async generator cannot delegate with
                # ``yield from``, and a nested one would only be closed later by the event loop.
                handle = begin(args, kwargs)
                agen = fn(*args, **kwargs)
                send: Any = None
                throw: BaseException | None = None
                try:
                    while True:
                        token = context_api.attach(handle.context)
                        try:
                            item = await (agen.athrow(throw) if throw is not None else agen.asend(send))
                        except StopAsyncIteration:
                            return
                        except BaseException as exc:
                            if not isinstance(exc, GeneratorExit):
                                handle.fail(exc)
                            raise
                        finally:
                            context_api.detach(token)
                        throw = None
                        try:
                            send = yield item
                        except GeneratorExit:  # closed early (aclose, break + aclosing, GC)
                            token = context_api.attach(handle.context)
                            try:
                                await agen.aclose()
                            except BaseException as exc:
                                handle.fail(exc)
                                raise
                            finally:
                                context_api.detach(token)
                            raise
                        except BaseException as exc:  # thrown in by the caller: pass it on
                            throw = exc
                finally:
                    handle.end()

            return agen_wrapper  # type: ignore[return-value]

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                handle = begin(args, kwargs)
                return (yield from _drive_gen(handle, fn(*args, **kwargs)))

            return gen_wrapper  # type: ignore[return-value]

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                handle = begin(args, kwargs)
                token = context_api.attach(handle.context)
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    handle.fail(exc)
                    handle.end()
                    raise
                finally:
                    context_api.detach(token)
                finish(handle, result)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            handle = begin(args, kwargs)
            token = context_api.attach(handle.context)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                handle.fail(exc)
                handle.end()
                raise
            finally:
                context_api.detach(token)
            finish(handle, result)
            return result

        return wrapper  # type: ignore[return-value]


def _call_arguments(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The call's arguments by parameter name (a method's ``self``/``cls`` left out)."""
    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs)
        arguments = dict(bound.arguments)
        first = next(iter(arguments), None)
        if first in ("self", "cls"):
            del arguments[first]
        return arguments
    except (TypeError, ValueError):
        return {"args": list(args), "kwargs": kwargs}


def _drive_gen(handle: SpanHandle, gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    """Run ``gen`` step by step with the span current only while the generator itself runs.

    Values sent and exceptions thrown in are passed on; the span ends exactly once, however the
    generator finishes: exhausted, raising, or closed early (``break``, ``close()``, GC).
    """
    send: Any = None
    throw: BaseException | None = None
    try:
        while True:
            token = context_api.attach(handle.context)
            try:
                item = gen.throw(throw) if throw is not None else gen.send(send)
            except StopIteration as stop:
                return stop.value
            except BaseException as exc:
                if not isinstance(exc, GeneratorExit):
                    handle.fail(exc)
                raise
            finally:
                context_api.detach(token)
            throw = None
            try:
                send = yield item
            except GeneratorExit:  # closed early: let the generator clean up under its span
                token = context_api.attach(handle.context)
                try:
                    gen.close()
                except BaseException as exc:
                    handle.fail(exc)
                    raise
                finally:
                    context_api.detach(token)
                raise
            except BaseException as exc:  # thrown in by the caller: pass it on to the generator
                throw = exc
    finally:
        handle.end()


def _scope_or_decorate(
    factory: Callable[[str | None], Callable[[], SpanHandle]], target: Any, **kw: Any
) -> Any:
    """Support ``@helper`` (bare), ``helper("name")`` and ``@helper()`` (named after the function)."""
    if callable(target) and not isinstance(target, str):
        return SpanScope(factory(None), for_function=factory, **kw)(target)
    if target is None:
        return SpanScope(factory(None), for_function=factory, **kw)
    return SpanScope(factory(target), **kw)


def agent(
    name: Any = None,
    *,
    agent_id: str | None = None,
    conversation_id: str | None = None,
) -> Any:
    """An agent run (one user turn): ``invoke_agent {name}``."""
    return _scope_or_decorate(
        lambda n: lambda: spans.start_agent(n, agent_id=agent_id, conversation_id=conversation_id),
        name,
    )


def workflow(name: Any = None) -> Any:
    """A workflow / strategy run: ``invoke_workflow {name}``."""
    return _scope_or_decorate(lambda n: lambda: spans.start_workflow(n or "workflow"), name)


def node(name: Any = None, *, step: int | None = None) -> Any:
    """A graph node: ``node {name}``."""
    return _scope_or_decorate(lambda n: lambda: spans.start_node(n or "node", step=step), name)


def tool(name: Any = None, *, call_id: str | None = None, description: str | None = None) -> Any:
    """A tool call: ``execute_tool {name}``. As a decorator it also records arguments and result
    when content capture is on."""
    return _scope_or_decorate(
        lambda n: lambda: spans.start_tool(n or "tool", call_id=call_id, description=description),
        name,
        record_io=True,
    )


def llm(
    model: Any = None,
    *,
    provider: str,
    operation: str = "chat",
    server_address: str | None = None,
    server_port: int | None = None,
) -> Any:
    """A model call: ``{operation} {model}``. Record the outcome on the handle with
    ``set_usage(...)`` and ``set_response(...)``.

    ``provider`` is required: it is ``gen_ai.provider.name``, which the GenAI conventions require
    on every model call span (``openai``, ``anthropic``, ``aws.bedrock``, ``gcp.gemini``, ... or
    your own name for a home-grown or local model). As a decorator, ``@llm(provider="openai")``
    names the span after no model (a function name is no model name); ``@llm("gpt-4o",
    provider="openai")`` after the model.
    """

    def start() -> SpanHandle:
        return spans.start_llm(
            model=None if callable(model) else model,
            provider=provider,
            operation=operation,
            server_address=server_address,
            server_port=server_port,
        )

    scope = SpanScope(start)
    if callable(model) and not isinstance(model, str):
        return scope(model)
    return scope
