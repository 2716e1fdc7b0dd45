"""A document too big for one call, cut on its structure: pages (PDF), then Markdown headings,
then paragraphs, then — for a paragraph bigger than a chunk — lines and finally characters. Chunks
are packed up to ``max_tokens`` and each repeats the tail of the one before (``overlap_tokens``)
so a sentence cut at a border is read whole once. Each chunk keeps its provenance (the pages it
covers) for ``metadata.sources``. Pure: no I/O, the token estimate of ``prepare``."""

from __future__ import annotations

import re

import msgspec

from actors.documents.extract import Extracted
from actors.documents.tokens import estimate_tokens

HEADING = re.compile(r"^(?=#{1,6} )", re.M)
PARAGRAPH = re.compile(r"\n\s*\n")


class Chunk(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    text: str
    pages: tuple[int, int] | None = None  # first and last page (1-based), for PDFs
    source: str = ""  # the document's name

    def label(self) -> str:
        where = "" if self.pages is None else (f", page {self.pages[0]}" if self.pages[0] == self.pages[1]
                                               else f", pages {self.pages[0]}–{self.pages[1]}")
        return f"{self.source}{where}"


def _units(text: str, max_tokens: int, kind: str) -> list[str]:
    """The text's pieces, each within ``max_tokens``, cut on the coarsest structure that fits."""
    out: list[str] = []
    for section in (s for s in HEADING.split(text) if s.strip()):
        if estimate_tokens(section, kind) <= max_tokens:
            out.append(section.strip())
            continue
        for para in (p for p in PARAGRAPH.split(section) if p.strip()):
            if estimate_tokens(para, kind) <= max_tokens:
                out.append(para.strip())
                continue
            size = max(1, int(max_tokens * 3.5))  # characters: the tightest estimate's ratio
            line_buf = ""
            for line in para.splitlines():
                while len(line) > size:
                    out.append(line[:size])
                    line = line[size:]
                if len(line_buf) + len(line) + 1 > size and line_buf:
                    out.append(line_buf)
                    line_buf = ""
                line_buf = f"{line_buf}\n{line}" if line_buf else line
            if line_buf.strip():
                out.append(line_buf)
    return out


def chunk(extracted: Extracted, *, name: str, max_tokens: int, overlap_tokens: int = 0,
          kind: str = "openai") -> list[Chunk]:
    if max_tokens <= overlap_tokens:
        raise ValueError(f"max_tokens ({max_tokens}) must exceed overlap_tokens ({overlap_tokens})")
    budget = max_tokens - overlap_tokens
    paged = extracted.kind == "pdf"
    units: list[tuple[int, str]] = []  # (page, text)
    for page_no, page in enumerate(extracted.pages, 1):
        units += [(page_no, u) for u in _units(page, budget, kind)]
    chunks: list[Chunk] = []
    current: list[tuple[int, str]] = []
    tail: list[tuple[int, str]] = []

    def close() -> None:
        nonlocal tail
        body = tail + current
        text = "\n\n".join(u for _, u in body)
        pages = (body[0][0], body[-1][0]) if paged else None
        chunks.append(Chunk(index=len(chunks), text=text, pages=pages, source=name))
        tail, used = [], 0
        for unit in reversed(current):  # the overlap: whole trailing units within overlap_tokens
            n = estimate_tokens(unit[1], kind)
            if used + n > overlap_tokens:
                break
            tail.insert(0, unit)
            used += n
        if not tail and overlap_tokens > 0 and current:  # no whole unit is small enough: its last words
            page, last = current[-1]
            piece = last[-int(overlap_tokens * 3.5):]
            tail = [(page, piece[piece.find(" ") + 1:] if " " in piece else piece)]

    used = 0
    for unit in units:
        n = estimate_tokens(unit[1], kind)
        if current and used + n > budget:
            close()
            current, used = [], 0
        current.append(unit)
        used += n
    if current:
        close()
    return chunks
