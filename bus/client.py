"""The public Python client.

    async with Client("nats://127.0.0.1:4222") as client:
        answer = await client.ask("Why is the sky blue?", budget_ms=10_000)
        print(answer.text, answer.route)

``ask`` returns an ``Answer`` or raises the ``bus.errors`` exception of the Failure (``RateLimited``,
``DeadlineExceeded``, ``AllFailed``…). The budget becomes a deadline here, at the edge; it travels
in the ``Llm-Budget-Ms`` header. With ``retries=N`` an ask that met no responders (routers
restarting) or a retryable failure is sent again with the same ask id, while budget remains — the
router deduplicates by ask id, so the work is done once. A caller that gives up (deadline, or the
task is cancelled) publishes a ``Cancel`` so the work behind it stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client as NATS

from bus import codec
from bus import messages as m
from bus.connection import ConnectOptions, connect
from bus.deadline import deadline_in, now
from bus.errors import error_for
from bus.rpc import Rpc, new_id
from bus.subjects import Subjects

DEFAULT_BUDGET_MS = 30_000
_RETRY_PAUSE_S = (0.01, 0.05, 0.1, 0.25, 0.5)


def as_messages(prompt: str | Sequence[m.Message], system: str | None = None) -> list[m.Message]:
    msgs = [m.Message(role="user", content=prompt)] if isinstance(prompt, str) else list(prompt)
    if system:
        msgs.insert(0, m.Message(role="system", content=system))
    return msgs


class Client:
    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        root: str = "llm",
        name: str = "llmbus-client",
        options: ConnectOptions | None = None,
        nc: NATS | None = None,
    ) -> None:
        self.url = url
        self.subjects = Subjects(root)
        self.name = name
        self.options = options
        self.nc = nc
        self._own_nc = nc is None
        self.rpc: Rpc | None = None

    async def __aenter__(self) -> Client:
        if self.nc is None:
            self.nc = await connect(self.url, name=self.name, options=self.options)
        self.rpc = await Rpc(self.nc, self.subjects).start()
        return self

    async def __aexit__(self, *exc) -> None:
        if self.rpc is not None:
            await self.rpc.close()
        if self._own_nc and self.nc is not None and not self.nc.is_closed:
            await self.nc.close()

    async def ask(
        self,
        prompt: str | Sequence[m.Message],
        *,
        system: str | None = None,
        strategy: str | None = None,
        providers: list[str] | None = None,
        budget_ms: int = DEFAULT_BUDGET_MS,
        ask_id: str | None = None,
        retries: int = 0,
        **fields: Any,
    ) -> m.Answer:
        """Ask and wait for the final Answer; raises the Failure's exception otherwise.
        ``fields`` are further ``Ask`` fields (tier, user, schema, params, labels, …)."""
        if budget_ms <= 0:
            raise error_for(m.Failure(kind=m.BAD_REQUEST, message=f"budget_ms must be above 0 (got {budget_ms})"))
        request = m.Ask(
            id=ask_id or new_id(),
            messages=as_messages(prompt, system),
            strategy=strategy,
            providers=providers,
            budget_ms=budget_ms,
            **fields,
        )
        reply = await self.send(request, deadline=deadline_in(budget_ms), retries=retries)
        if isinstance(reply, m.Failure):
            raise error_for(reply)
        return reply

    async def send(self, request: m.Ask, *, deadline: float, retries: int = 0) -> m.Answer | m.Failure:
        """Send a prepared Ask; return the Answer or Failure as a value (never raises for one)."""
        assert self.rpc is not None, "use `async with Client(...)`"
        attempt = 0
        while True:
            try:
                reply = await self.rpc.call(
                    self.subjects.ask, request, codec.ask_reply, deadline=deadline, ask_id=request.id
                )
            except asyncio.CancelledError:
                await asyncio.shield(self.rpc.cancel(request.id, reason="the client gave up"))
                raise
            if not (isinstance(reply, m.Failure) and reply.retryable) or attempt >= retries:
                return reply
            pause = _RETRY_PAUSE_S[min(attempt, len(_RETRY_PAUSE_S) - 1)]
            if reply.retry_after_s:
                pause = max(pause, reply.retry_after_s)
            if now() + pause >= deadline:
                return reply
            attempt += 1
            await asyncio.sleep(pause)
