"""``agent-otel export``: replay a record to an OTLP endpoint (gRPC or HTTP/protobuf).

Complete spans are sent as they are; spans that never ended (their process was killed) are sent as
*recovered* spans (see :func:`agent_otel.jsonl.reader.recover`). Requests are batched (span count and
byte size), retried with exponential backoff on retryable failures, and a state file remembers what
was sent to which endpoint so that a re-run sends only what is new.

The OTLP/JSON records are converted to ``opentelemetry.proto`` messages field by field (OTLP/JSON ids
are hex, which the generic protobuf JSON mapping would read as base64).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import json
import os
import random
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from agent_otel.attributes import START_RECORD
from agent_otel.cli import _common as c
from agent_otel.config import guess_otlp_protocol
from agent_otel.jsonl import reader
from agent_otel.jsonl.reader import Span

DESCRIPTION = """\
Replay a record to any OTLP endpoint - an OpenTelemetry Collector, Jaeger, Grafana Tempo - so a run
that was never exported (no network, a dead collector, a killed process) shows up there whole.
PATH is a record file or a directory of *.jsonl files; without it, the record agent-otel writes
($AGENT_OTEL_JSONL_FILE when set, else $AGENT_OTEL_JSONL_DIR, default ./agent-otel-traces) is sent.

  * complete spans are sent as they were recorded (the agent_otel.start_record marker never leaves);
  * spans that never ended because their process was killed are sent as recovered spans: status ERROR,
    error.type "agent_otel.unfinished", agent_otel.recovered=true, end time = the last record of their
    trace in their file;
  * spans still open in a process that is running now (its pid, from the record file name or the
    process.pid resource attribute, is alive on this host) are deferred, not sent as failures: re-run
    later, or pass --include-in-flight.

Requests hold at most --batch-size spans and --max-bytes bytes. Retryable failures (connection refused,
timeouts, gRPC UNAVAILABLE/RESOURCE_EXHAUSTED/DEADLINE_EXCEEDED/ABORTED, HTTP 429/502/503/504) are
retried with exponential backoff (--retries, --retry-delay; HTTP Retry-After is honoured). Others fail
at once. A state file (default PATH/.agent-otel-export-state.json, or next to PATH when it is a file)
records which spans reached which endpoint: a re-run sends only new spans, and a span first sent as
recovered is sent again, complete, if its end record appears later (both versions, same span id, then
exist in the backend). The state is written after successful requests only: if the endpoint is down,
nothing is marked as sent.

Settings not given as flags come from the standard variables, signal-specific first:
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4317),
..._PROTOCOL (grpc or http/protobuf; else guessed: port 4318 or a /v1/traces path means HTTP),
..._HEADERS (key=value,key2=value2, URL-encoded), ..._TIMEOUT (seconds, as the OpenTelemetry Python
exporters read it; values of 1000 or more are taken as milliseconds), ..._COMPRESSION (gzip|none),
..._CERTIFICATE (CA file for https), OTEL_EXPORTER_OTLP_INSECURE (gRPC: plaintext).
For HTTP, /v1/traces is appended to an --endpoint or OTEL_EXPORTER_OTLP_ENDPOINT without a path;
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as is."""

EPILOG = """\
examples:
  agent-otel export agent-otel-traces/ --endpoint http://localhost:4317
  agent-otel export                                    $AGENT_OTEL_JSONL_DIR (or _FILE) to the OTEL_* endpoint
  agent-otel export run.jsonl --endpoint http://localhost:4318 --protocol http/protobuf
  OTEL_EXPORTER_OTLP_ENDPOINT=https://otlp.example.com OTEL_EXPORTER_OTLP_HEADERS=x-api-key=secret \\
      OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf agent-otel export traces/
  agent-otel export traces/ --dry-run                  what would be sent, nothing sent
  agent-otel export traces/ --force                    send everything again

