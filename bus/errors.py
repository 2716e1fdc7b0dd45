"""The llmbus exception tree. Every ``Failure.kind`` on the wire maps to exactly one class here.

    LlmError                         base; .kind, .message, .provider, .retry_after_s, .failure
    ├── DeadlineExceeded             timeout: the budget ran out before an answer
    ├── RateLimited                  rate_limited: a provider said 429 (see .retry_after_s)
    ├── Overloaded                   overloaded: an actor or provider is full (529, admission)
    ├── Unavailable                  unavailable: nobody serves the subject, or the provider is down
    ├── AuthError                    auth: missing or rejected credentials (401/403)
    ├── BadRequest                   bad_request: the request itself is wrong; do not retry it
    │   ├── ContextLengthExceeded    context_length: the prompt is too long for the model
    │   └── InvalidOutput            invalid_output: the answer failed its schema or validation
    ├── ContentFiltered              content_filter: a safety filter blocked the answer
    ├── BudgetExceeded               budget_exceeded: the spending budget would be exceeded
    ├── NoHealthyProvider            no_healthy_provider: every candidate's breaker is open
    ├── AllFailed                    all_failed: every provider tried failed (see the route)
    ├── Cancelled                    cancelled: a Cancel stopped the work
    ├── InternalError                internal: a bug
    └── UnknownFailure               a kind this version does not know (from a newer peer): .kind
                                     is that kind as it came, .retryable what the sender said
                                     (False when it said nothing)
    ConfigError                      local only: an invalid config file (never on the wire)

``error_for(failure)`` turns a wire Failure into its exception; ``exc.failure`` goes the other way
(for an ``UnknownFailure``, the Failure it came from, unchanged).
"""

from __future__ import annotations

from bus import messages as m


class LlmError(Exception):
    kind: str = m.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        retry_after_s: float | None = None,
        failure: m.Failure | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.retry_after_s = retry_after_s
        self._failure = failure

    @property
    def failure(self) -> m.Failure:
        if self._failure is None:
            self._failure = m.Failure(
                kind=self.kind,
                message=self.message,
                provider=self.provider,
                retry_after_s=self.retry_after_s,
            )
        return self._failure

    @property
    def retryable(self) -> bool:
        return bool(self.failure.retryable)

    def __str__(self) -> str:
        who = f" [{self.provider}]" if self.provider else ""
        return f"{self.kind}{who}: {self.message}"


class DeadlineExceeded(LlmError):
    kind = m.TIMEOUT


class RateLimited(LlmError):
    kind = m.RATE_LIMITED


class Overloaded(LlmError):
    kind = m.OVERLOADED


class Unavailable(LlmError):
    kind = m.UNAVAILABLE


class AuthError(LlmError):
    kind = m.AUTH


class BadRequest(LlmError):
    kind = m.BAD_REQUEST


class ContextLengthExceeded(BadRequest):
    kind = m.CONTEXT_LENGTH


class InvalidOutput(BadRequest):
    kind = m.INVALID_OUTPUT


class ContentFiltered(LlmError):
    kind = m.CONTENT_FILTER


class BudgetExceeded(LlmError):
    kind = m.BUDGET_EXCEEDED


class NoHealthyProvider(LlmError):
    kind = m.NO_HEALTHY_PROVIDER


class AllFailed(LlmError):
    kind = m.ALL_FAILED


class Cancelled(LlmError):
    kind = m.CANCELLED


class InternalError(LlmError):
    kind = m.INTERNAL


class UnknownFailure(LlmError):
    """A Failure whose kind this version does not know. It keeps that kind (``.kind`` is the
    instance's, not the class's) so it can be passed on, logged and counted as it came."""

    kind = ""

    def __init__(self, message: str, *, kind: str, **fields) -> None:
        super().__init__(message, **fields)
        self.kind = kind


class ConfigError(Exception):
    """An invalid configuration file or value; the message names the file and the key."""


_BY_KIND: dict[str, type[LlmError]] = {
    cls.kind: cls
    for cls in (
        DeadlineExceeded, RateLimited, Overloaded, Unavailable, AuthError, BadRequest,
        ContextLengthExceeded, InvalidOutput, ContentFiltered, BudgetExceeded, NoHealthyProvider,
        AllFailed, Cancelled, InternalError,
    )
}
assert set(_BY_KIND) == m.FAILURE_KINDS, "every Failure kind needs exactly one exception class"


def error_for(failure: m.Failure) -> LlmError:
    """The exception for a wire Failure: its kind's class, or ``UnknownFailure`` keeping the kind."""
    cls = _BY_KIND.get(failure.kind)
    if cls is None:
        return UnknownFailure(failure.message, kind=failure.kind, provider=failure.provider,
                              retry_after_s=failure.retry_after_s, failure=failure)
    return cls(
        failure.message,
        provider=failure.provider,
        retry_after_s=failure.retry_after_s,
        failure=failure,
    )


def failure(kind: str, message: str, **fields) -> m.Failure:
    return m.Failure(kind=kind, message=message, **fields)
