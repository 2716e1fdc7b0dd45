"""Reading the recording (``<ROOT>_RECORD``) and the events stream: an ask's messages, its trace
tree, the list of recent asks, and replay under an isolated root (``llmbus trace|asks|replay``).

Both streams are read with ephemeral pull consumers (DESIGN §4: a push consumer under a captured
subject is refused), acknowledging nothing. JetStream cannot filter on a header, so the reader
scans the window (``since``) and keeps the messages whose ``Llm-Ask-Id`` is the ask's; a reply
carries its request's ask id, call id and subject (``bus.subjects.Subjects.recording``), which pairs it
with its request. Times are the server's store times, one clock for every actor: a trace works
after every actor restarted.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from bus import codec
from bus import messages as m
from bus.deadline import ASK_ID_HEADER
from bus.endpoint import CALL_ID_HEADER, RE_HEADER, REPLY_HEADER
from bus.subjects import Subjects


@dataclass
class Rec:
    seq: int
    subject: str
    at: float  # unix seconds (the server's store time)
    headers: dict[str, str]
    data: bytes

    @property
    def ask_id(self) -> str | None:
        return self.headers.get(ASK_ID_HEADER)

    def body(self) -> Any:
        try:
            return msgspec.json.decode(self.data)
        except (msgspec.DecodeError, UnicodeError):
            return None


async def read(nc: NATS, stream: str, *, since_s: float | None = None, batch: int = 2048,
               subject: str = ">", from_time: float | None = None, from_seq: int | None = None,
               stop: Callable[[Rec, float], bool] | None = None) -> list[Rec]:
    """Every message of ``stream`` (those stored in the last ``since_s`` seconds, or from the unix
    time ``from_time``, or from the sequence ``from_seq``, when given; only those on ``subject``
    when given: the server filters, the rest is never sent), up to the first one ``stop(rec,
    stored_at)`` is true of (fetched ``STOPPED_BATCH`` at a time then: nats-py builds every
    message of a batch)."""
    js = nc.jetstream()
    if stop is not None:
        batch = min(batch, STOPPED_BATCH)
    if from_time is None and since_s is not None:
        from_time = time.time() - since_s
    if from_seq is not None:
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                opt_start_seq=max(1, from_seq), inactive_threshold=30.0, mem_storage=True)
    elif from_time is None:
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
                                inactive_threshold=30.0, mem_storage=True)
    else:
        start = dt.datetime.fromtimestamp(from_time, tz=dt.timezone.utc)
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.BY_START_TIME,
                                opt_start_time=start.isoformat().replace("+00:00", "Z"),
                                inactive_threshold=30.0, mem_storage=True)
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return []
    if info.state.messages == 0:
        return []
    psub = await js.pull_subscribe(subject, stream=stream, config=config)
    out: list[Rec] = []
    asked: dict[str, Rec] = {}  # reply subject -> the request that named it (``Llm-Reply``)
    try:
        while True:
            try:
                msgs = await psub.fetch(batch=batch, timeout=0.5)
            except (NatsTimeoutError, TimeoutError):
                break
            done = False
            for msg in msgs:
                if ".recorded.index." in msg.subject:  # an ask's start mark, not one of its messages
                    continue
                md, hdrs = msg.metadata, dict(msg.headers or {})
                at = hdrs.get("Llm-At")  # written by the error recorder: the original subject and time
                stored = md.timestamp.timestamp()
                rec = Rec(md.sequence.stream, hdrs.get("Llm-Subject", msg.subject), float(at) if at else stored,
                          hdrs, msg.data)
                pair(rec, asked)
                if stop is not None and stop(rec, stored):
                    done = True
                    break
                out.append(rec)
            if done or not msgs or msgs[-1].metadata.num_pending == 0:
                break
    finally:
        try:
            await psub.unsubscribe()
        except Exception:  # noqa: S110 — the ephemeral consumer goes after inactive_threshold anyway
            pass
    return out


def pair(rec: Rec, asked: dict[str, Rec]) -> None:
    """A bare reply gets its request's ask id and subject (the request named the reply subject in
    ``Llm-Reply``: ``bus.subjects.Subjects.recording``), as if it had carried them (older recordings did)."""
    hdrs = rec.headers
    reply = hdrs.get(REPLY_HEADER)
    if reply is not None:
        asked[reply] = rec
    elif ASK_ID_HEADER not in hdrs:
        request = asked.pop(rec.subject, None)
        if request is not None:
            hdrs[ASK_ID_HEADER] = request.headers[ASK_ID_HEADER]
            hdrs[RE_HEADER] = request.subject


# --- one ask ---------------------------------------------------------------------------------------


@dataclass
class Call:
    """One request of the ask and its reply (None: no reply was recorded)."""

    subject: str
    kind: str  # "ask", "provider", "cache", "cost", "health", …
    name: str  # "provider.a.complete", "cache.get"
    at: float
    request: Rec
    reply: Rec | None = None
    call_id: str | None = None

    @property
    def duration_s(self) -> float | None:
        return None if self.reply is None else self.reply.at - self.at

    def outcome(self) -> str:
        if self.reply is None:
            return "no reply recorded" if self.kind != "cost" or "commit" not in self.name else "sent"
        body = self.reply.body()
        if not isinstance(body, dict):
            return "?"
        t = body.get("type")
        if t == "Failure":
            return f"failure {body.get('kind')}: {str(body.get('message', ''))[:80]}"
        if t in ("Completion", "Answer"):
            return f"ok {t}: {str(body.get('text', ''))[:60]!r}"
        return f"ok {t}"


@dataclass
class Trace:
    ask_id: str
    calls: list[Call]
    events: list[Rec] = field(default_factory=list)

    @property
    def ask(self) -> Call | None:
        return next((c for c in self.calls if c.kind == "ask"), None)

    @property
    def start(self) -> float:
        return min([c.at for c in self.calls] + [e.at for e in self.events] or [0.0])

    def as_json(self) -> dict:
        t0 = self.start
        return {
            "ask_id": self.ask_id,
            "start": t0,
            "calls": [{"name": c.name, "kind": c.kind, "call_id": c.call_id, "offset_ms": round((c.at - t0) * 1000, 3),
                       "duration_ms": None if c.duration_s is None else round(c.duration_s * 1000, 3),
                       "outcome": c.outcome(), "request": c.request.body(),
                       "reply": c.reply.body() if c.reply else None} for c in self.calls],
            "events": [{"subject": e.subject, "offset_ms": round((e.at - t0) * 1000, 3), "body": e.body()}
                       for e in self.events],
        }


def _kind_name(subjects: Subjects, subject: str) -> tuple[str, str]:
    rest = subject[len(subjects.root) + 1:]
    head = rest.split(".", 1)[0]
    return ("ask" if head == "ask" else head), rest


def build_trace(subjects: Subjects, ask_id: str, records: list[Rec], events: list[Rec]) -> Trace:
    """The ask's calls (each request paired with its reply) and the events that name the ask."""
    reply_prefix = f"{subjects.root}.reply."
    calls: list[Call] = []
    open_calls: list[Call] = []
    for rec in records:
        if rec.ask_id != ask_id:
            continue
        if not rec.subject.startswith(reply_prefix):
            kind, name = _kind_name(subjects, rec.subject)
            body = rec.body()
            call_id = body.get("id") if isinstance(body, dict) and kind == "provider" else None
            call = Call(rec.subject, kind, name, rec.at, rec, call_id=call_id)
            calls.append(call)
            open_calls.append(call)
            continue
        re_subject, call_id = rec.headers.get(RE_HEADER), rec.headers.get(CALL_ID_HEADER)
        for call in open_calls:  # the oldest open request of that subject (and call id) gets it
            if call.subject == re_subject and (call.call_id is None or call_id is None or call.call_id == call_id):
                call.reply = rec
                open_calls.remove(call)
                break
    kept = [e for e in events if _names_ask(e, ask_id)]
    if calls:  # health events (breaker changes) while the ask ran
        t0, t1 = calls[0].at, max((c.reply.at for c in calls if c.reply), default=calls[0].at)
        kept += [e for e in events if ".events.health." in e.subject and t0 <= e.at <= t1 + 0.5 and e not in kept]
    kept.sort(key=lambda e: e.seq)
    return Trace(ask_id, calls, kept)


