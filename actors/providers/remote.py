"""The shared base of providers backed by an official SDK (OpenAI, Anthropic, Gemini).

What every adapter gets from here:
- the SDK imported lazily in ``setup()`` (the three SDKs take ~3 s to import), one client per
  actor, SDK retries off (the router decides about retries, within the caller's budget);
- the key read from the environment only (``api_key_env``), and cut out of every failure message;
- requests/tokens-per-minute limits enforced before the call (``limits.RateLimits``): a wait that
  fits the deadline is waited, one that does not is ``rate_limited`` at once with ``retry_after_s``;
- the call limited by the request's remaining deadline (the SDK's timeout is set from it, and the
  endpoint's deadline cancels the call in any case);
- every SDK exception classified in one place (``classify.classify``);
- structured output: the Ask's JSON Schema is wrapped as ``{"data": <schema>, "confidence": 0..1}``
  so the model reports its confidence; the reply is parsed and validated (jsonschema, Draft
  2020-12) into ``Completion.data`` and ``Completion.confidence``; output that does not validate
  gets one clarified retry (the error is shown to the model), then ``Failure(invalid_output)``.

An adapter implements ``make_client()``, ``call()`` and ``call_stream()`` over its SDK.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from bus import messages as m
from bus.endpoint import Context
from bus.errors import ContentFiltered, InvalidOutput, LlmError, RateLimited, Unavailable, error_for
from actors.providers.base import ProviderActor
from actors.providers.classify import classify
from actors.providers.limits import RateLimits
from actors.pure.tokens import estimate_tokens
from actors.settings import ProviderSettings

CONTENT_FILTERED = "content_filter"  # the finish_reason an adapter reports for a safety block


@dataclass
class Reply:
    """What an adapter read from one SDK response."""

    text: str = ""
    structured: Any = None  # the structured output: a JSON string or an already parsed object
    tool_calls: list[m.ToolCall] = field(default_factory=list)
    usage: m.TokenUsage = m.TokenUsage()
    finish_reason: str = "stop"
    model: str = ""


def wrap_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "data": schema,
            "confidence": {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "description": "your confidence that data is correct, from 0 to 1",
            },
        },
        "required": ["data", "confidence"],
        "additionalProperties": False,
    }


@lru_cache(maxsize=256)
def _validator(schema_json: str):
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(schema_json))


def parse_structured(raw: Any, wrapped: dict[str, Any]) -> tuple[Any, float | None, str | None]:
    """(data, confidence, None) when ``raw`` validates against ``wrapped``; else (None, None, why)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            return None, None, f"the output is not valid JSON ({exc})"
    if raw is None:
        return None, None, "there was no structured output"
    errors = sorted(_validator(json.dumps(wrapped, sort_keys=True)).iter_errors(raw), key=str)
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        return None, None, f"at {where}: {first.message}"[:300]
    return raw["data"], float(raw["confidence"]), None


def clarify(messages: list[m.Message], output: Any, problem: str) -> list[m.Message]:
    shown = output if isinstance(output, str) else json.dumps(output)
    return [
        *messages,
        m.Message(role="assistant", content=shown[:4000]),
        m.Message(
            role="user",
            content=f"Your previous reply did not match the required JSON schema: {problem}. "
            "Reply again with only JSON that matches the schema.",
        ),
    ]


def add_usage(a: m.TokenUsage, b: m.TokenUsage) -> m.TokenUsage:
    return m.TokenUsage(
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cached_tokens=a.cached_tokens + b.cached_tokens,
    )


