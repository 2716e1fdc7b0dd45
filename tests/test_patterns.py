"""Analysis patterns: every shipped pattern renders against mocks (synthesis), the user's own
directory, compare's two documents, and `llmbus ask --file doc.pdf --pattern critique --strategy
synthesis` end to end."""

from __future__ import annotations

import json
import subprocess

import pytest

from actors.documents.samples import make_pdf
from actors.patterns import PatternError, apply, patterns
from bus import messages as m
from bus.client import document

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

SHIPPED = {"summarize", "critique", "compare", "extract", "fact_check", "pros_cons", "explain"}
MOCKS = """
[router]
strategy = "synthesis"
providers = ["a", "b", "c"]
""" + "".join(f'\n[providers.{p}]\nlatency = {{ dist = "fixed", ms = 1 }}\n' for p in "abc")


def test_the_shipped_patterns_and_a_users_own(tmp_path):
    assert SHIPPED <= set(patterns())
    (tmp_path / "haiku.toml").write_text('description = "as a haiku"\nworker = "Answer in a haiku."\n')
    (tmp_path / "summarize.toml").write_text('description = "mine"\nworker = "Be short."\n')
    mine = patterns(str(tmp_path))
    assert mine["haiku"].worker == "Answer in a haiku." and mine["summarize"].description == "mine"
    (tmp_path / "bad.toml").write_text('description = "x"\nwork = "typo"\n')
    with pytest.raises(PatternError, match="bad.toml"):
        patterns(str(tmp_path))


async def test_every_shipped_pattern_renders_against_mocks(stack, tmp_path):
    pdf, notes = tmp_path / "r.pdf", tmp_path / "n.md"
    pdf.write_bytes(make_pdf(["Revenue grew 12 percent", "Costs fell"]))
    notes.write_text("# Notes\n\nmargin is thin\n")
    known = patterns()
    async with stack(MOCKS) as s:
        for name in sorted(SHIPPED):
            p = known[name]
            msgs = [m.Message(role="user", content=[document(pdf), document(notes), m.Text(text="Go.")])]
            msgs, schema, options = apply(p, msgs, strategy="synthesis", schema=None)
            assert msgs[0] == m.Message(role="system", content=p.worker)
            answer = await s.client.ask(msgs, schema=schema, strategy_options=options, budget_ms=5000, cache="skip")
            assert answer.metadata["synthesis"]["synthesizer"] == "a", name
            if name == "extract":
                assert isinstance(answer.data, dict) and "entities" in answer.data
            else:
                assert p.synthesis.splitlines()[0] in answer.text, name  # the pattern's own merge prompt
                assert "Revenue grew 12 percent" in answer.text and "margin is thin" in answer.text
    with pytest.raises(PatternError, match="at least 2 documents"):
        apply(known["compare"], [m.Message(role="user", content=[document(pdf), m.Text(text="?")])],
              strategy="synthesis", schema=None)


@pytest.mark.e2e
def test_cli_pattern_critique_with_synthesis(tmp_path, root):
    from tests.conftest import CACHE_DIR
    from tests.helpers import LLMBUS, cli_env, free_port

    (tmp_path / "doc.pdf").write_bytes(make_pdf(["The plan assumes 40 percent growth."]))
    config = tmp_path / "llmbus.toml"
    config.write_text(f'[bus]\nroot = "{root}"\nport = {free_port()}\n[cache]\ndir = "{CACHE_DIR}"\n' + MOCKS)
    env = cli_env(LLMBUS_CONFIG=str(config))
    proc = subprocess.run([str(LLMBUS), "ask", "--file", str(tmp_path / "doc.pdf"), "--pattern", "critique",
                           "--strategy", "synthesis", "--synthesizer", "c", "--json", "Is the plan sound?"],
                          env=env, capture_output=True, text=True, timeout=40)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["metadata"]["synthesis"]["synthesizer"] == "c"  # --synthesizer picked the merging provider
    assert answer["type"] == "Answer" and "Several reviews of the same material follow." in answer["text"]
    assert "40 percent growth" in answer["text"]
    proc = subprocess.run([str(LLMBUS), "ask", "--pattern", "nope", "x"], env=cli_env(LLMBUS_CONFIG=str(config)),
                          capture_output=True, text=True, timeout=40)
    assert proc.returncode == 2 and "no pattern 'nope'" in proc.stderr
    proc = subprocess.run([str(LLMBUS), "patterns", "--json"], env=cli_env(LLMBUS_CONFIG=str(config)),
                          capture_output=True, text=True, timeout=40)
    assert SHIPPED <= set(json.loads(proc.stdout))
    proc = subprocess.run([str(LLMBUS), "ask", "--strategy", "single", "--synthesizer", "c", "q?"],
                          env=env, capture_output=True, text=True, timeout=40)
    assert proc.returncode == 2 and "only with --strategy synthesis or map_reduce" in proc.stderr

