"""Map → reduce over documents too long for one call (issue 16).

``begin`` extracts the ask's Document parts (``actors/documents``: pure, cached by content hash)
and cuts them on structure with overlap (``chunks.chunk``). Each chunk is asked the question on
its own ("map"), at most ``concurrency`` calls open at once, round-robin over the candidates other
than the reducer; then the reducer merges the partial answers, each labelled with its source and
pages ("reduce"). ``metadata.sources`` lists every chunk: document, pages, the provider that read
it, and whether it answered. A chunk whose call failed is left out of the reduce and marked
``ok: false``; none answering is ``Failure(all_failed)``. An ask without documents is one call.
A document that cannot be read is ``bad_request`` naming it, before any call.
"""

from __future__ import annotations

import base64
import binascii

import msgspec

from bus import messages as m
from actors.documents.cache import CACHE, content_key
from actors.documents.chunks import Chunk, chunk
from actors.documents.extract import DocumentError, extract
from actors.strategies.base import Action, Call, Deadline, Done, Event, Policy, Reply, register

REDUCE = "reduce"
MAP_PROMPT = ("This is part {i} of {n} of the documents ({label}).\n\n{text}\n\n---\n"
              "Using only this part, answer: {question}\nIf this part says nothing relevant, answer \"nothing relevant\".")
REDUCE_PROMPT = ("Several readers each read one part of the documents and answered the question from it. "
                 "Merge their answers into one complete answer. Cite parts as (source, pages) where it helps; "
                 "ignore parts that found nothing relevant.\n\nQuestion: {question}\n\n{answers}")


class MapReduceOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    chunk_tokens: int = 3000  # the most one map call reads (estimated tokens)
    overlap_tokens: int = 200  # each chunk repeats this much of the one before
    concurrency: int = 4  # map calls open at once
    reducer: str = ""  # the provider that merges ("" : the first candidate)
    reserve: float = 0.3  # share of the budget kept for the reduce

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.chunk_tokens <= self.overlap_tokens or not 0.0 <= self.reserve < 1.0:
            raise ValueError("concurrency ≥ 1, chunk_tokens > overlap_tokens and reserve in [0, 1)")


def question_of(ask: m.Ask) -> str:
    return "\n".join(msg.text() for msg in ask.messages if msg.role == "user").strip()


def chunks_of(ask: m.Ask, opts: MapReduceOptions) -> list[Chunk]:
    """Every document of the ask, cut; ``DocumentError`` for one that cannot be read."""
    out: list[Chunk] = []
    for msg in ask.messages:
        for part in [] if isinstance(msg.content, str) else msg.content:
            if type(part) is not m.Document:
                continue
            name = part.name or "(unnamed)"
            try:
                data = base64.b64decode(part.data, validate=True) if part.data is not None else (part.text or "").encode()
            except (binascii.Error, ValueError):
                raise DocumentError(name, "data is not valid base64") from None
            key = content_key(data, part.media_type)
            found = CACHE.get(key)
            if found is None:
                try:
                    found = extract(data, media_type=part.media_type, name=part.name)
                except DocumentError as exc:
                    found = exc
                CACHE.put(key, found)
            if isinstance(found, DocumentError):
                raise found
            for c in chunk(found, name=name, max_tokens=opts.chunk_tokens, overlap_tokens=opts.overlap_tokens):
                out.append(msgspec.structs.replace(c, index=len(out)))
    return out


@register
class MapReduce(Policy):
    name = "map_reduce"
    description = "long documents: each chunk answered in parallel (bounded), then one reducer merges them"
    Options = MapReduceOptions

    def begin(self, now: float) -> list[Action]:
        opts = self.options
        self.reducer = opts.reducer or self.plan.candidates[0]
        self.workers = [p for p in self.plan.candidates if p != self.reducer] or [self.reducer]
        try:
            self.chunks = chunks_of(self.plan.ask, opts)
        except DocumentError as exc:
            return [Done(m.Failure(kind=m.BAD_REQUEST, message=str(exc)))]
        if not self.chunks:
            return [Call("only", self.plan.candidates[0])]
        self.question = question_of(self.plan.ask)
        self.map_deadline = now + (self.plan.deadline - now) * (1.0 - opts.reserve)
        self.next = 0
        self.answers: dict[int, m.Completion] = {}
        self.readers: dict[int, str] = {}
        self.finished = 0
        return [self._map() for _ in range(min(opts.concurrency, len(self.chunks)))]

    def _map(self) -> Call:
        c = self.chunks[self.next]
        self.next += 1
        provider = self.workers[c.index % len(self.workers)]
        self.readers[c.index] = provider
        text = MAP_PROMPT.format(i=c.index + 1, n=len(self.chunks), label=c.label(), text=c.text, question=self.question)
        return Call(f"map{c.index}", provider, deadline=self.map_deadline, messages=[m.Message(role="user", content=text)],
                    no_schema=True, purpose="map")

    def decide(self, event: Event, now: float) -> list[Action]:
        if not hasattr(self, "chunks") or not self.chunks:
            if type(event) is Reply:
                return [Done(event.result)]
            return [Done(self.failure("no answer in time", kind=m.TIMEOUT))] if type(event) is Deadline else []
        if type(event) is Reply and event.key == REDUCE:
            if isinstance(event.result, m.Completion):
                return [Done(event.result, providers=list(dict.fromkeys([*self.readers.values(), event.result.provider])),
                             metadata=self._metadata())]
            return [Done(self.failure(f"the reducer {self.reducer} failed: {event.result.kind}"))]
        if type(event) is Deadline:
            return [Done(self.failure("map → reduce did not finish in time", kind=m.TIMEOUT))]
        if type(event) is not Reply:
            return []
        self.finished += 1
        if isinstance(event.result, m.Completion) and event.result.text.strip():
            self.answers[int(event.key[3:])] = event.result
        actions: list[Action] = []
        if self.next < len(self.chunks):
            actions.append(self._map())
        elif self.finished == len(self.chunks):
            if not self.answers:
                return [Done(self.failure("no chunk was answered"))]
            actions.append(self._reduce())
        return actions

    def _reduce(self) -> Call:
        answers = "\n\n".join(f"### Part {i + 1} ({self.chunks[i].label()})\n\n{c.text.strip()}"
                              for i, c in sorted(self.answers.items()))
        prompt = REDUCE_PROMPT.format(question=self.question, answers=answers)
        return Call(REDUCE, self.reducer, messages=[m.Message(role="user", content=prompt)], purpose=REDUCE)

    def _metadata(self) -> dict:
        sources = [{"chunk": c.index, "document": c.source, "pages": list(c.pages) if c.pages else None,
                    "provider": self.readers.get(c.index), "ok": c.index in self.answers} for c in self.chunks]
        return {"sources": sources, "map_reduce": {"chunks": len(self.chunks), "answered": len(self.answers),
                                                   "reducer": self.reducer}}
