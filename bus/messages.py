"""The whole llmbus protocol: every message that crosses the bus.

All messages are frozen, keyword-only, tagged msgspec Structs encoded as JSON, so any NATS client in
any language can publish an ask: ``{"type": "Ask", "id": "a1", "messages": [...]}``. Schemas only
grow: new fields get defaults; nothing is renamed on the wire. Unknown fields from newer peers are
ignored (no ``forbid_unknown_fields`` here, unlike config files).

Which fields are encoded: every one, except on the hot path. ``Ask``, ``Complete``, ``Completion``,
``Chunk``, ``Outcome`` and ``Usage`` (one or more per provider call) leave out fields at their
default (``_HotMsg``), and so do the values only they carry (``Message`` and the content parts
``Text``, ``Image``, ``Document``, ``ToolResult``; ``Tool``, ``Params``). Everything else (answers,
failures, reports, what is stored in KV and streams) carries every field (``_Msg``, ``_Value``), so
a reader without these classes — jq on ``--json``, another language, an older or newer peer — sees
``"state": "closed"`` and ``"cost_usd": 0.0`` rather than guessing what a missing field means
(``null`` means unknown). Value types carried on both sides (``TokenUsage``, ``ToolCall``,
``Step``) carry every field too: a count or an argument list reads as zero or empty only where it
says so (an Answer's usage, a ledger entry in KV), and a hot message pays a few bytes for it (a
``Completion`` whose whole usage is the default still leaves it out).

Headers (see ``bus.deadline``): ``Llm-Ask-Id`` (correlation), ``Llm-Budget-Ms`` (milliseconds left
when the message was sent).
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec.structs import force_setattr

# ---------------------------------------------------------------------------------------------
# Failure kinds. A set that only grows. `Failure.kind` is decoded as a plain string (a Literal would
# make older peers reject newer kinds) and a kind this version does not know is kept as it came, on
# the wire and in the object: it is not retryable unless the sender says so (`retryable` travels
# with it), and `bus.errors.error_for` gives it `UnknownFailure`. Code here names kinds only by
# these constants (a test scans bus/ and actors/ for `Failure(kind="<literal>")`).
# ---------------------------------------------------------------------------------------------
TIMEOUT = "timeout"
RATE_LIMITED = "rate_limited"
OVERLOADED = "overloaded"
UNAVAILABLE = "unavailable"
AUTH = "auth"
BAD_REQUEST = "bad_request"
CONTEXT_LENGTH = "context_length"
CONTENT_FILTER = "content_filter"
INVALID_OUTPUT = "invalid_output"
BUDGET_EXCEEDED = "budget_exceeded"
NO_HEALTHY_PROVIDER = "no_healthy_provider"
ALL_FAILED = "all_failed"
CANCELLED = "cancelled"
INTERNAL = "internal"

FAILURE_KINDS = frozenset(
    {
        TIMEOUT, RATE_LIMITED, OVERLOADED, UNAVAILABLE, AUTH, BAD_REQUEST, CONTEXT_LENGTH,
        CONTENT_FILTER, INVALID_OUTPUT, BUDGET_EXCEEDED, NO_HEALTHY_PROVIDER, ALL_FAILED,
        CANCELLED, INTERNAL,
    }
)
# Kinds where trying the same request again (later, or elsewhere) may succeed.
RETRYABLE_KINDS = frozenset({TIMEOUT, RATE_LIMITED, OVERLOADED, UNAVAILABLE, INTERNAL})


class _Msg(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Base of every wire message (the tag is the class name, in the ``type`` field); every field
    is encoded, defaults included."""


class _HotMsg(_Msg, frozen=True, kw_only=True, omit_defaults=True):
    """Base of the hot-path messages (one or more per provider call): defaults are left out."""


class _Value(msgspec.Struct, frozen=True, kw_only=True):
    """Base of plain (untagged) value types embedded in messages; every field is encoded."""


class _HotValue(_Value, frozen=True, kw_only=True, omit_defaults=True):
    """Base of values carried only by hot-path messages: defaults are left out."""


# --- content ---------------------------------------------------------------------------------


class Text(msgspec.Struct, frozen=True, kw_only=True, tag=True, omit_defaults=True):
    text: str


