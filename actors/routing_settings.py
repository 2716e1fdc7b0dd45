"""The routing tables of the config: tiers with fallback routes, presets, and the environment switches.

``[tiers.<name>]`` (an Ask selects one with ``tier``) and ``[[tiers.<name>.routes]]`` (its fallback
routes, in order); presets are files ``config/presets/<name>.toml`` (an Ask selects one with
``labels["preset"]``, ``llmbus ask --preset``). Each fixes a strategy, its candidates and options,
and what the router does around it; none is a policy itself (``actors.router.routing`` applies
them before dispatch). Loaded and checked by ``actors.settings`` like every other table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import msgspec

from bus.subjects import check_token


class _Table(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class RouteSettings(_Table, frozen=True, kw_only=True):
    """One fallback route: a strategy with its candidates (a pipeline route is a chain of stages),
    or ``rules = "module:function"``: no LLM at all, the function answers (``degraded``)."""

    name: str
    strategy: str = "failover"
    providers: list[str] = []
    options: dict[str, Any] = {}
    rules: str | None = None  # "module:function(ask) -> str | dict": the emergency route


class QuotaSettings(_Table, frozen=True, kw_only=True):
    """``[tiers.<name>.quotas]``: ``images = { per = "month", limit = 50 }`` (count-based, the cost actor)."""

    per: Literal["day", "month"] = "month"
    limit: int


class TierImages(_Table, frozen=True, kw_only=True):
    """``[tiers.<name>.images]``: what the images actor does for the tier once its quota is used up:
    render a ``placeholder``, ``refuse`` (``budget_exceeded`` naming the quota), or use a ``cheaper``
    model (``cheaper_model`` on ``cheaper_provider``, or on the provider the order gives)."""

    over_quota: Literal["placeholder", "refuse", "cheaper"] = "refuse"
    cheaper_model: str | None = None
    cheaper_provider: str | None = None
    providers: list[str] = []  # the tier's image providers, in order; empty: [images].providers


class TierSettings(_Table, frozen=True, kw_only=True):
    strategy: str | None = None  # None: the router's (live or configured)
    providers: list[str] = []  # candidates, in order; empty: the router's order
    fanout: int = 1  # providers asked at once (consensus-like strategies); candidates = fanout + retries
    supervision: int = 0  # review cycles (read by the review strategy)
    retries: int = 1  # providers tried after the first one(s)
    max_cost_usd: float | None = None  # the per-ask ceiling (an ask's own lower one wins)
    fallback_routes: bool = False  # may the routes below be used
    cache: Literal["shared", "dedicated"] = "shared"  # dedicated: namespace "tier-<name>"
    priority: int = 0  # higher first: a full router serves its asks before lower ones (actors.admission)
    options: dict[str, Any] = {}  # the strategy's options for this tier
    routes: list[RouteSettings] = []
    quotas: dict[str, QuotaSettings] = {}  # quota name ("images") -> per period and limit
    images: TierImages = TierImages()
    record: Literal["all", "errors", "off"] | None = None  # its asks' recording (None: [record] sampling)

    def candidates(self, order: list[str]) -> list[str]:
        wanted = [p for p in self.providers if p in order] if self.providers else list(order)
        return wanted[: max(1, self.fanout + self.retries)] or list(order)


class Preset(_Table, frozen=True, kw_only=True):
    description: str = ""
    strategy: str
    providers: list[str] = []  # a preference list: those not usable here are left out
    options: dict[str, Any] = {}
    cache: Literal["use", "refresh", "skip"] = "use"
    budget_ms: int | None = None  # used when the ask gives no budget header


class ExperimentSettings(_Table, frozen=True, kw_only=True):
    """``[experiments.<name>]``: ``strategy`` (with ``providers``, ``options``) for ``percent`` % of
    users, by a stable hash of the user id (``llmbus experiments set NAME --percent P`` changes it
    live); ``shadow = true``: it runs beside the real ask on a copy, under ``shadow_budget_ms``, and
    is only recorded. ``tiers`` limits it to asks of those tiers (empty: every ask)."""

    strategy: str
    providers: list[str] = []
    options: dict[str, Any] = {}
    percent: float = 0.0
    shadow: bool = False
    shadow_budget_ms: int = 10_000
    tiers: list[str] = []


def load_presets(directory: Path) -> dict[str, Preset]:
    """Every ``<name>.toml`` in ``directory`` (none: no presets); a bad file raises ValueError naming it."""
    presets = {}
    if directory.is_dir():
        for path in sorted(directory.glob("*.toml")):
            try:
                presets[path.stem] = msgspec.toml.decode(path.read_bytes(), type=Preset)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise ValueError(f"{path}: {exc}") from None
    return presets


def multi_llm(tier: str | None, environ=os.environ) -> bool:
    """``LLMBUS_MULTI_LLM_<TIER>`` (else ``LLMBUS_MULTI_LLM``) = 0 turns a tier's orchestration off."""
    if tier is not None:
        value = environ.get(f"LLMBUS_MULTI_LLM_{tier.upper().replace('-', '_')}")
        if value is not None:
            return value.strip() not in ("0", "false", "off", "no")
    value = environ.get("LLMBUS_MULTI_LLM")
    return value is None or value.strip() not in ("0", "false", "off", "no")


def check_routing(settings, known: dict) -> str | None:
    """What is wrong with the tiers' strategies, providers and routes (None: nothing)."""
    for name, tier in settings.tiers.items():
        where = f"tiers.{name}"
        if tier.strategy is not None and tier.strategy not in known:
            return f"{where}.strategy {tier.strategy!r} is not one of {', '.join(known)}"
        for p in tier.providers:
            if p not in settings.providers:
                return f"{where}.providers names {p!r}, which has no [providers.{p}] table"
        if tier.fanout < 1 or tier.retries < 0:
            return f"{where}: fanout must be 1 or more and retries 0 or more"
        for quota, q in tier.quotas.items():
            if q.limit < 0:
                return f"{where}.quotas.{quota}: the limit must be 0 or more"
        for p in [*tier.images.providers, *([tier.images.cheaper_provider] if tier.images.cheaper_provider else [])]:
            if p not in settings.providers:
                return f"{where}.images names {p!r}, which has no [providers.{p}] table"
        seen = set()
        for route in tier.routes:
            rwhere = f"{where}.routes[{route.name}]"
            if route.name in seen:
                return f"{rwhere}: two routes have this name"
            seen.add(route.name)
            if route.rules is not None:
                if ":" not in route.rules:
                    return f"{rwhere}.rules must be 'module:function' (got {route.rules!r})"
                continue
            if route.strategy not in known:
                return f"{rwhere}.strategy {route.strategy!r} is not one of {', '.join(known)}"
            for p in route.providers:
                if p not in settings.providers:
                    return f"{rwhere}.providers names {p!r}, which has no [providers.{p}] table"
    for name, exp in getattr(settings, "experiments", {}).items():
        where = f"experiments.{name}"
        try:
            check_token(name, where)
        except ValueError as exc:
            return str(exc)
        if exp.strategy not in known:
            return f"{where}.strategy {exp.strategy!r} is not one of {', '.join(known)}"
        for p in exp.providers:
            if p not in settings.providers:
                return f"{where}.providers names {p!r}, which has no [providers.{p}] table"
        if not 0.0 <= exp.percent <= 100.0 or exp.shadow_budget_ms <= 0:
            return f"{where}: percent must be in [0, 100] and shadow_budget_ms above 0"
    return None
