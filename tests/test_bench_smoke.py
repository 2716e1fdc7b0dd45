"""Smoke test of ``llmbus bench``: every core path in the one-process layout, a handful of asks
each; the health section (breaker check on/off, propagation to 3 routers) and the adapters section
(raw SDK vs the provider actor, per SDK kind) with tiny counts.

Checks the shape of the figures (and that every ask was answered — failover's and the breaker
skip's routes included), never timing thresholds: those belong to ``llmbus bench`` on a quiet
machine.
"""

from __future__ import annotations

import io
import os

import pytest
from rich.console import Console

from actors.bench import adapters as bench_adapters, core as bench_core, health as bench_health, main as bench
from actors.bench.measure import Plan

TINY = Plan(warmup=5, samples=30, seconds=0.2, max_asks=200, rounds=1, concurrency=(4, 16))
TINY_HEALTH = bench_health.HealthPlan(
    health=Plan(warmup=3, samples=20, seconds=0.2, max_asks=200, rounds=1, concurrency=(8,)),
    transitions=6,
)
TINY_ADAPTERS = Plan(warmup=2, samples=10, concurrency=())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # nats-py is asyncio-only


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_one_process_paths_are_measured(nats_url: str) -> None:
    figures = await bench_core.measure_layout(nats_url, "one-process", TINY)

    assert set(figures) == set(bench_core.PATHS)
    for path, f in figures.items():
        assert f["failed"] == 0, path  # the failover path also checks each answer's route
        assert 0 < f["p50_ms"] <= f["p99_ms"], path
        assert set(f["asks_per_s"]) == {"4", "16"}, path
        assert all(rate > 0 for rate in f["asks_per_s"].values()), path

    result = {"layouts": {"one-process": figures}, **bench_core.compare({"one-process": figures})}
    ratios = result["ratios"]["one-process"]
    assert set(ratios) == {"llmbus single", "llmbus failover"}
    assert all(v > 0 for r in ratios.values() for v in r.values())
    assert {g["goal"].split(":")[0] for g in result["goals"]} == {"one-process"}
    assert all(isinstance(g["pass"], bool) for g in result["goals"])

    out = io.StringIO()
    bench.report("asyncio", result, Console(file=out, width=120))
    assert "failover adds" in out.getvalue()


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_health_section_is_measured(nats_url: str) -> None:
    health = await bench_health.run(nats_url, TINY_HEALTH)

    assert set(health["paths"]) == set(bench_health.PATHS)
    for path, f in health["paths"].items():
        assert f["failed"] == 0, path  # each answer's route is checked (the skipped open breaker too)
        assert 0 < f["p50_ms"] <= f["p99_ms"], path
        assert set(f["asks_per_s"]) == {"8"} and f["asks_per_s"]["8"] > 0, path
    assert health["states_seen_by_router"] == {"fail": "open", "zero": "closed"}
    assert health["on_over_off"]["p50_ms"] > 0 and health["skip_over_off"]["asks_per_s@8"] > 0

    prop = health["propagation"]
    assert (prop["routers"], prop["transitions"], prop["lost"]) == (3, 6, 0)
    for who in ("all_routers", "first_router"):
        assert 0 < prop[who]["p50_ms"] <= prop[who]["p99_ms"] <= prop[who]["max_ms"], who
    assert prop["first_router"]["max_ms"] <= prop["all_routers"]["max_ms"]

    result = {"health": health, "goals": bench_health.goals(health)}
    assert bench.failures(result) == 0
    assert [isinstance(g["pass"], bool) for g in result["goals"]] == [True]
    out = io.StringIO()
    bench.report("asyncio", result, Console(file=out, width=140))
    assert "breaker propagation" in out.getvalue() and "health on adds" in out.getvalue()


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_adapters_section_is_measured(nats_url: str) -> None:
    adapters = await bench_adapters.run(nats_url, TINY_ADAPTERS)

    kinds = list(bench_adapters.KINDS)
    assert set(adapters["paths"]) == {f"{k} {how}" for k in kinds for how in ("raw SDK", "llmbus")} | {"bare one-hop"}
    for path, f in adapters["paths"].items():
        assert f["failed"] == 0, path
        assert 0 < f["p50_ms"] <= f["p99_ms"], path
    assert set(adapters["kinds"]) == set(kinds)
    assert all(k["p50_ratio"] > 0 and k["p99_ratio"] > 0 for k in adapters["kinds"].values())
    assert bench_adapters.KEY_ENV not in os.environ  # the dummy key is gone again

    out = io.StringIO()
    bench.report("asyncio", {"adapters": adapters, "goals": []}, Console(file=out, width=140))
    assert all(k in out.getvalue() for k in kinds)


@pytest.mark.anyio
async def test_cost_section_is_measured(nats_url: str) -> None:
    from actors.bench import cost as bench_cost

    result = await bench_cost.run(nats_url, bench_cost.Plan(warmup=5, samples=20, seconds=0.2, rounds=1,
                                                            concurrency=(8,)))
    assert result["failed"] == 0
    assert set(result["paths"]) == {"no budget", "budget"}
    assert all(0 < f["p50_ms"] <= f["p99_ms"] for f in result["paths"].values())
    out = io.StringIO()
    bench.report("asyncio", {"cost": result, "goals": []}, Console(file=out, width=140))
    assert "a budget adds" in out.getvalue()


def test_only_picks_sections() -> None:
    assert bench.parse_sections("adapters, core") == ("core", "adapters")
    assert bench.parse_sections("health") == ("health",)
    assert bench.parse_sections("cost,cache") == ("cache", "cost")
    assert bench.parse_sections("core,nope") is None
    assert bench.parse_sections(" , ") is None
    assert bench.main(json_out=True, quick=True, loop="asyncio", only="nope") == 2
