"""The loopback provider server (actors/fakes/) checked through the real SDKs.

Each body builder must parse in the official SDK as what it claims to be (text, usage, stream
deltas, the SDK's exception class and status for errors); a cut stream must raise in the SDK rather
than end cleanly; with the SDK's retries off every call makes exactly one HTTP request (and the
server's request log does see a retry when one is allowed, so the "exactly one" checks are
meaningful); a stall is ended by the client's timeout. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import json

import anthropic
import httpx2
import openai
import pytest
from anthropic import AsyncAnthropic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from openai import AsyncOpenAI

from actors.fakes import anthropic as an
from actors.fakes import gemini as ge
from actors.fakes import openai as oa
from actors.fakes.auto import auto_reply, example_for_schema
from actors.fakes.server import Recorded, Reply, WireServer, json_reply
from tests.helpers import wait_until

pytestmark = pytest.mark.anyio

OPENAI_KEY = "sk-test-wire-0123456789"
ANTHROPIC_KEY = "sk-ant-test-wire-0123456789"
GEMINI_KEY = "AIza-test-wire-0123456789"
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}
MSGS = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
async def server():
    async with WireServer() as s:
        yield s


@pytest.fixture
async def oai(server):
    client = AsyncOpenAI(api_key=OPENAI_KEY, base_url=server.url + "/v1", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def claude(server):
    client = AsyncAnthropic(api_key=ANTHROPIC_KEY, base_url=server.url, max_retries=0)
    yield client
    await client.close()


def gemini_client(url: str, *, attempts: int = 1, **retry) -> genai.Client:
    return genai.Client(
        api_key=GEMINI_KEY,
        http_options=genai_types.HttpOptions(
            base_url=url, retry_options=genai_types.HttpRetryOptions(attempts=attempts, **retry)
        ),
    )


@pytest.fixture
async def gem(server):
    client = gemini_client(server.url)
    yield client
    await client.aio.aclose()


# --- the server itself ----------------------------------------------------------------------------


async def test_keep_alive_reuses_one_connection(server, oai):
    server.push(*(oa.completion(f"n{i}") for i in range(3)))
    for i in range(3):
        r = await oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
        assert r.choices[0].message.content == f"n{i}"
    assert len(server.requests) == 3
    assert server.connections_opened == 1
    assert server.pending == 0


async def test_record_false_counts_without_keeping_requests():
    async with WireServer(default=auto_reply, record=False) as server:
        client = AsyncOpenAI(api_key=OPENAI_KEY, base_url=server.url + "/v1", max_retries=0)
        for _ in range(3):
            await client.chat.completions.create(model="m", messages=MSGS)
        await client.close()
        await server.wait_for_requests(3)
        assert server.received == 3 and server.requests == []


async def test_unscripted_request_gets_404_json(server, oai):
    with pytest.raises(openai.NotFoundError) as err:
        await oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert "no scripted reply for POST /v1/chat/completions" in err.value.message
    assert len(server.requests) == 1


async def test_default_responder_and_callable_script_see_the_request():
    seen: list[Recorded] = []

    def default(rec: Recorded) -> Reply:
        seen.append(rec)
        return oa.completion("from default")

    async with WireServer(default=default) as server:
        client = AsyncOpenAI(api_key=OPENAI_KEY, base_url=server.url + "/v1", max_retries=0)
        server.push(lambda rec: oa.completion("echo " + rec.json()["messages"][0]["content"]))
        r1 = await client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
        r2 = await client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
        await client.close()
    assert r1.choices[0].message.content == "echo Say hello"
    assert r2.choices[0].message.content == "from default"
    assert len(seen) == 1 and seen[0].method == "POST"


async def test_records_method_path_query_headers_and_body(server):
    server.push(json_reply(200, {"ok": True}))
    async with httpx2.AsyncClient() as http:
        r = await http.post(server.url + "/x/y?alt=sse&k=1", json={"a": 1}, headers={"X-Thing": "v"})
    assert r.json() == {"ok": True}
    rec = server.requests[0]
    assert (rec.method, rec.path, rec.query) == ("POST", "/x/y", "alt=sse&k=1")
    assert rec.headers["x-thing"] == "v"
    assert rec.json() == {"a": 1}


async def test_chunked_request_body_and_connection_close(server):
    async def gen():
        yield b'{"a":'
        yield b" 2}"

    server.push(json_reply(200, {"ok": 1}))
    async with httpx2.AsyncClient() as http:
        r = await http.post(server.url + "/c", content=gen(), headers={"Connection": "close"})
    assert r.status_code == 200 and r.headers["connection"] == "close"
    assert server.requests[0].headers["transfer-encoding"] == "chunked"
    assert server.requests[0].json() == {"a": 2}


async def test_wait_for_requests_and_stop_while_stalled():
    import anyio

    async with WireServer() as server:
        server.push(Reply(stall=True))
        async with httpx2.AsyncClient() as http, anyio.create_task_group() as tg:

            async def call() -> None:
                with pytest.raises(httpx2.HTTPError):
                    await http.get(server.url + "/stall")

            tg.start_soon(call)
            await server.wait_for_requests(1)
            with anyio.fail_after(2):
                await server.aclose()  # a stalled request must not hold the server open


# --- OpenAI Chat Completions ----------------------------------------------------------------------


async def test_openai_plain(server, oai):
    server.push(oa.completion("Hello!", prompt_tokens=21, completion_tokens=3, cached_tokens=16))
    r = await oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert r.choices[0].message.content == "Hello!"
    assert r.choices[0].finish_reason == "stop"
    assert r.model == oa.MODEL
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (21, 3, 24)
    assert r.usage.prompt_tokens_details.cached_tokens == 16
    rec = server.requests[0]
    assert rec.path == "/v1/chat/completions"
    assert rec.headers["authorization"] == f"Bearer {OPENAI_KEY}"


async def test_openai_structured_json_schema(server, oai):
    server.push(oa.structured({"answer": "hi", "confidence": 0.9}))
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}
    r = await oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, response_format=fmt)
    assert json.loads(r.choices[0].message.content) == {"answer": "hi", "confidence": 0.9}
    assert server.requests[0].json()["response_format"] == fmt


async def test_openai_structured_invalid_json_is_sent_verbatim(server, oai):
    server.push(oa.structured('{"answer": "hi", '))
    r = await oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.choices[0].message.content)


async def test_openai_stream_with_final_usage_chunk(server, oai):
    server.push(oa.stream(["Hel", "lo", "!"], prompt_tokens=30, completion_tokens=4, cached_tokens=8))
    stream = await oai.chat.completions.create(
        model="gpt-4o-mini", messages=MSGS, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage, n = "", None, None, 0
    async for chunk in stream:
        n += 1
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        if chunk.usage is not None:
            assert chunk.choices == []  # the usage chunk has no choices
            usage = chunk.usage
    assert text == "Hello!" and finish == "stop"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens) == (30, 4, 8)
    assert n == 6  # role, 3 deltas, finish, usage ([DONE] ends the iteration)
    assert server.requests[0].json()["stream_options"] == {"include_usage": True}


async def test_openai_cut_stream_raises(server, oai):
    server.push(oa.stream(["a", "b", "c", "d"], cut_after=3))
    stream = await oai.chat.completions.create(
        model="gpt-4o-mini", messages=MSGS, stream=True, stream_options={"include_usage": True}
    )
    got = []
    with pytest.raises(openai.APIConnectionError) as err:
        async for chunk in stream:
            got.extend(c.delta.content for c in chunk.choices)
    assert isinstance(err.value.__cause__, httpx2.RemoteProtocolError)
    assert got == ["", "a", "b"]  # never the finish chunk, never the usage
    assert len(server.requests) == 1


async def test_openai_stream_without_done_after_usage_is_a_cut_too(server, oai):
    # every event sent, but the body never terminates: still an error, not a clean end
    server.push(oa.stream("x y", done=False, cut_after=10**6))
    stream = await oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True)
    with pytest.raises(openai.APIConnectionError):
        async for _ in stream:
            pass


@pytest.mark.parametrize(
    "reply, exc, status, code",
    [
        (oa.rate_limited(2.5), openai.RateLimitError, 429, "rate_limit_exceeded"),
        (oa.context_length(), openai.BadRequestError, 400, "context_length_exceeded"),
        (oa.auth_error(), openai.AuthenticationError, 401, "invalid_api_key"),
        (oa.server_error(), openai.InternalServerError, 500, None),
        (oa.unavailable(), openai.InternalServerError, 503, None),
    ],
    ids=["429", "400-context", "401", "500", "503"],
)
async def test_openai_errors_one_request_each(server, oai, reply, exc, status, code):
    server.push(reply)
    with pytest.raises(exc) as err:
        await oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert err.value.status_code == status
    assert err.value.code == code
    assert len(server.requests) == 1
    if status == 429:
        assert err.value.response.headers["retry-after"] == "2.5"
        assert err.value.response.headers["retry-after-ms"] == "2500"


async def test_openai_retry_is_visible_when_allowed(server):
    # the control for "exactly one request": with max_retries=1 the server log shows the retry
    server.push(oa.rate_limited(0.001, retry_after_ms=1), oa.completion("second"))
    client = AsyncOpenAI(api_key=OPENAI_KEY, base_url=server.url + "/v1", max_retries=1)
    r = await client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    await client.close()
    assert r.choices[0].message.content == "second"
    assert len(server.requests) == 2


async def test_openai_stall_ends_with_client_timeout(server, oai):
    server.push(Reply(stall=True))
    with pytest.raises(openai.APITimeoutError):
        await oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, timeout=0.3)
    assert len(server.requests) == 1
    await wait_until(lambda: server.client_gone == 1, what="the client hung up")


async def test_openai_stall_mid_stream_ends_with_read_timeout(server, oai):
    server.push(oa.stream(["a", "b", "c"], stall_after=2))
    stream = await oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        async for _ in stream:
            pass


# --- Anthropic Messages ---------------------------------------------------------------------------

CLAUDE = dict(model="claude-haiku-4-5", max_tokens=256, messages=MSGS)


async def test_anthropic_plain(server, claude):
    server.push(an.message("Hello!", input_tokens=40, output_tokens=3, cache_read_input_tokens=32))
    r = await claude.messages.create(**CLAUDE)
    assert r.content[0].type == "text" and r.content[0].text == "Hello!"
    assert r.stop_reason == "end_turn" and r.model == an.MODEL
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.cache_read_input_tokens) == (40, 3, 32)
    rec = server.requests[0]
    assert rec.path == "/v1/messages"
    assert rec.headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"  # this SDK sends the key as a bearer token
    assert "anthropic-version" in rec.headers


async def test_anthropic_forced_tool_use(server, claude):
    server.push(an.tool_use({"answer": "hi", "confidence": 0.7}, name="answer"))
    r = await claude.messages.create(
        **CLAUDE,
        tools=[{"name": "answer", "description": "Give the answer", "input_schema": SCHEMA}],
        tool_choice={"type": "tool", "name": "answer"},
    )
    (block,) = r.content
    assert block.type == "tool_use" and block.name == "answer"
    assert block.input == {"answer": "hi", "confidence": 0.7}
    assert r.stop_reason == "tool_use"
    assert server.requests[0].json()["tool_choice"] == {"type": "tool", "name": "answer"}


async def test_anthropic_stream_events_and_usage(server, claude):
    server.push(an.stream(["Hel", "lo", "!"], input_tokens=50, output_tokens=4))
    stream = await claude.messages.create(**CLAUDE, stream=True)
    types, text = [], ""
    async for event in stream:
        types.append(event.type)
        if event.type == "content_block_delta":
            text += event.delta.text
        if event.type == "message_start":
            assert event.message.usage.input_tokens == 50
        if event.type == "message_delta":
            assert event.usage.output_tokens == 4 and event.delta.stop_reason == "end_turn"
    assert text == "Hello!"
    assert types == [
        "message_start", "content_block_start", *["content_block_delta"] * 3,
        "content_block_stop", "message_delta", "message_stop",
    ]  # the ping is skipped by the SDK


async def test_anthropic_stream_helper_accumulates_final_message(server, claude):
    server.push(an.stream("one two three", input_tokens=11, output_tokens=5))
    async with claude.messages.stream(**CLAUDE) as stream:
        pieces = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(pieces) == "one two three" == final.content[0].text
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 5)


async def test_anthropic_tool_use_stream(server, claude):
    server.push(an.tool_use_stream({"answer": "hi", "confidence": 0.5}))
    async with claude.messages.stream(**CLAUDE) as stream:
        final = await stream.get_final_message()
    assert final.content[0].input == {"answer": "hi", "confidence": 0.5}
    assert final.stop_reason == "tool_use"


async def test_anthropic_cut_stream_raises(server, claude):
    server.push(an.stream(["a", "b", "c"], cut_after=5))  # start, block start, ping, 2 deltas
    stream = await claude.messages.create(**CLAUDE, stream=True)
    seen = []
    # note: this SDK does not wrap transport errors raised while iterating a stream
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        async for event in stream:
            seen.append(event.type)
    assert "message_stop" not in seen and "message_delta" not in seen
    assert len(server.requests) == 1


async def test_anthropic_error_event_inside_a_200_stream(server, claude):
    reply = an.stream(["a", "b"])
    reply.events.insert(4, an.stream_error_event("overloaded_error", "Overloaded"))
    server.push(reply)
    stream = await claude.messages.create(**CLAUDE, stream=True)
    with pytest.raises(anthropic.APIStatusError) as err:
        async for _ in stream:
            pass
    assert err.value.type == "overloaded_error"
    assert err.value.status_code == 200  # the HTTP status of the stream, not of the error


@pytest.mark.parametrize(
    "reply, exc, status, type_",
    [
        (an.rate_limited(3), anthropic.RateLimitError, 429, "rate_limit_error"),
        (an.overloaded(), anthropic.OverloadedError, 529, "overloaded_error"),
        (an.prompt_too_long(), anthropic.BadRequestError, 400, "invalid_request_error"),
        (an.auth_error(), anthropic.AuthenticationError, 401, "authentication_error"),
        (an.server_error(), anthropic.InternalServerError, 500, "api_error"),
    ],
    ids=["429", "529", "400-prompt-too-long", "401", "500"],
)
async def test_anthropic_errors_one_request_each(server, claude, reply, exc, status, type_):
    server.push(reply)
    with pytest.raises(exc) as err:
        await claude.messages.create(**CLAUDE)
    assert err.value.status_code == status and err.value.type == type_
    assert len(server.requests) == 1
    if status == 429:
        assert err.value.response.headers["retry-after"] == "3"
    if status == 400:
        assert err.value.api_message.startswith("prompt is too long")


async def test_anthropic_retry_is_visible_when_allowed(server):
    server.push(an.error(529, "overloaded_error", "Overloaded", headers={"retry-after-ms": "1"}),
                an.message("second"))
    client = AsyncAnthropic(api_key=ANTHROPIC_KEY, base_url=server.url, max_retries=1)
    r = await client.messages.create(**CLAUDE)
    await client.close()
    assert r.content[0].text == "second"
    assert len(server.requests) == 2


async def test_anthropic_stall_ends_with_client_timeout(server, claude):
    server.push(Reply(stall=True))
    with pytest.raises(anthropic.APITimeoutError):
        await claude.messages.create(**CLAUDE, timeout=0.3)
    assert len(server.requests) == 1
    await wait_until(lambda: server.client_gone == 1, what="the client hung up")


# --- Gemini ---------------------------------------------------------------------------------------

GEMINI = "gemini-2.5-flash"


async def test_gemini_plain_and_url(server, gem):
    server.push(ge.response("Hello!", prompt_tokens=9, candidates_tokens=2, cached_tokens=4))
    r = await gem.aio.models.generate_content(model=GEMINI, contents="Say hello")
    assert r.text == "Hello!"
    assert r.candidates[0].finish_reason == genai_types.FinishReason.STOP
    u = r.usage_metadata
    assert (u.prompt_token_count, u.candidates_token_count, u.cached_content_token_count, u.total_token_count) == (
        9, 2, 4, 11,
    )
    rec = server.requests[0]
    # with base_url and an API key, google-genai 3.x puts its default API version ("v1") in the path
    assert rec.path == f"/v1/models/{GEMINI}:generateContent"
    assert rec.headers["x-goog-api-key"] == GEMINI_KEY


async def test_gemini_api_version_follows_http_options(server):
    server.push(ge.response("ok"))
    client = genai.Client(
        api_key=GEMINI_KEY,
        http_options=genai_types.HttpOptions(
            base_url=server.url, api_version="v1beta", retry_options=genai_types.HttpRetryOptions(attempts=1)
        ),
    )
    await client.aio.models.generate_content(model=GEMINI, contents="x")
    await client.aio.aclose()
    assert server.requests[0].path == f"/v1beta/models/{GEMINI}:generateContent"


async def test_gemini_structured(server, gem):
    server.push(ge.structured({"answer": "hi", "confidence": 0.9}))
    config = genai_types.GenerateContentConfig(response_mime_type="application/json", response_json_schema=SCHEMA)
    r = await gem.aio.models.generate_content(model=GEMINI, contents="x", config=config)
    assert json.loads(r.text) == {"answer": "hi", "confidence": 0.9}
    gen = server.requests[0].json()["generationConfig"]
    assert gen["responseMimeType"] == "application/json" and gen["responseJsonSchema"] == SCHEMA


async def test_gemini_stream_usage_on_last_chunk(server, gem):
    server.push(ge.stream(["Hel", "lo", "!"], prompt_tokens=12, candidates_tokens=3))
    text, last = "", None
    async for chunk in await gem.aio.models.generate_content_stream(model=GEMINI, contents="x"):
        text += chunk.text or ""
        last = chunk
    assert text == "Hello!"
    assert last.candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert (last.usage_metadata.prompt_token_count, last.usage_metadata.candidates_token_count) == (12, 3)
    rec = server.requests[0]
    assert rec.path == f"/v1/models/{GEMINI}:streamGenerateContent" and rec.query == "alt=sse"


def aiohttp_errors(name: str = "ClientPayloadError") -> tuple[type[BaseException], ...]:
    """aiohttp's error class ``name`` when aiohttp is installed (google-genai's async transport then)."""
    try:
        import aiohttp
    except ImportError:
        return ()
    return (getattr(aiohttp, name),)


async def test_gemini_cut_stream_raises(server, gem):
    server.push(ge.stream(["a", "b", "c", "d"], cut_after=2))
    got = []
    # google-genai does not wrap transport errors raised while iterating a stream; with aiohttp
    # installed it streams through aiohttp, whose cut body is a ClientPayloadError
    with pytest.raises((genai_errors.APIError, httpx2.TransportError, *aiohttp_errors())):
        async for chunk in await gem.aio.models.generate_content_stream(model=GEMINI, contents="x"):
            got.append(chunk.text)
    assert got == ["a", " b"] or got == ["a", "b"]
    assert len(server.requests) == 1


async def test_gemini_prompt_blocked_and_safety_stop(server, gem):
    server.push(ge.prompt_blocked("SAFETY"), ge.safety_stop())
    r = await gem.aio.models.generate_content(model=GEMINI, contents="x")
    assert r.prompt_feedback.block_reason == genai_types.BlockedReason.SAFETY
    assert not r.candidates and r.text is None
    r = await gem.aio.models.generate_content(model=GEMINI, contents="x")
    assert r.candidates[0].finish_reason == genai_types.FinishReason.SAFETY
    assert r.text is None


@pytest.mark.parametrize(
    "reply, exc, code, status",
    [
        (ge.rate_limited("2s"), genai_errors.ClientError, 429, "RESOURCE_EXHAUSTED"),
        (ge.context_length(), genai_errors.ClientError, 400, "INVALID_ARGUMENT"),
        (ge.auth_error(), genai_errors.ClientError, 401, "UNAUTHENTICATED"),
        (ge.invalid_key(), genai_errors.ClientError, 400, "INVALID_ARGUMENT"),
        (ge.unavailable(), genai_errors.ServerError, 503, "UNAVAILABLE"),
        (ge.server_error(), genai_errors.ServerError, 500, "INTERNAL"),
    ],
    ids=["429", "400-context", "401", "400-bad-key", "503", "500"],
)
async def test_gemini_errors_one_request_each(server, gem, reply, exc, code, status):
    server.push(reply)
    with pytest.raises(exc) as err:
        await gem.aio.models.generate_content(model=GEMINI, contents="x")
    assert (err.value.code, err.value.status) == (code, status)
    assert len(server.requests) == 1
    if code == 429:
        details = err.value.details["error"]["details"]
        retry = [d for d in details if d["@type"] == "type.googleapis.com/google.rpc.RetryInfo"]
        assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]


async def test_gemini_retry_is_visible_when_allowed(server):
    server.push(ge.unavailable(), ge.response("second"))
    client = gemini_client(server.url, attempts=2, initial_delay=0.0, jitter=0.0)
    r = await client.aio.models.generate_content(model=GEMINI, contents="x")
    await client.aio.aclose()
    assert r.text == "second"
    assert len(server.requests) == 2


async def test_gemini_stall_ends_with_client_timeout(server, gem):
    server.push(Reply(stall=True))
    config = genai_types.GenerateContentConfig(http_options=genai_types.HttpOptions(timeout=300))  # ms
    with pytest.raises((httpx2.TimeoutException, *(aiohttp_errors() and (TimeoutError,)))):
        await gem.aio.models.generate_content(model=GEMINI, contents="x", config=config)
    assert len(server.requests) == 1
    await wait_until(lambda: server.client_gone == 1, what="the client hung up")


async def test_gemini_connection_refused_is_not_retried():
    async with WireServer() as server:
        url = server.url
    client = gemini_client(url)
    with pytest.raises((httpx2.ConnectError, *aiohttp_errors("ClientConnectorError"))):
        await client.aio.models.generate_content(model=GEMINI, contents="x")
    await client.aio.aclose()


# --- auto_reply (the bench's zero-latency provider) ---------------------------------------------


async def test_auto_reply_answers_every_provider_plain_streamed_and_structured():
    async with WireServer(default=auto_reply) as server:
        oai = AsyncOpenAI(api_key=OPENAI_KEY, base_url=server.url + "/v1", max_retries=0)
        claude = AsyncAnthropic(api_key=ANTHROPIC_KEY, base_url=server.url, max_retries=0)
        gem = gemini_client(server.url)

        r = await oai.chat.completions.create(model="m", messages=MSGS)
        assert r.choices[0].message.content == "ok" and r.model == "m"
        fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA, "strict": True}}
        r = await oai.chat.completions.create(model="m", messages=MSGS, response_format=fmt)
        assert json.loads(r.choices[0].message.content) == {"answer": "example", "confidence": 0}
        s = await oai.chat.completions.create(
            model="m", messages=MSGS, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in s]
        assert chunks[-1].usage is not None

        m = await claude.messages.create(**CLAUDE)
        assert m.content[0].text == "ok"
        m = await claude.messages.create(
            **CLAUDE, tools=[{"name": "answer", "input_schema": SCHEMA}], tool_choice={"type": "tool", "name": "answer"}
        )
        assert m.content[0].input == {"answer": "example", "confidence": 0}
        async with claude.messages.stream(**CLAUDE) as st:
            assert (await st.get_final_message()).content[0].text == "ok"

        g = await gem.aio.models.generate_content(model=GEMINI, contents="x")
        assert g.text == "ok"
        config = genai_types.GenerateContentConfig(response_mime_type="application/json", response_json_schema=SCHEMA)
        g = await gem.aio.models.generate_content(model=GEMINI, contents="x", config=config)
        assert json.loads(g.text) == {"answer": "example", "confidence": 0}
        pieces = [c.text async for c in await gem.aio.models.generate_content_stream(model=GEMINI, contents="x")]
        assert "".join(pieces) == "ok"

        await oai.close()
        await claude.close()
        await gem.aio.aclose()
        assert len(server.requests) == 9


def test_example_for_schema():
    assert example_for_schema(SCHEMA) == {"answer": "example", "confidence": 0}
    assert example_for_schema({"type": "string", "enum": ["b", "a"]}) == "b"
    assert example_for_schema({"type": "array", "items": {"type": "integer"}, "minItems": 2}) == [0, 0]
    assert example_for_schema({"type": ["null", "boolean"]}) is False
    assert example_for_schema({"type": "number", "minimum": 0.5}) == 0.5
