"""Anthropic Messages through the official ``anthropic`` SDK.

Structured output is forced tool use: one tool whose ``input_schema`` is the schema
``remote.structured_for`` gives (the ask's own; a root that is not an object sent under
``value``, since a tool's input is an object), and ``tool_choice`` naming it, so the answer arrives
as that tool's parsed ``input``. Streaming reads
the raw events: ``message_start`` (input usage), ``content_block_delta`` (text), ``message_delta``
(stop reason, output usage), ``message_stop`` (the end — without it the stream was cut).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from bus import messages as m
from actors.providers.remote import CONTENT_FILTERED, RemoteProvider, Reply

ANSWER_TOOL = "answer"


def _source(part: m.Image | m.Document) -> dict[str, Any]:
    if isinstance(part, m.Image) and part.url:
        return {"type": "url", "url": part.url}
    return {"type": "base64", "media_type": part.media_type or "application/pdf", "data": part.data}


def to_anthropic(messages: list[m.Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """(system prompt, messages) in Anthropic's shape."""
    system = [msg.text() for msg in messages if msg.role == "system"]
    out: list[dict[str, Any]] = []
    for msg in messages:
        if msg.role == "system":
            continue
        role = "assistant" if msg.role == "assistant" else "user"
        if isinstance(msg.content, str):
            out.append({"role": role, "content": msg.content})
            continue
        blocks: list[dict[str, Any]] = []
        for part in msg.content:
            if isinstance(part, m.Text):
                blocks.append({"type": "text", "text": part.text})
            elif isinstance(part, m.Image):
                blocks.append({"type": "image", "source": _source(part)})
            elif isinstance(part, m.Document):
                if part.text is not None:
                    blocks.append({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": part.text}})
                else:
                    blocks.append({"type": "document", "source": _source(part)})
            elif isinstance(part, m.ToolCall):
                blocks.append({"type": "tool_use", "id": part.id, "name": part.name, "input": part.arguments})
            elif isinstance(part, m.ToolResult):
                blocks.append({"type": "tool_result", "tool_use_id": part.call_id, "content": part.content, "is_error": part.is_error})
        out.append({"role": role, "content": blocks})
    return ("\n\n".join(system) or None), out


def _usage(usage: Any, output_tokens: int | None = None) -> m.TokenUsage:
    if usage is None:
        return m.TokenUsage(output_tokens=output_tokens or 0)
    # Anthropic's input_tokens leaves out cached ones (read and written); OpenAI and Gemini count
    # them in. Normalise to theirs: input = every prompt token, cached = those read from cache.
    cached = getattr(usage, "cache_read_input_tokens", 0) or 0
    written = getattr(usage, "cache_creation_input_tokens", 0) or 0
    return m.TokenUsage(
        input_tokens=(getattr(usage, "input_tokens", 0) or 0) + cached + written,
        output_tokens=output_tokens if output_tokens is not None else (getattr(usage, "output_tokens", 0) or 0),
        cached_tokens=cached,
    )


def _finish(reason: str | None) -> str:
    return CONTENT_FILTERED if reason == "refusal" else (reason or "end_turn")


def tool_choice(choice: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI's ``tool_choice`` (``Params.tool_choice``) in Anthropic's form; None: leave it out."""
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict) and choice["function"].get("name"):
        return {"type": "tool", "name": choice["function"]["name"]}
    return None


class AnthropicProvider(RemoteProvider):
    description = "Anthropic messages"

    def make_client(self, key: str) -> Any:
        from anthropic import AsyncAnthropic

        return AsyncAnthropic(api_key=key, base_url=self.config.base_url, max_retries=0)

    def _args(self, request: m.Complete, messages: list[m.Message], timeout_s: float) -> dict[str, Any]:
        system, msgs = to_anthropic(messages)
        args: dict[str, Any] = {
            "model": request.params.model or self.model,
            "messages": msgs,
            "max_tokens": self.params(request)[0],
            "timeout": timeout_s,
            **self.sampling(request, stop="stop_sequences"),
        }
        if system:
            args["system"] = system
        if request.tools:
            args["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in request.tools]
            choice = tool_choice(request.params.tool_choice)
            if choice is not None:
                args["tool_choice"] = choice
        return args

    async def call(self, request, messages, schema, timeout_s) -> Reply:
        args = self._args(request, messages, timeout_s)
        if schema is not None:
            args["tools"] = [{"name": ANSWER_TOOL, "description": "Give the answer in this form.", "input_schema": schema}]
            args["tool_choice"] = {"type": "tool", "name": ANSWER_TOOL}
        resp = await self.client.messages.create(**args)
        text = "".join(b.text for b in resp.content if b.type == "text")
        uses = [b for b in resp.content if b.type == "tool_use"]
        structured = next((b.input for b in uses if b.name == ANSWER_TOOL), None) if schema is not None else None
        calls = [m.ToolCall(id=b.id, name=b.name, arguments=dict(b.input or {})) for b in uses if schema is None]
        return Reply(
            text=text,
            structured=structured,
            tool_calls=calls,
            usage=_usage(resp.usage),
            finish_reason=_finish(resp.stop_reason),
            model=resp.model,
        )

    async def call_stream(self, request: m.Complete, timeout_s: float) -> AsyncIterator[str | Reply]:
        stream = await self.client.messages.create(**self._args(request, list(request.messages), timeout_s), stream=True)
        text: list[str] = []
        start_usage = None
        output_tokens: int | None = None
        finish: str | None = None
        model = self.model
        async with stream:
            async for event in stream:
                if event.type == "message_start":
                    start_usage, model = event.message.usage, event.message.model or model
                elif event.type == "content_block_delta" and getattr(event.delta, "type", "") == "text_delta":
                    text.append(event.delta.text)
                    yield event.delta.text
                elif event.type == "message_delta":
                    finish = event.delta.stop_reason or finish
                    output_tokens = event.usage.output_tokens
                elif event.type == "message_stop":
                    yield Reply(text="".join(text), usage=_usage(start_usage, output_tokens),
                                finish_reason=_finish(finish), model=model)
                    return
