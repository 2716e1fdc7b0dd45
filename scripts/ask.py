"""Publish one ask onto the bus and print the answer — the whole client side of llmbus.

    python scripts/ask.py "Why is the sky blue?"            # a fleet at $LLMBUS_NATS_URL (or :4222)
    python scripts/ask.py --strategy single --stream "Tell me a story"
    echo "a long prompt" | python scripts/ask.py -

Start a fleet first with ``llmbus up``. The same URL rules as ``llmbus``: ``--nats-url``, else
``$LLMBUS_NATS_URL``, else ``nats://127.0.0.1:4222``. Exit 0 on an answer, 1 on a failure (or no
fleet), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from bus import messages as m
from bus.client import Client, default_url
from bus.errors import LlmError


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Ask an llmbus fleet one question and print the answer.")
    parser.add_argument("prompt", help="the question; - reads it from stdin")
    parser.add_argument("--nats-url", default=None, help=f"the fleet's NATS URL (default: {default_url()})")
    parser.add_argument("--root", default=None, help="the fleet's subject root (default: $LLMBUS_ROOT or llm)")
    parser.add_argument("--strategy", "-s", default="failover", help="the routing policy (default: failover)")
    parser.add_argument("--budget-ms", "-b", type=int, default=10_000, help="time budget in ms (default: 10000)")
    parser.add_argument("--stream", action="store_true", help="print the answer as it is written")
    args = parser.parse_args(argv)
    if args.budget_ms <= 0:
        parser.error("--budget-ms must be above 0")
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
        if args.stream:
            async for event in client.stream(args.prompt, strategy=args.strategy, budget_ms=args.budget_ms):
                if isinstance(event, m.Chunk):
                    if event.reset:  # the provider's stream broke: what follows starts over
                        print("\n[the stream broke: the answer starts again]", file=sys.stderr)
                    if event.worker is None and event.stage in (None, "restart"):  # text, not progress
                        print(event.delta, end="", flush=True)
                elif isinstance(event, m.Failure):
                    print(f"\n{event.kind}: {event.message}", file=sys.stderr)
                    return 1
            print()
            return 0
        try:
            answer = await client.ask(args.prompt, strategy=args.strategy, budget_ms=args.budget_ms)
        except LlmError as exc:
            print(f"{exc.failure.kind}: {exc.failure.message}", file=sys.stderr)
            return 1
        print(answer.text)
        for step in answer.route:
            print(f"  {step.provider}: {step.outcome} in {step.ms:.1f} ms", file=sys.stderr)
        return 0
    finally:
        await client.__aexit__(None, None, None)


if __name__ == "__main__":
    sys.exit(anyio.run(main, arguments()))
