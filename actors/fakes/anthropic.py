"""Anthropic wire bodies for the ``WireServer``: messages, forced tool use, streams, errors.

Anthropic Messages — POST /v1/messages
Shapes: API reference "Messages", "Streaming Messages", "Errors"; SDK types
anthropic/types/message.py (Message), usage.py (Usage), text_block.py, tool_use_block.py,
raw_message_stream_event.py and raw_*_event.py, raw_content_block_delta.py (TextDelta,
InputJSONDelta), message_delta_usage.py; errors: anthropic/types/shared/error_response.py
({"type":"error","error":{...},"request_id"}), shared/error_type.py, anthropic/_error_classes.py
(status -> exception class; 529 -> OverloadedError), anthropic/_streaming.py (an ``error`` SSE
event raises from inside a 200 stream).
"""

from __future__ import annotations

import json
from typing import Any

from actors.fakes.server import Reply, json_reply, split_pieces, sse, wire_id

__all__ = [
    "MODEL", "message_body", "message", "tool_use", "stream", "tool_use_stream", "error",
    "rate_limited", "overloaded", "prompt_too_long", "auth_error", "server_error", "stream_error_event",
]

MODEL = "claude-haiku-4-5-20251001"


def _usage(
    input_tokens: int, output_tokens: int, cache_read: int, cache_creation: int
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_creation,
        "service_tier": "standard",
    }


def message_body(
    content: list[dict[str, Any]],
    *,
    model: str = MODEL,
    stop_reason: str = "end_turn",
    input_tokens: int = 14,
    output_tokens: int = 9,
    cache_read_input_tokens: int = 0,
    cache_creation_input_tokens: int = 0,
) -> dict[str, Any]:
    # anthropic/types/message.py Message: id, type="message", role="assistant", content[],
    # model, stop_reason, stop_sequence, usage{input_tokens, output_tokens,
    # cache_read_input_tokens, cache_creation_input_tokens}
    return {
        "id": wire_id("msg_01"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _usage(
            input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens
        ),
    }


def message(text: str = "Hello from Claude.", **kw: Any) -> Reply:
    """A plain non-streamed message with one text block (anthropic/types/text_block.py)."""
    return json_reply(
        200, message_body([{"type": "text", "text": text}], **kw), {"request-id": wire_id("req_")}
    )


def tool_use(input: dict[str, Any], *, name: str = "answer", text: str | None = None, **kw: Any) -> Reply:
    """The answer to forced tool use (``tool_choice={"type": "tool", "name": ...}``): one
    ``tool_use`` block whose ``input`` is the object (anthropic/types/tool_use_block.py), with
    ``stop_reason="tool_use"`` (API reference "Tool use", forcing a tool). ``text`` adds a leading
    text block (models sometimes explain before calling)."""
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content.append({"type": "tool_use", "id": wire_id("toolu_01"), "name": name, "input": input})
    kw.setdefault("stop_reason", "tool_use")
    return json_reply(200, message_body(content, **kw), {"request-id": wire_id("req_")})


def _stream_events(
    blocks: list[list[dict[str, Any]]],  # per block: [content_block_start's block, *deltas]
    *,
    model: str,
    stop_reason: str,
    input_tokens: int,
    output_tokens: int,
    cache_read_input_tokens: int,
    cache_creation_input_tokens: int,
) -> list[bytes]:
    message = {
        "id": wire_id("msg_01"), "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": _usage(input_tokens, 1, cache_read_input_tokens, cache_creation_input_tokens),
    }
    events = [sse({"type": "message_start", "message": message}, "message_start")]
    for index, (start, *deltas) in enumerate(blocks):
        events.append(
            sse({"type": "content_block_start", "index": index, "content_block": start}, "content_block_start")
        )
        if index == 0:
            events.append(sse({"type": "ping"}, "ping"))
        events += [
            sse({"type": "content_block_delta", "index": index, "delta": d}, "content_block_delta")
            for d in deltas
        ]
        events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    # message_delta's usage is cumulative (anthropic/types/message_delta_usage.py)
    events.append(
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
            "message_delta",
        )
    )
    events.append(sse({"type": "message_stop"}, "message_stop"))
    return events


