"""Reading LangChain objects into span data: providers, request parameters, responses, messages.

Pure functions over LangChain's duck-typed objects (messages, ``ChatResult``, chunks, tool errors).
They import nothing from LangChain, so they work across versions and cost nothing at import. Every
public function here is wrapped with :func:`~agent_otel.instrumentation._safe.guard` by its caller or
itself: a surprise in a third-party object loses an attribute, never the user's call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import GenAiProviderNameValues

from agent_otel.instrumentation._safe import guard

MAPPING = (dict, Mapping)
"""For ``isinstance``: a plain dict passes on the fast path, before the (slow) ABC check."""

_P = GenAiProviderNameValues

# LangChain's ``ls_provider`` (set by each integration's ``_get_ls_params``) -> semconv
# ``gen_ai.provider.name``. Unknown values pass through lower-cased (semconv allows custom values).
_PROVIDERS: dict[str, str] = {
    "openai": _P.OPENAI.value,
    "azure": _P.AZURE_AI_OPENAI.value,
    "azure_openai": _P.AZURE_AI_OPENAI.value,
    "azure_ai": _P.AZURE_AI_INFERENCE.value,
    "anthropic": _P.ANTHROPIC.value,
    "google_genai": _P.GCP_GEN_AI.value,
    "google": _P.GCP_GEN_AI.value,
    "google_vertexai": _P.GCP_VERTEX_AI.value,
    "vertexai": _P.GCP_VERTEX_AI.value,
    "google_anthropic_vertex": _P.GCP_VERTEX_AI.value,
    "amazon_bedrock": _P.AWS_BEDROCK.value,
    "bedrock": _P.AWS_BEDROCK.value,
    "bedrock_converse": _P.AWS_BEDROCK.value,
    "mistral": _P.MISTRAL_AI.value,
    "mistralai": _P.MISTRAL_AI.value,
    "groq": _P.GROQ.value,
    "cohere": _P.COHERE.value,
    "deepseek": _P.DEEPSEEK.value,
    "xai": _P.X_AI.value,
    "perplexity": _P.PERPLEXITY.value,
    "ibm": _P.IBM_WATSONX_AI.value,
    "watsonx": _P.IBM_WATSONX_AI.value,
}

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool"}


def provider_name(ls_provider: Any, model_class: type) -> str:
    """The semconv provider name for a chat model (from ``ls_provider``, else its class name)."""
    if isinstance(ls_provider, str) and ls_provider:
        key = ls_provider.lower()
        return _PROVIDERS.get(key, key)
    name = model_class.__name__
    if name.startswith("Chat"):
        name = name[4:]
    elif name.endswith("Chat"):
        name = name[:-4]
    key = name.lower() or "langchain"
    return _PROVIDERS.get(key, key)


def request_attributes(ls_params: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, Any]:
    """Map LangSmith request params (``ls_temperature``, ...) through ``keys`` to span attributes."""
    out: dict[str, Any] = {}
    for ls_key, attr in keys.items():
        value = ls_params.get(ls_key)
        if value is None:
            continue
        if ls_key == "ls_stop":
            if isinstance(value, str):
                value = [value]
            elif isinstance(value, Sequence):
                value = [str(v) for v in value]
            else:
                continue
        out[attr] = value
    return out


class Response:
    """What a chat model answered, in span terms (all optional)."""

    __slots__ = (
        "cache_creation_tokens",
        "cache_read_tokens",
        "finish_reasons",
        "input_tokens",
        "model",
        "output_tokens",
        "reasoning_tokens",
        "response_id",
        "tool_call_ids",
        "tool_call_names",
    )

    def __init__(self) -> None:
        self.model: str | None = None
        self.response_id: str | None = None
        self.finish_reasons: list[str] = []
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cache_read_tokens: int | None = None
        self.cache_creation_tokens: int | None = None
        self.reasoning_tokens: int | None = None
        self.tool_call_ids: list[str] = []
        self.tool_call_names: list[str] = []

    def add_usage(self, usage: Any) -> None:
        """Add a LangChain ``usage_metadata`` dict (summed, as LangChain sums stream chunks)."""
        if not isinstance(usage, MAPPING):
            return
        self.input_tokens = _add(self.input_tokens, usage.get("input_tokens"))
        self.output_tokens = _add(self.output_tokens, usage.get("output_tokens"))
        in_details = usage.get("input_token_details")
        if isinstance(in_details, MAPPING):
            self.cache_read_tokens = _add(self.cache_read_tokens, in_details.get("cache_read"))
            self.cache_creation_tokens = _add(self.cache_creation_tokens, in_details.get("cache_creation"))
        out_details = usage.get("output_token_details")
        if isinstance(out_details, MAPPING):
            self.reasoning_tokens = _add(self.reasoning_tokens, out_details.get("reasoning"))

    def add_metadata(self, metadata: Any, message_id: Any = None) -> None:
        """Take model, response id and finish reason from ``response_metadata``/``generation_info``."""
        if not isinstance(metadata, MAPPING) or not metadata:
            return
        model = metadata.get("model_name") or metadata.get("model") or metadata.get("model_id")
        if isinstance(model, str) and model:
            self.model = model
        rid = metadata.get("id")
        if isinstance(rid, str) and rid:
            self.response_id = rid
        reason = (
            metadata.get("finish_reason")
            or metadata.get("stop_reason")
            or metadata.get("done_reason")
            or metadata.get("finishReason")
        )
        if isinstance(reason, str) and reason:
            self.finish_reasons.append(reason)

    def add_message(self, message: Any) -> None:
        """Take usage, metadata and requested tool calls from one AI message (or chunk)."""
        self.add_usage(getattr(message, "usage_metadata", None))
        self.add_metadata(getattr(message, "response_metadata", None))
        if self.response_id is None:
            mid = getattr(message, "id", None)
            # LangChain invents "lc_run-..." / "run-..." ids when the provider gave none.
            if isinstance(mid, str) and mid and not mid.startswith(("lc_", "run-")):
                self.response_id = mid
        # A stream chunk carries its raw ``tool_call_chunks`` (id and name on a call's first chunk only)
        # and ``tool_calls`` parsed from them: read one of the two.
        calls = getattr(message, "tool_call_chunks", None) or getattr(message, "tool_calls", None) or ()
        for call in calls:
            self._add_tool_call(call)

    def _add_tool_call(self, call: Any) -> None:
        if not isinstance(call, MAPPING):
            return
        name, cid = call.get("name"), call.get("id")
        if cid:
            if str(cid) in self.tool_call_ids:
                return
            self.tool_call_ids.append(str(cid))
        if name:
            self.tool_call_names.append(str(name))


def _add(total: int | None, value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return total
    return value if total is None else total + value


@guard
def read_chat_result(result: Any) -> Response:
    """A :class:`Response` from a ``ChatResult`` (``generations`` of ``ChatGeneration``)."""
    response = Response()
    generations = getattr(result, "generations", None) or ()
    for generation in generations:
        message = getattr(generation, "message", None)
        if message is not None:
            response.add_message(message)
        info = getattr(generation, "generation_info", None)
        if not response.finish_reasons and isinstance(info, MAPPING):
            response.add_metadata({"finish_reason": info.get("finish_reason")})
    llm_output = getattr(result, "llm_output", None)
    if isinstance(llm_output, MAPPING):
        if response.model is None:
            model = llm_output.get("model_name") or llm_output.get("model")
            if isinstance(model, str):
                response.model = model
        if response.input_tokens is None and isinstance(llm_output.get("token_usage"), MAPPING):
            usage = llm_output["token_usage"]
            response.input_tokens = _add(None, usage.get("prompt_tokens"))
            response.output_tokens = _add(None, usage.get("completion_tokens"))
    return response


# --- content (only called when content capture is on) ---


def _text_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}] if content else []
    parts: list[dict[str, Any]] = []
    if isinstance(content, Sequence):
        for block in content:
            if isinstance(block, str):
                parts.append({"type": "text", "content": block})
            elif isinstance(block, MAPPING):
                kind = block.get("type")
                if kind == "text":
                    parts.append({"type": "text", "content": block.get("text", "")})
                elif kind in ("reasoning", "thinking"):
                    parts.append(
                        {"type": "reasoning", "content": block.get("reasoning") or block.get("thinking")}
                    )
                elif kind in ("tool_use", "tool_call", "function_call"):
                    continue  # reported from message.tool_calls
                else:
                    parts.append(dict(block))
    return parts


def message_to_semconv(message: Any) -> dict[str, Any]:
    """One LangChain message as a semconv chat message ``{role, parts[, name]}``."""
    role = _ROLES.get(getattr(message, "type", ""), getattr(message, "type", "user"))
    if role == "tool":
        parts: list[dict[str, Any]] = [
            {
                "type": "tool_call_response",
                "id": getattr(message, "tool_call_id", None),
                "response": getattr(message, "content", None),
            }
        ]
    else:
        parts = _text_parts(getattr(message, "content", None))
        for call in getattr(message, "tool_calls", None) or ():
            if isinstance(call, MAPPING):
                parts.append(
                    {
                        "type": "tool_call",
                        "id": call.get("id"),
                        "name": call.get("name"),
                        "arguments": call.get("args"),
                    }
                )
    out: dict[str, Any] = {"role": role, "parts": parts}
    name = getattr(message, "name", None)
    if name and role != "tool":
        out["name"] = name
    return out


@guard
def input_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """The semconv ``gen_ai.input.messages`` list for a chat model call."""
    return [message_to_semconv(m) for m in messages]


@guard
def output_messages(result: Any) -> list[dict[str, Any]]:
    """The semconv ``gen_ai.output.messages`` list for a ``ChatResult``."""
    out = []
    for generation in getattr(result, "generations", None) or ():
        message = getattr(generation, "message", None)
        if message is None:
            continue
        item = message_to_semconv(message)
        item["role"] = "assistant"
        meta = getattr(message, "response_metadata", None) or {}
        reason = meta.get("finish_reason") or meta.get("stop_reason") if isinstance(meta, MAPPING) else None
        if reason:
            item["finish_reason"] = reason
        out.append(item)
    return out


@guard
def validation_message(exc: BaseException) -> str:
    """A content-free description of a pydantic validation error: locations and error types only.

    ``str(ValidationError)`` quotes the rejected input values (the model's tool arguments), which
    must not reach a span when content capture is off.
    """
    errors = getattr(exc, "errors", None)
    if callable(errors):
        items = errors()
        described = []
        for item in items[:10]:
            loc = ".".join(str(p) for p in item.get("loc", ())) or "<input>"
            described.append(f"{loc}: {item.get('type', 'invalid')}")
        title = getattr(exc, "title", None) or "input"
        more = f" (+{len(items) - 10} more)" if len(items) > 10 else ""
        return f"{len(items)} validation error(s) for {title}: " + "; ".join(described) + more
    return f"{type(exc).__name__} (details withheld: content capture is off)"
