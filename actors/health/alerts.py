"""The health actor's alerts: what it observes, where the alerts go (the rules: ``actors/pure/alerts.py``).

Every ``[alerts] eval_s`` the watch feeds the rules: the health actor's own breakers and the
outcomes it consumes (``outcome``, called per outcome), the budgets (``<root>.cost.budgets``), the
answers per tier and fallback route as a router counts them (``<root>.control.experiment``: the
routes of the router that answers) and the supervisor's first-pass counts (its ``$SRV.INFO``
metadata). Each alert that starts or ends is published on ``<root>.events.alert`` (the events
stream keeps it; ``Nats-Msg-Id`` = rule, subject, since and state, so two health actors publishing
the same change within the stream's duplicate window store it once) and, with ``webhook_url``,
POSTed there as JSON (``Webhook``: a timeout per try, retries with backoff on errors and 5xx/429).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from bus import codec
from bus import messages as m
from bus.deadline import now as monotonic
from bus.subjects import CONTROL_EXPERIMENT, COST_BUDGETS
from actors.pure.alerts import Alerts

BACKOFF_S = (0.2, 0.5, 1.0, 2.0)


class Webhook:
    """POST each alert as JSON to ``url``: ``timeout_s`` per try, ``retries`` more tries on a
    connection error, a timeout, a 5xx or a 429 (a 4xx other than 429 is not retried)."""

    def __init__(self, url: str, *, timeout_s: float = 5.0, retries: int = 3, log=None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.log = log
        self.sent = 0
        self.failed = 0

    def _post(self, body: bytes) -> int:
        """One POST (the stdlib's client, in a worker thread): its status, or an OSError."""
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.url, data=body, method="POST", headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 — the operator's URL
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    async def send(self, alert: m.Alert) -> bool:
        body = msgspec.json.encode(alert)
        why = ""
        for attempt in range(self.retries + 1):
            try:
                status = await anyio.to_thread.run_sync(self._post, body, abandon_on_cancel=True)
                if status < 300:
                    self.sent += 1
                    return True
                why = f"HTTP {status}"
                if status < 500 and status != 429:
                    break
            except (OSError, ValueError) as exc:  # refused, reset, timed out, a bad URL
                why = str(exc) or type(exc).__name__
            if attempt < self.retries:
                await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
        self.failed += 1
        if self.log is not None:
            self.log.warning("alert_webhook_failed", url=self.url, rule=alert.rule, subject=alert.subject, error=why)
        return False


class AlertWatch:
    def __init__(self, actor, rules: Any, tiers: dict, *, clock: Callable[[], float] = time.time) -> None:
        self.actor = actor
        self.rules = rules
        self.first_routes = {name: t.routes[0].name for name, t in tiers.items() if t.routes}
        self.alerts = Alerts(rules, clock=clock)
        self.webhook = (Webhook(rules.webhook_url, timeout_s=rules.webhook_timeout_s, retries=rules.webhook_retries,
                                log=actor.log) if rules.webhook_url else None)
        self._posts: set[asyncio.Task] = set()
        self.published: list[m.Alert] = []

    def outcome(self, outcome: m.Outcome) -> None:
        self.alerts.call(outcome.provider, outcome.ok)

    async def observe(self) -> None:
        a, rpc = self.alerts, self.actor.rpc
        for b in self.actor.breakers.values():
            a.breaker(b.provider, b.state, b.changed_at)
        budgets = await rpc.service(COST_BUDGETS, m.BudgetQuery(), deadline=monotonic() + 1.0)
        if isinstance(budgets, m.BudgetReport):
            for b in budgets.budgets:
                a.budget(f"{b.scope}:{b.name}:{b.period}", b.spent_usd, b.limit_usd)
        if self.first_routes:
            report = await rpc.service(CONTROL_EXPERIMENT, m.ExperimentQuery(), deadline=monotonic() + 1.0)
            if isinstance(report, m.ExperimentReport):
                by_tier: dict[str, dict[str, int]] = {}
                for key, n in report.routes.items():
                    tier, _, route = key.partition("/")
                    by_tier.setdefault(tier, {})[route] = n
                for tier, first in self.first_routes.items():
                    a.route_totals(tier, first, by_tier.get(tier, {}))
        try:
            info = await self.actor.nc.request(f"$SRV.INFO.{self.actor.subjects.root}-supervisor", b"", timeout=0.5)
            meta = json.loads(info.data).get("metadata") or {}
            if "first_reviews" in meta:
                a.review_totals(int(meta["first_reviews"]), int(meta["first_passes"]))
        except Exception:  # noqa: S110 — no supervisor answers: nothing to judge quality by
            pass

    async def publish(self, alert: m.Alert) -> None:
        msg_id = f"{alert.rule}:{alert.subject}:{alert.since:.3f}:{'resolved' if alert.resolved else 'firing'}"
        await self.actor.nc.publish(self.actor.subjects.alert_event, codec.encode(alert), headers={"Nats-Msg-Id": msg_id})
        self.published.append(alert)
        self.actor.log.warning("alert_resolved" if alert.resolved else "alert_fired", rule=alert.rule,
                               subject=alert.subject, value=alert.value, threshold=alert.threshold)
        if self.webhook is not None:
            task = asyncio.ensure_future(self.webhook.send(alert))
            self._posts.add(task)
            task.add_done_callback(self._posts.discard)

    async def tick(self) -> list[m.Alert]:
        """Observe, evaluate, publish the changes (returned)."""
        await self.observe()
        changes = self.alerts.evaluate()
        for alert in changes:
            await self.publish(alert)
        return changes

    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await anyio.sleep(self.rules.eval_s)
            try:
                await self.tick()
            except Exception as exc:  # a failed look this round: the next one tries again
                self.actor.log.info("alerts_tick_failed", error=str(exc) or type(exc).__name__)
