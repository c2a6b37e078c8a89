"""A scripted, offline OpenAI-compatible HTTP server for tests, benchmarks and ``agent-otel demo``.

Real ``openai`` clients talk to it over a real loopback socket::

    import openai
    from agent_otel.fakes.openai_server import FakeOpenAIServer, Reply, ToolCall

    with FakeOpenAIServer() as server:                      # 127.0.0.1, ephemeral port, daemon thread
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-fake", max_retries=0)
        r = client.chat.completions.create(model="gpt-4o-mini",
                                           messages=[{"role": "user", "content": "hi"}])
        server.requests[-1].body                            # the decoded JSON the SDK sent

Endpoints (with or without the ``/v1`` prefix; ``base_url`` includes ``/v1``):

- ``POST /v1/chat/completions``: text, tool calls (parallel), ``n`` choices, ``stream=True`` as SSE chunks
  (role chunk, one chunk per word, tool-call chunks, finish chunk, ``[DONE]``), and a final usage chunk when
  ``stream_options={"include_usage": true}``.
- ``POST /v1/responses``: the Responses API: ``message`` and ``function_call`` output items, usage; ``stream``
  as typed events (``response.created`` ... ``response.output_text.delta`` ... ``response.completed``).
- ``POST /v1/embeddings``: deterministic vectors (8 dimensions unless ``dimensions`` is given), float or
  base64 as ``encoding_format`` asks.
- ``GET /v1/models``: a one-model list. Anything else: 404 with an OpenAI error body.

What answers a request:

1. The next scripted reply, if any: ``server.script(Reply.text_reply("hi"), Reply.tool_call("f", {...}),
   Reply.error(429, retry_after=0.001), Reply.hang(2.0), Reply.drop(), Reply(text="...",
   disconnect_after_chunks=3), ...)`` (see :class:`~agent_otel.fakes._scripted.Reply` for every field).
   Replies are consumed FIFO, one per request, whatever the endpoint.
2. Otherwise the default deterministic "model" (the demo uses it):

   - the last user message's words are matched against the offered tools' names (``get_weather`` matches
     "weather"; a calculator-like tool — calc/math/compute/... — matches arithmetic such as ``12 * 7``): it
     calls every matching tool, with JSON arguments filled from the tool's parameter schema and the message
     (``city``/``location`` <- "in Paris", ``expression`` <- "12 * 7", numbers <- the first number, other
     strings <- the message);
   - once tool results follow the last user message (``role: "tool"`` messages, or ``function_call_output``
     items), it answers in text summarising them: ``"Here is what I found. get_weather says: Sunny."``;
   - otherwise it answers ``"You said: <message>"``.

Token usage is deterministic (one token per word) unless the reply sets :class:`Usage`. Response ids are
``chatcmpl-<n>`` / ``resp_<n>``, tool call ids ``call_<n>``, counting from 1 per server. Every response
carries ``x-request-id: req_<n>``.

API: ``FakeOpenAIServer(latency=0.0)``; ``start()``/``stop()`` or the context manager; ``.base_url``
(``http://127.0.0.1:<port>/v1``), ``.port``, ``.host``; ``.script(*replies)``, ``.pending``, ``.clear()``;
``.requests`` (list of :class:`RecordedRequest`: ``method``, ``path``, ``headers``, ``body``, ``raw``,
``stream``).
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
    embedding_base64,
    fake_embedding,
    split_text,
)

__all__ = ["FakeOpenAIServer", "RecordedRequest", "Reply", "ToolCall", "Usage"]

_CREATED = 1_700_000_000
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout",
    409: "conflict",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
}


def _text_of(content: Any) -> str:
    """The text of a message content: a str, or a list of parts with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p)
    return ""


