"""A small value that validates against a JSON Schema, made from the schema alone: deterministic.

The mock provider answers a structured ask with it, and the loopback wire server
(``actors.fakes.auto``) answers structured requests with it, so both give data that the ask's own
schema accepts (Draft 2020-12, as ``actors.providers.remote`` validates).

    object    every declared property (required ones first), each by its own schema; more keys
              ("key1", …) only to reach minProperties
    array     max(1, minItems) items, at most maxItems (prefixItems first, then items); distinct
              items when uniqueItems asks for more than one
    string    ``text`` ("example" unless the caller gives one, e.g. the mock: the prompt), cut to
              maxLength and padded to minLength; formats date, date-time, time, duration, email,
              idn-email, hostname, idn-hostname, ipv4, ipv6, uri, uri-reference, iri, iri-reference,
              uuid, json-pointer, regex get a valid example; a pattern is met when one of a few
              candidates matches it (there is no general regex inverse: otherwise the value will
              not match)
    integer   the smallest value within minimum/exclusiveMinimum/maximum/exclusiveMaximum that is
    number    a multiple of multipleOf, 0 when unbounded (a number between exclusive bounds: the
              midpoint)
    boolean   false;  null: null
    const, enum          the const, the first enum value
    anyOf, oneOf         the first branch (oneOf: the first whose example no other branch accepts is
                         not searched for — branches that overlap may give an invalid example)
    allOf                the branches merged (properties, required, bounds: the last one wins)
    $ref                 local references (``#/$defs/…``, ``#/definitions/…``), to a bounded depth
    type: [..]           the first type that is not "null" (null when it is the only one)

Keywords it does not read (not, if/then/else, dependentSchemas, contains, …) are not honoured.
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_DEPTH = 32

FORMATS: dict[str, str] = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "duration": "P1D",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "iri": "https://example.com/",
    "iri-reference": "https://example.com/",
    "uri-template": "https://example.com/{id}",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "json-pointer": "/example",
    "relative-json-pointer": "0",
    "regex": "^example$",
}
_PATTERN_CANDIDATES = ("example", "", "a", "A", "0", "1", "abc", "ABC", "a1", "example@example.com", "2024-01-01")
_TYPE_ORDER = ("object", "array", "string", "integer", "number", "boolean", "null")


def example_for(schema: Any, *, text: str = "example") -> Any:
    """A value that ``schema`` accepts (see the module docstring for what is honoured)."""
    return _example(schema, root=schema if isinstance(schema, dict) else {}, text=text, depth=0, variant=0)


def _example(schema: Any, *, root: dict, text: str, depth: int, variant: int) -> Any:
    if schema is True or schema is None:
        return text
    if schema is False or not isinstance(schema, dict) or depth > MAX_DEPTH:
        return None
    if "$ref" in schema:
        target = _resolve(root, schema["$ref"])
        if target is not None:
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return _example(_merge([target, rest]) if rest else target, root=root, text=text, depth=depth + 1,
                            variant=variant)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][variant % len(schema["enum"])]
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged = _merge([*schema["allOf"], {k: v for k, v in schema.items() if k != "allOf"}])
        return _example(merged, root=root, text=text, depth=depth + 1, variant=variant)
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            rest = {k: v for k, v in schema.items() if k != key}
            first = branches[0] if not rest else _merge([rest, branches[0]])
            return _example(first, root=root, text=text, depth=depth + 1, variant=variant)
    kind = _type_of(schema)
    if kind == "object":
        return _object(schema, root=root, text=text, depth=depth)
    if kind == "array":
        return _array(schema, root=root, text=text, depth=depth)
    if kind == "string":
        return _string(schema, text, variant)
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer", variant=variant)
    if kind == "boolean":
        return variant % 2 == 1
    return None  # "null"


def _type_of(schema: dict) -> str:
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in _TYPE_ORDER if t in typ and t != "null"), "null" if "null" in typ else None)
    if isinstance(typ, str):
        return typ
    # no type: guess it from the keywords present
    if any(k in schema for k in ("properties", "required", "additionalProperties", "minProperties")):
        return "object"
    if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
        return "number"
    return "string"


def _object(schema: dict, *, root: dict, text: str, depth: int) -> dict[str, Any]:
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = [k for k in schema.get("required", []) if isinstance(k, str)]
    extra = schema.get("additionalProperties", True)
    out: dict[str, Any] = {}
    for name in [*required, *(k for k in props if k not in required)]:
        if name in out:
            continue
        sub = props.get(name, extra if name not in props else True)
        out[name] = _example(sub, root=root, text=text, depth=depth + 1, variant=0)
    cap = schema.get("maxProperties")
    if isinstance(cap, int) and len(out) > cap:  # keep the required ones first
        out = dict(list(out.items())[:max(cap, len(required))])
    need = schema.get("minProperties", 0)
    n = 1
    while isinstance(need, int) and len(out) < need and extra is not False and n < need + 100:
        key = f"key{n}"
        if key not in out:
            out[key] = _example(extra, root=root, text=text, depth=depth + 1, variant=0)
        n += 1
    return out


def _array(schema: dict, *, root: dict, text: str, depth: int) -> list[Any]:
    low = schema.get("minItems", 0)
    high = schema.get("maxItems")
    n = max(1, low if isinstance(low, int) else 0)
    if isinstance(high, int):
        n = min(n, high)
    prefix = schema.get("prefixItems") if isinstance(schema.get("prefixItems"), list) else []
    items = schema.get("items", True)
    if items is False:
        n = min(n, len(prefix))
    unique = bool(schema.get("uniqueItems"))
    out: list[Any] = []
    for i in range(n):
        sub = prefix[i] if i < len(prefix) else items
        out.append(_example(sub, root=root, text=text, depth=depth + 1, variant=i if unique else 0))
    return out


def _string(schema: dict, text: str, variant: int) -> str:
    fmt = schema.get("format")
    fmt = fmt if isinstance(fmt, str) and fmt in FORMATS else None
    value = _varied(fmt, variant) if fmt else (f"{text}{variant}" if variant else text)
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and not _matches(pattern, value):
        value = next((c for c in (text, *_PATTERN_CANDIDATES) if _matches(pattern, c)), value)
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if isinstance(high, int) and len(value) > high:
        tail = str(variant) if variant and not fmt and len(str(variant)) <= high else ""
        value = value[:high - len(tail)] + tail
    if isinstance(low, int) and len(value) < low:
        value = value + "x" * (low - len(value))
    return value


def _varied(fmt: str, n: int) -> str:
    """The example of ``fmt``, the ``n``-th of distinct ones (for uniqueItems)."""
    if not n:
        return FORMATS[fmt]
    varied = {
        "date": f"2024-01-{1 + n % 28:02d}",
        "date-time": f"2024-01-{1 + n % 28:02d}T00:00:00Z",
        "time": f"00:{n % 60:02d}:00Z",
        "duration": f"P{1 + n}D",
        "email": f"user{n}@example.com",
        "idn-email": f"user{n}@example.com",
        "hostname": f"host{n}.example.com",
        "idn-hostname": f"host{n}.example.com",
        "ipv4": f"192.0.2.{1 + n % 254}",
        "ipv6": f"2001:db8::{1 + n % 65535:x}",
        "uuid": f"00000000-0000-4000-8000-{n:012d}",
        "json-pointer": f"/example{n}",
        "relative-json-pointer": str(n),
        "regex": f"^example{n}$",
    }
    return varied.get(fmt, FORMATS[fmt].rstrip("/") + f"/{n}")


def _matches(pattern: str, value: str) -> bool:
    try:
        return re.search(pattern, value) is not None
    except re.error:
        return False


def _number(schema: dict, *, integer: bool, variant: int) -> int | float:
    lo, lo_open = _bound(schema, "minimum", "exclusiveMinimum", max)
    hi, hi_open = _bound(schema, "maximum", "exclusiveMaximum", min)
    step = schema.get("multipleOf")
    step = step if isinstance(step, int | float) and not isinstance(step, bool) and step > 0 else None
    down = lo is None and hi is not None  # only an upper bound: count down from it (or from 0)
    if integer or step is not None:
        unit = _integer_step(step) if integer else step
        if lo is not None:
            k = math.ceil(lo / unit) if unit else math.ceil(lo)
            if lo_open and (k * (unit or 1)) <= lo:
                k += 1
        elif hi is not None:
            k = math.floor(hi / unit) if unit else math.floor(hi)
            if hi_open and (k * (unit or 1)) >= hi:
                k -= 1
            k = min(0, k)
        else:
            k = 0
        k = k - variant if down else k + variant
        return _multiple(k, unit, integer)
    if lo is None and hi is None:
        return variant
    if down:
        return min(0, hi - 1 if hi_open else hi) - variant
    base = lo + 1 if lo_open and hi is None else (lo + hi) / 2 if lo_open else lo
    if variant:
        base = base + variant if hi is None else base + (hi - base) * variant / (2 * (variant + 1))
    return int(base) if isinstance(base, float) and base.is_integer() and abs(base) < 2**53 else base


def _integer_step(step: float | None) -> int | None:
    """The smallest positive integer that is a multiple of ``step`` (for an integer schema)."""
    if step is None or float(step).is_integer():
        return None if step is None else int(step)
    for k in range(2, 1001):
        if float(step * k).is_integer():
            return int(step * k)
    return None


def _multiple(k: int, unit: int | float | None, integer: bool) -> int | float:
    if integer:
        return int(k * (unit or 1))
    value = k * unit
    # a float multipleOf is checked as value / multipleOf == an integer, in floats: find a k for which
    # that holds exactly (k = 0 always does)
    for candidate in (k, *(k + i for i in range(1, 50)), 0):
        value = candidate * unit
        if (value / unit).is_integer():
            break
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else value


def _bound(schema: dict, closed: str, open_: str, pick) -> tuple[float | None, bool]:
    """(the tightest bound, whether it is exclusive) from e.g. minimum and exclusiveMinimum."""
    candidates = []
    for key, is_open in ((closed, False), (open_, True)):
        v = schema.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            candidates.append((v, is_open))
    if not candidates:
        return None, False
    best = pick(v for v, _ in candidates)
    return best, any(is_open for v, is_open in candidates if v == best)


def _resolve(root: dict, ref: Any) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref[1:].split("/")[1:] if ref != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _merge(schemas: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in schemas:
        if not isinstance(s, dict):
            continue
        for key, value in s.items():
            if key == "properties" and isinstance(value, dict):
                out["properties"] = {**out.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                out["required"] = [*out.get("required", []), *(v for v in value if v not in out.get("required", []))]
            elif key in ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties") and key in out:
                out[key] = max(out[key], value)
            elif key in ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties") and key in out:
                out[key] = min(out[key], value)
            else:
                out[key] = value
    return out