exit status: 0 when every selected span was accepted (or there was nothing new to send); 1 when the
record could not be read, the state file is unreadable, or the endpoint failed (after retries) - the
spans sent before the failure stay recorded in the state file, the rest are sent by the next run."""

STATE_FILE_NAME = ".agent-otel-export-state.json"
STATE_VERSION = 1
SENT_COMPLETE = "e"
SENT_RECOVERED = "r"

DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_BATCH_SIZE = 512
DEFAULT_MAX_BYTES = 3 * 1024 * 1024
MAX_BACKOFF_S = 30.0

_RECORD_FILE = re.compile(r"-\d{8}T\d{6}-(\d+)-\d+\.jsonl$")
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="replay a record to an OTLP endpoint (Jaeger, Tempo, a Collector)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_path_argument(p)
    t = p.add_argument_group("endpoint")
    t.add_argument("--endpoint", metavar="URL", help="OTLP endpoint, e.g. http://localhost:4317")
    t.add_argument("--protocol", choices=("grpc", "http/protobuf"), help="OTLP transport")
    t.add_argument(
        "--header", "-H", action="append", metavar="KEY=VALUE", help="request header/metadata; repeatable"
    )
    t.add_argument("--timeout", type=float, metavar="SECONDS", help="per-request timeout (default 10)")
    t.add_argument("--compression", choices=("gzip", "none"), help="request compression (default none)")
    b = p.add_argument_group("batching and retries")
    b.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N", help="spans per request (512)"
    )
    b.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        metavar="BYTES",
        help="bytes per request (3 MiB; receivers commonly accept 4 MiB)",
    )
    b.add_argument("--retries", type=int, default=5, metavar="N", help="retries per request (default 5)")
    b.add_argument(
        "--retry-delay",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="first backoff delay, doubled each retry up to 30 s (default 0.5)",
    )
    s = p.add_argument_group("what to send")
    s.add_argument(
        "--state", metavar="FILE", help=f"state file (default: {STATE_FILE_NAME} in the record dir)"
    )
    s.add_argument("--no-state", action="store_true", help="neither read nor write a state file")
    s.add_argument("--force", action="store_true", help="send every span, even those already sent")
    s.add_argument(
        "--include-in-flight",
        action="store_true",
        help="also send spans still open in running processes (as recovered spans)",
    )
    s.add_argument("--dry-run", action="store_true", help="show what would be sent; send nothing")
    c.add_filter_arguments(p)
    o = p.add_argument_group("output")
    o.add_argument("--quiet", "-q", action="store_true", help="print errors only")
    o.add_argument("--no-progress", action="store_true", help="no progress display (default: on a terminal)")
    p.set_defaults(func=run)
    return p


# ------------------------------------------------------------------------------------------ settings


class ConfigError(ValueError):
    """A bad endpoint setting (message is shown to the user)."""


@dataclass
class ExportConfig:
    """Where and how to send: the resolved endpoint settings."""

    protocol: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT_S
    compression: str = "none"
    certificate: str | None = None
    insecure: bool | None = None

    @property
    def key(self) -> str:
        """Identifies the endpoint in the state file."""
        return f"{self.protocol} {self.url}"


def _env(environ: Mapping[str, str], name: str) -> str | None:
    """``OTEL_EXPORTER_OTLP_TRACES_<name>``, else ``OTEL_EXPORTER_OTLP_<name>``, else ``None``."""
    for key in (f"OTEL_EXPORTER_OTLP_TRACES_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = environ.get(key, "").strip()
        if value:
            return value
    return None


def parse_headers(text: str) -> dict[str, str]:
    """Parse ``k1=v1,k2=v2`` (values URL-encoded, as in OTEL_EXPORTER_OTLP_HEADERS)."""
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise ConfigError(f"invalid header {item.strip()!r}: expected key=value")
        k, v = item.split("=", 1)
        k = urllib.parse.unquote(k).strip().lower()
        if not k:
            raise ConfigError(f"invalid header {item.strip()!r}: empty key")
        out[k] = urllib.parse.unquote(v).strip()
    return out


def _parse_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"invalid timeout {text!r}: expected a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"invalid timeout {text!r}: must be positive")
    return value / 1000.0 if value >= 1000 else value


def resolve_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ExportConfig:
    """Resolve the endpoint from flags, then the standard ``OTEL_EXPORTER_OTLP_*`` variables."""
    env = os.environ if environ is None else environ
    protocol = getattr(args, "protocol", None) or (_env(env, "PROTOCOL") or "").lower() or None
    endpoint = getattr(args, "endpoint", None)
    source = "flag"
    if not endpoint:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip() or None
        source = "traces-env"
    if not endpoint:
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or None
        source = "env"
    if not endpoint:
        endpoint = DEFAULT_GRPC_ENDPOINT if protocol in (None, "grpc") else "http://localhost:4318"
        source = "default"
    if "://" not in endpoint:
        scheme_less = endpoint
        endpoint = "http://" + endpoint
    else:
        scheme_less = None
    try:
        parsed = urllib.parse.urlsplit(endpoint)
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
    except ValueError as exc:
        raise ConfigError(f"invalid endpoint {endpoint!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"invalid endpoint {endpoint!r}: expected http(s)://host:port")
    if protocol is None:
        protocol = guess_otlp_protocol(endpoint)  # port 4318 or a /v1/traces path: http/protobuf
    if protocol == "http/json":
        raise ConfigError("protocol http/json is not supported by export: use http/protobuf or grpc")
    if protocol not in ("grpc", "http/protobuf"):
        raise ConfigError(f"unknown protocol {protocol!r}: use grpc or http/protobuf")
    if protocol == "http/protobuf":
        path = parsed.path
        if source == "env":
            path = path.rstrip("/") + "/v1/traces"
        elif source in ("flag", "default") and path in ("", "/"):
            path = "/v1/traces"
        url = urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, parsed.query, ""))
    else:
        url = f"{parsed.scheme}://{parsed.netloc}"
    headers: dict[str, str] = {}
    env_headers = _env(env, "HEADERS")
    if env_headers:
        headers.update(parse_headers(env_headers))
    for h in getattr(args, "header", None) or ():
        k, sep, v = h.partition("=")
        if not sep or not k.strip():
            raise ConfigError(f"invalid --header {h!r}: expected KEY=VALUE")
        headers[k.strip().lower()] = v.strip()
    timeout = getattr(args, "timeout", None)
    if timeout is None:
        t = _env(env, "TIMEOUT")
        timeout = _parse_timeout(t) if t else DEFAULT_TIMEOUT_S
    elif timeout <= 0:
        raise ConfigError("--timeout must be positive")
    compression = getattr(args, "compression", None) or (_env(env, "COMPRESSION") or "none").lower()
    if compression not in ("gzip", "none"):
        raise ConfigError(f"unsupported compression {compression!r}: use gzip or none")
    insecure_text = _env(env, "INSECURE")
    insecure = None if insecure_text is None else insecure_text.lower() == "true"
    if scheme_less is not None and insecure is None:
        insecure = True
    return ExportConfig(
        protocol=protocol,
        url=url,
        headers=headers,
        timeout=float(timeout),
        compression=compression,
        certificate=_env(env, "CERTIFICATE"),
        insecure=insecure,
    )


# --------------------------------------------------------------------------------------- conversion


def _pb() -> Any:
    """Import the protobuf modules lazily (they cost ~100 ms; view/stats/tail never need them)."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    return trace_service_pb2, common_pb2, resource_pb2, trace_pb2


