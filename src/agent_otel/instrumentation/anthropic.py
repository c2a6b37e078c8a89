"""Auto-instrumentation of the official ``anthropic`` Python SDK.

Every call of ``messages.create`` (sync, async, ``stream=True``), ``messages.parse`` and the
``messages.stream(...)`` helper — and the same methods under ``client.beta.messages`` and the
``with_raw_response`` / ``with_streaming_response`` variants — becomes one LLM span (``chat {model}``,
CLIENT) from the span factory, with request params (max_tokens, temperature, top_p, top_k, stop sequences,
stream), ``gen_ai.response.{model,id,finish_reasons}`` (the stop reason), usage (``gen_ai.usage.input_tokens``
counts cached tokens too, as the conventions and the SDK do; cache read/creation tokens separately), the
``tool_use`` blocks (``agent_otel.llm.tool_call.ids/names``), ``anthropic.request.id``, SDK retries, time to
first chunk, content when capture is on, and the ``gen_ai.client.*`` metrics.

The SDK's own tracing (``anthropic`` >= 2 opens a ``com.anthropic.sdk.python`` span per API call, on by
default) and ``AGENT_OTEL_ANTHROPIC_SDK_SPANS``:

- ``auto`` (default): when the client's SDK tracing is at its defaults (no ``open_telemetry=`` option, no
  ``ANTHROPIC_OPEN_TELEMETRY*`` variable), the SDK span of each call agent-otel traces is skipped — through
  the SDK's own "no span for this call" path — and agent-otel's span is the one LLM span (it carries what
  the SDK's would). When the user configured SDK tracing on purpose (an ``open_telemetry=`` option that
  changes a default — tracer provider, content mode, conversation id, ... — or one of those variables),
  the SDK span is kept and *adopted*: it starts with ``agent_otel.span.category=llm``, the session's
  conversation id and our request attributes, and agent-otel opens no span of its own for that call
  (metrics are still recorded). Other SDK calls (count_tokens, batches, models, ...) are never touched.
- ``replace``: always skip the SDK span for the calls agent-otel traces.
- ``keep``: always keep (adopt) the SDK span when the client's SDK tracing is on.

Inside an active LLM span of a higher layer (LangChain's ChatAnthropic), no agent-otel span is made
(data goes onto that span); the SDK span is skipped as well unless it is adopted (configured on purpose with
``auto``, or ``keep``), in which case it stays, as a child of the higher layer's span.

Supported: ``anthropic >= 0.40``; tested with 2.12.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import wrapt
from opentelemetry import context as context_api
from opentelemetry.metrics import MeterProvider
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import GenAiProviderNameValues
from opentelemetry.trace import INVALID_SPAN, TracerProvider

from agent_otel import attributes as attrs
from agent_otel import content, spans
from agent_otel.attributes import Category, Operation
from agent_otel.config import get_settings
from agent_otel.context import current_session
from agent_otel.instrumentation import _patching
from agent_otel.instrumentation._call import (
    LLMCall,
    active_call,
    async_wrapper,
    begin,
    is_raw,
    retry_wrapper,
    server_resolver,
    sync_wrapper,
)
from agent_otel.instrumentation._genai_metrics import GenAIMetrics, metrics_for
from agent_otel.instrumentation._messages import (
    anthropic_input,
    anthropic_output,
    anthropic_system,
    get_field,
    parse_arguments,
    tool_definitions,
)
from agent_otel.instrumentation._safe import guard
from agent_otel.instrumentation._streams import AsyncStreamProxy, SyncStreamProxy, exit_error

_logger = logging.getLogger(__name__)

PACKAGE = "anthropic"
MIN_VERSION = (0, 40, 0)
PROVIDER: str = GenAiProviderNameValues.ANTHROPIC.value

_MESSAGES_MODULE = "anthropic.resources.messages.messages"
_BETA_MESSAGES_MODULE = "anthropic.resources.beta.messages.messages"
_BASE_CLIENT_MODULE = "anthropic._base_client"

_PARAMS: tuple[tuple[str, str], ...] = (
    ("max_tokens", attrs.GEN_AI_REQUEST_MAX_TOKENS),
    ("temperature", attrs.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", attrs.GEN_AI_REQUEST_TOP_P),
    ("top_k", attrs.GEN_AI_REQUEST_TOP_K),
)

# The SDK-span plan of the call in flight, in the context attached around the call (the SDK's hook runs
# inside it): _SUPPRESS, or the attributes to start the adopted SDK span with.
_SUPPRESS: Mapping[str, Any] = {}
_SDK_PLAN = context_api.create_key("agent_otel.anthropic.sdk_plan")

_SDK_OFF, _SDK_DEFAULT, _SDK_EXPLICIT = 0, 1, 2
_SDK_ENV = (
    "ANTHROPIC_OPEN_TELEMETRY",
    "ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE",
    "ANTHROPIC_OPEN_TELEMETRY_TRACES_MAX_CONTENT_BYTES",
    "ANTHROPIC_OPEN_TELEMETRY_PROPAGATION",
)


class _State:
    metrics: GenAIMetrics | None = None
    patched: list[tuple[Any, str]] = []  # noqa: RUF012 - replaced as a whole
    env_explicit: bool = False
    default_max_content_bytes: int | None = None


# ------------------------------------------------------------------------------------------------
# The SDK's own tracing


def _sdk_tracing(client: Any) -> int:
    """Whether the client's SDK tracing is off, at its defaults, or configured explicitly."""
    try:
        if client._tracer is None:
            return _SDK_OFF
        options = client._open_telemetry
    except Exception:
        return _SDK_OFF
    if _State.env_explicit or "tracer_provider" in options or "conversation_id" in options:
        return _SDK_EXPLICIT
    traces = options.get("traces") or {}
    if options.get("propagation") is False or traces.get("content_mode", "metadata_only") != "metadata_only":
        return _SDK_EXPLICIT
    default_bytes = _State.default_max_content_bytes
    if default_bytes is not None and traces.get("max_content_bytes", default_bytes) != default_bytes:
        return _SDK_EXPLICIT
    return _SDK_DEFAULT