class Image(msgspec.Struct, frozen=True, kw_only=True, tag=True, omit_defaults=True):
    """An image by URL or inline base64 ``data`` with its media type."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None


class Document(msgspec.Struct, frozen=True, kw_only=True, tag=True, omit_defaults=True):
    """A document (e.g. a PDF) inline as base64 ``data``, or as extracted ``text``."""

    data: str | None = None
    text: str | None = None
    media_type: str | None = None
    name: str | None = None


class ToolCall(msgspec.Struct, frozen=True, kw_only=True, tag=True):  # every field: Answers carry it too
    id: str
    name: str
    arguments: dict[str, Any] = {}


class ToolResult(msgspec.Struct, frozen=True, kw_only=True, tag=True, omit_defaults=True):
    call_id: str
    content: str
    is_error: bool = False


Part = Text | Image | Document | ToolCall | ToolResult


class Message(_HotValue, frozen=True, kw_only=True):
    """One chat message. ``content`` is a plain string or a list of parts."""

    role: str  # "system" | "user" | "assistant" | "tool"
    content: str | list[Part]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, Text))


class Tool(_HotValue, frozen=True, kw_only=True):
    """A tool the model may call; ``parameters`` is a JSON Schema object."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = {}


class Params(_HotValue, frozen=True, kw_only=True):
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: list[str] = []
    model: str | None = None  # a model hint; providers map it or use their default
    # which tool the model must call, OpenAI's form ("auto" | "none" | "required" | {"type": "function", …}):
    # passed through to providers that take it (the gateway's tool_choice)
    tool_choice: str | dict[str, Any] | None = None


