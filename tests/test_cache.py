"""The cache: key normalisation and what is worth keeping (pure), then the cache actor and the
router's cache step end to end on real NATS — hits, TTL by a test clock, skip/refresh, failures,
coalescing of identical asks within one router and across two, a dead or slow cache, a restart,
a leader that went silent, the ``llmbus cache`` CLI, and a smoke run of the bench section."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import anyio
import pytest
from nats.js.api import StorageType
from rich.console import Console

from bus import codec
from bus import messages as m
from bus.deadline import deadline_in, now
from bus.endpoint import Context
from bus.errors import Unavailable
from bus.streams import ensure_kv
from bus.subjects import CACHE_GET, CACHE_STATS, Subjects
from actors.bench import cache as bench_cache
from actors.bench.measure import Plan
from actors.cache.actor import CacheActor
from actors.router.cache_key import cache_key
from actors.router.cache_step import worth_keeping
from tests.helpers import LLMBUS, cli_env, wait_until

# --- the key -------------------------------------------------------------------------------------

BASE = m.Ask(id="a1", messages=[m.Message(role="system", content="Be brief."), m.Message(role="user", content="Why is the sky blue?")])


def key(ask: m.Ask = BASE, *, namespace: str = "llm", strategy: str = "failover", providers=("p1", "p2")) -> str:
    return cache_key(ask, namespace=namespace, strategy=strategy, providers=providers)


def with_(**fields) -> m.Ask:
    return m.Ask(**{"id": BASE.id, "messages": BASE.messages, **fields})


def user(content) -> m.Ask:
    return with_(messages=[BASE.messages[0], m.Message(role="user", content=content)])


SAME = {  # must NOT change the key
    "another ask id": with_(id="a2"),
    "whitespace around and inside": user("  Why   is the\tsky\n blue? "),
    "a list of Text parts": user([m.Text(text="Why is the "), m.Text(text="sky blue?")]),
    "user, tier, labels": with_(user="alice", tier="pro", labels={"exp": "b", "mock.fault": "x"}),
    "budget, stream, cache mode, ceiling": with_(budget_ms=5, stream=True, cache="refresh", max_cost_usd=1.0),
    "a param left unset or given its default": with_(params=m.Params(temperature=None, stop=[])),
    "schema key order": None,  # checked below (needs two asks)
}
CHANGED = {  # MUST change the key
    "other words": user("Why is the sea blue?"),
    "letter case": user("why is the sky blue?"),
    "another system prompt": with_(messages=[m.Message(role="system", content="Be long."), BASE.messages[1]]),
    "another role": with_(messages=[BASE.messages[0], m.Message(role="assistant", content="Why is the sky blue?")]),
    "messages split differently": with_(messages=[m.Message(role="system", content="Be brief. Why is the sky blue?")]),
    "an image part": user([m.Text(text="Why is the sky blue?"), m.Image(url="https://example.invalid/sky.png")]),
    "a schema": with_(schema={"type": "object"}),
    "tools": with_(tools=[m.Tool(name="lookup")]),
    "temperature": with_(params=m.Params(temperature=0.2)),
    "max_tokens": with_(params=m.Params(max_tokens=10)),
    "top_p": with_(params=m.Params(top_p=0.5)),
    "stop": with_(params=m.Params(stop=["\n"])),
    "model": with_(params=m.Params(model="big")),
}


@pytest.mark.parametrize("case", [c for c in SAME if SAME[c] is not None])
def test_key_does_not_change(case):
    assert key(SAME[case]) == key()


@pytest.mark.parametrize("case", list(CHANGED))
def test_key_changes(case):
    assert key(CHANGED[case]) != key()


def test_key_ignores_schema_key_order_and_int_floats():
    a = with_(schema={"type": "object", "properties": {"x": {"type": "string"}}}, params=m.Params(temperature=1))
    b = with_(schema={"properties": {"x": {"type": "string"}}, "type": "object"}, params=m.Params(temperature=1.0))
    assert key(a) == key(b)


def test_key_changes_with_namespace_strategy_and_provider_order():
    assert len({key(), key(namespace="locations"), key(strategy="single"), key(providers=("p2", "p1")),
                key(providers=("p1",))}) == 5


def test_key_shape():
    k = key()
    assert len(k) == 32 and int(k, 16) >= 0  # a NATS subject token and a KV key


@pytest.mark.parametrize("result, floor, keep", [
    (m.Answer(id="a", text="x", confidence=0.9), 0.0, True),
    (m.Answer(id="a", text="x", confidence=0.9), 0.9, True),
    (m.Answer(id="a", text="x", confidence=0.8), 0.9, False),
    (m.Answer(id="a", text="x"), 0.0, True),  # no confidence: kept only with no floor
    (m.Answer(id="a", text="x"), 0.5, False),
    (m.Answer(id="a", text="", data={"k": 1}), 0.0, True),
    (m.Answer(id="a", text=""), 0.0, False),
    (m.Answer(id="a", text="x", stage="draft"), 0.0, False),
    (m.Answer(id="a", text="x", cached=True), 0.0, False),
    (m.Failure(kind=m.TIMEOUT, message="slow"), 0.0, False),
])
def test_worth_keeping(result, floor, keep):
    assert worth_keeping(result, floor) is keep


# --- end to end ----------------------------------------------------------------------------------

TOML = """
[router]
strategy = "single"
providers = ["p"]