def _names_ask(rec: Rec, ask_id: str) -> bool:
    if rec.ask_id == ask_id:
        return True
    if ask_id.encode() not in rec.data:
        return False
    body = rec.body()
    if not isinstance(body, dict):
        return False
    if body.get("ask_id") == ask_id:
        return True
    return any(isinstance(i, dict) and i.get("ask_id") == ask_id for i in body.get("items") or [])


def build_traces(subjects: Subjects, records: list[Rec]) -> dict[str, Trace]:
    """The trace (calls only) of every ask in ``records``, by ask id, oldest first."""
    by_ask: dict[str, list[Rec]] = {}
    for rec in records:
        if rec.ask_id is not None:
            by_ask.setdefault(rec.ask_id, []).append(rec)
    return {aid: build_trace(subjects, aid, recs, []) for aid, recs in by_ask.items()}


STOPPED_BATCH = 64
# the ask's request is stored just before the router marks its start: a trace reads from this many
# messages before the mark (then, not found there, from INDEX_MARGIN_S before it; then the stream)
BEFORE_MARK = 128
INDEX_MARGIN_S = 0.25
# what follows the ask's reply (a cost commit, a cancelled call's late reply) is read this long after it
# (store time: at a thousand asks a second, every 0.1 s is some 600 messages more to read)
AFTER_REPLY_S = 0.2
AFTER_REPLY_MAX = 64  # … and at most this many messages of other asks in a row past it (a busy fleet)
EVENTS_AROUND_S = (0.05, 0.3)  # the events read: from this long before the ask's first message to after its last
LONGEST_S = 900.0  # an ask whose reply was never recorded is read this long at most


