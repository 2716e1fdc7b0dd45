"""Merge recorded provider answers offline, with the consensus strategy's own merge code.

    python scripts/consensus_eval.py INPUT.jsonl OUTPUT.jsonl [--schema SCHEMA.json] [--min-confidence 0]

Each input line: ``{"id": …, "responses": {"<provider>": {"fields": {"<field>": {"value": str | null,
"confidence": float | null}} | null, "error": …}}}`` (other keys ignored; ``fields`` null: the call
failed, the provider is absent; a null value: it abstained on that field). Each output line:
``{"id": …, "fields": {"<field>": value | null}, "members": {"<field>": [provider, …]}}``, where
members are the providers whose answers formed the emitted value.

Field kinds come from ``--schema`` (its properties, as the strategy reads them), else from each
field's name and the values seen for it in the file. Reliability and calibration are learned from
the file itself without labels (EM, ``actors.pure.vote.learn``), then every item is merged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.pure.recorded import answers_of, field_kinds, run, votes_of  # noqa: E402,F401 (the merge's core)
from actors.pure.vote import VoteOptions  # noqa: E402


def read(path: Path) -> list[dict[str, Any]]:
    items = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                print(f"{path}:{n}: skipped, not JSON ({exc})", file=sys.stderr)
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--schema", type=Path, help="JSON Schema of the fields (else kinds from names and values)")
    parser.add_argument("--min-confidence", type=float, default=0.0, help="abstain below this posterior")
    parser.add_argument("--day-first", action="store_true", help="read an ambiguous a/b/yyyy date as day/month")
    parser.add_argument("--alternatives", type=float, default=4.0)
    parser.add_argument("--iterations", type=int, default=8, help="EM rounds for reliability and calibration")
    parser.add_argument("--report", action="store_true", help="print the kinds and learned reliabilities")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    items = read(args.input)
    for item in items:
        item["_answers"] = answers_of(item)
    schema = json.loads(args.schema.read_text(encoding="utf-8")) if args.schema else None
    kinds = field_kinds(items, schema)
    options = VoteOptions(min_confidence=args.min_confidence, day_first=args.day_first,
                          alternatives=args.alternatives)
    out, reliability = run(items, kinds, options, args.iterations)
    with args.output.open("w", encoding="utf-8") as f:
        for row in out:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    if args.report:
        print(json.dumps({"kinds": kinds, "reliability": reliability.table()}, indent=2), file=sys.stderr)
    print(f"{len(out)} items, {len(kinds)} fields merged in {time.perf_counter() - started:.2f} s -> {args.output}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
