"""A root's replicated state on a NATS cluster: where each stream and KV bucket lives, and raising
its replicas.

``state(nc, root)`` lists the root's streams (the events and record streams) and KV buckets
(``KV_<root>_*``) with their replicas, leader and each replica's lag, from JetStream's own
``$JS.API.STREAM.INFO`` (any account may ask; no system account needed). The meta leader (the
server that places streams) is only in the servers' monitoring endpoint: ``meta(monitor_url)``.

``replicate(nc, root, replicas)`` updates every stream and bucket below ``replicas`` with
``num_replicas`` (a stream update: the server copies the data to the new peers and keeps serving
from the leader meanwhile, so nothing is lost), then waits until every new replica is current and
checks that each keeps its message count.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request

import anyio
import msgspec
from nats.aio.client import Client as NATS

from bus.subjects import Subjects


class Replica(msgspec.Struct, frozen=True, kw_only=True):
    server: str
    current: bool
    lag: int = 0
    leader: bool = False


class Placed(msgspec.Struct, frozen=True, kw_only=True):
    """One stream or KV bucket of the root: replicas asked for and where they are."""

    name: str
    kind: str  # "stream" | "kv"
    replicas: int
    leader: str | None
    peers: list[Replica] = []
    messages: int = 0


def _ours(name: str, subjects: Subjects) -> str | None:
    if name in (subjects.events_stream, subjects.record_stream):
        return "stream"
    if name.startswith(f"KV_{subjects.bucket('')}"):
        return "kv"
    return None


def placed(info, kind: str) -> Placed:
    cluster = info.cluster
    leader = cluster.leader if cluster is not None else None
    peers = [Replica(server=leader, current=True, leader=True)] if leader else []
    for r in (cluster.replicas or []) if cluster is not None else []:
        peers.append(Replica(server=r.name, current=bool(r.current), lag=int(r.lag or 0)))
    return Placed(name=info.config.name, kind=kind, replicas=info.config.num_replicas or 1, leader=leader,
                  peers=peers, messages=info.state.messages)


async def state(nc: NATS, root: str) -> list[Placed]:
    subjects = Subjects(root)
    out = []
    for info in await nc.jetstream().streams_info():
        kind = _ours(info.config.name, subjects)
        if kind is not None:
            out.append(placed(info, kind))
    return sorted(out, key=lambda p: (p.kind, p.name))


def meta(monitor_url: str, wait_s: float = 2.0) -> dict:
    """The server's name, cluster, routes and the JetStream meta leader it knows (``/varz``, ``/jsz``)."""
    base = monitor_url.rstrip("/")

    def get(path: str) -> dict:
        with urllib.request.urlopen(base + path, timeout=wait_s) as r:
            return json.loads(r.read())

    varz, jsz = get("/varz"), get("/jsz")
    m = jsz.get("meta_cluster") or {}
    return {"server": varz.get("server_name"), "cluster": (varz.get("cluster") or {}).get("name"),
            "routes": varz.get("routes", 0), "connections": varz.get("connections", 0),
            "meta_leader": m.get("leader"), "cluster_size": m.get("cluster_size"),
            "streams": jsz.get("streams", 0)}


async def replicate(nc: NATS, root: str, replicas: int, *, within_s: float = 60.0) -> list[tuple[Placed, Placed]]:
    """Raise every stream and bucket of ``root`` below ``replicas`` to it; (before, after) of each
    changed. Raises ``RuntimeError`` when a copy has not caught up within ``within_s`` or lost
    messages (it never should: the leader keeps serving while the new peers catch up)."""
    js = nc.jetstream()
    subjects = Subjects(root)
    changed = []
    for info in await js.streams_info():
        kind = _ours(info.config.name, subjects)
        if kind is None or (info.config.num_replicas or 1) >= replicas:
            continue
        before = placed(info, kind)
        await js.update_stream(dataclasses.replace(info.config, num_replicas=replicas))
        changed.append(before)
    done = []
    give_up = time.monotonic() + within_s
    for before in changed:
        while True:
            after = placed(await js.stream_info(before.name), before.kind)
            if len(after.peers) >= replicas and all(p.current and p.lag == 0 for p in after.peers):
                break
            if time.monotonic() > give_up:
                raise RuntimeError(f"{before.name}: the new replicas did not catch up within {within_s:.0f}s")
            await anyio.sleep(0.1)
        if after.messages < before.messages:
            raise RuntimeError(f"{before.name}: {before.messages} messages before, {after.messages} after")
        done.append((before, after))
    return done
