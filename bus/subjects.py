"""Every subject, queue group, stream and bucket name, built from one root prefix.

The root (default ``llm``) isolates tenants and tests: root ``t42`` gives subjects ``t42.ask``…,
stream ``T42_EVENTS`` and bucket ``t42_health``, so nothing collides.

=====================================  ===========================  ==============================
subject                                kind                         served by
=====================================  ===========================  ==============================
``<root>.ask``                         request (queue ``router``)   router
``<root>.ask.stream``                  request, many replies        router (Chunks, then the Answer)
``<root>.provider.<name>.complete``    request (queue provider.N)   provider actor
``<root>.provider.<name>.stream``      request, many replies        provider actor
``<root>.cache.get|put|stats|clear``   request (queue ``cache``)    cache
``<root>.cache.coalesced``             event (queue ``cache``)      cache (counts)
``<root>.cache.done.<key>``            broadcast (no queue)         routers waiting on that key
``<root>.cost.reserve|commit|report``  request                      cost
``<root>.health.status`` / ``.reset``  request                      health
``<root>.health.status.each``          request (no queue: all)      every health copy
``<root>.cache.stats.each``            request (no queue: all)      every cache copy
``<root>.supervisor.review``           request                      supervisor
``<root>.control.strategy``            request                      router
``<root>.control.experiment``          request                      router (rollout share in KV)
``<root>.router.held``                 request, every router        routers (a retry asks: who runs it?)
``<root>.cancel``                      broadcast (no queue)         every actor's runtime
``<root>.stream.ack``                  broadcast (no queue)         every actor's runtime
``<root>.events.outcome.<name>``       event (stream EVENTS)        health
``<root>.events.usage.<name>``         event (stream EVENTS)        cost
``<root>.events.experiment.<e>``       event (stream EVENTS)        ``llmbus experiments``
``<root>.events.shadow.<e>``           event (stream EVENTS)        ``llmbus experiments``
``<root>.events.alert``                event (stream EVENTS)        ``llmbus alerts``, webhook sink
``<root>.image``                       request (queue ``images``)   images actor (tier policy, quota)
``<root>.provider.<name>.image``       request (queue provider.N)   provider actor (images)
``<root>.cost.quota.reserve|commit``   request                      cost (count quotas per tier)
``<root>.reply.<client>.<token>``      replies to our requests      the requesting client
=====================================  ===========================  ==============================
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bus import messages as m

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")

ROUTER_QUEUE = "router"
CACHE_QUEUE = "cache"
HEALTH_QUEUE = "health"
COST_QUEUE = "cost"  # several cost actors share the requests; budgets stay exact by compare-and-set
SUPERVISOR_QUEUE = "supervisor"
IMAGES_QUEUE = "images"


def check_token(value: str, what: str) -> str:
    """A root or name must be one subject token (also valid in stream and bucket names)."""
    if not _TOKEN.match(value):
        raise ValueError(f"{what} {value!r} must match [A-Za-z0-9_-]+ (one NATS subject token)")
    return value


@dataclass(frozen=True)
class Subjects:
    root: str = "llm"
    # the root is recorded (``[record]`` not "off"; ``actors.stack`` says so): a request sent under it
    # names its reply subject (``Llm-Reply``), so the recording pairs the reply with it and the reply
    # stays bare; a reply to a request that does not (a client's ask) carries its request's ask id,
    # call id and subject instead. Not part of a Subjects' identity: the subjects are the same.
    recording: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        check_token(self.root, "subject root")

    # --- requests -----------------------------------------------------------------------------
    @property
    def ask(self) -> str:
        return f"{self.root}.ask"

    @property
    def ask_stream(self) -> str:
        return f"{self.root}.ask.stream"

    def provider_complete(self, name: str) -> str:
        return f"{self.root}.provider.{name}.complete"

    def provider_stream(self, name: str) -> str:
        return f"{self.root}.provider.{name}.stream"

    @staticmethod
    def provider_queue(name: str) -> str:
        return f"provider.{name}"

    def cache_done(self, key: str) -> str:
        """Where the router leading a flight of identical asks publishes its result (``FlightEnd``)."""
        return f"{self.root}.cache.done.{key}"

    @property
    def control_strategy(self) -> str:
        return f"{self.root}.control.strategy"

    @property
    def router_held(self) -> str:
        """Where a router asks every other whether one of them runs (or ran) an ask id (a retry)."""
        return f"{self.root}.router.held"

    # --- broadcast and events -----------------------------------------------------------------
    @property
    def cancel(self) -> str:
        return f"{self.root}.cancel"

    @property
    def stream_ack(self) -> str:
        """Where a stream's consumer says it is still there (``StreamAck``)."""
        return f"{self.root}.stream.ack"

    def outcome(self, provider: str) -> str:
        return f"{self.root}.events.outcome.{provider}"

    def usage(self, provider: str) -> str:
        return f"{self.root}.events.usage.{provider}"

    def experiment_event(self, name: str, shadow: bool = False) -> str:
        """``<root>.events.experiment.<name>`` (each ask of an experiment) or ``.events.shadow.<name>``."""
        return f"{self.root}.events.{'shadow' if shadow else 'experiment'}.{name}"

    @property
    def alert_event(self) -> str:
        """Where the health actor announces an alert firing or resolving (``Alert``)."""
        return f"{self.root}.events.alert"

    def health_event(self, provider: str) -> str:
        """Where the health actor announces a breaker's change (``BreakerChange``)."""
        return f"{self.root}.events.health.{provider}"

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

    @property
    def record_stream(self) -> str:
        """The stream that records the root's requests and replies (``llmbus trace``/``replay``)."""
        return f"{self.root.upper().replace('-', '_')}_RECORD"

    @property
    def recorded(self) -> list[str]:
        """What the recording captures: every request and reply subject under the root — not
        ``events.>`` (its own stream), nor broadcasts (``cancel``, ``cache.done.*``)."""
        r = self.root
        return [f"{r}.ask", f"{r}.ask.stream", f"{r}.provider.>", f"{r}.cache.get", f"{r}.cache.put",
                f"{r}.cost.>", f"{r}.health.>", f"{r}.supervisor.>", f"{r}.reply.>", f"{r}.recorded.index.*"]

    def recorded_index(self, ask_id: str) -> str:
        """Where a router marks an ask's start in the recording (an empty message): ``llmbus trace``
        finds the ask there in one lookup instead of scanning the stream. The id is hashed (an ask
        id may hold ``.``, ``*`` or ``>``)."""
        return f"{self.root}.recorded.index.{hashlib.blake2b(ask_id.encode(), digest_size=12).hexdigest()}"

    @property
    def recorded_errors(self) -> str:
        """What the recording captures with sampling ``errors``: the failed asks' windows, written
        under ``<root>.recorded.<original subject>`` (``actors.recorder``)."""
        return f"{self.root}.recorded.>"

    def bucket(self, purpose: str) -> str:
        return f"{self.root}_{purpose}"


