"""The real-provider adapters end to end: bus → provider actor → official SDK → loopback wire server.

Each of OpenAI, Anthropic and Gemini runs as a provider actor on the session nats-server, its
``base_url`` aimed at a ``WireServer`` (actors/fakes/server.py) that plays the provider's
wire bodies, its key in a test environment variable. The tests drive it with ``rpc.call`` of a
``Complete`` (or ``rpc.stream``, or a client ask through the router) and check: the answer (text,
usage, model, finish_reason), structured output (the ask's own schema sent, the bare object accepted
into ``Completion.data``, an optional confidence for an open schema, one clarified retry, then
``invalid_output``), streaming with the final usage, the classification of every failure the
providers produce, that each failed call made exactly one HTTP request (no hidden SDK retries), that
a cut or truncated stream never comes back as a complete answer, that a stall ends at the deadline
with the HTTP request abandoned, and that the API key never appears in a Failure, a log line, an
event on ``<root>.events.>``, or ``llmbus test --json`` output.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
import structlog
from structlog.testing import capture_logs

from actors.fakes import anthropic as an
from actors.fakes import gemini as ge
from actors.fakes import openai as oa
from actors.fakes.server import Reply, WireServer, json_reply
from bus import codec
from bus import messages as m
from bus.deadline import deadline_in, now
from bus.errors import AuthError
from bus.rpc import new_id
from bus.subjects import Subjects
from tests.helpers import LLMBUS, cli_env, wait_until

pytestmark = pytest.mark.anyio

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}
DATA = {"city": "Oslo", "population": 709000}
OPEN_SCHEMA = {k: v for k, v in SCHEMA.items() if k != "additionalProperties"}  # extra properties allowed
LIST_SCHEMA = {"type": "array", "items": SCHEMA, "minItems": 1}  # a root that is not an object


@dataclass
class Kind:
    """How one provider kind is configured and what its wire bodies look like."""

    name: str
    model: str  # configured model
    wire_model: str  # the model the wire body reports
    path: str  # what the SDK appends to base_url for a generate call (non-streamed)
    base_suffix: str  # appended to the server URL to make base_url
    finish: str  # finish_reason of a normal answer, as the adapter reports it
    plain: Callable[..., Reply]  # (text, input, output, cached)
    structured: Callable[[Any], Reply]  # the structured answer: an object (or a raw string)
    invalid: Callable[[], Reply]  # structured output that does not validate
    stream: Callable[..., Reply]  # (pieces, input, output, cached, **reply_kw)
    cut_after: int  # a cut halfway through ``stream(["a", "b", "c", "d"])``
    truncated: Callable[[], Reply]  # a well-formed stream that stops before its end
    rate_limited: Callable[[], Reply]
    retry_after_s: float
    overloaded: Callable[[], Reply]
    unavailable: Callable[[], Reply]
    server_error: Callable[[], Reply]
    context_length: Callable[[], Reply]
    auth: Callable[[str], Reply]  # (the key, which a hostile or careless body may echo)
    content_filter: Callable[[], Reply]

    @property
    def env(self) -> str:
        return f"WIRE_TEST_{self.name.upper()}_KEY"

    @property
    def key(self) -> str:
        return f"sk-wire-SECRET-{self.name}-7f3a9c1e5d"


def _openai_truncated() -> Reply:
    r = oa.stream(["a", "b", "c"])
    r.events = r.events[:3]  # role, a, b: no finish chunk, no usage, no [DONE]; the body ends cleanly
    return r


def _anthropic_truncated() -> Reply:
    r = an.stream(["a", "b", "c"])
    r.events = r.events[:-3]  # no content_block_stop, message_delta, message_stop
    return r


def _gemini_truncated() -> Reply:
    r = ge.stream(["a", "b", "c", "d"])
    r.events = r.events[:2]  # no chunk with a finishReason
    return r


def _openai_refusal() -> Reply:
    return oa.completion("", finish_reason="content_filter")


KINDS = {
    "openai": Kind(
        name="openai",
        model="gpt-4o-mini",
        wire_model=oa.MODEL,
        path="/v1/chat/completions",
        base_suffix="/v1",
        finish="stop",
        plain=lambda text, i, o, c: oa.completion(text, prompt_tokens=i, completion_tokens=o, cached_tokens=c),
        structured=oa.structured,
        invalid=lambda: oa.structured('{"data": {"city": "Oslo"'),
        stream=lambda pieces, i, o, c, **kw: oa.stream(
            pieces, prompt_tokens=i, completion_tokens=o, cached_tokens=c, **kw
        ),
        cut_after=3,  # role, a, b
        truncated=_openai_truncated,
        rate_limited=lambda: oa.rate_limited(2.5),
        retry_after_s=2.5,
        overloaded=oa.unavailable,  # 503 "The engine is currently overloaded"
        unavailable=lambda: oa.error(503, "Service Unavailable", type="server_error"),
        server_error=oa.server_error,
        context_length=oa.context_length,
        auth=lambda key: oa.auth_error(key_shown=key),
        content_filter=_openai_refusal,
    ),
    "anthropic": Kind(
        name="anthropic",
        model="claude-haiku-4-5",
        wire_model=an.MODEL,
        path="/v1/messages",
        base_suffix="",
        finish="end_turn",
        # Anthropic's input_tokens leaves the cached ones out; llmbus counts every prompt token as
        # input (as OpenAI and Gemini do), so the wire says i - c for an expected total of i.
        plain=lambda text, i, o, c: an.message(
            text, input_tokens=i - c, output_tokens=o, cache_read_input_tokens=c
        ),
        structured=lambda data: an.tool_use(data, name="answer")
        if not isinstance(data, str)
        else an.message(data),
        invalid=lambda: an.tool_use({"city": "Oslo"}, name="answer"),  # no population
        stream=lambda pieces, i, o, c, **kw: an.stream(
            pieces, input_tokens=i - c, output_tokens=o, cache_read_input_tokens=c, **kw
        ),
        cut_after=5,  # message_start, block start, ping, a, b
        truncated=_anthropic_truncated,
        rate_limited=lambda: an.rate_limited(3),
        retry_after_s=3.0,
        overloaded=an.overloaded,  # 529
        unavailable=lambda: an.error(503, "api_error", "Service Unavailable"),
        server_error=an.server_error,
        context_length=an.prompt_too_long,
        auth=lambda key: an.error(401, "authentication_error", f"invalid x-api-key: {key}"),
        content_filter=lambda: an.message("", stop_reason="refusal"),
    ),
    "gemini": Kind(
        name="gemini",
        model="gemini-2.5-flash",
        wire_model=ge.MODEL,
        path="/v1/models/gemini-2.5-flash:generateContent",
        base_suffix="",
        finish="stop",
        plain=lambda text, i, o, c: ge.response(text, prompt_tokens=i, candidates_tokens=o, cached_tokens=c),
        structured=ge.structured,
        invalid=lambda: ge.structured("Oslo, about 709000 people"),
        stream=lambda pieces, i, o, c, **kw: ge.stream(
            pieces, prompt_tokens=i, candidates_tokens=o, cached_tokens=c, **kw
        ),
        cut_after=2,  # a, b
        truncated=_gemini_truncated,
        rate_limited=lambda: ge.rate_limited("2s"),
        retry_after_s=2.0,
        overloaded=ge.unavailable,  # 503 UNAVAILABLE "The model is overloaded"
        unavailable=lambda: ge.error(503, "UNAVAILABLE", "The service is currently unavailable."),
        server_error=ge.server_error,
        context_length=ge.context_length,
        auth=lambda key: ge.error(401, "UNAUTHENTICATED", f"Request had invalid credentials: {key}"),
        content_filter=ge.safety_stop,
    ),
}
ALL = list(KINDS)


def config_toml(kind: Kind, url: str, *, name: str = "p", extra: str = "") -> str:
    return f"""
