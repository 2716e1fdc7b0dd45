"""OpenAI Chat Completions through the official ``openai`` SDK.

Structured output uses ``response_format={"type": "json_schema", "json_schema": {"name", "schema",
"strict"}}`` with the schema ``remote.structured_for`` gives. ``strict`` is true when that schema
meets strict mode's rules (``strict_compatible``): the root is an object; every object lists every
property in ``required`` and has ``additionalProperties: false``; only the keywords and formats
strict mode supports appear (``STRICT_KEYWORDS``, ``STRICT_FORMATS``); ``$ref`` has no siblings; at
most 10 levels of nesting, 5000 properties and 1000 values per enum. The schema is never rewritten
to fit (the SDK's own helper makes every property required, which would change what the ask
accepts): a schema that does not meet them is sent as it is with ``strict: false``, the model
follows it as guidance, and the answer is still validated here against the ask's schema (one
clarified retry, then ``invalid_output``), so it costs at most a retry, never a wrong answer.

Streaming asks for ``stream_options={"include_usage": True}`` so the last chunk carries the usage.
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


# Strict mode's subset of JSON Schema (OpenAI's "Structured Outputs: supported schemas").
STRICT_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
STRICT_KEYWORDS = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf",
    "description", "title", "$defs", "definitions", "$ref",
    "pattern", "format",  # strings
    "multipleOf", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",  # numbers
    "minItems", "maxItems",  # arrays
})
STRICT_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"})
STRICT_MAX_DEPTH, STRICT_MAX_PROPERTIES, STRICT_MAX_ENUM = 10, 5000, 1000


def strict_compatible(schema: Any) -> bool:
    """May ``schema`` be sent with ``strict: true``? (See the module docstring.)"""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return False
    properties = 0

    def fits(node: Any, depth: int) -> bool:
        nonlocal properties
        if not isinstance(node, dict) or depth > STRICT_MAX_DEPTH or not set(node) <= STRICT_KEYWORDS:
            return False
        if "$ref" in node:
            return len(node) == 1 and isinstance(node["$ref"], str) and node["$ref"].startswith("#/")
        types = node.get("type", [])
        types = [types] if isinstance(types, str) else types
        if not isinstance(types, list) or not set(types) <= STRICT_TYPES:
            return False
        if "format" in node and node["format"] not in STRICT_FORMATS:
            return False
        if "enum" in node and not (isinstance(node["enum"], list) and 0 < len(node["enum"]) <= STRICT_MAX_ENUM):
            return False
        if "object" in types or "properties" in node:
            props = node.get("properties", {})
            required = node.get("required", [])
            if (node.get("additionalProperties") is not False or not isinstance(props, dict)
                    or not isinstance(required, list) or not all(isinstance(r, str) for r in required)
                    or len(required) != len(props) or set(required) != set(props)):
                return False
            properties += len(props)
            if not all(fits(p, depth + 1) for p in props.values()):
                return False
        elif "additionalProperties" in node or "required" in node:
            return False
        if "items" in node and not fits(node["items"], depth + 1):
            return False
        if "anyOf" in node and not (isinstance(node["anyOf"], list) and node["anyOf"]
                                    and all(fits(b, depth + 1) for b in node["anyOf"])):
            return False
        for key in ("$defs", "definitions"):
            if key in node and not (isinstance(node[key], dict) and all(fits(d, depth + 1) for d in node[key].values())):
                return False
        return True

    return fits(schema, 1) and properties <= STRICT_MAX_PROPERTIES


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

    async def image(self, request: m.ImageRequest, ctx) -> m.ImageResult:
        """``<root>.provider.<name>.image`` (``actors/providers/images.py`` serves it)."""
        return await generate_image(self, request, ctx.remaining_s())

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
            if request.params.tool_choice is not None:  # passed through as the caller gave it
                args["tool_choice"] = request.params.tool_choice
        return args

    async def call(self, request, messages, schema, timeout_s) -> Reply:
        args = self._args(request, messages, timeout_s)
        if schema is not None:
            args["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": schema,
                                                       "strict": strict_compatible(schema)}}
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


IMAGE_MODEL = "gpt-image-1"
IMAGE_OPTIONS = ("quality", "style", "background", "output_format", "moderation")  # style hints passed on


async def generate_image(provider: OpenAIProvider, request: m.ImageRequest, timeout_s: float) -> m.ImageResult:
    """``client.images.generate`` (POST /v1/images/generations): base64 PNGs back (dall-e models are
    asked for ``b64_json``; gpt-image models always answer so)."""
    import base64

    from bus.errors import InvalidOutput

    model = request.model or provider.config.image_model or IMAGE_MODEL
    args: dict[str, Any] = {"model": model, "prompt": request.prompt, "n": request.count, "size": request.size,
                            "timeout": timeout_s, **{k: v for k, v in request.style.items() if k in IMAGE_OPTIONS}}
    if model.startswith("dall-e"):
        args["response_format"] = "b64_json"
    try:
        resp = await provider.client.images.generate(**args)
    except Exception as exc:
        raise provider.failure_for(exc) from None
    media = f"image/{resp.output_format or 'png'}"
    pictures = [m.Picture(media_type=media, data=base64.b64decode(d.b64_json)) if d.b64_json else m.Picture(url=d.url)
                for d in resp.data or [] if d.b64_json or d.url]
    if not pictures:
        raise InvalidOutput(f"{provider.provider}: the images response held no image", provider=provider.provider)
    usage = (m.TokenUsage(input_tokens=resp.usage.input_tokens, output_tokens=resp.usage.output_tokens)
             if resp.usage is not None else m.TokenUsage())
    return m.ImageResult(id=request.id, ask_id=request.ask_id, provider=provider.provider, model=model,
                         images=pictures, size=resp.size or request.size, usage=usage,
                         metadata={"revised_prompt": resp.data[0].revised_prompt} if resp.data and resp.data[0].revised_prompt else {})

