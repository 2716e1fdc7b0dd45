"""The public Python client.

    async with Client() as client:                       # $LLMBUS_NATS_URL, else nats://127.0.0.1:4222
        answer = await client.ask("Why is the sky blue?", budget_ms=10_000)
        print(answer.text, answer.model, answer.route)

        async for event in client.stream("Tell me a story"):   # Chunks, then the final Answer or Failure
            print(event.delta if isinstance(event, Chunk) else "", end="")

    answer = ask_sync("Why is the sky blue?")          # scripts and notebooks: no event loop needed

``ask`` returns an ``Answer`` or raises the ``bus.errors`` exception of the Failure (``RateLimited``,
``DeadlineExceeded``, ``AllFailed``…); ``stream`` yields the Failure as its last item instead. The
budget becomes a deadline here, at the edge; it travels in the ``Llm-Budget-Ms`` header. With
``retries=N`` an ask that met no responders (routers restarting), a retryable failure, or no reply
within its attempt's share of the budget (``bus.rpc.attempt_until``: what is left, split evenly
over the attempts left — a router killed mid-ask costs one share) is sent again with the same ask
id, while budget remains — routers deduplicate by ask id fleet-wide, so the work is done once. A caller that gives up (deadline, or the task is cancelled) publishes a ``Cancel`` so
the work behind it stops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from nats.aio.client import Client as NATS

from bus import codec
from bus import messages as m
from bus.connection import ConnectOptions, connect
from bus.deadline import deadline_in, now
from bus.errors import error_for
from bus.rpc import ATTEMPT_HEADER, STREAM_ACK_S, Rpc, attempt_until, new_id
from bus.subjects import Subjects

DEFAULT_BUDGET_MS = 30_000
DEFAULT_URL = "nats://127.0.0.1:4222"
_RETRY_PAUSE_S = (0.01, 0.05, 0.1, 0.25, 0.5)


def document(path: str | os.PathLike[str]) -> m.Document:
    """A file as a Document part: UTF-8 text as ``text``, anything else (PDF, DOCX) as base64 ``data``.
    The provider actors extract it (``actors/documents``); an unreadable one is ``bad_request``."""
    import base64
    import mimetypes

    name = os.path.basename(os.fspath(path))
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"%PDF-"):
        try:
            return m.Document(text=data.decode("utf-8"), media_type=media_type if media_type.startswith("text/") else "text/plain", name=name)
        except UnicodeDecodeError:
            pass
    return m.Document(data=base64.b64encode(data).decode(), media_type=media_type, name=name)


def as_messages(prompt: str | Sequence[m.Message], system: str | None = None,
                files: Sequence[str | os.PathLike[str]] = ()) -> list[m.Message]:
    """The conversation of an ask; ``files`` become Document parts before the prompt's text."""
    if files:
        if not isinstance(prompt, str):
            raise error_for(m.Failure(kind=m.BAD_REQUEST, message="files go with a prompt string, not a message list"))
        prompt = [m.Message(role="user", content=[*(document(f) for f in files), m.Text(text=prompt)])]
    msgs = [m.Message(role="user", content=prompt)] if isinstance(prompt, str) else list(prompt)
    if system:
        msgs.insert(0, m.Message(role="system", content=system))
    return msgs


def default_url() -> str:
    """``$LLMBUS_NATS_URL``, else ``nats://127.0.0.1:4222`` (where ``llmbus up`` listens by default)."""
    return os.environ.get("LLMBUS_NATS_URL") or DEFAULT_URL


