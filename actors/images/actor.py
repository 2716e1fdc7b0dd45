"""The images actor: serves ``<root>.image`` (``ImageAsk``) as the tier matrix says.

For an ask of a tier with ``[tiers.<name>.quotas] images``, it first reserves the ask's count at
the cost actor (``QuotaReserve``, the ask id as call id: a retried ask holds once). Granted: the
image providers are tried in order (``[tiers.<name>.images].providers``, else ``[images].providers``,
else every configured provider of a kind that makes images, mocks only while no real one runs) on
``<root>.provider.<name>.image``, the next one after a retryable failure; then ``QuotaCommit``
(``ok`` when an image came back: it counts; a failure releases the hold). Refused (the quota is
used up), the tier's ``over_quota`` policy answers: ``placeholder`` (a rendered PNG with the
prompt's words, ``ImageResult.placeholder``), ``refuse`` (the ``budget_exceeded`` Failure naming the
quota) or ``cheaper`` (``cheaper_model`` on ``cheaper_provider``: not counted). Every reply says
which quota it counted against (``quota``) and what is left (``metadata.quota_left``); its
``cost_usd`` is priced from the call's tokens like the ledger prices the provider's Usage event.
"""

from __future__ import annotations

import asyncio
import time

import msgspec

from bus import messages as m
from bus import names
from bus.deadline import now
from bus.endpoint import Context, Endpoint
from bus.errors import BadRequest, error_for
from bus.subjects import COST_QUOTA_COMMIT, COST_QUOTA_RESERVE, IMAGE, PROVIDER_IMAGE
from actors.providers.images import check, render_placeholder
from actors.routing_settings import TierImages
from actors.runtime import Actor
from actors.settings import Settings

IMAGE_KINDS = ("mock", "openai", "gemini")  # anthropic makes no images
HOLD_GRACE_S = 30.0  # a quota hold outlives the ask's deadline this long: its commit is on the way


def image_order(settings: Settings, wanted: list[str] | None = None) -> list[str]:
    """The providers that make images, in order: ``wanted`` (else ``[images].providers``, else every
    provider of an image kind), without those whose key is unset, mocks only while no real one is left."""
    names_ = wanted or settings.images.providers or list(settings.providers)
    order = [n for n in names_ if n in settings.providers and settings.providers[n].kind in IMAGE_KINDS
             and settings.providers[n].missing_key() is None]
    real = [n for n in order if settings.providers[n].kind != "mock"]
    return real or order