[providers.{name}]
kind = "{kind.name}"
model = "{kind.model}"
base_url = "{url}{kind.base_suffix}"
api_key_env = "{kind.env}"
max_tokens = 64
{extra}
"""


def complete(text: str = "What is the capital of Norway?", **fields: Any) -> m.Complete:
    return m.Complete(
        id=new_id(),
        ask_id=new_id(),
        messages=[m.Message(role="system", content="Be brief."), m.Message(role="user", content=text)],
        **fields,
    )


class Events:
    """Everything published on ``<root>.events.>`` while the test runs (raw bytes kept)."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []

    async def on(self, msg) -> None:
        self.raw.append(msg.data)

    def decoded(self) -> list[Any]:
        """Every event, batches (``Outcomes``, ``Usages``) taken apart."""
        events = [json.loads(b) for b in self.raw]
        return [item for e in events for item in (e["items"] if e.get("type") in ("Outcomes", "Usages") else [e])]

    def outcomes(self) -> list[dict]:
        return [e for e in self.decoded() if e.get("type") == "Outcome"]

    def usages(self) -> list[dict]:
        return [e for e in self.decoded() if e.get("type") == "Usage"]


@dataclass
class Run:
    s: Any  # conftest Stack
    server: WireServer
    kind: Kind
    events: Events

    async def call(self, request: m.Complete | None = None, *, budget_ms: int = 3000, provider: str = "p") -> Any:
        request = request or complete()
        client = self.s.client
        return await client.rpc.call(
            client.subjects.provider_complete(provider), request, codec.complete_reply,
            deadline=deadline_in(budget_ms), ask_id=request.ask_id, call_id=request.id,
        )

    async def stream(self, request: m.Complete | None = None, *, budget_ms: int = 3000) -> list[Any]:
        request = request or complete()
        client = self.s.client
        return [
            item
            async for item in client.rpc.stream(
                client.subjects.provider_stream("p"), request,
                deadline=deadline_in(budget_ms), ask_id=request.ask_id, call_id=request.id,
            )
        ]

    async def outcome(self) -> dict:
        await wait_until(lambda: self.events.outcomes(), within_s=3.0, what="an Outcome event")
        return self.events.outcomes()[-1]


