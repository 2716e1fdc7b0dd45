"""Serve a subject: decode → handler under the deadline → exactly one reply.

An endpoint is a subject, an optional queue group, a request type and one async handler
``handler(request, ctx) -> reply``. Whatever happens, a request with a reply subject gets exactly
one reply: the handler's value, or a ``Failure`` — ``bad_request`` for bytes that do not decode,
``timeout`` when the deadline passes, ``cancelled`` when a ``Cancel`` stopped it, the error's kind for
an ``LlmError``, ``internal`` for anything else (logged with its traceback).

The deadline is enforced with an alarm (``bus.deadline.Alarms``: the loop's deadlines grouped by
millisecond, ~0.7 µs) that cancels the handler's task (and marks the context expired, so the handler
answers ``timeout``), rather than an anyio or asyncio timeout scope: nats-py is asyncio-only, and on
this path a loop timer of its own costs ~2 µs, ``asyncio.timeout_at`` ~6 µs and an anyio scope
~10 µs (measured, python 3.11).

A streaming endpoint whose request asks for acknowledgements (``Llm-Ack-Ms``: the consumer's
interval) has a watchdog alarm too: two intervals without a ``StreamAck`` (the runtime marks
``Context.acked_at``) stop the stream like a ``Cancel`` (``cancelled``, reason ``UNHEARD``), so
the work behind a consumer that vanished stops with it.

A request's W3C ``traceparent`` header is set as the handler task's ``bus.deadline.traceparent``,
so every request the handler makes carries it on (``headers_for``); with spans on (``SPANS``,
``actors.tracing``) each handled request is a span, child of the caller's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError

from bus import codec
from bus import messages as m
from bus.deadline import ACK_HEADER, ASK_ID_HEADER, BUDGET_HEADER, TRACE_HEADER, alarms, deadline_from, now, traceparent
from bus.errors import LlmError
from bus.subjects import Service, Subjects

log = structlog.get_logger("llmbus.endpoint")

# Under a recorded root (``Subjects.recording``) a request names its reply subject (``Llm-Reply``), so
# the recording pairs the reply with it and the reply stays bare (headers cost nats-py ~25 µs a
# message here); a reply to a request that does not (a client's ask) carries its request's ask id,
# call id and subject instead. Not recorded, nothing is added anywhere.
REPLY_HEADER = "Llm-Reply"  # on a request sent while recording: its reply subject
RE_HEADER = "Llm-Re"  # the request's subject, on a recorded reply
CALL_ID_HEADER = "Llm-Call-Id"
# ``actors.tracing`` sets it when spans are exported: ``SPANS(endpoint name, ctx)`` starts a span
# (its traceparent set for the requests the handler makes) and returns ``finish(result)``
SPANS: Callable[[str, Context], Callable[[Any], None]] | None = None


@dataclass(slots=True)
class Context:
    """What a handler knows about the request besides its body."""

    subject: str
    arrival: float
    deadline: float
    ask_id: str | None
    headers: dict[str, str] | None
    call_id: str | None = None  # the request's own ``id`` once decoded (a Complete's call id)
    cancel_reason: str | None = None
    expired: bool = False  # the deadline passed while the handler ran
    acked_at: float = 0.0  # a stream's last StreamAck from its consumer (the runtime sets it)

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - now())


def _expire(task: asyncio.Task, ctx: Context) -> None:
    """At the deadline: stop the handler (it answers ``timeout``)."""
    if not task.done():
        ctx.expired = True
        task.cancel()


UNHEARD = "the stream's consumer stopped acknowledging"


def _unheard(clock, task: asyncio.Task, ctx: Context, ack_s: float) -> None:
    """Two ack intervals after the last ``StreamAck``: stop the stream (and the work behind it),
    unless an ack came meanwhile — then look again two intervals after that one."""
    if task.done() or ctx.acked_at < 0.0:  # over (the stream has ended: its final reply is going out)
        return
    silent_until = ctx.acked_at + 2.0 * ack_s
    if now() >= silent_until - clock.RESOLUTION_S:
        if ctx.cancel_reason is None:
            ctx.cancel_reason = UNHEARD
        task.cancel()
    else:
        clock.at(silent_until, _unheard, clock, task, ctx, ack_s)


def ack_interval_s(headers: dict[str, str] | None) -> float:
    """The consumer's ack interval from a stream request's ``Llm-Ack-Ms`` (0: it sends no acks)."""
    raw = headers.get(ACK_HEADER) if headers else None
    if raw is None:
        return 0.0
    try:
        ms = float(raw)
    except ValueError:
        return 0.0
    return ms / 1000.0 if 0.0 < ms < 86_400_000.0 else 0.0


@dataclass(frozen=True, slots=True)
class Encoded:
    """A reply its handler already encoded (it needed the bytes itself): published as is."""

    value: Any
    data: bytes


Handler = Callable[[Any, Context], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class EndpointStatistics:
    """A snapshot of an endpoint's counters (``Endpoint.statistics()``, also served on ``$SRV.STATS``)."""

    num_requests: int  # handled or refused at admission
    num_errors: int  # answered with a Failure
    last_error: str  # "<kind>: <message>" of the last Failure, "" if none
    processing_time_ns: int  # summed over handled requests


