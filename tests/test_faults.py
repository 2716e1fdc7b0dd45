"""Faults against a real nats-server: each ends in one clear, typed reply before the deadline, and the
actors keep serving afterwards."""

from __future__ import annotations

import json
import subprocess
import time

import anyio
import pytest

from actors.stack import build_actor
from bus import codec
from bus import messages as m
from bus.deadline import deadline_in
from bus.errors import (
    AllFailed,
    BadRequest,
    Cancelled,
    DeadlineExceeded,
    LlmError,
    Overloaded,
    Unavailable,
)
from bus.server import NatsServer
from tests.helpers import LLMBUS, cli_env, wait_until

FAST_AND_STALL = """
[router]
strategy = "failover"
providers = ["stall", "fast"]

[providers.fast]
latency = { dist = "fixed", ms = 5 }

[providers.stall]
failures = { stall = 1.0 }
"""

TWO_FAST = """
[router]
providers = ["a", "b"]

[providers.a]
latency = { dist = "fixed", ms = 2 }

[providers.b]
latency = { dist = "fixed", ms = 2 }
"""


async def assert_serving(s, providers=None) -> m.Answer:
    """A good ask after a fault still gets an Answer."""
    answer = await s.client.ask("still serving?", budget_ms=3000, providers=providers)
    assert isinstance(answer, m.Answer)
    assert "still serving?" in answer.text
    return answer


def calls(provider) -> int:
    """Completions a provider actor took (its ``complete`` endpoint's requests)."""
    return provider.statistics().endpoints["complete"].num_requests


def ask_bytes(ask_id: str, **fields) -> bytes:
    return codec.encode(m.Ask(id=ask_id, messages=[m.Message(role="user", content="raw")], **fields))


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "payload",
    [b"\x00\xffnot json", b"", b'{"type":"Ask"}', b'{"type":"Answer","id":"x","text":"t"}', b"[1,2,3]"],
)
async def test_malformed_bytes_on_ask_get_bad_request(stack, payload):
    async with stack(TWO_FAST) as s:
        reply = await s.client.nc.request(f"{s.root}.ask", payload, timeout=3)
        failure = codec.ask_reply.decode(reply.data)
        assert isinstance(failure, m.Failure)
        assert failure.kind == m.BAD_REQUEST
        assert failure.retryable is False
        assert "malformed" in failure.message
        await assert_serving(s)


@pytest.mark.anyio
async def test_unknown_strategy_and_unknown_provider_are_bad_requests(stack):
    async with stack(TWO_FAST) as s:
        with pytest.raises(BadRequest) as info:
            await s.client.ask("x", strategy="nope", budget_ms=2000)
        assert "nope" in info.value.message and "failover" in info.value.message
        with pytest.raises(BadRequest) as info:
            await s.client.ask("x", providers=["a", "ghost"], budget_ms=2000)
        assert "ghost" in info.value.message
        assert s.actor("router").statistics().endpoints["ask"].num_requests == 2  # both reached the router
        for name in ("a", "b"):  # and nothing reached a provider
            assert all(ep.num_requests == 0 for ep in s.actor(name).statistics().endpoints.values())
        await assert_serving(s)


# --- budgets --------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("budget_ms", [1, 30])
async def test_budget_too_small_is_deadline_exceeded_within_budget(stack, budget_ms):
    toml = '[router]\nstrategy = "single"\n[providers.slow]\nlatency = { dist = "fixed", ms = 200 }\n'
    async with stack(toml) as s:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded) as info:
            await s.client.ask("x", budget_ms=budget_ms)
        took = time.monotonic() - start
        assert took < budget_ms / 1000 + 0.1, took
        assert info.value.failure.kind == m.TIMEOUT
        # the ask reached the router, and with 30 ms the call reached the provider: the work began...
        router, slow = s.actor("router"), s.actor("provider.slow")
        await wait_until(lambda: router.statistics().endpoints["ask"].num_requests == 1, what="the router had the ask")
        if budget_ms >= 30:
            await wait_until(lambda: calls(slow) == 1, what="the provider had the call")
        # ...and stops too (deadline or Cancel): nothing stays in flight
        await wait_until(lambda: slow.in_flight() == 0 and router.in_flight() == 0, within_s=1.0)
        await assert_serving(s)


