"""The actor runtime: lifecycle, admission, cancellation, discovery, graceful stop.

An actor owns one NATS connection, serves a few endpoints (``bus.endpoint.Endpoint``), and talks to
others only through messages. ``await tg.start(actor.run, url)`` returns once its subscriptions are
flushed to the server (ready means: a request published now will reach it).

Per message the runtime does as little as it can: a NATS callback checks admission (a full actor
answers ``Failure(overloaded)`` at once, so nothing piles up in nats-py's pending queue, which
would drop messages silently as a slow consumer) and starts one asyncio task for the handler —
``asyncio.create_task`` costs ~5 µs here against ~36 µs for anyio's ``start_soon``; anyio still
gives the structure (task groups for actor lifetimes, readiness, shielded shutdown). An actor with
``max_queued`` (the router) lets the requests of an endpoint that ranks them (``Endpoint.priority``)
wait instead, best first, in a bounded queue (``actors.admission``); what does not fit is still
answered ``overloaded`` at once.

Stop (``actor.stop()``, or SIGINT/SIGTERM via ``serve_until_signal``): drain the serving
subscriptions (the server stops sending; messages already delivered are still dispatched), let
in-flight handlers finish and reply (up to ``stop_grace_s``, then they are cancelled and answer
``unavailable``), then close the connection. ``nc.drain()`` first would also drain the reply
subscription and strand in-flight calls.

In-flight handler tasks are kept twice: task → ``Context`` (admission, drain) and, for requests that
carry an ask id, ask id → tasks, so a ``Cancel`` finds its work without scanning everything in
flight — nor does a ``StreamAck`` (``<root>.stream.ack``, subscribed by actors that stream), which
marks its stream's ``Context.acked_at`` for the endpoint's watchdog (``bus.endpoint``).
``statistics()`` and ``in_flight()`` are the public view of both and of the endpoints' counters;
``$SRV.STATS`` is built from the same ``statistics()``.

Every actor answers NATS micro discovery on ``$SRV.PING|INFO|STATS[.<name>[.<id>]]``.

An actor is never alive and deaf: its connection reconnects forever (``bus.connection``), and if
it is closed all the same (not by ``stop()``), the actor stops at once and ``run`` raises
``ConnectionLost``, so the process exits non-zero and its supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from actors import metrics
from bus import codec
from bus import messages as m
from bus.connection import ConnectOptions, connect, rotated
from bus.deadline import alarms, now
from bus.endpoint import Context, Endpoint, EndpointStatistics
from bus.errors import Unavailable
from bus.rpc import Rpc, new_id
from bus.streams import Skipped
from bus.subjects import Subjects
from actors.admission import Queue

log = structlog.get_logger("llmbus.runtime")

try:
    VERSION = metadata.version("llmbus")
except metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "0.0.0"


@dataclass(frozen=True, slots=True)
class ActorStatistics:
    """A snapshot of an actor's counters (``Actor.statistics()``)."""

    in_flight: int  # handler tasks running now
    rejected: int  # requests refused at admission (answered ``overloaded``), or shed from its queue
    endpoints: dict[str, EndpointStatistics]  # by endpoint name: "ask", "complete", "stream", …
    skipped_events: int = 0  # poison events a consumer acknowledged and skipped (health, cost)
    queued: int = 0  # requests waiting for a slot now (``actors.admission``)
    served_from_queue: int = 0


class ConnectionLost(Unavailable):
    """The actor's connection was closed for good while it served (the process should exit non-zero)."""


