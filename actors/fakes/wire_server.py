"""A loopback HTTP/1.1 server that plays provider wire responses (OpenAI, Anthropic, Gemini).

The provider adapters are tested with the real SDK clients pointed (``base_url``) at this server,
and ``llmbus bench`` uses it as a zero-latency provider to measure adapter overhead. It is written
directly on ``asyncio.start_server`` (stdlib only, no new dependency) rather than on an HTTP
framework because the tests need byte-level control of the connection: a streamed answer is sent
with ``Transfer-Encoding: chunked`` one event per chunk, so ``cut_after`` can close the socket in
the middle of the body (no terminating zero-length chunk: the client sees a truly incomplete
response, not a short but complete one), and ``stall`` can accept a request and never answer.

It speaks just enough HTTP/1.1 for httpx (which all three SDKs use here): keep-alive (connections
are reused across requests), request bodies with ``Content-Length`` or chunked, JSON responses
with ``Content-Length``, SSE responses chunked. Bound to 127.0.0.1 on a free port.

Usage::

    async with WireServer() as server:
        server.push(openai_completion("hello"), openai_error(429, ...))
        client = AsyncOpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0)
        ...
        assert len(server.requests) == 2

The body builders below return ``Reply`` objects whose shapes follow the providers' API references
and the SDK types that parse them; each cites its source, and ``tests/fixtures/SOURCES.md`` lists
them all. ``auto_reply`` answers any of the three providers' generate calls (plain, structured or
streamed) from the request itself: the default for benchmarks (``WireServer(default=auto_reply,
record=False)``, or standalone: ``python -m actors.fakes.wire_server [--port N]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

__all__ = [
    "Reply", "Recorded", "Responder", "WireServer", "auto_reply", "example_for_schema", "json_reply", "sse",
    # OpenAI
    "openai_completion_body", "openai_completion", "openai_structured", "openai_stream",
    "openai_error", "openai_rate_limited", "openai_context_length", "openai_auth_error",
    "openai_server_error", "openai_unavailable",
    # Anthropic
    "anthropic_message_body", "anthropic_message", "anthropic_tool_use", "anthropic_stream",
    "anthropic_tool_use_stream", "anthropic_error", "anthropic_rate_limited", "anthropic_overloaded",
    "anthropic_prompt_too_long", "anthropic_auth_error", "anthropic_server_error",
    "anthropic_stream_error_event",
    # Gemini
    "gemini_body", "gemini_response", "gemini_structured", "gemini_stream", "gemini_prompt_blocked",
    "gemini_safety_stop", "gemini_error", "gemini_rate_limited", "gemini_context_length",
    "gemini_auth_error", "gemini_invalid_key", "gemini_unavailable", "gemini_server_error",
]


@dataclass
class Reply:
    """What the server answers to one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # JSON body (sent with Content-Length)
    # SSE stream: each item is the raw bytes of one event, e.g. b'data: {...}\n\n' or
    # b'event: message_start\ndata: {...}\n\n'; each is sent as one HTTP chunk
    events: list[bytes] | None = None
    # with events: send this many events, then close the socket (no terminating chunk)
    cut_after: int | None = None
    # with events: send this many events, then never send more (until the client goes away)
    stall_after: int | None = None
    stall: bool = False  # accept the request, never answer (until the client goes away or the server stops)
    delay_s: float = 0.0  # before the status line
    event_delay_s: float = 0.0  # between events of a stream


