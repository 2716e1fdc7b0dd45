"""``llmbus bench documents``: extraction of a 100-page text PDF with each PDF library installed
(pypdf, the dependency; pypdfium2 when present), HTML to text with each converter installed
(html2text, the dependency; BeautifulSoup's get_text when present), a cache hit of an extracted
document, what the document check costs an ask that has none, and one map → reduce ask (router
and mock providers on the bench's nats-server) against its ideal wall time."""

from __future__ import annotations

import asyncio
import base64
import io
import statistics
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from bus import messages as m
from actors.bench.measure import goal
from actors.documents.cache import ExtractCache
from actors.documents.extract import extract, html_to_text
from actors.documents.prepare import DocumentOptions, has_documents, prepare
from actors.documents.samples import make_pdf


@dataclass(frozen=True)
class Plan:
    pages: int = 100
    rounds: int = 5
    mr_pages: int = 200  # map → reduce: pages, 4 mock workers at worker_ms each, concurrency 4
    worker_ms: float = 50.0


FULL, QUICK = Plan(), Plan(pages=20, rounds=2, mr_pages=20, worker_ms=20.0)
MR_TOML = """
[bus]
root = "{root}"
[cost]
enabled = false
[router]
strategy = "map_reduce"
providers = ["r", "w0", "w1", "w2", "w3"]
[router.strategies.map_reduce]
chunk_tokens = 1000
overlap_tokens = 50
concurrency = 4
[providers.r]
latency = {{ dist = "fixed", ms = {ms} }}
""" + "".join(f"[providers.w{i}]\nlatency = {{{{ dist = \"fixed\", ms = {{ms}} }}}}\n" for i in range(4))


def describe(plan: Plan) -> dict:
    return {"pages": plan.pages, "rounds": plan.rounds, "map_reduce_pages": plan.mr_pages, "worker_ms": plan.worker_ms}


