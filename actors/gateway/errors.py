"""Failures as HTTP: OpenAI-style error bodies with the right status, never a stack trace.

==========================  ======  =============================  ======================================
Failure kind (or cause)     status  error.type                     note
==========================  ======  =============================  ======================================
bad_request                 400     invalid_request_error          also a body that is not valid JSON or
context_length              400     invalid_request_error          does not fit the schema
content_filter              400     invalid_request_error          code content_filter (as OpenAI does)
(unknown model)             404     invalid_request_error          code model_not_found
(body too large)            413     invalid_request_error          gateway.max_body_bytes
(no / unknown key)          401     authentication_error           code invalid_api_key
(revoked key)               403     permission_error               code key_revoked
budget_exceeded             402     insufficient_quota             not retried (x-should-retry: false)
rate_limited                429     rate_limit_error               Retry-After (at least 1 s); also
(every route rate-limited)  429     rate_limit_error               all_failed whose every step is
                                                                   rate_limited (or breaker_open)
(key over its rpm)          429     rate_limit_error               the key's requests per minute
overloaded                  503     server_error                   Retry-After: 1
unavailable                 503     server_error                   nobody serves the bus subject
no_healthy_provider         503     server_error                   every candidate's breaker is open
all_failed                  502     server_error                   every provider tried failed
invalid_output              502     server_error                   the model's output failed its schema
auth                        502     server_error                   a provider's own key was refused: the
                                                                   gateway's client did nothing wrong
timeout                     504     timeout                        the budget ran out
cancelled                   499     cancelled                      (the client is gone; rarely seen)
internal, unknown kinds     500     server_error
==========================  ======  =============================  ======================================

Every error body carries ``error.code`` (the Failure kind, or the cause above) and ``llmbus``
(kind, provider, retryable, the ask id when there is one). ``x-should-retry`` tells the OpenAI SDKs
whether a retry can help (they obey it before their own rules), so a 402 is never retried.
"""

from __future__ import annotations

import math

import msgspec
from starlette.responses import Response

from bus import messages as m

# kind -> (status, error type)
_STATUS: dict[str, tuple[int, str]] = {
    m.BAD_REQUEST: (400, "invalid_request_error"),
    m.CONTEXT_LENGTH: (400, "invalid_request_error"),
    m.CONTENT_FILTER: (400, "invalid_request_error"),
    m.BUDGET_EXCEEDED: (402, "insufficient_quota"),
    m.RATE_LIMITED: (429, "rate_limit_error"),
    m.OVERLOADED: (503, "server_error"),
    m.UNAVAILABLE: (503, "server_error"),
    m.NO_HEALTHY_PROVIDER: (503, "server_error"),
    m.ALL_FAILED: (502, "server_error"),
    m.INVALID_OUTPUT: (502, "server_error"),
    m.AUTH: (502, "server_error"),
    m.TIMEOUT: (504, "timeout"),
    m.CANCELLED: (499, "cancelled"),
    m.INTERNAL: (500, "server_error"),
}
_RETRY_AFTER_KINDS = frozenset({m.RATE_LIMITED, m.OVERLOADED, m.UNAVAILABLE, m.NO_HEALTHY_PROVIDER})

_encode = msgspec.json.Encoder().encode


def status_of(kind: str) -> tuple[int, str]:
    """The HTTP status and OpenAI error type for a Failure kind (an unknown kind: 500)."""
    return _STATUS.get(kind, (500, "server_error"))


def error_body(message: str, type_: str, code: str, *, param: str | None = None, **llmbus) -> dict:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    if llmbus:
        body["llmbus"] = llmbus
    return body


def error(status: int, message: str, type_: str, code: str, *, param: str | None = None,
          retry_after_s: float | None = None, retryable: bool = False, **llmbus) -> Response:
    """An OpenAI-style error response."""
    headers = {"x-should-retry": "true" if retryable else "false"}
    if retry_after_s is not None:
        headers["retry-after"] = str(max(1, math.ceil(retry_after_s)))
    return Response(_encode(error_body(message, type_, code, param=param, **llmbus)), status_code=status,
                    media_type="application/json", headers=headers)


def bad_request(message: str, *, param: str | None = None, code: str = m.BAD_REQUEST) -> Response:
    return error(400, message, "invalid_request_error", code, param=param)


def gone() -> Response:
    """499: the client disconnected before its reply (nobody reads this one)."""
    return error(499, "the client disconnected", "cancelled", m.CANCELLED)


def kind_of(failure: m.Failure) -> str:
    """The kind the status is chosen by: ``all_failed`` where every route was rate-limited (each
    step ``rate_limited``, or skipped as ``breaker_open``) is ``rate_limited``: a 429 the client
    should wait out, not a 502."""
    steps = failure.route
    if (failure.kind == m.ALL_FAILED and steps and all(s.outcome in (m.RATE_LIMITED, "breaker_open") for s in steps)
            and any(s.outcome == m.RATE_LIMITED for s in steps)):
        return m.RATE_LIMITED
    return failure.kind


def failure_response(failure: m.Failure, ask_id: str | None = None) -> Response:
    """The response for a Failure of the bus."""
    kind = kind_of(failure)
    status, type_ = status_of(kind)
    retry_after = failure.retry_after_s
    if retry_after is None and kind in _RETRY_AFTER_KINDS:
        retry_after = 1.0
    return error(status, failure.message, type_, kind, retry_after_s=retry_after,
                 retryable=(bool(failure.retryable) or kind == m.RATE_LIMITED) and kind != m.BUDGET_EXCEEDED,
                 kind=failure.kind, provider=failure.provider, ask_id=ask_id)


def failure_event(failure: m.Failure, ask_id: str | None = None) -> dict:
    """The error object sent as an SSE event when a stream fails after it began (status already sent)."""
    status, type_ = status_of(failure.kind)
    return error_body(failure.message, type_, failure.kind, kind=failure.kind, status=status,
                      provider=failure.provider, ask_id=ask_id, retry_after_s=failure.retry_after_s)
