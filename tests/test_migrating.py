"""docs/migrating.md: every ```python block runs against a fleet of mocks (sections 1-3) or against
the emergency-route setup of section 4 (its legacy endpoint a loopback wire server); every ```toml
block loads as a whole config; the LiteLLM YAML parses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from actors import settings as settings_mod
from actors.fakes.auto import auto_reply
from actors.fakes.server import WireServer
from tests.helpers import cli_env

DOC = Path(__file__).resolve().parent.parent / "docs" / "migrating.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)
TEXT = DOC.read_text()
EARLY, _, LATE = TEXT.partition("\n## 4.")


def blocks(text: str, lang: str) -> list[str]:
    return [body for kind, info, body in BLOCK.findall(text) if kind == lang and "no-run" not in info]


def test_the_doc_is_linked_from_the_readme_and_has_its_blocks():
    assert "docs/migrating.md" in (DOC.parent.parent / "README.md").read_text()
    assert len(blocks(EARLY, "python")) == 4 and len(blocks(LATE, "python")) == 1
    assert len(blocks(TEXT, "toml")) == 2


@pytest.mark.parametrize("i", range(2))
def test_toml_blocks_are_whole_valid_configs(i):
    text = blocks(TEXT, "toml")[i]
    settings_mod.parse(text, f"docs/migrating.md toml block {i + 1}").check()


def test_the_litellm_yaml_parses():
    import yaml

    (litellm,) = [body for kind, info, body in BLOCK.findall(TEXT) if kind == "yaml"]
    config = yaml.safe_load(litellm)
    assert len(config["model_list"]) == 3 and config["router_settings"]["allowed_fails"] == 3


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          cwd=str(DOC.parent.parent))


FLEET = """
[router]
strategy = "failover"
providers = ["mock"]

[providers.mock]
model = "m-1"

[tiers.pro]
strategy = "failover"

[gateway]
listen = "127.0.0.1:0"
"""


@pytest.mark.anyio
async def test_sections_1_to_3_run_against_mocks(stack):
    async with stack(FLEET, names=["router", "health", "cost", "images", "provider.mock"]) as s:
        gateway = await s.add("gateway")
        env = cli_env(LLMBUS_NATS_URL=s.url, LLMBUS_ROOT=s.root, LLMBUS_GATEWAY_URL=gateway.url)
        for code in blocks(EARLY, "python"):
            done = await anyio.to_thread.run_sync(run_python, code, env)
            assert done.returncode == 0, f"{code}\n--- stderr:\n{done.stderr[-3000:]}"
            assert "Norway" in done.stdout or "fjord" in done.stdout or "mock" in done.stdout, done.stdout


@pytest.mark.anyio
async def test_section_4_the_legacy_endpoint_answers_as_the_last_route(stack, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("LEGACY_API_KEY", "sk-legacy-test")
    async with WireServer(default=auto_reply) as legacy:
        (config,) = blocks(LATE, "toml")
        config = config.replace("http://127.0.0.1:4000", legacy.url)
        async with stack(config) as s:
            env = cli_env(LLMBUS_NATS_URL=s.url, LLMBUS_ROOT=s.root)
            (code,) = blocks(LATE, "python")
            done = await anyio.to_thread.run_sync(run_python, code, env)
            assert done.returncode == 0, done.stderr[-3000:]
            assert done.stdout.startswith("legacy "), done.stdout
            assert any(r.path.endswith("/chat/completions") for r in legacy.requests)
