"""Bytes of one document → its text, page by page where the format has pages.

Libraries (measured in ``tests/test_documents.py`` and the closing note of issue 16):

- PDF: ``pypdf`` — a pure-Python wheel (installs anywhere, no native library), it says when a PDF is
  encrypted (``is_encrypted``; an empty user password is tried, as readers do) and raises on
  damage, which is what turns into ``bad_request``; its writer also makes the encrypted PDFs the
  tests need. pypdfium2 is faster (measured, ``llmbus bench documents``: a dense 100-page text PDF
  in ~190 ms against pypdf's ~520 ms) but binds a native PDFium build per platform. Half a second
  once per document (the cache keeps it, off the event loop) is small beside a model reading 100
  pages; switch if a benchmark of real asks says otherwise.
- DOCX: ``python-docx`` (paragraphs, then table cells).
- HTML: ``html2text`` — it keeps the structure a model reads well (headings, lists, links, tables
  as Markdown), drops scripts and styles, and is pure Python with no dependencies, unlike
  trafilatura (lxml and a dozen more) whose boilerplate removal is meant for crawled pages, not for a
  page a user chose. BeautifulSoup's ``get_text`` is ~4× faster (10 ms against 46 ms for a 300 kB
  page) but loses all structure (headings, lists, tables become bare lines).
- Markdown and plain text: decoded as UTF-8 (a BOM is dropped), unchanged.

Every failure is a ``DocumentError`` naming the file and the reason; the caller makes it a
``bad_request``. Nothing here does I/O beyond parsing the bytes it is given.
"""

from __future__ import annotations

import io
import msgspec

PDF, DOCX, HTML, MARKDOWN, TEXT = "pdf", "docx", "html", "markdown", "text"
MEDIA_TYPES = {
    "application/pdf": PDF,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": DOCX,
    "text/html": HTML,
    "application/xhtml+xml": HTML,
    "text/markdown": MARKDOWN,
    "text/x-markdown": MARKDOWN,
    "text/plain": TEXT,
}
SUFFIXES = {".pdf": PDF, ".docx": DOCX, ".html": HTML, ".htm": HTML, ".md": MARKDOWN, ".markdown": MARKDOWN,
            ".txt": TEXT, ".text": TEXT}


class DocumentError(ValueError):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"document {name}: {reason}")
        self.name, self.reason = name, reason


class Extracted(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    pages: list[str]  # one entry per page (PDF), else a single entry

    @property
    def text(self) -> str:
        return "\n\n".join(self.pages)


def kind_of(media_type: str | None, name: str | None, data: bytes) -> str | None:
    """The format, from the bytes' signature first, then the media type, then the file name."""
    if data.startswith(b"%PDF-"):
        return PDF
    if media_type and (kind := MEDIA_TYPES.get(media_type.split(";")[0].strip().lower())):
        return kind
    if name and "." in name and (kind := SUFFIXES.get(name[name.rindex("."):].lower())):
        return kind
    if data.startswith(b"PK\x03\x04"):
        return DOCX
    if media_type and media_type.startswith("text/"):
        return TEXT
    return None


def extract(data: bytes, *, media_type: str | None = None, name: str | None = None) -> Extracted:
    label = name or "(unnamed)"
    if not data.strip():
        raise DocumentError(label, "the document is empty")
    kind = kind_of(media_type, name, data)
    if kind is None:
        raise DocumentError(label, f"unsupported media type {media_type or 'unknown'} (PDF, DOCX, HTML, Markdown, text)")
    try:
        pages = {PDF: _pdf, DOCX: _docx, HTML: _html}.get(kind, _text)(data, label)
    except DocumentError:
        raise
    except Exception as exc:  # a parser's own error on damaged input: the document, not us
        raise DocumentError(label, f"not a readable {kind.upper()} ({type(exc).__name__}: {exc})") from None
    if not any(p.strip() for p in pages):
        raise DocumentError(label, f"no text found in the {kind.upper()}" + (" (a scanned PDF needs OCR)" if kind == PDF else ""))
    return Extracted(kind=kind, pages=pages)


def decode_text(data: bytes, label: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(label, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _text(data: bytes, label: str) -> list[str]:
    return [decode_text(data, label)]


def _pdf(data: bytes, label: str) -> list[str]:
    from pypdf import PdfReader  # imported on first use: the ask path without documents never pays it

    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")
        except Exception:
            opened = 0
        if not opened:
            raise DocumentError(label, "the PDF is encrypted (password protected)")
    return [page.extract_text() or "" for page in reader.pages]


def _docx(data: bytes, label: str) -> list[str]:
    import docx

    doc = docx.Document(io.BytesIO(data))
    lines = [p.text for p in doc.paragraphs]
    for table in doc.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text for cell in row.cells))
    return ["\n".join(lines)]


def html_to_text(html: str) -> str:
    import html2text

    converter = html2text.HTML2Text()
    converter.body_width = 0  # no hard wrapping: the model does not need it
    converter.ignore_images = True
    return converter.handle(html).strip()


def _html(data: bytes, label: str) -> list[str]:
    return [html_to_text(decode_text(data, label))]
