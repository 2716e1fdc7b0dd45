"""``llmbus up --auth`` runs a protected bus; CLI clients take ``[bus.auth]`` and the auth options
(before or after the command's name); a missing or wrong token is one clear line, fast."""

from __future__ import annotations

import json
import stat
import time

import pytest

from tests.helpers import cli_env, free_port
from tests.test_cli import Up, llmbus

pytestmark = pytest.mark.e2e

CONFIG = """
[bus]
root = "{root}"
port = {port}
store_dir = "{store}"
stop_grace_s = 2.0

[providers.mock]
latency = {{ dist = "fixed", ms = 1 }}

[cache]
enabled = false
"""


@pytest.mark.timeout(60)
def test_up_auth_protects_the_bus_and_clients_connect_with_the_token(tmp_path):
    port = free_port()
    config = tmp_path / "auth.toml"
    config.write_text(CONFIG.format(root="tauth" + str(port), port=port, store=tmp_path / "store"))
    data = tmp_path / "data"
    base = dict(LLMBUS_CONFIG=str(config), LLMBUS_DATA_DIR=str(data))
    up = Up(["--auth"], cli_env(**base))
    try:
        up.wait_for("strategy:")
        token_file = data / "nats-token"
        token = token_file.read_text().strip()
        assert len(token) >= 32 and stat.S_IMODE(token_file.stat().st_mode) == 0o600
        auth_line = next(line for line in up.seen if "auth:" in line)
        assert f"export LLMBUS_NATS_TOKEN=$(cat {token_file})" in auth_line
        assert token not in "\n".join(up.seen)  # the banner names where the token is, never the token

        url = dict(base, LLMBUS_NATS_URL=f"nats://127.0.0.1:{port}")
        ok = llmbus("ask", "hello", env=cli_env(**url, LLMBUS_NATS_TOKEN=token))
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout == "[mock] hello\n"
        # the option names the variable, after the command's name or before it
        for args in (["ask", "hi", "--token-env", "MY_TOKEN"], ["--token-env=MY_TOKEN", "ask", "hi"]):
            named = llmbus(*args, env=cli_env(**url, MY_TOKEN=token))
            assert named.returncode == 0, named.stderr

        for extra in ({}, {"LLMBUS_NATS_TOKEN": "wrong"}):
            start = time.monotonic()
            refused = llmbus("ask", "hello", env=cli_env(**url, **extra))
            assert time.monotonic() - start < 5  # the interpreter's start included; the refusal is ~0.1 s
            assert refused.returncode == 1 and refused.stdout == ""
            lines = refused.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("auth: the NATS server at") and "refused" in lines[0]
            assert "wrong" not in lines[0]
        as_json = llmbus("status", "--json", env=cli_env(**url))
        assert as_json.returncode == 1 and json.loads(as_json.stdout)["kind"] == "auth"

        unset = llmbus("ask", "hi", "--token-env", "NO_SUCH_VARIABLE", env=cli_env(**url))
        assert unset.returncode == 2
        assert unset.stderr.strip() == "config error: bus.auth.token_env names $NO_SUCH_VARIABLE, which is not set"
        missing = llmbus("status", "--creds", str(tmp_path / "none.creds"), env=cli_env(**url))
        assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
        assert missing.stderr.startswith("config error: NATS creds file")
    finally:
        assert up.stop() == 0


@pytest.mark.timeout(30)
def test_connect_failures_are_one_line(tmp_path):
    env = cli_env(LLMBUS_DATA_DIR=str(tmp_path))
    bad = llmbus("status", "--nats-url", "http://127.0.0.1:1", env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a NATS URL" in bad.stderr
    down = llmbus("status", "--nats-url", f"nats://tok3n@127.0.0.1:{free_port()}", env=env)
    assert down.returncode == 1 and down.stderr.count("\n") == 1 and "tok3n" not in down.stderr
