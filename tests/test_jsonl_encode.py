"""The record format: SDK spans -> OTLP/JSON ``TracesData`` lines (jsonl/encode.py).

Every line produced here is checked with protobuf's own parser. Covers the SDK's extended attribute
values, values the encoder never expects (called directly), and lines kept under 1 MiB.
"""

from __future__ import annotations

import base64
import enum
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from agent_otel.jsonl import encode
from agent_otel.jsonl.encode import MAX_LINE_BYTES, LineEncoder, dumps_stdlib, encode_attributes

START = "agent_otel.start_record"
TRUNCATED = "agent_otel.truncated"


@pytest.fixture
def tracer() -> Iterator[trace.Tracer]:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "encode-test"}),
        span_limits=SpanLimits(max_attributes=20_000),
        shutdown_on_exit=False,
    )
    yield provider.get_tracer("encode-test", "1.2.3")
    provider.shutdown()


def parse(line: bytes) -> dict[str, Any]:
    """The line's only span, after protobuf accepted the line as TracesData."""
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert len(line) < 1024 * 1024
    json_format.Parse(line, trace_pb2.TracesData())
    doc = json.loads(line)
    (rs,) = doc["resourceSpans"]
    (ss,) = rs["scopeSpans"]
    (span,) = ss["spans"]
    span["_resource"] = rs["resource"]
    span["_scope"] = ss["scope"]
    return span


Span = dict[str, Any]


def attrs(span: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {kv["key"]: kv["value"] for kv in span.get("attributes", [])}


def encode_both(span: ReadableSpan, encoder: LineEncoder | None = None) -> tuple[Span, Span]:
    enc = encoder or LineEncoder()
    return parse(enc.encode(span, start=True)), parse(enc.encode(span, start=False))


# ---------------------------------------------------------------------------------------- structure


def test_start_and_end_records(tracer: trace.Tracer) -> None:
    parent = tracer.start_span("invoke_agent a")
    ctx = trace.set_span_in_context(parent)
    linked = SpanContext(0xAB, 0xCD, is_remote=True, trace_flags=TraceFlags(1))
    span = tracer.start_span(
        "chat m",
        context=ctx,
        kind=SpanKind.CLIENT,
        attributes={"gen_ai.request.model": "m", "server.port": 443, "gen_ai.request.stream": False},
        links=[Link(linked, {"why": "retry"})],
    )
    start = parse(LineEncoder().encode(span, start=True))
    span.set_attribute("gen_ai.usage.input_tokens", 12)
    span.set_attribute("gen_ai.request.temperature", 0.5)
    span.add_event("exception", {"exception.type": "ValueError"})
    span.set_status(Status(StatusCode.ERROR, "boom"))
    span.end()
    end = parse(LineEncoder().encode(span, start=False))

    ids = span.get_span_context()
    for rec in (start, end):
        assert rec["traceId"] == f"{ids.trace_id:032x}" and rec["spanId"] == f"{ids.span_id:016x}"
        assert rec["parentSpanId"] == f"{parent.get_span_context().span_id:016x}"
        assert rec["name"] == "chat m" and rec["kind"] == 3  # OTLP CLIENT
        assert rec["startTimeUnixNano"] == str(span.start_time)
        # W3C trace flags (sampled, and the SDK's random-trace-id bit) + "parent is local" known.
        assert rec["flags"] == int(ids.trace_flags) | 0x100 and rec["flags"] & 0x1
        assert rec["_scope"] == {"name": "encode-test", "version": "1.2.3"}
        service = {kv["key"]: kv["value"] for kv in rec["_resource"]["attributes"]}["service.name"]
        assert service == {"stringValue": "encode-test"}

    assert attrs(start) == {
        "gen_ai.request.model": {"stringValue": "m"},
        "server.port": {"intValue": "443"},
        "gen_ai.request.stream": {"boolValue": False},
        START: {"boolValue": True},
    }
    assert "endTimeUnixNano" not in start and "status" not in start

    assert end["endTimeUnixNano"] == str(span.end_time)
    assert attrs(end)["gen_ai.usage.input_tokens"] == {"intValue": "12"}
    assert attrs(end)["gen_ai.request.temperature"] == {"doubleValue": 0.5}
    assert START not in attrs(end)
    assert end["status"] == {"code": 2, "message": "boom"}
    (event,) = end["events"]
    assert event["name"] == "exception" and event["timeUnixNano"].isdigit()
    (link,) = end["links"]
    assert link["traceId"] == f"{0xAB:032x}" and link["spanId"] == f"{0xCD:016x}"
    assert link["attributes"] == [{"key": "why", "value": {"stringValue": "retry"}}]
    # scopeSpans precede resource in the line (see DESIGN: the first KB of a file stays distinctive).
    line = LineEncoder().encode(span, start=False)
    assert line.index(b'"scopeSpans"') < line.index(b'"resource"')


def test_root_span_remote_parent_and_trace_state(tracer: trace.Tracer) -> None:
    root = tracer.start_span("root")
    root.end()
    rec = parse(LineEncoder().encode(root, start=False))
    assert "parentSpanId" not in rec
    assert rec["status"] == {"code": 0}

    remote = SpanContext(
        0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "v1")])
    )
    child = tracer.start_span("child", context=trace.set_span_in_context(trace.NonRecordingSpan(remote)))
    child.end()
    rec = parse(LineEncoder().encode(child, start=False))
    assert rec["parentSpanId"] == f"{0x5678:016x}"
    assert rec["flags"] == 0x301  # sampled, and the parent is known to be remote
    assert rec["traceState"] == "vendor=v1"


