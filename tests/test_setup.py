"""One-line setup (agent_otel.instrument) and the opentelemetry-instrument entry points (distro.py).

In-process tests reset the global tracer provider the way the SDK's own tests do; the configurator,
which also sets the global meter/logger providers, runs in a subprocess per case.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

import agent_otel
from agent_otel import config, distro, instrumentation, interrupt, setup, spans
from agent_otel.instrumentation import AgentInstrumentor
from agent_otel.jsonl.processor import JsonlSpanProcessor

_OTEL_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_LOGS_EXPORTER",
    "OTEL_SERVICE_NAME",
    "OTEL_PYTHON_CONFIGURATOR",
)


def processors(provider: Any) -> list[Any]:
    return list(provider._active_span_processor._span_processors)


def otlp_exporters(provider: Any) -> list[Any]:
    return [p.span_exporter for p in processors(provider) if isinstance(p, BatchSpanProcessor)]


def jsonl_processors(provider: Any) -> list[JsonlSpanProcessor]:
    return [p for p in processors(provider) if isinstance(p, JsonlSpanProcessor)]


@pytest.fixture
def fresh_globals(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """No global tracer provider, no OTEL_* exporter settings, no library patching, no signal hooks.

    Yields the list of ``interrupt.install`` calls (the real one would hook SIGTERM/atexit in pytest).
    """
    for name in _OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    installs: list[bool] = []
    monkeypatch.setattr(interrupt, "install", lambda handle_signals=True: installs.append(handle_signals))
    monkeypatch.setattr(instrumentation, "LIBRARIES", ())
    instrumentor = AgentInstrumentor()
    assert not instrumentor.is_instrumented_by_opentelemetry
    config.reload_settings()
    yield installs
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    provider = trace._TRACER_PROVIDER
    if isinstance(provider, TracerProvider):
        provider.shutdown()
    spans.set_tracer_provider(None)


def test_creates_a_provider_with_the_jsonl_record_only(fresh_globals: list[bool], tmp_path: Path) -> None:
    provider = agent_otel.instrument()
    assert isinstance(provider, TracerProvider)
    assert trace.get_tracer_provider() is provider
    assert otlp_exporters(provider) == []
    (jsonl,) = jsonl_processors(provider)
    assert processors(provider) == [jsonl]
    assert fresh_globals and all(fresh_globals)  # the hooks are installed (idempotently)
    assert AgentInstrumentor().is_instrumented_by_opentelemetry

    # Spans of the manual API now reach the record: a start and an end record.
    with agent_otel.agent("bot"):
        pass
    assert jsonl.path is not None and jsonl.path.parent == Path(os.environ["AGENT_OTEL_JSONL_DIR"])
    lines = jsonl.path.read_text().splitlines()
    assert len(lines) == 2
    names = [json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"] for line in lines]
    assert names == ["invoke_agent bot", "invoke_agent bot"]


def test_endpoint_adds_batched_otlp_grpc(fresh_globals: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    provider = agent_otel.instrument()
    (exporter,) = otlp_exporters(provider)
    assert "grpc" in type(exporter).__module__
    assert len(jsonl_processors(provider)) == 1


@pytest.mark.parametrize(
    ("env", "transport"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "http"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, "http"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, "http"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://otlp.example.com/v1/traces"}, "http"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "http",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:1",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "HTTP/Protobuf",
            },
            "http",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "grpc"),
        ({"OTEL_TRACES_EXPORTER": "otlp_proto_http"}, "http"),
        (
            {"OTEL_TRACES_EXPORTER": "jsonl,otlp_proto_grpc", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "grpc",
        ),
    ],
)
def test_otlp_transport_choice(
    fresh_globals: list[bool], monkeypatch: pytest.MonkeyPatch, env: dict[str, str], transport: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    provider = agent_otel.instrument()
    (exporter,) = otlp_exporters(provider)
    assert f".proto.{transport}." in type(exporter).__module__


@pytest.mark.parametrize("exporters", ["none", "jsonl", "console"])
def test_traces_exporter_setting_overrides_a_configured_endpoint(
    fresh_globals: list[bool], monkeypatch: pytest.MonkeyPatch, exporters: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", exporters)
    provider = agent_otel.instrument()
    exporters_ = [type(e).__name__ for e in otlp_exporters(provider)]
    assert exporters_ == (["ConsoleSpanExporter"] if exporters == "console" else [])
    assert len(jsonl_processors(provider)) == 1


def test_unsupported_protocol_warns_and_uses_grpc(
    fresh_globals: list[bool], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with caplog.at_level(logging.WARNING, logger="agent_otel"):
        provider = agent_otel.instrument()
    (exporter,) = otlp_exporters(provider)
    assert "grpc" in type(exporter).__module__
    assert any("http/json" in r.getMessage() for r in caplog.records)


def test_otlp_failure_keeps_the_jsonl_record(
    fresh_globals: list[bool], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")

    def broken(environ: Any = None) -> Any:
        raise ImportError("grpc is not installed")

    monkeypatch.setattr(setup, "otlp_span_exporter", broken)
    with caplog.at_level(logging.WARNING, logger="agent_otel"):
        provider = agent_otel.instrument()
    assert otlp_exporters(provider) == []
    assert len(jsonl_processors(provider)) == 1
    assert any("OTLP export could not be set up" in r.getMessage() for r in caplog.records)


def test_uses_an_existing_global_sdk_provider(fresh_globals: list[bool]) -> None:
    exporter = InMemorySpanExporter()
    mine = TracerProvider()
    mine.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(mine)
    assert agent_otel.instrument() is mine
    assert len(jsonl_processors(mine)) == 1
    with agent_otel.tool("t"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["execute_tool t"]


def test_explicit_provider_is_used_and_the_global_left_alone(fresh_globals: list[bool]) -> None:
    exporter = InMemorySpanExporter()
    mine = TracerProvider()
    mine.add_span_processor(SimpleSpanProcessor(exporter))
    assert agent_otel.instrument(tracer_provider=mine) is mine
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert len(jsonl_processors(mine)) == 1
    with agent_otel.node("n"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["node n"]
    mine.shutdown()


def test_instrument_twice_changes_nothing(
    fresh_globals: list[bool], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    fake = types.ModuleType("agent_otel.instrumentation.fakelib")
    fake.instrument = lambda **kw: calls.append("instrument") or True  # type: ignore[attr-defined]
    fake.uninstrument = lambda: calls.append("uninstrument")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "agent_otel.instrumentation.fakelib", fake)
    monkeypatch.setattr(instrumentation, "LIBRARIES", ("fakelib",))
    with caplog.at_level(logging.WARNING):
        first = agent_otel.instrument()
        second = agent_otel.instrument()
    assert first is second
    assert len(jsonl_processors(first)) == 1
    assert len(processors(first)) == 1
    assert calls == ["instrument"]
    assert not caplog.records, caplog.text  # no "Attempting to instrument while already instrumented"
    AgentInstrumentor().uninstrument()
    assert calls == ["instrument", "uninstrument"]


def test_jsonl_can_be_switched_off_and_forced_on(
    fresh_globals: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_OTEL_JSONL", "false")
    provider = agent_otel.instrument()
    assert jsonl_processors(provider) == []
    # OTEL_TRACES_EXPORTER naming jsonl turns the record on, as under opentelemetry-instrument.
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jsonl")
    assert agent_otel.instrument() is provider
    assert len(jsonl_processors(provider)) == 1


def test_sdk_disabled_sets_nothing_up(fresh_globals: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    provider = agent_otel.instrument()
    assert not isinstance(provider, TracerProvider)
    assert fresh_globals == []
    assert not AgentInstrumentor().is_instrumented_by_opentelemetry
    with agent_otel.agent("bot") as h:
        assert not h.recording


# --- one place decides the record: ensure_record (instrument(), configurator, instrumentor) ------------


def _global_sdk_provider() -> TracerProvider:
    """What a third-party configurator (the SDK's own, a vendor's) leaves behind."""
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    return provider


def test_instrumentor_under_another_configurator_honours_jsonl_in_the_exporter_list(
    fresh_globals: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,jsonl")
    monkeypatch.setenv("AGENT_OTEL_JSONL", "false")
    provider = _global_sdk_provider()
    AgentInstrumentor().instrument()
    assert len(jsonl_processors(provider)) == 1
    assert fresh_globals == [True]


def test_instrumentor_does_nothing_when_the_sdk_is_disabled(
    fresh_globals: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    fake = types.ModuleType("agent_otel.instrumentation.fakelib")
    fake.instrument = lambda **kw: calls.append("instrument") or True  # type: ignore[attr-defined]
    fake.uninstrument = lambda: calls.append("uninstrument")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "agent_otel.instrumentation.fakelib", fake)
    monkeypatch.setattr(instrumentation, "LIBRARIES", ("fakelib",))
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    provider = _global_sdk_provider()
    AgentInstrumentor().instrument()
    assert jsonl_processors(provider) == []
    assert fresh_globals == []  # no exit hook, excepthook or SIGTERM handler
    assert calls == []


def test_ensure_record(fresh_globals: list[bool]) -> None:
    provider = TracerProvider()
    off = config.load_settings({"OTEL_SDK_DISABLED": "true"})
    assert setup.ensure_record(provider, off) is None
    assert jsonl_processors(provider) == [] and fresh_globals == []
    no_record = config.load_settings({"AGENT_OTEL_JSONL": "false", "AGENT_OTEL_HANDLE_SIGNALS": "false"})
    assert setup.ensure_record(provider, no_record) is None
    assert jsonl_processors(provider) == [] and fresh_globals == [False]
    settings = config.get_settings()
    processor = setup.ensure_record(provider, settings)
    assert processor is not None and jsonl_processors(provider) == [processor]
    assert setup.ensure_record(provider, settings) is processor  # idempotent
    assert jsonl_processors(provider) == [processor]
    provider.shutdown()


def test_ensure_record_never_raises(
    fresh_globals: list[bool], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("read-only file system")

    monkeypatch.setattr(JsonlSpanProcessor, "from_settings", broken)
    with caplog.at_level(logging.WARNING, logger="agent_otel"):
        assert setup.ensure_record(TracerProvider(), config.get_settings()) is None
    assert fresh_globals == [True]  # the hooks are installed all the same
    assert any("JSONL record could not be set up" in r.getMessage() for r in caplog.records)


def test_the_three_paths_share_one_record_setup() -> None:
    """instrument(), the configurator and the instrumentor all go through ensure_record."""
    import inspect

    for fn in (setup.instrument, distro.AgentOtelConfigurator._configure, AgentInstrumentor._instrument):
        source = inspect.getsource(fn)
        assert "ensure_record(" in source, fn
        assert "attach_jsonl(" not in source and "interrupt.install(" not in source, fn


def test_a_failing_record_never_reaches_the_caller(
    fresh_globals: list[bool], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("read-only file system")

    monkeypatch.setattr(JsonlSpanProcessor, "from_settings", broken)
    with caplog.at_level(logging.WARNING, logger="agent_otel"):
        provider = agent_otel.instrument()
    assert isinstance(provider, TracerProvider)
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    with agent_otel.agent("still works") as h:
        assert h.recording


def test_unwritable_directory_is_a_warning_not_a_crash(
    fresh_globals: list[bool], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("AGENT_OTEL_JSONL_DIR", str(blocker / "sub"))
    provider = agent_otel.instrument()
    with agent_otel.agent("bot") as h:
        assert h.recording
    assert len(jsonl_processors(provider)) == 1


def test_library_failures_are_contained(
    fresh_globals: list[bool], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def module(name: str, result: Any) -> types.ModuleType:
        m = types.ModuleType(f"agent_otel.instrumentation.{name}")

        def instrument(**kwargs: Any) -> bool:
            calls.append(f"{name}.instrument")
            if isinstance(result, Exception):
                raise result
            return bool(result)

        def uninstrument() -> None:
            calls.append(f"{name}.uninstrument")
            raise RuntimeError("undo failed")

        m.instrument = instrument  # type: ignore[attr-defined]
        m.uninstrument = uninstrument  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, m.__name__, m)
        return m

    module("broken", RuntimeError("patch failed"))
    module("missing", False)
    module("good", True)
    monkeypatch.setattr(instrumentation, "LIBRARIES", ("broken", "missing", "good"))
    with caplog.at_level(logging.WARNING, logger="agent_otel"):
        agent_otel.instrument()
        AgentInstrumentor().uninstrument()
    assert calls == ["broken.instrument", "missing.instrument", "good.instrument", "good.uninstrument"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("instrumenting broken failed" in m for m in messages)
    assert any("uninstrumenting good failed" in m for m in messages)
    assert not any("missing" in m for m in messages)


def test_otlp_requested_rules() -> None:
    assert not setup.otlp_requested({})
    assert setup.otlp_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317"})
    assert setup.otlp_requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"})
    assert setup.otlp_requested({"OTEL_TRACES_EXPORTER": "OTLP"})
    assert setup.otlp_requested({"OTEL_TRACES_EXPORTER": "jsonl, otlp_proto_http"})
    assert not setup.otlp_requested(
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}
    )
    assert setup.otlp_requested({"OTEL_TRACES_EXPORTER": " ", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"})


def test_service_name() -> None:
    from opentelemetry.sdk.resources import Resource

    assert setup.service_name(None) == "app"
    assert setup.service_name(Resource.create({"service.name": "svc"})) == "svc"


# --- distro / configurator -------------------------------------------------------------------------


def test_distro_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    distro.AgentOtelDistro().configure()
    assert os.environ["OTEL_TRACES_EXPORTER"] == "otlp"
    assert os.environ["OTEL_METRICS_EXPORTER"] == "console"  # the user's choice is kept
    assert os.environ["OTEL_PYTHON_CONFIGURATOR"] == "agent_otel"


def test_jsonl_exporter_name_is_a_harmless_exporter() -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    exporter = distro.JsonlExporterName()
    assert exporter.export([]) is SpanExportResult.SUCCESS
    exporter.shutdown()


@pytest.mark.parametrize(
    ("raw", "usable", "jsonl", "warns"),
    [
        ("otlp,jsonl", ["otlp"], True, False),
        ("jsonl", [], True, False),
        ("JSONL", [], True, False),
        ("otlp,bogus", ["otlp"], False, True),
        ("console, otlp_proto_http", ["console", "otlp_proto_http"], False, False),
        ("none", [], False, False),
        ("", [], False, False),
    ],
)
def test_usable_exporter_names(
    raw: str, usable: list[str], jsonl: bool, warns: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agent_otel"):
        assert distro.usable_exporter_names(raw) == (usable, jsonl)
    assert bool(caplog.records) is warns


_CONFIGURE = """
import atexit, json, logging, os, signal, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
from opentelemetry import trace
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from agent_otel import instrumentation, interrupt, spans
from agent_otel.distro import AgentOtelConfigurator
from agent_otel.jsonl.processor import JsonlSpanProcessor

