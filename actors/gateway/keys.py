"""Virtual keys: who may use the gateway, as which user and tier, how often.

A key is ``llmb-`` + 32 random URL-safe characters, shown once when made (``llmbus keys create``);
only its SHA-256 is kept — in the KV bucket ``<root>_keys`` under ``key.<hex digest>`` (a
``VirtualKey``) or in config (``[[gateway.keys]]`` with ``sha256`` or ``key_env``). A request gives
it as ``Authorization: Bearer <key>`` (what the OpenAI SDKs send), and the dashboard also as a
``llmbus_key`` cookie or ``?key=``. An unknown key is refused with 401, a revoked one with 403, a
key over its requests per minute with 429 and Retry-After (each gateway process counts its own:
with N copies behind a balancer a key gets up to N times its rate).

With no key anywhere (config or KV) the gateway needs none — and listens only on loopback; one on
another address (started with keys) refuses every request once its last key is revoked.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import NoKeysError

from bus import codec
from bus import messages as m
from bus.errors import ConfigError
from bus.streams import KvMirror, ensure_kv
from bus.subjects import Subjects
from actors.gateway.config import GatewaySettings
from actors.providers.limits import RateLimits

PREFIX = "key."
KEY_BUCKET = "keys"
_decode = msgspec.json.Decoder(m.VirtualKey).decode


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "llmb-" + secrets.token_urlsafe(24)


def bucket(subjects: Subjects) -> str:
    return subjects.bucket(KEY_BUCKET)


# --- the KV store (``llmbus keys``) ---------------------------------------------------------------


async def create(nc: NATS, subjects: Subjects, *, user: str, tier: str | None = None, rpm: int | None = None,
                 budget_usd_day: float | None = None) -> tuple[str, m.VirtualKey]:
    """Make a key: returns it (the only time it is seen) and what is stored."""
    key = new_key()
    hexdigest = digest(key)
    record = m.VirtualKey(id=hexdigest[:12], user=user, tier=tier, rpm=rpm, budget_usd_day=budget_usd_day,
                          created_at=time.time())
    kv = await ensure_kv(nc, bucket(subjects))
    await kv.put(PREFIX + hexdigest, codec.encode(record))
    return key, record


async def stored(nc: NATS, subjects: Subjects) -> dict[str, m.VirtualKey]:
    """Every key in KV, by its digest."""
    kv = await ensure_kv(nc, bucket(subjects))
    try:
        names = await kv.keys()
    except NoKeysError:  # an empty bucket
        return {}
    out = {}
    for name in names:
        entry = await kv.get(name)
        if entry.value:
            out[name.removeprefix(PREFIX)] = _decode(entry.value)
    return out


async def revoke(nc: NATS, subjects: Subjects, key_id: str) -> m.VirtualKey | None:
    """Mark the key whose id (or digest) starts with ``key_id`` revoked; None when no single key does."""
    found = [(d, k) for d, k in (await stored(nc, subjects)).items() if d.startswith(key_id) or k.id == key_id]
    if len(found) != 1 or not key_id:
        return None
    hexdigest, record = found[0]
    record = msgspec.structs.replace(record, revoked=True)
    kv = await ensure_kv(nc, bucket(subjects))
    await kv.put(PREFIX + hexdigest, codec.encode(record))
    return record


# --- the gateway's view ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Principal:
    """Who asks: the key's user and tier (no keys configured: nobody in particular)."""

    key_id: str | None
    user: str | None
    tier: str | None


ANONYMOUS = Principal(None, None, None)


class Refused(Exception):
    """A request the keys refuse: ``status`` (401, 403, 429), ``code``, and ``retry_after_s`` for 429."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s


def config_keys(settings: GatewaySettings) -> dict[str, m.VirtualKey]:
    """The keys of ``[[gateway.keys]]`` by digest (``key_env`` read now; an unset one is a ConfigError)."""
    out = {}
    for k in settings.keys:
        if k.key_env is not None:
            value = os.environ.get(k.key_env)
            if not value:
                raise ConfigError(f"gateway.keys (user {k.user!r}) names ${k.key_env}, which is not set")
            hexdigest = digest(value)
        else:
            hexdigest = k.sha256.lower()
        out[hexdigest] = m.VirtualKey(id=hexdigest[:12], user=k.user, tier=k.tier, rpm=k.rpm,
                                      budget_usd_day=k.budget_usd_day)
    return out


class KeyRing:
    """The keys of config and KV (a live mirror), and each key's request rate."""

    def __init__(self, nc: NATS, subjects: Subjects, settings: GatewaySettings, clock=time.monotonic) -> None:
        self.settings = settings
        self.configured = config_keys(settings)
        self.stored: dict[str, m.VirtualKey] = {}
        self.mirror = KvMirror(nc, bucket(subjects), PREFIX + ">", on_change=self._on_change)
        self.clock = clock
        self._limits: dict[str, RateLimits] = {}
        # requests without a key are served while no key exists — on loopback only: a gateway on
        # another address whose last key was revoked refuses everyone rather than opening up
        self.open_without_keys = True

    def _on_change(self, name: str, value: bytes | None) -> None:
        hexdigest = name.removeprefix(PREFIX)
        if value is None:
            self.stored.pop(hexdigest, None)
        else:
            self.stored[hexdigest] = _decode(value)

    async def run(self, *, task_status) -> None:
        await self.mirror.run(task_status=task_status)

    def any(self) -> bool:
        """Is there a key at all (then every API request needs one)?"""
        return bool(self.configured) or any(not k.revoked for k in self.stored.values())

    def check(self, key: str | None) -> Principal:
        """The principal of ``key`` (its request counted), or ``Refused``."""
        if self.open_without_keys and not self.any():
            return ANONYMOUS
        if not key:
            raise Refused(401, "invalid_api_key", "an API key is required: Authorization: Bearer <key>")
        hexdigest = digest(key)
        record = self.configured.get(hexdigest) or self.stored.get(hexdigest)
        if record is None:
            raise Refused(401, "invalid_api_key", "unknown API key")
        if record.revoked:
            raise Refused(403, "key_revoked", f"API key {record.id} is revoked")
        limits = self._limits.get(record.id)
        if limits is None:
            limits = self._limits[record.id] = RateLimits(record.rpm or self.settings.rpm, None, self.clock)
        wait = limits.admit(0)
        if wait:
            raise Refused(429, "rate_limited", f"API key {record.id} is over its {record.rpm or self.settings.rpm} "
                                               "requests per minute", retry_after_s=wait)
        return Principal(record.id, record.user, record.tier)


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None
