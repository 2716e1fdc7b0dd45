"""Ensembles through the real binaries against one ``llmbus up`` with three disagreeing mocks:
``llmbus ask --strategy consensus`` (JSON on stdout, the per-field table on stderr), ``llmbus
feedback`` and ``llmbus reliability``, and the example scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CACHE_DIR
from tests.helpers import LLMBUS, cli_env, free_port
from tests.test_cli import Up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
REPO = Path(__file__).resolve().parents[1]

CONFIG = """
[bus]
root = "{root}"
port = {port}
store_dir = "{store}"
stop_grace_s = 2.0

[router]
strategy = "failover"
providers = ["a", "b", "c"]

[providers.a]
data = {{ name = "Dr. Ann Lee", amount = "$1,200.00" }}
confidence = 0.9
[providers.b]
data = {{ name = "Lee, Ann", amount = "USD 1200" }}
confidence = 0.7
[providers.c]
data = {{ name = "Anne Leigh", amount = "EUR 1,200" }}
confidence = 0.8

[cache]
dir = "{cache}"
"""
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "x-llmbus-match": "person"},
                                           "amount": {"type": "string", "x-llmbus-match": "money"}}}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("ensembles")
    root = "tens" + str(free_port())
    port = free_port()
    config = tmp / "fleet.toml"
    config.write_text(CONFIG.format(root=root, port=port, store=tmp / "store", cache=CACHE_DIR))
    schema = tmp / "fields.json"
    schema.write_text(json.dumps(SCHEMA))
    url = f"nats://127.0.0.1:{port}"
    env = cli_env(LLMBUS_CONFIG=str(config), LLMBUS_NATS_URL=url, LLMBUS_DATA_DIR=str(tmp / "data"))
    up = Up([], cli_env(LLMBUS_CONFIG=str(config), LLMBUS_DATA_DIR=str(tmp / "data")))
    try:
        up.wait_for("llmbus up:")
        up.wait_for("strategy:")
        yield {"env": env, "url": url, "schema": schema, "tmp": tmp, "scripts": {**env, "LLMBUS_ROOT": root}}
    finally:
        assert up.stop() == 0


def run(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def consensus(fleet, *extra: str) -> subprocess.CompletedProcess:
    return run(str(LLMBUS), "ask", "extract", "--strategy", "consensus", "--schema", str(fleet["schema"]),
               "--cache", "skip", *extra, env=fleet["env"])


def test_consensus_prints_the_merged_json_and_a_per_field_table(fleet):
    done = consensus(fleet)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["name"] in ("Dr. Ann Lee", "Lee, Ann") and data["amount"] in ("$1,200.00", "USD 1200")
    table = done.stderr
    for text in ("field", "confidence", "support", "dissent", "c: Anne Leigh", "c: EUR 1,200"):
        assert text in table, table
    assert "a, b" in table or "b, a" in table
    assert "route:" in table


def test_feedback_labels_a_field_and_reliability_shows_it(fleet):
    done = consensus(fleet, "--json")
    assert done.returncode == 0, done.stderr
    ask_id = json.loads(done.stdout)["id"]
    labelled = run(str(LLMBUS), "feedback", ask_id, "--field", "name=Anne Leigh", env=fleet["env"])
    assert labelled.returncode == 0, labelled.stderr
    assert "right" in labelled.stderr and "wrong" in labelled.stderr and "3 labelled answers" in labelled.stderr
    shown = run(str(LLMBUS), "reliability", "--json", env=fleet["env"])
    assert shown.returncode == 0, shown.stderr
    providers = json.loads(shown.stdout)["providers"]
    assert providers["c"]["fields"]["name"]["labelled"] == 1 and providers["c"]["fields"]["name"]["labelled_right"] == 1
    assert providers["a"]["fields"]["name"]["labelled_right"] == 0
    table = run(str(LLMBUS), "reliability", env=fleet["env"])
    assert table.returncode == 0 and "learned accuracy" in table.stderr and "1 (1)" in table.stderr
    status = run(str(LLMBUS), "status", "--detailed", env=fleet["env"])
    assert status.returncode == 0 and "reliability c:" in status.stderr, status.stderr
    detailed = json.loads(run(str(LLMBUS), "status", "--detailed", "--json", env=fleet["env"]).stdout)
    assert detailed["reliability"]["c"]["fields"]["name"]["labelled"] == 1
    unknown = run(str(LLMBUS), "feedback", "no-such-ask", "--field", "name=x", env=fleet["env"])
    assert unknown.returncode == 2 and "no consensus ask 'no-such-ask'" in unknown.stderr
    twice = run(str(LLMBUS), "feedback", ask_id, "--field", "name=Ann Lee", env=fleet["env"])
    assert twice.returncode == 2 and "already labelled: name" in twice.stderr
    bad = run(str(LLMBUS), "feedback", ask_id, "--field", "name", env=fleet["env"])
    assert bad.returncode == 2 and "NAME=VALUE" in bad.stderr


def test_extract_entities_merges_the_email_fields_and_prints_the_table(fleet):
    done = run(sys.executable, "scripts/extract_entities.py", "-p", "a", "-p", "b", "-p", "c", env=fleet["scripts"])
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert list(data) == ["contact_name", "company", "job_title", "contact_email", "amount", "due_date", "priority"]
    assert "field" in done.stderr and "support" in done.stderr and "contact_email" in done.stderr
    assert "llmbus feedback" in done.stderr and "route: a ok" in done.stderr
    bad = run(sys.executable, "scripts/extract_entities.py", "--quorum", "1", env=fleet["scripts"])
    assert bad.returncode == 2 and "--quorum" in bad.stderr


def test_ultra_synthesizes_the_candidates_answers(fleet):
    done = run(sys.executable, "scripts/ultra.py", "Which is better, A or B?", "-p", "a", "-p", "b", "-p", "c",
               "--synthesizer", "a", env=fleet["scripts"])
    assert done.returncode == 0, done.stderr
    assert "Which is better, A or B?" in done.stdout  # the mock synthesizer echoes the merge prompt
    assert "synthesized by a from 2 candidates" in done.stderr and "(synthesis)" in done.stderr
    as_json = run(sys.executable, "scripts/ultra.py", "Q?", "-p", "a", "-p", "b", "--synthesizer", "b", "--quorum",
                  "1", "--json", env=fleet["scripts"])
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["strategy"] == "synthesis"
