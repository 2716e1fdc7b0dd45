"""The cache actor: answers kept in diskcache, behind the bus.

Serves, in queue group ``cache``: ``<root>.cache.get`` (CacheGet → CacheEntry on a hit, CacheMiss),
``.put`` (CachePut → CacheStored), ``.stats`` (CacheStatsQuery → CacheStats), ``.clear``
(CacheClear → CacheCleared), and counts the routers' ``.coalesced`` events (no reply).

Storage: one diskcache ``Cache`` per subject root, in ``<cache.dir>/<root>``, so entries survive
restarts; several cache actors may share it (diskcache is thread- and process-safe). A value is the
msgspec-encoded ``CacheEntry`` — the Answer with its namespace, ``stored_at`` and ``expires_at`` —
tagged with its namespace, so one namespace can be cleared on its own. Every diskcache call runs
in a worker thread (``anyio.to_thread``): SQLite and the disk never block the event loop. There
are two lanes (``Lane``), reads and writes, one thread hop at a time each, and every call queued
while a hop runs goes in the next one: a warm diskcache read takes ~10 µs, but a hop costs ~0.1 ms
on an idle machine and several ms when the cores are busy (measured: at 64 misses in flight, one
hop per call left lookups at 10 ms and stores past their slice), and a new thread opens its own
SQLite connection (~0.5 ms). Writes get a lane of their own: SQLite takes one writer at a time.
Even one hop would make a hit slower than a zero-latency provider call, so the entries read or
written lately are also kept in memory (``Hot``, ``memory_mb``): a hot key is answered on the loop.

Expiry: an entry is alive while ``expires_at`` (stored with it, from the namespace's TTL) is ahead
of ``clock()`` — ``time.time`` unless a test injects its own. diskcache's own expiry reads
``time.time()`` and cannot be driven by a test clock; it is still set to the same TTL, so
diskcache culls dead entries as it writes. Beyond ``size_limit_mb`` the entries stored longest ago
are evicted.

Which answers are worth keeping, and coalescing, are the router's part (``actors.router.cache_step``);
the key of an ask is ``actors.router.cache_key``. Counts (hits, misses, stores, coalesced) are kept per
namespace since this actor started.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from bus import codec
from bus import messages as m
from bus.deadline import now
from bus.endpoint import Context, Endpoint
from bus.subjects import CACHE_CLEAR, CACHE_COALESCED, CACHE_GET, CACHE_PUT, CACHE_STATS, CACHE_STATS_EACH
from actors.runtime import Actor
from actors.settings import CacheSettings

HOT_TRUSTED_S = 1.0


class Lane:
    """A worker thread's queue: the calls queued while it is busy run together in its next hop."""

    def __init__(self, around: Callable[[], Any] = nullcontext) -> None:
        self._queue: list[tuple[Callable[[], Any], asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._around = around  # a context for each hop (the writes': one transaction)

    async def run(self, fn: Callable, *args: Any) -> Any:
        """``fn(*args)`` in the lane's thread; its result, or its exception raised here."""
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((partial(fn, *args), fut))
        self._wake.set()
        return await fut

    async def serve(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue, []
                outcomes = await anyio.to_thread.run_sync(_run_all, [call for call, _ in batch], self._around)
                for (_, fut), (ok, value) in zip(batch, outcomes):
                    if not fut.done():  # (a caller whose deadline passed has gone)
                        fut.set_result(value) if ok else fut.set_exception(value)


def _run_all(calls: list[Callable[[], Any]], around: Callable[[], Any]) -> list[tuple[bool, Any]]:
    outcomes: list[tuple[bool, Any]] = []
    with around():
        for call in calls:
            try:
                outcomes.append((True, call()))
            except Exception as exc:  # the caller's to raise
                outcomes.append((False, exc))
    return outcomes


class _Expiry(msgspec.Struct):
    expires_at: float


_expiry = msgspec.json.Decoder(_Expiry)  # reads one field of a stored CacheEntry


class Hot:
    """The entries read from or written to the store lately, kept encoded in memory (at most
    ``max_bytes``, least recently used out first), so a hot key is answered with no thread hop.
    An entry is trusted for ``HOT_TRUSTED_S`` after it was read or written — another cache actor
    sharing the directory may change it — and never past its own expiry."""

    def __init__(self, max_bytes: int, clock: Callable[[], float]) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.size = 0
        self.entries: OrderedDict[str, tuple[float, float, bytes]] = OrderedDict()  # trusted until, expires at, raw

    def get(self, key: str) -> bytes | None:
        kept = self.entries.get(key)
        if kept is None:
            return None
        if kept[0] < now() or kept[1] <= self.clock():
            self.drop(key)
            return None
        self.entries.move_to_end(key)
        return kept[2]

    def put(self, key: str, raw: bytes, expires_at: float) -> None:
        self.drop(key)
        if len(raw) > self.max_bytes:
            return
        self.entries[key] = (now() + HOT_TRUSTED_S, expires_at, raw)
        self.size += len(raw)
        while self.size > self.max_bytes:
            _, (_, _, old) = self.entries.popitem(last=False)
            self.size -= len(old)

    def drop(self, key: str) -> None:
        kept = self.entries.pop(key, None)
        if kept is not None:
            self.size -= len(kept[2])

    def clear(self) -> None:
        self.entries.clear()
        self.size = 0


class Store:
    """The blocking part: call its methods in a worker thread."""

    def __init__(self, directory: Path, *, size_limit_bytes: int, clock: Callable[[], float]) -> None:
        self.directory = directory
        self.size_limit_bytes = size_limit_bytes
        self.clock = clock
        self.disk = None

    def open(self) -> None:
        import diskcache  # here: only the cache actor needs it

        self.disk = diskcache.Cache(
            str(self.directory), size_limit=self.size_limit_bytes, tag_index=True,
            eviction_policy="least-recently-stored",  # reads stay reads (LRU would write on each hit)
        )

    def close(self) -> None:
        if self.disk is not None:
            self.disk.close()

    def get(self, key: str) -> tuple[bytes, float] | None:
        """(the encoded CacheEntry, its expires_at), or None when absent or expired."""
        raw = self.disk.get(key)
        if raw is None:
            return None
        try:
            expires_at = _expiry.decode(raw).expires_at
        except (msgspec.DecodeError, msgspec.ValidationError):  # written by an incompatible version
            return None
        return (raw, expires_at) if expires_at > self.clock() else None

    def put(self, key: str, namespace: str, answer: m.Answer, ttl_s: float) -> tuple[bytes, float]:
        at = self.clock()
        raw = codec.encode(m.CacheEntry(answer=answer, namespace=namespace, stored_at=at, expires_at=at + ttl_s))
        self.disk.set(key, raw, expire=ttl_s, tag=namespace)
        return raw, at + ttl_s

    def transact(self):
        """One SQLite transaction for a batch of writes: one commit, not one each."""
        return self.disk.transact(retry=True)

    def clear(self, namespace: str | None) -> int:
        return self.disk.clear() if namespace is None else self.disk.evict(namespace)

    def size(self) -> tuple[int, int]:
        """(entries, bytes on disk)."""
        return len(self.disk), self.disk.volume()


@dataclass
class Counts:
    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    stores: int = 0


class CacheActor(Actor):
    kind = "cache"
    description = "answers kept in diskcache, a TTL per namespace"

    def __init__(self, *, settings: CacheSettings, directory: Path, clock: Callable[[], float] = time.time, **kw) -> None:
        super().__init__(**kw)
        self.settings = settings
        self.store = Store(directory, size_limit_bytes=int(settings.size_limit_mb * 2**20), clock=clock)
        self.hot = Hot(int(settings.memory_mb * 2**20), clock)
        self.counts: dict[str, Counts] = {}
        self.reads, self.writes = Lane(), Lane(around=self.store.transact)

    def background(self):
        return [self.reads.serve, self.writes.serve]

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint.serving(row, self.subjects, handler)
            for row, handler in (
                (CACHE_GET, self.get),
                (CACHE_PUT, self.put),
                (CACHE_STATS, self.stats),
                (CACHE_STATS_EACH, self.stats),  # every copy answers
                (CACHE_CLEAR, self.clear),
                (CACHE_COALESCED, self.coalesced),
            )
        ]

    async def setup(self) -> None:
        self.store.directory.mkdir(parents=True, exist_ok=True)
        await anyio.to_thread.run_sync(self.store.open)
        self.log.info("cache_opened", directory=str(self.store.directory))

    async def teardown(self) -> None:
        await anyio.to_thread.run_sync(self.store.close)

    def _counts(self, namespace: str) -> Counts:
        counts = self.counts.get(namespace)
        if counts is None:
            counts = self.counts[namespace] = Counts()
        return counts

    # --- endpoints ----------------------------------------------------------------------------
    async def get(self, request: m.CacheGet, ctx: Context) -> msgspec.Raw | m.CacheMiss:
        """A hit is answered with the stored bytes of its CacheEntry, as they are."""
        raw = self.hot.get(request.key)
        if raw is None:
            found = await self.reads.run(self.store.get, request.key)
            if found is not None:
                raw = found[0]
                self.hot.put(request.key, *found)
        if request.count:
            counts = self._counts(request.namespace)
            if raw is None:
                counts.misses += 1
            else:
                counts.hits += 1
        return msgspec.Raw(raw) if raw is not None else m.CacheMiss()

    async def put(self, request: m.CachePut, ctx: Context) -> m.CacheStored:
        ttl_s = self.settings.ttl_s(request.namespace)
        raw, expires_at = await self.writes.run(self.store.put, request.key, request.namespace, request.answer, ttl_s)
        self.hot.put(request.key, raw, expires_at)
        self._counts(request.namespace).stores += 1
        return m.CacheStored(expires_at=expires_at)

    async def coalesced(self, event: m.CacheCoalesced, ctx: Context) -> None:
        self._counts(event.namespace).coalesced += event.count

    async def clear(self, request: m.CacheClear, ctx: Context) -> m.CacheCleared:
        self.hot.clear()  # all of it: a namespace's entries are not told apart in memory
        removed = await self.writes.run(self.store.clear, request.namespace)
        self.log.info("cache_cleared", namespace=request.namespace, removed=removed)
        return m.CacheCleared(removed=removed, namespace=request.namespace)

    async def stats(self, query: m.CacheStatsQuery, ctx: Context) -> m.CacheStats:
        entries, volume = await self.reads.run(self.store.size)
        names = sorted({*self.settings.namespaces, *self.counts})
        spaces = [m.NamespaceStats(namespace=n, ttl_s=self.settings.ttl_s(n), **vars(self._counts(n))) for n in names]
        total = Counts(**{k: sum(getattr(s, k) for s in spaces) for k in vars(Counts())})
        return m.CacheStats(
            directory=str(self.store.directory.resolve()), entries=entries, bytes=volume,
            size_limit_bytes=self.store.size_limit_bytes, namespaces=spaces,
            total=m.NamespaceStats(namespace="total", ttl_s=0.0, **vars(total)),
        )
