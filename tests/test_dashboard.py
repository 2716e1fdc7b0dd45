"""The live dashboard (``actors.gateway.dashboard``): its pure state, its JSON and SSE over a real
stack, and the page in a real headless Chromium (Debian's ``chromium``, driven by Playwright; skipped
with the reason when either is missing — ``make test`` installs chromium when run as root on Debian).

The dashboard is served by its own small Starlette app on uvicorn (a free port), as the gateway
actor serves it beside the API."""

from __future__ import annotations

import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgspec
import nats
import nats.js.errors
import pytest
import uvicorn
from starlette.applications import Starlette

from actors.gateway.board import Board, route_of
from actors.gateway.dashboard import Dashboard
from bus import messages as m
from bus.errors import LlmError
from bus.subjects import Subjects
from tests.helpers import wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]

TOML = """
[router]
strategy = "failover"
providers = ["alpha", "beta", "gamma"]

[health]
failures_to_open = 2
cooldown_s = 600

[record]
sampling = "errors"

[providers.alpha]
[providers.beta]
[providers.gamma]
"""


def step(provider: str, outcome: str, purpose: str | None = None) -> m.Step:
    return m.Step(provider=provider, outcome=outcome, ms=1.0, purpose=purpose)


# --- the pure state -----------------------------------------------------------------------------


@pytest.mark.parametrize("route, line, fell_back", [
    ([step("a", "ok")], "a", False),
    ([step("a", "timeout"), step("b", "ok")], "a ✗timeout → b", True),
    ([step("a", "breaker_open"), step("b", "ok")], "a ✗breaker_open → b", True),
    ([step("a", "ok"), step("b", "cancelled")], "a", False),  # a hedge's loser is no fallback
    ([step("j", "ok", purpose="review"), step("a", "ok")], "a", False),  # nor a call for another purpose
    ([step("a", "ok"), step("b", "ok"), step("c", "unavailable")], "a → b → c ✗unavailable", False),
    ([], "", False),
])
def test_route_of(route, line, fell_back):
    assert route_of(route) == (line, fell_back)


def test_success_rate_is_the_last_minute_then_the_totals():
    board = Board(["a"])
    for i, ok in enumerate([True, True, True, False]):
        board.outcome(m.Outcome(provider="a", ok=ok, kind=None if ok else m.TIMEOUT, latency_ms=5.0, at=100.0 + i))
    board.outcome(m.Outcome(provider="a", ok=False, kind=m.CANCELLED, at=104.0))  # a stopped loser: no verdict
    board.health(m.HealthReport(providers=[m.ProviderHealth(breaker=m.BreakerState(provider="a"), calls=10,
                                                            successes=9, latency_p50_ms=4.0)]), 104.0)
    (a,) = board.snapshot(110.0)["providers"]
    assert (a["success_rate"], a["rate_basis"], a["window_calls"], a["p50_ms"]) == (0.75, "last 60 s", 4, 4.0)
    (a,) = board.snapshot(300.0)["providers"]  # the window is empty: the health actor's totals
    assert (a["success_rate"], a["rate_basis"]) == (0.9, "since start")


def test_a_breaker_change_is_urgent_and_a_repeat_is_not():
    board = Board(["a", "b"])
    urgent = board.urgent
    assert board.breaker(m.BreakerState(provider="a", state="open", open_until=160.0, reason=m.TIMEOUT, changed_at=100.0))
    assert board.urgent == urgent + 1
    assert not board.breaker(m.BreakerState(provider="a", state="open", open_until=170.0, changed_at=101.0))
    assert board.urgent == urgent + 1
    a, b = board.snapshot(150.0)["providers"]
    assert (a["state"], a["retry_in_s"], b["state"]) == ("open", 20.0, "unknown")
    board.breaker(m.BreakerState(provider="zeta", state="closed"))  # reported by health, not configured
    names = [(p["name"], p["configured"]) for p in board.snapshot(150.0)["providers"]]
    assert names == [("a", True), ("b", True), ("zeta", False)]


