"""Map → reduce over documents too long for one call (issue 16).

The ask's Document parts are extracted (``actors/documents``, cached by content hash) and cut on
structure with overlap (``chunks.chunk``) in ``prepare``, which the runner awaits before
``begin``: in a worker thread, so a cold 100-page PDF never holds the router's event loop (a
policy table-tested without a runner does it in ``begin``). Each chunk is asked the question on
its own ("map"), with the ask's system messages (an analysis pattern's worker prompt), at most
``concurrency`` calls open at once, round-robin over the candidates other than the reducer; then
the reducer merges the partial answers, each labelled with its source and pages ("reduce"), with
``reduce_template`` (a pattern's synthesis prompt: ``{question}`` and ``{candidates}`` filled in)
or the default prompt. ``metadata.sources`` lists every chunk: document, pages, the provider that
read it, and whether it answered. A chunk whose call failed is left out of the reduce and marked
``ok: false``; none answering is ``Failure(all_failed)``. An ask without documents is one call.
A document that cannot be read is ``bad_request`` naming it, before any call.

Logs: one ``documents`` line per step — extract (documents, bytes, chars, cached, ms), chunk
(chunks, chars, ms), map (chunks, answered, concurrency, chars in and out, ms) and reduce (the
reducer, chars in and out, outcome, ms) — handed to the runner in ``Done.log``: the policy stays
pure, its durations come from the ``now`` it is given.
"""

from __future__ import annotations

import asyncio
import time

import msgspec

from bus import messages as m
from actors.documents.cache import CACHE, content_key
from actors.documents.chunks import Chunk, chunk
from actors.documents.extract import DocumentError
from actors.documents.prepare import document_bytes, extract_cached
from actors.strategies.base import Action, Call, Deadline, Done, Event, Policy, Reply, outcome_of, register

REDUCE = "reduce"
MAP_PROMPT = ("This is part {i} of {n} of the documents ({label}).\n\n{text}\n\n---\n"
              "Using only this part, answer: {question}\nIf this part says nothing relevant, answer \"nothing relevant\".")
REDUCE_PROMPT = ("Several readers each read one part of the documents and answered the question from it. "
                 "Merge their answers into one complete answer. Cite parts as (source, pages) where it helps; "
                 "ignore parts that found nothing relevant.\n\nQuestion: {question}\n\n{candidates}")


class MapReduceOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    chunk_tokens: int = 3000  # the most one map call reads (estimated tokens)
    overlap_tokens: int = 200  # each chunk repeats this much of the one before
    concurrency: int = 4  # map calls open at once
    reducer: str = ""  # the provider that merges ("" : the first candidate)
    reserve: float = 0.3  # share of the budget kept for the reduce
    reduce_template: str = ""  # the reducer's prompt, {question} and {candidates} filled in ("": REDUCE_PROMPT)

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.chunk_tokens <= self.overlap_tokens or not 0.0 <= self.reserve < 1.0:
            raise ValueError("concurrency ≥ 1, chunk_tokens > overlap_tokens and reserve in [0, 1)")


def question_of(ask: m.Ask) -> str:
    return "\n".join(msg.text() for msg in ask.messages if msg.role == "user").strip()


class Prepared(msgspec.Struct, frozen=True, kw_only=True):
    """What ``prepare`` found: the chunks (or the document error), and its log lines' figures."""

    chunks: list[Chunk] = []
    error: str = ""
    documents: int = 0
    bytes: int = 0
    chars: int = 0
    cached: int = 0  # documents found in the extraction cache
    extract_ms: float = 0.0
    chunk_ms: float = 0.0


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


def chunks_of(ask: m.Ask, opts: MapReduceOptions) -> Prepared:
    """Every document of the ask, extracted (cached) and cut. Blocking: run it in a worker thread."""
    started = time.perf_counter()
    found = []
    size = cached = 0
    try:
        for msg in ask.messages:
            for part in [] if isinstance(msg.content, str) else msg.content:
                if type(part) is not m.Document:
                    continue
                data = document_bytes(part)
                key = content_key(data, part.media_type)
                cached += key in CACHE
                size += len(data)
                found.append((part.name or "(unnamed)", extract_cached(data, part, CACHE, key)))
    except DocumentError as exc:
        return Prepared(error=str(exc), documents=len(found) + 1, bytes=size, cached=cached, extract_ms=_ms(started))
    extract_ms, started = _ms(started), time.perf_counter()
    out: list[Chunk] = []
    for name, extracted in found:
        for c in chunk(extracted, name=name, max_tokens=opts.chunk_tokens, overlap_tokens=opts.overlap_tokens):
            out.append(msgspec.structs.replace(c, index=len(out)))
    return Prepared(chunks=out, documents=len(found), bytes=size, cached=cached, extract_ms=extract_ms,
                    chars=sum(len(t) for _, e in found for t in e.pages), chunk_ms=_ms(started))