class ImagesActor(Actor):
    kind = "images"
    description = "image asks: tier policy, quotas, providers, object-store references"

    def __init__(self, *, settings: Settings, **kw) -> None:
        super().__init__(**kw)
        self.settings = settings
        self.pricing = None  # loaded on the first priced image
        self._background: set[asyncio.Task] = set()  # quota releases sent after the reply

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint.serving(IMAGE, self.subjects, self.image)]

    def price(self, provider: str, result: m.ImageResult) -> float | None:
        """The call's cost from its tokens (``config/pricing.toml``, as the ledger prices its Usage);
        the provider's own figure when it sent no tokens (the mock: 0); None when unpriced."""
        if result.usage.input_tokens == 0 and result.usage.output_tokens == 0:
            return result.cost_usd
        if self.pricing is None:
            path = self.settings.pricing_path()
            from actors.pure.pricing import Pricing

            self.pricing = Pricing.load(path) if path is not None else Pricing({})
        kind = self.settings.providers[provider].kind if provider in self.settings.providers else provider
        cost = self.pricing.cost(kind, result.model, result.usage)
        return None if cost is None else round(cost, 9)

    async def image(self, ask: m.ImageAsk, ctx: Context) -> m.ImageResult:
        check(ask.prompt, ask.size, ask.count)
        for value, what, kind in ((ask.id, "ask id", "label"), (ask.tier, "tier", "token"),
                                  (ask.user, "user", "label"), (ask.provider, "provider", "token")):
            if value is not None and (bad := names.problem(value, what, kind)):
                raise BadRequest(bad)
        tier = self.settings.tiers.get(ask.tier) if ask.tier else None
        if ask.tier and tier is None:
            raise BadRequest(f"no tier {ask.tier!r} (tiers: {', '.join(self.settings.tiers) or 'none'})")
        policy = tier.images if tier is not None else TierImages()
        quota = tier.quotas.get("images") if tier is not None else None
        if quota is None:
            return await self._generate(ask, ctx, self._order(ask, policy), None)
        reply = await self.rpc.service(
            COST_QUOTA_RESERVE, m.QuotaReserve(call_id=ask.id, ask_id=ask.id, tier=ask.tier, count=ask.count,
                                               user=ask.user, expires_at=time.time() + ctx.remaining_s() + HOLD_GRACE_S),
            deadline=ctx.deadline, ask_id=ask.id)
        named = f"tier:{ask.tier}:images:{quota.per}"
        if isinstance(reply, m.Failure):
            if reply.kind != m.BUDGET_EXCEEDED:
                raise error_for(reply)
            self.log.info("image_over_quota", ask_id=ask.id, tier=ask.tier, policy=policy.over_quota)
            if policy.over_quota == "placeholder":
                return self._placeholder(ask, named, reply.message)
            if policy.over_quota == "cheaper" and policy.cheaper_model:
                order = [policy.cheaper_provider] if policy.cheaper_provider else self._order(ask, policy)
                cheaper = msgspec.structs.replace(ask, model=policy.cheaper_model)
                result = await self._generate(cheaper, ctx, order, None)
                return msgspec.structs.replace(result, metadata={**result.metadata, "over_quota": reply.message,
                                                                 "cheaper": True})
            raise error_for(reply)
        try:
            result = await self._generate(ask, ctx, self._order(ask, policy), named)
        except BaseException:  # failed, timed out or cancelled: release the hold, without making the reply wait
            self._later(self.rpc.service(COST_QUOTA_COMMIT, m.QuotaCommit(call_id=ask.id, tier=ask.tier, ok=False),
                                         deadline=now() + 2.0, ask_id=ask.id))
            raise
        done = await self.rpc.service(COST_QUOTA_COMMIT, m.QuotaCommit(call_id=ask.id, tier=ask.tier, count=ask.count),
                                      deadline=ctx.deadline, ask_id=ask.id)
        left = done.quota.left if isinstance(done, m.QuotaGranted) and done.quota else None
        return msgspec.structs.replace(result, metadata={**result.metadata, "quota_left": left})

    def _later(self, work) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _order(self, ask: m.ImageAsk, policy: TierImages) -> list[str]:
        if ask.provider:
            return [ask.provider]
        return image_order(self.settings, policy.providers)

    def _placeholder(self, ask: m.ImageAsk, quota: str, why: str) -> m.ImageResult:
        pictures = [m.Picture(media_type="image/png", data=render_placeholder(ask.prompt, ask.size, label="placeholder"))
                    for _ in range(ask.count)]
        return m.ImageResult(id=ask.id, ask_id=ask.id, provider="placeholder", model="placeholder", images=pictures,
                             size=ask.size, cost_usd=0.0, placeholder=True, quota=quota,
                             metadata={"over_quota": why, "quota_left": 0})

    async def _generate(self, ask: m.ImageAsk, ctx: Context, order: list[str], quota: str | None) -> m.ImageResult:
        if not order:
            raise error_for(m.Failure(kind=m.NO_HEALTHY_PROVIDER, message="no configured provider makes images"))
        last: m.Failure | None = None
        tried = []
        for i, provider in enumerate(order):
            request = m.ImageRequest(id=f"{ask.id}.{i}", ask_id=ask.id, prompt=ask.prompt, size=ask.size,
                                     count=ask.count, style=ask.style, model=ask.model, tier=ask.tier, user=ask.user,
                                     labels=ask.labels)
            reply = await self.rpc.service(PROVIDER_IMAGE, request, deadline=ctx.deadline, name=provider,
                                           ask_id=ask.id, call_id=request.id)
            if isinstance(reply, m.ImageResult):
                cost = self.price(provider, reply)
                return msgspec.structs.replace(reply, id=ask.id, quota=quota, cost_usd=cost,
                                               metadata={**reply.metadata, "tried": tried})
            tried.append(f"{provider}:{reply.kind}")
            last = reply
            if not reply.retryable and reply.kind != m.BAD_REQUEST:
                break
        raise error_for(msgspec.structs.replace(last, message=f"{last.message} (tried {', '.join(tried)})"))
