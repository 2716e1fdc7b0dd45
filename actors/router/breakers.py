"""What a router knows of every provider's circuit breaker, with no round trip on the ask path.

A KV watch on ``state.>`` of the health bucket keeps ``states`` current (propagation measured in
``llmbus bench``). ``screen(order)`` drops providers whose breaker is OPEN; a HALF_OPEN provider
is kept only by the router that wins that round's probe: a compare-and-set on ``probe.<provider>``
in the same bucket, so one probe goes out per round however many routers run. A claim older than
``stale_after_s`` (its prober died before reporting) may be taken over. A MISCONFIGURED provider
(an auth failure: see ``actors.pure.breaker``) is dropped like an OPEN one, and is never probed.
Times are ``clock()``, wall-clock seconds (``time.time`` unless a test gives its own).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import msgspec
from anyio.abc import TaskStatus
from nats.aio.client import Client as NATS
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError

from bus import messages as m
from bus.streams import KvMirror
from bus.subjects import Subjects
from actors.pure import breaker as br

_decode = msgspec.json.Decoder(m.BreakerState).decode


class BreakerView:
    def __init__(self, nc: NATS, subjects: Subjects, *, stale_after_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.states: dict[str, m.BreakerState] = {}
        self._tried: dict[str, tuple[int, float]] = {}  # provider -> (probe round claimed, when)
        self.mirror = KvMirror(nc, subjects.bucket("health"), "state.>", on_change=self._changed)

    @property
    def kv(self):
        return self.mirror.kv

    def _changed(self, key: str, value: bytes | None) -> None:
        provider = key.removeprefix("state.")
        if value is None:
            self.states.pop(provider, None)
        else:
            self.states[provider] = _decode(value)

    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch the bucket; ready once the current states are loaded."""
        await self.mirror.run(task_status=task_status)

    async def screen(self, order: list[str]) -> tuple[list[str], list[m.Step]]:
        """(providers that may be called now, in order; a Step for each one left out)."""
        if not self.states:
            return order, []
        now = self.clock()
        usable: list[str] = []
        skipped: list[m.Step] = []
        for provider in order:
            state = self.states.get(provider)
            live = br.effective(state, now) if state is not None else None
            if live is None or live.state == br.CLOSED:
                usable.append(provider)
            elif live.state == br.HALF_OPEN and await self._probe_is_ours(provider, live.probe_round):
                usable.append(provider)
            else:
                skipped.append(m.Step(provider=provider, outcome="breaker_" + live.state, ms=0.0, detail=describe(live, now)))
        return usable, skipped

    async def _probe_is_ours(self, provider: str, round_: int) -> bool:
        """Claim this round's probe once per router: later asks in the same round pay no round
        trip (and do not probe again: one probe per round, even from the winner)."""
        tried = self._tried.get(provider)
        if tried is not None and tried[0] == round_ and time.monotonic() - tried[1] < self.stale_after_s:
            return False
        won = await self.claim_probe(provider, round_)  # (a stale claim may be taken over)
        self._tried[provider] = (round_, time.monotonic())
        return won

    async def claim_probe(self, provider: str, round_: int) -> bool:
        """True for exactly one caller per (provider, round), fleet-wide."""
        key = f"probe.{provider}"
        claim = f"{round_}:{self.clock():.3f}".encode()
        try:
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:
                await self.kv.create(key, claim)
                return True
            held_round, _, at = (entry.value or b"").decode().partition(":")
            if held_round == str(round_) and self.clock() - float(at or 0) < self.stale_after_s:
                return False
            await self.kv.update(key, claim, last=entry.revision)
            return True
        except (KeyWrongLastSequenceError, APIError):  # another router won the round
            return False


def describe(state: m.BreakerState, now: float) -> str:
    if state.state == br.OPEN:
        return f"open ({state.reason or 'failures'}), retry in {max(0.0, state.open_until - now):.1f}s"
    if state.state == br.MISCONFIGURED:
        said = f": {state.detail}" if state.detail else ""
        return (f"misconfigured ({state.reason or 'auth'}{said}); not called until "
                f"`llmbus health reset {state.provider}` or a successful `llmbus test {state.provider}`")
    if state.state == br.HALF_OPEN:
        return "half-open: another router is probing it"
    return state.state
