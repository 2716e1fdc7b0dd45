"""End to end through the ``llmbus`` console script, in subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import anyio
import pytest

from bus import messages as m
from bus.errors import AllFailed
from tests.conftest import CACHE_DIR
from tests.helpers import LLMBUS, cli_env, cli_process, free_port

pytestmark = pytest.mark.e2e


def config_text(root: str, *, port: int, store: str = "", extra: str = "") -> str:
    return f"""
[bus]
root = "{root}"
port = {port}
{f'store_dir = "{store}"' if store else ""}
stop_grace_s = 2.0

[router]
strategy = "failover"
providers = ["first", "second"]

[providers.first]
latency = {{ dist = "fixed", ms = 3 }}
failures = {{ unavailable = 1.0 }}

[providers.second]
latency = {{ dist = "fixed", ms = 3 }}

[cache]
dir = "{CACHE_DIR}"
{extra}
"""


def run_cli(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([str(LLMBUS), *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_ask_with_nothing_running_starts_a_private_stack(tmp_path, root):
    config = tmp_path / "llmbus.toml"
    config.write_text(config_text(root, port=free_port()))  # a port nothing listens on: no stray server
    proc = run_cli("ask", "hello", "--json", env=cli_env(LLMBUS_CONFIG=str(config)))
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    assert reply["type"] == "Answer"
    assert reply["text"] == "[second] hello"
    assert [(s["provider"], s["outcome"]) for s in reply["route"]] == [("first", "unavailable"), ("second", "ok")]


@pytest.mark.anyio
async def test_up_then_ask_then_sigint(tmp_path, root):
    port = free_port()
    config = tmp_path / "up.toml"
    config.write_text(config_text(root, port=port, store=str(tmp_path / "store")))
    url = f"nats://127.0.0.1:{port}"
    env = cli_env()
    async with cli_process("up", "--config", str(config), env=env) as up:
        line = await up.wait_for("llmbus up")
        assert url in line

        ok = await anyio.run_process(
            [str(LLMBUS), "ask", "hi there", "--nats-url", url, "--config", str(config), "--json"],
            env=env, check=False,
        )
        assert ok.returncode == 0, ok.stderr.decode()
        reply = json.loads(ok.stdout)
        assert reply["type"] == "Answer" and reply["text"] == "[second] hi there"
        # both providers run inside `up`: the first answered with its configured failure
        assert [(st["provider"], st["outcome"]) for st in reply["route"]] == [("first", "unavailable"), ("second", "ok")]
        assert "failed as configured" in reply["route"][0]["detail"]

        # human output: the answer on stdout, the route on stderr
        plain = await anyio.run_process(
            [str(LLMBUS), "--nats-url", url, "--config", str(config), "ask", "plain", "-p", "second"],
            env=env, check=False,
        )
        assert plain.returncode == 0, plain.stderr.decode()
        assert plain.stdout.decode().strip() == "[second] plain"
        assert "route: second ok" in plain.stderr.decode()

        bad = await anyio.run_process(
            [str(LLMBUS), "ask", "x", "--strategy", "nope", "--nats-url", url, "--config", str(config)],
            env=env, check=False,
        )
        assert bad.returncode == 2  # a request the fleet refuses as bad is bad usage
        assert "bad_request" in bad.stderr.decode()
        assert "nope" in bad.stderr.decode()
        assert bad.stdout == b""

        start = time.monotonic()
        code = await up.stop(signal.SIGINT, within_s=10)
        assert code == 0, up.stderr
        assert time.monotonic() - start < 5
        await up.wait_for("stopped cleanly", within_s=2)
    assert (tmp_path / "store").is_dir()  # the embedded server kept JetStream where configured


@pytest.mark.anyio
async def test_provider_actor_in_its_own_process_serves_a_router_in_the_test(tmp_path, root, nats_url, stack):
    config = tmp_path / "actor.toml"
    config.write_text(config_text(root, port=free_port()))
    async with cli_process(
        "actor", "provider.second", "--nats-url", nats_url, "--config", str(config), env=cli_env()
    ) as actor:
        await actor.wait_for("actor_ready")
        async with stack(config.read_text(), names=["router"]) as s:
            answer = await s.client.ask("across processes", budget_ms=5000, providers=["second"])
            assert isinstance(answer, m.Answer)
            assert answer.text == "[second] across processes"
            assert answer.providers == ["second"]

            code = await actor.stop(signal.SIGTERM)
            assert code == 0, actor.stderr
            # that provider is gone: the router says so at once, with the route
            with pytest.raises(AllFailed) as info:
                await s.client.ask("anyone?", budget_ms=5000)
            assert [(st.provider, st.outcome) for st in info.value.failure.route] == [
                ("first", "unavailable"),
                ("second", "unavailable"),
            ]


@pytest.mark.anyio
async def test_provider_process_killed_mid_request_fails_over(tmp_path, root, nats_url, stack):
    toml = f"""