@pytest.mark.parametrize(
    ("kind", "otlp"),
    [(SpanKind.INTERNAL, 1), (SpanKind.SERVER, 2), (SpanKind.PRODUCER, 4), (SpanKind.CONSUMER, 5)],
)
def test_span_kinds(tracer: trace.Tracer, kind: SpanKind, otlp: int) -> None:
    span = tracer.start_span("k", kind=kind)
    span.end()
    assert parse(LineEncoder().encode(span, start=False))["kind"] == otlp


def test_start_record_reflects_the_span_as_it_started(tracer: trace.Tracer) -> None:
    span = tracer.start_span("s", attributes={"a": "first", "b": 1})
    start = parse(LineEncoder().encode(span, start=True))
    span.set_attribute("a", "second")
    span.update_name("renamed")
    span.end()
    end = parse(LineEncoder().encode(span, start=False))
    assert attrs(start)["a"] == {"stringValue": "first"} and start["name"] == "s"
    assert attrs(end)["a"] == {"stringValue": "second"} and end["name"] == "renamed"


# ------------------------------------------------------------------------------------ attribute values


class Color(str, enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


def test_values_the_sdk_lets_through(tracer: trace.Tracer) -> None:
    """The SDK (1.45) accepts None, maps, nested sequences and bytes: each gets its OTLP type."""
    values = {
        "none": None,
        "map": {"a": 1, "nested": {"x": [1, 2]}, "b": b"\x00\xff"},
        "nested": [(1, 2), ("a", None)],
        "bytes": b"\x00\xffbin",
        "too_big": 2**70,
        "too_small": -(2**64),
        "int64_max": 2**63 - 1,
        "nan": float("nan"),
        "inf": float("inf"),
        "minus_inf": float("-inf"),
        "surrogate": "a\ud800b",
        "str_enum": Color.RED,
        "int_enum": Level.HIGH,
        "object": object(),  # the SDK replaces it with None (no useful str)
        "set": {1},  # the SDK turns it into its str
    }
    span = tracer.start_span("odd", attributes=values)
    span.end()
    for rec in encode_both(span):
        a = attrs(rec)
        assert a["none"] == {} and a["object"] == {}
        assert a["map"]["kvlistValue"]["values"][0] == {"key": "a", "value": {"intValue": "1"}}
        nested_map = a["map"]["kvlistValue"]["values"][1]["value"]["kvlistValue"]["values"][0]
        assert nested_map["value"] == {"arrayValue": {"values": [{"intValue": "1"}, {"intValue": "2"}]}}
        assert a["nested"]["arrayValue"]["values"][1] == {
            "arrayValue": {"values": [{"stringValue": "a"}, {}]}
        }
        assert base64.b64decode(a["bytes"]["bytesValue"]) == b"\x00\xffbin"
        assert a["too_big"] == {"stringValue": str(2**70)}  # OTLP ints are int64
        assert a["too_small"] == {"stringValue": str(-(2**64))}
        assert a["int64_max"] == {"intValue": str(2**63 - 1)}
        assert a["nan"] == {"doubleValue": "NaN"}
        assert a["inf"] == {"doubleValue": "Infinity"} and a["minus_inf"] == {"doubleValue": "-Infinity"}
        assert a["surrogate"] == {"stringValue": "a?b"}
        assert a["str_enum"] == {"stringValue": "red"}
        assert a["int_enum"] == {"intValue": "3"}
        assert a["set"] == {"stringValue": "{1}"}


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize("json_dumps", [encode.dumps, dumps_stdlib], ids=["default", "stdlib"])
def test_encoder_called_directly_with_values_it_never_expects(json_dumps: Any) -> None:
    deep: list[Any] = []
    cursor = deep
    for _ in range(100):
        cursor.append([])
        cursor = cursor[0]
    values = {
        "lone_surrogate": "\ud800",
        "surrogate_in_list": ["ok", "\udcff"],
        "nan": math.nan,
        "inf": math.inf,
        "bytes": b"\x80\x81",
        "bytearray": bytearray(b"ab"),
        "memoryview": memoryview(b"cd"),
        "nested_tuples": ((1, (2, (3, ("x",)))),),
        "set": {3},
        "frozenset": frozenset(),
        "unprintable": Unprintable(),
        "deep": deep,
        "huge_int": 10**30,
        "float_subclass": type("F", (float,), {})(1.5),
        "map_with_int_keys": {1: "one"},
        "\ud800key": "surrogate in the key",
    }
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": encode_attributes(values)}]}]}]}
    line = encode._dump_safe(doc, json_dumps)  # with the encoder's guard for text JSON cannot hold
    json_format.Parse(line, trace_pb2.TracesData())
    kvs = json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
    decoded = {kv["key"]: kv["value"] for kv in kvs}
    assert decoded["deep"]["arrayValue"]["values"]  # nesting beyond the depth limit becomes text
    assert decoded["unprintable"] == {"stringValue": "<unrepresentable Unprintable>"}
    assert decoded["huge_int"] == {"stringValue": str(10**30)}
    assert decoded["float_subclass"] == {"doubleValue": 1.5}
    assert decoded["map_with_int_keys"] == {
        "kvlistValue": {"values": [{"key": "1", "value": {"stringValue": "one"}}]}
    }
    assert decoded["lone_surrogate"] == {"stringValue": "?"}
    assert decoded["?key"] == {"stringValue": "surrogate in the key"}
    assert base64.b64decode(decoded["memoryview"]["bytesValue"]) == b"cd"


@pytest.mark.parametrize("json_dumps", [encode.dumps, dumps_stdlib], ids=["default", "stdlib"])
def test_line_encoder_with_either_json_encoder(tracer: trace.Tracer, json_dumps: Any) -> None:
    span = tracer.start_span("n\ud800me", attributes={"s\udcffk": "v\ud800", "ok": "é€😀", "i": 5})
    span.set_status(Status(StatusCode.ERROR, "bad \ud800 message"))
    span.end()
    start, end = encode_both(span, LineEncoder(json_dumps=json_dumps))
    assert end["name"] == "n?me"
    assert attrs(end)["ok"] == {"stringValue": "é€😀"}
    assert attrs(end)["s?k"] == {"stringValue": "v?"}
    assert end["status"]["message"] == "bad ? message"
    assert attrs(start)[START] == {"boolValue": True}


def test_stdlib_and_default_encoders_agree(tracer: trace.Tracer) -> None:
    span = tracer.start_span(
        "s", attributes={"a": "x", "b": 2, "c": 1.25, "d": (True, False), "e": {"k": None}}
    )
    span.add_event("e", {"k": "v"})
    span.end()
    for start in (True, False):
        fast = json.loads(LineEncoder().encode(span, start=start))
        slow = json.loads(LineEncoder(json_dumps=dumps_stdlib).encode(span, start=start))
        assert fast == slow


def test_non_utf8_resource_and_scope_still_give_parseable_lines() -> None:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "svc\udcff", "host.name": "h\ud800"}),
        shutdown_on_exit=False,
    )
    span = provider.get_tracer("scope\udcfe", "v\ud800").start_span("s")
    span.end()
    _, end = encode_both(span)
    service = {kv["key"]: kv["value"] for kv in end["_resource"]["attributes"]}["service.name"]
    assert service == {"stringValue": "svc?"}
    assert end["_scope"] == {"name": "scope?", "version": "v?"}


