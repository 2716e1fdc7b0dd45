"""A provider's facts for the other actors — one ``Outcome`` per call, one ``Usage`` per answered
call — sent in batches.

Each event is a stream message that nats-server stores and a publish that nats-py frames: two per
call, as many as the call itself costs on the bus (measured: ~15 % of one-process throughput at
0 ms latency). So a provider keeps what happened within ``every_s`` (5 ms) and publishes it as one
``Outcomes`` and one ``Usages`` message (a lone event goes as itself); at ``max_items`` it sends at
once. Health and cost read either form (``OutcomeEvent``, ``UsageEvent``). The cost: health learns
of a failure up to ``every_s`` later.

**Usage is billing: it is sent until the events stream has it.** Outcomes are plain publishes (a
lost one costs a breaker one sample). Usage goes through ``UsageOutbox``: one JetStream publish per
batch, kept until its PubAck arrives and sent again with backoff when none does — while the stream
has no leader (a server of the cluster died: ~5 s of raft election), while the connection
reconnects, or while the stream is missing. A batch keeps its ``Nats-Msg-Id`` across re-sends, so
the server drops a copy it already stored (an ack lost on the way) within its duplicate window
(2 min); after that the cost actor's ledger key per (ask id, call id) still counts it once. The
outbox is bounded (``max_age_s`` 5 min, ``max_bytes`` 64 MiB): what is older or beyond is dropped,
logged (``usage_dropped``) and counted (``llmbus_usage_dropped_total``). On stop the rest is sent
before the connection closes, for at most the actor's stop grace.
"""

from __future__ import annotations

import time
from collections import deque

import anyio
import structlog
from anyio.abc import TaskStatus

from actors import metrics
from bus import codec
from bus import messages as m
from bus.rpc import new_id

EVERY_S = 0.005
MAX_ITEMS = 256
MAX_BATCH_BYTES = 256 * 1024  # well under nats-server's default max_payload (1 MiB)
ACK_TIMEOUT_S = 2.0
BACKOFF_S = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)

log = structlog.get_logger("llmbus.events")


class EventBatches:
    def __init__(self, nc_of, outcome_subject: str, usage_subject: str, *,
                 every_s: float = EVERY_S, max_items: int = MAX_ITEMS, provider: str = "",
                 outbox: UsageOutbox | None = None) -> None:
        self._nc_of = nc_of  # () -> the actor's connection (it may be replaced on restart)
        self.outcome_subject = outcome_subject
        self.usage_subject = usage_subject
        self.every_s = every_s
        self.max_items = max_items
        self.outcomes: list[m.Outcome] = []
        self.usages: list[m.Usage] = []
        self.outbox = outbox or UsageOutbox(usage_subject, provider=provider or usage_subject.rsplit(".", 1)[-1],
                                            max_items=max_items)
        self._pending = anyio.Event()
        self.sent = 0  # outcome messages published (for statistics; the outbox counts its own)

    def add(self, outcome: m.Outcome, usage: m.Usage | None) -> None:
        self.outcomes.append(outcome)
        if usage is not None:
            self.usages.append(usage)
        if len(self.outcomes) == 1:
            self._pending.set()
        elif len(self.outcomes) >= self.max_items:
            self._pending.set()

    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self.outbox.run, self._nc_of)
            task_status.started()
            while True:
                await self._pending.wait()
                if len(self.outcomes) < self.max_items:
                    await anyio.sleep(self.every_s)
                self._pending = anyio.Event()
                await self._send()

    async def _send(self) -> None:
        nc = self._nc_of()
        usages, self.usages = self.usages, []
        if usages:
            self.outbox.put(usages)
        if nc is None or nc.is_closed:
            return
        outcomes, self.outcomes = self.outcomes, []
        if outcomes:
            await nc.publish(self.outcome_subject,
                             codec.encode(outcomes[0] if len(outcomes) == 1 else m.Outcomes(items=outcomes)))
            self.sent += 1

    async def flush(self, within_s: float = 10.0) -> None:
        """Send what is kept: the outcomes now, the usage until acknowledged or ``within_s`` is over
        (what is left then is dropped and counted). For a stopping actor, after its last handler."""
        await self._send()
        await self.outbox.close(self._nc_of(), within_s)


class _Batch:
    """One ``Usages`` message as sent (and sent again, the same bytes under the same id)."""

    __slots__ = ("msg_id", "payload", "count", "kept_at")

    def __init__(self, msg_id: str, payload: bytes, count: int, kept_at: float) -> None:
        self.msg_id, self.payload, self.count, self.kept_at = msg_id, payload, count, kept_at


