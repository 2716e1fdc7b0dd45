"""A planted API key, full or partly masked as the SDKs' error messages show it, appears nowhere:
not in logs (structlog, the stdlib loggers, this process's output), not in any message under the
root (``<root>.>``: asks, provider calls, replies, events), not in the events stream or any KV
bucket, not in the cache store, not in any ``--json`` output of the CLI. The openai provider is aimed
at the loopback wire server, which answers some calls and refuses others with a 401 (or 400) that
echoes the key."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from uuid import uuid4

import anyio
import pytest
import structlog
from structlog.testing import capture_logs

from actors.fakes import openai as oa
from actors.fakes.server import WireServer, json_reply
from bus.errors import LlmError
from tests.helpers import LLMBUS, cli_env

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

# The head and the tail are what masked forms keep; ids are lowercase hex, so neither appears by chance.
KEY = f"sk-planted-{uuid4().hex}-ZQXW"
HEAD, TAIL = KEY[:8], KEY[-4:]  # "sk-plant", "ZQXW"
MASKED = (f"{KEY[:8]}{'*' * 24}{TAIL}",  # the OpenAI API's own form: sk-plant************************ZQXW
          f"sk-…{TAIL}",  # a short form
          f"{KEY[:14]}...")  # the head only

TOML = """
[router]
strategy = "failover"
providers = ["openai"]

[providers.openai]
kind = "openai"
model = "gpt-4o-mini"
base_url = "{url}/v1"
api_key_env = "OPENAI_API_KEY"
max_tokens = 64

[cache]
dir = "{cache}"
"""


def leaks(blob: str | bytes) -> list[str]:
    text = blob.decode("utf-8", "replace") if isinstance(blob, (bytes, bytearray)) else blob
    return [part for part in (KEY, HEAD, TAIL) if part in text]


@pytest.fixture
def logs():
    old = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
                        cache_logger_on_first_use=False)
    try:
        with capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**old)


async def stored(nc, root: str) -> list[bytes]:
    """Every message of this root's streams: the events stream and every KV bucket."""
    js = nc.jetstream()
    found = []
    for info in await js.streams_info():
        name = info.config.name
        if root.lower() not in name.lower():
            continue
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(name, seq)
            except Exception:  # noqa: S112 — a deleted (superseded) KV revision
                continue
            found.append(f"{name} {msg.subject} {msg.headers}".encode() + b" " + (msg.data or b""))
    return found


