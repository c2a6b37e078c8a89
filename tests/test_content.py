"""Content capture: to_json on anything, truncation, the redaction hook, the capture switch on spans."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import json
import logging
import uuid
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any

import pydantic
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import agent_otel
from agent_otel import attributes as attrs
from agent_otel import config, content, spans
from agent_otel.content import REDACTION_FAILED, to_json, truncate


class Address(pydantic.BaseModel):
    city: str
    zip_code: str | None = None


class Person(pydantic.BaseModel):
    name: str
    address: Address
    born: dt.date


@dataclasses.dataclass
class ToolCall:
    id: str
    args: dict[str, Any]
    tags: tuple[str, ...] = ()


@dataclasses.dataclass
class LinkedNode:
    name: str
    next: Any = None


class Color(enum.Enum):
    RED = "red"


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


class BrokenDump(pydantic.BaseModel):
    x: int = 1

    def model_dump(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise RuntimeError("dump exploded")


def test_strings_pass_through() -> None:
    assert to_json("hello ☃", kind="tool_result") == "hello ☃"
    assert to_json("", kind="tool_result") == ""


def test_plain_json_is_compact_and_keeps_unicode() -> None:
    out = to_json(
        [{"role": "user", "parts": [{"type": "text", "content": "héllo ☃"}]}], kind="input_messages"
    )
    assert out == '[{"role":"user","parts":[{"type":"text","content":"héllo ☃"}]}]'
    assert to_json(None, kind="tool_result") == "null"
    assert to_json(3, kind="tool_result") == "3"
    assert to_json(True, kind="tool_result") == "true"


def test_pydantic_models() -> None:
    p = Person(name="Ann", address=Address(city="Oslo"), born=dt.date(1990, 5, 17))
    assert json.loads(to_json(p, kind="tool_result")) == {
        "name": "Ann",
        "address": {"city": "Oslo", "zip_code": None},
        "born": "1990-05-17",
    }
    # nested inside plain containers too
    assert json.loads(to_json({"people": [p]}, kind="tool_result"))["people"][0]["address"]["city"] == "Oslo"


def test_dataclasses() -> None:
    call = ToolCall(id="c1", args={"q": "x", "when": dt.datetime(2024, 1, 2, 3, 4, 5)}, tags=("a", "b"))
    assert json.loads(to_json(call, kind="tool_arguments")) == {
        "id": "c1",
        "args": {"q": "x", "when": "2024-01-02T03:04:05"},
        "tags": ["a", "b"],
    }
    # the dataclass *class* itself is not an instance: repr, no crash
    assert "ToolCall" in to_json(ToolCall, kind="tool_result")


def test_bytes_valid_and_invalid_utf8() -> None:
    assert json.loads(to_json({"b": "é".encode()}, kind="tool_result")) == {"b": "é"}
    raw = b"\xff\xfe\x00binary"
    out = json.loads(to_json({"b": raw, "ba": bytearray(b"ok"), "mv": memoryview(b"mv")}, kind="tool_result"))
    assert out["b"] == "base64:" + base64.b64encode(raw).decode()
    assert out["ba"] == "ok" and out["mv"] == "mv"
    assert to_json(b"top-level", kind="tool_result") == '"top-level"'


def test_common_types() -> None:
    u = uuid.UUID(int=7)
    out = json.loads(
        to_json(
            {
                "set": {3},
                "frozenset": frozenset({"a"}),
                "tuple": (1, 2),
                "decimal": Decimal("1.50"),
                "uuid": u,
                "enum": Color.RED,
                "path": PurePosixPath("/tmp/x"),
                "time": dt.time(1, 2),
            },
            kind="tool_result",
        )
    )
    assert out["set"] == [3] and out["frozenset"] == ["a"] and out["tuple"] == [1, 2]
    assert out["decimal"] == "1.50"
    assert out["uuid"] == str(u)
    assert out["enum"] == "red"
    assert out["path"] == "/tmp/x"
    assert out["time"] == "01:02:00"


def test_cycles_give_valid_json() -> None:
    a: list[Any] = [1]
    a.append(a)
    out = json.loads(to_json({"a": a}, kind="tool_result"))
    assert out["a"][0] == 1 and isinstance(out["a"][1], str) and "circular" in out["a"][1]

    d: dict[str, Any] = {"k": 1}
    d["self"] = d
    assert json.loads(to_json(d, kind="tool_result"))["k"] == 1

    n1 = LinkedNode("one")
    n1.next = LinkedNode("two", next=n1)
    out = json.loads(to_json(n1, kind="tool_result"))
    assert out["name"] == "one" and out["next"]["name"] == "two"
    assert "circular" in out["next"]["next"]


def test_shared_objects_are_not_cycles() -> None:
    shared = {"x": 1}
    assert json.loads(to_json([shared, shared, {"k": float("nan")}], kind="tool_result"))[:2] == [
        shared,
        shared,
    ]


def test_non_finite_floats_and_odd_keys_give_valid_json() -> None:
    out = json.loads(
        to_json({"nan": float("nan"), "inf": float("-inf"), (1, 2): "tuple key"}, kind="tool_result")
    )
    assert out["nan"] == "nan" and out["inf"] == "-inf"
    assert out["(1, 2)"] == "tuple key"


def test_unknown_objects_become_repr() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<Thing 42>"

    assert json.loads(to_json({"t": Thing()}, kind="tool_result")) == {"t": "<Thing 42>"}
    assert to_json(Thing(), kind="tool_result") == '"<Thing 42>"'


def test_broken_repr_and_broken_model_dump() -> None:
    out = json.loads(to_json({"a": BrokenRepr(), "b": BrokenDump(), "c": 1}, kind="tool_result"))
    assert out["a"] == "<unrepresentable BrokenRepr>"
    assert isinstance(out["b"], str) and out["c"] == 1
    assert "unrepresentable" in to_json(BrokenRepr(), kind="tool_result")


def test_very_deep_nesting_never_raises() -> None:
    deep: Any = "bottom"
    for _ in range(5000):
        deep = [deep]
    out = to_json(deep, kind="tool_result")
    assert isinstance(out, str) and out.startswith("[[[")


def test_huge_payload_is_truncated_with_the_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_OTEL_CONTENT_MAX_LENGTH", "100")
    config.reload_settings()
    out = to_json({"text": "x" * 10_000}, kind="tool_result")
    assert len(out) == 100
    assert out.endswith("…[truncated 10011 chars]")
    assert out.startswith('{"text":"xxx')
    s = to_json("y" * 1000, kind="tool_result")
    assert len(s) == 100 and s.endswith("…[truncated 1000 chars]")
    assert to_json("y" * 100, kind="tool_result") == "y" * 100  # exactly at the limit: untouched


def test_default_limit_is_16k() -> None:
    out = to_json("z" * 20_000, kind="tool_result")
    assert len(out) == 16384


def test_truncate_helper_edges() -> None:
    assert truncate("abc", 3) == "abc"
    assert truncate("abcdef", 0).startswith("…[truncated 6")
    assert truncate("", 10) == ""


def test_redactor_sees_kind_and_value() -> None:
    seen: list[tuple[str, Any]] = []

    def redact(kind: str, value: Any) -> Any:
        seen.append((kind, value))
        if isinstance(value, dict):
            return {k: ("***" if k == "password" else v) for k, v in value.items()}
        return value

    content.set_redactor(redact)
    assert json.loads(to_json({"user": "a", "password": "hunter2"}, kind="tool_arguments")) == {
        "user": "a",
        "password": "***",
    }
    assert seen == [("tool_arguments", {"user": "a", "password": "hunter2"})]
    content.set_redactor(None)
    assert "hunter2" in to_json({"password": "hunter2"}, kind="tool_arguments")


def test_redactor_output_is_serialised_and_truncated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_OTEL_CONTENT_MAX_LENGTH", "64")
    config.reload_settings()
    content.set_redactor(lambda kind, value: {"replaced": b"\xff" * 200})
    out = to_json("anything", kind="output_messages")
    assert len(out) == 64 and "truncated" in out


def test_raising_redactor_drops_the_payload_keeps_the_span(
    span_exporter: InMemorySpanExporter, capture_content: None, caplog: pytest.LogCaptureFixture
) -> None:
    def redact(kind: str, value: Any) -> Any:
        raise ValueError("redactor bug")

    agent_otel.set_redactor(redact)
    with caplog.at_level(logging.WARNING, logger="agent_otel"):
        assert to_json({"secret": 1}, kind="tool_result") == REDACTION_FAILED
        h = spans.start_tool("t")
        h.set_tool_arguments({"secret": "s"})
        h.set_tool_result({"secret": "s"})
        h.end()
    (s,) = span_exporter.get_finished_spans()
    assert s.attributes[attrs.GEN_AI_TOOL_CALL_ARGUMENTS] == REDACTION_FAILED
    assert s.attributes[attrs.GEN_AI_TOOL_CALL_RESULT] == REDACTION_FAILED
    assert s.attributes[attrs.TOOL_OUTCOME] == "success"
    assert any("redaction hook raised" in r.getMessage() for r in caplog.records)
    assert "secret" not in caplog.text


def test_instrument_installs_the_redactor(monkeypatch: pytest.MonkeyPatch) -> None:
    """instrument(redactor=...) is how notebooks set the hook; checked without a provider round-trip."""
    from agent_otel import setup

    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")  # only the hooks are installed

    def redact(kind: str, value: Any) -> Any:
        return "R"

    setup.instrument(redactor=redact)
    assert to_json({"a": 1}, kind="tool_result") == "R"


def test_capture_switch_follows_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert content.capture_enabled() is False
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_and_event")
    config.reload_settings()
    assert content.capture_enabled() is True


def test_mocks_are_not_mistaken_for_models() -> None:
    """A MagicMock has every attribute (model_dump too): duck typing it would recurse for ages."""
    from unittest import mock

    out = json.loads(to_json({"m": mock.MagicMock(name="client")}, kind="tool_result"))
    assert out["m"].startswith("<MagicMock name='client'")
