"""The record reader on records made by real instrumented runs (in-process and SIGKILLed)."""

from __future__ import annotations

import base64
import copy
import dataclasses
import io
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
    assert [reader.recover(s).recovered for s in result.spans].count(True) == 2


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
    assert rec.key == (tid.hex(), sid.hex())
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


# ------------------------------------------------------------------------------- malformed span records


def test_wrong_types_make_a_corrupt_line_not_a_crash(records: dict[str, Path], tmp_path: Path) -> None:
    """The reviewer's case: a span whose "status" is a string, in a resource that is an array."""
    lines = records["real"].read_bytes().splitlines()
    doc = json.loads(lines[2])
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["status"] = "ok"
    doc["resourceSpans"][0]["resource"] = [1]
    f = tmp_path / "bad.jsonl"
    f.write_bytes(b"\n".join([lines[0], lines[1], json.dumps(doc).encode()]) + b"\n")
    result = reader.read(f)
    assert [(c.line, c.torn) for c in result.corrupt] == [(3, False)]
    assert str(result.corrupt[0]) == f'{f}:3: "resource" is an array, expected an object'
    assert len(result.spans) == 2
    doc["resourceSpans"][0]["resource"] = {}
    with pytest.raises(ValueError, match='span "status" is a string, expected an object'):
        reader.parse_line(json.dumps(doc).encode())


def _real_end_record_with_everything(path: Path) -> dict:
    """An end record of the real run with events and an error status, plus a link and extra fields."""
    for line in path.read_bytes().splitlines():
        doc = json.loads(line)
        span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        if span["name"] == "execute_tool get_stock_price" and "endTimeUnixNano" in span:
            break
    else:  # pragma: no cover
        raise AssertionError("no end record of execute_tool get_stock_price")
    assert span["events"] and span["status"]["code"] == 2
    span["links"] = [
        {
            "traceId": span["traceId"],
            "spanId": span["spanId"],
            "traceState": "a=b",
            "flags": 1,
            "attributes": [{"key": "l", "value": {"intValue": "1"}}],
        }
    ]
    span["traceState"] = "k=v"
    span["droppedAttributesCount"] = 0
    span["attributes"] += [
        {"key": "b", "value": {"boolValue": True}},
        {"key": "d", "value": {"doubleValue": 1.5}},
        {"key": "arr", "value": {"arrayValue": {"values": [{"intValue": "1"}]}}},
        {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"stringValue": "v"}}]}}},
        {"key": "bytes", "value": {"bytesValue": "AAE="}},
    ]
    doc["resourceSpans"][0]["schemaUrl"] = "https://opentelemetry.io/schemas/1.26.0"
    doc["resourceSpans"][0]["scopeSpans"][0]["scope"]["attributes"] = [
        {"key": "s", "value": {"stringValue": "x"}}
    ]
    return doc


# One value of every JSON type, and integers out of every range the format has.
_WRONG = [None, True, False, 0, -1, 1.5, 2**31, 2**64, "", "x", "12", [], [1], [{}], {}, {"a": 1}]


def _mutations(doc: object) -> list[tuple[str, object]]:
    """Every copy of ``doc`` with one value (at any depth) replaced by one of ``_WRONG`` or removed."""
    out: list[tuple[str, object]] = []

    def walk(node: object, path: tuple) -> None:
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))  # type: ignore[union-attr]
        for key, child in items:
            here = (*path, key)
            for wrong in [*_WRONG, "REMOVE"]:
                if wrong == "REMOVE" and not isinstance(node, dict):
                    continue
                if wrong is not None and wrong == child and type(wrong) is type(child):
                    continue
                mutated = copy.deepcopy(doc)
                target = mutated
                for k in path:
                    target = target[k]
                if wrong == "REMOVE":
                    del target[key]
                else:
                    target[key] = copy.deepcopy(wrong)
                out.append(("/".join(map(str, here)) + f" = {wrong!r}", mutated))
            if isinstance(child, (dict, list)):
                walk(child, here)

    walk(doc, ())
    return out


