"""The machinery shared by the scripted model servers: HTTP plumbing, replies, recording, the default "brain".

Not a public module: use :mod:`agent_otel.fakes.openai_server` or :mod:`agent_otel.fakes.anthropic_server`,
which re-export :class:`Reply`, :class:`ToolCall`, :class:`Usage` and :class:`RecordedRequest`.

Contract of every scripted server (see :class:`ScriptedServer`):

- It listens on ``127.0.0.1`` on an ephemeral port, in a daemon thread, from ``start()`` (or ``__enter__``)
  to ``stop()`` (or ``__exit__``). ``stop()`` is idempotent.
- Each request pops the next scripted :class:`Reply` (FIFO, see ``script()``); with none left, the default
  deterministic brain answers (see :func:`brain_reply`).
- Every request is recorded, in arrival order, as a :class:`RecordedRequest` in ``server.requests``.
- Loopback only, no dependency beyond the standard library.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "RecordedRequest",
    "Reply",
    "ScriptedServer",
    "ToolCall",
    "ToolResult",
    "Usage",
    "brain_reply",
    "count_tokens",
    "fake_embedding",
    "split_text",
]


# --------------------------------------------------------------------------------------------------
# Replies


@dataclass(frozen=True)
class ToolCall:
    """A tool call the scripted model makes. ``arguments``: a mapping (sent as JSON) or a raw JSON string."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        """The arguments as the JSON string the API sends."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments), separators=(",", ":"), sort_keys=True)

    def arguments_object(self) -> Any:
        """The arguments as a JSON value (Anthropic's ``tool_use.input``); unparsable strings stay strings."""
        if isinstance(self.arguments, str):
            try:
                return json.loads(self.arguments)
            except ValueError:
                return self.arguments
        return dict(self.arguments)


@dataclass(frozen=True)
class Usage:
    """Token counts of a reply. ``None`` fields are computed by the server (input/output) or omitted."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    """OpenAI ``prompt_tokens_details.cached_tokens`` / Anthropic ``cache_read_input_tokens``."""
    cache_creation_input_tokens: int | None = None
    """Anthropic only."""
    reasoning_tokens: int | None = None
    """OpenAI ``completion_tokens_details.reasoning_tokens`` / ``output_tokens_details.reasoning_tokens``."""


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Build it with the class methods; every field has a sensible default.

    - ``text`` / ``tool_calls``: the model's answer (both may be given: text first, then the calls).
    - ``finish_reason``: overrides the provider's natural one ("stop"/"tool_calls", "end_turn"/"tool_use").
    - ``usage``: overrides the computed token counts.
    - ``model``: the response's model (default: the request's model).
    - ``status`` / ``error_type`` / ``error_message``: an HTTP error answer when ``status >= 400``.
    - ``headers``: extra response headers (e.g. ``{"retry-after-ms": "1"}``).
    - ``delay``: seconds to wait before answering (client timeouts); for streams, before the first chunk.
    - ``chunk_delay``: seconds between stream chunks.
    - ``disconnect``: close the connection without answering (a dropped connection).
    - ``disconnect_after_chunks``: for a streamed answer, drop the connection after this many SSE events.
    - ``chunks``: how many pieces the streamed text is split into (default: one per word).
    - ``embedding``: the vector(s) for the embeddings endpoint (default: derived from the input).
    """

    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    status: int = 200
    error_type: str | None = None
    error_message: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    chunk_delay: float = 0.0
    disconnect: bool = False
    disconnect_after_chunks: int | None = None
    chunks: int | None = None
    embedding: Sequence[float] | None = None

    @classmethod
    def text_reply(cls, text: str, **kwargs: Any) -> Reply:
        """A plain text answer."""
        return cls(text=text, **kwargs)

    @classmethod
    def tool_call(
        cls,
        name: str,
        arguments: Mapping[str, Any] | str | None = None,
        *,
        id: str | None = None,
        **kwargs: Any,
    ) -> Reply:
        """An answer that calls one tool."""
        return cls(tool_calls=(ToolCall(name, arguments if arguments is not None else {}, id),), **kwargs)

    @classmethod
    def tool_calls_reply(cls, calls: Iterable[ToolCall], **kwargs: Any) -> Reply:
        """An answer that calls several tools (parallel tool calls)."""
        return cls(tool_calls=tuple(calls), **kwargs)

    @classmethod
    def error(
        cls,
        status: int,
        message: str | None = None,
        *,
        error_type: str | None = None,
        retry: bool | None = None,
        retry_after: float | None = None,
        **kwargs: Any,
    ) -> Reply:
        """An HTTP error. ``retry`` sets ``x-should-retry``; ``retry_after`` (seconds) ``retry-after-ms``."""
        headers = dict(kwargs.pop("headers", {}))
        if retry is not None:
            headers["x-should-retry"] = "true" if retry else "false"
        if retry_after is not None:
            headers["retry-after-ms"] = str(max(retry_after * 1000.0, 0.001))
        return cls(status=status, error_message=message, error_type=error_type, headers=headers, **kwargs)

    @classmethod
    def hang(cls, seconds: float) -> Reply:
        """Answer (with the brain's text) only after ``seconds``: use a shorter client timeout to get one."""
        return cls(delay=seconds)

    @classmethod
    def drop(cls) -> Reply:
        """Close the connection without answering."""
        return cls(disconnect=True)


