"""Pure parts, no NATS: failover's ``next_step``, the deadline arithmetic, and settings validation."""

from __future__ import annotations

import math

import msgspec
import pytest

from actors import settings as settings_mod
from actors.router.actor import finish, route_of
from actors.strategies.base import Call, Done, Plan, Reply
from actors.strategies.failover import MIN_CALL_S, FailoverOptions, Next, next_step
from actors.strategies.runner import Outcome, Record
from bus import deadline as dl
from bus import messages as m
from bus.errors import ConfigError

CFG = FailoverOptions()  # reserve 0.3, retry_same_provider on, fails over on the retryable kinds
ABC = ["a", "b", "c"]


def ok(provider: str) -> m.Completion:
    return m.Completion(id="c-" + provider, ask_id="ask", provider=provider, model=provider + "-1", text="hi")


def fail(provider: str, kind: str, retry_after_s: float | None = None) -> m.Failure:
    return m.Failure(kind=kind, message=f"{provider} said {kind}", provider=provider, retry_after_s=retry_after_s)


def att(provider: str, result) -> Reply:
    return Reply(provider, result, 1.0, provider)


def decide(order, replies, *, now, deadline, config):
    return next_step(order, replies, now=now, deadline=deadline, options=config)


# --- decide --------------------------------------------------------------------------------------


def test_first_call_goes_to_first_provider_keeping_the_reserve():
    action = decide(ABC, [], now=0.0, deadline=10.0, config=CFG)
    assert action == Next("a", pytest.approx(7.0), 0.0)


def test_answer_is_done():
    answer = ok("a")
    assert decide(ABC, [att("a", answer)], now=1.0, deadline=10.0, config=CFG) == Done(answer)


def test_answer_after_failures_is_done():
    answer = ok("b")
    attempts = [att("a", fail("a", m.TIMEOUT)), att("b", answer)]
    assert decide(ABC, attempts, now=5.0, deadline=10.0, config=CFG) == Done(answer)


@pytest.mark.parametrize(
    "kind", [m.BAD_REQUEST, m.AUTH, m.CONTEXT_LENGTH, m.CONTENT_FILTER, m.BUDGET_EXCEEDED, m.CANCELLED]
)
def test_non_failover_kinds_end_the_ask_without_trying_the_next(kind):
    failure = fail("a", kind)
    assert decide(ABC, [att("a", failure)], now=1.0, deadline=10.0, config=CFG) == Done(failure)


@pytest.mark.parametrize("kind", [m.TIMEOUT, m.RATE_LIMITED, m.OVERLOADED, m.UNAVAILABLE, m.INTERNAL])
def test_failover_kinds_move_to_the_next_provider(kind):
    action = decide(ABC, [att("a", fail("a", kind))], now=4.0, deadline=10.0, config=CFG)
    # b is not the last: it gets 70 % of what is left, 30 % stays for c
    assert action == Next("b", pytest.approx(4.0 + 6.0 * 0.7), 0.0)


def test_last_provider_gets_everything_left():
    attempts = [att("a", fail("a", m.TIMEOUT)), att("b", fail("b", m.OVERLOADED))]
    assert decide(ABC, attempts, now=8.0, deadline=10.0, config=CFG) == Next("c", 10.0, 0.0)
    # a single provider also gets the whole budget
    assert decide(["a"], [], now=0.0, deadline=3.0, config=CFG) == Next("a", 3.0, 0.0)


def test_reserve_is_configurable():
    cfg = FailoverOptions(reserve=0.5)
    assert decide(ABC, [], now=2.0, deadline=10.0, config=cfg) == Next("a", pytest.approx(6.0), 0.0)
    cfg0 = FailoverOptions(reserve=0.0)
    assert decide(ABC, [], now=2.0, deadline=10.0, config=cfg0) == Next("a", pytest.approx(10.0), 0.0)


def test_rate_limited_with_retry_after_that_fits_retries_same_provider_once_with_delay():
    attempts = [att("a", fail("a", m.RATE_LIMITED, retry_after_s=0.5))]
    action = decide(ABC, attempts, now=1.0, deadline=10.0, config=CFG)
    assert isinstance(action, Next)
    assert action.provider == "a"
    assert action.delay_s == 0.5
    # the retry starts after the delay and still keeps the reserve for b and c
    assert action.deadline == pytest.approx(1.5 + 8.5 * 0.7)
    # a second rate_limited from a moves on to b
    attempts.append(att("a", fail("a", m.RATE_LIMITED, retry_after_s=0.5)))
    assert decide(ABC, attempts, now=2.0, deadline=10.0, config=CFG) == Next("b", pytest.approx(2.0 + 8.0 * 0.7), 0.0)


