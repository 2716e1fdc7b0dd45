"""Assemble actors from settings, and the embedded stack: nats-server + every actor in one process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio

from bus import messages as m
from bus.errors import ConfigError
from bus.server import NatsServer, url_greets
from bus.subjects import Subjects
from actors.router.actor import Router
from actors.runtime import Actor, run_actors
from actors.settings import Settings


def actor_names(settings: Settings) -> list[str]:
    cache = ["cache"] if settings.cache.enabled else []
    return ["router", "health", "cost", *cache, *(f"provider.{name}" for name in settings.providers)]


def unconfigured(settings: Settings) -> dict[str, str]:
    """Providers that cannot run here, with the environment variable each is missing."""
    return {name: env for name, p in settings.providers.items() if (env := p.missing_key())}


def _provider_class(kind: str) -> type:
    # imported on demand: an SDK is loaded only when a provider of its kind is configured
    if kind == "openai":
        from actors.providers.openai import OpenAIProvider as cls
    elif kind == "anthropic":
        from actors.providers.anthropic import AnthropicProvider as cls
    elif kind == "gemini":
        from actors.providers.gemini import GeminiProvider as cls
    else:
        from actors.providers.mock import MockProvider as cls
    return cls


def build_actor(name: str, settings: Settings) -> Actor:
    """One actor by name: ``router``, ``health``, ``cost``, ``cache`` or ``provider.<name>``. A provider whose API key is not set
    raises ``ConfigError`` naming the variable."""
    subjects = Subjects(settings.bus.root)
    common = dict(subjects=subjects, default_budget_ms=settings.bus.default_budget_ms,
                  stop_grace_s=settings.bus.stop_grace_s)
    if name == "router":
        return Router(settings=settings, **common)
    if name == "health":
        from actors.pure.breaker import BreakerConfig
        from actors.health.actor import HealthActor

        h = settings.health
        config = BreakerConfig(failures_to_open=h.failures_to_open, cooldown_s=h.cooldown_s,
                               successes_to_close=h.successes_to_close)
        return HealthActor(config=config, providers=list(settings.providers), **common)
    if name == "cache":
        from actors.cache.actor import CacheActor

        return CacheActor(settings=settings.cache, directory=Path(settings.cache.dir) / settings.bus.root, **common)
    if name == "cost":
        from actors.cost.actor import CostActor
        from actors.pure.pricing import Pricing

        path = settings.pricing_path()
        if path is None:
            raise ConfigError("no pricing file: set cost.pricing or add config/pricing.toml")
        seed = [m.BudgetSet(scope=b.scope, name=b.name, period=b.period, limit_usd=b.limit_usd)
                for b in settings.cost.budgets]
        kinds = {n: p.kind for n, p in settings.providers.items()}
        return CostActor(pricing=Pricing.load(path), provider_kinds=kinds, budgets=seed, **common)
    if name.startswith("provider."):
        provider = name.removeprefix("provider.")
        config = settings.providers.get(provider)
        if config is None:
            raise KeyError(provider)
        if env := config.missing_key():
            raise ConfigError(f"provider {provider} ({config.kind}) is not configured: set {env}")
        cls = _provider_class(config.kind)
        return cls(provider=provider, config=config, max_concurrency=config.max_concurrency, **common)
    raise KeyError(name)


def build_actors(settings: Settings, names: list[str] | None = None) -> list[Actor]:
    """The named actors, or every actor that can run here (providers without keys are left out)."""
    skip = unconfigured(settings)
    chosen = names or [n for n in actor_names(settings) if n.removeprefix("provider.") not in skip]
    return [build_actor(n, settings) for n in chosen]


@dataclass
class Stack:
    url: str
    actors: list[Actor]
    server: NatsServer | None  # None when an already running server was reused

    def stop(self) -> None:
        for actor in self.actors:
            actor.stop()


@asynccontextmanager
async def embedded(
    settings: Settings,
    *,
    port: int | None = None,
    store: str | Path | None = None,
    reuse: bool = False,
) -> AsyncIterator[Stack]:
    """Start nats-server (or reuse one answering at ``settings.bus.url`` when ``reuse``) and every
    actor; yields once all are ready; stops the actors gracefully, then the server."""
    server = None
    reuse_url = f"nats://{settings.bus.host}:{port}" if port else settings.bus.url
    if reuse and await anyio.to_thread.run_sync(url_greets, reuse_url):
        url = reuse_url
    else:
        server = NatsServer(host=settings.bus.host, port=port, store=store)
        await anyio.to_thread.run_sync(server.start)
        url = server.url
    try:
        actors = build_actors(settings)
        async with anyio.create_task_group() as tg:
            await tg.start(run_actors, actors, url)
            stack = Stack(url=url, actors=actors, server=server)
            try:
                yield stack
            finally:
                stack.stop()
    finally:
        if server is not None:
            await anyio.to_thread.run_sync(server.stop)