@pytest.fixture
def run(stack, monkeypatch) -> Callable:
    """``async with run(kind, names=..., toml=...) as r``: a WireServer, the provider actor ``p`` of
    that kind aimed at it (plus the router when ``names`` says so), events collected."""

    @asynccontextmanager
    async def running(kind_name: str, *, names: list[str] | None = None, toml: str | None = None,
                      server: WireServer | None = None) -> AsyncIterator[Run]:
        kind = KINDS[kind_name]
        monkeypatch.setenv(kind.env, kind.key)
        async with WireServer() if server is None else _nothing(server) as srv:
            text = toml if toml is not None else config_toml(kind, srv.url)
            async with stack(text, names=names or ["provider.p"]) as s:
                events = Events()
                sub = await s.client.nc.subscribe(s.client.subjects.events, cb=events.on)
                await s.client.nc.flush()
                try:
                    yield Run(s, srv, kind, events)
                finally:
                    await sub.unsubscribe()

    return running


@asynccontextmanager
async def _nothing(value):
    yield value


def assert_no_key(kind: Kind, *texts: Any) -> None:
    for text in texts:
        blob = text if isinstance(text, str) else repr(text)
        assert kind.key not in blob, f"the API key leaked into: {blob[:300]}"


# --- answers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL)
async def test_plain_answer(run, kind):
    async with run(kind) as r:
        r.server.push(r.kind.plain("Oslo.", 42, 3, 16))
        reply = await r.call()
        assert isinstance(reply, m.Completion), reply
        assert reply.text == "Oslo."
        assert reply.usage == m.TokenUsage(input_tokens=42, output_tokens=3, cached_tokens=16)
        assert reply.model == r.kind.wire_model
        assert reply.finish_reason == r.kind.finish
        assert reply.provider == "p" and reply.data is None
        assert len(r.server.requests) == 1
        rec = r.server.requests[0]
        assert rec.path == r.kind.path
        body = rec.json()
        assert "What is the capital of Norway?" in json.dumps(body) and "Be brief." in json.dumps(body)
        outcome = await r.outcome()
        assert outcome["ok"] is True and outcome["provider"] == "p"
        await wait_until(lambda: r.events.usages(), what="a Usage event")
        usage = r.events.usages()[-1]
        assert usage["usage"] == {"input_tokens": 42, "output_tokens": 3, "cached_tokens": 16}
        assert usage["model"] == r.kind.wire_model


def sent_schema(kind: str, body: dict) -> Any:
    """The schema a structured request carried, where each provider's API puts it."""
    if kind == "openai":
        assert body["response_format"]["type"] == "json_schema"
        return body["response_format"]["json_schema"]["schema"]
    if kind == "anthropic":
        assert body["tool_choice"] == {"type": "tool", "name": "answer"}
        return body["tools"][0]["input_schema"]
    assert body["generationConfig"]["responseMimeType"] == "application/json"
    return body["generationConfig"]["responseJsonSchema"]


