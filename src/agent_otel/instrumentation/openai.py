"""Auto-instrumentation of the official ``openai`` Python SDK.

Every call of these methods becomes one LLM span (``{operation} {model}``, CLIENT) from the span factory:

- ``chat.completions.create`` / ``.parse`` (sync, async, ``stream=True``; so also the
  ``chat.completions.stream(...)`` helper, which calls ``create``);
- ``responses.create`` / ``.parse`` (sync, async, streaming; so also ``responses.stream(...)``);
- ``embeddings.create`` (operation ``embeddings``);
- their ``with_raw_response`` / ``with_streaming_response`` variants, which call the same methods.

Recorded: request params (temperature, top_p, max tokens, seed, penalties, stop, n, stream, service tier,
output type), ``gen_ai.response.{model,id,finish_reasons}``, token usage with cached and reasoning tokens,
``server.address/port`` from the client's ``base_url``, provider ``openai`` (``azure.ai.openai`` for Azure
clients/hosts), the tool calls the model asked for (``agent_otel.llm.tool_call.ids/names``; arguments only
inside ``gen_ai.output.messages`` with content capture on), SDK retries (``http.request.resend_count`` and
one ``agent_otel.llm.retry`` event each), time to first chunk for streams, and the ``gen_ai.client.*``
metrics. Inside an active LLM span of a higher layer (LangChain's ChatOpenAI), no second span is made: the
data goes onto that span (see :func:`agent_otel.spans.start_llm`).

Supported: ``openai >= 1.40`` (the Responses API from the version that has it); tested with 3.54.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GenAiOutputTypeValues,
    GenAiProviderNameValues,
)
from opentelemetry.trace import TracerProvider

from agent_otel import attributes as attrs
from agent_otel import content, spans
from agent_otel.attributes import Operation
from agent_otel.instrumentation import _patching
from agent_otel.instrumentation._call import (
    LLMCall,
    active_call,
    async_wrapper,
    is_raw,
    retry_wrapper,
    server_resolver,
    sync_wrapper,
)
from agent_otel.instrumentation._genai_metrics import GenAIMetrics, metrics_for
from agent_otel.instrumentation._messages import (
    get_field,
    openai_chat_input,
    openai_chat_output,
    openai_responses_input,
    openai_responses_output,
    parse_arguments,
    tool_definitions,
)

_perf_ns = time.perf_counter_ns

PACKAGE = "openai"
MIN_VERSION = (1, 40, 0)

PROVIDER_OPENAI: str = GenAiProviderNameValues.OPENAI.value
PROVIDER_AZURE: str = GenAiProviderNameValues.AZURE_AI_OPENAI.value
_JSON: str = GenAiOutputTypeValues.JSON.value
_TEXT: str = GenAiOutputTypeValues.TEXT.value
_AZURE_HOST_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")

_CHAT_MODULE = "openai.resources.chat.completions.completions"
_RESPONSES_MODULE = "openai.resources.responses.responses"
_EMBEDDINGS_MODULE = "openai.resources.embeddings"
_BASE_CLIENT_MODULE = "openai._base_client"

# (request kwarg, span attribute): numbers/strings copied as they are; "stop" becomes a list.
_CHAT_PARAMS: tuple[tuple[str, str], ...] = (
    ("temperature", attrs.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", attrs.GEN_AI_REQUEST_TOP_P),
    ("max_completion_tokens", attrs.GEN_AI_REQUEST_MAX_TOKENS),
    ("max_tokens", attrs.GEN_AI_REQUEST_MAX_TOKENS),
    ("frequency_penalty", attrs.GEN_AI_REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", attrs.GEN_AI_REQUEST_PRESENCE_PENALTY),
    ("seed", attrs.GEN_AI_REQUEST_SEED),
    ("stop", attrs.GEN_AI_REQUEST_STOP_SEQUENCES),
    ("n", attrs.GEN_AI_REQUEST_CHOICE_COUNT),
    ("service_tier", attrs.OPENAI_REQUEST_SERVICE_TIER),
)
_RESPONSES_PARAMS: tuple[tuple[str, str], ...] = (
    ("temperature", attrs.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", attrs.GEN_AI_REQUEST_TOP_P),
    ("max_output_tokens", attrs.GEN_AI_REQUEST_MAX_TOKENS),
    ("service_tier", attrs.OPENAI_REQUEST_SERVICE_TIER),
)
_EMBEDDINGS_PARAMS: tuple[tuple[str, str], ...] = (("dimensions", attrs.GEN_AI_EMBEDDINGS_DIMENSION_COUNT),)


class _State:
    """What ``instrument()`` set up; ``uninstrument()`` undoes it."""

    metrics: GenAIMetrics | None = None
    patched: list[tuple[Any, str]] = []  # noqa: RUF012 - replaced as a whole, never shared


# ------------------------------------------------------------------------------------------------
# Request side


def _request_attributes(kwargs: dict[str, Any], params: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Span attributes from the request kwargs (``omit``/``NOT_GIVEN`` and other non-scalars skipped)."""
    out: dict[str, Any] = {}
    for key, attr in params:
        value = kwargs.get(key)
        if value is None:
            continue
        kind = type(value)
        if kind is int or kind is float:
            if attr not in out:
                out[attr] = value
        elif kind is str:
            out[attr] = [value] if attr == attrs.GEN_AI_REQUEST_STOP_SEQUENCES else value
        elif (kind is list or kind is tuple) and attr == attrs.GEN_AI_REQUEST_STOP_SEQUENCES:
            out[attr] = [str(v) for v in value]
    if out.get(attrs.GEN_AI_REQUEST_CHOICE_COUNT) == 1:
        del out[attrs.GEN_AI_REQUEST_CHOICE_COUNT]
    return out


