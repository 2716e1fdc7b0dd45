"""Token counts without a tokenizer: cheap estimates shared by the router (worst-case prices) and
the providers (rate limits, the mock's usage)."""

from __future__ import annotations


def estimate_tokens(text: str) -> int:
    """A cheap prompt-size estimate (~4 characters a token), for limits and worst cases only."""
    return len(text) // 4 + 1


def count_words(text: str) -> int:
    """The mock provider's token count: one token a word (deterministic, easy to check by eye)."""
    return max(1, len(text.split())) if text else 0
