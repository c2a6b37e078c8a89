"""Content capture: whether prompts, completions and tool payloads are recorded, and how.

Content is off by default (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``). When it is on,
each payload goes through :func:`to_json`: the user's redaction hook first, then a JSON-safe
conversion that accepts anything (pydantic models, dataclasses, bytes, cycles, broken ``__repr__``),
then truncation to ``AGENT_OTEL_CONTENT_MAX_LENGTH`` characters. Nothing here raises.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from agent_otel.config import get_settings

_logger = logging.getLogger(__name__)

Redactor = Callable[[str, Any], Any]
"""A redaction hook: ``(kind, value) -> value``. ``kind`` names the payload, e.g. ``"input_messages"``."""

REDACTION_FAILED = "[redaction failed]"
TRUNCATION_MARK = "…[truncated {total} chars]"


class _Hooks:
    redactor: Redactor | None = None


def capture_enabled() -> bool:
    """True when message content should be recorded on spans."""
    return get_settings().capture_content


def set_redactor(redactor: Redactor | None) -> None:
    """Install (or with None remove) the redaction hook applied to every captured payload."""
    _Hooks.redactor = redactor


def _default(value: Any) -> Any:
    """``json.dumps`` fallback: a faithful plain form for common types, ``repr`` for the rest."""
    dump = getattr(value, "model_dump", None)  # pydantic v2
    if callable(dump):
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return _safe_repr(value)


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not lose the span
        return f"<unrepresentable {type(value).__name__}>"


def _dumps(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):  # cycles, NaN-ish oddities, deep nesting
        return _safe_repr(value)
    except Exception:  # anything a model_dump or asdict might raise
        return _safe_repr(value)


def truncate(text: str, max_length: int) -> str:
    """Cut ``text`` to ``max_length`` characters, saying how long it was."""
    if len(text) <= max_length:
        return text
    mark = TRUNCATION_MARK.format(total=len(text))
    return text[: max(0, max_length - len(mark))] + mark


def to_json(value: Any, *, kind: str) -> str:
    """Redact, serialise and truncate one payload for a span attribute.

    Strings pass through unchanged (after redaction); everything else becomes JSON. A redaction
    hook that raises is logged and the payload replaced by ``"[redaction failed]"`` — the span and
    the rest of its attributes are kept.
    """
    redactor = _Hooks.redactor
    if redactor is not None:
        try:
            value = redactor(kind, value)
        except Exception:
            _logger.warning("agent-otel: redaction hook raised on %s; payload dropped", kind, exc_info=True)
            return REDACTION_FAILED
    return truncate(_dumps(value), get_settings().content_max_length)