@dataclass(frozen=True)
class ToolResult:
    """A tool result found in the conversation (what the brain summarises)."""

    call_id: str | None
    name: str | None
    content: str


@dataclass
class RecordedRequest:
    """One request the server received. ``body`` is the decoded JSON body (``None`` if not JSON)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes

    @property
    def stream(self) -> bool:
        """Whether the request asked for a streamed answer."""
        return isinstance(self.body, dict) and bool(self.body.get("stream"))


# --------------------------------------------------------------------------------------------------
# Deterministic helpers


_WORD = re.compile(r"\S+")


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: one token per whitespace-separated word (at least 1)."""
    return max(1, len(_WORD.findall(text)))


def split_text(text: str, pieces: int | None) -> list[str]:
    """Split ``text`` into stream deltas: one per word (keeping spaces) or ``pieces`` near-equal parts."""
    if not text:
        return []
    if pieces is None:
        parts = re.findall(r"\S+\s*|\s+", text)
        return parts or [text]
    pieces = max(1, min(pieces, len(text)))
    size, extra = divmod(len(text), pieces)
    out: list[str] = []
    start = 0
    for i in range(pieces):
        end = start + size + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return out


def fake_embedding(text: str, dimensions: int) -> list[float]:
    """A deterministic unit-ish vector derived from the SHA-256 of ``text``."""
    out: list[float] = []
    counter = 0
    while len(out) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        for i in range(0, len(digest), 4):
            (value,) = struct.unpack("<I", digest[i : i + 4])
            out.append(round(value / 0xFFFFFFFF * 2.0 - 1.0, 6))
        counter += 1
    return out[:dimensions]


