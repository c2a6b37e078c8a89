"""The lifecycle of one instrumented model call (shared by the openai, anthropic and LangChain layers).

An :class:`LLMCall` owns the span handle of one model call from the moment the wrapper starts it until it
ends — exactly once — on the first of: the call raising (:meth:`LLMCall.fail`), a non-streamed result
(:meth:`LLMCall.finish`), the end of the stream the call returned (the call is the stream proxy's
observer), or, for a raw response whose body is read later, the caller parsing/closing/dropping it.
Subclasses only extract data (``extract_response``, ``observe_chunk``, ``complete_stream``); everything
they do runs guarded, and nothing here touches the caller's return value or exception.

Layers: a call that other instrumented calls may run inside (LangChain's chat model call, over the openai
SDK) *claims* the model call (:meth:`LLMCall.claim`): a call started beneath it (:func:`active_call`)
merges its span data into the owner's span (the span factory's one-LLM-span rule), leaves content capture
and the ``gen_ai.client.*`` metrics to the owner, and hands it what only it knows (server address and
port; response model and tokens if the owner lacks them) when it ends. So one model call is one span and
one metric record.

:func:`sync_wrapper` / :func:`async_wrapper` are the ``wrapt`` wrappers every layer uses around the call.

``error.type`` of a failed call: the HTTP status code as a string (``"429"``, ``"500"``) for an API error
that has one — the same low-cardinality value for both providers — otherwise the exception's class name
(``"APITimeoutError"``, ``"APIConnectionError"``, ``"CancelledError"``...). ``http.response.status_code`` is
set too when known.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import wrapt
from opentelemetry import context as context_api

from agent_otel import attributes as attrs
from agent_otel import spans
from agent_otel.instrumentation._genai_metrics import GenAIMetrics
from agent_otel.instrumentation._safe import guard
from agent_otel.instrumentation._streams import AsyncStreamProxy, SyncStreamProxy
from agent_otel.spans import SpanHandle

_logger = logging.getLogger(__name__)

_perf_ns = time.perf_counter_ns  # the one clock of call durations and time to first chunk

_CALL_KEY = context_api.create_key("agent_otel.llm_call")


def error_type_for(exc: BaseException) -> str:
    """``error.type`` for an exception raised by an SDK call (see the module docstring)."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool) and status >= 400:
        return str(status)
    return type(exc).__qualname__