exit_hooks = atexit._ncallbacks()
AgentOtelConfigurator().configure(auto_instrumentation_version="test")
if os.environ.get("RUN_INSTRUMENTOR"):  # as opentelemetry-instrument does next
    instrumentation.LIBRARIES = ()
    instrumentation.AgentInstrumentor().instrument()
provider = trace.get_tracer_provider()
out = {"provider": type(provider).__name__, "processors": []}
span_processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", ())
for p in span_processors:
    if isinstance(p, BatchSpanProcessor):
        out["processors"].append("otlp:" + type(p.span_exporter).__module__)
    else:
        out["processors"].append(type(p).__name__)
out["traces_exporter"] = os.environ.get("OTEL_TRACES_EXPORTER")
out["env"] = {k: v for k, v in os.environ.items() if k.startswith("OTEL_EXPORTER_OTLP") and "PROTOCOL" in k}
out["hooks"] = {
    "interrupt": interrupt._Registry.installed,
    "excepthook": sys.excepthook is not sys.__excepthook__,
    "sigterm": signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL,
    "atexit": atexit._ncallbacks() - exit_hooks,
}
h = spans.start_agent("configured")
h.end()
jsonl = [p for p in span_processors if isinstance(p, JsonlSpanProcessor)]
out["records"] = len(jsonl[0].path.read_text().splitlines()) if jsonl and jsonl[0].path else 0
print(json.dumps(out), flush=True)
sys.stderr.flush()
os._exit(0)  # skip exporting at exit (the OTLP endpoint is down on purpose)
"""


def run_configurator(tmp_path: Path, env: dict[str, str]) -> tuple[dict[str, Any], str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENT_OTEL_"))}
    base.update({"AGENT_OTEL_JSONL_DIR": str(tmp_path), "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    base.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CONFIGURE)],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]


def test_configurator_otlp_and_jsonl(tmp_path: Path) -> None:
    out, stderr = run_configurator(tmp_path, {"OTEL_TRACES_EXPORTER": "otlp,jsonl"})
    assert out["provider"] == "TracerProvider"
    assert sorted(out["processors"]) == sorted(
        ["otlp:opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "JsonlSpanProcessor"]
    )
    assert out["traces_exporter"] == "otlp,jsonl"  # restored for anything that reads it later
    assert out["records"] == 2
    assert warning_lines(stderr) == []


def test_configurator_jsonl_only_even_when_switched_off(tmp_path: Path) -> None:
    out, stderr = run_configurator(tmp_path, {"OTEL_TRACES_EXPORTER": "jsonl", "AGENT_OTEL_JSONL": "false"})
    assert out["provider"] == "TracerProvider"
    assert out["processors"] == ["JsonlSpanProcessor"]
    assert out["records"] == 2
    assert warning_lines(stderr) == []


def test_configurator_unknown_exporter(tmp_path: Path) -> None:
    out, stderr = run_configurator(tmp_path, {"OTEL_TRACES_EXPORTER": "otlp,bogus"})
    assert sorted(out["processors"]) == sorted(
        ["otlp:opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "JsonlSpanProcessor"]
    )
    assert out["records"] == 2
    (warning,) = warning_lines(stderr)
    assert "bogus" in warning and "OTEL_TRACES_EXPORTER" in warning


def test_configurator_bad_protocol(tmp_path: Path) -> None:
    out, stderr = run_configurator(
        tmp_path, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    )
    assert sorted(out["processors"]) == sorted(
        ["otlp:opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "JsonlSpanProcessor"]
    )
    assert out["records"] == 2
    (warning,) = warning_lines(stderr)
    assert "http/json" in warning
    # Warned about, not rewritten: the application and its child processes see what the user set.
    assert out["env"] == {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}


def test_configurator_guesses_http_for_port_4318_like_instrument(tmp_path: Path) -> None:
    out, stderr = run_configurator(
        tmp_path, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    )
    assert sorted(out["processors"]) == sorted(
        ["otlp:opentelemetry.exporter.otlp.proto.http.trace_exporter", "JsonlSpanProcessor"]
    )
    assert out["env"] == {}  # the transport was presented to the SDK only while it configured
    assert warning_lines(stderr) == []


def test_configurator_and_instrumentor_do_nothing_when_the_sdk_is_disabled(tmp_path: Path) -> None:
    out, stderr = run_configurator(
        tmp_path, {"OTEL_TRACES_EXPORTER": "otlp,jsonl", "OTEL_SDK_DISABLED": "true", "RUN_INSTRUMENTOR": "1"}
    )
    assert out["provider"] != "TracerProvider"
    assert out["processors"] == [] and out["records"] == 0
    assert out["hooks"] == {"interrupt": False, "excepthook": False, "sigterm": False, "atexit": 0}
    assert warning_lines(stderr) == []


def test_configurator_then_instrumentor_install_the_hooks_once(tmp_path: Path) -> None:
    out, _ = run_configurator(tmp_path, {"OTEL_TRACES_EXPORTER": "jsonl", "RUN_INSTRUMENTOR": "1"})
    assert out["processors"] == ["JsonlSpanProcessor"]
    assert out["hooks"]["interrupt"] and out["hooks"]["excepthook"] and out["hooks"]["sigterm"]


def test_configurator_bad_traces_and_general_protocol(tmp_path: Path) -> None:
    out, stderr = run_configurator(
        tmp_path,
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "carrier-pigeon",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            "OTEL_METRICS_EXPORTER": "otlp",
        },
    )
    assert "otlp:opentelemetry.exporter.otlp.proto.grpc.trace_exporter" in out["processors"]
    assert out["records"] == 2
    warnings = warning_lines(stderr)
    assert len(warnings) == 2 and "carrier-pigeon" in " ".join(warnings)


def test_configurator_bad_metrics_exporter_keeps_trace_export(tmp_path: Path) -> None:
    out, stderr = run_configurator(
        tmp_path, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "bogus_m"}
    )
    assert "otlp:opentelemetry.exporter.otlp.proto.grpc.trace_exporter" in out["processors"]
    assert "JsonlSpanProcessor" in out["processors"]
    (warning,) = warning_lines(stderr)
    assert "bogus_m" in warning and "OTEL_METRICS_EXPORTER" in warning


def test_configurator_with_nothing_set(tmp_path: Path) -> None:
    out, stderr = run_configurator(tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": ""})
    assert out["processors"] == ["JsonlSpanProcessor"]
    assert out["records"] == 2
    assert warning_lines(stderr) == []


# --- import cost -----------------------------------------------------------------------------------------

_LAZY_IMPORTS = """
import sys
from importlib.metadata import entry_points

import agent_otel.cli.main
import agent_otel.jsonl.reader

heavy = (
    "opentelemetry.sdk", "opentelemetry.instrumentation", "agent_otel.setup", "agent_otel.instrumentation"
)
loaded = sorted(m for m in sys.modules if m.startswith(heavy))
assert not loaded, loaded

import agent_otel
from agent_otel import AgentInstrumentor, agent, instrument
from agent_otel.instrumentation import AgentInstrumentor as real_instrumentor
from agent_otel.setup import instrument as real_instrument

assert instrument is real_instrument and AgentInstrumentor is real_instrumentor
assert set(agent_otel.__all__) <= set(dir(agent_otel))
assert all(getattr(agent_otel, name) is not None for name in agent_otel.__all__)
try:
    agent_otel.no_such_name
except AttributeError:
    pass
else:
    raise AssertionError("no AttributeError")
(ep,) = [ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name == "agent_otel"]
assert ep.load() is AgentInstrumentor
print("ok")
"""


def test_import_is_lazy_and_the_reader_and_cli_never_load_the_sdk() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _LAZY_IMPORTS], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