@pytest.mark.anyio
async def test_raw_ask_without_budget_header_gets_the_default_budget(stack):
    toml = '[bus]\ndefault_budget_ms = 300\n' + FAST_AND_STALL.replace('["stall", "fast"]', '["stall"]')
    async with stack(toml) as s:
        start = time.monotonic()
        # nats-py's request sends no headers; the body has no budget_ms either
        reply = await s.client.nc.request(f"{s.root}.ask", ask_bytes("raw-1"), timeout=5)
        took = time.monotonic() - start
        failure = codec.ask_reply.decode(reply.data)
        assert isinstance(failure, m.Failure)
        assert failure.kind == m.TIMEOUT, failure
        assert 0.25 <= took < 1.0, took  # the 300 ms default, not 30 s
        # the router's strategy deadline comes before its endpoint's, so the route is always there
        assert [(st.provider, st.outcome) for st in failure.route] == [("stall", "timeout")]
        await assert_serving(s, providers=["fast"])


@pytest.mark.anyio
async def test_raw_ask_without_header_uses_the_body_budget(stack):
    # default budget stays 30 s: the body's budget_ms (200) is what must end this ask
    async with stack(FAST_AND_STALL.replace('["stall", "fast"]', '["stall"]')) as s:
        start = time.monotonic()
        reply = await s.client.nc.request(f"{s.root}.ask", ask_bytes("raw-2", budget_ms=200), timeout=5)
        took = time.monotonic() - start
        failure = codec.ask_reply.decode(reply.data)
        assert isinstance(failure, m.Failure) and failure.kind == m.TIMEOUT, failure
        assert 0.15 <= took < 0.8, took
        await assert_serving(s, providers=["fast"])


# --- providers missing, stalled, killed, full -----------------------------------------------------------


@pytest.mark.anyio
async def test_no_provider_running_fails_fast_with_route(stack):
    async with stack(TWO_FAST, names=["router"]) as s:
        start = time.monotonic()
        with pytest.raises(AllFailed) as info:
            await s.client.ask("x", budget_ms=5000)
        assert time.monotonic() - start < 1.0  # no responders is known at once, not at the deadline
        route = info.value.failure.route
        assert [(st.provider, st.outcome) for st in route] == [("a", "unavailable"), ("b", "unavailable")]
        assert all("no responders" in st.detail for st in route)
        # one provider only: that provider's failure itself
        with pytest.raises(Unavailable) as info:
            await s.client.ask("x", budget_ms=5000, providers=["b"])
        assert info.value.provider == "b"
        # once a provider comes up, the same router serves
        await s.add("provider.b")
        answer = await assert_serving(s)
        assert [(st.provider, st.outcome) for st in answer.route] == [("a", "unavailable"), ("b", "ok")]


@pytest.mark.anyio
async def test_stalled_provider_fails_over_within_the_reserve(stack):
    async with stack(FAST_AND_STALL) as s:
        start = time.monotonic()
        answer = await s.client.ask("hello", budget_ms=1000)
        took = time.monotonic() - start
        assert isinstance(answer, m.Answer)
        assert answer.text == "[fast] hello"
        assert [(st.provider, st.outcome) for st in answer.route] == [("stall", "timeout"), ("fast", "ok")]
        # the stalled call got ~70 % of the budget; the reserve left room for the second provider
        assert 600 <= answer.route[0].ms <= 800, answer.route
        assert took < 1.0, took
        stall = s.actor("provider.stall")
        assert calls(stall) == 1  # the stalled call reached the provider, and is stopped there too
        await wait_until(lambda: stall.in_flight() == 0, within_s=1.0)
        await assert_serving(s, providers=["fast"])