@pytest.mark.parametrize("kind", ALL)
async def test_structured_answer_is_the_bare_object_of_the_asks_own_schema(run, kind):
    async with run(kind) as r:
        r.server.push(r.kind.structured(DATA))
        reply = await r.call(complete(schema=SCHEMA))
        assert isinstance(reply, m.Completion), reply
        assert reply.data == DATA and reply.confidence is None  # a closed schema: no confidence offered
        assert len(r.server.requests) == 1  # accepted at once: no retry
        body = r.server.requests[0].json()
        assert sent_schema(kind, body) == SCHEMA  # sent as it is
        if kind == "openai":
            assert body["response_format"]["json_schema"]["strict"] is True  # every property required, closed


@pytest.mark.parametrize("kind", ALL)
async def test_an_open_schema_offers_an_optional_confidence(run, kind):
    async with run(kind) as r:
        r.server.push(r.kind.structured({**DATA, "confidence": 0.8}), r.kind.structured(DATA))
        reply = await r.call(complete(schema=OPEN_SCHEMA))
        assert isinstance(reply, m.Completion), reply
        assert reply.data == DATA and reply.confidence == 0.8  # taken out of the data
        sent = sent_schema(kind, r.server.requests[0].json())
        assert sent["properties"]["confidence"]["type"] == "number"
        assert sent["required"] == ["city", "population"]  # not required
        if kind == "openai":
            assert r.server.requests[0].json()["response_format"]["json_schema"]["strict"] is False  # open: not strict
        without = await r.call(complete(schema=OPEN_SCHEMA))  # an answer without one is just as good
        assert isinstance(without, m.Completion) and without.data == DATA and without.confidence is None
        assert len(r.server.requests) == 2


@pytest.mark.parametrize("kind", ALL)
async def test_a_root_that_is_not_an_object_is_sent_wrapped_and_unwrapped(run, kind):
    async with run(kind) as r:
        r.server.push(r.kind.structured({"value": [DATA]}))
        if kind != "anthropic":  # a tool's input is always an object
            r.server.push(r.kind.structured([DATA]))  # the bare array is accepted too
        reply = await r.call(complete(schema=LIST_SCHEMA))
        assert isinstance(reply, m.Completion) and reply.data == [DATA], reply
        assert sent_schema(kind, r.server.requests[0].json()) == {
            "type": "object", "properties": {"value": LIST_SCHEMA}, "required": ["value"], "additionalProperties": False}
        if kind != "anthropic":
            bare = await r.call(complete(schema=LIST_SCHEMA))
            assert isinstance(bare, m.Completion) and bare.data == [DATA], bare
        assert len(r.server.requests) == (1 if kind == "anthropic" else 2)


@pytest.mark.parametrize("kind", ALL)
async def test_an_answer_in_the_old_wrapper_does_not_validate(run, kind):
    async with run(kind) as r:
        wrapped = {"data": DATA, "confidence": 0.8}
        r.server.push(r.kind.structured(wrapped), r.kind.structured(wrapped))
        reply = await r.call(complete(schema=SCHEMA))
        assert isinstance(reply, m.Failure) and reply.kind == m.INVALID_OUTPUT, reply
        assert "is a required property" in reply.message  # the problem is named


@pytest.mark.parametrize("kind", ALL)
async def test_structured_invalid_then_valid_is_one_clarified_retry(run, kind):
    async with run(kind) as r:
        r.server.push(r.kind.invalid(), r.kind.structured(DATA))
        reply = await r.call(complete(schema=SCHEMA))
        assert isinstance(reply, m.Completion), reply
        assert reply.data == DATA
        assert len(r.server.requests) == 2
        first, second = (json.dumps(rec.json()) for rec in r.server.requests)
        assert "did not match" not in first
        assert "did not match the required JSON schema" in second  # the problem is shown to the model
        # usage adds up over both calls (each wire body reports the builder's defaults)
        assert reply.usage.output_tokens > 0


@pytest.mark.parametrize("kind", ALL)
async def test_structured_invalid_twice_is_invalid_output(run, kind):
    async with run(kind) as r:
        r.server.push(r.kind.invalid(), r.kind.invalid())
        reply = await r.call(complete(schema=SCHEMA))
        assert isinstance(reply, m.Failure) and reply.kind == m.INVALID_OUTPUT, reply
        assert reply.provider == "p"
        assert len(r.server.requests) == 2
        assert (await r.outcome())["kind"] == m.INVALID_OUTPUT


