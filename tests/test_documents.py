"""Documents: extraction per format, the content-hash cache, bad documents as bad_request, fitting."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

from actors.documents.cache import ExtractCache
from actors.documents.extract import DocumentError, extract
from actors.documents.prepare import DocumentOptions, has_documents, prepare
from bus import messages as m
from bus.errors import BadRequest, ContextLengthExceeded
from actors.documents.samples import HTML_PAGE, make_docx, make_encrypted_pdf, make_pdf

pytestmark = pytest.mark.timeout(20)


def doc(data: bytes, name: str, media_type: str) -> m.Document:
    return m.Document(data=base64.b64encode(data).decode(), media_type=media_type, name=name)


def ask_with(*parts: m.Part) -> list[m.Message]:
    return [m.Message(role="user", content=[*parts, m.Text(text="What does it say?")])]


def test_pdf_pages_are_extracted():
    got = extract(make_pdf(["Alpha page one", "Beta page two (with parens)"]), media_type="application/pdf", name="a.pdf")
    assert got.kind == "pdf" and len(got.pages) == 2
    assert "Alpha page one" in got.pages[0] and "Beta page two (with parens)" in got.pages[1]


def test_docx_paragraphs_and_tables():
    got = extract(make_docx(["Minutes of the meeting", "Decision: ship it"], [["owner", "Ana"]]), name="m.docx")
    assert got.kind == "docx" and "Decision: ship it" in got.text and "owner | Ana" in got.text


def test_html_keeps_structure_drops_scripts():
    got = extract(HTML_PAGE.encode(), media_type="text/html", name="r.html")
    assert "# Quarterly report" in got.text and "**12%**" in got.text and "* North: up" in got.text
    assert "tracking" not in got.text and "color:red" not in got.text


def test_markdown_and_text_pass_through():
    assert extract(b"# Notes\n\n- one", name="n.md").text == "# Notes\n\n- one"
    assert extract("\ufeffplain é".encode(), media_type="text/plain", name="p.txt").text == "plain é"


@pytest.mark.parametrize("data, name, reason", [
    (b"", "empty.pdf", "empty"),
    (b"%PDF-1.4\n garbage that is no pdf", "corrupt.pdf", "not a readable PDF"),
    (make_pdf([""]), "blank.pdf", "no text found"),
    (b"PK\x03\x04 not really a zip", "broken.docx", "not a readable DOCX"),
    (b"\xff\xfe\x00bad", "bad.txt", "not UTF-8"),
    (b"\x00\x01binary", "blob.bin", "unsupported media type"),
])
def test_bad_documents_name_the_file_and_the_reason(data, name, reason):
    with pytest.raises(DocumentError) as exc:
        extract(data, name=name)
    assert name in str(exc.value) and reason in str(exc.value)


def test_a_truncated_or_damaged_pdf_is_a_document_error_never_a_crash():
    import random

    pdf = make_pdf(["Revenue grew 12 percent", "Costs fell", "Third page"])
    for cut in (len(pdf) // 4, len(pdf) // 2, len(pdf) - 40):  # a download cut short
        with pytest.raises(DocumentError, match="cut.pdf: not a readable PDF"):
            extract(pdf[:cut], name="cut.pdf")
    rng = random.Random(7)
    outcomes = set()
    for _ in range(60):  # bytes flipped anywhere: pages read, or a DocumentError naming the file
        data = bytearray(pdf)
        for _ in range(rng.randrange(1, 30)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            extract(bytes(data), name="flip.pdf")
            outcomes.add("read")
        except DocumentError as exc:
            assert "flip.pdf" in str(exc)
            outcomes.add("refused")
    assert "refused" in outcomes


def test_encrypted_pdf_is_refused():
    with pytest.raises(DocumentError, match="secret.pdf: the PDF is encrypted"):
        extract(make_encrypted_pdf(), name="secret.pdf")


def test_prepare_sends_text_with_page_provenance_and_caches_by_hash():
    cache = ExtractCache()
    msgs = ask_with(doc(make_pdf(["first", "second"]), "r.pdf", "application/pdf"), m.Document(text="# n", media_type="text/markdown", name="n.md"))
    assert has_documents(msgs) and not has_documents([m.Message(role="user", content="hi")])
    out = asyncio.run(prepare(msgs, DocumentOptions(), cache=cache))
    parts = out[0].content
    assert parts[0].data is None and "[page 1]\nfirst" in parts[0].text and "[page 2]\nsecond" in parts[0].text
    assert parts[1].text.startswith("[document n.md]") and parts[2] == m.Text(text="What does it say?")
    asyncio.run(prepare(msgs, DocumentOptions(), cache=cache))
    assert cache.hits == 1 and cache.misses == 1


def test_native_pdf_keeps_the_original_but_is_validated():
    pdf = doc(make_pdf(["x"]), "r.pdf", "application/pdf")
    out = asyncio.run(prepare(ask_with(pdf), DocumentOptions(kind="anthropic", native=frozenset({"application/pdf"})), cache=ExtractCache()))
    assert out[0].content[0] is pdf
    with pytest.raises(BadRequest, match="s.pdf: the PDF is encrypted"):
        asyncio.run(prepare(ask_with(doc(make_encrypted_pdf(), "s.pdf", "application/pdf")),
                            DocumentOptions(native=frozenset({"application/pdf"})), cache=ExtractCache()))


def test_empty_text_document_is_bad_request():
    with pytest.raises(BadRequest, match="e.md: the document is empty"):
        asyncio.run(prepare(ask_with(m.Document(text=" \n", name="e.md")), DocumentOptions(), cache=ExtractCache()))


def test_over_the_window_fails_with_sizes_or_truncates():
    big = doc(make_pdf([f"paragraph {i} " * 20 for i in range(40)]), "big.pdf", "application/pdf")
    opts = DocumentOptions(kind="openai", context_tokens=2000)
    with pytest.raises(ContextLengthExceeded) as exc:
        asyncio.run(prepare(ask_with(big), opts, reserve_tokens=500, cache=ExtractCache()))
    assert "big.pdf ~" in exc.value.message and "window 2000" in exc.value.message
    out = asyncio.run(prepare(ask_with(big), DocumentOptions(kind="openai", context_tokens=2000, overflow="truncate"),
                              reserve_tokens=500, cache=ExtractCache()))
    text = out[0].content[0].text
    assert "[… truncated to fit the model's window:" in text and "[page 1]" in text
    assert len(text) / 4 + 500 < 2000


def test_extraction_time_and_cache_hit(capsys):
    pdf = make_pdf([f"Line {i} of a text page with some words in it." for i in range(100)])
    cache = ExtractCache()
    msgs = ask_with(doc(pdf, "hundred.pdf", "application/pdf"))
    t0 = time.perf_counter()
    asyncio.run(prepare(msgs, DocumentOptions(), cache=cache))
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    asyncio.run(prepare(msgs, DocumentOptions(), cache=cache))
    warm = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n100-page PDF ({len(pdf)} bytes) with pypdf: {cold * 1000:.1f} ms cold, {warm * 1000:.2f} ms cached")
    assert warm < 0.05 and cache.hits == 1


def test_bench_section_smoke(nats_url):
    from actors.bench import documents

    result = asyncio.run(documents.run(nats_url, documents.Plan(pages=3, rounds=1, mr_pages=12, worker_ms=5.0)))
    assert result["map_reduce"]["answered"] == result["map_reduce"]["chunks"] >= 1
    assert result["pdf_ms"]["pypdf"] > 0 and result["html_ms"]["html2text"] > 0 and result["failed"] == 0
    assert all(g["pass"] for g in documents.goals(result)[:2])  # timing of map → reduce is the bench's job


def test_chunks_follow_pages_with_overlap_and_provenance():
    from actors.documents.chunks import chunk

    pages = [f"Page {i} paragraph one.\n\nPage {i} paragraph two." for i in range(1, 41)]
    got = extract(make_pdf(pages), name="long.pdf")
    parts = chunk(got, name="long.pdf", max_tokens=60, overlap_tokens=15)
    assert len(parts) > 5
    text = "\n".join(p.text for p in parts)
    assert all(f"Page {i} paragraph two." in text for i in range(1, 41))  # every paragraph is used
    assert all(p.pages[0] <= p.pages[1] for p in parts) and parts[0].pages[0] == 1 and parts[-1].pages[1] == 40
    assert parts[1].text.split("\n\n")[0] in parts[0].text  # the overlap repeats the previous tail
    assert all(len(p.text) / 4 <= 60 + 5 for p in parts)
    assert parts[0].label().startswith("long.pdf, page")


def test_chunks_cut_markdown_on_headings_then_paragraphs():
    from actors.documents.chunks import chunk
    from actors.documents.extract import Extracted

    md = "# A\n\n" + "alpha " * 30 + "\n\n# B\n\nbeta one\n\nbeta two\n\n" + "x" * 2000
    parts = chunk(Extracted(kind="markdown", pages=[md]), name="n.md", max_tokens=100)
    assert parts[0].text.startswith("# A") and parts[0].text.endswith("beta two")  # whole sections packed
    assert all(p.pages is None for p in parts) and all(len(p.text) <= 400 for p in parts)
    assert "".join(p.text for p in parts).count("x") == 2000


def test_overlap_takes_the_last_words_when_no_whole_unit_fits():
    from actors.documents.chunks import chunk

    got = extract(make_pdf([f"Page {i} says something long enough to matter here." for i in range(1, 21)]), name="p.pdf")
    parts = chunk(got, name="p.pdf", max_tokens=40, overlap_tokens=6)
    assert len(parts) > 3 and all(p.text.split("\n\n")[0] in q.text for q, p in zip(parts, parts[1:]))
