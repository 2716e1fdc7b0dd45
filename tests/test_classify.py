"""Pure parts of the provider layer: failure classification, Retry-After, rate limits, schemas."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bus import messages as m
from actors.providers.classify import classify, kind_for_status, redact, retry_after_s
from actors.providers.limits import RateLimits
from actors.providers.remote import parse_structured, wrap_schema


class FakeStatusError(Exception):
    """Shaped like the SDKs' APIStatusError: status_code, response.headers, body."""

    def __init__(self, status: int, body=None, headers=None, message: str = "") -> None:
        super().__init__(message or f"Error code: {status}")
        self.status_code = status
        self.body = body
        self.message = message or f"Error code: {status}"
        self.response = SimpleNamespace(headers=headers or {})


class GenaiError(Exception):
    """Shaped like google.genai.errors.APIError: code, status, message, details (the body)."""

    def __init__(self, code: int, details) -> None:
        super().__init__(f"{code}")
        self.code = code
        self.details = details
        self.message = details["error"]["message"]
        self.response = None


class APITimeoutError(Exception):
    pass


class APIConnectionError(Exception):
    pass


@pytest.mark.parametrize(
    ("status", "text", "kind"),
    [
        (429, "Rate limit reached for requests", m.RATE_LIMITED),
        (429, "You exceeded your current quota insufficient_quota", m.AUTH),
        (529, "Overloaded", m.OVERLOADED),
        (503, "The model is overloaded. Please try again later.", m.OVERLOADED),
        (503, "Service Unavailable", m.UNAVAILABLE),
        (500, "Internal server error", m.UNAVAILABLE),
        (502, "Bad gateway", m.UNAVAILABLE),
        (404, "The model `gpt-x` does not exist", m.UNAVAILABLE),
        (408, "Request timeout", m.TIMEOUT),
        (401, "Incorrect API key provided", m.AUTH),
        (403, "Permission denied", m.AUTH),
        (400, "This model's maximum context length is 128000 tokens", m.CONTEXT_LENGTH),
        (400, "prompt is too long: 210000 tokens > 200000 maximum", m.CONTEXT_LENGTH),
        (400, "The input token count (1200000) exceeds the maximum number of tokens allowed", m.CONTEXT_LENGTH),
        (400, "Your request was rejected as a result of our safety system", m.CONTENT_FILTER),
        (400, "messages: field required", m.BAD_REQUEST),
        (422, "Unprocessable", m.BAD_REQUEST),
        (418, "teapot", m.INTERNAL),
    ],
)
def test_kind_for_status(status: int, text: str, kind: str) -> None:
    assert kind_for_status(status, text) == kind


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"retry-after": "7"}, None, 7.0),
        ({"Retry-After": "1.5"}, None, 1.5),
        ({"retry-after-ms": "250", "retry-after": "1"}, None, 0.25),  # the finer one wins
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None, 0.0),  # a date in the past
        ({"retry-after": "soon"}, None, None),
        ({}, {"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]}}, 2.0),
        ({}, {"error": {"details": [{"@type": "x", "retryDelay": "3.5s"}]}}, 3.5),
        ({}, None, None),
    ],
)
def test_retry_after(headers, body, expected) -> None:
    assert retry_after_s(headers, body) == expected


def test_classify_sdk_status_error_with_retry_after() -> None:
    exc = FakeStatusError(429, {"error": {"message": "Rate limit reached", "type": "requests"}}, {"retry-after": "3"})
    failure = classify(exc, provider="openai")
    assert (failure.kind, failure.retry_after_s, failure.provider) == (m.RATE_LIMITED, 3.0, "openai")
    assert "Rate limit reached" in failure.message and failure.retryable


def test_classify_anthropic_overloaded_type() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert classify(FakeStatusError(529, body)).kind == m.OVERLOADED


def test_classify_gemini_errors() -> None:
    body = {"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
                      "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "4s"}]}}
    failure = classify(GenaiError(429, body))
    assert (failure.kind, failure.retry_after_s) == (m.RATE_LIMITED, 4.0)
    bad_key = {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT"}}
    assert classify(GenaiError(400, bad_key)).kind == m.AUTH  # Gemini says 400, not 401, for a bad key
    bad = {"error": {"code": 400, "message": "Invalid value at 'contents'", "status": "INVALID_ARGUMENT"}}
    assert classify(GenaiError(400, bad)).kind == m.BAD_REQUEST


def test_classify_transport_errors() -> None:
    assert classify(APITimeoutError("Request timed out.")).kind == m.TIMEOUT
    assert classify(APIConnectionError("Connection error.")).kind == m.UNAVAILABLE
    assert classify(ValueError("boom")).kind == m.INTERNAL


def test_secrets_never_reach_the_message() -> None:
    key = "sk-test-TOPSECRET-1234"
    exc = FakeStatusError(401, {"error": {"message": f"Incorrect API key provided: {key}"}})
    failure = classify(exc, secrets=[key])
    assert failure.kind == m.AUTH
    assert key not in failure.message and "[redacted]" in failure.message
    assert redact("abc", ["", "ab"]) == "abc"  # too short to be a secret: left alone


def test_rate_limits_take_and_refill() -> None:
    now = [0.0]
    limits = RateLimits(rpm=2, tpm=None, clock=lambda: now[0])
    assert limits.admit(10) == 0.0
    assert limits.admit(10) == 0.0
    wait = limits.admit(10)
    assert wait == pytest.approx(30.0)  # one request refills every 30 s at 2 rpm
    now[0] = 30.0
    assert limits.admit(10) == 0.0


def test_token_limit_refuses_without_taking() -> None:
    now = [0.0]
    limits = RateLimits(rpm=None, tpm=600, clock=lambda: now[0])
    assert limits.admit(500) == 0.0
    assert limits.admit(200) == pytest.approx(10.0)  # 100 missing at 10 tokens/s
    assert limits.admit(100) == 0.0  # the refused call took nothing
    assert RateLimits(None, None).admit(10**9) == 0.0


def test_structured_output_is_wrapped_and_validated() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    wrapped = wrap_schema(schema)
    assert parse_structured('{"data": {"city": "Oslo"}, "confidence": 0.8}', wrapped) == ({"city": "Oslo"}, 0.8, None)
    assert parse_structured({"data": {"city": "Oslo"}, "confidence": 1}, wrapped)[0] == {"city": "Oslo"}
    for raw in ['{"data": {"city": 3}, "confidence": 0.5}', '{"data": {}, "confidence": 0.5}',
                '{"data": {"city": "x"}, "confidence": 2}', '{"data": {"city": "x"}}', "not json", None]:
        data, confidence, problem = parse_structured(raw, wrapped)
        assert data is None and confidence is None and problem, raw