def embedding_base64(vector: Sequence[float]) -> str:
    """``vector`` as the API's base64 encoding (little-endian float32)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


# --------------------------------------------------------------------------------------------------
# The default brain


_STOP_WORDS = frozenset(
    {
        "get",
        "set",
        "fetch",
        "lookup",
        "look",
        "up",
        "find",
        "tool",
        "run",
        "do",
        "call",
        "make",
        "current",
        "the",
        "a",
        "an",
        "of",
        "for",
        "to",
        "and",
        "or",
        "by",
        "is",
    }
)
_ARITHMETIC = re.compile(r"-?\d+(?:\.\d+)?(?:\s*(?:[-+*/x×÷^%]|\*\*)\s*-?\d+(?:\.\d+)?)+")
_ARITHMETIC_TOOL = re.compile(r"calc|math|arith|compute|evaluat|add|sum|multiply")
_PLACE = re.compile(r"\b(?:in|at|for)\s+([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_PLACE_PARAMS = frozenset({"city", "location", "place", "town", "country", "region", "where"})
_EXPRESSION_PARAMS = frozenset({"expression", "expr", "formula", "equation", "calculation", "input"})


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _name_keywords(name: str) -> set[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return {w for w in re.findall(r"[a-z0-9]+", spaced.lower()) if w not in _STOP_WORDS and len(w) > 1}


def _matches(keyword: str, words: set[str]) -> bool:
    return keyword in words or f"{keyword}s" in words or (keyword.endswith("s") and keyword[:-1] in words)


def _normalise_expression(expression: str) -> str:
    return expression.replace("×", "*").replace("x", "*").replace("÷", "/").replace("^", "**")


def _fill_arguments(schema: Any, user_text: str, arithmetic: str | None) -> dict[str, Any]:
    """Arguments for a tool with the JSON ``schema``, filled deterministically from the user's text."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict) or not props:
        return {}
    required = schema.get("required")
    names = [n for n in props if not isinstance(required, list) or n in required] or list(props)
    place = _PLACE.search(user_text)
    number = _NUMBER.search(user_text)
    args: dict[str, Any] = {}
    for name in names:
        spec = props.get(name) if isinstance(props.get(name), dict) else {}
        kind = spec.get("type")
        lowered = name.lower()
        if "enum" in spec and isinstance(spec["enum"], list) and spec["enum"]:
            args[name] = spec["enum"][0]
        elif lowered in _EXPRESSION_PARAMS and arithmetic:
            args[name] = _normalise_expression(arithmetic)
        elif lowered in _PLACE_PARAMS:
            args[name] = place.group(1) if place else "Paris"
        elif kind in ("number", "integer"):
            value = float(number.group(0)) if number else 0
            args[name] = int(value) if kind == "integer" else value
        elif kind == "boolean":
            args[name] = True
        elif kind == "array":
            args[name] = [user_text]
        elif kind == "object":
            args[name] = {}
        else:
            args[name] = _normalise_expression(arithmetic) if arithmetic else user_text
    return args


def choose_tool_calls(tools: Sequence[tuple[str, Any]], user_text: str) -> list[ToolCall]:
    """The tool calls the brain makes for ``user_text``: every tool whose name's keywords appear in it.

    ``tools`` is ``(name, json_schema)`` pairs. A tool named like a calculator (calc, math, compute, ...) is
    also chosen when the text holds arithmetic (``12 * 7``); its expression-like argument gets that.
    """
    words = _words(user_text)
    found = _ARITHMETIC.search(user_text)
    arithmetic = found.group(0) if found else None
    calls: list[ToolCall] = []
    for name, schema in tools:
        keywords = _name_keywords(name)
        hit = any(_matches(k, words) for k in keywords)
        if not hit and arithmetic and _ARITHMETIC_TOOL.search(name.lower()):
            hit = True
        if hit:
            calls.append(ToolCall(name, _fill_arguments(schema, user_text, arithmetic)))
    return calls


def brain_reply(
    tools: Sequence[tuple[str, Any]], user_text: str, tool_results: Sequence[ToolResult]
) -> Reply:
    """The default deterministic "model".

    - Tool results after the last user message: a text answer summarising them
      (``"get_weather says: Sunny. calculator says: 84."``).
    - Otherwise, tools offered and some match the last user message (see :func:`choose_tool_calls`):
      a call to each of them.
    - Otherwise: a short text answer echoing the user's message.
    """
    if tool_results:
        parts = [f"{r.name or 'the tool'} says: {r.content.strip()}" for r in tool_results]
        return Reply(
            text="Here is what I found. " + " ".join(p if p.endswith(".") else p + "." for p in parts)
        )
    if tools and user_text:
        calls = choose_tool_calls(tools, user_text)
        if calls:
            return Reply(tool_calls=tuple(calls))
    if user_text:
        return Reply(text=f"You said: {user_text.strip()}")
    return Reply(text="Hello! How can I help?")


# --------------------------------------------------------------------------------------------------
# HTTP plumbing


class _Disconnect(Exception):
    """Raised inside a handler to drop the connection."""


