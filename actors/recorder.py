"""The active recorder: ``[record] sampling = "errors"``, or a sampling per tier
(``[tiers.<name>] record = "all"|"errors"|"off"``; ``Settings.recording() == "window"``).

Each router runs one (a background job): a plain subscription on ``<root>.>`` keeps, per ask id,
the messages carrying ``Llm-Ask-Id`` (requests, and replies, which carry it when recording is on)
for ``window_s``. The ask's own request names its tier, which gives its sampling (``sampling_for``):
``off`` drops the ask at once; at the ask's own reply (``Llm-Re: <root>.ask``) ``all`` writes the
window, ``errors`` writes it only when the reply is a Failure. A window is written to
``<root>.recorded.<the original subject>`` — the only subjects the ``<ROOT>_RECORD`` stream captures
in this mode — with the original subject and time as headers (``Llm-Subject``, ``Llm-At``), so
``actors.recording`` reads them like a full recording. ``Nats-Msg-Id`` makes the copies written by
several routers one (JetStream's duplicate window).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

import msgspec

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client as NATS

from bus.deadline import ASK_ID_HEADER
from bus.endpoint import RE_HEADER, REPLY_HEADER
from bus.subjects import Subjects

SUBJECT_HEADER = "Llm-Subject"
AT_HEADER = "Llm-At"
_FAILURE = b'"type":"Failure"'


class _Tier(msgspec.Struct):
    tier: str | None = None


_tier = msgspec.json.Decoder(_Tier)  # only the tier of an Ask (the rest is skipped, not built)


def _errors(tier: str | None) -> str:
    return "errors"


class ErrorRecorder:
    """``sampling_for(tier)`` -> ``all``/``errors``/``off`` (default: ``errors`` for every ask)."""

    def __init__(self, nc: NATS, subjects: Subjects, *, window_s: float = 60.0, max_asks: int = 20_000,
                 sampling_for: Callable[[str | None], str] = _errors) -> None:
        self.nc = nc
        self.subjects = subjects
        self.window_s = window_s
        self.max_asks = max_asks
        self.sampling_for = sampling_for
        # ask id -> its window, or when it began (a float: its tier records nothing, its messages are dropped)
        self.asks: OrderedDict[str, list[tuple[float, str, dict, bytes]] | float] = OrderedDict()
        self.modes: dict[str, str] = {}  # ask id -> its sampling (while its window is kept)
        self.replies: dict[str, tuple[str, str]] = {}  # reply subject -> (ask id, request subject), unanswered
        self.written = 0  # asks written
        root = subjects.root
        self._skip = (f"{root}.events.", f"{root}.recorded.")
        self._ask_subjects = (subjects.ask, subjects.ask_stream)

    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        sub = await self.nc.subscribe(f"{self.subjects.root}.>", cb=self._on)
        await self.nc.flush()
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await sub.unsubscribe()
                except Exception:  # noqa: S110 — closed already
                    pass

    async def _on(self, msg) -> None:
        hdrs = msg.headers
        if not hdrs:  # a bare reply: the request that named its subject says whose it is
            asked = self.replies.pop(msg.subject, None)
            if asked is None:
                return
            ask_id, hdrs = asked[0], {RE_HEADER: asked[1]}
        else:
            ask_id = hdrs.get(ASK_ID_HEADER)
            if not ask_id or msg.subject.startswith(self._skip):
                return
            reply = hdrs.get(REPLY_HEADER)
            if reply is not None:
                self.replies[reply] = (ask_id, msg.subject)
                if len(self.replies) > self.max_asks:  # replies that never came: the oldest go
                    del self.replies[next(iter(self.replies))]
        t = time.time()
        kept = self.asks.get(ask_id, ())
        if kept.__class__ is float:  # its tier records nothing
            if hdrs.get(RE_HEADER) in self._ask_subjects:
                del self.asks[ask_id]
            return
        if kept == ():
            if msg.subject in self._ask_subjects:  # the ask itself: its tier says what is kept
                try:
                    mode = self.sampling_for(_tier.decode(msg.data).tier)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    mode = self.sampling_for(None)
            else:
                mode = self.sampling_for(None)
            self._expire(t)
            if mode == "off":
                self.asks[ask_id] = t
                return
            kept = self.asks[ask_id] = []
            self.modes[ask_id] = mode
        kept.append((t, msg.subject, dict(hdrs), msg.data))
        if hdrs.get(RE_HEADER) in self._ask_subjects:  # the ask's own reply: keep it or drop it
            window = self.asks.pop(ask_id, None) or []
            mode = self.modes.pop(ask_id, "errors")
            if mode == "all" or _FAILURE in msg.data[:40]:
                await self._write(ask_id, window)

    def _expire(self, t: float) -> None:
        while self.asks:
            first = next(iter(self.asks.values()))
            began = first if first.__class__ is float else first[0][0] if first else t
            if len(self.asks) <= self.max_asks and t - began < self.window_s:
                return
            self.modes.pop(self.asks.popitem(last=False)[0], None)

    async def _write(self, ask_id: str, window: list[tuple[float, str, dict, bytes]]) -> None:
        root = self.subjects.root
        # the ask's mark first (``Subjects.recorded_index``): `llmbus trace` reads from there
        await self.nc.publish(self.subjects.recorded_index(ask_id), b"", headers={"Nats-Msg-Id": f"{ask_id}.index"})
        for t, subject, hdrs, data in window:
            digest = hashlib.blake2b(subject.encode() + data, digest_size=8).hexdigest()
            headers = {**hdrs, SUBJECT_HEADER: subject, AT_HEADER: repr(t), "Nats-Msg-Id": f"{ask_id}.{digest}"}
            await self.nc.publish(f"{root}.recorded.{subject[len(root) + 1:]}", data, headers=headers)
        self.written += 1