def _until_done(subjects: Subjects, ask_id: str, began: float):
    """A ``read`` stop: once the ask's reply is stored, ``AFTER_REPLY_S`` more (store time), or
    ``AFTER_REPLY_MAX`` messages of other asks in a row."""
    ask_subjects = (subjects.ask, subjects.ask_stream)
    replied: list[float] = []
    others = [0]

    def stop(rec: Rec, stored: float) -> bool:
        if replied:
            others[0] = 0 if rec.ask_id == ask_id else others[0] + 1
            return stored > replied[0] + AFTER_REPLY_S or others[0] > AFTER_REPLY_MAX
        if rec.ask_id == ask_id and rec.headers.get(RE_HEADER) in ask_subjects:
            replied.append(stored)
        return stored > began + LONGEST_S

    return stop


async def _indexed(nc: NATS, subjects: Subjects, ask_id: str) -> list[Rec] | None:
    """The ask's stretch of the recording, found by its index mark (``Subjects.recorded_index``);
    None: no mark (an older recording, or aged out)."""
    try:
        mark = await nc.jetstream().get_last_msg(subjects.record_stream, subjects.recorded_index(ask_id))
    except Exception:  # noqa: BLE001 — not found, no such stream, an older server: scan instead
        return None
    if mark.time is None or mark.seq is None:
        return None
    began = mark.time.timestamp()
    ask_subjects = (subjects.ask, subjects.ask_stream)
    got = await read(nc, subjects.record_stream, from_seq=mark.seq - BEFORE_MARK,
                     stop=_until_done(subjects, ask_id, began))
    if any(r.ask_id == ask_id and r.subject in ask_subjects for r in got):
        return got
    return await read(nc, subjects.record_stream, from_time=began - INDEX_MARGIN_S,
                      stop=_until_done(subjects, ask_id, began))