def _use_stdlib_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "_loads", reader._std_loads)
    monkeypatch.setattr(reader, "_JSON_ERRORS", reader._STD_JSON_ERRORS)


@pytest.mark.parametrize("loader", ["default", "stdlib json"])
def test_fuzz_wrong_json_types_never_raise(
    records: dict[str, Path], loader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mutate the type of each field of a real record line in turn: parse_line either rejects the line
    with a ValueError (a corrupt line) or returns records that merge, recover, show and export."""
    from agent_otel.cli import _common as c
    from agent_otel.cli import export, stats, view

    if loader == "stdlib json":
        _use_stdlib_json(monkeypatch)
    base = _real_end_record_with_everything(records["real"])
    assert reader.parse_line(json.dumps(base).encode())  # the unmutated line is fine
    mutations = _mutations(base)
    assert len(mutations) > 1000
    rejected = 0
    for what, doc in mutations:
        line = json.dumps(doc).encode()
        try:
            recs = reader.parse_line(line, "f.jsonl", 1)
        except ValueError as exc:
            assert str(exc), what
            rejected += 1
            continue
        try:
            spans = reader.merge_records(recs)
            spans += [reader.recover(dataclasses.replace(s, finished=False)) for s in spans]
            traces = c.build_traces(spans)
            sink = io.StringIO()
            view.render(
                traces,
                reader.ReadResult(spans=spans),
                sink,
                style=c.Style(True),
                symbols=c.UNICODE,
                width=80,
                show_attributes=True,
            )
            json.dumps(view.to_json(traces, reader.ReadResult(spans=spans)), allow_nan=False)
            json.dumps(stats.compute(traces), allow_nan=False)
            export.build_request(export.prepare(spans)).SerializeToString()
        except Exception as exc:  # pragma: no cover - the failure message is the point
            raise AssertionError(f"{what}: accepted by parse_line, then {exc!r}") from exc
    assert 0 < rejected < len(mutations)


def test_stdlib_json_rejects_lone_surrogates_and_deep_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    _use_stdlib_json(monkeypatch)
    span = {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7", "name": "x"}
    assert reader.parse_line(_line(span))
    with pytest.raises(ValueError, match="not valid JSON"):
        reader.parse_line(_line(span).replace(b'"name": "x"', b'"name": "\\ud800"'))
    assert reader.parse_line(_line(span).replace(b'"name": "x"', b'"name": "\\ud83d\\ude00"'))[0]
    with pytest.raises(ValueError, match="not valid JSON"):
        reader.parse_line(b"[" * 100_000)


def test_values_nested_too_deeply_are_rejected() -> None:
    value: dict = {"stringValue": "x"}
    for _ in range(200):
        value = {"arrayValue": {"values": [value]}}
    span = {
        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
        "spanId": "00f067aa0ba902b7",
        "attributes": [{"key": "deep", "value": value}],
    }
    with pytest.raises(ValueError, match="nested too deeply"):
        reader.parse_line(_line(span))


def test_enum_names_and_base64_link_ids_are_normalised() -> None:
    tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    span = {
        "traceId": tid,
        "spanId": "00f067aa0ba902b7",
        "kind": "SPAN_KIND_CLIENT",
        "startTimeUnixNano": 1,
        "endTimeUnixNano": "2",
        "status": {"code": "STATUS_CODE_ERROR"},
        "links": [{"traceId": base64.b64encode(bytes.fromhex(tid)).decode(), "spanId": ""}],
    }
    (rec,) = reader.parse_line(_line(span))
    (s,) = reader.merge_records([rec])
    assert (s.kind, s.status_code, s.start_time_unix_nano, s.end_time_unix_nano) == (3, 2, 1, 2)
    assert rec.span["links"][0]["traceId"] == tid
    with pytest.raises(ValueError, match="traceId"):
        reader.parse_line(_line({**span, "traceId": "4bf92f35 7b34da6a3ce929d0e0e4736"}))


def test_cli_view_and_stats_on_a_file_of_mutated_lines(
    records: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`agent-otel view`/`stats` on good lines followed by every mutation: exit 0, a warning counting
    exactly the lines parse_line rejects, each reported as file:line."""
    from agent_otel.cli.main import main

    good = records["real"].read_bytes()
    n_good = good.count(b"\n")
    mutated = [
        json.dumps(doc).encode() for _, doc in _mutations(_real_end_record_with_everything(records["real"]))
    ]
    bad_lines = []
    for i, line in enumerate(mutated, n_good + 1):
        try:
            reader.parse_line(line)
        except ValueError:
            bad_lines.append(i)
    f = tmp_path / "fuzz.jsonl"
    f.write_bytes(good + b"\n".join(mutated) + b"\n")
    for command in (["view"], ["view", "--json"], ["stats"], ["stats", "--json"]):
        assert main([*command, str(f)]) == 0, command
        out, err = capsys.readouterr()
        if "--json" in command:
            json.loads(out)
        assert f"warning: skipped {len(bad_lines)} unreadable lines" in err
        assert f"{f}:{bad_lines[0]}: " in err
    assert [c.line for c in reader.read(f).corrupt] == bad_lines


# ---------------------------------------------------------------------------------------- skip_to_end


@pytest.mark.parametrize("tail", [b"", b'{"resourceSpans": [ half a li'])
def test_file_cursor_skip_to_end_seeks_and_leaves_a_partial_last_line(
    records: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tail: bytes
) -> None:
    lines = records["real"].read_bytes().splitlines(keepends=True)
    f = tmp_path / "live.jsonl"
    f.write_bytes(b"".join(lines[:5]) + tail)
    monkeypatch.setattr(reader, "_TAIL_CHUNK", 7)  # the last newline is several chunks back
    monkeypatch.setattr(reader, "_CHUNK", 64)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("skip_to_end read the whole file"))
    cur = reader.FileCursor(f, at_end=True)
    assert (cur.offset, cur.line_no) == (len(b"".join(lines[:5])), 6)
    with f.open("ab") as fh:
        fh.write((lines[5][len(tail) :] if tail else lines[5]) + lines[6])
    recs, bad = cur.poll()
    if tail:  # the partial line was completed with the rest of another line: corrupt, reported as line 6
        assert [b.line for b in bad] == [6] and [r.line for r in recs] == [7]
    else:
        assert bad == [] and [r.line for r in recs] == [6, 7]