class Exchange:
    """What a route handler gets: the request, and ways to answer it (JSON, SSE, error, drop)."""

    def __init__(self, handler: BaseHTTPRequestHandler, request: RecordedRequest) -> None:
        self._handler = handler
        self.request = request
        self._chunked = False

    # JSON ------------------------------------------------------------------------------------------
    def send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        """Send one JSON response with Content-Length."""
        data = json.dumps(payload).encode()
        h = self._handler
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()

    # SSE -------------------------------------------------------------------------------------------
    def start_sse(self, headers: Mapping[str, str] | None = None) -> None:
        """Send the headers of a chunked ``text/event-stream`` response."""
        h = self._handler
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Transfer-Encoding", "chunked")
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.flush()
        self._chunked = True

    def send_event(self, data: Any, event: str | None = None) -> None:
        """Send one SSE event (``data`` is JSON-encoded unless it is a str) as one HTTP chunk."""
        text = data if isinstance(data, str) else json.dumps(data)
        block = (f"event: {event}\n" if event else "") + f"data: {text}\n\n"
        payload = block.encode()
        self._handler.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        self._handler.wfile.flush()

    def end_sse(self) -> None:
        """Terminate the chunked body."""
        self._handler.wfile.write(b"0\r\n\r\n")
        self._handler.wfile.flush()
        self._chunked = False

    def drop(self) -> None:
        """Drop the connection now (no more bytes; a chunked body stays incomplete)."""
        raise _Disconnect()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Small SSE writes must not wait for delayed ACKs (Nagle): chunks go out as they are written.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr logging."""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw=raw,
        )
        owner = self.server.owner
        owner._record(request)
        exchange = Exchange(self, request)
        try:
            owner._dispatch(exchange)
        except _Disconnect:
            self._abort()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _abort(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            # SO_LINGER 0: the peer sees a reset, not a clean end of the body.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_DELETE = _serve
    do_PATCH = _serve


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, owner: ScriptedServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connection errors of a dropped/aborted client are expected; stay quiet."""


class ScriptedServer:
    """Base of the scripted servers: lifecycle, script queue, recording. Subclasses define ``_dispatch``."""

    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency
        """Seconds every answer waits before its first byte (makes demo timings look real)."""
        self.requests: list[RecordedRequest] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ids = 0

    # lifecycle -------------------------------------------------------------------------------------
    def start(self) -> ScriptedServer:
        """Start listening (idempotent). Returns ``self``."""
        if self._server is None:
            self._server = _HTTPServer(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"{type(self).__name__}:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close the socket (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The ephemeral port (the server must be started)."""
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    # scripting -------------------------------------------------------------------------------------
    def script(self, *replies: Reply) -> None:
        """Queue replies; each request takes the next one (FIFO). With none queued, the brain answers."""
        with self._lock:
            self._script.extend(replies)

    def clear(self) -> None:
        """Forget queued replies and recorded requests."""
        with self._lock:
            self._script.clear()
            self.requests.clear()

    @property
    def pending(self) -> int:
        """How many scripted replies are still queued."""
        with self._lock:
            return len(self._script)

    def _next_scripted(self) -> Reply | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def _dispatch(self, exchange: Exchange) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # helpers for subclasses ------------------------------------------------------------------------
    def _pre_answer(self, exchange: Exchange, reply: Reply) -> None:
        """Apply ``latency``/``delay`` and ``disconnect`` before any byte is sent."""
        wait = self.latency + reply.delay
        if wait > 0:
            time.sleep(wait)
        if reply.disconnect:
            exchange.drop()

    def _stream_events(
        self,
        exchange: Exchange,
        reply: Reply,
        events: Iterable[tuple[str | None, Any]],
        headers: Mapping[str, str],
    ) -> None:
        """Send ``(event, data)`` pairs as SSE, honouring ``chunk_delay`` and ``disconnect_after_chunks``."""
        exchange.start_sse(headers)
        for sent, (event, data) in enumerate(events):
            if reply.disconnect_after_chunks is not None and sent >= reply.disconnect_after_chunks:
                exchange.drop()
            if reply.chunk_delay and sent:
                time.sleep(reply.chunk_delay)
            exchange.send_event(data, event)
        exchange.end_sse()
