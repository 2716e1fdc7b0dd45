"""Analysis patterns: named prompt packs (``config/patterns/<name>.toml``, plus the user's own
``patterns_dir``, whose files win on a name clash).

A pattern has a ``description`` (``llmbus patterns``), a ``worker`` prompt (the system message every
worker gets), a ``synthesis`` prompt (the synthesizer's template: ``{question}`` and ``{candidates}``
are filled in, as in ``config/templates/synthesis.md``), an optional output ``schema`` (JSON text)
and ``min_documents`` (compare needs two). ``apply`` turns one into the ask's fields: the worker
prompt is the first message (synthesis's candidates and map_reduce's chunk readers get it), and the
synthesis prompt goes to the merging step of ``synthesis`` (``template_body``) or ``map_reduce``
(``reduce_template``, ``{candidates}`` being the parts' answers); other strategies use the worker
prompt alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from bus import messages as m

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "patterns"
# the strategy option that takes a pattern's synthesis prompt, per merging strategy
MERGE_OPTION = {"synthesis": "template_body", "map_reduce": "reduce_template"}


class Pattern(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    description: str
    worker: str
    synthesis: str = ""
    schema: str = ""  # JSON Schema as JSON text
    min_documents: int = 0
    name: str = ""
    path: str = ""

    def schema_dict(self) -> dict[str, Any] | None:
        return json.loads(self.schema) if self.schema.strip() else None


class PatternError(ValueError):
    pass


def load(directory: Path) -> dict[str, Pattern]:
    found: dict[str, Pattern] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            p = msgspec.toml.decode(path.read_bytes(), type=Pattern)
            p.schema_dict()
        except (msgspec.ValidationError, msgspec.DecodeError, json.JSONDecodeError) as exc:
            raise PatternError(f"pattern {path}: {exc}") from None
        found[path.stem] = msgspec.structs.replace(p, name=path.stem, path=str(path))
    return found


def patterns(user_dir: str | None = None) -> dict[str, Pattern]:
    found = load(SHIPPED)
    if user_dir:
        found.update(load(Path(user_dir).expanduser()))
    return found


def apply(pattern: Pattern, messages: list[m.Message], *, strategy: str | None,
          schema: dict[str, Any] | None) -> tuple[list[m.Message], dict[str, Any] | None, dict[str, Any] | None]:
    """(messages with the worker prompt first, the schema, strategy options) for an ask."""
    docs = sum(1 for msg in messages if not isinstance(msg.content, str)
               for p in msg.content if isinstance(p, m.Document))
    if docs < pattern.min_documents:
        raise PatternError(f"pattern {pattern.name} needs at least {pattern.min_documents} documents (got {docs})")
    out = [m.Message(role="system", content=pattern.worker), *messages]
    key = MERGE_OPTION.get(strategy or "")
    options = {key: pattern.synthesis} if key and pattern.synthesis else None
    return out, schema if schema is not None else pattern.schema_dict(), options
