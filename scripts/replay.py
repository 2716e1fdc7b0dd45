"""Replay a batch of recorded asks (``[record] sampling = "all"``) and report how many changed.

    python scripts/replay.py --last 100                       # as recorded
    python scripts/replay.py --since 3600 --strategy failover --strategy consensus
    python scripts/replay.py --last 1000 --json
    python scripts/replay.py --last 20 --strategy consensus --live   # unrecorded calls to live providers

Each strategy's batch runs through one router under its own isolated root, provider calls answered
from the recording (``actors.replay.replay_many``). Settings come from ``$LLMBUS_CONFIG`` (or
``--config``), like ``llmbus``. Exit 0 when nothing changed, 1 when some answer changed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import anyio
import structlog

from actors import recording, settings as settings_mod
from actors.replay import replay_many, text_of
from bus.connection import connect
from bus.errors import LlmError
from bus.subjects import Subjects


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Replay recorded asks; report how many answers changed, per strategy.")
    p.add_argument("--config", default=None, help="the llmbus config file (default: as llmbus finds it)")
    p.add_argument("--last", type=int, default=None, help="the last N recorded asks (default: all in the window)")
    p.add_argument("--since", type=float, default=None, help="asks of the last this many seconds")
    p.add_argument("--strategy", action="append", default=None, help="replay with this strategy (repeatable; "
                   "default: as recorded)")
    p.add_argument("--live", action="store_true", help="calls with no recording go to the live fleet's providers "
                   "(real calls, billed); without it they answer unavailable")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return p.parse_args(argv)


async def main(args: argparse.Namespace) -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    settings = settings_mod.load(args.config)
    subjects = Subjects(settings.bus.root)
    try:
        nc = await connect(settings.bus.url, name="llmbus-replay-batch", options=settings.bus.connect_options())
    except LlmError as exc:
        print(f"{exc}; start a fleet with `llmbus up`, or set $LLMBUS_CONFIG / $LLMBUS_NATS_URL", file=sys.stderr)
        return 1
    try:
        records = await recording.read(nc, subjects.record_stream, since_s=args.since)
        traces = [t for t in recording.build_traces(subjects, records).values() if t.ask is not None]
        if args.last:
            traces = traces[-args.last:]
        report = {}
        for strategy in args.strategy or [None]:
            t0 = time.perf_counter()
            done = await replay_many(nc, settings.bus.url, settings, traces, strategy=strategy, live=args.live)
            changed = [r for r in done if not r.same]
            how: dict[str, int] = {}
            for r in changed:
                key = f"{'failure' if text_of(r.recorded).startswith('Failure') else 'answer'} → " \
                      f"{'failure' if text_of(r.result).startswith('Failure') else 'answer'}"
                how[key] = how.get(key, 0) + 1
            report[strategy or "as recorded"] = {
                "asks": len(done), "changed": len(changed), "how": how, "seconds": round(time.perf_counter() - t0, 3),
                "missing_calls": sum(sum(r.missing.values()) for r in done),
                "live_calls": sum(sum(r.live.values()) for r in done),
                "changed_ids": [r.ask_id for r in changed][:50]}
    finally:
        await nc.close()
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        for name, r in report.items():
            missing = f"; {r['missing_calls']} calls had no recording" if r["missing_calls"] else ""
            missing += f" ({r['live_calls']} sent to the live providers)" if r["live_calls"] else ""
            print(f"{name}: {r['changed']} of {r['asks']} changed {r['how'] or ''} in {r['seconds']} s{missing}")
    return 1 if any(r["changed"] for r in report.values()) else 0


if __name__ == "__main__":
    sys.exit(anyio.run(main, arguments()))
