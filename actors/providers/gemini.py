"""Google Gemini through the official ``google-genai`` SDK.

google-genai has no ``max_retries``: its retries are turned off explicitly with
``HttpRetryOptions(attempts=1)``. Structured output uses ``response_mime_type="application/json"``
with ``response_json_schema`` (the schema ``remote.structured_for`` gives). A safety block (``promptFeedback.blockReason`` or finish reason
``SAFETY``/``PROHIBITED_CONTENT``/…) is ``content_filter``; a stream whose last chunk carries no
finish reason was cut.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from bus import messages as m
from actors.providers.remote import CONTENT_FILTERED, RemoteProvider, Reply

_BLOCKED = {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_SAFETY"}


def to_gemini(messages: list[m.Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """(system instruction, contents) in Gemini's shape."""
    system = [msg.text() for msg in messages if msg.role == "system"]
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name (Gemini answers by name)
    for msg in messages:
        if msg.role == "system":
            continue
        role = "model" if msg.role == "assistant" else "user"
        parts: list[dict[str, Any]] = []
        for part in [m.Text(text=msg.content)] if isinstance(msg.content, str) else msg.content:
            if isinstance(part, m.Text):
                parts.append({"text": part.text})
            elif isinstance(part, m.Image | m.Document):
                if isinstance(part, m.Document) and part.text is not None:
                    parts.append({"text": part.text})
                elif part.data:
                    parts.append({"inline_data": {"mime_type": part.media_type or "application/pdf", "data": part.data}})
                elif isinstance(part, m.Image) and part.url:
                    parts.append({"file_data": {"file_uri": part.url, "mime_type": part.media_type or "image/jpeg"}})
            elif isinstance(part, m.ToolCall):
                names[part.id] = part.name
                parts.append({"function_call": {"name": part.name, "args": part.arguments}})
            elif isinstance(part, m.ToolResult):
                parts.append({"function_response": {"name": names.get(part.call_id, part.call_id),
                                                    "response": {"content": part.content}}})
        contents.append({"role": role, "parts": parts})
    return ("\n\n".join(system) or None), contents


def _usage(meta: Any) -> m.TokenUsage:
    if meta is None:
        return m.TokenUsage()
    return m.TokenUsage(
        input_tokens=meta.prompt_token_count or 0,
        output_tokens=(meta.candidates_token_count or 0) + (getattr(meta, "thoughts_token_count", 0) or 0),
        cached_tokens=meta.cached_content_token_count or 0,
    )


def _finish(resp: Any) -> str | None:
    feedback = getattr(resp, "prompt_feedback", None)
    if feedback is not None and getattr(feedback, "block_reason", None):
        return CONTENT_FILTERED
    if not resp.candidates:
        return None
    reason = resp.candidates[0].finish_reason
    if reason is None:
        return None
    name = getattr(reason, "value", str(reason))
    return CONTENT_FILTERED if name in _BLOCKED else name.lower()


def _text(resp: Any) -> str:
    if not resp.candidates or resp.candidates[0].content is None:
        return ""
    return "".join(p.text for p in (resp.candidates[0].content.parts or []) if p.text and not getattr(p, "thought", False))


