"""OpenAI Chat Completions ↔ llmbus: a request body becomes an ``Ask``; an ``Answer`` becomes a
``chat.completion``; a stream's ``Chunk``s become ``chat.completion.chunk`` events.

The request: ``messages`` (system, developer → system, user, assistant with ``tool_calls``, tool with
``tool_call_id``; content as a string or parts: ``text``, ``image_url``), ``temperature``,
``top_p``, ``max_tokens`` (or ``max_completion_tokens``), ``stop``, ``user``, ``tools``,
``tool_choice``, ``response_format`` (``json_schema`` → ``Ask.schema``; ``json_object`` → any
object) and ``stream`` / ``stream_options.include_usage``. Fields this gateway does not use
(``presence_penalty``, ``seed``, …) are ignored like any unknown field; ``n`` above 1 is refused.
An extension object ``llmbus`` may choose ``tier``, ``cache``, ``labels``, ``strategy_options``,
``max_cost_usd``, ``budget_ms`` and ``buffer`` (streams: send the text once, at the end).

The reply carries the llmbus details in an extension field ``llmbus`` that the OpenAI SDKs keep
but never need: ask id, strategy, route, providers, model, cost, confidence, stage, cached, data.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from bus import messages as m


class _In(msgspec.Struct, kw_only=True):
    """A request value: unknown fields are ignored (clients send more than this gateway reads)."""


class ToolFunction(_In, kw_only=True):
    name: str
    description: str = ""
    parameters: dict[str, Any] = {}


class ChatTool(_In, kw_only=True):
    type: str = "function"
    function: ToolFunction


class CallFunction(_In, kw_only=True):
    name: str
    arguments: str = "{}"


class ChatToolCall(_In, kw_only=True):
    id: str
    type: str = "function"
    function: CallFunction


class ChatMessage(_In, kw_only=True):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ChatToolCall] | None = None
    tool_call_id: str | None = None


class StreamOptions(_In, kw_only=True):
    include_usage: bool = False


class ResponseFormat(_In, kw_only=True):
    type: str
    json_schema: dict[str, Any] | None = None


class Extension(_In, kw_only=True):
    """``llmbus`` in a request body: what the OpenAI API has no field for."""

    tier: str | None = None
    cache: str = "use"
    cache_namespace: str | None = None
    labels: dict[str, str] = {}
    strategy_options: dict[str, Any] = {}
    max_cost_usd: float | None = None
    budget_ms: int | None = None
    buffer: bool = False  # a stream sends its text once, with the final answer


class ChatRequest(_In, kw_only=True):
    model: str
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    tools: list[ChatTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    n: int | None = None
    llmbus: Extension | None = None


decode_chat = msgspec.json.Decoder(ChatRequest).decode
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


class Invalid(ValueError):
    """A request this gateway cannot turn into an Ask: ``str(exc)`` says why, ``param`` where."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _parts(content: list[dict[str, Any]], where: str) -> list[m.Part]:
    parts: list[m.Part] = []
    for i, part in enumerate(content):
        kind = part.get("type")
        if kind in ("text", "input_text") and isinstance(part.get("text"), str):
            parts.append(m.Text(text=part["text"]))
        elif kind == "image_url" and isinstance(part.get("image_url"), dict | str):
            image = part["image_url"]
            url = image if isinstance(image, str) else image.get("url")
            if not isinstance(url, str):
                raise Invalid("an image_url part needs image_url.url", f"{where}.content[{i}]")
            if url.startswith("data:") and ";base64," in url:
                media_type, _, data = url[5:].partition(";base64,")
                parts.append(m.Image(data=data, media_type=media_type or None))
            else:
                parts.append(m.Image(url=url))
        else:
            raise Invalid(f"content part type {kind!r} is not supported (text, image_url)", f"{where}.content[{i}]")
    return parts