[cache]
lease_s = {lease_s}
min_confidence = {floor}
lookup_ms = {lookup_ms}

[providers.p]
model = "mock-steady-1"
latency = {{ dist = "fixed", ms = {ms} }}
confidence = 0.9
"""


def toml(*, ms: float = 0, lease_s: float = 2.0, floor: float = 0.0, lookup_ms: float = 50, extra: str = "") -> str:
    return TOML.format(ms=ms, lease_s=lease_s, floor=floor, lookup_ms=lookup_ms) + extra


# Bursts of identical asks on a one-process stack on a shared CI machine: lookups get more than the
# default 50 ms, so that none times out (and goes uncached) because the machine is busy.
BURST = dict(ms=300, lookup_ms=250)


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def calls(s, provider: str = "p") -> int:
    return s.actor(f"provider.{provider}").statistics().endpoints["complete"].num_requests


async def add_cache(s, clock=time.time) -> CacheActor:
    """Start a cache actor on the stack's settings (the same directory every time), with ``clock``."""
    directory = Path(s.settings.cache.dir) / s.root
    actor = CacheActor(settings=s.settings.cache, directory=directory, clock=clock, subjects=Subjects(s.root))
    await s.tg.start(actor.run, s.url)
    s.extra.append(actor)
    return actor


async def stop(actor) -> None:
    actor.stop()
    await wait_until(lambda: actor.nc.is_closed, what=f"{actor.name} stopped")


async def stats(s) -> m.CacheStats:
    reply = await s.client.rpc.service(CACHE_STATS, m.CacheStatsQuery(), deadline=deadline_in(2000))
    assert isinstance(reply, m.CacheStats), reply
    return reply


@pytest.mark.anyio
async def test_a_hit_is_the_stored_answer_with_its_cost_saved(stack):
    async with stack(toml()) as s:
        first = await s.client.ask("Why is the sky blue?", budget_ms=3000)
        again = await s.client.ask("  Why is the  sky blue?", budget_ms=3000)
        assert calls(s) == 1
        assert (first.cached, again.cached) == (False, True)
        assert again.text == first.text and again.providers == first.providers == ["p"]
        assert first.cost_usd > 0 and again.cost_usd == 0.0
        assert again.metadata == {"cache": "hit", "cost_saved_usd": first.cost_usd}
        assert [(st.provider, st.outcome) for st in again.route] == [("cache", "hit")]
        report = await stats(s)
        assert (report.total.hits, report.total.misses, report.total.stores, report.entries) == (1, 1, 1, 1)


@pytest.mark.anyio
async def test_ttl_by_namespace_with_a_test_clock(stack):
    clock = Clock()
    async with stack(toml(), names=["router", "provider.p"]) as s:
        await add_cache(s, clock)
        ask = lambda ns=None: s.client.ask("q", budget_ms=3000, cache_namespace=ns)  # noqa: E731
        await ask()
        await ask("locations")
        assert calls(s) == 2  # a namespace is part of the key
        clock.t += 3599
        assert (await ask()).cached and (await ask("locations")).cached
        clock.t += 2  # past the hour of "llm", well inside the day of "locations"
        assert not (await ask()).cached
        assert (await ask("locations")).cached
        clock.t += 86_400
        assert not (await ask("locations")).cached
        assert not (await ask("nowhere")).cached  # an unlisted namespace: llm's TTL
        clock.t += 3599
        assert (await ask("nowhere")).cached
        assert calls(s) == 5


@pytest.mark.anyio
async def test_skip_bypasses_and_refresh_recomputes_and_stores(stack):
    clock = Clock()
    async with stack(toml(), names=["router", "provider.p"]) as s:
        await add_cache(s, clock)
        await s.client.ask("q", budget_ms=3000)
        skipped = await s.client.ask("q", budget_ms=3000, cache="skip")
        assert not skipped.cached and calls(s) == 2
        clock.t += 3000
        refreshed = await s.client.ask("q", budget_ms=3000, cache="refresh")
        assert not refreshed.cached and calls(s) == 3
        clock.t += 1000  # past the first entry's hour, inside the refreshed one's
        assert (await s.client.ask("q", budget_ms=3000)).cached
        assert calls(s) == 3
        assert (await stats(s)).total.stores == 2  # the skipped ask stored nothing


