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


VOTERS = f"""
[router]
strategy = "consensus"
providers = ["neg", "pos1", "pos2"]

[providers.neg]
answer = "canned"
canned = "negative"

[providers.pos1]
answer = "canned"
canned = "positive"

[providers.pos2]
answer = "canned"
canned = "positive"

[cache]
dir = "{CACHE_DIR}"

[record]
sampling = "all"
max_age_s = 600.0
max_bytes = 8388608
"""


@pytest.mark.timeout(40)
async def test_eval_from_recordings_compares_strategies_without_live_calls(stack, root, nats_url, tmp_path):
    """A live consensus run is recorded; then single (the first provider, ``negative``: 4 of 10) and
    consensus (``positive`` 2 to 1: 6 of 10) are evaluated from the recording with the providers stopped."""
    from actors.cli.evaluate import from_recordings, load_dataset

    config = tmp_path / "llmbus.toml"
    config.write_text(f'[bus]\nroot = "{root}"\nnats_url = "{nats_url}"\n' + VOTERS)
    async with stack(VOTERS) as s:
        done = await anyio.to_thread.run_sync(lambda: subprocess.run(
            [str(LLMBUS), "eval", str(DATASET), "--json"], env=cli_env(LLMBUS_CONFIG=str(config)),
            capture_output=True, text=True, timeout=20))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["default"]["accuracy"] == {"label": 0.6}
        for name in ("provider.neg", "provider.pos1", "provider.pos2"):
            s.actor(name).stop()  # from here on nothing may reach a provider
        items = load_dataset(DATASET) + [{"prompt": "never recorded", "label": "positive"}]
        report = await from_recordings(s.client, s.settings, items, ["single", "consensus"], url=nats_url)
    single, consensus = report["single"], report["consensus"]
    assert single["recorded"] == consensus["recorded"] == 10 and single["coverage"] == round(10 / 11, 4)
    assert single["accuracy"] == {"label": round(4 / 11, 4)} and single["calls_per_ask"] == 1.0
    assert consensus["accuracy"] == {"label": round(6 / 11, 4)} and consensus["calls_per_ask"] == 3.0
    assert single["missing_calls"] == consensus["missing_calls"] == 0