@pytest.mark.parametrize("kind", ALL)
async def test_streamed_answer_with_final_usage(run, kind):
    async with run(kind) as r:
        r.server.push(r.kind.stream(["Os", "lo", " is", " it."], 30, 4, 8))
        items = await r.stream()
        *chunks, final = items
        assert chunks and all(isinstance(c, m.Chunk) for c in chunks), items
        assert isinstance(final, m.Completion), final
        assert "".join(c.delta for c in chunks) == final.text == "Oslo is it."
        assert [c.seq for c in chunks] == list(range(len(chunks)))
        assert final.usage == m.TokenUsage(input_tokens=30, output_tokens=4, cached_tokens=8)
        assert final.finish_reason == r.kind.finish
        assert len(r.server.requests) == 1
        body = r.server.requests[0]
        if kind == "openai":
            assert body.json()["stream"] is True
            assert body.json()["stream_options"] == {"include_usage": True}
        elif kind == "anthropic":
            assert body.json()["stream"] is True
        else:
            assert body.path.endswith(":streamGenerateContent") and body.query == "alt=sse"
        await wait_until(lambda: r.events.usages(), what="a Usage event")
        assert r.events.usages()[-1]["usage"] == {"input_tokens": 30, "output_tokens": 4, "cached_tokens": 8}


@pytest.mark.parametrize("kind", ALL)
async def test_cut_stream_is_a_failure_never_an_answer(run, kind):
    async with run(kind) as r:
        r.server.push(r.kind.stream(["a", "b", "c", "d"], 10, 4, 0, cut_after=r.kind.cut_after))
        items = await r.stream()
        assert not any(isinstance(i, m.Completion) for i in items), items
        *chunks, final = items
        assert all(isinstance(c, m.Chunk) for c in chunks)
        assert "".join(c.delta for c in chunks) in ("a b", "ab", "a")
        assert isinstance(final, m.Failure) and final.kind == m.UNAVAILABLE, final
        assert len(r.server.requests) == 1
        outcome = await r.outcome()
        assert outcome["ok"] is False and outcome["kind"] == m.UNAVAILABLE
        assert not r.events.usages()


@pytest.mark.parametrize("kind", ALL)
async def test_truncated_but_well_formed_stream_is_a_failure(run, kind):
    # the HTTP body ends cleanly (e.g. a proxy closed it properly) but the provider's own end marker
    # never came: still never a complete answer
    async with run(kind) as r:
        r.server.push(r.kind.truncated())
        items = await r.stream()
        assert not any(isinstance(i, m.Completion) for i in items), items
        assert isinstance(items[-1], m.Failure), items
        assert len(r.server.requests) == 1


@pytest.mark.parametrize("kind", ALL)
async def test_content_filter(run, kind):
    async with run(kind) as r:
        r.server.push(r.kind.content_filter())
        reply = await r.call()
        assert isinstance(reply, m.Failure) and reply.kind == m.CONTENT_FILTER, reply
        assert len(r.server.requests) == 1


async def test_gemini_blocked_prompt_is_content_filter(run):
    async with run("gemini") as r:
        r.server.push(ge.prompt_blocked("PROHIBITED_CONTENT"))
        reply = await r.call()
        assert isinstance(reply, m.Failure) and reply.kind == m.CONTENT_FILTER, reply


# --- failures: classification, one HTTP request each --------------------------------------------

