"""Gemini wire bodies for the ``WireServer``: responses, structured output, streams, blocks, errors.

Gemini — POST /{version}/models/{model}:generateContent and
:streamGenerateContent?alt=sse (google-genai builds the path in models.py
``generate_content`` / ``generate_content_stream``; the version comes from HttpOptions.api_version,
default "v1" for the Gemini Developer API in this SDK: _api_client.py GOOGLE_AI_API_DEFAULT_VERSION)
Shapes: API reference "Generating content" (GenerateContentResponse, Candidate, FinishReason,
PromptFeedback, BlockReason, UsageMetadata), "Troubleshooting" (error codes); SDK: google/genai
/models.py ``_GenerateContentResponse_from_mldev`` / ``_Candidate_from_mldev`` (camelCase wire ->
snake_case types), types.py GenerateContentResponse, Candidate, GenerateContentResponseUsageMetadata,
GenerateContentResponsePromptFeedback, FinishReason, BlockedReason; errors: google/genai/errors.py
(APIError reads error.code / error.status / error.message; 4xx ClientError, 5xx ServerError);
stream: _api_client.py ``_aiter_response_stream`` (``data: `` lines, events split on blank lines).
"""

from __future__ import annotations

import json
from typing import Any

from actors.fakes.server import Reply, json_reply, split_pieces, sse, wire_id

__all__ = [
    "MODEL", "body", "response", "structured", "stream", "prompt_blocked", "safety_stop", "error",
    "rate_limited", "context_length", "auth_error", "invalid_key", "unavailable", "server_error", "function_calls",
]

MODEL = "gemini-2.5-flash"


def _usage(prompt: int, candidates: int | None, cached: int | None, thoughts: int | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates is not None:
        usage["candidatesTokenCount"] = candidates
    if cached:
        usage["cachedContentTokenCount"] = cached
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    usage["totalTokenCount"] = prompt + (candidates or 0) + (thoughts or 0)
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    return usage


def body(
    text: str | None,
    *,
    model: str = MODEL,
    finish_reason: str | None = "STOP",
    prompt_tokens: int = 10,
    candidates_tokens: int | None = 6,
    cached_tokens: int | None = None,
) -> dict[str, Any]:
    # GenerateContentResponse: candidates[{content{parts[{text}], role="model"}, finishReason,
    # index}], usageMetadata{promptTokenCount, candidatesTokenCount, cachedContentTokenCount,
    # totalTokenCount}, modelVersion, responseId
    candidate: dict[str, Any] = {"index": 0}
    if text is not None:
        candidate["content"] = {"parts": [{"text": text}], "role": "model"}
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    return {
        "candidates": [candidate],
        "usageMetadata": _usage(prompt_tokens, candidates_tokens, cached_tokens),
        "modelVersion": model,
        "responseId": wire_id("resp"),
    }


def response(text: str = "Hello from Gemini.", **kw: Any) -> Reply:
    """A plain ``generateContent`` answer."""
    return json_reply(200, body(text, **kw))


def structured(data: Any, **kw: Any) -> Reply:
    """The answer to a request with ``generationConfig.responseMimeType="application/json"`` and a
    ``responseSchema`` / ``responseJsonSchema``: the JSON document is the text of the first part
    (API reference "Structured output"). A ``str`` is sent as is (e.g. invalid JSON)."""
    text = data if isinstance(data, str) else json.dumps(data)
    return response(text, **kw)


def stream(
    text: str | list[str] = "Hello from Gemini, streamed.",
    *,
    model: str = MODEL,
    finish_reason: str = "STOP",
    prompt_tokens: int = 10,
    candidates_tokens: int = 6,
    cached_tokens: int | None = None,
    **reply_kw: Any,
) -> Reply:
    """``streamGenerateContent?alt=sse``: each event is ``data: {GenerateContentResponse}`` with a
    text piece; every chunk carries ``usageMetadata`` (the prompt count from the start, the
    candidates count on the last); the last chunk has ``finishReason``. No terminator event: the
    stream ends with the body (events separated by CRLF CRLF, as the API sends them)."""
    pieces = split_pieces(text)
    events = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        chunk = body(
            piece,
            model=model,
            finish_reason=finish_reason if last else None,
            prompt_tokens=prompt_tokens,
            candidates_tokens=candidates_tokens if last else None,
            cached_tokens=cached_tokens,
        )
        events.append(sse(chunk, crlf=True))
    return Reply(events=events, **reply_kw)


def prompt_blocked(reason: str = "SAFETY", *, prompt_tokens: int = 10) -> Reply:
    """The prompt was blocked: no candidates, ``promptFeedback.blockReason`` (API reference
    "Generating content" > PromptFeedback / BlockReason; types.py GenerateContentResponsePromptFeedback)."""
    return json_reply(
        200,
        {
            "promptFeedback": {
                "blockReason": reason,
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
                ],
            },
            "usageMetadata": _usage(prompt_tokens, None, None),
            "modelVersion": MODEL,
            "responseId": wire_id("resp"),
        },
    )


