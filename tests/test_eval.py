"""``llmbus eval`` on the shipped example dataset with a canned mock of known accuracy (6 of 10)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anyio
import pytest

from tests.conftest import CACHE_DIR
from tests.helpers import LLMBUS, cli_env

pytestmark = [pytest.mark.anyio]

DATASET = Path(__file__).resolve().parent.parent / "config" / "eval_example.jsonl"
TOML = f"""
[router]
strategy = "single"
providers = ["canned"]

[providers.canned]
latency = {{ dist = "fixed", ms = 1 }}
answer = "canned"
canned = "positive"

[cache]
dir = "{CACHE_DIR}"
"""


@pytest.mark.timeout(30)
async def test_eval_of_the_example_dataset_gives_the_known_accuracy(stack, root, nats_url, tmp_path):
    config = tmp_path / "llmbus.toml"
    config.write_text(f'[bus]\nroot = "{root}"\nnats_url = "{nats_url}"\n' + TOML)
    async with stack(TOML):
        done = await anyio.to_thread.run_sync(lambda: subprocess.run(
            [str(LLMBUS), "eval", str(DATASET), "--strategy", "single", "--strategy", "failover", "--json"],
            env=cli_env(LLMBUS_CONFIG=str(config)), capture_output=True, text=True, timeout=20))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for name in ("single", "failover"):
        r = report[name]
        assert r["asks"] == 10 and r["coverage"] == 1.0 and r["accuracy"] == {"label": 0.6}
        assert r["calls_per_ask"] == 1.0 and r["p50_ms"] is not None
