"""openai: errors, retries, metrics, faults in our own code, version gating, uninstrument."""

from __future__ import annotations

import socket
from typing import Any

import openai
import pytest
import wrapt
from opentelemetry.trace import StatusCode

from _sdk_fakes import Rig, _openai_server, async_openai_client, openai_client, openai_rig, user
from agent_otel import attributes as attrs
from agent_otel.fakes.openai_server import Reply, Usage
from agent_otel.instrumentation import _genai_metrics, _patching
from agent_otel.instrumentation import openai as instrumentation

__all__ = ["_openai_server", "openai_rig"]


def test_api_error_status_code_is_the_error_type(openai_rig: Rig) -> None:
    openai_rig.server.script(Reply.error(400, "bad things"))
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(openai_rig).chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
    span = openai_rig.one_llm()
    assert span.status.status_code is StatusCode.ERROR and "bad things" in span.status.description
    assert span.attributes[attrs.ERROR_TYPE] == "400"
    assert span.attributes[attrs.HTTP_RESPONSE_STATUS_CODE] == 400
    event = span.events[0]
    assert event.name == "exception" and event.attributes["exception.type"].endswith("BadRequestError")
    assert caught.value.status_code == 400


def test_the_callers_exception_is_the_same_object(openai_rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    client = openai_client(openai_rig)
    boom = openai.APIConnectionError(request=None)  # type: ignore[arg-type]

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise boom

    monkeypatch.setattr(client.chat.completions, "_post", fail)
    with pytest.raises(openai.APIConnectionError) as caught:
        client.chat.completions.create(model="m", messages=user("hi"))
    assert caught.value is boom
    assert openai_rig.one_llm().attributes[attrs.ERROR_TYPE] == "APIConnectionError"


def test_retries_are_counted_and_the_span_covers_them(openai_rig: Rig) -> None:
    openai_rig.server.script(Reply.error(429, retry_after=0.001), Reply.error(503, retry_after=0.001))
    client = openai_client(openai_rig, max_retries=3)
    result = client.chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
    assert result.choices[0].message.content == "You said: hi"
    assert len(openai_rig.server.requests) == 3
    span = openai_rig.one_llm()
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes[attrs.HTTP_REQUEST_RESEND_COUNT] == 2
    retries = [e for e in span.events if e.name == attrs.LLM_RETRY_EVENT]
    assert [
        (e.attributes[attrs.LLM_RETRY_ATTEMPT], e.attributes[attrs.HTTP_RESPONSE_STATUS_CODE])
        for e in retries
    ] == [(1, 429), (2, 503)]


async def test_async_retries_exhausted(openai_rig: Rig) -> None:
    openai_rig.server.script(*[Reply.error(500, retry_after=0.001)] * 2)
    with pytest.raises(openai.InternalServerError):
        await async_openai_client(openai_rig, max_retries=1).chat.completions.create(
            model="m", messages=user("x")
        )
    span = openai_rig.one_llm()
    assert (
        span.attributes[attrs.ERROR_TYPE] == "500" and span.attributes[attrs.HTTP_REQUEST_RESEND_COUNT] == 1
    )


def test_timeout(openai_rig: Rig) -> None:
    openai_rig.server.script(Reply.hang(1.0))
    with pytest.raises(openai.APITimeoutError):
        openai_client(openai_rig, timeout=0.1).chat.completions.create(model="m", messages=user("hi"))
    span = openai_rig.one_llm()
    assert (
        span.status.status_code is StatusCode.ERROR and span.attributes[attrs.ERROR_TYPE] == "APITimeoutError"
    )


def test_dropped_and_refused_connections(openai_rig: Rig) -> None:
    openai_rig.server.script(Reply.drop())
    with pytest.raises(openai.APIConnectionError):
        openai_client(openai_rig).chat.completions.create(model="m", messages=user("hi"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        refused.embeddings.create(model="e", input="x")
    spans = openai_rig.llm_spans()
    assert [s.attributes[attrs.ERROR_TYPE] for s in spans] == ["APIConnectionError", "APIConnectionError"]
    assert spans[1].attributes[attrs.SERVER_PORT] == port


def test_metrics_values_and_buckets(openai_rig: Rig) -> None:
    client = openai_client(openai_rig)
    openai_rig.server.script(
        Reply(text="ok", usage=Usage(input_tokens=12, output_tokens=5)), Reply.error(429)
    )
    client.chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
    list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=user("a b"), stream=True, stream_options={"include_usage": True}
        )
    )
    durations = openai_rig.points(_genai_metrics.OPERATION_DURATION)
    by_error = {p.attributes.get(attrs.ERROR_TYPE): p for p in durations}
    assert set(by_error) == {None, "429"}
    ok = by_error[None]
    assert ok.count == 2 and tuple(ok.explicit_bounds) == _genai_metrics.DURATION_BUCKETS
    assert ok.attributes[attrs.GEN_AI_OPERATION_NAME] == "chat"
    assert ok.attributes[attrs.GEN_AI_PROVIDER_NAME] == "openai"
    assert ok.attributes[attrs.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    assert ok.attributes[attrs.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini"
    assert ok.attributes[attrs.SERVER_ADDRESS] == "127.0.0.1"
    tokens = {p.attributes[attrs.GEN_AI_TOKEN_TYPE]: p for p in openai_rig.points(_genai_metrics.TOKEN_USAGE)}
    assert tokens["input"].sum == 12 + 2 and tokens["output"].sum == 5 + 4 and tokens["input"].count == 2
    assert tuple(tokens["input"].explicit_bounds) == tuple(float(b) for b in _genai_metrics.TOKEN_BUCKETS)
    (ttfc,) = openai_rig.points(_genai_metrics.TIME_TO_FIRST_CHUNK)
    assert ttfc.count == 1 and ttfc.sum > 0
    for point in durations:
        assert not any("id" in key.split(".")[-1] for key in point.attributes)  # low cardinality


def test_fault_in_extraction_leaves_the_result_untouched(
    openai_rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("extractor bug")

    monkeypatch.setattr(instrumentation._ChatCall, "extract_response", broken)
    monkeypatch.setattr(instrumentation._ChatCall, "on_chunk", broken)
    client = openai_client(openai_rig)
    result = client.chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
    assert result.choices[0].message.content == "You said: hi"
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=user("a b c"), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "You said: a b c"
    assert len(openai_rig.llm_spans()) == 2  # both spans still ended


def test_fault_when_starting_leaves_the_call_untouched(
    openai_rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("start bug")

    monkeypatch.setattr(instrumentation, "_request_attributes", broken)
    result = openai_client(openai_rig).chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
    assert result.choices[0].message.content == "You said: hi"
    assert openai_rig.spans() == []


def test_instrument_is_idempotent_and_uninstrument_restores(openai_rig: Rig) -> None:
    from openai.resources.chat.completions.completions import AsyncCompletions, Completions
    from openai.resources.embeddings import Embeddings
    from openai.resources.responses.responses import Responses

    assert isinstance(Completions.__dict__["create"], wrapt.FunctionWrapper)
    assert instrumentation.instrument()  # again: nothing changes
    assert not isinstance(Completions.__dict__["create"].__wrapped__, wrapt.FunctionWrapper)
    instrumentation.uninstrument()
    instrumentation.uninstrument()
    for owner in (Completions, AsyncCompletions, Embeddings, Responses):
        assert not isinstance(owner.__dict__["create"], wrapt.FunctionWrapper)
    openai_client(openai_rig).chat.completions.create(model="m", messages=user("hi"))
    assert openai_rig.spans() == []


def test_missing_or_old_sdk_is_skipped_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    instrumentation.uninstrument()
    assert not _patching.supported("no-such-package-agent-otel", (1,))
    monkeypatch.setattr(_patching.metadata, "version", lambda name: "1.2.3")
    assert instrumentation.instrument() is False
    from openai.resources.chat.completions.completions import Completions

    assert not isinstance(Completions.__dict__["create"], wrapt.FunctionWrapper)
    assert _patching.parse_version("3.54.0rc1") == (3, 54, 0)
