"""One truth per fleet: ask every copy of a service actor (a row without queue group, such as
``HEALTH_STATUS_EACH``) and merge what the copies say.

Each copy of the health or cache actor counts what it saw itself (events and lookups are shared out
among the copies), so one copy's figures are a part of the fleet's. The fleet's figure is the sum
over copies; a latest time is the latest of any copy; a breaker is the copy's that changed last.
How many copies to wait for comes from NATS micro discovery (``$SRV.PING.<root>-<actor>``).
"""

from __future__ import annotations

import json

import anyio
import msgspec

from bus import codec
from bus import messages as m
from bus.subjects import Service


async def every_copy(client, row: Service, request: msgspec.Struct, actor: str, *,
                     within_s: float = 1.0, settle_s: float = 0.03) -> list:
    """The replies of every copy of ``actor`` to ``request`` on ``row`` (a no-queue row): gathered
    until as many arrived as copies answered discovery, or ``within_s``."""
    nc = client.nc
    replies: list = []
    copies: set[str] = set()
    decode = row.decoder.decode

    async def on_reply(msg) -> None:
        try:
            replies.append(decode(msg.data))
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass

    nobody = anyio.Event()

    async def on_ping(msg) -> None:
        if msg.headers and msg.headers.get("Status") == "503":  # no responders: no copy runs
            nobody.set()
            return
        try:
            copies.add(json.loads(msg.data)["id"])
        except (ValueError, KeyError, TypeError):
            pass

    reply_inbox, ping_inbox = nc.new_inbox(), nc.new_inbox()
    subs = [await nc.subscribe(reply_inbox, cb=on_reply), await nc.subscribe(ping_inbox, cb=on_ping)]
    try:
        await nc.publish(f"$SRV.PING.{client.subjects.root}-{actor}", b"", reply=ping_inbox)
        await nc.publish(row.subject(client.subjects), codec.encode(request), reply=reply_inbox)
        with anyio.move_on_after(within_s):
            while not (copies and len(replies) >= len(copies)) and not nobody.is_set():
                await anyio.sleep(settle_s)
    finally:
        for sub in subs:
            await sub.unsubscribe()
    return [r for r in replies if not isinstance(r, m.Failure)]


def _latest(values):
    present = [v for v in values if v is not None]
    return max(present) if present else None


def merge_health(reports: list[m.HealthReport]) -> m.HealthReport:
    """The fleet's health from every copy's report (calls and errors summed, latest times kept)."""
    if len(reports) == 1:
        return reports[0]
    by_provider: dict[str, list[m.ProviderHealth]] = {}
    for report in reports:
        for p in report.providers:
            by_provider.setdefault(p.breaker.provider, []).append(p)
    merged = []
    for name, parts in sorted(by_provider.items()):
        calls = sum(p.calls for p in parts)
        errors: dict[str, int] = {}
        for p in parts:
            for kind, n in p.errors.items():
                errors[kind] = errors.get(kind, 0) + n
        timed = [(p.latency_p50_ms, max(1, p.successes)) for p in parts if p.latency_p50_ms is not None]
        p50 = sum(ms * n for ms, n in timed) / sum(n for _, n in timed) if timed else None  # weighted by successes
        last_failed = max(parts, key=lambda p: p.last_failure or 0.0)
        merged.append(m.ProviderHealth(
            breaker=max((p.breaker for p in parts), key=lambda b: b.changed_at),
            calls=calls,
            successes=sum(p.successes for p in parts),
            errors=dict(sorted(errors.items())),
            latency_p50_ms=round(p50, 3) if p50 is not None else None,
            latency_p95_ms=_latest(p.latency_p95_ms for p in parts),  # the worst copy's: an upper bound
            last_success=_latest(p.last_success for p in parts),
            last_failure=last_failed.last_failure,
            last_error=last_failed.last_error,
            transitions=sorted({t for p in parts for t in p.transitions})[-10:],
        ))
    return m.HealthReport(providers=merged, at=max(r.at for r in reports))


def merge_cache(reports: list[m.CacheStats]) -> m.CacheStats:
    """The fleet's cache figures: counters summed over copies; entries and bytes once per store
    directory (copies on one host share it)."""
    if len(reports) == 1:
        return reports[0]
    stores = {r.directory: r for r in reports}
    names: dict[str, list[m.NamespaceStats]] = {}
    for r in reports:
        for ns in r.namespaces:
            names.setdefault(ns.namespace, []).append(ns)

    def summed(name: str, ttl_s: float, parts) -> m.NamespaceStats:
        return m.NamespaceStats(namespace=name, ttl_s=ttl_s, hits=sum(p.hits for p in parts),
                                misses=sum(p.misses for p in parts), coalesced=sum(p.coalesced for p in parts),
                                stores=sum(p.stores for p in parts))

    return m.CacheStats(
        directory=", ".join(sorted(stores)),
        entries=sum(r.entries for r in stores.values()),
        bytes=sum(r.bytes for r in stores.values()),
        size_limit_bytes=sum(r.size_limit_bytes for r in stores.values()),
        namespaces=[summed(n, parts[0].ttl_s, parts) for n, parts in sorted(names.items())],
        total=summed("total", 0.0, [r.total for r in reports]),
    )


async def fleet_health(client, query: m.HealthQuery):
    """The fleet's HealthReport (merged over every copy), or a Failure when none answers."""
    from actors.cli.common import service
    from bus.subjects import HEALTH_STATUS, HEALTH_STATUS_EACH

    reports = await every_copy(client, HEALTH_STATUS_EACH, query, "health")
    if not reports:  # an older health actor without the .each row: one copy's view
        return await service(HEALTH_STATUS, query)(client)
    return merge_health(reports)


async def fleet_cache(client):
    """The fleet's CacheStats (merged over every copy), or a Failure when none answers."""
    from actors.cli.common import service
    from bus.subjects import CACHE_STATS, CACHE_STATS_EACH

    reports = await every_copy(client, CACHE_STATS_EACH, m.CacheStatsQuery(), "cache", within_s=0.5)
    if not reports:
        return await service(CACHE_STATS, m.CacheStatsQuery(), budget_ms=500)(client)
    return merge_cache(reports)