async def map_reduce(url: str, plan: Plan) -> dict:
    """Wall time of one map → reduce ask over ``mr_pages`` pages (extraction already cached: its
    cold cost is the PDF row) against the ideal: chunks ÷ concurrency × worker_ms, plus the reduce."""
    import anyio

    from bus.client import Client
    from actors.runtime import run_actors
    from actors.settings import parse
    from actors.stack import build_actors

    root = "benchdocs" + base64.b32encode(__import__("os").urandom(5)).decode().lower()
    settings = parse(MR_TOML.format(root=root, ms=plan.worker_ms), "bench.documents")
    pdf = make_pdf(["\n".join(f"Page {i}, line {j}: a finding worth reading." for j in range(12)) for i in range(plan.mr_pages)])
    names = ["router", *(f"provider.{p}" for p in ("r", "w0", "w1", "w2", "w3"))]
    async with anyio.create_task_group() as tg:
        await tg.start(run_actors, build_actors(settings, names), url)
        try:
            async with Client(url, root=root, name="bench-documents") as client:
                files = [m.Document(data=base64.b64encode(pdf).decode(), media_type="application/pdf", name="long.pdf")]
                ask = [m.Message(role="user", content=[*files, m.Text(text="List the findings.")])]
                async with _LoopLag() as lag:  # cold: extracted and chunked in a worker thread
                    t0 = time.perf_counter()
                    await client.ask(ask, budget_ms=60_000, cache="skip")  # the cache of extracted text is warm now
                    cold = time.perf_counter() - t0
                t0 = time.perf_counter()
                answer = await client.ask(ask, budget_ms=60_000, cache="skip")
                wall = time.perf_counter() - t0
        finally:
            tg.cancel_scope.cancel()
    chunks = answer.metadata["map_reduce"]["chunks"]
    ideal = (-(-chunks // 4)) * plan.worker_ms / 1000.0 + plan.worker_ms / 1000.0  # map waves + the reduce
    t0 = time.perf_counter()
    extract(pdf, name="long.pdf")
    inline_ms = (time.perf_counter() - t0) * 1000.0
    return {"chunks": chunks, "answered": answer.metadata["map_reduce"]["answered"], "wall_s": round(wall, 3),
            "ideal_s": round(ideal, 3), "over_ideal": round(wall / ideal, 3), "cold_wall_s": round(cold, 3),
            "cold_loop_stall_ms": round(lag.worst_ms, 1), "extract_inline_ms": round(inline_ms, 1)}


class _LoopLag:
    """The event loop's longest stall while the block runs: the worst lateness of a 1 ms ticker."""

    async def __aenter__(self) -> "_LoopLag":
        self.worst_ms = 0.0
        self.task = asyncio.get_running_loop().create_task(self._tick())
        return self

    async def _tick(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst_ms = max(self.worst_ms, (time.perf_counter() - t0) * 1000.0 - 1.0)

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()


def token_counts(text: str, rounds: int) -> dict:
    """tiktoken (o200k_base, from the bundled BPE file) against the estimate on the same text."""
    from actors.documents import tokens

    t0 = time.perf_counter()
    enc = tokens.encoding("o200k_base")
    if enc is None:
        return {}
    load_ms = (time.perf_counter() - t0) * 1000.0
    return {"chars": len(text), "tiktoken_tokens": len(enc.encode_ordinary(text)),
            "estimate_tokens": tokens.estimate_tokens(text), "load_ms": round(load_ms, 1),
            "tiktoken_ms": _median_ms(lambda: enc.encode_ordinary(text), rounds),
            "estimate_ms": _median_ms(lambda: tokens.estimate_tokens(text), rounds)}


def _median_ms(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return round(statistics.median(times), 3)


def _pdfium(data: bytes) -> str:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(data)
    return "\n\n".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf)))


def _bs4(html: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style"]):
        tag.decompose()
    return soup.get_text("\n")


def page_text(i: int) -> str:
    return "\n".join(f"Page {i}, line {j}: the quarterly figures are discussed in some detail here." for j in range(40))


async def run(url: str, plan: Plan = FULL, progress=lambda s: None) -> dict:
    pdf = make_pdf([page_text(i) for i in range(plan.pages)])
    html = "<html><body>" + "".join(f"<h2>Section {i}</h2><p>{page_text(i)}</p><ul><li>a</li><li>b</li></ul>"
                                    for i in range(plan.pages)) + "</body></html>"
    pdf_ms = {"pypdf": _median_ms(lambda: extract(pdf, name="bench.pdf"), plan.rounds)}
    try:
        pdf_ms["pypdfium2"] = _median_ms(lambda: _pdfium(pdf), plan.rounds)
    except ImportError:
        pass
    html_ms = {"html2text": _median_ms(lambda: html_to_text(html), plan.rounds)}
    try:
        html_ms["bs4 get_text"] = _median_ms(lambda: _bs4(html), plan.rounds)
    except ImportError:
        pass
    cache = ExtractCache()
    msgs = [m.Message(role="user", content=[m.Document(data=base64.b64encode(pdf).decode(), media_type="application/pdf",
                                                       name="bench.pdf"), m.Text(text="Summarize.")])]
    await prepare(msgs, DocumentOptions(), cache=cache)
    hits = []
    for _ in range(50):
        t0 = time.perf_counter()
        await prepare(msgs, DocumentOptions(), cache=cache)
        hits.append((time.perf_counter() - t0) * 1000.0)
    plain = [m.Message(role="system", content="Be brief."), m.Message(role="user", content="What is the capital of Norway?")]
    n = 100_000
    t0 = time.perf_counter()
    for _ in range(n):
        has_documents(plain)
    check_us = (time.perf_counter() - t0) / n * 1e6
    counts = await asyncio.to_thread(token_counts, "\n\n".join(page_text(i) for i in range(plan.pages)), plan.rounds)
    mr = await map_reduce(url, plan)
    progress("documents measured")
    return {"pages": plan.pages, "pdf_bytes": len(pdf), "html_bytes": len(html), "pdf_ms": pdf_ms, "html_ms": html_ms,
            "cache_hit_ms_p50": round(statistics.median(hits), 3), "cache_hit_ms_max": round(max(hits), 3),
            "no_document_check_us": round(check_us, 3), "tokens": counts, "map_reduce": mr, "failed": 0}


def goals(result: dict) -> list[dict]:
    return [goal("documents: a cache hit of an extracted PDF (p50)", result["cache_hit_ms_p50"], 5.0, "≤", " ms"),
            goal("documents: the check on an ask without documents", result["no_document_check_us"], 2.0, "≤", " µs"),
            goal("documents: map → reduce wall time over the ideal", result["map_reduce"]["over_ideal"], 1.5, "≤", "×")]


def report(loop: str, result: dict, console: Console) -> None:
    table = Table(title=f"llmbus bench — documents — {loop}",
                  caption=f"a {result['pages']}-page text PDF ({result['pdf_bytes']} bytes) and an HTML page "
                          f"({result['html_bytes']} bytes) made on the spot; median of the rounds")
    table.add_column("what")
    table.add_column("ms", justify="right")
    for lib, ms in result["pdf_ms"].items():
        table.add_row(f"PDF → text, {lib}", f"{ms:.1f}")
    for lib, ms in result["html_ms"].items():
        table.add_row(f"HTML → text, {lib}", f"{ms:.1f}")
    table.add_row("cache hit (prepare, p50 / max)", f"{result['cache_hit_ms_p50']:.3f} / {result['cache_hit_ms_max']:.3f}")
    table.add_row("ask without documents: the check (µs)", f"{result['no_document_check_us']:.3f}")
    tk = result.get("tokens") or {}
    if tk:
        table.add_row(f"tokens of the text ({tk['chars']} chars): tiktoken o200k / estimate",
                      f"{tk['tiktoken_ms']:.1f} / {tk['estimate_ms']:.3f}")
        table.add_row(f"  … counted: {tk['tiktoken_tokens']} by tiktoken, {tk['estimate_tokens']} estimated; "
                      "first load of the encoding", f"{tk['load_ms']:.0f}")
    mr = result["map_reduce"]
    table.add_row(f"map → reduce, {mr['chunks']} chunks, 4 workers: wall / ideal",
                  f"{mr['wall_s'] * 1000:.0f} / {mr['ideal_s'] * 1000:.0f} ({mr['over_ideal']:.2f}×)")
    if "cold_loop_stall_ms" in mr:
        table.add_row(f"map → reduce, cold: the loop's longest stall / extracting in the loop would hold it",
                      f"{mr['cold_loop_stall_ms']:.0f} / {mr['extract_inline_ms']:.0f}")
    console.print(table)
