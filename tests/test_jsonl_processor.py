"""The crash-safe span processor (jsonl/processor.py) on a real SDK pipeline: start and end records,
threads, rotation, fsync settings, bad settings, interruption, fork, and failures inside it."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent_otel import config, spans
from agent_otel.jsonl.processor import JsonlSpanProcessor
from agent_otel.jsonl.writer import RecordWriter
from crash_apps.records import STATUS_ERROR, file_mode, read_record

SERVICE = "proc-test"
MonkeyPatch = pytest.MonkeyPatch
LogCapture = pytest.LogCaptureFixture


@pytest.fixture
def record_dir() -> Path:
    return Path(os.environ["AGENT_OTEL_JSONL_DIR"])  # a fresh temp dir per test (conftest)


def make_provider(processor: JsonlSpanProcessor) -> tuple[TracerProvider, InMemorySpanExporter]:
    """A provider with the JSONL processor and, beside it, an in-memory exporter (another processor)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}), shutdown_on_exit=False)
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def pipeline(record_dir: Path) -> Iterator[tuple[TracerProvider, JsonlSpanProcessor, InMemorySpanExporter]]:
    processor = JsonlSpanProcessor.from_settings(config.get_settings(), SERVICE)
    provider, exporter = make_provider(processor)
    yield provider, processor, exporter
    provider.shutdown()


def test_start_and_end_record_per_span(
    pipeline: tuple[TracerProvider, JsonlSpanProcessor, InMemorySpanExporter], record_dir: Path
) -> None:
    provider, processor, _ = pipeline
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("outer") as outer:
        outer.set_attribute("late", "yes")
        with tracer.start_as_current_span("inner", attributes={"k": 1}):
            mid = read_record(record_dir)
            assert [(r.name, r.is_start) for r in mid.recs] == [("outer", True), ("inner", True)]
    record = read_record(record_dir)
    record.assert_no_duplicates()
    assert [(r.name, r.is_start) for r in record.recs] == [
        ("outer", True),
        ("inner", True),
        ("inner", False),
        ("outer", False),
    ]
    outer_end = record.by_name("outer")[1]
    assert outer_end.attributes["late"] == "yes"
    assert processor.path is not None and processor.path.parent == record_dir
    assert SERVICE in processor.path.name
    assert processor.open_spans() == []


def test_eight_threads_five_hundred_spans_each(
    pipeline: tuple[TracerProvider, JsonlSpanProcessor, InMemorySpanExporter], record_dir: Path
) -> None:
    provider, _, exporter = pipeline
    tracer = provider.get_tracer("t")
    barrier = threading.Barrier(8)

    def work(t: int) -> None:
        barrier.wait()
        for i in range(500):
            with tracer.start_as_current_span(f"t{t}-{i}", attributes={"payload": "x" * (i % 700)}):
                pass

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    record = read_record(record_dir)  # every line parses as TracesData
    record.assert_no_duplicates()
    assert len(record.recs) == 8 * 500 * 2
    assert {r.name for r in record.recs} == {f"t{t}-{i}" for t in range(8) for i in range(500)}
    assert len(exporter.get_finished_spans()) == 8 * 500


