"""A 3-day city itinerary by tier, with streamed progress: the travel pattern of the supervisor issue.

    python scripts/itinerary.py                     # Paris, every tier, on mocks (no keys, no fleet)
    python scripts/itinerary.py "3 days in Rome" --tier premium
    python scripts/itinerary.py --images out/          # and one image per day, as the tier allows

Workers draft in parallel (strategy ``review``): ``structure`` (ChatGPT's role: the day plan),
``validation`` (Gemini's role: checks times and closing days; its mock plants a contradiction on
day 2) and ``spots``, no LLM at all: an actor answering from a small SQLite database of points of
interest (``itinerary_spots.sql``). The supervisor (Claude's role; the deterministic mock judge
without a key) merges, flags the contradiction and has only that part redone. Tiers: free reviews
once, pro may redo once (target 0.7), premium twice (target 0.9). With OPENAI_API_KEY,
GEMINI_API_KEY and ANTHROPIC_API_KEY set, the real providers take those roles.

Runs its own nats-server and actors in this process; prints each stage on stderr, the final
itinerary on stdout, then per tier: wall time, calls per worker, score and what was regenerated.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import time
from pathlib import Path

import anyio

from bus import messages as m
from bus.client import Client
from bus.endpoint import Context
from bus.server import NatsServer
from actors.providers.base import ProviderActor
from actors.runtime import run_actors
from actors.settings import parse
from actors.stack import build_actors

SPOTS_SQL = Path(__file__).with_name("itinerary_spots.sql")
WORKERS = ["structure", "validation", "spots"]
TIERS = {"free": 0, "pro": 1, "premium": 2}
# images a month and what happens beyond (the travel product's matrix): free gets placeholders
IMAGES = {"free": (0, "placeholder"), "pro": (50, "refuse"), "premium": (200, "cheaper")}
DAYS = ["day1", "day2", "day3"]
SCHEMA = {
    "type": "object",
    "required": ["day1", "day2", "day3"],
    "properties": {
        "day1": {"type": "string"}, "day2": {"type": "string"}, "day3": {"type": "string"},
        "spots": {"type": "array", "items": {"type": "string"}, "description": "points of interest, with hours"},
    },
}


def config() -> str:
    real = {"structure": ("openai", "OPENAI_API_KEY"), "validation": ("gemini", "GEMINI_API_KEY")}
    lines = ['[router]', f'providers = {json.dumps(WORKERS)}', '[cache]', 'enabled = false']
    for name, (kind, env) in real.items():
        lines += [f"[providers.{name}]", f'kind = "{kind}"' if os.environ.get(env) else 'latency = { dist = "fixed", ms = 40 }']
    if not os.environ.get("GEMINI_API_KEY"):  # the validation mock's planted mistake: a museum on its closing day
        lines.append('data = { day2 = "Louvre all morning on Tuesday (it is closed on Tuesdays)" }')
    lines += ["[providers.spots]"]  # served by SpotsWorker below, not by a mock
    if os.environ.get("ANTHROPIC_API_KEY"):
        lines += ['[providers.anthropic]', 'kind = "anthropic"']
    lines += ["[supervisor]", 'validators = ["actors.supervisor.rules:hours_in_order"]']
    for tier, depth in TIERS.items():
        lines += [f"[tiers.{tier}]", 'strategy = "review"', f"providers = {json.dumps(WORKERS)}", "fanout = 3",
                  f"supervision = {depth}"]
        limit, policy = IMAGES[tier]
        lines += [f"[tiers.{tier}.quotas]", f'images = {{ per = "month", limit = {limit} }}',
                  f"[tiers.{tier}.images]", f'over_quota = "{policy}"', 'cheaper_model = "gemini-2.5-flash-image"']
    lines += ["[images]", 'providers = ["validation", "structure"]']  # Gemini's role draws (the mock without a key)
    return "\n".join(lines) + "\n"


class SpotsWorker(ProviderActor):
    """A worker that is not an LLM: the points of interest of the asked city, from SQLite."""

    def __init__(self, **kw) -> None:
        super().__init__(provider="spots", model="sqlite", **kw)
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.executescript(SPOTS_SQL.read_text(encoding="utf-8"))

    async def complete(self, request: m.Complete, ctx: Context) -> m.Completion:
        prompt = " ".join(msg.text() for msg in request.messages if msg.role == "user").lower()
        cities = [c for (c,) in self.db.execute("SELECT DISTINCT city FROM spots") if re.search(rf"\b{c}\b", prompt)]
        rows = self.db.execute("SELECT name, kind, opens, closes, closed_on FROM spots WHERE city = ? ORDER BY name",
                               (cities[0] if cities else "",)).fetchall()
        spots = [f"{n} ({k}, {o}–{c}{', closed ' + d.title() + 's' if d else ''})" for n, k, o, c, d in rows]
        wanted = (request.schema or {}).get("properties", {})
        data = {"fix": spots} if "fix" in wanted else {"spots": spots}
        return m.Completion(id=request.id, ask_id=request.ask_id, provider=self.provider, model=self.model,
                            text=json.dumps(data), data=data)


def calls_of(actor) -> int:
    eps = actor.statistics().endpoints
    return sum(eps[e].num_requests for e in ("complete", "stream") if e in eps)


async def run_tier(client: Client, prompt: str, tier: str, actors) -> dict:
    before = {a.name: calls_of(a) for a in actors}
    started = time.perf_counter()
    final = None
    parts = {"structure": DAYS, "validation": DAYS, "spots": ["spots"]}  # the spots worker knows only spots
    async for item in client.stream(prompt, tier=tier, schema=SCHEMA, budget_ms=20_000, cache="skip",
                                    strategy_options={"parts": parts}):
        if not isinstance(item, m.Chunk):
            final = item
        elif item.worker is not None:  # a worker started, or ended with its outcome
            print(f"  [{tier} worker] {item.worker}: {item.state}", file=sys.stderr)
        elif item.stage:
            print(f"  [{tier} {item.stage}] {item.delta[:110]}", file=sys.stderr)
    wall = time.perf_counter() - started
    calls = {a.name.removeprefix("provider-"): calls_of(a) - before[a.name] for a in actors
             if a.name.startswith("provider-")}
    return {"answer": final, "wall_s": wall, "calls": calls}


async def day_images(client: Client, answer: m.Answer, tier: str, out: Path) -> None:
    """One image per day, as the tier's quota and policy allow (``Client.image``), written to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for day in DAYS:
        try:
            result = await client.image(str(answer.data.get(day, day))[:400], tier=tier, size="512x512",
                                        user=f"{tier}-traveller", budget_ms=30_000)
        except Exception as exc:  # a refused quota, a failed provider: the day goes without
            print(f"  [{tier} image] {day}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        (png,) = (await client.image_bytes(result))[:1]
        path = out / f"{tier}-{day}.png"
        path.write_bytes(png)
        made = "placeholder" if result.placeholder else f"{result.provider}/{result.model}"
        left = result.metadata.get("quota_left")
        print(f"  [{tier} image] {day}: {made}{f' ({left} left this month)' if left is not None else ''} -> {path}",
              file=sys.stderr)


async def main(args: argparse.Namespace) -> int:
    settings = parse(config(), "scripts/itinerary.py")
    server = NatsServer()
    await anyio.to_thread.run_sync(server.start)
    try:
        names = ["router", "health", "cost", "supervisor", *(["images"] if args.images else []),
                 *(f"provider.{p}" for p in settings.providers if p != "spots")]
        actors = [*build_actors(settings, names), SpotsWorker(subjects=build_actors(settings, ["router"])[0].subjects)]
        async with anyio.create_task_group() as tg:
            await tg.start(run_actors, actors, server.url)
            try:
                async with Client(server.url, root=settings.bus.root) as client:
                    rows = []
                    for tier in args.tier or list(TIERS):
                        got = await run_tier(client, args.prompt, tier, actors)
                        rows.append((tier, got))
                        answer = got["answer"]
                        if not isinstance(answer, m.Answer):
                            print(f"{tier}: failed: {answer}", file=sys.stderr)
                            continue
                        print(f"== {tier} ==")
                        print(json.dumps(answer.data, indent=2, ensure_ascii=False))
                        if args.images:
                            await day_images(client, answer, tier, Path(args.images))
                for tier, got in rows:
                    answer = got["answer"]
                    q = answer.metadata.get("quality", {}) if isinstance(answer, m.Answer) else {}
                    print(f"{tier:8} wall {got['wall_s'] * 1000:7.1f} ms · calls {got['calls']} · "
                          f"score {q.get('score')} · cycles {q.get('cycles')} · "
                          f"regenerated {[(r['part'], r['provider']) for r in q.get('regenerated', [])]}"
                          f"{' · degraded: ' + answer.metadata['degraded']['reason'] if isinstance(answer, m.Answer) and 'degraded' in answer.metadata else ''}",
                          file=sys.stderr)
            finally:
                for a in actors:
                    a.stop()
    finally:
        await anyio.to_thread.run_sync(server.stop)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="Plan 3 days in Paris for two, museums and markets.")
    parser.add_argument("--tier", action="append", choices=list(TIERS))
    parser.add_argument("--images", metavar="DIR", help="also one image per day, as the tier allows, into DIR")
    sys.exit(anyio.run(main, parser.parse_args()))
