"""No input silences or kills an actor, no connection goes deaf, no ask is lost or run twice
(issue 11's CI smoke subset; the heavy scenarios are ``llmbus bench chaos``)."""

from __future__ import annotations

import time

import anyio
import msgspec
import pytest

from actors.runtime import ConnectionLost
from actors.stack import build_actor
from bus import codec
from bus import messages as m
from bus.client import Client
from bus.connection import BadUrl, ConnectAuthError, ConnectOptions, ConnectUnavailable, connect, redact
from bus.deadline import deadline_in
from bus.deadline import headers_for
from bus.rpc import ATTEMPT_HEADER, wire_size
from bus.server import NatsServer
from bus.subjects import COST_BUDGETS, HEALTH_RESET, HEALTH_STATUS
from tests.helpers import wait_until

STACK = """
[router]
providers = ["a"]

[providers.a]
latency = { dist = "fixed", ms = 1 }

[cost]
enabled = true

[[cost.budgets]]
scope = "user"
name = "alice"
period = "day"
limit_usd = 1.0
"""

SLOW = """
[router]
providers = ["slow"]

[providers.slow]
latency = { dist = "fixed", ms = 400 }
"""

HUGE_REPLY = """
[router]
providers = ["big"]

[providers.big]
answer = "canned"
canned = "%s"
""" % ("x" * 1_100_000)


def ask_bytes(ask_id: str, text: str = "hi", **fields) -> bytes:
    return codec.encode(m.Ask(id=ask_id, messages=[m.Message(role="user", content=text)], **fields))


async def raw(s, subject: str, payload: bytes, headers=None):
    reply = await s.client.nc.request(subject, payload, timeout=5, headers=headers)
    return msgspec.json.decode(reply.data)


async def assert_serving(s) -> None:
    answer = await s.client.ask("still serving?", budget_ms=5000)
    assert isinstance(answer, m.Answer)


# --- input ------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_deep_and_broken_json_get_bad_request_from_every_service(stack):
    deep = b'{"type":"Ask","id":"d","messages":[],"schema":{"a":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    async with stack(STACK) as s:
        for subject in (f"{s.root}.ask", HEALTH_STATUS.subject(s.client.subjects), f"{s.root}.cost.report",
                        f"{s.root}.provider.a.complete", f"{s.root}.cache.get"):
            for payload in (deep, b"[" * 100_000, b'{"type":"Ask","id":"\xff\xfe"}'):
                failure = await raw(s, subject, payload)
                assert failure["type"] == "Failure" and failure["kind"] == m.BAD_REQUEST, (subject, failure)
        await assert_serving(s)


@pytest.mark.anyio
async def test_an_ask_too_large_to_forward_is_bad_request_and_the_router_stays_connected(stack):
    async with stack(STACK, names=["router", "provider.a"]) as s:
        # an ask that just fits from the client (its headers counted) but not once the router adds its own
        empty = m.Ask(id="big-ask", messages=[m.Message(role="user", content="")], budget_ms=5000)
        room = s.client.nc.max_payload - wire_size(codec.encode(empty), headers_for(deadline_in(5000), "big-ask"))
        big = msgspec.structs.replace(empty, messages=[m.Message(role="user", content="x" * (room - 2))])
        reply = await s.client.send(big, deadline=deadline_in(5000))
        assert isinstance(reply, m.Failure) and reply.kind == m.BAD_REQUEST and "provider.a.complete" in reply.message, reply
        router = s.actor("router")
        assert router.nc.is_connected
        await assert_serving(s)


@pytest.mark.anyio
async def test_a_reply_too_large_becomes_a_failure_that_fits(stack):
    async with stack(HUGE_REPLY, names=["router", "provider.big"]) as s:
        with pytest.raises(Exception) as err:
            await s.client.ask("big", budget_ms=5000, providers=["big"])
        assert "max_payload" in str(err.value)
        assert s.actor("provider.big").nc.is_connected


@pytest.mark.anyio
async def test_names_are_checked_at_the_edge(stack):
    async with stack(STACK, names=["router", "provider.a", "health"]) as s:
        for _ in range(2):
            reply = await s.client.rpc.service(HEALTH_RESET, m.HealthReset(provider="p" * 5000),
                                               deadline=deadline_in(5000))
            assert isinstance(reply, m.Failure) and reply.kind == m.BAD_REQUEST
        for fields in ({"tier": "a.b"}, {"user": "x" * 500}, {"cache_namespace": "\u0000"}):
            failure = await raw(s, f"{s.root}.ask", ask_bytes("n1", **fields))
            assert failure["kind"] == m.BAD_REQUEST, fields
        failure = await raw(s, f"{s.root}.ask", ask_bytes("bad id\r\nX: y"))
        assert failure["kind"] == m.BAD_REQUEST
        status = await s.client.rpc.service(HEALTH_STATUS, m.HealthQuery(), deadline=deadline_in(5000))
        assert isinstance(status, m.HealthReport)
        await assert_serving(s)