def _fill_value(target: Any, value: Mapping[str, Any] | None) -> None:
    """Fill a ``common_pb2.AnyValue`` from an OTLP/JSON value."""
    if not value:
        return
    if "stringValue" in value:
        target.string_value = str(value["stringValue"])
    elif "boolValue" in value:
        target.bool_value = bool(value["boolValue"])
    elif "intValue" in value:
        target.int_value = int(value["intValue"])
    elif "doubleValue" in value:
        target.double_value = float(value["doubleValue"])
    elif "arrayValue" in value:
        target.array_value.SetInParent()
        for v in (value["arrayValue"] or {}).get("values") or ():
            _fill_value(target.array_value.values.add(), v)
    elif "kvlistValue" in value:
        target.kvlist_value.SetInParent()
        _fill_attributes(target.kvlist_value.values, (value["kvlistValue"] or {}).get("values"))
    elif "bytesValue" in value:
        target.bytes_value = base64.b64decode(value["bytesValue"])


def _fill_attributes(target: Any, attributes: Iterable[Mapping[str, Any]] | None) -> None:
    for kv in attributes or ():
        key = kv.get("key")
        if key is None or key == START_RECORD:
            continue
        item = target.add()
        item.key = key
        _fill_value(item.value, kv.get("value"))


def _u(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def span_to_proto(otlp: Mapping[str, Any], target: Any) -> None:
    """Fill a ``trace_pb2.Span`` from an OTLP/JSON span (ids as hex). Drops ``agent_otel.start_record``."""
    target.trace_id = bytes.fromhex(otlp["traceId"])
    target.span_id = bytes.fromhex(otlp["spanId"])
    if otlp.get("parentSpanId"):
        target.parent_span_id = bytes.fromhex(otlp["parentSpanId"])
    if otlp.get("traceState"):
        target.trace_state = otlp["traceState"]
    if otlp.get("flags"):
        target.flags = _u(otlp["flags"])
    target.name = str(otlp.get("name", ""))
    target.kind = _u(otlp.get("kind"))
    target.start_time_unix_nano = _u(otlp.get("startTimeUnixNano"))
    target.end_time_unix_nano = _u(otlp.get("endTimeUnixNano"))
    _fill_attributes(target.attributes, otlp.get("attributes"))
    target.dropped_attributes_count = _u(otlp.get("droppedAttributesCount"))
    for ev in otlp.get("events") or ():
        e = target.events.add()
        e.time_unix_nano = _u(ev.get("timeUnixNano"))
        e.name = str(ev.get("name", ""))
        _fill_attributes(e.attributes, ev.get("attributes"))
        e.dropped_attributes_count = _u(ev.get("droppedAttributesCount"))
    target.dropped_events_count = _u(otlp.get("droppedEventsCount"))
    for ln in otlp.get("links") or ():
        lk = target.links.add()
        lk.trace_id = bytes.fromhex(ln["traceId"]) if ln.get("traceId") else b""
        lk.span_id = bytes.fromhex(ln["spanId"]) if ln.get("spanId") else b""
        if ln.get("traceState"):
            lk.trace_state = ln["traceState"]
        _fill_attributes(lk.attributes, ln.get("attributes"))
        lk.dropped_attributes_count = _u(ln.get("droppedAttributesCount"))
        if ln.get("flags"):
            lk.flags = _u(ln["flags"])
    target.dropped_links_count = _u(otlp.get("droppedLinksCount"))
    status = otlp.get("status") or {}
    target.status.code = _u(status.get("code"))
    if status.get("message"):
        target.status.message = str(status["message"])


def _group_key(obj: Mapping[str, Any] | None) -> str:
    return json.dumps(obj or {}, sort_keys=True, separators=(",", ":"))


@dataclass
class _Prepared:
    span: Span
    proto: Any
    size: int
    group: tuple[str, str]


def prepare(spans: Sequence[Span]) -> list[_Prepared]:
    """Convert spans to protobuf once, remembering their size and (resource, scope) group."""
    _, _, _, trace_pb2 = _pb()
    out = []
    rcache: dict[int, str] = {}
    scache: dict[int, str] = {}
    for s in spans:
        msg = trace_pb2.Span()
        span_to_proto(s.otlp, msg)
        rk = rcache.get(id(s.otlp_resource))
        if rk is None:
            rk = rcache[id(s.otlp_resource)] = _group_key(s.otlp_resource)
        sk = scache.get(id(s.otlp_scope))
        if sk is None:
            sk = scache[id(s.otlp_scope)] = _group_key(s.otlp_scope)
        out.append(_Prepared(s, msg, msg.ByteSize() + 8, (rk, sk)))
    return out


def build_request(items: Sequence[_Prepared]) -> Any:
    """One ``ExportTraceServiceRequest`` holding ``items``, grouped by resource and scope."""
    trace_service_pb2, _, _, _ = _pb()
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs_by: dict[str, Any] = {}
    ss_by: dict[tuple[str, str], Any] = {}
    for it in items:
        rk, sk = it.group
        rs = rs_by.get(rk)
        if rs is None:
            rs = rs_by[rk] = req.resource_spans.add()
            res = it.span.otlp_resource or {}
            _fill_attributes(rs.resource.attributes, res.get("attributes"))
            rs.resource.dropped_attributes_count = _u(res.get("droppedAttributesCount"))
            if it.span.otlp_resource and isinstance(it.span.otlp_resource.get("schemaUrl"), str):
                rs.schema_url = it.span.otlp_resource["schemaUrl"]
        ss = ss_by.get((rk, sk))
        if ss is None:
            ss = ss_by[(rk, sk)] = rs.scope_spans.add()
            sc = it.span.otlp_scope or {}
            if sc.get("name"):
                ss.scope.name = str(sc["name"])
            if sc.get("version"):
                ss.scope.version = str(sc["version"])
            _fill_attributes(ss.scope.attributes, sc.get("attributes"))
        ss.spans.append(it.proto)
    return req


def batches(items: Sequence[_Prepared], max_spans: int, max_bytes: int) -> Iterator[list[_Prepared]]:
    """Split into batches of at most ``max_spans`` spans and about ``max_bytes`` serialized bytes.

    The byte count adds each distinct resource/scope once (4 KiB allowance). A single span larger than
    ``max_bytes`` goes alone in its batch.
    """
    batch: list[_Prepared] = []
    size = 0
    groups: set[tuple[str, str]] = set()
    for it in items:
        extra = it.size + (0 if it.group in groups else len(it.group[0]) + len(it.group[1]) + 4096)
        if batch and (len(batch) >= max_spans or size + extra > max_bytes):
            yield batch
            batch, size, groups = [], 0, set()
            extra = it.size + len(it.group[0]) + len(it.group[1]) + 4096
        batch.append(it)
        size += extra
        groups.add(it.group)
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------- transports


class ExportError(Exception):
    """A request failed. ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass
class SendResult:
    rejected: int = 0
    message: str = ""


def _is_loopback(host: str | None) -> bool:
    return bool(host) and (host in _LOOPBACK or str(host).endswith(".localhost"))


class HttpSender:
    """OTLP/HTTP with protobuf bodies, over urllib (honours *_proxy variables except for loopback)."""

    def __init__(self, cfg: ExportConfig) -> None:
        import ssl

        self.cfg = cfg
        host = urllib.parse.urlsplit(cfg.url).hostname
        handlers: list[Any] = []
        if _is_loopback(host):
            handlers.append(urllib.request.ProxyHandler({}))
        if cfg.url.startswith("https://"):
            ctx = ssl.create_default_context(cafile=cfg.certificate) if cfg.certificate else None
            if ctx is not None:
                handlers.append(urllib.request.HTTPSHandler(context=ctx))
        self.opener = urllib.request.build_opener(*handlers)

    def send(self, request: Any) -> SendResult:
        trace_service_pb2, _, _, _ = _pb()
        body = request.SerializeToString()
        headers = {"Content-Type": "application/x-protobuf", "User-Agent": "agent-otel-export"}
        headers.update(self.cfg.headers)
        if self.cfg.compression == "gzip":
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        req = urllib.request.Request(self.cfg.url, data=body, headers=headers, method="POST")
        try:
            with self.opener.open(req, timeout=self.cfg.timeout) as resp:
                data = resp.read()
        except urllib.error.HTTPError as exc:
            detail = _http_error_detail(exc)
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            retryable = exc.code in (408, 429, 502, 503, 504)
            raise ExportError(
                f"HTTP {exc.code} {exc.reason}{detail}", retryable=retryable, retry_after=retry_after
            ) from None
        except urllib.error.URLError as exc:
            raise ExportError(f"cannot connect: {_reason(exc.reason)}", retryable=True) from None
        except (TimeoutError, ConnectionError, OSError) as exc:
            raise ExportError(f"connection failed: {_reason(exc)}", retryable=True) from None
        result = SendResult()
        if data:
            try:
                resp_msg = trace_service_pb2.ExportTraceServiceResponse.FromString(data)
                if resp_msg.HasField("partial_success"):
                    result.rejected = resp_msg.partial_success.rejected_spans
                    result.message = resp_msg.partial_success.error_message
            except Exception:  # a non-protobuf 200 body: accepted, nothing to learn from it
                pass
        return result

    def close(self) -> None:
        pass


def _reason(reason: Any) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _http_error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        data = exc.read()
    except Exception:
        return ""
    if not data:
        return ""
    try:
        from google.rpc import status_pb2

        st = status_pb2.Status.FromString(data)
        if st.message:
            return f": {st.message}"
    except Exception:
        pass
    text = data[:200].decode("utf-8", "replace").strip()
    return f": {text}" if text and text.isprintable() else ""


class GrpcSender:
    """OTLP/gRPC through ``TraceServiceStub`` of ``opentelemetry.proto``."""

    def __init__(self, cfg: ExportConfig) -> None:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        self._grpc = grpc
        self.cfg = cfg
        parsed = urllib.parse.urlsplit(cfg.url)
        target = parsed.netloc
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
        if _is_loopback(parsed.hostname):
            options.append(("grpc.enable_http_proxy", 0))
        compression = grpc.Compression.Gzip if cfg.compression == "gzip" else None
        secure = parsed.scheme == "https" and not cfg.insecure
        if secure:
            root = Path(cfg.certificate).read_bytes() if cfg.certificate else None
            creds = grpc.ssl_channel_credentials(root_certificates=root)
            self.channel = grpc.secure_channel(target, creds, options=options, compression=compression)
        else:
            self.channel = grpc.insecure_channel(target, options=options, compression=compression)
        self.stub = trace_service_pb2_grpc.TraceServiceStub(self.channel)
        self.metadata = tuple((k.lower(), v) for k, v in cfg.headers.items())

    _RETRYABLE = (
        "UNAVAILABLE",
        "RESOURCE_EXHAUSTED",
        "DEADLINE_EXCEEDED",
        "ABORTED",
        "CANCELLED",
        "OUT_OF_RANGE",
        "DATA_LOSS",
    )

    def send(self, request: Any) -> SendResult:
        grpc = self._grpc
        try:
            resp = self.stub.Export(request, timeout=self.cfg.timeout, metadata=self.metadata or None)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            name = code.name if code is not None else "UNKNOWN"
            details = exc.details() if hasattr(exc, "details") else str(exc)
            if details and "HTTP/2" in details:
                details += " (an OTLP/HTTP endpoint? try --protocol http/protobuf)"
            raise ExportError(f"gRPC {name}: {details}", retryable=name in self._RETRYABLE) from None
        result = SendResult()
        if resp.HasField("partial_success"):
            result.rejected = resp.partial_success.rejected_spans
            result.message = resp.partial_success.error_message
        return result

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.channel.close()


def make_sender(cfg: ExportConfig) -> HttpSender | GrpcSender:
    return GrpcSender(cfg) if cfg.protocol == "grpc" else HttpSender(cfg)


def send_with_retry(
    send: Callable[[], SendResult],
    *,
    retries: int,
    delay: float,
    on_retry: Callable[[int, float, ExportError], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SendResult:
    """Call ``send`` until it succeeds, a non-retryable error, or ``retries`` retries are used.

    The n-th retry waits ``delay * 2**(n-1)`` seconds (±20 % jitter, at most 30 s), or the server's
    Retry-After when it gave one (also at most 30 s). Raises the last :class:`ExportError`.
    """
    attempt = 0
    while True:
        try:
            return send()
        except ExportError as exc:
            if not exc.retryable or attempt >= retries:
                raise
            if exc.retry_after is not None:
                wait = min(MAX_BACKOFF_S, exc.retry_after)
            else:
                wait = min(MAX_BACKOFF_S, delay * (2**attempt)) * random.uniform(0.8, 1.2)
            attempt += 1
            if on_retry is not None:
                on_retry(attempt, wait, exc)
            sleep(wait)


# ---------------------------------------------------------------------------------------------- state


class StateError(Exception):
    pass


class ExportState:
    """Which spans were sent where: ``{"version": 1, "endpoints": {key: {traceId+spanId: "e"|"r"}}}``.

    ``"e"`` means the complete span was sent, ``"r"`` a recovered one. Saved atomically (temp file +
    rename), mode 0600.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.endpoints: dict[str, dict[str, str]] = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict) or not isinstance(data.get("endpoints"), dict):
                    raise ValueError("unexpected content")
                self.endpoints = {str(k): dict(v) for k, v in data["endpoints"].items()}
            except (OSError, ValueError, TypeError) as exc:
                raise StateError(
                    f"state file {path} is unreadable ({exc}); delete it to start afresh (spans already "
                    "sent would be sent again), or pass --state OTHER_FILE / --no-state"
                ) from None

    def sent(self, endpoint: str) -> dict[str, str]:
        return self.endpoints.setdefault(endpoint, {})

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        data = json.dumps({"version": STATE_VERSION, "endpoints": self.endpoints}, separators=(",", ":"))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data.encode("utf-8"))
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