class LLMCall:
    """One model call in flight. Subclasses override the extraction hooks; see the module docstring."""

    __slots__ = (
        "capture",
        "context",
        "ended",
        "first_chunk_ns",
        "handle",
        "input_tokens",
        "metrics",
        "operation",
        "output_tokens",
        "owner",
        "pending",
        "plain",
        "provider",
        "request_model",
        "response_model",
        "server_address",
        "server_port",
        "start_ns",
    )

    def __init__(
        self,
        handle: SpanHandle,
        metrics: GenAIMetrics | None,
        *,
        operation: str,
        provider: str,
        request_model: str | None,
        server_address: str | None,
        server_port: int | None,
        capture: bool,
        plain: bool = False,
        owner: LLMCall | None = None,
    ) -> None:
        self.handle = handle
        self.context: context_api.Context | None = handle.context  # attached while the call runs
        self.owner = owner
        self.plain = plain
        self.metrics = metrics
        self.operation = operation
        self.provider = provider
        self.request_model = request_model
        self.server_address = server_address
        self.server_port = server_port
        self.capture = capture
        self.start_ns = _perf_ns()
        self.first_chunk_ns: int | None = None
        self.response_model: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.pending: dict[str, Any] = {}
        self.ended = False

    # -- layers ---------------------------------------------------------------------------------
    def claim(self) -> None:
        """Own this model call for the layers beneath (see the module docstring): mark :attr:`context`."""
        self.context = context_api.set_value(_CALL_KEY, self, self.handle.context)

    def absorb(self, inner: LLMCall) -> None:
        """A call of a layer beneath ended: take what this call lacks for its metrics."""
        if self.server_address is None:
            self.server_address = inner.server_address
            self.server_port = inner.server_port
        if self.response_model is None:
            self.response_model = inner.response_model
        if self.input_tokens is None:
            self.input_tokens = inner.input_tokens
        if self.output_tokens is None:
            self.output_tokens = inner.output_tokens

    # -- attributes -----------------------------------------------------------------------------
    def put(self, key: str, value: Any) -> None:
        """Queue one span attribute (None ignored); all queued ones are set in one SDK call at the end."""
        if value is not None:
            self.pending[key] = value

    def put_response(self, model: Any, response_id: Any, finish_reasons: list[str] | None) -> None:
        """Queue ``gen_ai.response.{model,id,finish_reasons}``."""
        if model:
            self.pending[attrs.GEN_AI_RESPONSE_MODEL] = str(model)
        if response_id:
            self.pending[attrs.GEN_AI_RESPONSE_ID] = str(response_id)
        if finish_reasons:
            self.pending[attrs.GEN_AI_RESPONSE_FINISH_REASONS] = finish_reasons

    def put_tool_calls(self, ids: list[str] | None, names: list[str] | None) -> None:
        """Queue the ids and names of the tool calls the model asked for (aligned arrays)."""
        if names:
            self.pending[attrs.LLM_TOOL_CALL_NAMES] = names
            self.pending[attrs.LLM_TOOL_CALL_IDS] = ids or []

    # -- extraction hooks (subclasses) ----------------------------------------------------------
    def extract_response(self, response: Any) -> None:
        """Record a complete response (an SDK model, or the decoded JSON body of a raw response)."""

    def observe_chunk(self, chunk: Any) -> None:
        """Accumulate what one stream chunk says (cheap: runs per chunk)."""

    def complete_stream(self) -> None:
        """Record what the chunks accumulated, once the stream is over."""

    # -- outcomes -------------------------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        """The call (or its stream) raised ``exc``: status ERROR, error.type, exception event; end."""
        if self.ended:
            return
        try:
            error_type = attrs.ERROR_TYPE_OTHER
            try:
                error_type = error_type_for(exc)
                status = getattr(exc, "status_code", None)
                if isinstance(status, int):
                    self.put(attrs.HTTP_RESPONSE_STATUS_CODE, status)
                self.handle.fail(exc, error_type=error_type)
            finally:
                self._end(error_type)
        except Exception:
            _logger.debug("agent-otel: recording a failed call failed", exc_info=True)

    def finish(self, result: Any) -> Any:
        """The call returned ``result``: record it and return what the caller must get.

        A stream comes back wrapped in a stream proxy (the span ends with the stream); a raw response whose
        body is still unread comes back wrapped in a :class:`RawResponseProxy`; anything else is returned
        as is, after the span ended. Never raises; on an internal failure the original result is returned.
        ``plain`` calls (neither streamed nor raw, as the request says) skip the probing of the result.
        """
        if self.plain:
            self.finish_response(result)
            return result
        try:
            if hasattr(result, "http_response") and hasattr(result, "parse"):
                return self._finish_raw(result)
            if hasattr(result, "__next__"):
                return SyncStreamProxy(result, self)
            if hasattr(result, "__anext__"):
                return AsyncStreamProxy(result, self)
        except Exception:
            _logger.debug("agent-otel: could not wrap the result", exc_info=True)
            self._end(None)
            return result
        self.finish_response(result)
        return result

    def finish_response(self, response: Any) -> None:
        """Record a complete response and end the span."""
        if self.ended:
            return
        if self.metrics is not None or self.handle.recording:
            try:
                self.extract_response(response)
            except Exception:
                _logger.debug("agent-otel: response extraction failed", exc_info=True)
        self._end(None)

    def _finish_raw(self, raw: Any) -> Any:
        http = raw.http_response
        if http.is_closed and not getattr(raw, "_is_sse_stream", getattr(raw, "_stream", False)):
            self.finish_response(_json_body(http))
            return raw
        return RawResponseProxy(raw, self)

    # -- stream observer --------------------------------------------------------------------------
    def on_chunk(self, chunk: Any) -> None:
        """Stream observer: one chunk."""
        if self.first_chunk_ns is None:
            self.first_chunk_ns = _perf_ns()
        self.observe_chunk(chunk)

    def on_end(self, error: BaseException | None) -> None:
        """Stream observer: the stream is over."""
        if error is not None:
            self.fail(error)
            return
        if self.ended:
            return
        try:
            self.complete_stream()
        except Exception:
            _logger.debug("agent-otel: stream completion failed", exc_info=True)
        self._end(None)

    # -- ending ---------------------------------------------------------------------------------
    def _end(self, error_type: str | None) -> None:
        if self.ended:
            return
        self.ended = True
        try:
            self._close_span(error_type)
        except Exception:
            _logger.debug("agent-otel: ending the call failed", exc_info=True)

    def _close_span(self, error_type: str | None) -> None:
        now = _perf_ns()
        ttfc = None
        handle = self.handle
        pending = self.pending
        self.context = None  # a claimed call's context holds the call itself: no cycle left behind
        if self.first_chunk_ns is not None:
            ttfc = (self.first_chunk_ns - self.start_ns) / 1e9
            pending[attrs.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = ttfc
        if pending:
            # One SDK call for an owned span; on a merged handle, only the keys the owner's span lacks.
            handle.set_attributes(pending)
        handle.end()
        if self.owner is not None:
            self.owner.absorb(self)
        elif self.metrics is not None:
            self.metrics.record(
                operation=self.operation,
                provider=self.provider,
                request_model=self.request_model,
                response_model=self.response_model,
                server_address=self.server_address,
                server_port=self.server_port,
                error_type=error_type,
                duration_s=(now - self.start_ns) / 1e9,
                input_tokens=self.input_tokens,
                output_tokens=self.output_tokens,
                time_to_first_chunk_s=ttfc,
            )

    def end_unfinished(self) -> None:
        """End with what is known (a raw response closed or dropped before being parsed)."""
        self._end(None)


@guard
def _json_body(http: Any) -> Any:
    return _view(http.json())


class AttrView:
    """Attribute access to a decoded JSON body, so the same extraction code reads SDK models and raw bodies.

    ``view.usage.prompt_tokens`` is ``body["usage"]["prompt_tokens"]``; a missing key reads as None.
    """

    __slots__ = ("_value",)

    def __init__(self, value: dict[str, Any]) -> None:
        self._value = value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _view(self._value.get(name))

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        """The underlying JSON object (lets content capture serialise it)."""
        return self._value


def _view(value: Any) -> Any:
    if isinstance(value, dict):
        return AttrView(value)
    if isinstance(value, list):
        return [_view(item) for item in value]
    return value


class RawResponseProxy(wrapt.ObjectProxy):  # type: ignore[misc]
    """A raw SDK response (``with_raw_response`` of a stream, ``with_streaming_response``) whose body is
    read after the call returned. The call ends when the caller parses it (a parsed stream hands the call
    to a stream proxy), closes it (also when its ``with`` block exits), or drops it.
    """

    def __init__(self, wrapped: Any, call: LLMCall) -> None:
        super().__init__(wrapped)
        self._self_call = call
        self._self_stream: Any = None
        self._self_parsed: Any = None

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        value = self.__wrapped__.parse(*args, **kwargs)
        if inspect.isawaitable(value):
            return self._self_parse_async(value)
        return self._self_adopt(value)

    async def _self_parse_async(self, awaitable: Any) -> Any:
        return self._self_adopt(await awaitable)

    def _self_adopt(self, value: Any) -> Any:
        try:
            if hasattr(value, "__next__") or hasattr(value, "__anext__"):
                if self._self_stream is not None and self._self_parsed is value:
                    return self._self_stream
                if self._self_call.ended:
                    return value
                proxy = self._self_call.finish(value)
                self._self_parsed, self._self_stream = value, proxy
                return proxy
            self._self_call.finish_response(value)
        except Exception:
            _logger.debug("agent-otel: raw response extraction failed", exc_info=True)
        return value

    def close(self) -> Any:
        result = self.__wrapped__.close()
        if inspect.isawaitable(result):
            return self._self_close_async(result)
        self._self_call.end_unfinished()
        return result

    async def _self_close_async(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        finally:
            self._self_call.end_unfinished()

    def __del__(self) -> None:
        try:
            self._self_call.end_unfinished()
        except BaseException:  # a finalizer must not raise (see _streams._finalize)
            pass


@guard
def note_retry(kwargs: Mapping[str, Any]) -> None:
    """An SDK is about to retry the request of the active LLM call: count it and add a retry event.

    Wraps the SDK's ``_sleep_for_retry(retries_taken=..., response=...)``; costs nothing on calls that are
    not retried. ``http.request.resend_count`` ends as the number of retries of the call.
    """
    handle = spans.active_llm()
    if handle is None:
        return
    attempt = int(kwargs.get("retries_taken") or 0) + 1
    handle.set_attribute(attrs.HTTP_REQUEST_RESEND_COUNT, attempt)
    event: dict[str, Any] = {attrs.LLM_RETRY_ATTEMPT: attempt}
    status = getattr(kwargs.get("response"), "status_code", None)
    if isinstance(status, int):
        event[attrs.HTTP_RESPONSE_STATUS_CODE] = status
    handle.add_event(attrs.LLM_RETRY_EVENT, event)


def retry_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """``wrapt`` wrapper for an SDK client's ``_sleep_for_retry`` (sync or async): see :func:`note_retry`."""
    note_retry(kwargs)
    return wrapped(*args, **kwargs)


def active_call(ctx: context_api.Context | None = None) -> LLMCall | None:
    """The call that claimed the model call running in ``ctx`` (default: current context), if not ended."""
    call = context_api.get_value(_CALL_KEY, ctx)
    if call is not None and not call.ended:
        return call  # type: ignore[no-any-return]
    return None


# ------------------------------------------------------------------------------------------------
# What the SDK layers share


def server_resolver(
    provider_of: Callable[[Any, str | None], str],
) -> Callable[[Any], tuple[str | None, int | None, str]]:
    """A ``server_of(client) -> (server.address, server.port, provider)`` for one SDK, cached per
    ``base_url`` object. ``provider_of(client, host)`` names the provider of a client it has not seen."""
    cache: dict[int, tuple[Any, str | None, int | None, str]] = {}

    def server_of(client: Any) -> tuple[str | None, int | None, str]:
        url = getattr(client, "_base_url", None)
        if url is None:
            url = client.base_url
        entry = cache.get(id(url))
        if entry is not None and entry[0] is url:
            return entry[1], entry[2], entry[3]
        host = url.host or None
        port = url.port or (443 if url.scheme == "https" else 80)
        provider = provider_of(client, host)
        if len(cache) > 256:
            cache.clear()
        cache[id(url)] = (url, host, port, provider)  # holds url: its id cannot be reused while cached
        return host, port, provider

    return server_of


RAW_RESPONSE_HEADER = "x-stainless-raw-response"


def is_raw(kwargs: Mapping[str, Any]) -> bool:
    """Whether an SDK call goes through ``with_raw_response`` / ``with_streaming_response`` (SDK header)."""
    headers = kwargs.get("extra_headers")
    if not headers:
        return False
    try:
        return any(str(k).lower() == RAW_RESPONSE_HEADER for k in headers)
    except Exception:
        return False


Starter = Callable[[Any, Any, Any], "LLMCall | None"]
"""``start(instance, args, kwargs)``: the call to trace, or None. May raise (the wrapper guards it)."""


def begin(start: Starter, instance: Any, args: Any, kwargs: Any) -> LLMCall | None:
    """``start(...)``, guarded: a failure to start leaves the call untraced (debug log), never failed."""
    try:
        return start(instance, args, kwargs)
    except Exception:
        _logger.debug("agent-otel: could not start the LLM span; call not traced", exc_info=True)
        return None


def sync_wrapper(start: Starter) -> Callable[..., Any]:
    """A ``wrapt`` wrapper: the call runs with :attr:`LLMCall.context` attached and is finished or failed.

    The user's call runs exactly once, outside any guard; its value (see :meth:`LLMCall.finish`) and its
    exception reach the caller unchanged.
    """

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        try:  # == begin(...), inline: this is the hot path of every call
            call = start(instance, args, kwargs)
        except Exception:
            _logger.debug("agent-otel: could not start the LLM span; call not traced", exc_info=True)
            call = None
        if call is None:
            return wrapped(*args, **kwargs)
        # Equivalent to ``with handle.activate():`` (marks the LLM call active), without the
        # generator-based context manager on the hot path.
        token = context_api.attach(call.context)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            context_api.detach(token)
        return call.finish(result)

    return wrapper


def async_wrapper(start: Starter) -> Callable[..., Any]:
    """The async twin of :func:`sync_wrapper` (the wrapped method is a coroutine function)."""

    async def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            call = start(instance, args, kwargs)
        except Exception:
            _logger.debug("agent-otel: could not start the LLM span; call not traced", exc_info=True)
            call = None
        if call is None:
            return await wrapped(*args, **kwargs)
        token = context_api.attach(call.context)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            context_api.detach(token)
        return call.finish(result)

    return wrapper
