"""All agent-otel settings, read from the environment in one place.

Standard ``OTEL_*`` variables keep their OpenTelemetry meaning; agent-otel's own settings are
``AGENT_OTEL_*``. A malformed value never raises: it is logged as a warning naming the variable,
and the documented default is used instead. Every setting is listed in the README.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent_otel.attributes import ALL_CATEGORIES

_logger = logging.getLogger(__name__)

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CONTENT_MODES = {"NO_CONTENT", "SPAN_ONLY", "EVENT_ONLY", "SPAN_AND_EVENT"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
FSYNC_MODES = ("never", "interval", "always")
ANTHROPIC_SDK_SPANS_MODES = ("auto", "replace", "keep")


@dataclass(frozen=True)
class Settings:
    """A snapshot of every setting; build one with :func:`load_settings`."""

    # Tracing as a whole (OTEL_SDK_DISABLED=true turns it off).
    enabled: bool = True
    # Content capture (prompts, completions, tool arguments/results): off unless asked for.
    content_mode: str = "NO_CONTENT"
    content_max_length: int = 16384
    # Taxonomy categories that get spans (Koog's message filter).
    categories: frozenset[str] = field(default_factory=lambda: ALL_CATEGORIES)
    # The crash-safe JSONL record.
    jsonl_enabled: bool = True
    jsonl_dir: str = "agent-otel-traces"
    jsonl_file: str | None = None
    jsonl_max_bytes: int = 100 * 1024 * 1024
    jsonl_fsync: str = "interval"
    jsonl_fsync_interval_ms: int = 1000
    # End open spans as interrupted and flush on SIGTERM / KeyboardInterrupt / exit.
    handle_signals: bool = True
    # --- langchain ---
    # Spans for LangChain glue runnables (prompt templates, parsers, sequences); off by default.
    langchain_chain_spans: bool = False
    # --- openai / anthropic ---
    # The anthropic SDK's own call spans, for the calls agent-otel traces: auto | replace | keep.
    anthropic_sdk_spans: str = "auto"

    @property
    def capture_content(self) -> bool:
        """True when message content goes on spans."""
        return self.content_mode in ("SPAN_ONLY", "SPAN_AND_EVENT")


def _warn(name: str, raw: str, default: object, expected: str) -> None:
    _logger.warning("agent-otel: ignoring %s=%r (expected %s); using %r", name, raw, expected, default)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False if value else default
    _warn(name, raw, default, "true or false")
    return default


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        _warn(name, raw, default, "an integer")
        return default
    if value < minimum:
        _warn(name, raw, default, f"an integer >= {minimum}")
        return default
    return value


def _content_mode(env: Mapping[str, str]) -> str:
    raw = env.get(CAPTURE_CONTENT_ENV)
    if raw is None or not raw.strip():
        return "NO_CONTENT"
    value = raw.strip().upper()
    if value in _CONTENT_MODES:
        return value
    # The older instrumentations' boolean form.
    if value.lower() in _TRUE:
        return "SPAN_ONLY"
    if value.lower() in _FALSE:
        return "NO_CONTENT"
    _warn(
        CAPTURE_CONTENT_ENV,
        raw,
        "NO_CONTENT",
        "NO_CONTENT, SPAN_ONLY, EVENT_ONLY, SPAN_AND_EVENT, true or false",
    )
    return "NO_CONTENT"


def _categories(env: Mapping[str, str]) -> frozenset[str]:
    name = "AGENT_OTEL_CATEGORIES"
    raw = env.get(name)
    if raw is None or not raw.strip() or raw.strip().lower() == "all":
        return ALL_CATEGORIES
    wanted = {part.strip().lower() for part in raw.split(",") if part.strip()}
    unknown = wanted - ALL_CATEGORIES
    if unknown:
        _logger.warning(
            "agent-otel: %s names unknown categories %s (known: %s); they are ignored",
            name,
            ", ".join(sorted(unknown)),
            ", ".join(sorted(ALL_CATEGORIES)),
        )
    known = frozenset(wanted & ALL_CATEGORIES)
    if not known:
        _warn(name, raw, "all", "a comma-separated list of " + ", ".join(sorted(ALL_CATEGORIES)))
        return ALL_CATEGORIES
    return known


def _fsync(env: Mapping[str, str]) -> str:
    name = "AGENT_OTEL_JSONL_FSYNC"
    raw = env.get(name)
    if raw is None or not raw.strip():
        return "interval"
    value = raw.strip().lower()
    if value in FSYNC_MODES:
        return value
    _warn(name, raw, "interval", " / ".join(FSYNC_MODES))
    return "interval"


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in choices:
        return value
    _warn(name, raw, default, " / ".join(choices))
    return default


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every setting from ``environ`` (default ``os.environ``). Never raises."""
    env = os.environ if environ is None else environ
    jsonl_file = env.get("AGENT_OTEL_JSONL_FILE", "").strip() or None
    return Settings(
        enabled=not _bool(env, "OTEL_SDK_DISABLED", False),
        content_mode=_content_mode(env),
        content_max_length=_int(env, "AGENT_OTEL_CONTENT_MAX_LENGTH", 16384, minimum=64),
        categories=_categories(env),
        jsonl_enabled=_bool(env, "AGENT_OTEL_JSONL", True),
        jsonl_dir=env.get("AGENT_OTEL_JSONL_DIR", "").strip() or "agent-otel-traces",
        jsonl_file=jsonl_file,
        jsonl_max_bytes=_int(env, "AGENT_OTEL_JSONL_MAX_BYTES", 100 * 1024 * 1024),
        jsonl_fsync=_fsync(env),
        jsonl_fsync_interval_ms=_int(env, "AGENT_OTEL_JSONL_FSYNC_INTERVAL_MS", 1000, minimum=1),
        handle_signals=_bool(env, "AGENT_OTEL_HANDLE_SIGNALS", True),
        langchain_chain_spans=_bool(env, "AGENT_OTEL_LANGCHAIN_CHAIN_SPANS", False),
        anthropic_sdk_spans=_choice(env, "AGENT_OTEL_ANTHROPIC_SDK_SPANS", ANTHROPIC_SDK_SPANS_MODES, "auto"),
    )


class _Current:
    """Holds the settings in force; replaced as a whole, never mutated field by field."""

    settings: Settings | None = None


def get_settings() -> Settings:
    """The settings in force (read from the environment on first use)."""
    current = _Current.settings
    if current is None:
        current = _Current.settings = load_settings()
    return current


def reload_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Re-read the environment (``agent_otel.instrument()`` does this) and return the new settings."""
    _Current.settings = load_settings(environ)
    return _Current.settings


def use_settings(settings: Settings) -> None:
    """Put ``settings`` in force (for code and tests that configure agent-otel without the environment)."""
    _Current.settings = settings