class TokenUsage(_Value, frozen=True, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0


class Step(_Value, frozen=True, kw_only=True):
    """One hop of an answer's route: which provider, what happened ("ok" or a failure kind), how long."""

    provider: str
    outcome: str  # "ok", a failure kind, "cancelled" (a loser the strategy stopped), "breaker_open", …
    ms: float
    detail: str | None = None
    call_id: str | None = None  # the call's id (its Complete.id), for traces
    purpose: str | None = None  # what the call was for, when not the answer itself ("review", "stage1", …)


# --- requests and replies ----------------------------------------------------------------------


class Ask(_HotMsg, frozen=True, kw_only=True):
    """A client's question. ``id`` is the client's idempotency key, stable across its retries."""

    id: str
    messages: list[Message]
    strategy: str | None = None  # overrides the router's default strategy
    providers: list[str] | None = None  # overrides the strategy's provider list (in order)
    tier: str | None = None
    user: str | None = None
    schema: dict[str, Any] | None = None  # JSON Schema for structured output
    tools: list[Tool] = []
    params: Params = Params()
    cache: str = "use"  # "use" | "refresh" | "skip"
    budget_ms: int | None = None  # used when the message carries no Llm-Budget-Ms header
    stream: bool = False
    labels: dict[str, str] = {}
    max_cost_usd: float | None = None  # a ceiling for this ask: worst cases are checked before each call
    cache_namespace: str | None = None  # the cache namespace (it sets the TTL); None: cache.default_namespace
    # per-ask overrides of the strategy's options (``llmbus strategies`` lists them); a bad one is bad_request
    strategy_options: dict[str, Any] = {}
    # who is served first when a router is full (higher first); None: the tier's ``priority``
    priority: int | None = None


class Answer(_Msg, frozen=True, kw_only=True):
    id: str
    text: str
    data: Any = None  # parsed structured output, when the ask had a schema
    confidence: float | None = None
    providers: list[str] = []
    usage: TokenUsage = TokenUsage()
    cost_usd: float | None = 0.0  # the sum over every call; None when a model has no price (unknown)
    cached: bool = False
    route: list[Step] = []  # every call, in order (a cancelled loser included), after providers skipped
    stage: str = "final"  # "draft" | "enhanced" | "final"
    metadata: dict[str, Any] = {}
    model: str | None = None  # the model that answered
    tool_calls: list[ToolCall] = []  # the model's tool calls, passed through from the provider
    strategy: str | None = None  # the strategy that made this answer


class Complete(_HotMsg, frozen=True, kw_only=True):
    """One provider call. ``id`` is the call id; ``ask_id`` the ask it serves."""

    id: str
    ask_id: str
    messages: list[Message]
    schema: dict[str, Any] | None = None
    tools: list[Tool] = []
    params: Params = Params()
    tier: str | None = None
    user: str | None = None
    labels: dict[str, str] = {}  # the ask's labels (flags, A/B, mock fault injection)
    strategy: str | None = None  # the strategy that made this call (for cost reports)

    @classmethod
    def of(
        cls,
        ask: Ask,
        *,
        id: str,
        strategy: str | None = None,
        messages: list[Message] | None = None,
        schema: dict[str, Any] | None = None,
        no_schema: bool = False,
        params: Params | None = None,
    ) -> Complete:
        """The provider call for ``ask`` (the one place an Ask becomes a Complete), with overrides."""
        return cls(
            id=id, ask_id=ask.id, messages=ask.messages if messages is None else messages,
            schema=None if no_schema else (ask.schema if schema is None else schema),
            tools=ask.tools, params=ask.params if params is None else params,
            tier=ask.tier, user=ask.user, labels=ask.labels, strategy=strategy,
        )


class Completion(_HotMsg, frozen=True, kw_only=True):
    id: str
    ask_id: str
    provider: str
    model: str
    text: str
    data: Any = None
    tool_calls: list[ToolCall] = []
    usage: TokenUsage = TokenUsage()
    finish_reason: str = "stop"
    latency_ms: float = 0.0
    confidence: float | None = None


class Chunk(_HotMsg, frozen=True, kw_only=True):
    """A streamed piece: a text delta or a progress stage. A stream ends with an Answer,
    Completion or Failure."""

    id: str
    seq: int
    delta: str = ""
    stage: str | None = None
    # the text streamed so far is void (a provider's stream broke; the next one starts over): the
    # consumer discards what it has, then appends this chunk's delta
    reset: bool = False
    # a worker's state, for live progress (the router's streamed asks): ``worker`` names the call
    # ("a", "b (regenerate)", "supervisor"), ``state`` is "running", "ok", a failure kind or "cancelled";
    # such a chunk carries no text
    worker: str | None = None
    state: str | None = None


class StreamAck(_HotMsg, frozen=True, kw_only=True):
    """On ``<root>.stream.ack`` (broadcast): the consumer of a stream is still there and has read
    up to ``seq``. Sent every few chunks or seconds to a producer asked for acks (the request's
    ``Llm-Ack-Ms`` header); a producer that hears none for two intervals stops the work behind it."""

    ask_id: str
    call_id: str | None = None  # the stream's request id (a Complete's call id; an Ask's own id)
    seq: int = 0


class Cancel(_Msg, frozen=True, kw_only=True):
    """Stop the work of this ask now (only the call ``call_id`` when given)."""

    ask_id: str
    call_id: str | None = None
    reason: str = ""
    deadline: bool = False  # the caller's deadline passed: the work timed out (health counts it so)


class Failure(_Msg, frozen=True, kw_only=True):
    kind: str
    message: str
    provider: str | None = None
    retry_after_s: float | None = None
    retryable: bool | None = None  # None: derived from the kind (False for a kind this version does not know)
    route: list[Step] = []  # what was tried before failing, when a router answers

    def __post_init__(self) -> None:
        if self.retryable is None:
            force_setattr(self, "retryable", self.kind in RETRYABLE_KINDS)


# --- events (facts, not requests) ------------------------------------------------------------


class Outcome(_HotMsg, frozen=True, kw_only=True):
    provider: str
    ok: bool
    kind: str | None = None
    latency_ms: float = 0.0
    retry_after_s: float | None = None
    at: float = 0.0  # unix time
    source: str = "provider"  # "router" when a router saw it (no responders: the provider is gone)
    detail: str = ""  # a failure's message (secrets already cut out), kept by health as the breaker's detail


class Usage(_HotMsg, frozen=True, kw_only=True):
    ask_id: str
    call_id: str
    provider: str
    model: str
    usage: TokenUsage
    tier: str | None = None
    user: str | None = None
    strategy: str | None = None
    at: float = 0.0  # unix time
    experiment: str | None = None  # "<experiment>/<arm>" (the Complete's labels["experiment"]): A/B and shadow cost


class Outcomes(_HotMsg, frozen=True, kw_only=True):
    """Several ``Outcome`` events of one provider in one message: a provider sends what happened
    within a few milliseconds together (one publish and one stored stream message instead of one
    per call). Consumers read ``OutcomeEvent``: either form."""

    items: list[Outcome]


class Usages(_HotMsg, frozen=True, kw_only=True):
    """Several ``Usage`` events of one provider in one message (as ``Outcomes``)."""

    items: list[Usage]


OutcomeEvent = Outcome | Outcomes
UsageEvent = Usage | Usages


# --- cost --------------------------------------------------------------------------------------


class LedgerEntry(_Msg, frozen=True, kw_only=True):
    """One priced call, as the cost actor keeps it (KV ``ledger.<hash of ask id, call id>``)."""

    ask_id: str
    call_id: str
    provider: str
    model: str
    usage: TokenUsage
    cost_usd: float | None  # None: the model has no price
    tier: str | None = None
    user: str | None = None
    strategy: str | None = None
    day: str = ""  # UTC date, YYYY-MM-DD
    at: float = 0.0
    experiment: str | None = None  # "<experiment>/<arm>": control, variant or shadow (counted apart)


class Reserve(_Msg, frozen=True, kw_only=True):
    """Hold ``amount_usd`` (a call's worst case) against the budgets of ``user`` and ``tier``."""

    call_id: str
    ask_id: str
    amount_usd: float
    user: str | None = None
    tier: str | None = None
    expires_at: float = 0.0  # unix time: released then if never committed (the ask's deadline)


class Reserved(_Msg, frozen=True, kw_only=True):
    call_id: str
    budgets: list[str] = []  # the budgets it counts against, e.g. "user:alice:day"


class Commit(_Msg, frozen=True, kw_only=True):
    """The call is over: hold ``actual_usd`` until its usage reaches the ledger (0 for a failure)."""

    call_id: str
    actual_usd: float = 0.0
    # who asked (the reservation's shard at a cost actor with ``cost.shards`` > 1; None from older routers)
    user: str | None = None
    tier: str | None = None


class Budget(_Value, frozen=True, kw_only=True):
    scope: str  # "user" | "tier"
    name: str
    period: str  # "day" | "month"
    limit_usd: float
    spent_usd: float = 0.0
    reserved_usd: float = 0.0


class BudgetSet(_Msg, frozen=True, kw_only=True):
    scope: str
    name: str
    period: str
    limit_usd: float | None  # None removes the budget


class BudgetQuery(_Msg, frozen=True, kw_only=True):
    pass


class BudgetReport(_Msg, frozen=True, kw_only=True):
    budgets: list[Budget] = []


class CostQuery(_Msg, frozen=True, kw_only=True):
    by: str = "provider"  # provider | model | tier | user | day | strategy
    since: str | None = None  # YYYY-MM-DD (UTC), inclusive
    until: str | None = None  # YYYY-MM-DD (UTC), inclusive


class CostLine(_Value, frozen=True, kw_only=True):
    key: str
    calls: int = 0
    asks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = 0  # calls whose model has no price: their cost is unknown, not zero


class CostReport(_Msg, frozen=True, kw_only=True):
    by: str
    lines: list[CostLine] = []
    total: CostLine = CostLine(key="total")
    avg_cost_per_ask_usd: float | None = None


# --- cache -------------------------------------------------------------------------------------


class CacheEntry(_Msg, frozen=True, kw_only=True):
    """One cached answer as the cache actor stores it, and its reply to a ``CacheGet`` that hits.
    Its own expiry travels with it (diskcache's expiry reads ``time.time()``; this one is checked
    against the actor's clock, which a test can drive). Times are unix seconds."""

    answer: Answer
    namespace: str
    stored_at: float
    expires_at: float


class CacheGet(_Msg, frozen=True, kw_only=True):
    key: str  # ``actors.router.cache_key.cache_key`` of the ask
    namespace: str
    count: bool = True  # False: not counted as a hit or miss (a flight leader's second look)


class CacheMiss(_Msg, frozen=True, kw_only=True):
    pass


class CachePut(_Msg, frozen=True, kw_only=True):
    key: str
    namespace: str
    answer: Answer


class CacheStored(_Msg, frozen=True, kw_only=True):
    expires_at: float


class CacheCoalesced(_Msg, frozen=True, kw_only=True):
    """Event on ``<root>.cache.coalesced`` (no reply): a router answered ``count`` asks with the
    answer of an identical ask in flight, for the cache actor's counts."""

    namespace: str
    count: int = 1


class FlightEnd(_Msg, frozen=True, kw_only=True):
    """On ``<root>.cache.done.<key>``: the result of the ask that led a flight, for the routers
    waiting on the same key. ``result`` None: the leader gave up (cancelled); a waiter takes over."""

    result: Answer | Failure | None = None


class CacheStatsQuery(_Msg, frozen=True, kw_only=True):
    pass


class NamespaceStats(_Value, frozen=True, kw_only=True):
    namespace: str
    ttl_s: float
    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    stores: int = 0


class CacheStats(_Msg, frozen=True, kw_only=True):
    """Counts since the cache actor started; ``entries`` and ``bytes`` are the store's (on disk)."""

    directory: str
    entries: int = 0
    bytes: int = 0
    size_limit_bytes: int = 0
    namespaces: list[NamespaceStats] = []
    total: NamespaceStats = NamespaceStats(namespace="total", ttl_s=0.0)


class CacheClear(_Msg, frozen=True, kw_only=True):
    namespace: str | None = None  # None: every namespace


class CacheCleared(_Msg, frozen=True, kw_only=True):
    removed: int
    namespace: str | None = None


# --- health ------------------------------------------------------------------------------------


class BreakerState(_Msg, frozen=True, kw_only=True):
    """One provider's circuit breaker, as the health actor stores it in the KV bucket
    ``<root>_health`` under ``state.<provider>`` (routers watch it). Times are unix seconds.
    ``misconfigured`` (an auth failure: a leaked, revoked or blocked key) is never probed: only
    ``llmbus health reset`` or a successful call (``llmbus test``) closes it."""

    provider: str
    state: str = "closed"  # "closed" | "open" | "half_open" | "misconfigured"
    consecutive_failures: int = 0
    half_open_successes: int = 0
    open_until: float = 0.0  # when OPEN turns HALF_OPEN
    reason: str = ""  # the failure kind that opened it (or made it misconfigured)
    probe_round: int = 0  # one half-open probe per round, fleet-wide
    changed_at: float = 0.0
    detail: str = ""  # what the provider said then (the Outcome's detail), for the status report


class ProviderHealth(_Value, frozen=True, kw_only=True, tag=True):
    """One provider's health; also what the health actor keeps in KV under ``metrics.<provider>``
    (tagged, like everything stored: entries written before the tag was added still decode)."""

    breaker: BreakerState
    calls: int = 0
    successes: int = 0
    errors: dict[str, int] = {}  # failure kind -> count
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    last_success: float | None = None
    last_failure: float | None = None
    last_error: str = ""
    transitions: list[str] = []  # recent "at from→to (reason)" lines


class HealthQuery(_Msg, frozen=True, kw_only=True):
    detailed: bool = False


class HealthReset(_Msg, frozen=True, kw_only=True):
    provider: str | None = None  # None: every provider


class HealthReport(_Msg, frozen=True, kw_only=True):
    providers: list[ProviderHealth] = []
    at: float = 0.0


class BreakerChange(_Msg, frozen=True, kw_only=True):
    """Event on ``<root>.events.health.<provider>``: a breaker changed state."""

    provider: str
    before: str
    after: str
    reason: str = ""
    open_until: float = 0.0
    at: float = 0.0


# --- supervisor (review, merge, score) ------------------------------------------------------------

CONTRADICTION = "contradiction"  # candidates disagree on a part
UNSUPPORTED = "unsupported"  # a claim no other candidate (or validator) backs
MISSING = "missing"  # a part of the request no candidate answered
FORMAT = "format"  # a part that breaks the schema or a validator's rule


class Candidate(_Value, frozen=True, kw_only=True):
    """One draft under review: who wrote it, its text and structured data (``data``'s top-level
    keys are its parts; a part regenerated later keeps its key)."""

    provider: str
    text: str = ""
    data: Any = None


class ReviewIssue(_Value, frozen=True, kw_only=True):
    kind: str  # CONTRADICTION | UNSUPPORTED | MISSING | FORMAT (a kind this version does not know: keep it)
    where: str  # a part id or a JSON path ("$.day2")
    detail: str
    providers: list[str] = []  # the providers involved (for a contradiction: the dissenters)
    source: str = ""  # who found it: "model", "mock", or a validator's "module:function"


class Regenerate(_Value, frozen=True, kw_only=True):
    """Redo one part: ``provider`` writes ``part`` again, told ``fix``."""

    part: str
    provider: str
    fix: str


class Review(_Msg, frozen=True, kw_only=True):
    """Review ``candidates`` for the ask (``messages`` and ``schema`` are the ask's)."""

    ask_id: str
    messages: list[Message]
    candidates: list[Candidate]
    schema: dict[str, Any] | None = None
    cycle: int = 0  # 0: the drafts; n: after the n-th regeneration


class Verdict(_Msg, frozen=True, kw_only=True):
    """The supervisor's answer: the merged answer, a score in [0, 1] with the rubric behind it, the
    issues found and the targeted regenerations asked for (empty: nothing left to fix)."""

    text: str
    data: Any = None
    score: float
    rubric: dict[str, float] = {}  # criterion -> its score in [0, 1] ("agreement", "validators", …)
    issues: list[ReviewIssue] = []
    regenerate: list[Regenerate] = []
    supervisor: str = ""  # who judged: a provider's name, "mock", or "rules" (validators only: the fallback)
    degraded: str = ""  # why the supervisor fell back to the validators ("" : it did not)


# --- control -----------------------------------------------------------------------------------


class StrategySet(_Msg, frozen=True, kw_only=True):
    """Make ``strategy`` the default of every router (of ``tier`` only, when given); persisted in the
    KV bucket ``<root>_control``. ``strategy`` None removes that setting (back to the config's)."""

    strategy: str | None
    tier: str | None = None


class StrategyQuery(_Msg, frozen=True, kw_only=True):
    pass


class StrategyReport(_Msg, frozen=True, kw_only=True):
    """The strategy routers use now: ``default`` (set live, or the config's) and per-tier choices."""

    default: str
    tiers: dict[str, str] = {}
    configured: str = ""  # the config file's router.strategy, used when nothing is set live
    available: list[str] = []
    order: list[str] = []  # the router's provider order (failover's), as its own config and keys make it


class ExperimentSet(_Msg, frozen=True, kw_only=True):
    """Set the rollout share of ``[experiments.<name>]`` live (KV ``<root>_control``,
    ``experiment.<name>``); ``percent`` None removes the setting (back to the config's)."""

    name: str
    percent: float | None


class ExperimentQuery(_Msg, frozen=True, kw_only=True):
    pass


class ExperimentState(_Msg, frozen=True, kw_only=True):
    name: str
    strategy: str  # the variant (or the shadow) strategy
    shadow: bool = False
    percent: float = 0.0  # users in the variant (shadow: asks shadowed), as routers apply it now
    configured: float = 0.0


class ExperimentReport(_Msg, frozen=True, kw_only=True):
    experiments: list[ExperimentState] = []
    routes: dict[str, int] = {}  # "<tier>/<route>" -> answers, as the router that replied counted them
    router: str = ""  # that router's id


class ExperimentEvent(_Msg, frozen=True, kw_only=True):
    """One ask of an experiment (``<root>.events.experiment.<name>``) or one shadow run
    (``<root>.events.shadow.<name>``, with its agreement with the answer returned)."""

    experiment: str
    arm: str  # "control" | "variant" | "shadow"
    ask_id: str
    strategy: str | None = None
    ok: bool = True
    kind: str | None = None  # the Failure's kind
    latency_ms: float = 0.0
    cost_usd: float | None = 0.0
    route_name: str | None = None  # the fallback route that answered (tiers)
    agreement: float | None = None  # shadow: 1.0 same data / rapidfuzz similarity of text; None: nothing to compare
    at: float = 0.0


# --- gateway (HTTP API keys) ---------------------------------------------------------------------


class VirtualKey(_Msg, frozen=True, kw_only=True):
    """One HTTP API key of the gateway, stored in the KV bucket ``<root>_keys`` under
    ``key.<sha256 of the key>`` (the key itself is never stored). ``id`` is the hash's first 12
    hex digits (``llmbus keys list`` and ``revoke`` name keys by it); requests made with the key
    ask as ``user`` in ``tier``, at most ``rpm`` a minute (None: the gateway's default)."""

    id: str
    user: str
    tier: str | None = None
    rpm: int | None = None
    budget_usd_day: float | None = None  # set as the user's daily budget with the cost actor
    created_at: float = 0.0
    revoked: bool = False  # a revoked key is refused with 403 (an unknown one with 401)


# Reply unions: what each request subject answers with.
AskReply = Answer | Failure
CompleteReply = Completion | Failure
# a stream: Chunks, then one Completion (a provider's) or Answer (a router's) or Failure
StreamReply = Chunk | Completion | Answer | Failure
CacheGetReply = CacheEntry | CacheMiss | Failure
CachePutReply = CacheStored | Failure
ReviewReply = Verdict | Failure


# --- images (``<root>.image`` and ``<root>.provider.<name>.image``) ------------------------------


class ObjectRef(_Value, frozen=True, kw_only=True):
    """An image too large for a message, in the JetStream object store ``bucket`` under ``name``
    (``Client.image_bytes`` fetches it); ``digest`` is the store's SHA-256 of it."""

    bucket: str
    name: str
    size: int
    digest: str = ""


class Picture(_Value, frozen=True, kw_only=True):
    """One generated image: inline ``data`` (base64 on the wire), a provider's ``url``, or ``ref``."""

    media_type: str = "image/png"
    data: bytes | None = None
    url: str | None = None
    ref: ObjectRef | None = None


class ImageAsk(_Msg, frozen=True, kw_only=True):
    """A client's image request on ``<root>.image`` (the images actor: tier policy, quota, provider)."""

    id: str
    prompt: str
    size: str = "1024x1024"  # "WxH"
    count: int = 1
    style: dict[str, str] = {}  # style hints: {"style": "vivid", "quality": "hd", "negative": "text"}
    tier: str | None = None
    user: str | None = None
    provider: str | None = None  # a provider to use instead of the images order
    model: str | None = None
    budget_ms: int | None = None
    labels: dict[str, str] = {}


class ImageRequest(_Msg, frozen=True, kw_only=True):
    """One provider image call on ``<root>.provider.<name>.image``; ``id`` is the call id."""

    id: str
    ask_id: str
    prompt: str
    size: str = "1024x1024"
    count: int = 1
    style: dict[str, str] = {}
    model: str | None = None
    tier: str | None = None
    user: str | None = None
    labels: dict[str, str] = {}


class ImageResult(_Msg, frozen=True, kw_only=True):
    id: str
    ask_id: str
    provider: str
    model: str
    images: list[Picture] = []
    size: str = ""
    usage: TokenUsage = TokenUsage()
    cost_usd: float | None = None  # None: no price known for this model
    latency_ms: float = 0.0
    placeholder: bool = False  # a rendered placeholder, not a generated image (tier policy)
    quota: str | None = None  # the quota this image counted against, e.g. "tier:pro:images:month"
    metadata: dict[str, Any] = {}


ImageReply = ImageResult | Failure


# --- quotas (count-based, per tier and period; the cost actor) ------------------------------------


class QuotaReserve(_Msg, frozen=True, kw_only=True):
    """Hold ``count`` units of ``quota`` for ``tier`` until the call commits or ``expires_at``."""

    call_id: str
    ask_id: str
    tier: str
    quota: str = "images"
    count: int = 1
    user: str | None = None
    expires_at: float = 0.0  # unix time; 0: a minute from now


class QuotaCommit(_Msg, frozen=True, kw_only=True):
    """The call is over: ``ok`` turns the hold into use, a failure releases it."""

    call_id: str
    tier: str
    quota: str = "images"
    ok: bool = True
    count: int = 1  # counted even when the hold lapsed meanwhile (the image was made)


class Quota(_Value, frozen=True, kw_only=True):
    tier: str
    quota: str
    period: str  # "day" | "month"
    limit: int
    used: int = 0
    held: int = 0
    left: int = 0
    stamp: str = ""  # the period: YYYY-MM or YYYY-MM-DD (UTC)


class QuotaGranted(_Msg, frozen=True, kw_only=True):
    call_id: str
    quota: Quota | None = None  # None: no quota applies to that tier


class QuotaQuery(_Msg, frozen=True, kw_only=True):
    pass


class QuotaReport(_Msg, frozen=True, kw_only=True):
    quotas: list[Quota] = []


# --- alerts (``<root>.events.alert``, kept in the events stream) -----------------------------------


class Alert(_Msg, frozen=True, kw_only=True):
    """An alert fired (``resolved`` False) or cleared (True). One per (rule, subject) while its
    condition lasts: the health actor sends it when it starts and when it ends, not in between."""

    rule: str  # breaker_open | error_rate | fallback_routes | budget_spend | quality_first_pass
    subject: str  # the provider, tier, budget or "supervisor" it is about
    severity: str = "warning"  # "warning" | "critical"
    value: float = 0.0  # the measured value (minutes, percent)
    threshold: float = 0.0
    since: float = 0.0  # unix time the condition started
    at: float = 0.0  # unix time of this event
    resolved: bool = False
    message: str = ""
