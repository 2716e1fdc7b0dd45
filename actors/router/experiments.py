"""Experiments (``[experiments.<name>]``): rollout, A/B and shadow traffic, chosen before dispatch.

An ask that names no strategy of its own, of a tier the experiment covers (``tiers``; empty: all),
falls in the first experiment that covers it. Its arm comes from a stable hash of its user id (the
ask id when it has no user; ``actors.pure.experiment.share``): ``variant`` when under the live
percent, else ``control`` — ``labels["experiment"] = NAME`` opts a user in. The variant runs the
experiment's strategy, providers and options on its own (not the tier's fallback routes, whose
routes name their own strategies). The percent is set live with ``llmbus experiments set NAME
--percent P`` (``<root>.control.experiment``; KV ``<root>_control``, ``experiment.<name>``,
watched by every router, like ``set-strategy``).

A shadow experiment (``shadow = true``) answers every ask with the control; for the users under
the percent it also runs the experiment's strategy on a copy of the ask, started as a task beside
the real route and never awaited by the reply, under its own budget (``shadow_budget_ms``), with
its own ask id, no user and no tier (the user's budgets are not charged) and ``labels["experiment"]
= "NAME/shadow"`` (its calls' ledger entries say so). When both have ended it publishes an
``ExperimentEvent`` (arm ``shadow``, with its agreement with the answer returned) on
``<root>.events.shadow.<name>``.

Every ask of an experiment says its arm in ``Answer.metadata.experiment`` and its calls carry
``labels["experiment"] = "NAME/ARM"`` into the usage ledger (``LedgerEntry.experiment``); it
publishes one ``ExperimentEvent`` on ``<root>.events.experiment.<name>``. Both subjects fall under
the events stream, which ``llmbus experiments`` reads (an ephemeral pull consumer) to report per
arm. No experiment configured: the router checks one bool per ask and does nothing else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING

import anyio
import msgspec
from anyio.abc import TaskStatus

from bus import codec
from bus import messages as m
from bus.deadline import now
from bus.endpoint import Context
from bus.rpc import new_id
from bus.streams import KvMirror
from actors.pure.experiment import agreement, share
from actors.router.choice import store_control
from actors.routing_settings import ExperimentSettings

if TYPE_CHECKING:
    from actors.router.actor import Router
    from actors.router.routing import RouteOne

PREFIX = "experiment."
_decode = codec.decoder(m.ExperimentSet).decode
_encode = msgspec.json.Encoder().encode


class Experiments:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.configured: dict[str, ExperimentSettings] = dict(router.settings.experiments)
        self.active = bool(self.configured)
        self.percent = {name: e.percent for name, e in self.configured.items()}  # live
        self.mirror: KvMirror | None = None
        self.shadows: set[asyncio.Task] = set()  # running shadow tasks (kept referenced)

    # --- live percent ------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        router = self.router
        self.mirror = KvMirror(router.nc, router.subjects.bucket("control"), PREFIX + ">", on_change=self._changed)
        await self.mirror.run(task_status=task_status)

    def _changed(self, key: str, value: bytes | None) -> None:
        name = key.removeprefix(PREFIX)
        exp = self.configured.get(name)
        if exp is None:
            return  # an experiment another config has
        try:
            percent = _decode(value).percent if value is not None else None
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.router.log.warning("bad_experiment_entry", key=key)
            return
        self.percent[name] = exp.percent if percent is None else percent
        self.router.log.info("experiment_changed", experiment=name, percent=self.percent[name])

    def report(self) -> m.ExperimentReport:
        return m.ExperimentReport(experiments=[
            m.ExperimentState(name=n, strategy=e.strategy, shadow=e.shadow, percent=self.percent[n],
                              configured=e.percent) for n, e in self.configured.items()],
            routes={f"{tier}/{route}": n for (tier, route), n in sorted(self.router.routing.uses.items())},
            router=self.router.id)

    async def serve(self, request: m.ExperimentSet | m.ExperimentQuery, ctx: Context) -> m.ExperimentReport | m.Failure:
        if isinstance(request, m.ExperimentQuery):
            return self.report()
        if request.name not in self.configured:
            return m.Failure(kind=m.BAD_REQUEST, message=f"unknown experiment {request.name!r}; configured: "
                                                         f"{', '.join(self.configured) or '(none)'}")
        if request.percent is not None and not 0.0 <= request.percent <= 100.0:
            return m.Failure(kind=m.BAD_REQUEST, message=f"percent must be in [0, 100] (got {request.percent})")
        failed = await store_control(self.mirror, PREFIX + request.name,
                                     request if request.percent is not None else None, self._changed)
        return failed or self.report()

    # --- per ask -----------------------------------------------------------------------------
    def pick(self, own: m.Ask) -> tuple[str, ExperimentSettings, bool] | None:
        """(name, settings, in) for the first experiment covering ``own`` (the ask as it came)."""
        if own.strategy is not None:
            return None
        for name, exp in self.configured.items():
            if exp.tiers and own.tier not in exp.tiers:
                continue
            opted = own.labels.get("experiment") == name if own.labels else False
            return name, exp, opted or share(name, own.user or own.id) < self.percent[name]
        return None

    def apply(self, own: m.Ask, ask: m.Ask, route: RouteOne) -> tuple[m.Ask, RouteOne]:
        picked = self.pick(own)
        if picked is None:
            return ask, route
        name, exp, chosen = picked
        arm = "variant" if chosen and not exp.shadow else "control"
        ask = msgspec.structs.replace(ask, labels={**ask.labels, "experiment": f"{name}/{arm}"})
        if arm == "variant":
            ask = msgspec.structs.replace(ask, strategy=exp.strategy, strategy_options=dict(exp.options),
                                          providers=self.usable(exp) or ask.providers)
            route = self.router.route
        shadow = exp.shadow and chosen
        return ask, lambda a, ctx: self._run(a, ctx, route, name, exp, arm, shadow)

    def usable(self, exp: ExperimentSettings) -> list[str] | None:
        order = self.router.order
        return [p for p in exp.providers if p in order] or None if exp.providers else None

    async def _run(self, ask: m.Ask, ctx: Context, route: RouteOne, name: str, exp: ExperimentSettings,
                   arm: str, shadow: bool) -> m.Answer | m.Failure:
        control: asyncio.Future | None = None
        if shadow:  # beside the real route, never awaited by the reply
            control = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._shadow(ask, ctx, name, exp, control))
            self.shadows.add(task)
            task.add_done_callback(self.shadows.discard)
        started = now()
        result: m.Answer | m.Failure | None = None
        try:
            result = await route(ask, ctx)
        finally:
            if control is not None and not control.done():
                control.set_result(result)
        meta = {"name": name, "arm": arm, "strategy": ask.strategy or self.router.strategy_for(ask)}
        if shadow:
            meta["shadow"] = exp.strategy
        await self._publish(name, arm, ask.id, result, meta["strategy"], (now() - started) * 1000.0)
        if isinstance(result, m.Answer):
            result = msgspec.structs.replace(result, metadata={**result.metadata, "experiment": meta})
        return result

    async def _shadow(self, ask: m.Ask, ctx: Context, name: str, exp: ExperimentSettings,
                      control: asyncio.Future) -> None:
        copy = msgspec.structs.replace(
            ask, id="shadow-" + new_id(), strategy=exp.strategy, strategy_options=dict(exp.options),
            providers=self.usable(exp), user=None, tier=None, cache="skip", stream=False,
            labels={**ask.labels, "experiment": f"{name}/shadow"})
        started = now()
        shadow_ctx = dataclasses.replace(ctx, deadline=started + exp.shadow_budget_ms / 1000.0, ask_id=copy.id)
        try:
            result = await self.router.route(copy, shadow_ctx)
        except Exception as exc:  # a shadow never fails anything: it is recorded as failed
            self.router.log.warning("shadow_failed", experiment=name, error=f"{type(exc).__name__}: {exc}")
            result = m.Failure(kind=m.INTERNAL, message=str(exc))
        ms = (now() - started) * 1000.0
        real = await control
        same = None
        if isinstance(real, m.Answer) and isinstance(result, m.Answer):
            same = agreement(real.text, real.data, result.text, result.data)
        await self._publish(name, "shadow", ask.id, result, exp.strategy, ms, agreement=same)

    async def _publish(self, name: str, arm: str, ask_id: str, result, strategy: str | None, ms: float,
                       agreement: float | None = None) -> None:
        ok = isinstance(result, m.Answer)
        shadow = arm == "shadow"
        event = m.ExperimentEvent(
            experiment=name, arm=arm, ask_id=ask_id, strategy=strategy, ok=ok,
            kind=None if ok else getattr(result, "kind", m.INTERNAL),
            latency_ms=round(ms, 3), cost_usd=result.cost_usd if ok else 0.0,
            route_name=result.metadata.get("route_name") if ok else None, agreement=agreement, at=time.time())
        try:
            await self.router.nc.publish(self.router.subjects.experiment_event(name, shadow), _encode(event))
        except Exception as exc:  # a report line lost, never the ask
            self.router.log.warning("experiment_event_lost", experiment=name, error=str(exc))