@dataclass
class Recorded:
    """One request as received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


Responder = Callable[[Recorded], Reply]

_REASONS = {529: "Site Overloaded"}
_MAX_HEAD = 64 * 1024


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return _REASONS.get(status, "Unknown")


class _BadRequest(Exception):
    pass


class WireServer:
    """A scripted loopback provider. ``push`` queues replies (FIFO); when the script is empty,
    ``default`` answers (a 404 JSON error if there is none). Every request is kept in ``requests``.
    """

    def __init__(self, default: Responder | None = None, *, record: bool = True, port: int = 0) -> None:
        self.default = default
        self.port = port  # 0: a free port, chosen when the server starts
        self.record = record  # False: count requests only (a long benchmark keeps no history)
        self.requests: list[Recorded] = []
        self.received = 0  # requests received (recorded or not)
        self.url = ""
        self.connections_opened = 0  # TCP connections accepted (keep-alive reuses them)
        self.client_gone = 0  # requests whose client went away before the reply was complete
        self._script: deque[Reply | Responder] = deque()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopping: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> WireServer:
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, limit=_MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._server is None:
            return
        assert self._stopping is not None
        self._stopping.set()
        self._server.close()
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None

    # --- script -------------------------------------------------------------------------------

    def push(self, *replies: Reply | Responder) -> None:
        """Queue replies for the next requests, in order (a callable gets the request)."""
        self._script.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        return len(self._script)

    async def wait_for_requests(self, n: int, *, within_s: float = 5.0) -> None:
        """Wait until at least ``n`` requests have been received."""
        async with asyncio.timeout(within_s):
            while self.received < n:
                assert self._changed is not None
                await self._changed.wait()

    def _notify(self) -> None:
        assert self._changed is not None
        self._changed.set()
        self._changed = asyncio.Event()

    def _choose(self, rec: Recorded) -> Reply:
        if self._script:
            item = self._script.popleft()
            return item if isinstance(item, Reply) else item(rec)
        if self.default is not None:
            return self.default(rec)
        return json_reply(
            404, {"error": {"message": f"no scripted reply for {rec.method} {rec.path}", "type": "not_found"}}
        )

    # --- connection ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections_opened += 1
        try:
            while True:
                try:
                    rec = await _read_request(reader)
                except _BadRequest as exc:
                    await _write_json(writer, 400, {"error": {"message": str(exc)}}, close=True)
                    return
                if rec is None:
                    return  # the client closed the connection between requests
                self.received += 1
                if self.record:
                    self.requests.append(rec)
                self._notify()
                reply = self._choose(rec)
                close = rec.headers.get("connection", "").lower() == "close"
                keep = await self._answer(reply, reader, writer, close=close)
                if not keep or close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # server stopping
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(
        self, reply: Reply, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, close: bool
    ) -> bool:
        """Send ``reply``; False when the connection must not be reused."""
        if reply.stall:
            await self._until_client_gone(reader)
            return False
        if reply.delay_s > 0:
            await asyncio.sleep(reply.delay_s)
        if reply.events is None:
            body = reply.body if reply.body is not None else b""
            headers = {"content-type": "application/json", **_lower(reply.headers)}
            headers["content-length"] = str(len(body))
            if close:
                headers["connection"] = "close"
            try:
                writer.write(_head(reply.status, headers) + body)
                await writer.drain()
            except ConnectionError:
                self.client_gone += 1
                return False
            return True
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            **_lower(reply.headers),
        }
        headers.pop("content-length", None)
        headers["transfer-encoding"] = "chunked"
        if close:
            headers["connection"] = "close"
        try:
            writer.write(_head(reply.status, headers))
            await writer.drain()
            for i, event in enumerate(reply.events):
                if reply.cut_after is not None and i >= reply.cut_after:
                    writer.close()  # mid-body: no terminating chunk
                    return False
                if reply.stall_after is not None and i >= reply.stall_after:
                    await self._until_client_gone(reader)
                    return False
                if i and reply.event_delay_s > 0:
                    await asyncio.sleep(reply.event_delay_s)
                if event:
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                    await writer.drain()
            if reply.cut_after is not None and reply.cut_after >= len(reply.events):
                writer.close()  # every event sent, but the body never ends
                return False
            if reply.stall_after is not None and reply.stall_after >= len(reply.events):
                await self._until_client_gone(reader)
                return False
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            self.client_gone += 1
            return False
        return True

    async def _until_client_gone(self, reader: asyncio.StreamReader) -> None:
        """Wait until the client closes the connection (or the server stops)."""
        assert self._stopping is not None
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                read = asyncio.ensure_future(reader.read(65536))
                done, _ = await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    read.cancel()
                    return
                try:
                    data = read.result()
                except ConnectionError:
                    data = b""
                if not data:
                    self.client_gone += 1
                    return
        finally:
            stop.cancel()


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}"]
    lines.append(f"date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}")
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _write_json(writer: asyncio.StreamWriter, status: int, obj: Any, *, close: bool) -> None:
    body = json.dumps(obj).encode()
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    if close:
        headers["connection"] = "close"
    with contextlib.suppress(ConnectionError):
        writer.write(_head(status, headers) + body)
        await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> Recorded | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadRequest("incomplete request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise _BadRequest("request head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        raise _BadRequest(f"bad request line {lines[0]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    path, _, query = target.partition("?")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        length = int(headers.get("content-length") or 0)
        body = await reader.readexactly(length) if length else b""
    return Recorded(method=method, path=path, query=query, headers=headers, body=body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


# =============================================================================================
# Generic helpers
# =============================================================================================

_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}{next(_ids):06d}wire"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_reply(status: int, obj: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, headers=dict(headers or {}), body=_dumps(obj))


def sse(data: Any, event: str | None = None, *, crlf: bool = False) -> bytes:
    """One SSE event: ``event: NAME`` (optional) and one ``data:`` line with ``data`` as JSON (a
    str is sent as is), then the blank line that ends the event."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    nl = "\r\n" if crlf else "\n"
    head = f"event: {event}{nl}" if event else ""
    return f"{head}data: {payload}{nl}{nl}".encode()


