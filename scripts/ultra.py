"""The "ultra" pattern: the same question to several providers in parallel, then one synthesizer
merges their answers (agreements, disagreements, what only one said) into the answer printed.

    python scripts/ultra.py "Should we shard by tenant or by region?"
    python scripts/ultra.py - --synthesizer anthropic -p openai -p gemini < question.txt
    python scripts/ultra.py "…" --json            # the whole Answer as JSON

Start a fleet first with ``llmbus up``: with no API keys set its mocks answer (the synthesizer, by
default the first provider of the fleet's order, echoes the merge prompt it was given, which shows
what it was asked); with keys set the real providers do. The merge prompt is
``config/templates/synthesis.md``. When the synthesizer fails or time runs short the fleet falls
back to the best single answer and this says why. The same URL rules as ``llmbus``:
``--nats-url``, else ``$LLMBUS_NATS_URL``, else ``nats://127.0.0.1:4222``. Exit 0 on an answer, 1
on a failure (or no fleet), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys

import anyio
import msgspec

from bus.client import Client, default_url
from bus.errors import LlmError

SAMPLE = "What are the trade-offs between sharding a multi-tenant database by tenant and by region?"


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Ask several providers in parallel and print one synthesized "
                                                 "answer (mixture-of-agents).")
    parser.add_argument("prompt", nargs="?", default=SAMPLE, help="the question; - reads it from stdin "
                                                                  "(default: a sample question)")
    parser.add_argument("--nats-url", default=None, help=f"the fleet's NATS URL (default: {default_url()})")
    parser.add_argument("--root", default=None, help="the fleet's subject root (default: $LLMBUS_ROOT or llm)")
    parser.add_argument("--provider", "-p", action="append", default=None,
                        help="a candidate provider (repeatable; default: the fleet's order)")
    parser.add_argument("--synthesizer", default="", help="the provider that merges (default: the first candidate)")
    parser.add_argument("--quorum", type=int, default=2, help="candidate answers needed to synthesise (default: 2)")
    parser.add_argument("--budget-ms", "-b", type=int, default=30_000, help="time budget in ms (default: 30000)")
    parser.add_argument("--json", action="store_true", help="print the whole Answer as JSON")
    args = parser.parse_args(argv)
    if args.budget_ms <= 0:
        parser.error("--budget-ms must be above 0")
    if args.quorum < 1:
        parser.error("--quorum must be at least 1")
    if args.prompt == "-":
        args.prompt = sys.stdin.read()
    if not args.prompt.strip():
        parser.error("the prompt is empty")
    return args


async def main(args: argparse.Namespace) -> int:
    try:
        client = await Client(args.nats_url, root=args.root).__aenter__()
    except LlmError as exc:
        print(f"no llmbus fleet: {exc.failure.message} (start one with `llmbus up`)", file=sys.stderr)
        return 1
    try:
        options = {"quorum": args.quorum, **({"synthesizer": args.synthesizer} if args.synthesizer else {})}
        try:
            answer = await client.ask(args.prompt, strategy="synthesis", providers=args.provider,
                                      budget_ms=args.budget_ms, cache="skip", strategy_options=options)
        except LlmError as exc:
            print(f"{exc.failure.kind}: {exc.failure.message}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(msgspec.to_builtins(answer), ensure_ascii=False))
            return 0
        print(answer.text)
        synthesis = answer.metadata.get("synthesis")
        degraded = answer.metadata.get("degraded")
        if synthesis:
            print(f"synthesized by {synthesis['synthesizer']} from {len(synthesis['candidates'])} candidates: "
                  f"{', '.join(synthesis['candidates'])}", file=sys.stderr)
        elif degraded:
            winner = (answer.metadata.get("best_match") or {}).get("winner", "?")
            print(f"degraded to best_match ({winner}): {degraded['reason']}", file=sys.stderr)
        for step in answer.route:
            print(f"  {step.provider}: {step.outcome} in {step.ms:.1f} ms"
                  + (f" ({step.purpose})" if step.purpose else ""), file=sys.stderr)
        return 0
    finally:
        await client.__aexit__(None, None, None)


if __name__ == "__main__":
    sys.exit(anyio.run(main, arguments()))
