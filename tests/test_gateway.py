"""The HTTP gateway (issue 18): the official ``openai`` client pointed at it (plain, streamed with
usage, structured output, tools), every error case with its status, virtual keys, the native ask
protocol, and a client that disconnects cancelling its ask on the bus."""

from __future__ import annotations

import json
import socket

import anyio
import httpx2
import msgspec
import openai
import pydantic
import pytest

from actors.fakes import openai as oa
from actors.fakes.server import WireServer
from actors.gateway import chat, errors
from actors.gateway import keys as gw_keys
from actors.gateway.actor import GatewayActor
from actors.gateway.config import GatewaySettings
from bus import codec
from bus import messages as m
from bus.errors import ConfigError
from bus.subjects import Subjects
from tests.conftest import make_settings
from tests.helpers import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

BASE = """
[router]
strategy = "failover"
providers = ["mock"]
[health]
failures_to_open = 1000
[cache]
enabled = false
[supervisor]
enabled = false
[providers.mock]
kind = "mock"
[providers.rate]
kind = "mock"
failures = { rate_limited = 1.0 }
retry_after_s = 7
[providers.rate2]
kind = "mock"
failures = { rate_limited = 1.0 }
[providers.broke]
kind = "mock"
failures = { budget_exceeded = 1.0 }
[providers.down]
kind = "mock"
failures = { no_healthy_provider = 1.0 }
[providers.stall]
kind = "mock"
failures = { stall = 1.0 }
[gateway]
listen = "127.0.0.1:0"
max_body_bytes = 4096
models = { fast = "llmbus/single", m = "mock" }
"""
NAMES = ["router", "health", "cost", "provider.mock", "provider.rate", "provider.rate2", "provider.broke", "provider.down",
         "provider.stall", "gateway"]
HELLO = [{"role": "user", "content": "hello gateway"}]


def gateway_of(s) -> GatewayActor:
    return next(a for a in [*s.actors, *s.extra] if isinstance(a, GatewayActor))


def openai_client(gw: GatewayActor, key: str = "none") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=20)


async def test_plain_chat_and_models(stack):
    async with stack(BASE, names=NAMES) as s:
        gw = gateway_of(s)
        async with openai_client(gw) as client:
            reply = await client.chat.completions.create(model="llmbus", messages=HELLO, temperature=0.2, max_tokens=50,
                                                         user="Carol Doe <carol@example.com>")  # free text: fine
            assert reply.object == "chat.completion"
            assert reply.choices[0].message.content == "[mock] hello gateway"
            assert reply.choices[0].finish_reason == "stop"
            assert reply.usage.prompt_tokens > 0 and reply.usage.total_tokens >= reply.usage.prompt_tokens
            ext = reply.model_extra["llmbus"]
            assert ext["strategy"] == "failover" and ext["providers"] == ["mock"]
            assert ext["route"][0]["provider"] == "mock" and ext["stage"] == "final" and ext["ask_id"]
            # an alias and a provider name route too
            for model in ("m", "mock", "fast", "llmbus/single"):
                got = await client.chat.completions.create(model=model, messages=HELLO)
                assert got.model_extra["llmbus"]["providers"] == ["mock"], model
            listed = {x.id for x in (await client.models.list()).data}
        assert {"llmbus", "llmbus/consensus", "mock", "rate", "fast", "m"} <= listed
        async with httpx2.AsyncClient(base_url=gw.url) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            assert (await http.get("/readyz")).json() == {"status": "ready"}


