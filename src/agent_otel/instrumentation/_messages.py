"""Turn OpenAI / Anthropic messages into the GenAI semantic-convention message schema.

Every function takes what the SDK was given or returned — plain dicts/lists (request params, decoded raw
bodies) or SDK pydantic models, mixed freely — and returns plain lists/dicts in the schema
(``[{"role": ..., "parts": [...], "finish_reason"?: ...}]``; parts ``text``, ``tool_call``,
``tool_call_response``, ``reasoning``, ``uri``, ``blob``). :func:`agent_otel.content.to_json` turns them
into attribute strings. These run only with content capture on; unknown shapes are kept as generic parts,
never dropped silently and never raised on (callers guard them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

__all__ = [
    "anthropic_input",
    "anthropic_output",
    "anthropic_system",
    "get_field",
    "openai_chat_input",
    "openai_chat_output",
    "openai_responses_input",
    "openai_responses_output",
    "parse_arguments",
    "tool_definitions",
]

Message = dict[str, Any]
Part = dict[str, Any]


def get_field(obj: Any, name: str) -> Any:
    """``obj[name]`` for a dict, ``obj.name`` otherwise; None when missing."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def parse_arguments(arguments: Any) -> Any:
    """Tool-call arguments as a JSON value: a JSON string is decoded, anything else is kept as is."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def _iter(value: Any) -> Iterable[Any]:
    """The items of a list-like value. One-shot iterators are NOT consumed (the SDK still needs them)."""
    if isinstance(value, (list, tuple)):
        return value
    if value is None or isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__"):
        return ()
    try:
        return list(value)
    except TypeError:
        return ()


def _text(content: str) -> Part:
    return {"type": "text", "content": content}


def _tool_call(call_id: Any, name: Any, arguments: Any) -> Part:
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": parse_arguments(arguments)}


def _generic(part: Any) -> Part:
    kind = get_field(part, "type")
    return {"type": str(kind) if kind else "unknown", "content": part}


# ------------------------------------------------------------------------------------------------
# OpenAI chat completions


def _openai_content_parts(content: Any) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [_text(content)]
    parts: list[Part] = []
    for part in _iter(content):
        kind = get_field(part, "type")
        if kind in ("text", "input_text", "output_text"):
            parts.append(_text(get_field(part, "text") or ""))
        elif kind == "refusal":
            parts.append(_text(get_field(part, "refusal") or ""))
        elif kind in ("image_url", "input_image"):
            image = get_field(part, "image_url")
            url = get_field(image, "url") if image is not None and not isinstance(image, str) else image
            parts.append({"type": "uri", "modality": "image", "uri": url})
        elif kind == "input_audio":
            audio = get_field(part, "input_audio")
            parts.append(
                {
                    "type": "blob",
                    "modality": "audio",
                    "mime_type": get_field(audio, "format"),
                    "content": get_field(audio, "data"),
                }
            )
        else:
            parts.append(_generic(part))
    return parts


def openai_chat_input(messages: Any) -> list[Message]:
    """``chat.completions.create(messages=...)`` in the semconv input-message schema."""
    out: list[Message] = []
    for message in _iter(messages):
        role = get_field(message, "role") or "user"
        if role == "tool":
            out.append(
                {
                    "role": "tool",
                    "parts": [
                        {
                            "type": "tool_call_response",
                            "id": get_field(message, "tool_call_id"),
                            "response": _flatten_text(get_field(message, "content")),
                        }
                    ],
                }
            )
            continue
        parts = _openai_content_parts(get_field(message, "content"))
        for call in _iter(get_field(message, "tool_calls")):
            fn = get_field(call, "function")
            parts.append(_tool_call(get_field(call, "id"), get_field(fn, "name"), get_field(fn, "arguments")))
        entry: Message = {"role": role, "parts": parts}
        name = get_field(message, "name")
        if name:
            entry["name"] = name
        out.append(entry)
    return out


def _flatten_text(content: Any) -> Any:
    if isinstance(content, str) or content is None:
        return content
    texts = [get_field(p, "text") for p in _iter(content) if get_field(p, "text") is not None]
    return "".join(texts) if texts else content


def openai_chat_output(choices: Any) -> list[Message]:
    """The ``choices`` of a ChatCompletion in the semconv output-message schema (one message per choice)."""
    out: list[Message] = []
    for choice in _iter(choices):
        message = get_field(choice, "message")
        parts = _openai_content_parts(get_field(message, "content"))
        refusal = get_field(message, "refusal")
        if refusal:
            parts.append(_text(refusal))
        for call in _iter(get_field(message, "tool_calls")):
            fn = get_field(call, "function")
            parts.append(_tool_call(get_field(call, "id"), get_field(fn, "name"), get_field(fn, "arguments")))
        out.append(
            {
                "role": get_field(message, "role") or "assistant",
                "parts": parts,
                "finish_reason": get_field(choice, "finish_reason"),
            }
        )
    return out


def tool_definitions(tools: Any) -> list[Any]:
    """The ``tools`` of a request (any provider) as plain JSON values, for ``gen_ai.tool.definitions``."""
    out: list[Any] = []
    for tool in _iter(tools):
        dump = getattr(tool, "model_dump", None)
        out.append(dump(mode="json") if callable(dump) else tool)
    return out


# ------------------------------------------------------------------------------------------------
# OpenAI Responses API


def openai_responses_input(input_value: Any) -> list[Message]:
    """``responses.create(input=...)`` (a string or a list of items) in the semconv input schema."""
    if isinstance(input_value, str):
        return [{"role": "user", "parts": [_text(input_value)]}]
    out: list[Message] = []
    for item in _iter(input_value):
        kind = get_field(item, "type")
        role = get_field(item, "role")
        if kind == "function_call":
            out.append(
                {
                    "role": "assistant",
                    "parts": [
                        _tool_call(
                            get_field(item, "call_id"), get_field(item, "name"), get_field(item, "arguments")
                        )
                    ],
                }
            )
        elif kind == "function_call_output":
            out.append(
                {
                    "role": "tool",
                    "parts": [
                        {
                            "type": "tool_call_response",
                            "id": get_field(item, "call_id"),
                            "response": get_field(item, "output"),
                        }
                    ],
                }
            )
        elif role is not None:
            out.append({"role": role, "parts": _openai_content_parts(get_field(item, "content"))})
        else:
            out.append({"role": "user", "parts": [_generic(item)]})
    return out


def openai_responses_output(output: Any, finish_reason: str | None) -> list[Message]:
    """The ``output`` items of a Response as one assistant message (semconv output schema)."""
    parts: list[Part] = []
    for item in _iter(output):
        kind = get_field(item, "type")
        if kind == "message":
            parts.extend(_openai_content_parts(get_field(item, "content")))
        elif kind == "function_call":
            parts.append(
                _tool_call(get_field(item, "call_id"), get_field(item, "name"), get_field(item, "arguments"))
            )
        elif kind == "reasoning":
            summary = [get_field(s, "text") for s in _iter(get_field(item, "summary"))]
            parts.append({"type": "reasoning", "content": "\n".join(t for t in summary if t)})
        else:
            parts.append(_generic(item))
    return [{"role": "assistant", "parts": parts, "finish_reason": finish_reason}]


# ------------------------------------------------------------------------------------------------
# Anthropic Messages API


def _anthropic_blocks(content: Any) -> list[Part]:
    if isinstance(content, str):
        return [_text(content)]
    parts: list[Part] = []
    for block in _iter(content):
        kind = get_field(block, "type")
        if kind == "text":
            parts.append(_text(get_field(block, "text") or ""))
        elif kind in ("tool_use", "server_tool_use"):
            parts.append(
                {
                    "type": "tool_call",
                    "id": get_field(block, "id"),
                    "name": get_field(block, "name"),
                    "arguments": get_field(block, "input"),
                }
            )
        elif kind == "tool_result":
            parts.append(
                {
                    "type": "tool_call_response",
                    "id": get_field(block, "tool_use_id"),
                    "response": _anthropic_result(get_field(block, "content")),
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            parts.append({"type": "reasoning", "content": get_field(block, "thinking") or ""})
        elif kind in ("image", "document"):
            source = get_field(block, "source")
            if get_field(source, "type") == "url":
                parts.append({"type": "uri", "modality": kind, "uri": get_field(source, "url")})
            else:
                parts.append(
                    {
                        "type": "blob",
                        "modality": kind,
                        "mime_type": get_field(source, "media_type"),
                        "content": get_field(source, "data"),
                    }
                )
        else:
            parts.append(_generic(block))
    return parts


def _anthropic_result(content: Any) -> Any:
    if isinstance(content, str) or content is None:
        return content
    texts = [get_field(b, "text") for b in _iter(content) if get_field(b, "type") == "text"]
    return "".join(t for t in texts if t) if texts else tool_definitions(content)


def anthropic_system(system: Any) -> list[Part] | None:
    """Anthropic's ``system`` parameter as semconv system-instruction parts (None if absent)."""
    if system is None or (not isinstance(system, str) and not _iter(system)):
        return None
    return _anthropic_blocks(system)


def anthropic_input(messages: Any) -> list[Message]:
    """``messages.create(messages=...)`` in the semconv input-message schema."""
    return [
        {"role": get_field(m, "role") or "user", "parts": _anthropic_blocks(get_field(m, "content"))}
        for m in _iter(messages)
    ]


def anthropic_output(content: Any, stop_reason: str | None) -> list[Message]:
    """A Message's ``content`` blocks as one assistant output message."""
    return [{"role": "assistant", "parts": _anthropic_blocks(content), "finish_reason": stop_reason}]