def test_rotation_keeps_every_span(record_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_OTEL_JSONL_MAX_BYTES", "8000")
    processor = JsonlSpanProcessor.from_settings(config.reload_settings(), SERVICE)
    provider, _ = make_provider(processor)
    tracer = provider.get_tracer("t")
    for i in range(200):
        with tracer.start_as_current_span(f"s{i}"):
            pass
    provider.shutdown()
    files = sorted(record_dir.glob("*.jsonl"))
    assert len(files) > 5
    record = read_record(files)
    record.assert_no_duplicates()
    for span_id in record.span_ids():
        assert len(record.starts(span_id)) == 1 and len(record.ends(span_id)) == 1
    assert {r.name for r in record.recs} == {f"s{i}" for i in range(200)}
    assert all(file_mode(f) == 0o600 for f in files)


@pytest.mark.parametrize("mode", ["always", "interval", "never"])
def test_fsync_settings(record_dir: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("AGENT_OTEL_JSONL_FSYNC", mode)
    monkeypatch.setenv("AGENT_OTEL_JSONL_FSYNC_INTERVAL_MS", "5")
    processor = JsonlSpanProcessor.from_settings(config.reload_settings(), SERVICE)
    provider, _ = make_provider(processor)
    for i in range(20):
        with provider.get_tracer("t").start_as_current_span(f"s{i}"):
            pass
    assert provider.force_flush()
    provider.shutdown()
    assert len(read_record(record_dir).recs) == 40


def test_explicit_file_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "sub" / "all.jsonl"
    monkeypatch.setenv("AGENT_OTEL_JSONL_FILE", str(target))
    processor = JsonlSpanProcessor.from_settings(config.reload_settings(), SERVICE)
    provider, _ = make_provider(processor)
    with provider.get_tracer("t").start_as_current_span("s"):
        pass
    provider.shutdown()
    assert processor.path == target
    assert len(read_record(target).recs) == 2


# ------------------------------------------------------------------------------------ bad settings


def test_record_dir_is_a_file(tmp_path: Path, monkeypatch: MonkeyPatch, caplog: LogCapture) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("AGENT_OTEL_JSONL_DIR", str(blocker))
    processor = JsonlSpanProcessor.from_settings(config.reload_settings(), SERVICE)
    provider, exporter = make_provider(processor)
    with caplog.at_level(logging.WARNING):
        for i in range(10):
            with provider.get_tracer("t").start_as_current_span(f"s{i}"):
                pass
    provider.shutdown()
    assert len(exporter.get_finished_spans()) == 10  # the other processors still get every span
    assert sum("cannot write the JSONL record" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_record_dir_not_writable(tmp_path: Path, monkeypatch: MonkeyPatch, caplog: LogCapture) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    monkeypatch.setenv("AGENT_OTEL_JSONL_DIR", str(ro))
    processor = JsonlSpanProcessor.from_settings(config.reload_settings(), SERVICE)
    provider, exporter = make_provider(processor)
    with caplog.at_level(logging.WARNING):
        with provider.get_tracer("t").start_as_current_span("s"):
            pass
    provider.shutdown()
    assert len(exporter.get_finished_spans()) == 1
    assert "cannot write the JSONL record" in caplog.text


def test_record_dir_under_proc_is_unusable(monkeypatch: MonkeyPatch, caplog: LogCapture) -> None:
    """Even root cannot create a directory under /proc/self."""
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc")
    monkeypatch.setenv("AGENT_OTEL_JSONL_DIR", "/proc/self/agent-otel-records")
    processor = JsonlSpanProcessor.from_settings(config.reload_settings(), SERVICE)
    provider, exporter = make_provider(processor)
    with caplog.at_level(logging.WARNING):
        with provider.get_tracer("t").start_as_current_span("s"):
            pass
    provider.shutdown()
    assert len(exporter.get_finished_spans()) == 1
    assert "cannot write the JSONL record" in caplog.text


@pytest.mark.parametrize(
    ("name", "raw", "field", "default"),
    [
        ("AGENT_OTEL_JSONL_MAX_BYTES", "abc", "jsonl_max_bytes", 100 * 1024 * 1024),
        ("AGENT_OTEL_JSONL_MAX_BYTES", "-5", "jsonl_max_bytes", 100 * 1024 * 1024),
        ("AGENT_OTEL_JSONL_FSYNC", "sometimes", "jsonl_fsync", "interval"),
        ("AGENT_OTEL_JSONL_FSYNC_INTERVAL_MS", "0", "jsonl_fsync_interval_ms", 1000),
    ],
)
def test_malformed_settings_warn_and_default(
    record_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    name: str,
    raw: str,
    field: str,
    default: object,
) -> None:
    monkeypatch.setenv(name, raw)
    with caplog.at_level(logging.WARNING):
        settings = config.reload_settings()
    assert getattr(settings, field) == default
    assert name in caplog.text and raw in caplog.text
    processor = JsonlSpanProcessor.from_settings(settings, SERVICE)
    provider, exporter = make_provider(processor)
    with provider.get_tracer("t").start_as_current_span("s"):
        pass
    provider.shutdown()
    assert len(exporter.get_finished_spans()) == 1
    assert len(read_record(record_dir).recs) == 2


class ExplodingWriter(RecordWriter):
    def write(self, line: bytes) -> None:
        raise RuntimeError("disk on fire")


def test_a_failing_record_never_reaches_the_application(tmp_path: Path, caplog: LogCapture) -> None:
    processor = JsonlSpanProcessor(ExplodingWriter(directory=tmp_path))
    provider, exporter = make_provider(processor)
    with caplog.at_level(logging.WARNING, logger="agent_otel.jsonl.processor"):
        for i in range(5):
            with provider.get_tracer("t").start_as_current_span(f"s{i}"):
                pass
    provider.shutdown()
    assert len(exporter.get_finished_spans()) == 5
    assert caplog.text.count("could not record span") == 1


# ------------------------------------------------------------------------------------ interruption


def test_end_open_spans_as_interrupted(
    pipeline: tuple[TracerProvider, JsonlSpanProcessor, InMemorySpanExporter], record_dir: Path
) -> None:
    provider, processor, exporter = pipeline
    tracer = provider.get_tracer("t")
    done = tracer.start_span("done")
    done.end()
    agent = tracer.start_span("agent")
    tool = tracer.start_span("tool", context=trace.set_span_in_context(agent))
    assert {s.name for s in processor.open_spans()} == {"agent", "tool"}
    assert processor.end_open_spans("SIGTERM") == 2
    assert processor.open_spans() == []
    record = read_record(record_dir)
    record.assert_no_duplicates()
    ends = [r for r in record.recs if not r.is_start]
    assert [r.name for r in ends] == ["done", "tool", "agent"]  # innermost first
    for rec in ends[1:]:
        assert rec.status_code == STATUS_ERROR
        assert rec.attributes["error.type"] == "SIGTERM"
        assert rec.attributes["agent_otel.interrupted"] is True
    assert record.end_of(record.by_name("done")[0].span_id).status_code != STATUS_ERROR
    # The other processors saw the interrupted ends too (they go on to OTLP).
    assert {s.name for s in exporter.get_finished_spans()} == {"done", "tool", "agent"}
    # Ending again later (the with-block unwinding) adds nothing.
    tool.end()
    agent.end()
    assert len(read_record(record_dir).recs) == 6


def test_span_factory_spans_are_recorded(record_dir: Path) -> None:
    processor = JsonlSpanProcessor.from_settings(config.get_settings(), SERVICE)
    provider, _ = make_provider(processor)
    spans.set_tracer_provider(provider)
    try:
        run = spans.start_agent("a")
        with run.activate():
            tool = spans.start_tool("search", call_id="c1")
            tool.set_tool_result({"hits": 3})
            tool.end()
        run.end()
    finally:
        spans.set_tracer_provider(None)
        provider.shutdown()
    record = read_record(record_dir)
    record.assert_no_duplicates()
    (tool_end,) = [r for r in record.recs if r.name == "execute_tool search" and not r.is_start]
    assert tool_end.attributes["agent_otel.span.category"] == "tool"
    assert tool_end.attributes["gen_ai.tool.call.id"] == "c1"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_does_not_record_the_parents_spans(record_dir: Path) -> None:
    processor = JsonlSpanProcessor.from_settings(config.get_settings(), SERVICE)
    provider, _ = make_provider(processor)
    tracer = provider.get_tracer("t")
    parent_span = tracer.start_span("parent-open")
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            child = tracer.start_span("child", context=trace.set_span_in_context(parent_span))
            child.end()
            parent_span.end()  # the child's copy of the parent's span: not the child's to record
            processor.end_open_spans("shutdown")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    parent_span.end()
    provider.shutdown()
    files = {f: read_record(f) for f in record_dir.glob("*.jsonl")}
    assert len(files) == 2
    (child_file,) = [f for f in files if f"-{pid}-" in f.name]
    child_record = files.pop(child_file)
    (parent_record,) = files.values()
    assert {r.name for r in child_record.recs} == {"child"}
    parent_record.assert_no_duplicates()
    assert [(r.name, r.is_start) for r in parent_record.recs] == [
        ("parent-open", True),
        ("parent-open", False),
    ]
    assert parent_record.recs[1].status_code != STATUS_ERROR
