"""The live dashboard: ``GET /`` (one HTML page, vanilla JS, no build step), ``GET /dashboard/state``
(a JSON snapshot), ``GET /dashboard/events`` (SSE: the state, at most ``1 / MIN_PUSH_S`` times a
second, at once when a breaker or an alert changes), ``GET /dashboard/trace/{ask_id}`` (an ask's
trace from the recording, as ``llmbus trace`` prints it; ``?format=json`` for the JSON) and
``/dashboard/static/…``.

Where the figures come from (nothing here imports another actor's state):

- breaker states: a watch on the health KV bucket (``state.*``), so a change is on the page within
  milliseconds of the health actor storing it (and the health report every second, should the watch
  be lost with a restarted server);
- success rates and latency: ``<root>.events.outcome.>`` (plain subscription: the last minute) and the
  fleet's health report (``health.status.each``, every ``POLL_HEALTH_S``);
- spend today by tier: the cost report (``cost.report`` by tier, today UTC); cache hit rate: the fleet's
  cache stats; alerts: ``<root>.events.alert`` events;
- asks per second by strategy, fallback routes and recent failures: the asks (``<root>.ask``,
  ``<root>.ask.stream``) and their final replies (a subscription per asking client's reply prefix,
  not every reply of the fleet), watched only while someone looks at the page (an SSE stream is open,
  or the state was read in the last ``LINGER_S``): receiving every ask costs the process real time,
  so nobody pays for it when nobody looks. The health, cost, cache and strategy reports are polled
  only then too (a page that opens gets them at once): a gateway nobody looks at asks the fleet nothing.

``guard``, when given, is awaited with each request and may return a Response (401/403) to refuse it:
the gateway passes its key check, so the dashboard follows the API's key rules.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from actors.gateway.board import Board
from actors.pure.facts import outcome_problem
from actors.gateway.trace_view import trace_response
from bus import codec
from bus import messages as m
from bus.deadline import deadline_in
from bus.deadline import now as monotonic
from bus.rpc import Rpc
from bus.streams import KvMirror
from bus.subjects import CONTROL_STRATEGY, COST_REPORT, Subjects

STATIC = Path(__file__).parent / "static"
MIN_PUSH_S = 0.33  # at most ~3 pushes a second per browser; breaker and alert changes go at once
KEEPALIVE_S = 15.0
LINGER_S = 10.0  # the traffic watch stays this long after the last look
POLL_HEALTH_S = 1.0
POLL_REPORTS_S = 2.0
PENDING_KEPT_S = 300.0  # an ask whose reply was never seen is forgotten then
CLIENT_IDLE_S = 300.0  # a client that asked nothing for this long: its replies are no longer followed
BACKFILL_BUDGET_S = 5.0
ALERTS_SINCE_S = 24 * 3600.0  # alerts that fired (and did not resolve) this long ago still show
FAILURES_SINCE_S = 900.0

log = structlog.get_logger("llmbus.dashboard")
Guard = Callable[[Request], Awaitable[Response | None]]


class _AskHead(msgspec.Struct):
    """The fields of an Ask the dashboard reads (the rest is skipped while decoding)."""

    id: str = ""
    strategy: str | None = None
    tier: str | None = None


class _ReplyHead(msgspec.Struct):
    """The fields of an Answer or Failure the dashboard reads."""

    type: str = ""
    strategy: str | None = None
    cached: bool = False
    route: list[m.Step] = []
    kind: str = ""
    message: str = ""
    provider: str | None = None
    metadata: dict[str, Any] = {}


_ask_head = msgspec.json.Decoder(_AskHead)
_reply_head = msgspec.json.Decoder(_ReplyHead)
_breaker = msgspec.json.Decoder(m.BreakerState)
_CHUNK = b'"type":"Chunk"'


def today(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d")


class Dashboard:
    def __init__(self, nc, subjects: Subjects, settings, *, guard: Guard | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.nc = nc
        self.subjects = subjects
        self.settings = settings
        self.guard = guard
        self.clock = clock
        tiers = getattr(settings, "tiers", {}) or {}
        missing = {name: p.missing_key() for name, p in settings.providers.items()}
        self.board = Board(list(settings.providers),
                           {name: [r.name for r in t.routes] for name, t in tiers.items() if t.fallback_routes},
                           {name: env for name, env in missing.items() if env})
        self.strategies: m.StrategyReport | None = None  # the routers' default and per-tier strategies
        self.viewers = 0  # open SSE streams
        self._looked = -LINGER_S  # monotonic time of the last state read
        self._pending: dict[str, tuple[str, str | None, str | None, float]] = {}  # reply -> ask id, strategy, tier, t
        self._clients: dict[str, list] = {}  # a client's reply prefix -> [its subscription, last ask's time]
        self._reply_root = f"{subjects.root}.reply."
        self._moved = anyio.Event()
        self._look = anyio.Event()
        self._stopped = False
        self._frame: tuple[int, float, bytes] = (-1, 0.0, b"")

    # --- the bus side ---------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch the bus until cancelled; ready once breaker states are loaded and the events
        subscription is known to the server."""
        rpc = await Rpc(self.nc, self.subjects).start()
        fleet = SimpleNamespace(nc=self.nc, subjects=self.subjects, rpc=rpc)
        events = await self.nc.subscribe(self.subjects.events, cb=self._on_event)
        try:
            async with anyio.create_task_group() as tg:
                mirror = KvMirror(self.nc, self.subjects.bucket("health"), "state.>", on_change=self._on_breaker)
                await tg.start(mirror.run)
                await self.nc.flush()
                tg.start_soon(self._poll_health, fleet)
                tg.start_soon(self._poll_reports, fleet)
                tg.start_soon(self._watch_traffic)
                tg.start_soon(self._backfill)
                task_status.started()
        finally:
            self._stopped = True
            self._notify()
            with anyio.CancelScope(shield=True):
                for closing in (events.unsubscribe, rpc.close):
                    try:
                        await closing()
                    except Exception:  # noqa: S110 — the connection is closed already
                        pass

    def _notify(self) -> None:
        moved, self._moved = self._moved, anyio.Event()
        moved.set()

    def _on_breaker(self, key: str, value: bytes | None) -> None:
        if value is None:
            return
        try:
            self.board.breaker(_breaker.decode(value))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        self._notify()

    async def _on_event(self, msg) -> None:
        kind = msg.subject[len(self.subjects.root) + 8:]  # after "<root>.events."
        try:
            if kind.startswith("outcome."):
                from actors.providers.events import each

                for outcome in each(codec.decoder(m.OutcomeEvent).decode(msg.data)):
                    if outcome_problem(outcome) is None:  # forged or broken: skipped, as health skips it
                        self.board.outcome(outcome)
            elif kind == "alert" or kind.startswith("alert."):
                body = msgspec.json.decode(msg.data)
                if not isinstance(body, dict) or not self.board.alert(body, self.clock()):
                    return
            else:
                return
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        self._notify()

    async def _backfill(self) -> None:
        """What happened before this dashboard started: alerts still active (the events stream), and
        recent failed asks when the recording keeps only failures (``[record] sampling = "errors"``)."""
        from actors import recording

        with anyio.move_on_after(BACKFILL_BUDGET_S):
            try:
                for rec in await recording.read(self.nc, self.subjects.events_stream, since_s=ALERTS_SINCE_S,
                                                subject=f"{self.subjects.root}.events.alert"):
                    body = msgspec.json.decode(rec.data)
                    if isinstance(body, dict):
                        self.board.alert(body, self.clock())
                if getattr(self.settings.record, "sampling", "off") == "errors":
                    records = await recording.read(self.nc, self.subjects.record_stream, since_s=FAILURES_SINCE_S)
                    for line in recording.list_asks(self.subjects, records):
                        if line.failed and line.ask_id not in {f["ask_id"] for f in self.board.failures}:
                            self.board.failed(line.strategy or "", ask_id=line.ask_id, kind=line.outcome,
                                              message=f"recorded: {line.prompt}", provider=None, at=line.at,
                                              count=False)
            except Exception as exc:  # noqa: BLE001 — a backfill is a nicety: the live view goes on
                log.info("dashboard_backfill_failed", error=str(exc) or type(exc).__name__)
        self._notify()

    async def _poll_health(self, fleet) -> None:
        from actors.copies import fleet_health

        while True:
            await self._until_watched()  # nobody looks: the fleet is not asked (the KV watch goes on)
            try:
                report = await fleet_health(fleet, m.HealthQuery())
                if isinstance(report, m.HealthReport):
                    self.board.health(report, self.clock())
                    self._notify()
            except Exception as exc:  # a reconnecting server: the next poll tries again
                log.info("dashboard_poll_failed", source="health", error=str(exc) or type(exc).__name__)
            await anyio.sleep(POLL_HEALTH_S)

    async def _poll_reports(self, fleet) -> None:
        from actors.copies import fleet_cache

        while True:
            await self._until_watched()
            try:
                day = today(self.clock())
                cost = await fleet.rpc.service(COST_REPORT, m.CostQuery(by="tier", since=day, until=day),
                                               deadline=deadline_in(1_000))
                if isinstance(cost, m.CostReport):
                    self.board.cost(cost, day, self.clock())
                choice = await fleet.rpc.service(CONTROL_STRATEGY, m.StrategyQuery(), deadline=deadline_in(1_000))
                if isinstance(choice, m.StrategyReport):
                    self.strategies = choice
                stats = await fleet_cache(fleet)
                if isinstance(stats, m.CacheStats):
                    self.board.cache_stats(stats, self.clock())
                self._notify()
            except Exception as exc:
                log.info("dashboard_poll_failed", source="reports", error=str(exc) or type(exc).__name__)
            await anyio.sleep(POLL_REPORTS_S)

    def _watched(self) -> bool:
        return self.viewers > 0 or monotonic() - self._looked < LINGER_S

    def _looked_now(self) -> None:
        self._looked = monotonic()
        look, self._look = self._look, anyio.Event()  # wakes every waiter; the next wait takes a new one
        look.set()

    async def _until_watched(self) -> None:
        while not self._watched():
            await self._look.wait()

    async def _watch_traffic(self) -> None:
        """Subscribe to asks and replies while the page is watched; unsubscribe when nobody looks."""
        while True:
            await self._until_watched()
            subs = []
            try:
                for subject in (self.subjects.ask, self.subjects.ask_stream):
                    subs.append(await self.nc.subscribe(subject, cb=self._on_ask))
                self.board.sources["traffic"] = self.clock()
                while self._watched():
                    await anyio.sleep(1.0)
                    await self._forget_clients(monotonic() - CLIENT_IDLE_S)
            except Exception as exc:  # closed or reconnecting: the dashboard lives on, the watch tries again
                log.info("dashboard_watch_failed", error=str(exc) or type(exc).__name__)
                await anyio.sleep(1.0)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._forget_clients(float("inf"))
                    for sub in subs:
                        try:
                            await sub.unsubscribe()
                        except Exception:  # noqa: S110 — closed already
                            pass
                self._pending.clear()
                self.board.sources.pop("traffic", None)

    async def _watch_client(self, reply: str, now: float) -> None:
        """Subscribe to the replies of the client that sent an ask (``<root>.reply.<client>.*``), once:
        the fleet's other replies (to routers' calls of providers, the cache, the cost actor) never
        reach this process. The first ask of a client can be answered before the server has the
        subscription: that answer is missed (an ask whose reply is not under the root is not
        followed: ``nats req``'s ``_INBOX``)."""
        prefix = reply[:reply.rfind(".")]
        seen = self._clients.get(prefix)
        if seen is not None:
            seen[1] = now
            return
        self._clients[prefix] = seen = [None, now]
        try:
            seen[0] = await self.nc.subscribe(prefix + ".*", cb=self._on_reply)
        except Exception as exc:  # reconnecting: the client's next ask tries again
            self._clients.pop(prefix, None)
            log.info("dashboard_watch_failed", error=str(exc) or type(exc).__name__)

    async def _forget_clients(self, before: float) -> None:
        for prefix, (sub, last) in list(self._clients.items()):
            if last < before and sub is not None:
                del self._clients[prefix]
                try:
                    await sub.unsubscribe()
                except Exception:  # noqa: S110 — closed already
                    pass

    async def _on_ask(self, msg) -> None:
        if not msg.reply:
            return
        try:
            head = _ask_head.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        now = monotonic()
        pending = self._pending
        while pending:  # forget the oldest whose reply never came (another root's client, a crash)
            first = next(iter(pending))
            if now - pending[first][3] < PENDING_KEPT_S and len(pending) < 50_000:
                break
            del pending[first]
        if msg.reply.startswith(self._reply_root):
            pending[msg.reply] = (head.id, head.strategy, head.tier, now)
            await self._watch_client(msg.reply, now)

    async def _on_reply(self, msg) -> None:
        ask = self._pending.get(msg.subject)
        if ask is None or _CHUNK in msg.data[:24]:
            return
        try:
            head = _reply_head.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        del self._pending[msg.subject]
        ask_id, strategy, tier, _ = ask
        if strategy is None:  # the routers chose: the tier's strategy, else their default
            known = self.strategies
            strategy = (known.tiers.get(tier or "") or known.default) if known is not None else "default"
        at = self.clock()
        if head.type == "Answer":
            self.board.answered(head.strategy or strategy, cached=head.cached, route=head.route, at=at,
                                metadata=head.metadata)
        elif head.type == "Failure":
            self.board.failed(strategy, ask_id=ask_id, kind=head.kind, message=head.message,
                              provider=head.provider, at=at, route=head.route)
        else:
            return
        self._notify()

    # --- the HTTP side --------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self._guarded(self._page), methods=["GET"]),
            Route("/dashboard/state", self._guarded(self._state), methods=["GET"]),
            Route("/dashboard/events", self._guarded(self._events), methods=["GET"]),
            Route("/dashboard/trace/{ask_id}", self._guarded(self._trace), methods=["GET"]),
            Mount("/dashboard/static", app=StaticFiles(directory=STATIC), name="dashboard-static"),
        ]

    def _guarded(self, handler: Callable[[Request], Awaitable[Response]]):
        if self.guard is None:
            return handler
        guard = self.guard

        async def checked(request: Request) -> Response:
            refused = await guard(request)
            return refused if refused is not None else await handler(request)

        return checked

    def snapshot(self) -> dict[str, Any]:
        snap = self.board.snapshot(self.clock())
        snap["root"] = self.subjects.root
        snap["watching_traffic"] = "traffic" in self.board.sources
        return snap

    def _encoded(self) -> bytes:
        """The current state as one SSE frame, shared by every browser (made at most every 0.1 s)."""
        version, made, frame = self._frame
        now = monotonic()
        if version != self.board.version or now - made > 0.1:
            body = msgspec.json.encode(self.snapshot())
            frame = b"event: state\nid: %d\ndata: %s\n\n" % (self.board.version, body)
            self._frame = (self.board.version, now, frame)
        return frame

    async def _page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    async def _state(self, request: Request) -> Response:
        self._looked_now()
        return Response(msgspec.json.encode(self.snapshot()), media_type="application/json")

    async def _events(self, request: Request) -> Response:
        return StreamingResponse(self._stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _stream(self):
        self.viewers += 1
        self._looked_now()
        board = self.board
        sent, urgent_seen, pushed = -1, board.urgent, -MIN_PUSH_S
        try:
            yield b"retry: 2000\n\n"
            while not self._stopped:
                if board.version == sent:
                    with anyio.move_on_after(KEEPALIVE_S) as idle:
                        await self._moved.wait()
                    if idle.cancelled_caught:
                        yield b": keepalive\n\n"
                    continue
                wait = pushed + MIN_PUSH_S - monotonic()
                if wait > 0 and board.urgent == urgent_seen:
                    with anyio.move_on_after(wait):  # an urgent change cuts the wait short
                        while board.urgent == urgent_seen and not self._stopped:
                            await self._moved.wait()
                    continue
                sent, urgent_seen, pushed = board.version, board.urgent, monotonic()
                yield self._encoded()
        finally:
            self.viewers -= 1

    async def _trace(self, request: Request) -> Response:
        ask_id = request.path_params["ask_id"]
        return await trace_response(self.nc, self.subjects, ask_id, as_json=request.query_params.get("format") == "json",
                                    seen=self.board.failure(ask_id), key=request.query_params.get("key"))
