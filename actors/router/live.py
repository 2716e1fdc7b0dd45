"""What a router knows live and shares across its asks: ``Plan.live`` for the policies.

- ``p95_ms[provider]``: each provider's p95 latency of successful calls, from the health actor's
  ``metrics.<provider>`` entries (a decayed streaming sketch of every outcome fleet-wide, flushed to
  KV once a second; ``watch`` mirrors them with no round trip on the ask path). Shared, so every
  router hedges on the same estimate, a new router starts warm, and it survives restarts.
- ``first_answer[provider]``: this router's own sketch of how long a hedged ask's first call took
  to answer (infinite when it never did), which only this router can see: stalled calls publish
  no outcome.
- ``hedge``: the extra-call token bucket (``actors.pure.hedging.HedgeBudget``).
- ``prices``: USD per million tokens of each provider's model (cascade's ``cheapest_first``).
- ``stage1``: the pipeline's good stage-1 states, by question (bounded, oldest out first).
- ``reliability``: each provider's learned reliability per field, shared by every router in KV
  (``actors.router.reliability``).

Nothing here does I/O on the ask path; a policy reads and records through these plain objects, so
table tests and the bench's virtual clock use a ``Live()`` of their own.
"""

from __future__ import annotations

import anyio
import msgspec
from anyio.abc import TaskStatus

from bus import messages as m
from bus.streams import KvMirror
from actors.pure.hedging import HedgeBudget
from actors.pure.quantiles import Sketch

_decode = msgspec.json.Decoder(m.ProviderHealth).decode
STAGE1_KEPT = 4096


class Live:
    def __init__(self) -> None:
        self.p95_ms: dict[str, float] = {}
        self.first_answer: dict[str, Sketch] = {}
        self.hedge = HedgeBudget()
        self.prices: dict[str, float] = {}  # provider -> USD per million tokens in + out (cascade's order)
        self.mirror: KvMirror | None = None
        self.stage1: dict[str, tuple[object, float]] = {}  # pipeline: question key -> (state, good until)
        # consensus: the reliability every router shares in KV (actors.router.reliability.Shared); None:
        # the policies use their process's own (consensus.LEARNED)
        self.reliability = None

    def keep_stage1(self, key: str, state: object, until: float) -> None:
        if len(self.stage1) >= STAGE1_KEPT:  # the oldest kept goes first (dicts keep insertion order)
            del self.stage1[next(iter(self.stage1))]
        self.stage1[key] = (state, until)

    def price_providers(self, settings, pricing) -> None:
        """``prices`` from the pricing table: each provider's configured model, input + output."""
        self.prices = {}
        if pricing is None:
            return
        for name, config in settings.providers.items():
            price = pricing.price(config.kind, config.model or f"{name}-1")
            if price is not None:
                self.prices[name] = price.input + price.output

    def observe_first(self, provider: str, seconds: float) -> None:
        sketch = self.first_answer.get(provider)
        if sketch is None:
            sketch = self.first_answer[provider] = Sketch(half_life=2000.0)
        sketch.add(seconds)

    def _changed(self, key: str, value: bytes | None) -> None:
        provider = key.removeprefix("metrics.")
        p95 = None
        if value is not None:
            try:
                p95 = _decode(value).latency_p95_ms
            except (msgspec.DecodeError, msgspec.ValidationError):
                p95 = None
        if p95 is None:
            self.p95_ms.pop(provider, None)
        else:
            self.p95_ms[provider] = p95

    async def watch(self, nc, subjects, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        """Mirror the health bucket's ``metrics.>``; ready once the current values are in."""
        self.mirror = KvMirror(nc, subjects.bucket("health"), "metrics.>", on_change=self._changed)
        await self.mirror.run(task_status=task_status)
