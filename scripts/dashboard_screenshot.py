"""Mock traffic through a running ``llmbus up --http …``, then a screenshot of its dashboard.

    llmbus up --http 127.0.0.1:8080 &
    python scripts/dashboard_screenshot.py --url http://127.0.0.1:8080 --out docs/dashboard.png

Asks go over the bus (``--nats-url``, default ``$LLMBUS_NATS_URL`` or nats://127.0.0.1:4222) with
several strategies and tiers, to the shipped config's mock providers; ``mock-flaky`` fails now and
then and ``mock-stalled`` never answers, so failures and fallbacks show. Chromium is Debian's
(``apt-get install chromium``), driven by Playwright (the dev extra); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import random

import anyio

from bus.client import Client
from bus.errors import LlmError

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MIXES = [  # (share, ask options)
    (0.40, {"strategy": "failover", "providers": ["mock-flaky", "mock-fast"]}),
    (0.15, {"strategy": "failover", "providers": ["mock-stalled", "mock-fast"], "budget_ms": 600}),
    (0.15, {"strategy": "consensus", "providers": ["mock-fast", "mock-steady", "mock-flaky"]}),
    (0.10, {"strategy": "hedged", "providers": ["mock-steady", "mock-fast"]}),
    (0.10, {"tier": "pro"}),
    (0.05, {"strategy": "single", "providers": ["mock-flaky"]}),
    (0.05, {"strategy": "single", "providers": ["mock-stalled"], "budget_ms": 300}),
]


async def traffic(client: Client, seconds: float, rng: random.Random) -> tuple[int, int]:
    ok = failed = 0
    limiter = anyio.Semaphore(16)

    async def one(i: int) -> None:
        nonlocal ok, failed
        opts = dict(rng.choices([o for _, o in MIXES], weights=[w for w, _ in MIXES])[0])
        budget = opts.pop("budget_ms", 3000)
        async with limiter:
            try:
                # a few repeated prompts, so the cache has hits too
                await client.ask(f"question {rng.randrange(400)}", budget_ms=budget, **opts)
                ok += 1
            except LlmError:
                failed += 1

    async with anyio.create_task_group() as tg:  # new asks for `seconds`, then the last ones finish
        i = 0
        with anyio.move_on_after(seconds):
            while True:
                tg.start_soon(one, i)
                i += 1
                await anyio.sleep(rng.uniform(0.005, 0.03))
    return ok, failed


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--nats-url", default=os.environ.get("LLMBUS_NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--root", default="llm")
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--out", default="docs/dashboard.png")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--theme", choices=["dark", "light"], default="dark")
    a = p.parse_args()

    from playwright.async_api import async_playwright

    async with Client(a.nats_url, root=a.root) as client, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=a.chromium, args=ARGS)
        page = await browser.new_page(viewport={"width": 1440, "height": 1000}, device_scale_factor=1,
                                      color_scheme=a.theme)
        await page.goto(a.url + "/")
        await page.wait_for_selector("#live.on")  # the SSE stream is open: the traffic watch runs
        ok, failed = await traffic(client, a.seconds, random.Random(7))
        await page.wait_for_timeout(1500)  # let the last pushes land
        await page.screenshot(path=a.out, full_page=True)
        await browser.close()
    print(f"{ok} answered, {failed} failed; screenshot in {a.out}")


if __name__ == "__main__":
    anyio.run(main)
