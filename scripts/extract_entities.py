"""Fields from a business email by consensus of several providers (the CollabIQ case): the same
schema asked of each in parallel, merged field by field, with how sure the fleet is of each.

    python scripts/extract_entities.py                      # the sample email below
    python scripts/extract_entities.py email.txt --json     # only the merged JSON on stdout
    cat email.txt | python scripts/extract_entities.py - -p openai -p anthropic -p gemini

Start a fleet first with ``llmbus up``: with no API keys set its three mocks answer (their canned
extractions, ``variants`` in config/llmbus.toml, disagree the way real models do); with keys set
the real providers do. The same URL rules as ``llmbus``: ``--nats-url``, else
``$LLMBUS_NATS_URL``, else ``nats://127.0.0.1:4222``. Prints the merged fields as JSON on stdout
and, on stderr, a per-field table (value, confidence, who supports it, who dissents and with what,
or why the field abstained) and the route. Exit 0 on an answer, 1 on a failure (or no fleet), 2 on
bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys

import anyio

from bus.client import Client, default_url
from bus.errors import LlmError

SAMPLE = """From: Sarah Johnson <sarah.johnson@acme.com>
Subject: Invoice INV-2026-0042 — please process before the 3rd

Hi team,

Following our call, please find attached invoice INV-2026-0042 for USD 12,405 for the Q4 licences.
Payment is due on November 3, 2026; this one is high priority for us as it closes our quarter.

Best regards,
Sarah Johnson
Senior Procurement Manager, Acme Inc.
"""

SCHEMA = {
    "type": "object",
    "properties": {
        "contact_name": {"type": ["string", "null"], "x-llmbus-match": "person", "description": "the sender"},
        "company": {"type": ["string", "null"], "x-llmbus-match": "organization"},
        "job_title": {"type": ["string", "null"], "x-llmbus-match": "title"},
        "contact_email": {"type": ["string", "null"], "format": "email"},
        "amount": {"type": ["string", "null"], "x-llmbus-match": "money", "description": "with its currency"},
        "due_date": {"type": ["string", "null"], "format": "date"},
        "priority": {"enum": ["low", "normal", "high", "urgent", None]},
    },
    "required": ["contact_name", "company", "job_title", "contact_email", "amount", "due_date", "priority"],
}
INSTRUCTIONS = ("Extract these fields from the business email below. Use null for a field the email does not "
                "state. Give the amount with its currency.\n\n")


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Extract fields from a business email by consensus of several "
                                                 "providers; print the merged JSON and a per-field table.")
    parser.add_argument("email", nargs="?", default=None, help="a file with the email; - reads stdin "
                                                               "(default: a sample email)")
    parser.add_argument("--nats-url", default=None, help=f"the fleet's NATS URL (default: {default_url()})")
    parser.add_argument("--root", default=None, help="the fleet's subject root (default: $LLMBUS_ROOT or llm)")
    parser.add_argument("--provider", "-p", action="append", default=None,
                        help="a provider to ask (repeatable; default: the fleet's order)")
    parser.add_argument("--quorum", type=int, default=2, help="usable answers needed (default: 2)")
    parser.add_argument("--min-confidence", type=float, default=0.5,
                        help="a field below this posterior abstains (default: 0.5)")
    parser.add_argument("--budget-ms", "-b", type=int, default=30_000, help="time budget in ms (default: 30000)")
    parser.add_argument("--json", action="store_true", help="only the merged JSON (no table)")
    args = parser.parse_args(argv)
    if args.budget_ms <= 0:
        parser.error("--budget-ms must be above 0")
    if args.quorum < 2:
        parser.error("--quorum must be at least 2 for a consensus")
    if not 0.0 <= args.min_confidence <= 1.0:
        parser.error("--min-confidence must be in [0, 1]")
    if args.email is None:
        args.text = SAMPLE
    elif args.email == "-":
        args.text = sys.stdin.read()
    else:
        try:
            with open(args.email, encoding="utf-8") as f:
                args.text = f.read()
        except OSError as exc:
            parser.error(f"cannot read {args.email}: {exc}")
    if not args.text.strip():
        parser.error("the email is empty")
    return args


def table(report: dict) -> str:
    """The per-field table, plain text: value, confidence, support, dissent (or the reason)."""
    rows = [("field", "value", "conf", "support", "dissent / reason")]
    for name, f in report.items():
        dissent = "; ".join(f"{d['provider']}: {d['value']}" for d in f.get("dissent") or [])
        rows.append((name, "—" if f.get("value") is None else str(f["value"]), f"{f.get('confidence', 0.0):.2f}",
                     ", ".join(f.get("support") or []) or "—",
                     "; ".join(x for x in (dissent, f.get("reason") or "") if x) or "—"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    try:
        client = await Client(args.nats_url, root=args.root).__aenter__()
    except LlmError as exc:
        print(f"no llmbus fleet: {exc.failure.message} (start one with `llmbus up`)", file=sys.stderr)
        return 1
    try:
        try:
            answer = await client.ask(INSTRUCTIONS + args.text, strategy="consensus", schema=SCHEMA,
                                      providers=args.provider, budget_ms=args.budget_ms, cache="skip",
                                      strategy_options={"quorum": args.quorum, "min_confidence": args.min_confidence})
        except LlmError as exc:
            print(f"{exc.failure.kind}: {exc.failure.message}", file=sys.stderr)
            return 1
        print(json.dumps(answer.data, ensure_ascii=False, indent=2))
        if not args.json:
            print(table(answer.metadata.get("consensus") or {}), file=sys.stderr)
            print(f"confidence {answer.confidence:.2f} (the lowest field's); ask id {answer.id} "
                  f"(`llmbus feedback {answer.id} --field NAME=VALUE` to label a field)", file=sys.stderr)
            print("route: " + " → ".join(f"{s.provider} {s.outcome} {s.ms:.1f}ms" for s in answer.route),
                  file=sys.stderr)
        return 0
    finally:
        await client.__aexit__(None, None, None)


if __name__ == "__main__":
    sys.exit(anyio.run(main, arguments()))
