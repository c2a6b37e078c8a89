"""The crash-safety promise, proved on real processes.

A small home-grown agent (``crash_apps/agent_app.py``: ``agent_otel.instrument()`` and the manual API)
completes a few tool calls, reports ``ready`` with an agent, a node, an LLM call and a loose tool span
still open, and is then ended by SIGKILL, SIGTERM (default disposition, and with the user's own
handler installed before / after ``instrument()``), SIGINT, a raised KeyboardInterrupt or ``os._exit``.
The record it leaves is then read line by line with protobuf's own OTLP parser.

All scenarios start at once (module fixture) so the whole file costs about one process start-up.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent_otel.jsonl.writer import RecordWriter
from crash_apps.records import STATUS_ERROR, Record, file_mode, read_record
from crash_apps.subprocesses import default_sigint

APP = Path(__file__).parent / "crash_apps" / "agent_app.py"
SERVICE = "crash-app"
DONE = 5  # tool spans completed before "ready"
OPEN_NAMES = ("invoke_agent crash-agent", "execute_tool loose", "node think", "chat fake-model")
READY_TIMEOUT_S = 40.0
EXIT_TIMEOUT_S = 40.0
SHARED_PROCESSES = 4
SHARED_SPANS = 300
WAVE = 6  # scenarios run at the same time


BLOCKED_LIBRARIES = ("openai", "anthropic", "langchain", "langchain_core", "langchain_openai", "langgraph")


@dataclass
class Run:
    """One subprocess scenario and what it left behind."""

    name: str
    directory: Path
    command: list[str]
    env: dict[str, str]
    action: Callable[[Run], None] | None = None  # what to do once the app printed "ready"
    wait_ready: bool = True
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    elapsed: float = 0.0
    ready: dict[str, str] = field(default_factory=dict)
    stdout: str = ""
    returncode: int | None = None

    @property
    def stderr(self) -> str:
        path = self.directory / "stderr.txt"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def record_dir(self) -> Path:
        return self.directory / "record"

    @property
    def marker(self) -> Path:
        return self.directory / "handled.txt"

    def describe(self) -> str:
        return f"[{self.name}] exit {self.returncode}; stdout:\n{self.stdout}\nstderr:\n{self.stderr[-3000:]}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "stderr.txt", "wb") as err:
            self.proc = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                preexec_fn=default_sigint,
            )
        self.started = time.monotonic()

    def read_ready(self) -> None:
        """Read stdout up to the ``ready {...}`` line (bounded), then run the action."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buffer = b""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.proc.kill()
                raise AssertionError(f"[{self.name}] no 'ready' line within {READY_TIMEOUT_S}s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buffer += chunk
        line = buffer.partition(b"\n")[0]
        self.stdout = buffer.decode(errors="replace")
        if line.startswith(b"ready "):
            self.ready = json.loads(line[len(b"ready ") :])
        if self.action is not None and self.ready:
            self.action(self)

    def finish(self) -> None:
        assert self.proc is not None
        try:
            out, _ = self.proc.communicate(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.elapsed = time.monotonic() - self.started
        self.stdout += out.decode(errors="replace")
        self.returncode = self.proc.returncode

    def record(self, *, allow_torn: bool = False) -> Record:
        return read_record(self.record_dir, allow_torn=allow_torn)


def _send(sig: int, delay: float = 0.0) -> Callable[[Run], None]:
    def act(run: Run) -> None:
        if delay:
            time.sleep(delay)
        assert run.proc is not None
        run.proc.send_signal(sig)

    return act


def _send_after(marker: bytes, sig: int) -> Callable[[Run], None]:
    """Wait (bounded) for a further stdout line starting with ``marker``, then send ``sig``."""

    def act(run: Run) -> None:
        assert run.proc is not None and run.proc.stdout is not None
        fd = run.proc.stdout.fileno()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while marker not in run.stdout.encode():
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"[{run.name}] no {marker!r} line"
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return
                run.stdout += chunk.decode(errors="replace")
        run.proc.send_signal(sig)

    return act


def _base_env(run_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_OTEL_", "OTEL_"))}
    env.pop("PYTHONPATH", None)
    env.update(
        AGENT_OTEL_JSONL_DIR=str(run_dir / "record"),
        OTEL_SERVICE_NAME=SERVICE,
        CRASH_MARKER=str(run_dir / "handled.txt"),
        CRASH_DONE=str(DONE),
    )
    env.update(extra)
    return env


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _blocked_libraries_dir(root: Path) -> Path:
    """A PYTHONPATH entry on which the agent libraries fail to import (as if not installed).

    ``opentelemetry-instrument`` loads agent-otel's instrumentor before the app runs, and it would
    import openai/anthropic/langchain (seconds of start-up per process) that this app never uses.
    """
    blocked = root / "blocked-libraries"
    for name in BLOCKED_LIBRARIES:
        package = blocked / name
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(f"raise ImportError('{name} is blocked by the crash tests')\n")
    return blocked


def _opentelemetry_instrument() -> str:
    found = Path(sys.executable).parent / "opentelemetry-instrument"
    if found.exists():
        return str(found)
    which = shutil.which("opentelemetry-instrument")
    if which is None:
        pytest.skip("opentelemetry-instrument is not installed")
    return which


def _scenarios(root: Path) -> list[Run]:
    app = [sys.executable, str(APP)]

    def run(name: str, mode: str, action: Callable[[Run], None] | None = None, **env: str) -> Run:
        directory = root / name
        return Run(name, directory, [*app, mode], _base_env(directory, **env), action)

    runs = [
        run("sigkill", "wait", _send(signal.SIGKILL)),
        run("sigterm", "wait", _send(signal.SIGTERM)),
        run("sigterm_user_before", "wait", _send(signal.SIGTERM), CRASH_HANDLER="before"),
        run("sigterm_graceful", "wait", _send(signal.SIGTERM), CRASH_HANDLER="graceful"),
        run("sigterm_user_after", "wait", _send(signal.SIGTERM), CRASH_HANDLER="after"),
        run("sigint", "wait", _send(signal.SIGINT)),
        run("raised_keyboard_interrupt", "kbd"),
        run("os_exit", "exit"),
        run("sigkill_while_writing", "spin", _send(signal.SIGKILL, delay=0.3)),
        run("fork", "fork"),
        run("sigterm_during_exit_hooks", "slow_exit", _send_after(b"exiting", signal.SIGTERM)),
        run(
            "sigterm_during_exit_hooks_no_threads",
            "slow_exit",
            _send_after(b"exiting", signal.SIGTERM),
            CRASH_NO_THREADS_AT_EXIT="1",
        ),
    ]

    # Bad settings: a warning, and the app runs to the end.
    not_a_dir = root / "not-a-directory"
    not_a_dir.write_text("a file where the record directory should be\n")
    bad_dir = run("bad_record_dir", "plain")
    bad_dir.env["AGENT_OTEL_JSONL_DIR"] = str(not_a_dir / "sub")
    runs.append(bad_dir)
    runs.append(
        run("bad_values", "plain", AGENT_OTEL_JSONL_MAX_BYTES="abc", AGENT_OTEL_JSONL_FSYNC="sometimes")
    )

    # Zero-code: opentelemetry-instrument with OTLP pointing at a closed port, and the JSONL record.
    instrument = _opentelemetry_instrument()
    blocked = _blocked_libraries_dir(root)
    for name, exporters in (("zero_code", "otlp,jsonl"), ("zero_code_bogus_exporter", "otlp,bogus")):
        directory = root / name
        env = _base_env(
            directory,
            CRASH_NO_INSTRUMENT="1",
            CRASH_WITH_LIBS="1",  # the blocked-libraries path does that job here
            PYTHONPATH=str(blocked),
            OTEL_TRACES_EXPORTER=exporters,
            OTEL_METRICS_EXPORTER="none",
            OTEL_LOGS_EXPORTER="none",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{_closed_port()}",
            OTEL_BSP_SCHEDULE_DELAY="200",
            OTEL_EXPORTER_OTLP_TIMEOUT="2",
        )
        runs.append(Run(name, directory, [instrument, *app, "plain"], env))

    # Several processes appending to one explicit file.
    shared = root / "shared" / "record" / "shared.jsonl"
    for i in range(SHARED_PROCESSES):
        directory = root / "shared" / f"p{i}"
        env = _base_env(
            directory, AGENT_OTEL_JSONL_FILE=str(shared), CRASH_SPANS=str(SHARED_SPANS), CRASH_TAG=f"p{i}"
        )
        runs.append(Run(f"shared_{i}", directory, [*app, "spam"], env, wait_ready=False))
    return runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    root = tmp_path_factory.mktemp("crash")
    scenarios = _scenarios(root)
    # Warm up once (on a fresh checkout every process would otherwise compile the same .pyc files at
    # once), then run the scenarios a few at a time: the timing assertions are about our code, not
    # about 20 interpreters starting together on two cores.
    (root / "warm-up").mkdir()
    warm = _scenarios(root / "warm-up")
    for run in (warm[0], next(r for r in warm if r.name == "zero_code")):
        run.action, run.command = None, [*run.command[:-1], "plain"]
        run.start()
        run.finish()
    try:
        for first in range(0, len(scenarios), WAVE):
            wave = scenarios[first : first + WAVE]
            for run in wave:
                run.start()
            for run in wave:
                if run.wait_ready:
                    run.read_ready()
            for run in wave:
                run.finish()
        yield {run.name: run for run in scenarios}
    finally:
        for run in scenarios:
            if run.proc is not None and run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()


# ------------------------------------------------------------------------------------------ helpers


def check_common(run: Run, *, allow_torn: bool = False) -> Record:
    """What every scenario must show: parseable lines, no duplicates, the completed spans complete,
    and every span open at the kill present with its start record."""
    assert run.ready, run.describe()
    assert set(run.ready) == set(OPEN_NAMES), run.describe()
    record = run.record(allow_torn=allow_torn)
    record.assert_no_duplicates()
    for i in range(DONE):
        (start,) = [r for r in record.by_name(f"execute_tool done-{i}") if r.is_start]
        end = record.end_of(start.span_id)
        assert end.status_code != STATUS_ERROR
        assert end.attributes["step"] == i
    for name, span_id in run.ready.items():
        (start,) = record.starts(span_id)
        assert start.name == name
    chat, node, agent = (run.ready[n] for n in ("chat fake-model", "node think", "invoke_agent crash-agent"))
    assert record.starts(chat)[0].span["parentSpanId"] == node
    assert record.starts(node)[0].span["parentSpanId"] == agent
    for rec in record.recs:
        service = {kv["key"]: kv["value"] for kv in rec.resource.get("attributes", [])}["service.name"]
        assert service == {"stringValue": SERVICE}
    for path in {rec.path for rec in record.recs}:
        assert file_mode(path) == 0o600, path
    return record


def check_interrupted(run: Run, record: Record, error_types: set[str]) -> None:
    for name, span_id in run.ready.items():
        end = record.end_of(span_id)
        assert end.status_code == STATUS_ERROR, name
        assert end.attributes.get("error.type") in error_types, (name, end.attributes.get("error.type"))
        assert end.attributes.get("agent_otel.interrupted") is True, name


def check_never_ended(run: Run, record: Record) -> None:
    for name, span_id in run.ready.items():
        assert record.ends(span_id) == [], f"{name} has an end record although the process was killed"


# -------------------------------------------------------------------------------------------- tests


def test_sigkill_mid_run_keeps_finished_spans_and_start_records_of_open_ones(runs: dict[str, Run]) -> None:
    run = runs["sigkill"]
    assert run.returncode == -signal.SIGKILL, run.describe()
    record = check_common(run)
    check_never_ended(run, record)
    assert record.torn == [] and record.empty_lines == 0


def test_os_exit_keeps_finished_spans_and_start_records_of_open_ones(runs: dict[str, Run]) -> None:
    run = runs["os_exit"]
    assert run.returncode == 3, run.describe()
    record = check_common(run)
    check_never_ended(run, record)


def test_sigterm_default_ends_open_spans_as_interrupted_and_dies_by_sigterm(runs: dict[str, Run]) -> None:
    run = runs["sigterm"]
    assert run.returncode == -signal.SIGTERM, run.describe()
    record = check_common(run)
    check_interrupted(run, record, {"SIGTERM"})
    assert run.elapsed < 30, run.elapsed


def test_sigterm_user_handler_installed_before_instrument_still_runs(runs: dict[str, Run]) -> None:
    run = runs["sigterm_user_before"]
    assert run.marker.read_text() == f"handled {int(signal.SIGTERM)}\n", run.describe()
    assert run.returncode == 143, run.describe()  # the user's handler decided: sys.exit(143)
    record = check_common(run)
    check_interrupted(run, record, {"SIGTERM"})  # our hook ran first, then the user's


def test_sigterm_graceful_user_handler_lets_the_turn_finish_normally(runs: dict[str, Run]) -> None:
    run = runs["sigterm_graceful"]
    assert run.marker.read_text() == f"handled {int(signal.SIGTERM)}\n", run.describe()
    assert run.returncode == 0, run.describe()  # the user's handler chose a graceful shutdown
    record = check_common(run)
    # Nothing was cut short, so nothing is marked interrupted: every span ended as the code ended it.
    for name, span_id in run.ready.items():
        end = record.end_of(span_id)
        assert end.status_code != STATUS_ERROR, name
        assert "agent_otel.interrupted" not in end.attributes, name


def test_sigterm_user_handler_installed_after_instrument_wins_and_spans_still_end(
    runs: dict[str, Run],
) -> None:
    run = runs["sigterm_user_after"]
    assert run.marker.read_text() == f"handled {int(signal.SIGTERM)}\n", run.describe()
    assert run.returncode == 143, run.describe()
    record = check_common(run)
    # The user's handler replaced ours, so the process only sees SystemExit(143): the with-blocks end
    # their spans with it, and the exit hook ends the loose span.
    check_interrupted(run, record, {"SystemExit", "shutdown"})


@pytest.mark.parametrize("name", ["sigint", "raised_keyboard_interrupt"])
def test_keyboard_interrupt_ends_open_spans_as_interrupted(runs: dict[str, Run], name: str) -> None:
    run = runs[name]
    assert run.returncode == -signal.SIGINT, run.describe()  # Python re-raises SIGINT on exit
    assert "KeyboardInterrupt" in run.stderr
    record = check_common(run)
    check_interrupted(run, record, {"KeyboardInterrupt"})


def test_sigkill_while_writing_hot_leaves_only_whole_lines(runs: dict[str, Run], tmp_path: Path) -> None:
    run = runs["sigkill_while_writing"]
    assert run.returncode == -signal.SIGKILL, run.describe()
    record = check_common(run, allow_torn=True)
    check_never_ended(run, record)
    (path,) = {rec.path for rec in record.recs}
    lines = path.read_bytes().split(b"\n")
    # A kill can cut at most the line being written, the last one of the file.
    assert all(torn_line == len(lines) - 1 for _, torn_line, _ in record.torn), record.torn
    spins = [r for r in record.recs if r.name.startswith("execute_tool spin-")]
    ended = {r.span_id for r in spins if not r.is_start}
    assert len(ended) >= 10, "the app wrote spans for 0.3 s before the kill"
    assert ended <= {r.span_id for r in spins if r.is_start}

    # Whatever was torn, a new writer on that file starts on a fresh line.
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    with open(copy, "ab") as fh:
        fh.write(b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"ab')  # a torn line, to be sure
    writer = RecordWriter(path=copy)
    writer.write(path.read_bytes().split(b"\n")[0] + b"\n")
    writer.close()
    tail = copy.read_bytes().split(b"\n")
    assert tail[-1] == b"" and tail[-2] == lines[0]
    assert tail[-3].endswith(b'"traceId":"ab')


def test_forked_child_records_to_its_own_file_and_leaves_parent_spans_alone(runs: dict[str, Run]) -> None:
    run = runs["fork"]
    assert run.returncode == 0, run.describe()
    assert "child 0" in run.stdout
    files = sorted(run.record_dir.glob("*.jsonl"))
    assert len(files) == 2, files
    parent_ids = set(run.ready.values())
    by_file = {f: read_record(f) for f in files}
    (parent_file,) = [f for f, rec in by_file.items() if parent_ids <= rec.span_ids()]
    (child_file,) = [f for f in files if f != parent_file]
    parent, child = by_file[parent_file], by_file[child_file]
    parent.assert_no_duplicates()
    child.assert_no_duplicates()
    # The parent's spans ended normally, in the parent's file only.
    for span_id in parent_ids:
        assert parent.end_of(span_id).status_code != STATUS_ERROR
    assert child.span_ids().isdisjoint(parent_ids), "the child recorded the parent's spans"
    (child_tool,) = [r for r in child.recs if r.name == "execute_tool child-tool" and not r.is_start]
    assert child_tool.span["parentSpanId"] == run.ready["chat fake-model"]
    assert not parent.by_name("execute_tool child-tool")
    assert file_mode(child_file) == 0o600


def _assert_complete(record: Record, expected_names: set[str]) -> None:
    record.assert_no_duplicates()
    names = {r.name for r in record.recs}
    assert expected_names <= names, expected_names - names
    for span_id in record.span_ids():
        assert len(record.starts(span_id)) == 1
        end = record.end_of(span_id)
        assert end.status_code != STATUS_ERROR, end.name
        assert "agent_otel.interrupted" not in end.attributes


PLAIN_NAMES = {
    *OPEN_NAMES,
    *(f"execute_tool done-{i}" for i in range(DONE)),
    *(f"execute_tool plain-{i}" for i in range(3)),
}


@pytest.mark.parametrize("name", ["zero_code", "zero_code_bogus_exporter"])
def test_opentelemetry_instrument_with_otlp_down_keeps_a_complete_record(
    runs: dict[str, Run], name: str
) -> None:
    run = runs[name]
    assert run.returncode == 0, run.describe()
    assert run.elapsed < 30, f"took {run.elapsed:.1f}s to finish with the collector down"
    _assert_complete(run.record(), PLAIN_NAMES)
    if name == "zero_code_bogus_exporter":
        assert "bogus" in run.stderr, run.describe()


def test_bad_record_directory_warns_and_the_app_runs(runs: dict[str, Run]) -> None:
    run = runs["bad_record_dir"]
    assert run.returncode == 0, run.describe()
    assert run.ready, run.describe()
    assert "cannot write the JSONL record" in run.stderr, run.describe()
    assert run.stderr.count("cannot write the JSONL record") == 1  # once, not once per span


def test_malformed_settings_warn_and_use_defaults(runs: dict[str, Run]) -> None:
    run = runs["bad_values"]
    assert run.returncode == 0, run.describe()
    assert "AGENT_OTEL_JSONL_MAX_BYTES" in run.stderr and "AGENT_OTEL_JSONL_FSYNC" in run.stderr, (
        run.describe()
    )
    _assert_complete(run.record(), PLAIN_NAMES)


def test_processes_appending_to_one_file_never_interleave(runs: dict[str, Run]) -> None:
    shared = [runs[f"shared_{i}"] for i in range(SHARED_PROCESSES)]
    for run in shared:
        assert run.returncode == 0, run.describe()
    path = shared[0].env["AGENT_OTEL_JSONL_FILE"]
    # Every line must parse on its own. (An empty line is possible and harmless: a process opening
    # the file while another's line is half-copied into the page cache fences it with a newline.)
    record = read_record(Path(path))
    _assert_complete(record, set())
    per_process = SHARED_SPANS + 1  # the tools and their agent span
    assert len(record.recs) == SHARED_PROCESSES * per_process * 2
    for i in range(SHARED_PROCESSES):
        tools = {r.name for r in record.recs if r.name.startswith(f"execute_tool spam-p{i}-")}
        assert len(tools) == SHARED_SPANS
    assert file_mode(Path(path)) == 0o600


@pytest.mark.parametrize("name", ["sigterm_during_exit_hooks", "sigterm_during_exit_hooks_no_threads"])
def test_sigterm_while_exit_hooks_run_still_kills_by_sigterm(runs: dict[str, Run], name: str) -> None:
    """A SIGTERM while exit hooks run (an OTLP flush to a collector that is down, say) ends the
    process by SIGTERM, also where no thread can be started then (Python >= 3.12)."""
    run = runs[name]
    assert run.returncode == -signal.SIGTERM, run.describe()
    assert "Exception ignored" not in run.stderr, run.describe()
    assert run.elapsed < 25, run.elapsed  # the 30 s exit hook was cut short
    _assert_complete(run.record(), {*OPEN_NAMES, *(f"execute_tool done-{i}" for i in range(DONE))})