def default_state_path(path: str) -> Path:
    p = Path(path)
    return (p if p.is_dir() else p.parent) / STATE_FILE_NAME


def span_key(span: Span) -> str:
    return span.trace_id + span.span_id


# ------------------------------------------------------------------------------------------ in flight


def _writer_pid(span: Span) -> int | None:
    pid = span.resource.get("process.pid")
    if isinstance(pid, int) and not isinstance(pid, bool):
        return pid
    m = _RECORD_FILE.search(span.path)
    return int(m.group(1)) if m else None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):  # OverflowError: a "pid" too large for the platform's pid_t
        return False
    return True


def writer_running(span: Span, _cache: dict[tuple[str | None, int], bool] | None = None) -> int | None:
    """The pid of the process that wrote ``span`` if it is running on this host now, else ``None``.

    The pid comes from the ``process.pid`` resource attribute or the record file name
    (``...-<pid>-<seq>.jsonl``); a ``host.name`` resource attribute naming another host means "not here".
    """
    pid = _writer_pid(span)
    if pid is None:
        return None
    host = span.resource.get("host.name")
    if isinstance(host, str) and host and host != socket.gethostname():
        return None
    key = (host if isinstance(host, str) else None, pid)
    if _cache is not None and key in _cache:
        return pid if _cache[key] else None
    alive = _pid_alive(pid)
    if _cache is not None:
        _cache[key] = alive
    return pid if alive else None


