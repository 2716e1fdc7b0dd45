"""Priority under load (``actors.admission``): a full router keeps a bounded queue, serves the
higher priority first (``Ask.priority``, else the tier's), and answers what does not fit
``overloaded`` at once with a retry hint — never a silent drop. The heavy version is
``llmbus bench priority``."""

from __future__ import annotations

import time

import anyio
import pytest

from bus import messages as m
from bus.errors import DeadlineExceeded, LlmError, Overloaded
from tests.helpers import wait_until

pytestmark = pytest.mark.anyio

TOML = """
[router]
strategy = "single"
providers = ["slow"]
max_concurrency = 2
max_queued = 3

[providers.slow]
latency = { dist = "fixed", ms = 1200 }  # room for the steps below before a slot frees, on a loaded machine

[tiers.free]
priority = 0

[tiers.premium]
priority = 2
"""


async def test_a_full_router_serves_premium_first_and_sheds_free_at_once(stack):
    async with stack(TOML, names=["router", "provider.slow"]) as s:
        router = s.actor("router")
        done: dict[str, tuple[object, float, float]] = {}  # name -> (outcome, sent, replied)

        async def ask(name: str, kw: dict) -> None:
            sent = time.monotonic()
            try:
                outcome = await s.client.ask(name, budget_ms=8000, cache="skip", **kw)
            except LlmError as exc:
                outcome = exc
            done[name] = (outcome, sent, time.monotonic())

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for i in range(2):  # the two slots
                    tg.start_soon(ask, f"running{i}", dict(tier="free"))
                await wait_until(lambda: router.in_flight() == 2, what="both slots taken")
                for i in range(3):  # the queue
                    tg.start_soon(ask, f"waiting{i}", dict(tier="free"))
                await wait_until(lambda: router.statistics().queued == 3, what="three free asks waiting")
                tg.start_soon(ask, "refused", dict(tier="free"))  # a full queue of its own priority: refused
                await wait_until(lambda: "refused" in done, what="the refusal")
                tg.start_soon(ask, "premium", dict(tier="premium"))  # displaces the last free one waiting
                await wait_until(lambda: "waiting2" in done, what="the first displaced")
                tg.start_soon(ask, "urgent", dict(priority=5))  # an ask's own priority, no tier
                await wait_until(lambda: "waiting1" in done, what="the second displaced")

        shed = {n for n, (o, _, _) in done.items() if isinstance(o, Overloaded)}
        assert shed == {"refused", "waiting2", "waiting1"}, done
        for name in shed:
            outcome = done[name][0]
            assert outcome.failure.retry_after_s and outcome.failure.retry_after_s > 0
        assert done["refused"][2] - done["refused"][1] < 0.3  # at once, not when a slot frees
        answered = {n for n, (o, _, _) in done.items() if isinstance(o, m.Answer)}
        assert answered == {"running0", "running1", "premium", "urgent", "waiting0"}, done
        # the two higher priorities took the first slots that freed; the free one waiting went last
        started_last = max(("premium", "urgent"), key=lambda n: done[n][2])
        assert done["waiting0"][2] > done[started_last][2] - 0.05, done
        assert done["urgent"][2] <= done["premium"][2] + 0.05  # priority 5 before priority 2
        stats = router.statistics()
        assert stats.queued == 0 and stats.served_from_queue == 3 and stats.rejected == 3


async def test_an_ask_waiting_past_its_deadline_is_answered_timeout(stack):
    async with stack(TOML.replace("max_concurrency = 2", "max_concurrency = 1"), names=["router", "provider.slow"]) as s:
        router = s.actor("router")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: s.client.ask("holds the slot", budget_ms=5000, cache="skip"))
                await wait_until(lambda: router.in_flight() == 1, what="the slot taken")
                started = time.monotonic()
                with pytest.raises(DeadlineExceeded):
                    await s.client.ask("waits", budget_ms=150, cache="skip")
                assert time.monotonic() - started < 0.35  # at its deadline, not when the slot freed
        assert "waited for a slot" in router.statistics().endpoints["ask"].last_error
        assert router.statistics().queued == 0
