"""Publish one ask onto the bus and print the answer — the whole client side of llmbus.

    python scripts/ask.py "Why is the sky blue?"    # needs `llmbus up` running (nats://127.0.0.1:4222)
"""

import sys

import anyio

from bus.client import Client


async def main(question: str) -> None:
    async with Client("nats://127.0.0.1:4222") as client:
        answer = await client.ask(question, strategy="failover", budget_ms=10_000)
    print(answer.text)
    for step in answer.route:
        print(f"  {step.provider}: {step.outcome} in {step.ms:.1f} ms")


anyio.run(main, " ".join(sys.argv[1:]) or "Hello, bus!")
