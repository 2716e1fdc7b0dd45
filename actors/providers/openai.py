"""OpenAI Chat Completions through the official ``openai`` SDK.

Structured output uses ``response_format={"type": "json_schema", …}``; streaming asks for
``stream_options={"include_usage": True}`` so the last chunk carries the usage.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from bus import messages as m
from actors.providers.remote import CONTENT_FILTERED, RemoteProvider, Reply, data_url


def to_openai(messages: list[m.Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for msg in messages:
        if isinstance(msg.content, str):
            out.append({"role": msg.role, "content": msg.content})
            continue
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for part in msg.content:
            if isinstance(part, m.Text):
                parts.append({"type": "text", "text": part.text})
            elif isinstance(part, m.Image):
                parts.append({"type": "image_url", "image_url": {"url": data_url(part)}})
            elif isinstance(part, m.Document):
                if part.text is not None:
                    parts.append({"type": "text", "text": part.text})
                else:
                    parts.append({"type": "file", "file": {"file_data": data_url(part), "filename": part.name or "document.pdf"}})
            elif isinstance(part, m.ToolCall):
                calls.append({"id": part.id, "type": "function",
                              "function": {"name": part.name, "arguments": json.dumps(part.arguments)}})
            elif isinstance(part, m.ToolResult):
                out.append({"role": "tool", "tool_call_id": part.call_id, "content": part.content})
        if parts or calls:
            entry: dict[str, Any] = {"role": msg.role, "content": parts or None}
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
    return out


def _usage(usage: Any) -> m.TokenUsage:
    if usage is None:
        return m.TokenUsage()
    details = getattr(usage, "prompt_tokens_details", None)
    return m.TokenUsage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cached_tokens=(getattr(details, "cached_tokens", None) or 0) if details else 0,
    )


def _finish(reason: str | None) -> str:
    return CONTENT_FILTERED if reason == "content_filter" else (reason or "stop")


class OpenAIProvider(RemoteProvider):
    description = "OpenAI chat completions"

    def make_client(self, key: str) -> Any:
        from openai import AsyncOpenAI

        return AsyncOpenAI(api_key=key, base_url=self.config.base_url, max_retries=0)

    def _args(self, request: m.Complete, messages: list[m.Message], timeout_s: float) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": request.params.model or self.model,
            "messages": to_openai(messages),
            "max_completion_tokens": self.params(request)[0],
            "timeout": timeout_s,
            **self.sampling(request, stop="stop"),
        }
        if request.tools:
            args["tools"] = [
                {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
                for t in request.tools
            ]
        return args

    async def call(self, request, messages, schema, timeout_s) -> Reply:
        args = self._args(request, messages, timeout_s)
        if schema is not None:
            args["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
        resp = await self.client.chat.completions.create(**args)
        choice = resp.choices[0]
        text = choice.message.content or ""
        calls = [
            m.ToolCall(id=c.id, name=c.function.name, arguments=json.loads(c.function.arguments or "{}"))
            for c in (choice.message.tool_calls or [])
            if getattr(c, "function", None) is not None
        ]
        return Reply(
            text=text,
            structured=text if schema is not None else None,
            tool_calls=calls,
            usage=_usage(resp.usage),
            finish_reason=_finish(choice.finish_reason),
            model=resp.model,
        )

    async def call_stream(self, request: m.Complete, timeout_s: float) -> AsyncIterator[str | Reply]:
        args = self._args(request, list(request.messages), timeout_s)
        stream = await self.client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True})
        text: list[str] = []
        finish: str | None = None
        usage = None
        model = ""
        async with stream:
            async for chunk in stream:
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        text.append(choice.delta.content)
                        yield choice.delta.content
                    if choice.finish_reason:
                        finish = choice.finish_reason
        if finish is not None:  # no finish_reason: the stream was cut
            yield Reply(text="".join(text), usage=_usage(usage), finish_reason=_finish(finish), model=model)
