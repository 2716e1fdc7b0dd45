"""The cost actor: a priced usage ledger, reports, and budgets with reservations.

**Ledger.** A durable JetStream consumer reads every ``Usage`` event. Each is priced
(``actors.pure.pricing``) and written with ``kv.create`` under ``ledger.<hash(ask id, call id)>`` in the
KV bucket ``<root>_cost``. ``create`` fails when the key exists, so a redelivered, replayed or
republished event is counted once, for good (not only inside JetStream's 2-minute ``Nats-Msg-Id``
window), and that holds with several cost actors running. The event is acknowledged only after its
entry is stored.

**Totals.** Every cost actor mirrors ``ledger.>`` with a KV watch and aggregates it in memory per
provider, model, tier, user, day and strategy. The KV is the source of truth, so totals are
rebuilt exactly on restart and agree between instances (chosen over a snapshot of totals, which
cannot be made exact with at-least-once delivery without also storing every event id).

**Budgets.** Limits per user or tier and per day or month live under ``limit.<hash>`` (a ``BudgetSet``)
(set by ``llmbus budget set`` or seeded from ``[[cost.budgets]]`` in the config). Before a provider
call the router sends ``Reserve`` with the call's worst case; it is granted only if, for every
budget that applies, spent + reserved + amount ≤ limit, and the reservation is stored in the
single key ``reservations`` with compare-and-set, so two cost actors stay exact (a conflict re-reads
and decides again). Reservations that arrive together are decided in order and written in one
compare-and-set, so a burst of asks costs a few KV writes. After the
call the router publishes ``Commit`` (the actual cost, 0 for a failure); a reservation stops counting
once its call is in the ledger (it is then in the spent total), and is dropped from the key
``SETTLE_S`` after that, or when it expires (the ask's deadline) if it never committed. Dropping it at
once let a second cost actor whose ledger watch lagged see the call neither spent nor held, and grant
past the limit.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections import defaultdict
from datetime import datetime, timezone

import anyio
import msgspec
from anyio.abc import TaskStatus
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from bus import codec
from bus import messages as m
from bus import names
from bus.deadline import now as monotonic
from bus.endpoint import Context, Endpoint
from bus.errors import BadRequest, BudgetExceeded
from bus.streams import TRANSIENT, KvMirror, Skipped, consume, ensure_events_stream, retrying
from bus.subjects import COST_BUDGET_SET, COST_BUDGETS, COST_COMMIT, COST_REPORT, COST_RESERVE
from actors import metrics
from actors.cost import compaction
from actors.cost.cas import CasWriter
from actors.cost.quotas import Quotas
from actors.pure.facts import usage_problem
from actors.pure.pricing import Pricing
from actors.providers.events import each
from actors.runtime import Actor

DIMENSIONS = ("provider", "model", "tier", "user", "day", "strategy")
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
SCOPES, PERIODS = ("user", "tier"), ("day", "month")
COMMITTED_KEEP_S = 300.0  # a committed call whose usage never reaches the ledger is forgotten then
# A hold whose call is in the ledger stays in the reservations key this long after this actor saw the
# entry: another cost actor whose ledger watch lags would otherwise see the call neither spent nor held.
SETTLE_S = 10.0
COMPACT_EVERY_S = 600.0  # how often a cost actor looks for ledger days to compact
KV_RETRY_S = 5.0  # a ledger or reservation write is retried this long (a restarting server)


def ledger_key(ask_id: str, call_id: str) -> str:
    return "ledger." + hashlib.blake2b(f"{ask_id}\0{call_id}".encode(), digest_size=16).hexdigest()


def limit_key(scope: str, name: str, period: str) -> str:
    """KV key of a budget (hashed: user names may hold characters KV keys cannot)."""
    return "limit." + hashlib.blake2b(f"{scope}\0{name}\0{period}".encode(), digest_size=12).hexdigest()


RESERVATIONS = "reservations"


def reservations_key(shards: int, user: str | None, tier: str | None) -> str:
    """``reservations`` (one shard), else ``reservations.<k>`` with k from a hash of the user (of
    the tier for an ask with no user): one user's reservations are always in one key."""
    if shards <= 1:
        return RESERVATIONS
    who = f"user\0{user}" if user else f"tier\0{tier or ''}"
    return f"{RESERVATIONS}.{int.from_bytes(hashlib.blake2b(who.encode(), digest_size=8).digest(), 'big') % shards}"


