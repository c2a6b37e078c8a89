"""Helpers that keep instrumentation code from ever hurting the instrumented program.

Extraction (reading a request, a response, a chunk) is best-effort: when it fails, the span loses
an attribute and a debug line is logged — the user's call, its return value and its exception are
untouched. The user's own call never runs inside these guards.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

_logger = logging.getLogger("agent_otel.instrumentation")

F = TypeVar("F", bound=Callable[..., Any])


def guard(fn: F) -> F:
    """Decorate a best-effort function: an exception inside it is logged at debug level and None returned."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception:
            _logger.debug("agent-otel: %s failed; attribute(s) skipped", fn.__qualname__, exc_info=True)
            return None

    return wrapper  # type: ignore[return-value]
