"""The gateway's Starlette app: the OpenAI-compatible API, the native ask protocol, health checks.

=================================  ==============================================================
``POST /v1/chat/completions``      OpenAI Chat Completions (``chat.py``), plain or ``stream: true``
``GET  /v1/models``                strategies, providers and aliases (``models.py``)
``POST /v1/asks``                  a native ``Ask`` (JSON; ``id`` optional): 202 + its events URL,
                                   or with ``?wait=true`` the ``Answer`` (``asks.py``)
``GET  /v1/asks/{id}/events``      SSE: ``chunk`` events (stages draft → enhanced → final as they
                                   happen), then one ``answer`` or ``failure``
``DELETE /v1/asks/{id}``           cancel it
``GET  /healthz``, ``/readyz``     alive; ready = connected to NATS and a router answers
=================================  ==============================================================

Why Starlette on uvicorn: a small ASGI toolkit (routing, requests, streaming responses — SSE needs
nothing more), no validation layer of its own to pay for (bodies are decoded by msgspec straight
into typed structs), and uvicorn can be driven from inside an anyio task group. ``llmbus bench
gateway`` measures what it adds.

Bodies: at most ``gateway.max_body_bytes`` (413), JSON decoded by msgspec into typed structs (a
type error is a 400 naming the field). Every request gets one reply; a client that disconnects
before its answer cancels the ask (a ``Cancel`` on the bus), streamed or not. Optional route
modules (``EXTRA_ROUTES``) add their routes when present.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bus import messages as m
from bus import names
from bus.client import Client
from bus.deadline import deadline_in
from bus.rpc import new_id
from actors.gateway import chat, errors
from actors.gateway.asks import Asks
from actors.gateway.keys import ANONYMOUS, KeyRing, Principal, Refused, bearer
from actors.gateway.models import Models
from actors.settings import Settings

T = TypeVar("T")

# Optional modules "module:function": function(gateway) -> list[BaseRoute]; a module that is not
# there is skipped (e.g. the images endpoint, actors/gateway/images.py).
EXTRA_ROUTES = ["actors.gateway.images:routes"]
COOKIE = "llmbus_key"
_encode = msgspec.json.Encoder().encode
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_GONE = object()  # the client disconnected before the reply
_decode_object = msgspec.json.Decoder(dict[str, Any]).decode
WATCH_AFTER_S = 0.05  # a request still waiting after this long watches for its client's disconnect


def json_response(body: Any, status: int = 200) -> Response:
    return Response(_encode(body), status_code=status, media_type="application/json")


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + _encode(data) + b"\n\n"


def as_label(user: str | None) -> str | None:
    """OpenAI's ``user`` is free text; an llmbus user is a label (``bus.names``): one that is not
    becomes ``u-`` + the first 16 hex digits of its SHA-256 (the same user, the same label)."""
    if user is None or names.is_label(user):
        return user
    import hashlib

    return "u-" + hashlib.sha256(user.encode()).hexdigest()[:16]


def refused(r: Refused) -> Response:
    type_ = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}[r.status]
    return errors.error(r.status, str(r), type_, r.code, retry_after_s=r.retry_after_s, retryable=r.status == 429)


class Gateway:
    """The app and what its handlers share: the bus client, the keys, the models, the asks."""

    def __init__(self, settings: Settings, client: Client, keys: KeyRing, *, ready=None,
                 extra_routes: list[BaseRoute] = ()) -> None:
        self.settings = settings
        self.config = settings.gateway
        self.client = client
        self.keys = keys
        self.models = Models(settings)
        self.asks = Asks(client, keep_s=self.config.keep_asks_s)
        self.ready = ready  # async () -> str | None: why not ready
        self.extra_routes = list(extra_routes)

    # --- shared by every handler ---------------------------------------------------------------
    def principal(self, request: Request, *, browser: bool = False) -> Principal:
        """Who asks (raises ``Refused``). ``browser``: the key may also come as a cookie or ``?key=``."""
        if self.keys.open_without_keys and not self.keys.any():
            return ANONYMOUS
        key = bearer(request.headers.get("authorization"))
        if key is None and browser:
            key = request.query_params.get("key") or request.cookies.get(COOKIE)
        return self.keys.check(key)

    async def body(self, request: Request) -> bytes | Response:
        """The request body, or the 413 response when it is over the limit."""
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return self._too_large()
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    return self._too_large()
                chunks.append(chunk)
        except ClientDisconnect:  # gone before its body was in: nobody reads the reply
            return errors.gone()
        return b"".join(chunks)

    async def accept(self, request: Request, decode: Callable[[bytes], T]) -> tuple[Principal, T] | Response:
        """Who asks and the decoded body — or the response that refuses the request (a bad key, a
        body over the limit, one that does not decode: 401/403/429, 413, 400)."""
        try:
            who = self.principal(request)
        except Refused as r:
            return refused(r)
        body = await self.body(request)
        if isinstance(body, Response):
            return body
        try:
            return who, decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return errors.bad_request(f"invalid request body: {exc}")

    def _too_large(self) -> Response:
        return errors.error(413, f"the request body is over {self.config.max_body_bytes:,} bytes "
                                 "(gateway.max_body_bytes)", "invalid_request_error", "body_too_large")

    async def until_disconnect(self, request: Request, work: Awaitable[T]) -> T | object:
        """``await work``, unless the client disconnects first: then it is cancelled (an ask's
        ``Client.send`` publishes the Cancel) and ``_GONE`` is returned.

        ``work`` runs in this task (a task of its own per request measured ~25 % more server CPU
        per ask). The watch (a task waiting on ``receive()`` for ``http.disconnect``) starts only
        when the work is still running after ``WATCH_AFTER_S``: a quick ask pays one timer, not a
        task and a ``receive()`` (measured: half the throughput at 64 in flight). The watcher is
        never cancelled: uvicorn's ``receive()`` returns ``http.disconnect`` once the response is
        complete, so it ends by itself (a task cancelled per request measured slower still)."""
        me = asyncio.current_task()
        receive = request.receive
        state = {"done": False, "gone": False}

        async def watch() -> None:
            while not state["done"]:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not state["done"]:
                        state["gone"] = True
                        me.cancel()
                    return

        loop = asyncio.get_running_loop()
        timer = loop.call_later(WATCH_AFTER_S, lambda: state["done"] or loop.create_task(watch()))
        try:
            return await work
        except asyncio.CancelledError:
            if state["gone"]:  # the client left, not our own cancellation: this task goes on
                me.uncancel()
                return _GONE
            raise
        finally:
            state["done"] = True
            timer.cancel()

    async def answer(self, request: Request, ask: m.Ask) -> m.Answer | Response:
        """``ask`` sent and its Answer awaited — or the response to give instead: 499 when the client
        left first, a Failure's error response."""
        reply = await self.until_disconnect(request, self.client.send(ask, deadline=deadline_in(ask.budget_ms)))
        if reply is _GONE:
            return errors.gone()
        if type(reply) is m.Failure:
            return errors.failure_response(reply, ask.id)
        return reply

    # --- handlers ---------------------------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        got = await self.accept(request, chat.decode_chat)
        if isinstance(got, Response):
            return got
        who, req = got
        route = self.models.resolve(req.model)
        if route is None:
            return errors.error(404, f"the model {req.model!r} does not exist here (GET /v1/models lists them)",
                                "invalid_request_error", "model_not_found", param="model")
        ask_id = request.headers.get("idempotency-key")
        if ask_id is not None and not names.is_label(ask_id):
            return errors.bad_request(names.problem(ask_id, "the Idempotency-Key", "label"))
        keyed = who.key_id is not None
        end_user = as_label(req.user)
        try:
            ask = chat.to_ask(req, ask_id=ask_id or new_id(), strategy=route.strategy, providers=route.providers,
                              user=who.user if keyed else end_user, tier=who.tier, budget_ms=self.config.budget_ms,
                              labels={"end_user": end_user} if keyed and end_user else None)
        except chat.Invalid as exc:
            return errors.bad_request(str(exc), param=exc.param)
        structured = ask.schema is not None
        if req.stream:
            return await self._stream_chat(request, req, ask, structured)
        reply = await self.answer(request, ask)
        if isinstance(reply, Response):
            return reply
        return json_response(chat.completion(reply, req.model, structured))

    async def _stream_chat(self, request: Request, req: chat.ChatRequest, ask: m.Ask, structured: bool) -> Response:
        rpc = self.client.rpc
        # the gateway acknowledges as it reads (StreamAck): if this process vanishes, the router stops the work
        stream = rpc.stream(self.client.subjects.ask_stream, ask, deadline=deadline_in(ask.budget_ms), ask_id=ask.id,
                            ack_s=self.client.stream_ack_s)
        # The status is sent with the first event: until something would be shown (text, a stage, the
        # answer), a Failure is still a plain error response with its status.
        early: list = []
        while True:
            item = await self.until_disconnect(request, anext(stream))
            if item is _GONE:
                return errors.gone()
            if type(item) is m.Failure:
                await stream.aclose()
                return errors.failure_response(item, ask.id)
            early.append(item)
            if type(item) is not m.Chunk or item.delta or item.stage not in (None, "restart"):
                break
        ext = req.llmbus or chat.Extension()
        writer = chat.ChunkWriter(ask.id, req.model, structured=structured, buffer=ext.buffer,
                                  include_usage=bool(req.stream_options and req.stream_options.include_usage))

        async def events():
            try:
                yield sse(writer.start())
                for item in early[:-1]:
                    out = writer.chunk(item)
                    if out is not None:
                        yield sse(out)
                item = early[-1]
                while True:
                    kind = type(item)
                    if kind is m.Chunk:
                        out = writer.chunk(item)
                        if out is not None:
                            yield sse(out)
                    elif kind is m.Answer:
                        for out in writer.end(item):
                            yield sse(out)
                        break
                    elif kind is m.Failure:
                        yield sse(errors.failure_event(item, ask.id))
                        break
                    else:  # no other final reply comes from a router's stream; end it all the same
                        break
                    item = await anext(stream)
                yield b"data: [DONE]\n\n"
            finally:
                with anyio.CancelScope(shield=True):  # a client gone: the stream's Cancel still goes out
                    await stream.aclose()

        return StreamingResponse(events(), media_type="text/event-stream", headers=_SSE_HEADERS)

    async def list_models(self, request: Request) -> Response:
        try:
            self.principal(request)
        except Refused as r:
            return refused(r)
        return json_response(self.models.listing())

    async def post_ask(self, request: Request) -> Response:
        got = await self.accept(request, _decode_object)
        if isinstance(got, Response):
            return got
        who, raw = got
        try:
            raw.setdefault("id", new_id())
            raw.setdefault("budget_ms", self.config.budget_ms)
            if who.key_id is not None:  # the key says who asks
                raw["user"], raw["tier"] = who.user, who.tier or raw.get("tier")  # the key's tier wins
            ask = msgspec.convert(raw, m.Ask)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return errors.bad_request(f"invalid ask: {exc}")
        if ask.budget_ms is None or ask.budget_ms <= 0:
            return errors.bad_request("budget_ms must be above 0", param="budget_ms")
        if request.query_params.get("wait") in ("1", "true"):
            reply = await self.answer(request, ask)
            if isinstance(reply, Response):
                return reply
            return Response(msgspec.json.encode(reply), media_type="application/json")
        started = self.asks.start(ask, who.key_id)
        if type(started) is m.Failure:
            return errors.failure_response(started, ask.id)
        return json_response({"id": ask.id, "events": f"/v1/asks/{ask.id}/events"}, status=202)

    async def ask_events(self, request: Request) -> Response:
        try:
            who = self.principal(request, browser=True)
        except Refused as r:
            return refused(r)
        entry = self.asks.get(request.path_params["ask_id"], who.key_id)
        if entry is None:
            return errors.error(404, "no such ask here (asks are kept a while after they end)",
                                "invalid_request_error", "ask_not_found")

        async def events():
            async for item in self.asks.events(entry):
                yield sse(msgspec.to_builtins(item), event=type(item).__name__.lower())

        return StreamingResponse(events(), media_type="text/event-stream", headers=_SSE_HEADERS)

    async def delete_ask(self, request: Request) -> Response:
        try:
            who = self.principal(request)
        except Refused as r:
            return refused(r)
        entry = self.asks.get(request.path_params["ask_id"], who.key_id)
        if entry is None:
            return errors.error(404, "no such ask here", "invalid_request_error", "ask_not_found")
        await self.asks.cancel(entry)
        return json_response({"id": entry.ask_id, "cancelled": True})

    async def guard(self, request: Request) -> Response | None:
        """The dashboard's key check (``Dashboard(guard=…)``): the API's rules, with the key also
        taken from ``?key=`` or the ``llmbus_key`` cookie (a browser's EventSource sends no header)."""
        try:
            self.principal(request, browser=True)
        except Refused as r:
            return refused(r)
        return None

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        why = await self.ready() if self.ready is not None else None
        if why:
            return json_response({"status": "not ready", "reason": why}, status=503)
        return json_response({"status": "ready"})

    # --- the app ------------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/asks", self.post_ask, methods=["POST"]),
            Route("/v1/asks/{ask_id}/events", self.ask_events, methods=["GET"]),
            Route("/v1/asks/{ask_id}", self.delete_ask, methods=["DELETE"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
        ]

    def app(self) -> Starlette:
        routes = [*self.routes(), *optional_routes(self), *self.extra_routes]
        return Starlette(routes=routes, exception_handlers={Exception: self._internal,
                                                            404: self._not_found, 405: self._not_allowed})

    async def _internal(self, request: Request, exc: Exception) -> Response:
        import structlog

        structlog.get_logger("llmbus.gateway").exception("http_handler_failed", path=request.url.path)
        return errors.error(500, f"internal error: {type(exc).__name__}", "server_error", m.INTERNAL)

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return errors.error(404, f"no route {request.method} {request.url.path}", "invalid_request_error", "not_found")

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        return errors.error(405, f"{request.method} is not allowed on {request.url.path}", "invalid_request_error",
                            "method_not_allowed")


def optional_routes(gateway: Gateway) -> list[BaseRoute]:
    out: list[BaseRoute] = []
    for spec in EXTRA_ROUTES:
        module, _, function = spec.partition(":")
        try:
            loaded = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        out.extend(getattr(loaded, function)(gateway))
    return out

