"""A seeded simulation of three LLMs extracting seven fields from business emails, scored for each
single provider, max-confidence, naive majority, our consensus and the Bayes optimum (the core is
``actors.pure.simulation``; ``llmbus bench --only ensembles`` prints the same table).

    python scripts/ensemble_sim.py [--items 2000] [--seed 1] [--json] [--write INPUT.jsonl GOLD.jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.pure.simulation import FIELDS, PROVIDERS, evaluate, simulate  # noqa: E402,F401


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--alternatives", type=float, default=2.0, help="wrong values the vote assumes")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write", nargs=2, type=Path, metavar=("INPUT", "GOLD"),
                        help="write the simulated answers (consensus_eval's input format) and the truth")
    args = parser.parse_args(argv)
    if args.write:
        items, truth = simulate(args.items, args.seed)
        with args.write[0].open("w", encoding="utf-8") as f:
            for it in items:
                f.write(json.dumps(it, ensure_ascii=False) + "\n")
        with args.write[1].open("w", encoding="utf-8") as f:
            for item, _ in truth:
                f.write(json.dumps({"id": item.id, "fields": {n: item.truth_form(n) for n in FIELDS}},
                                   ensure_ascii=False) + "\n")
        return 0
    result = evaluate(args.items, args.seed, args.alternatives)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    print(f"{result['items']} items x {result['fields']} fields, seed {result['seed']}; "
          f"consensus merge (EM + vote) {result['merge_seconds']} s")
    print(f"{'method':16} {'accuracy %':>14} {'coverage %':>14} {'false merges %':>16}")
    for name, s in result["methods"].items():
        print(f"{name:16} {s['accuracy'][0]:>7.2f} ± {s['accuracy'][1]:<4.2f} {s['coverage'][0]:>7.2f} ± "
              f"{s['coverage'][1]:<4.2f} {s['false_merges'][0]:>8.2f} ± {s['false_merges'][1]:<4.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
