"""The provider-side document step: Document parts → what this provider is sent.

Where it runs, and why: in the provider actor, just before the adapter converts messages
(``ProviderActor._serve_complete`` / ``_serve_stream``), not in the router. What a provider is
sent depends on that provider — extracted text, or the original PDF for those configured with
``native_documents`` — and so does whether it fits (each model has its own window and tokenizer);
only the provider knows both. The router and the strategies move the parts untouched, so asks
without documents pay nothing (one type scan of the parts in the provider, ~1 µs), and an ensemble
of N providers in one process extracts once (``cache.CACHE``). A document that cannot be read is a
``bad_request`` naming the file, which never trips a breaker and ends failover at once.

Fitting: the prompt's tokens are counted (``tokens.count_tokens``: tiktoken for OpenAI models when
the ``tokens`` extra is installed, the documented estimate otherwise — see ``tokens.py``) and
checked against the model's window (``tokens.context_window``: per model, overridable by the
provider's ``context_tokens``) less the answer's ``max_tokens``. Counting runs in a worker thread
when the text is long or tiktoken's encoding is not loaded yet (~0.4 s, once per process). Over
the window, ``document_overflow = "fail"`` (the default) answers ``context_length`` with the
documents' sizes; ``"truncate"`` cuts each extracted document in proportion to its size, at a
paragraph boundary, and says so inside the text the model reads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass

from bus import messages as m
from bus.errors import BadRequest, ContextLengthExceeded
from actors.documents.cache import CACHE, ExtractCache, content_key
from actors.documents.extract import HTML, PDF, DocumentError, Extracted, extract, kind_of
from actors.documents.tokens import context_window, count_tokens, counting, loaded

NATIVE_KINDS = {"openai": {"application/pdf"}, "anthropic": {"application/pdf"}, "gemini": {"application/pdf"}}
INLINE_THRESHOLD = 16 << 10  # extract off the event loop above this many bytes (a dense PDF page is ~5 ms)
INLINE_COUNT_CHARS = 64 << 10  # count tokens off the event loop above this many characters (~2 ms with tiktoken)


@dataclass(frozen=True, slots=True)
class DocumentOptions:
    kind: str = "mock"
    model: str = ""  # the model the request goes to (its window, its tokenizer)
    native: frozenset[str] = frozenset()  # media types sent as the original (where the API takes them)
    context_tokens: int | None = None  # None: no check
    overflow: str = "fail"  # "fail" | "truncate"


def options_for(config: object | None, model: str | None = None) -> DocumentOptions:
    """This provider's document options for a request to ``model`` (the ask's hint; None: the
    provider's configured model)."""
    kind = getattr(config, "kind", "mock") or "mock"
    model = model or getattr(config, "model", "") or ""
    native = frozenset(getattr(config, "native_documents", ()) or ()) & NATIVE_KINDS.get(kind, set())
    window = getattr(config, "context_tokens", None) or context_window(kind, model)
    return DocumentOptions(kind=kind, model=model, native=native, context_tokens=window,
                           overflow=getattr(config, "document_overflow", "fail") or "fail")


def has_documents(messages: list[m.Message]) -> bool:
    for msg in messages:
        content = msg.content
        if type(content) is not str:
            for part in content:
                if type(part) is m.Document:
                    return True
    return False


def render(name: str, extracted: Extracted) -> str:
    """The text a model reads for one document: its name, then its pages marked (provenance)."""
    if extracted.kind == PDF:
        body = "\n\n".join(f"[page {i}]\n{p.strip()}" for i, p in enumerate(extracted.pages, 1) if p.strip())
        head = f"[document {name}, PDF, {len(extracted.pages)} page{'s' if len(extracted.pages) != 1 else ''}]"
    else:
        body, head = extracted.text.strip(), f"[document {name}, {extracted.kind}]"
    return f"{head}\n{body}\n[end of document {name}]"


def document_bytes(part: m.Document) -> bytes:
    if part.data is None:
        return (part.text or "").encode()
    try:
        return base64.b64decode(part.data, validate=True)
    except (binascii.Error, ValueError):
        raise DocumentError(part.name or "(unnamed)", "data is not valid base64") from None


def extract_cached(data: bytes, part: m.Document, cache: ExtractCache = CACHE, key: str | None = None) -> Extracted:
    """The extracted text of a document's bytes, from the cache or extracted (and cached, a
    failure too); ``DocumentError`` naming the file. Blocking: safe in a worker thread."""
    key = key or content_key(data, part.media_type)
    found = cache.get(key)
    if found is None:
        try:
            found = extract(data, media_type=part.media_type, name=part.name)
        except DocumentError as exc:
            found = exc
        cache.put(key, found)
    if isinstance(found, DocumentError):
        raise found
    return found


