"""``llmbus ask --stream``'s progress (``actors.cli.live.StreamView``): a live rich view on a
terminal, plain lines elsewhere, colours off with NO_COLOR; the final text on stdout once, a
broken stream's text never in it."""

from __future__ import annotations

import io

import anyio
import pytest
from rich.console import Console

from actors.cli.live import StreamView
from bus import messages as m
from tests.helpers import LLMBUS, cli_env

BROKEN = [
    m.Chunk(id="x", seq=0, worker="b", state="running"),
    m.Chunk(id="x", seq=1, delta="[b] one"),
    m.Chunk(id="x", seq=2, delta=" two"),
    m.Chunk(id="x", seq=3, worker="b", state="unavailable"),
    m.Chunk(id="x", seq=4, worker="a", state="running"),
    m.Chunk(id="x", seq=5, stage="restart", reset=True),
    m.Chunk(id="x", seq=6, delta="[a] one"),
    m.Chunk(id="x", seq=7, delta=" two three"),
    m.Chunk(id="x", seq=8, worker="a", state="ok"),
]


def console(*, tty: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=tty, width=100, emoji=False, highlight=False), buf


def test_off_a_terminal_each_worker_state_stage_and_reset_is_a_plain_line():
    con, buf = console(tty=False)
    with StreamView(con) as view:
        for item in [*BROKEN, m.Chunk(id="x", seq=9, stage="draft", delta='{"day1":  "x"}')]:
            view.feed(item)
    assert buf.getvalue().splitlines() == [
        "[worker] b: running", "[worker] b: unavailable", "[worker] a: running",
        "[reset] the provider's stream broke: the answer starts again", "[worker] a: ok",
        '[draft] {"day1": "x"}',
    ]
    assert "\x1b[" not in buf.getvalue()  # no escape codes in a log


def test_the_live_view_shows_a_line_per_worker_then_the_text_without_the_broken_part():
    con, buf = console(tty=True)
    view = StreamView(con, live=False)  # render only: the Live refresh thread is not needed to see it
    for item in BROKEN:
        view.feed(item)
    con.print(view.render())
    shown = buf.getvalue()
    assert "b" in shown and "unavailable" in shown and "ok" in shown
    assert "[a] one two three" in shown and "[b] one" not in shown
    assert "\x1b[" in shown  # coloured on a terminal


def test_no_color_keeps_the_layout_and_drops_the_colours(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    con, buf = console(tty=True)
    with StreamView(con) as view:  # a real Live, transient
        for item in BROKEN:
            view.feed(item)
        con.print(view.render())
    shown = buf.getvalue()
    assert "[a] one two three" in shown
    assert not any(f"\x1b[{c}" in shown for c in ("31m", "32m", "33m"))  # no colour (bold and dim stay)


def test_json_is_quiet():
    con, buf = console(tty=False)
    with StreamView(con, quiet=True) as view:
        for item in BROKEN:
            view.feed(item)
    assert buf.getvalue() == ""


@pytest.mark.anyio
async def test_llmbus_ask_stream_prints_the_rescued_answer_once(stack, nats_url, root, tmp_path):
    toml = """
[router]
strategy = "failover"
providers = ["b", "a"]
[providers.a]
latency = { dist = "fixed", ms = 1 }
[providers.b]
latency = { dist = "fixed", ms = 1 }
failures = { cut_stream = 1.0 }
"""
    config = tmp_path / "llmbus.toml"
    config.write_text(f'[bus]\nroot = "{root}"\n' + toml)
    async with stack(toml):
        with anyio.fail_after(30):
            done = await anyio.run_process(
                [str(LLMBUS), "ask", "one two three four five six", "--stream", "--cache", "skip",
                 "--config", str(config), "--nats-url", nats_url], env=cli_env(), check=False)
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, stderr
    assert stdout == "[a] one two three four five six\n"  # b's broken half is not in it
    lines = stderr.splitlines()
    assert "[worker] b: unavailable" in lines and "[worker] a: ok" in lines
    assert "[reset] the provider's stream broke: the answer starts again" in lines
