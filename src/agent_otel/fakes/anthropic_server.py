"""A scripted, offline Anthropic-compatible HTTP server (Messages API) for tests and examples.

Real ``anthropic`` clients talk to it over a real loopback socket::

    import anthropic
    from agent_otel.fakes.anthropic_server import FakeAnthropicServer, Reply

    with FakeAnthropicServer() as server:                   # 127.0.0.1, ephemeral port, daemon thread
        client = anthropic.Anthropic(base_url=server.base_url, api_key="sk-ant-fake", max_retries=0)
        m = client.messages.create(model="claude-sonnet-4-5", max_tokens=100,
                                   messages=[{"role": "user", "content": "hi"}])

Endpoints: ``POST /v1/messages`` (``stream=True`` answers with the typed SSE events ``message_start``,
``content_block_start``/``_delta``/``_stop`` — ``text_delta`` and ``input_json_delta`` — ``message_delta``,
``message_stop``, plus a ``ping``) and ``POST /v1/messages/count_tokens``. Anything else: 404 with an
Anthropic error body (``{"type": "error", "error": {"type": ..., "message": ...}}``).

What answers a request is the same as for :mod:`agent_otel.fakes.openai_server`: the next scripted
:class:`Reply` (``server.script(...)``), else the deterministic brain (tools matched against the last user
message by name keywords -> ``tool_use`` blocks; ``tool_result`` blocks after the last user text -> a text
summary; otherwise ``"You said: ..."``). ``Usage.cached_input_tokens`` maps to ``cache_read_input_tokens``
and ``Usage.cache_creation_input_tokens`` to ``cache_creation_input_tokens``. Stop reasons are ``end_turn``
/ ``tool_use`` unless the reply sets ``finish_reason``. Ids: ``msg_<n>``, ``toolu_<n>``; every response
carries ``request-id: req_<n>``.

API: ``FakeAnthropicServer(latency=0.0)``; ``start()``/``stop()`` or the context manager; ``.base_url``
(``http://127.0.0.1:<port>``, the SDK adds ``/v1``), ``.port``; ``.script(*replies)``, ``.pending``,
``.clear()``; ``.requests``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from agent_otel.fakes._scripted import (
    Exchange,
    RecordedRequest,
    Reply,
    ScriptedServer,
    ToolCall,
    ToolResult,
    Usage,
    brain_reply,
    count_tokens,
    split_text,
)

__all__ = ["FakeAnthropicServer", "RecordedRequest", "Reply", "ToolCall", "Usage"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return _text_of(content)


class FakeAnthropicServer(ScriptedServer):
    """The Anthropic-compatible scripted server. See the module docstring for the full API."""

    def __enter__(self) -> FakeAnthropicServer:
        self.start()
        return self

    @property
    def base_url(self) -> str:
        """The ``base_url`` to give ``anthropic.Anthropic``: ``http://127.0.0.1:<port>``."""
        return self.origin

    def _dispatch(self, exchange: Exchange) -> None:
        path = exchange.request.path.split("?", 1)[0].rstrip("/")
        body = exchange.request.body if isinstance(exchange.request.body, dict) else {}
        if exchange.request.method == "POST" and path == "/v1/messages/count_tokens":
            exchange.send_json(200, {"input_tokens": count_tokens(self._prompt(body))})
            return
        if exchange.request.method != "POST" or path != "/v1/messages":
            exchange.send_json(
                404, {"type": "error", "error": {"type": "not_found_error", "message": f"no route {path}"}}
            )
            return
        scripted = self._next_scripted()
        reply = scripted if scripted is not None else self._brain(body)
        self._pre_answer(exchange, reply)
        headers = {"request-id": f"req_{self._next_id()}", **reply.headers}
        if reply.status >= 400:
            kind = reply.error_type or _ERROR_TYPES.get(reply.status, "api_error")
            exchange.send_json(
                reply.status,
                {
                    "type": "error",
                    "error": {
                        "type": kind,
                        "message": reply.error_message or f"Scripted error {reply.status}",
                    },
                },
                headers,
            )
            return
        self._messages(exchange, body, reply, headers)

    # the brain -------------------------------------------------------------------------------------
    @staticmethod
    def _brain(body: dict[str, Any]) -> Reply:
        tools = [
            (str(t["name"]), t.get("input_schema"))
            for t in body.get("tools") or []
            if isinstance(t, dict) and t.get("name")
        ]
        names: dict[str, str] = {}
        user_text = ""
        results: list[ToolResult] = []
        for message in body.get("messages") or []:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            blocks = content if isinstance(content, list) else []
            if message.get("role") == "assistant":
                for block in blocks:
                    if isinstance(block, dict) and block.get("type") == "tool_use":
                        names[str(block.get("id"))] = str(block.get("name"))
            elif message.get("role") == "user":
                tool_results = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
                text = _text_of(content)
                if tool_results:
                    results.extend(
                        ToolResult(
                            b.get("tool_use_id"),
                            names.get(str(b.get("tool_use_id"))),
                            _result_text(b.get("content")),
                        )
                        for b in tool_results
                    )
                if text:
                    user_text = text
                    if not tool_results:
                        results = []
        return brain_reply(tools, user_text, results)

    @staticmethod
    def _prompt(body: dict[str, Any]) -> str:
        system = body.get("system")
        parts = [system if isinstance(system, str) else _text_of(system)]
        parts.extend(_text_of(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict))
        return " ".join(p for p in parts if p)

    # messages --------------------------------------------------------------------------------------
    def _messages(
        self, exchange: Exchange, body: dict[str, Any], reply: Reply, headers: dict[str, str]
    ) -> None:
        model = reply.model or str(body.get("model") or "claude-sonnet-4-5")
        calls = [
            c if c.id else ToolCall(c.name, c.arguments, f"toolu_{self._next_id()}") for c in reply.tool_calls
        ]
        given = reply.usage or Usage()
        input_tokens = (
            given.input_tokens if given.input_tokens is not None else count_tokens(self._prompt(body))
        )
        output_tokens = given.output_tokens
        if output_tokens is None:
            output_tokens = (count_tokens(reply.text) if reply.text else 0) + sum(
                1 + count_tokens(c.arguments_json()) for c in calls
            )
        stop = reply.finish_reason or ("tool_use" if calls else "end_turn")
        usage = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": given.cached_input_tokens or 0,
            "cache_creation_input_tokens": given.cache_creation_input_tokens or 0,
        }
        mid = f"msg_{self._next_id()}"
        blocks: list[dict[str, Any]] = []
        if reply.text is not None:
            blocks.append({"type": "text", "text": reply.text})
        blocks.extend(
            {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments_object()} for c in calls
        )
        message = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not exchange.request.stream:
            exchange.send_json(200, message, headers)
            return
        self._stream_events(exchange, reply, self._events(message, reply, calls), headers)

    @staticmethod
    def _events(
        message: dict[str, Any], reply: Reply, calls: Sequence[ToolCall]
    ) -> Iterator[tuple[str | None, Any]]:
        usage = message["usage"]
        start_usage = {**usage, "output_tokens": 1}
        yield (
            "message_start",
            {
                "type": "message_start",
                "message": {**message, "content": [], "stop_reason": None, "usage": start_usage},
            },
        )
        yield "ping", {"type": "ping"}
        index = 0
        if reply.text is not None:
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            for piece in split_text(reply.text, reply.chunks):
                yield (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
            index += 1
        for call in calls:
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}},
                },
            )
            for piece in split_text(call.arguments_json(), 2):
                yield (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
            index += 1
        yield (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        yield "message_stop", {"type": "message_stop"}
