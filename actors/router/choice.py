"""Which strategy an ask gets when it names none: set live for the whole fleet, per tier.

``llmbus set-strategy NAME [--tier T]`` sends a ``StrategySet`` to ``<root>.control.strategy``; the
router that takes it stores it in the KV bucket ``<root>_control`` (``strategy.default`` or
``strategy.tier.<tier>``, file storage: it survives restarts), and every router's watch of that
bucket picks the change up (no restart). Precedence for an ask: its own ``strategy``, then its
tier's live choice, then the live default, then the config's ``router.strategy``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import msgspec
from anyio.abc import TaskStatus

from bus import codec
from bus import messages as m
from bus.endpoint import Context
from bus.streams import KvMirror
from bus.subjects import check_token

if TYPE_CHECKING:
    from actors.router.actor import Router

DEFAULT_KEY = "strategy.default"
TIER_PREFIX = "strategy.tier."
_decode = codec.decoder(m.StrategySet).decode


class StrategyChoice:
    def __init__(self, router: Router, *, configured: str) -> None:
        self.router = router
        self.configured = configured
        self.default = configured  # the live default (the config's until one is set)
        self.tiers: dict[str, str] = {}
        self.mirror: KvMirror | None = None

    def for_tier(self, tier: str | None) -> str:
        if tier is not None and self.tiers:
            chosen = self.tiers.get(tier)
            if chosen is not None:
                return chosen
        return self.default

    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        router = self.router
        self.mirror = KvMirror(router.nc, router.subjects.bucket("control"), "strategy.>", on_change=self._changed)
        await self.mirror.run(task_status=task_status)

    def _changed(self, key: str, value: bytes | None) -> None:
        try:
            chosen = _decode(value).strategy if value is not None else None
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.router.log.warning("bad_strategy_entry", key=key)
            return
        if chosen is not None and chosen not in self.router.policies:
            # set by a newer router that knows it: this one keeps its own choice rather than fail asks
            self.router.log.warning("unknown_strategy_set", key=key, strategy=chosen)
            return
        if key == DEFAULT_KEY:
            self.default = chosen or self.configured
        elif key.startswith(TIER_PREFIX):
            tier = key.removeprefix(TIER_PREFIX)
            if chosen is None:
                self.tiers.pop(tier, None)
            else:
                self.tiers[tier] = chosen
        self.router.log.info("strategy_changed", key=key, strategy=chosen or "(config)")

    def report(self) -> m.StrategyReport:
        return m.StrategyReport(default=self.default, tiers=dict(sorted(self.tiers.items())),
                                configured=self.configured, available=list(self.router.policies),
                                order=list(self.router.order))

    async def serve(self, request: m.StrategySet | m.StrategyQuery, ctx: Context) -> m.StrategyReport | m.Failure:
        if isinstance(request, m.StrategyQuery):
            return self.report()
        known = self.router.policies
        if request.strategy is not None and request.strategy not in known:
            return m.Failure(kind=m.BAD_REQUEST,
                             message=f"unknown strategy {request.strategy!r}; known: {', '.join(known)}")
        if request.tier is not None:
            try:
                check_token(request.tier, "tier")
            except ValueError as exc:
                return m.Failure(kind=m.BAD_REQUEST, message=str(exc))
        key = DEFAULT_KEY if request.tier is None else TIER_PREFIX + request.tier
        failed = await store_control(self.mirror, key, request if request.strategy is not None else None,
                                     self._changed)
        return failed or self.report()


async def store_control(mirror: KvMirror | None, key: str, value: msgspec.Struct | None, changed) -> m.Failure | None:
    """Write ``value`` under ``key`` of the control bucket (None: remove the key), then tell this
    router's own view at once (``changed(key, bytes | None)``); the other routers follow by their
    watch. A Failure when the bucket cannot be written."""
    kv = mirror.kv if mirror is not None else None
    if kv is None:
        return m.Failure(kind=m.UNAVAILABLE, message="this router has not opened its control bucket yet")
    data = codec.encode(value) if value is not None else None
    try:
        if data is None:
            await kv.delete(key)
        else:
            await kv.put(key, data)
    except Exception as exc:
        return m.Failure(kind=m.UNAVAILABLE, message=f"cannot {'clear' if data is None else 'write'} {key}: {exc}")
    changed(key, data)
    return None
