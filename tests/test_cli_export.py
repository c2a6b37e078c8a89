"""``agent-otel export`` against real OTLP receivers started in the test (gRPC and HTTP/protobuf)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from agent_otel.cli import export
from agent_otel.cli.main import main
from agent_otel.jsonl import reader
from cli_fixtures import killed_run, write_real_run

FAST = ["--retry-delay", "0.01", "--no-progress"]


# ------------------------------------------------------------------------------------------ receivers


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, owner: GrpcReceiver) -> None:
        self.owner = owner

    def Export(self, request: Any, context: Any) -> Any:
        o = self.owner
        with o.lock:
            o.calls += 1
            fail = o.fail_remaining > 0
            if fail:
                o.fail_remaining -= 1
        if fail:
            context.abort(o.fail_code, "receiver warming up")
        with o.lock:
            o.requests.append(request)
            o.metadata.append(dict(context.invocation_metadata()))
        return trace_service_pb2.ExportTraceServiceResponse()


class GrpcReceiver:
    """An OTLP/gRPC trace receiver on 127.0.0.1 (ephemeral port) that keeps what it receives."""

    def __init__(self, fail_first: int = 0, fail_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.fail_remaining = fail_first
        self.fail_code = fail_code
        self.requests: list[Any] = []
        self.metadata: list[dict[str, str]] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Servicer(self), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(0)


class HttpReceiver:
    """An OTLP/HTTP protobuf receiver on 127.0.0.1 that decodes ExportTraceServiceRequest bodies."""

    def __init__(self, fail_first: int = 0, fail_status: int = 503) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.fail_remaining = fail_first
        self.fail_status = fail_status
        self.requests: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with owner.lock:
                    owner.calls += 1
                    owner.paths.append(self.path)
                    fail = owner.fail_remaining > 0
                    if fail:
                        owner.fail_remaining -= 1
                if fail or self.path != "/v1/traces":
                    status = owner.fail_status if fail else 404
                    self.send_response(status)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                with owner.lock:
                    owner.requests.append(req)
                    owner.headers.append({k.lower(): v for k, v in self.headers.items()})
                data = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def grpc_receiver() -> Iterator[GrpcReceiver]:
    r = GrpcReceiver()
    yield r
    r.stop()


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    r = HttpReceiver()
    yield r
    r.stop()


def received(requests: list[Any]) -> list[tuple[dict[str, Any], Any]]:
    """(resource attributes, span) for every span received."""
    out = []
    for req in requests:
        for rs in req.resource_spans:
            res = {kv.key: json_format.MessageToDict(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    out.append((res, sp))
    return out


def attrs_of(span: Any) -> dict[str, Any]:
    return {kv.key: json_format.MessageToDict(kv.value) for kv in span.attributes}


# ------------------------------------------------------------------------------------------- records


@pytest.fixture(scope="module")
def source_records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("export-src")
    return {"real": write_real_run(base / "real"), "killed": killed_run(base / "killed")}


@pytest.fixture
def record_dir(tmp_path: Path, source_records: dict[str, Path]) -> Path:
    d = tmp_path / "records"
    d.mkdir()
    for p in source_records.values():
        shutil.copy(p, d / p.name)
    return d


def expected_ids(path: Path) -> set[tuple[str, str]]:
    return {s.key for s in reader.read(path).spans}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_export_complete_and_recovered_spans(
    protocol: str,
    record_dir: Path,
    grpc_receiver: GrpcReceiver,
    http_receiver: HttpReceiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recv = grpc_receiver if protocol == "grpc" else http_receiver
    rc = main(["export", str(record_dir), "--endpoint", recv.endpoint, "--protocol", protocol, *FAST])
    out, err = capsys.readouterr()
    assert rc == 0, err
    got = received(recv.requests)
    ids = {(sp.trace_id.hex(), sp.span_id.hex()) for _, sp in got}
    assert len(got) == len(ids) == len(expected_ids(record_dir))
    assert ids == expected_ids(record_dir)
    by_name = {sp.name: (res, sp) for res, sp in got}
    assert {"invoke_agent weather-bot", "chat gpt-4o-mini", "execute_tool book_flight"} <= set(by_name)
    for res, sp in got:
        a = attrs_of(sp)
        assert "agent_otel.start_record" not in a
        assert sp.end_time_unix_nano >= sp.start_time_unix_nano > 0
        assert res["service.name"]["stringValue"] in ("fixture-agent", "killed-agent")
    recovered = [sp for _, sp in got if "agent_otel.recovered" in attrs_of(sp)]
    assert sorted(sp.name for sp in recovered) == ["execute_tool slow_search", "invoke_agent researcher"]
    for sp in recovered:
        a = attrs_of(sp)
        assert a["error.type"] == {"stringValue": "agent_otel.unfinished"}
        assert a["agent_otel.recovered"] == {"boolValue": True}
        assert sp.status.code == trace_pb2.Status.STATUS_CODE_ERROR
        assert "never ended" in sp.status.message
    _, llm = by_name["chat gpt-4o-mini"]
    a = attrs_of(llm)
    assert a["gen_ai.usage.input_tokens"]["intValue"] in {"100", "101", "102", "130", "131"}
    assert llm.kind == trace_pb2.Span.SPAN_KIND_CLIENT
    _, agent = by_name["invoke_agent researcher"]
    _, tool = by_name["execute_tool slow_search"]
    assert tool.parent_span_id == agent.span_id
    assert agent.end_time_unix_nano == tool.start_time_unix_nano  # last record of the killed run
    _, failing = by_name["execute_tool get_stock_price"]
    assert [e.name for e in failing.events] == ["exception"]
    assert f"exported {len(ids)} spans (2 recovered" in out
    if protocol == "http/protobuf":
        assert set(http_receiver.paths) == {"/v1/traces"}
        assert http_receiver.headers[0]["content-type"] == "application/x-protobuf"


def test_rerun_sends_nothing_twice_and_completes_recovered_spans(
    record_dir: Path, grpc_receiver: GrpcReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["export", str(record_dir), "--endpoint", grpc_receiver.endpoint, *FAST]
    assert main(args) == 0
    first = len(received(grpc_receiver.requests))
    state = json.loads((record_dir / export.STATE_FILE_NAME).read_text())
    sent = state["endpoints"][f"grpc {grpc_receiver.endpoint}"]
    assert len(sent) == first and sorted(sent.values()).count("r") == 2
    assert oct((record_dir / export.STATE_FILE_NAME).stat().st_mode & 0o777) == "0o600"
    capsys.readouterr()

    assert main(args) == 0
    out, _ = capsys.readouterr()
    assert len(received(grpc_receiver.requests)) == first
    assert "nothing to send" in out and f"{first} spans already sent" in out

    # the killed process's spans get their end records after all (e.g. the file was copied mid-run)
    killed = next(p for p in record_dir.glob("*killed*.jsonl"))
    ends = []
    for span in reader.read(killed).unfinished:
        otlp = dict(span.otlp)
        otlp["attributes"] = [kv for kv in otlp["attributes"] if kv["key"] != "agent_otel.start_record"]
        otlp["endTimeUnixNano"] = str(span.start_time_unix_nano + 1_000_000)
        otlp["status"] = {"code": 1}
        doc = {
            "resourceSpans": [
                {"resource": span.otlp_resource, "scopeSpans": [{"scope": span.otlp_scope, "spans": [otlp]}]}
            ]
        }
        ends.append(json.dumps(doc) + "\n")
    with killed.open("a") as fh:
        fh.writelines(ends)
    assert main(args) == 0
    out, _ = capsys.readouterr()
    new = received(grpc_receiver.requests)[first:]
    assert sorted(sp.name for _, sp in new) == ["execute_tool slow_search", "invoke_agent researcher"]
    assert all("agent_otel.recovered" not in attrs_of(sp) for _, sp in new)
    assert all(sp.status.code == trace_pb2.Status.STATUS_CODE_OK for _, sp in new)
    assert "2 spans sent earlier as recovered now sent complete" in out
    assert main(args) == 0
    assert len(received(grpc_receiver.requests)) == first + 2

    # another endpoint has its own state
    other = GrpcReceiver()
    try:
        assert main(["export", str(record_dir), "--endpoint", other.endpoint, *FAST]) == 0
        assert len(received(other.requests)) == first
    finally:
        other.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_endpoint_that_fails_then_recovers(
    protocol: str, record_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recv: GrpcReceiver | HttpReceiver = (
        GrpcReceiver(fail_first=2) if protocol == "grpc" else HttpReceiver(fail_first=2, fail_status=503)
    )
    try:
        rc = main(["export", str(record_dir), "--endpoint", recv.endpoint, "--protocol", protocol, *FAST])
        out, err = capsys.readouterr()
        assert rc == 0, err
        assert recv.calls == len(recv.requests) + 2
        assert len(received(recv.requests)) == len(expected_ids(record_dir))
        assert "retry 1/5" in out + err and "retry 2/5" in out + err
        assert ("UNAVAILABLE" if protocol == "grpc" else "HTTP 503") in err
    finally:
        recv.stop()


def test_retries_exhausted_is_a_clear_error_and_nothing_is_marked(
    record_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recv = HttpReceiver(fail_first=100, fail_status=503)
    try:
        args = ["--endpoint", recv.endpoint, "--protocol", "http/protobuf", "--retries", "2", *FAST]
        rc = main(["export", str(record_dir), *args])
        _, err = capsys.readouterr()
    finally:
        recv.stop()
    assert rc == 1 and recv.calls == 3
    assert "export to" in err and "HTTP 503" in err and "after 2 retries" in err
    assert "0 of" in err and "re-run to send them" in err
    assert not (record_dir / export.STATE_FILE_NAME).exists()


def test_non_retryable_error_fails_at_once(record_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recv = GrpcReceiver(fail_first=100, fail_code=grpc.StatusCode.INVALID_ARGUMENT)
    try:
        rc = main(["export", str(record_dir), "--endpoint", recv.endpoint, *FAST])
    finally:
        recv.stop()
    _, err = capsys.readouterr()
    assert rc == 1 and recv.calls == 1
    assert "INVALID_ARGUMENT" in err


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_down_endpoint(protocol: str, record_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    rc = main(
        [
            "export",
            str(record_dir),
            "--endpoint",
            f"http://127.0.0.1:{port}",
            "--protocol",
            protocol,
            "--retries",
            "1",
            "--timeout",
            "3",
            *FAST,
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 1
    assert f"export to http://127.0.0.1:{port}" in err and "is the endpoint up?" in err
    if protocol == "http/protobuf":
        assert "connection refused" in err
    else:
        assert "UNAVAILABLE" in err
    assert "exported" not in out
    assert not (record_dir / export.STATE_FILE_NAME).exists()


def test_batches_respect_span_and_byte_limits(record_dir: Path, grpc_receiver: GrpcReceiver) -> None:
    total = len(expected_ids(record_dir))
    assert (
        main(["export", str(record_dir), "--endpoint", grpc_receiver.endpoint, "--batch-size", "4", *FAST])
        == 0
    )
    sizes = [len(received([r])) for r in grpc_receiver.requests]
    assert sum(sizes) == total and max(sizes) <= 4 and len(sizes) == -(-total // 4)

    grpc_receiver.requests.clear()
    args = ["export", str(record_dir), "--endpoint", grpc_receiver.endpoint, "--max-bytes", "5000", "--force"]
    assert main([*args, *FAST]) == 0
    assert sum(len(received([r])) for r in grpc_receiver.requests) == total
    assert len(grpc_receiver.requests) > 1
    assert all(r.ByteSize() <= 5000 or len(received([r])) == 1 for r in grpc_receiver.requests)


def test_environment_variables_and_headers(
    record_dir: Path, http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{http_receiver.endpoint}/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s%20ecret,x-tenant=acme")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    assert main(["export", str(record_dir), "--no-state", *FAST]) == 0
    assert http_receiver.requests
    h = http_receiver.headers[0]
    assert h["x-api-key"] == "s ecret" and h["x-tenant"] == "acme" and h["content-encoding"] == "gzip"
    assert not (record_dir / export.STATE_FILE_NAME).exists()


def test_grpc_metadata_from_flags(record_dir: Path, grpc_receiver: GrpcReceiver) -> None:
    rc = main(["export", str(record_dir), "--endpoint", grpc_receiver.endpoint, "-H", "X-Token=a=b", *FAST])
    assert rc == 0
    assert grpc_receiver.metadata[0]["x-token"] == "a=b"


def test_spans_of_running_processes_are_deferred(
    tmp_path: Path,
    source_records: dict[str, Path],
    grpc_receiver: GrpcReceiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    d = tmp_path / "live"
    d.mkdir()
    # a record file named as if this (running) test process wrote it
    shutil.copy(source_records["killed"], d / f"agent-otel-live-20260101T000000-{os.getpid()}-1.jsonl")
    args = ["export", str(d), "--endpoint", grpc_receiver.endpoint, *FAST]
    assert main(args) == 0
    out, _ = capsys.readouterr()
    assert [sp.name for _, sp in received(grpc_receiver.requests)] == ["chat gpt-4o"]
    assert f"deferred 2 spans still open in running process {os.getpid()}" in out
    assert main([*args, "--include-in-flight"]) == 0
    names = sorted(sp.name for _, sp in received(grpc_receiver.requests))
    assert names == ["chat gpt-4o", "execute_tool slow_search", "invoke_agent researcher"]


def test_dry_run_sends_nothing(record_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    assert main(["export", str(record_dir), "--endpoint", f"http://127.0.0.1:{port}", "--dry-run"]) == 0
    out, _ = capsys.readouterr()
    assert f"would send {len(expected_ids(record_dir))} spans (2 recovered) in 1 request" in out


def test_unreadable_state_file_is_an_error(record_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (record_dir / export.STATE_FILE_NAME).write_text("{not json")
    assert main(["export", str(record_dir), "--dry-run"]) == 1
    assert "state file" in capsys.readouterr().err


def test_missing_path_and_bad_endpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "nope"), "--dry-run"]) == 1
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--endpoint", "ftp://x", "--dry-run"]) == 2
    assert "invalid endpoint" in capsys.readouterr().err


def _ns(**kw: Any) -> Any:
    import argparse

    base = {"protocol": None, "endpoint": None, "header": None, "timeout": None, "compression": None}
    base.update(kw)
    return argparse.Namespace(**base)


def test_resolve_config() -> None:
    r = export.resolve_config
    assert r(_ns(), {}).key == "grpc http://localhost:4317"
    assert r(_ns(endpoint="http://h:4318"), {}).url == "http://h:4318/v1/traces"
    assert r(_ns(endpoint="http://h:4318"), {}).protocol == "http/protobuf"
    assert r(_ns(endpoint="http://h:9000/custom"), {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}).url == (
        "http://h:9000/custom"
    )
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otlp.example.com/base",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    assert r(_ns(), env).url == "https://otlp.example.com/base/v1/traces"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://ignored:4317",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "7",
    }
    cfg = r(_ns(), env)
    assert (cfg.protocol, cfg.url, cfg.timeout) == ("grpc", "http://c:4317", 2.5)
    assert r(_ns(), {"OTEL_EXPORTER_OTLP_TIMEOUT": "7"}).timeout == 7.0
    assert r(_ns(endpoint="localhost:4317"), {}).insecure is True
    with pytest.raises(export.ConfigError, match="http/json"):
        r(_ns(protocol="http/json"), {})
    # the protocol variables are case-insensitive, as everywhere in agent-otel (config.otlp_protocol)
    assert r(_ns(), {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "HTTP/Protobuf"}).protocol == "http/protobuf"
    assert r(_ns(endpoint="h:4318/v1/traces"), {}).url == "http://h:4318/v1/traces"
    with pytest.raises(export.ConfigError, match="invalid endpoint 'http://h:99999'"):
        r(_ns(endpoint="http://h:99999"), {})
    with pytest.raises(export.ConfigError, match="invalid endpoint"):
        r(_ns(endpoint="http://h:port"), {})
    with pytest.raises(export.ConfigError, match="key=value"):
        export.parse_headers("novalue")


def test_send_with_retry_backoff_and_retry_after() -> None:
    waits: list[float] = []
    attempts = iter(
        [export.ExportError("x", retryable=True), export.ExportError("y", retryable=True, retry_after=0.5)]
    )

    def send() -> export.SendResult:
        exc = next(attempts, None)
        if exc:
            raise exc
        return export.SendResult()

    export.send_with_retry(send, retries=3, delay=1.0, sleep=waits.append)
    assert 0.8 <= waits[0] <= 1.2 and waits[1] == 0.5


def test_proto_conversion_matches_protobuf_json_mapping(source_records: dict[str, Path]) -> None:
    """Each end record converted by export equals the protobuf JSON parse of its line (ids as base64)."""

    def b64(hex_id: str) -> str:
        return base64.b64encode(bytes.fromhex(hex_id)).decode()

    for line in source_records["real"].read_bytes().splitlines():
        doc = json.loads(line)
        span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        if "endTimeUnixNano" not in span:
            continue
        mine = trace_pb2.Span()
        export.span_to_proto(span, mine)
        for k in ("traceId", "spanId", "parentSpanId"):
            if k in span:
                span[k] = b64(span[k])
        ref = json_format.ParseDict(doc, trace_pb2.TracesData())
        assert mine == ref.resource_spans[0].scope_spans[0].spans[0]


def test_progress_on_a_terminal(record_dir: Path, grpc_receiver: GrpcReceiver) -> None:
    import io

    class TTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    from agent_otel.cli.main import build_parser

    args = build_parser().parse_args(["export", str(record_dir), "--endpoint", grpc_receiver.endpoint])
    out, err = io.StringIO(), TTY()
    assert export.run(args, out=out, err=err) == 0
    total = len(expected_ids(record_dir))
    assert f"] {total}/{total} spans  1 request" in err.getvalue() and "\r" in err.getvalue()
    assert f"exported {total} spans" in out.getvalue()


def test_an_absurd_process_pid_is_not_a_running_process(
    source_records: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A process.pid beyond the platform's pid_t made os.kill raise OverflowError."""
    lines = []
    for line in source_records["killed"].read_bytes().splitlines():
        doc = json.loads(line)
        attrs = doc["resourceSpans"][0]["resource"]["attributes"]
        attrs[:] = [kv for kv in attrs if kv["key"] not in ("process.pid", "host.name")]
        attrs.append({"key": "process.pid", "value": {"intValue": str(2**62)}})
        lines.append(json.dumps(doc) + "\n")
    f = tmp_path / "agent-otel-x-20260101T000000-99999999999999999999-1.jsonl"
    f.write_text("".join(lines))
    assert export.writer_running(reader.read(f).unfinished[0]) is None
    assert main(["export", str(f), "--dry-run", "--no-state"]) == 0
    assert "would send 3 spans (2 recovered)" in capsys.readouterr().out