def _message(msg: ChatMessage, i: int) -> m.Message:
    where = f"messages[{i}]"
    role = ROLES.get(msg.role)
    if role is None:
        raise Invalid(f"{where}.role {msg.role!r} is not one of {', '.join(ROLES)}", f"{where}.role")
    if role == "tool":
        if not msg.tool_call_id:
            raise Invalid(f"{where}: a tool message needs tool_call_id", f"{where}.tool_call_id")
        text = msg.content if isinstance(msg.content, str) else \
            "".join(p.text for p in _parts(msg.content or [], where) if isinstance(p, m.Text))
        return m.Message(role="tool", content=[m.ToolResult(call_id=msg.tool_call_id, content=text)])
    content: str | list[m.Part]
    if msg.content is None or isinstance(msg.content, str):
        content = msg.content or ""
    else:
        content = _parts(msg.content, where)
    if msg.tool_calls:
        calls = []
        for j, call in enumerate(msg.tool_calls):
            try:
                arguments = msgspec.json.decode(call.function.arguments or "{}")
            except msgspec.DecodeError:
                raise Invalid("tool call arguments must be a JSON object",
                              f"{where}.tool_calls[{j}].function.arguments") from None
            if not isinstance(arguments, dict):
                raise Invalid("tool call arguments must be a JSON object", f"{where}.tool_calls[{j}].function.arguments")
            calls.append(m.ToolCall(id=call.id, name=call.function.name, arguments=arguments))
        content = ([m.Text(text=content)] if isinstance(content, str) and content else
                   [] if isinstance(content, str) else content) + calls
    return m.Message(role=role, content=content)


def schema_of(fmt: ResponseFormat | None) -> dict[str, Any] | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    if fmt.type == "json_schema":
        schema = (fmt.json_schema or {}).get("schema")
        if not isinstance(schema, dict):
            raise Invalid("response_format.json_schema.schema must be a JSON Schema object",
                          "response_format.json_schema.schema")
        return schema
    raise Invalid(f"response_format.type {fmt.type!r} is not one of text, json_object, json_schema",
                  "response_format.type")


def to_ask(req: ChatRequest, *, ask_id: str, strategy: str | None, providers: list[str] | None,
           user: str | None, tier: str | None, budget_ms: int, labels: dict[str, str] | None = None) -> m.Ask:
    """The Ask for a chat request (the route, the caller and the budget already decided); raises
    ``Invalid``. ``tier``: the key's — when given, ``llmbus.tier`` cannot change it (a key of the
    free tier does not ask as premium)."""
    if not req.messages:
        raise Invalid("messages must not be empty", "messages")
    if req.n not in (None, 1):
        raise Invalid("n above 1 is not supported", "n")
    ext = req.llmbus or Extension()
    if ext.cache not in ("use", "refresh", "skip"):
        raise Invalid("llmbus.cache must be use, refresh or skip", "llmbus.cache")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    params = m.Params(temperature=req.temperature, top_p=req.top_p,
                      max_tokens=req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens,
                      stop=stop, tool_choice=req.tool_choice if req.tools else None)
    tools = [m.Tool(name=t.function.name, description=t.function.description, parameters=t.function.parameters)
             for t in req.tools or []]
    return m.Ask(
        id=ask_id, messages=[_message(msg, i) for i, msg in enumerate(req.messages)], strategy=strategy,
        providers=providers, tier=tier or ext.tier, user=user, schema=schema_of(req.response_format), tools=tools,
        params=params, cache=ext.cache, cache_namespace=ext.cache_namespace,
        budget_ms=min(budget_ms, ext.budget_ms) if ext.budget_ms else budget_ms, stream=req.stream,
        labels={**ext.labels, **(labels or {})}, max_cost_usd=ext.max_cost_usd, strategy_options=ext.strategy_options,
    )


# --- replies --------------------------------------------------------------------------------------


def content_of(answer: m.Answer, structured: bool) -> str | None:
    if structured and answer.data is not None:
        return msgspec.json.encode(answer.data).decode()
    return answer.text if answer.text or not answer.tool_calls else None