@register
class MapReduce(Policy):
    name = "map_reduce"
    description = "long documents: each chunk answered in parallel (bounded), then one reducer merges them"
    Options = MapReduceOptions

    prepared: Prepared | None = None

    async def prepare(self) -> None:
        ask = self.plan.ask
        if any(type(p) is m.Document for msg in ask.messages if not isinstance(msg.content, str) for p in msg.content):
            self.prepared = await asyncio.to_thread(chunks_of, ask, self.options)

    def begin(self, now: float) -> list[Action]:
        opts = self.options
        self.reducer = opts.reducer or self.plan.candidates[0]
        self.workers = [p for p in self.plan.candidates if p != self.reducer] or [self.reducer]
        prepared = self.prepared if self.prepared is not None else chunks_of(self.plan.ask, opts)
        self.prepared = prepared
        if prepared.error:
            return [Done(m.Failure(kind=m.BAD_REQUEST, message=prepared.error), log=self._prepare_log())]
        self.chunks = prepared.chunks
        if not self.chunks:
            return [Call("only", self.plan.candidates[0])]
        self.question = question_of(self.plan.ask)
        self.system = [msg for msg in self.plan.ask.messages if msg.role == "system"]  # a pattern's worker prompt
        self.map_deadline = now + (self.plan.deadline - now) * (1.0 - opts.reserve)
        self.map_started = now
        self.map_s: float | None = None
        self.reduce_chars = 0
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
        return Call(f"map{c.index}", provider, deadline=self.map_deadline,
                    messages=[*self.system, m.Message(role="user", content=text)], no_schema=True, purpose="map")

    def decide(self, event: Event, now: float) -> list[Action]:
        if not hasattr(self, "chunks") or not self.chunks:
            if type(event) is Reply:
                return [Done(event.result)]
            return [Done(self.failure("no answer in time", kind=m.TIMEOUT))] if type(event) is Deadline else []
        if type(event) is Reply and event.key == REDUCE:
            log = self._log(now, event)
            if isinstance(event.result, m.Completion):
                return [Done(event.result, providers=list(dict.fromkeys([*self.readers.values(), event.result.provider])),
                             metadata=self._metadata(), log=log)]
            return [Done(self.failure(f"the reducer {self.reducer} failed: {event.result.kind}"), log=log)]
        if type(event) is Deadline:
            return [Done(self.failure("map → reduce did not finish in time", kind=m.TIMEOUT), log=self._log(now))]
        if type(event) is not Reply:
            return []
        self.finished += 1
        if isinstance(event.result, m.Completion) and event.result.text.strip():
            self.answers[int(event.key[3:])] = event.result
        actions: list[Action] = []
        if self.next < len(self.chunks):
            actions.append(self._map())
        elif self.finished == len(self.chunks):
            self.map_s = now - self.map_started
            if not self.answers:
                return [Done(self.failure("no chunk was answered"), log=self._log(now))]
            actions.append(self._reduce())
        return actions

    def _reduce(self) -> Call:
        answers = "\n\n".join(f"### Part {i + 1} ({self.chunks[i].label()})\n\n{c.text.strip()}"
                              for i, c in sorted(self.answers.items()))
        template = self.options.reduce_template or REDUCE_PROMPT
        prompt = template.replace("{question}", self.question).replace("{candidates}", answers)
        self.reduce_chars = len(prompt)
        return Call(REDUCE, self.reducer, messages=[*self.system, m.Message(role="user", content=prompt)],
                    purpose=REDUCE)

    # --- the steps' log lines (``Done.log``) -----------------------------------------------------
    def _prepare_log(self) -> tuple:
        p = self.prepared
        extract = {"step": "extract", "documents": p.documents, "bytes": p.bytes, "chars": p.chars,
                   "cached": p.cached, "ms": p.extract_ms, **({"error": p.error} if p.error else {})}
        if p.error:
            return (("documents", extract),)
        return (("documents", extract), ("documents", {"step": "chunk", "chunks": len(p.chunks),
                                                       "chars": sum(len(c.text) for c in p.chunks),
                                                       "ms": p.chunk_ms}))

    def _log(self, now: float, reduce: Reply | None = None) -> tuple:
        map_s = self.map_s if self.map_s is not None else now - self.map_started
        lines = [*self._prepare_log(), ("documents", {
            "step": "map", "chunks": len(self.chunks), "answered": len(self.answers), "called": self.next,
            "concurrency": self.options.concurrency, "chars_in": sum(len(c.text) for c in self.chunks[:self.next]),
            "chars_out": sum(len(c.text) for c in self.answers.values()), "ms": round(map_s * 1000.0, 3)})]
        if reduce is not None:
            out = reduce.result.text if isinstance(reduce.result, m.Completion) else ""
            lines.append(("documents", {"step": "reduce", "provider": self.reducer, "chars_in": self.reduce_chars,
                                        "chars_out": len(out), "outcome": outcome_of(reduce.result), "ms": reduce.ms}))
        return tuple(lines)

    def _metadata(self) -> dict:
        sources = [{"chunk": c.index, "document": c.source, "pages": list(c.pages) if c.pages else None,
                    "provider": self.readers.get(c.index), "ok": c.index in self.answers} for c in self.chunks]
        return {"sources": sources, "map_reduce": {"chunks": len(self.chunks), "answered": len(self.answers),
                                                   "reducer": self.reducer}}
