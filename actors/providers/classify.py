"""One place that turns what a provider SDK raised into a Failure kind.

Pure: it reads attributes the SDKs share (``status_code`` or ``code``, ``response.headers``, the
error body) and never imports an SDK, so it is cheap and table-testable.

what the provider said                        kind
--------------------------------------------  ---------------------------------------------------
429 (retry-after-ms, retry-after, or Gemini   rate_limited, with retry_after_s
  RetryInfo.retryDelay)
429 insufficient_quota                        auth (the account, not the moment: retrying won't help)
529, or an "overloaded" error                 overloaded
408, SDK/httpx timeouts                       timeout
other 5xx, 404, connection errors             unavailable (another provider may well answer)
400/413/422 about the context window          context_length
400 about safety / content policy             content_filter
401, 403; Gemini's 400 "API key not valid"    auth
other 400/413/422                             bad_request
anything else                                 internal
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from bus import messages as m

_CONTEXT = re.compile(
    r"context.length|context window|maximum context|too long|too many tokens|"
    r"exceeds the maximum (number of )?(input )?tokens|input token count|prompt is too long",
    re.I,
)
_CONTENT = re.compile(r"content.(policy|filter|management)|safety|blocked", re.I)
_OVERLOADED = re.compile(r"overloaded", re.I)
_BAD_KEY = re.compile(r"API[ _]key not valid|API_KEY_INVALID|invalid api[ _-]?key", re.I)
MAX_MESSAGE = 300


def retry_after_s(headers: Mapping[str, str] | None, body: Any = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms``, ``retry-after`` (seconds or an HTTP date), or a
    Gemini ``google.rpc.RetryInfo`` detail (``"retryDelay": "2s"``)."""
    if headers:
        lower = {k.lower(): v for k, v in headers.items()}
        raw_ms = lower.get("retry-after-ms")
        if raw_ms:
            try:
                return max(0.0, float(raw_ms) / 1000.0)
            except ValueError:
                pass
        raw = lower.get("retry-after")
        if raw:
            try:
                return max(0.0, float(raw))
            except ValueError:
                try:
                    from datetime import datetime, timezone

                    when = parsedate_to_datetime(raw)
                    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
                except (TypeError, ValueError):
                    pass
    for detail in _details(body):
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                pass
    return None


def _details(body: Any) -> Iterable[Any]:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("details"), list):
            return err["details"]
    return ()


def kind_for_status(status: int, text: str = "") -> str:
    if status == 429:
        return m.AUTH if "insufficient_quota" in text else m.RATE_LIMITED
    if status == 529 or _OVERLOADED.search(text):
        return m.OVERLOADED
    if status == 408:
        return m.TIMEOUT
    if status in (401, 403) or (status == 400 and _BAD_KEY.search(text)):
        return m.AUTH
    if status in (400, 413, 422):
        if _CONTEXT.search(text):
            return m.CONTEXT_LENGTH
        if _CONTENT.search(text):
            return m.CONTENT_FILTER
        return m.BAD_REQUEST
    if status == 404 or status >= 500:
        return m.UNAVAILABLE
    return m.INTERNAL


def classify(exc: BaseException, *, provider: str | None = None, secrets: Iterable[str] = ()) -> m.Failure:
    """The Failure for an exception raised by an SDK call (secrets are cut out of the message)."""
    status = _status(exc)
    name = type(exc).__name__
    # the class and its bases: httpx's transport errors (ConnectError, ReadError, …) name what they
    # are only through their bases (NetworkError, TransportError)
    lineage = " ".join(cls.__name__ for cls in type(exc).__mro__)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    body = getattr(exc, "body", None) or getattr(exc, "details", None)
    text = _text(exc, body)
    if status is not None:
        kind = kind_for_status(status, f"{text} {_error_type(body)}")
        message = f"HTTP {status}: {text}"
    elif "Timeout" in lineage:
        kind, message = m.TIMEOUT, f"{name}: the provider did not answer in time"
    # aiohttp's (google-genai's async transport when aiohttp is installed): a body cut mid-stream is a
    # ClientPayloadError, whose bases say only ClientError
    elif any(word in lineage for word in ("Connect", "Protocol", "Network", "Transport", "Payload")):
        kind, message = m.UNAVAILABLE, f"{name}: {text}"
    else:
        kind, message = m.INTERNAL, f"{name}: {text}"
    return m.Failure(
        kind=kind,
        message=redact(message, secrets)[:MAX_MESSAGE],
        provider=provider,
        retry_after_s=retry_after_s(headers, body) if kind == m.RATE_LIMITED else None,
    )


def _status(exc: BaseException) -> int | None:
    for attr in ("status_code", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    return None


def _text(exc: BaseException, body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
    message = getattr(exc, "message", None)
    return message if isinstance(message, str) and message else (str(exc) or type(exc).__name__)


def _error_type(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return " ".join(str(err.get(k, "")) for k in ("type", "code", "status"))
    return ""


# A key as error messages show it, partly masked: a head, a mask, a tail (the OpenAI API's
# "sk-proj-****…abcd", "sk-…abcd", "sk-abc123...").
_MASKED = re.compile(r"([A-Za-z0-9_\-]*)(?:\*{2,}|…|\.{3}|•{2,})([A-Za-z0-9_\-]*)")


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` without the secrets, whole or masked: a masked form is cut when its tail (2+
    characters) ends a secret or its head (4+) begins one."""
    secrets = [s for s in secrets if s and len(s) >= 4]
    for secret in secrets:
        text = text.replace(secret, "[redacted]")

    def masked(match: re.Match) -> str:
        head, tail = match.group(1), match.group(2)
        for secret in secrets:
            if (len(tail) >= 2 and secret.endswith(tail)) or (len(head) >= 4 and secret.startswith(head)):
                return "[redacted]"
        return match.group(0)

    return _MASKED.sub(masked, text) if secrets and ("*" in text or "…" in text or "..." in text or "•" in text) else text