def test_rate_limited_alone_retries_with_the_whole_budget():
    attempts = [att("a", fail("a", m.RATE_LIMITED, retry_after_s=1.0))]
    assert decide(["a"], attempts, now=1.0, deadline=10.0, config=CFG) == Next("a", 10.0, 1.0)


def test_rate_limited_with_retry_after_that_does_not_fit_moves_on():
    attempts = [att("a", fail("a", m.RATE_LIMITED, retry_after_s=9.0))]
    assert decide(ABC, attempts, now=1.0, deadline=10.0, config=CFG) == Next("b", pytest.approx(1.0 + 9.0 * 0.7), 0.0)


def test_rate_limited_without_retry_after_moves_on():
    attempts = [att("a", fail("a", m.RATE_LIMITED))]
    assert decide(ABC, attempts, now=1.0, deadline=10.0, config=CFG).provider == "b"


def test_retry_same_provider_can_be_turned_off():
    cfg = FailoverOptions(retry_same_provider=False)
    attempts = [att("a", fail("a", m.RATE_LIMITED, retry_after_s=0.1))]
    action = decide(ABC, attempts, now=1.0, deadline=10.0, config=cfg)
    assert action.provider == "b" and action.delay_s == 0.0


def test_all_tried_is_all_failed_naming_each():
    attempts = [att("a", fail("a", m.TIMEOUT)), att("b", fail("b", m.UNAVAILABLE)), att("c", fail("c", m.OVERLOADED))]
    action = decide(ABC, attempts, now=5.0, deadline=10.0, config=CFG)
    assert isinstance(action, Done)
    assert action.result.kind == m.ALL_FAILED
    for part in ("a: timeout", "b: unavailable", "c: overloaded"):
        assert part in action.result.message


def test_single_attempt_that_failed_returns_that_failure():
    failure = fail("a", m.TIMEOUT)
    assert decide(["a"], [att("a", failure)], now=5.0, deadline=10.0, config=CFG) == Done(failure)


def test_no_time_left_is_timeout_naming_the_next_provider():
    attempts = [att("a", fail("a", m.TIMEOUT))]
    action = decide(ABC, attempts, now=10.0 - MIN_CALL_S / 2, deadline=10.0, config=CFG)
    assert isinstance(action, Done)
    assert action.result.kind == m.TIMEOUT
    assert "b" in action.result.message and "a: timeout" in action.result.message
    # before any call, too
    assert decide(ABC, [], now=10.0, deadline=10.0, config=CFG).result.kind == m.TIMEOUT


def test_custom_on_list():
    cfg = FailoverOptions(on=[m.TIMEOUT])
    overloaded = fail("a", m.OVERLOADED)
    assert decide(ABC, [att("a", overloaded)], now=1.0, deadline=10.0, config=cfg) == Done(overloaded)
    assert decide(ABC, [att("a", fail("a", m.TIMEOUT))], now=1.0, deadline=10.0, config=cfg).provider == "b"


def test_reserve_over_a_whole_run_leaves_time_for_every_provider():
    """Simulate providers that all stall until their call deadline: each later one still gets time."""
    now, deadline, attempts, starts = 0.0, 1.0, [], []
    while True:
        action = decide(ABC, attempts, now=now, deadline=deadline, config=CFG)
        if isinstance(action, Done):
            break
        starts.append((action.provider, now, action.deadline))
        now = action.deadline  # the call times out at its deadline
        attempts.append(att(action.provider, fail(action.provider, m.TIMEOUT)))
    assert [p for p, _, _ in starts] == ABC
    assert starts[0][2] == pytest.approx(0.7)
    assert starts[1][2] == pytest.approx(0.7 + 0.3 * 0.7)
    assert starts[2][2] == deadline  # the last gets everything left
    assert all(end - start > 0.05 for _, start, end in starts)
    assert action.result.kind == m.ALL_FAILED


def record(provider: str, result) -> Record:
    rec = Record(Call(provider, provider), "call-" + provider, 0.0)
    rec.close(result, 0.001)
    return rec


