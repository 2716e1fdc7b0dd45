"""Tool calls pass through from ask to answer, for all three SDK providers: the ask's tools reach the
provider's wire request, and the model's tool calls come back in ``Answer.tool_calls`` (with the
model that answered), through the router and a real SDK against the loopback wire server."""

from __future__ import annotations

import json

import pytest

from actors.fakes import anthropic as an, gemini as ge, openai as oa
from actors.fakes.server import WireServer
from bus import messages as m
from tests.test_providers import KINDS, config_toml

pytestmark = pytest.mark.anyio

WEATHER = m.Tool(name="get_weather", description="Weather in a city",
                 parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
CALL = [("get_weather", {"city": "Oslo"})]
REPLIES = {
    "openai": lambda: oa.tool_calls(CALL),
    "anthropic": lambda: an.tool_use({"city": "Oslo"}, name="get_weather"),
    "gemini": lambda: ge.function_calls(CALL),
}


def tools_sent(kind: str, body: dict) -> list[str]:
    if kind == "openai":
        return [t["function"]["name"] for t in body["tools"]]
    if kind == "anthropic":
        return [t["name"] for t in body["tools"]]
    return [f["name"] for t in body["tools"] for f in t["functionDeclarations"]]


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_tool_calls_reach_the_answer(stack, monkeypatch, kind):
    k = KINDS[kind]
    monkeypatch.setenv(k.env, k.key)
    async with WireServer() as server:
        toml = '[router]\nstrategy = "single"\nproviders = ["p"]\n' + config_toml(k, server.url)
        async with stack(toml, names=["router", "provider.p"]) as s:
            server.push(REPLIES[kind]())
            answer = await s.client.ask("weather in Oslo?", tools=[WEATHER], cache="skip", budget_ms=5000)
            [call] = answer.tool_calls
            assert call.name == "get_weather" and call.arguments == {"city": "Oslo"} and call.id
            assert answer.model == k.wire_model and answer.providers == ["p"]
            [request] = server.requests
            assert tools_sent(kind, json.loads(request.body)) == ["get_weather"]
