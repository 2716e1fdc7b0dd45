"""Answers from the request itself: ``auto_reply``, the zero-latency provider of ``llmbus bench``.

``WireServer(default=auto_reply, record=False)`` answers every generate call of the three providers
(plain, structured or streamed) without a script; ``python -m actors.fakes.auto [--port N]`` runs
one standalone.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from actors.fakes import anthropic as an
from actors.fakes import gemini as ge
from actors.fakes import openai as oa
from actors.fakes.server import Recorded, Reply, WireServer, json_reply
from actors.pure.examples import example_for

__all__ = ["auto_reply", "example_for_schema"]


def example_for_schema(schema: dict[str, Any] | None) -> Any:
    """A value that validates against the schema: ``actors.pure.examples.example_for`` (the one
    implementation, shared with the mock provider); no schema: ``{}``."""
    return example_for(schema) if isinstance(schema, dict) else {}


def auto_reply(rec: Recorded, *, text: str = "ok") -> Reply:
    """Answer any generate call of the three providers, by path: OpenAI ``/chat/completions``,
    Anthropic ``/messages``, Gemini ``:generateContent`` / ``:streamGenerateContent``. Streams when
    the request asks to; for a structured request (OpenAI ``response_format`` json_schema,
    Anthropic forced ``tool_choice``, Gemini ``responseJsonSchema``/``responseSchema``) the answer
    is ``example_for_schema`` of the request's schema. Anything else: 404."""
    try:
        req = rec.json() or {}
    except ValueError:
        req = {}
    path = rec.path
    if path.endswith("/chat/completions"):
        model = req.get("model") or oa.MODEL
        fmt = req.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            answer = json.dumps(example_for_schema((fmt.get("json_schema") or {}).get("schema")))
        else:
            answer = text
        if req.get("stream"):
            include = bool((req.get("stream_options") or {}).get("include_usage"))
            return oa.stream([answer], model=model, include_usage=include)
        return oa.completion(answer, model=model)
    if path.endswith("/messages"):
        model = req.get("model") or an.MODEL
        choice = req.get("tool_choice") or {}
        if choice.get("type") == "tool":
            tool = next((t for t in req.get("tools", []) if t.get("name") == choice.get("name")), {})
            data = example_for_schema(tool.get("input_schema"))
            if req.get("stream"):
                return an.tool_use_stream(data, name=choice.get("name", "answer"), model=model)
            return an.tool_use(data, name=choice.get("name", "answer"), model=model)
        if req.get("stream"):
            return an.stream([text], model=model)
        return an.message(text, model=model)
    if ":generateContent" in path or ":streamGenerateContent" in path:
        model = path.rsplit("/", 1)[-1].split(":", 1)[0]
        gen = req.get("generationConfig") or {}
        schema = gen.get("responseJsonSchema") or gen.get("responseSchema")
        answer = json.dumps(example_for_schema(_lower_gemini_schema(schema))) if schema else text
        if ":streamGenerateContent" in path:
            return ge.stream([answer], model=model)
        return ge.response(answer, model=model)
    return json_reply(404, {"error": {"message": f"auto_reply: unknown path {path}", "type": "not_found"}})


def _lower_gemini_schema(schema: Any) -> Any:
    """Gemini's OpenAPI-style ``responseSchema`` spells types in capitals (``OBJECT``)."""
    if isinstance(schema, dict):
        out = {k: _lower_gemini_schema(v) for k, v in schema.items()}
        if isinstance(out.get("type"), str):
            out["type"] = out["type"].lower()
        return out
    if isinstance(schema, list):
        return [_lower_gemini_schema(v) for v in schema]
    return schema


# =============================================================================================
# python -m actors.fakes.auto: a standalone zero-latency provider (auto_reply)
# =============================================================================================


async def _serve_forever(port: int) -> None:
    import signal

    async with WireServer(default=auto_reply, record=False, port=port) as server:
        print(f"wire server listening on {server.url}", flush=True)
        print(f"  openai base_url = {server.url}/v1 ; anthropic and gemini base_url = {server.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="A loopback OpenAI/Anthropic/Gemini wire server (auto_reply).")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    asyncio.run(_serve_forever(parser.parse_args().port))
