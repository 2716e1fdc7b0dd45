"""The chaos fuzz's one untyped reply was an ask of nearly max_payload bytes to ``<root>.ask.stream``:
the router streams it (typed Chunks), then ends with a typed Failure (the final Answer would not fit
in max_payload); the fuzz had taken the first Chunk for the reply. It reads a streaming row to its
last message now (``actors.bench.chaos.final_reply``)."""

from __future__ import annotations

import msgspec
import pytest

from actors.bench.chaos import final_reply, payloads
from bus.subjects import ASK, ASK_STREAM

pytestmark = pytest.mark.anyio

TOML = """
[providers.p]
latency = { dist = "fixed", ms = 1 }

[cache]
enabled = false
"""


@pytest.mark.timeout(30)
async def test_a_huge_ask_gets_a_typed_failure_streamed_or_not(stack):
    async with stack(TOML, names=["router", "provider.p"]) as s:
        nc = s.client.nc
        huge, _ = payloads(nc.max_payload)["huge"]
        for row in (ASK, ASK_STREAM):
            body = msgspec.json.decode(await final_reply(nc, row, row.subject(s.client.subjects, "p"), huge, None))
            assert body["type"] == "Failure", body
            assert "max_payload" in body["message"], body
