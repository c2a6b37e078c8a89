"""End open spans as *interrupted* when the process is stopped, and flush before it goes.

- **SIGTERM** with the default disposition: open spans end with ``error.type=SIGTERM``, the tracer
  provider is flushed (bounded time), and the process terminates by the signal as it would have.
  With a handler of the user's installed before ours, that handler runs first: if it returns (a
  graceful shutdown), spans end on their own; if it raises (``sys.exit``), open spans end as
  SIGTERM-interrupted and the exception goes on. A process that ignores SIGTERM is left alone.
- **Uncaught exceptions** (KeyboardInterrupt included): ``sys.excepthook`` is chained to remember
  the exception class; at exit, spans still open end with that name as ``error.type``.
- **Exit**: an ``atexit`` hook, registered after the tracer provider's own, ends the spans still
  open (``error.type`` = the reason seen, else ``shutdown``) *before* the provider shuts down, so
  they also reach the OTLP exporter.

Work in the signal handler runs on a helper thread joined with a timeout: the handler interrupts
the main thread at an arbitrary point (possibly inside a span's lock), and must never deadlock.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, ClassVar

from agent_otel.jsonl.processor import JsonlSpanProcessor

_logger = logging.getLogger(__name__)

SIGTERM_REASON = "SIGTERM"
SHUTDOWN_REASON = "shutdown"
_HANDLER_BUDGET_S = 5.0
_FLUSH_BUDGET_MS = 3000


class _Registry:
    """Which processors/providers to end and flush, and what stopped the process.

    Processors are held weakly, and the hooks are installed once per process.
    """

    processors: ClassVar[weakref.WeakSet[JsonlSpanProcessor]] = weakref.WeakSet()
    providers: ClassVar[weakref.WeakSet[Any]] = weakref.WeakSet()
    reason: str | None = None
    installed = False
    previous_excepthook: Callable[..., Any] | None = None
    previous_sigterm: Any = None


def end_open_spans(reason: str) -> int:
    """End the open spans of every registered processor as interrupted. Returns how many."""
    return sum(p.end_open_spans(reason) for p in list(_Registry.processors))


def _flush_providers(timeout_millis: int) -> None:
    for provider in list(_Registry.providers):
        try:
            provider.force_flush(timeout_millis)
        except Exception:
            _logger.debug("agent-otel: flush failed", exc_info=True)


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    _Registry.reason = exc_type.__qualname__
    previous = _Registry.previous_excepthook or sys.__excepthook__
    previous(exc_type, exc, tb)


def _at_exit() -> None:
    reason = _Registry.reason or SHUTDOWN_REASON
    try:
        end_open_spans(reason)
    except Exception:
        _logger.debug("agent-otel: ending open spans at exit failed", exc_info=True)


def _end_and_flush() -> None:
    """End open spans as SIGTERM-interrupted and flush, on a helper thread joined with a timeout."""

    def work() -> None:
        end_open_spans(SIGTERM_REASON)
        _flush_providers(_FLUSH_BUDGET_MS)

    worker = threading.Thread(target=work, name="agent-otel-sigterm", daemon=True)
    try:
        worker.start()
    except RuntimeError:
        # Python >= 3.12 refuses new threads once the interpreter is shutting down (a SIGTERM while
        # atexit hooks run, e.g. an OTLP flush to a collector that is down). Raising here would abort
        # that hook and turn "killed by SIGTERM" into a normal exit; carry on with the action instead.
        _logger.debug("agent-otel: no thread at interpreter shutdown; open spans left as they are")
    else:
        worker.join(_HANDLER_BUDGET_S)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _Registry.reason = SIGTERM_REASON
    previous = _Registry.previous_sigterm
    if callable(previous):
        # The user's handler decides first. If it returns, the program shuts down gracefully and its
        # spans end on their own; if it raises (sys.exit...), record the interruption, then let it go on.
        try:
            previous(signum, frame)
        except BaseException:
            _end_and_flush()
            raise
        return
    _end_and_flush()
    # The default action: terminate by the signal itself, so the exit status stays "killed by SIGTERM".
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def register(processor: JsonlSpanProcessor, provider: Any = None) -> None:
    """Track ``processor`` (and ``provider`` to flush) for interruption handling."""
    _Registry.processors.add(processor)
    if provider is not None and hasattr(provider, "force_flush"):
        _Registry.providers.add(provider)


def install(handle_signals: bool = True) -> None:
    """Install the exit hook, the excepthook chain and (from the main thread) the SIGTERM handler.

    Idempotent. Call it after the tracer provider is created, so that the exit hook runs before
    the provider's own shutdown.
    """
    if _Registry.installed:
        return
    _Registry.installed = True
    atexit.register(_at_exit)
    if sys.excepthook is not _excepthook:
        _Registry.previous_excepthook = sys.excepthook
        sys.excepthook = _excepthook
    if not handle_signals or threading.current_thread() is not threading.main_thread():
        return
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current is signal.SIG_IGN or current is _on_sigterm:
            return
        _Registry.previous_sigterm = current if callable(current) else None
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):
        _logger.debug("agent-otel: SIGTERM handler not installed", exc_info=True)