@pytest.mark.anyio
async def test_poison_events_are_skipped_and_counted_never_obeyed(stack):
    async with stack(STACK) as s:
        health, cost = s.actor("health"), s.actor("cost")
        nc = s.client.nc
        good = m.Outcome(provider="a", ok=False, kind=m.UNAVAILABLE)
        outcomes = [
            codec.encode(m.Outcome(provider="\u0000", ok=False)),
            codec.encode(m.Outcome(provider="p" * 5000, ok=False)),
            codec.encode(m.Outcome(provider="a", ok=True, latency_ms=float("inf"))),
            codec.encode(m.Outcomes(items=[good, m.Outcome(provider="a b", ok=True)])),
            b"\x00not json", b"[" * 50_000,
        ]
        usage = dict(ask_id="k", provider="a", model="m")
        usages = [
            m.Usage(call_id="c1", usage=m.TokenUsage(input_tokens=5), at=1e300, **usage),
            m.Usage(call_id="c2", usage=m.TokenUsage(input_tokens=-1_000_000_000), user="alice", **usage),
            m.Usage(call_id="c3\u0000", usage=m.TokenUsage(input_tokens=5), **usage),
        ]
        for data in outcomes:
            await nc.publish(s.client.subjects.outcome("a"), data)
        for u in usages:
            await nc.publish(s.client.subjects.usage("a"), codec.encode(u))
        await nc.flush()
        await wait_until(lambda: health.statistics().skipped_events >= 6, within_s=10, what="health skipped 6")
        await wait_until(lambda: cost.statistics().skipped_events >= 3, within_s=10, what="cost skipped 3")
        # the good outcome in the batch was applied; the bad ones changed nothing
        status = await s.client.rpc.service(HEALTH_STATUS, m.HealthQuery(), deadline=deadline_in(5000))
        assert [p.breaker.provider for p in status.providers] == ["a"]
        assert status.providers[0].errors == {m.UNAVAILABLE: 1}
        budgets = await s.client.rpc.service(
            COST_BUDGETS, m.BudgetQuery(),
            deadline=deadline_in(5000))
        assert all(b.spent_usd >= 0 for b in budgets.budgets)
        await assert_serving(s)


# --- connections --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_connection_the_server_closes_is_reopened(stack):
    async with stack(STACK, names=["router", "provider.a"]) as s:
        router = s.actor("router")
        reconnected = router.nc.stats["reconnects"]
        # payload under max_payload, but not with the header: the server closes the connection for it
        await router.nc.publish(f"{s.root}.nowhere", b"x" * (router.nc.max_payload - 10), headers={"X": "y" * 200})
        await wait_until(lambda: router.nc.stats["reconnects"] > reconnected and router.nc.is_connected,
                         within_s=10, what="the router reconnected")
        await router.nc.flush()  # its subscriptions are re-sent on reconnect: the server has them now
        answer = await s.client.ask("still serving?", budget_ms=5000, retries=3)  # as a client does
        assert isinstance(answer, m.Answer)


@pytest.mark.anyio
async def test_connect_fails_fast_and_clearly_and_redacts_credentials():
    with NatsServer(token="s3cr3t-token") as server:
        wrong = server.url.replace("nats://", "nats://not-the-token@")
        for url, options in ((wrong, None), (server.url, None), (server.url, ConnectOptions(token="nope"))):
            t0 = time.monotonic()
            with pytest.raises(ConnectAuthError) as err:
                await connect(url, name="t", options=options)
            assert time.monotonic() - t0 < 2.0
            assert "not-the-token" not in str(err.value) and "nope" not in str(err.value)
        nc = await connect(server.url, name="t", options=ConnectOptions(token="s3cr3t-token"))
        assert nc.is_connected
        await nc.close()
        with pytest.raises(ConnectAuthError):
            async with Client(server.url, root="x"):
                pass
    with pytest.raises(BadUrl, match="scheme 'http'"):
        await connect("http://127.0.0.1:4222", name="t")
    t0 = time.monotonic()
    with pytest.raises(ConnectUnavailable) as err:
        await connect("nats://user:pa55word@127.0.0.1:1", name="t")
    assert time.monotonic() - t0 < 2.0
    assert "pa55word" not in str(err.value) and "***@127.0.0.1:1" in str(err.value)
    assert redact("nats://tok@h:4222") == "nats://***@h:4222"
    assert "s3" not in repr(ConnectOptions(token="s3", password="s3"))


