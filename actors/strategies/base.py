"""The strategy kernel's vocabulary: a policy, the actions it returns, the events it is fed.

A strategy is a pure policy registered by name. The runner (``runner.py``) makes one policy object
per ask — ``cls(plan)`` — and then only feeds it events; the policy answers each with actions:

    begin(now)            -> [Action]      the first calls (and timers)
    decide(event, now)    -> [Action]      after a call's Reply, a Wake, or the Deadline

Actions: ``Call(key, provider | service+request, deadline, messages, schema, purpose)`` starts a
call (a provider, or any request of the RPC table: a supervisor review is just another target);
``Cancel(key)`` stops one call (``Cancel(ask_id, call_id)`` on the bus, never the ask);
``WakeAt(t)`` asks for a ``Wake`` event at ``t``; ``Done(result, providers, metadata)`` ends the ask
(the runner cancels the calls still open, and records them as ``cancelled``). Events: ``Reply(key,
result, ms)`` (a ``Completion``, the RPC row's reply, or a ``Failure``), ``Wake(at)``, ``Deadline()``
(the strategy's time is up: answer with what you have). The policy never reads a clock (it gets
``now``) and does no I/O, so a table of events tests it to the decimal, without NATS.

Two sketches, to show that hedging and quorum scatter-gather are short on it::

    class Hedged(Policy):
        name, Options = "hedged", HedgedOptions          # HedgedOptions(delay_s: float = 0.5)
        def begin(self, now):
            return [Call("a", self.plan.candidates[0]), WakeAt(now + self.options.delay_s)]
        def decide(self, event, now):
            match event:
                case Reply(key, m.Completion() as c):
                    return [Done(c)]                     # the runner cancels the loser
                case Wake() if len(self.plan.candidates) > 1 and not self.replies:
                    return [Call("b", self.plan.candidates[1])]
                case Reply(_, m.Failure()) if self.open == 0:
                    return [Done(self.failure("every hedge failed"))]
                case Deadline():
                    return [Done(self.failure("no hedge answered in time", kind=m.TIMEOUT))]
            return []

    class Consensus(Policy):
        name, Options = "consensus", ConsensusOptions    # ConsensusOptions(quorum: int = 2)
        def begin(self, now):
            return [Call(str(i), p) for i, p in enumerate(self.plan.candidates)]
        def decide(self, event, now):
            good = [r.result for r in self.replies if isinstance(r.result, m.Completion)]
            if len(good) >= self.options.quorum or isinstance(event, Deadline) or self.open == 0:
                if len(good) < self.options.quorum:
                    return [Done(self.failure(f"{len(good)} answers, quorum {self.options.quorum}"))]
                winner = vote(good)                      # pure: canonicalise, cluster, score
                return [Done(winner, providers=[c.provider for c in good], metadata={...})]
            return []

The base class keeps what every policy needs: ``replies`` (every Reply so far, in arrival order)
and ``open`` (calls started and not yet answered), updated by ``step`` before ``decide`` runs.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec

from bus import messages as m
from bus.subjects import Service

# --- actions -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """Start a call named ``key`` (unique within the ask). Either ``provider`` (a provider's
    ``complete``, built from the ask with these overrides) or ``service`` + ``request`` (any row of
    the RPC table). ``deadline`` None: the strategy's deadline."""

    key: str
    provider: str | None = None
    deadline: float | None = None
    messages: list[m.Message] | None = None  # None: the ask's
    schema: dict[str, Any] | None = None  # None: the ask's (see ``no_schema``)
    no_schema: bool = False  # True: send no schema even when the ask has one
    params: m.Params | None = None  # None: the ask's
    purpose: str = "answer"  # what the call is for, in the route ("answer", "review", "stage1", …)
    service: Service | None = None
    request: msgspec.Struct | None = None
    name: str = ""  # the RPC row's ``{name}`` (a provider's name for provider rows)

    @property
    def target(self) -> str:
        return self.provider if self.provider is not None else (self.name or (self.service.name if self.service else "?"))


@dataclass(frozen=True, slots=True)
class Cancel:
    key: str
    reason: str = "the strategy no longer needs it"


@dataclass(frozen=True, slots=True)
class WakeAt:
    at: float


@dataclass(frozen=True, slots=True)
class Done:
    """End the ask with ``result``. ``providers``: every provider whose output is in the answer
    (default: the result's own). ``metadata`` goes into ``Answer.metadata``."""

    result: m.Completion | m.Failure
    providers: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    confidence: float | None = None  # overrides the completion's, when the policy computed one
    # canonical log lines the runner emits (``log.info(event, ask_id=…, strategy=…, **fields)``),
    # one per step of the policy's work: the policy says what happened, the runner does the I/O
    log: tuple[tuple[str, dict[str, Any]], ...] = ()


@dataclass(frozen=True, slots=True)
class Progress:
    """Show a streaming client how the answer stands: ``stage`` ("draft" | "enhanced" | "final")
    and the answer's text at that stage. The runner passes it on when the ask is streamed (the
    router's ``Calls.progress``), and drops it otherwise; it never waits."""

    stage: str
    text: str


Action = Call | Cancel | WakeAt | Done | Progress

