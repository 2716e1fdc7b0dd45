"""The ``images`` section of ``llmbus bench``: an image ask's round trip, inline and through the
JetStream object store, and what a tier quota's reservation adds.

One stack in this process under root ``bench-images``: the images actor, a cost actor, and two
mock providers rendering the same 256×256 placeholder PNG (``actors.providers.images``): ``zero``
sends it inline, ``store`` (``inline_max_bytes = 0``) puts every image in the object store
``bench-images_images`` and replies with a reference. Every path's send is ``Client.image`` then
``Client.image_bytes`` (a no-op inline, an object-store get otherwise), so a path's time is the
whole round trip until the caller holds the bytes:

- ``inline``: provider ``zero``, no tier (no quota);
- ``object store``: provider ``store``, no tier;
- ``quota``: provider ``zero``, tier ``bench`` with ``images = { per = "month", limit = 10⁹ }``: a
  ``QuotaReserve`` round trip (KV compare-and-set) before the call and a ``QuotaCommit`` after;
- ``0.8 MB store``: provider ``store`` rendering a 512×512 noise PNG (~0.8 MB: over max_payload
  once base64'd, so it could not travel inline) — rendering included.

For ``actors.bench.main``: ``run(url, plan, progress)`` → ``{"paths", "store_minus_inline_p50_ms",
"quota_minus_inline_p50_ms", "failed"}``; ``goals`` (none); ``report``; plans ``FULL`` / ``QUICK``.
"""

from __future__ import annotations

import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
from rich.console import Console

from bus.client import Client
from bus.errors import LlmError
from actors.bench.measure import (
    Plan, Progress, Send, bench_settings, drop_jetstream, failed_asks, flat, measure, over, paths_table,
)
from actors.routing_settings import QuotaSettings, TierSettings
from actors.runtime import run_actors
from actors.settings import CacheSettings, CostSettings, ImagesSettings, ProviderSettings
from actors.stack import build_actors

ROOT = "bench-images"
PATHS = ("inline", "object store", "quota", "0.8 MB store")
FULL = Plan(warmup=50, samples=500, seconds=3.0, rounds=3, concurrency=(16,))
QUICK = Plan(warmup=5, samples=40, seconds=0.3, rounds=1, concurrency=(16,))
PRICES = '[mock."zero-1"]\ninput = 1.0\noutput = 2.0\ntaken = "2026-11-25"\nsource = "bench"\n'
PNG = b"\x89PNG\r\n\x1a\n"


def describe(plan: Plan) -> None:
    return None


def image_send(client: Client, *, size: str = "256x256", **kw) -> Send:
    async def send() -> bool:
        try:
            result = await client.image("a beach at sunset", size=size, budget_ms=20_000, **kw)
            blobs = await client.image_bytes(result)
        except LlmError:
            return False
        return len(blobs) == 1 and blobs[0].startswith(PNG)

    return send


async def run(url: str, plan: Plan = FULL, progress: Progress = lambda s: None) -> dict:
    with tempfile.TemporaryDirectory(prefix="llmbus-bench-images-") as tmp:
        pricing = Path(tmp) / "pricing.toml"
        pricing.write_text(PRICES)
        base = bench_settings(ROOT)
        settings = bench_settings(
            ROOT, cost=CostSettings(enabled=True, pricing=str(pricing)), cache=CacheSettings(enabled=False),
            images=ImagesSettings(providers=["zero"]),
            providers={**base.providers, "store": ProviderSettings(kind="mock", model="store-1")},
            tiers={"bench": TierSettings(quotas={"images": QuotaSettings(per="month", limit=10**9)})},
        )
        try:
            async with AsyncExitStack() as stack:
                tg = await stack.enter_async_context(anyio.create_task_group())
                stack.callback(tg.cancel_scope.cancel)
                actors = build_actors(settings, ["images", "cost", "provider.zero", "provider.store"])
                await tg.start(run_actors, actors, url)
                next(a for a in actors if getattr(a, "provider", "") == "store").inline_max_bytes = 0
                client = await stack.enter_async_context(Client(url, root=ROOT, name="bench-client"))
                sends = {
                    "inline": image_send(client, provider="zero"),
                    "object store": image_send(client, provider="store"),
                    "quota": image_send(client, provider="zero", tier="bench"),
                    "0.8 MB store": image_send(client, provider="store", size="512x512", labels={"mock.image": "noise"}),
                }
                progress("images: ready (zero: inline, store: object store, tier bench: a quota); measuring")
                paths = await measure(sends, plan, lambda s: progress(f"images: {s}"))
        finally:
            await drop_jetstream(url, [ROOT])
    inline, store, quota = (flat(paths[p]) for p in ("inline", "object store", "quota"))
    out = {
        "paths": paths,
        "store_minus_inline_p50_ms": round(store["p50_ms"] - inline["p50_ms"], 4),
        "quota_minus_inline_p50_ms": round(quota["p50_ms"] - inline["p50_ms"], 4),
        "store_over_inline": over(store, inline),
        "quota_over_inline": over(quota, inline),
        "failed": failed_asks(paths),
    }
    progress(f"images: p50 inline {inline['p50_ms']:.3f} ms, object store {store['p50_ms']:.3f} ms, "
             f"quota {quota['p50_ms']:.3f} ms")
    return out


def goals(result: dict) -> list[dict]:
    return []  # figures only


def report(loop: str, result: dict, console: Console) -> None:
    console.print(paths_table(
        f"llmbus bench — images — {loop}",
        "one process; Client.image + image_bytes; 256×256 PNG unless said; quota: QuotaReserve + QuotaCommit",
        {p: result["paths"][p] for p in PATHS},
        {"store / inline": result["store_over_inline"], "quota / inline": result["quota_over_inline"]}))
    console.print(f"the object store adds {result['store_minus_inline_p50_ms']:+.3f} ms at p50 (put + get); "
                  f"a quota reservation adds {result['quota_minus_inline_p50_ms']:+.3f} ms", highlight=False)
