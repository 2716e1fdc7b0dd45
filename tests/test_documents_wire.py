"""Documents through the real adapters against the loopback wire server (extracted text by default,
the original PDF with ``native_documents``), bad documents as bad_request before any HTTP request,
and ``Client.ask(files=...)`` / ``llmbus ask --file`` end to end with mock providers."""

from __future__ import annotations

import base64
import json

import pytest

from bus import messages as m
from bus.rpc import new_id
from bus.errors import BadRequest, ContextLengthExceeded
from actors.fakes.server import WireServer
from actors.documents.samples import make_encrypted_pdf, make_pdf
from tests.test_providers import ALL, KINDS, config_toml, run  # noqa: F401  (run is a fixture)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

PDF = make_pdf(["Revenue grew 12 percent", "Costs fell"])
B64 = base64.b64encode(PDF).decode()


def with_pdf(data: str = B64, name: str = "r.pdf") -> m.Complete:
    part = m.Document(data=data, media_type="application/pdf", name=name)
    return m.Complete(id=new_id(), ask_id=new_id(),
                      messages=[m.Message(role="user", content=[part, m.Text(text="Summarize.")])])


def user_content(kind: str, body: dict) -> list:
    if kind == "openai":
        return body["messages"][-1]["content"]
    if kind == "anthropic":
        return body["messages"][-1]["content"]
    return body["contents"][-1]["parts"]


@pytest.mark.parametrize("kind", ALL)
async def test_extracted_text_is_sent_by_default(run, kind):
    async with run(kind) as r:
        r.server.push(r.kind.plain("Up 12%.", 40, 3, 0))
        reply = await r.call(with_pdf())
        assert isinstance(reply, m.Completion) and reply.text == "Up 12%."
        sent = json.dumps(r.server.requests[0].json())
        assert "[page 1]\\nRevenue grew 12 percent" in sent and "[page 2]\\nCosts fell" in sent
        assert B64 not in sent