# --- events --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    key: str
    result: Any  # m.Completion | m.Failure, or the RPC row's reply
    ms: float = 0.0
    target: str = ""  # the provider (or RPC row) the call went to

    @property
    def ok(self) -> bool:
        return not isinstance(self.result, m.Failure)


@dataclass(frozen=True, slots=True)
class Wake:
    at: float


@dataclass(frozen=True, slots=True)
class Deadline:
    pass


Event = Reply | Wake | Deadline

# --- the plan a policy starts from ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    ask: m.Ask
    candidates: list[str]  # providers that may be called now, in order (breakers already applied)
    options: Any  # the policy's Options struct: config defaults, then the ask's overrides
    deadline: float  # the strategy's deadline (the ask's, less the reply margin)
    # what the router knows live and shares across its asks (``actors.router.live.Live``: latency
    # estimates, the hedge budget); None where no router runs the policy (table tests)
    live: Any = None


class NoOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """For a policy that takes no options."""


class Policy:
    """Base of every strategy. Subclasses set ``name``, ``description`` and ``Options`` (a msgspec
    Struct with defaults and ``forbid_unknown_fields``, so a typo is a bad_request naming it)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    # an optional ``async def prepare(self) -> None`` the runner awaits (within the strategy's
    # deadline) before ``begin``: the one place for slow work that must not run in the router's
    # event loop, handed to a worker thread (map_reduce extracts and chunks its documents there).
    # It does no bus I/O and keeps what it finds (an error too) for ``begin``; None: nothing to do.
    prepare: ClassVar[Any] = None

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.options = plan.options
        self.replies: list[Reply] = []
        self.open = 0

    # --- to implement --------------------------------------------------------------------------
    def begin(self, now: float) -> list[Action]:
        raise NotImplementedError

    def decide(self, event: Event, now: float) -> list[Action]:
        raise NotImplementedError

    # --- called by the runner (and by table tests) ---------------------------------------------
    def start(self, now: float) -> list[Action]:
        return self._count(self.begin(now))

    def step(self, event: Event, now: float) -> list[Action]:
        if type(event) is Reply:
            self.replies.append(event)
            self.open -= 1
        return self._count(self.decide(event, now))

    def cancelled(self, n: int = 1) -> None:
        """The runner cancelled ``n`` open calls on the policy's ``Cancel``."""
        self.open -= n

    def _count(self, actions: list[Action]) -> list[Action]:
        for a in actions:
            if type(a) is Call:
                self.open += 1
        return actions

    # --- shared by policies --------------------------------------------------------------------
    def summary(self) -> str:
        return ", ".join(f"{r.target}: {outcome_of(r.result)}" for r in self.replies) or "no provider was called"

    def failure(self, message: str, kind: str = m.ALL_FAILED) -> m.Failure:
        return m.Failure(kind=kind, message=f"{message} ({self.summary()})")


def outcome_of(result: Any) -> str:
    return result.kind if isinstance(result, m.Failure) else "ok"


# --- the registry ----------------------------------------------------------------------------------

REGISTRY: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make ``cls`` a strategy under ``cls.name``."""
    if not cls.name or cls.name in REGISTRY:
        raise ValueError(f"strategy name {cls.name!r} is empty or taken")
    REGISTRY[cls.name] = cls
    return cls


_KERNEL = {"base", "runner"}


def strategies() -> dict[str, type[Policy]]:
    """Every registered strategy: each module of this package registers its own on import, so a
    new policy is a new file — there is no second list to keep in step."""
    if not strategies.loaded:
        import actors.strategies as package

        for info in pkgutil.iter_modules(package.__path__):
            if info.name not in _KERNEL:
                importlib.import_module(f"{package.__name__}.{info.name}")
        strategies.loaded = True
    return REGISTRY


strategies.loaded = False


class OptionsError(ValueError):
    """A strategy option that does not fit its Options struct (the message names it)."""


def options_for(cls: type[Policy], *layers: dict[str, Any]) -> Any:
    """``cls.Options`` from dicts applied in order (config defaults, then the ask's overrides)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    try:
        return msgspec.convert(merged, cls.Options)
    except msgspec.ValidationError as exc:
        raise OptionsError(f"strategy {cls.name!r} options: {exc}") from None


def describe_options(cls: type[Policy]) -> list[tuple[str, str, Any]]:
    """(name, type, default) of each option, for ``llmbus strategies``."""
    info = msgspec.inspect.type_info(cls.Options)
    rows = []
    for f in info.fields:
        default = f.default if f.default is not msgspec.NODEFAULT else (
            f.default_factory() if f.default_factory is not msgspec.NODEFAULT else None)
        rows.append((f.name, _type_name(f.type), default))
    return rows


def _type_name(t: Any) -> str:
    name = type(t).__name__.removesuffix("Type").lower()
    if isinstance(t, msgspec.inspect.ListType):
        return f"list[{_type_name(t.item_type)}]"
    if isinstance(t, msgspec.inspect.UnionType):
        return " | ".join(_type_name(x) for x in t.types)
    if isinstance(t, msgspec.inspect.LiteralType):
        return " | ".join(repr(v) for v in t.values)
    return {"none": "None", "str": "str", "float": "float", "int": "int", "bool": "bool"}.get(name, name)
