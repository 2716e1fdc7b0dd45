"""What a request's ``model`` means: ``llmbus`` (the fleet's default route), ``llmbus/<strategy>``
(e.g. ``llmbus/consensus``), a provider's name (that provider alone), or an alias of
``[gateway.models]`` (whose value is one of the former). ``GET /v1/models`` lists them all."""

from __future__ import annotations

from dataclasses import dataclass

from actors.settings import Settings
from actors.strategies.base import strategies

PREFIX = "llmbus"


@dataclass(frozen=True, slots=True)
class Route:
    strategy: str | None  # None: the fleet's default (per tier)
    providers: list[str] | None


class Models:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.strategies = sorted(strategies())
        self.providers = list(settings.providers)
        self.aliases = dict(settings.gateway.models)
        self._routes: dict[str, Route | None] = {}
        for alias, target in self.aliases.items():
            if self._direct(target) is None:
                from bus.errors import ConfigError

                raise ConfigError(f"gateway.models.{alias} = {target!r} is not llmbus, llmbus/<strategy> "
                                  f"({', '.join(self.strategies)}) or a provider ({', '.join(self.providers)})")

    def _direct(self, model: str) -> Route | None:
        if model == PREFIX:
            return Route(None, None)
        if model.startswith(PREFIX + "/"):
            name = model[len(PREFIX) + 1:]
            return Route(name, None) if name in self.strategies else None
        if model in self.providers:
            return Route("single", [model])
        return None

    def resolve(self, model: str) -> Route | None:
        """The route of ``model``, or None when it names nothing here."""
        got = self._routes.get(model, False)
        if got is False:
            target = self.aliases.get(model, model)
            got = self._direct(target)
            if len(self._routes) < 1024:  # only names that resolved or were asked for: bounded
                self._routes[model] = got
        return got

    def listing(self) -> dict:
        """The body of ``GET /v1/models``."""
        ids = [PREFIX, *(f"{PREFIX}/{s}" for s in self.strategies), *self.providers, *self.aliases]
        kinds = {PREFIX: "default", **{f"{PREFIX}/{s}": "strategy" for s in self.strategies},
                 **{p: "provider" for p in self.providers}, **{a: "alias" for a in self.aliases}}
        return {"object": "list", "data": [
            {"id": i, "object": "model", "created": 0, "owned_by": "llmbus",
             "llmbus": {"kind": kinds[i], **({"target": self.aliases[i]} if i in self.aliases else {})}}
            for i in ids]}
