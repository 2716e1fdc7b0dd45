"""Smoke test of ``llmbus bench``: every path in the one-process layout, a handful of asks each.

Checks the shape of the figures (and that every ask was answered — failover's route included),
never timing thresholds: those belong to ``llmbus bench`` on a quiet machine.
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from actors import bench

TINY = bench.Plan(warmup=5, samples=30, seconds=0.2, max_asks=200, rounds=1, concurrency=(4, 16))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # nats-py is asyncio-only


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_one_process_paths_are_measured(nats_url: str) -> None:
    figures = await bench.measure_layout(nats_url, "one-process", TINY)

    assert set(figures) == set(bench.PATHS)
    for path, f in figures.items():
        assert f["failed"] == 0, path  # the failover path also checks each answer's route
        assert 0 < f["p50_ms"] <= f["p99_ms"], path
        assert set(f["asks_per_s"]) == {"4", "16"}, path
        assert all(rate > 0 for rate in f["asks_per_s"].values()), path

    result = {"layouts": {"one-process": figures}, **bench.compare({"one-process": figures})}
    ratios = result["ratios"]["one-process"]
    assert set(ratios) == {"llmbus single", "llmbus failover"}
    assert all(v > 0 for r in ratios.values() for v in r.values())
    assert {g["goal"].split(":")[0] for g in result["goals"]} == {"one-process"}
    assert all(isinstance(g["pass"], bool) for g in result["goals"])

    out = io.StringIO()
    bench.report("asyncio", result, Console(file=out, width=120))
    assert "failover adds" in out.getvalue()
