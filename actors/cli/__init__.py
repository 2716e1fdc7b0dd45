"""The ``llmbus`` command line (``actors.cli.main``).

Start-up time is a goal (issue 17: ``llmbus trace`` of one ask < 300 ms, process start included), so
heavy imports no command needs up front are deferred here, before any command module loads:
nats-py imports aiohttp (~165 ms here) at start only for websocket URLs. Its transport module is
loaded with aiohttp hidden, then given stand-ins that import aiohttp and multidict on first use —
a ``ws://`` URL still works, nothing else pays.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys


class _OnUse:
    """A module imported at its first attribute use (truthy when it is installed)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __bool__(self) -> bool:
        return importlib.util.find_spec(self._name) is not None

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


def _defer_aiohttp() -> None:
    if "nats.aio.transport" in sys.modules or "aiohttp" in sys.modules:
        return
    hidden = ("aiohttp", "multidict")
    for name in hidden:
        sys.modules[name] = None  # `import aiohttp` raises ImportError: nats-py takes it as "no websockets"
    try:
        import nats.aio.transport as transport
    finally:
        for name in hidden:
            del sys.modules[name]
    transport.aiohttp = _OnUse("aiohttp")
    transport.multidict = _OnUse("multidict")


_defer_aiohttp()
