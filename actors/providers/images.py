"""The image capability of provider actors: ``<root>.provider.<name>.image``.

A provider that makes images implements ``image(request, ctx) -> ImageResult`` with inline
``Picture.data``; ``serve`` checks the request, reports one ``Outcome`` per call (health counts image
calls like completions) and a ``Usage`` per image call answered (its tokens go to the ledger) and moves every picture that is over the actor's ``inline_max_bytes``, or
that would not fit the connection's max_payload beside the others, to the JetStream object store
``<root>_images`` (``bus.streams.ensure_object_store``): the reply carries an ``ObjectRef`` and the
client fetches the bytes (``Client.image_bytes``). No reply exceeds max_payload.

``render_placeholder`` is the mock's image and the free tier's placeholder: a deterministic PNG
(Pillow) with the prompt's words on a colour drawn from the prompt's hash.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
from functools import lru_cache, partial

import msgspec

from bus import messages as m
from bus.deadline import now
from bus.endpoint import Context, Endpoint
from bus.errors import BadRequest
from bus.streams import ensure_object_store
from bus.subjects import PROVIDER_IMAGE

INLINE_MAX_BYTES = 256 * 1024
MAX_COUNT = 4
_SIZE = re.compile(r"(\d{2,4})x(\d{2,4})\Z")
_HEADROOM = 16 * 1024  # the reply's other fields and headers
STORE_TTL_S = 86400.0


def parse_size(size: str) -> tuple[int, int]:
    """(width, height) of ``"WxH"``, each 64..4096; BadRequest otherwise."""
    match = _SIZE.match(size or "")
    if not match or not all(64 <= int(x) <= 4096 for x in match.groups()):
        raise BadRequest(f"size must be WIDTHxHEIGHT with each side 64..4096 (got {size!r})")
    return int(match.group(1)), int(match.group(2))


def check(prompt: str, size: str, count: int) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequest("an image request needs a prompt")
    if len(prompt) > 8000:
        raise BadRequest(f"the prompt is {len(prompt):,} characters; at most 8,000")
    if not 1 <= count <= MAX_COUNT:
        raise BadRequest(f"count must be 1..{MAX_COUNT} (got {count})")
    parse_size(size)


@lru_cache(maxsize=16)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def render_placeholder(prompt: str, size: str, *, noise: bool = False, label: str = "") -> bytes:
    """A deterministic PNG: the prompt's words on a colour from its hash (``noise``: seeded noise
    under the words, so the PNG is as large as a real photo's, for object-store tests)."""
    from PIL import Image, ImageDraw

    width, height = parse_size(size)
    digest = hashlib.sha256(prompt.encode()).digest()
    background = tuple(64 + b % 128 for b in digest[:3])
    if noise:
        rng = random.Random(digest)
        img = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    else:
        img = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(img)
    font = _font(max(10, width // 20))
    lines, line = [], ""
    for word in prompt.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width * 0.9:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    if label:
        lines.append(f"[{label}]")
    step = font.size * 1.3
    y = max(0.0, (height - step * len(lines)) / 2)
    for text in lines:
        x = max(0.0, (width - draw.textlength(text, font=font)) / 2)
        draw.text((x, y), text, fill=(255, 255, 255), font=font)
        y += step
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=1)  # fast: level 6 costs ~3x the time for a few % of bytes
    return out.getvalue()


async def offload(nc, bucket: str, result: m.ImageResult, inline_max: int, stores: dict | None = None) -> m.ImageResult:
    """``result`` with each picture too large to travel inline put in the object store ``bucket``
    (``stores`` keeps the opened store: opening it asks the server for the stream's info)."""
    room = nc.max_payload - _HEADROOM
    pictures, store = [], None
    for i, pic in enumerate(result.images):
        wire = 4 * ((len(pic.data) + 2) // 3) if pic.data else 0  # base64 in JSON
        if pic.data is None or (len(pic.data) <= inline_max and wire <= room):
            room -= wire
            pictures.append(pic)
            continue
        if store is None:
            store = (stores or {}).get(bucket)
        if store is None:
            store = await ensure_object_store(nc, bucket, ttl_s=STORE_TTL_S)
            if stores is not None:
                stores[bucket] = store
        name = f"{result.ask_id}/{result.id}/{i}"
        info = await store.put(name, pic.data)
        pictures.append(m.Picture(media_type=pic.media_type,
                                  ref=m.ObjectRef(bucket=bucket, name=name, size=len(pic.data), digest=info.digest or "")))
    return msgspec.structs.replace(result, images=pictures)


def endpoint(actor) -> Endpoint:
    return Endpoint.serving(PROVIDER_IMAGE, actor.subjects, partial(serve, actor), name=actor.provider)


async def serve(actor, request: m.ImageRequest, ctx: Context) -> m.ImageResult:
    check(request.prompt, request.size, request.count)
    # the Outcome, and the Usage of a made image (its tokens: the cost actor prices and bills them)
    with actor.reporting(request, ctx) as call:
        make = getattr(actor, "image", None)
        if make is None:
            raise BadRequest(f"provider {actor.provider} ({actor.config.kind}) does not make images",
                             provider=actor.provider)
        result = await make(request, ctx)
        result = msgspec.structs.replace(result, latency_ms=round((now() - call.started) * 1000.0, 3))
        result = await offload(actor.nc, actor.subjects.bucket("images"), result,
                               getattr(actor, "inline_max_bytes", INLINE_MAX_BYTES),
                               actor.__dict__.setdefault("_image_stores", {}))
        return call.answered(result)
