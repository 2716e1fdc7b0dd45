"""Shared fixtures: one real nats-server per session, a subject root per test, and a helper that runs
actors built from a TOML snippet and yields a connected client.

Every test gets its own root (``t`` + 10 hex digits), so subjects, queue groups and discovery names
never overlap between tests even though they share the server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

import anyio
import msgspec
import nats
import pytest
from anyio.abc import TaskGroup

from actors import settings as settings_mod
from actors.runtime import Actor, run_actors
from actors.stack import build_actor, build_actors
from bus.client import Client
from bus.server import NatsServer
from bus.streams import delete_root


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # nats-py is asyncio-only


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory) -> str:
    with NatsServer(store=tmp_path_factory.mktemp("js")) as server:
        yield server.url


@pytest.fixture
def root() -> str:
    return "t" + uuid4().hex[:10]


def make_settings(toml: str, root: str, *, source: str = "test.toml") -> settings_mod.Settings:
    """Settings from a TOML snippet, with ``bus.root`` set to the test's root. A test that does not
    set ``bus.stop_grace_s`` gets 2 s, so a stalled handler cannot hold the test's teardown for 10 s."""
    settings = settings_mod.parse(toml, source)
    bus = settings.bus
    grace = bus.stop_grace_s if "stop_grace_s" in toml else 2.0
    bus = msgspec.structs.replace(bus, root=root, stop_grace_s=grace)
    cache = settings.cache
    if cache.dir == settings_mod.CacheSettings().dir:  # not under the working directory
        cache = msgspec.structs.replace(cache, dir=str(CACHE_DIR))
    return msgspec.structs.replace(settings, bus=bus, cache=cache).check()


# The cache actors' stores (one per root below it) of tests whose TOML sets no cache.dir. Named by
# the process and not made at import, so importing this module has no side effects.
CACHE_DIR = Path(tempfile.gettempdir()) / f"llmbus-test-cache-{os.getpid()}"


@pytest.fixture(scope="session", autouse=True)
def _remove_cache_dir() -> Iterator[None]:
    yield
    shutil.rmtree(CACHE_DIR, ignore_errors=True)


@dataclass
class Stack:
    url: str
    root: str
    settings: settings_mod.Settings
    actors: list[Actor]
    client: Client
    tg: TaskGroup
    extra: list[Actor] = field(default_factory=list)

    def actor(self, name: str) -> Actor:
        """The running actor called ``name`` ("router", "cache", "provider.<p>")."""
        wanted = name if name in ("router", "health", "cost", "cache") else "provider-" + name.removeprefix("provider.")
        for a in [*self.actors, *self.extra]:
            if a.name == wanted:
                return a
        raise KeyError(name)

    async def add(self, name: str) -> Actor:
        """Build actor ``name`` from this stack's settings and start it (ready when this returns)."""
        actor = build_actor(name, self.settings)
        await self.tg.start(actor.run, self.url)
        self.extra.append(actor)
        return actor

    def stop(self) -> None:
        for a in [*self.actors, *self.extra]:
            a.stop()


@pytest.fixture
def stack(nats_url: str, root: str) -> Callable:
    """``async with stack(TOML, names=None) as s:`` runs the named actors (default: all that the TOML
    configures) on the session server (or ``url``) under this test's root; ``s.client`` is connected."""

    @asynccontextmanager
    async def running(
        toml: str, names: list[str] | None = None, *, url: str | None = None
    ) -> AsyncIterator[Stack]:
        url = url or nats_url
        settings = make_settings(toml, root)
        actors = build_actors(settings, names)
        try:
            async with running_actors(settings, actors, url) as s:
                yield s
        finally:
            await delete_root_streams(url, root)

    @asynccontextmanager
    async def running_actors(settings, actors, url) -> AsyncIterator[Stack]:
        async with anyio.create_task_group() as tg:
            await tg.start(run_actors, actors, url)
            s = None
            try:
                async with Client(url, root=root) as client:
                    s = Stack(url, root, settings, actors, client, tg)
                    yield s
            finally:
                if s is not None:
                    s.stop()
                else:
                    for a in actors:
                        a.stop()

    return running


async def delete_root_streams(url: str, root: str) -> None:
    """Remove a test root's events stream and KV buckets: each reserves storage on the shared
    server (the events stream 1 GiB), so a suite of many roots would run out of it."""
    nc = await nats.connect(url.split(","))  # several seeds: a cluster
    try:
        await delete_root(nc, root)
    finally:
        await nc.close()