SCENARIOS = {
    "429": (lambda k: k.rate_limited(), m.RATE_LIMITED),
    "overloaded": (lambda k: k.overloaded(), m.OVERLOADED),
    "503": (lambda k: k.unavailable(), m.UNAVAILABLE),
    "500": (lambda k: k.server_error(), m.UNAVAILABLE),
    "400-context": (lambda k: k.context_length(), m.CONTEXT_LENGTH),
    "401": (lambda k: k.auth(k.key), m.AUTH),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("kind", ALL)
async def test_failure_is_classified_after_exactly_one_request(run, kind, scenario):
    build, expected = SCENARIOS[scenario]
    async with run(kind) as r:
        r.server.push(build(r.kind))
        reply = await r.call()
        assert isinstance(reply, m.Failure), reply
        assert reply.kind == expected, reply
        assert reply.provider == "p"
        assert len(r.server.requests) == 1  # no hidden SDK retries
        if expected == m.RATE_LIMITED:
            assert reply.retry_after_s == pytest.approx(r.kind.retry_after_s)
            assert reply.retryable is True
        else:
            assert reply.retry_after_s is None
        outcome = await r.outcome()
        assert outcome["ok"] is False and outcome["kind"] == expected
        if expected == m.RATE_LIMITED:
            assert outcome["retry_after_s"] == pytest.approx(r.kind.retry_after_s)
        assert outcome["detail"] == reply.message[:300]  # what health shows (a misconfigured provider's why)
        assert_no_key(r.kind, reply, *r.events.raw)


async def test_gemini_invalid_api_key_400_is_auth(run):
    # the Gemini API answers a bad key with 400 INVALID_ARGUMENT + ErrorInfo reason API_KEY_INVALID
    async with run("gemini") as r:
        r.server.push(ge.invalid_key())
        reply = await r.call()
        assert isinstance(reply, m.Failure) and reply.kind == m.AUTH, reply
        assert len(r.server.requests) == 1


@pytest.mark.parametrize("kind", ALL)
async def test_stall_past_the_deadline_times_out_and_abandons_the_request(run, kind):
    async with run(kind) as r:
        r.server.push(Reply(stall=True))
        started = now()
        reply = await r.call(budget_ms=600)
        took = now() - started
        assert isinstance(reply, m.Failure) and reply.kind == m.TIMEOUT, reply
        assert took < 1.2, took
        assert len(r.server.requests) == 1
        await wait_until(lambda: r.server.client_gone == 1, within_s=2.0, what="the HTTP request abandoned")
        assert (await r.outcome())["kind"] == m.TIMEOUT


@pytest.mark.parametrize("kind", ALL)
async def test_stall_mid_stream_past_the_deadline(run, kind):
    async with run(kind) as r:
        r.server.push(r.kind.stream(["a", "b", "c", "d"], 10, 4, 0, stall_after=r.kind.cut_after))
        started = now()
        items = await r.stream(budget_ms=600)
        assert now() - started < 1.2
        assert not any(isinstance(i, m.Completion) for i in items), items
        assert isinstance(items[-1], m.Failure) and items[-1].kind == m.TIMEOUT, items
        await wait_until(lambda: r.server.client_gone == 1, within_s=2.0, what="the HTTP stream abandoned")


@pytest.mark.parametrize("kind", ALL)
async def test_connection_refused_is_unavailable_at_once(run, kind):
    async with WireServer() as closed:
        url = closed.url  # nothing listens there any more
    async with run(kind, toml=config_toml(KINDS[kind], url)) as r:
        started = now()
        reply = await r.call(budget_ms=5000)
        assert isinstance(reply, m.Failure) and reply.kind == m.UNAVAILABLE, reply
        assert now() - started < 2.0  # no implicit retry with a sleep


# --- through the router ---------------------------------------------------------------------------


async def test_router_ask_answers_through_a_real_adapter(run):
    async with WireServer() as server:
        toml = '[router]\nstrategy = "single"\nproviders = ["p"]\n' + config_toml(KINDS["openai"], server.url)
        async with run("openai", names=["router", "provider.p"], toml=toml, server=server) as r:
            server.push(oa.completion("Oslo.", prompt_tokens=20, completion_tokens=2))
            answer = await r.s.client.ask("capital of Norway?", budget_ms=3000)
            assert answer.text == "Oslo." and answer.providers == ["p"]
            assert answer.usage.input_tokens == 20 and answer.usage.output_tokens == 2
            assert [(st.provider, st.outcome) for st in answer.route] == [("p", "ok")]


async def test_router_fails_over_from_an_overloaded_provider(run, monkeypatch):
    async with WireServer() as server:
        toml = (
            '[router]\nstrategy = "failover"\nproviders = ["claude", "gpt"]\n'
            + config_toml(KINDS["anthropic"], server.url, name="claude")
            + config_toml(KINDS["openai"], server.url, name="gpt")
        )
        monkeypatch.setenv(KINDS["anthropic"].env, KINDS["anthropic"].key)
        async with run("openai", names=["router", "provider.claude", "provider.gpt"], toml=toml, server=server) as r:
            server.push(an.overloaded(), oa.completion("from gpt"))
            answer = await r.s.client.ask("hi", budget_ms=5000)
            assert answer.text == "from gpt"
            assert [(st.provider, st.outcome) for st in answer.route] == [("claude", "overloaded"), ("gpt", "ok")]
            assert [rec.path for rec in server.requests] == ["/v1/messages", "/v1/chat/completions"]

            server.push(an.auth_error())  # auth is not a failover kind: the ask ends there
            with pytest.raises(AuthError) as info:
                await r.s.client.ask("hi", budget_ms=5000)
            assert info.value.provider == "claude"
            assert len(server.requests) == 3  # gpt was not tried


# --- the key never leaks ------------------------------------------------------------------------


@pytest.fixture
def logs():
    """structlog events at every level, captured (and restored after)."""
    old = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
                        cache_logger_on_first_use=False)
    try:
        with capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**old)