@pytest.mark.anyio
async def test_provider_killed_mid_request_fails_over(stack):
    toml = """
[router]
providers = ["slow", "fast"]
[providers.slow]
latency = { dist = "fixed", ms = 1000 }
[providers.fast]
latency = { dist = "fixed", ms = 5 }
"""
    async with stack(toml, names=["router", "provider.fast"]) as s:
        slow = build_actor("provider.slow", s.settings)
        slow_scope = anyio.CancelScope()
        slow_exited = anyio.Event()

        async def run_slow(*, task_status=anyio.TASK_STATUS_IGNORED):
            try:
                with slow_scope:
                    await slow.run(s.url, task_status=task_status)
            finally:
                slow_exited.set()

        await s.tg.start(run_slow)
        got: dict = {}

        async def ask():
            start = time.monotonic()
            # 2 s budget: slow's call gets ~1.38 s, so alive it would answer (1 s); killed it cannot
            got["reply"] = await s.client.send(
                m.Ask(id="kill-1", messages=[m.Message(role="user", content="q")]),
                deadline=start + 2.0,
            )
            got["took"] = time.monotonic() - start

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            await wait_until(lambda: slow.in_flight("kill-1") == 1, what="slow has the request")
            await slow.nc.close()  # the connection dies with the request in flight
            slow_scope.cancel()

        reply = got["reply"]
        assert isinstance(reply, m.Answer), reply
        assert [(st.provider, st.outcome) for st in reply.route] == [("slow", "timeout"), ("fast", "ok")]
        assert got["took"] < 2.0
        with anyio.fail_after(5):
            await slow_exited.wait()
        await assert_serving(s, providers=["fast"])


@pytest.mark.anyio
async def test_more_asks_than_a_provider_admits_are_overloaded_at_once(stack):
    toml = """
[router]
strategy = "single"
[providers.busy]
max_concurrency = 2
latency = { dist = "fixed", ms = 500 }
"""
    async with stack(toml) as s:
        results: list[tuple[object, float]] = []

        async def one(i: int):
            start = time.monotonic()
            try:
                outcome = await s.client.ask(f"q{i}", budget_ms=3000)
            except LlmError as exc:
                outcome = exc
            results.append((outcome, time.monotonic() - start))

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(one, i)

        answers = [r for r, _ in results if isinstance(r, m.Answer)]
        overloaded = [(r, t) for r, t in results if isinstance(r, Overloaded)]
        assert len(answers) == 2, results
        assert len(overloaded) == 4, results
        assert all(t < 0.25 for _, t in overloaded), overloaded  # refused at once, not after 500 ms
        assert all(r.provider == "busy" for r, _ in overloaded)
        busy = s.actor("provider.busy")
        assert busy.statistics().rejected == 4
        await assert_serving(s)


# --- cancel, dedup, retries ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cancel_stops_the_ask_and_the_provider_work(stack):
    async with stack(FAST_AND_STALL) as s:
        stall, router = s.actor("provider.stall"), s.actor("router")
        got: dict = {}

        async def ask():
            try:
                await s.client.ask("q", budget_ms=10_000, ask_id="cancel-me", providers=["stall"])
            except LlmError as exc:
                got["exc"] = exc
                got["at"] = time.monotonic()

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            await wait_until(lambda: stall.in_flight("cancel-me") == 1, what="stall has the call")
            sent = time.monotonic()
            await s.client.rpc.cancel("cancel-me", reason="user pressed stop")

        assert isinstance(got["exc"], Cancelled), got
        assert got["at"] - sent < 0.5
        assert "user pressed stop" in got["exc"].message
        await wait_until(lambda: stall.in_flight() == 0 and router.in_flight() == 0, within_s=1.0)
        stopped = stall.statistics().endpoints["complete"]
        assert stopped.num_errors == 1 and stopped.last_error == "cancelled: user pressed stop"
        # the cancelled ask id is not remembered: the same id runs again
        answer = await s.client.ask("q", budget_ms=2000, ask_id="cancel-me", providers=["fast"])
        assert answer.text == "[fast] q"


