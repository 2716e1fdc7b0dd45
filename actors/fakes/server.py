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

    from actors.fakes import openai as oa

    async with WireServer() as server:
        server.push(oa.completion("hello"), oa.error(429, ...))
        client = AsyncOpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0)
        ...
        assert len(server.requests) == 2

This module is the transport and the pieces every body shares (``Reply``, ``json_reply``, ``sse``).
The body builders live one module per provider (``actors/fakes/openai.py``, ``anthropic.py``,
``gemini.py``); they return ``Reply`` objects whose shapes follow the providers' API references and
the SDK types that parse them; each cites its source, and ``tests/fixtures/SOURCES.md`` lists them
all. ``actors/fakes/auto.py`` has ``auto_reply``, which answers any of the three providers'
generate calls from the request itself: the default for benchmarks (``WireServer(default=auto_reply,
record=False)``, or standalone: ``python -m actors.fakes.auto [--port N]``).
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
    "Reply", "Recorded", "Responder", "WireServer", "json_reply", "split_pieces", "sse", "wire_id",
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
# What every provider's bodies are made of
# =============================================================================================

_ids = itertools.count(1)


def wire_id(prefix: str) -> str:
    """A fresh id for a body (unique across providers: one counter)."""
    return f"{prefix}{next(_ids):06d}wire"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_reply(status: int, obj: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, headers=dict(headers or {}), body=_dumps(obj))


def sse(data: Any, event: str | None = None, *, crlf: bool = False) -> bytes:
    """One SSE event: ``event: NAME`` (optional) and one ``data:`` line with ``data`` as JSON (a
    str is sent as is), then the blank line that ends the event."""
    payload = data if isinstance(data, str) else _dumps(data).decode()
    nl = "\r\n" if crlf else "\n"
    head = f"event: {event}{nl}" if event else ""
    return f"{head}data: {payload}{nl}{nl}".encode()


def split_pieces(text: str | list[str]) -> list[str]:
    """The pieces of a streamed text: a list as is, else one piece a word (the space kept in front)."""
    if isinstance(text, list):
        return text
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]