async def test_stream_with_usage_ends_with_done(stack):
    async with stack(BASE, names=NAMES) as s:
        gw = gateway_of(s)
        async with openai_client(gw) as client:
            stream = await client.chat.completions.create(model="mock", messages=HELLO, stream=True,
                                                          stream_options={"include_usage": True})
            chunks = [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "[mock] hello gateway"
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # really streamed
        finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish[-1].choices[0].finish_reason == "stop" and finish[-1].model_extra["llmbus"]["providers"] == ["mock"]
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
        # on the wire: SSE events, the last one [DONE]
        async with httpx2.AsyncClient(base_url=gw.url) as http:
            body = {"model": "mock", "messages": HELLO, "stream": True}
            async with http.stream("POST", "/v1/chat/completions", json=body) as resp:
                assert resp.headers["content-type"].startswith("text/event-stream")
                raw = b"".join([part async for part in resp.aiter_bytes()])
        events = [e for e in raw.split(b"\n\n") if e]
        assert events[-1] == b"data: [DONE]" and all(e.startswith(b"data: ") for e in events)


async def test_structured_output(stack):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
              "required": ["city", "days"], "additionalProperties": False}
    async with stack(BASE, names=NAMES) as s:
        async with openai_client(gateway_of(s)) as client:
            reply = await client.chat.completions.create(
                model="mock", messages=HELLO,
                response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": schema, "strict": True}})
            data = json.loads(reply.choices[0].message.content)
            assert set(data) == {"city", "days"} and isinstance(data["days"], int)
            assert reply.model_extra["llmbus"]["data"] == data
            stream = await client.chat.completions.create(
                model="mock", messages=HELLO, stream=True,
                response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": schema}})
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert json.loads(text) == data  # a structured stream sends the validated data once

            class Trip(pydantic.BaseModel):
                city: str
                days: int

            parsed = await client.chat.completions.parse(model="mock", messages=HELLO, response_format=Trip)
            trip = parsed.choices[0].message.parsed  # the SDK's own helper: a pydantic model in, one out
            assert isinstance(trip, Trip) and trip.city and isinstance(trip.days, int)


async def test_tools_and_tool_choice_pass_through(stack, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    weather = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
    async with WireServer() as server:
        toml = BASE.replace('providers = ["mock"]', 'providers = ["oa"]') + \
            f'[providers.oa]\nkind = "openai"\nmodel = "gpt-test"\nbase_url = "{server.url}/v1"\n'
        async with stack(toml, names=["router", "health", "cost", "provider.oa", "gateway"]) as s:
            server.push(oa.tool_calls([("get_weather", {"city": "Oslo"})]))
            async with openai_client(gateway_of(s)) as client:
                reply = await client.chat.completions.create(
                    model="oa", messages=[{"role": "user", "content": "weather in Oslo?"}], tools=[weather],
                    tool_choice={"type": "function", "function": {"name": "get_weather"}},
                    temperature=0.3, top_p=0.9, max_tokens=77, stop=["END"])
            [call] = reply.choices[0].message.tool_calls
            assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
            assert reply.choices[0].finish_reason == "tool_calls"
            [request] = server.requests
            sent = json.loads(request.body)
            assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]
            assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
            assert (sent["temperature"], sent["top_p"], sent["max_completion_tokens"], sent["stop"]) == \
                (0.3, 0.9, 77, ["END"])  # the sampling parameters reach the provider's wire request


async def test_error_statuses(stack):
    async with stack(BASE, names=NAMES) as s:
        gw = gateway_of(s)
        async with openai_client(gw) as client:
            async def status_of(**kw) -> openai.APIStatusError:
                with pytest.raises(openai.APIStatusError) as got:
                    await client.chat.completions.create(**{"model": "mock", "messages": HELLO, **kw})
                return got.value

            e = await status_of(model="rate")
            assert e.status_code == 429 and e.response.headers["retry-after"] == "7" and e.code == m.RATE_LIMITED
            e = await status_of(model="broke")
            assert e.status_code == 402 and e.response.headers["x-should-retry"] == "false"
            e = await status_of(model="broke", stream=True)  # a failure before any text: the same status
            assert e.status_code == 402
            router = s.actor("router")  # a rate limit opens the breaker at once: once the router sees it …
            await wait_until(lambda: getattr(router.breakers.states.get("rate"), "state", "") == "open",
                             what="the router sees rate's breaker open")
            e = await status_of(model="rate")  # … no provider is left: 503
            assert e.status_code == 503 and e.code == m.NO_HEALTHY_PROVIDER
        async with httpx2.AsyncClient(base_url=gw.url, timeout=20) as http:  # every route rate-limited: a 429 too
            r = await http.post("/v1/asks?wait=true", json={"messages": HELLO, "providers": ["rate2", "rate"],
                                                            "strategy": "failover", "budget_ms": 1000})
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert r.json()["llmbus"]["kind"] in (m.RATE_LIMITED, m.ALL_FAILED)
        async with openai_client(gw) as client:
            assert (await status_of(model="down")).status_code == 503
            e = await status_of(model="stall", extra_body={"llmbus": {"budget_ms": 300}})
            assert e.status_code == 504 and e.code == m.TIMEOUT
            e = await status_of(model="nope")
            assert e.status_code == 404 and e.code == "model_not_found"
            assert (await status_of(messages=[])).status_code == 400
            e = await status_of(messages=[{"role": "wizard", "content": "x"}])
            assert e.status_code == 400 and e.body["param"] == "messages[0].role"
            assert (await status_of(messages=[{"role": "user", "content": "x" * 5000}])).status_code == 413
        async with httpx2.AsyncClient(base_url=gw.url) as http:
            r = await http.post("/v1/chat/completions", content=b"{not json")
            assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
            r = await http.post("/v1/chat/completions", json={"model": "mock", "messages": "hi"})
            assert r.status_code == 400 and "$.messages" in r.json()["error"]["message"]
            assert (await http.get("/v1/nothing")).status_code == 404
            assert (await http.get("/v1/chat/completions")).status_code == 405


async def test_keys_users_revocation_and_rate(stack, monkeypatch):
    monkeypatch.setenv("GW_TEST_KEY", "llmb-from-config")
    toml = BASE + '[[gateway.keys]]\nuser = "cfg"\ntier = "pro"\nkey_env = "GW_TEST_KEY"\nrpm = 2\n'
    async with stack(toml, names=NAMES) as s:
        gw = gateway_of(s)
        key, record = await gw_keys.create(s.client.nc, s.client.subjects, user="alice", tier="free")
        await wait_until(lambda: any(k.user == "alice" for k in gw.keys.stored.values()), what="the key mirrored")
        asks: list[m.Ask] = []

        async def on_ask(msg) -> None:
            asks.append(codec.decoder(m.Ask).decode(msg.data))

        sub = await s.client.nc.subscribe(s.client.subjects.ask, cb=on_ask)
        await s.client.nc.flush()
        async with openai_client(gw, key) as client:
            reply = await client.chat.completions.create(model="mock", messages=HELLO, user="end-user-7",
                                                         extra_body={"llmbus": {"tier": "premium"}})
            assert reply.choices[0].message.content == "[mock] hello gateway"
        await sub.unsubscribe()
        [ask] = asks  # the key says who asks (its tier wins); the request's own user is kept as a label
        assert (ask.user, ask.tier, ask.labels.get("end_user")) == ("alice", "free", "end-user-7")
        for bad in ("none", "llmb-unknown"):
            async with openai_client(gw, bad) as client:
                with pytest.raises(openai.AuthenticationError):
                    await client.chat.completions.create(model="mock", messages=HELLO)
        async with httpx2.AsyncClient(base_url=gw.url) as http:
            assert (await http.get("/v1/models")).status_code == 401  # no key at all
            assert (await http.get("/healthz")).status_code == 200  # health checks need none
        assert await gw_keys.revoke(s.client.nc, s.client.subjects, record.id) is not None
        await wait_until(lambda: all(k.revoked for k in gw.keys.stored.values()), what="the revocation mirrored")
        async with openai_client(gw, key) as client:
            with pytest.raises(openai.PermissionDeniedError):
                await client.chat.completions.create(model="mock", messages=HELLO)
        async with openai_client(gw, "llmb-from-config") as client:  # rpm = 2: the third is refused
            for _ in range(2):
                await client.models.list()
            with pytest.raises(openai.RateLimitError) as got:
                await client.models.list()
            assert int(got.value.response.headers["retry-after"]) >= 1


def test_keys_off_loopback_never_open_up():
    ring = gw_keys.KeyRing.__new__(gw_keys.KeyRing)
    ring.settings, ring.configured, ring._limits, ring.clock = GatewaySettings(), {}, {}, lambda: 0.0
    ring.stored = {"d": m.VirtualKey(id="d", user="u", revoked=True)}  # the last key was revoked
    ring.open_without_keys = True  # on loopback: open again
    assert ring.check(None) is gw_keys.ANONYMOUS
    ring.open_without_keys = False  # elsewhere: closed to everyone
    with pytest.raises(gw_keys.Refused) as got:
        ring.check(None)
    assert got.value.status == 401


async def test_no_keys_means_loopback_only(nats_url, root):
    settings = make_settings(BASE.replace('listen = "127.0.0.1:0"', 'listen = "0.0.0.0:0"'), root)
    actor = GatewayActor(settings=settings, subjects=Subjects(root))
    with pytest.raises(BaseException) as got:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                await tg.start(actor.run, nats_url)
    error = got.value
    while isinstance(error, BaseExceptionGroup):
        [error] = error.exceptions
    assert isinstance(error, ConfigError) and "refuses to listen on 0.0.0.0 without API keys" in str(error)


async def test_native_asks_and_events(stack):
    async with stack(BASE, names=NAMES) as s:
        gw = gateway_of(s)
        async with httpx2.AsyncClient(base_url=gw.url, timeout=20) as http:
            r = await http.post("/v1/asks", json={"messages": [{"role": "user", "content": "native hello"}],
                                                  "providers": ["mock"]})
            assert r.status_code == 202
            ask_id = r.json()["id"]
            async with http.stream("GET", r.json()["events"]) as resp:
                raw = b"".join([part async for part in resp.aiter_bytes()])
            events = [e.split(b"\n") for e in raw.split(b"\n\n") if e]
            kinds = [e[0].removeprefix(b"event: ").decode() for e in events]
            assert kinds[-1] == "answer" and set(kinds[:-1]) == {"chunk"}
            answer = codec.decoder(m.Answer).decode(events[-1][1].removeprefix(b"data: "))
            assert answer.id == ask_id and answer.text == "[mock] native hello"
            r = await http.post("/v1/asks?wait=true", json={"id": "native-2", "messages": [{"role": "user", "content": "x"}]})
            assert r.status_code == 200 and r.json()["type"] == "Answer" and r.json()["id"] == "native-2"
            assert (await http.post("/v1/asks", json={"messages": 3})).status_code == 400
            assert (await http.get("/v1/asks/unknown/events")).status_code == 404
            # DELETE cancels a running ask: its events end with a cancelled Failure, the provider stops
            stall = s.actor("provider.stall")
            r = await http.post("/v1/asks", json={"id": "to-cancel", "messages": HELLO, "providers": ["stall"],
                                                  "strategy": "single"})
            await wait_until(lambda: stall.in_flight() > 0, within_s=10, what="the ask reached the provider")
            assert (await http.delete("/v1/asks/to-cancel")).json() == {"id": "to-cancel", "cancelled": True}
            async with http.stream("GET", "/v1/asks/to-cancel/events") as resp:
                raw = b"".join([part async for part in resp.aiter_bytes()])
            last = json.loads(raw.strip().split(b"\n\n")[-1].split(b"data: ", 1)[1])
            assert last["type"] == "Failure" and last["kind"] == m.CANCELLED
            await wait_until(lambda: stall.in_flight() == 0, within_s=10, what="the provider's call cancelled")


async def _disconnect_cancels(s, body: dict) -> None:
    gw = gateway_of(s)
    stall = s.actor("provider.stall")
    cancels: list[m.Cancel] = []

    async def on_cancel(msg) -> None:
        cancels.append(codec.cancel.decode(msg.data))

    sub = await s.client.nc.subscribe(s.client.subjects.cancel, cb=on_cancel)
    await s.client.nc.flush()
    payload = msgspec.json.encode(body)
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
               f"idempotency-key: gone-1\r\ncontent-length: {len(payload)}\r\n\r\n").encode() + payload
    with socket.create_connection((gw.host, gw.port)) as conn:
        conn.sendall(request)
        await wait_until(lambda: stall.in_flight() > 0, within_s=10, what="the ask reached the provider")
    # the connection is closed: the gateway cancels the ask, and the provider's work stops
    await wait_until(lambda: any(c.ask_id == "gone-1" for c in cancels), within_s=10, what="a Cancel on the bus")
    await wait_until(lambda: stall.in_flight() == 0, within_s=10, what="the stalled call cancelled")
    await sub.unsubscribe()


@pytest.mark.parametrize("stream", [False, True])
async def test_client_disconnect_cancels_the_ask(stack, stream):
    async with stack(BASE, names=NAMES) as s:
        await _disconnect_cancels(s, {"model": "stall", "messages": HELLO, "stream": stream,
                                      "llmbus": {"budget_ms": 30_000}})


def _text_of(bodies: list[dict]) -> str:
    return "".join(b["choices"][0]["delta"].get("content", "") for b in bodies if b.get("choices"))


@pytest.mark.parametrize("buffer", [False, True])
def test_chunk_writer_stages_resets_and_the_end(buffer):
    w = chat.ChunkWriter("a1", "llmbus", structured=False, buffer=buffer, include_usage=True)
    seen = [w.start()]
    for c in (m.Chunk(id="a1", seq=1, delta="Hel"), m.Chunk(id="a1", seq=2, worker="b", state="running"),
              m.Chunk(id="a1", seq=3, delta="lo wo"), m.Chunk(id="a1", seq=4, delta="Hi ", reset=True),
              m.Chunk(id="a1", seq=5, delta="draft text", stage="draft"), m.Chunk(id="a1", seq=6, delta="there")):
        out = w.chunk(c)
        if out is not None:
            seen.append(out)
    answer = m.Answer(id="a1", text="Hi there!", providers=["p"], usage=m.TokenUsage(input_tokens=3, output_tokens=2))
    seen += w.end(answer)
    assert [b["llmbus"] for b in seen if b.get("llmbus", {}).get("reset")] == [{"reset": True}]
    [stage] = [b["llmbus"] for b in seen if "stage" in b.get("llmbus", {}) and "text" in b["llmbus"]]
    assert stage == {"stage": "draft", "text": "draft text"}  # a stage is never content
    reset_at = next(i for i, b in enumerate(seen) if b.get("llmbus", {}).get("reset"))
    assert _text_of(seen[reset_at:]) == "Hi there!"  # after the reset: the final text exactly
    assert _text_of(seen) == ("Hi there!" if buffer else "Hello woHi there!")  # buffered: the text once
    assert seen[-2]["choices"][0]["finish_reason"] == "stop" and seen[-2]["llmbus"]["ask_id"] == "a1"
    assert seen[-1]["choices"] == [] and seen[-1]["usage"]["total_tokens"] == 5


async def test_dashboard_follows_the_key_rules(stack):
    toml = BASE + '[[gateway.keys]]\nuser = "ops"\nsha256 = "%s"\n' % gw_keys.digest("llmb-dash")
    async with stack(toml, names=NAMES) as s:
        gw = gateway_of(s)
        if gw.dashboard is None:
            pytest.skip("actors/gateway/dashboard.py is not there")
        async with httpx2.AsyncClient(base_url=gw.url, timeout=10) as http:
            assert (await http.get("/")).status_code == 401
            assert (await http.get("/?key=llmb-nope")).status_code == 401
            assert (await http.get("/?key=llmb-dash")).status_code == 200
            r = await http.get("/dashboard/state", headers={"authorization": "Bearer llmb-dash"})
            assert r.status_code == 200 and "mock" in r.text


@pytest.mark.e2e
async def test_llmbus_up_http_serves_the_openai_client(tmp_path, root):
    from tests.helpers import cli_env, cli_process, free_port, LLMBUS

    port, http_port = free_port(), free_port()
    config = tmp_path / "up.toml"
    config.write_text(f'[bus]\nroot = "{root}"\nport = {port}\nstore_dir = "{tmp_path / "store"}"\n'
                      f'[cache]\nenabled = false\n[providers.mock]\nkind = "mock"\n')
    env = cli_env(LLMBUS_DATA_DIR=str(tmp_path / "data"))
    async with cli_process("up", "--config", str(config), "--http", f":{http_port}", env=env) as up:
        line = await up.wait_for("http:", within_s=30)
        assert f"http://127.0.0.1:{http_port}/v1" in line
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="anything", max_retries=0)
        reply = await anyio.to_thread.run_sync(lambda: client.chat.completions.create(model="llmbus", messages=HELLO))
        assert reply.choices[0].message.content == "[mock] hello gateway"
        made = await anyio.run_process([str(LLMBUS), "keys", "create", "--user", "u1", "--tier", "pro", "--json",
                                        "--budget", "2.5", "--nats-url", f"nats://127.0.0.1:{port}",
                                        "--config", str(config)], env=env)
        key = json.loads(made.stdout)["key"]
        await wait_until_async(lambda: _status(http_port, "anything") == 401, what="keys required once one exists")
        assert await anyio.to_thread.run_sync(_status, http_port, key) == 200
        listed = await anyio.run_process([str(LLMBUS), "keys", "list", "--json", "--nats-url",
                                          f"nats://127.0.0.1:{port}", "--config", str(config)], env=env)
        assert [k["user"] for k in json.loads(listed.stdout)["keys"]] == ["u1"] and key not in listed.stdout.decode()
        budgets = await anyio.run_process([str(LLMBUS), "budget", "show", "--json", "--nats-url",
                                           f"nats://127.0.0.1:{port}", "--config", str(config)], env=env)
        assert [(b["scope"], b["name"], b["period"], b["limit_usd"]) for b in json.loads(budgets.stdout)["budgets"]] \
            == [("user", "u1", "day", 2.5)]  # --budget: the key's user has a daily budget


