"""Metrics (``actors.metrics``) and trace context (``actors.tracing``) end to end on a real NATS
server with mock providers: the Prometheus endpoint scraped with a plain HTTP client after a few
asks, the same numbers over the bus (``llmbus status``), a caller's ``traceparent`` arriving at
every provider call, and (with the OpenTelemetry SDK installed) one trace per ask."""

from __future__ import annotations

import urllib.request

import anyio
import pytest

from actors import metrics
from bus import deadline
from bus import messages as m
from bus.errors import LlmError
from tests.conftest import CACHE_DIR

pytestmark = [pytest.mark.anyio]

TOML = f"""
[router]
strategy = "failover"
providers = ["flaky", "steady"]

[providers.flaky]
failures = {{ unavailable = 1.0 }}

[providers.steady]
model = "mock-steady-1"
latency = {{ dist = "fixed", ms = 1 }}

[cache]
dir = "{CACHE_DIR}"

[tiers.pro]
strategy = "failover"
"""


def scrape(port: int) -> dict[tuple, float]:
    """``GET /metrics`` parsed: (sample name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _get(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.timeout(30)
async def test_the_metrics_endpoint_is_scraped_after_a_few_asks(stack, root, nats_url, tmp_path):
    import json
    import subprocess

    from tests.helpers import LLMBUS, cli_env

    port = metrics.serve(0)  # tests: any free port (the CLI's 0 means off)
    before = await anyio.to_thread.run_sync(scrape, port)
    async with stack(TOML) as s:
        for i in range(3):
            answer = await s.client.ask(f"hello {i}", budget_ms=5_000, tier="pro")
            assert answer.text == f"[steady] hello {i}"
        with pytest.raises(LlmError):
            await s.client.ask("fails", budget_ms=5_000, providers=["flaky"], cache="skip")
        await s.client.ask("hello 0", budget_ms=5_000, tier="pro")  # a cache hit
        after = await anyio.to_thread.run_sync(scrape, port)

        def grew(name: str, **labels) -> float:
            return _get(after, name, **labels) - _get(before, name, **labels)

        assert grew("llmbus_asks_total", strategy="failover", tier="pro", outcome="ok") == 4
        assert grew("llmbus_asks_total", strategy="failover", tier="", outcome="unavailable") == 1
        assert grew("llmbus_ask_seconds_count", strategy="failover") == 5
        assert grew("llmbus_ask_seconds_bucket", strategy="failover", le="+Inf") == 5
        assert grew("llmbus_provider_calls_total", provider="flaky", outcome="unavailable") == 4
        assert grew("llmbus_provider_calls_total", provider="steady", outcome="ok") == 3
        assert grew("llmbus_provider_call_seconds_count", provider="steady") == 3
        assert grew("llmbus_cache_events_total", event="hit") == 1
        assert grew("llmbus_cache_events_total", event="miss") >= 3
        assert grew("llmbus_cache_events_total", event="stored") == 3
        with anyio.fail_after(10):  # the cost actor prices the usage events a moment later
            while not grew("llmbus_cost_usd_total", provider="steady", tier="pro") > 0:
                await anyio.sleep(0.02)
                after = await anyio.to_thread.run_sync(scrape, port)

        # the same numbers over the bus, without Prometheus: `llmbus status`
        from actors.cli.health import fleet_metrics

        fleet = await fleet_metrics(s.client)
        assert fleet["llmbus_asks"][("failover", "pro", "ok")] >= 4
        assert fleet["llmbus_ask_seconds"][("failover",)][0] >= 5
        config = tmp_path / "llmbus.toml"
        config.write_text(f'[bus]\nroot = "{root}"\nnats_url = "{nats_url}"\n' + TOML)
        done = await anyio.to_thread.run_sync(lambda: subprocess.run(
            [str(LLMBUS), "status", "--json"], env=cli_env(LLMBUS_CONFIG=str(config)), capture_output=True,
            text=True, timeout=20))
        assert done.returncode == 0, done.stderr
        rows = json.loads(done.stdout)["metrics"]["llmbus_asks"]
        assert ["failover", "pro", "ok", fleet["llmbus_asks"][("failover", "pro", "ok")]] in rows


@pytest.mark.timeout(30)
async def test_a_streamed_ask_is_counted_too(stack):
    async with stack(TOML) as s:
        before = metrics.ASKS.get(("failover", "", "ok"), 0)
        async for _ in s.client.stream("streamed", budget_ms=5_000, cache="skip"):
            pass
        assert metrics.ASKS.get(("failover", "", "ok"), 0) == before + 1


def test_breaker_and_quality_figures_are_exported():
    metrics.breaker("t-metrics-p", "open")
    metrics.reviewed(0.85, True)
    metrics.budget("user:t-metrics:day", 3.0, 4.0)
    port = metrics.serve(0)
    got = scrape(port)
    assert _get(got, "llmbus_breaker_state", provider="t-metrics-p") == 2
    assert _get(got, "llmbus_quality_reviews_total", first_pass="true") >= 1
    assert _get(got, "llmbus_quality_score_bucket", le="0.9") >= 1
    assert _get(got, "llmbus_budget_spent_ratio", scope="user:t-metrics:day") == 0.75
    snap = metrics.merge([metrics.snapshot(), metrics.snapshot()])  # one process counted once
    assert snap["llmbus_breaker_state"][("t-metrics-p",)] == 2


TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.timeout(30)
async def test_a_callers_traceparent_arrives_at_every_provider_call(stack, root, nats_url):
    import nats

    async with stack(TOML) as s:
        nc = await nats.connect(nats_url)
        seen: list[tuple[str, str | None]] = []
        try:
            async def on(msg) -> None:
                seen.append((msg.subject, (msg.headers or {}).get("traceparent")))

            sub = await nc.subscribe(f"{root}.provider.*.complete", cb=on)
            await nc.flush()
            await s.client.ask("untraced", budget_ms=5_000, cache="skip")
            token = deadline.traceparent.set(TRACE)
            try:
                await s.client.ask("traced", budget_ms=5_000, cache="skip")
            finally:
                deadline.traceparent.reset(token)
            with anyio.fail_after(5):
                while len(seen) < 4:
                    await anyio.sleep(0.01)
            await sub.unsubscribe()
        finally:
            await nc.close()
    assert [tp for _, tp in seen[:2]] == [None, None]  # no traceparent: no header at all
    assert [tp for _, tp in seen[2:]] == [TRACE, TRACE]  # both calls of failover carry the caller's


@pytest.mark.timeout(30)
async def test_spans_of_one_ask_are_one_trace(stack):
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from actors import tracing

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        async with stack(TOML) as s:
            token = deadline.traceparent.set(TRACE)
            try:
                answer = await s.client.ask("one trace", budget_ms=5_000, cache="skip")
            finally:
                deadline.traceparent.reset(token)
    finally:
        tracing.uninstall()
    assert isinstance(answer, m.Answer)
    spans = [sp for sp in exporter.get_finished_spans() if sp.attributes.get("llmbus.ask_id") == answer.id]
    names = sorted(sp.name for sp in spans)
    assert "llmbus ask" in names and names.count("llmbus complete") == 2, names
    assert {format(sp.context.trace_id, "032x") for sp in spans} == {TRACE.split("-")[1]}
    ask = next(sp for sp in spans if sp.name == "llmbus ask")
    assert format(ask.parent.span_id, "016x") == TRACE.split("-")[2]  # the caller's span is its parent
    calls = [sp for sp in spans if sp.name == "llmbus complete"]
    assert all(sp.parent.span_id == ask.context.span_id for sp in calls)  # every call under the ask
    assert sorted(sp.attributes["llmbus.outcome"] for sp in calls) == ["ok", "unavailable"]