NATIVE = {  # each API reference's shape for a PDF sent as it is
    "openai": lambda part: part == {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{B64}", "filename": "r.pdf"}},
    "anthropic": lambda part: part == {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": B64}},
    "gemini": lambda part: _gemini_inline(part),
}


def _gemini_inline(part: dict) -> bool:
    """Gemini's ``inlineData {mimeType, data}``. google-genai re-encodes the bytes URL-safe and may
    keep snake_case names; the API's proto JSON mapping accepts both spellings and both alphabets."""
    blob = part.get("inlineData") or part.get("inline_data")
    if not isinstance(blob, dict):
        return False
    mime = blob.get("mimeType") or blob.get("mime_type")
    return mime == "application/pdf" and base64.urlsafe_b64decode(blob["data"].replace("+", "-").replace("/", "_")) == PDF


@pytest.mark.parametrize("kind", ALL)
async def test_native_pdf_is_sent_as_the_original(run, kind):
    async with WireServer() as srv:
        toml = config_toml(KINDS[kind], srv.url, extra='native_documents = ["application/pdf"]')
        async with run(kind, toml=toml, server=srv) as r:
            r.server.push(r.kind.plain("Read it.", 900, 3, 0))
            reply = await r.call(with_pdf())
            assert isinstance(reply, m.Completion) and reply.text == "Read it."
            parts = user_content(kind, r.server.requests[0].json())
            assert any(NATIVE[kind](p) for p in parts), parts
            assert "[page 1]" not in json.dumps(parts)


@pytest.mark.parametrize("kind", ALL)
async def test_encrypted_pdf_is_bad_request_before_any_http_call(run, kind):
    async with run(kind) as r:
        reply = await r.call(with_pdf(base64.b64encode(make_encrypted_pdf()).decode(), "locked.pdf"))
        assert isinstance(reply, m.Failure) and reply.kind == m.BAD_REQUEST
        assert "locked.pdf: the PDF is encrypted" in reply.message
        assert r.server.received == 0
        r.server.push(r.kind.plain("still here", 1, 1, 0))
        assert (await r.call(with_pdf())).text == "still here"  # the actor did not crash


MOCKS = """
[router]
strategy = "failover"
providers = ["a", "b"]

[providers.a]
latency = { dist = "fixed", ms = 1 }
failures = { unavailable = 1.0 }

[providers.b]
latency = { dist = "fixed", ms = 1 }
"""


async def test_client_ask_with_files_reaches_the_mock_as_text(stack, tmp_path):
    pdf, notes, bad = tmp_path / "a.pdf", tmp_path / "notes.md", tmp_path / "broken.pdf"
    pdf.write_bytes(PDF)
    notes.write_text("# Notes\n\n- margin is thin\n")
    bad.write_bytes(b"%PDF-1.7\nthis is not a PDF at all")
    async with stack(MOCKS) as s:
        answer = await s.client.ask("Summarize both.", files=[pdf, notes], budget_ms=5000, cache="skip")
        assert answer.text.startswith("[b] [document a.pdf, PDF, 2 pages]")
        assert "[page 1]\nRevenue grew 12 percent" in answer.text and "- margin is thin" in answer.text
        assert answer.text.rstrip().endswith("Summarize both.")
        with pytest.raises(BadRequest, match="broken.pdf: not a readable PDF"):
            await s.client.ask("Summarize.", files=[bad], budget_ms=5000, cache="skip")


@pytest.mark.e2e
def test_cli_ask_with_files(tmp_path, root):
    from tests.conftest import CACHE_DIR
    from tests.helpers import LLMBUS, cli_env, free_port
    import subprocess

    (tmp_path / "a.pdf").write_bytes(PDF)
    (tmp_path / "notes.md").write_text("# Notes\n\nthin margin\n")
    config = tmp_path / "llmbus.toml"
    config.write_text(f'[bus]\nroot = "{root}"\nport = {free_port()}\n[cache]\ndir = "{CACHE_DIR}"\n'
                      + MOCKS.replace("failures = { unavailable = 1.0 }\n", ""))
    proc = subprocess.run([str(LLMBUS), "ask", "--file", str(tmp_path / "a.pdf"), "--file", str(tmp_path / "notes.md"),
                           "--cache", "skip", "What changed?"], env=cli_env(LLMBUS_CONFIG=str(config)),
                          capture_output=True, text=True, timeout=40)
    assert proc.returncode == 0, proc.stderr
    assert "[page 2]\nCosts fell" in proc.stdout and "thin margin" in proc.stdout and "What changed?" in proc.stdout


async def test_a_document_over_the_window_is_context_length_or_truncated(stack, tmp_path):
    big = tmp_path / "big.pdf"
    big.write_bytes(make_pdf([f"Paragraph {i}: " + "words " * 60 for i in range(30)]))
    windows = """
[router]
strategy = "single"
providers = ["small"]

[providers.small]
latency = { dist = "fixed", ms = 1 }
context_tokens = 1500
max_tokens = 200

[providers.cut]
latency = { dist = "fixed", ms = 1 }
context_tokens = 1500
max_tokens = 200
document_overflow = "truncate"
"""
    async with stack(windows) as s:
        with pytest.raises(ContextLengthExceeded) as exc:
            await s.client.ask("Summarize.", files=[big], budget_ms=5000, cache="skip")
        assert "big.pdf ~" in exc.value.message and "window 1500 tokens" in exc.value.message
        answer = await s.client.ask("Summarize.", files=[big], providers=["cut"], budget_ms=5000, cache="skip")
        assert "[… truncated to fit the model's window:" in answer.text and "[page 1]" in answer.text
        assert len(answer.text) // 4 < 1500


async def test_map_reduce_reads_every_chunk_and_keeps_page_provenance(stack, tmp_path):
    doc = tmp_path / "long.pdf"
    doc.write_bytes(make_pdf([f"Page {i} finding: item {i} matters." for i in range(1, 25)]))
    workers = "".join(f"\n[providers.w{i}]\nlatency = {{ dist = \"fixed\", ms = 20 }}\n" for i in range(4))
    toml = f"""
[router]
strategy = "map_reduce"
providers = ["r", "w0", "w1", "w2", "w3"]

[providers.r]
latency = {{ dist = "fixed", ms = 1 }}
{workers}"""
    async with stack(toml) as s:
        answer = await s.client.ask("List the findings.", files=[doc], budget_ms=8000, cache="skip",
                                    strategy_options={"chunk_tokens": 40, "overlap_tokens": 5, "concurrency": 4})
        sources = answer.metadata["sources"]
        assert len(sources) >= 6 and all(src["ok"] for src in sources)
        assert {src["provider"] for src in sources} == {"w0", "w1", "w2", "w3"}
        assert sources[0]["pages"][0] == 1 and sources[-1]["pages"][1] == 24
        assert answer.text.startswith("[r] Several readers")
        assert all(f"item {i} matters" in answer.text for i in range(1, 25))  # every chunk reached the reducer
        assert answer.metadata["map_reduce"]["reducer"] == "r"
        bad = tmp_path / "bad.pdf"
        bad.write_bytes(b"%PDF-1.4 nonsense")
        with pytest.raises(BadRequest, match="bad.pdf: not a readable PDF"):
            await s.client.ask("x", files=[bad], budget_ms=5000, cache="skip")


async def test_one_log_line_per_document_step(stack, tmp_path):
    from structlog.testing import capture_logs

    pdf = tmp_path / "a.pdf"
    pdf.write_bytes(PDF)
    async with stack(MOCKS) as s:
        with capture_logs() as logs:
            await s.client.ask("Summarize.", files=[pdf], providers=["b"], budget_ms=5000, cache="skip")
    lines = [e for e in logs if e.get("event") == "documents"]
    assert len(lines) == 1 and lines[0]["step"] == "extract" and lines[0]["documents"] == 1
    assert lines[0]["chars"] > 20 and lines[0]["ms"] >= 0 and lines[0]["native"] == 0