def _status(port: int, key: str) -> int:
    return httpx2.get(f"http://127.0.0.1:{port}/v1/models", headers={"authorization": f"Bearer {key}"}).status_code


async def wait_until_async(check, *, what: str, within_s: float = 10.0) -> None:
    with anyio.move_on_after(within_s):
        while not await anyio.to_thread.run_sync(check):
            await anyio.sleep(0.05)
        return
    raise AssertionError(f"not within {within_s}s: {what}")


async def test_stages_as_they_happen(stack):
    """``review``: the native events carry draft → enhanced → final as they come; the OpenAI stream
    carries them in ``llmbus`` (never as content) and the final text once."""
    toml = BASE.replace("[supervisor]\nenabled = false\n", "").replace('providers = ["mock"]', 'providers = ["mock", "m2"]') \
        + '[providers.m2]\nkind = "mock"\n'
    async with stack(toml, names=[*NAMES, "supervisor", "provider.m2"]) as s:
        gw = gateway_of(s)
        async with httpx2.AsyncClient(base_url=gw.url, timeout=20) as http:
            r = await http.post("/v1/asks", json={"messages": HELLO, "strategy": "review"})
            async with http.stream("GET", r.json()["events"]) as resp:
                raw = b"".join([part async for part in resp.aiter_bytes()])
        datas = [json.loads(e.split(b"\ndata: ", 1)[1]) for e in raw.split(b"\n\n") if e]
        assert [d["stage"] for d in datas if d["type"] == "Chunk" and d.get("stage")] == ["draft", "enhanced", "final"]
        assert datas[-1]["type"] == "Answer"
        async with openai_client(gw) as client:
            stream = await client.chat.completions.create(model="llmbus/review", messages=HELLO, stream=True)
            chunks = [c async for c in stream]
        stages = [c.model_extra["llmbus"]["stage"] for c in chunks if "text" in (c.model_extra.get("llmbus") or {})]
        assert stages == ["draft", "enhanced", "final"]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == datas[-1]["text"]