# --- the RPC table -------------------------------------------------------------------------------
# Every request one actor sends another: its subject (from the root, and a provider's name where the
# subject has one), its queue group, its request type and what it answers. Call sites name a row —
# ``rpc.service(COST_RESERVE, request, …)``, ``Endpoint.serving(COST_RESERVE, …)`` — and never build a
# subject or pair a reply type with a request by hand. ``reply`` None: a one-way message (no reply).


@dataclass(frozen=True)
class Service:
    name: str  # the endpoint name in NATS micro discovery ("reserve")
    pattern: str  # "{root}.cost.reserve", "{root}.provider.{name}.complete"
    request: type
    reply: Any  # a union with Failure, or None for one-way messages
    queue: str = ""  # "{name}" is replaced like in the pattern
    streaming: bool = False  # many replies: Chunks, then one final reply
    _subjects: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def subject(self, subjects: Subjects, name: str = "") -> str:
        key = (subjects.root, name)
        got = self._subjects.get(key)
        if got is None:
            got = self._subjects[key] = self.pattern.format(root=subjects.root, name=name)
        return got

    def queue_for(self, name: str = "") -> str:
        return self.queue.format(name=name)

    @property
    def decoder(self) -> msgspec.json.Decoder:
        from bus import codec  # codec builds each decoder once

        return codec.decoder(self.reply)


ASK = Service("ask", "{root}.ask", m.Ask, m.AskReply, ROUTER_QUEUE)
ASK_STREAM = Service("ask_stream", "{root}.ask.stream", m.Ask, m.StreamReply, ROUTER_QUEUE, streaming=True)
PROVIDER_COMPLETE = Service("complete", "{root}.provider.{name}.complete", m.Complete, m.CompleteReply,
                            "provider.{name}")