# ---------------------------------------------------------------------------------------- line size


def test_huge_attribute_is_truncated_never_dropped(tracer: trace.Tracer) -> None:
    big = "x" * (5 * 1024 * 1024)
    span = tracer.start_span("chat m", attributes={"gen_ai.input.messages": big, "gen_ai.request.model": "m"})
    span.end()
    for rec in encode_both(span):
        a = attrs(rec)
        value = a["gen_ai.input.messages"]["stringValue"]
        assert value.startswith("x" * 1000)
        assert value.endswith(f"[truncated {len(big)} chars]")
        assert a[TRUNCATED] == {"arrayValue": {"values": [{"stringValue": "gen_ai.input.messages"}]}}
        assert a["gen_ai.request.model"] == {"stringValue": "m"}
    assert START in attrs(encode_both(span)[0])


def test_ten_thousand_attributes_keep_the_span(tracer: trace.Tracer) -> None:
    span = tracer.start_span("many", attributes={f"k{i:05}": "v" * 200 for i in range(10_000)})
    span.set_status(Status(StatusCode.ERROR, "still here"))
    span.end()
    start, end = encode_both(span)
    assert START in attrs(start)  # the start marker survives the cut
    for rec in (start, end):
        a = attrs(rec)
        assert a[TRUNCATED] == {"arrayValue": {"values": [{"stringValue": "*"}]}}
        assert "k00000" in a
    assert end["status"] == {"code": 2, "message": "still here"}
    assert end["droppedAttributesCount"] == 10_000 - 64


