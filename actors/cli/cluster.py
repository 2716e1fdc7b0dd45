"""``llmbus up --cluster N`` (its body), ``llmbus cluster status`` and ``llmbus cluster replicate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import msgspec
import typer
from rich.table import Table

from actors import settings as settings_mod
from actors.cli.common import ConfigOpt, JsonOpt, UrlOpt, err, group, load_settings, out, print_json, run_async

app = group()
cluster_app = group(help="a NATS cluster: where the state lives, raising its replicas", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")

MonitorOpt = Annotated[Optional[str], typer.Option(
    "--monitor", help="the servers' HTTP monitoring URLs, comma-separated (default bus.monitor_urls); "
                      "the JetStream meta leader is only there")]


async def up_cluster(settings: settings_mod.Settings, size: int, *, port: int, store: Path, token: str | None,
                     why: str, auth: str) -> None:
    """``llmbus up --cluster N``: N clustered servers, every actor, the banner, until a signal."""
    from actors.cli.run import _announce
    from actors.runtime import stop_on_signal
    from actors.stack import embedded

    async with embedded(settings, port=port, store=store, token=token, cluster=size) as stack:
        c = stack.cluster
        _announce(stack.url, stack.actors, settings, why=why, store=store, auth=auth,
                  server=f"a cluster of {c.size} embedded nats-servers (cluster {c.name}, "
                         f"replicas {stack.actors[0].nc.replicas})")
        monitors = ",".join(f"http://{s.host}:{s.monitor_port}" for s in c.servers)
        spread = {}
        for a in stack.actors:
            spread.setdefault(a.nc.connected_url.port, []).append(a.name)
        for s in c.servers:
            err.print(f"  server {s.name}: {s.url}  actors: {', '.join(spread.get(s.port, [])) or '-'}",
                      soft_wrap=True, markup=False)
        err.print(f"  monitor:   {monitors}  (llmbus cluster status --monitor {monitors})", soft_wrap=True, markup=False)
        await stop_on_signal(stack.actors)


class ClusterStatus(msgspec.Struct, frozen=True, kw_only=True):
    """``llmbus cluster status --json``."""

    connected: str  # the server this command's connection landed on
    cluster: str | None
    known_servers: list[str]  # client URLs the cluster advertises
    servers: list[dict] = []  # from the monitoring endpoints: name, routes, meta leader
    meta_leader: str | None = None
    state: list = []  # bus.cluster.Placed per stream and bucket of the root


async def _status(settings: settings_mod.Settings, monitors: list[str]) -> ClusterStatus:
    import anyio

    from bus import cluster
    from bus.connection import connect

    nc = await connect(settings.bus.url, name="llmbus-cluster", options=settings.bus.connect_options())
    try:
        info = nc._server_info
        placed = await cluster.state(nc, settings.bus.root)
    finally:
        await nc.close()
    servers = []
    for url in monitors:
        try:
            servers.append(await anyio.to_thread.run_sync(cluster.meta, url))
        except (OSError, ValueError) as exc:
            servers.append({"server": url, "error": str(exc)})
    leaders = {s.get("meta_leader") for s in servers if s.get("meta_leader")}
    return ClusterStatus(connected=f"{info.get('server_name')} ({info.get('host')}:{info.get('port')})",
                         cluster=info.get("cluster"), known_servers=list(info.get("connect_urls") or []),
                         servers=servers, meta_leader=leaders.pop() if len(leaders) == 1 else None, state=placed)


def _monitors(settings: settings_mod.Settings, monitor: str | None) -> list[str]:
    return [u.strip() for u in monitor.split(",") if u.strip()] if monitor else list(settings.bus.monitor_urls)


@cluster_app.command()
def status(ctx: typer.Context, monitor: MonitorOpt = None, json_out: JsonOpt = False, nats_url: UrlOpt = None,
           config: ConfigOpt = None) -> None:
    """The servers, the JetStream meta leader, and each stream and KV bucket of the root with its
    replicas, leader and each replica's lag."""
    settings = load_settings(ctx, config, nats_url)
    report = _run(lambda: _status(settings, _monitors(settings, monitor)))
    if json_out:
        print_json(report)
        return
    out.print(f"connected to {report.connected}, cluster {report.cluster or '(none: a single server)'}; "
              f"it advertises {', '.join(report.known_servers) or '-'}", soft_wrap=True, markup=False)
    if report.servers:
        t = Table(title="servers")
        for col in ("server", "routes", "connections", "meta leader", "streams"):
            t.add_column(col)
        for s in report.servers:
            t.add_row(str(s.get("server")), str(s.get("routes", "-")), str(s.get("connections", "-")),
                      str(s.get("meta_leader") or s.get("error", "-")), str(s.get("streams", "-")))
        out.print(t)
    out.print(f"JetStream meta leader: {report.meta_leader or '(give --monitor or bus.monitor_urls to see it)'}",
              markup=False)
    t = Table(title=f"streams and KV buckets of root {settings.bus.root!r}")
    for col in ("name", "kind", "replicas", "leader", "peers (current, lag)", "messages"):
        t.add_column(col)
    for p in report.state:
        peers = ", ".join(f"{r.server}{'*' if r.leader else ''} ({'ok' if r.current else 'behind'}, {r.lag})"
                          for r in p.peers)
        t.add_row(p.name, p.kind, str(p.replicas), p.leader or "-", peers or "-", str(p.messages))
    out.print(t)


@cluster_app.command()
def replicate(ctx: typer.Context,
              replicas: Annotated[Optional[int], typer.Option(min=1, max=5, help="target (default bus.replicas)")] = None,
              json_out: JsonOpt = False, nats_url: UrlOpt = None, config: ConfigOpt = None) -> None:
    """Raise every stream and KV bucket of the root to ``bus.replicas`` (or --replicas) without data
    loss: a stream update with num_replicas, then wait until every new replica is current."""
    settings = load_settings(ctx, config, nats_url)
    target = replicas or settings.bus.replicas

    async def work():
        from bus import cluster
        from bus.connection import connect

        nc = await connect(settings.bus.url, name="llmbus-cluster", options=settings.bus.connect_options())
        try:
            return await cluster.replicate(nc, settings.bus.root, target)
        finally:
            await nc.close()

    done = _run(work)
    if json_out:
        print_json([{"name": b.name, "before": b.replicas, "after": a.replicas, "messages_before": b.messages,
                     "messages_after": a.messages, "leader": a.leader} for b, a in done])
        return
    if not done:
        hint = " (bus.replicas is 1: give --replicas 3, or set bus.replicas)" if target == 1 else ""
        out.print(f"every stream and bucket of root {settings.bus.root!r} has ≥ {target} replicas already{hint}",
                  markup=False)
        return
    t = Table(title=f"replicated to {target}")
    for col in ("name", "replicas", "messages", "leader"):
        t.add_column(col)
    for b, a in done:
        t.add_row(b.name, f"{b.replicas} → {a.replicas}", f"{b.messages} → {a.messages}", a.leader or "-")
    out.print(t)


def _run(work):
    from bus.errors import ConfigError, LlmError

    try:
        return run_async(work)
    except* ConfigError as group:
        err.print(f"config error: {group.exceptions[0]}", markup=False)
        raise typer.Exit(2) from None
    except* (LlmError, OSError, RuntimeError) as group:
        exc = group.exceptions[0]
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    except* Exception as group:  # a JetStream API error (e.g. more replicas than servers)
        exc = group.exceptions[0]
        err.print(f"error: {type(exc).__name__}: {exc}", markup=False)
        raise typer.Exit(1) from None