@pytest.mark.anyio
async def test_cancel_with_a_call_id_stops_only_that_call(stack):
    async with stack(FAST_AND_STALL, names=["provider.stall"]) as s:
        stall, rpc = s.actor("provider.stall"), s.client.rpc
        subject = s.client.subjects.provider_complete("stall")
        replies: dict[str, m.Failure] = {}

        async def call(call_id: str):
            request = m.Complete(id=call_id, ask_id="two-calls", messages=[m.Message(role="user", content="q")])
            replies[call_id] = await rpc.call(
                subject, request, codec.complete_reply, deadline=deadline_in(10_000), ask_id="two-calls", call_id=call_id
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "first")
            tg.start_soon(call, "second")
            await wait_until(lambda: stall.in_flight("two-calls") == 2, what="stall has both calls")
            await rpc.cancel("two-calls", "first", reason="only the first")
            await wait_until(lambda: "first" in replies, what="the first call answered")
            await wait_until(lambda: stall.in_flight("two-calls") == 1, what="the first call ended")
            assert "second" not in replies  # the other call of the same ask still runs
            await rpc.cancel("two-calls", reason="the rest")  # no call id: every call of the ask

        assert (replies["first"].kind, replies["first"].message) == (m.CANCELLED, "only the first")
        assert (replies["second"].kind, replies["second"].message) == (m.CANCELLED, "the rest")
        await wait_until(lambda: stall.in_flight() == 0, what="nothing left in flight")
        assert stall.in_flight("two-calls") == 0


