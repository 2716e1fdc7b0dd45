"""The CLI as users expect it, through the real ``llmbus`` binary: exact output, clear errors,
prompts from stdin, validation, one truth per fleet. One ``llmbus up`` is shared by the checks
that need a fleet (subprocesses are slow)."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.cli.ask import build_messages
from bus import messages as m
from tests.conftest import CACHE_DIR
from tests.helpers import LLMBUS, cli_env, free_port

pytestmark = pytest.mark.e2e

CONFIG = """
[bus]
root = "{root}"
port = {port}
store_dir = "{store}"
stop_grace_s = 2.0

[router]
strategy = "failover"
providers = ["first", "second"]

[providers.first]
latency = {{ dist = "fixed", ms = 2 }}
failures = {{ unavailable = 1.0 }}

[providers.second]
latency = {{ dist = "fixed", ms = 2 }}

[providers.openai]
kind = "openai"
model = "gpt-4o-mini"
api_key_env = "LLMBUS_TEST_NO_SUCH_KEY"

[cache]
dir = "{cache}"
"""


class Up:
    """A running ``llmbus up`` whose stderr lines are kept (read by a thread: the pipe never fills)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen([str(LLMBUS), "up", *args], env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, text: str, within_s: float = 20.0) -> str:
        end = time.monotonic() + within_s
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise AssertionError("llmbus up ended:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} within {within_s}s:\n" + "\n".join(self.seen))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                return self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("fleet")
    root = "tcli" + str(free_port())
    port = free_port()
    config = tmp / "fleet.toml"
    config.write_text(CONFIG.format(root=root, port=port, store=tmp / "store", cache=CACHE_DIR))
    url = f"nats://127.0.0.1:{port}"
    env = cli_env(LLMBUS_CONFIG=str(config), LLMBUS_NATS_URL=url, LLMBUS_DATA_DIR=str(tmp / "data"))
    up = Up([], cli_env(LLMBUS_CONFIG=str(config), LLMBUS_DATA_DIR=str(tmp / "data")))
    try:
        banner = up.wait_for("llmbus up:")
        up.wait_for("strategy:")
        yield {"env": env, "url": url, "config": config, "banner": banner, "up": up, "root": root, "tmp": tmp}
    finally:
        assert up.stop() == 0


def llmbus(*args: str, env: dict[str, str], stdin: str | None = None, cwd: Path | None = None,
           timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([str(LLMBUS), *args], env=env, input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def test_a_piped_100_kb_answer_is_byte_identical(fleet):
    # long lines, rich markup, emoji codes, trailing spaces: all must come out as they went in
    line = "[bold]not bold[/bold] tier:free:month :smile: " + "x" * 300 + "  "
    prompt = "\n".join(f"{i} {line}" for i in range(290))
    assert len(prompt) > 100_000
    done = llmbus("ask", "-", "-p", "second", "--cache", "skip", env=fleet["env"], stdin=prompt)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"[second] {prompt}\n"
    assert "route: second ok" in done.stderr and "model second-1" in done.stderr


def test_stream_prints_the_answer_as_it_comes(fleet):
    done = llmbus("ask", "one two three four", "--stream", "--cache", "skip", env=fleet["env"])
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[second] one two three four\n"


def test_up_banner_comes_first_and_says_which_url_and_what_runs(fleet):
    lines = fleet["up"].seen
    assert lines[0] == fleet["banner"] and fleet["url"] in lines[0]
    text = "\n".join(lines)
    assert f"export LLMBUS_NATS_URL={fleet['url']}" in text
    assert f"config:    {fleet['config']}" in text
    assert "openai  openai    gpt-4o-mini" in text and "not configured (set LLMBUS_TEST_NO_SUCH_KEY)" in text
    assert "failover order: first → second" in text


def test_status_json_is_complete_and_two_health_copies_agree(fleet):
    env = fleet["env"]
    for i in range(3):
        assert llmbus("ask", f"warm {i}", "--cache", "skip", env=env).returncode == 0
    second = subprocess.Popen([str(LLMBUS), "actor", "health"], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in second.stderr:  # readiness: the actor says so
            if "actor_ready" in line:
                break
        for i in range(6):  # events shared out between the two copies
            assert llmbus("ask", f"spread {i}", "--cache", "skip", env=env).returncode == 0
        reports = [json.loads(llmbus("status", "--json", env=env).stdout) for _ in range(2)]
        calls = [{p["provider"]: p["health"]["calls"] for p in r["providers"]} for r in reports]
        assert calls[0] == calls[1] and calls[0]["second"] >= 9
        report = reports[0]
        assert report["order"] == ["first", "second"] and report["strategy"] == "failover"
        configured = {p["provider"]: p["configured"] for p in report["providers"]}
        assert configured["second"] and not configured.get("openai", False)
        assert report["cache"]["type"] == "CacheStats" and "at_iso" in report
        assert report["at_iso"].endswith("Z")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=10)


def test_providers_say_what_the_fleet_runs(fleet):
    done = llmbus("providers", "--json", env=fleet["env"])
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)["providers"]}
    assert rows["second"]["configured"] and rows["second"]["model"] == "second-1" and rows["second"]["kind"] == "mock"
    test = llmbus("test", "openai", env=fleet["env"])
    assert test.returncode == 1
    assert "no provider.openai actor runs on this fleet" in test.stderr and "OPENAI_API_KEY" not in test.stderr


