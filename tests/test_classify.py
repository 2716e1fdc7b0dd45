"""Pure parts of the provider layer: failure classification, Retry-After, rate limits, schemas."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from bus import messages as m
from actors.providers.classify import classify, kind_for_status, redact, retry_after_s
from actors.providers.limits import RateLimits
from actors.providers.openai import strict_compatible
from actors.providers.remote import CONFIDENCE_SCHEMA, parse_structured, structured_for


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


CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
        "additionalProperties": False}
OPEN_CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def test_a_closed_schema_is_sent_as_it_is_and_the_bare_object_accepted() -> None:
    structured = structured_for(CITY)
    assert structured.sent == CITY and not structured.confidence and not structured.wrapped
    assert parse_structured('{"city": "Oslo"}', structured) == ({"city": "Oslo"}, None, None)
    assert parse_structured({"city": "Oslo"}, structured) == ({"city": "Oslo"}, None, None)
    for raw in ['{"city": 3}', "{}", '{"city": "x", "confidence": 0.5}', '{"data": {"city": "x"}, "confidence": 1}',
                "not json", None]:
        data, confidence, problem = parse_structured(raw, structured)
        assert data is None and confidence is None and problem, raw


def test_an_open_schema_offers_an_optional_confidence_that_validation_does_not_need() -> None:
    structured = structured_for(OPEN_CITY)
    assert structured.confidence and structured.sent["properties"]["confidence"] == CONFIDENCE_SCHEMA
    assert structured.sent["required"] == ["city"]  # not required
    assert OPEN_CITY["properties"] == {"city": {"type": "string"}}  # the ask's schema is not changed
    assert parse_structured('{"city": "Oslo", "confidence": 0.8}', structured) == ({"city": "Oslo"}, 0.8, None)
    assert parse_structured({"city": "Oslo", "confidence": 1}, structured) == ({"city": "Oslo"}, 1.0, None)
    assert parse_structured({"city": "Oslo"}, structured) == ({"city": "Oslo"}, None, None)
    for odd in (2, -0.1, "high", True, None):  # not a confidence: dropped, the data is still fine
        assert parse_structured({"city": "Oslo", "confidence": odd}, structured) == ({"city": "Oslo"}, None, None)
    assert parse_structured({"city": "Oslo", "extra": [1]}, structured) == ({"city": "Oslo", "extra": [1]}, None, None)
    assert parse_structured({"confidence": 0.9}, structured)[2]  # still needs its city


@pytest.mark.parametrize("schema", [
    {**OPEN_CITY, "properties": {"confidence": {"type": "string"}}},  # its own confidence: data, not ours
    {**OPEN_CITY, "required": ["city", "confidence"]},
    {**OPEN_CITY, "additionalProperties": {"type": "string"}},
    {**OPEN_CITY, "maxProperties": 1},
    {**OPEN_CITY, "patternProperties": {"^c": {"type": "string"}}},
    {**OPEN_CITY, "propertyNames": {"maxLength": 4}},
])
def test_no_confidence_is_offered_where_it_could_clash(schema) -> None:
    structured = structured_for(schema)
    assert not structured.confidence and structured.sent == schema


@pytest.mark.parametrize(("schema", "answer"), [
    ({"type": "array", "items": {"type": "string"}}, ["a", "b"]),
    ({"type": "string", "enum": ["yes", "no"]}, "no"),
    ({"anyOf": [{"type": "integer"}, {"type": "null"}]}, None),
    ({"properties": {"x": {"type": "integer"}}, "required": ["x"]}, {"x": 1}),  # no root type: wrapped too
])
def test_a_root_that_is_not_an_object_is_sent_under_value_and_either_form_accepted(schema, answer) -> None:
    structured = structured_for(schema)
    assert structured.wrapped and structured.sent == {
        "type": "object", "properties": {"value": schema}, "required": ["value"], "additionalProperties": False}
    assert parse_structured({"value": answer}, structured) == (answer, None, None)
    assert parse_structured(json.dumps(answer), structured) == (answer, None, None)  # the bare value, as JSON text
    if answer is not None and not isinstance(answer, str):  # (None itself: there was no output)
        assert parse_structured(answer, structured) == (answer, None, None)  # or parsed (a tool's input)
    assert parse_structured({"value": {"nested": "wrong"}}, structured)[2]


STRICT = {"type": "object", "additionalProperties": False, "required": ["a", "b", "c"], "properties": {
    "a": {"type": "string", "format": "date", "description": "d"},
    "b": {"type": ["integer", "null"], "minimum": 0},
    "c": {"type": "array", "items": {"$ref": "#/$defs/item"}, "maxItems": 3},
}, "$defs": {"item": {"type": "object", "properties": {"k": {"enum": ["x", "y"]}}, "required": ["k"],
                      "additionalProperties": False}}}


def test_strict_compatible_schemas() -> None:
    assert strict_compatible(STRICT) and strict_compatible(CITY)
    assert strict_compatible(structured_for({"type": "array", "items": CITY}).sent)  # wrapped, still strict
    assert strict_compatible({"type": "object", "properties": {"u": {"anyOf": [CITY, {"type": "null"}]}},
                              "required": ["u"], "additionalProperties": False})


@pytest.mark.parametrize(("why", "schema"), [
    ("extra properties allowed", OPEN_CITY),
    ("an optional property", {**CITY, "properties": {"city": {"type": "string"}, "n": {"type": "integer"}}}),
    ("a nested open object", {**CITY, "properties": {"city": {"type": "object", "properties": {}}}}),
    ("an unsupported keyword", {**CITY, "properties": {"city": {"type": "string", "minLength": 2}}}),
    ("an unsupported format", {**CITY, "properties": {"city": {"type": "string", "format": "uri"}}}),
    ("allOf", {**CITY, "properties": {"city": {"allOf": [{"type": "string"}]}}}),
    ("a $ref with siblings", {**STRICT, "properties": {**STRICT["properties"], "c": {"$ref": "#/$defs/item", "description": "x"}}}),
    ("not an object at the root", {"type": "array", "items": CITY}),
    ("the confidence we offer", structured_for(OPEN_CITY).sent),
    ("too deep", {"type": "object", "additionalProperties": False, "required": ["n"], "properties": {"n": (deep := {
        "type": "object", "additionalProperties": False, "required": [], "properties": {}})}}),
])
def test_schemas_that_are_sent_with_strict_false(why, schema) -> None:
    if why == "too deep":
        node = deep
        for _ in range(10):
            node["properties"] = {"n": {"type": "object", "additionalProperties": False, "required": [], "properties": {}}}
            node["required"] = ["n"]
            node = node["properties"]["n"]
    assert not strict_compatible(schema), why