def test_sdk_attribute_limit_is_reported_as_dropped() -> None:
    provider = TracerProvider(shutdown_on_exit=False)  # default limit: 128 attributes
    span = provider.get_tracer("t").start_span("many", attributes={f"k{i}": i for i in range(10_000)})
    span.end()
    end = parse(LineEncoder().encode(span, start=False))
    assert len(end["attributes"]) == 128
    assert end["droppedAttributesCount"] == 10_000 - 128


HUGE = 3 * 1024 * 1024


@pytest.mark.parametrize(
    "shape",
    [
        "name",
        "status",
        "key",
        "bytes",
        "nested_map",
        "array",
        "event",
        "many_events",
        "link",
        "many_mid_size",
    ],
)
def test_every_shape_of_huge_span_fits_a_line(tracer: trace.Tracer, shape: str) -> None:
    name = "n" * HUGE if shape == "name" else "s"
    attributes: dict[str, Any] = {"keep": "me"}
    if shape == "key":
        attributes["k" * HUGE] = 1
    elif shape == "bytes":
        attributes["blob"] = b"\x01" * HUGE
    elif shape == "nested_map":
        attributes["doc"] = {"inner": {"text": "t" * HUGE}}
    elif shape == "array":
        attributes["parts"] = ["p" * (HUGE // 4)] * 4
    elif shape == "many_mid_size":
        attributes.update({f"m{i}": "m" * 200_000 for i in range(20)})
    links = []
    if shape == "link":
        links = [Link(SpanContext(1, 2, is_remote=False), {"note": "l" * HUGE})]
    span = tracer.start_span(name, attributes=attributes, links=links)
    if shape == "event":
        span.add_event("exception", {"exception.stacktrace": "e" * HUGE})
    if shape == "many_events":
        for i in range(128):
            span.add_event(f"ev{i}", {"data": "d" * 20_000})
    if shape == "status":
        span.set_status(Status(StatusCode.ERROR, "m" * HUGE))
    span.end()
    start, end = encode_both(span)  # parse() asserts < 1 MiB and valid TracesData
    assert START in attrs(start)
    assert attrs(end)["keep"] == {"stringValue": "me"}
    assert TRUNCATED in attrs(end)
    assert end["spanId"] == f"{span.get_span_context().span_id:016x}"
    if shape == "status":
        assert end["status"]["code"] == 2 and len(end["status"]["message"]) < 2000
    if shape == "many_events":  # 128 x 20 KB: each event keeps its first 4 KB
        assert len(end["events"]) == 128
        assert attrs(end)[TRUNCATED] == {"arrayValue": {"values": [{"stringValue": "data"}]}}


def test_max_line_bytes_is_below_one_mebibyte() -> None:
    assert MAX_LINE_BYTES < 1024 * 1024


@pytest.mark.parametrize(
    "attributes",
    [
        {"gen_ai.operation.name": "chat", "server.port": 443, "stream": True, "temperature": 0.25},
        {"big": 2**70, "ok": "x"},  # beyond int64: the general path writes the digits as a string
        {"nan": float("nan")},  # not finite: the general path
        {"list": ["a", "b"], "tokens": -3, "off": False},
        {"surrogate": "bad \ud800 text"},  # not UTF-8: the general path scrubs it
        {},
    ],
)
@pytest.mark.parametrize("status", [None, Status(StatusCode.ERROR, 'boom "quoted" ü'), Status(StatusCode.OK)])
def test_fast_path_writes_exactly_what_the_general_path_writes(
    tracer: trace.Tracer, attributes: dict[str, Any], status: Status | None
) -> None:
    with tracer.start_as_current_span("parent"):
        span = tracer.start_span('chat "model" ü', kind=SpanKind.CLIENT, attributes=attributes)
    if status is not None:
        span.set_status(status)
    span.end()
    encoder = LineEncoder()
    for start in (True, False):
        general = json.loads(encode._dump_safe(encode._span_body(span, start=start), dumps_stdlib))
        for _ in range(2):  # the second time, the cached fragments are used
            written = {
                k: v for k, v in parse(encoder.encode(span, start=start)).items() if not k.startswith("_")
            }
            assert written == general