def tool_calls_of(answer: m.Answer, *, indexed: bool = False) -> list[dict[str, Any]]:
    return [{**({"index": i} if indexed else {}), "id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": msgspec.json.encode(c.arguments).decode()}}
            for i, c in enumerate(answer.tool_calls)]


def usage_of(answer: m.Answer) -> dict[str, Any]:
    u = answer.usage
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}


def details(answer: m.Answer) -> dict[str, Any]:
    """The ``llmbus`` extension field of a reply."""
    return {"ask_id": answer.id, "strategy": answer.strategy, "providers": answer.providers, "model": answer.model,
            "route": msgspec.to_builtins(answer.route), "cost_usd": answer.cost_usd, "confidence": answer.confidence,
            "stage": answer.stage, "cached": answer.cached, "data": answer.data}


def finish_reason(answer: m.Answer) -> str:
    return "tool_calls" if answer.tool_calls else "stop"


def completion(answer: m.Answer, model: str, structured: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content_of(answer, structured), "refusal": None}
    if answer.tool_calls:
        message["tool_calls"] = tool_calls_of(answer)
    return {
        "id": f"chatcmpl-{answer.id}", "object": "chat.completion", "created": int(time.time()),
        "model": answer.model or model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(answer), "logprobs": None}],
        "usage": usage_of(answer), "system_fingerprint": None, "llmbus": details(answer),
    }


class ChunkWriter:
    """One stream's ``chat.completion.chunk`` bodies, in order.

    Text deltas of the provider's stream are sent as they come. A stage chunk (draft, enhanced)
    is not content: it is sent with an empty delta and ``llmbus: {stage, text}``, and the final
    answer's text is the content. A reset (``Chunk.reset``, or the ``restart`` stage: the text so far
    is void, the chunk's delta starts the new text) is sent with ``llmbus: {reset: true}`` beside
    that delta; text already sent cannot be taken back from an OpenAI client, so the marker only
    says so — ask with ``llmbus.buffer`` to get the exact text once, at the end (a structured
    answer is always sent that way). Workers' state chunks (no text) are not sent. At the end the rest of the final text is sent (all of it when nothing was),
    its tool calls, the finish reason with ``llmbus`` details, and the usage when asked.
    """

    def __init__(self, ask_id: str, model: str, *, structured: bool, buffer: bool, include_usage: bool) -> None:
        self.base = {"id": f"chatcmpl-{ask_id}", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": model, "system_fingerprint": None}
        self.structured = structured
        self.buffer = buffer or structured  # structured output: the content is the validated data, once
        self.include_usage = include_usage
        self.sent = ""  # content sent since the last reset

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra) -> dict[str, Any]:
        return {**self.base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                **extra}

    def start(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""})

    def chunk(self, chunk: m.Chunk) -> dict[str, Any] | None:
        reset = chunk.reset or chunk.stage == "restart"
        if reset:
            self.sent = ""
        if chunk.stage not in (None, "restart"):  # a stage: its text is not content
            return self._chunk({}, llmbus={"stage": chunk.stage, "text": chunk.delta, **({"reset": True} if reset else {})})
        delta = {"content": chunk.delta} if chunk.delta and not self.buffer else {}
        if delta:
            self.sent += chunk.delta
        if reset:
            return self._chunk(delta, llmbus={"reset": True})
        return self._chunk(delta) if delta else None  # a worker's state, or an empty delta: nothing to show

    def end(self, answer: m.Answer) -> list[dict[str, Any]]:
        out = []
        text = content_of(answer, self.structured) or ""
        rest = text[len(self.sent):] if text.startswith(self.sent) else ("" if self.sent else text)
        if rest:
            out.append(self._chunk({"content": rest}))
        if answer.tool_calls:
            out.append(self._chunk({"tool_calls": tool_calls_of(answer, indexed=True)}))
        out.append(self._chunk({}, finish_reason(answer), llmbus=details(answer)))
        if self.include_usage:
            out.append({**self.base, "choices": [], "usage": usage_of(answer)})
        return out
