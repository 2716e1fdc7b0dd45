"""Single flight: identical asks in flight at the same time make one provider call, fleet-wide.

Within one router, asks with the same key wait on the future of the first. Across routers, a
flight is a lease in the JetStream KV bucket ``<root>_cache_flights`` (memory storage) plus a
plain subject per key, ``<root>.cache.done.<key>``, for its result:

- Election is ``kv.create(key)``: atomic, so exactly one router leads a key at a time.
- A waiter subscribes to the done subject *before* it tries to create, and a leader ends its
  flight in this order: store the answer (inside ``make``) → delete the lease → publish
  ``FlightEnd``. NATS handles one connection's messages in order, so when a waiter's create fails
  its subscription is in place and the publish will reach it; and a router that arrives after the
  delete wins the create over the delete marker, which tells it to look in the cache once more
  (``look``, not counted) — the answer is there. A create over no marker at all (none within
  the bucket's ttl) skips that second look: no flight of the key ended since this ask's lookup.
- The leader renews its lease (a compare-and-set update) every ``lease_s / 3``. A waiter that
  sees the same revision for ``lease_s`` on its own clock (no clock skew between hosts) takes over
  with a compare-and-set on that revision — one waiter wins. So a leader that died (process killed,
  host gone) costs its waiters at most ``lease_s``.
- A leader that is cancelled (its client gave up) deletes its lease and publishes
  ``FlightEnd(result=None)``: its waiters elect another at once. Any other result — an Answer or a
  Failure — is every waiter's result too.
- Each KV operation gets ``op_s``; when JetStream cannot be reached, or an operation fails, the
  ask runs on its own (correct, only not coalesced across routers).

Why this and not the alternatives: coalescing inside the cache actor would tie waiting asks to
it, so a dead or slow cache would hold them, and two cache actors would each run their own flight;
sending identical keys to one router by a subject hash needs every router to know the others and
moves keys whenever one comes or goes. A KV lease needs only JetStream, which the bus already runs
(health, cost), works with any number of routers and cache actors, and finds a lost leader by its
silence. Its price: a miss that leads pays two JetStream round trips (create, delete) — little
next to an LLM call; a hit pays none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from bus import codec
from bus import messages as m
from bus.deadline import now
from bus.streams import ensure_kv
from bus.subjects import Subjects

Result = m.Answer | m.Failure
MADE, HIT, COALESCED = "made", "hit", "coalesced"  # how a flight's result came to this ask
_flight_end = codec.decoder(m.FlightEnd)
_WAITED = "an identical ask in flight did not finish within the budget"


class Flights:
    def __init__(self, nc: Callable[[], NATS], subjects: Subjects, *, owner: str, lease_s: float, retry_s: float) -> None:
        self._nc = nc  # the actor's connection, once it has one
        self.subjects = subjects
        self.owner = owner.encode()
        self.lease_s = lease_s
        self.retry_s = retry_s
        self.local: dict[str, asyncio.Future] = {}
        self._kv: KeyValue | None = None
        self._opening: asyncio.Task | None = None
        self._no_kv_until = 0.0
        self.fleet_fallbacks = 0  # asks that ran on their own because the KV could not be used

    async def run(
        self,
        key: str,
        *,
        deadline: float,
        op_s: float,
        make: Callable[[], Awaitable[Result]],
        look: Callable[[], Awaitable[m.Answer | None]] | None,
    ) -> tuple[Result, str]:
        """The result for ``key`` and how it came (MADE: ``make()`` ran here; HIT: ``look()``
        found it; COALESCED: another ask's). Waiting ends at ``deadline`` with a timeout Failure."""
        while True:
            fut = self.local.get(key)
            if fut is None:
                break
            try:
                async with asyncio.timeout_at(deadline):
                    got = await asyncio.shield(fut)
            except TimeoutError:
                return m.Failure(kind=m.TIMEOUT, message=_WAITED), COALESCED
            if got is not None:
                return got[0], COALESCED
            # its leader gave up: try again (one of us leads now)
        fut = self.local[key] = asyncio.get_running_loop().create_future()
        try:
            result, how = await self._fleet(key, deadline, op_s, make, look)
        except BaseException:
            fut.set_result(None)
            raise
        finally:
            if self.local.get(key) is fut:
                del self.local[key]
        fut.set_result((result, how))
        return result, how

    # --- across routers -----------------------------------------------------------------------
    async def _fleet(self, key, deadline, op_s, make, look) -> tuple[Result, str]:
        kv = await self._bucket(op_s, deadline)
        if kv is None:
            return await make(), MADE
        nc = self._nc()
        sub = await nc.subscribe(self.subjects.cache_done(key))  # before the create: see the docstring
        try:
            seen, seen_at = 0, 0.0
            while now() < deadline:
                try:
                    async with asyncio.timeout(op_s):
                        mine, theirs, again = await self._claim(kv, key, seen, seen_at)
                except Exception:  # JetStream slow or gone: run on our own
                    self.fleet_fallbacks += 1
                    return await make(), MADE
                if mine is not None:
                    return await self._lead(kv, key, mine, op_s, make, look if again else None)
                if theirs is None:
                    continue  # the lease vanished meanwhile: try to lead the next flight
                if theirs != seen:
                    seen, seen_at = theirs, now()
                try:
                    msg = await sub.next_msg(timeout=max(1e-4, min(seen_at + self.lease_s, deadline) - now()))
                except NatsTimeoutError:
                    continue  # the lease may have lapsed (or our time is up): look again
                end = _flight_end.decode(msg.data)
                if end.result is not None:
                    return end.result, COALESCED
            return m.Failure(kind=m.TIMEOUT, message=_WAITED), COALESCED
        finally:
            if not nc.is_closed:
                await sub.unsubscribe()

    async def _claim(self, kv: KeyValue, key: str, seen: int, seen_at: float) -> tuple[int | None, int | None, bool]:
        """(our lease's revision, None, look) when we lead now — ``look``: a flight of this key ended
        lately, so its answer may be stored already; else (None, the leader's revision, False), or
        (None, None, False) when the lease changed hands meanwhile."""
        try:  # no message at all for this key within the bucket's ttl: nobody led it lately
            return await kv.update(key, self.owner, last=0), None, False
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await kv.get(key)
        except KeyNotFoundError as gone:  # a delete marker: a flight of this key just ended
            if gone.entry is None:
                return None, None, False
            last = gone.entry.revision
        else:
            if entry.revision != seen or now() - seen_at < self.lease_s:
                return None, entry.revision, False
            last = entry.revision  # its leader went silent: take over
        try:
            return await kv.update(key, self.owner, last=last), None, True
        except KeyWrongLastSequenceError:  # another router was quicker
            return None, None, False

    async def _lead(self, kv, key, rev, op_s, make, look) -> tuple[Result, str]:
        lease = [rev]
        renewing = asyncio.ensure_future(self._renew(kv, key, lease))
        result: Result | None = None  # stays None when cancelled: a waiter then leads at once
        try:
            found = await look() if look is not None else None
            result, how = (found, HIT) if found is not None else (await make(), MADE)
            return result, how
        finally:
            renewing.cancel()
            await asyncio.shield(self._end(kv, key, lease[0], op_s, result))

    async def _renew(self, kv: KeyValue, key: str, lease: list[int]) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                lease[0] = await kv.update(key, self.owner, last=lease[0])
            except KeyWrongLastSequenceError:
                return  # another router took the lease over: nothing left to renew
            except Exception:  # noqa: S112 — a slow or restarting server: try at the next tick
                continue

    async def _end(self, kv: KeyValue, key: str, rev: int, op_s: float, result: Result | None) -> None:
        nc = self._nc()
        if nc.is_closed:
            return
        try:
            async with asyncio.timeout(op_s):
                await kv.delete(key, last=rev)
        except Exception:  # taken over, or JetStream slow: the lease lapses on its own
            pass
        await nc.publish(self.subjects.cache_done(key), codec.encode(m.FlightEnd(result=result)))

    async def _bucket(self, op_s: float, deadline: float) -> KeyValue | None:
        """The flights bucket, opened once per router (concurrent callers share the attempt);
        None while it is not open yet, or after a failure until ``retry_s`` has passed."""
        if self._kv is not None or now() < self._no_kv_until:
            return self._kv
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
            self._opening.add_done_callback(self._opened)
        try:  # the first asks may wait longer than one slice: once per router, and it lasts
            async with asyncio.timeout(max(op_s, min(1.0, 0.25 * (deadline - now())))):
                await asyncio.shield(self._opening)
        except Exception:
            pass
        return self._kv

    def _opened(self, task: asyncio.Task) -> None:
        self._opening = None
        if task.cancelled() or task.exception() is not None:
            self._no_kv_until = now() + self.retry_s
        else:
            self._kv = task.result()

    async def _open(self) -> KeyValue:
        # memory storage: leases need not outlive the server; ttl: a lease left by a dead leader
        # (and delete markers) go away on their own
        return await ensure_kv(self._nc(), self.subjects.bucket("cache_flights"), storage=StorageType.MEMORY,
                               ttl=max(60.0, 10 * self.lease_s))