def stream(
    text: str | list[str] = "Hello from Claude, streamed.",
    *,
    model: str = MODEL,
    stop_reason: str = "end_turn",
    input_tokens: int = 14,
    output_tokens: int = 9,
    cache_read_input_tokens: int = 0,
    cache_creation_input_tokens: int = 0,
    **reply_kw: Any,
) -> Reply:
    """A streamed message: ``message_start`` (usage with input tokens), ``content_block_start``
    (text ""), ``ping``, ``content_block_delta`` × n (``text_delta``), ``content_block_stop``,
    ``message_delta`` (stop_reason and the output usage), ``message_stop`` — each event as
    ``event: NAME`` + ``data: {...}`` (API reference "Streaming Messages")."""
    block = [{"type": "text", "text": ""}] + [{"type": "text_delta", "text": p} for p in split_pieces(text)]
    events = _stream_events(
        [block], model=model, stop_reason=stop_reason, input_tokens=input_tokens,
        output_tokens=output_tokens, cache_read_input_tokens=cache_read_input_tokens,
        cache_creation_input_tokens=cache_creation_input_tokens,
    )
    return Reply(headers={"request-id": wire_id("req_")}, events=events, **reply_kw)


def tool_use_stream(
    input: dict[str, Any] | str,
    *,
    name: str = "answer",
    model: str = MODEL,
    input_tokens: int = 14,
    output_tokens: int = 9,
    parts: int = 3,
    **reply_kw: Any,
) -> Reply:
    """Forced tool use, streamed: ``content_block_start`` with a ``tool_use`` block (``input: {}``)
    then ``input_json_delta`` events whose ``partial_json`` pieces concatenate to the input
    (API reference "Streaming Messages" > input JSON deltas; anthropic/types/input_json_delta.py)."""
    raw = input if isinstance(input, str) else json.dumps(input)
    step = max(1, -(-len(raw) // parts))
    block = [{"type": "tool_use", "id": wire_id("toolu_01"), "name": name, "input": {}}] + [
        {"type": "input_json_delta", "partial_json": raw[i : i + step]} for i in range(0, len(raw), step)
    ]
    events = _stream_events(
        [block], model=model, stop_reason="tool_use", input_tokens=input_tokens,
        output_tokens=output_tokens, cache_read_input_tokens=0, cache_creation_input_tokens=0,
    )
    return Reply(headers={"request-id": wire_id("req_")}, events=events, **reply_kw)


def _error_body(type: str, message: str) -> dict[str, Any]:
    # anthropic/types/shared/error_response.py ErrorResponse{type="error", error{type, message}, request_id}
    return {"type": "error", "error": {"type": type, "message": message}, "request_id": wire_id("req_01")}


def error(status: int, type: str, message: str, *, headers: dict[str, str] | None = None) -> Reply:
    """``{"type": "error", "error": {"type", "message"}, "request_id"}`` (API reference "Errors")."""
    return json_reply(status, _error_body(type, message), {"request-id": wire_id("req_"), **(headers or {})})


def rate_limited(retry_after_s: int = 2) -> Reply:
    """429 ``rate_limit_error`` with ``retry-after`` in whole seconds and the
    ``anthropic-ratelimit-*`` headers (API reference "Rate limits" > response headers)."""
    return error(
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50,000 input tokens "
        "per minute. Please reduce the prompt length or the maximum tokens requested, or try again later.",
        headers={
            "retry-after": str(retry_after_s),
            "anthropic-ratelimit-input-tokens-limit": "50000",
            "anthropic-ratelimit-input-tokens-remaining": "0",
            "anthropic-ratelimit-input-tokens-reset": "2030-01-01T00:00:00Z",
        },
    )


def overloaded(status: int = 529) -> Reply:
    """529 ``overloaded_error`` (API reference "Errors"; SDK: anthropic/_error_classes.py maps 529
    to ``OverloadedError``)."""
    return error(status, "overloaded_error", "Overloaded")


def prompt_too_long(got: int = 215000, maximum: int = 200000) -> Reply:
    """400 ``invalid_request_error`` with the prompt-too-long message the API sends when the input
    exceeds the context window."""
    return error(400, "invalid_request_error", f"prompt is too long: {got} tokens > {maximum} maximum")


def auth_error() -> Reply:
    """401 ``authentication_error``."""
    return error(401, "authentication_error", "invalid x-api-key")


def server_error(status: int = 500) -> Reply:
    """500 ``api_error``."""
    return error(status, "api_error", "Internal server error")


def stream_error_event(type: str = "overloaded_error", message: str = "Overloaded") -> bytes:
    """An ``error`` event inside a 200 stream (API reference "Streaming Messages" > error events;
    anthropic/_streaming.py raises it through ``_make_status_error``). Insert it into
    ``stream(...).events`` to fail a stream after it started."""
    return sse(_error_body(type, message), "error")
