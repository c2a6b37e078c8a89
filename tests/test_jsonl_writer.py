"""Durable appends (jsonl/writer.py): torn-tail fencing, file naming and mode, rotation, fsync
modes, a failing disk, short writes, fork, and concurrent writers."""

from __future__ import annotations

import logging
import os
import re
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from agent_otel.jsonl import reader, writer
from agent_otel.jsonl.writer import RecordWriter, fence_torn_tail
from crash_apps.records import file_mode, parse_line

NAME = re.compile(r"^agent-otel-(?P<service>[\w.-]+)-(?P<utc>\d{8}T\d{6})-(?P<pid>\d+)-(?P<seq>\d+)\.jsonl$")


def line(n: int, pad: int = 0) -> bytes:
    """A valid one-span record line (a start record), with optional padding."""
    span = (
        f'{{"traceId":"{n:032x}","spanId":"{n + 1:016x}","name":"s{n}","kind":1,"startTimeUnixNano":"{n}",'
        f'"attributes":[{{"key":"pad","value":{{"stringValue":"{"p" * pad}"}}}},'
        '{"key":"agent_otel.start_record","value":{"boolValue":true}}]}'
    )
    return ('{"resourceSpans":[{"scopeSpans":[{"scope":{"name":"t"},"spans":[' + span + "]}]}]}\n").encode()