def test_fleet_commands_refuse_unknown_names_and_confirm(fleet):
    env = fleet["env"]
    bad = llmbus("health", "reset", "nosuch", env=env)
    assert bad.returncode == 2 and "no provider 'nosuch'" in bad.stderr
    assert "nosuch" not in llmbus("status", "--json", env=env).stdout
    refused = llmbus("cache", "clear", env=env)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    budget = llmbus("budget", "set", "5", "--tier", "free", "--period", "month", "--json", env=env)
    assert budget.returncode == 0, budget.stderr
    assert {"scope": "tier", "name": "free", "period": "month", "limit_usd": 5.0, "spent_usd": 0.0,
            "reserved_usd": 0.0} in json.loads(budget.stdout)["budgets"]


def test_cost_since_a_future_day_has_consistent_totals(fleet):
    done = llmbus("cost", "--by", "day", "--since", "2030-01-01", "--json", env=fleet["env"])
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["lines"] == [] and (report["total"]["calls"], report["total"]["asks"]) == (0, 0)
    everything = json.loads(llmbus("cost", "--by", "user", "--json", env=fleet["env"]).stdout)
    assert everything["total"]["asks"] == sum(line["asks"] for line in everything["lines"]) > 0
    assert "cached_tokens" in everything["total"]


@pytest.mark.parametrize("args, option", [
    (["ask", "hi", "--cache", "bogus"], "--cache"),
    (["ask", "hi", "--retries", "-3"], "--retries"),
    (["ask", "hi", "--budget-ms", "-5"], "--budget-ms"),
    (["ask", "hi", "--max-cost-usd", "-1"], "--max-cost-usd"),
    (["ask", ""], "PROMPT"),
    (["cost", "--since", "yesterday"], "--since"),
    (["--nats-url", "http://127.0.0.1:44222", "status"], "not a NATS URL"),
])
def test_bad_usage_exits_2_naming_the_option(args, option, tmp_path):
    done = llmbus(*args, env=cli_env(LLMBUS_DATA_DIR=str(tmp_path)), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert option in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_with_no_fleet_state_commands_fail_in_one_line_fast(tmp_path):
    url = f"nats://127.0.0.1:{free_port()}"
    env = cli_env(LLMBUS_NATS_URL=url, LLMBUS_DATA_DIR=str(tmp_path))
    start = time.monotonic()
    done = llmbus("budget", "set", "5", "--user", "zed", env=env, cwd=tmp_path)
    assert time.monotonic() - start < 5  # ~0.5 s: the interpreter, then one greeting check
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert url in done.stderr and "llmbus up" in done.stderr
    as_json = llmbus("ask", "hi", "--json", "-b", "2000", env=env, cwd=tmp_path)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["kind"] == "unavailable"
    assert list(tmp_path.iterdir()) == []  # nothing written where it ran


def test_ask_with_nothing_running_says_so_and_writes_nothing_here(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'[bus]\nroot = "tpriv"\nport = {free_port()}\n[cache]\ndir = "{CACHE_DIR}"\n')
    work = tmp_path / "work"
    work.mkdir()
    done = llmbus("ask", "hello", env=cli_env(LLMBUS_CONFIG=str(config), LLMBUS_DATA_DIR=str(tmp_path / "d")), cwd=work)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[mock] hello\n" and "private stack" in done.stderr
    assert list(work.iterdir()) == []


def test_up_with_a_url_nobody_serves_fails_in_one_line(tmp_path):
    env = cli_env(LLMBUS_NATS_URL=f"nats://127.0.0.1:{free_port()}", LLMBUS_DATA_DIR=str(tmp_path))
    done = llmbus("up", env=env, cwd=tmp_path, timeout=10)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "--port" in done.stderr


def test_version_and_short_help():
    assert llmbus("--version", env=cli_env()).stdout.startswith("llmbus ")
    help_text = llmbus("test", "-h", env=cli_env()).stdout
    assert "[providers.<name>]" in help_text and "<bool>" not in help_text
    assert "health" in llmbus("actor", "-h", env=cli_env()).stdout


def test_prompt_parts_from_files(tmp_path):
    (tmp_path / "notes.txt").write_text("some notes")
    (tmp_path / "sys.txt").write_text("be brief")
    msgs = build_messages("summarise", system=None, system_file=tmp_path / "sys.txt",
                          files=[tmp_path / "notes.txt"], messages_file=None)
    assert msgs[0] == m.Message(role="system", content="be brief")
    assert msgs[1].content == [m.Document(text="some notes", media_type="text/plain", name="notes.txt"),
                               m.Text(text="summarise")]
    (tmp_path / "conv.json").write_text(json.dumps([{"role": "user", "content": "hi"},
                                                    {"role": "assistant", "content": "hello"}]))
    conv = build_messages(None, system=None, system_file=None, files=[], messages_file=tmp_path / "conv.json")
    assert [x.role for x in conv] == ["user", "assistant"]


def test_schema_prints_json_schema():
    done = llmbus("schema", "Answer", env=cli_env())
    assert done.returncode == 0
    assert "text" in json.loads(done.stdout)["$defs"]["Answer"]["properties"]
    assert llmbus("schema", "Nope", env=cli_env()).returncode == 2
