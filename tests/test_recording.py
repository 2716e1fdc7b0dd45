"""Recording (``<ROOT>_RECORD``), ``trace`` and ``replay`` end to end on a real NATS server with mock
providers: an ask through failover (the first provider fails) is recorded, its trace shows both
calls after every actor stopped, and replay gives the identical answer with the providers stopped."""

from __future__ import annotations

import nats
import pytest

from actors import recording
from actors.replay import replay
from bus import messages as m
from bus.errors import LlmError
from bus.subjects import Subjects
from tests.conftest import CACHE_DIR

pytestmark = [pytest.mark.anyio]

TOML = f"""
[router]
strategy = "failover"
providers = ["first", "second"]

[providers.first]
latency = {{ dist = "fixed", ms = 2 }}
failures = {{ unavailable = 1.0 }}

[providers.second]
latency = {{ dist = "fixed", ms = 2 }}

[cache]
dir = "{CACHE_DIR}"

[record]
sampling = "all"
max_age_s = 600.0
max_bytes = 8388608
"""


@pytest.mark.timeout(30)
async def test_failover_is_recorded_traced_and_replayed_without_providers(stack, root, nats_url):
    async with stack(TOML) as s:
        answer = await s.client.ask("hello there", budget_ms=5_000, cache="skip")
        assert answer.text == "[second] hello there"
        ask_id = answer.id
        with pytest.raises(LlmError):
            await s.client.ask("only the failing one", budget_ms=5_000, cache="skip", providers=["first"])
        nc = await nats.connect(nats_url)
        try:
            info = await nc.jetstream().stream_info(Subjects(root).record_stream)
            assert info.config.no_ack and info.config.max_bytes == 8388608
            s.stop()  # every actor stopped: the trace and the replay use the recording alone
            tr = await recording.trace(nc, Subjects(root), ask_id)
            names = [c.name for c in tr.calls]
            assert names[0] == "ask" and "provider.first.complete" in names and "provider.second.complete" in names
            by = {c.name: c for c in tr.calls}
            assert by["provider.first.complete"].outcome().startswith("failure unavailable")
            assert by["provider.second.complete"].outcome().startswith("ok Completion")
            assert all(c.duration_s is not None and c.duration_s >= 0 for c in tr.calls if "commit" not in c.name)
            assert tr.ask.reply is not None
            lines = recording.list_asks(Subjects(root), await recording.read(nc, Subjects(root).record_stream))
            assert [a.ask_id for a in lines][0] == ask_id and not lines[0].failed
            assert len(lines) == 2 and lines[1].failed and lines[1].outcome == m.UNAVAILABLE

            done = await replay(nc, nats_url, s.settings, ask_id, trace=tr)
            assert isinstance(done.result, m.Answer), done.result
            assert done.result.text == answer.text and done.same and done.diff() == ""
            assert done.served == {"first": len([n for n in names if n == "provider.first.complete"]), "second": 1}
            # the isolated root left nothing behind
            left = [i.config.name for i in await nc.jetstream().streams_info() if done.root.upper() in i.config.name.upper()]
            assert left == []
        finally:
            await nc.close()


@pytest.mark.timeout(30)
async def test_recording_off_creates_no_stream(stack, root, nats_url):
    async with stack(TOML.replace('sampling = "all"', 'sampling = "off"')) as s:
        await s.client.ask("hi", budget_ms=5_000)
        nc = await nats.connect(nats_url)
        try:
            names = [i.config.name for i in await nc.jetstream().streams_info()]
            assert Subjects(root).record_stream not in names
        finally:
            await nc.close()