def tool_config(choice: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI's ``tool_choice`` (``Params.tool_choice``) as Gemini's ``tool_config``; None: leave it out."""
    modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
    if isinstance(choice, str) and choice in modes:
        return {"function_calling_config": {"mode": modes[choice]}}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict) and choice["function"].get("name"):
        return {"function_calling_config": {"mode": "ANY", "allowed_function_names": [choice["function"]["name"]]}}
    return None


class GeminiProvider(RemoteProvider):
    description = "Google Gemini generateContent"

    def make_client(self, key: str) -> Any:
        from google import genai
        from google.genai import types

        options = types.HttpOptions(base_url=self.config.base_url, retry_options=types.HttpRetryOptions(attempts=1))
        return genai.Client(api_key=key, http_options=options)

    async def image(self, request: m.ImageRequest, ctx) -> m.ImageResult:
        """``<root>.provider.<name>.image`` (``actors/providers/images.py`` serves it)."""
        return await generate_image(self, request, ctx.remaining_s())

    def _args(self, request: m.Complete, messages: list[m.Message], timeout_s: float) -> dict[str, Any]:
        system, contents = to_gemini(messages)
        config: dict[str, Any] = {
            "max_output_tokens": self.params(request)[0],
            # the client already has retries off (HttpRetryOptions(attempts=1)); per call only the timeout
            "http_options": {"timeout": max(1, int(timeout_s * 1000))},
            **self.sampling(request, stop="stop_sequences"),
        }
        if system:
            config["system_instruction"] = system
        if request.tools:
            config["tools"] = [{"function_declarations": [
                {"name": t.name, "description": t.description, "parameters_json_schema": t.parameters} for t in request.tools
            ]}]
            choice = tool_config(request.params.tool_choice)
            if choice is not None:
                config["tool_config"] = choice
        return {"model": request.params.model or self.model, "contents": contents, "config": config}

    async def call(self, request, messages, schema, timeout_s) -> Reply:
        args = self._args(request, messages, timeout_s)
        if schema is not None:
            args["config"]["response_mime_type"] = "application/json"
            args["config"]["response_json_schema"] = schema
        resp = await self.client.aio.models.generate_content(**args)
        text = _text(resp)
        calls = [
            m.ToolCall(id=c.id or c.name, name=c.name, arguments=dict(c.args or {}))
            for c in (resp.function_calls or [])
        ]
        return Reply(
            text=text,
            structured=text if schema is not None else None,
            tool_calls=calls,
            usage=_usage(resp.usage_metadata),
            finish_reason=_finish(resp) or "stop",
            model=resp.model_version or self.model,
        )

    async def call_stream(self, request: m.Complete, timeout_s: float) -> AsyncIterator[str | Reply]:
        text: list[str] = []
        finish: str | None = None
        usage = None
        model = self.model
        async for chunk in await self.client.aio.models.generate_content_stream(**self._args(request, list(request.messages), timeout_s)):
            piece = _text(chunk)
            if piece:
                text.append(piece)
                yield piece
            usage = chunk.usage_metadata or usage
            model = chunk.model_version or model
            finish = _finish(chunk) or finish
        if finish is not None:
            yield Reply(text="".join(text), usage=_usage(usage), finish_reason=finish, model=model)


IMAGE_MODEL = "gemini-2.5-flash-image"
_RATIOS = {"1:1": 1.0, "3:4": 0.75, "4:3": 4 / 3, "9:16": 9 / 16, "16:9": 16 / 9, "2:3": 2 / 3, "3:2": 1.5}


def aspect_ratio(size: str) -> str:
    """The supported aspect ratio nearest to ``"WxH"``."""
    w, _, h = size.partition("x")
    want = int(w) / int(h)
    return min(_RATIOS, key=lambda r: abs(_RATIOS[r] - want))


async def generate_image(provider: GeminiProvider, request: m.ImageRequest, timeout_s: float) -> m.ImageResult:
    """Gemini image output: ``generate_content`` with ``response_modalities=["TEXT", "IMAGE"]`` and
    the nearest aspect ratio; each image is an ``inline_data`` part. One call per image asked for."""
    import asyncio as _asyncio

    from bus.errors import ContentFiltered, InvalidOutput

    model = request.model or provider.config.image_model or IMAGE_MODEL
    hints = "; ".join(f"{k}: {v}" for k, v in request.style.items())
    prompt = f"{request.prompt}\n\nStyle — {hints}" if hints else request.prompt
    config = {"response_modalities": ["TEXT", "IMAGE"], "image_config": {"aspect_ratio": aspect_ratio(request.size)},
              "http_options": {"timeout": max(1, int(timeout_s * 1000))}}

    async def one():
        try:
            return await provider.client.aio.models.generate_content(model=model, contents=prompt, config=config)
        except Exception as exc:
            raise provider.failure_for(exc) from None

    responses = await _asyncio.gather(*(one() for _ in range(request.count)))
    pictures, usage = [], m.TokenUsage()
    for resp in responses:
        parts = (resp.candidates[0].content.parts or []) if resp.candidates and resp.candidates[0].content else []
        found = [p.inline_data for p in parts if p.inline_data is not None and p.inline_data.data]
        if not found:
            if _finish(resp) == CONTENT_FILTERED:
                raise ContentFiltered(f"{provider.provider}: the image was blocked by a safety filter", provider=provider.provider)
            raise InvalidOutput(f"{provider.provider}: the answer held no image", provider=provider.provider)
        pictures += [m.Picture(media_type=b.mime_type or "image/png", data=b.data) for b in found]
        u = _usage(resp.usage_metadata)
        usage = m.TokenUsage(input_tokens=usage.input_tokens + u.input_tokens, output_tokens=usage.output_tokens + u.output_tokens)
    return m.ImageResult(id=request.id, ask_id=request.ask_id, provider=provider.provider,
                         model=responses[0].model_version or model, images=pictures[: request.count] or pictures,
                         size=request.size, usage=usage)

