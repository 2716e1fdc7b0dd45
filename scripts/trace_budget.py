"""Where the wall time of ``llmbus trace ASK_ID`` goes (issue 17's goal: < 300 ms, process start
included): ``python scripts/trace_budget.py ASK_ID [--runs N] [--config X]`` against a running fleet
with a recording. Each run is a fresh process; the medians printed are

- python start: ``python -c pass`` (the interpreter and ``site``, the editable install's finder);
- imports … render: a child process doing what ``actors.cli.quick`` does for a plain ``trace`` line,
  phase by phase (the connect includes nats-py's greeting check and the client's inbox);
- the command: ``python -m actors.cli trace ASK_ID``, whole, output to /dev/null (its rest —
  the command less the start and the phases — is the exit and what the phases do not cover).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

T0 = time.perf_counter()


def child(ask_id: str, config: str | None) -> None:
    """One trace, its phases timed (the imports as ``actors.cli.quick`` makes them)."""
    marks = []

    def mark(name: str) -> None:
        marks.append((name, time.perf_counter()))

    from actors.cli import quick

    quick._without_rich_tracebacks()
    from pathlib import Path

    from actors import recording
    from actors.cli.common import Options, out, with_client
    from actors.trace_tree import render
    from bus.subjects import Subjects
    mark("imports")
    opts = Options(config=Path(config) if config else None)
    opts.log()
    settings = opts.settings(check=False)
    subjects = Subjects(settings.bus.root)
    mark("settings")

    import asyncio

    async def work(client):
        mark("connect")
        return await recording.trace(client.nc, subjects, ask_id)

    tr = asyncio.run(with_client(settings, work, plain=True))
    mark("reads")  # and the close
    out.file = open(os.devnull, "w")  # noqa: SIM115 — the child's output is not the point
    out.print(render(tr))
    mark("render")
    prev, got = T0, {}
    for name, at in marks:
        got[name] = (at - prev) * 1000
        prev = at
    print(json.dumps(got))
    sys.stdout.flush()
    os._exit(0)


def wall_ms(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ask_id")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--config", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.ask_id, args.config)
        return
    config = ["--config", args.config] if args.config else []
    start, phases, whole = [], [], []
    for _ in range(args.runs):  # interleaved: the machine's load falls on all three alike
        start.append(wall_ms([sys.executable, "-c", "pass"]))
        done = subprocess.run([sys.executable, __file__, args.ask_id, "--child", *config], capture_output=True,
                              text=True, check=True)
        phases.append(json.loads(done.stdout))
        whole.append(wall_ms([sys.executable, "-m", "actors.cli", *config, "trace", args.ask_id]))
    med = statistics.median
    rows = [("python start", med(start))] + [(name, med(p[name] for p in phases)) for name in phases[0]]
    rows.append(("rest (exit, …)", med(whole) - sum(v for _, v in rows)))
    for name, ms in rows:
        print(f"{name:<16} {ms:6.1f} ms")
    print(f"{'llmbus trace':<16} {med(whole):6.1f} ms median, {min(whole):.1f} best, {max(whole):.1f} worst "
          f"of {args.runs} (load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