# ----------------------------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """What a run sends: ``send`` (spans ready to export, recovered where needed) and what it skips."""

    send: list[Span] = field(default_factory=list)
    already_sent: int = 0
    replacing_recovered: int = 0
    in_flight: list[Span] = field(default_factory=list)
    in_flight_pids: set[int] = field(default_factory=set)

    @property
    def recovered(self) -> int:
        return sum(1 for s in self.send if s.recovered)


def plan_export(
    spans: Iterable[Span], sent: Mapping[str, str], *, force: bool = False, include_in_flight: bool = False
) -> Plan:
    """Decide what to send, given what was sent to this endpoint before (``sent``)."""
    plan = Plan()
    cache: dict[tuple[str | None, int], bool] = {}
    for s in spans:
        prev = None if force else sent.get(span_key(s))
        if s.finished:
            if prev == SENT_COMPLETE:
                plan.already_sent += 1
                continue
            if prev == SENT_RECOVERED:
                plan.replacing_recovered += 1
            plan.send.append(s)
            continue
        if prev is not None:
            plan.already_sent += 1
            continue
        if not include_in_flight:
            pid = writer_running(s, cache)
            if pid is not None:
                plan.in_flight.append(s)
                plan.in_flight_pids.add(pid)
                continue
        plan.send.append(reader.recover(s))
    order: dict[str, int] = {}
    for s in plan.send:
        order.setdefault(s.trace_id, len(order))
    plan.send.sort(key=lambda s: order[s.trace_id])  # stable: keeps each trace's spans together
    return plan