class RemoteProvider(ProviderActor):
    def __init__(self, *, provider: str, config: ProviderSettings, **kw) -> None:
        super().__init__(provider=provider, model=config.model, **kw)
        self.config = config
        env = config.key_env()
        self._key = os.environ.get(env or "", "")
        if not self._key:
            raise LlmError(f"provider {provider} is not configured: set {env}")
        self.limits = RateLimits(config.rpm, config.tpm)
        self.client: Any = None

    async def setup(self) -> None:
        await super().setup()
        self.client = self.make_client(self._key)

    async def teardown(self) -> None:
        # Close the SDK's connection pool on this loop. Left to the garbage collector, the
        # openai/anthropic clients' __del__ schedules aclose() on whatever loop runs then, which
        # fails ("Event loop is closed") when the actor ran on a loop that has since ended.
        client, self.client = self.client, None
        if client is not None:
            try:
                aio = getattr(client, "aio", None)  # google-genai: the async client is client.aio
                await (aio.aclose() if aio is not None else client.close())
            except Exception as exc:
                self.log.debug("client_close_failed", error=type(exc).__name__)
        await super().teardown()

    # --- to implement -------------------------------------------------------------------------
    def make_client(self, key: str) -> Any:
        raise NotImplementedError

    async def call(
        self, request: m.Complete, messages: list[m.Message], schema: dict | None, timeout_s: float
    ) -> Reply:
        raise NotImplementedError

    def call_stream(self, request: m.Complete, timeout_s: float) -> AsyncIterator[str | Reply]:
        """Text deltas, then the final Reply (with usage); a stream that ends without the final
        Reply was cut."""
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------------
    def params(self, request: m.Complete) -> tuple[int, float | None]:
        """(max_tokens, temperature) of this call: the ask's, else the provider's defaults."""
        p = request.params
        return (p.max_tokens or self.config.max_tokens, p.temperature if p.temperature is not None else self.config.temperature)

    def sampling(self, request: m.Complete, *, stop: str) -> dict[str, Any]:
        """temperature, top_p and the stop sequences (under the SDK's name ``stop``), when set."""
        p = request.params
        args: dict[str, Any] = {}
        temperature = self.params(request)[1]
        if temperature is not None:
            args["temperature"] = temperature
        if p.top_p is not None:
            args["top_p"] = p.top_p
        if p.stop:
            args[stop] = p.stop
        return args

    def failure_for(self, exc: BaseException) -> LlmError:
        return error_for(classify(exc, provider=self.provider, secrets=(self._key,)))

    async def _admit(self, request: m.Complete, ctx: Context) -> None:
        tokens = estimate_tokens(" ".join(msg.text() for msg in request.messages)) + self.params(request)[0]
        while (wait := self.limits.admit(tokens)) > 0.0:
            if wait >= ctx.remaining_s():
                raise RateLimited(
                    f"{self.provider}: local rate limit (rpm={self.config.rpm}, tpm={self.config.tpm}) "
                    f"frees up in {wait:.2f}s, past the deadline",
                    provider=self.provider,
                    retry_after_s=round(wait, 3),
                )
            await asyncio.sleep(wait)

    def _completion(self, request: m.Complete, reply: Reply, usage: m.TokenUsage, started: float,
                    data: Any = None, confidence: float | None = None) -> m.Completion:
        if reply.finish_reason == CONTENT_FILTERED:
            raise ContentFiltered(f"{self.provider}: the answer was blocked by a safety filter", provider=self.provider)
        return m.Completion(
            id=request.id,
            ask_id=request.ask_id,
            provider=self.provider,
            model=reply.model or self.model,
            text=reply.text,
            data=data,
            tool_calls=reply.tool_calls,
            usage=usage,
            finish_reason=reply.finish_reason,
            latency_ms=round((asyncio.get_running_loop().time() - started) * 1000.0, 3),
            confidence=confidence,
        )

    async def complete(self, request: m.Complete, ctx: Context) -> m.Completion:
        await self._admit(request, ctx)
        started = asyncio.get_running_loop().time()
        schema = wrap_schema(request.schema) if request.schema is not None else None
        messages = list(request.messages)
        usage = m.TokenUsage()
        problem = ""
        for _ in range(2):  # the call, and at most one clarified retry of invalid structured output
            try:
                reply = await self.call(request, messages, schema, ctx.remaining_s())
            except LlmError:
                raise
            except Exception as exc:
                raise self.failure_for(exc) from None
            usage = add_usage(usage, reply.usage)
            if schema is None:
                return self._completion(request, reply, usage, started)
            data, confidence, problem = parse_structured(reply.structured, schema)
            if problem is None:
                return self._completion(request, reply, usage, started, data, confidence)
            messages = clarify(list(request.messages), reply.structured, problem)
        raise InvalidOutput(f"{self.provider}: structured output did not validate twice: {problem}", provider=self.provider)

    async def stream(self, request: m.Complete, ctx: Context) -> AsyncIterator[str | m.Completion]:
        if request.schema is not None:  # structured output is validated whole: no partial JSON
            yield await self.complete(request, ctx)
            return
        await self._admit(request, ctx)
        started = asyncio.get_running_loop().time()
        try:
            async for item in self.call_stream(request, ctx.remaining_s()):
                if isinstance(item, Reply):
                    yield self._completion(request, item, item.usage, started)
                    return
                yield item
        except LlmError:
            raise
        except Exception as exc:
            raise self.failure_for(exc) from None
        raise Unavailable(f"{self.provider}: the stream ended before the answer was complete", provider=self.provider)


def data_url(part: m.Image | m.Document) -> str | None:
    if isinstance(part, m.Image) and part.url:
        return part.url
    if part.data:
        return f"data:{part.media_type or 'application/octet-stream'};base64,{part.data}"
    return None