def _output_type(response_format: Any) -> str | None:
    """``gen_ai.output.type`` from a chat ``response_format`` (a dict, or a pydantic class for ``parse``)."""
    if response_format is None:
        return None
    if isinstance(response_format, type):
        return _JSON
    kind = get_field(response_format, "type")
    if kind in ("json_object", "json_schema"):
        return _JSON
    if kind == "text":
        return _TEXT
    return None


def _provider_of(client: Any, host: str | None) -> str:
    azure = "Azure" in type(client).__name__ or (host is not None and host.endswith(_AZURE_HOST_SUFFIXES))
    return PROVIDER_AZURE if azure else PROVIDER_OPENAI


_server_of = server_resolver(_provider_of)


def _start(
    instance: Any,
    kwargs: dict[str, Any],
    operation: str,
    params: Sequence[tuple[str, str]],
    call_cls: type[_OpenAICall],
) -> _OpenAICall:
    host, port, provider = _server_of(instance._client)
    model = kwargs.get("model")
    if not isinstance(model, str):
        model = None
    stream = kwargs.get("stream") is True
    attributes = _request_attributes(kwargs, params)
    call_cls.request_attributes(kwargs, attributes)
    owner = active_call()  # a higher layer (LangChain) owns this model call: content and metrics are its
    capture = owner is None and content.capture_enabled()
    if capture:
        # On the span from its start, so a crash mid-call still leaves the prompt in the start record.
        call_cls.request_content(kwargs, attributes)
    handle = spans.start_llm(
        model=model,
        provider=provider,
        operation=operation,
        server_address=host,
        server_port=port,
        stream=stream,
        attributes=attributes,
    )
    return call_cls(
        handle,
        _State.metrics,
        operation=operation,
        provider=provider,
        request_model=model,
        server_address=host,
        server_port=port,
        capture=capture and handle.recording,
        plain=not stream and not is_raw(kwargs),
        owner=owner,
    )


def _start_chat(instance: Any, args: Any, kwargs: dict[str, Any]) -> _OpenAICall:
    return _start(instance, kwargs, Operation.CHAT.value, _CHAT_PARAMS, _ChatCall)


def _start_responses(instance: Any, args: Any, kwargs: dict[str, Any]) -> _OpenAICall:
    return _start(instance, kwargs, Operation.CHAT.value, _RESPONSES_PARAMS, _ResponsesCall)


def _start_embeddings(instance: Any, args: Any, kwargs: dict[str, Any]) -> _OpenAICall:
    return _start(instance, kwargs, Operation.EMBEDDINGS.value, _EMBEDDINGS_PARAMS, _EmbeddingsCall)


def _tool_definitions_json(kwargs: dict[str, Any], out: dict[str, Any]) -> None:
    tools = kwargs.get("tools")
    if isinstance(tools, (list, tuple)) and tools:
        out[attrs.GEN_AI_TOOL_DEFINITIONS] = content.to_json(tool_definitions(tools), kind="tool_definitions")


# ------------------------------------------------------------------------------------------------
# Response side


class _OpenAICall(LLMCall):
    """Base of the openai calls (subclasses keep per-call state in their instance dict)."""

    @staticmethod
    def request_attributes(kwargs: dict[str, Any], out: dict[str, Any]) -> None:
        """Start attributes that need more than a copy of a request param."""

    @staticmethod
    def request_content(kwargs: dict[str, Any], out: dict[str, Any]) -> None:
        """Start attributes with content (only called with content capture on)."""