def _pieces(text: str | list[str]) -> list[str]:
    if isinstance(text, list):
        return text
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def example_for_schema(schema: dict[str, Any] | None) -> Any:
    """A small value that validates against a (simple) JSON Schema: every required property of an
    object, the first enum value, 0 / "" / False / [] by type. Enough for canned structured answers."""
    if not isinstance(schema, dict):
        return {}
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_for_schema(schema[key][0])
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "null")
    if typ == "object" or (typ is None and "properties" in schema):
        props = schema.get("properties", {})
        required = schema.get("required", list(props))
        return {k: example_for_schema(props.get(k, {})) for k in required}
    if typ == "array":
        n = int(schema.get("minItems", 0))
        return [example_for_schema(schema.get("items", {})) for _ in range(n)]
    if typ == "string":
        return "x" * int(schema.get("minLength", 0)) if schema.get("minLength") else "example"
    if typ == "integer":
        return int(schema.get("minimum", 0))
    if typ == "number":
        minimum = schema.get("minimum", 0)
        maximum = schema.get("maximum")
        return maximum if maximum is not None and maximum < minimum else minimum
    if typ == "boolean":
        return False
    if typ == "null":
        return None
    return {}


# =============================================================================================
# OpenAI Chat Completions — POST /v1/chat/completions
# Shapes: API reference "Chat > Create chat completion", "The chat completion object", "The chat
# completion chunk object", "Error codes"; SDK types openai/types/chat/chat_completion.py
# (ChatCompletion, Choice), chat_completion_message.py, chat_completion_chunk.py
# (ChatCompletionChunk, ChoiceDelta), openai/types/completion_usage.py (CompletionUsage,
# PromptTokensDetails.cached_tokens); errors: openai/_client.py AsyncOpenAI._make_status_error
# (body["error"] -> APIStatusError subclasses by status), openai/_exceptions.py.
# =============================================================================================

OPENAI_MODEL = "gpt-4o-mini-2024-07-18"


def _openai_usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    # openai/types/completion_usage.py: CompletionUsage{prompt_tokens, completion_tokens,
    # total_tokens, prompt_tokens_details{cached_tokens,...}, completion_tokens_details{...}}
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
        },
    }


def openai_completion_body(
    text: str | None,
    *,
    model: str = OPENAI_MODEL,
    finish_reason: str = "stop",
    prompt_tokens: int = 12,
    completion_tokens: int = 7,
    cached_tokens: int = 0,
    refusal: str | None = None,
) -> dict[str, Any]:
    # openai/types/chat/chat_completion.py ChatCompletion: id, object="chat.completion", created,
    # model, choices[{index, message{role="assistant", content, refusal}, logprobs,
    # finish_reason}], usage, system_fingerprint, service_tier
    return {
        "id": _id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": refusal, "annotations": []},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": _openai_usage(prompt_tokens, completion_tokens, cached_tokens),
        "service_tier": "default",
        "system_fingerprint": "fp_wire",
    }


def openai_completion(text: str = "Hello from OpenAI.", **kw: Any) -> Reply:
    """A plain non-streamed chat completion."""
    return json_reply(200, openai_completion_body(text, **kw), {"x-request-id": _id("req_")})


def openai_structured(data: Any, **kw: Any) -> Reply:
    """The answer to a ``response_format={"type": "json_schema", ...}`` request: with structured
    outputs the JSON document is the message ``content`` as a string (API reference "Structured
    Outputs"). A ``str`` is sent as is, so a test can send invalid JSON."""
    text = data if isinstance(data, str) else json.dumps(data)
    return openai_completion(text, **kw)