@pytest.mark.timeout(30)
async def test_errors_sampling_records_only_failed_asks(stack, root, nats_url):
    import anyio

    async with stack(TOML.replace('sampling = "all"', 'sampling = "errors"')) as s:
        ok = await s.client.ask("this one is answered", budget_ms=5_000, cache="skip")
        with pytest.raises(LlmError) as failed:
            await s.client.ask("only the failing one", budget_ms=5_000, cache="skip", providers=["first"],
                               ask_id="failing-ask-1")
        assert failed.value.failure.kind == m.UNAVAILABLE
        nc = await nats.connect(nats_url)
        try:
            with anyio.fail_after(5):  # the recorder writes the window just after the failed reply
                while not (recs := await recording.read(nc, Subjects(root).record_stream)) or \
                        not any(r.subject == Subjects(root).ask for r in recs):
                    await anyio.sleep(0.02)
            assert {r.ask_id for r in recs} == {"failing-ask-1"} and ok.id != "failing-ask-1"
            tr = recording.build_trace(Subjects(root), "failing-ask-1", recs, [])
            by = {c.name: c for c in tr.calls}
            assert by["provider.first.complete"].outcome().startswith("failure unavailable")
            assert tr.ask.outcome().startswith("failure unavailable")
        finally:
            await nc.close()


