"""The manual API for home-grown agents: context managers and decorators over the span factory.

Each of :func:`agent`, :func:`workflow`, :func:`node`, :func:`llm` and :func:`tool` returns a
:class:`SpanScope` that works three ways::

    with agent_otel.tool("search", call_id="c1") as t:   # context manager, yields the SpanHandle
        t.set_tool_result(hits)

    @agent_otel.agent("planner")                           # decorator: sync, async, generators
    async def plan(question): ...

    @agent_otel.tool                                       # bare decorator: named after the function

An exception leaving the block or function ends the span with status ERROR (``error.type`` = the
exception class; interruptions also set ``agent_otel.interrupted``) and is re-raised unchanged.
A generator closed early ends its span normally.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, TypeVar

from opentelemetry import context as context_api

from agent_otel import spans
from agent_otel.spans import SpanHandle

F = TypeVar("F", bound=Callable[..., Any])


class SpanScope:
    """A taxonomy span to open around a block or a function (see the module docstring)."""

    def __init__(self, start: Callable[[], SpanHandle], *, record_io: bool = False) -> None:
        self._start_span = start
        self._record_io = record_io  # tool decorator: record arguments and result (content capture only)
        self._stack: list[tuple[SpanHandle, object]] = []

    # -- context manager -----------------------------------------------------------------------

    def __enter__(self) -> SpanHandle:
        handle = self._start_span()
        token = context_api.attach(handle.context)
        self._stack.append((handle, token))
        return handle

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        handle, token = self._stack.pop()
        context_api.detach(token)
        if exc is not None and not isinstance(exc, GeneratorExit):
            handle.fail(exc)
        handle.end()

    async def __aenter__(self) -> SpanHandle:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- decorator -----------------------------------------------------------------------------

    def __call__(self, fn: F) -> F:
        start, record_io = self._start_span, self._record_io

        def begin(args: tuple[Any, ...], kwargs: dict[str, Any]) -> SpanHandle:
            handle = start()
            if record_io and handle.recording:
                handle.set_tool_arguments(_call_arguments(fn, args, kwargs))
            return handle

        def finish(handle: SpanHandle, result: Any) -> None:
            if record_io and handle.recording:
                handle.set_tool_result(result)
            handle.end()

        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def agen_wrapper(*args: Any, **kwargs: Any) -> Any:
                handle = begin(args, kwargs)
                async for item in _drive_async_gen(handle, fn(*args, **kwargs)):
                    yield item

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
    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs)
        return dict(bound.arguments)
    except (TypeError, ValueError):
        return {"args": list(args), "kwargs": kwargs}


def _drive_gen(handle: SpanHandle, gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    """Run ``gen`` step by step with the span current only while the generator itself runs."""
    send: Any = None
    throw: BaseException | None = None
    while True:
        token = context_api.attach(handle.context)
        try:
            item = gen.throw(throw) if throw is not None else gen.send(send)
        except StopIteration as stop:
            handle.end()
            return stop.value
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):
                handle.fail(exc)
            handle.end()
            raise
        finally:
            context_api.detach(token)
        throw = None
        try:
            send = yield item
        except GeneratorExit:
            gen.close()
            handle.end()
            raise
        except BaseException as exc:  # thrown in by the caller: pass it on to the generator
            throw = exc


async def _drive_async_gen(handle: SpanHandle, agen: AsyncGenerator[Any, Any]) -> AsyncGenerator[Any, Any]:
    """Async counterpart of :func:`_drive_gen` (values sent in are not supported, as with ``async for``)."""
    try:
        while True:
            token = context_api.attach(handle.context)
            try:
                item = await agen.__anext__()
            except StopAsyncIteration:
                handle.end()
                return
            except BaseException as exc:
                if not isinstance(exc, GeneratorExit):
                    handle.fail(exc)
                handle.end()
                raise
            finally:
                context_api.detach(token)
            yield item
    finally:
        if not handle.ended:  # closed early by the consumer
            await agen.aclose()
            handle.end()


def _scope_or_decorate(factory: Callable[[str | None], SpanScope], target: Any) -> Any:
    """Support both ``@helper`` (bare, named after the function) and ``helper("name")``."""
    if callable(target) and not isinstance(target, str):
        return factory(getattr(target, "__name__", None))(target)
    return factory(target)


def agent(
    name: Any = None,
    *,
    agent_id: str | None = None,
    conversation_id: str | None = None,
) -> Any:
    """An agent run (one user turn): ``invoke_agent {name}``."""
    return _scope_or_decorate(
        lambda n: SpanScope(lambda: spans.start_agent(n, agent_id=agent_id, conversation_id=conversation_id)),
        name,
    )


def workflow(name: Any = None) -> Any:
    """A workflow / strategy run: ``invoke_workflow {name}``."""
    return _scope_or_decorate(lambda n: SpanScope(lambda: spans.start_workflow(n or "workflow")), name)


def node(name: Any = None, *, step: int | None = None) -> Any:
    """A graph node: ``node {name}``."""
    return _scope_or_decorate(lambda n: SpanScope(lambda: spans.start_node(n or "node", step=step)), name)


def tool(name: Any = None, *, call_id: str | None = None, description: str | None = None) -> Any:
    """A tool call: ``execute_tool {name}``. As a decorator it also records arguments and result
    when content capture is on."""
    return _scope_or_decorate(
        lambda n: SpanScope(
            lambda: spans.start_tool(n or "tool", call_id=call_id, description=description),
            record_io=True,
        ),
        name,
    )


def llm(
    model: str | None = None,
    *,
    provider: str = "unknown",
    operation: str = "chat",
    server_address: str | None = None,
    server_port: int | None = None,
) -> SpanScope:
    """A model call: ``{operation} {model}``. Record the outcome on the handle with
    ``set_usage(...)`` and ``set_response(...)``."""
    return SpanScope(
        lambda: spans.start_llm(
            model=model,
            provider=provider,
            operation=operation,
            server_address=server_address,
            server_port=server_port,
        )
    )
