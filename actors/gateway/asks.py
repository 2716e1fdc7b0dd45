"""The native ask protocol over HTTP: ``POST /v1/asks`` starts a streamed ask on the bus and keeps
its messages; ``GET /v1/asks/{id}/events`` replays them from the first and follows the rest live
(so a reader that connects late misses nothing); ``DELETE`` cancels it. A finished ask is kept
``gateway.keep_asks_s``, then forgotten; an ask is readable only with the key that made it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from bus import messages as m
from bus.client import Client
from bus.deadline import deadline_in

MAX_KEPT = 10_000  # asks kept at once (running or finished); more are refused as overloaded


class Entry:
    __slots__ = ("ask_id", "key_id", "items", "done", "finished_at", "task", "_changed")

    def __init__(self, ask_id: str, key_id: str | None) -> None:
        self.ask_id = ask_id
        self.key_id = key_id
        self.items: list[m.Chunk | m.Answer | m.Failure] = []
        self.done = False
        self.finished_at = 0.0
        self.task: asyncio.Task | None = None
        self._changed = asyncio.Event()

    def add(self, item) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()


class Asks:
    def __init__(self, client: Client, *, keep_s: float, clock=time.monotonic) -> None:
        self.client = client
        self.keep_s = keep_s
        self.clock = clock
        self.entries: dict[str, Entry] = {}

    def start(self, ask: m.Ask, key_id: str | None) -> Entry | m.Failure:
        self._sweep()
        if ask.id in self.entries:
            return m.Failure(kind=m.BAD_REQUEST, message=f"an ask with id {ask.id!r} is already here")
        if len(self.entries) >= MAX_KEPT:
            return m.Failure(kind=m.OVERLOADED, message=f"{MAX_KEPT} asks are kept here already", retry_after_s=1.0)
        entry = self.entries[ask.id] = Entry(ask.id, key_id)
        entry.task = asyncio.get_running_loop().create_task(self._run(entry, ask))
        return entry

    async def _run(self, entry: Entry, ask: m.Ask) -> None:
        stream = self.client.rpc.stream(self.client.subjects.ask_stream, ask, deadline=deadline_in(ask.budget_ms),
                                        ask_id=ask.id, ack_s=self.client.stream_ack_s)
        try:
            async for item in stream:
                entry.add(item)
        except asyncio.CancelledError:
            entry.add(m.Failure(kind=m.CANCELLED, message="cancelled by DELETE /v1/asks/{id}"))
            raise
        finally:
            entry.done = True
            entry.finished_at = self.clock()
            entry._changed.set()  # readers waiting see that it is done

    def get(self, ask_id: str, key_id: str | None) -> Entry | None:
        entry = self.entries.get(ask_id)
        return entry if entry is not None and entry.key_id == key_id else None

    async def events(self, entry: Entry) -> AsyncIterator[m.Chunk | m.Answer | m.Failure]:
        i = 0
        while True:
            while i < len(entry.items):
                yield entry.items[i]
                i += 1
            if entry.done:
                return
            await entry.changed()

    async def cancel(self, entry: Entry) -> None:
        if entry.task is not None and not entry.task.done():
            entry.task.cancel()  # the stream's own cleanup publishes the Cancel on the bus
            await asyncio.gather(entry.task, return_exceptions=True)

    def _sweep(self) -> None:
        cutoff = self.clock() - self.keep_s
        for ask_id in [a for a, e in self.entries.items() if e.done and e.finished_at < cutoff]:
            del self.entries[ask_id]

    async def close(self) -> None:
        for entry in list(self.entries.values()):
            await self.cancel(entry)