def test_asks_per_strategy_failures_and_fallback_routes():
    board = Board(["a", "b"], {"pro": ["fast", "backup"]})
    for i in range(20):
        board.answered("failover", cached=i < 5, route=[step("a", "ok")], at=100.0 + i * 0.5)
    board.answered("failover", cached=False, route=[step("a", "timeout"), step("b", "ok")], at=109.0)
    board.answered("failover", cached=False, route=[step("b", "ok")], at=109.0,
                   metadata={"tier": "pro", "route_name": "backup"})
    board.answered("failover", cached=False, route=[step("a", "ok")], at=109.0,
                   metadata={"tier": "pro", "route_name": "fast"})
    board.failed("consensus", ask_id="ask-1", kind=m.ALL_FAILED, message="x" * 1000, provider=None, at=109.5)
    snap = board.snapshot(110.0)
    assert snap["strategies"] == [
        {"strategy": "consensus", "per_s": 0.1, "asks": 1, "answered": 0, "failed": 1, "cached": 0},
        {"strategy": "failover", "per_s": 2.3, "asks": 23, "answered": 23, "failed": 0, "cached": 5},
    ]  # asks per second over the last 10 s
    f = snap["fallback"]  # the 5 cached answers made no call: no route to judge
    assert (f["answers"], f["fallbacks"], f["routes"]) == (18, 1, [{"route": "a ✗timeout → b", "count": 1}])
    assert [(r["route"], r["answers"], r["fallback"]) for r in f["tier_routes"]] == [("backup", 1, True), ("fast", 1, False)]
    assert f["tier_fallbacks"] == 1
    (failure,) = snap["failures"]
    assert (failure["ask_id"], failure["kind"], len(failure["message"])) == ("ask-1", m.ALL_FAILED, 300)


def test_alerts_fire_and_resolve_and_bad_events_are_ignored():
    board = Board([])
    assert board.alert({"rule": "breaker_open", "subject": "a", "severity": "critical", "value": 6.0, "since": 50.0}, 60.0)
    assert board.alert({"rule": "error_rate", "subject": "b", "value": 0.4}, 61.0)
    assert not board.alert({"severity": "critical"}, 62.0)  # no rule: not an alert
    alerts = board.snapshot(70.0)["alerts"]
    assert [(a["rule"], a["severity"], a["since"]) for a in alerts] == [("breaker_open", "critical", 50.0),
                                                                       ("error_rate", "warning", 61.0)]
    board.alert({"rule": "breaker_open", "subject": "a", "resolved": True}, 80.0)
    assert [a["rule"] for a in board.snapshot(90.0)["alerts"]] == ["error_rate"]
    for i in range(500):  # a flood of distinct alerts stays bounded, the newest kept
        board.alert({"rule": "r" * 1000, "subject": f"s{i}", "since": 100.0 + i}, 100.0)
    alerts = board.snapshot(700.0)["alerts"]
    assert len(alerts) == 200 and len(alerts[0]["rule"]) == 100 and alerts[0]["subject"] == "s499"


# --- over the bus -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def dashboard(s) -> AsyncIterator[tuple[Dashboard, str]]:
    """The stack's dashboard, ready, served over HTTP on a free port: (dashboard, base url)."""
    nc = await nats.connect(s.url)
    try:
        async with anyio.create_task_group() as tg:
            dash = Dashboard(nc, Subjects(s.root), s.settings)
            await tg.start(dash.run)
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(64)  # connections wait in the backlog until uvicorn accepts: no readiness race
            server = uvicorn.Server(uvicorn.Config(Starlette(routes=dash.routes()), lifespan="off",
                                                   log_level="warning", timeout_graceful_shutdown=1))
            server.capture_signals = contextlib.nullcontext  # the test's process keeps its own handlers
            tg.start_soon(server.serve, [sock])
            try:
                yield dash, f"http://127.0.0.1:{sock.getsockname()[1]}"
            finally:
                server.should_exit = True
                tg.cancel_scope.cancel()
    finally:
        await nc.close()