def test_finish_builds_answer_with_route_or_failure_with_route():
    ask = m.Ask(id="q", messages=[m.Message(role="user", content="x")])
    records = [record("a", fail("a", m.TIMEOUT)), record("b", ok("b"))]
    answer = finish(ask, "failover", Outcome(Done(records[-1].result), records))
    assert isinstance(answer, m.Answer)
    assert answer.id == "q" and answer.providers == ["b"] and answer.model == "b-1"
    assert answer.strategy == "failover"
    assert [(s.provider, s.outcome, s.call_id) for s in answer.route] == [("a", "timeout", "call-a"),
                                                                        ("b", "ok", "call-b")]
    assert answer.route[0].detail == "a said timeout" and answer.route[1].detail is None
    failed = finish(ask, "failover", Outcome(Done(fail("b", m.ALL_FAILED)), records[:1]))
    assert isinstance(failed, m.Failure)
    assert failed.route == route_of(Outcome(Done(fail("b", m.ALL_FAILED)), records[:1]))


# --- deadline.py -------------------------------------------------------------------------------------


def test_deadline_from_header():
    hdrs = {dl.BUDGET_HEADER: "250"}
    assert dl.deadline_from(hdrs, arrival=100.0, fallback_ms=30_000) == pytest.approx(100.25)
    assert dl.deadline_from({dl.BUDGET_HEADER: "12.5"}, arrival=1.0, fallback_ms=0) == pytest.approx(1.0125)


def test_deadline_from_negative_header_is_now():
    assert dl.deadline_from({dl.BUDGET_HEADER: "-40"}, arrival=5.0, fallback_ms=30_000) == 5.0


@pytest.mark.parametrize("raw", ["", "abc", "12ms", "1,5", "inf", "-inf", "nan", "1e999"])
def test_deadline_from_malformed_header_uses_fallback(raw):
    assert dl.deadline_from({dl.BUDGET_HEADER: raw}, arrival=5.0, fallback_ms=300) == pytest.approx(5.3)


@pytest.mark.parametrize("headers", [None, {}, {dl.ASK_ID_HEADER: "a1"}])
def test_deadline_from_missing_header_uses_fallback(headers):
    assert dl.deadline_from(headers, arrival=5.0, fallback_ms=300) == pytest.approx(5.3)


def test_deadline_helpers():
    start = dl.now()
    d = dl.deadline_in(500, start=start)
    assert d == pytest.approx(start + 0.5)
    assert 0.0 < dl.remaining_s(d) <= 0.5
    assert dl.remaining_s(start - 1.0) == 0.0
    assert 0 < dl.budget_ms_left(d) <= 500
    assert dl.budget_ms_left(start - 1.0) == 0
    hdrs = dl.headers_for(d, "a1")
    assert hdrs[dl.ASK_ID_HEADER] == "a1"
    assert 0 < int(hdrs[dl.BUDGET_HEADER]) <= 500
    assert dl.ASK_ID_HEADER not in dl.headers_for(d, None)
    # what a sender puts in the header is what a receiver turns back into (about) the same deadline
    back = dl.deadline_from(hdrs, arrival=dl.now(), fallback_ms=0)
    assert math.isclose(back, d, abs_tol=0.01)


# --- settings ----------------------------------------------------------------------------------------

GOOD = """
[bus]
root = "x1"
default_budget_ms = 500

[router]
strategy = "failover"
providers = ["b", "a"]

[providers.a]
latency = { dist = "fixed", ms = 5 }

[providers.b]
failures = { stall = 0.5, rate_limited = 0.25 }
retry_after_s = 0.1
"""


def test_good_settings_parse():
    s = settings_mod.parse(GOOD, "good.toml").check()
    assert s.source == "good.toml"
    assert s.bus.root == "x1" and s.bus.default_budget_ms == 500
    assert s.provider_order() == ["b", "a"]
    assert s.providers["a"].latency.ms == 5
    assert s.providers["b"].failures == {"stall": 0.5, "rate_limited": 0.25}


def test_provider_order_defaults_to_file_order():
    s = settings_mod.parse("[providers.z]\n[providers.y]\n", "t.toml").check()
    assert s.provider_order() == ["z", "y"]