class Actor:
    """Base class. Subclasses set ``kind`` and implement ``endpoints()``; ``setup()`` runs after
    connecting and before serving, ``teardown()`` after the last handler finished."""

    kind = "actor"
    description = ""

    def __init__(
        self,
        *,
        subjects: Subjects,
        name: str | None = None,
        default_budget_ms: float = 30_000,
        max_concurrency: int = 1024,
        max_queued: int = 0,
        stop_grace_s: float = 10.0,
        connect_options: ConnectOptions | None = None,
    ) -> None:
        self.subjects = subjects
        self.name = name or self.kind
        self.id = new_id()
        self.default_budget_ms = default_budget_ms
        self.max_concurrency = max_concurrency
        # full: requests of endpoints that rank them wait here, best first (actors.admission)
        self._queue = Queue(max_queued) if max_queued > 0 else None
        self.stop_grace_s = stop_grace_s
        self.connect_options = connect_options
        self.nc: NATS | None = None
        self.rpc: Rpc | None = None
        self.log = structlog.get_logger(f"llmbus.{self.kind}").bind(actor=self.name)
        self._inflight: dict[asyncio.Task, Context] = {}
        # Only requests with an ask id. Usually one task per ask here, kept bare: a set per message
        # cost ~0.7 µs against ~0.1 µs (measured); the second task of an ask turns it into a set.
        self._inflight_by_ask: dict[str, asyncio.Task | set[asyncio.Task]] = {}
        self._serving: list = []
        self._stopping = anyio.Event()
        self._started_at = ""
        self._endpoints: list[Endpoint] = []
        self._rejected = 0  # admission refusals
        self._lost = False  # the connection closed under us: run raises ConnectionLost
        self.skipped = Skipped(self.log)  # events a consumer skipped as poison

    # --- to override --------------------------------------------------------------------------
    def endpoints(self) -> list[Endpoint]:
        raise NotImplementedError

    async def setup(self) -> None:
        pass

    async def teardown(self) -> None:
        pass

    def background(self) -> list[Callable[..., Awaitable[None]]]:
        """Long-running jobs ``job(*, task_status)``: started (and ready) before serving, cancelled
        after the last handler finished."""
        return []

    async def on_reconnect(self) -> None:
        """Called after the connection came back (e.g. to re-create JetStream watchers)."""

    # --- statistics ---------------------------------------------------------------------------
    def statistics(self) -> ActorStatistics:
        return ActorStatistics(
            in_flight=len(self._inflight),
            rejected=self._rejected,
            endpoints={ep.name: ep.statistics() for ep in self._endpoints},
            skipped_events=self.skipped.count,
            queued=len(self._queue) if self._queue is not None else 0,
            served_from_queue=self._queue.served if self._queue is not None else 0,
        )

    def in_flight(self, ask_id: str | None = None) -> int:
        """Handler tasks running now: all of them, or those of one ask."""
        if ask_id is None:
            return len(self._inflight)
        tasks = self._inflight_by_ask.get(ask_id)
        if tasks is None:
            return 0
        return len(tasks) if type(tasks) is set else 1

    # --- lifecycle ----------------------------------------------------------------------------
    @property
    def micro_name(self) -> str:
        return f"{self.subjects.root}-{self.name}".replace(".", "-")

    def stop(self) -> None:
        """Ask the actor to stop gracefully; ``run`` returns when it has."""
        self._stopping.set()

    async def run(self, url: str, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        self.nc = nc = await connect(
            url, name=self.micro_name, options=self.connect_options, on_reconnect=self.on_reconnect,
            on_closed=self._on_closed, in_order=True,  # the seeds in the order given (``rotated``: spread)
        )
        try:
            self.rpc = await Rpc(nc, self.subjects).start()
            await self.setup()
            async with anyio.create_task_group() as jobs:
                for job in self.background():
                    await jobs.start(job)
                await self._serve(nc, task_status)
                jobs.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.teardown()
                if self.rpc is not None:
                    await self.rpc.close()
                if not nc.is_closed:
                    await nc.close()
                self.log.info("actor_stopped")
        if self._lost:
            await anyio.lowlevel.checkpoint()  # being cancelled (the owner stops us anyway): that wins
            raise ConnectionLost(f"{self.name}: the NATS connection was closed and could not be reopened")

    async def _on_closed(self) -> None:
        if not self._stopping.is_set():  # not our own close: never stay alive and deaf
            self._lost = True
            self.log.error("connection_lost", hint="stopping; the process exits non-zero")
            self._stopping.set()

    async def _serve(self, nc: NATS, task_status: TaskStatus) -> None:
        """Subscribe, report ready, wait for stop, then drain."""
        self._endpoints = self.endpoints()
        for ep in self._endpoints:
            self._serving.append(
                await nc.subscribe(ep.subject, queue=ep.queue, cb=self._dispatcher(ep))
            )
        cancel_sub = await nc.subscribe(self.subjects.cancel, cb=self._on_cancel)
        ack_sub = await nc.subscribe(self.subjects.stream_ack, cb=self._on_ack) if self._streams() else None
        for pattern in ("$SRV.*", f"$SRV.*.{self.micro_name}", f"$SRV.*.{self.micro_name}.{self.id}"):
            await nc.subscribe(pattern, cb=self._on_discovery)
        await nc.flush()
        self._started_at = datetime.now(timezone.utc).isoformat()
        self.log.info("actor_ready", endpoints=[ep.subject for ep in self._endpoints])
        task_status.started(self)
        try:
            await self._stopping.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await self._drain()
                if not nc.is_closed:  # a dead connection has no subscriptions to remove
                    await cancel_sub.unsubscribe()
                    if ack_sub is not None:
                        await ack_sub.unsubscribe()

    async def _drain(self) -> None:
        for sub in self._serving:
            try:
                await sub.drain()
            except Exception as exc:  # connection gone: nothing more will arrive anyway
                self.log.debug("drain_failed", error=str(exc))
        self._serving.clear()
        if self._queue is not None:  # nothing waiting is started now: another copy may take it
            for entry in list(self._queue.items):
                self._queue.remove(entry)
                await self._answer_waiting(entry, m.Failure(kind=m.UNAVAILABLE, message=f"{self.name} is stopping"))
        tasks = list(self._inflight)
        if tasks:
            self.log.info("actor_draining", in_flight=len(tasks))
            _, late = await asyncio.wait(tasks, timeout=self.stop_grace_s)
            for t in late:
                t.cancel()
            if late:
                await asyncio.wait(late)

    # --- per message --------------------------------------------------------------------------
    def _dispatcher(self, ep: Endpoint):
        loop = asyncio.get_running_loop()
        inflight = self._inflight
        by_ask = self._inflight_by_ask
        nc = self.nc
        overloaded = codec.encode(
            m.Failure(kind=m.OVERLOADED, message=f"{self.name} is at capacity ({self.max_concurrency} in flight)")
        )

        queue = self._queue

        def done(task: asyncio.Task) -> None:
            inflight.pop(task, None)
            if queue is not None and queue.items:
                self._start_waiting()

        def done_of_ask(task: asyncio.Task) -> None:
            ctx = inflight.pop(task, None)
            if queue is not None and queue.items:
                self._start_waiting()
            if ctx is None:
                return
            tasks = by_ask.get(ctx.ask_id)
            if tasks is task:
                del by_ask[ctx.ask_id]
            elif tasks is not None:
                tasks.discard(task)
                if not tasks:
                    del by_ask[ctx.ask_id]

        def start(msg: Msg, ctx: Context) -> None:
            task = loop.create_task(ep.handle(nc, msg, ctx))
            inflight[task] = ctx
            ask_id = ctx.ask_id
            if ask_id is None:  # nothing can cancel it by ask id: no index to keep
                task.add_done_callback(done)
                return
            tasks = by_ask.get(ask_id)
            if tasks is None:
                by_ask[ask_id] = task
            elif type(tasks) is set:
                tasks.add(task)
            else:
                by_ask[ask_id] = {tasks, task}
            task.add_done_callback(done_of_ask)

        async def on_msg(msg: Msg) -> None:
            if len(inflight) >= self.max_concurrency:
                if queue is not None and ep.priority is not None and msg.reply:
                    await self._wait_for_slot(ep, msg, start)
                    return
                self._rejected += 1
                ep.num_requests += 1
                ep.num_errors += 1
                if msg.reply:
                    await nc.publish(msg.reply, overloaded)
                return
            start(msg, ep.context(msg, now(), self.default_budget_ms))

        return on_msg

    # --- the queue of a full actor (actors.admission) -------------------------------------------
    async def _wait_for_slot(self, ep: Endpoint, msg: Msg, start: Callable[[Msg, Context], None]) -> None:
        ctx = ep.context(msg, now(), self.default_budget_ms)  # its deadline runs from its arrival
        try:
            priority = int(ep.priority(msg))
        except Exception:  # undecodable: the handler will say so when its turn comes
            priority = 0
        entry, refused = self._queue.offer(ep, msg, ctx, priority)
        if entry is not None:
            entry.start = start  # how a slot that frees starts it (the endpoint's dispatcher)
            entry.timer = alarms(asyncio.get_running_loop()).at(ctx.deadline, self._expire_waiting, entry)
        if refused is not None:
            if refused.timer is not None:
                alarms(asyncio.get_running_loop()).cancel(refused.timer)
            await self._answer_waiting(refused, m.Failure(
                kind=m.OVERLOADED, retry_after_s=self._queue.retry_after_s(),
                message=f"{self.name} is at capacity ({self.max_concurrency} in flight, {len(self._queue)} "
                        f"waiting, none below priority {refused.priority})"))

    def _start_waiting(self) -> None:
        """A slot freed: start the best request waiting (from a handler's done callback)."""
        queue = self._queue
        clock = None
        while queue.items and len(self._inflight) < self.max_concurrency:
            entry = queue.pop()
            if entry.timer is not None:
                clock = clock or alarms(asyncio.get_running_loop())
                clock.cancel(entry.timer)
            entry.start(entry.msg, entry.ctx)

    def _expire_waiting(self, entry) -> None:
        if self._queue.remove(entry):
            asyncio.get_running_loop().create_task(self._answer_waiting(
                entry, m.Failure(kind=m.TIMEOUT, message=f"{self.name}: waited for a slot until the deadline")))

    async def _answer_waiting(self, entry, failure: m.Failure) -> None:
        self._rejected += failure.kind == m.OVERLOADED
        entry.ep.num_requests += 1
        entry.ep.num_errors += 1
        entry.ep.last_error = f"{failure.kind}: {failure.message}"
        if not self.nc.is_closed:
            try:
                await self.nc.publish(entry.msg.reply, codec.encode(failure))
            except Exception as exc:  # closed or reconnecting: the caller's deadline answers
                self.log.debug("reply_not_sent", error=str(exc))

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            cancel = codec.cancel.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if self._queue is not None and self._queue.items:  # waiting for a slot: answered now
            for entry in self._queue.of_ask(cancel.ask_id):
                if (cancel.call_id is None or cancel.call_id == entry.ctx.call_id) and self._queue.remove(entry):
                    alarms(asyncio.get_running_loop()).cancel(entry.timer)
                    await self._answer_waiting(entry, m.Failure(
                        kind=m.TIMEOUT if cancel.deadline else m.CANCELLED,
                        message=cancel.reason or "cancelled by request"))
        tasks = self._inflight_by_ask.get(cancel.ask_id)
        if tasks is None:
            return
        reason = cancel.reason or "cancelled by request"
        # a copy: an ask has a few tasks, and the set must not change under the loop
        for task in list(tasks) if type(tasks) is set else (tasks,):
            ctx = self._inflight.get(task)
            if ctx is None or (cancel.call_id is not None and cancel.call_id != ctx.call_id):
                continue
            if cancel.deadline:  # the caller gave up at its deadline: the same as this deadline passing
                ctx.expired = True
            elif ctx.cancel_reason is None:  # the first Cancel says why (a second, e.g. the router's
                ctx.cancel_reason = reason  # own Cancel of its calls, must not rewrite the reason)
            task.cancel()

    def _streams(self) -> bool:
        return any(ep.streaming for ep in self._endpoints)

    async def _on_ack(self, msg: Msg) -> None:
        """A ``StreamAck``: the consumer of that stream is still there (``bus.endpoint``'s watchdog)."""
        try:
            ack = codec.stream_ack.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        tasks = self._inflight_by_ask.get(ack.ask_id)
        if tasks is None:
            return
        at = now()
        for task in tasks if type(tasks) is set else (tasks,):
            ctx = self._inflight.get(task)
            if ctx is not None and ctx.acked_at > 0.0 and (ack.call_id is None or ack.call_id == ctx.call_id):
                ctx.acked_at = at

    # --- NATS micro discovery -----------------------------------------------------------------
    def micro_metadata(self) -> dict[str, str]:
        """What discovery says about this actor besides its name (providers add kind and model)."""
        return {"kind": self.kind}

    async def _on_discovery(self, msg: Msg) -> None:
        verb = msg.subject.split(".")[1]
        base = {"name": self.micro_name, "id": self.id, "version": VERSION, "metadata": self.micro_metadata()}
        if verb == "PING":
            body = {"type": "io.nats.micro.v1.ping_response", **base}
        elif verb == "INFO":
            body = {
                "type": "io.nats.micro.v1.info_response",
                **base,
                "description": self.description,
                "endpoints": [
                    {"name": ep.name, "subject": ep.subject, "queue_group": ep.queue, "metadata": None}
                    for ep in self._endpoints
                ],
            }
        elif verb == "STATS":
            stats = self.statistics()
            data = {"in_flight": stats.in_flight, "rejected": stats.rejected}
            body = {
                "type": "io.nats.micro.v1.stats_response",
                **base,
                "started": self._started_at,
                "endpoints": [
                    {
                        "name": ep.name,
                        "subject": ep.subject,
                        "queue_group": ep.queue,
                        "num_requests": (st := stats.endpoints[ep.name]).num_requests,
                        "num_errors": st.num_errors,
                        "last_error": st.last_error,
                        "processing_time": st.processing_time_ns,
                        "average_processing_time": st.processing_time_ns // max(1, st.num_requests),
                        # the process's metrics once (actors.metrics; `llmbus status` reads them)
                        "data": data if i else {**data, "metrics": metrics.snapshot()},
                    }
                    for i, ep in enumerate(self._endpoints)
                ],
            }
        else:
            return
        if msg.reply:
            await self.nc.publish(msg.reply, codec.encode(body))


async def run_actors(
    actors: Sequence[Actor], url: str, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED
) -> None:
    """Run several actors in this process; ready once all are; stops them all on cancel/stop."""
    async with anyio.create_task_group() as tg:
        for i, actor in enumerate(actors):  # several seeds (a cluster): actor i connects to seed i first
            await tg.start(actor.run, rotated(url, i))
        # Everything alive now (modules, actors, connections) lives as long as the process: move it
        # out of the collector's sight so full collections stay short (measured: ~4 % CPU at load).
        gc.freeze()
        task_status.started(actors)


async def stop_on_signal(actors: Sequence[Actor]) -> None:
    """Wait for SIGINT/SIGTERM, then stop every actor gracefully (returns after the signal)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("signal", signal=signal.Signals(signum).name)
            for actor in actors:
                actor.stop()
            return