PROVIDER_STREAM = Service("stream", "{root}.provider.{name}.stream", m.Complete, m.StreamReply,
                          "provider.{name}", streaming=True)
CACHE_GET = Service("get", "{root}.cache.get", m.CacheGet, m.CacheGetReply, CACHE_QUEUE)
CACHE_PUT = Service("put", "{root}.cache.put", m.CachePut, m.CachePutReply, CACHE_QUEUE)
CACHE_STATS = Service("stats", "{root}.cache.stats", m.CacheStatsQuery, m.CacheStats | m.Failure, CACHE_QUEUE)
CACHE_CLEAR = Service("clear", "{root}.cache.clear", m.CacheClear, m.CacheCleared | m.Failure, CACHE_QUEUE)
CACHE_COALESCED = Service("coalesced", "{root}.cache.coalesced", m.CacheCoalesced, None, CACHE_QUEUE)
COST_RESERVE = Service("reserve", "{root}.cost.reserve", m.Reserve, m.Reserved | m.Failure, COST_QUEUE)
COST_COMMIT = Service("commit", "{root}.cost.commit", m.Commit, None, COST_QUEUE)
COST_REPORT = Service("report", "{root}.cost.report", m.CostQuery, m.CostReport | m.Failure, COST_QUEUE)
COST_BUDGET_SET = Service("budget_set", "{root}.cost.budget.set", m.BudgetSet, m.BudgetReport | m.Failure, COST_QUEUE)
COST_BUDGETS = Service("budgets", "{root}.cost.budgets", m.BudgetQuery, m.BudgetReport | m.Failure, COST_QUEUE)
HEALTH_STATUS = Service("status", "{root}.health.status", m.HealthQuery, m.HealthReport | m.Failure, HEALTH_QUEUE)
# every copy answers these (no queue group): `llmbus status` and `cache stats` merge the copies' figures
HEALTH_STATUS_EACH = Service("status_each", "{root}.health.status.each", m.HealthQuery, m.HealthReport | m.Failure)
CACHE_STATS_EACH = Service("stats_each", "{root}.cache.stats.each", m.CacheStatsQuery, m.CacheStats | m.Failure)
HEALTH_RESET = Service("reset", "{root}.health.reset", m.HealthReset, m.HealthReport | m.Failure, HEALTH_QUEUE)
CONTROL_STRATEGY = Service("strategy", "{root}.control.strategy", m.StrategySet | m.StrategyQuery, m.StrategyReport | m.Failure,
                           ROUTER_QUEUE)
CONTROL_EXPERIMENT = Service("experiment", "{root}.control.experiment", m.ExperimentSet | m.ExperimentQuery,
                             m.ExperimentReport | m.Failure, ROUTER_QUEUE)
SUPERVISOR_REVIEW = Service("review", "{root}.supervisor.review", m.Review, m.ReviewReply, SUPERVISOR_QUEUE)
IMAGE = Service("image", "{root}.image", m.ImageAsk, m.ImageReply, IMAGES_QUEUE)
PROVIDER_IMAGE = Service("image", "{root}.provider.{name}.image", m.ImageRequest, m.ImageReply, "provider.{name}")
COST_QUOTA_RESERVE = Service("quota_reserve", "{root}.cost.quota.reserve", m.QuotaReserve, m.QuotaGranted | m.Failure,
                             COST_QUEUE)
COST_QUOTA_COMMIT = Service("quota_commit", "{root}.cost.quota.commit", m.QuotaCommit, m.QuotaGranted | m.Failure,
                            COST_QUEUE)
COST_QUOTAS = Service("quotas", "{root}.cost.quotas", m.QuotaQuery, m.QuotaReport | m.Failure, COST_QUEUE)

RPC_TABLE: tuple[Service, ...] = (
    ASK, ASK_STREAM, PROVIDER_COMPLETE, PROVIDER_STREAM, CACHE_GET, CACHE_PUT, CACHE_STATS, CACHE_CLEAR, CACHE_COALESCED,
    COST_RESERVE, COST_COMMIT, COST_REPORT, COST_BUDGET_SET, COST_BUDGETS, HEALTH_STATUS, HEALTH_RESET,
    HEALTH_STATUS_EACH, CACHE_STATS_EACH,
    CONTROL_STRATEGY, CONTROL_EXPERIMENT, SUPERVISOR_REVIEW,
    IMAGE, PROVIDER_IMAGE, COST_QUOTA_RESERVE, COST_QUOTA_COMMIT, COST_QUOTAS,
)
