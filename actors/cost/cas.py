"""Changes to KV keys by compare-and-set, batched: the writer behind the cost actor's reservations
and its count quotas.

``await writer.change(key, change)`` queues ``change(value, at)``; changes that arrive together for
one key are decided in arrival order on one fresh copy of the value and written in one
compare-and-set, so a burst costs a few KV writes, not one each. The value is kept as last written
(a conflict drops it: another writer wrote first, so it is read again and every change of the batch
decided again), and each caller hears its own change's result, or a ``Failure`` (unavailable) when
the KV cannot be reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from bus import messages as m
from bus.deadline import now as monotonic
from bus.streams import retrying

KV_RETRY_S = 5.0  # a read or write is retried this long (a restarting server)


class CasWriter:
    """``kv()``: the bucket (opened later than this is made); ``decode(bytes)`` / ``encode(value)``:
    the stored form; ``empty()``: the value of a key not written yet; ``fresh(value, at)``: the copy a
    batch changes (what has lapsed by ``at`` dropped); ``clock()``: the ``at`` of a batch;
    ``store``: named in the unavailable failure ("cost ledger", "quota store")."""

    def __init__(self, *, kv: Callable[[], Any], decode: Callable[[bytes], Any], encode: Callable[[Any], bytes],
                 empty: Callable[[], Any], fresh: Callable[[Any, float], Any], clock: Callable[[], float],
                 store: str) -> None:
        self.kv, self.decode, self.encode, self.empty = kv, decode, encode, empty
        self.fresh, self.clock, self.store = fresh, clock, store
        self._pending: dict[str, list] = {}
        self._writers: dict[str, asyncio.Future] = {}
        self._cache: dict[str, tuple[Any, int | None]] = {}  # key -> (value, revision) as last written

    async def change(self, key: str, change: Callable[[Any, float], Any]) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append((change, fut))
        writer = self._writers.get(key)
        if writer is None or writer.done():
            self._writers[key] = asyncio.ensure_future(self._write(key))
        return await fut

    async def _write(self, key: str) -> None:
        while self._pending.get(key):
            batch, self._pending[key] = self._pending[key], []
            try:
                results = await self._write_batch(key, batch)
            except Exception as exc:  # KV unreachable: every caller hears it
                results = [m.Failure(kind=m.UNAVAILABLE, message=f"{self.store} unavailable: {exc}")] * len(batch)
            for (_, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)
        self._pending.pop(key, None)

    async def _write_batch(self, key: str, batch: list) -> list:
        kv = self.kv()
        while True:
            cached = self._cache.get(key)
            if cached is None:
                try:
                    entry = await retrying(lambda: kv.get(key), deadline=monotonic() + KV_RETRY_S)
                    cached = (self.decode(entry.value), entry.revision)
                except KeyNotFoundError:
                    cached = (self.empty(), None)
            at = self.clock()
            value = self.fresh(cached[0], at)
            results = [change(value, at) for change, _ in batch]
            data, last = self.encode(value), cached[1]
            try:
                if last is None:
                    revision = await retrying(lambda: kv.create(key, data), deadline=monotonic() + KV_RETRY_S)
                else:
                    revision = await retrying(lambda: kv.update(key, data, last=last),
                                              deadline=monotonic() + KV_RETRY_S)
            except KeyWrongLastSequenceError:
                self._cache.pop(key, None)  # another writer wrote first: read again, decide again
                continue
            self._cache[key] = (value, revision)
            return results
