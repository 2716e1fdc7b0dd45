"""The mock provider: no keys, no network, deterministic with a seed.

One class drives demos, tests and benchmarks. Per provider name (``[providers.<name>]`` in TOML):
a latency distribution, a probability for each failure kind (plus ``stall``: never reply, so the
caller's deadline is what ends the call), a ``retry_after_s`` sent with ``rate_limited``, and an
``echo`` or ``canned`` answer. Latency never outlives the deadline: the endpoint's deadline ends a
sleep that would.
"""

from __future__ import annotations

import asyncio
import math
import random

from bus import messages as m
from bus.endpoint import Context
from bus.errors import error_for
from actors.providers.base import ProviderActor
from actors.settings import Latency, ProviderSettings

STALL = "stall"


def draw_latency_s(latency: Latency, rng: random.Random) -> float:
    if latency.dist == "uniform":
        ms = rng.uniform(latency.low_ms, latency.high_ms)
    elif latency.dist == "lognormal":
        ms = latency.ms * math.exp(rng.gauss(0.0, latency.sigma)) if latency.ms > 0 else 0.0
    else:
        ms = latency.ms
    return max(0.0, ms) / 1000.0


def draw_failure(failures: dict[str, float], rng: random.Random) -> str | None:
    """The failure kind for this call (or None), one uniform draw against cumulative rates."""
    if not failures:
        return None
    x = rng.random()
    for kind, rate in failures.items():
        if x < rate:
            return kind
        x -= rate
    return None


def count_tokens(text: str) -> int:
    return max(1, len(text.split())) if text else 0


class MockProvider(ProviderActor):
    description = "mock LLM provider (configurable latency, failures and answers)"

    def __init__(self, *, provider: str, config: ProviderSettings, **kw) -> None:
        super().__init__(provider=provider, model=config.model or f"{provider}-1", **kw)
        self.config = config
        self.rng = random.Random(config.seed)

    async def complete(self, request: m.Complete, ctx: Context) -> m.Completion:
        cfg = self.config
        delay = draw_latency_s(cfg.latency, self.rng)
        failure = draw_failure(cfg.failures, self.rng)
        if failure == STALL:
            await asyncio.Event().wait()  # until the deadline or a Cancel ends it
        if delay:
            await asyncio.sleep(delay)
        if failure is not None:
            raise error_for(
                m.Failure(
                    kind=failure,
                    message=f"mock {self.provider} failed as configured",
                    provider=self.provider,
                    retry_after_s=cfg.retry_after_s if failure == m.RATE_LIMITED else None,
                )
            )
        prompt = "\n".join(msg.text() for msg in request.messages if msg.role == "user")
        text = f"[{self.provider}] {prompt}" if cfg.answer == "echo" else cfg.canned
        return m.Completion(
            id=request.id,
            ask_id=request.ask_id,
            provider=self.provider,
            model=self.model,
            text=text,
            usage=m.TokenUsage(input_tokens=count_tokens(prompt), output_tokens=count_tokens(text)),
            latency_ms=round(delay * 1000.0, 3),
            confidence=cfg.confidence,
        )
