"""Settings: every AGENT_OTEL_* variable, the content-capture switch, malformed values, OTEL_SDK_DISABLED."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from agent_otel import config, content
from agent_otel.attributes import ALL_CATEGORIES
from agent_otel.config import CAPTURE_CONTENT_ENV, Settings, load_settings


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_defaults(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = load_settings({})
    assert s == Settings()
    assert s.enabled is True
    assert s.content_mode == "NO_CONTENT" and s.capture_content is False
    assert s.content_max_length == 16384
    assert s.categories == ALL_CATEGORIES
    assert s.jsonl_enabled is True
    assert s.jsonl_dir == "agent-otel-traces"
    assert s.jsonl_file is None
    assert s.jsonl_max_bytes == 100 * 1024 * 1024
    assert s.jsonl_fsync == "interval"
    assert s.jsonl_fsync_interval_ms == 1000
    assert s.handle_signals is True
    assert s.langchain_chain_spans is False
    assert warnings_of(caplog) == []


def test_every_agent_otel_variable() -> None:
    s = load_settings(
        {
            "AGENT_OTEL_CONTENT_MAX_LENGTH": " 2048 ",
            "AGENT_OTEL_CATEGORIES": "agent, LLM",
            "AGENT_OTEL_JSONL": "false",
            "AGENT_OTEL_JSONL_DIR": " /var/traces ",
            "AGENT_OTEL_JSONL_FILE": "/var/traces/all.jsonl",
            "AGENT_OTEL_JSONL_MAX_BYTES": "1048576",
            "AGENT_OTEL_JSONL_FSYNC": "ALWAYS",
            "AGENT_OTEL_JSONL_FSYNC_INTERVAL_MS": "250",
            "AGENT_OTEL_HANDLE_SIGNALS": "no",
            "AGENT_OTEL_LANGCHAIN_CHAIN_SPANS": "1",
        }
    )
    assert s.content_max_length == 2048
    assert s.categories == frozenset({"agent", "llm"})
    assert s.jsonl_enabled is False
    assert s.jsonl_dir == "/var/traces"
    assert s.jsonl_file == "/var/traces/all.jsonl"
    assert s.jsonl_max_bytes == 1048576
    assert s.jsonl_fsync == "always"
    assert s.jsonl_fsync_interval_ms == 250
    assert s.handle_signals is False
    assert s.langchain_chain_spans is True


@pytest.mark.parametrize("mode", ["never", "interval", "always", " Never "])
def test_fsync_modes(mode: str) -> None:
    assert load_settings({"AGENT_OTEL_JSONL_FSYNC": mode}).jsonl_fsync == mode.strip().lower()


@pytest.mark.parametrize(
    ("raw", "mode", "captured"),
    [
        ("true", "SPAN_ONLY", True),
        ("TRUE", "SPAN_ONLY", True),
        ("1", "SPAN_ONLY", True),
        ("false", "NO_CONTENT", False),
        ("False", "NO_CONTENT", False),
        ("0", "NO_CONTENT", False),
        ("NO_CONTENT", "NO_CONTENT", False),
        ("no_content", "NO_CONTENT", False),
        ("SPAN_ONLY", "SPAN_ONLY", True),
        ("span_only", "SPAN_ONLY", True),
        (" Span_Only ", "SPAN_ONLY", True),
        ("EVENT_ONLY", "EVENT_ONLY", False),  # content on events only: none on spans
        ("event_only", "EVENT_ONLY", False),
        ("SPAN_AND_EVENT", "SPAN_AND_EVENT", True),
        ("span_and_event", "SPAN_AND_EVENT", True),
        ("", "NO_CONTENT", False),
    ],
)
def test_content_capture_values(
    raw: str, mode: str, captured: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        s = load_settings({CAPTURE_CONTENT_ENV: raw})
    assert s.content_mode == mode
    assert s.capture_content is captured
    assert warnings_of(caplog) == []
    # ... and through the environment, as content.capture_enabled() sees it.
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, raw)
    config.reload_settings()
    assert content.capture_enabled() is captured


@pytest.mark.parametrize("raw", ["junk", "SPAN", "yes please", "2"])
def test_content_capture_junk_warns_and_stays_off(raw: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = load_settings({CAPTURE_CONTENT_ENV: raw})
    assert s.content_mode == "NO_CONTENT" and not s.capture_content
    (msg,) = warnings_of(caplog)
    assert CAPTURE_CONTENT_ENV in msg and repr(raw) in msg


@pytest.mark.parametrize(
    ("name", "raw", "field", "default"),
    [
        ("AGENT_OTEL_CONTENT_MAX_LENGTH", "lots", "content_max_length", 16384),
        ("AGENT_OTEL_CONTENT_MAX_LENGTH", "12.5", "content_max_length", 16384),
        ("AGENT_OTEL_CONTENT_MAX_LENGTH", "10", "content_max_length", 16384),  # below the minimum
        ("AGENT_OTEL_JSONL_MAX_BYTES", "1e9", "jsonl_max_bytes", 100 * 1024 * 1024),
        ("AGENT_OTEL_JSONL_MAX_BYTES", "-1", "jsonl_max_bytes", 100 * 1024 * 1024),
        ("AGENT_OTEL_JSONL_FSYNC_INTERVAL_MS", "0", "jsonl_fsync_interval_ms", 1000),
        ("AGENT_OTEL_JSONL_FSYNC_INTERVAL_MS", "1s", "jsonl_fsync_interval_ms", 1000),
        ("AGENT_OTEL_JSONL_FSYNC", "sometimes", "jsonl_fsync", "interval"),
        ("AGENT_OTEL_JSONL", "perhaps", "jsonl_enabled", True),
        ("AGENT_OTEL_HANDLE_SIGNALS", "2", "handle_signals", True),
        ("AGENT_OTEL_LANGCHAIN_CHAIN_SPANS", "si", "langchain_chain_spans", False),
        ("OTEL_SDK_DISABLED", "nope", "enabled", True),
    ],
)
def test_malformed_values_warn_and_use_the_default(
    name: str, raw: str, field: str, default: object, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        s = load_settings({name: raw})
    assert getattr(s, field) == default
    (msg,) = warnings_of(caplog)
    assert name in msg and repr(raw) in msg


@pytest.mark.parametrize(
    "name", ["AGENT_OTEL_CONTENT_MAX_LENGTH", "AGENT_OTEL_JSONL", "AGENT_OTEL_JSONL_FSYNC"]
)
def test_empty_values_are_the_default_without_warning(name: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = load_settings({name: "  "})
    assert s == Settings()
    assert warnings_of(caplog) == []


def test_empty_jsonl_dir_and_file_fall_back() -> None:
    s = load_settings({"AGENT_OTEL_JSONL_DIR": " ", "AGENT_OTEL_JSONL_FILE": ""})
    assert s.jsonl_dir == "agent-otel-traces" and s.jsonl_file is None


@pytest.mark.parametrize(
    ("raw", "expected", "warns"),
    [
        ("agent,llm", {"agent", "llm"}, False),
        (" Tool ", {"tool"}, False),
        ("all", set(ALL_CATEGORIES), False),
        ("ALL", set(ALL_CATEGORIES), False),
        ("", set(ALL_CATEGORIES), False),
        ("agent,,llm,", {"agent", "llm"}, False),
        ("agent,bogus", {"agent"}, True),  # unknown names ignored, the rest kept
        ("bogus", set(ALL_CATEGORIES), True),  # nothing known: the default, all
        (",", set(ALL_CATEGORIES), True),  # no names at all: warned, the default
    ],
)
def test_categories(raw: str, expected: set[str], warns: bool, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = load_settings({"AGENT_OTEL_CATEGORIES": raw})
    assert s.categories == frozenset(expected)
    msgs = warnings_of(caplog)
    assert bool(msgs) is warns
    assert all("AGENT_OTEL_CATEGORIES" in m for m in msgs)


@pytest.mark.parametrize(("raw", "enabled"), [("true", False), ("TRUE", False), ("false", True), ("", True)])
def test_otel_sdk_disabled(raw: str, enabled: bool) -> None:
    assert load_settings({"OTEL_SDK_DISABLED": raw}).enabled is enabled


def test_get_and_reload_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    first = config.get_settings()
    assert config.get_settings() is first  # cached
    monkeypatch.setenv("AGENT_OTEL_CONTENT_MAX_LENGTH", "4096")
    assert config.get_settings().content_max_length == first.content_max_length  # not re-read
    reloaded = config.reload_settings()
    assert reloaded.content_max_length == 4096 and config.get_settings() is reloaded
    assert config.reload_settings({}).content_max_length == 16384
    assert config.get_settings().content_max_length == 16384


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({}, True),
        ({"AGENT_OTEL_JSONL": "false"}, False),
        ({"AGENT_OTEL_JSONL": "false", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"AGENT_OTEL_JSONL": "false", "OTEL_TRACES_EXPORTER": "otlp, JSONL"}, True),
        ({"AGENT_OTEL_JSONL": "false", "OTEL_TRACES_EXPORTER": "jsonl"}, True),
        ({"AGENT_OTEL_JSONL": "true", "OTEL_TRACES_EXPORTER": "none"}, True),
    ],
)
def test_jsonl_enabled_is_forced_on_by_the_traces_exporter(env: dict[str, str], enabled: bool) -> None:
    """One place decides the record: OTEL_TRACES_EXPORTER naming jsonl overrides AGENT_OTEL_JSONL."""
    assert load_settings(env).jsonl_enabled is enabled


def test_traces_exporter_names() -> None:
    assert config.traces_exporter_names({}) == []
    assert config.traces_exporter_names({"OTEL_TRACES_EXPORTER": " OTLP , jsonl,,"}) == ["otlp", "jsonl"]


# --- the OTLP transport rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "protocol"),
    [
        ({}, "grpc"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, "grpc"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://otlp.example.com"}, "grpc"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://otlp.example.com/v1/traces"}, "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "http/protobuf"),
        (
            {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
            },
            "grpc",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:bad-port"}, "grpc"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": " HTTP/Protobuf "}, "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "grpc",
        ),
        # Unsupported values are ignored: the next variable, then the endpoint, decide.
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "grpc"),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
            "http/protobuf",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "carrier-pigeon",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            "http/protobuf",
        ),
    ],
)
def test_otlp_protocol_rule(env: dict[str, str], protocol: str) -> None:
    assert config.otlp_protocol("traces", env, warn=False) == protocol


def test_otlp_protocol_per_signal() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://c/v1/logs",
    }
    assert config.otlp_protocol("traces", env) == "grpc"
    assert config.otlp_protocol("metrics", env) == "http/protobuf"
    assert config.otlp_protocol("logs", env) == "http/protobuf"
    assert config.guess_otlp_protocol("http://c/v1/metrics", "traces") == "grpc"


def test_unsupported_otlp_protocol_warns_only_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "x"}
    with caplog.at_level(logging.WARNING):
        config.otlp_protocol("traces", env, warn=False)
    assert warnings_of(caplog) == []
    with caplog.at_level(logging.WARNING):
        config.otlp_protocol("traces", env)
    (warning,) = warnings_of(caplog)
    assert "OTEL_EXPORTER_OTLP_PROTOCOL" in warning and "http/json" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        config.warn_unsupported_otlp_protocols(env)
    assert len(warnings_of(caplog)) == 2


def _setting_names() -> list[str]:
    source = Path(config.__file__).read_text()
    return sorted(set(re.findall(r'"((?:AGENT_OTEL|OTEL)_[A-Z_]+)"', source)))


@pytest.mark.parametrize("raw", ["junk", "-1", "0", "", " ", "\x00", "9" * 40, "é", "true,false"])
def test_no_value_of_any_setting_raises(raw: str) -> None:
    """Every variable config.py reads (including ones added later) survives any value."""
    names = _setting_names()
    assert "AGENT_OTEL_CATEGORIES" in names and CAPTURE_CONTENT_ENV in names
    for name in names:
        load_settings({name: raw})
        for signal in config.OTLP_SIGNALS:
            assert config.otlp_protocol(signal, {name: raw}) in config.OTLP_PROTOCOLS
    load_settings(dict.fromkeys(names, raw))
    for signal in config.OTLP_SIGNALS:
        assert config.otlp_protocol(signal, dict.fromkeys(names, raw)) in config.OTLP_PROTOCOLS
