"""OpenAI wire bodies for the ``WireServer``: completions, structured output, streams, errors.

OpenAI Chat Completions — POST /v1/chat/completions
Shapes: API reference "Chat > Create chat completion", "The chat completion object", "The chat
completion chunk object", "Error codes"; SDK types openai/types/chat/chat_completion.py
(ChatCompletion, Choice), chat_completion_message.py, chat_completion_chunk.py
(ChatCompletionChunk, ChoiceDelta), openai/types/completion_usage.py (CompletionUsage,
PromptTokensDetails.cached_tokens); errors: openai/_client.py AsyncOpenAI._make_status_error
(body["error"] -> APIStatusError subclasses by status), openai/_exceptions.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

from actors.fakes.server import Reply, json_reply, split_pieces, sse, wire_id

__all__ = [
    "MODEL", "completion_body", "completion", "structured", "stream", "error", "rate_limited",
    "context_length", "auth_error", "server_error", "unavailable", "tool_calls",
]

MODEL = "gpt-4o-mini-2024-07-18"


def _usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    # openai/types/completion_usage.py: CompletionUsage{prompt_tokens, completion_tokens,
    # total_tokens, prompt_tokens_details{cached_tokens,...}, completion_tokens_details{...}}
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
        },
    }


def completion_body(
    text: str | None,
    *,
    model: str = MODEL,
    finish_reason: str = "stop",
    prompt_tokens: int = 12,
    completion_tokens: int = 7,
    cached_tokens: int = 0,
    refusal: str | None = None,
) -> dict[str, Any]:
    # openai/types/chat/chat_completion.py ChatCompletion: id, object="chat.completion", created,
    # model, choices[{index, message{role="assistant", content, refusal}, logprobs,
    # finish_reason}], usage, system_fingerprint, service_tier
    return {
        "id": wire_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": refusal, "annotations": []},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": _usage(prompt_tokens, completion_tokens, cached_tokens),
        "service_tier": "default",
        "system_fingerprint": "fp_wire",
    }


def completion(text: str = "Hello from OpenAI.", **kw: Any) -> Reply:
    """A plain non-streamed chat completion."""
    return json_reply(200, completion_body(text, **kw), {"x-request-id": wire_id("req_")})


def structured(data: Any, **kw: Any) -> Reply:
    """The answer to a ``response_format={"type": "json_schema", ...}`` request: with structured
    outputs the JSON document is the message ``content`` as a string (API reference "Structured
    Outputs"). A ``str`` is sent as is, so a test can send invalid JSON."""
    text = data if isinstance(data, str) else json.dumps(data)
    return completion(text, **kw)


def stream(
    text: str | list[str] = "Hello from OpenAI, streamed.",
    *,
    model: str = MODEL,
    finish_reason: str = "stop",
    prompt_tokens: int = 12,
    completion_tokens: int = 7,
    cached_tokens: int = 0,
    include_usage: bool = True,
    done: bool = True,
    **reply_kw: Any,
) -> Reply:
    """A streamed chat completion (``stream=True``): ``data: {chat.completion.chunk}`` events — the
    first delta carries the role, then content deltas, then an empty delta with ``finish_reason`` —
    then, with ``stream_options={"include_usage": true}``, one more chunk with ``choices: []`` and the
    usage (every other chunk has ``"usage": null``), then ``data: [DONE]``.
    Source: API reference "The chat completion chunk object" and ``stream_options.include_usage``;
    openai/types/chat/chat_completion_chunk.py; openai/_streaming.py (AsyncStream stops at [DONE])."""
    cid, created = wire_id("chatcmpl-"), int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        c: dict[str, Any] = {
            "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "service_tier": "default", "system_fingerprint": "fp_wire",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            c["usage"] = None
        return c

    events = [sse(chunk({"role": "assistant", "content": "", "refusal": None}, None))]
    events += [sse(chunk({"content": piece}, None)) for piece in split_pieces(text)]
    events.append(sse(chunk({}, finish_reason)))
    if include_usage:
        events.append(
            sse({
                "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "service_tier": "default", "system_fingerprint": "fp_wire", "choices": [],
                "usage": _usage(prompt_tokens, completion_tokens, cached_tokens),
            })
        )
    if done:
        events.append(sse("[DONE]"))
    return Reply(headers={"x-request-id": wire_id("req_")}, events=events, **reply_kw)


def error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """``{"error": {"message", "type", "param", "code"}}`` (API reference "Error codes"; the SDK
    passes ``body["error"]`` to the exception: openai/_client.py ``_make_status_error``,
    openai/_exceptions.py ``APIError.__init__`` reads code/param/type)."""
    return json_reply(
        status,
        {"error": {"message": message, "type": type, "param": param, "code": code}},
        {"x-request-id": wire_id("req_"), **(headers or {})},
    )


def rate_limited(retry_after_s: float = 2.0, *, retry_after_ms: int | None = None) -> Reply:
    """429 with ``retry-after`` (seconds) and ``retry-after-ms`` headers, both of which the SDK reads
    (openai/_base_client.py ``_parse_retry_after_header``), and the rate-limit body."""
    ms = retry_after_ms if retry_after_ms is not None else int(retry_after_s * 1000)
    return error(
        429,
        f"Rate limit reached for gpt-4o-mini in organization org-wire on tokens per min (TPM): "
        f"Limit 200000, Used 199000, Requested 1500. Please try again in {retry_after_s:g}s.",
        type="tokens",
        code="rate_limit_exceeded",
        headers={
            "retry-after": f"{retry_after_s:g}",
            "retry-after-ms": str(ms),
            "x-ratelimit-limit-tokens": "200000",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": f"{retry_after_s:g}s",
        },
    )


def context_length(max_tokens: int = 128000, got: int = 131072) -> Reply:
    """400 ``context_length_exceeded`` (API reference "Error codes")."""
    return error(
        400,
        f"This model's maximum context length is {max_tokens} tokens. However, your messages "
        f"resulted in {got} tokens. Please reduce the length of the messages.",
        type="invalid_request_error",
        code="context_length_exceeded",
        param="messages",
    )


def auth_error(key_shown: str = "sk-test") -> Reply:
    """401 ``invalid_api_key``. The real API echoes (a masked form of) the key in the message;
    ``key_shown`` is what this one echoes, so a test can check the key never leaks further."""
    return error(
        401,
        f"Incorrect API key provided: {key_shown}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        type="invalid_request_error",
        code="invalid_api_key",
    )


def server_error(status: int = 500) -> Reply:
    """500 ``server_error`` (API reference "Error codes")."""
    return error(
        status,
        "The server had an error while processing your request. Sorry about that!",
        type="server_error",
    )


def unavailable() -> Reply:
    """503 "Slow Down" / overloaded (API reference "Error codes")."""
    return error(
        503, "The engine is currently overloaded, please try again later.", type="server_error"
    )


def tool_calls(calls: list[tuple[str, dict[str, Any]]], **kw: Any) -> Reply:
    """The model calls tools (API reference "Function calling"): ``message.content`` null,
    ``message.tool_calls[{id, type="function", function{name, arguments}}]`` where ``arguments`` is
    a JSON string (openai/types/chat/chat_completion_message_tool_call.py), and
    ``finish_reason="tool_calls"``."""
    kw.setdefault("finish_reason", "tool_calls")
    body = completion_body(None, **kw)
    body["choices"][0]["message"]["tool_calls"] = [
        {"id": wire_id("call_"), "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
        for name, args in calls
    ]
    return json_reply(200, body, {"x-request-id": wire_id("req_")})


# --- images: POST /v1/images/generations -------------------------------------------------------
# API reference "Images > Create image" (ImagesResponse: created, data[{b64_json | url,
# revised_prompt}], usage{input_tokens, input_tokens_details{text_tokens, image_tokens},
# output_tokens, total_tokens} for GPT Image models, output_format, size, quality); SDK types
# openai/types/images_response.py (ImagesResponse, Usage), openai/types/image.py (Image).


def images(pngs: list[bytes], *, size: str = "1024x1024", quality: str = "medium", prompt_tokens: int = 9,
           image_tokens: int = 1056, revised_prompt: str | None = None) -> Reply:
    import base64

    data = []
    for png in pngs:
        item: dict[str, Any] = {"b64_json": base64.b64encode(png).decode()}
        if revised_prompt is not None:
            item["revised_prompt"] = revised_prompt
        data.append(item)
    return json_reply(200, {
        "created": int(time.time()), "data": data, "background": "opaque", "output_format": "png",
        "quality": quality, "size": size,
        "usage": {"input_tokens": prompt_tokens,
                  "input_tokens_details": {"text_tokens": prompt_tokens, "image_tokens": 0},
                  "output_tokens": image_tokens * len(pngs), "total_tokens": prompt_tokens + image_tokens * len(pngs)},
    })


def image_urls(urls: list[str]) -> Reply:
    """dall-e models with ``response_format="url"``: data[{url, revised_prompt}], no usage."""
    return json_reply(200, {"created": int(time.time()), "data": [{"url": u, "revised_prompt": "r"} for u in urls]})
