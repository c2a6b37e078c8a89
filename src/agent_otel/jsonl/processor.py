"""The crash-safe JSONL span processor.

A :class:`~opentelemetry.sdk.trace.SpanProcessor` (not an exporter behind a batch queue, which is
what loses spans on a kill): ``on_start`` writes a start record and ``on_end`` the complete span,
each with one ``write`` before returning. It also keeps the set of spans that are open, so that an
interruption (SIGTERM, KeyboardInterrupt, exit) can end them as interrupted — see
:mod:`agent_otel.interrupt`.
"""

from __future__ import annotations

import logging
import os
import weakref
from pathlib import Path

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import Status, StatusCode

from agent_otel import attributes as attrs
from agent_otel.config import Settings, get_settings
from agent_otel.jsonl.encode import LineEncoder
from agent_otel.jsonl.writer import RecordWriter

_logger = logging.getLogger(__name__)


class JsonlSpanProcessor(SpanProcessor):
    """Writes every span to the JSONL record when it starts and when it ends.

    ``on_start``/``on_end`` never raise and cost a few microseconds (encode + one ``write``).
    """

    def __init__(self, writer: RecordWriter) -> None:
        self.writer = writer
        self._encoder = LineEncoder()
        self._open: dict[int, Span] = {}
        # Spans a forked child inherited open from its parent: the child must not record their end
        # (the parent does), even if the child's own code leaves the blocks that opened them.
        self._inherited: set[int] = set()
        self._warned = False
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)
            # A forked child must not end (or re-record) the parent's open spans.
            os.register_at_fork(after_in_child=lambda: _forget_open_spans(ref))

    @classmethod
    def from_settings(cls, settings: Settings | None = None, service_name: str = "app") -> JsonlSpanProcessor:
        """A processor writing where the ``AGENT_OTEL_JSONL_*`` settings say."""
        s = settings or get_settings()
        common = {
            "max_bytes": s.jsonl_max_bytes,
            "fsync": s.jsonl_fsync,
            "fsync_interval_ms": s.jsonl_fsync_interval_ms,
            "service_name": service_name,
        }
        if s.jsonl_file:
            return cls(RecordWriter(path=s.jsonl_file, **common))
        return cls(RecordWriter(directory=s.jsonl_dir, **common))

    @property
    def path(self) -> Path | None:
        """The file written to most recently (None before the first record)."""
        return self.writer.path

    def _failed(self, span: ReadableSpan) -> None:
        if not self._warned:
            self._warned = True
            _logger.warning("agent-otel: could not record span %r", span.name, exc_info=True)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._open[span.context.span_id] = span
        try:
            self.writer.write(self._encoder.encode(span, start=True))
        except Exception:
            self._failed(span)

    def on_end(self, span: ReadableSpan) -> None:
        span_id = span.context.span_id
        if self._open.pop(span_id, None) is None and span_id in self._inherited:
            self._inherited.discard(span_id)  # a forked child ending its copy of a parent's span
            return
        try:
            self.writer.write(self._encoder.encode(span, start=False))
        except Exception:
            self._failed(span)

    def open_spans(self) -> list[Span]:
        """The spans started and not yet ended (a snapshot)."""
        return list(self._open.values())  # one C-level call: atomic under the GIL

    def end_open_spans(self, reason: str) -> int:
        """End every open span as interrupted: status ERROR, ``error.type=reason``, and
        ``agent_otel.interrupted``. Returns how many were ended. Innermost spans end first."""
        spans = sorted(self.open_spans(), key=lambda s: s.start_time or 0, reverse=True)
        for span in spans:
            try:
                if not span.is_recording():
                    continue
                span.set_attribute(attrs.ERROR_TYPE, reason)
                span.set_attribute(attrs.INTERRUPTED, True)
                span.set_status(Status(StatusCode.ERROR, f"interrupted: {reason}"))
                span.end()
            except Exception:
                _logger.debug("agent-otel: could not end open span", exc_info=True)
        return len(spans)

    def shutdown(self) -> None:
        self.writer.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.writer.flush()
        return True


def _forget_open_spans(ref: weakref.ref[JsonlSpanProcessor]) -> None:
    processor = ref()
    if processor is not None:
        processor._inherited = processor._inherited | processor._open.keys()
        processor._open = {}