class Client:
    """A connection to an llmbus fleet: ``ask`` (one Answer), ``stream`` (Chunks, then the Answer).

    ``url``: the NATS server (default ``$LLMBUS_NATS_URL``, else ``nats://127.0.0.1:4222``);
    ``root``: the fleet's subject root (default ``$LLMBUS_ROOT``, else ``llm``); ``name``: how this
    connection appears in NATS monitoring; ``options``: auth and TLS; ``nc``: an existing nats-py
    connection to use instead of opening one (it is not closed on exit); without ``options``,
    ``$LLMBUS_NATS_TOKEN`` is the token when set; ``stream_ack_s``: how often a ``stream`` says it
    is still reading (the router stops a stream unheard for two intervals; 0: never). Use it as
    ``async with Client() as client:``; entering raises ``Unavailable`` when no server answers.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        root: str | None = None,
        name: str = "llmbus-client",
        options: ConnectOptions | None = None,
        nc: NATS | None = None,
        stream_ack_s: float = STREAM_ACK_S,
    ) -> None:
        self.url = url or default_url()
        self.stream_ack_s = stream_ack_s  # a stream's acks (``StreamAck``); 0: none (the router never stops it)
        self.subjects = Subjects(root or os.environ.get("LLMBUS_ROOT") or "llm")
        self.name = name
        if options is None and os.environ.get("LLMBUS_NATS_TOKEN"):  # as `llmbus up --auth` says
            options = ConnectOptions(token=os.environ["LLMBUS_NATS_TOKEN"])
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

    def build(
        self,
        prompt: str | Sequence[m.Message],
        *,
        system: str | None = None,
        strategy: str | None = None,
        providers: list[str] | None = None,
        schema: dict[str, Any] | None = None,
        tools: list[m.Tool] | None = None,
        tier: str | None = None,
        user: str | None = None,
        params: m.Params | None = None,
        model: str | None = None,
        cache: str = "use",
        cache_namespace: str | None = None,
        budget_ms: int = DEFAULT_BUDGET_MS,
        labels: dict[str, str] | None = None,
        max_cost_usd: float | None = None,
        strategy_options: dict[str, Any] | None = None,
        ask_id: str | None = None,
        stream: bool = False,
        preset: str | None = None,
        files: Sequence[str | os.PathLike[str]] = (),
        priority: int | None = None,
    ) -> m.Ask:
        """The ``Ask`` that ``ask`` and ``stream`` send (see ``ask`` for the arguments); raises
        ``BadRequest`` for a budget that is not above 0."""
        if budget_ms <= 0:
            raise error_for(m.Failure(kind=m.BAD_REQUEST, message=f"budget_ms must be above 0 (got {budget_ms})"))
        params = params or m.Params()
        if model is not None:
            params = m.Params(temperature=params.temperature, max_tokens=params.max_tokens, top_p=params.top_p,
                              stop=params.stop, model=model)
        return m.Ask(
            id=ask_id or new_id(),
            messages=as_messages(prompt, system, files),
            strategy=strategy,
            providers=providers,
            tier=tier,
            user=user,
            schema=schema,
            tools=tools or [],
            params=params,
            cache=cache,
            budget_ms=budget_ms,
            stream=stream,
            labels={**(labels or {}), "preset": preset} if preset is not None else labels or {},
            max_cost_usd=max_cost_usd,
            cache_namespace=cache_namespace,
            strategy_options=strategy_options or {},
            priority=priority,
        )

    async def ask(
        self,
        prompt: str | Sequence[m.Message],
        *,
        system: str | None = None,
        strategy: str | None = None,
        providers: list[str] | None = None,
        schema: dict[str, Any] | None = None,
        tools: list[m.Tool] | None = None,
        tier: str | None = None,
        user: str | None = None,
        params: m.Params | None = None,
        model: str | None = None,
        cache: str = "use",
        cache_namespace: str | None = None,
        budget_ms: int = DEFAULT_BUDGET_MS,
        labels: dict[str, str] | None = None,
        max_cost_usd: float | None = None,
        strategy_options: dict[str, Any] | None = None,
        ask_id: str | None = None,
        retries: int = 0,
        preset: str | None = None,
        files: Sequence[str | os.PathLike[str]] = (),
        priority: int | None = None,
    ) -> m.Answer:
        """Ask the fleet and wait for the final Answer; raise the Failure's exception otherwise.

        prompt: the question, or a whole conversation (``Message`` list; parts may be text, images,
            documents, tool calls and results). system: a system message put first.
        strategy: the routing policy (``llmbus strategies``); None: the fleet's default for the tier.
        providers: the providers to use, in order; None: the fleet's configured order.
        schema: a JSON Schema: the answer's ``data`` is structured output that validates against it.
        tools: tool definitions; the model's tool calls come back in ``Answer.tool_calls``.
        tier, user: who asks (budgets, cost reports, per-tier strategy).
        params: temperature, max_tokens, top_p, stop; model: a model hint (``params.model``).
        cache: "use" | "refresh" | "skip"; cache_namespace: the cache namespace (it sets the TTL).
        budget_ms: time for the whole ask; the router replies ``timeout`` rather than nothing.
        labels: free tags (flags, A/B). max_cost_usd: a ceiling on this ask's spend.
        strategy_options: override the strategy's options for this ask.
        preset: a routing preset (``config/presets/<name>.toml``: fast, cheap, balanced, reliable);
            sets ``labels["preset"]``, like ``llmbus ask --preset``.
        files: paths attached as Document parts (PDF, DOCX, HTML, Markdown, text), like ``--file``.
        priority: who is served first when a router is full (higher first); None: the tier's.
        ask_id: the idempotency key (default: a new id); retries: resend it on no-responders or a
            retryable failure while budget remains.
        """
        request = self.build(prompt, system=system, strategy=strategy, providers=providers, schema=schema,
                             tools=tools, tier=tier, user=user, params=params, model=model, cache=cache,
                             cache_namespace=cache_namespace, budget_ms=budget_ms, labels=labels,
                             max_cost_usd=max_cost_usd, strategy_options=strategy_options, ask_id=ask_id,
                             preset=preset, files=files, priority=priority)
        reply = await self.send(request, deadline=deadline_in(budget_ms), retries=retries)
        if isinstance(reply, m.Failure):
            raise error_for(reply)
        return reply

    async def stream(
        self,
        prompt: str | Sequence[m.Message],
        *,
        retries: int = 0,
        **arguments: Any,
    ) -> AsyncIterator[m.Chunk | m.Answer | m.Failure]:
        """Ask and yield the router's ``Chunk``s as they come, then exactly one final ``Answer`` or
        ``Failure`` (as a value: nothing is raised for a Failure). Takes the arguments of ``ask``.

        With ``single`` and ``failover`` the chunks are the provider's own stream, passed through; a
        chunk with ``reset`` set (``stage == "restart"``) says that provider's stream broke: discard
        the text so far, the next provider's answer starts over (``StreamText`` does it). ``review``
        yields its stages (``draft``, ``enhanced``, ``final``: the whole answer each time). Chunks
        with ``worker`` set report a call's state (no text). Other strategies yield their final
        Answer alone. Leaving the loop early cancels the work behind it; a consumer that stops
        reading stops acknowledging (``stream_ack_s``), and the router stops the work after two
        intervals. ``retries`` resends on no-responders before any chunk arrived.
        """
        assert self.rpc is not None, "use `async with Client(...)`"
        request = self.build(prompt, stream=True, **arguments)
        deadline = deadline_in(request.budget_ms or DEFAULT_BUDGET_MS)
        subject = self.subjects.ask_stream
        for attempt in range(retries + 1):
            got_chunk = False
            async for item in self.rpc.stream(subject, request, deadline=deadline, ask_id=request.id,
                                              ack_s=self.stream_ack_s):
                if isinstance(item, m.Chunk):
                    got_chunk = True
                elif (isinstance(item, m.Failure) and not got_chunk and attempt < retries
                      and item.retryable and now() < deadline):
                    break
                yield item
            else:
                return
            await asyncio.sleep(_RETRY_PAUSE_S[min(attempt, len(_RETRY_PAUSE_S) - 1)])

    async def send(self, request: m.Ask, *, deadline: float, retries: int = 0) -> m.Answer | m.Failure:
        """Send a prepared Ask; return the Answer or Failure as a value (never raises for one)."""
        assert self.rpc is not None, "use `async with Client(...)`"
        attempt = 0
        while True:
            try:  # each attempt waits for its share of the budget (rpc.attempt_until); the ask keeps all of it
                reply = await self.rpc.call(
                    self.subjects.ask, request, codec.ask_reply, deadline=deadline, ask_id=request.id,
                    wait_until=attempt_until(deadline, attempt, retries) if retries else None,
                    headers={ATTEMPT_HEADER: str(attempt + 1)} if attempt else None,
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

    async def image(
        self,
        prompt: str,
        *,
        size: str = "1024x1024",
        count: int = 1,
        style: dict[str, str] | None = None,
        tier: str | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        budget_ms: int = 60_000,
        labels: dict[str, str] | None = None,
        ask_id: str | None = None,
    ) -> m.ImageResult:
        """Generate ``count`` images of ``prompt`` as the tier says (a generated image within its
        quota, else its policy: a placeholder, ``BudgetExceeded`` naming the quota, or a cheaper
        model). Large images come back as object-store references: ``image_bytes`` fetches them."""
        assert self.rpc is not None, "use `async with Client(...)`"
        if budget_ms <= 0:
            raise error_for(m.Failure(kind=m.BAD_REQUEST, message=f"budget_ms must be above 0 (got {budget_ms})"))
        request = m.ImageAsk(id=ask_id or new_id(), prompt=prompt, size=size, count=count, style=style or {},
                             tier=tier, user=user, provider=provider, model=model, budget_ms=budget_ms,
                             labels=labels or {})
        from bus.subjects import IMAGE

        try:
            reply = await self.rpc.service(IMAGE, request, deadline=deadline_in(budget_ms), ask_id=request.id)
        except asyncio.CancelledError:
            await asyncio.shield(self.rpc.cancel(request.id, reason="the client gave up"))
            raise
        if isinstance(reply, m.Failure):
            raise error_for(reply)
        return reply

    async def image_bytes(self, result: m.ImageResult) -> list[bytes]:
        """The bytes of each picture of ``result``: inline, or fetched from the object store."""
        out = []
        for pic in result.images:
            if pic.data is not None:
                out.append(pic.data)
            elif pic.ref is not None:
                stores = self.__dict__.setdefault("_image_stores", {})  # opening one costs a round trip
                store = stores.get(pic.ref.bucket)
                if store is None:
                    store = stores[pic.ref.bucket] = await self.nc.jetstream().object_store(pic.ref.bucket)
                out.append((await store.get(pic.ref.name)).data)
            else:
                raise error_for(m.Failure(kind=m.BAD_REQUEST, message=f"picture at {pic.url} is a URL: fetch it over HTTP"))
        return out


class StreamText:
    """The text of a stream as it stands, honouring resets: ``feed`` each item of ``Client.stream``.

        text = StreamText()
        async for item in client.stream("…"):
            text.feed(item)              # a Chunk(reset=True) discards what came before it
        text.value                       # the final Answer's text once it came, else the deltas so far

    A stage chunk (``draft``, ``enhanced``, ``final``: a whole answer as it stands then) replaces
    the text; a worker's state chunk (``Chunk.worker``) carries none."""

    STAGES = ("draft", "enhanced", "final")

    __slots__ = ("parts", "resets", "final")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.resets = 0  # how many times the text started over
        self.final: m.Answer | m.Failure | None = None

    def feed(self, item: m.Chunk | m.Answer | m.Failure) -> str:
        if item.__class__ is not m.Chunk:
            self.final = item
        elif item.reset or item.stage in self.STAGES:
            if item.reset:
                self.resets += 1
            self.parts = [item.delta] if item.delta else []
        elif item.delta:
            self.parts.append(item.delta)
        return self.value

    @property
    def value(self) -> str:
        if isinstance(self.final, m.Answer):
            return self.final.text
        return "".join(self.parts)

    @property
    def streamed(self) -> str:
        """The deltas since the last reset (what a consumer showed), whatever the final says."""
        return "".join(self.parts)


def ask_sync(prompt: str | Sequence[m.Message], *, url: str | None = None, root: str | None = None,
             **arguments: Any) -> m.Answer:
    """``Client(url, root=root).ask(prompt, **arguments)`` from synchronous code (scripts,
    notebooks without a running loop): one connection per call. Raises like ``ask``."""

    async def one() -> m.Answer:
        async with Client(url, root=root) as client:
            return await client.ask(prompt, **arguments)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(one())
    # a loop already runs here (a notebook cell): run the ask on a loop of its own, in a thread
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, one()).result()
