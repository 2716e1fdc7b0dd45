"""Asks seen recently, by ask id: a client's retry of the same ask is answered once, fleet-wide.

**In one router** (``RecentAsks``): while an ask runs, a retry waits on the first run's future.
Once answered, only the encoded reply is kept (plain ``str → (float, bytes)`` entries: nothing the
garbage collector has to trace, which matters at thousands of asks per second) until ``window_s``
passes; failures a retry might fix (retryable kinds, cancelled) are not kept, so the retry runs again.

**Across routers** (``FleetAsks``): a retry (the client marks it with ``Llm-Attempt``: the first
attempt carries no header) may reach another router than the first attempt did. That router asks
the fleet before it runs anything: a request on ``<root>.router.held`` (every router, no queue
group) with the ask id. A router that kept the reply answers with it; one that runs the ask answers
"running" at once and sends the result to the same inbox when it is done; the others stay quiet.
No answer within ``QUERY_S`` (the owner died, or the first attempt never reached a router): the
retry runs here. So a retried ask is run and billed once whichever router gets it, a dead owner
costs its retry ``QUERY_S``, and **the common path — a first attempt — pays nothing**: no KV
round trip, no extra message. (A KV claim per ask, like the cache's flight leases, would cost a
JetStream write and delete on every ask to serve the rare retry; the owner's own memory already
knows, so the retry asks it.)

Limits, by design: a router whose loop is stalled longer than ``QUERY_S`` looks dead, and a retry
then runs the ask a second time (the client still takes one answer); two retries of the same id
that query at the same instant both run (one client's attempts are sequential, so this needs two
clients sharing an ask id).
"""

from __future__ import annotations

import asyncio

import anyio
from anyio.abc import TaskStatus
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError

from bus import codec
from bus import messages as m
from bus import names
from bus.deadline import now
from bus.subjects import Subjects

QUERY_S = 0.05  # how long a retry waits to hear that another router runs or ran its ask
HELD_HEADER = "Llm-Held"  # "running" (the result follows on the same inbox) | "done" (this is it)


class RecentAsks:
    def __init__(self, *, window_s: float, max_kept: int) -> None:
        self.window_s = window_s
        self.max_kept = max_kept
        self.running: dict[str, asyncio.Future] = {}
        self.done: dict[str, tuple[float, bytes]] = {}  # insertion order = expiry order

    def lookup(self, ask_id: str) -> asyncio.Future | m.Answer | m.Failure | None:
        """The running ask's future, the kept reply, or None when this ask id is new."""
        fut = self.running.get(ask_id)
        if fut is not None:
            return fut
        kept = self.done.get(ask_id)
        if kept is not None and kept[0] > now():
            return codec.ask_reply.decode(kept[1])
        return None

    def start(self, ask_id: str) -> None:
        self.running[ask_id] = asyncio.get_running_loop().create_future()

    def finish(self, ask_id: str, result: m.Answer | m.Failure) -> bytes | None:
        """Resolve waiting retries; keep the reply (returns its encoding) unless a retry should run."""
        fut = self.running.pop(ask_id, None)
        if fut is not None and not fut.done():
            fut.set_result(result)
        if isinstance(result, m.Failure) and (result.retryable or result.kind == m.CANCELLED):
            return None
        t = now()
        done = self.done
        while done:
            first = next(iter(done))
            if done[first][0] > t and len(done) < self.max_kept:
                break
            del done[first]
        data = codec.encode(result)
        done[ask_id] = (t + self.window_s, data)
        return data


class FleetAsks:
    """Answers other routers' "who runs this ask?" and asks it for a retry (see the module docstring)."""

    def __init__(self, recent: RecentAsks, subjects: Subjects, nc_of) -> None:
        self.recent = recent
        self.subject = subjects.router_held
        self._nc_of = nc_of  # () -> the router's connection
        self.waiting: dict[str, list[str]] = {}  # ask id -> inboxes of routers waiting for its result
        self.found = 0  # retries answered by another router's run
        self.ran = 0  # retries that found no owner and ran here

    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        nc = self._nc_of()
        sub = await nc.subscribe(self.subject, cb=self._on_query)
        await nc.flush()
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                if not nc.is_closed:
                    await sub.unsubscribe()

    async def _on_query(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            ask_id = msg.data.decode()
        except UnicodeError:
            return
        if not names.is_label(ask_id):
            return
        nc = self._nc_of()
        try:
            kept = self.recent.done.get(ask_id)
            if kept is not None and kept[0] > now():
                await nc.publish(msg.reply, kept[1], headers={HELD_HEADER: "done"})
            elif ask_id in self.recent.running:
                self.waiting.setdefault(ask_id, []).append(msg.reply)
                await nc.publish(msg.reply, b"", headers={HELD_HEADER: "running"})
        except NatsError:  # reconnecting: the asker runs it (or retries again)
            pass

    async def finished(self, ask_id: str, result: m.Answer | m.Failure, data: bytes | None) -> None:
        """The ask ended here: send its result to routers waiting for it (if any)."""
        inboxes = self.waiting.pop(ask_id, None)
        if not inboxes:
            return
        data = data if data is not None else codec.encode(result)
        nc = self._nc_of()
        for inbox in inboxes:
            try:
                await nc.publish(inbox, data, headers={HELD_HEADER: "done"})
            except NatsError:
                pass

    async def find(self, ask_id: str, deadline: float) -> m.Answer | m.Failure | None:
        """The result of ``ask_id`` from the router that runs (or ran) it, waited for until
        ``deadline``; None when no router says it has it within ``QUERY_S``."""
        nc = self._nc_of()
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        try:
            await nc.publish(self.subject, ask_id.encode(), reply=inbox)
            give_up = min(deadline, now() + QUERY_S)  # until someone says "running"
            while True:
                try:
                    msg = await sub.next_msg(timeout=max(1e-4, give_up - now()))
                except NatsTimeoutError:
                    if give_up >= deadline:
                        return m.Failure(kind=m.TIMEOUT, message="the router running this ask did not finish "
                                                                  "within the budget")
                    self.ran += 1
                    return None
                if msg.headers and msg.headers.get(HELD_HEADER) == "running":
                    give_up = deadline
                    continue
                try:
                    result = codec.ask_reply.decode(msg.data)
                except Exception:  # noqa: S112 — a broken answer: wait for another or run it here
                    continue
                self.found += 1
                return result
        finally:
            if not nc.is_closed:
                await sub.unsubscribe()
