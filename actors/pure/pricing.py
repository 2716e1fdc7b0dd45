"""Prices from ``config/pricing.toml``: what a call cost, and the most it could cost.

Pure and table-tested. ``cost(kind, model, usage)`` is None for a model with no price — callers
report that as unknown, never as zero. Model names match exactly, else by the longest listed
prefix (responses name dated versions: ``gpt-4o-mini-2024-07-18`` is priced as ``gpt-4o-mini``).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from bus import messages as m
from bus.errors import ConfigError

PER = 1_000_000.0


class Price(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    input: float
    output: float
    cached_input: float | None = None  # None: cached tokens cost as much as input
    taken: str = ""
    source: str = ""


class Pricing:
    def __init__(self, table: dict[str, dict[str, Price]]) -> None:
        self.table = table
        self._found: dict[tuple[str, str], Price | None] = {}  # lookups are per call: remember them

    @classmethod
    def load(cls, path: str | Path) -> Pricing:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read pricing file {path}: {exc.strerror}") from None
        try:
            return cls(msgspec.toml.decode(data, type=dict[str, dict[str, Price]]))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def price(self, kind: str, model: str) -> Price | None:
        key = (kind, model)
        if key not in self._found:
            models = self.table.get(kind, {})
            best = max((name for name in models if model.startswith(name)), key=len, default=None)
            self._found[key] = models[best] if best else None
        return self._found[key]

    def cost(self, kind: str, model: str, usage: m.TokenUsage) -> float | None:
        p = self.price(kind, model)
        if p is None:
            return None
        cached = min(usage.cached_tokens, usage.input_tokens)
        cached_rate = p.input if p.cached_input is None else p.cached_input
        return ((usage.input_tokens - cached) * p.input + cached * cached_rate + usage.output_tokens * p.output) / PER

    def worst_case(self, kind: str, model: str, prompt_tokens: int, max_tokens: int) -> float | None:
        """The most a call can cost: every prompt token uncached, and ``max_tokens`` generated."""
        return self.cost(kind, model, m.TokenUsage(input_tokens=prompt_tokens, output_tokens=max_tokens))

