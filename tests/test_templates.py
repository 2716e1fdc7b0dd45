"""Response templates: shipped markdown / plain / table, structured output as a Markdown table,
a user's template in the sandbox, and `llmbus ask --template`."""

from __future__ import annotations

import json
import subprocess

import pytest

from actors.templates import TemplateError, markdown_table, render
from bus import messages as m

pytestmark = pytest.mark.timeout(30)

ANSWER = m.Answer(id="a1", text="Oslo is the capital.", providers=["a", "b"], strategy="synthesis", cost_usd=0.0012,
                  metadata={"sources": [{"document": "r.pdf", "pages": [1, 3]}]})


def test_shipped_templates():
    md = render(ANSWER, "markdown", title="Capital")
    assert md.startswith("# Capital\n\nOslo is the capital.") and "*a, b · synthesis · $0.0012 · sources: r.pdf p.1–3*" in md
    assert render(ANSWER, "plain").startswith("Oslo is the capital.\n-- a, b (synthesis)")


def test_structured_output_as_a_markdown_table():
    data = {"title": "Q3", "figures": [{"what": "revenue", "value": "+12%"}, {"what": "costs", "value": "a|b"}]}
    table = markdown_table(data)
    assert "| title | Q3 |" in table and "| what | value |" in table and "| costs | a\\|b |" in table
    assert render(m.Answer(id="x", text=json.dumps(data), data=data), "table").startswith("| field | value |")


def test_user_templates_are_sandboxed(tmp_path):
    ok = tmp_path / "mine.j2"
    ok.write_text("{{ text | upper }} ({{ providers | length }})")
    assert render(ANSWER, str(ok)) == "OSLO IS THE CAPITAL. (2)"
    evil = tmp_path / "evil.j2"
    evil.write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateError, match="SecurityError"):
        render(ANSWER, str(evil))
    with pytest.raises(TemplateError, match="no template 'nope'"):
        render(ANSWER, "nope")


@pytest.mark.e2e
def test_cli_template(tmp_path, root):
    from tests.conftest import CACHE_DIR
    from tests.helpers import LLMBUS, cli_env, free_port

    config = tmp_path / "llmbus.toml"
    config.write_text(f'[bus]\nroot = "{root}"\nport = {free_port()}\n[cache]\ndir = "{CACHE_DIR}"\n'
                      '[router]\nstrategy = "single"\nproviders = ["a"]\n[providers.a]\nlatency = { dist = "fixed", ms = 1 }\n')
    env = cli_env(LLMBUS_CONFIG=str(config))
    proc = subprocess.run([str(LLMBUS), "ask", "--template", "plain", "hello"], env=env, capture_output=True, text=True, timeout=40)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[a] hello\n-- a (single)\n"
    proc = subprocess.run([str(LLMBUS), "ask", "--template", "nope", "hello"], env=env, capture_output=True, text=True, timeout=40)
    assert proc.returncode == 2 and "no template 'nope'" in proc.stderr
