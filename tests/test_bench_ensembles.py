"""``llmbus bench --only ensembles`` as a smoke run: the section answers every ask and reports its
goals (the figures themselves are the bench's business, not a test's)."""

from __future__ import annotations

import pytest
from rich.console import Console

from actors.bench import ensembles, main as bench
from actors.bench.measure import Plan

pytestmark = pytest.mark.timeout(60)

TINY = ensembles.EnsemblePlan(asks=Plan(warmup=5, samples=20, seconds=0.2, rounds=1, concurrency=(8,)), merges=20,
                              items=100)


@pytest.mark.anyio
async def test_the_section_runs_small_and_names_its_goals(nats_url):
    result = await ensembles.run(nats_url, TINY)
    assert result["failed"] == 0
    assert result["merge"]["fields"] == 50 and result["merge"]["p99_ms"] > 0
    assert set(result["simulation"]["methods"]) >= {"consensus", "bayes_optimum", "naive_majority", "max_confidence"}
    names = [g["goal"] for g in ensembles.goals(result)]
    assert len(names) == 6 and all(n.startswith("ensembles: ") for n in names)
    console = Console(record=True, width=200)
    ensembles.report("asyncio", result, console)
    text = console.export_text()
    assert "consensus − single" in text and "bayes_optimum" in text


def test_ensembles_is_a_section_run_only_when_named():
    assert "ensembles" in bench.SECTIONS and "ensembles" not in bench.DEFAULT
    assert bench.parse_sections("ensembles") == ("ensembles",)
