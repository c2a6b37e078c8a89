"""``agent-otel view``, ``stats`` and ``tail`` on records of real instrumented runs (one SIGKILLed,
one file with a corrupt middle line and a torn tail)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent_otel.cli import stats, tail, view
from agent_otel.cli.main import build_parser, main
from cli_fixtures import CONVERSATION, KILLED_CONVERSATION, killed_run, with_corrupt_lines, write_real_run
from crash_apps.subprocesses import default_sigint

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("cli")
    real = write_real_run(base / "runs" / "real")
    killed = killed_run(base / "runs" / "killed")
    corrupt = with_corrupt_lines(real, base / "runs" / "corrupt.jsonl")
    return {"dir": base / "runs", "real": real, "killed": killed, "corrupt": corrupt}


class Utf8IO(io.StringIO):
    encoding = "utf-8"


class FakeTTY(Utf8IO):
    def isatty(self) -> bool:
        return True


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------------------------- view


def test_view_shows_conversations_turns_and_span_trees(
    records: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run_cli(["view", str(records["dir"])], capsys)
    assert rc == 0
    assert not ANSI.search(out)  # not a terminal: no colour
    headers = [line for line in out.splitlines() if not line.startswith(" ") and line.strip()]
    assert headers[0].startswith(
        f"conversation {CONVERSATION}  3 turns · 5 LLM calls · tokens 564 in / 110 out"
    )
    assert headers[1].startswith(f"conversation {KILLED_CONVERSATION}")
    assert headers[2].startswith("(no conversation)")
    assert "2 never ended" in headers[1]
    assert out.count("turn 1 · trace ") == 3 and "turn 3 · trace " in out
    assert out.count("never ended (process killed?)") == 2
    assert re.search(r"⚠ invoke_agent researcher\s+≥\d", out)
    assert "ERROR ToolValidationError: missing required argument 'destination'" in out
    assert "ERROR ConnectionError: market data service unreachable" in out
    assert "ERROR KeyboardInterrupt (interrupted)" in out
    assert re.search(r"├─ ✓ chat gpt-4o-mini\s+[\d.]+ ms  gpt-4o-mini-2024-07-18  100→20 tok", out)
    assert re.search(r"└─ ✓ node summarise", out)
    assert "2 conversations, 5 traces, 16 spans (3 errors, 2 never ended) from 3 files" in out
    # the corrupt file: a warning with counts and file:line, the rest still read
    assert "warning: skipped 2 unreadable lines (1 torn last line)" in err
    assert f"{records['corrupt']}:4: not valid JSON" in err


def test_view_colour_and_width_only_on_a_terminal(
    records: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = build_parser().parse_args(["view", str(records["real"])])
    monkeypatch.setenv("COLUMNS", "70")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    tty = FakeTTY()
    assert view.run(args, out=tty, err=io.StringIO()) == 0
    text = tty.getvalue()
    assert ANSI.search(text)
    assert max(len(ANSI.sub("", line)) for line in text.splitlines()) <= 70
    assert "…" in text  # long lines were cut
    monkeypatch.setenv("NO_COLOR", "1")
    tty = FakeTTY()
    view.run(args, out=tty, err=io.StringIO())
    assert not ANSI.search(tty.getvalue())
    # --color always on a pipe
    plain = io.StringIO()
    view.run(build_parser().parse_args(["view", str(records["real"]), "--color", "always"]), out=plain)
    assert ANSI.search(plain.getvalue())


@pytest.mark.parametrize(
    ("extra", "present", "absent"),
    [
        (["--conversation", KILLED_CONVERSATION], ["invoke_agent researcher"], ["weather-bot", "nightly"]),
        (["--conversation", "none"], ["invoke_workflow nightly-report"], ["weather-bot", "researcher"]),
        (
            ["--category", "llm"],
            ["chat gpt-4o-mini", "chat gpt-4o "],
            ["invoke_agent", "execute_tool", "node"],
        ),
        (["--category", "tool", "--conversation", CONVERSATION], ["book_flight"], ["chat", "slow_search"]),
        (["--errors"], ["book_flight", "KeyboardInterrupt", "researcher"], ["get_weather", "nightly"]),
        (["--since", "1h"], ["weather-bot", "researcher"], []),
    ],
)
def test_view_filters(
    records: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    present: list[str],
    absent: list[str],
) -> None:
    rc, out, _ = run_cli(["view", str(records["dir"]), *extra], capsys)
    assert rc == 0
    for text in present:
        assert text in out
    for text in absent:
        assert text not in out


def test_view_trace_filter_and_time_range(
    records: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run_cli(["view", str(records["killed"]), "--json"], capsys)
    tid = json.loads(out)["conversations"][0]["traces"][0]["trace_id"]
    _, out, _ = run_cli(["view", str(records["dir"]), "--trace", tid[:8]], capsys)
    assert f"trace {tid}" in out and out.count("turn 1 · trace") == 1
    rc, out, err = run_cli(["view", str(records["dir"]), "--since", "2099-01-01"], capsys)
    assert rc == 0 and out == "" and "no trace matches" in err
    rc, out, _ = run_cli(["view", str(records["dir"]), "--until", "2000-01-01T00:00:00Z"], capsys)
    assert rc == 0 and out == ""
    with pytest.raises(SystemExit):
        main(["view", str(records["dir"]), "--since", "yesterday-ish"])
    assert "invalid time" in capsys.readouterr().err


def test_view_json(records: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(["view", str(records["dir"]), "--json"], capsys)
    assert rc == 0
    data = json.loads(out)
    convs = {c["conversation_id"]: c for c in data["conversations"]}
    assert set(convs) == {CONVERSATION, KILLED_CONVERSATION, None}
    turns = convs[CONVERSATION]["traces"]
    assert len(turns) == 3
    root = turns[1]["spans"][0]
    assert root["name"] == "invoke_agent weather-bot" and root["category"] == "agent"
    children = [ch["name"] for ch in root["children"]]
    assert children == [
        "chat gpt-4o-mini",
        "execute_tool book_flight",
        "execute_tool get_stock_price",
        "chat gpt-4o-mini",
    ]
    llm = root["children"][0]
    assert (
        llm["input_tokens"] == 101 and llm["model"] == "gpt-4o-mini-2024-07-18" and llm["status"] == "unset"
    )
    assert root["children"][1]["error_type"] == "ToolValidationError"
    killed = convs[KILLED_CONVERSATION]["traces"][0]
    assert killed["unfinished_count"] == 2
    assert killed["spans"][0]["status"] == "unfinished" and killed["spans"][0]["last_seen_time"]
    assert data["summary"]["unfinished"] == 2 and data["summary"]["spans"] == 16
    first = data["corrupt_lines"][0]
    assert (first["line"], first["torn"]) == (4, False)


def test_view_errors_for_unreadable_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run_cli(["view", str(tmp_path / "missing")], capsys)
    assert rc == 1 and "no such file or directory" in err
    rc, _, err = run_cli(["view", str(tmp_path)], capsys)
    assert rc == 1 and "no *.jsonl record files" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    rc, _, err = run_cli(["view", str(empty)], capsys)
    assert rc == 1 and "is empty" in err
    empty.write_text("garbage\n{}\n")
    rc, _, err = run_cli(["view", str(empty)], capsys)
    assert rc == 1 and "no readable span records" in err and "skipped 2 unreadable lines" in err


# ---------------------------------------------------------------------------------------------- stats


def test_stats_text(records: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(["stats", str(records["dir"])], capsys)
    assert rc == 0 and "skipped 2 unreadable lines" in err
    assert re.search(r"gpt-4o-mini-2024-07-18\s+5\s+0\s+564\s+110\s+[\d.]+ ms\s+[\d.]+ ms", out)
    assert re.search(r"book_flight\s+1\s+0\s+1\s", out)
    assert re.search(r"get_stock_price\s+1\s+1\s+0\s", out)
    assert re.search(rf"{CONVERSATION}\s+3\s+3\s+5\s+564\s+110\s+3", out)
    assert re.search(r"invoke_agent researcher\s+killed: 2 spans never ended", out)
    assert re.search(r"invoke_agent weather-bot\s+interrupted: KeyboardInterrupt", out)


def test_stats_json(records: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(["stats", str(records["dir"]), "--json"], capsys)
    assert rc == 0
    data = json.loads(out)
    models = {m["model"]: m for m in data["models"]}
    m = models["gpt-4o-mini-2024-07-18"]
    assert (m["calls"], m["input_tokens"], m["output_tokens"], m["errors"]) == (5, 564, 110, 0)
    assert 0 < m["p50_ms"] <= m["p95_ms"]
    tools = {t["tool"]: t for t in data["tools"]}
    assert tools["book_flight"]["validation_errors"] == 1 and tools["book_flight"]["failures"] == 0
    assert tools["get_stock_price"]["failures"] == 1
    assert tools["slow_search"]["unfinished"] == 1 and tools["slow_search"]["p50_ms"] is None
    convs = {c["conversation_id"]: c for c in data["conversations"]}
    assert convs[CONVERSATION]["turns"] == 3 and convs[KILLED_CONVERSATION]["turns"] == 1
    assert {p["what"].split(":")[0] for p in data["interrupted"]} == {"killed", "interrupted"}
    assert data["corrupt_lines"] == 2
    _, out, _ = run_cli(
        ["stats", str(records["dir"]), "--json", "--conversation", KILLED_CONVERSATION], capsys
    )
    assert [m["model"] for m in json.loads(out)["models"]] == ["gpt-4o"]


def test_percentile() -> None:
    assert stats.percentile([], 0.5) is None
    assert stats.percentile([5], 0.95) == 5
    assert stats.percentile([1, 2, 3, 4], 0.5) == 2.5
    assert stats.percentile(list(range(1, 101)), 0.95) == pytest.approx(95.05)


# ----------------------------------------------------------------------------------------------- tail


def test_tail_once_prints_starts_and_ends(
    records: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run_cli(["tail", str(records["killed"]), "--once"], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert len(lines) == 4  # agent start, llm start, llm end, tool start
    assert re.search(r"▶ invoke_agent researcher  conversation conv-killed · trace [0-9a-f]{16}$", lines[0])
    assert re.search(r"^\S+   ▶ chat gpt-4o$", lines[1])  # indented under the agent
    assert re.search(r"^\S+   ✓ chat gpt-4o  [\d.]+ ms  50→10 tok$", lines[2])
    assert "▶ execute_tool slow_search" in lines[3]
    rc, out, _ = run_cli(["tail", str(records["real"]), "--once", "--errors"], capsys)
    assert [re.match(r"^\S+\s+(.) ", line).group(1) for line in out.splitlines()] == ["✗", "✗", "✗"]
    rc, out, _ = run_cli(["tail", str(records["dir"]), "--once", "--json", "--category", "llm"], capsys)
    events = [json.loads(line) for line in out.splitlines()]
    assert {e["category"] for e in events} == {"llm"} and {e["event"] for e in events} == {"start", "end"}


def test_tail_follows_a_growing_directory(records: dict[str, Path], tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    real_lines = records["real"].read_bytes().splitlines(keepends=True)
    existing = live / "old.jsonl"
    existing.write_bytes(real_lines[0])  # already there (another conversation: filtered out)
    args = build_parser().parse_args(
        ["tail", str(live), "--from-start", "--timeout", "30", "--interval", "0.02", "-c", "conv-killed"]
    )
    out, err = Utf8IO(), Utf8IO()
    stop = threading.Event()
    t = threading.Thread(target=tail.run, args=(args, out, err, stop), daemon=True)
    t.start()
    time.sleep(0.2)
    killed_lines = records["killed"].read_bytes().splitlines(keepends=True)
    newf = live / "sub" / "new.jsonl"
    newf.parent.mkdir()
    newf.write_bytes(killed_lines[0] + killed_lines[1][:40])  # the second line is half written
    _wait_for(lambda: "▶ invoke_agent researcher" in out.getvalue())
    time.sleep(0.1)
    assert "chat gpt-4o" not in out.getvalue() and err.getvalue() == ""
    with newf.open("ab") as fh:
        fh.write(killed_lines[1][40:] + b"".join(killed_lines[2:]))
    _wait_for(lambda: "▶ execute_tool slow_search" in out.getvalue())
    with existing.open("ab") as fh:
        fh.write(b"".join(real_lines[1:]))  # other conversation: filtered out
    time.sleep(0.2)
    text = out.getvalue()
    assert text.count("▶ chat gpt-4o") == 1 and "✓ chat gpt-4o" in text
    assert "weather-bot" not in text and err.getvalue() == ""
    stop.set()
    t.join(timeout=15)
    assert not t.is_alive()


def _wait_for(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


# --------------------------------------------------------------------------------- the console script


def _console_script() -> str:
    found = shutil.which("agent-otel", path=str(Path(sys.executable).parent)) or shutil.which("agent-otel")
    if not found:
        pytest.skip("agent-otel console script not installed")
    return found


def test_console_script_view_and_help(records: dict[str, Path]) -> None:
    exe = _console_script()
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.run(
        [exe, "view", str(records["dir"])], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert f"conversation {CONVERSATION}" in proc.stdout and "never ended (process killed?)" in proc.stdout
    assert "skipped 2 unreadable lines" in proc.stderr
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for cmd in ("view", "stats", "tail", "export"):
        assert cmd in proc.stdout
    proc = subprocess.run([exe, "view", "/nonexistent/records"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no such file or directory" in proc.stderr


def test_tail_exits_cleanly_on_ctrl_c(records: dict[str, Path]) -> None:
    exe = _console_script()
    proc = subprocess.Popen(
        [exe, "tail", str(records["killed"]), "--from-start", "--interval", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,  # SIGINT may be ignored when the test run was started in the background
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "invoke_agent researcher" in first
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0 and "Traceback" not in err


@pytest.mark.parametrize("command", ["view", "stats", "tail", "export"])
def test_every_subcommand_help_reads_like_a_manual(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: agent-otel {command}" in out
    assert "examples:" in out and f"agent-otel {command} " in out
    assert "exit status" in out


# --------------------------------------------------------------------------------- PATH from settings


@pytest.fixture
def settings_env() -> Iterator[Callable[[dict[str, str]], None]]:
    """Put settings read from the given variables in force (restored from the environment after)."""
    from agent_otel import config

    def use(env: dict[str, str]) -> None:
        config.reload_settings(env)

    yield use
    config.reload_settings()


@pytest.mark.parametrize("command", ["view", "stats", "tail", "export"])
def test_path_defaults_to_the_record_agent_otel_writes(
    command: str,
    records: dict[str, Path],
    tmp_path: Path,
    settings_env: Callable[[dict[str, str]], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    extra = {"tail": ["--once"], "export": ["--dry-run", "--no-state"]}.get(command, [])
    killed_text = {
        "view": "conversation conv-killed",
        "stats": "killed: 2 spans never ended",
        "tail": "▶ invoke_agent researcher",
        "export": "would send 3 spans (2 recovered)",
    }[command]
    real_text = "would send 13 spans (0 recovered)" if command == "export" else "weather-bot"
    settings_env({"AGENT_OTEL_JSONL_DIR": str(records["killed"].parent)})
    rc, out, err = run_cli([command, *extra], capsys)
    assert rc == 0 and killed_text in out, err
    # AGENT_OTEL_JSONL_FILE wins over the directory
    settings_env(
        {"AGENT_OTEL_JSONL_DIR": str(records["killed"].parent), "AGENT_OTEL_JSONL_FILE": str(records["real"])}
    )
    rc, out, err = run_cli([command, *extra], capsys)
    assert rc == 0 and real_text in out and "researcher" not in out, err
    # a default that does not exist says where it came from
    settings_env({"AGENT_OTEL_JSONL_DIR": str(tmp_path / "none")})
    rc, _, err = run_cli([command, *extra], capsys)
    assert rc == 1
    assert f"no such file or directory: {tmp_path / 'none'} (no PATH given: the default comes from " in err
    assert "AGENT_OTEL_JSONL_DIR" in err
    # an explicit PATH still wins
    rc, out, _ = run_cli([command, str(records["killed"]), *extra], capsys)
    assert rc == 0 and killed_text in out


@pytest.mark.parametrize("command", ["view", "stats", "tail", "export"])
def test_help_says_where_path_defaults_to(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"usage: agent-otel {command}" in out and "[PATH]" in out
    assert "$AGENT_OTEL_JSONL_FILE when set, else $AGENT_OTEL_JSONL_DIR (default ./agent-otel-traces)" in out


def test_console_script_reads_agent_otel_jsonl_dir(records: dict[str, Path], tmp_path: Path) -> None:
    exe = _console_script()
    env = {**os.environ, "NO_COLOR": "1", "AGENT_OTEL_JSONL_DIR": str(records["killed"].parent)}
    env.pop("AGENT_OTEL_JSONL_FILE", None)
    proc = subprocess.run([exe, "stats"], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "killed: 2 spans never ended" in proc.stdout


def test_main_without_a_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: agent-otel" in capsys.readouterr().err


# ----------------------------------------------------------------------------- odd values, long tails


def test_non_finite_token_counts_are_not_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    span = {
        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
        "spanId": "00f067aa0ba902b7",
        "name": "chat m",
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000001000000000",
        "attributes": [
            {"key": "agent_otel.span.category", "value": {"stringValue": "llm"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"doubleValue": "Infinity"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"doubleValue": "NaN"}},
            {"key": "x", "value": {"doubleValue": "-Infinity"}},
        ],
    }
    f = tmp_path / "odd.jsonl"
    f.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}) + "\n")
    for command in (["view", "-a"], ["view", "--json"], ["stats", "--json"], ["tail", "--once", "--json"]):
        rc, out, err = run_cli([*command, str(f)], capsys)
        assert rc == 0 and "Traceback" not in err, command
        if "--json" in command:
            for line in out.splitlines() if command[0] == "tail" else [out]:
                json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    _, out, _ = run_cli(["stats", "--json", str(f)], capsys)
    assert json.loads(out)["models"][0]["input_tokens"] == 0


def _synthetic_line(trace: int, span: int, parent: int | None, *, end: bool) -> bytes:
    s = {
        "traceId": f"{trace:032x}",
        "spanId": f"{span:016x}",
        "name": f"span {span}",
        "startTimeUnixNano": str(1_700_000_000_000_000_000 + span),
    }
    if parent is not None:
        s["parentSpanId"] = f"{parent:016x}"
    if end:
        s["endTimeUnixNano"] = str(1_700_000_000_000_000_000 + span + 10)
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [s]}]}]}).encode()


def test_tail_memory_is_bounded_and_output_unchanged() -> None:
    from agent_otel.cli import _common as c
    from agent_otel.jsonl import reader

    def run(remember: int) -> tuple[str, tail.Printer]:
        out = Utf8IO()
        printer = tail.Printer(
            out, Utf8IO(), c.Filters(), as_json=False, style=c.Style(False), remember=remember
        )
        n = 1
        for trace in range(1, 2001):  # a long-running tail: 2000 traces of root > child > grandchild
            root, child, grandchild = n, n + 1, n + 2
            n += 3
            lines = [
                _synthetic_line(trace, root, None, end=False),
                _synthetic_line(trace, child, root, end=False),
                _synthetic_line(trace, grandchild, child, end=False),
                _synthetic_line(trace, grandchild, child, end=True),
                _synthetic_line(trace, grandchild, child, end=True),  # a duplicate: not printed
                _synthetic_line(trace, child, root, end=True),
                _synthetic_line(trace, root, None, end=True),
            ]
            printer.handle([r for line in lines for r in reader.parse_line(line)])
        return out.getvalue(), printer

    unbounded, _ = run(10**9)
    bounded, printer = run(50)
    assert bounded == unbounded
    assert len(unbounded.splitlines()) == 2000 * 6
    assert re.search(r"^\S+     ▶ span 3$", unbounded, re.M)  # indented twice under its parents
    assert max(len(printer.depth), len(printer.ended), len(printer.trace_conv)) <= 50
    assert tail.Printer.REMEMBER >= 1000


def test_tail_forgets_files_that_were_deleted(records: dict[str, Path], tmp_path: Path) -> None:
    shutil.copy(records["killed"], tmp_path / "a.jsonl")
    shutil.copy(records["killed"], tmp_path / "b.jsonl")
    follower = tail.Follower(tmp_path, from_start=True)
    assert len(follower.poll()[0]) == 8
    (tmp_path / "a.jsonl").unlink()
    follower.poll()
    assert list(follower.cursors) == [tmp_path / "b.jsonl"]
