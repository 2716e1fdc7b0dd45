"""Names that come from outside and end up in a subject, a header or a KV key, checked at the edge.

A provider or tier name becomes a subject token (``<root>.provider.<name>.complete``,
``<root>.events.health.<name>``) or a KV key (``state.<name>``, ``strategy.tier.<tier>``); an ask id
travels in the ``Llm-Ask-Id`` header. nats-server closes a connection whose control line (subject +
headers) exceeds 4 KiB, and a KV key with a NUL or a space is refused, so one forged name could cut
an actor off or make a consumer fail on every redelivery. Every such name is checked once, where
it enters (an endpoint's handler, an event consumer), against a charset and a length:

- ``token``: one NATS subject token, ``[A-Za-z0-9_-]``, 1..64 characters (providers, tiers, namespaces);
- ``label``: printable ASCII without spaces, 1..128 characters (ask ids, call ids, users, models).

``problem(value, what, kind)`` says what is wrong (a sentence for a ``bad_request``), or None.
"""

from __future__ import annotations

import re

TOKEN_MAX = 64
LABEL_MAX = 128
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,%d}\Z" % TOKEN_MAX)
_LABEL = re.compile(r"[!-~]{1,%d}\Z" % LABEL_MAX)  # printable ASCII, no space: safe in a header and a subject
_RULES = {
    "token": (_TOKEN, f"1 to {TOKEN_MAX} of [A-Za-z0-9_-]"),
    "label": (_LABEL, f"1 to {LABEL_MAX} printable ASCII characters without spaces"),
}


def problem(value: object, what: str, kind: str = "token") -> str | None:
    """None when ``value`` is a valid name of ``kind`` ("token" or "label"), else why it is not."""
    pattern, rule = _RULES[kind]
    if type(value) is str and pattern.match(value):
        return None
    shown = repr(value) if not isinstance(value, str) or len(value) <= 40 else repr(value[:40]) + f"… ({len(value):,} chars)"
    return f"{what} {shown} must be {rule}"


def is_token(value: object) -> bool:
    return type(value) is str and _TOKEN.match(value) is not None


def is_label(value: object) -> bool:
    return type(value) is str and _LABEL.match(value) is not None