@pytest.mark.parametrize("kind", ALL)
async def test_key_never_appears_in_failures_logs_or_events(run, kind, logs, caplog, capfd):
    caplog.set_level(logging.DEBUG)  # the SDKs' and httpx's own loggers too
    async with run(kind) as r:
        k = r.kind
        r.server.push(
            k.auth(k.key),
            json_reply(400, {"error": {"message": f"bad request from key {k.key}", "type": "invalid_request_error",
                                          "code": 400, "status": "INVALID_ARGUMENT"}}),
            k.rate_limited(),
            k.stream(["a", "b", "c", "d"], 1, 1, 0, cut_after=k.cut_after),
            k.plain("fine", 1, 1, 0),
        )
        replies = [await r.call(), await r.call(), await r.call(), (await r.stream())[-1], await r.call()]
        assert [getattr(x, "kind", "ok") for x in replies] == [m.AUTH, m.BAD_REQUEST, m.RATE_LIMITED, m.UNAVAILABLE, "ok"]
        await wait_until(lambda: len(r.events.outcomes()) == 5, what="five Outcome events")
        # the key did reach the wire (so the check below is not vacuous) ...
        assert any(k.key in json.dumps(rec.headers) for rec in r.server.requests)
        # ... and nowhere else
        out, err_ = capfd.readouterr()
        assert_no_key(k, *replies, *r.events.raw, *logs, caplog.text, out, err_)
        assert_no_key(k, *(codec.encode(x).decode() for x in replies))


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ALL)
async def test_key_never_appears_in_llmbus_test_json(run, kind, root, nats_url, tmp_path):
    async with run(kind) as r:
        k = r.kind
        config = tmp_path / "llmbus.toml"
        config.write_text(f'[bus]\nroot = "{root}"\nnats_url = "{nats_url}"\n' + config_toml(k, r.server.url))
        r.server.push(k.auth(k.key))
        env = cli_env()
        env.pop(k.env, None)  # the CLI process does not hold the key: the actor in this process does
        done = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [str(LLMBUS), "test", "p", "--json", "--config", str(config), "--budget-ms", "5000"],
                env=env, capture_output=True, text=True, timeout=30,
            )
        )
        assert done.returncode == 1, done.stderr
        reply = json.loads(done.stdout)
        assert reply["type"] == "Failure" and reply["kind"] == m.AUTH
        assert len(r.server.requests) == 1
        assert_no_key(k, done.stdout, done.stderr)


def test_httpx_transport_errors_are_classified_by_their_bases():
    # google-genai and (while streaming) anthropic let httpx's own exceptions through unwrapped
    import httpx2

    from actors.providers.classify import classify

    request = httpx2.Request("POST", "http://127.0.0.1:9/x")
    cases = {
        httpx2.ConnectError("All connection attempts failed", request=request): m.UNAVAILABLE,
        httpx2.ReadError("connection reset", request=request): m.UNAVAILABLE,
        httpx2.RemoteProtocolError("incomplete chunked read", request=request): m.UNAVAILABLE,
        httpx2.ReadTimeout("timed out", request=request): m.TIMEOUT,
        httpx2.PoolTimeout("no connection", request=request): m.TIMEOUT,
        ConnectionResetError("reset by peer"): m.UNAVAILABLE,
    }
    for exc, kind in cases.items():
        assert classify(exc).kind == kind, exc
