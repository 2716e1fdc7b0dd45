"""Failover's attempt deadline: a call with providers after it ends at ``attempt_p95`` × the
provider's live p95 + ``attempt_floor_s`` when that is sooner than its share of the budget, so a dead
provider copy (or a stall) costs well under a second instead of 70 % of the budget."""

from __future__ import annotations

import time

import pytest

from actors.strategies.failover import FailoverOptions, Next, next_step
from bus import messages as m

OPTS = FailoverOptions()  # attempt_p95 4, attempt_floor_s 0.25, reserve 0.3


@pytest.mark.parametrize(("p95_ms", "options", "expected"), [
    (None, OPTS, 7.0),  # no live p95: the share (70 % of what is left)
    ({}, OPTS, 7.0),
    ({"b": 50.0}, OPTS, 7.0),  # another provider's p95
    ({"a": 50.0}, OPTS, 0.45),  # 4 × 50 ms + 250 ms
    ({"a": 5000.0}, OPTS, 7.0),  # the share is sooner
    ({"a": 50.0}, FailoverOptions(attempt_p95=0.0), 7.0),  # off
    ({"a": 50.0}, FailoverOptions(attempt_p95=2.0, attempt_floor_s=0.0), 0.1),
])
def test_the_first_call_ends_at_the_sooner_of_its_share_and_the_attempt_deadline(p95_ms, options, expected):
    step = next_step(["a", "b"], [], now=0.0, deadline=10.0, options=options, p95_ms=p95_ms)
    assert step == Next("a", pytest.approx(expected), 0.0)


def test_the_last_provider_gets_everything_left():
    step = next_step(["a"], [], now=0.0, deadline=10.0, options=OPTS, p95_ms={"a": 50.0})
    assert step == Next("a", 10.0, 0.0)


def test_bad_attempt_options_are_refused():
    with pytest.raises(ValueError, match="attempt_p95"):
        FailoverOptions(attempt_p95=-1.0)


TOML = """
[router]
strategy = "failover"
providers = ["dead", "alive"]

[providers.dead]
failures = { stall = 1.0 }

[providers.alive]
latency = { dist = "fixed", ms = 1 }

[cache]
enabled = false
"""


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_stalled_provider_with_a_known_p95_is_left_within_the_attempt_deadline(stack):
    async with stack(TOML, names=["router", "provider.dead", "provider.alive"]) as s:
        router = s.actor("router")
        router.live.p95_ms["dead"] = 20.0  # as the health actor's metrics would say: 4 × 20 ms + 250 ms
        start = time.monotonic()
        answer = await s.client.ask("hi", budget_ms=10_000)
        took = time.monotonic() - start
        assert answer.providers == ["alive"]
        assert [(step.provider, step.outcome) for step in answer.route][:1] == [("dead", m.TIMEOUT)]
        assert 0.3 <= took < 1.5  # not 7 s (70 % of the budget)
        del router.live.p95_ms["dead"]  # no p95: the call gets its share again
        start = time.monotonic()
        answer = await s.client.ask("hi again", budget_ms=1_000)
        assert time.monotonic() - start >= 0.65 and answer.route[0].outcome == m.TIMEOUT
