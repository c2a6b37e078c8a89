"""Durable appends of whole lines: the write half of the crash-safety contract.

Each record is one ``os.write`` of a complete line on an ``O_APPEND`` descriptor, made on the
caller's thread before it returns — once ``write`` returns the line is in the kernel's page cache
and survives SIGKILL, an OOM kill or a segfault of this process. ``fsync`` (for power loss) is a
setting: never, every N ms from a background thread plus at close, or after every record.

Files are created 0600. In directory mode each process writes its own file (a forked child opens a
new one on its first write) and files rotate by size; an explicit file may be shared by several
processes (appends of whole lines do not interleave on a local filesystem) and is not rotated.
On open, a torn last line left by an earlier crash is fenced off with a newline.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
import weakref
from pathlib import Path

_logger = logging.getLogger(__name__)

# Read access too: fencing a torn tail reads the file's last byte.
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_WRITE_ONLY_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_FILE_MODE = 0o600
_RETRY_AFTER_S = 1.0  # after a failed open or write, the next attempt waits this long


def _safe_component(text: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)
    return cleaned.strip("._")[:64] or "app"


def fence_torn_tail(fd: int) -> bool:
    """If the file's last byte is not a newline (a line torn by a crash), append one. True if fenced.

    On a descriptor that cannot be read (a shared file we may only write), a newline is appended to
    any non-empty file: at worst an empty line, which readers skip.
    """
    size = os.fstat(fd).st_size
    if size == 0:
        return False
    try:
        last = os.pread(fd, 1, size - 1)
    except OSError:
        last = b""
    if last == b"\n":
        return False
    os.write(fd, b"\n")
    return True


class RecordWriter:
    """Appends record lines to a file (``path``) or to per-process files in ``directory``.

    Args:
        directory: where per-process files ``agent-otel-<service>-<utc>-<pid>-<seq>.jsonl`` go.
        path: an explicit file instead (shared between processes, not rotated).
        service_name: used in per-process file names.
        max_bytes: rotate a per-process file once it reaches this size (0: never).
        fsync: ``"never"``, ``"interval"`` or ``"always"``.
        fsync_interval_ms: the period of ``"interval"`` mode.

    ``write`` never raises: a failing disk is reported once as a warning, and writing resumes when
    the disk does (retried at most once a second, so a broken disk costs next to nothing).
    """

    def __init__(
        self,
        *,
        directory: str | os.PathLike[str] | None = None,
        path: str | os.PathLike[str] | None = None,
        service_name: str = "app",
        max_bytes: int = 0,
        fsync: str = "never",
        fsync_interval_ms: int = 1000,
    ) -> None:
        if (directory is None) == (path is None):
            raise ValueError("give exactly one of directory or path")
        self._directory = Path(directory) if directory is not None else None
        self._explicit = Path(path) if path is not None else None
        self._service = _safe_component(service_name)
        self._max_bytes = max_bytes if self._explicit is None else 0
        self._fsync = fsync
        self._interval = max(fsync_interval_ms, 1) / 1000.0
        # Re-entrant: a span ended by a finaliser (a stream proxy's __del__) during a garbage collection
        # that runs inside write() on the same thread must not deadlock.
        self._lock = threading.RLock()
        self._fd = -1
        self._size = 0
        self._seq = 0
        self._dirty = False
        self._failed = False
        self._retry_at = 0.0
        self._closed = False
        self._started = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self._syncer: threading.Thread | None = None
        self._wake = threading.Event()
        self.path: Path | None = None
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    # -- opening -----------------------------------------------------------------------------

    def _next_path(self) -> Path:
        if self._explicit is not None:
            return self._explicit
        assert self._directory is not None
        name = f"agent-otel-{self._service}-{self._started}-{os.getpid()}-{self._seq + 1}.jsonl"
        return self._directory / name

    def _open(self) -> None:
        path = self._next_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, _OPEN_FLAGS, _FILE_MODE)
        except PermissionError:  # an existing shared file we may append to but not read
            fd = os.open(path, _WRITE_ONLY_FLAGS, _FILE_MODE)
        if self._explicit is None:
            self._seq += 1  # only once the file exists: failed attempts do not skip numbers
        try:
            fence_torn_tail(fd)
            self._size = os.fstat(fd).st_size
        except OSError:
            self._size = 0
        self._fd = fd
        self.path = path
        if self._fsync == "interval" and self._syncer is None:
            self._syncer = threading.Thread(target=self._sync_loop, name="agent-otel-fsync", daemon=True)
            self._syncer.start()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        try:
            if self._fsync != "never" and self._dirty:
                os.fsync(fd)
        except OSError:
            pass
        finally:
            self._dirty = False
            os.close(fd)

    # -- writing -----------------------------------------------------------------------------

    def write(self, line: bytes) -> None:
        """Append one complete line (must end with ``\\n``) with a single ``write`` call."""
        with self._lock:
            if self._closed:
                return
            try:
                fd = self._fd
                if fd < 0:
                    if self._failed and time.monotonic() < self._retry_at:
                        return  # the disk failed a moment ago: do not pay a failing open per record
                    self._open()
                    fd = self._fd
                written = os.write(fd, line)
                while written < len(line):  # short write (disk full): finish the line rather than tear it
                    more = os.write(fd, line[written:])
                    if more <= 0:
                        raise OSError(errno.ENOSPC, "short write")
                    written += more
                self._size += written
                if self._fsync == "always":
                    os.fsync(fd)
                else:
                    self._dirty = True
                if self._failed:
                    self._failed = False
                    _logger.warning("agent-otel: writing the JSONL record to %s works again", self.path)
                if self._max_bytes and self._size >= self._max_bytes:
                    self._rotate()
            except OSError as exc:
                self._retry_at = time.monotonic() + _RETRY_AFTER_S
                if not self._failed:
                    self._failed = True
                    _logger.warning(
                        "agent-otel: cannot write the JSONL record (%s); spans are not recorded "
                        "until it works again",
                        exc,
                    )
                self._close_fd_quietly()

    def _rotate(self) -> None:
        """Retire the full file; the next write opens the next one. In ``interval`` mode its last
        fsync runs on a helper thread: the application's thread never waits for the disk."""
        if self._fsync != "interval" or not self._dirty:
            self._close_fd()
            return
        fd, self._fd, self._dirty = self._fd, -1, False
        threading.Thread(
            target=_fsync_and_close, args=(fd,), name="agent-otel-fsync-rotated", daemon=True
        ).start()

    def _close_fd_quietly(self) -> None:
        try:
            self._close_fd()
        except OSError:
            self._fd = -1

    def flush(self) -> None:
        """fsync what was written (the page cache already survives a process crash).

        The fsync runs on a duplicate of the descriptor *outside* the lock: an fsync can take
        milliseconds, and writers (the application's threads) must not wait for it. With fsync
        ``never`` this does nothing, as ``close`` does.
        """
        with self._lock:
            if self._fd < 0 or not self._dirty or self._fsync == "never":
                return
            try:
                fd = os.dup(self._fd)
            except OSError:
                return
            self._dirty = False
        _fsync_and_close(fd)

    def close(self) -> None:
        """fsync (unless fsync is ``never``) and close. Later writes are ignored."""
        with self._lock:
            self._closed = True
            self._close_fd_quietly()
        self._wake.set()

    def _sync_loop(self) -> None:
        while not self._wake.wait(self._interval):
            if self._dirty:
                self.flush()

    def _reset_after_fork(self) -> None:
        # The child must not share the parent's file (per-process files) or its lock state.
        self._lock = threading.RLock()
        self._syncer = None
        self._wake = threading.Event()
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = -1
        self._seq = 0
        self._started = time.strftime("%Y%m%dT%H%M%S", time.gmtime())


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _after_fork(ref: weakref.ref[RecordWriter]) -> None:
    writer = ref()
    if writer is not None:
        writer._reset_after_fork()
