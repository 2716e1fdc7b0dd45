"""The mock provider: no keys, no network, deterministic with a seed.

One class drives demos, tests and benchmarks. Per provider name (``[providers.<name>]`` in TOML):
a latency distribution, a probability for each failure kind or mock fault, a ``retry_after_s``
sent with ``rate_limited``, and an ``echo`` or ``canned`` answer. An Ask can also force a fault for
itself with the label ``mock.fault`` (e.g. ``labels={"mock.fault": "rate_limited"}``).

Mock faults besides the wire kinds: ``stall`` (accept, never answer: the caller's deadline ends
it), ``cut_stream`` (a stream breaks halfway: the consumer gets a Failure, never a complete
answer), ``stall_stream`` (a stream stops halfway and never ends), ``malformed_output``
(structured output that is not valid JSON), ``empty`` (an empty answer). Latency never outlives the deadline: the endpoint's deadline ends a sleep that would.

A structured ask (with a schema) is answered with ``actors.pure.examples.example_for`` of the schema,
its strings the prompt: data the ask's schema accepts, the same for the same ask — with the
provider's ``data`` fields put over it and each ``variants`` field drawn (seeded) from its list
(only the fields the schema's ``properties`` declare, when it declares any: the demo mocks of
``config/llmbus.toml`` carry canned extractions for ``scripts/extract_entities.py``'s fields
without touching other asks).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import AsyncIterator

from bus import messages as m
from bus.endpoint import Context
from bus.errors import InvalidOutput, Unavailable, error_for
from actors.providers.base import ProviderActor
from actors.providers.images import render_placeholder
from actors.pure.examples import example_for
from actors.pure.tokens import count_words
from actors.settings import Latency, ProviderSettings

FAULT_LABEL = "mock.fault"
STALL, CUT_STREAM, MALFORMED, EMPTY = "stall", "cut_stream", "malformed_output", "empty"
STALL_STREAM = "stall_stream"


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


def _read(msg: m.Message) -> str:
    """What the mock reads of a message: its text, and the text of its (extracted) documents."""
    if isinstance(msg.content, str):
        return msg.content
    return "".join(p.text + "\n" if isinstance(p, m.Document) and p.text else p.text if isinstance(p, m.Text) else ""
                   for p in msg.content)


class MockProvider(ProviderActor):
    description = "mock LLM provider (configurable latency, failures and answers)"

    def __init__(self, *, provider: str, config: ProviderSettings, **kw) -> None:
        super().__init__(provider=provider, model=config.model or f"{provider}-1", **kw)
        self.config = config
        self.rng = random.Random(config.seed)

    async def _prepare(self, request: m.Complete) -> tuple[float, str | None]:
        """Draw this call's latency and fault; fail now for a wire failure kind or a stall."""
        cfg = self.config
        delay = draw_latency_s(cfg.latency, self.rng)
        fault = request.labels.get(FAULT_LABEL) or draw_failure(cfg.failures, self.rng)
        if fault == STALL:
            await asyncio.Event().wait()  # until the deadline or a Cancel ends it
        if delay:
            await asyncio.sleep(delay)
        if fault in m.FAILURE_KINDS:
            raise error_for(
                m.Failure(
                    kind=fault,
                    message=f"mock {self.provider} failed as configured",
                    provider=self.provider,
                    retry_after_s=cfg.retry_after_s if fault == m.RATE_LIMITED else None,
                )
            )
        return delay, fault

    def _answer(self, request: m.Complete, delay: float, fault: str | None) -> m.Completion:
        cfg = self.config
        prompt = "\n".join(_read(msg) for msg in request.messages if msg.role == "user")
        data = None
        if fault == EMPTY:
            text = ""
        elif request.schema is not None:
            if fault == MALFORMED:
                raise InvalidOutput(f"mock {self.provider}: structured output is not valid JSON: '{{\"answer\": '")
            data = example_for(request.schema, text=prompt)
            if isinstance(data, dict) and (cfg.data or cfg.variants):
                declared = request.schema.get("properties") if isinstance(request.schema, dict) else None
                fits = (lambda k: k in declared) if isinstance(declared, dict) and declared else (lambda k: True)
                data = {**data, **{k: v for k, v in cfg.data.items() if fits(k)},
                        **{k: self.rng.choice(v) for k, v in cfg.variants.items() if v and fits(k)}}
            text = json.dumps(data)
        else:
            text = f"[{self.provider}] {prompt}" if cfg.answer == "echo" else cfg.canned
        return m.Completion(
            id=request.id,
            ask_id=request.ask_id,
            provider=self.provider,
            model=self.model,
            text=text,
            data=data,
            usage=m.TokenUsage(input_tokens=count_words(prompt), output_tokens=count_words(text)),
            latency_ms=round(delay * 1000.0, 3),
            confidence=cfg.confidence,
        )

    async def complete(self, request: m.Complete, ctx: Context) -> m.Completion:
        delay, fault = await self._prepare(request)
        return self._answer(request, delay, fault)

    async def stream(self, request: m.Complete, ctx: Context) -> AsyncIterator[str | m.Completion]:
        delay, fault = await self._prepare(request)
        answer = self._answer(request, delay, fault)
        words = answer.text.split(" ")
        for i, word in enumerate(words):
            if fault == CUT_STREAM and i >= len(words) // 2:
                raise Unavailable(f"mock {self.provider}: the stream was cut after {i} pieces")
            if fault == STALL_STREAM and i == len(words) // 2:
                await asyncio.Event().wait()  # until the deadline, a Cancel, or the consumer's silence ends it
            yield word if i == 0 else " " + word
        yield answer

    async def image(self, request: m.ImageRequest, ctx: Context) -> m.ImageResult:
        """Placeholder PNGs with the prompt's words (``actors.providers.images.render_placeholder``);
        latency and faults as for completions; label ``mock.image = "noise"``: photo-sized PNGs."""
        delay, _ = await self._prepare(request)
        noise = request.labels.get("mock.image") == "noise"
        pictures = [m.Picture(media_type="image/png",
                              data=render_placeholder(request.prompt if i == 0 else f"{request.prompt} #{i + 1}",
                                                      request.size, noise=noise, label=self.provider))
                    for i in range(request.count)]
        return m.ImageResult(id=request.id, ask_id=request.ask_id, provider=self.provider,
                             model=request.model or f"{self.model}-image", images=pictures, size=request.size,
                             cost_usd=0.0, latency_ms=round(delay * 1000.0, 3))
