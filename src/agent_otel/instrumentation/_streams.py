"""Transparent stream proxies that finish an LLM call exactly once, however the stream ends.

:class:`SyncStreamProxy` / :class:`AsyncStreamProxy` wrap an SDK stream (``wrapt.ObjectProxy``: every
attribute, helper method and ``isinstance`` check reaches the real stream) and report to a
:class:`StreamObserver`:

- every chunk the caller receives -> ``observer.on_chunk(chunk)``;
- the end, exactly once -> ``observer.on_end(error)``, on whichever comes first: exhaustion
  (``StopIteration``), an exception raised by the stream (``error`` is that exception), ``close()`` /
  ``aclose()``, leaving a ``with`` / ``async with`` block (an interruption — KeyboardInterrupt, SystemExit,
  task cancellation — raised in the block counts as the error; other exceptions of the caller's own code
  do not), or garbage collection of the proxy (``__del__``), which covers an early ``break`` followed by
  dropping the stream.

The proxies attach no OpenTelemetry context while the caller iterates: code the caller runs between chunks
is parented to the caller's own span, not to the LLM span. Observer failures are swallowed (debug log);
the chunks, the return values and the exceptions the caller sees are the stream's own, unchanged.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import wrapt

from agent_otel.spans import _INTERRUPTIONS

_logger = logging.getLogger(__name__)


class StreamObserver(Protocol):
    """What a stream proxy reports to. Implementations should not raise (the proxy guards them anyway)."""

    def on_chunk(self, chunk: Any) -> None:
        """One chunk, as the caller receives it."""

    def on_end(self, error: BaseException | None) -> None:
        """The stream is over (called exactly once). ``error``: what ended it abnormally, if anything."""


def _report_end(observer: StreamObserver, error: BaseException | None) -> None:
    try:
        observer.on_end(error)
    except Exception:
        _logger.debug("agent-otel: stream finalisation failed", exc_info=True)


def exit_error(exc: BaseException | None) -> BaseException | None:
    """What leaving a ``with`` block with ``exc`` means for the stream: an interruption, or no error."""
    return exc if isinstance(exc, _INTERRUPTIONS) else None


class _End:
    """Reports the end of one stream exactly once: the one "finished" flag of a stream proxy.

    Shared by a sync proxy and its chunk generator (no cycle).
    """

    __slots__ = ("done", "observer")

    def __init__(self, observer: StreamObserver) -> None:
        self.observer = observer
        self.done = False

    def __call__(self, error: BaseException | None) -> None:
        if self.done:
            return
        self.done = True
        _report_end(self.observer, error)


def _observed(iterator: Any, on_chunk: Any, end: _End) -> Any:
    """Yield the chunks of ``iterator``, reporting each, then the end (a generator: cheap per chunk)."""
    try:
        for chunk in iterator:
            try:
                on_chunk(chunk)
            except Exception:
                _logger.debug("agent-otel: stream chunk extraction failed", exc_info=True)
            yield chunk
    except GeneratorExit:  # closed or collected while suspended: the caller stopped reading
        end(None)
        raise
    except BaseException as exc:  # the stream itself failed
        end(exc)
        raise
    end(None)


class SyncStreamProxy(wrapt.ObjectProxy):  # type: ignore[misc]
    """A synchronous stream that reports its chunks and its end to an observer (see the module docstring).

    Iteration runs through one generator over the real stream's iterator (created on first use), so the
    per-chunk cost is a generator step and the observer call; ``next(proxy)`` steps the same generator.
    The generator holds no reference to the proxy, so dropping the proxy frees it at once (``__del__``).
    """

    def __init__(self, wrapped: Any, observer: StreamObserver) -> None:
        super().__init__(wrapped)
        self._self_end = _End(observer)
        self._self_on_chunk = observer.on_chunk
        self._self_chunks: Any = None

    def __iter__(self) -> Any:
        chunks = self._self_chunks
        if chunks is None:
            chunks = self._self_chunks = _observed(
                iter(self.__wrapped__), self._self_on_chunk, self._self_end
            )
        return chunks

    def __next__(self) -> Any:
        return next(self.__iter__())

    def close(self) -> Any:
        try:
            return self.__wrapped__.close()
        finally:
            self._self_end(None)

    def __enter__(self) -> SyncStreamProxy:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(exc_type, exc, tb)
        finally:
            self._self_end(exit_error(exc))

    def __del__(self) -> None:
        _finalize(self, "_self_end")


class AsyncStreamProxy(wrapt.ObjectProxy):  # type: ignore[misc]
    """An asynchronous stream that reports its chunks and its end to an observer (see the module doc)."""

    def __init__(self, wrapped: Any, observer: StreamObserver) -> None:
        super().__init__(wrapped)
        self._self_finish = _End(observer)
        self._self_on_chunk = observer.on_chunk

    def __aiter__(self) -> AsyncStreamProxy:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            self._self_finish(None)
            raise
        except BaseException as exc:
            self._self_finish(exc)
            raise
        if not self._self_finish.done:
            try:
                self._self_on_chunk(chunk)
            except Exception:
                _logger.debug("agent-otel: stream chunk extraction failed", exc_info=True)
        return chunk

    async def close(self) -> Any:
        try:
            return await self.__wrapped__.close()
        finally:
            self._self_finish(None)

    async def aclose(self) -> Any:
        closer = getattr(self.__wrapped__, "aclose", None) or self.__wrapped__.close
        try:
            return await closer()
        finally:
            self._self_finish(None)

    async def __aenter__(self) -> AsyncStreamProxy:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(exc_type, exc, tb)
        finally:
            self._self_finish(exit_error(exc))

    def __del__(self) -> None:
        _finalize(self, "_self_finish")


def _finalize(proxy: Any, slot: str) -> None:
    """``__del__`` of a proxy: report the end if nothing did. Never raises (a finalizer has no caller).

    What it runs takes no lock of ours; metrics recorded during a garbage collection are deferred (see
    ``_genai_metrics``). At interpreter shutdown the slot may already be gone: nothing left to do then.
    """
    try:
        end = getattr(proxy, slot)
        if not end.done:
            end(None)
    except BaseException:  # a finalizer must not raise, whatever happened
        pass