async def open_breaker(s, provider: str) -> list[str]:
    """Two failed asks to ``provider`` alone (the mock's fault label): its breaker opens. Their ask ids."""
    ids = []
    for i in range(2):
        ask_id = f"fail-{provider}-{i}"
        with pytest.raises(LlmError):
            await s.client.ask(f"boom {i}", providers=[provider], labels={"mock.fault": "unavailable"},
                               ask_id=ask_id, budget_ms=3000)
        ids.append(ask_id)
    return ids


def answered(dash: Dashboard) -> dict[str, int]:
    return {name: v.answered for name, v in dash.board.strategies.items()}


async def followed(s, dash: Dashboard) -> dict[str, int]:
    """Ask until the dashboard counts an answer (a client's first ask can be answered before the
    dashboard follows that client's replies); the answered counts then."""
    for i in range(5):
        before = sum(answered(dash).values())
        await s.client.ask(f"warm-up {i}", strategy="hedged", budget_ms=3000)
        with anyio.move_on_after(1.0):
            while sum(answered(dash).values()) == before:
                await anyio.sleep(0.01)
        if sum(answered(dash).values()) > before:
            return answered(dash)
    raise AssertionError("the dashboard never counted an answer of this client")


async def stored(s, subject: str) -> None:
    """Wait until the events stream holds a message on ``subject`` (it takes no acks: ``no_ack``)."""
    js = s.client.nc.jetstream()
    with anyio.fail_after(5):
        while True:
            try:
                await js.get_last_msg(Subjects(s.root).events_stream, subject)
                return
            except nats.js.errors.NotFoundError:
                await anyio.sleep(0.01)


@pytest.mark.anyio
@pytest.mark.timeout(40)
async def test_state_and_events_follow_the_bus(stack):
    import httpx2 as httpx

    async with stack(TOML) as s:
        alert = {"type": "Alert", "rule": "error_rate", "subject": "gamma", "value": 40.0, "since": 1.0e9}
        await s.client.nc.publish(f"{s.root}.events.alert", msgspec.json.encode(alert))
        await stored(s, f"{s.root}.events.alert")
        async with dashboard(s) as (dash, url), httpx.AsyncClient(base_url=url, timeout=5) as http:
            first = (await http.get("/dashboard/state")).json()  # a look: the traffic watch starts
            assert [p["name"] for p in first["providers"]] == ["alpha", "beta", "gamma"]
            await wait_until(lambda: dash.board.alerts, what="the alert that fired before the dashboard started")
            assert [(a["rule"], a["subject"]) for a in dash.snapshot()["alerts"]] == [("error_rate", "gamma")]
            await wait_until(lambda: "traffic" in dash.board.sources, what="the traffic watch")
            base = await followed(s, dash)
            for i in range(3):
                await s.client.ask(f"q{i}", budget_ms=3000)
            streamed = [item async for item in s.client.stream("one two three", strategy="single", budget_ms=3000)]
            assert isinstance(streamed[-1], m.Answer) and len(streamed) > 1  # chunks, then the answer
            failed = await open_breaker(s, "beta")
            router = s.actor("router")
            await wait_until(lambda: getattr(router.breakers.states.get("beta"), "state", "") == "open",
                             what="the router sees beta open")
            answer = await s.client.ask("after", providers=["beta", "alpha"], budget_ms=3000)
            assert [st.outcome for st in answer.route] == ["breaker_open", "ok"]
            await wait_until(lambda: dash.board.fallbacks == 1, what="the fallback seen")
            state = (await http.get("/dashboard/state")).json()
            beta = next(p for p in state["providers"] if p["name"] == "beta")
            assert (beta["state"], beta["reason"]) == ("open", m.UNAVAILABLE)
            assert [f["ask_id"] for f in state["failures"]] == failed[::-1]
            counted = {x["strategy"]: x["answered"] - base.get(x["strategy"], 0) for x in state["strategies"]}
            assert (counted["failover"], counted["single"]) == (4, 1)  # the stream's final answer counted once
            assert state["fallback"]["routes"] == [{"route": "beta ✗breaker_open → alpha", "count": 1}]

            async with http.stream("GET", "/dashboard/events") as events:
                assert events.headers["content-type"].startswith("text/event-stream")
                lines = events.aiter_lines()
                with anyio.fail_after(5):
                    async for line in lines:
                        if line.startswith("data: "):
                            assert msgspec.json.decode(line[6:])["root"] == s.root
                            break
                assert dash.viewers == 1
            await wait_until(lambda: dash.viewers == 0, what="the closed stream uncounted")  # so the watch can end

            trace = await http.get(f"/dashboard/trace/{failed[0]}")  # recorded: sampling = "errors"
            assert trace.status_code == 200 and failed[0] in trace.text and "provider calls" in trace.text
            as_json = (await http.get(f"/dashboard/trace/{failed[0]}", params={"format": "json"})).json()
            assert as_json["ask_id"] == failed[0] and as_json["calls"]
            missing = await http.get("/dashboard/trace/never-asked", params={"format": "json"})
            assert missing.status_code == 404 and "no recording" in missing.json()["error"]["message"]
            dash.board.failed("failover", ask_id="seen-only", kind=m.ALL_FAILED, message="<b>all failed</b>",
                              provider=None, at=1.0, route=[step("alpha", m.TIMEOUT), step("gamma", m.UNAVAILABLE)])
            seen = await http.get("/dashboard/trace/seen-only", params={"key": "k&1"})  # not recorded: what it saw
            assert seen.status_code == 200 and "&lt;b&gt;all failed" in seen.text and "gamma" in seen.text
            assert 'href="/?key=k%261"' in seen.text  # the page's key stays in its links
            seen = (await http.get("/dashboard/trace/seen-only", params={"format": "json"})).json()
            assert not seen["recorded"] and [st["outcome"] for st in seen["seen"]["route"]] == [m.TIMEOUT, m.UNAVAILABLE]
            assert "route" not in dash.snapshot()["failures"][0]  # kept for the trace view, not sent to pages

            async with dashboard(s) as (later, _):  # started after the failures: read back from the recording
                await wait_until(lambda: {f["ask_id"] for f in later.board.failures} == set(failed),
                                 what="the recorded failures listed")