# --- asks: retried, never lost, run once --------------------------------------------------------------


@pytest.mark.anyio
async def test_a_router_killed_mid_ask_costs_one_attempt_not_the_ask(stack):
    async with stack(SLOW, names=["provider.slow"]) as s:
        doomed = build_actor("router", s.settings)
        exited: list[BaseException] = []

        async def run_doomed(*, task_status):
            try:
                await doomed.run(s.url, task_status=task_status)
            except ConnectionLost as exc:  # never alive and deaf: it stops, the process would exit 1
                exited.append(exc)

        got: dict = {}
        async with anyio.create_task_group() as tg:
            await tg.start(run_doomed)

            async def ask():
                got["answer"] = await s.client.ask("survive", budget_ms=6000, retries=2, ask_id="k9")

            tg.start_soon(ask)
            await wait_until(lambda: doomed.in_flight("k9") == 1, within_s=5, what="the ask reached the router")
            await doomed.nc.close()  # its connection gone mid-ask, like a kill -9: no reply ever comes
            await s.add("router")
        assert isinstance(got["answer"], m.Answer) and got["answer"].id == "k9"
        assert exited, "the router whose connection closed stopped (ConnectionLost)"


@pytest.mark.anyio
async def test_the_same_ask_id_through_two_routers_runs_once(stack):
    async with stack(SLOW, names=["provider.slow", "router"]) as s:
        await s.add("router")
        provider = s.actor("provider.slow")
        ask = m.Ask(id="twice", messages=[m.Message(role="user", content="once")], budget_ms=5000)
        deadline = deadline_in(5000)
        results: list = []

        async def first():
            results.append(await s.client.send(ask, deadline=deadline))

        async def retry():
            await wait_until(lambda: sum(r.in_flight("twice") for r in s.actors + s.extra if r.kind == "router") == 1)
            results.append(await s.client.rpc.call(s.client.subjects.ask, ask, codec.ask_reply, deadline=deadline,
                                                   ask_id=ask.id, headers={ATTEMPT_HEADER: "2"}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            tg.start_soon(retry)
        assert [type(r) for r in results] == [m.Answer, m.Answer]
        assert results[0].text == results[1].text
        assert provider.statistics().endpoints["complete"].num_requests == 1


# --- security -----------------------------------------------------------------------------------------

PERMISSIONS = """
authorization {
  users = [
    { user: fleet, password: fleet-pw }
    { user: client, password: client-pw, permissions: {
        publish: { allow: ["ROOT.ask", "ROOT.ask.stream", "ROOT.cancel", "ROOT.stream.ack"] }
        subscribe: { allow: ["ROOT.reply.>", "_INBOX.>"] }
    } }
  ]
}
"""


@pytest.mark.anyio
async def test_a_client_user_may_ask_but_not_forge_events_or_reset_health(root, monkeypatch):
    from actors.runtime import run_actors
    from actors.stack import build_actors
    from tests.conftest import make_settings

    monkeypatch.setenv("T_FLEET_PW", "fleet-pw")
    settings = make_settings(STACK + '\n[bus.auth]\nuser = "fleet"\npassword_env = "T_FLEET_PW"\n', root)
    with NatsServer(config=PERMISSIONS.replace("ROOT", root)) as server:
        async with anyio.create_task_group() as tg:
            actors = await tg.start(run_actors, build_actors(settings, ["router", "provider.a", "health"]), server.url)
            health = next(a for a in actors if a.kind == "health")
            client_user = ConnectOptions(user="client", password="client-pw")
            async with Client(server.url, root=root, options=client_user) as client:
                answer = await client.ask("allowed", budget_ms=5000)
                assert isinstance(answer, m.Answer)
                client.stream_ack_s = 0.05  # a stream's acks are allowed too: it is not stopped for silence
                *_, streamed = [i async for i in client.stream("allowed", budget_ms=600, labels={"mock.fault": "stall_stream"})]
                assert isinstance(streamed, m.Failure) and streamed.kind == m.TIMEOUT, streamed
                await client.nc.publish(f"{root}.events.outcome.a", codec.encode(m.Outcome(provider="a", ok=False)))
                reply = await client.rpc.service(HEALTH_RESET, m.HealthReset(), deadline=deadline_in(500))
                assert isinstance(reply, m.Failure) and reply.kind == m.TIMEOUT  # the server dropped it
                assert health.statistics().endpoints["reset"].num_requests == 0
                assert client.nc.is_connected  # a permissions violation does not cut the client off
                assert isinstance(await client.ask("still allowed", budget_ms=5000), m.Answer)
            with pytest.raises(ConnectAuthError):
                async with Client(server.url, root=root, options=ConnectOptions(user="client", password="wrong")):
                    pass
            for a in actors:
                a.stop()
