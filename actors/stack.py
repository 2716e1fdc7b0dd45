"""Assemble actors from settings, and the embedded stack: nats-server + every actor in one process."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from bus import messages as m
from bus.errors import ConfigError
from bus.server import NatsCluster, NatsServer, url_greets
from bus.subjects import Subjects
from actors.runtime import Actor, run_actors
from actors.settings import Settings


def actor_names(settings: Settings) -> list[str]:
    cache = ["cache"] if settings.cache.enabled else []
    supervisor = ["supervisor"] if settings.supervisor.enabled else []
    images = ["images"] if settings.images.enabled else []
    gateway = ["gateway"] if settings.gateway.listen else []  # `llmbus up --http ADDR` sets gateway.listen
    return ["router", "health", "cost", *cache, *supervisor, *images, *(f"provider.{name}" for name in settings.providers),
            *gateway]


def unconfigured(settings: Settings) -> dict[str, str]:
    """Providers that cannot run here, with the environment variable each is missing."""
    return {name: env for name, p in settings.providers.items() if (env := p.missing_key())}


# Provider kind -> "module:class", imported on demand: the SDKs take seconds to import, so one is
# loaded only when a provider of its kind is configured.
PROVIDER_CLASSES: dict[str, str] = {
    "mock": "actors.providers.mock:MockProvider",
    "openai": "actors.providers.openai:OpenAIProvider",
    "anthropic": "actors.providers.anthropic:AnthropicProvider",
    "gemini": "actors.providers.gemini:GeminiProvider",
}


def provider_class(kind: str) -> type[Actor]:
    """The provider actor class for ``kind`` (its module imported now, not before)."""
    module, _, attr = PROVIDER_CLASSES[kind].partition(":")
    return getattr(importlib.import_module(module), attr)


# Each builder takes the settings and the arguments every actor gets (subjects, budgets, grace);
# each imports its actor's module itself, so building one actor loads only what it needs.
Builder = Callable[[Settings, dict[str, Any]], Actor]


def _router(settings: Settings, common: dict[str, Any]) -> Actor:
    from actors.router.actor import Router

    return Router(settings=settings, **common)


def _health(settings: Settings, common: dict[str, Any]) -> Actor:
    from actors.health.actor import HealthActor
    from actors.pure.breaker import BreakerConfig

    h = settings.health
    config = BreakerConfig(failures_to_open=h.failures_to_open, cooldown_s=h.cooldown_s,
                           successes_to_close=h.successes_to_close)
    return HealthActor(config=config, providers=list(settings.providers), alerts=settings.alerts, tiers=settings.tiers,
                       **common)


def _cache(settings: Settings, common: dict[str, Any]) -> Actor:
    from actors.cache.actor import CacheActor

    return CacheActor(settings=settings.cache, directory=settings.cache.path() / settings.bus.root, **common)


def _cost(settings: Settings, common: dict[str, Any]) -> Actor:
    from actors.cost.actor import CostActor
    from actors.pure.pricing import Pricing

    path = settings.pricing_path()
    if path is None:
        raise ConfigError("no pricing file: set cost.pricing or add config/pricing.toml")
    seed = [m.BudgetSet(scope=b.scope, name=b.name, period=b.period, limit_usd=b.limit_usd)
            for b in settings.cost.budgets]
    kinds = {n: p.kind for n, p in settings.providers.items()}
    quotas = {name: tier.quotas for name, tier in settings.tiers.items() if tier.quotas}
    return CostActor(pricing=Pricing.load(path), provider_kinds=kinds, budgets=seed, quotas=quotas,
                     shards=settings.cost.shards, compact_after_days=settings.cost.compact_after_days, **common)


def _supervisor(settings: Settings, common: dict[str, Any]) -> Actor:
    from actors.supervisor.actor import MOCK, SupervisorActor
    from actors.supervisor.judge import load_validators

    sup = settings.supervisor
    judge_with = sup.provider
    if not judge_with:  # Claude when it can run here, else the mock judge
        claude = settings.providers.get("anthropic")
        judge_with = "anthropic" if claude is not None and claude.missing_key() is None else MOCK
    try:
        validators = load_validators(sup.validators)
    except ValueError as exc:
        raise ConfigError(f"[supervisor] {exc}") from None
    return SupervisorActor(judge_with=judge_with, validators=validators, **common)


def _images(settings: Settings, common: dict[str, Any]) -> Actor:
    from actors.images.actor import ImagesActor

    return ImagesActor(settings=settings, **common)


def _gateway(settings: Settings, common: dict[str, Any]) -> Actor:
    from actors.gateway.actor import GatewayActor

    return GatewayActor(settings=settings, **common)


BUILDERS: dict[str, Builder] = {"router": _router, "health": _health, "cost": _cost, "cache": _cache,
                                "supervisor": _supervisor, "images": _images, "gateway": _gateway}


def _provider(provider: str, settings: Settings, common: dict[str, Any]) -> Actor:
    config = settings.providers.get(provider)
    if config is None:
        raise KeyError(provider)
    if env := config.missing_key():
        raise ConfigError(f"provider {provider} ({config.kind}) is not configured: set {env}")
    cls = provider_class(config.kind)
    return cls(provider=provider, config=config, max_concurrency=config.max_concurrency, **common)


def build_actor(name: str, settings: Settings) -> Actor:
    """One actor by name: a key of ``BUILDERS`` (``router``, ``health``, ``cost``, ``cache``) or
    ``provider.<name>``; ``KeyError`` for any other name. A provider whose API key is not set raises
    ``ConfigError`` naming the variable."""
    # a recorded root: requests name their reply subject, replies their request (bus.subjects)
    subjects = Subjects(settings.bus.root, recording=settings.recording() != "off")
    common = dict(subjects=subjects, default_budget_ms=settings.bus.default_budget_ms,
                  stop_grace_s=settings.bus.stop_grace_s, connect_options=settings.bus.connect_options())
    if name.startswith("provider."):
        return _provider(name.removeprefix("provider."), settings, common)
    builder = BUILDERS.get(name)
    if builder is None:
        raise KeyError(name)
    return builder(settings, common)


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
    cluster: NatsCluster | None = None  # `up --cluster N`: its servers (``server`` is then None)

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
    token: str | None = None,
    cluster: int = 0,
) -> AsyncIterator[Stack]:
    """Start nats-server (or reuse one answering at ``settings.bus.url`` when ``reuse``) and every
    actor; yields once all are ready; stops the actors gracefully, then the server. With ``token``
    the server requires it (the actors' own ``[bus.auth]`` must give it). ``cluster=N`` (N ≥ 2):
    N clustered servers on client ports ``port``…``port+N-1`` instead, streams and buckets with
    ``bus.replicas`` replicas (N, at most 3, when the config leaves it at 1), actors spread over them."""
    if cluster:
        async with _clustered(settings, cluster, port=port, store=store, token=token) as stack:
            yield stack
        return
    server = None
    reuse_url = f"nats://{settings.bus.host}:{port}" if port else settings.bus.url
    if reuse and await anyio.to_thread.run_sync(url_greets, reuse_url):
        url = reuse_url
    else:
        server = NatsServer(host=settings.bus.host, port=port, store=store, token=token)
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


@asynccontextmanager
async def _clustered(settings: Settings, size: int, *, port: int | None, store: str | Path | None,
                     token: str | None) -> AsyncIterator[Stack]:
    import msgspec

    if size < 2:
        raise ConfigError(f"a cluster needs at least 2 servers (got {size})")
    replicas = settings.bus.replicas if settings.bus.replicas != 1 else min(size, 3)
    settings = msgspec.structs.replace(settings, bus=msgspec.structs.replace(settings.bus, replicas=replicas))
    ports = [port + i for i in range(size)] if port else None
    cluster = NatsCluster(size, host=settings.bus.host, ports=ports, store=store, token=token)
    await anyio.to_thread.run_sync(cluster.start)
    try:
        actors = build_actors(settings)
        async with anyio.create_task_group() as tg:
            await tg.start(run_actors, actors, cluster.url)
            stack = Stack(url=cluster.url, actors=actors, server=None, cluster=cluster)
            try:
                yield stack
            finally:
                stack.stop()
    finally:
        await anyio.to_thread.run_sync(cluster.stop)