[bus]
root = "{root}"
stop_grace_s = 2.0

[router]
providers = ["slow", "fast"]

[providers.slow]
latency = {{ dist = "fixed", ms = 1000 }}

[providers.fast]
latency = {{ dist = "fixed", ms = 3 }}
"""
    config = tmp_path / "kill.toml"
    config.write_text(toml)
    async with cli_process(
        "actor", "provider.slow", "--nats-url", nats_url, "--config", str(config), env=cli_env()
    ) as slow:
        await slow.wait_for("actor_ready")
        async with stack(toml, names=["router", "provider.fast"]) as s:
            got: dict = {}

            async def ask():
                start = time.monotonic()
                got["answer"] = await s.client.ask("q", budget_ms=2000)
                got["took"] = time.monotonic() - start

            async with anyio.create_task_group() as tg:
                tg.start_soon(ask)
                # ask the slow process itself (micro STATS) until it has the call in flight
                with anyio.fail_after(3):
                    while True:
                        reply = await s.client.nc.request(f"$SRV.STATS.{root}-provider-slow", b"", timeout=2)
                        if json.loads(reply.data)["endpoints"][0]["data"]["in_flight"] == 1:
                            break
                        await anyio.sleep(0.005)
                slow.process.kill()  # SIGKILL: no reply, no goodbye

            answer = got["answer"]
            assert [(st.provider, st.outcome) for st in answer.route] == [("slow", "timeout"), ("fast", "ok")]
            assert got["took"] < 2.0
            assert await slow.process.wait() == -signal.SIGKILL


@pytest.mark.anyio
async def test_strategies_and_set_strategy_change_a_running_fleet(tmp_path, root):
    port = free_port()
    config = tmp_path / "up.toml"
    config.write_text(config_text(root, port=port, store=str(tmp_path / "store")))
    url = f"nats://127.0.0.1:{port}"
    env = cli_env(LLMBUS_CONFIG=str(config))

    listed = json.loads(run_cli("strategies", "--json", env=env).stdout)
    by_name = {s["name"]: s for s in listed}
    assert {"single", "failover"} <= set(by_name) and by_name["failover"]["default"]
    assert {"name": "reserve", "type": "float", "default": 0.3, "built_in": 0.3} in by_name["failover"]["options"]

    async def cli(*args: str):
        done = await anyio.run_process([str(LLMBUS), "--nats-url", url, *args], env=env, check=False)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()

    async with cli_process("up", env=env) as up:
        await up.wait_for("llmbus up")
        answer = json.loads(await cli("ask", "x", "--json"))
        assert answer["strategy"] == "failover" and len(answer["route"]) == 2
        report = json.loads(await cli("set-strategy", "single", "--json"))
        assert report["default"] == "single" and report["configured"] == "failover"
        # single calls only the first provider, which always fails: the fleet really changed
        failed = await anyio.run_process([str(LLMBUS), "--nats-url", url, "ask", "y", "--json"], env=env, check=False)
        assert failed.returncode == 1 and json.loads(failed.stdout)["kind"] == "unavailable"
        await cli("set-strategy", "failover", "--tier", "pro")
        pro = json.loads(await cli("ask", "z", "--tier", "pro", "--json"))
        assert pro["strategy"] == "failover" and pro["text"] == "[second] z"
        assert (await cli("set-strategy")).splitlines() == ["default: single (config: failover)", "tier pro: failover"]
        await cli("set-strategy", "--clear")
        assert (await cli("set-strategy")).splitlines()[0] == "default: failover"