@pytest.mark.timeout(30)
async def test_cli_trace_asks_and_replay(stack, root, nats_url, tmp_path):
    import json
    import subprocess

    import anyio

    from tests.helpers import LLMBUS, cli_env

    config = tmp_path / "llmbus.toml"
    config.write_text(f'[bus]\nroot = "{root}"\nnats_url = "{nats_url}"\n' + TOML)
    async with stack(TOML) as s:
        answer = await s.client.ask("hello cli", budget_ms=5_000, cache="skip")

        def cli(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([str(LLMBUS), *args], env=cli_env(LLMBUS_CONFIG=str(config)), capture_output=True,
                                  text=True, timeout=20)

        s.stop()
        tr, asks, rp = [await anyio.to_thread.run_sync(lambda a=a: cli(*a))
                        for a in (("trace", answer.id, "--json"), ("asks", "--json"), ("replay", answer.id, "--json"))]
    for done in (tr, asks, rp):
        assert done.returncode == 0, done.stderr
    names = [c["name"] for c in json.loads(tr.stdout)["calls"]]
    assert "provider.first.complete" in names and "provider.second.complete" in names
    assert [a["ask_id"] for a in json.loads(asks.stdout)] == [answer.id]
    replayed = json.loads(rp.stdout)
    assert replayed["same"] and replayed["replayed"]["text"] == answer.text and replayed["diff"] == ""


@pytest.mark.timeout(30)
async def test_a_planted_key_is_not_recorded(stack, root, nats_url, tmp_path, monkeypatch):
    from actors.fakes import openai as oa
    from actors.fakes.server import WireServer
    from tests.test_planted_key import KEY, TOML as KEYED, leaks

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    async with WireServer() as wire:
        toml = KEYED.format(url=wire.url, cache=tmp_path / "cache") + '\n[record]\nsampling = "all"\n'
        async with stack(toml) as s:
            wire.push(oa.completion("Oslo.", prompt_tokens=12, completion_tokens=3))
            assert (await s.client.ask("What is the capital of Norway?", budget_ms=5_000)).text == "Oslo."
            wire.push(oa.auth_error(key_shown=KEY))  # the provider's error echoes the key
            try:
                await s.client.ask("And of Sweden?", budget_ms=5_000, cache="skip")
            except Exception:  # noqa: S110 — the failure is expected; what was recorded is the point
                pass
            nc = await nats.connect(nats_url)
            try:
                recorded = await recording.read(nc, Subjects(root).record_stream)
            finally:
                await nc.close()
    assert len(recorded) >= 4  # asks, provider calls and their replies
    assert any(b"openai.complete" in r.subject.encode() for r in recorded)
    assert [r.subject for r in recorded if leaks(f"{r.subject} {r.headers}".encode() + b" " + r.data)] == []


@pytest.mark.timeout(30)
async def test_the_recording_keeps_within_max_bytes(stack, root, nats_url):
    small = TOML.replace("max_bytes = 8388608", "max_bytes = 4096")
    async with stack(small) as s:
        ids = [(await s.client.ask(f"ask number {i} " + "x" * 200, budget_ms=5_000, cache="skip")).id for i in range(12)]
        nc = await nats.connect(nats_url)
        try:
            info = await nc.jetstream().stream_info(Subjects(root).record_stream)
            assert 0 < info.state.bytes <= 4096 and info.state.first_seq > 1  # the oldest were dropped
            kept = {r.ask_id for r in await recording.read(nc, Subjects(root).record_stream)}
            assert ids[-1] in kept and ids[0] not in kept
        finally:
            await nc.close()


THREE = f"""
[router]
strategy = "consensus"
providers = ["a", "b", "c"]

[providers.a]
latency = {{ dist = "fixed", ms = 1 }}
answer = "canned"
canned = "Paris."

[providers.b]
latency = {{ dist = "fixed", ms = 2 }}
answer = "canned"
canned = "Paris."

[providers.c]
latency = {{ dist = "fixed", ms = 3 }}
answer = "canned"
canned = "Paris."

[cache]
dir = "{CACHE_DIR}"

[record]
sampling = "all"
"""


@pytest.mark.timeout(30)
async def test_consensus_of_three_is_traced_and_replayed_also_with_another_strategy(stack, root, nats_url):
    async with stack(THREE) as s:
        answer = await s.client.ask("capital of France?", budget_ms=5_000, cache="skip")
        assert answer.text == "Paris."
        s.stop()
        nc = await nats.connect(nats_url)
        try:
            tr = await recording.trace(nc, Subjects(root), answer.id)
            calls = sorted(c.name for c in tr.calls if c.kind == "provider")
            assert calls == ["provider.a.complete", "provider.b.complete", "provider.c.complete"]
            assert all(c.duration_s is not None for c in tr.calls if c.kind == "provider")
            same = await replay(nc, nats_url, s.settings, answer.id, trace=tr)
            assert same.same and same.result.text == "Paris." and same.missing == {}
            other = await replay(nc, nats_url, s.settings, answer.id, strategy="failover", trace=tr)
            assert isinstance(other.result, m.Answer) and other.result.text == "Paris." and other.served == {"a": 1}
        finally:
            await nc.close()


@pytest.mark.timeout(30)
async def test_sampling_per_tier(stack, root, nats_url):
    """``[tiers.<name>] record``: pro records every ask, free only failed ones, the rest (``[record]
    sampling = "off"``) nothing — the router's recorder decides per ask from its tier."""
    import anyio

    toml = TOML.replace('sampling = "all"', 'sampling = "off"') + """
[tiers.pro]
record = "all"

[tiers.free]
record = "errors"
"""
    async with stack(toml) as s:
        assert s.settings.recording() == "window"
        await s.client.ask("no tier", budget_ms=5_000, cache="skip", ask_id="untiered-ok")
        with pytest.raises(LlmError):
            await s.client.ask("no tier, failing", budget_ms=5_000, cache="skip", providers=["first"],
                               ask_id="untiered-failed")
        await s.client.ask("free", budget_ms=5_000, cache="skip", tier="free", ask_id="free-ok")
        with pytest.raises(LlmError):
            await s.client.ask("free, failing", budget_ms=5_000, cache="skip", tier="free", providers=["first"],
                               ask_id="free-failed")
        await s.client.ask("pro", budget_ms=5_000, cache="skip", tier="pro", ask_id="pro-ok")
        nc = await nats.connect(nats_url)
        try:
            with anyio.fail_after(5):  # written in order, just after each reply: pro-ok is the last
                while True:
                    recs = await recording.read(nc, Subjects(root).record_stream)
                    tr = recording.build_trace(Subjects(root), "pro-ok", recs, [])
                    if tr.ask is not None and tr.ask.reply is not None:  # its window's last message
                        break
                    await anyio.sleep(0.02)
            assert {r.ask_id for r in recs} == {"free-failed", "pro-ok"}
            assert tr.ask.outcome().startswith("ok Answer") and "provider.second.complete" in [c.name for c in tr.calls]
        finally:
            await nc.close()


@pytest.mark.timeout(30)
async def test_replay_calls_live_providers_only_with_live(stack, root, nats_url):
    """An ask recorded through failover (one call, to a) replayed as consensus: b and c have no
    recording — named and answered unavailable, and sent to the live fleet only with ``live``."""
    async with stack(THREE) as s:
        answer = await s.client.ask("capital of France?", budget_ms=5_000, cache="skip", strategy="failover")
        nc = await nats.connect(nats_url)
        try:
            tr = await recording.trace(nc, Subjects(root), answer.id)
            offline = await replay(nc, nats_url, s.settings, answer.id, strategy="consensus", trace=tr)
            assert offline.served == {"a": 1} and offline.missing == {"b": 1, "c": 1} and offline.live == {}
            live = await replay(nc, nats_url, s.settings, answer.id, strategy="consensus", trace=tr, live=True)
            assert live.served == {"a": 1} and live.live == {"b": 1, "c": 1}
            assert isinstance(live.result, m.Answer) and live.result.text == "Paris."
            assert sorted(live.result.providers) == ["a", "b", "c"]
        finally:
            await nc.close()


@pytest.mark.timeout(30)
async def test_a_trace_reads_only_its_asks_stretch_of_the_recording(stack, root, nats_url, monkeypatch):
    """The router marks each ask's start (``Subjects.recorded_index``): a trace looks it up and reads
    from there until ``AFTER_REPLY_S`` after the ask's reply (here 0: the next ask stops it), not the
    whole stream."""
    monkeypatch.setattr(recording, "AFTER_REPLY_S", 0.0)
    async with stack(TOML) as s:
        answers = [await s.client.ask(f"ask {i}", budget_ms=5_000, cache="skip") for i in range(12)]
        nc = await nats.connect(nats_url)
        try:
            everything = await recording.read(nc, Subjects(root).record_stream)
            first = await recording._indexed(nc, Subjects(root), answers[0].id)
            assert first is not None and answers[0].id in {r.ask_id for r in first}
            assert len(first) < len(everything) // 2  # the first asks only
            tr = await recording.trace(nc, Subjects(root), answers[5].id)
            assert tr.ask is not None and tr.ask.reply is not None
            assert "provider.second.complete" in [c.name for c in tr.calls]
        finally:
            await nc.close()


@pytest.mark.parametrize("argv, got", [
    (["trace", "A1"], {"ask_id": "A1"}),
    (["--config", "x.toml", "trace", "A1", "--json"], {"ask_id": "A1", "config": "x.toml", "json_out": True}),
    (["trace", "A1", "--since=60", "--nats-url", "nats://h:1"], {"ask_id": "A1", "since": 60.0, "nats_url": "nats://h:1"}),
    (["-c", "x.toml", "trace", "A1"], {"ask_id": "A1", "config": "x.toml"}),
])
def test_a_plain_trace_line_skips_typer(argv, got):
    from actors.cli.quick import parse_trace

    assert parse_trace(argv) == {"config": None, "nats_url": None, "since": None, "json_out": False, **got}


@pytest.mark.parametrize("argv", [["trace"], ["trace", "A1", "-h"], ["-v", "trace", "A1"], ["asks"], ["ask", "hi"],
                                  ["trace", "A1", "B2"], ["trace", "A1", "--since", "soon"], ["--json", "trace", "A1"],
                                  ["trace", "A1", "--creds", "f"], []])
def test_anything_else_goes_to_typer(argv):
    from actors.cli.quick import parse_trace

    assert parse_trace(argv) is None


@pytest.mark.timeout(40)
async def test_the_batch_replay_script_reports_nothing_changed(stack, root, nats_url, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    import anyio

    from tests.helpers import cli_env

    config = tmp_path / "llmbus.toml"
    config.write_text(f'[bus]\nroot = "{root}"\nnats_url = "{nats_url}"\n' + TOML)
    script = Path(__file__).resolve().parent.parent / "scripts" / "replay.py"
    async with stack(TOML) as s:
        for i in range(5):
            await s.client.ask(f"batch {i}", budget_ms=5_000, cache="skip")
        s.stop()  # the replay needs no provider
        done = await anyio.to_thread.run_sync(lambda: subprocess.run(
            [sys.executable, str(script), "--last", "5", "--strategy", "failover", "--json"],
            env=cli_env(LLMBUS_CONFIG=str(config)), capture_output=True, text=True, timeout=30))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["failover"]
    assert report["asks"] == 5 and report["changed"] == 0 and report["live_calls"] == 0