def _put_chat_usage(call: LLMCall, usage: Any) -> None:
    if usage is None:
        return
    pending = call.pending
    prompt = call.input_tokens = getattr(usage, "prompt_tokens", None)
    if prompt is not None:
        pending[attrs.GEN_AI_USAGE_INPUT_TOKENS] = prompt
    completion = call.output_tokens = getattr(usage, "completion_tokens", None)
    if completion is not None:
        pending[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] = completion
    details = getattr(usage, "prompt_tokens_details", None)
    if details is not None:
        call.put(attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, getattr(details, "cached_tokens", None))
    details = getattr(usage, "completion_tokens_details", None)
    if details is not None:
        call.put(attrs.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, getattr(details, "reasoning_tokens", None))


class _ChatCall(_OpenAICall):
    """chat.completions: whole responses and ``ChatCompletionChunk`` streams."""

    # Stream accumulators: class-level defaults, so a non-streamed call never initialises them.
    response_id: str | None = None
    finish_by_index: dict[int, str] | None = None
    tool_ids: list[str] | None = None
    tool_names: list[str] | None = None
    usage: Any = None
    acc_text: dict[int, list[str]] | None = None
    acc_args: dict[tuple[int, int], list[Any]] | None = None

    @staticmethod
    def request_attributes(kwargs: dict[str, Any], out: dict[str, Any]) -> None:
        response_format = kwargs.get("response_format")
        if response_format is not None:
            output_type = _output_type(response_format)
            if output_type:
                out[attrs.GEN_AI_OUTPUT_TYPE] = output_type

    @staticmethod
    def request_content(kwargs: dict[str, Any], out: dict[str, Any]) -> None:
        out[attrs.GEN_AI_INPUT_MESSAGES] = content.to_json(
            openai_chat_input(kwargs.get("messages")), kind="input_messages"
        )
        _tool_definitions_json(kwargs, out)

    def extract_response(self, response: Any) -> None:
        # The hot path of every non-streamed call: plain dict writes, no helper calls.
        pending = self.pending
        choices = getattr(response, "choices", None) or ()
        model = self.response_model = getattr(response, "model", None)
        if model:
            pending[attrs.GEN_AI_RESPONSE_MODEL] = model
        response_id = getattr(response, "id", None)
        if response_id:
            pending[attrs.GEN_AI_RESPONSE_ID] = response_id
        finish = [r for r in (getattr(c, "finish_reason", None) for c in choices) if r]
        if finish:
            pending[attrs.GEN_AI_RESPONSE_FINISH_REASONS] = finish
        _put_chat_usage(self, getattr(response, "usage", None))
        ids: list[str] = []
        names: list[str] = []
        for choice in choices:
            for call in getattr(getattr(choice, "message", None), "tool_calls", None) or ():
                ids.append(str(getattr(call, "id", None)))
                names.append(str(getattr(getattr(call, "function", None), "name", None)))
        if names:
            pending[attrs.LLM_TOOL_CALL_NAMES] = names
            pending[attrs.LLM_TOOL_CALL_IDS] = ids
        value = getattr(response, "system_fingerprint", None)
        if value:
            pending[attrs.OPENAI_RESPONSE_SYSTEM_FINGERPRINT] = value
        value = getattr(response, "service_tier", None)
        if value:
            pending[attrs.OPENAI_RESPONSE_SERVICE_TIER] = value
        if self.capture:
            pending[attrs.GEN_AI_OUTPUT_MESSAGES] = content.to_json(
                openai_chat_output(choices), kind="output_messages"
            )

    def on_chunk(self, chunk: Any) -> None:
        # Overrides LLMCall.on_chunk (no observe_chunk indirection: this runs once per chunk).
        if self.first_chunk_ns is None:
            self.first_chunk_ns = _perf_ns()
            self.response_id = chunk.id
            self.response_model = chunk.model
        usage = chunk.usage
        if usage is not None:
            self.usage = usage
        for choice in chunk.choices:
            reason = choice.finish_reason
            if reason:
                if self.finish_by_index is None:
                    self.finish_by_index = {}
                self.finish_by_index[choice.index] = reason
            delta = choice.delta
            if delta is None:
                continue
            calls = delta.tool_calls
            if calls:
                self._observe_tool_calls(choice.index, calls)
            if self.capture and delta.content:
                if self.acc_text is None:
                    self.acc_text = {}
                self.acc_text.setdefault(choice.index, []).append(delta.content)

    def _observe_tool_calls(self, choice_index: int, calls: Any) -> None:
        for call in calls:
            fn = call.function
            if call.id:
                if self.tool_ids is None:
                    self.tool_ids, self.tool_names = [], []
                self.tool_ids.append(call.id)
                self.tool_names.append((fn.name if fn is not None else None) or "")  # type: ignore[union-attr]
            if self.capture:
                if self.acc_args is None:
                    self.acc_args = {}
                entry = self.acc_args.setdefault((choice_index, call.index), [call.id, None, []])
                if call.id:
                    entry[0] = call.id
                if fn is not None:
                    if fn.name:
                        entry[1] = fn.name
                    if fn.arguments:
                        entry[2].append(fn.arguments)

    def complete_stream(self) -> None:
        finish = [r for _, r in sorted(self.finish_by_index.items())] if self.finish_by_index else None
        self.put_response(self.response_model, self.response_id, finish)
        _put_chat_usage(self, self.usage)
        self.put_tool_calls(self.tool_ids, self.tool_names)
        if self.capture:
            self.put(
                attrs.GEN_AI_OUTPUT_MESSAGES, content.to_json(self._stream_output(), kind="output_messages")
            )

    def _stream_output(self) -> list[dict[str, Any]]:
        indexes = (
            set(self.acc_text or ()) | {i for i, _ in self.acc_args or ()} | set(self.finish_by_index or ())
        )
        messages = []
        for index in sorted(indexes) or [0]:
            parts: list[dict[str, Any]] = []
            text = "".join((self.acc_text or {}).get(index, ()))
            if text:
                parts.append({"type": "text", "content": text})
            for (choice_index, _), (call_id, name, pieces) in sorted((self.acc_args or {}).items()):
                if choice_index == index:
                    parts.append(
                        {
                            "type": "tool_call",
                            "id": call_id,
                            "name": name,
                            "arguments": parse_arguments("".join(pieces)),
                        }
                    )
            messages.append(
                {
                    "role": "assistant",
                    "parts": parts,
                    "finish_reason": (self.finish_by_index or {}).get(index),
                }
            )
        return messages


