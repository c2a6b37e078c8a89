"""Context plumbing shared by the LangChain and LangGraph instrumentations.

Parenting rule: every taxonomy span of these instrumentations is started in the *current
OpenTelemetry context* and made current (attached) only around a single synchronous call, a single
``await``, or a single ``next()`` / ``__anext__()`` of a stream — and detached in the same frame.
Nothing is attached in one callback and detached in another, so a detach can never be skipped or
run in a foreign context. Children in other threads and tasks are parented correctly because
LangGraph and LangChain copy the ``contextvars`` context into every thread-pool job and asyncio task
they start (they must: their own ``get_config()`` / ``interrupt()`` live in a context variable),
and the OpenTelemetry context is a context variable too.

Next to the span, the context carries a :class:`Scope` under :data:`SCOPE_KEY`: what kind of
LangChain/LangGraph unit is running (a graph run, a graph node, a tool) and the state its wrapper
needs later (the run to flag as interrupted, the tool handle to mark failed when LangChain turns a
``ToolException`` into an error message instead of raising it).

:class:`GraphErrors` holds LangGraph's control-flow exception types, loaded once for both
instrumentations (a tool and a node both need to tell a pause from a failure).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from typing import Any

from opentelemetry import context as otel_context

from agent_otel.spans import SpanHandle

SCOPE_KEY = otel_context.create_key("agent_otel.langchain.scope")

RUN = "run"
NODE = "node"
TOOL = "tool"


class GraphErrors:
    """LangGraph's control-flow exceptions; empty tuples (``isinstance`` is then always False) without it.

    ``interrupt``: ``GraphInterrupt`` (a pause: ``interrupt()``, static breakpoints) — not a failure.
    ``bubble_up``: ``GraphBubbleUp``, its base, which also covers ``ParentCommand`` (navigation to a parent
    graph) — not a failure either.
    """

    loaded = False
    interrupt: tuple[type[BaseException], ...] = ()
    bubble_up: tuple[type[BaseException], ...] = ()


def load_graph_errors() -> bool:
    """Load :class:`GraphErrors` (once found, kept). True when LangGraph is importable."""
    if not GraphErrors.loaded:
        try:
            from langgraph.errors import GraphBubbleUp, GraphInterrupt
        except Exception:
            return False
        GraphErrors.interrupt = (GraphInterrupt,)
        GraphErrors.bubble_up = (GraphBubbleUp,)
        GraphErrors.loaded = True
    return True


class RunState:
    """One graph run (agent or subgraph workflow span); nodes flag it when the graph pauses."""

    __slots__ = ("handle", "interrupted")

    def __init__(self, handle: SpanHandle | None) -> None:
        self.handle = handle
        self.interrupted = False


class Scope:
    """What is running in a context: ``kind`` is :data:`RUN`, :data:`NODE` or :data:`TOOL`.

    ``run`` is the enclosing graph run (for nodes and runs), ``bound`` the node's runnable (to
    recognise a subgraph that *is* the node), ``handle`` the span, ``settled`` True once a tool's
    outcome has been recorded by a LangChain error-handling hook.
    """

    __slots__ = ("bound", "handle", "kind", "run", "settled")

    def __init__(
        self,
        kind: str,
        handle: SpanHandle | None,
        run: RunState | None = None,
        bound: Any = None,
    ) -> None:
        self.kind = kind
        self.handle = handle
        self.run = run
        self.bound = bound
        self.settled = False


def current_scope(ctx: otel_context.Context | None = None) -> Scope | None:
    """The innermost :class:`Scope` in ``ctx`` (default: the current context), if any."""
    scope = otel_context.get_value(SCOPE_KEY, ctx)
    return scope if isinstance(scope, Scope) else None


def scoped_context(scope: Scope, base: otel_context.Context) -> otel_context.Context:
    """``base`` (a span's context) with ``scope`` as the innermost scope."""
    return otel_context.set_value(SCOPE_KEY, scope, base)


Finish = Callable[[BaseException | None, bool], None]
"""Called once when a traced stream ends: ``(exception or None, closed_early)``. Must not raise."""


def iterate_in_context(
    inner: Iterator[Any],
    begin: Callable[[], otel_context.Context | None],
    on_item: Callable[[Any], None] | None,
    finish: Finish,
) -> Generator[Any, Any, Any]:
    """Re-yield ``inner``, running each of its steps with the context made by ``begin`` attached.

    ``begin`` runs at the first ``next()`` (so a stream that is never iterated opens no span) and
    returns the context to attach, or None to pass ``inner`` through untouched. The context is
    detached before each item is handed to the consumer, so the consumer's own code is never
    parented under the stream's span. ``finish`` runs exactly once: on exhaustion, on an exception
    (re-raised unchanged), or on ``close()`` / garbage collection (``closed_early`` True). Exceptions
    thrown into this generator are forwarded to ``inner``. ``begin``, ``on_item`` and ``finish``
    must not raise (pass guarded functions).
    """
    ctx = begin()
    if ctx is None:
        return (yield from inner)
    pending: BaseException | None = None
    try:
        while True:
            thrown, pending = pending, None
            token = otel_context.attach(ctx)
            try:
                item = next(inner) if thrown is None else inner.throw(thrown)
            except StopIteration as stop:
                result = stop.value
                break
            finally:
                otel_context.detach(token)
            if on_item is not None:
                on_item(item)
            try:
                yield item
            except GeneratorExit:
                raise
            except BaseException as exc:
                pending = exc
    except GeneratorExit:
        token = otel_context.attach(ctx)
        try:
            close = getattr(inner, "close", None)
            if close is not None:
                close()
        finally:
            otel_context.detach(token)
            finish(None, True)
        raise
    except BaseException as exc:
        finish(exc, False)
        raise
    finish(None, False)
    return result


async def aiterate_in_context(
    inner: AsyncIterator[Any],
    begin: Callable[[], otel_context.Context | None],
    on_item: Callable[[Any], None] | None,
    finish: Finish,
) -> AsyncGenerator[Any, Any]:
    """The async twin of :func:`iterate_in_context` (``__anext__`` / ``athrow`` / ``aclose``)."""
    ctx = begin()
    if ctx is None:
        async for item in inner:
            yield item
        return
    pending: BaseException | None = None
    try:
        while True:
            thrown, pending = pending, None
            token = otel_context.attach(ctx)
            try:
                if thrown is None:
                    item = await inner.__anext__()
                else:
                    athrow = getattr(inner, "athrow", None)
                    if athrow is None:
                        raise thrown
                    item = await athrow(thrown)
            except StopAsyncIteration:
                break
            finally:
                otel_context.detach(token)
            if on_item is not None:
                on_item(item)
            try:
                yield item
            except GeneratorExit:
                raise
            except BaseException as exc:
                pending = exc
    except GeneratorExit:
        token = otel_context.attach(ctx)
        try:
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            otel_context.detach(token)
            finish(None, True)
        raise
    except BaseException as exc:
        finish(exc, False)
        raise
    finish(None, False)
