"""The health actor: one circuit breaker per provider, shared by every process through JetStream KV.

It consumes ``Outcome`` events with a durable JetStream pull consumer (``health``), so outcomes
published while it restarts are read when it is back; it acknowledges an event only after the
breaker change it caused is stored. Breaker states live in the KV bucket ``<root>_health`` under
``state.<provider>`` (file storage: they survive restarts of this actor, of routers and of
nats-server); routers watch that bucket and skip open providers with no round trip. Metrics
(success rate, errors by kind, latency p50/p95, last success/failure) are kept here and flushed to
``metrics.<provider>`` once a second. Every state change is one log line and a retained
``BreakerChange`` event on ``<root>.events.health.<provider>``.

An auth failure (401/403) makes a provider ``misconfigured`` (``actors.pure.breaker``): routers skip
it, it is never turned half-open, and it stays so until ``health.reset`` or a success (``llmbus
test NAME`` calls the provider directly, which reports its success like any call). The report shows
the state, its reason (the failure kind) and detail (what the provider said, the key cut out).

Time is ``clock()`` — wall-clock seconds, ``time.time`` unless a test injects its own and calls
``end_cooldowns()`` after moving it (breaker times are shared across hosts: monotonic clocks are not).

Serves ``<root>.health.status`` (HealthQuery → HealthReport) and ``<root>.health.reset``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import msgspec
from anyio.abc import TaskStatus
from nats.js.errors import NoKeysError

from bus import codec
from bus import messages as m
from bus import names
from bus.deadline import now as monotonic
from bus.endpoint import Context, Endpoint
from bus.errors import BadRequest
from bus.streams import Skipped, consume, ensure_events_stream, ensure_kv, retrying
from bus.subjects import HEALTH_RESET, HEALTH_STATUS, HEALTH_STATUS_EACH
from actors import metrics
from actors.health.alerts import AlertWatch
from actors.pure import breaker as br
from actors.pure.facts import outcome_problem
from actors.pure.quantiles import Sketch
from actors.providers.events import each
from actors.runtime import Actor

KV_RETRY_S = 5.0  # a KV write is retried this long (a restarting server) before the event is given back
TRANSITIONS_KEPT = 20
FLUSH_EVERY_S = 1.0


@dataclass
class Metrics:
    calls: int = 0
    successes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    # success latencies: a decayed streaming sketch (actors.pure.quantiles); its p95 in KV is the
    # hedged strategy's default delay on every router
    latencies: Sketch = field(default_factory=Sketch)
    last_success: float | None = None
    last_failure: float | None = None
    last_error: str = ""
    transitions: deque = field(default_factory=lambda: deque(maxlen=TRANSITIONS_KEPT))

    def add(self, outcome: m.Outcome) -> None:
        self.calls += 1
        if outcome.ok:
            self.successes += 1
            self.latencies.add(outcome.latency_ms)
            self.last_success = outcome.at
        else:
            kind = outcome.kind or m.INTERNAL
            self.errors[kind] = self.errors.get(kind, 0) + 1
            self.last_failure = outcome.at
            self.last_error = kind

    def report(self, state: m.BreakerState, detailed: bool) -> m.ProviderHealth:
        return m.ProviderHealth(
            breaker=state,
            calls=self.calls,
            successes=self.successes,
            errors=dict(self.errors),
            latency_p50_ms=_rounded(self.latencies.quantile(0.50)),
            latency_p95_ms=_rounded(self.latencies.quantile(0.95)),
            last_success=self.last_success,
            last_failure=self.last_failure,
            last_error=self.last_error,
            transitions=list(self.transitions) if detailed else [],
        )

    @classmethod
    def restore(cls, saved: m.ProviderHealth) -> Metrics:
        return cls(calls=saved.calls, successes=saved.successes, errors=dict(saved.errors),
                   last_success=saved.last_success, last_failure=saved.last_failure,
                   last_error=saved.last_error, transitions=deque(saved.transitions, maxlen=TRANSITIONS_KEPT))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


_state_decoder = msgspec.json.Decoder(m.BreakerState)
_metrics_decoder = msgspec.json.Decoder(m.ProviderHealth)


class HealthActor(Actor):
    kind = "health"
    description = "circuit breakers and provider health"

    def __init__(self, *, config: br.BreakerConfig, providers: list[str],
                 clock: Callable[[], float] = time.time, alerts=None, tiers: dict | None = None, **kw) -> None:
        super().__init__(**kw)
        self.config = config
        self.clock = clock
        # [alerts] rules (actors/health/alerts.py); None: no alerts from this health actor
        self.alerts = AlertWatch(self, alerts, tiers or {}, clock=clock) if alerts is not None and alerts.enabled else None
        self.breakers: dict[str, m.BreakerState] = {p: br.reset(p, 0.0) for p in providers}
        self.metrics: dict[str, Metrics] = {p: Metrics() for p in providers}
        self._dirty: set[str] = set()
        self._wake = anyio.Event()
        self.kv = None
        self.skipped = Skipped(self.log)  # poison events: acknowledged, counted, logged (rate-limited)

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint.serving(HEALTH_STATUS, self.subjects, self.status),
            Endpoint.serving(HEALTH_STATUS_EACH, self.subjects, self.status),  # every copy answers
            Endpoint.serving(HEALTH_RESET, self.subjects, self.reset),
        ]

    def background(self):
        return [self._consume, self._tick, self._flush, *([self.alerts.run] if self.alerts else [])]

    async def setup(self) -> None:
        await ensure_events_stream(self.nc, self.subjects)
        self.kv = await ensure_kv(self.nc, self.subjects.bucket("health"))
        for key in await self._keys():
            entry = await self.kv.get(key)
            kind, _, provider = key.partition(".")
            if kind == "state":
                self.breakers[provider] = _state_decoder.decode(entry.value)
            elif kind == "metrics":
                self.metrics[provider] = Metrics.restore(_metrics_decoder.decode(entry.value))
        self.metrics.update({p: Metrics() for p in self.breakers if p not in self.metrics})

    async def _keys(self) -> list[str]:
        try:
            return await self.kv.keys()
        except NoKeysError:
            return []

    # --- endpoints ----------------------------------------------------------------------------
    async def status(self, query: m.HealthQuery, ctx: Context) -> m.HealthReport:
        now = self.clock()
        return m.HealthReport(
            providers=[
                self.metrics.setdefault(p, Metrics()).report(br.effective(b, now), query.detailed)
                for p, b in sorted(self.breakers.items())
            ],
            at=now,
        )

    async def reset(self, request: m.HealthReset, ctx: Context) -> m.HealthReport:
        if request.provider is not None and (bad := names.problem(request.provider, "provider")) is not None:
            raise BadRequest(bad)
        now = self.clock()
        for provider in [request.provider] if request.provider else list(self.breakers):
            await self._store(self.breakers.get(provider, br.reset(provider, now)), br.reset(provider, now), now, "reset")
        return await self.status(m.HealthQuery(), ctx)

    # --- the breakers -------------------------------------------------------------------------
    async def _store(self, before: m.BreakerState, after: m.BreakerState, now: float, why: str = "") -> None:
        """Keep ``after`` (in memory and KV); log and announce a change of state."""
        self.breakers[after.provider] = after
        if after == before:
            return
        data = codec.encode(after)
        await retrying(lambda: self.kv.put(f"state.{after.provider}", data), deadline=monotonic() + KV_RETRY_S)
        if after.state != before.state:
            metrics.breaker(after.provider, after.state)
            reason = why or after.reason or ("success" if after.state == br.CLOSED else "")
            self.log.info("breaker_changed", provider=after.provider, before=before.state, after=after.state,
                          reason=reason, detail=after.detail, open_until=after.open_until)
            kept = self.metrics.setdefault(after.provider, Metrics())  # not `metrics`: that is the module
            kept.transitions.append(f"{time.strftime('%H:%M:%S', time.localtime(now))} "
                                       f"{before.state}→{after.state} ({reason})")
            self._dirty.add(after.provider)
            event = m.BreakerChange(provider=after.provider, before=before.state, after=after.state,
                                    reason=reason, open_until=after.open_until, at=now)
            await self.nc.publish(self.subjects.health_event(after.provider), codec.encode(event))
            self._wake.set()

    async def apply_all(self, event: m.OutcomeEvent) -> None:
        for outcome in each(event):  # a provider sends its outcomes in batches
            bad = outcome_problem(outcome)
            if bad is not None:  # forged or broken: skipped, never obeyed (see actors.pure.facts)
                self.skipped(f"bad outcome: {bad}")
                continue
            await self.apply(outcome)

    async def apply(self, outcome: m.Outcome) -> None:
        now = self.clock()
        stored = self.breakers.get(outcome.provider) or br.reset(outcome.provider, now)
        live = br.effective(stored, now)
        await self._store(stored, live, now, "cooldown over")  # a no-op unless the cooldown ended
        after = br.record(live, ok=outcome.ok, kind=outcome.kind, retry_after_s=outcome.retry_after_s,
                          now=now, config=self.config, detail=outcome.detail)
        self.metrics.setdefault(outcome.provider, Metrics()).add(outcome)
        if self.alerts is not None:
            self.alerts.outcome(outcome)
        self._dirty.add(outcome.provider)
        await self._store(live, after, now)

    async def _consume(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        await consume(self.nc, stream=self.subjects.events_stream, subject=self.subjects.outcome(">"),
                      durable=f"{self.subjects.root}_health", type_=m.OutcomeEvent, handle=self.apply_all, log=self.log,
                      on_skip=self.skipped, task_status=task_status)

    async def _tick(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        """Turn OPEN into HALF_OPEN when a cooldown ends, so the KV shows it without an outcome
        (never a MISCONFIGURED one: nothing probes it)."""
        task_status.started()
        while True:
            now = self.clock()
            opens = [b.open_until for b in self.breakers.values() if b.state == br.OPEN]
            with anyio.move_on_after(min([max(0.0, t - now) for t in opens], default=60.0)):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self.end_cooldowns()
            except Exception as exc:  # KV unreachable for long: the next tick tries again
                self.log.warning("cooldowns_not_stored", error=str(exc) or type(exc).__name__)
                await anyio.sleep(1.0)

    async def end_cooldowns(self) -> None:
        """Store HALF_OPEN for every OPEN breaker whose cooldown has ended by ``clock()``."""
        now = self.clock()
        for b in list(self.breakers.values()):
            if b.state == br.OPEN and now >= b.open_until:
                await self._store(b, br.effective(b, now), now, "cooldown over")

    async def _flush(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await anyio.sleep(FLUSH_EVERY_S)
            try:
                await self.flush_metrics()
            except Exception as exc:  # KV unreachable now: the metrics stay dirty for the next flush
                self.log.info("metrics_not_flushed", error=str(exc) or type(exc).__name__)

    async def flush_metrics(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for provider in dirty:
            report = self.metrics[provider].report(self.breakers[provider], detailed=True)
            try:
                await self.kv.put(f"metrics.{provider}", codec.encode(report))
            except BaseException:
                self._dirty |= dirty  # not flushed: next time
                raise

    async def teardown(self) -> None:
        if self.kv is not None and not self.nc.is_closed:
            try:
                await self.flush_metrics()
            except Exception as exc:  # KV unreachable (a server down, its bucket electing a leader): the
                # last few seconds of figures are lost; a stopping actor must not fail for them
                self.log.info("metrics_not_flushed", error=str(exc) or type(exc).__name__)

