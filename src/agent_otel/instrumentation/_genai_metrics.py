"""The GenAI client metrics (``gen_ai.client.*`` histograms), through the OpenTelemetry metrics API.

One :class:`GenAIMetrics` per instrumentation, built in its ``instrument()`` from the meter provider it was
given (or the global one). Bucket boundaries are the semantic conventions' advisory ones. Attributes are
low-cardinality only: operation, provider, request/response model, server address/port, error.type —
never ids or content.

Rule for layered instrumentation: the owner of an LLM span (the handle whose ``owned`` is True) records
the metrics for that call; a merged handle does not, so one call is counted once.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import Histogram, MeterProvider

from agent_otel import attributes as attrs
from agent_otel.instrumentation._safe import guard
from agent_otel.version import __version__

_logger = logging.getLogger(__name__)

METER_NAME = "agent_otel"

OPERATION_DURATION = "gen_ai.client.operation.duration"
TOKEN_USAGE = "gen_ai.client.token.usage"
TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"

# Semconv advisory buckets: 0.01 s doubling to 81.92 s; 1 token, x4, to 67108864.
DURATION_BUCKETS: tuple[float, ...] = tuple(round(0.01 * 2**i, 2) for i in range(14))
TOKEN_BUCKETS: tuple[int, ...] = tuple(4**i for i in range(14))

_MAX_LABEL_SETS = 1024

TOKEN_TYPE_INPUT = "input"
TOKEN_TYPE_OUTPUT = "output"


class GenAIMetrics:
    """The three client histograms. ``record`` never raises."""

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

    @guard
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
        """Record one finished call. Token histograms only get the counts that are known."""
        key = (operation, provider, request_model, response_model, server_address, server_port, error_type)
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
