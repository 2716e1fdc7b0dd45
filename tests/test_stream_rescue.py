"""Stream rescue: a provider's stream cut mid-answer fails over to the next provider, and the
consumer never shows text twice — the router sends ``Chunk(reset=True)`` before the next
provider's text, and ``StreamText`` (what the CLI and a gateway use) discards what came before.

Tested for the mock's ``cut_stream`` fault and for the three SDK adapters (the real SDK clients
against the loopback wire server, ``actors/fakes``), cutting the HTTP body mid-stream — each as
the provider that breaks and as the one that rescues.
"""

from __future__ import annotations

import anyio
import pytest

from actors.fakes.server import WireServer
from bus import messages as m
from bus.client import StreamText
from tests.test_providers import KINDS, config_toml

pytestmark = pytest.mark.anyio

PROMPT = "one two three four five six"


def mocks(extra: str = "") -> str:
    return f"""
[router]
strategy = "failover"
providers = ["a", "b"]
mocks_with_real = true

[providers.a]
latency = {{ dist = "fixed", ms = 1 }}

[providers.b]
latency = {{ dist = "fixed", ms = 1 }}
{extra}"""


async def stream(client, **kw) -> tuple[list, StreamText]:
    text = StreamText()
    items = []
    with anyio.fail_after(15):
        async for item in client.stream(PROMPT, budget_ms=8000, **kw):
            items.append(item)
            text.feed(item)
    return items, text


def text_chunks(items: list) -> list[m.Chunk]:
    return [c for c in items if isinstance(c, m.Chunk) and c.worker is None]


def check_rescued(items: list, text: StreamText, broke: str, rescuer: str) -> m.Answer:
    final = items[-1]
    assert isinstance(final, m.Answer), final
    assert [(st.provider, st.outcome) for st in final.route] == [(broke, m.UNAVAILABLE), (rescuer, "ok")], final.route
    chunks = text_chunks(items)
    resets = [i for i, c in enumerate(chunks) if c.reset]
    assert len(resets) == 1 and resets[0] > 0, chunks  # the broken provider's text came first, then one reset
    assert any(c.delta for c in chunks[: resets[0]])
    after = "".join(c.delta for c in chunks[resets[0]:])
    assert after == final.text  # the rescuer's text alone after the reset
    assert text.resets == 1 and text.streamed == final.text == text.value  # no duplicated part
    states = [(c.worker, c.state) for c in items if isinstance(c, m.Chunk) and c.worker is not None]
    assert states == [(broke, "running"), (broke, m.UNAVAILABLE), (rescuer, "running"), (rescuer, "ok")]
    return final


async def test_the_mocks_cut_stream_is_rescued_without_duplicated_text(stack):
    async with stack(mocks('failures = { cut_stream = 1.0 }\n')) as s:  # b's streams always break
        items, text = await stream(s.client, providers=["b", "a"])
        final = check_rescued(items, text, "b", "a")
        assert final.text == f"[a] {PROMPT}"


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("side", ["breaks", "rescues"])
async def test_an_sdk_stream_cut_mid_body_is_rescued(stack, monkeypatch, kind, side):
    k = KINDS[kind]
    monkeypatch.setenv(k.env, k.key)
    async with WireServer() as server:
        toml = mocks(config_toml(k, server.url, name="p"))
        if side == "breaks":  # the HTTP body is closed halfway (no terminating chunk): the SDK raises
            server.push(k.stream(["a", "b", "c", "d"], 10, 4, 0, cut_after=k.cut_after))
            order, extra = ["p", "a"], ""
        else:  # the mock breaks, the SDK's full stream rescues it
            server.push(k.stream(["the ", "rescued ", "answer"], 10, 3, 0))
            order, extra = ["a", "p"], {"mock.fault": "cut_stream"}
        async with stack(toml, names=["router", "provider.p", "provider.a"]) as s:
            items, text = await stream(s.client, providers=order, **({"labels": extra} if extra else {}))
            final = check_rescued(items, text, order[0], order[1])
            assert final.text == (f"[a] {PROMPT}" if side == "breaks" else "the rescued answer")
            assert len(server.requests) == 1


async def test_a_streamed_tier_ask_takes_the_tiers_fallback_routes(stack):
    toml = mocks('failures = { cut_stream = 1.0 }\n') + """
[tiers.pro]
strategy = "failover"
fallback_routes = true
[[tiers.pro.routes]]
name = "first"
strategy = "single"
providers = ["b"]
[[tiers.pro.routes]]
name = "second"
strategy = "single"
providers = ["a"]
"""
    async with stack(toml) as s:
        items, text = await stream(s.client, tier="pro", cache="skip")
        final = items[-1]
        assert isinstance(final, m.Answer), final
        assert final.metadata["route_name"] == "second"
        assert final.metadata["routes_tried"] == [{"route": "first", "failure": m.UNAVAILABLE}]
        assert text.resets == 1 and text.streamed == final.text == f"[a] {PROMPT}"
