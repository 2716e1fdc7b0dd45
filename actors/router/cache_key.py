"""The cache key of an ask: a stable hash of what decides its answer, and of nothing else.

In the key (a change makes another entry):

- the namespace;
- the messages, in order: each role, and its content with whitespace normalised (every run of
  whitespace becomes one space, the ends are stripped). A plain string and a list of Text parts
  with the same text are the same content (adjacent Text parts are joined first); other parts
  (images, documents, tool calls and results) count as they are;
- the JSON Schema and the tools (the order of keys in their objects does not count);
- the params that change an answer: temperature, max_tokens, top_p, stop, model (one left unset
  and one set to its default are the same);
- the strategy and the provider order the router will use: the ask's, else the router's defaults
  (so an ask that names the default strategy and one that names none share an entry).

Not in the key (the same answer serves them all): the ask id, user, tier (it changes an answer only
through the providers it picks, which are in the key), labels, budget, stream, the cache mode,
``max_cost_usd``, and which providers' breakers are open right now. Letter case counts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import msgspec

from bus import messages as m

VERSION = 1  # bump when what goes into the key changes: old entries then simply miss
_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def _content(content: str | list[m.Part]) -> list[Any]:
    parts: list[Any] = []
    texts: list[str] = []

    def flush() -> None:
        text = normalise_text("".join(texts))
        if text:
            parts.append({"type": "Text", "text": text})
        texts.clear()

    for part in [m.Text(text=content)] if isinstance(content, str) else content:
        if isinstance(part, m.Text):
            texts.append(part.text)
            continue
        flush()
        parts.append(msgspec.to_builtins(part))
    flush()
    return parts


def _params(params: m.Params) -> m.Params:
    """As a peer would decode them: an int given for a float field (``temperature=1``) becomes 1.0."""
    return _decode_params(msgspec.json.encode(params))


_decode_params = msgspec.json.Decoder(m.Params).decode


def cache_key(ask: m.Ask, *, namespace: str, strategy: str, providers: Sequence[str]) -> str:
    """The key of ``ask`` in ``namespace`` when run by ``strategy`` over ``providers``: 32 hex
    digits (128 bits of SHA-256), also usable as a NATS subject token and a KV key."""
    doc = {
        "v": VERSION,
        "namespace": namespace,
        "messages": [[msg.role, _content(msg.content)] for msg in ask.messages],
        "schema": ask.schema,
        "tools": msgspec.to_builtins(ask.tools),
        "params": msgspec.to_builtins(_params(ask.params)),  # omit_defaults: unset and default alike
        "strategy": strategy,
        "providers": list(providers),
    }
    return hashlib.sha256(msgspec.json.encode(doc, order="sorted")).hexdigest()[:32]