@pytest.mark.anyio
async def test_failures_and_low_confidence_answers_are_not_cached(stack):
    async with stack(toml(floor=0.95, extra="[providers.bad]\nfailures = { unavailable = 1.0 }\n")) as s:
        for _ in range(2):
            with pytest.raises(Unavailable):
                await s.client.ask("q", providers=["bad"], budget_ms=3000)
            assert not (await s.client.ask("q", budget_ms=3000)).cached  # 0.9 < the floor 0.95
        assert (calls(s, "bad"), calls(s)) == (2, 2)
        assert (await stats(s)).total.stores == 0


async def ask_many(s, n: int, prompt: str = "same question", **fields) -> list:
    replies: list = [None] * n

    async def one(i: int) -> None:
        replies[i] = await s.client.send(m.Ask(id=f"ask{i}", messages=[m.Message(role="user", content=prompt)],
                                               budget_ms=5000, **fields), deadline=deadline_in(5000))

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return replies


@pytest.mark.anyio
async def test_fifty_identical_asks_make_one_provider_call(stack):
    async with stack(toml(**BURST)) as s:
        replies = await ask_many(s, 50)
        assert calls(s) == 1
        assert all(isinstance(r, m.Answer) for r in replies)
        assert len({(r.text, json.dumps(r.data)) for r in replies}) == 1
        assert sorted(r.id for r in replies) == sorted(f"ask{i}" for i in range(50))
        assert sum(not r.cached for r in replies) == 1
        assert {r.metadata.get("cache") for r in replies if r.cached} == {"coalesced"}
        await wait_until(lambda: s.actor("cache").counts["llm"].coalesced == 49, what="coalesced counted")


@pytest.mark.anyio
async def test_fifty_identical_asks_over_two_routers_make_one_provider_call(stack):
    """25 asks go into each router's ask handler, called directly: the flight across routers (over
    the bus) is what this is about, not the queue group's spread — which is random, and on a busy
    machine nats-server was seen sending a whole burst to one member (raw nats-py too)."""
    async with stack(toml(**BURST)) as s:
        routers = [s.actor("router"), await s.add("router")]
        replies: list = [None] * 50

        async def one(i: int) -> None:
            ask = m.Ask(id=f"ask{i}", messages=[m.Message(role="user", content="same question")])
            t = now()
            ctx = Context(subject=s.client.subjects.ask, arrival=t, deadline=t + 5.0, ask_id=ask.id, headers=None)
            replies[i] = await routers[i % 2].ask(ask, ctx)

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
        assert calls(s) == 1
        assert all(isinstance(r, m.Answer) for r in replies)
        assert len({r.text for r in replies}) == 1 and sum(not r.cached for r in replies) == 1
        assert [sum(r.cache.counts[k] for k in ("made", "hit", "coalesced")) for r in routers] == [25, 25]
        assert sorted(r.cache.counts["made"] for r in routers) == [0, 1]  # the other router only waited


@pytest.mark.anyio
async def test_a_failure_in_flight_is_every_waiters_failure(stack):
    extra = "[providers.bad]\nlatency = { dist = \"fixed\", ms = 300 }\nfailures = { overloaded = 1.0 }\n"
    async with stack(toml(lookup_ms=250, extra=extra)) as s:
        replies = await ask_many(s, 10, providers=["bad"])
        assert calls(s, "bad") == 1
        assert [r.kind for r in replies] == [m.OVERLOADED] * 10


@pytest.mark.anyio
async def test_a_waiter_takes_over_from_a_cancelled_leader(stack):
    async with stack(toml(ms=400)) as s:
        router, second = s.actor("router"), []

        async def leader(scope: anyio.CancelScope) -> None:
            with scope:
                await s.client.ask("q", budget_ms=5000)

        async def waiter() -> None:
            second.append(await s.client.ask("q", budget_ms=5000))

        async with anyio.create_task_group() as tg:
            gives_up = anyio.CancelScope()
            tg.start_soon(leader, gives_up)
            await wait_until(lambda: calls(s) == 1, what="the leader called the provider")
            tg.start_soon(waiter)
            await wait_until(lambda: router.cache.counts["miss"] == 2, what="the second ask waits on the first")
            gives_up.cancel()  # the leader's client gives up: a Cancel stops its ask
        assert calls(s) == 2 and isinstance(second[0], m.Answer) and not second[0].cached


