"""Count quotas per tier and period (``[tiers.<name>.quotas]``), served by the cost actor.

``images = { per = "month", limit = 50 }`` lets tier ``pro`` make 50 images a UTC month. The same
reservation mechanism as budgets: before the provider call the images actor sends ``QuotaReserve``
(the ask id as call id, so a retried ask holds once); it is granted only if used + held + count ≤
limit, and the hold is written with KV compare-and-set under one key per (tier, quota, period) in
the bucket ``<root>_quotas``, so several cost actors stay exact (a conflict re-reads and decides
again). Changes that arrive together for one key are decided in order and written in one
compare-and-set. ``QuotaCommit`` turns the hold into use (``ok``: an image made always counts, even
when its hold lapsed meanwhile) or releases it; a hold never committed lapses at its ``expires_at``
(the ask's deadline and a grace). A committed call id is remembered in
the period's value (the last ``DONE_KEEP``), so a repeated reserve or commit of it counts nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

import msgspec
from nats.js.errors import KeyNotFoundError

from bus import messages as m
from bus import names
from bus.deadline import now as monotonic
from bus.endpoint import Context, Endpoint
from bus.errors import BadRequest, BudgetExceeded
from bus.streams import ensure_kv, retrying
from bus.subjects import COST_QUOTA_COMMIT, COST_QUOTA_RESERVE, COST_QUOTAS, Subjects
from actors.cost.cas import KV_RETRY_S, CasWriter
from actors.routing_settings import QuotaSettings

DONE_KEEP = 5000


class QuotaHold(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    count: int
    expires_at: float


class QuotaUse(msgspec.Struct, kw_only=True, tag=True):
    """One period's value in KV: units used, holds by call id, call ids already counted."""

    used: int = 0
    holds: dict[str, QuotaHold] = {}
    done: list[str] = []


_use = msgspec.json.Decoder(QuotaUse)
_encode = msgspec.json.Encoder().encode


def _store(use: QuotaUse) -> bytes:
    use.done = use.done[-DONE_KEEP:]  # the last DONE_KEEP counted call ids are remembered
    return _encode(use)


def _unlapsed(use: QuotaUse, at: float) -> QuotaUse:
    """The copy a batch of changes works on: holds lapsed by ``at`` dropped."""
    return QuotaUse(used=use.used, holds={c: h for c, h in use.holds.items() if h.expires_at > at}, done=list(use.done))


def _check_names(req: m.QuotaReserve | m.QuotaCommit) -> None:
    """BadRequest unless the call id is a label and the tier and the quota are tokens."""
    for value, what, kind in ((req.call_id, "call_id", "label"), (req.tier, "tier", "token"),
                              (req.quota, "quota", "token")):
        if bad := names.problem(value, what, kind):
            raise BadRequest(bad)


def stamp_of(period: str, at: float) -> str:
    day = datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d")
    return day if period == "day" else day[:7]


def quota_name(tier: str, quota: str, period: str) -> str:
    return f"tier:{tier}:{quota}:{period}"


class Quotas:
    """The quota endpoints of a cost actor; ``limits``: tier -> quota name -> QuotaSettings."""

    def __init__(self, limits: dict[str, dict[str, QuotaSettings]], *, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits
        self.clock = clock
        self.kv = None
        self.writer = CasWriter(kv=lambda: self.kv, decode=_use.decode, encode=_store, empty=QuotaUse,
                                fresh=_unlapsed, clock=lambda: self.clock(), store="quota store")

    async def open(self, nc, subjects: Subjects) -> None:
        self.kv = await retrying(lambda: ensure_kv(nc, subjects.bucket("quotas")), deadline=monotonic() + KV_RETRY_S)

    def endpoints(self, subjects: Subjects) -> list[Endpoint]:
        return [Endpoint.serving(COST_QUOTA_RESERVE, subjects, self.reserve),
                Endpoint.serving(COST_QUOTA_COMMIT, subjects, self.commit),
                Endpoint.serving(COST_QUOTAS, subjects, self.report)]

    # --- the key of a period -----------------------------------------------------------------
    def _setting(self, tier: str, quota: str) -> QuotaSettings | None:
        return self.limits.get(tier, {}).get(quota)

    def _key(self, tier: str, quota: str, q: QuotaSettings, at: float) -> str:
        return f"q.{tier}.{quota}.{stamp_of(q.per, at)}"

    def _state(self, tier: str, quota: str, q: QuotaSettings, use: QuotaUse, at: float) -> m.Quota:
        held = sum(h.count for h in use.holds.values() if h.expires_at > at)
        return m.Quota(tier=tier, quota=quota, period=q.per, limit=q.limit, used=use.used, held=held,
                       left=max(0, q.limit - use.used - held), stamp=stamp_of(q.per, at))

    # --- endpoints ----------------------------------------------------------------------------
    async def reserve(self, req: m.QuotaReserve, ctx: Context) -> m.QuotaGranted:
        _check_names(req)
        if not 1 <= req.count <= 1000:
            raise BadRequest(f"a quota reservation counts 1 to 1000 units (got {req.count})")
        q = self._setting(req.tier, req.quota)
        if q is None:
            return m.QuotaGranted(call_id=req.call_id)
        key = self._key(req.tier, req.quota, q, self.clock())

        def change(use: QuotaUse, at: float) -> m.QuotaGranted | m.Failure:
            if req.call_id not in use.holds and req.call_id not in use.done:
                held = sum(h.count for h in use.holds.values())
                if use.used + held + req.count > q.limit:
                    return m.Failure(kind=m.BUDGET_EXCEEDED, message=(
                        f"quota {quota_name(req.tier, req.quota, q.per)} ({stamp_of(q.per, at)}): used {use.used} "
                        f"+ held {held} + this ask {req.count} > limit {q.limit}"))
                use.holds[req.call_id] = QuotaHold(count=req.count, expires_at=req.expires_at or at + 60.0)
            return m.QuotaGranted(call_id=req.call_id, quota=self._state(req.tier, req.quota, q, use, at))

        result = await self.writer.change(key, change)
        if isinstance(result, m.Failure):
            if result.kind == m.BUDGET_EXCEEDED:
                raise BudgetExceeded(result.message)
            return result
        return result

    async def commit(self, req: m.QuotaCommit, ctx: Context) -> m.QuotaGranted:
        _check_names(req)
        q = self._setting(req.tier, req.quota)
        if q is None:
            return m.QuotaGranted(call_id=req.call_id)
        key = self._key(req.tier, req.quota, q, self.clock())

        def change(use: QuotaUse, at: float) -> m.QuotaGranted:
            hold = use.holds.pop(req.call_id, None)
            if req.ok and req.call_id not in use.done:  # made: it counts, even if its hold lapsed meanwhile
                use.used += hold.count if hold is not None else max(1, req.count)
                use.done.append(req.call_id)
            return m.QuotaGranted(call_id=req.call_id, quota=self._state(req.tier, req.quota, q, use, at))

        return await self.writer.change(key, change)

    async def report(self, req: m.QuotaQuery, ctx: Context) -> m.QuotaReport:
        at = self.clock()
        out = []
        for tier, quotas in sorted(self.limits.items()):
            for quota, q in sorted(quotas.items()):
                try:
                    entry = await self.kv.get(self._key(tier, quota, q, at))
                    use = _use.decode(entry.value)
                except KeyNotFoundError:
                    use = QuotaUse()
                out.append(self._state(tier, quota, q, use, at))
        return m.QuotaReport(quotas=out)
