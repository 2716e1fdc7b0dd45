"""Asks seen recently, by ask id: a client's retry of the same ask is answered once.

While an ask runs, a retry waits on the first run's future. Once answered, only the encoded reply
is kept (plain ``str → (float, bytes)`` entries: nothing the garbage collector has to trace, which
matters at thousands of asks per second) until ``window_s`` passes; failures a retry might fix
(retryable kinds, cancelled) are not kept, so the retry runs again.
"""

from __future__ import annotations

import asyncio

from bus import codec
from bus import messages as m
from bus.deadline import now


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
