"""The dual-LLM pipeline on a realistic travel ask: a cheap model extracts a validated trip state,
a strong model writes the itinerary from it, and rules stand in when the cheap model fails.

    llmbus up &                                  # a fleet (mocks when no API key is set)
    python scripts/two_stage.py                  # the default trip request
    python scripts/two_stage.py "10 days in Japan for $3000, packed" --stage1 mock-fast

Prints the stage-1 state, where it came from (llm | fallback | cache | none), the attempts, and
the answer's route. Exit 0 on an answer, 1 on a failure or no fleet.
"""

from __future__ import annotations

import argparse
import json
import sys

import anyio

from bus.client import Client, default_url
from bus.errors import LlmError

TRIP_STATE = {
    "type": "object",
    "properties": {
        "destination": {"type": "string", "minLength": 1},
        "days": {"type": "integer", "minimum": 1, "maximum": 60},
        "budget_usd": {"type": ["number", "null"], "minimum": 0},
        "pace": {"enum": ["relaxed", "moderate", "packed"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["destination", "days", "pace", "confidence"],
}
DEFAULT = ("We're two adults flying into Lisbon for 5 days in May with about $1800 to spend, not counting "
           "flights. We like food markets and walking, hate early starts, and want one day trip. Keep it relaxed.")


async def main(args: argparse.Namespace) -> int:
    options = {"state_schema": TRIP_STATE, "fallback": "actors.pure.rules:trip_state"}
    if args.stage1:
        options["stage1"] = args.stage1
    try:
        async with Client(args.nats_url or default_url()) as client:
            answer = await client.ask(args.prompt, strategy="pipeline", strategy_options=options,
                                      budget_ms=args.budget_ms, cache="skip")
    except LlmError as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    stage1 = answer.metadata.get("stage1", {})
    print(f"stage 1 ({stage1.get('source')}, {stage1.get('attempts')} attempt(s), {stage1.get('latency_ms')} ms):")
    print(json.dumps(stage1.get("state"), indent=2))
    for problem in stage1.get("problems", []):
        print(f"  rejected: {problem}")
    print("\nroute: " + " → ".join(f"{s.provider} ({s.purpose or 'answer'}: {s.outcome}, {s.ms:.0f} ms)"
                                   for s in answer.route))
    print(f"\n{answer.text}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Two-stage pipeline: validated state, then the answer.")
    parser.add_argument("prompt", nargs="?", default=DEFAULT)
    parser.add_argument("--stage1", default="", help="the stage-1 provider (default: the first candidate)")
    parser.add_argument("--nats-url", default=None)
    parser.add_argument("--budget-ms", type=int, default=20_000)
    sys.exit(anyio.run(main, parser.parse_args()))