def openai_stream(
    text: str | list[str] = "Hello from OpenAI, streamed.",
    *,
    model: str = OPENAI_MODEL,
    finish_reason: str = "stop",
    prompt_tokens: int = 12,
    completion_tokens: int = 7,
    cached_tokens: int = 0,
    include_usage: bool = True,
    done: bool = True,
    **reply_kw: Any,
) -> Reply:
    """A streamed chat completion (``stream=True``): ``data: {chat.completion.chunk}`` events — the
    first delta carries the role, then content deltas, then an empty delta with ``finish_reason`` —
    then, with ``stream_options={"include_usage": true}``, one more chunk with ``choices: []`` and the
    usage (every other chunk has ``"usage": null``), then ``data: [DONE]``.
    Source: API reference "The chat completion chunk object" and ``stream_options.include_usage``;
    openai/types/chat/chat_completion_chunk.py; openai/_streaming.py (AsyncStream stops at [DONE])."""
    cid, created = _id("chatcmpl-"), int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        c: dict[str, Any] = {
            "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "service_tier": "default", "system_fingerprint": "fp_wire",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            c["usage"] = None
        return c

    events = [sse(chunk({"role": "assistant", "content": "", "refusal": None}, None))]
    events += [sse(chunk({"content": piece}, None)) for piece in _pieces(text)]
    events.append(sse(chunk({}, finish_reason)))
    if include_usage:
        events.append(
            sse({
                "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "service_tier": "default", "system_fingerprint": "fp_wire", "choices": [],
                "usage": _openai_usage(prompt_tokens, completion_tokens, cached_tokens),
            })
        )
    if done:
        events.append(sse("[DONE]"))
    return Reply(headers={"x-request-id": _id("req_")}, events=events, **reply_kw)


def openai_error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """``{"error": {"message", "type", "param", "code"}}`` (API reference "Error codes"; the SDK
    passes ``body["error"]`` to the exception: openai/_client.py ``_make_status_error``,
    openai/_exceptions.py ``APIError.__init__`` reads code/param/type)."""
    return json_reply(
        status,
        {"error": {"message": message, "type": type, "param": param, "code": code}},
        {"x-request-id": _id("req_"), **(headers or {})},
    )


def openai_rate_limited(retry_after_s: float = 2.0, *, retry_after_ms: int | None = None) -> Reply:
    """429 with ``retry-after`` (seconds) and ``retry-after-ms`` headers, both of which the SDK reads
    (openai/_base_client.py ``_parse_retry_after_header``), and the rate-limit body."""
    ms = retry_after_ms if retry_after_ms is not None else int(retry_after_s * 1000)
    return openai_error(
        429,
        f"Rate limit reached for gpt-4o-mini in organization org-wire on tokens per min (TPM): "
        f"Limit 200000, Used 199000, Requested 1500. Please try again in {retry_after_s:g}s.",
        type="tokens",
        code="rate_limit_exceeded",
        headers={
            "retry-after": f"{retry_after_s:g}",
            "retry-after-ms": str(ms),
            "x-ratelimit-limit-tokens": "200000",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": f"{retry_after_s:g}s",
        },
    )


def openai_context_length(max_tokens: int = 128000, got: int = 131072) -> Reply:
    """400 ``context_length_exceeded`` (API reference "Error codes")."""
    return openai_error(
        400,
        f"This model's maximum context length is {max_tokens} tokens. However, your messages "
        f"resulted in {got} tokens. Please reduce the length of the messages.",
        type="invalid_request_error",
        code="context_length_exceeded",
        param="messages",
    )


def openai_auth_error(key_shown: str = "sk-test") -> Reply:
    """401 ``invalid_api_key``. The real API echoes (a masked form of) the key in the message;
    ``key_shown`` is what this one echoes, so a test can check the key never leaks further."""
    return openai_error(
        401,
        f"Incorrect API key provided: {key_shown}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        type="invalid_request_error",
        code="invalid_api_key",
    )


def openai_server_error(status: int = 500) -> Reply:
    """500 ``server_error`` (API reference "Error codes")."""
    return openai_error(
        status,
        "The server had an error while processing your request. Sorry about that!",
        type="server_error",
    )


def openai_unavailable() -> Reply:
    """503 "Slow Down" / overloaded (API reference "Error codes")."""
    return openai_error(
        503, "The engine is currently overloaded, please try again later.", type="server_error"
    )


# =============================================================================================
# Anthropic Messages — POST /v1/messages
# Shapes: API reference "Messages", "Streaming Messages", "Errors"; SDK types
# anthropic/types/message.py (Message), usage.py (Usage), text_block.py, tool_use_block.py,
# raw_message_stream_event.py and raw_*_event.py, raw_content_block_delta.py (TextDelta,
# InputJSONDelta), message_delta_usage.py; errors: anthropic/types/shared/error_response.py
# ({"type":"error","error":{...},"request_id"}), shared/error_type.py, anthropic/_error_classes.py
# (status -> exception class; 529 -> OverloadedError), anthropic/_streaming.py (an ``error`` SSE
# event raises from inside a 200 stream).
# =============================================================================================

ANTHROPIC_MODEL = "claude-haiku-4-5-20251001"


def _anthropic_usage(
    input_tokens: int, output_tokens: int, cache_read: int, cache_creation: int
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_creation,
        "service_tier": "standard",
    }


def anthropic_message_body(
    content: list[dict[str, Any]],
    *,
    model: str = ANTHROPIC_MODEL,
    stop_reason: str = "end_turn",
    input_tokens: int = 14,
    output_tokens: int = 9,
    cache_read_input_tokens: int = 0,
    cache_creation_input_tokens: int = 0,
) -> dict[str, Any]:
    # anthropic/types/message.py Message: id, type="message", role="assistant", content[],
    # model, stop_reason, stop_sequence, usage{input_tokens, output_tokens,
    # cache_read_input_tokens, cache_creation_input_tokens}
    return {
        "id": _id("msg_01"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _anthropic_usage(
            input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens
        ),
    }


def anthropic_message(text: str = "Hello from Claude.", **kw: Any) -> Reply:
    """A plain non-streamed message with one text block (anthropic/types/text_block.py)."""
    return json_reply(
        200, anthropic_message_body([{"type": "text", "text": text}], **kw), {"request-id": _id("req_")}
    )


def anthropic_tool_use(input: dict[str, Any], *, name: str = "answer", text: str | None = None, **kw: Any) -> Reply:
    """The answer to forced tool use (``tool_choice={"type": "tool", "name": ...}``): one
    ``tool_use`` block whose ``input`` is the object (anthropic/types/tool_use_block.py), with
    ``stop_reason="tool_use"`` (API reference "Tool use", forcing a tool). ``text`` adds a leading
    text block (models sometimes explain before calling)."""
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content.append({"type": "tool_use", "id": _id("toolu_01"), "name": name, "input": input})
    kw.setdefault("stop_reason", "tool_use")
    return json_reply(200, anthropic_message_body(content, **kw), {"request-id": _id("req_")})


def _anthropic_stream_events(
    blocks: list[list[dict[str, Any]]],  # per block: [content_block_start's block, *deltas]
    *,
    model: str,
    stop_reason: str,
    input_tokens: int,
    output_tokens: int,
    cache_read_input_tokens: int,
    cache_creation_input_tokens: int,
) -> list[bytes]:
    message = {
        "id": _id("msg_01"), "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": _anthropic_usage(input_tokens, 1, cache_read_input_tokens, cache_creation_input_tokens),
    }
    events = [sse({"type": "message_start", "message": message}, "message_start")]
    for index, (start, *deltas) in enumerate(blocks):
        events.append(
            sse({"type": "content_block_start", "index": index, "content_block": start}, "content_block_start")
        )
        if index == 0:
            events.append(sse({"type": "ping"}, "ping"))
        events += [
            sse({"type": "content_block_delta", "index": index, "delta": d}, "content_block_delta")
            for d in deltas
        ]
        events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    # message_delta's usage is cumulative (anthropic/types/message_delta_usage.py)
    events.append(
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
            "message_delta",
        )
    )
    events.append(sse({"type": "message_stop"}, "message_stop"))
    return events


def anthropic_stream(
    text: str | list[str] = "Hello from Claude, streamed.",
    *,
    model: str = ANTHROPIC_MODEL,
    stop_reason: str = "end_turn",
    input_tokens: int = 14,
    output_tokens: int = 9,
    cache_read_input_tokens: int = 0,
    cache_creation_input_tokens: int = 0,
    **reply_kw: Any,
) -> Reply:
    """A streamed message: ``message_start`` (usage with input tokens), ``content_block_start``
    (text ""), ``ping``, ``content_block_delta`` × n (``text_delta``), ``content_block_stop``,
    ``message_delta`` (stop_reason and the output usage), ``message_stop`` — each event as
    ``event: NAME`` + ``data: {...}`` (API reference "Streaming Messages")."""
    block = [{"type": "text", "text": ""}] + [{"type": "text_delta", "text": p} for p in _pieces(text)]
    events = _anthropic_stream_events(
        [block], model=model, stop_reason=stop_reason, input_tokens=input_tokens,
        output_tokens=output_tokens, cache_read_input_tokens=cache_read_input_tokens,
        cache_creation_input_tokens=cache_creation_input_tokens,
    )
    return Reply(headers={"request-id": _id("req_")}, events=events, **reply_kw)


def anthropic_tool_use_stream(
    input: dict[str, Any] | str,
    *,
    name: str = "answer",
    model: str = ANTHROPIC_MODEL,
    input_tokens: int = 14,
    output_tokens: int = 9,
    parts: int = 3,
    **reply_kw: Any,
) -> Reply:
    """Forced tool use, streamed: ``content_block_start`` with a ``tool_use`` block (``input: {}``)
    then ``input_json_delta`` events whose ``partial_json`` pieces concatenate to the input
    (API reference "Streaming Messages" > input JSON deltas; anthropic/types/input_json_delta.py)."""
    raw = input if isinstance(input, str) else json.dumps(input)
    step = max(1, -(-len(raw) // parts))
    block = [{"type": "tool_use", "id": _id("toolu_01"), "name": name, "input": {}}] + [
        {"type": "input_json_delta", "partial_json": raw[i : i + step]} for i in range(0, len(raw), step)
    ]
    events = _anthropic_stream_events(
        [block], model=model, stop_reason="tool_use", input_tokens=input_tokens,
        output_tokens=output_tokens, cache_read_input_tokens=0, cache_creation_input_tokens=0,
    )
    return Reply(headers={"request-id": _id("req_")}, events=events, **reply_kw)


def _anthropic_error_body(type: str, message: str) -> dict[str, Any]:
    # anthropic/types/shared/error_response.py ErrorResponse{type="error", error{type, message}, request_id}
    return {"type": "error", "error": {"type": type, "message": message}, "request_id": _id("req_01")}


def anthropic_error(status: int, type: str, message: str, *, headers: dict[str, str] | None = None) -> Reply:
    """``{"type": "error", "error": {"type", "message"}, "request_id"}`` (API reference "Errors")."""
    return json_reply(status, _anthropic_error_body(type, message), {"request-id": _id("req_"), **(headers or {})})


def anthropic_rate_limited(retry_after_s: int = 2) -> Reply:
    """429 ``rate_limit_error`` with ``retry-after`` in whole seconds and the
    ``anthropic-ratelimit-*`` headers (API reference "Rate limits" > response headers)."""
    return anthropic_error(
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50,000 input tokens "
        "per minute. Please reduce the prompt length or the maximum tokens requested, or try again later.",
        headers={
            "retry-after": str(retry_after_s),
            "anthropic-ratelimit-input-tokens-limit": "50000",
            "anthropic-ratelimit-input-tokens-remaining": "0",
            "anthropic-ratelimit-input-tokens-reset": "2030-01-01T00:00:00Z",
        },
    )


def anthropic_overloaded(status: int = 529) -> Reply:
    """529 ``overloaded_error`` (API reference "Errors"; SDK: anthropic/_error_classes.py maps 529
    to ``OverloadedError``)."""
    return anthropic_error(status, "overloaded_error", "Overloaded")


def anthropic_prompt_too_long(got: int = 215000, maximum: int = 200000) -> Reply:
    """400 ``invalid_request_error`` with the prompt-too-long message the API sends when the input
    exceeds the context window."""
    return anthropic_error(400, "invalid_request_error", f"prompt is too long: {got} tokens > {maximum} maximum")


def anthropic_auth_error() -> Reply:
    """401 ``authentication_error``."""
    return anthropic_error(401, "authentication_error", "invalid x-api-key")


def anthropic_server_error(status: int = 500) -> Reply:
    """500 ``api_error``."""
    return anthropic_error(status, "api_error", "Internal server error")


def anthropic_stream_error_event(type: str = "overloaded_error", message: str = "Overloaded") -> bytes:
    """An ``error`` event inside a 200 stream (API reference "Streaming Messages" > error events;
    anthropic/_streaming.py raises it through ``_make_status_error``). Insert it into
    ``anthropic_stream(...).events`` to fail a stream after it started."""
    return sse(_anthropic_error_body(type, message), "error")


# =============================================================================================
# Gemini — POST /{version}/models/{model}:generateContent and
# :streamGenerateContent?alt=sse (google-genai builds the path in models.py
# ``generate_content`` / ``generate_content_stream``; the version comes from HttpOptions.api_version,
# default "v1" for the Gemini Developer API in this SDK: _api_client.py GOOGLE_AI_API_DEFAULT_VERSION)
# Shapes: API reference "Generating content" (GenerateContentResponse, Candidate, FinishReason,
# PromptFeedback, BlockReason, UsageMetadata), "Troubleshooting" (error codes); SDK: google/genai
# /models.py ``_GenerateContentResponse_from_mldev`` / ``_Candidate_from_mldev`` (camelCase wire ->
# snake_case types), types.py GenerateContentResponse, Candidate, GenerateContentResponseUsageMetadata,
# GenerateContentResponsePromptFeedback, FinishReason, BlockedReason; errors: google/genai/errors.py
# (APIError reads error.code / error.status / error.message; 4xx ClientError, 5xx ServerError);
# stream: _api_client.py ``_aiter_response_stream`` (``data: `` lines, events split on blank lines).
# =============================================================================================

GEMINI_MODEL = "gemini-2.5-flash"


def _gemini_usage(prompt: int, candidates: int | None, cached: int | None, thoughts: int | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates is not None:
        usage["candidatesTokenCount"] = candidates
    if cached:
        usage["cachedContentTokenCount"] = cached
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    usage["totalTokenCount"] = prompt + (candidates or 0) + (thoughts or 0)
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    return usage


def gemini_body(
    text: str | None,
    *,
    model: str = GEMINI_MODEL,
    finish_reason: str | None = "STOP",
    prompt_tokens: int = 10,
    candidates_tokens: int | None = 6,
    cached_tokens: int | None = None,
) -> dict[str, Any]:
    # GenerateContentResponse: candidates[{content{parts[{text}], role="model"}, finishReason,
    # index}], usageMetadata{promptTokenCount, candidatesTokenCount, cachedContentTokenCount,
    # totalTokenCount}, modelVersion, responseId
    candidate: dict[str, Any] = {"index": 0}
    if text is not None:
        candidate["content"] = {"parts": [{"text": text}], "role": "model"}
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    return {
        "candidates": [candidate],
        "usageMetadata": _gemini_usage(prompt_tokens, candidates_tokens, cached_tokens),
        "modelVersion": model,
        "responseId": _id("resp"),
    }


def gemini_response(text: str = "Hello from Gemini.", **kw: Any) -> Reply:
    """A plain ``generateContent`` answer."""
    return json_reply(200, gemini_body(text, **kw))


def gemini_structured(data: Any, **kw: Any) -> Reply:
    """The answer to a request with ``generationConfig.responseMimeType="application/json"`` and a
    ``responseSchema`` / ``responseJsonSchema``: the JSON document is the text of the first part
    (API reference "Structured output"). A ``str`` is sent as is (e.g. invalid JSON)."""
    text = data if isinstance(data, str) else json.dumps(data)
    return gemini_response(text, **kw)


def gemini_stream(
    text: str | list[str] = "Hello from Gemini, streamed.",
    *,
    model: str = GEMINI_MODEL,
    finish_reason: str = "STOP",
    prompt_tokens: int = 10,
    candidates_tokens: int = 6,
    cached_tokens: int | None = None,
    **reply_kw: Any,
) -> Reply:
    """``streamGenerateContent?alt=sse``: each event is ``data: {GenerateContentResponse}`` with a
    text piece; every chunk carries ``usageMetadata`` (the prompt count from the start, the
    candidates count on the last); the last chunk has ``finishReason``. No terminator event: the
    stream ends with the body (events separated by CRLF CRLF, as the API sends them)."""
    pieces = _pieces(text)
    events = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        body = gemini_body(
            piece,
            model=model,
            finish_reason=finish_reason if last else None,
            prompt_tokens=prompt_tokens,
            candidates_tokens=candidates_tokens if last else None,
            cached_tokens=cached_tokens,
        )
        events.append(sse(body, crlf=True))
    return Reply(events=events, **reply_kw)


def gemini_prompt_blocked(reason: str = "SAFETY", *, prompt_tokens: int = 10) -> Reply:
    """The prompt was blocked: no candidates, ``promptFeedback.blockReason`` (API reference
    "Generating content" > PromptFeedback / BlockReason; types.py GenerateContentResponsePromptFeedback)."""
    return json_reply(
        200,
        {
            "promptFeedback": {
                "blockReason": reason,
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
                ],
            },
            "usageMetadata": _gemini_usage(prompt_tokens, None, None),
            "modelVersion": GEMINI_MODEL,
            "responseId": _id("resp"),
        },
    )


def gemini_safety_stop(*, prompt_tokens: int = 10) -> Reply:
    """The answer was stopped by safety: a candidate with ``finishReason: "SAFETY"``, its
    ``safetyRatings``, and no content (API reference "Generating content" > FinishReason)."""
    body = gemini_body(None, finish_reason="SAFETY", prompt_tokens=prompt_tokens, candidates_tokens=0)
    body["candidates"][0]["safetyRatings"] = [
        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True}
    ]
    return json_reply(200, body)


def gemini_error(
    code: int,
    status: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """``{"error": {"code", "message", "status", "details"}}`` — the google.rpc.Status JSON mapping
    (API reference "Troubleshooting" error table; google/genai/errors.py APIError)."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return json_reply(code, {"error": error}, headers)


def gemini_rate_limited(retry_delay: str = "2s") -> Reply:
    """429 ``RESOURCE_EXHAUSTED`` with a ``google.rpc.QuotaFailure`` and a ``google.rpc.RetryInfo``
    detail whose ``retryDelay`` is a protobuf Duration string (``"2s"``, ``"1.5s"``). No Retry-After
    header: the delay is only in the body."""
    return gemini_error(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. "
        f"Please retry in {retry_delay}.",
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaValue": "10",
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Learn more", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
        ],
    )


def gemini_context_length(got: int = 1_200_000, maximum: int = 1_048_576) -> Reply:
    """400 ``INVALID_ARGUMENT``: the input token count exceeds the model's limit."""
    return gemini_error(
        400,
        "INVALID_ARGUMENT",
        f"The input token count ({got}) exceeds the maximum number of tokens allowed ({maximum}).",
    )


def gemini_auth_error() -> Reply:
    """401 ``UNAUTHENTICATED`` (API reference "Troubleshooting")."""
    return gemini_error(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
        "cookie or other valid authentication credential.",
    )


def gemini_invalid_key() -> Reply:
    """What the Gemini API really answers to a bad API key: 400 ``INVALID_ARGUMENT`` with a
    ``google.rpc.ErrorInfo`` detail whose ``reason`` is ``API_KEY_INVALID`` (not a 401)."""
    return gemini_error(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": "API key not valid. Please pass a valid API key.",
            },
        ],
    )


def gemini_unavailable() -> Reply:
    """503 ``UNAVAILABLE`` ("The model is overloaded")."""
    return gemini_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")


def gemini_server_error() -> Reply:
    """500 ``INTERNAL``."""
    return gemini_error(
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    )


# =============================================================================================
# auto_reply: answers from the request itself (the zero-latency provider of `llmbus bench`)
# =============================================================================================


def auto_reply(rec: Recorded, *, text: str = "ok") -> Reply:
    """Answer any generate call of the three providers, by path: OpenAI ``/chat/completions``,
    Anthropic ``/messages``, Gemini ``:generateContent`` / ``:streamGenerateContent``. Streams when
    the request asks to; for a structured request (OpenAI ``response_format`` json_schema,
    Anthropic forced ``tool_choice``, Gemini ``responseJsonSchema``/``responseSchema``) the answer
    is ``example_for_schema`` of the request's schema. Anything else: 404."""
    try:
        req = rec.json() or {}
    except ValueError:
        req = {}
    path = rec.path
    if path.endswith("/chat/completions"):
        model = req.get("model") or OPENAI_MODEL
        fmt = req.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            answer = json.dumps(example_for_schema((fmt.get("json_schema") or {}).get("schema")))
        else:
            answer = text
        if req.get("stream"):
            include = bool((req.get("stream_options") or {}).get("include_usage"))
            return openai_stream([answer], model=model, include_usage=include)
        return openai_completion(answer, model=model)
    if path.endswith("/messages"):
        model = req.get("model") or ANTHROPIC_MODEL
        choice = req.get("tool_choice") or {}
        if choice.get("type") == "tool":
            tool = next((t for t in req.get("tools", []) if t.get("name") == choice.get("name")), {})
            data = example_for_schema(tool.get("input_schema"))
            if req.get("stream"):
                return anthropic_tool_use_stream(data, name=choice.get("name", "answer"), model=model)
            return anthropic_tool_use(data, name=choice.get("name", "answer"), model=model)
        if req.get("stream"):
            return anthropic_stream([text], model=model)
        return anthropic_message(text, model=model)
    if ":generateContent" in path or ":streamGenerateContent" in path:
        model = path.rsplit("/", 1)[-1].split(":", 1)[0]
        gen = req.get("generationConfig") or {}
        schema = gen.get("responseJsonSchema") or gen.get("responseSchema")
        answer = json.dumps(example_for_schema(_lower_gemini_schema(schema))) if schema else text
        if ":streamGenerateContent" in path:
            return gemini_stream([answer], model=model)
        return gemini_response(answer, model=model)
    return json_reply(404, {"error": {"message": f"auto_reply: unknown path {path}", "type": "not_found"}})


def _lower_gemini_schema(schema: Any) -> Any:
    """Gemini's OpenAPI-style ``responseSchema`` spells types in capitals (``OBJECT``)."""
    if isinstance(schema, dict):
        out = {k: _lower_gemini_schema(v) for k, v in schema.items()}
        if isinstance(out.get("type"), str):
            out["type"] = out["type"].lower()
        return out
    if isinstance(schema, list):
        return [_lower_gemini_schema(v) for v in schema]
    return schema


# =============================================================================================
# python -m actors.fakes.wire_server: a standalone zero-latency provider (auto_reply)
# =============================================================================================


async def _serve_forever(port: int) -> None:
    import signal

    async with WireServer(default=auto_reply, record=False, port=port) as server:
        print(f"wire server listening on {server.url}", flush=True)
        print(f"  openai base_url = {server.url}/v1 ; anthropic and gemini base_url = {server.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="A loopback OpenAI/Anthropic/Gemini wire server (auto_reply).")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    asyncio.run(_serve_forever(parser.parse_args().port))