def _sdk_span_hook(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """Wraps the SDK's ``start_api_call_span``: skip (None) or enrich the span of a call we trace."""
    plan = context_api.get_value(_SDK_PLAN)
    if plan is None:
        return wrapped(*args, **kwargs)
    if plan is _SUPPRESS:
        return None  # the SDK's documented "no span for this call" result
    if len(args) >= 4 and isinstance(args[3], Mapping):
        args = (*args[:3], {**plan, **args[3]}, *args[4:])
    return wrapped(*args, **kwargs)


# ------------------------------------------------------------------------------------------------
# Request side


def _request_attributes(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, attr in _PARAMS:
        value = kwargs.get(key)
        kind = type(value)
        if kind is int or kind is float:
            out[attr] = value
    stop = kwargs.get("stop_sequences")
    if isinstance(stop, (list, tuple)) and stop:
        out[attrs.GEN_AI_REQUEST_STOP_SEQUENCES] = [str(s) for s in stop]
    return out


def _provider_of(client: Any, host: str | None) -> str:
    provider = getattr(client, "_gen_ai_provider_name", None)
    return provider if isinstance(provider, str) and provider else PROVIDER


_server_of = server_resolver(_provider_of)


def _start(instance: Any, kwargs: Mapping[str, Any], stream: bool) -> _MessagesCall:
    """Start the call; its :attr:`~LLMCall.context` carries the SDK-span plan (see ``_sdk_span_hook``)."""
    client = instance._client
    host, port, provider = _server_of(client)
    model = kwargs.get("model")
    if not isinstance(model, str):
        model = None
    attributes = _request_attributes(kwargs)
    owner = active_call()  # a higher layer (LangChain) owns this model call: content and metrics are its
    capture = owner is None and content.capture_enabled()
    sdk = _sdk_tracing(client)
    policy = get_settings().anthropic_sdk_spans
    adopt = sdk != _SDK_OFF and (policy == "keep" or (policy == "auto" and sdk == _SDK_EXPLICIT))
    operation = Operation.CHAT.value
    sdk_plan: Mapping[str, Any] | None = None
    if adopt and spans.active_llm() is None:
        # The SDK's span is the LLM span of this call: enrich it, open none of our own (metrics only).
        sdk_plan = {**attributes, attrs.CATEGORY: Category.LLM.value}
        session = current_session()
        if session is not None:
            sdk_plan[attrs.GEN_AI_CONVERSATION_ID] = session.conversation_id
        handle = spans.SpanHandle(INVALID_SPAN, Category.LLM, context_api.get_current())
    else:
        if capture:
            _request_content(kwargs, attributes)
        handle = spans.start_llm(
            model=model,
            provider=provider,
            operation=operation,
            server_address=host,
            server_port=port,
            stream=stream,
            attributes=attributes,
        )
        if sdk != _SDK_OFF and not adopt:
            sdk_plan = _SUPPRESS
    call = _MessagesCall(
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
    if sdk_plan is not None:
        call.context = context_api.set_value(_SDK_PLAN, sdk_plan, call.context)
    return call


def _start_create(instance: Any, args: Any, kwargs: Mapping[str, Any]) -> _MessagesCall:
    return _start(instance, kwargs, kwargs.get("stream") is True)


def _start_stream(instance: Any, args: Any, kwargs: Mapping[str, Any]) -> _MessagesCall:
    return _start(instance, kwargs, True)


def _request_content(kwargs: Mapping[str, Any], out: dict[str, Any]) -> None:
    """Content attributes of the request (content capture on): on the span from its start."""
    system = anthropic_system(kwargs.get("system"))
    if system:
        out[attrs.GEN_AI_SYSTEM_INSTRUCTIONS] = content.to_json(system, kind="system_instructions")
    out[attrs.GEN_AI_INPUT_MESSAGES] = content.to_json(
        anthropic_input(kwargs.get("messages")), kind="input_messages"
    )
    tools = kwargs.get("tools")
    if isinstance(tools, (list, tuple)) and tools:
        out[attrs.GEN_AI_TOOL_DEFINITIONS] = content.to_json(tool_definitions(tools), kind="tool_definitions")


# ------------------------------------------------------------------------------------------------
# Response side


class _MessagesCall(LLMCall):
    """messages: whole ``Message`` objects and raw message event streams."""

    response_id: str | None = None
    stop_reason: str | None = None
    raw_input: int | None = None
    cache_read: int | None = None
    cache_creation: int | None = None
    tool_ids: list[str] | None = None
    tool_names: list[str] | None = None
    blocks: list[dict[str, Any]] | None = None

    def _usage(self, usage: Any, *, output: bool = True) -> None:
        if usage is None:
            return
        raw_input = get_field(usage, "input_tokens")
        if isinstance(raw_input, int):
            self.raw_input = raw_input
        read = get_field(usage, "cache_read_input_tokens")
        if isinstance(read, int):
            self.cache_read = read
        creation = get_field(usage, "cache_creation_input_tokens")
        if isinstance(creation, int):
            self.cache_creation = creation
        if output:
            tokens = get_field(usage, "output_tokens")
            if isinstance(tokens, int):
                self.output_tokens = tokens

    def _record(self) -> None:
        if self.raw_input is not None:
            self.input_tokens = self.raw_input + (self.cache_read or 0) + (self.cache_creation or 0)
        self.put_response(
            self.response_model, self.response_id, [self.stop_reason] if self.stop_reason else None
        )
        put = self.put
        put(attrs.GEN_AI_USAGE_INPUT_TOKENS, self.input_tokens)
        put(attrs.GEN_AI_USAGE_OUTPUT_TOKENS, self.output_tokens)
        put(attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, self.cache_read)
        put(attrs.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, self.cache_creation)
        self.put_tool_calls(self.tool_ids, self.tool_names)

    def extract_response(self, response: Any) -> None:
        self.response_id = get_field(response, "id")
        self.response_model = get_field(response, "model")
        self.stop_reason = get_field(response, "stop_reason")
        self._usage(get_field(response, "usage"))
        blocks = get_field(response, "content") or ()
        for block in blocks:
            if get_field(block, "type") in ("tool_use", "server_tool_use"):
                if self.tool_ids is None:
                    self.tool_ids, self.tool_names = [], []
                self.tool_ids.append(str(get_field(block, "id")))
                self.tool_names.append(str(get_field(block, "name")))  # type: ignore[union-attr]
        self._record()
        request_id = getattr(response, "_request_id", None)
        if isinstance(request_id, str):
            self.put(attrs.ANTHROPIC_REQUEST_ID, request_id)
        if self.capture:
            self.put(
                attrs.GEN_AI_OUTPUT_MESSAGES,
                content.to_json(anthropic_output(blocks, self.stop_reason), kind="output_messages"),
            )

    def on_chunk(self, chunk: Any) -> None:
        kind = getattr(chunk, "type", None)
        if kind == "message_start":
            message = chunk.message
            self.response_id = message.id
            self.response_model = message.model
            self._usage(message.usage, output=False)  # message_start's output count is a placeholder
            return
        if self.first_chunk_ns is None and kind in ("content_block_start", "content_block_delta"):
            super().on_chunk(chunk)
        if kind == "content_block_start":
            block = chunk.content_block
            block_type = getattr(block, "type", None)
            if block_type in ("tool_use", "server_tool_use"):
                if self.tool_ids is None:
                    self.tool_ids, self.tool_names = [], []
                self.tool_ids.append(block.id)
                self.tool_names.append(block.name)  # type: ignore[union-attr]
            if self.capture:
                if self.blocks is None:
                    self.blocks = []
                self.blocks.append(
                    {
                        "type": block_type,
                        "id": getattr(block, "id", None),
                        "name": getattr(block, "name", None),
                        "text": [],
                        "json": [],
                    }
                )
        elif kind == "content_block_delta":
            if self.capture and self.blocks:
                delta = chunk.delta
                delta_type = getattr(delta, "type", None)
                if delta_type == "text_delta":
                    self.blocks[-1]["text"].append(delta.text)
                elif delta_type == "input_json_delta":
                    self.blocks[-1]["json"].append(delta.partial_json)
                elif delta_type == "thinking_delta":
                    self.blocks[-1]["text"].append(delta.thinking)
        elif kind == "message_delta":
            self.stop_reason = getattr(chunk.delta, "stop_reason", None) or self.stop_reason
            self._usage(getattr(chunk, "usage", None))

    def complete_stream(self) -> None:
        self._record()
        if self.capture:
            parts: list[dict[str, Any]] = []
            for block in self.blocks or ():
                if block["type"] in ("tool_use", "server_tool_use"):
                    parts.append(
                        {
                            "type": "tool_call",
                            "id": block["id"],
                            "name": block["name"],
                            "arguments": parse_arguments("".join(block["json"])) if block["json"] else {},
                        }
                    )
                elif block["type"] == "thinking":
                    parts.append({"type": "reasoning", "content": "".join(block["text"])})
                else:
                    parts.append({"type": "text", "content": "".join(block["text"])})
            self.put(
                attrs.GEN_AI_OUTPUT_MESSAGES,
                content.to_json(
                    [{"role": "assistant", "parts": parts, "finish_reason": self.stop_reason}],
                    kind="output_messages",
                ),
            )


# ------------------------------------------------------------------------------------------------
# Wrappers


_create_sync = sync_wrapper(_start_create)
_create_async = async_wrapper(_start_create)


@guard
def _adopt_message_stream(message_stream: Any, call: LLMCall, asynchronous: bool) -> Any:
    """Route a helper MessageStream's raw events through a stream proxy reporting to ``call``.

    The helper reads its raw stream (``_raw_stream``) lazily, on first iteration, so swapping in a proxy
    makes iteration, ``text_stream``, ``until_done()``, ``get_final_message()`` and ``close()`` all report.
    Without that attribute (another SDK version) the helper stream itself is proxied instead.
    """
    proxy_cls = AsyncStreamProxy if asynchronous else SyncStreamProxy
    raw = getattr(message_stream, "_raw_stream", None)
    if raw is not None and (hasattr(raw, "__anext__") if asynchronous else hasattr(raw, "__next__")):
        message_stream._raw_stream = proxy_cls(raw, call)
        return message_stream
    return proxy_cls(message_stream, call)


class _StreamManagerProxy(wrapt.ObjectProxy):  # type: ignore[misc]
    """``messages.stream(...)``'s manager: the request (and the span) starts when the ``with`` block does."""

    def __init__(self, wrapped: Any, instance: Any, kwargs: dict[str, Any]) -> None:
        super().__init__(wrapped)
        self._self_instance = instance
        self._self_kwargs = kwargs
        self._self_call: LLMCall | None = None

    def __enter__(self) -> Any:
        call = begin(_start_stream, self._self_instance, (), self._self_kwargs)
        if call is None:
            return self.__wrapped__.__enter__()
        self._self_call = call
        token = context_api.attach(call.context)
        try:
            stream = self.__wrapped__.__enter__()
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            context_api.detach(token)
        adopted = _adopt_message_stream(stream, call, False)
        return stream if adopted is None else adopted

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(exc_type, exc, tb)
        finally:
            if self._self_call is not None:
                self._self_call.on_end(exit_error(exc))

    async def __aenter__(self) -> Any:
        call = begin(_start_stream, self._self_instance, (), self._self_kwargs)
        if call is None:
            return await self.__wrapped__.__aenter__()
        self._self_call = call
        token = context_api.attach(call.context)
        try:
            stream = await self.__wrapped__.__aenter__()
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            context_api.detach(token)
        adopted = _adopt_message_stream(stream, call, True)
        return stream if adopted is None else adopted

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(exc_type, exc, tb)
        finally:
            if self._self_call is not None:
                self._self_call.on_end(exit_error(exc))


def _stream_helper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    manager = wrapped(*args, **kwargs)
    try:
        return _StreamManagerProxy(manager, instance, dict(kwargs))
    except Exception:
        _logger.debug("agent-otel: cannot wrap the message stream manager", exc_info=True)
        return manager


def _targets() -> list[tuple[str, str, Callable[..., Any]]]:
    targets: list[tuple[str, str, Callable[..., Any]]] = []
    for module in (_MESSAGES_MODULE, _BETA_MESSAGES_MODULE):
        targets += [
            (module, "Messages.create", _create_sync),
            (module, "Messages.parse", _create_sync),
            (module, "Messages.stream", _stream_helper),
            (module, "AsyncMessages.create", _create_async),
            (module, "AsyncMessages.parse", _create_async),
            (module, "AsyncMessages.stream", _stream_helper),
        ]
    targets += [
        (_BASE_CLIENT_MODULE, "SyncAPIClient._sleep_for_retry", retry_wrapper),
        (_BASE_CLIENT_MODULE, "AsyncAPIClient._sleep_for_retry", retry_wrapper),
        (_BASE_CLIENT_MODULE, "start_api_call_span", _sdk_span_hook),
    ]
    return targets


def instrument(
    *, tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> bool:
    """Patch the anthropic SDK. Returns False (debug log) when it is missing or older than ``MIN_VERSION``.

    Idempotent. ``meter_provider`` (default: the global one) gets the ``gen_ai.client.*`` histograms;
    ``tracer_provider`` is accepted for the instrumentor's calling convention only (the caller applies it
    through ``spans.set_tracer_provider``). The ``ANTHROPIC_OPEN_TELEMETRY*`` variables are read here (the
    SDK reads them when a client is built).
    """
    if _State.patched:
        return True
    if not _patching.supported(PACKAGE, MIN_VERSION):
        return False
    _State.metrics = metrics_for(meter_provider)
    _State.env_explicit = any(os.environ.get(name, "").strip() for name in _SDK_ENV)
    try:
        from anthropic._tracing import DEFAULT_MAX_CONTENT_BYTES

        _State.default_max_content_bytes = int(DEFAULT_MAX_CONTENT_BYTES)
    except Exception:
        _State.default_max_content_bytes = None
    _State.patched = _patching.patch_all(_targets())
    return bool(_State.patched)


def uninstrument() -> None:
    """Restore every patched function (idempotent)."""
    _patching.unpatch_all(_State.patched)
    _State.patched = []
