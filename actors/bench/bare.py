"""The bare floor of ``llmbus bench``: raw nats-py + msgspec, no llmbus runtime.

- ``provider``: ``Complete`` → ``Completion`` on ``provider_complete("zero")``, plus the one-hop
  echo (a callback that republishes the payload).
- ``router``: a minimal raw router on ``bench-bare.ask``: msgspec-decode the Ask, build a
  ``Complete``, forward it with ``Llm-Budget-Ms``/``Llm-Ask-Id`` through its own muxed reply
  subscription, decode the ``Completion``, reply with an ``Answer``. Same message types (so the
  same JSON), same two headers, one NATS connection per role, no deadlines enforced, no
  admission, no events.

The ``core`` section compares llmbus against these; ``adapters`` shows the one-hop figure beside
its own. A role runs in the bench's process (``bare_role``) or in its own
(``python -m actors.bench _bare <role> URL``).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import anyio
import msgspec
from anyio.abc import TaskStatus

from bus import codec
from bus import messages as m
from bus.connection import connect
from bus.deadline import deadline_from, deadline_in, headers_for, now
from bus.rpc import new_id
from bus.subjects import ROUTER_QUEUE, Subjects
from actors.bench.measure import BUDGET_MS, PROMPT, Send
from actors.pure.tokens import count_words

BARE = Subjects("bench-bare")
ECHO = f"{BARE.root}.bare.echo"  # the one-hop responder (not a row of the RPC table: the bare floor has none)


def ping_subject(role: str) -> str:
    """Where a bare role in a child process answers a readiness ping."""
    return f"{BARE.root}.ping.{role}"
ROLES = ("provider", "router")
ASK = m.Ask(id="", messages=PROMPT, strategy="single", providers=["zero"])  # a fresh id per ask


class Muxed:
    """Raw muxed requests: one wildcard reply subscription, a future per request token."""

    def __init__(self, nc, prefix: str) -> None:
        self.nc, self.prefix, self.pending, self.token = nc, prefix + ".", {}, 0

    async def start(self) -> Muxed:
        cut = len(self.prefix)

        async def on_reply(msg) -> None:
            fut = self.pending.pop(msg.subject[cut:], None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

        await self.nc.subscribe(self.prefix + "*", cb=on_reply)
        return self

    async def request(self, subject: str, payload: bytes, headers: dict, timeout: float | None = None):
        self.token += 1
        token = str(self.token)
        fut = self.pending[token] = asyncio.get_running_loop().create_future()
        await self.nc.publish(subject, payload, reply=self.prefix + token, headers=headers)
        if timeout is None:  # the bare router: its caller's deadline bounds the wait
            return await fut
        async with asyncio.timeout(timeout):
            return await fut


async def bare_role(role: str, url: str, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve the bare ``provider`` (Complete → Completion, plus the one-hop echo) or ``router``."""
    nc = await connect(url, name=f"bench-bare-{role}")
    try:
        if role == "provider":
            async def on_complete(msg) -> None:
                req = codec.complete.decode(msg.data)
                prompt = "\n".join(x.text() for x in req.messages if x.role == "user")
                text = f"[zero] {prompt}"
                out = m.Completion(
                    id=req.id, ask_id=req.ask_id, provider="zero", model="zero-1", text=text,
                    usage=m.TokenUsage(input_tokens=count_words(prompt), output_tokens=count_words(text)),
                    confidence=0.9,
                )
                await nc.publish(msg.reply, codec.encode(out))

            async def on_echo(msg) -> None:
                await nc.publish(msg.reply, msg.data)

            await nc.subscribe(BARE.provider_complete("zero"), queue=BARE.provider_queue("zero"), cb=on_complete)
            await nc.subscribe(ECHO, cb=on_echo)
        else:
            mux = await Muxed(nc, BARE.reply_prefix(new_id())).start()
            target, loop, tasks = BARE.provider_complete("zero"), asyncio.get_running_loop(), set()

            async def handle(msg, deadline: float) -> None:
                ask, started = codec.ask.decode(msg.data), now()
                req = m.Complete.of(ask, id=new_id())
                got = await mux.request(target, codec.encode(req), headers_for(deadline, ask.id))
                done = codec.complete_reply.decode(got.data)
                answer = m.Answer(
                    id=ask.id, text=done.text, confidence=done.confidence, providers=[done.provider],
                    usage=done.usage, route=[m.Step(provider="zero", outcome="ok", ms=round((now() - started) * 1e3, 3))],
                )
                await nc.publish(msg.reply, codec.encode(answer))

            async def on_ask(msg) -> None:  # a task per ask: a `cb` runs one message at a time
                task = loop.create_task(handle(msg, deadline_from(msg.headers, arrival=now(), fallback_ms=BUDGET_MS)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

            await nc.subscribe(BARE.ask, queue=ROUTER_QUEUE, cb=on_ask)

        async def on_ping(msg) -> None:
            await nc.publish(msg.reply, b"pong")

        await nc.subscribe(ping_subject(role), cb=on_ping)
        await nc.flush()
        task_status.started()
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()


async def one_hop(url: str, stack: AsyncExitStack) -> Send:
    """A client of the one-hop echo, on its own connection (closed by ``stack``)."""
    nc = await connect(url, name="bench-client")
    stack.push_async_callback(nc.close)
    mux = await Muxed(nc, BARE.reply_prefix(new_id())).start()
    subject = ECHO

    async def send() -> bool:
        ask = msgspec.structs.replace(ASK, id=new_id())
        got = await mux.request(subject, codec.encode(ask), headers_for(deadline_in(BUDGET_MS), ask.id), timeout=10)
        return bool(got.data)

    return send
