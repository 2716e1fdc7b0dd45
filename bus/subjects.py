"""Every subject, queue group, stream and bucket name, built from one root prefix.

The root (default ``llm``) isolates tenants and tests: root ``t42`` gives subjects ``t42.ask``…,
stream ``T42_EVENTS`` and bucket ``t42_health``, so nothing collides.

=====================================  ===========================  ==============================
subject                                kind                         served by
=====================================  ===========================  ==============================
``<root>.ask``                         request (queue ``router``)   router
``<root>.provider.<name>.complete``    request (queue provider.N)   provider actor
``<root>.provider.<name>.stream``      request, many replies        provider actor
``<root>.cache.get|put|stats|clear``   request (queue ``cache``)    cache
``<root>.cache.coalesced``             event (queue ``cache``)      cache (counts)
``<root>.cache.done.<key>``            broadcast (no queue)         routers waiting on that key
``<root>.cost.reserve|commit|report``  request                      cost
``<root>.health.status`` / ``.reset``  request                      health
``<root>.supervisor.review``           request                      supervisor
``<root>.control.strategy``            request                      router
``<root>.cancel``                      broadcast (no queue)         every actor's runtime
``<root>.events.outcome.<name>``       event (stream EVENTS)        health
``<root>.events.usage.<name>``         event (stream EVENTS)        cost
``<root>.reply.<client>.<token>``      replies to our requests      the requesting client
=====================================  ===========================  ==============================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")

ROUTER_QUEUE = "router"
CACHE_QUEUE = "cache"
HEALTH_QUEUE = "health"
COST_QUEUE = "cost"  # several cost actors share the requests; budgets stay exact by compare-and-set


def check_token(value: str, what: str) -> str:
    """A root or name must be one subject token (also valid in stream and bucket names)."""
    if not _TOKEN.match(value):
        raise ValueError(f"{what} {value!r} must match [A-Za-z0-9_-]+ (one NATS subject token)")
    return value


@dataclass(frozen=True)
class Subjects:
    root: str = "llm"

    def __post_init__(self) -> None:
        check_token(self.root, "subject root")

    # --- requests -----------------------------------------------------------------------------
    @property
    def ask(self) -> str:
        return f"{self.root}.ask"

    def provider_complete(self, name: str) -> str:
        return f"{self.root}.provider.{name}.complete"

    def provider_stream(self, name: str) -> str:
        return f"{self.root}.provider.{name}.stream"

    @staticmethod
    def provider_queue(name: str) -> str:
        return f"provider.{name}"

    def service(self, actor: str, verb: str) -> str:
        """Request subjects of the service actors: ``service("cost", "reserve")``."""
        return f"{self.root}.{actor}.{verb}"

    def cache_done(self, key: str) -> str:
        """Where the router leading a flight of identical asks publishes its result (``FlightEnd``)."""
        return f"{self.root}.cache.done.{key}"

    @property
    def control_strategy(self) -> str:
        return f"{self.root}.control.strategy"

    # --- broadcast and events -----------------------------------------------------------------
    @property
    def cancel(self) -> str:
        return f"{self.root}.cancel"

    def outcome(self, provider: str) -> str:
        return f"{self.root}.events.outcome.{provider}"

    def usage(self, provider: str) -> str:
        return f"{self.root}.events.usage.{provider}"

    @property
    def events(self) -> str:
        return f"{self.root}.events.>"

    # --- replies ------------------------------------------------------------------------------
    def reply_prefix(self, client: str) -> str:
        return f"{self.root}.reply.{client}"

    # --- JetStream names ----------------------------------------------------------------------
    @property
    def events_stream(self) -> str:
        return f"{self.root.upper().replace('-', '_')}_EVENTS"

    def bucket(self, purpose: str) -> str:
        return f"{self.root}_{purpose}"
