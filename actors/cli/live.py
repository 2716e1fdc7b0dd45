"""The progress of ``llmbus ask --stream`` on stderr; the final text goes to stdout, once.

On a terminal, a rich ``Live`` view (transient: it is gone when the answer is printed): one line per
worker with its state (``Chunk.worker``/``state``: running, ok, a failure kind, cancelled), then the
stage (``draft`` → ``enhanced`` → ``final``, for ``review``) and the text as it stands — a stream
that broke and started over (``Chunk.reset``) drops what it had shown. Off a terminal (a log, a
pipe), plain lines: one per worker state, stage and reset; the text itself only on stdout, so
nothing is ever shown twice there. ``NO_COLOR`` turns colours off (rich's ``Console`` honours it);
the layout stays.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from bus import messages as m
from bus.client import StreamText

STAGES = StreamText.STAGES
_STYLE = {"running": "yellow", "ok": "green", "cancelled": "dim"}
_MARK = {"running": "…", "ok": "✓", "cancelled": "·"}
TAIL_LINES = 12  # of the text, in the live view


class StreamView:
    """Feed it every item of ``Client.stream``; use it as a context manager around the loop."""

    def __init__(self, console: Console, *, quiet: bool = False, live: bool | None = None) -> None:
        self.console = console
        self.quiet = quiet  # --json: nothing on stderr
        self.live = (console.is_terminal if live is None else live) and not quiet
        self.text = StreamText()
        self.workers: dict[str, str] = {}
        self.stage: str | None = None
        self._live: Live | None = None

    def __enter__(self) -> StreamView:
        if self.live:
            self._live = Live(console=self.console, get_renderable=self.render, transient=True,
                              refresh_per_second=10)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def feed(self, item: m.Chunk | m.Answer | m.Failure) -> None:
        self.text.feed(item)
        if item.__class__ is not m.Chunk:
            return
        if item.worker is not None:
            state = item.state or "?"
            self.workers[item.worker] = state
            self._line(f"[worker] {item.worker}: {state}")
        elif item.reset:
            self._line("[reset] the provider's stream broke: the answer starts again")
        elif item.stage in STAGES:
            self.stage = item.stage
            text = " ".join(item.delta.split())
            self._line(f"[{item.stage}] {text[:100]}{'…' if len(text) > 100 else ''}")

    def _line(self, line: str) -> None:
        if not self.live and not self.quiet:
            self.console.print(line, markup=False, highlight=False)

    def render(self) -> Group:
        """The live view: the workers, then the stage and the tail of the text."""
        grid = Table.grid(padding=(0, 1))
        for name, state in list(self.workers.items()):  # a copy in one step: Live renders from its thread
            style = _STYLE.get(state, "red")
            grid.add_row(Text(_MARK.get(state, "✗"), style=style), Text(name, style="bold"), Text(state, style=style))
        title = f"— {self.stage} —" if self.stage else ("— answer —" if self.text.streamed else "— waiting —")
        body = "\n".join(self.text.streamed.splitlines()[-TAIL_LINES:])
        return Group(grid, Text(title, style="dim"), Text(body))