_RESPONSES_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_RESPONSES_PREAMBLE = frozenset({"response.created", "response.in_progress", "response.queued"})
_INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}


class _ResponsesCall(_OpenAICall):
    """responses: whole ``Response`` objects and typed event streams (the final event has the response)."""

    final: Any = None
    started: Any = None

    @staticmethod
    def request_attributes(kwargs: dict[str, Any], out: dict[str, Any]) -> None:
        text = kwargs.get("text")
        kind = get_field(get_field(text, "format"), "type") if text is not None else None
        if kind in ("json_schema", "json_object") or isinstance(kwargs.get("text_format"), type):
            out[attrs.GEN_AI_OUTPUT_TYPE] = _JSON

    @staticmethod
    def request_content(kwargs: dict[str, Any], out: dict[str, Any]) -> None:
        instructions = kwargs.get("instructions")
        if isinstance(instructions, str):
            out[attrs.GEN_AI_SYSTEM_INSTRUCTIONS] = content.to_json(
                [{"type": "text", "content": instructions}], kind="system_instructions"
            )
        out[attrs.GEN_AI_INPUT_MESSAGES] = content.to_json(
            openai_responses_input(kwargs.get("input")), kind="input_messages"
        )
        _tool_definitions_json(kwargs, out)

    def extract_response(self, response: Any) -> None:
        output = getattr(response, "output", None) or ()
        ids: list[str] = []
        names: list[str] = []
        for item in output:
            if getattr(item, "type", None) == "function_call":
                ids.append(str(getattr(item, "call_id", None)))
                names.append(str(getattr(item, "name", None)))
        status = getattr(response, "status", None)
        if status == "completed":
            finish: str | None = "tool_calls" if names else "stop"
        elif status == "incomplete":
            reason = getattr(getattr(response, "incomplete_details", None), "reason", None)
            finish = _INCOMPLETE_REASONS.get(reason, str(reason or "incomplete"))
        elif status:
            finish = "error" if status == "failed" else str(status)
        else:
            finish = None
        self.response_model = getattr(response, "model", None)
        self.put_response(self.response_model, getattr(response, "id", None), [finish] if finish else None)
        usage = getattr(response, "usage", None)
        if usage is not None:
            self.input_tokens = getattr(usage, "input_tokens", None)
            self.output_tokens = getattr(usage, "output_tokens", None)
            self.put(attrs.GEN_AI_USAGE_INPUT_TOKENS, self.input_tokens)
            self.put(attrs.GEN_AI_USAGE_OUTPUT_TOKENS, self.output_tokens)
            self.put(
                attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
                getattr(getattr(usage, "input_tokens_details", None), "cached_tokens", None),
            )
            self.put(
                attrs.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
                getattr(getattr(usage, "output_tokens_details", None), "reasoning_tokens", None),
            )
        self.put_tool_calls(ids, names)
        self.put(attrs.OPENAI_RESPONSE_SERVICE_TIER, getattr(response, "service_tier", None))
        if self.capture:
            self.put(
                attrs.GEN_AI_OUTPUT_MESSAGES,
                content.to_json(openai_responses_output(output, finish), kind="output_messages"),
            )

    def on_chunk(self, chunk: Any) -> None:
        kind = getattr(chunk, "type", None)
        if kind in _RESPONSES_PREAMBLE:
            if self.started is None:
                self.started = getattr(chunk, "response", None)
            return
        if self.first_chunk_ns is None:
            super().on_chunk(chunk)
        if kind in _RESPONSES_FINAL:
            self.final = getattr(chunk, "response", None)

    def complete_stream(self) -> None:
        if self.final is not None:
            self.extract_response(self.final)
        elif self.started is not None:
            self.response_model = getattr(self.started, "model", None)
            self.put_response(self.response_model, getattr(self.started, "id", None), None)


