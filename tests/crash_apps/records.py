"""Read a JSONL record strictly, for the crash-safety tests: every line must be OTLP ``TracesData``.

Independent of agent_otel's own reader on purpose: each line is checked with protobuf's own JSON
parser (``google.protobuf.json_format.Parse`` into ``TracesData``), the check the issue asks for.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.trace.v1 import trace_pb2

START_RECORD = "agent_otel.start_record"
STATUS_ERROR = 2


@dataclass
class Rec:
    """One record line: one span, as a start or an end record."""

    path: Path
    line: int
    span: dict[str, Any]
    resource: dict[str, Any]
    attributes: dict[str, Any]

    @property
    def span_id(self) -> str:
        return self.span["spanId"]

    @property
    def name(self) -> str:
        return self.span["name"]

    @property
    def is_start(self) -> bool:
        return "endTimeUnixNano" not in self.span

    @property
    def status_code(self) -> int:
        return int(self.span.get("status", {}).get("code", 0))


@dataclass
class Record:
    """What a set of record files holds."""

    recs: list[Rec] = field(default_factory=list)
    torn: list[tuple[Path, int, bytes]] = field(default_factory=list)  # lines that did not parse
    empty_lines: int = 0

    def starts(self, span_id: str) -> list[Rec]:
        return [r for r in self.recs if r.span_id == span_id and r.is_start]

    def ends(self, span_id: str) -> list[Rec]:
        return [r for r in self.recs if r.span_id == span_id and not r.is_start]

    def by_name(self, name: str) -> list[Rec]:
        return [r for r in self.recs if r.name == name]

    def span_ids(self) -> set[str]:
        return {r.span_id for r in self.recs}

    def end_of(self, span_id: str) -> Rec:
        ends = self.ends(span_id)
        assert len(ends) == 1, f"span {span_id}: {len(ends)} end records"
        return ends[0]

    def assert_no_duplicates(self) -> None:
        """At most one start and one end record per span id; a start record never carries an end."""
        seen: dict[tuple[str, bool], Rec] = {}
        for rec in self.recs:
            key = (rec.span_id, rec.is_start)
            assert key not in seen, f"duplicate {'start' if rec.is_start else 'end'} record: {rec.name} {key}"
            seen[key] = rec
            if rec.is_start:
                assert rec.attributes.get(START_RECORD) is True, f"start record without marker: {rec.name}"
                assert "status" not in rec.span
            else:
                assert START_RECORD not in rec.attributes, f"end record with the start marker: {rec.name}"


def decode_value(value: dict[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return value["boolValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "bytesValue" in value:
        return value["bytesValue"]
    if "arrayValue" in value:
        return [decode_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return {kv["key"]: decode_value(kv["value"]) for kv in value["kvlistValue"].get("values", [])}
    return None


def parse_line(line: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check one line with protobuf's parser; return (span, resource) of its single span."""
    json_format.Parse(line, trace_pb2.TracesData())  # raises on anything that is not TracesData
    doc = json.loads(line)
    (resource_spans,) = doc["resourceSpans"]
    (scope_spans,) = resource_spans["scopeSpans"]
    (span,) = scope_spans["spans"]
    return span, resource_spans.get("resource", {})


def record_files(where: Path) -> list[Path]:
    if where.is_file():
        return [where]
    return sorted(where.rglob("*.jsonl"))


def read_record(where: Path | Iterable[Path], *, allow_torn: bool = False) -> Record:
    """Read every record file under ``where`` (a directory, a file, or a list of files).

    Every line must parse as OTLP ``TracesData`` holding one span, except (``allow_torn``) lines cut
    by a crash, which are collected in ``Record.torn``.
    """
    files = record_files(where) if isinstance(where, Path) else list(where)
    record = Record()
    for path in files:
        data = path.read_bytes()
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for number, line in enumerate(lines, 1):
            if not line:
                record.empty_lines += 1
                continue
            try:
                span, resource = parse_line(line)
            except Exception as exc:
                if not allow_torn:
                    raise AssertionError(f"{path.name}:{number} is not OTLP TracesData: {exc}") from exc
                record.torn.append((path, number, line))
                continue
            attributes = {kv["key"]: decode_value(kv["value"]) for kv in span.get("attributes", [])}
            record.recs.append(Rec(path, number, span, resource, attributes))
    return record


def file_mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)