class UsageOutbox:
    """Usage events until the events stream acknowledges them (see the module's docstring).

    ``put`` only appends (the hot path); ``run`` sends: whatever waits becomes one batch per round
    trip, so under load a batch carries what arrived during the previous ack. ``acked=False``
    (no JetStream at the provider's setup: nothing would ever acknowledge) sends plain publishes.
    """

    def __init__(self, subject: str, *, provider: str, max_items: int = MAX_ITEMS, max_age_s: float = 300.0,
                 max_bytes: int = 64 << 20, ack_timeout_s: float = ACK_TIMEOUT_S, clock=time.monotonic) -> None:
        self.subject = subject
        self.provider = provider
        self.max_items = max_items
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.ack_timeout_s = ack_timeout_s
        self.clock = clock
        self.acked = True
        self.waiting: list[m.Usage] = []  # not sent yet: joins the next batch
        self.unacked: deque[_Batch] = deque()  # sent, no PubAck yet: sent again as they are
        self.bytes = 0  # of the unacked batches
        self.sent = 0  # batches acknowledged (or published plain)
        self.sent_events = 0  # the usage events in them
        self.failed = 0  # publishes not acknowledged (each batch is sent again)
        self.duplicates = 0  # re-sends the server already had (an ack lost on the way)
        self.dropped = 0  # usage events given up
        self._prefix = new_id()
        self._seq = 0
        self._wake = anyio.Event()
        self._js = None
        self._js_of = None
        self._failed_said = -1e9

    def put(self, usages: list[m.Usage]) -> None:
        self.waiting.extend(usages)
        self._wake.set()

    def __len__(self) -> int:
        """Usage events not acknowledged yet."""
        return len(self.waiting) + sum(b.count for b in self.unacked)

    async def run(self, nc_of, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        attempt = 0
        while True:
            if not self.waiting and not self.unacked:
                await self._wake.wait()
            self._wake = anyio.Event()
            if await self.send(nc_of()):
                attempt = 0
                continue
            await anyio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
            attempt += 1

    async def send(self, nc) -> bool:
        """Publish every batch that waits, oldest first; True once all are acknowledged, False at
        the first that is not (it stays, the later ones too)."""
        self._keep()
        if nc is None or nc.is_closed or not nc.is_connected:  # reconnecting: publishes would pile up in nats-py
            return False
        if not self.acked:
            while self.unacked:
                batch = self.unacked[0]
                try:
                    await nc.publish(self.subject, batch.payload)
                except Exception:  # the connection went away meanwhile: again later
                    return False
                self.unacked.popleft()
                self.bytes -= len(batch.payload)
                self.sent += 1
                self.sent_events += batch.count
            return True
        if self._js_of is not nc:
            self._js, self._js_of = nc.jetstream(), nc
        while self.unacked:
            batch = self.unacked[0]
            try:
                ack = await self._js.publish(self.subject, batch.payload, timeout=self.ack_timeout_s,
                                             headers={"Nats-Msg-Id": batch.msg_id})
            except Exception as exc:  # no leader, no stream, no connection: the same bytes and id later
                self.failed += 1
                now = self.clock()
                if now - self._failed_said >= 10.0:
                    self._failed_said = now
                    log.info("usage_unacknowledged", provider=self.provider, waiting=len(self),
                             error=f"{type(exc).__name__}: {exc}"[:200])
                return False
            if ack.duplicate:
                self.duplicates += 1
            self.unacked.popleft()
            self.bytes -= len(batch.payload)
            self.sent += 1
            self.sent_events += batch.count
            if self.waiting:  # arrived during the round trip: the next batch
                self._keep()
        return True

    def _keep(self) -> None:
        """Turn what waits into batches (ids, bytes), then drop beyond the bounds."""
        now = self.clock()
        waiting, self.waiting = self.waiting, []
        for i in range(0, len(waiting), self.max_items):
            self._batch(waiting[i:i + self.max_items], now)
        too_old = now - self.max_age_s
        while self.unacked and (self.unacked[0].kept_at < too_old or self.bytes > self.max_bytes):
            why = f"kept {self.max_age_s:.0f} s" if self.unacked[0].kept_at < too_old else \
                f"the outbox holds {self.max_bytes} bytes"
            batch = self.unacked.popleft()
            self.bytes -= len(batch.payload)
            self._drop(batch, why)

    def _batch(self, items: list[m.Usage], now: float) -> None:
        payload = codec.encode(items[0] if len(items) == 1 else m.Usages(items=items))
        if len(payload) > MAX_BATCH_BYTES and len(items) > 1:  # long labels: split until it fits
            half = len(items) // 2
            self._batch(items[:half], now)
            self._batch(items[half:], now)
            return
        self._seq += 1
        batch = _Batch(f"{self._prefix}-{self._seq}", payload, len(items), now)
        if len(payload) > MAX_BATCH_BYTES:
            self._drop(batch, "one usage event larger than a message may be")
            return
        self.unacked.append(batch)
        self.bytes += len(payload)

    def _drop(self, batch: _Batch, why: str) -> None:
        self.dropped += batch.count
        metrics.usage_dropped(self.provider, batch.count)
        log.warning("usage_dropped", provider=self.provider, events=batch.count, why=why,
                    kept_s=round(self.clock() - batch.kept_at, 1), dropped=self.dropped)

    async def close(self, nc, within_s: float) -> None:
        """Send what is left for at most ``within_s``; drop (and count) the rest."""
        give_up = self.clock() + within_s
        attempt = 0
        with anyio.move_on_after(within_s):
            while (self.waiting or self.unacked) and not (nc is None or nc.is_closed):
                if await self.send(nc):
                    break
                pause = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
                if self.clock() + pause >= give_up:
                    break
                await anyio.sleep(pause)
                attempt += 1
        self._keep()
        while self.unacked:
            batch = self.unacked.popleft()
            self.bytes -= len(batch.payload)
            self._drop(batch, "unacknowledged when the provider stopped")


def each(event):
    """The events in a stream message of either form."""
    return event.items if type(event) in (m.Outcomes, m.Usages) else (event,)