def budget_name(scope: str, name: str, period: str) -> str:
    return f"{scope}:{name}:{period}"


def day_of(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d")


class Hold(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """One reservation: the amount held, until when, against which budgets. Stored in KV (the
    ``reservations`` key, call id -> Hold) and read by every cost actor, of this version or another,
    so it is a tagged keyword struct like the messages: fields can be added with defaults."""

    amount: float
    expires_at: float
    budgets: list[str]


_entry = msgspec.json.Decoder(m.LedgerEntry)
# Earlier versions stored each Hold as an array [amount, expires_at, budgets]: still read.
_holds_decoder = msgspec.json.Decoder(dict[str, Hold | tuple[float, float, list[str]]])


def decode_holds(raw: bytes | None) -> dict[str, Hold]:
    """The ``reservations`` value (both encodings)."""
    return {cid: h if isinstance(h, Hold) else Hold(amount=h[0], expires_at=h[1], budgets=h[2])
            for cid, h in _holds_decoder.decode(raw or b"{}").items()}
_budget = msgspec.json.Decoder(m.BudgetSet)


class Totals:
    """Aggregates of ledger entries, per dimension value and per budget period."""

    def __init__(self) -> None:
        # per dimension: (value, UTC day) -> [calls, in, out, cached, usd, unpriced]; the day in the key
        # lets every grouping take --since/--until and keep its lines and its total consistent
        self.by: dict[str, dict[tuple[str, str], list]] = {d: {} for d in DIMENSIONS}
        self.asks: dict[str, dict[tuple[str, str], set[str]]] = {d: defaultdict(set) for d in DIMENSIONS}
        self.spent: dict[tuple, float] = defaultdict(float)  # ("user", "alice", "day", "2026-11-25") -> usd
        self.calls: dict[str, float] = {}  # call ids in the ledger -> when this actor saw the entry (unix)
        self.seen: set[str] = set()  # ledger keys counted (a re-watch must not count twice)
        # compacted days (actors.cost.compaction): their distinct asks as counts, and the dated keys of
        # the days still live
        self.compacted: set[str] = set()
        self.ask_counts: dict[str, dict[tuple[str, str], int]] = {d: {} for d in DIMENSIONS}
        self.day_asks: dict[str, int] = {}
        self.keys_by_day: dict[str, list[str]] = {}

    def add(self, key: str, e: m.LedgerEntry) -> None:
        if key in self.seen or e.day in self.compacted:
            return
        self.seen.add(key)
        if (day := compaction.day_of_key(key)) is not None:
            self.keys_by_day.setdefault(day, []).append(key)
        self.calls.setdefault(e.call_id, time.time())
        values = {"provider": e.provider, "model": e.model, "tier": e.tier or "-", "user": e.user or "-",
                  "day": e.day, "strategy": e.strategy or "-"}
        for dim, value in values.items():
            line = self.by[dim].setdefault((value, e.day), [0, 0, 0, 0, 0.0, 0])
            line[0] += 1
            line[1] += e.usage.input_tokens
            line[2] += e.usage.output_tokens
            line[3] += e.usage.cached_tokens
            if e.cost_usd is None:
                line[5] += 1
            else:
                line[4] += e.cost_usd
            self.asks[dim][(value, e.day)].add(e.ask_id)
        cost = e.cost_usd or 0.0
        for scope, name in (("user", e.user), ("tier", e.tier)):
            if name:
                self.spent[(scope, name, "day", e.day)] += cost
                self.spent[(scope, name, "month", e.day[:7])] += cost

    def report(self, by: str, since: str | None, until: str | None = None) -> m.CostReport:
        """Lines grouped ``by`` one dimension over the UTC days in [since, until] (each optional,
        YYYY-MM-DD); the total counts exactly the calls and asks of those lines."""
        if by not in DIMENSIONS:
            raise BadRequest(f"cannot group by {by!r}; choose one of {', '.join(DIMENSIONS)}")
        for name, day in (("since", since), ("until", until)):
            if day is not None and not DAY.fullmatch(day):
                raise BadRequest(f"{name} must be a date YYYY-MM-DD (got {day!r})")
        grouped: dict[str, list] = {}
        asks_of: dict[str, set[str]] = defaultdict(set)
        counted: dict[str, int] = defaultdict(int)  # distinct asks of compacted days
        for (value, day), figures in self.by[by].items():
            if (since and day < since) or (until and day > until):
                continue
            line = grouped.setdefault(value, [0, 0, 0, 0, 0.0, 0])
            for i, x in enumerate(figures):
                line[i] += x
            if day in self.compacted:
                counted[value] += self.ask_counts[by].get((value, day), 0)
            else:
                asks_of[value] |= self.asks[by][(value, day)]
        lines = [m.CostLine(key=value, calls=calls, asks=len(asks_of[value]) + counted[value], input_tokens=tin,
                            output_tokens=tout,
                            cached_tokens=tcached, cost_usd=round(usd, 9), unpriced_calls=unpriced)
                 for value, (calls, tin, tout, tcached, usd, unpriced) in sorted(grouped.items())]
        asks = len(set().union(*asks_of.values())) if asks_of else 0
        asks += sum(n for d, n in self.day_asks.items() if not ((since and d < since) or (until and d > until)))
        total = m.CostLine(
            key="total", calls=sum(x.calls for x in lines), asks=asks,
            input_tokens=sum(x.input_tokens for x in lines), output_tokens=sum(x.output_tokens for x in lines),
            cached_tokens=sum(x.cached_tokens for x in lines), cost_usd=round(sum(x.cost_usd for x in lines), 9),
            unpriced_calls=sum(x.unpriced_calls for x in lines),
        )
        return m.CostReport(by=by, lines=lines, total=total,
                            avg_cost_per_ask_usd=round(total.cost_usd / asks, 9) if asks else None)


class CostActor(Actor):
    kind = "cost"
    description = "priced usage ledger, reports and budgets"

    def __init__(self, *, pricing: Pricing, provider_kinds: dict[str, str],
                 budgets: list[m.BudgetSet] = (), quotas: dict | None = None, shards: int = 1,
                 compact_after_days: int = 0, **kw) -> None:
        super().__init__(**kw)
        self.shards = max(1, shards)  # reservations in this many keys by user hash (``cost.shards``)
        self.compact_after_days = compact_after_days
        self.quotas = Quotas(quotas or {})  # count quotas per tier (actors/cost/quotas.py)
        self.pricing = pricing
        self.provider_kinds = provider_kinds  # provider name -> kind (openai, mock, …) for pricing
        self.seed_budgets = list(budgets)
        self.totals = Totals()
        self.limits: dict[str, m.BudgetSet] = {}  # budget_name(...) -> its limit
        self.limit_keys: dict[str, str] = {}  # KV key -> budget_name(...)
        # the reservations keys, written by compare-and-set in batches (actors/cost/cas.py)
        self.holds_writer = CasWriter(kv=lambda: self.kv, decode=decode_holds, encode=codec.encode, empty=dict,
                                      fresh=self._live_holds, clock=lambda: time.time(), store="cost ledger")
        self.kv = None
        self.mirror: KvMirror | None = None  # the limits (``mirrors``: limits, ledger, daily totals)
        self.ledger_mirror: KvMirror | None = None
        self.mirrors: list[KvMirror] = []
        self.skipped = Skipped(self.log)  # poison usage events: acknowledged, counted, logged (rate-limited)

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint.serving(row, self.subjects, handler)
            for row, handler in (
                (COST_RESERVE, self.reserve),
                (COST_COMMIT, self.commit),
                (COST_REPORT, self.report),
                (COST_BUDGET_SET, self.budget_set),
                (COST_BUDGETS, self.budget_report),
            )
        ] + self.quotas.endpoints(self.subjects)

    def background(self):
        return [self._mirror, self._consume] + ([self._compactor] if self.compact_after_days > 0 else [])

    async def setup(self) -> None:
        await ensure_events_stream(self.nc, self.subjects)
        await self.quotas.open(self.nc, self.subjects)

    async def _mirror(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        # limits, then the ledger, then the daily totals (each a watch of its own): not the reservations,
        # which a cost actor reads only when its compare-and-set meets another's write — watching them
        # would bring every actor every reservations write (hundreds of KB each at scale)
        self.mirrors = [KvMirror(self.nc, self.subjects.bucket("cost"), pattern, on_change=self._changed)
                        for pattern in ("limit.>", "ledger.>", compaction.DAILY + ">")]
        self.mirror, self.ledger_mirror = self.mirrors[0], self.mirrors[1]
        async with anyio.create_task_group() as tg:
            for mirror in self.mirrors:
                await tg.start(mirror.run)
            self.kv = self.mirror.kv
            for b in self.seed_budgets:  # config budgets: only where none was set at run time
                key = limit_key(b.scope, b.name, b.period)
                if key not in self.mirror.values and b.limit_usd is not None:
                    try:
                        await self.kv.create(key, codec.encode(b))
                    except KeyWrongLastSequenceError:
                        pass
            task_status.started()

    async def on_reconnect(self) -> None:
        for mirror in self.mirrors:
            mirror.restart()

    def _changed(self, key: str, value: bytes | None) -> None:
        if key.startswith("ledger.") and value is not None:
            self.totals.add(key, entry := _entry.decode(value))
            for budget, spent_key, limit in self.applicable(entry.user, entry.tier, entry.at):  # the gauge
                metrics.budget(budget, self.totals.spent.get(spent_key, 0.0), limit)
        elif key.startswith(compaction.DAILY) and value is not None:
            day = key.removeprefix(compaction.DAILY)
            for gone in self.totals.keys_by_day.get(day, ()):  # purged from the bucket: forget them here too
                self.ledger_mirror.values.pop(gone, None)
            compaction.fold(self.totals, compaction.decode(value))
        elif key.startswith("limit."):
            if value is None:
                self.limits.pop(self.limit_keys.pop(key, ""), None)
            else:
                b = _budget.decode(value)
                self.limit_keys[key] = budget_name(b.scope, b.name, b.period)
                self.limits[self.limit_keys[key]] = b

    # --- the ledger ---------------------------------------------------------------------------
    def price(self, usage: m.Usage) -> m.LedgerEntry:
        kind = self.provider_kinds.get(usage.provider, usage.provider)
        cost = self.pricing.cost(kind, usage.model, usage.usage)
        if cost is None:
            self.log.warning("unpriced_model", provider=usage.provider, kind=kind, model=usage.model,
                             hint="add it to config/pricing.toml; its cost is reported as unknown")
        at = usage.at or time.time()
        return m.LedgerEntry(ask_id=usage.ask_id, call_id=usage.call_id, provider=usage.provider, model=usage.model,
                             usage=usage.usage, cost_usd=cost, tier=usage.tier, user=usage.user,
                             strategy=usage.strategy, day=day_of(at), at=at, experiment=usage.experiment)

    async def record_all(self, event: m.UsageEvent) -> None:
        for usage in each(event):  # a provider sends its usage in batches
            bad = usage_problem(usage)
            if bad is not None:  # forged or broken (negative tokens, absurd times): never billed
                self.skipped(f"bad usage: {bad}")
                continue
            await self.record(usage)

    async def record(self, usage: m.Usage) -> bool:
        """Write the priced entry once; False when this (ask id, call id) was already counted."""
        entry = self.price(usage)
        if self.compact_after_days > 0:  # dated keys: a day's entries go in one purge once compacted
            if entry.day in self.totals.compacted:
                self.skipped(f"late usage: {entry.day} is compacted", ask_id=usage.ask_id[:80])
                return False
            key = compaction.ledger_key_of_day(entry.day, usage.ask_id, usage.call_id)
        else:
            key = ledger_key(usage.ask_id, usage.call_id)
        data = codec.encode(entry)
        try:  # a transient failure (the server restarting) is retried; a write that did land is then "exists"
            await retrying(lambda: self.kv.create(key, data), deadline=monotonic() + KV_RETRY_S)
        except KeyWrongLastSequenceError:
            return False
        metrics.cost(usage.provider, usage.tier, entry.cost_usd)  # once fleet-wide: the writer counts it
        return True

    async def compact_due(self, now: float | None = None) -> list[str]:
        """Compact every day ``cost.compact_after_days`` old (or older) that still has entries."""
        done = []
        for day in compaction.due(self.totals, self.compact_after_days, now):
            wrote = await compaction.compact(self.nc, self.kv, self.subjects.bucket("cost"), self.totals, day)
            self.log.info("ledger_compacted", day=day, by_this_actor=wrote)
            done.append(day)
        return done

    async def _compactor(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await anyio.sleep(COMPACT_EVERY_S)
            try:
                await self.compact_due()
            except TRANSIENT as exc:  # the server is restarting: next round
                self.log.info("compaction_deferred", error=str(exc) or type(exc).__name__)

    async def _consume(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        await consume(self.nc, stream=self.subjects.events_stream, subject=self.subjects.usage(">"),
                      durable=f"{self.subjects.root}_cost", type_=m.UsageEvent, handle=self.record_all, log=self.log,
                      on_skip=self.skipped, task_status=task_status)

    # --- budgets ------------------------------------------------------------------------------
    def applicable(self, user: str | None, tier: str | None, now: float) -> list[tuple[str, tuple, float]]:
        """(budget name, spent key, limit) of every budget that applies now."""
        day = day_of(now)
        out = []
        for scope, name in (("user", user), ("tier", tier)):
            if not name:
                continue
            for period, stamp in (("day", day), ("month", day[:7])):
                budget = self.limits.get(budget_name(scope, name, period))
                if budget is not None and budget.limit_usd is not None:
                    out.append((budget_name(scope, name, period), (scope, name, period, stamp), budget.limit_usd))
        return out

    def held(self, holds: dict[str, Hold], budget: str, now: float) -> float:
        return sum(h.amount for cid, h in holds.items()
                   if budget in h.budgets and cid not in self.totals.calls and h.expires_at > now)

    def reservations_key(self, user: str | None, tier: str | None) -> str:
        """The key holding this user's reservations: ``reservations`` unsharded, else
        ``reservations.<k>``, k from a hash of the user (of the tier for an ask with no user)."""
        return reservations_key(self.shards, user, tier)

    def reservations_keys(self) -> list[str]:
        return [RESERVATIONS] if self.shards == 1 else [f"{RESERVATIONS}.{k}" for k in range(self.shards)]

    async def _update_holds(self, change, key: str = "reservations") -> m.Reserved | m.Failure:
        """Apply ``change(holds, now)`` to the ``reservations`` key. Changes that arrive together are
        written together (one compare-and-set for the whole batch, in arrival order), so a burst
        of reservations costs a few KV writes, not one each."""
        return await self.holds_writer.change(key, change)

    def _live_holds(self, holds: dict[str, Hold], now: float) -> dict[str, Hold]:
        """The holds a batch of changes works on: unexpired, and not settled in the ledger ``SETTLE_S`` ago."""
        ledgered = self.totals.calls
        return {cid: h for cid, h in holds.items() if h.expires_at > now and ledgered.get(cid, now) > now - SETTLE_S}

    async def reserve(self, req: m.Reserve, ctx: Context) -> m.Reserved:
        if not (math.isfinite(req.amount_usd) and req.amount_usd >= 0 and math.isfinite(req.expires_at)):
            raise BadRequest(f"a reservation needs a finite amount_usd >= 0 (got {req.amount_usd!r}) and expires_at")
        if bad := names.problem(req.call_id, "call_id", "label"):
            raise BadRequest(bad)
        def change(holds: dict[str, Hold], now: float) -> m.Reserved | m.Failure:
            # decided again after a write whose reply was lost: its own hold is then in the key already
            holds.pop(req.call_id, None)
            budgets = self.applicable(req.user, req.tier, now)
            for budget, spent_key, limit in budgets:
                spent = self.totals.spent.get(spent_key, 0.0)
                reserved = self.held(holds, budget, now)
                # sharded, a tier's users spread over the shards: each holds at most its 1/shards
                # share of what is left, so the shards together never grant past the limit
                share = self.shards if self.shards > 1 and spent_key[0] == "tier" else 1
                if spent + share * (reserved + req.amount_usd) > limit + 1e-12:
                    return m.Failure(
                        kind=m.BUDGET_EXCEEDED,
                        message=f"budget {budget}: spent ${spent:.6f} + reserved ${reserved:.6f} + "
                                f"this call ${req.amount_usd:.6f} > limit ${limit:.6f}"
                                + (f" (this shard's 1/{share} share)" if share > 1 else ""),
                    )
            holds[req.call_id] = Hold(amount=req.amount_usd, expires_at=req.expires_at or now + 60.0,
                                      budgets=[b for b, _, _ in budgets])
            return m.Reserved(call_id=req.call_id, budgets=[b for b, _, _ in budgets])

        result = await self._update_holds(change, self.reservations_key(req.user, req.tier))
        if isinstance(result, m.Failure):
            raise BudgetExceeded(result.message)
        return result

    async def commit(self, req: m.Commit, ctx: Context) -> m.Reserved:
        if not (math.isfinite(req.actual_usd) and req.actual_usd >= 0):
            raise BadRequest(f"actual_usd must be finite and >= 0 (got {req.actual_usd!r})")
        def change(holds: dict[str, Hold], now: float) -> m.Reserved:
            hold = holds.get(req.call_id)
            if hold is not None:
                if req.actual_usd <= 0.0:
                    del holds[req.call_id]  # a failed call: nothing will reach the ledger
                else:  # hold the actual until the usage event is in the ledger
                    holds[req.call_id] = Hold(amount=req.actual_usd, expires_at=now + COMMITTED_KEEP_S,
                                              budgets=hold.budgets)
            return m.Reserved(call_id=req.call_id, budgets=hold.budgets if hold else [])

        if self.shards == 1 or req.user or req.tier:
            return await self._update_holds(change, self.reservations_key(req.user, req.tier))
        # an older router says not who asked: the hold may be in any shard
        replies = [await self._update_holds(change, key) for key in self.reservations_keys()]
        return next((r for r in replies if isinstance(r, m.Reserved) and r.budgets), replies[0])

    async def budget_set(self, req: m.BudgetSet, ctx: Context) -> m.BudgetReport:
        if bad := names.problem(req.name, "a budget's name", "label"):
            raise BadRequest(bad)
        if req.scope not in SCOPES or req.period not in PERIODS or not req.name:
            raise BadRequest(f"a budget is scope ({'|'.join(SCOPES)}), name and period ({'|'.join(PERIODS)})")
        if req.limit_usd is not None and not (math.isfinite(req.limit_usd) and req.limit_usd >= 0):
            raise BadRequest("a budget's limit cannot be negative")
        key = limit_key(req.scope, req.name, req.period)
        name = budget_name(req.scope, req.name, req.period)
        if req.limit_usd is None:
            await self.kv.delete(key)
            self.limits.pop(name, None)
        else:
            await self.kv.put(key, codec.encode(req))
            self.limits[name] = req
        return await self.budget_report(m.BudgetQuery(), ctx)

    async def budget_report(self, req: m.BudgetQuery, ctx: Context) -> m.BudgetReport:
        now = time.time()
        holds: dict[str, Hold] = {}
        for key in self.reservations_keys():
            try:
                holds |= decode_holds((await self.kv.get(key)).value)
            except KeyNotFoundError:
                pass
        day = day_of(now)
        out = []
        for name, b in sorted(self.limits.items()):
            stamp = day if b.period == "day" else day[:7]
            out.append(m.Budget(scope=b.scope, name=b.name, period=b.period, limit_usd=b.limit_usd or 0.0,
                                spent_usd=round(self.totals.spent.get((b.scope, b.name, b.period, stamp), 0.0), 9),
                                reserved_usd=round(self.held(holds, name, now), 9)))
        return m.BudgetReport(budgets=out)

    async def report(self, req: m.CostQuery, ctx: Context) -> m.CostReport:
        return self.totals.report(req.by, req.since, req.until)