def test_shipped_config_is_valid(monkeypatch):
    monkeypatch.delenv("LLMBUS_NATS_URL", raising=False)
    monkeypatch.delenv("LLMBUS_ROOT", raising=False)
    s = settings_mod.load(settings_mod.SHIPPED_CONFIG)
    assert s.router.providers and all(p in s.providers for p in s.router.providers)


@pytest.mark.parametrize(
    "toml, key",
    [
        ("[bus]\nrooot = 'x'\n", "rooot"),
        ("[router]\nstratgy = 'single'\n", "stratgy"),
        ("[router.strategies.failover]\nreserv = 0.2\n", "reserv"),
        ("[providers.a]\nlatncy = { ms = 3 }\n", "latncy"),
        ("[providers.a]\nlatency = { mss = 3 }\n", "mss"),
        ("colour = 'blue'\n", "colour"),
    ],
)
def test_unknown_key_names_key_and_file(toml, key):
    with pytest.raises(ConfigError) as info:
        settings_mod.parse(toml, "conf/my.toml")
    text = str(info.value)
    assert key in text
    assert "conf/my.toml" in text


def test_wrong_type_names_the_path_and_file():
    with pytest.raises(ConfigError) as info:
        settings_mod.parse("[bus]\nport = 'high'\n", "p.toml")
    assert "p.toml" in str(info.value) and "port" in str(info.value)


def test_unknown_failure_kind():
    toml = "[providers.a]\nfailures = { explode = 0.1 }\n"
    with pytest.raises(ConfigError) as info:
        settings_mod.parse(toml, "f.toml").check()
    text = str(info.value)
    assert "explode" in text and "providers.a.failures" in text and "f.toml" in text


def test_unknown_failover_kind():
    toml = "[router.strategies.failover]\non = ['timeout', 'meltdown']\n[providers.a]\n"
    with pytest.raises(ConfigError, match="meltdown"):
        settings_mod.parse(toml, "f.toml").check()


def test_router_providers_naming_a_missing_provider():
    toml = "[router]\nproviders = ['a', 'ghost']\n[providers.a]\n"
    with pytest.raises(ConfigError) as info:
        settings_mod.parse(toml, "r.toml").check()
    text = str(info.value)
    assert "ghost" in text and "router.providers" in text and "r.toml" in text


@pytest.mark.parametrize(
    "toml, needle",
    [
        ("[router]\nstrategy = 'vote'\n[providers.a]\n", "router.strategy"),
        ("[router.strategies.failover]\nreserve = 1.0\n[providers.a]\n", "reserve"),
        ("[providers.a]\nfailures = { timeout = 1.5 }\n", "providers.a.failures.timeout"),
        ("[providers.a]\nfailures = { timeout = 0.6, overloaded = 0.6 }\n", "add up"),
        ("[bus]\nroot = 'has.dot'\n[providers.a]\n", "bus.root"),
        ("[providers.'a.b']\n", "a.b"),
    ],
)
def test_cross_table_checks(toml, needle):
    with pytest.raises(ConfigError) as info:
        settings_mod.parse(toml, "c.toml").check()
    assert needle in str(info.value) and "c.toml" in str(info.value)


def test_no_providers_is_an_error():
    s = settings_mod.parse("[router]\n", "n.toml")
    s = msgspec.structs.replace(s, providers={})
    with pytest.raises(ConfigError, match="provider"):
        s.check()


@pytest.mark.parametrize("text", ["[bus\nroot = 'x'\n", "root = \n", "[bus]\nroot = 'x'\nroot = 'y'\n"])
def test_invalid_toml(text):
    with pytest.raises(ConfigError) as info:
        settings_mod.parse(text, "broken.toml")
    assert "broken.toml" in str(info.value)
    assert "TOML" in str(info.value)


def test_load_missing_file_names_it(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="nope.toml"):
        settings_mod.load(missing)


def test_load_env_overrides(tmp_path, monkeypatch):
    path = tmp_path / "e.toml"
    path.write_text("[providers.a]\n")
    monkeypatch.setenv("LLMBUS_NATS_URL", "nats://127.0.0.1:1")
    monkeypatch.setenv("LLMBUS_ROOT", "envroot")
    s = settings_mod.load(path)
    assert s.bus.url == "nats://127.0.0.1:1" and s.bus.root == "envroot"
    assert s.source == str(path)
    monkeypatch.setenv("LLMBUS_ROOT", "bad root")
    with pytest.raises(ConfigError, match="bus.root"):
        settings_mod.load(path)
