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
- structured output (below).

An adapter implements ``make_client()``, ``call()`` and ``call_stream()`` over its SDK.

**Structured output.** The provider is sent the ask's own JSON Schema (``structured_for``), and an
answer that validates against that schema (jsonschema, Draft 2020-12) is accepted as it is, into
``Completion.data``. Output that does not validate gets one clarified retry (the error is shown to
the model), then ``Failure(invalid_output)``. Two things may be added to what is sent, never to
what is required:

- *confidence*: when the schema's root is an object that allows extra properties
  (``additionalProperties`` absent or true, no ``confidence`` property of its own, and no keyword
  that constrains which keys may appear: see ``_OPEN_ROOT``), the sent schema also lists an optional
  top-level ``confidence`` (a number from 0 to 1). If the answer has it, it is taken out of the data
  into ``Completion.confidence`` (ignored when it is not a number in [0, 1]); if not, the confidence
  is None. A closed schema (``additionalProperties: false``, what OpenAI's strict mode needs) is sent
  untouched, and its answers carry no confidence: the ask's schema wins over our wish for one.
- *a wrapper for a root that is not an object*: Anthropic's tool input and OpenAI's
  ``response_format`` take an object at the root, so a schema whose root ``type`` is not
  ``"object"`` (an array, a string, a union) is sent as ``{"value": <schema>}`` (required, nothing
  else allowed), and ``value`` is unwrapped from the answer. An answer that is already the bare
  value is accepted too: what validates against the ask's schema is taken as it is, first.

How each adapter sends it: OpenAI ``response_format`` json_schema, ``strict: true`` when the sent
schema meets strict mode's rules, else ``strict: false`` (``openai.strict_compatible``); Anthropic
forced tool use (the tool's ``input_schema``); Gemini ``response_json_schema``.
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


CONFIDENCE = "confidence"
CONFIDENCE_SCHEMA = {
    "type": "number",
    "minimum": 0,
    "maximum": 1,
    "description": "optional: your confidence that this answer is correct, from 0 to 1",
}
VALUE = "value"  # the key a schema whose root is not an object is sent under
# The root keywords of an open object schema that a top-level "confidence" cannot conflict with.
_OPEN_ROOT = frozenset({"type", "properties", "required", "additionalProperties", "title", "description",
                        "$schema", "$id", "$defs", "definitions", "examples", "default", "$comment"})


@dataclass(frozen=True)
class Structured:
    """How an ask's schema is sent to a provider, and read back."""

    schema: dict[str, Any]  # the ask's own: the answer is validated against it
    sent: dict[str, Any]  # what the provider is asked for
    confidence: bool = False  # ``sent`` offers an optional top-level "confidence"
    wrapped: bool = False  # ``sent`` is {"value": schema} (the ask's root is not an object)


def structured_for(schema: dict[str, Any]) -> Structured:
    """What to send for ``schema`` (see the module docstring)."""
    if schema.get("type") != "object":
        sent = {"type": "object", "properties": {VALUE: schema}, "required": [VALUE], "additionalProperties": False}
        return Structured(schema=schema, sent=sent, wrapped=True)
    props = schema.get("properties", {})
    open_ = schema.get("additionalProperties", True) is True and set(schema) <= _OPEN_ROOT
    if not open_ or not isinstance(props, dict) or CONFIDENCE in props or CONFIDENCE in schema.get("required", ()):
        return Structured(schema=schema, sent=schema)
    return Structured(schema=schema, sent={**schema, "properties": {**props, CONFIDENCE: CONFIDENCE_SCHEMA}},
                      confidence=True)


@lru_cache(maxsize=256)
def _validator(schema_json: str):
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(schema_json))


def _problem(value: Any, schema: dict[str, Any]) -> str | None:
    errors = sorted(_validator(json.dumps(schema, sort_keys=True)).iter_errors(value), key=str)
    if not errors:
        return None
    first = errors[0]
    where = "/".join(str(p) for p in first.absolute_path) or "(root)"
    return f"at {where}: {first.message}"[:300]


def parse_structured(raw: Any, structured: Structured) -> tuple[Any, float | None, str | None]:
    """(data, confidence, None) when ``raw`` (a JSON string or a parsed object) validates against
    the ask's schema — as it is, or unwrapped from ``value`` when it was sent wrapped; else
    (None, None, why)."""
    if raw is None:  # (a JSON null, parsed below, is a value like any other)
        return None, None, "there was no structured output"
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            return None, None, f"the output is not valid JSON ({exc})"
    confidence = None
    if structured.confidence and isinstance(raw, dict) and CONFIDENCE in raw:
        said = raw[CONFIDENCE]
        raw = {k: v for k, v in raw.items() if k != CONFIDENCE}
        if isinstance(said, int | float) and not isinstance(said, bool) and 0.0 <= said <= 1.0:
            confidence = float(said)
    problem = _problem(raw, structured.schema)
    if problem is None:
        return raw, confidence, None
    if structured.wrapped and isinstance(raw, dict) and VALUE in raw:
        inner = _problem(raw[VALUE], structured.schema)
        if inner is None:
            return raw[VALUE], None, None
        problem = inner if set(raw) == {VALUE} else problem
    return None, None, problem


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
        await super().teardown()
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
        structured = structured_for(request.schema) if request.schema is not None else None
        schema = structured.sent if structured is not None else None
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
            if structured is None:
                return self._completion(request, reply, usage, started)
            data, confidence, problem = parse_structured(reply.structured, structured)
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