def test_file_cursor_skip_to_end_without_any_newline(tmp_path: Path) -> None:
    f = tmp_path / "one.jsonl"
    f.write_bytes(b'{"resourceSpans": [')
    cur = reader.FileCursor(f, at_end=True)
    assert (cur.offset, cur.line_no) == (0, 1)
    cur = reader.FileCursor(tmp_path / "missing.jsonl", at_end=True)
    assert (cur.offset, cur.line_no) == (0, 1)


# -------------------------------------------------------------------------------------------- recover


def test_recover_keeps_every_field_it_does_not_change(records: dict[str, Path]) -> None:
    @dataclasses.dataclass
    class TaggedSpan(reader.Span):
        tag: str = ""

    agent = next(s for s in reader.read(records["killed"]).unfinished if s.name.startswith("invoke_agent"))
    tagged = TaggedSpan(**{f.name: getattr(agent, f.name) for f in dataclasses.fields(agent)}, tag="t")
    rec = reader.recover(tagged)
    assert type(rec) is TaggedSpan and rec.tag == "t"
    changed = {"end_time_unix_nano", "status_code", "status_message", "attributes", "events", "otlp"}
    for f in dataclasses.fields(reader.Span):
        if f.name not in changed | {"recovered"}:
            assert getattr(rec, f.name) == getattr(agent, f.name), f.name
    assert rec.recovered and not agent.recovered