@pytest.mark.anyio
async def test_a_silent_leader_is_replaced_after_its_lease(stack):
    async with stack(toml(lease_s=0.3)) as s:
        ask = m.Ask(id="x", messages=[m.Message(role="user", content="q")])
        k = cache_key(ask, namespace="llm", strategy="single", providers=["p"])
        kv = await ensure_kv(s.client.nc, Subjects(s.root).bucket("cache_flights"), storage=StorageType.MEMORY)
        await kv.create(k, b"a router that died while leading")  # and so never renews its lease
        started = time.monotonic()
        answer = await s.client.ask("q", budget_ms=5000)
        waited = time.monotonic() - started
        assert not answer.cached and calls(s) == 1
        assert 0.3 <= waited < 2.0, waited
        assert s.actor("router").cache.counts["made"] == 1


@pytest.mark.anyio
async def test_asks_are_answered_without_a_cache_actor(stack):
    async with stack(toml()) as s:
        await s.client.ask("warm", budget_ms=3000)
        cache, router = s.actor("cache"), s.actor("router")
        await stop(cache)
        for _ in range(3):
            started = time.monotonic()
            answer = await s.client.ask("q", budget_ms=500)
            assert not answer.cached and time.monotonic() - started < 0.25
        assert calls(s) == 4
        assert router.cache.counts["uncached"] == 1 and router.cache.counts["bypassed"] == 2  # one lookup, then none


@pytest.mark.anyio
async def test_a_cache_that_never_answers_costs_an_ask_one_slice(stack):
    async with stack(toml(), names=["router", "provider.p"]) as s:
        sink = await s.client.nc.subscribe(CACHE_GET.subject(s.client.subjects), queue=CACHE_GET.queue)  # never replies
        await s.client.nc.flush()
        started = time.monotonic()
        answer = await s.client.ask("q", budget_ms=300)  # slice: min(20 ms, 5 % of 300 ms = 15 ms)
        took = time.monotonic() - started
        await sink.unsubscribe()
        assert not answer.cached and calls(s) == 1 and s.actor("router").cache.counts["uncached"] == 1
        assert took < 0.2, took


@pytest.mark.anyio
async def test_entries_survive_a_restart_of_the_cache_actor(stack):
    async with stack(toml(), names=["router", "provider.p"]) as s:
        first = await add_cache(s)
        await s.client.ask("q", budget_ms=3000)
        await stop(first)
        again = await add_cache(s)
        answer = await s.client.ask("q", budget_ms=3000)
        assert answer.cached and calls(s) == 1
        assert again.counts["llm"].hits == 1


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_cli_cache_stats_and_clear(stack):
    async with stack(toml()) as s:
        await s.client.ask("q", budget_ms=3000)
        await s.client.ask("q", budget_ms=3000)
        await s.client.ask("elsewhere", budget_ms=3000, cache_namespace="locations")
        env = cli_env(LLMBUS_ROOT=s.root)
        run = lambda *args: anyio.run_process([str(LLMBUS), "cache", *args, "--nats-url", s.url], env=env)  # noqa: E731
        report = json.loads((await run("stats", "--json")).stdout)
        total = report["total"]
        assert (total["hits"], total["misses"], total["stores"], report["entries"]) == (1, 2, 2, 2)
        table = (await run("stats")).stderr.decode()  # a table is for a person: stderr
        assert "locations" in table and "hits" in table
        cleared = json.loads((await run("clear", "--namespace", "llm", "--yes", "--json")).stdout)
        assert cleared["removed"] == 1
        assert (await stats(s)).entries == 1
        assert not (await s.client.ask("q", budget_ms=3000)).cached
        assert (await s.client.ask("elsewhere", budget_ms=3000, cache_namespace="locations")).cached


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_bench_cache_section_is_measured(nats_url):
    tiny = Plan(warmup=3, samples=20, seconds=0.2, max_asks=200, rounds=1, concurrency=(8,))
    result = await bench_cache.run(nats_url, tiny)
    assert set(result["paths"]) == set(bench_cache.PATHS) and result["failed"] == 0
    for path, f in result["paths"].items():
        assert f["failed"] == 0, path  # every answer's route was checked (hits: `cache hit`)
        assert 0 < f["p50_ms"] <= f["p99_ms"], path
        assert f["asks_per_s"]["8"] > 0, path
    assert [isinstance(g["pass"], bool) for g in bench_cache.goals(result)] == [True]
    out = io.StringIO()
    bench_cache.report("asyncio", result, Console(file=out, width=160))
    assert "cache hit (disk)" in out.getvalue() and "a miss adds" in out.getvalue()
