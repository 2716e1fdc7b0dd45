"""Checking structured output against its JSON Schema, with messages a model can act on.

``problems(data, schema)`` lists what is wrong (empty: valid), each naming the path and the rule —
``$.score: 1.4 is greater than the maximum of 1`` — so a clarified retry can quote them back to the
model. Validators are built once per schema (jsonschema, Draft 2020-12, imported on first use).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=256)
def _validator(schema_json: str):
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(schema_json))


def problems(data: Any, schema: dict[str, Any], *, limit: int = 5) -> list[str]:
    validator = _validator(json.dumps(schema, sort_keys=True))
    found = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        found.append(f"{path}: {error.message}")
        if len(found) == limit:
            break
    return found