@pytest.mark.anyio
async def test_router_deduplicates_concurrent_asks_with_the_same_id(stack):
    toml = '[providers.p]\nlatency = { dist = "fixed", ms = 100 }\n'
    async with stack(toml) as s:
        ask = m.Ask(id="same-id", messages=[m.Message(role="user", content="once")], budget_ms=3000)
        replies = []

        async def send():
            replies.append(await s.client.send(ask, deadline=time.monotonic() + 3.0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            tg.start_soon(send)
        assert len(replies) == 2
        assert isinstance(replies[0], m.Answer)
        assert replies[0] == replies[1]
        provider, router = s.actor("provider.p"), s.actor("router")
        assert router.statistics().endpoints["ask"].num_requests == 2
        assert calls(provider) == 1
        # a later retry of the same id within the window is answered from the first run too
        again = await s.client.send(ask, deadline=time.monotonic() + 3.0)
        assert again == replies[0]
        assert calls(provider) == 1
        # a different id is new work
        await assert_serving(s)
        assert calls(provider) == 2


@pytest.mark.anyio
async def test_no_router_is_unavailable_without_retries(stack):
    async with stack(TWO_FAST, names=["provider.a"]) as s:
        start = time.monotonic()
        with pytest.raises(Unavailable) as info:
            await s.client.ask("x", budget_ms=5000)
        assert time.monotonic() - start < 1.0
        assert "no responders" in info.value.message


@pytest.mark.anyio
async def test_client_retries_the_same_ask_until_a_router_appears(stack):
    async with stack(TWO_FAST, names=["provider.a", "provider.b"]) as s:
        rpc = s.client.rpc
        real_call = rpc.call
        replies: list = []
        saw_no_responders = anyio.Event()

        async def counting_call(*args, **kw):
            reply = await real_call(*args, **kw)
            replies.append(reply)
            if isinstance(reply, m.Failure) and reply.kind == m.UNAVAILABLE:
                saw_no_responders.set()
            return reply

        rpc.call = counting_call  # observe each attempt; the real call does the work
        got: dict = {}

        async def ask():
            got["answer"] = await s.client.ask("late router", budget_ms=8000, retries=20, ask_id="retry-1")

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            await saw_no_responders.wait()
            await s.add("router")

        assert isinstance(got["answer"], m.Answer)
        assert got["answer"].id == "retry-1"
        assert isinstance(replies[0], m.Failure) and replies[0].kind == m.UNAVAILABLE
        assert isinstance(replies[-1], m.Answer)
        assert s.actor("router").statistics().endpoints["ask"].num_requests == 1


# --- discovery and lifecycle ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_nats_micro_discovery(stack):
    async with stack(TWO_FAST) as s:
        nc = s.client.nc
        router_name, a_name = f"{s.root}-router", f"{s.root}-provider-a"
        await assert_serving(s)

        info = json.loads((await nc.request(f"$SRV.INFO.{router_name}", b"", timeout=2)).data)
        assert info["type"] == "io.nats.micro.v1.info_response"
        assert info["name"] == router_name
        assert info["id"] == s.actor("router").id
        assert info["endpoints"] == [
            {"name": "ask", "subject": f"{s.root}.ask", "queue_group": "router", "metadata": None},
            {"name": "ask_stream", "subject": f"{s.root}.ask.stream", "queue_group": "router", "metadata": None},
            {"name": "strategy", "subject": f"{s.root}.control.strategy", "queue_group": "router", "metadata": None},
            {"name": "experiment", "subject": f"{s.root}.control.experiment", "queue_group": "router",
             "metadata": None},
        ]

        # PING reaches every actor; collect the replies of this test's actors
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish("$SRV.PING", b"", reply=inbox)
        wanted = {router_name, a_name, f"{s.root}-provider-b"}
        seen: dict[str, dict] = {}
        with anyio.fail_after(3):
            while not wanted <= set(seen):
                msg = await sub.next_msg(timeout=3)
                body = json.loads(msg.data)
                seen[body["name"]] = body
        await sub.unsubscribe()
        assert seen[router_name]["type"] == "io.nats.micro.v1.ping_response"
        assert seen[a_name]["metadata"] == {"kind": "provider", "provider": "a", "model": "a-1", "provider_kind": "mock"}

        # STATS counts requests per endpoint; by id too
        a = s.actor("provider.a")
        stats = json.loads((await nc.request(f"$SRV.STATS.{a_name}.{a.id}", b"", timeout=2)).data)
        assert stats["type"] == "io.nats.micro.v1.stats_response"
        ep, stream_ep, image_ep = stats["endpoints"]
        assert ep["subject"] == f"{s.root}.provider.a.complete"
        assert image_ep["subject"] == f"{s.root}.provider.a.image" and image_ep["num_requests"] == 0
        assert stream_ep["subject"] == f"{s.root}.provider.a.stream" and stream_ep["num_requests"] == 0
        assert ep["num_requests"] == 1 and ep["num_errors"] == 0
        # the first endpoint also carries the process's metrics snapshot (llmbus status reads it)
        calls = ep["data"].pop("metrics")["metrics"]["llmbus_provider_call_seconds"]
        assert "a" in {row[0] for row in calls}
        assert ep["data"] == {"in_flight": 0, "rejected": 0}
        with pytest.raises(LlmError):
            await s.client.ask("x", strategy="nope", budget_ms=2000)
        rstats = json.loads((await nc.request(f"$SRV.STATS.{router_name}", b"", timeout=2)).data)
        assert rstats["endpoints"][0]["num_requests"] == 2
        assert rstats["endpoints"][0]["num_errors"] == 1
        assert "bad_request" in rstats["endpoints"][0]["last_error"]


@pytest.mark.anyio
async def test_graceful_stop_answers_the_ask_in_flight(stack):
    toml = '[providers.slow]\nlatency = { dist = "fixed", ms = 300 }\n'
    async with stack(toml) as s:
        router = s.actor("router")
        got: dict = {}

        async def ask():
            got["answer"] = await s.client.ask("finish me", budget_ms=3000)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            await wait_until(lambda: router.in_flight() == 1, what="router has the ask")
            router.stop()

        assert isinstance(got["answer"], m.Answer)
        assert got["answer"].text == "[slow] finish me"
        # the router no longer serves: a new ask meets no responders
        with pytest.raises(Unavailable):
            await s.client.ask("anyone?", budget_ms=2000)


@pytest.mark.anyio
async def test_actors_reconnect_after_nats_server_restart(stack, tmp_path):
    server = NatsServer(store=tmp_path / "js").start()
    try:
        async with stack(TWO_FAST, url=server.url) as s:
            await assert_serving(s)
            port = server.port
            await anyio.to_thread.run_sync(server.kill)
            server = NatsServer(port=port, store=tmp_path / "js")
            await anyio.to_thread.run_sync(server.start)
            # the actors and the client reconnect on their own; the client retries no-responders
            answer = await s.client.ask("after restart", budget_ms=10_000, retries=50)
            assert answer.text.endswith("after restart")
    finally:
        server.stop()


# --- configuration ---------------------------------------------------------------------------------------


def test_cli_with_invalid_config_exits_2_naming_key_and_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[bus]\nroot = "x"\nbogus_key = 1\n')
    proc = subprocess.run(
        [str(LLMBUS), "ask", "hello", "--config", str(bad)],
        env=cli_env(), capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2, proc
    assert "bogus_key" in proc.stderr
    assert str(bad) in proc.stderr
    assert proc.stdout == ""
