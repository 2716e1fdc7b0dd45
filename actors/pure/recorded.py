"""Recorded provider answers, merged offline with the consensus strategy's own merge code
(``scripts/consensus_eval.py`` and the simulation of ``llmbus bench --only ensembles`` use it).

An item is ``{"id": …, "responses": {"<provider>": {"fields": {"<field>": {"value": str | null,
"confidence": float | null}} | null, …}}}`` (other keys ignored; ``fields`` null: the call failed,
the provider is absent; a null value: it abstained on that field). ``answers_of`` reads one into
provider -> field -> (value, confidence); ``run`` learns reliability and calibration from the items
themselves without labels (EM, ``actors.pure.vote.learn``) and then merges every item: per item
``{"id", "fields": {field: value | null}, "members": {field: [provider, …]}}``.
"""

from __future__ import annotations

from typing import Any

from actors.pure import canonical
from actors.pure.vote import Vote, VoteOptions, learn, merge_field


def _entry(entry: Any) -> tuple[Any, float | None]:
    """(value, confidence) of one provider's field, in whatever shape it came."""
    if isinstance(entry, dict):
        conf = entry.get("confidence")
        conf = float(conf) if isinstance(conf, (int, float)) and not isinstance(conf, bool) else None
        return entry.get("value"), conf
    return entry, None


def answers_of(item: dict[str, Any]) -> dict[str, dict[str, tuple[Any, float | None]]]:
    """provider -> field -> (value, confidence), for the providers that answered."""
    out = {}
    responses = item.get("responses") or {}
    if not isinstance(responses, dict):
        return out
    for provider, response in responses.items():
        fields = response.get("fields") if isinstance(response, dict) else None
        if isinstance(fields, dict):
            out[str(provider)] = {str(k): _entry(v) for k, v in fields.items()}
    return out


def field_kinds(items: list[dict], schema: dict[str, Any] | None) -> dict[str, str]:
    kinds = canonical.kinds_of(schema) if schema else {}
    seen: dict[str, list[str]] = {}
    for item in items:
        for fields in item["_answers"].values():
            for name, (value, _) in fields.items():
                values = seen.setdefault(name, [])
                if isinstance(value, str) and len(values) < 400:
                    values.append(value)
    for name, values in seen.items():
        if name not in kinds:
            kinds[name] = canonical.infer_kind(name, values)
    return kinds


def votes_of(item: dict, name: str) -> list[Vote]:
    return [Vote(p, fields.get(name, (None, None))[0], fields.get(name, (None, None))[1])
            for p, fields in item["_answers"].items()]


def run(items: list[dict], kinds: dict[str, str], options: VoteOptions, iterations: int = 8) -> tuple[list[dict], Any]:
    prepared = [{name: (kind, votes_of(item, name)) for name, kind in kinds.items()} for item in items]
    reliability = learn(prepared, iterations=iterations, options=options)
    out = []
    for item, fields in zip(items, prepared):
        values, members = {}, {}
        for name, (kind, votes) in fields.items():
            result, _ = merge_field(name, kind, votes, reliability, options)
            value = result.value
            values[name] = value if value is None or isinstance(value, str) else str(value)
            members[name] = result.members if value is not None else []
        out.append({"id": item.get("id"), "fields": values, "members": members})
    return out, reliability