async def trace(nc: NATS, subjects: Subjects, ask_id: str, *, since_s: float | None = None) -> Trace:
    """The ask's trace: its stretch of the recording found by its index mark (one lookup, then a
    bounded read), else the whole window (``since_s``) scanned; and the events of that time."""
    records = await _indexed(nc, subjects, ask_id) if since_s is None else None
    mine = [r for r in records or () if r.ask_id == ask_id]
    if not any(r.subject in (subjects.ask, subjects.ask_stream) for r in mine):  # not found that way
        records = await read(nc, subjects.record_stream, since_s=since_s)
        mine = [r for r in records if r.ask_id == ask_id]
    if not mine:
        return Trace(ask_id, [])
    # the events of the ask's time: its usage and outcomes (batched every few ms), breaker changes
    before, after = EVENTS_AROUND_S
    last = max(r.at for r in mine)
    past = [0]

    def enough(rec: Rec, stored: float) -> bool:  # AFTER_REPLY_MAX events past its last message, at most
        if stored > last:
            past[0] += 1
        return stored > last + after or past[0] > AFTER_REPLY_MAX

    events = await read(nc, subjects.events_stream, from_time=mine[0].at - before, stop=enough)
    return build_trace(subjects, ask_id, mine, events)


# --- recent asks -----------------------------------------------------------------------------------


@dataclass
class AskLine:
    ask_id: str
    at: float
    strategy: str | None
    user: str | None
    tier: str | None
    duration_ms: float | None
    outcome: str
    failed: bool
    prompt: str


def list_asks(subjects: Subjects, records: list[Rec]) -> list[AskLine]:
    asks: dict[str, tuple[Rec, Rec | None]] = {}
    ask_subjects = (subjects.ask, subjects.ask_stream)
    for rec in records:
        aid = rec.ask_id
        if aid is None:
            continue
        if rec.subject in ask_subjects and aid not in asks:
            asks[aid] = (rec, None)
        elif aid in asks and rec.headers.get(RE_HEADER) in ask_subjects and asks[aid][1] is None:
            asks[aid] = (asks[aid][0], rec)
    lines = []
    for aid, (req, rep) in asks.items():
        body = req.body() if isinstance(req.body(), dict) else {}
        reply = rep.body() if rep is not None else None
        failed = reply is None or (isinstance(reply, dict) and reply.get("type") == "Failure")
        if reply is None:
            outcome = "no reply recorded"
        elif failed:
            outcome = f"{reply.get('kind')}"
        else:
            outcome = "ok"
        msgs = body.get("messages") or []
        prompt = ""
        if msgs:
            content = msgs[-1].get("content")
            prompt = content if isinstance(content, str) else str(content)
        lines.append(AskLine(aid, req.at, body.get("strategy"), body.get("user"), body.get("tier"),
                             None if rep is None else (rep.at - req.at) * 1000, outcome, failed, prompt[:60]))
    return lines


# --- replay ----------------------------------------------------------------------------------------


def recorded_ask(tr: Trace) -> tuple[m.Ask, m.Answer | m.Failure | None]:
    """The recorded Ask and the answer it got."""
    call = tr.ask
    if call is None:
        raise LookupError(f"no ask {tr.ask_id} in the recording")
    ask = codec.decoder(m.Ask).decode(call.request.data)
    answer = None
    if call.reply is not None:
        try:
            answer = codec.decoder(m.AskReply).decode(call.reply.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            answer = None
    return ask, answer


def provider_replies(tr: Trace) -> dict[str, list[bytes]]:
    """Per provider, the recorded replies of its complete calls for this ask, in the order sent."""
    out: dict[str, list[bytes]] = {}
    for c in tr.calls:
        if c.kind == "provider" and c.name.endswith(".complete") and c.reply is not None:
            out.setdefault(c.name.split(".")[1], []).append(c.reply.data)
    return out


def providers_called(tr: Trace) -> list[str]:
    """The providers the ask called, in the order first called (those open breakers let through)."""
    seen: list[str] = []
    for c in tr.calls:
        if c.kind == "provider":
            name = c.name.split(".")[1]
            if name not in seen:
                seen.append(name)
    return seen
