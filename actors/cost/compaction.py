"""Ledger compaction: a UTC day's ledger entries rolled up into one ``daily.<day>`` key.

The ledger keeps one KV key per call (``ledger.<hash>``) so a usage event is counted once, for good;
at 10k asks/s that is 864 million keys a day, every cost actor mirroring all of them. With
``cost.compact_after_days = N`` (> 0) the cost actor writes entries under ``ledger.<day>.<hash>``
(the day of the usage, so a redelivered event still finds its key), and once a day is N days old
one cost actor (whichever ``create``s the ``daily.<day>`` key first) stores that day's aggregates
(``DailyTotals``: per dimension value its figures and distinct asks, per user and tier its spend),
then removes the day's entries with one stream purge of the subject ``$KV.<bucket>.ledger.<day>.>``.
Every cost actor that sees a ``daily`` key replaces that day's live figures with it and forgets the
day's entries. A usage event for a compacted day can no longer be deduplicated, so it is refused
(counted as skipped, logged): the late-event window is the N days.

Reports stay exact per day; an ask whose calls fall on both sides of midnight counts once on each
day in totals over several days (the distinct-ask sets of a compacted day are counts).
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timedelta, timezone

import msgspec
from nats.js.errors import KeyWrongLastSequenceError

from bus import codec

DAILY = "daily."


class DailyTotals(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """One compacted UTC day (stored in KV, read by every cost actor version: tagged, keyword)."""

    day: str
    # per dimension: [value, [calls, in, out, cached, usd, unpriced], distinct asks]
    lines: dict[str, list[tuple[str, list, int]]]
    spent: list[tuple[str, str, float]] = []  # (scope, name, usd) on that day
    asks: int = 0  # distinct asks of the day
    compacted_at: float = 0.0


_daily = msgspec.json.Decoder(DailyTotals)


def ledger_key_of_day(day: str, ask_id: str, call_id: str) -> str:
    return f"ledger.{day}." + hashlib.blake2b(f"{ask_id}\0{call_id}".encode(), digest_size=16).hexdigest()


def day_of_key(key: str) -> str | None:
    """The day of a ``ledger.<day>.<hash>`` key (None for the undated ``ledger.<hash>``)."""
    parts = key.split(".")
    return parts[1] if len(parts) == 3 else None


def daily_of(totals, day: str) -> DailyTotals:
    """The aggregates of ``day`` as ``totals`` (``actors.cost.actor.Totals``) has them now."""
    lines = {dim: [(value, list(fig), len(totals.asks[dim].get((value, d), ())))
                   for (value, d), fig in by.items() if d == day] for dim, by in totals.by.items()}
    spent = [(scope, name, usd) for (scope, name, period, stamp), usd in totals.spent.items()
             if period == "day" and stamp == day]
    asks = len(totals.asks["day"].get((day, day), ()))
    return DailyTotals(day=day, lines=lines, spent=spent, asks=asks, compacted_at=time.time())


def fold(totals, daily: DailyTotals) -> None:
    """Replace the live figures of ``daily.day`` in ``totals`` with the compacted ones."""
    day = daily.day
    if day in totals.compacted:
        return
    for dim, by in totals.by.items():
        for k in [k for k in by if k[1] == day]:
            del by[k]
            totals.asks[dim].pop(k, None)
    for (scope, name, period, stamp), usd in list(totals.spent.items()):
        if period == "day" and stamp == day:
            totals.spent[(scope, name, "month", day[:7])] -= usd
            del totals.spent[(scope, name, period, stamp)]
    for dim, rows in daily.lines.items():
        for value, figures, asks in rows:
            totals.by[dim][(value, day)] = list(figures)
            totals.ask_counts[dim][(value, day)] = asks
    for scope, name, usd in daily.spent:
        totals.spent[(scope, name, "day", day)] += usd
        totals.spent[(scope, name, "month", day[:7])] += usd
    for key in totals.keys_by_day.pop(day, ()):
        totals.seen.discard(key)
    totals.day_asks[day] = daily.asks
    totals.compacted.add(day)


def due(totals, after_days: int, now: float | None = None) -> list[str]:
    """Days with live entries at least ``after_days`` old and not compacted yet."""
    cutoff = (datetime.fromtimestamp(now or time.time(), timezone.utc) - timedelta(days=after_days)).strftime("%Y-%m-%d")
    return sorted(d for d in totals.keys_by_day if d <= cutoff and d not in totals.compacted)


async def compact(nc, kv, bucket: str, totals, day: str) -> bool:
    """Store ``day``'s totals (unless another cost actor did) and purge its entries; True if this
    actor wrote them."""
    wrote = True
    try:
        await kv.create(DAILY + day, codec.encode(daily_of(totals, day)))
    except KeyWrongLastSequenceError:
        wrote = False  # another cost actor compacted it first: its totals stand
    await nc.jetstream().purge_stream(f"KV_{bucket}", subject=f"$KV.{bucket}.ledger.{day}.>")
    return wrote


def decode(value: bytes) -> DailyTotals:
    return _daily.decode(value)
