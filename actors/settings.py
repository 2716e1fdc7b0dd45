"""Typed settings, loaded from TOML (``config/llmbus.toml``) and a few environment variables.

Every table forbids unknown keys, so a typo fails loudly with the key and the file named. API keys
never live in config files: providers read them from the environment only.

Where the file comes from: ``--config PATH``, else ``$LLMBUS_CONFIG``, else ``config/llmbus.toml``
in the current directory, else the one next to this source tree, else built-in defaults (one mock
provider). ``$LLMBUS_NATS_URL`` and ``$LLMBUS_ROOT`` override ``bus.nats_url`` and ``bus.root``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal

import msgspec

from bus import messages as m
from bus.connection import ConnectOptions
from bus.errors import ConfigError
from bus.subjects import check_token
from actors.gateway.config import GatewaySettings
from actors.routing_settings import ExperimentSettings, Preset, TierSettings, check_routing, load_presets

# the NATS token's variable when [bus.auth] names none (`llmbus up --auth` says to export it)
TOKEN_ENV = "LLMBUS_NATS_TOKEN"


class _Table(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class NatsAuth(_Table, frozen=True, kw_only=True):
    """``[bus.auth]``: how every client and actor authenticates to NATS (all optional). Secrets are
    never in the file: the token and the password are read from the environment variables named
    here (``token_env``, ``password_env``); creds and nkey seeds are files. TLS: ``tls_ca_file`` to
    verify the server, ``tls_cert_file`` + ``tls_key_file`` for a client certificate."""

    token_env: str | None = None  # e.g. "LLMBUS_NATS_TOKEN"
    user: str | None = None
    password_env: str | None = None  # e.g. "LLMBUS_NATS_PASSWORD"
    creds_file: str | None = None
    nkey_seed_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    def options(self) -> ConnectOptions:
        def secret(env: str | None, what: str) -> str | None:
            if env is None:
                return None
            value = os.environ.get(env)
            if not value:
                raise ConfigError(f"bus.auth.{what} names ${env}, which is not set")
            return value

        return ConnectOptions(user=self.user, password=secret(self.password_env, "password_env"),
                              token=secret(self.token_env, "token_env"), creds_file=self.creds_file,
                              nkey_seed_file=self.nkey_seed_file, tls_ca_file=self.tls_ca_file,
                              tls_cert_file=self.tls_cert_file, tls_key_file=self.tls_key_file)


class BusSettings(_Table, frozen=True, kw_only=True):
    root: str = "llm"
    nats_url: str = ""  # empty: `llmbus up` runs its own nats-server on host:port
    host: str = "127.0.0.1"
    port: int = 4222
    store_dir: str = ""  # JetStream store of the embedded server; empty: <data dir>/nats (see data_dir)
    default_budget_ms: int = 30_000  # for messages that carry no Llm-Budget-Ms header
    stop_grace_s: float = 10.0
    # a stream's consumer acknowledges every this many seconds or chunks (``StreamAck``); a producer
    # that hears nothing for two intervals stops the work behind it. 0: no acks asked for
    stream_ack_s: float = 2.0
    stream_ack_chunks: int = 32
    auth: NatsAuth = msgspec.field(default_factory=lambda: NatsAuth())
    # a cluster: its seed URLs (several hosts; nats_url "a,b,c" says the same), the replicas of every
    # stream and KV bucket (3 on a cluster of 3: a server may die without losing state), and the
    # servers' HTTP monitoring URLs (`llmbus cluster status` reads the JetStream meta leader there)
    urls: list[str] = []
    replicas: int = 1
    monitor_urls: list[str] = []

    @property
    def url(self) -> str:
        return self.nats_url or ",".join(self.urls) or f"nats://{self.host}:{self.port}"

    def connect_options(self) -> ConnectOptions:
        return dataclasses.replace(self.auth.options(), replicas=self.replicas)

    def store_path(self) -> Path:
        return Path(self.store_dir) if self.store_dir else data_dir() / "nats"


class RouterSettings(_Table, frozen=True, kw_only=True):
    strategy: str = "failover"
    providers: list[str] = []  # order for failover; empty: every configured provider, in file order
    max_concurrency: int = 2048
    # asks that wait for a slot when max_concurrency are in flight, served highest priority first
    # (``Ask.priority``, else the tier's); one that does not fit is answered overloaded at once
    max_queued: int = 256
    dedup_window_s: float = 60.0  # a retried ask id within this window is answered once
    dedup_max: int = 100_000
    # leave out of the provider order those whose API key is not set in this process's environment
    # (turn off when routers run on hosts that do not hold the providers' keys)
    skip_unconfigured: bool = True
    # mock providers in the order stand in only while no real provider in it is configured
    mocks_with_real: bool = False
    # each strategy's options: [router.strategies.<name>] (``llmbus strategies`` lists them and their
    # defaults); an Ask's ``strategy_options`` override them for that ask
    strategies: dict[str, dict[str, Any]] = {}
    # presets (config/presets/<name>.toml, an Ask's labels["preset"]); empty: presets/ beside the config
    presets_dir: str = ""


class HealthSettings(_Table, frozen=True, kw_only=True):
    enabled: bool = True  # routers skip providers whose breaker is open
    failures_to_open: int = 5  # consecutive counted failures that open a breaker
    cooldown_s: float = 60.0  # open → half-open after this long
    successes_to_close: int = 2  # half-open probes that must succeed to close it again


class BudgetSettings(_Table, frozen=True, kw_only=True):
    scope: Literal["user", "tier"]
    name: str
    period: Literal["day", "month"]
    limit_usd: float


class CostSettings(_Table, frozen=True, kw_only=True):
    enabled: bool = True  # routers price answers and enforce budgets
    pricing: str = ""  # the pricing file; empty: config/pricing.toml
    # budgets created at start when none is set for that scope/name/period (`llmbus budget set` wins)
    budgets: list[BudgetSettings] = []
    # reservations in this many KV keys by user hash (1: the single key ``reservations``); with more,
    # each shard holds a tier budget's 1/shards share (docs/scaling.md). Every cost actor of a root
    # must use the same number.
    shards: int = 1
    # ledger entries of a UTC day are rolled up into one daily-totals key this many days after it
    # (0: never); a usage event for a compacted day is then refused as late
    compact_after_days: int = 0


class RecordSettings(_Table, frozen=True, kw_only=True):
    """``[record]``: the recording of every ask's requests and replies (``llmbus trace``/``replay``)
    in the stream ``<ROOT>_RECORD`` (file storage, bounded by age and bytes). ``all`` records every
    ask; ``errors`` only failed asks (``actors.recorder``: each router keeps a window per ask and writes
    it when the ask fails); ``off`` records nothing and leaves the hot path untouched."""

    sampling: Literal["all", "errors", "off"] = "off"
    max_age_s: float = 24 * 3600.0
    max_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_age_s <= 0 or self.max_bytes <= 0:
            raise ConfigError("record.max_age_s and record.max_bytes must be above 0")

    @property
    def on(self) -> bool:
        return self.sampling != "off"


class MetricsSettings(_Table, frozen=True, kw_only=True):
    """``[metrics]``: the Prometheus endpoint of every actor process (``actors.metrics``; one per
    ``llmbus up`` process). ``port`` 0: no endpoint (the figures are still counted, and ``llmbus
    status`` reads them over the bus)."""

    port: int = 0
    host: str = "127.0.0.1"


class TracingSettings(_Table, frozen=True, kw_only=True):
    """``[tracing]``: W3C ``traceparent`` on every call of an ask, and its spans exported over OTLP/HTTP
    to ``otlp_endpoint`` (e.g. ``http://localhost:4318/v1/traces``; needs the ``otel`` extra). Empty:
    no spans; a traceparent the caller sends still travels to every call (``actors.tracing``)."""

    otlp_endpoint: str = ""
    service_name: str = "llmbus"


class CacheSettings(_Table, frozen=True, kw_only=True):
    enabled: bool = True  # routers look asks up in the cache actor and store the answers they make
    dir: str = ""  # the diskcache directory (empty: <data dir>/cache); the subject root is appended
    size_limit_mb: float = 1024.0  # beyond it the entries stored longest ago are evicted
    memory_mb: float = 64.0  # entries read or written lately are also kept in memory (0: none)
    default_namespace: str = "llm"  # for asks that name none (Ask.cache_namespace)
    # TTL in seconds per namespace; a namespace not listed gets the TTL of default_namespace
    namespaces: dict[str, float] = msgspec.field(default_factory=lambda: {"llm": 3600.0, "locations": 86400.0})
    min_confidence: float = 0.0  # answers below it are not stored (nor, when above 0, those with none)
    lookup_ms: float = 50.0  # a lookup waits at most this long …
    lookup_share: float = 0.05  # … and at most this share of the ask's remaining budget
    lease_s: float = 2.0  # a flight leader that stops renewing its lease this long is replaced
    absent_retry_s: float = 1.0  # after "no cache actor", asks skip the cache this long before looking again

    def path(self) -> Path:
        return Path(self.dir) if self.dir else data_dir() / "cache"

    def ttl_s(self, namespace: str) -> float:
        return self.namespaces.get(namespace, self.namespaces[self.default_namespace])


class Latency(_Table, frozen=True, kw_only=True):
    """Mock latency: fixed ``ms``; uniform in [low_ms, high_ms]; lognormal with median ``ms``."""

    dist: Literal["fixed", "uniform", "lognormal"] = "fixed"
    ms: float = 0.0
    low_ms: float = 0.0
    high_ms: float = 0.0
    sigma: float = 0.5


# Kinds of provider and the environment variable each reads its key from by default.
KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}
# Mock-only failure modes besides the wire failure kinds.
MOCK_FAULTS = ("stall", "cut_stream", "stall_stream", "malformed_output", "empty")


class ProviderSettings(_Table, frozen=True, kw_only=True):
    kind: Literal["mock", "openai", "anthropic", "gemini"] = "mock"
    model: str = ""
    max_concurrency: int = 512
    # --- real providers ---
    base_url: str | None = None  # e.g. a proxy or a local test server; None: the SDK's default
    api_key_env: str | None = None  # the variable holding the key (default per kind, see KEY_ENV)
    rpm: int | None = None  # requests per minute, enforced before calling (no predictable 429s)
    tpm: int | None = None  # tokens per minute (prompt estimate + max_tokens), enforced likewise
    max_tokens: int = 1024  # default when the ask gives none
    temperature: float | None = None  # default when the ask gives none
    # --- documents (actors/documents/prepare.py) ---
    # media types sent as the original where the API takes them natively (today: application/pdf
    # for openai, anthropic and gemini); others are sent as extracted text
    native_documents: list[str] = []
    image_model: str = ""  # the model of image asks (openai: gpt-image-1, gemini: imagen-4.0-…); "": the kind's default
    context_tokens: int | None = None  # the model's window; None: the kind's default (mock: no check)
    document_overflow: Literal["fail", "truncate"] = "fail"  # documents over the window: context_length, or cut
    # --- mock only ---
    latency: Latency = Latency()
    # probability per call of each failure kind, or of a mock fault: "stall" (never reply),
    # "cut_stream" (a stream breaks halfway), "stall_stream" (a stream stops halfway, never ends),
    # "malformed_output" (invalid structured output),
    # "empty" (an empty answer)
    failures: dict[str, float] = {}
    retry_after_s: float | None = None  # sent with rate_limited failures
    answer: Literal["echo", "canned"] = "echo"
    canned: str = "This is a canned answer."
    # structured asks: these fields replace the schema example's, and each field in ``variants`` is
    # drawn (seeded) from its list per call, so mocks can disagree deterministically (ensembles)
    data: dict[str, Any] = {}
    variants: dict[str, list[Any]] = {}
    confidence: float = 0.9
    seed: int | None = None

    def key_env(self) -> str | None:
        return self.api_key_env or KEY_ENV.get(self.kind)

    def missing_key(self) -> str | None:
        """The unset environment variable this provider needs, or None when it can run."""
        env = self.key_env()
        if env is None or os.environ.get(env):
            return None
        return env


class SupervisorSettings(_Table, frozen=True, kw_only=True):
    """``[supervisor]``: the actor serving ``<root>.supervisor.review`` (the review strategy's judge).
    ``provider``: the model that judges ("" : ``anthropic`` when it is configured and its key is set,
    else the deterministic mock judge; "mock": always the mock; "rules": the validators alone).
    ``validators``: ``"module:function"`` checks over a structured answer, run beside the judge and
    alone when the judge's model fails (``actors.supervisor.rules`` ships a few)."""

    enabled: bool = True
    provider: str = ""
    validators: list[str] = []


class ImagesSettings(_Table, frozen=True, kw_only=True):
    """``[images]``: the images actor (``<root>.image``). Images over ``inline_max_kb`` (and any that
    would not fit the connection's max_payload) go to the object store ``<root>_images``, kept
    ``store_ttl_s``; the reply carries a reference. Image calls are priced by their tokens
    (``config/pricing.toml``), in the ledger like any call."""

    enabled: bool = True
    providers: list[str] = []  # in order; empty: every configured provider of a kind that makes images
    inline_max_kb: float = 256.0
    store_ttl_s: float = 86400.0


class AlertSettings(_Table, frozen=True, kw_only=True):
    """``[alerts]``: rules the health actor evaluates every ``eval_s`` (``actors/pure/alerts.py``)."""

    enabled: bool = True
    eval_s: float = 15.0
    breaker_open_minutes: float = 5.0  # a breaker open (or misconfigured) longer than this
    error_rate_percent: float = 25.0  # a provider's failed calls over this share …
    error_window_s: float = 300.0  # … within this window (the window of every rate rule: fallback, first-pass too) …
    error_min_calls: int = 20  # … once it made this many calls in it
    fallback_percent: float = 20.0  # answers of a tier from a fallback route (not its first) over this share
    fallback_min_asks: int = 20
    budget_percent: float = 80.0  # a budget's spend over this share of its limit
    quality_first_pass_percent: float = 60.0  # supervisor first-pass rate under this …
    quality_min_reviews: int = 10  # … once it reviewed this many drafts
    webhook_url: str = ""  # POST each alert event as JSON here ("" : no webhook)
    webhook_timeout_s: float = 5.0
    webhook_retries: int = 3


class Settings(_Table, frozen=True, kw_only=True):
    bus: BusSettings = BusSettings()
    router: RouterSettings = RouterSettings()
    health: HealthSettings = HealthSettings()
    cost: CostSettings = CostSettings()
    cache: CacheSettings = CacheSettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    record: RecordSettings = RecordSettings()
    metrics: MetricsSettings = MetricsSettings()
    tracing: TracingSettings = TracingSettings()
    images: ImagesSettings = ImagesSettings()
    alerts: AlertSettings = AlertSettings()
    gateway: GatewaySettings = GatewaySettings()  # [gateway]: the HTTP API (actors/gateway/config.py)
    tiers: dict[str, TierSettings] = {}  # [tiers.<name>]: free, pro, premium in the shipped config
    experiments: dict[str, ExperimentSettings] = {}  # [experiments.<name>]: rollout, A/B, shadow (routing)
    patterns_dir: str | None = None  # the user's own analysis patterns (*.toml), beside config/patterns/
    providers: dict[str, ProviderSettings] = msgspec.field(
        default_factory=lambda: {"mock": ProviderSettings()}
    )
    source: str = "built-in defaults"  # where these settings came from (not a TOML key)

    def recording(self) -> str:
        """How asks are recorded: ``off``; ``all`` (the stream captures every request and reply);
        ``window`` (each router's recorder keeps a window per ask and writes the asks its tier's
        sampling keeps: ``[tiers.<name>] record``, else ``[record] sampling``; ``actors.recorder``)."""
        modes = {t.record for t in self.tiers.values() if t.record is not None} | {self.record.sampling}
        return "off" if modes == {"off"} else "all" if modes == {"all"} else "window"

    def sampling_for(self, tier: str | None) -> str:
        """``all``, ``errors`` or ``off`` for an ask of ``tier``."""
        t = self.tiers.get(tier) if tier is not None else None
        return t.record if t is not None and t.record is not None else self.record.sampling

    def provider_order(self) -> list[str]:
        order = [n for n in (self.router.providers or self.providers) if n in self.providers]
        if self.router.skip_unconfigured:
            order = [n for n in order if self.providers[n].missing_key() is None]
        if not self.router.mocks_with_real and any(self.providers[n].kind != "mock" for n in order):
            order = [n for n in order if self.providers[n].kind != "mock"]
        return order

    def check(self) -> Settings:
        """Checks across tables; raises ConfigError naming the key."""
        where = self.source
        try:
            check_token(self.bus.root, "bus.root")
            for name in self.providers:
                check_token(name, f"provider name [providers.{name}]")
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        from actors.strategies.base import strategies

        known = strategies()
        if self.router.strategy not in known:
            raise ConfigError(f"{where}: router.strategy {self.router.strategy!r} is not one of {', '.join(known)}")
        self._check_strategy_options(where)
        for name in self.router.providers:
            if name not in self.providers:
                raise ConfigError(
                    f"{where}: router.providers names {name!r}, which has no [providers.{name}] table"
                )
        for name, p in self.providers.items():
            for kind, rate in p.failures.items():
                if kind not in m.FAILURE_KINDS and kind not in MOCK_FAULTS:
                    raise ConfigError(
                        f"{where}: providers.{name}.failures has unknown kind {kind!r} "
                        f"(known: {', '.join(MOCK_FAULTS)}, {', '.join(sorted(m.FAILURE_KINDS))})"
                    )
                if not 0.0 <= rate <= 1.0:
                    raise ConfigError(f"{where}: providers.{name}.failures.{kind} must be in [0, 1]")
            if sum(p.failures.values()) > 1.0:
                raise ConfigError(f"{where}: providers.{name}.failures add up to more than 1")
        for name, p in self.providers.items():
            if p.kind != "mock" and not p.model:
                raise ConfigError(f"{where}: providers.{name}.model is required for kind {p.kind!r}")
        for b in self.cost.budgets:
            if b.limit_usd < 0:
                raise ConfigError(f"{where}: cost.budgets: the limit of {b.scope} {b.name!r} is negative")
        self._check_cache(where)
        bad = check_routing(self, known)
        if bad is not None:
            raise ConfigError(f"{where}: {bad}")
        if not self.providers:
            raise ConfigError(f"{where}: no [providers.*] table: configure at least one provider")
        return self

    def _check_strategy_options(self, where: str) -> None:
        """Each [router.strategies.<name>] table must fit that strategy's Options (typos fail here)."""
        if not self.router.strategies:
            return
        from actors.strategies.base import OptionsError, options_for, strategies

        known = strategies()
        for name, table in self.router.strategies.items():
            if name not in known:
                raise ConfigError(f"{where}: [router.strategies.{name}]: no strategy {name!r} "
                                  f"(known: {', '.join(known)})")
            try:
                options_for(known[name], table)
            except OptionsError as exc:
                raise ConfigError(f"{where}: [router.strategies.{name}]: {exc}") from None

    def _check_cache(self, where: str) -> None:
        c = self.cache
        if c.default_namespace not in c.namespaces:
            raise ConfigError(f"{where}: cache.default_namespace {c.default_namespace!r} has no TTL in cache.namespaces")
        for name, ttl in c.namespaces.items():
            if not ttl > 0:
                raise ConfigError(f"{where}: cache.namespaces.{name} must be a TTL in seconds above 0")
        for key, value, low, high in (("size_limit_mb", c.size_limit_mb, 0.0, float("inf")),
                                      ("lookup_ms", c.lookup_ms, 0.0, float("inf")),
                                      ("lookup_share", c.lookup_share, 0.0, 1.0),
                                      ("lease_s", c.lease_s, 0.0, float("inf"))):
            if not low < value <= high:
                raise ConfigError(f"{where}: cache.{key} must be in ({low:g}, {high:g}]")
        if c.memory_mb < 0:
            raise ConfigError(f"{where}: cache.memory_mb must be 0 or more")
        if not 0.0 <= c.min_confidence <= 1.0:
            raise ConfigError(f"{where}: cache.min_confidence must be in [0, 1]")

    def pricing_path(self) -> Path | None:
        """``cost.pricing`` (relative to this config file), else ``pricing.toml`` beside it, else
        the source tree's ``config/pricing.toml``."""
        here = Path(self.source).parent if self.source != "built-in defaults" else Path(".")
        if self.cost.pricing:
            return here / self.cost.pricing
        for candidate in (here / "pricing.toml", SHIPPED_CONFIG.parent / "pricing.toml"):
            if candidate.is_file():
                return candidate
        return None


    def presets(self) -> dict[str, Preset]:
        """Every preset: ``router.presets_dir`` (relative to this config file), else ``presets/``
        beside it, else the source tree's ``config/presets``."""
        here = Path(self.source).parent if self.source != "built-in defaults" else Path(".")
        if self.router.presets_dir:
            directory = here / self.router.presets_dir
        else:
            directory = here / "presets" if (here / "presets").is_dir() else SHIPPED_CONFIG.parent / "presets"
        try:
            return load_presets(directory)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config" / "llmbus.toml"


def data_dir() -> Path:
    """Where state lives when the config names no directory: ``$LLMBUS_DATA_DIR``, else the per-user
    data directory (``~/.local/share/llmbus`` on Linux), never the current directory."""
    env = os.environ.get("LLMBUS_DATA_DIR")
    if env:
        return Path(env)
    import platformdirs

    return platformdirs.user_data_path("llmbus")


def default_config_path() -> Path | None:
    env = os.environ.get("LLMBUS_CONFIG")
    if env:
        return Path(env)
    for candidate in (Path("config/llmbus.toml"), SHIPPED_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def parse(text: str | bytes, source: str, *, check: bool = True) -> Settings:
    try:
        settings = msgspec.toml.decode(text, type=Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    settings = msgspec.structs.replace(settings, source=source)
    if check:  # like unknown keys of the fixed tables: at parse time (it imports every strategy)
        settings._check_strategy_options(source)
    return settings


def load(path: str | os.PathLike | None = None, *, check: bool = True) -> Settings:
    """The settings of ``path`` (default: ``$LLMBUS_CONFIG`` or config/llmbus.toml) with the
    environment's overrides; ``check=False`` skips the checks across tables (they import every
    strategy: a reader of the recording needs the bus settings only)."""
    chosen = Path(path) if path is not None else default_config_path()
    if chosen is None:
        settings = Settings()
    else:
        try:
            text = chosen.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {chosen}: {exc.strerror}") from None
        settings = parse(text, str(chosen), check=check)
    bus = settings.bus
    if os.environ.get("LLMBUS_NATS_URL"):
        bus = msgspec.structs.replace(bus, nats_url=os.environ["LLMBUS_NATS_URL"])
    if os.environ.get("LLMBUS_ROOT"):
        bus = msgspec.structs.replace(bus, root=os.environ["LLMBUS_ROOT"])
    settings = msgspec.structs.replace(settings, bus=bus)
    return settings.check() if check else settings