# -------------------------------------------------------------------------------------------- running


class Progress:
    """A one-line progress display on a terminal (stderr); silent otherwise."""

    def __init__(self, stream: TextIO, total: int, enabled: bool) -> None:
        self.stream, self.total, self.enabled = stream, total, enabled
        self.t0 = time.monotonic()
        self._last = 0.0

    def update(self, done: int, requests: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        frac = done / self.total if self.total else 1.0
        bar = "#" * int(frac * 30)
        rate = done / max(1e-9, now - self.t0)
        self.stream.write(
            f"\r[{bar:<30}] {done:,}/{self.total:,} spans  {requests} request"
            f"{'s' if requests != 1 else ''}  {rate:,.0f} spans/s "
        )
        self.stream.flush()

    def message(self, text: str) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if args.batch_size < 1 or args.max_bytes < 1024 or args.retries < 0 or args.retry_delay < 0:
        print(
            "agent-otel: error: --batch-size must be >= 1, --max-bytes >= 1024, --retries and "
            "--retry-delay >= 0",
            file=err,
        )
        return c.EXIT_USAGE
    try:
        cfg = resolve_config(args)
    except ConfigError as exc:
        print(f"agent-otel: error: {exc}", file=err)
        return c.EXIT_USAGE
    path, source = c.record_path(args)
    result = c.load(path, err, source=source)
    if result is None:
        return c.EXIT_FAILURE
    filters = c.Filters.from_args(args)
    spans = [s for t in filters.select(c.build_traces(result.spans)) for s in t.spans]
    try:
        state_path = None if args.no_state else Path(args.state) if args.state else default_state_path(path)
        state = ExportState(state_path)
    except StateError as exc:
        print(f"agent-otel: error: {exc}", file=err)
        return c.EXIT_FAILURE
    sent = state.sent(cfg.key)
    plan = plan_export(spans, sent, force=args.force, include_in_flight=args.include_in_flight)
    where = f"{cfg.url} ({cfg.protocol})"

    def note(text: str) -> None:
        if not args.quiet:
            print(text, file=out)

    if plan.in_flight:
        pids = ", ".join(str(p) for p in sorted(plan.in_flight_pids))
        note(
            f"deferred {len(plan.in_flight)} span{'s' if len(plan.in_flight) != 1 else ''} still open in "
            f"running process{'es' if len(plan.in_flight_pids) != 1 else ''} {pids}: re-run when "
            "they have finished, or pass --include-in-flight to send them now as recovered spans"
        )
    if not plan.send:
        note(
            f"nothing to send to {where}: {plan.already_sent} span{'s' if plan.already_sent != 1 else ''} "
            "already sent" + (f" (state: {state.path})" if state.path else "")
        )
        return c.EXIT_OK
    prepared = prepare(plan.send)
    groups = list(batches(prepared, args.batch_size, args.max_bytes))
    if args.dry_run:
        note(
            f"would send {len(plan.send)} spans ({plan.recovered} recovered) in {len(groups)} request"
            f"{'s' if len(groups) != 1 else ''} to {where}; {plan.already_sent} already sent"
        )
        return c.EXIT_OK
    try:
        sender = make_sender(cfg)
    except (OSError, ValueError) as exc:
        print(f"agent-otel: error: cannot set up {where}: {exc}", file=err)
        return c.EXIT_FAILURE
    progress = Progress(
        err, len(plan.send), enabled=not args.quiet and not args.no_progress and c._isatty(err)
    )
    done = requests = rejected = 0
    reject_msgs: list[str] = []
    t0 = time.monotonic()
    last_save = t0
    failure: ExportError | None = None

    def on_retry(attempt: int, wait: float, exc: ExportError) -> None:
        if not args.quiet:
            progress.message(f"agent-otel: {exc} - retry {attempt}/{args.retries} in {wait:.1f} s")

    try:
        for group in groups:
            request = build_request(group)
            try:
                res = send_with_retry(
                    lambda request=request: sender.send(request),
                    retries=args.retries,
                    delay=args.retry_delay,
                    on_retry=on_retry,
                )
            except ExportError as exc:
                failure = exc
                break
            requests += 1
            done += len(group)
            if res.rejected:
                rejected += res.rejected
                if res.message:
                    reject_msgs.append(res.message)
            for it in group:
                sent[span_key(it.span)] = SENT_RECOVERED if it.span.recovered else SENT_COMPLETE
            now = time.monotonic()
            if now - last_save >= 2.0:
                _save(state, err)
                last_save = now
            progress.update(done, requests)
    finally:
        progress.update(done, requests, force=True)
        progress.finish()
        sender.close()
        if requests:
            _save(state, err)
    elapsed = time.monotonic() - t0
    recovered_sent = sum(1 for p in prepared[:done] if p.span.recovered)
    if done and not args.quiet:
        rate = f" ({done / elapsed:,.0f} spans/s)" if elapsed >= 0.5 else ""
        print(
            f"exported {done:,} span{'s' if done != 1 else ''} ({recovered_sent} recovered from runs that "
            f"never ended) in {requests} request{'s' if requests != 1 else ''} to {where} in "
            f"{elapsed:.2f} s{rate}",
            file=out,
        )
        extra = []
        if plan.already_sent:
            extra.append(f"skipped {plan.already_sent} already sent")
        if plan.replacing_recovered:
            extra.append(
                f"{plan.replacing_recovered} span{'s' if plan.replacing_recovered != 1 else ''} sent earlier "
                "as recovered now sent complete (the backend holds both versions)"
            )
        if state.path is not None:
            extra.append(f"state: {state.path}")
        if extra:
            print("; ".join(extra), file=out)
    if rejected:
        msg = f": {reject_msgs[0]}" if reject_msgs else ""
        print(f"agent-otel: warning: the endpoint rejected {rejected} spans{msg}", file=err)
    if failure is not None:
        left = len(plan.send) - done
        hint = ""
        if failure.retryable:
            hint = (
                f" after {args.retries} retr{'ies' if args.retries != 1 else 'y'}; is the endpoint up? "
                "(for the bundled stack: docker compose up -d)"
            )
        print(
            f"agent-otel: error: export to {where} failed: {failure}{hint}\n"
            f"  {done:,} of {len(plan.send):,} spans were sent"
            + (" and recorded in the state file" if done and state.path else "")
            + f"; {left:,} not sent - re-run to send them",
            file=err,
        )
        return c.EXIT_FAILURE
    return c.EXIT_OK


def _save(state: ExportState, err: TextIO) -> None:
    try:
        state.save()
    except OSError as exc:
        print(f"agent-otel: warning: cannot write state file {state.path}: {exc}", file=err)
