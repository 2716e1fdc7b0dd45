"""The provider-side document step: Document parts → what this provider is sent.

Where it runs, and why: in the provider actor, just before the adapter converts messages
(``ProviderActor._serve_complete`` / ``_serve_stream``), not in the router. What a provider is
sent depends on that provider — extracted text, or the original PDF for those configured with
``native_documents`` — and so does whether it fits (each model has its own window and tokenizer);
only the provider knows both. The router and the strategies move the parts untouched, so asks
without documents pay nothing (one type scan of the parts in the provider, ~1 µs), and an ensemble
of N providers in one process extracts once (``cache.CACHE``). A document that cannot be read is a
``bad_request`` naming the file, which never trips a breaker and ends failover at once.

Fitting: the prompt's tokens are estimated (``estimate_tokens``: no tokenizer is downloaded at run
time — tiktoken fetches its BPE files from the network on first use, which this project cannot
rely on) and checked against the provider's window less the answer's ``max_tokens``. Over it,
``document_overflow = "fail"`` (the default) answers ``context_length`` with the documents' sizes;
``"truncate"`` cuts each extracted document in proportion to its size, at a paragraph boundary, and
says so inside the text the model reads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass

from bus import messages as m
from bus.errors import BadRequest, ContextLengthExceeded
from actors.documents.cache import CACHE, ExtractCache, content_key
from actors.documents.extract import HTML, PDF, DocumentError, Extracted, extract, html_to_text, kind_of

# Characters per token, by provider kind: OpenAI's and Google's documented rule of thumb is ~4
# characters a token for English; Anthropic's tokenizer yields more tokens for the same text, so
# 3.5 keeps its estimate on the safe side. The mock counts like OpenAI.
CHARS_PER_TOKEN = {"openai": 4.0, "gemini": 4.0, "anthropic": 3.5, "mock": 4.0}
# A model's window when the provider's config names none (the current default models' windows).
CONTEXT_TOKENS = {"openai": 128_000, "anthropic": 200_000, "gemini": 1_048_576}
NATIVE_KINDS = {"openai": {"application/pdf"}, "anthropic": {"application/pdf"}, "gemini": {"application/pdf"}}
INLINE_THRESHOLD = 16 << 10  # extract off the event loop above this many bytes (a dense PDF page is ~5 ms)


@dataclass(frozen=True, slots=True)
class DocumentOptions:
    kind: str = "mock"
    native: frozenset[str] = frozenset()  # media types sent as the original (where the API takes them)
    context_tokens: int | None = None  # None: no check
    overflow: str = "fail"  # "fail" | "truncate"


def options_for(config: object | None) -> DocumentOptions:
    kind = getattr(config, "kind", "mock") or "mock"
    native = frozenset(getattr(config, "native_documents", ()) or ()) & NATIVE_KINDS.get(kind, set())
    window = getattr(config, "context_tokens", None) or CONTEXT_TOKENS.get(kind)
    return DocumentOptions(kind=kind, native=native, context_tokens=window,
                           overflow=getattr(config, "document_overflow", "fail") or "fail")


def estimate_tokens(text: str, kind: str = "openai") -> int:
    return int(len(text) / CHARS_PER_TOKEN.get(kind, 4.0)) + 1


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


async def extract_part(part: m.Document, cache: ExtractCache = CACHE) -> Extracted:
    """The extracted text of one Document part (cached by content hash); ``BadRequest`` naming the
    file when it cannot be read."""
    name = part.name or "(unnamed)"
    if part.data is not None:
        try:
            data = base64.b64decode(part.data, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"document {name}: data is not valid base64") from None
    else:
        data = (part.text or "").encode()
    key = content_key(data, part.media_type)
    found = cache.get(key)
    if found is None:
        try:
            if len(data) > INLINE_THRESHOLD:
                found = await asyncio.to_thread(extract, data, media_type=part.media_type, name=part.name)
            else:
                found = extract(data, media_type=part.media_type, name=part.name)
        except DocumentError as exc:
            found = exc
        cache.put(key, found)
    if isinstance(found, DocumentError):
        raise BadRequest(str(found))
    return found


async def prepare(messages: list[m.Message], opts: DocumentOptions, *, reserve_tokens: int = 0,
                  cache: ExtractCache = CACHE) -> list[m.Message]:
    """``messages`` with every Document part made sendable to this provider: extracted text, or the
    original (validated) for a natively accepted media type; fitted to the window (see above)."""
    out: list[m.Message] = []
    texts: list[tuple[int, int, str]] = []  # (message index, part index, rendered text) of extracted documents
    other_chars = 0
    for mi, msg in enumerate(messages):
        if isinstance(msg.content, str):
            out.append(msg)
            other_chars += len(msg.content)
            continue
        parts: list[m.Part] = []
        for part in msg.content:
            if type(part) is not m.Document:
                parts.append(part)
                other_chars += len(part.text) if isinstance(part, m.Text) else 0
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
                other_chars += len(extracted.text)  # still counts against the window
                continue
            text = render(name, extracted)
            texts.append((mi, len(parts), text))
            parts.append(m.Document(text=text, media_type="text/plain", name=part.name))
        out.append(m.Message(role=msg.role, content=parts))
    if opts.context_tokens is None:
        return out
    return fit(out, texts, other_chars, opts, reserve_tokens)


def fit(messages: list[m.Message], texts: list[tuple[int, int, str]], other_chars: int,
        opts: DocumentOptions, reserve_tokens: int) -> list[m.Message]:
    window = opts.context_tokens or 0
    doc_tokens = [estimate_tokens(t, opts.kind) for _, _, t in texts]
    other = int(other_chars / CHARS_PER_TOKEN.get(opts.kind, 4.0)) + 1
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
            f"window {window} tokens (document_overflow = \"{opts.overflow}\")")
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