def safety_stop(*, prompt_tokens: int = 10) -> Reply:
    """The answer was stopped by safety: a candidate with ``finishReason: "SAFETY"``, its
    ``safetyRatings``, and no content (API reference "Generating content" > FinishReason)."""
    answer = body(None, finish_reason="SAFETY", prompt_tokens=prompt_tokens, candidates_tokens=0)
    answer["candidates"][0]["safetyRatings"] = [
        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True}
    ]
    return json_reply(200, answer)


def error(
    code: int,
    status: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """``{"error": {"code", "message", "status", "details"}}`` — the google.rpc.Status JSON mapping
    (API reference "Troubleshooting" error table; google/genai/errors.py APIError)."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return json_reply(code, {"error": error}, headers)


def rate_limited(retry_delay: str = "2s") -> Reply:
    """429 ``RESOURCE_EXHAUSTED`` with a ``google.rpc.QuotaFailure`` and a ``google.rpc.RetryInfo``
    detail whose ``retryDelay`` is a protobuf Duration string (``"2s"``, ``"1.5s"``). No Retry-After
    header: the delay is only in the body."""
    return error(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. "
        f"Please retry in {retry_delay}.",
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaValue": "10",
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Learn more", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
        ],
    )


def context_length(got: int = 1_200_000, maximum: int = 1_048_576) -> Reply:
    """400 ``INVALID_ARGUMENT``: the input token count exceeds the model's limit."""
    return error(
        400,
        "INVALID_ARGUMENT",
        f"The input token count ({got}) exceeds the maximum number of tokens allowed ({maximum}).",
    )


def auth_error() -> Reply:
    """401 ``UNAUTHENTICATED`` (API reference "Troubleshooting")."""
    return error(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
        "cookie or other valid authentication credential.",
    )


def invalid_key() -> Reply:
    """What the Gemini API really answers to a bad API key: 400 ``INVALID_ARGUMENT`` with a
    ``google.rpc.ErrorInfo`` detail whose ``reason`` is ``API_KEY_INVALID`` (not a 401)."""
    return error(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": "API key not valid. Please pass a valid API key.",
            },
        ],
    )


def unavailable() -> Reply:
    """503 ``UNAVAILABLE`` ("The model is overloaded")."""
    return error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")


def server_error() -> Reply:
    """500 ``INTERNAL``."""
    return error(
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    )


def function_calls(calls: list[tuple[str, dict[str, Any]]], **kw: Any) -> Reply:
    """The model calls functions (API reference "Function calling"): the candidate's parts are
    ``{"functionCall": {"name", "args"}}`` (google/genai/types.py FunctionCall; ``args`` an object,
    not a string), finishReason STOP."""
    data = body(None, **kw)
    data["candidates"][0]["content"] = {
        "parts": [{"functionCall": {"name": name, "args": args}} for name, args in calls],
        "role": "model",
    }
    return json_reply(200, data)


# --- images: Gemini image output through :generateContent -------------------------------------
# API reference "Image generation" (generationConfig.responseModalities ["TEXT", "IMAGE"],
# imageConfig.aspectRatio); the image comes back as a part {inlineData: {mimeType, data (base64)}};
# SDK: google/genai/types.py Part.inline_data (Blob: mime_type, data bytes), models.py
# _Part_from_mldev. Imagen's :predict is Vertex-only in this SDK (models.py _generate_images).


def image_response(pngs: list[bytes], *, text: str | None = None, model: str = "gemini-2.5-flash-image",
                   prompt_tokens: int = 9, image_tokens: int = 1290) -> Reply:
    import base64

    parts: list[dict[str, Any]] = [{"text": text}] if text else []
    parts += [{"inlineData": {"mimeType": "image/png", "data": base64.b64encode(p).decode()}} for p in pngs]
    usage = _usage(prompt_tokens, image_tokens * len(pngs), None)
    usage["candidatesTokensDetails"] = [{"modality": "IMAGE", "tokenCount": image_tokens * len(pngs)}]
    return json_reply(200, {"candidates": [{"index": 0, "content": {"parts": parts, "role": "model"},
                                            "finishReason": "STOP"}],
                            "usageMetadata": usage, "modelVersion": model, "responseId": wire_id("resp")})
