"""A cluster of three nats-servers: state is replicated 3 times, actors spread over the servers, and
an ask still answers after one server is killed (the heavy scenarios: `llmbus bench cluster`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anyio
import pytest

from bus.server import NatsCluster, find_binary
from bus.subjects import Subjects

TOML = """
[bus]
replicas = 3

[router]
strategy = "single"
providers = ["p"]

[providers.p]
model = "m-1"
"""

DEPLOY = Path(__file__).resolve().parent.parent / "docs" / "deploy"


@pytest.fixture(scope="module")
def cluster():
    with NatsCluster(3, ready_within_s=20) as c:
        yield c


@pytest.mark.anyio
async def test_replicate_raises_replicas_of_a_roots_buckets_without_losing_a_key(cluster, root):
    import nats

    from bus import cluster as placement
    from bus.deadline import now
    from bus.streams import delete_root, ensure_kv, retrying

    nc = await nats.connect(cluster.urls)  # a plain connection: what it creates has 1 replica
    try:
        with anyio.fail_after(20):
            kv = await ensure_kv(nc, Subjects(root).bucket("cost"))
            # a new stream's interest reaches the other servers a moment later: its first puts may
            # meet "no responders" (the actors' KV calls retry the same way)
            for i in range(50):
                await retrying(lambda i=i: kv.put(f"ledger.{i}", b"%d" % i), deadline=now() + 10)
            done = await placement.replicate(nc, root, 3)
            assert [(b.replicas, a.replicas, b.messages, a.messages) for b, a in done] == [(1, 3, 50, 50)]
            assert len(done[0][1].peers) == 3 and all(p.current for p in done[0][1].peers)
            assert await placement.replicate(nc, root, 3) == []  # nothing left below 3
            assert (await kv.get("ledger.49")).value == b"49"
    finally:
        await delete_root(nc, root)
        await nc.close()


@pytest.mark.parametrize("name", sorted(p.name for p in DEPLOY.glob("*.conf")))
def test_the_deploy_configs_are_valid_nats_server_configs(name):
    secrets = {"LLMBUS_NATS_PASSWORD": "p1", "LLMBUS_LEAF_PASSWORD": "p2", "LLMBUS_SYS_PASSWORD": "p3"}
    run = subprocess.run([find_binary(), "-t", "-c", str(DEPLOY / name)], capture_output=True, text=True,
                         timeout=20, cwd=DEPLOY, env={**os.environ, **secrets})
    assert run.returncode == 0 and "is valid" in run.stdout + run.stderr, run.stdout + run.stderr


def test_the_deploy_llmbus_toml_names_three_seeds_and_replicas_3():
    from actors import settings as settings_mod

    settings = settings_mod.parse((DEPLOY / "llmbus.toml").read_text(), "docs/deploy/llmbus.toml")
    assert settings.bus.replicas == 3 and len(settings.bus.url.split(",")) == 3
    assert {p.name for p in DEPLOY.glob("nats-*.conf")} == {"nats-1.conf", "nats-2.conf", "nats-3.conf"}


def test_seeds_rotate_so_each_actor_takes_its_own_server_first():
    from bus.connection import check_url, rotated, seed_urls

    url = "nats://a:4222, nats://b:4222,nats://c:4222"
    assert seed_urls(url) == ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
    assert [rotated(url, i).split(",")[0] for i in range(4)] == ["nats://a:4222", "nats://b:4222",
                                                                 "nats://c:4222", "nats://a:4222"]
    assert rotated("nats://a:4222", 5) == "nats://a:4222"
    check_url(url)  # several seeds are one valid URL


@pytest.mark.anyio
async def test_cluster_status_shows_the_meta_leader_and_each_buckets_replicas(cluster, root):
    import msgspec

    from actors import settings as settings_mod
    from actors.cli.cluster import _status
    from bus.connection import ConnectOptions, connect
    from bus.streams import delete_root, ensure_kv

    nc = await connect(cluster.url, name="t", options=ConnectOptions(replicas=3))
    try:
        with anyio.fail_after(15):
            await ensure_kv(nc, Subjects(root).bucket("health"))
            settings = settings_mod.Settings()
            settings = msgspec.structs.replace(settings, bus=msgspec.structs.replace(
                settings.bus, root=root, nats_url=cluster.url))
            monitors = [f"http://127.0.0.1:{s.monitor_port}" for s in cluster.servers]
            report = await _status(settings, monitors)  # what `llmbus cluster status` prints
        assert report.cluster == "llmbus" and report.meta_leader in {"n0", "n1", "n2"}
        assert len(report.known_servers) == 3 and {s["server"] for s in report.servers} == {"n0", "n1", "n2"}
        assert [(p.name, p.replicas, len(p.peers)) for p in report.state] == \
            [(f"KV_{Subjects(root).bucket('health')}", 3, 3)]
    finally:
        await delete_root(nc, root)
        await nc.close()


@pytest.mark.anyio
async def test_replicas_a_single_server_cannot_keep_are_a_config_error(nats_url, root):
    from bus.connection import ConnectOptions, connect
    from bus.errors import ConfigError
    from bus.streams import ensure_kv

    nc = await connect(nats_url, name="t", options=ConnectOptions(replicas=3))
    try:
        with anyio.fail_after(10), pytest.raises(ConfigError, match="bus.replicas"):
            await ensure_kv(nc, Subjects(root).bucket("health"))
    finally:
        await nc.close()


@pytest.mark.anyio
async def test_three_servers_kill_one_an_ask_still_answers(cluster, stack):  # last: it kills a server
    from bus.connection import rotated

    with anyio.fail_after(25):
        # the router (actor 0) on a server that is not the JetStream meta leader: killing that one
        # would also hold the teardown's stream deletes for the meta election (4-9 s)
        leader = await anyio.to_thread.run_sync(cluster.wait_ready)
        victim = next(i for i, srv in enumerate(cluster.servers) if srv.name != leader)
        async with stack(TOML, names=["router", "health", "provider.p"], url=rotated(cluster.url, victim)) as s:
            assert len({a.nc.connected_url.port for a in s.actors}) == 3  # each actor on its own seed
            assert s.actor("router").nc.connected_url.port == cluster.servers[victim].port
            js = s.client.nc.jetstream()
            info = await js.stream_info(f"KV_{Subjects(s.root).bucket('health')}")
            assert info.config.num_replicas == 3 and len(info.cluster.replicas) == 2
            # a subscription is flushed to its own server; its peers learn it over the routes a moment
            # later, so the first ask may meet no responders: the client's retries cover that
            assert (await s.client.ask("before", budget_ms=5000, retries=5)).text
            await anyio.to_thread.run_sync(cluster.kill, victim)  # the router's server, SIGKILL
            answer = await s.client.ask("after", budget_ms=8000, retries=5)
            assert answer.text
            assert s.actor("router").nc.connected_url.port != cluster.servers[victim].port
