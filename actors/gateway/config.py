"""``[gateway]``: the HTTP gateway's settings (``actors.settings`` carries them as ``settings.gateway``)."""

from __future__ import annotations

import ipaddress
import re

import msgspec

from bus.errors import ConfigError


class _Table(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class KeySettings(_Table, frozen=True, kw_only=True):
    """``[[gateway.keys]]``: a key from config. The key itself never sits in the file: give its
    ``sha256`` (hex digest), or ``key_env``, the environment variable that holds it."""

    user: str
    tier: str | None = None
    sha256: str | None = None
    key_env: str | None = None
    rpm: int | None = None  # None: gateway.rpm
    budget_usd_day: float | None = None  # the user's daily budget, set with the cost actor at start

    def __post_init__(self) -> None:
        if (self.sha256 is None) == (self.key_env is None):
            raise ConfigError(f"gateway.keys (user {self.user!r}): give exactly one of sha256 or key_env")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", self.sha256):
            raise ConfigError(f"gateway.keys (user {self.user!r}): sha256 must be the key's SHA-256 as 64 hex "
                              "digits (printf %s KEY | sha256sum)")


class GatewaySettings(_Table, frozen=True, kw_only=True):
    """``listen``: ``HOST:PORT`` (``:PORT`` is loopback, 127.0.0.1); empty: ``llmbus up`` starts no
    gateway unless given ``--http``. Without any key (here or in KV) it listens only on loopback."""

    listen: str = ""
    max_body_bytes: int = 1 << 20  # a larger request body is refused (413)
    rpm: int = 600  # requests per minute per key (each gateway process counts its own)
    budget_ms: int = 60_000  # an HTTP ask's time budget, unless the request's timeout header is lower
    models: dict[str, str] = {}  # alias -> "llmbus/<strategy>" or a provider name
    keys: list[KeySettings] = []
    keep_asks_s: float = 120.0  # /v1/asks: a finished ask's events stay readable this long
    dashboard: bool = True  # serve the dashboard at GET / (when actors/gateway/dashboard.py exists)

    def __post_init__(self) -> None:
        if self.max_body_bytes <= 0 or self.rpm <= 0 or self.budget_ms <= 0:
            raise ConfigError("gateway.max_body_bytes, gateway.rpm and gateway.budget_ms must be above 0")
        if self.listen:
            address(self.listen)


DEFAULT_LISTEN = "127.0.0.1:8080"


def address(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``, or ``:PORT`` for 127.0.0.1) as (host, port); ConfigError if not."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"gateway listen address {listen!r} must be HOST:PORT or :PORT")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
