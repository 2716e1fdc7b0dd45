"""The provider actor: serves ``<root>.provider.<name>.complete`` and ``.stream``, reports facts.

A concrete provider implements ``complete(request, ctx) -> Completion`` (raising an ``LlmError``
for a classified failure) and may implement ``stream(request, ctx)``, an async generator of text
deltas (``str``) ending with the final ``Completion``; the default streams the whole answer as one
delta. The base class serves both in queue group ``provider.<name>`` so copies share the load, and
publishes the facts other actors consume: one ``Outcome`` per call on
``<root>.events.outcome.<name>`` (health) and one ``Usage`` per answered call on
``<root>.events.usage.<name>`` (cost). Events are sent in batches every few milliseconds
(``events.py``); the events stream keeps them. Outcomes are plain publishes; usage is published
with a JetStream acknowledgement and sent again until the stream has it (it bills).
A failed call's Outcome carries the failure's message as ``detail`` (cut to ``DETAIL_MAX``; adapters
have already cut their key out of it), which health shows when the provider is misconfigured.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import msgspec

from bus import messages as m
from actors import metrics
from bus.deadline import now
from bus.endpoint import Context, Endpoint
from bus.errors import LlmError
from bus.streams import ensure_events_stream
from bus.subjects import PROVIDER_COMPLETE, PROVIDER_STREAM
from actors.documents.prepare import has_documents, options_for, prepare
from actors.providers import images
from actors.providers.events import EventBatches
from actors.runtime import Actor

DETAIL_MAX = 300


class ProviderCall:
    """How one provider call ended, filled in inside ``ProviderActor.reporting``."""

    __slots__ = ("started", "kind", "retry_after", "detail", "result")

    def __init__(self) -> None:
        self.started = now()
        self.kind: str | None = m.INTERNAL  # until the block says otherwise
        self.retry_after: float | None = None
        self.detail = ""
        self.result = None

    def answered(self, result):
        self.kind, self.result = None, result
        return result


class ProviderActor(Actor):
    kind = "provider"

    def __init__(self, *, provider: str, model: str, **kw) -> None:
        super().__init__(name=f"provider-{provider}", **kw)
        self.provider = provider
        self.model = model
        self.events = EventBatches(lambda: self.nc, self.subjects.outcome(provider), self.subjects.usage(provider))

    def micro_metadata(self) -> dict[str, str]:
        # what `llmbus providers` shows: as this actor, where it runs, is configured (it runs: it is)
        config = getattr(self, "config", None)
        return {"kind": self.kind, "provider": self.provider, "model": self.model,
                "provider_kind": getattr(config, "kind", "") or ""}

    def background(self):
        return [self.events.run]

    async def teardown(self) -> None:
        await self.events.flush(self.stop_grace_s)  # after the last handler: nothing more will be added

    async def setup(self) -> None:
        try:
            await ensure_events_stream(self.nc, self.subjects)
        except Exception as exc:  # no JetStream here: events still flow, nothing keeps them
            self.events.outbox.acked = False  # nothing would acknowledge usage: plain publishes
            self.log.warning("events_stream_unavailable", error=str(exc) or type(exc).__name__)

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint.serving(PROVIDER_COMPLETE, self.subjects, self._serve_complete, name=self.provider),
            Endpoint.serving(PROVIDER_STREAM, self.subjects, self._serve_stream, name=self.provider),
            images.endpoint(self),  # <root>.provider.<name>.image (actors/providers/images.py)
        ]

    # --- to implement -------------------------------------------------------------------------
    async def complete(self, request: m.Complete, ctx: Context) -> m.Completion:
        raise NotImplementedError

    async def stream(self, request: m.Complete, ctx: Context) -> AsyncIterator[str | m.Completion]:
        result = await self.complete(request, ctx)
        if result.text:
            yield result.text
        yield result

    async def with_documents(self, request: m.Complete) -> m.Complete:
        """The request with its Document parts made sendable here (``actors/documents/prepare.py``):
        extracted text, or the original where this provider takes it natively; fitted to the window."""
        config = getattr(self, "config", None)
        reserve = request.params.max_tokens or getattr(config, "max_tokens", 0) or 0
        started = time.perf_counter()
        messages = await prepare(list(request.messages), options_for(config, request.params.model),
                                 reserve_tokens=reserve)
        docs = [p for msg in messages if not isinstance(msg.content, str) for p in msg.content if type(p) is m.Document]
        self.log.info("documents", step="extract", ask_id=request.ask_id, documents=len(docs),
                      native=sum(1 for d in docs if d.data is not None), chars=sum(len(d.text or "") for d in docs),
                      ms=round((time.perf_counter() - started) * 1000.0, 3))
        return msgspec.structs.replace(request, messages=messages)

    # --- serving ------------------------------------------------------------------------------
    @contextmanager
    def reporting(self, request: m.Complete | m.ImageRequest, ctx: Context) -> Iterator[ProviderCall]:
        """The block of one provider call: its ``Outcome`` (and the ``Usage`` of an answer) is reported
        once it exits — answered if the block called ``call.answered(result)``, else the ``LlmError``'s
        kind, a timeout or a cancel, or internal for anything else."""
        call = ProviderCall()
        try:
            yield call
        except LlmError as exc:
            call.kind, call.retry_after, call.detail = exc.kind, exc.retry_after_s, exc.message
            raise
        except (asyncio.CancelledError, GeneratorExit):
            # A stream's consumer closes the generator right after taking the final Completion, which
            # raises GeneratorExit at that last yield: the call was answered, not timed out.
            if call.result is None:
                call.kind = m.TIMEOUT if ctx.cancel_reason is None else m.CANCELLED
            raise
        finally:
            self._report(request, call.kind, call.retry_after, call.started, call.result, call.detail)

    async def _serve_complete(self, request: m.Complete, ctx: Context) -> m.Completion:
        with self.reporting(request, ctx) as call:
            if has_documents(request.messages):
                request = await self.with_documents(request)
            return call.answered(await self.complete(request, ctx))

    async def _serve_stream(self, request: m.Complete, ctx: Context) -> AsyncIterator[m.Chunk | m.Completion]:
        seq = 0
        with self.reporting(request, ctx) as call:
            if has_documents(request.messages):
                request = await self.with_documents(request)
            async for item in self.stream(request, ctx):
                if isinstance(item, m.Completion):
                    yield call.answered(item)
                    return
                yield m.Chunk(id=request.id, seq=seq, delta=item)
                seq += 1
            raise LlmError(f"{self.provider}: the stream ended without a final answer")

    def _report(
        self,
        request: m.Complete,
        kind: str | None,
        retry_after: float | None,
        started: float,
        result: m.Completion | None,
        detail: str = "",
    ) -> None:
        wall = time.time()
        outcome = m.Outcome(
            provider=self.provider,
            ok=kind is None,
            kind=kind,
            latency_ms=round((now() - started) * 1000.0, 3),
            retry_after_s=retry_after,
            at=wall,
            detail=detail[:DETAIL_MAX] if kind is not None else "",
        )
        usage = None
        if kind is None and result is not None:
            usage = m.Usage(
                ask_id=request.ask_id,
                call_id=request.id,
                provider=self.provider,
                model=result.model,
                usage=result.usage,
                tier=request.tier,
                user=request.user,
                strategy=getattr(request, "strategy", None),  # an ImageRequest has none
                at=wall,
                experiment=request.labels.get("experiment") if request.labels else None,
            )
        self.events.add(outcome, usage)
        metrics.provider_call(self.provider, kind, outcome.latency_ms)