class _EmbeddingsCall(_OpenAICall):
    """embeddings.create: model, input tokens, dimension count."""

    @staticmethod
    def request_attributes(kwargs: dict[str, Any], out: dict[str, Any]) -> None:
        encoding = kwargs.get("encoding_format")
        if isinstance(encoding, str):
            out[attrs.GEN_AI_REQUEST_ENCODING_FORMATS] = [encoding]

    def extract_response(self, response: Any) -> None:
        self.response_model = getattr(response, "model", None)
        self.put_response(self.response_model, None, None)
        usage = getattr(response, "usage", None)
        if usage is not None:
            self.input_tokens = getattr(usage, "prompt_tokens", None)
            self.put(attrs.GEN_AI_USAGE_INPUT_TOKENS, self.input_tokens)
        data = getattr(response, "data", None)
        if data:
            vector = getattr(data[0], "embedding", None)
            if isinstance(vector, list):
                self.put(attrs.GEN_AI_EMBEDDINGS_DIMENSION_COUNT, len(vector))


# ------------------------------------------------------------------------------------------------
# Wrappers


def _targets() -> list[tuple[str, str, Callable[..., Any]]]:
    chat_sync, chat_async = sync_wrapper(_start_chat), async_wrapper(_start_chat)
    resp_sync, resp_async = sync_wrapper(_start_responses), async_wrapper(_start_responses)
    return [
        (_CHAT_MODULE, "Completions.create", chat_sync),
        (_CHAT_MODULE, "Completions.parse", chat_sync),
        (_CHAT_MODULE, "AsyncCompletions.create", chat_async),
        (_CHAT_MODULE, "AsyncCompletions.parse", chat_async),
        (_RESPONSES_MODULE, "Responses.create", resp_sync),
        (_RESPONSES_MODULE, "Responses.parse", resp_sync),
        (_RESPONSES_MODULE, "AsyncResponses.create", resp_async),
        (_RESPONSES_MODULE, "AsyncResponses.parse", resp_async),
        (_EMBEDDINGS_MODULE, "Embeddings.create", sync_wrapper(_start_embeddings)),
        (_EMBEDDINGS_MODULE, "AsyncEmbeddings.create", async_wrapper(_start_embeddings)),
        (_BASE_CLIENT_MODULE, "SyncAPIClient._sleep_for_retry", retry_wrapper),
        (_BASE_CLIENT_MODULE, "AsyncAPIClient._sleep_for_retry", retry_wrapper),
    ]


def instrument(
    *, tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> bool:
    """Patch the openai SDK. Returns False (debug log) when it is missing or older than ``MIN_VERSION``.

    Idempotent. ``meter_provider`` (default: the global one) gets the ``gen_ai.client.*`` histograms.
    ``tracer_provider`` is accepted for the instrumentor's calling convention only: the caller applies it
    through ``spans.set_tracer_provider`` (the span factory picks the tracer of every layer).
    """
    if _State.patched:
        return True
    if not _patching.supported(PACKAGE, MIN_VERSION):
        return False
    _State.metrics = metrics_for(meter_provider)
    _State.patched = _patching.patch_all(_targets())
    return bool(_State.patched)


def uninstrument() -> None:
    """Restore every patched method (idempotent)."""
    _patching.unpatch_all(_State.patched)
    _State.patched = []
