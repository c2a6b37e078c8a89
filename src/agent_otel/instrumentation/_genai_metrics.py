"""The GenAI client metrics (``gen_ai.client.*`` histograms), through the OpenTelemetry metrics API.

One :class:`GenAIMetrics` per meter provider (:func:`metrics_for`), shared by every instrumentation that
records with it. Bucket boundaries are the semantic conventions' advisory ones. Attributes are low-cardinality
only: operation, provider, request/response model, server address/port, error.type — never ids or content.

Rule for layered instrumentation: a model call is recorded once, by its outermost instrumented layer (the
call that owns the LLM span, see :func:`agent_otel.instrumentation._call.active_call`): a LangChain chat
model call over the openai SDK is recorded by LangChain, with the server address the SDK layer reported.

Records made while the garbage collector runs (a stream dropped without being closed ends from a finalizer)
are queued and made by the next record outside a collection, or at exit: the collector can run while this
thread holds one of the metrics SDK's (non re-entrant) locks, and a finalizer must never wait on them.
"""

from __future__ import annotations

import atexit
import gc
import logging
from collections import deque
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import Histogram, MeterProvider
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import GenAiTokenTypeValues
from opentelemetry.semconv._incubating.metrics.gen_ai_metrics import (
    GEN_AI_CLIENT_OPERATION_DURATION,
    GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
    GEN_AI_CLIENT_TOKEN_USAGE,
)

from agent_otel import attributes as attrs
from agent_otel.version import __version__

_logger = logging.getLogger(__name__)

METER_NAME = "agent_otel"

OPERATION_DURATION = GEN_AI_CLIENT_OPERATION_DURATION
TOKEN_USAGE = GEN_AI_CLIENT_TOKEN_USAGE
TIME_TO_FIRST_CHUNK = GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK

# Semconv advisory buckets: 0.01 s doubling to 81.92 s; 1 token, x4, to 67108864.
DURATION_BUCKETS: tuple[float, ...] = tuple(round(0.01 * 2**i, 2) for i in range(14))
TOKEN_BUCKETS: tuple[int, ...] = tuple(4**i for i in range(14))

_MAX_LABEL_SETS = 1024

TOKEN_TYPE_INPUT: str = GenAiTokenTypeValues.INPUT.value
TOKEN_TYPE_OUTPUT: str = GenAiTokenTypeValues.COMPLETION.value  # "output"


class _Collecting:
    """Whether the cyclic garbage collector is running (kept by a ``gc.callbacks`` hook)."""

    now = False


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    _Collecting.now = phase == "start"


# (metrics, record kwargs) made during a collection; drained by the next record outside one, and at exit.
_DEFERRED: deque[tuple[GenAIMetrics, dict[str, Any]]] = deque()


class GenAIMetrics:
    """The three client histograms. ``record`` never raises and never blocks a finalizer."""

    __slots__ = ("_labels", "duration", "time_to_first_chunk", "token_usage")

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        # Label sets are few (low cardinality by design): build each once, reuse it for every record.
        self._labels: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {}
        meter = metrics.get_meter(METER_NAME, __version__, meter_provider=meter_provider)
        self.duration: Histogram = meter.create_histogram(
            OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.token_usage: Histogram = meter.create_histogram(
            TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.time_to_first_chunk: Histogram = meter.create_histogram(
            TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk of a streamed response",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    def record(
        self,
        *,
        operation: str,
        provider: str,
        request_model: str | None,
        response_model: str | None,
        server_address: str | None,
        server_port: int | None,
        error_type: str | None,
        duration_s: float,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        time_to_first_chunk_s: float | None = None,
    ) -> None:
        """Record one finished call. Token histograms only get the counts that are known. Never raises."""
        if _Collecting.now:  # called from a finalizer the collector runs: later (see the module docstring)
            _DEFERRED.append((self, {k: v for k, v in locals().items() if k != "self"}))  # the arguments
            return
        if _DEFERRED:
            drain()
        key = (operation, provider, request_model, response_model, server_address, server_port, error_type)
        try:
            cached = self._labels.get(key)
            if cached is None:
                cached = self._label_sets(key)
            labels, input_labels, output_labels = cached
            self.duration.record(duration_s, labels)
            if time_to_first_chunk_s is not None:
                self.time_to_first_chunk.record(time_to_first_chunk_s, labels)
            if error_type:
                return
            if input_tokens is not None:
                self.token_usage.record(input_tokens, input_labels)
            if output_tokens is not None:
                self.token_usage.record(output_tokens, output_labels)
        except Exception:
            _logger.debug("agent-otel: recording the GenAI metrics failed", exc_info=True)

    def _label_sets(self, key: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        operation, provider, request_model, response_model, server_address, server_port, error_type = key
        labels: dict[str, Any] = {
            attrs.GEN_AI_OPERATION_NAME: operation,
            attrs.GEN_AI_PROVIDER_NAME: provider,
        }
        if request_model:
            labels[attrs.GEN_AI_REQUEST_MODEL] = request_model
        if response_model:
            labels[attrs.GEN_AI_RESPONSE_MODEL] = response_model
        if server_address:
            labels[attrs.SERVER_ADDRESS] = server_address
        if server_port is not None:
            labels[attrs.SERVER_PORT] = server_port
        if error_type:
            labels[attrs.ERROR_TYPE] = error_type
        sets = (
            labels,
            {**labels, attrs.GEN_AI_TOKEN_TYPE: TOKEN_TYPE_INPUT},
            {**labels, attrs.GEN_AI_TOKEN_TYPE: TOKEN_TYPE_OUTPUT},
        )
        if len(self._labels) >= _MAX_LABEL_SETS:
            self._labels.clear()
        self._labels[key] = sets
        return sets


def drain() -> None:
    """Make the records queued during garbage collections (none while one runs). Never raises."""
    if _Collecting.now:
        return
    queued = []
    try:
        while _DEFERRED:
            queued.append(_DEFERRED.popleft())
    except IndexError:  # another thread took the last one
        pass
    for owner, kwargs in queued:
        owner.record(**kwargs)


# One instance per meter provider (None: the global one), so two instrumentations recording through the same
# provider share its instruments instead of registering them twice. Bounded: tests make many providers.
_SHARED: dict[int, tuple[MeterProvider | None, GenAIMetrics]] = {}


def metrics_for(meter_provider: MeterProvider | None = None) -> GenAIMetrics:
    """The :class:`GenAIMetrics` of ``meter_provider`` (default: the global provider), made once."""
    entry = _SHARED.get(id(meter_provider))
    if entry is not None and entry[0] is meter_provider:
        return entry[1]
    if len(_SHARED) >= 16:
        _SHARED.clear()
    shared = GenAIMetrics(meter_provider)
    _SHARED[id(meter_provider)] = (meter_provider, shared)
    return shared


gc.callbacks.append(_on_gc)
atexit.register(drain)
