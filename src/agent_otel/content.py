"""Content capture: whether prompts, completions and tool payloads are recorded, and how.

Content is off by default (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``). When it is on,
each payload goes through :func:`to_json`: the user's redaction hook first, then a JSON-safe
conversion that accepts anything (pydantic models, dataclasses, bytes, cycles, broken ``__repr__``)
and yields valid JSON for every non-string payload, then truncation to
``AGENT_OTEL_CONTENT_MAX_LENGTH`` characters. Nothing here raises.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import json
import logging
import math
import sys
import uuid
from collections.abc import Callable, Mapping
from pathlib import PurePath
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
    """``json.dumps`` fallback: a faithful plain form for common types, ``repr`` for the rest.

    Containers are converted one level only (json recurses into them, and detects cycles).
    """
    if _is_pydantic_model(value):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
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
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (uuid.UUID, decimal.Decimal, PurePath)):
        return str(value)
    return _safe_repr(value)


def _is_pydantic_model(value: Any) -> bool:
    """A pydantic v2 model instance (checked by class, not duck typing: a mock has every attribute)."""
    pydantic = sys.modules.get("pydantic")  # not imported: nothing can be a pydantic model
    base = getattr(pydantic, "BaseModel", None) if pydantic is not None else None
    return base is not None and isinstance(value, base) and hasattr(value, "model_dump")


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not lose the span
        return f"<unrepresentable {type(value).__name__}>"


_CIRCULAR = "[circular reference]"
_TOO_DEEP = "[nested too deep]"
_MAX_DEPTH = 100


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)  # what json.dumps itself does with such keys
    return _safe_repr(key)


def _plain(value: Any, depth: int, active: set[int]) -> Any:
    """A strictly JSON-safe copy of ``value``: the slow path, for what ``json.dumps`` refused.

    Cycles and excessive nesting become marker strings, non-finite floats strings, odd keys
    strings, and anything whose conversion raises its (safe) repr.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= _MAX_DEPTH:
        return _TOO_DEEP
    ident = id(value)
    if ident in active:
        return _CIRCULAR
    active.add(ident)
    try:
        if isinstance(value, dict):
            return {_key(k): _plain(v, depth + 1, active) for k, v in value.items()}
        if isinstance(value, list):
            return [_plain(v, depth + 1, active) for v in value]
        try:
            converted = _default(value)
        except Exception:
            return _safe_repr(value)
        if isinstance(converted, str):
            return converted
        return _plain(converted, depth + 1, active)
    finally:
        active.discard(ident)


def _dumps(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:  # the fast path: plain data
        return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except Exception:  # cycles, NaN, odd keys, deep nesting, a raising model_dump/__repr__ ...
        pass
    try:
        return json.dumps(_plain(value, 0, set()), ensure_ascii=False, separators=(",", ":"))
    except Exception:
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
