"""``[record] sampling = "errors"``: an active recorder that keeps only failed asks.

Each router runs one (a background job): a plain subscription on ``<root>.>`` keeps, per ask id,
the messages carrying ``Llm-Ask-Id`` (requests, and replies, which carry it when recording is on)
for ``window_s``. When the ask's own reply (``Llm-Re: <root>.ask``) is a Failure, the window is
written to ``<root>.recorded.<the original subject>`` — the only subjects the ``<ROOT>_RECORD``
stream captures in this mode — with the original subject and time as headers (``Llm-Subject``,
``Llm-At``), so ``actors.recording`` reads them like a full recording. ``Nats-Msg-Id`` makes the
copies written by several routers one (JetStream's duplicate window). An answered ask is dropped.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client as NATS

from bus.deadline import ASK_ID_HEADER
from bus.endpoint import RE_HEADER
from bus.subjects import Subjects

SUBJECT_HEADER = "Llm-Subject"
AT_HEADER = "Llm-At"
_FAILURE = b'"type":"Failure"'


class ErrorRecorder:
    def __init__(self, nc: NATS, subjects: Subjects, *, window_s: float = 60.0, max_asks: int = 20_000) -> None:
        self.nc = nc
        self.subjects = subjects
        self.window_s = window_s
        self.max_asks = max_asks
        self.asks: OrderedDict[str, list[tuple[float, str, dict, bytes]]] = OrderedDict()
        self.written = 0  # failed asks written
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
        if not hdrs:
            return
        ask_id = hdrs.get(ASK_ID_HEADER)
        if not ask_id or msg.subject.startswith(self._skip):
            return
        t = time.time()
        kept = self.asks.get(ask_id)
        if kept is None:
            kept = self.asks[ask_id] = []
            self._expire(t)
        kept.append((t, msg.subject, dict(hdrs), msg.data))
        if hdrs.get(RE_HEADER) in self._ask_subjects:  # the ask's own reply: keep it or drop it
            window = self.asks.pop(ask_id, [])
            if _FAILURE in msg.data[:40]:
                await self._write(ask_id, window)

    def _expire(self, t: float) -> None:
        while self.asks:
            first = next(iter(self.asks.values()))
            if len(self.asks) <= self.max_asks and (not first or t - first[0][0] < self.window_s):
                return
            self.asks.popitem(last=False)

    async def _write(self, ask_id: str, window: list[tuple[float, str, dict, bytes]]) -> None:
        root = self.subjects.root
        for t, subject, hdrs, data in window:
            digest = hashlib.blake2b(subject.encode() + data, digest_size=8).hexdigest()
            headers = {**hdrs, SUBJECT_HEADER: subject, AT_HEADER: repr(t), "Nats-Msg-Id": f"{ask_id}.{digest}"}
            await self.nc.publish(f"{root}.recorded.{subject[len(root) + 1:]}", data, headers=headers)
        self.written += 1