async def extract_part(part: m.Document, cache: ExtractCache = CACHE) -> Extracted:
    """The extracted text of one Document part (cached by content hash), in a worker thread when
    it is big and not cached; ``BadRequest`` naming the file when it cannot be read."""
    try:
        data = document_bytes(part)
        key = content_key(data, part.media_type)
        if len(data) > INLINE_THRESHOLD and key not in cache:
            return await asyncio.to_thread(extract_cached, data, part, cache, key)
        return extract_cached(data, part, cache, key)
    except DocumentError as exc:
        raise BadRequest(str(exc)) from None


async def prepare(messages: list[m.Message], opts: DocumentOptions, *, reserve_tokens: int = 0,
                  cache: ExtractCache = CACHE) -> list[m.Message]:
    """``messages`` with every Document part made sendable to this provider: extracted text, or the
    original (validated) for a natively accepted media type; fitted to the window (see above)."""
    out: list[m.Message] = []
    texts: list[tuple[int, int, str]] = []  # (message index, part index, rendered text) of extracted documents
    other: list[str] = []  # the rest of the prompt's text (natively sent documents' text included)
    for mi, msg in enumerate(messages):
        if isinstance(msg.content, str):
            out.append(msg)
            other.append(msg.content)
            continue
        parts: list[m.Part] = []
        for part in msg.content:
            if type(part) is not m.Document:
                parts.append(part)
                if isinstance(part, m.Text):
                    other.append(part.text)
                continue
            name = part.name or "(unnamed)"
            if part.text is not None and not part.data and kind_of(part.media_type, part.name, b"") != HTML:
                if not part.text.strip():
                    raise BadRequest(f"document {name}: the document is empty")
                text = f"[document {name}]\n{part.text}\n[end of document {name}]"
                texts.append((mi, len(parts), text))
                parts.append(m.Document(text=text, media_type="text/plain", name=part.name))
                continue
            extracted = await extract_part(part, cache)
            if part.data is not None and part.media_type in opts.native:
                parts.append(part)  # the original, for the API to read itself
                other.append(extracted.text)  # still counts against the window
                continue
            text = render(name, extracted)
            texts.append((mi, len(parts), text))
            parts.append(m.Document(text=text, media_type="text/plain", name=part.name))
        out.append(m.Message(role=msg.role, content=parts))
    if opts.context_tokens is None:
        return out
    pieces = [t for _, _, t in texts] + ["\n".join(other)]
    if sum(len(p) for p in pieces) > INLINE_COUNT_CHARS or not loaded(opts.kind, opts.model):
        counts = await asyncio.to_thread(counts_of, pieces, opts)
    else:
        counts = counts_of(pieces, opts)
    return fit(out, texts, counts, opts, reserve_tokens)


def counts_of(pieces: list[str], opts: DocumentOptions) -> list[int]:
    return [count_tokens(p, opts.kind, opts.model) for p in pieces]


def fit(messages: list[m.Message], texts: list[tuple[int, int, str]], counts: list[int],
        opts: DocumentOptions, reserve_tokens: int) -> list[m.Message]:
    """``counts``: the tokens of each extracted document, then of the rest of the prompt."""
    window = opts.context_tokens or 0
    doc_tokens, other = counts[:-1], counts[-1]
    need = other + sum(doc_tokens) + reserve_tokens
    if need <= window:
        return messages
    room = window - other - reserve_tokens
    sizes = ", ".join(f"{messages[mi].content[pi].name or '(unnamed)'} ~{n} tokens"  # type: ignore[union-attr]
                      for (mi, pi, _), n in zip(texts, doc_tokens))
    if opts.overflow != "truncate" or room < 64 * max(1, len(texts)) or not texts:
        raise ContextLengthExceeded(
            f"the documents do not fit the model's window: ~{need} tokens needed ({sizes}; "
            f"~{other} for the rest of the prompt, {reserve_tokens} reserved for the answer), "
            f"window {window} tokens (document_overflow = \"{opts.overflow}\"; counted by "
            f"{counting(opts.kind, opts.model)})")
    share = room / sum(doc_tokens)
    for (mi, pi, text), n in zip(texts, doc_tokens):
        keep = int(len(text) * share * 0.98) - 120  # room for the note below
        cut = text.rfind("\n\n", 0, keep)
        cut = cut if cut > keep // 2 else max(0, keep)
        note = f"\n[… truncated to fit the model's window: {cut} of {len(text)} characters kept]"
        content = list(messages[mi].content)  # type: ignore[arg-type]
        old = content[pi]
        content[pi] = m.Document(text=text[:cut] + note, media_type="text/plain", name=old.name)  # type: ignore[union-attr]
        messages[mi] = m.Message(role=messages[mi].role, content=content)
    return messages