@pytest.mark.timeout(90)
async def test_a_planted_key_appears_nowhere(stack, root, nats_url, tmp_path, monkeypatch, logs, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    cache = tmp_path / "cache"
    seen: list[bytes] = []
    async with WireServer() as wire:
        toml = TOML.format(url=wire.url, cache=cache)
        config = tmp_path / "llmbus.toml"
        config.write_text(f'[bus]\nroot = "{root}"\nnats_url = "{nats_url}"\n' + toml)
        async with stack(toml) as s:
            async def on(msg) -> None:
                seen.append(f"{msg.subject} {msg.headers}".encode() + b" " + msg.data)

            sub = await s.client.nc.subscribe(f"{root}.>", cb=on)
            await s.client.nc.flush()
            replies: list[object] = []

            async def ask(text: str, **kw) -> None:
                try:
                    replies.append(await s.client.ask(text, budget_ms=5_000, user="alice", **kw))
                except LlmError as exc:
                    replies.append(exc.failure)
                    replies.append(str(exc))

            wire.push(oa.completion("Oslo.", prompt_tokens=12, completion_tokens=3))
            await ask("What is the capital of Norway?")
            await ask("What is the capital of Norway?")  # a cache hit
            wire.push(oa.auth_error(key_shown=KEY))  # the full key echoed: the provider turns misconfigured
            await ask("And of Sweden?", cache="skip")
            await ask("And of Denmark?", cache="skip")  # skipped: the breaker's detail says why

            outputs: list[str] = []

            def cli(*args: str) -> dict:
                env = cli_env(LLMBUS_CONFIG=str(config), OPENAI_API_KEY=KEY, LLMBUS_DATA_DIR=str(tmp_path / "data"))
                done = subprocess.run([str(LLMBUS), *args], env=env, capture_output=True, text=True, timeout=30)
                outputs.extend([" ".join(args), done.stdout, done.stderr])
                return json.loads(done.stdout) if "--json" in args and done.stdout.strip() else {}

            async def run_cli(*args: str) -> dict:
                return await anyio.to_thread.run_sync(lambda: cli(*args))

            wire.push(oa.auth_error(key_shown=MASKED[0]))
            assert (await run_cli("test", "openai", "--json"))["kind"] == "auth"
            wire.push(json_reply(400, {"error": {"message": f"bad request from {MASKED[1]} (also {MASKED[2]})",
                                                 "type": "invalid_request_error", "code": None}}))
            assert (await run_cli("test", "openai", "--json"))["type"] == "Failure"
            status = await run_cli("status", "--json")  # the breaker's detail: what the provider said last
            wire.push(oa.completion("pong"))
            assert (await run_cli("test", "openai", "--json"))["type"] != "Failure"  # closes the breaker
            wire.push(oa.completion("Copenhagen."))
            assert (await run_cli("ask", "--json", "--user", "alice", "And of Denmark, really?"))["type"] == "Answer"
            wire.push(oa.auth_error(key_shown=MASKED[0]))
            assert (await run_cli("ask", "--json", "--cache", "skip", "And of Finland?"))["type"] == "Failure"
            await run_cli("budget", "set", "5", "--user", "alice", "--json")
            for args in (["status", "--json"], ["providers", "--json"], ["cost", "--json"],
                         ["cost", "--json", "--by", "user"], ["budget", "show", "--json"], ["cache", "stats", "--json"],
                         ["strategies", "--json"], ["tiers", "--json"]):
                await run_cli(*args)
            assert status and all(outputs[i + 1].strip() for i in range(0, len(outputs), 3)), outputs

            await sub.unsubscribe()
            kept = await stored(s.client.nc, root)
    out, err = capfd.readouterr()

    # not vacuous: the key reached the wire, the echoes came back, and the stores hold something
    assert any(KEY in json.dumps(rec.headers) for rec in wire.requests)
    assert len(wire.requests) == 8 and seen and kept
    assert any(b"Incorrect API key" in b for b in seen) and any(b"bad request from" in b for b in kept)
    assert list(cache.rglob("*")), "the cache stored nothing"

    places = {
        "reply": [repr(r) for r in replies],
        "structlog": [repr(e) for e in logs],
        "stdlib logs": [caplog.text],
        "this process's output": [out, err],
        f"{root}.>": seen,
        "streams and KV": kept,
        "cache store": [p.read_bytes() for p in cache.rglob("*") if p.is_file()],
        "CLI output": outputs,
    }
    found = {where: sorted({part for blob in blobs for part in leaks(blob)}) for where, blobs in places.items()}
    assert not any(found.values()), {where: parts for where, parts in found.items() if parts}


@pytest.mark.parametrize(("text", "expected"), [
    (f"Incorrect API key provided: {KEY}.", "Incorrect API key provided: [redacted]."),
    (f"Incorrect API key provided: {MASKED[0]}.", "Incorrect API key provided: [redacted]."),
    (f"key {MASKED[1]} refused", "key [redacted] refused"),
    (f"key {MASKED[2]} refused", "key [redacted] refused"),
    ("sk-...abc is someone else's key; loading... done", "sk-...abc is someone else's key; loading... done"),
    ("rate limited ** try later", "rate limited ** try later"),
])
def test_redact_cuts_whole_and_masked_keys(text, expected):
    from actors.providers.classify import redact

    assert redact(text, [KEY]) == expected
