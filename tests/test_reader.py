"""The record reader on records made by real instrumented runs (in-process and SIGKILLed)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from agent_otel.jsonl import reader
from cli_fixtures import (
    CONVERSATION,
    KILLED_CONVERSATION,
    killed_run,
    with_corrupt_lines,
    write_real_run,
)


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("reader")
    real = write_real_run(base / "real")
    killed = killed_run(base / "killed")
    return {"base": base, "real": real, "killed": killed}


def test_real_run_merges_start_and_end_records(records: dict[str, Path]) -> None:
    result = reader.read(records["real"])
    lines = records["real"].read_bytes().splitlines()
    assert result.records == len(lines) == 2 * len(result.spans)
    assert result.start_records == result.end_records == len(result.spans)
    assert not result.corrupt and not result.unfinished
    names = [s.name for s in result.spans]
    assert names.count("invoke_agent weather-bot") == 3
    assert names.count("chat gpt-4o-mini") == 5
    for s in result.spans:
        assert s.finished and s.end_time_unix_nano is not None
        assert reader.START_RECORD not in s.attributes
        assert s.resource["service.name"] == "fixture-agent"
        assert s.path == str(records["real"])
    convs = {s.attributes.get("gen_ai.conversation.id") for s in result.spans}
    assert convs == {CONVERSATION, None}
    bad = next(s for s in result.spans if s.name == "execute_tool book_flight")
    assert bad.status_code == reader.STATUS_ERROR
    assert bad.attributes["error.type"] == "ToolValidationError"
    failing = next(s for s in result.spans if s.name == "execute_tool get_stock_price")
    assert failing.attributes["error.type"] == "ConnectionError"
    assert any(e.name == "exception" for e in failing.events)


def test_killed_run_reports_unfinished_spans_and_recovers_them(records: dict[str, Path]) -> None:
    result = reader.read(records["killed"])
    assert not result.corrupt
    unfinished = {s.name: s for s in result.unfinished}
    assert set(unfinished) == {"invoke_agent researcher", "execute_tool slow_search"}
    llm = next(s for s in result.spans if s.name == "chat gpt-4o")
    assert llm.finished
    agent = unfinished["invoke_agent researcher"]
    assert agent.attributes["gen_ai.conversation.id"] == KILLED_CONVERSATION
    assert agent.end_time_unix_nano is None and agent.duration_ns is None
    tool = unfinished["execute_tool slow_search"]
    # last sign of life of the trace in this file: the latest start/end time recorded
    assert agent.last_seen_unix_nano == tool.start_time_unix_nano
    assert agent.last_seen_unix_nano >= llm.end_time_unix_nano

    rec = reader.recover(agent)
    assert rec.recovered and not rec.finished
    assert rec.status_code == 2 and rec.status_message == reader.RECOVERED_STATUS_MESSAGE
    assert rec.attributes["error.type"] == "agent_otel.unfinished"
    assert rec.attributes["agent_otel.recovered"] is True
    assert rec.end_time_unix_nano == agent.last_seen_unix_nano
    keys = [kv["key"] for kv in rec.otlp["attributes"]]
    assert "agent_otel.start_record" not in keys
    assert keys.count("error.type") == 1
    assert rec.otlp["endTimeUnixNano"] == str(rec.end_time_unix_nano)
    assert rec.otlp["status"] == {"code": 2, "message": reader.RECOVERED_STATUS_MESSAGE}
    # the original stays untouched
    assert "endTimeUnixNano" not in agent.otlp
    assert reader.recover(llm) is llm
    # an explicit end time wins, but never before the start
    assert reader.recover(tool, 5).end_time_unix_nano == tool.start_time_unix_nano
    assert [s.recovered for s in result.with_recovered()].count(True) == 2


def test_corrupt_middle_line_and_torn_tail_are_skipped_and_reported(
    records: dict[str, Path], tmp_path: Path
) -> None:
    bad = with_corrupt_lines(records["real"], tmp_path / "bad.jsonl")
    good = reader.read(records["real"])
    result = reader.read(bad)
    assert len(result.corrupt) == 2
    middle, torn = result.corrupt
    assert (middle.line, middle.torn) == (4, False)
    assert str(middle).startswith(f"{bad}:4: not valid JSON")
    assert torn.torn and torn.line == len(bad.read_bytes().splitlines())
    assert "torn last line" in torn.reason
    assert result.torn == [torn]
    assert len(result.spans) == len(good.spans)
    assert all(s.finished for s in result.spans)


def test_directory_is_read_recursively_skipping_hidden_and_other_files(
    records: dict[str, Path], tmp_path: Path
) -> None:
    shutil.copy(records["real"], tmp_path / "a.jsonl")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    shutil.copy(records["killed"], tmp_path / "sub" / "deeper" / "b.jsonl")
    (tmp_path / "notes.txt").write_text("not a record\n")
    (tmp_path / ".hidden.jsonl").write_text("garbage\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.jsonl").write_text("garbage\n")
    files = reader.find_files(tmp_path)
    assert [f.name for f in files] == ["a.jsonl", "b.jsonl"]
    result = reader.read(tmp_path)
    assert not result.corrupt
    assert len(result.unfinished) == 2
    assert len(result.spans) == len(reader.read(records["real"]).spans) + 3
    with pytest.raises(FileNotFoundError):
        reader.read(tmp_path / "missing")


def test_end_record_wins_and_duplicates_are_harmless(records: dict[str, Path], tmp_path: Path) -> None:
    lines = records["killed"].read_bytes().splitlines(keepends=True)
    # end record before start record, and everything twice
    f = tmp_path / "dup.jsonl"
    f.write_bytes(b"".join(reversed(lines)) + b"".join(lines))
    result = reader.read(f)
    assert len(result.spans) == 3
    llm = next(s for s in result.spans if s.name == "chat gpt-4o")
    assert llm.finished


def test_empty_file_and_blank_lines(tmp_path: Path) -> None:
    f = tmp_path / "empty.jsonl"
    f.write_bytes(b"")
    result = reader.read(f)
    assert result.spans == [] and result.corrupt == [] and result.files == [str(f)]
    f.write_bytes(b"\n   \n")
    assert reader.read(f).corrupt == []


def _line(span: dict, resource_attrs: list | None = None) -> bytes:
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [{"scope": {"name": "t"}, "spans": [span]}],
                "resource": {"attributes": resource_attrs or []},
            }
        ]
    }
    return json.dumps(doc).encode()


def test_parse_line_rejects_what_is_not_a_span_record() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        reader.parse_line(b"{oops")
    with pytest.raises(ValueError, match="no resourceSpans"):
        reader.parse_line(b'{"hello": 1}')
    with pytest.raises(ValueError, match="traceId"):
        reader.parse_line(_line({"traceId": "xyz", "spanId": "00f067aa0ba902b7", "name": "x"}))
    assert reader.parse_line(b'{"resourceSpans": []}') == []


def test_parse_line_accepts_base64_ids_and_start_marker() -> None:
    tid = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
    sid = bytes.fromhex("00f067aa0ba902b7")
    span = {
        "traceId": base64.b64encode(tid).decode(),
        "spanId": base64.b64encode(sid).decode(),
        "name": "x",
        "startTimeUnixNano": "1",
        "endTimeUnixNano": "2",
        "attributes": [{"key": "agent_otel.start_record", "value": {"boolValue": True}}],
    }
    (rec,) = reader.parse_line(_line(span))
    assert rec.trace_id == tid.hex() and rec.span_id == sid.hex()
    assert rec.is_start  # the marker wins even with an end time


def test_decode_attributes_all_value_kinds() -> None:
    attrs = [
        {"key": "s", "value": {"stringValue": "a"}},
        {"key": "b", "value": {"boolValue": True}},
        {"key": "i", "value": {"intValue": "9007199254740993"}},
        {"key": "d", "value": {"doubleValue": 1.5}},
        {"key": "nan", "value": {"doubleValue": "NaN"}},
        {"key": "arr", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "x"}]}}},
        {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": False}}]}}},
        {"key": "bytes", "value": {"bytesValue": base64.b64encode(b"\x00\x01").decode()}},
        {"key": "empty", "value": {}},
        {"no-key": 1},
    ]
    d = reader.decode_attributes(attrs)
    assert d["s"] == "a" and d["b"] is True and d["i"] == 9007199254740993 and d["d"] == 1.5
    assert d["nan"] != d["nan"]
    assert d["arr"] == [1, "x"] and d["kv"] == {"k": False} and d["bytes"] == b"\x00\x01"
    assert d["empty"] is None and "no-key" not in d


def test_file_cursor_waits_for_a_line_being_written(records: dict[str, Path], tmp_path: Path) -> None:
    lines = records["real"].read_bytes().splitlines(keepends=True)
    f = tmp_path / "live.jsonl"
    f.write_bytes(lines[0] + lines[1][:50])
    cur = reader.FileCursor(f)
    recs, bad = cur.poll()
    assert len(recs) == 1 and bad == []
    assert cur.offset == len(lines[0]) and cur.line_no == 2
    assert cur.poll() == ([], [])  # the half line stays pending
    with f.open("ab") as fh:
        fh.write(lines[1][50:] + lines[2])
    recs, bad = cur.poll()
    assert [r.line for r in recs] == [2, 3] and bad == []
    # a torn line fenced by the writer (newline, then more records) becomes a corrupt line
    with f.open("ab") as fh:
        fh.write(lines[3][:40] + b"\n" + lines[4])
    recs, bad = cur.poll()
    assert [r.line for r in recs] == [5] and [b.line for b in bad] == [4]
    # truncation starts again from the top
    f.write_bytes(lines[0])
    recs, _ = cur.poll()
    assert [r.line for r in recs] == [1]


def test_file_cursor_at_end_and_read_from_offset(records: dict[str, Path]) -> None:
    data = records["real"].read_bytes()
    cur = reader.FileCursor(records["real"], at_end=True)
    assert cur.offset == len(data) and cur.line_no == data.count(b"\n") + 1
    assert cur.poll() == ([], [])
    first_nl = data.index(b"\n") + 1
    recs, bad, nxt, line_no = reader.read_from(records["real"], first_nl, line_no=2)
    assert recs[0].line == 2 and nxt == len(data) and line_no == data.count(b"\n") + 1 and not bad


def test_names_mirror_the_attributes_module() -> None:
    attributes = pytest.importorskip("agent_otel.attributes")
    assert reader.START_RECORD == attributes.START_RECORD
    assert reader.RECOVERED == attributes.RECOVERED
    assert reader.UNFINISHED_ERROR_TYPE == attributes.UNFINISHED_ERROR_TYPE
    from agent_otel.cli import _common

    assert attributes.CATEGORY == _common.CATEGORY
    assert attributes.INTERRUPTED == _common.INTERRUPTED
    assert attributes.TOOL_OUTCOME == _common.TOOL_OUTCOME
