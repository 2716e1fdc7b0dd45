"""``POST /v1/images/generations`` on the gateway: OpenAI's images API over the images actor.

The body is OpenAI's (``prompt``, ``n``, ``size``, ``quality``, ``style``, ``background``, ``user``;
``model`` is a hint); the key's tier decides as for ``llmbus image`` (quota, placeholder, refusal,
cheaper model). The answer is OpenAI's ``ImagesResponse`` with ``b64_json`` data — images kept in
the object store are fetched and inlined here (``response_format="url"`` is answered the same way:
the fleet serves no image URLs) — plus an ``llmbus`` object saying provider, model, placeholder
and quota. A ``Failure`` is an OpenAI-style error (``budget_exceeded`` → 429 naming the quota).
"""

from __future__ import annotations

import base64
import time

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bus import messages as m
from bus.errors import LlmError
from bus.rpc import new_id
from actors.gateway import errors

STYLE_KEYS = ("quality", "style", "background", "output_format", "moderation")


class ImagesBody(msgspec.Struct, kw_only=True):
    prompt: str
    model: str | None = None
    n: int = 1
    size: str = "1024x1024"
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    output_format: str | None = None
    moderation: str | None = None
    response_format: str | None = None
    user: str | None = None


_decode = msgspec.json.Decoder(ImagesBody).decode


def routes(gateway) -> list[Route]:
    """The route, for ``actors.gateway.app.optional_routes`` (``EXTRA_ROUTES``)."""

    async def generations(request: Request) -> Response:
        return await generate(gateway, request)

    return [Route("/v1/images/generations", generations, methods=["POST"])]


async def generate(gw, request: Request) -> Response:
    from actors.gateway.app import json_response

    accepted = await gw.accept(request, _decode)
    if isinstance(accepted, Response):
        return accepted
    who, req = accepted
    size = "1024x1024" if req.size in (None, "auto") else req.size
    style = {k: getattr(req, k) for k in STYLE_KEYS if getattr(req, k) is not None}
    ask_id = new_id()
    try:
        result = await gw.client.image(req.prompt, size=size, count=req.n, style=style, tier=who.tier,
                                       user=who.user if who.key_id is not None else req.user,
                                       budget_ms=gw.config.budget_ms, ask_id=ask_id)
        blobs = await gw.client.image_bytes(result)
    except LlmError as exc:
        return errors.failure_response(exc.failure, ask_id)
    return json_response({
        "created": int(time.time()),
        "data": [{"b64_json": base64.b64encode(b).decode()} for b in blobs],
        "size": result.size, "output_format": (result.images[0].media_type.split("/")[-1] if result.images else "png"),
        "usage": {"input_tokens": result.usage.input_tokens, "output_tokens": result.usage.output_tokens,
                  "total_tokens": result.usage.input_tokens + result.usage.output_tokens,
                  "input_tokens_details": {"text_tokens": result.usage.input_tokens, "image_tokens": 0}},
        "llmbus": {"ask_id": ask_id, "provider": result.provider, "model": result.model,
                   "placeholder": result.placeholder, "quota": result.quota,
                   "quota_left": result.metadata.get("quota_left"), "cost_usd": result.cost_usd},
    })