@dataclass
class Endpoint:
    name: str
    subject: str
    request_type: Any
    handler: Handler
    queue: str = ""
    # a streaming endpoint's handler is an async generator: Chunks, then one final reply
    streaming: bool = False
    # how to rank a request when the actor is full and has a queue (``actors.admission``): higher
    # is served first; None: a full actor refuses this endpoint's requests at once
    priority: Callable[[Msg], int] | None = None
    # its root is recorded (``Subjects.recording``): a reply names the request it answers
    recording: bool = False
    # statistics for NATS micro $SRV.STATS
    num_requests: int = 0
    num_errors: int = 0
    last_error: str = ""
    processing_time_ns: int = 0
    _decoder: msgspec.json.Decoder = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._decoder = codec.decoder(self.request_type)

    @classmethod
    def serving(cls, row: Service, subjects: Subjects, handler: Handler, *, name: str = "") -> Endpoint:
        """The endpoint of an RPC-table row (``bus.subjects``): its subject, queue and request type."""
        return cls(name=row.name, subject=row.subject(subjects, name), queue=row.queue_for(name),
                   request_type=row.request, handler=handler, streaming=row.streaming,
                   recording=subjects.recording)

    def statistics(self) -> EndpointStatistics:
        return EndpointStatistics(
            num_requests=self.num_requests,
            num_errors=self.num_errors,
            last_error=self.last_error,
            processing_time_ns=self.processing_time_ns,
        )

    def context(self, msg: Msg, arrival: float, default_budget_ms: float) -> Context:
        hdrs = msg.headers
        return Context(
            subject=msg.subject,
            arrival=arrival,
            deadline=deadline_from(hdrs, arrival=arrival, fallback_ms=default_budget_ms),
            ask_id=hdrs.get(ASK_ID_HEADER) if hdrs else None,
            headers=hdrs,
        )

    async def handle(self, nc: NATS, msg: Msg, ctx: Context) -> None:
        """Run the handler for one message and publish exactly one reply (if a reply is wanted)."""
        started = time.perf_counter_ns()
        self.num_requests += 1
        hdrs = ctx.headers
        if hdrs is not None and TRACE_HEADER in hdrs:  # every request this handler makes carries it on
            traceparent.set(hdrs[TRACE_HEADER])
        span = SPANS(self.name, ctx) if SPANS is not None else None
        try:
            result = await self._run(nc, msg, ctx)
        except asyncio.CancelledError:
            if span is not None:
                span(None)
            # Stopped by the runtime (shutdown past its grace): still answer, then stop.
            if msg.reply and not nc.is_closed:
                reply = m.Failure(kind=m.UNAVAILABLE, message=f"{self.name} is stopping")
                await asyncio.shield(self._publish(nc, msg.reply, codec.encode(reply)))
            raise
        except Exception as exc:  # a bug outside the handler (decoding, the context): still answer
            log.exception("endpoint_failed", endpoint=self.name, ask_id=ctx.ask_id)
            result = m.Failure(kind=m.INTERNAL, message=f"{self.name}: {type(exc).__name__}: {exc}")
        data = None
        if type(result) is Encoded:
            result, data = result.value, result.data
        if isinstance(result, m.Failure):
            self.num_errors += 1
            self.last_error = f"{result.kind}: {result.message}"
        if span is not None:
            span(result)
        self.processing_time_ns += time.perf_counter_ns() - started
        if msg.reply and not nc.is_closed:
            hdrs = None
            if self.recording and ctx.ask_id and REPLY_HEADER not in ctx.headers:  # else the request pairs it
                hdrs = {ASK_ID_HEADER: ctx.ask_id, RE_HEADER: msg.subject}
                if ctx.call_id:
                    hdrs[CALL_ID_HEADER] = ctx.call_id
            await self._publish(nc, msg.reply, data if data is not None else codec.encode(result), hdrs)

    async def _publish(self, nc: NATS, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Publish one reply; one too large for the server becomes a Failure that fits (a reply is
        never silence), and a connection that cannot take it now is logged, not raised."""
        try:
            await nc.publish(subject, data, headers=headers)
        except MaxPayloadError:
            self.num_errors += 1
            self.last_error = f"{m.INVALID_OUTPUT}: reply too large"
            await self._publish(nc, subject, codec.encode(too_large_reply(self.name, len(data), nc.max_payload)))
        except NatsError as exc:  # closed or reconnecting with a full buffer: the caller's deadline answers
            log.warning("reply_not_sent", endpoint=self.name, error=str(exc) or type(exc).__name__)

    async def _run(self, nc: NATS, msg: Msg, ctx: Context) -> Any:
        try:
            request = self._decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError) as exc:
            return m.Failure(kind=m.BAD_REQUEST, message=f"malformed {self.name} request: {exc}")
        ctx.call_id = getattr(request, "id", None)
        body_budget = getattr(request, "budget_ms", None)
        if body_budget is not None:
            if body_budget <= 0:  # a caller's mistake, not a deadline that passed: no retry will help
                return m.Failure(kind=m.BAD_REQUEST, message=f"budget_ms must be above 0 (got {body_budget})")
            if not (ctx.headers and BUDGET_HEADER in ctx.headers):
                ctx.deadline = ctx.arrival + body_budget / 1000.0  # e.g. from `nats req`
        if ctx.deadline <= now():
            return m.Failure(kind=m.TIMEOUT, message="the budget was spent before work began")
        task = asyncio.current_task()
        clock = alarms(asyncio.get_running_loop())
        timer = clock.at(ctx.deadline, _expire, task, ctx)
        try:
            if not self.streaming:
                return await self.handler(request, ctx)
            ack_s = ack_interval_s(ctx.headers)
            if ack_s:  # the consumer acknowledges: two intervals without one stop the stream
                ctx.acked_at = now()
                clock.at(ctx.acked_at + 2.0 * ack_s, _unheard, clock, task, ctx, ack_s)
            try:
                return await self._stream(nc, msg.reply, self.handler(request, ctx))
            finally:
                ctx.acked_at = -1.0  # the watchdog, if any, stands down
        except TimeoutError:
            return m.Failure(kind=m.TIMEOUT, message=f"{self.name}: deadline passed")
        except LlmError as exc:
            return exc.failure
        except asyncio.CancelledError:
            if ctx.expired:
                task.uncancel()
                return m.Failure(kind=m.TIMEOUT, message=f"{self.name}: deadline passed")
            if ctx.cancel_reason is None:
                raise
            task.uncancel()
            return m.Failure(kind=m.CANCELLED, message=ctx.cancel_reason or "cancelled")
        except Exception as exc:  # a bug: answer, log, keep serving
            log.exception("handler_failed", endpoint=self.name, ask_id=ctx.ask_id)
            return m.Failure(kind=m.INTERNAL, message=f"{self.name}: {type(exc).__name__}: {exc}")
        finally:
            clock.cancel(timer)

    async def _stream(self, nc: NATS, reply: str, items: AsyncIterator[Any]) -> Any:
        """Publish a streaming handler's Chunks as they come; return its final item."""
        try:
            async for item in items:
                if not isinstance(item, m.Chunk):
                    return item
                if reply:
                    data = codec.encode(item)
                    if len(data) > nc.max_payload:
                        return too_large_reply(self.name, len(data), nc.max_payload)
                    await nc.publish(reply, data)
        finally:
            await items.aclose()
        return m.Failure(kind=m.INTERNAL, message=f"{self.name}: the stream ended without a final reply")


def too_large_reply(name: str, size: int, limit: int) -> m.Failure:
    return m.Failure(kind=m.INVALID_OUTPUT,
                     message=f"{name}: the reply is {size:,} bytes, over the NATS server's max_payload of {limit:,} bytes")
