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
TRACES_EXPORTER_ENV = "OTEL_TRACES_EXPORTER"
# The name in OTEL_TRACES_EXPORTER that asks for the crash-safe record (see distro.py).
JSONL_EXPORTER = "jsonl"


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
    # The crash-safe JSONL record: AGENT_OTEL_JSONL, forced on when OTEL_TRACES_EXPORTER names jsonl.
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


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in choices:
        return value
    _warn(name, raw, default, " / ".join(choices))
    return default


def traces_exporter_names(environ: Mapping[str, str] | None = None) -> list[str]:
    """The names in ``OTEL_TRACES_EXPORTER``, stripped and lower-cased (empty when unset)."""
    env = os.environ if environ is None else environ
    return [n.strip().lower() for n in env.get(TRACES_EXPORTER_ENV, "").split(",") if n.strip()]


# --- OTLP transport ---------------------------------------------------------------------------------

OTLP_GRPC = "grpc"
OTLP_HTTP = "http/protobuf"
OTLP_PROTOCOLS = (OTLP_GRPC, OTLP_HTTP)
OTLP_HTTP_PORT = 4318
OTLP_SIGNALS = ("traces", "metrics", "logs")
_OTLP_PROTOCOL_ENV = "OTEL_EXPORTER_OTLP_PROTOCOL"
_OTLP_SIGNAL_PROTOCOL_ENV = {
    "traces": "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "metrics": "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "logs": "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
}
_OTLP_SIGNAL_ENDPOINT_ENV = {
    "traces": "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "metrics": "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "logs": "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
}


def otlp_protocol_variables(signal: str = "traces") -> tuple[str, str]:
    """The variables that set the OTLP transport of ``signal``, most specific first."""
    return _OTLP_SIGNAL_PROTOCOL_ENV[signal], _OTLP_PROTOCOL_ENV


def guess_otlp_protocol(endpoint: str | None, signal: str = "traces") -> str:
    """The transport an OTLP endpoint URL implies: ``http/protobuf`` when it is on port 4318 (the
    OTLP/HTTP port) or its path ends in ``/v1/{signal}`` (OTLP/HTTP paths; gRPC has none), else ``grpc``.
    """
    text = (endpoint or "").strip()
    if not text:
        return OTLP_GRPC
    from urllib.parse import urlsplit  # only set-up code gets here: keep `import agent_otel` lean

    try:
        parts = urlsplit(text if "://" in text else "//" + text)
        port = parts.port
    except ValueError:  # a malformed URL or port: the exporter will complain about it
        return OTLP_GRPC
    if port == OTLP_HTTP_PORT or parts.path.rstrip("/").endswith(f"/v1/{signal}"):
        return OTLP_HTTP
    return OTLP_GRPC


def unsupported_otlp_protocols(environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """``(variable, value)`` for each OTLP protocol variable set to something other than
    ``grpc`` / ``http/protobuf`` (case-insensitive)."""
    env = os.environ if environ is None else environ
    bad = []
    for name in (_OTLP_PROTOCOL_ENV, *_OTLP_SIGNAL_PROTOCOL_ENV.values()):
        raw = env.get(name)
        if raw is not None and raw.strip() and raw.strip().lower() not in OTLP_PROTOCOLS:
            bad.append((name, raw))
    return bad


def warn_unsupported_otlp_protocols(environ: Mapping[str, str] | None = None) -> None:
    """Log one warning per OTLP protocol variable :func:`otlp_protocol` ignores."""
    for name, raw in unsupported_otlp_protocols(environ):
        _warn_protocol(name, raw)


def _warn_protocol(name: str, raw: str) -> None:
    _logger.warning(
        "agent-otel: %s=%r is not supported (expected grpc or http/protobuf); it is ignored", name, raw
    )


def otlp_protocol(
    signal: str = "traces", environ: Mapping[str, str] | None = None, *, warn: bool = True
) -> str:
    """The OTLP transport of ``signal`` (``traces``, ``metrics``, ``logs``): ``grpc`` or ``http/protobuf``.

    The one rule agent-otel follows everywhere (``agent_otel.instrument()``, the
    ``opentelemetry-instrument`` configurator; ``agent-otel export`` can use it too):

    1. ``OTEL_EXPORTER_OTLP_{SIGNAL}_PROTOCOL``, else ``OTEL_EXPORTER_OTLP_PROTOCOL`` (case-insensitive).
       A value other than ``grpc`` / ``http/protobuf`` (``http/json`` included: the Python exporters
       lack it) is ignored, with a warning when ``warn`` is true.
    2. Else guessed from ``OTEL_EXPORTER_OTLP_{SIGNAL}_ENDPOINT``, else ``OTEL_EXPORTER_OTLP_ENDPOINT``:
       see :func:`guess_otlp_protocol` (port 4318 or a ``/v1/{signal}`` path: ``http/protobuf``).
    3. Else ``grpc``, the default of the Python SDK and ``opentelemetry-instrument``.

    An explicit transport in an exporter name (``otlp_proto_http``, ``otlp_proto_grpc``) is not
    this function's business: it names the transport itself. Never raises.
    """
    env = os.environ if environ is None else environ
    for name in otlp_protocol_variables(signal):
        raw = env.get(name)
        if raw is None or not raw.strip():
            continue
        value = raw.strip().lower()
        if value in OTLP_PROTOCOLS:
            return value
        if warn:
            _warn_protocol(name, raw)
    endpoint = env.get(_OTLP_SIGNAL_ENDPOINT_ENV[signal], "").strip() or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT", ""
    )
    return guess_otlp_protocol(endpoint, signal)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every setting from ``environ`` (default ``os.environ``). Never raises."""
    env = os.environ if environ is None else environ
    jsonl_file = env.get("AGENT_OTEL_JSONL_FILE", "").strip() or None
    return Settings(
        enabled=not _bool(env, "OTEL_SDK_DISABLED", False),
        content_mode=_content_mode(env),
        content_max_length=_int(env, "AGENT_OTEL_CONTENT_MAX_LENGTH", 16384, minimum=64),
        categories=_categories(env),
        jsonl_enabled=_bool(env, "AGENT_OTEL_JSONL", True) or JSONL_EXPORTER in traces_exporter_names(env),
        jsonl_dir=env.get("AGENT_OTEL_JSONL_DIR", "").strip() or "agent-otel-traces",
        jsonl_file=jsonl_file,
        jsonl_max_bytes=_int(env, "AGENT_OTEL_JSONL_MAX_BYTES", 100 * 1024 * 1024),
        jsonl_fsync=_choice(env, "AGENT_OTEL_JSONL_FSYNC", FSYNC_MODES, "interval"),
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