def lines_of(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


# ------------------------------------------------------------------------------------ torn / corrupt


def test_torn_tail_is_fenced_before_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "record.jsonl"
    torn = line(2)[:57]  # a crash cut this line mid-write
    path.write_bytes(line(1) + torn)
    w = RecordWriter(path=path)
    w.write(line(3))
    w.close()
    assert lines_of(path) == [line(1)[:-1], torn, line(3)[:-1]]
    parse_line(line(3)[:-1])  # the new record is whole, on its own line

    result = reader.read(path)
    assert [s.name for s in result.spans] == ["s1", "s3"]
    (bad,) = result.corrupt
    assert bad.line == 2


def test_no_fence_when_the_file_ends_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "record.jsonl"
    path.write_bytes(line(1))
    w = RecordWriter(path=path)
    w.write(line(2))
    w.close()
    assert lines_of(path) == [line(1)[:-1], line(2)[:-1]]


def test_fence_on_a_write_only_descriptor_adds_a_harmless_newline(tmp_path: Path) -> None:
    path = tmp_path / "record.jsonl"
    path.write_bytes(b'{"torn')
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        assert fence_torn_tail(fd) is True
    finally:
        os.close(fd)
    assert path.read_bytes() == b'{"torn\n'


def test_corrupt_line_in_the_middle_is_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "record.jsonl"
    path.write_bytes(line(1) + b"\x00\xffnot json at all\n" + b'{"resourceSpans": 3}\n' + line(4))
    result = reader.read(path)
    assert [s.name for s in result.spans] == ["s1", "s4"]
    assert sorted(c.line for c in result.corrupt) == [2, 3]
    assert not any(c.torn for c in result.corrupt)
    # A tolerant reader of our own agrees: the good lines parse, the bad ones do not.
    good = []
    for raw in path.read_bytes().splitlines():
        try:
            good.append(parse_line(raw)[0]["name"])
        except Exception:
            continue
    assert good == ["s1", "s4"]


# ------------------------------------------------------------------------------- files and rotation


def test_per_process_file_name_and_mode(tmp_path: Path) -> None:
    w = RecordWriter(directory=tmp_path / "deep" / "dir", service_name="my agent/../x")
    assert w.path is None  # nothing is created before the first record
    assert not (tmp_path / "deep").exists()
    w.write(line(1))
    w.close()
    assert w.path is not None and w.path.parent == tmp_path / "deep" / "dir"
    match = NAME.match(w.path.name)
    assert match, w.path.name
    assert match["pid"] == str(os.getpid()) and match["seq"] == "1"
    assert "/" not in match["service"]  # a file name, never a path: "my_agent_.._x"
    assert file_mode(w.path) == 0o600


def test_rotation_by_size(tmp_path: Path) -> None:
    w = RecordWriter(directory=tmp_path, service_name="rot", max_bytes=4096)
    written = [line(i, pad=300) for i in range(100)]
    for data in written:
        w.write(data)
    w.close()
    files = sorted(tmp_path.glob("*.jsonl"), key=lambda p: int(NAME.match(p.name)["seq"]))  # type: ignore[index]
    assert len(files) >= 10
    assert [int(NAME.match(f.name)["seq"]) for f in files] == list(range(1, len(files) + 1))  # type: ignore[index]
    got = [raw for f in files for raw in lines_of(f)]
    assert got == [data[:-1] for data in written]  # every record, in order, none split across files
    for f in files:
        assert file_mode(f) == 0o600
        assert f.stat().st_size < 4096 + len(written[0])


def test_explicit_file_is_never_rotated(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    w = RecordWriter(path=path, max_bytes=100)
    for i in range(10):
        w.write(line(i))
    w.close()
    assert len(lines_of(path)) == 10 and list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("mode", ["always", "interval", "never"])
def test_fsync_modes(tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(writer.os, "fsync", counting_fsync)
    w = RecordWriter(directory=tmp_path, fsync=mode, fsync_interval_ms=10)
    for i in range(5):
        w.write(line(i))
    if mode == "interval":
        assert w._syncer is not None and w._syncer.is_alive()
        w._wake.wait(0.3)
        assert synced, "the background thread fsyncs within its interval"
    w.flush()
    w.close()
    assert w.path is not None and len(lines_of(w.path)) == 5
    if mode == "always":
        assert len(synced) >= 5
    if mode == "never":
        assert synced == []  # not even on flush() or close()
    if mode == "interval":
        assert w._syncer is not None
        w._syncer.join(1)
        assert not w._syncer.is_alive()


def test_interval_fsync_does_not_hold_the_write_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow fsync (a busy disk) must not block the application's writes."""
    in_fsync = threading.Event()
    release = threading.Event()

    def slow_fsync(fd: int) -> None:
        in_fsync.set()
        release.wait(5)

    monkeypatch.setattr(writer.os, "fsync", slow_fsync)
    w = RecordWriter(directory=tmp_path, fsync="interval", fsync_interval_ms=1000)
    w.write(line(1))
    flusher = threading.Thread(target=w.flush)
    flusher.start()
    assert in_fsync.wait(5)
    done = threading.Event()
    threading.Thread(target=lambda: (w.write(line(2)), done.set())).start()
    assert done.wait(2), "a write waited for fsync"
    release.set()
    flusher.join(5)
    w.close()
    assert w.path is not None and len(lines_of(w.path)) == 2


# ------------------------------------------------------------------------------------ failing disks


def test_unusable_directory_warns_once_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "records"
    blocker.write_text("a file where the directory should be")
    w = RecordWriter(directory=blocker, service_name="s")
    with caplog.at_level(logging.WARNING, logger="agent_otel.jsonl.writer"):
        for i in range(50):
            w.write(line(i))  # never raises
    warnings = [r for r in caplog.records if "cannot write the JSONL record" in r.getMessage()]
    assert len(warnings) == 1
    assert w.path is None

    blocker.unlink()
    monkeypatch.setattr(writer, "_RETRY_AFTER_S", 0.0)
    w._retry_at = 0.0
    with caplog.at_level(logging.WARNING, logger="agent_otel.jsonl.writer"):
        w.write(line(99))
    w.close()
    assert any("works again" in r.getMessage() for r in caplog.records)
    assert w.path is not None and w.path.name.endswith("-1.jsonl")  # failed attempts did not skip numbers
    assert lines_of(w.path) == [line(99)[:-1]]


def test_failing_disk_is_not_retried_for_every_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "records"
    blocker.write_text("")
    opens: list[Any] = []
    real_open = os.open
    monkeypatch.setattr(writer.os, "open", lambda *a, **k: (opens.append(a), real_open(*a, **k))[1])
    w = RecordWriter(directory=blocker / "sub")
    for i in range(1000):
        w.write(line(i))
    w.close()
    assert len(opens) <= 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_directory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    w = RecordWriter(directory=ro)
    with caplog.at_level(logging.WARNING, logger="agent_otel.jsonl.writer"):
        w.write(line(1))
    assert "cannot write the JSONL record" in caplog.text


def test_short_write_completes_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that stores only part of the line (disk nearly full) is finished, not left torn."""
    real_write = os.write

    def stingy_write(fd: int, data: bytes) -> int:
        return real_write(fd, bytes(data[:7]))

    proxy = types.SimpleNamespace(
        **{name: getattr(os, name) for name in dir(os) if not name.startswith("__")}
    )
    proxy.write = stingy_write
    monkeypatch.setattr(writer, "os", proxy)
    w = RecordWriter(directory=tmp_path)
    w.write(line(1))
    w.write(line(2))
    w.close()
    assert w.path is not None and lines_of(w.path) == [line(1)[:-1], line(2)[:-1]]


def test_writes_after_close_are_ignored(tmp_path: Path) -> None:
    w = RecordWriter(directory=tmp_path)
    w.write(line(1))
    w.close()
    w.write(line(2))
    w.flush()
    w.close()
    assert w.path is not None and lines_of(w.path) == [line(1)[:-1]]


def test_exactly_one_of_directory_or_path() -> None:
    with pytest.raises(ValueError):
        RecordWriter()
    with pytest.raises(ValueError):
        RecordWriter(directory="a", path="b")


# ------------------------------------------------------------------------------ concurrency, fork


def test_threads_writing_one_file_never_interleave(tmp_path: Path) -> None:
    w = RecordWriter(directory=tmp_path, fsync="interval", fsync_interval_ms=5)
    per_thread = 500

    def work(t: int) -> None:
        for i in range(per_thread):
            w.write(line(t * 10_000 + i, pad=(i * 37) % 3000))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    assert w.path is not None
    names = [parse_line(raw)[0]["name"] for raw in lines_of(w.path)]
    assert sorted(names) == sorted(f"s{t * 10_000 + i}" for t in range(8) for i in range(per_thread))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_writes_its_own_file(tmp_path: Path) -> None:
    w = RecordWriter(directory=tmp_path, service_name="forky")
    w.write(line(1))
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            w.write(line(2))
            w.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    w.write(line(3))
    w.close()
    files = {int(NAME.match(f.name)["pid"]): f for f in tmp_path.glob("*.jsonl")}  # type: ignore[index]
    assert set(files) == {os.getpid(), pid}
    assert lines_of(files[os.getpid()]) == [line(1)[:-1], line(3)[:-1]]
    assert lines_of(files[pid]) == [line(2)[:-1]]
    assert file_mode(files[pid]) == 0o600


def test_a_write_from_inside_a_write_does_not_deadlock(tmp_path: Path) -> None:
    """A finaliser (a stream proxy's __del__ ending its span) may run during a GC inside write()."""
    w = RecordWriter(directory=tmp_path, fsync="never")
    done = threading.Event()

    def nested() -> None:
        with w._lock:  # what the outer write holds when the GC runs the finaliser
            w.write(line(1))
        done.set()

    t = threading.Thread(target=nested, daemon=True)
    t.start()
    t.join(5)
    assert done.is_set(), "write() deadlocked when re-entered on the same thread"
    w.close()
    assert len(lines_of(next(tmp_path.glob("*.jsonl")))) == 1


def test_rotation_in_interval_mode_fsyncs_off_the_callers_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced_on: list[int] = []
    fsynced = threading.Event()
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced_on.append(threading.get_ident())
        real_fsync(fd)
        fsynced.set()

    monkeypatch.setattr(writer.os, "fsync", recording_fsync)
    w = RecordWriter(directory=tmp_path, max_bytes=1, fsync="interval", fsync_interval_ms=60_000)
    w.write(line(1))  # reaches max_bytes: the file is retired
    assert fsynced.wait(5)
    assert threading.get_ident() not in synced_on
    w.write(line(2))
    w.close()
    assert len(list(tmp_path.glob("*.jsonl"))) == 2