# --- in a real browser --------------------------------------------------------------------------


@pytest.fixture
def browser_ready() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium is not installed ({CHROMIUM}): `apt-get install -y chromium` (make test does it as root)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.skip("Playwright is not installed: `pip install -e .[dev]`")


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_the_page_shows_every_provider_and_a_breaker_opening_within_2_s(stack, browser_ready):
    from playwright.async_api import async_playwright, expect

    async with stack(TOML) as s, dashboard(s) as (dash, url), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(url + "/")
            await expect(page.locator("#live")).to_have_class("live on", timeout=10_000)  # SSE connected
            for name in s.settings.providers:
                await expect(page.locator(f'[data-provider="{name}"]')).to_be_visible()
            beta = page.locator('[data-provider="beta"]')
            await expect(beta).to_have_attribute("data-state", "closed", timeout=10_000)  # from the health report

            await followed(s, dash)  # so the failures' replies are seen
            failed = await open_breaker(s, "beta")
            health = s.actor("health")
            await wait_until(lambda: health.breakers["beta"].state == "open", what="the breaker stored open")
            await expect(beta).to_have_attribute("data-state", "open", timeout=2_000)  # the 2 s
            await expect(beta.locator('[data-role="state"]')).to_have_text("open")

            alert = {"type": "Alert", "rule": "breaker_open", "subject": "beta", "severity": "critical",
                     "value": 6.0, "threshold": 5.0, "since": 1.0e9, "message": "beta open for 6 min"}
            await s.client.nc.publish(f"{s.root}.events.alert", msgspec.json.encode(alert))  # issue 20's event
            banner = page.locator('[data-alert="breaker_open"]')
            await expect(banner).to_contain_text("beta", timeout=2_000)
            await s.client.nc.publish(f"{s.root}.events.alert", msgspec.json.encode({**alert, "resolved": True}))
            await expect(banner).to_have_count(0, timeout=2_000)

            link = page.locator(f'[data-ask="{failed[-1]}"] a')  # the failure, linking to its trace
            await expect(link).to_be_visible(timeout=5_000)
            await link.click()
            await expect(page.locator("pre.trace")).to_contain_text(failed[-1], timeout=10_000)
        finally:
            await browser.close()