@pytest.mark.parametrize("choice, anthropic", [
    ("auto", {"type": "auto"}), ("none", {"type": "none"}), ("required", {"type": "any"}),
    ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}), (None, None), ("odd", None)])
def test_tool_choice_for_anthropic(choice, anthropic):
    from actors.providers.anthropic import tool_choice

    assert tool_choice(choice) == anthropic


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
async def test_tool_choice_reaches_anthropic_and_gemini(stack, monkeypatch, kind):
    from actors.fakes import anthropic as an, gemini as ge
    from tests.test_providers import KINDS, config_toml

    k = KINDS[kind]
    monkeypatch.setenv(k.env, k.key)
    replies = {"anthropic": lambda: an.tool_use({"city": "Oslo"}, name="get_weather"),
               "gemini": lambda: ge.function_calls([("get_weather", {"city": "Oslo"})])}
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    async with WireServer() as server:
        toml = BASE.replace('providers = ["mock"]', 'providers = ["p"]') + config_toml(k, server.url)
        async with stack(toml, names=["router", "health", "cost", "provider.p", "gateway"]) as s:
            server.push(replies[kind]())
            async with openai_client(gateway_of(s)) as client:
                reply = await client.chat.completions.create(
                    model="p", messages=[{"role": "user", "content": "weather in Oslo?"}], tools=[weather],
                    tool_choice={"type": "function", "function": {"name": "get_weather"}})
            assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"
            sent = json.loads(server.requests[0].body)
            if kind == "anthropic":
                assert sent["tool_choice"] == {"type": "tool", "name": "get_weather"}
            else:
                assert sent["toolConfig"]["functionCallingConfig"] == {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}


def test_all_failed_by_rate_limits_is_429():
    steps = [m.Step(provider="a", outcome=m.RATE_LIMITED, ms=1.0), m.Step(provider="b", outcome="breaker_open", ms=0.0)]
    assert errors.kind_of(m.Failure(kind=m.ALL_FAILED, message="x", route=steps)) == m.RATE_LIMITED
    mixed = [*steps, m.Step(provider="c", outcome=m.TIMEOUT, ms=5.0)]
    assert errors.kind_of(m.Failure(kind=m.ALL_FAILED, message="x", route=mixed)) == m.ALL_FAILED
    r = errors.failure_response(m.Failure(kind=m.ALL_FAILED, message="x", route=steps))
    assert r.status_code == 429 and r.headers["retry-after"] == "1" and r.headers["x-should-retry"] == "true"