class FakeOpenAIServer(ScriptedServer):
    """The OpenAI-compatible scripted server. See the module docstring for the full API."""

    def __enter__(self) -> FakeOpenAIServer:
        self.start()
        return self

    @property
    def base_url(self) -> str:
        """The ``base_url`` to give ``openai.OpenAI``: ``http://127.0.0.1:<port>/v1``."""
        return f"{self.origin}/v1"

    # routing ---------------------------------------------------------------------------------------
    def _dispatch(self, exchange: Exchange) -> None:
        path = exchange.request.path.split("?", 1)[0].rstrip("/")
        if path.startswith("/v1"):
            path = path[3:]
        method = exchange.request.method
        if method == "GET" and path == "/models":
            exchange.send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": "gpt-4o-mini", "object": "model", "created": _CREATED, "owned_by": "fake"}
                    ],
                },
            )
            return
        if method != "POST" or path not in ("/chat/completions", "/responses", "/embeddings"):
            exchange.send_json(
                404,
                {
                    "error": {
                        "message": f"no route {method} {path}",
                        "type": "not_found_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
            return
        body = exchange.request.body if isinstance(exchange.request.body, dict) else {}
        scripted = self._next_scripted()
        reply = scripted if scripted is not None else self._brain(path, body)
        self._pre_answer(exchange, reply)
        headers = {"x-request-id": f"req_{self._next_id()}", "openai-processing-ms": "1", **reply.headers}
        if reply.status >= 400:
            self._send_error(exchange, reply, headers)
        elif path == "/chat/completions":
            self._chat(exchange, body, reply, headers)
        elif path == "/responses":
            self._responses(exchange, body, reply, headers)
        else:
            self._embeddings(exchange, body, reply, headers)

    def _send_error(self, exchange: Exchange, reply: Reply, headers: dict[str, str]) -> None:
        kind = reply.error_type or _ERROR_TYPES.get(reply.status, "server_error")
        message = reply.error_message or f"Scripted error {reply.status}"
        exchange.send_json(
            reply.status, {"error": {"message": message, "type": kind, "param": None, "code": kind}}, headers
        )

    # the brain -------------------------------------------------------------------------------------
    def _brain(self, path: str, body: dict[str, Any]) -> Reply:
        if path == "/embeddings":
            return Reply()
        if path == "/responses":
            tools, user_text, results = self._responses_conversation(body)
        else:
            tools, user_text, results = self._chat_conversation(body)
        return brain_reply(tools, user_text, results)

    @staticmethod
    def _chat_conversation(body: dict[str, Any]) -> tuple[list[tuple[str, Any]], str, list[ToolResult]]:
        tools = []
        for tool in body.get("tools") or []:
            fn = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(fn, dict) and fn.get("name"):
                tools.append((str(fn["name"]), fn.get("parameters")))
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        names: dict[str, str] = {}
        user_text = ""
        results: list[ToolResult] = []
        for message in messages:
            role = message.get("role")
            if role == "user":
                user_text = _text_of(message.get("content"))
                results = []
            elif role == "assistant":
                for call in message.get("tool_calls") or []:
                    fn = call.get("function") or {}
                    names[str(call.get("id"))] = str(fn.get("name"))
            elif role == "tool":
                call_id = message.get("tool_call_id")
                results.append(ToolResult(call_id, names.get(str(call_id)), _text_of(message.get("content"))))
        return tools, user_text, results

    @staticmethod
    def _responses_conversation(body: dict[str, Any]) -> tuple[list[tuple[str, Any]], str, list[ToolResult]]:
        tools = [
            (str(t["name"]), t.get("parameters"))
            for t in body.get("tools") or []
            if isinstance(t, dict) and t.get("type") == "function" and t.get("name")
        ]
        items = body.get("input")
        if isinstance(items, str):
            return tools, items, []
        names: dict[str, str] = {}
        user_text = ""
        results: list[ToolResult] = []
        for item in items or []:
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            if item.get("role") == "user" and kind in (None, "message"):
                user_text = _text_of(item.get("content"))
                results = []
            elif kind == "function_call":
                names[str(item.get("call_id"))] = str(item.get("name"))
            elif kind == "function_call_output":
                call_id = item.get("call_id")
                output = item.get("output")
                results.append(
                    ToolResult(
                        call_id,
                        names.get(str(call_id)),
                        output if isinstance(output, str) else _text_of(output),
                    )
                )
        return tools, user_text, results

    # shared ----------------------------------------------------------------------------------------
    def _calls_with_ids(self, reply: Reply) -> list[ToolCall]:
        return [
            c if c.id else ToolCall(c.name, c.arguments, f"call_{self._next_id()}") for c in reply.tool_calls
        ]

    @staticmethod
    def _usage(body: dict[str, Any], reply: Reply, calls: Sequence[ToolCall], prompt_text: str) -> Usage:
        given = reply.usage or Usage()
        output = given.output_tokens
        if output is None:
            output = (count_tokens(reply.text) if reply.text else 0) + sum(
                1 + count_tokens(c.arguments_json()) for c in calls
            )
        return Usage(
            input_tokens=given.input_tokens if given.input_tokens is not None else count_tokens(prompt_text),
            output_tokens=output,
            cached_input_tokens=given.cached_input_tokens,
            reasoning_tokens=given.reasoning_tokens,
        )

    # chat completions ------------------------------------------------------------------------------
    def _chat(self, exchange: Exchange, body: dict[str, Any], reply: Reply, headers: dict[str, str]) -> None:
        model = reply.model or str(body.get("model") or "gpt-4o-mini")
        calls = self._calls_with_ids(reply)
        prompt = " ".join(
            _text_of(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict)
        )
        usage = self._usage(body, reply, calls, prompt)
        finish = reply.finish_reason or ("tool_calls" if calls else "stop")
        rid = f"chatcmpl-{self._next_id()}"
        n = body.get("n") if isinstance(body.get("n"), int) and body.get("n", 0) > 0 else 1
        if exchange.request.stream:
            opts = body.get("stream_options")
            include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
            events = self._chat_chunks(rid, model, reply, calls, finish, usage, include_usage)
            self._stream_events(exchange, reply, events, headers)
            return
        message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
        if calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_json()},
                }
                for c in calls
            ]
        payload = {
            "id": rid,
            "object": "chat.completion",
            "created": _CREATED,
            "model": model,
            "system_fingerprint": "fp_fake",
            "service_tier": "default",
            "choices": [
                {"index": i, "message": message, "finish_reason": finish, "logprobs": None} for i in range(n)
            ],
            "usage": self._chat_usage(usage),
        }
        exchange.send_json(200, payload, headers)

    @staticmethod
    def _chat_usage(usage: Usage) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": (usage.input_tokens or 0) + (usage.output_tokens or 0),
        }
        if usage.cached_input_tokens is not None:
            out["prompt_tokens_details"] = {"cached_tokens": usage.cached_input_tokens}
        if usage.reasoning_tokens is not None:
            out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
        return out

    def _chat_chunks(
        self,
        rid: str,
        model: str,
        reply: Reply,
        calls: Sequence[ToolCall],
        finish: str,
        usage: Usage,
        include_usage: bool,
    ) -> Iterator[tuple[str | None, Any]]:
        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> tuple[None, dict[str, Any]]:
            data: dict[str, Any] = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": _CREATED,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            }
            if include_usage:
                data["usage"] = None
            return None, data

        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for piece in split_text(reply.text or "", reply.chunks):
            yield chunk({"content": piece})
        for index, call in enumerate(calls):
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": ""},
                        }
                    ]
                }
            )
            for piece in split_text(call.arguments_json(), 2):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk({}, finish)
        if include_usage:
            yield (
                None,
                {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": _CREATED,
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": self._chat_usage(usage),
                },
            )
        yield None, "[DONE]"

    # responses -------------------------------------------------------------------------------------
    def _responses(
        self, exchange: Exchange, body: dict[str, Any], reply: Reply, headers: dict[str, str]
    ) -> None:
        model = reply.model or str(body.get("model") or "gpt-4o-mini")
        calls = self._calls_with_ids(reply)
        items = body.get("input")
        prompt = (
            items
            if isinstance(items, str)
            else " ".join(
                _text_of(i.get("content")) or str(i.get("output") or "")
                for i in items or []
                if isinstance(i, dict)
            )
        )
        if isinstance(body.get("instructions"), str):
            prompt = f"{body['instructions']} {prompt}"
        usage = self._usage(body, reply, calls, prompt)
        rid = f"resp_{self._next_id()}"
        msg_id = f"msg_{self._next_id()}"
        output: list[dict[str, Any]] = []
        if reply.text is not None:
            output.append(self._message_item(msg_id, reply.text, "completed"))
        fc_items = [
            self._function_item(f"fc_{self._next_id()}", c, c.arguments_json(), "completed") for c in calls
        ]
        output.extend(fc_items)
        status = "incomplete" if reply.finish_reason in ("length", "max_output_tokens") else "completed"
        final = self._response_object(rid, model, body, output, status, usage)
        if not exchange.request.stream:
            exchange.send_json(200, final, headers)
            return
        self._stream_events(
            exchange, reply, self._response_events(rid, model, body, reply, msg_id, fc_items, final), headers
        )

    @staticmethod
    def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
        content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if text else []
        return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}

    @staticmethod
    def _function_item(item_id: str, call: ToolCall, arguments: str, status: str) -> dict[str, Any]:
        return {
            "type": "function_call",
            "id": item_id,
            "call_id": call.id,
            "name": call.name,
            "arguments": arguments,
            "status": status,
        }

    @staticmethod
    def _response_object(
        rid: str,
        model: str,
        body: dict[str, Any],
        output: list[dict[str, Any]],
        status: str,
        usage: Usage | None,
    ) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": rid,
            "object": "response",
            "created_at": _CREATED,
            "status": status,
            "model": model,
            "output": output,
            "error": None,
            "incomplete_details": ({"reason": "max_output_tokens"} if status == "incomplete" else None),
            "instructions": body.get("instructions"),
            "metadata": {},
            "parallel_tool_calls": True,
            "temperature": body.get("temperature", 1.0),
            "top_p": body.get("top_p", 1.0),
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "text": {"format": {"type": "text"}},
            "usage": None,
        }
        if usage is not None:
            obj["usage"] = {
                "input_tokens": usage.input_tokens,
                "input_tokens_details": {"cached_tokens": usage.cached_input_tokens or 0},
                "output_tokens": usage.output_tokens,
                "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
                "total_tokens": (usage.input_tokens or 0) + (usage.output_tokens or 0),
            }
        return obj

    def _response_events(
        self,
        rid: str,
        model: str,
        body: dict[str, Any],
        reply: Reply,
        msg_id: str,
        fc_items: list[dict[str, Any]],
        final: dict[str, Any],
    ) -> Iterator[tuple[str | None, Any]]:
        seq = 0

        def event(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
            nonlocal seq
            seq += 1
            return kind, {"type": kind, "sequence_number": seq, **fields}

        started = self._response_object(rid, model, body, [], "in_progress", None)
        yield event("response.created", response=started)
        yield event("response.in_progress", response=started)
        index = 0
        if reply.text is not None:
            yield event(
                "response.output_item.added",
                output_index=index,
                item=self._message_item(msg_id, "", "in_progress"),
            )
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            yield event(
                "response.content_part.added", item_id=msg_id, output_index=index, content_index=0, part=part
            )
            for piece in split_text(reply.text, reply.chunks):
                yield event(
                    "response.output_text.delta",
                    item_id=msg_id,
                    output_index=index,
                    content_index=0,
                    delta=piece,
                    logprobs=[],
                )
            yield event(
                "response.output_text.done",
                item_id=msg_id,
                output_index=index,
                content_index=0,
                text=reply.text,
                logprobs=[],
            )
            yield event(
                "response.content_part.done",
                item_id=msg_id,
                output_index=index,
                content_index=0,
                part={**part, "text": reply.text},
            )
            yield event(
                "response.output_item.done",
                output_index=index,
                item=self._message_item(msg_id, reply.text, "completed"),
            )
            index += 1
        for item in fc_items:
            yield event(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            for piece in split_text(item["arguments"], 2):
                yield event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=piece,
                )
            yield event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            )
            yield event("response.output_item.done", output_index=index, item=item)
            index += 1
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        yield event(kind, response=final)

    # embeddings ------------------------------------------------------------------------------------
    def _embeddings(
        self, exchange: Exchange, body: dict[str, Any], reply: Reply, headers: dict[str, str]
    ) -> None:
        raw_input = body.get("input")
        if isinstance(raw_input, str):
            inputs: list[str] = [raw_input]
        elif isinstance(raw_input, list) and raw_input and all(isinstance(x, int) for x in raw_input):
            inputs = [" ".join(map(str, raw_input))]
        elif isinstance(raw_input, list):
            inputs = [x if isinstance(x, str) else " ".join(map(str, x)) for x in raw_input]
        else:
            inputs = [""]
        dims = body.get("dimensions") if isinstance(body.get("dimensions"), int) else 8
        base64_wanted = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(inputs):
            vector = list(reply.embedding) if reply.embedding is not None else fake_embedding(text, dims)
            data.append(
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": embedding_base64(vector) if base64_wanted else vector,
                }
            )
        tokens = (
            reply.usage.input_tokens
            if reply.usage and reply.usage.input_tokens is not None
            else sum(count_tokens(t) for t in inputs)
        )
        payload = {
            "object": "list",
            "data": data,
            "model": reply.model or str(body.get("model") or ""),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        exchange.send_json(200, payload, headers)
