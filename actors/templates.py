"""Response templates: an Answer rendered through Jinja2 (``--template NAME|PATH``).

Shipped templates are ``config/templates/answers/<name>.*.j2`` (markdown, plain, table); any other
value is a path to the user's own file. Every template runs in Jinja2's ``SandboxedEnvironment``
(no attribute access to Python internals, no imports) with autoescape off (the output is Markdown
or text, not HTML). The context is the Answer's fields as plain data (``text``, ``data``,
``providers``, ``strategy``, ``cost_usd``, ``metadata``…), plus ``sources`` (``metadata.sources`` of
map → reduce) and ``title``. The filter ``markdown_table`` renders structured output: a list of
objects as one table, an object as a field/value table whose list-of-object fields become tables
of their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from bus import messages as m

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "templates" / "answers"


class TemplateError(ValueError):
    pass


def _cell(value: Any) -> str:
    if isinstance(value, (dict, list)):
        value = msgspec.json.encode(value).decode()
    return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")


def markdown_table(data: Any) -> str:
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        cols = list(dict.fromkeys(k for r in data for k in r))
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in data]
        return "\n".join(lines)
    if isinstance(data, dict):
        lines = ["| field | value |", "|---|---|"]
        nested = []
        for k, v in data.items():
            if isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
                nested.append(f"\n**{k}**\n\n{markdown_table(v)}")
            else:
                lines.append(f"| {_cell(k)} | {_cell(v)} |")
        return "\n".join(lines) + "".join("\n" + n for n in nested)
    return _cell(data)


def source_of(name_or_path: str) -> tuple[str, str]:
    """(template text, where it came from)."""
    if name_or_path.isidentifier():
        for path in sorted(SHIPPED.glob(f"{name_or_path}.*.j2")):
            return path.read_text(encoding="utf-8"), str(path)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8"), str(path)
    names = sorted(p.name.split(".")[0] for p in SHIPPED.glob("*.j2"))
    raise TemplateError(f"no template {name_or_path!r}: give one of {', '.join(names)} or a file path")


def render(answer: m.Answer, name_or_path: str, *, title: str = "") -> str:
    from jinja2 import TemplateError as JinjaError
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    text, where = source_of(name_or_path)
    env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["markdown_table"] = markdown_table
    context = {k: msgspec.to_builtins(v) for k, v in msgspec.structs.asdict(answer).items()}
    context.update(sources=context["metadata"].get("sources") or [], title=title)
    try:
        return env.from_string(text).render(**context)
    except JinjaError as exc:
        raise TemplateError(f"template {where}: {type(exc).__name__}: {exc}") from None
