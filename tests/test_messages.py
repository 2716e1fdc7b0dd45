"""The wire protocol, without NATS: JSON round-trips, tags, Failure kinds, schema tolerance, and the
Failure kind ↔ exception mapping."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus import codec, errors
from bus import messages as m


def roundtrip(msg, decoder):
    return decoder.decode(codec.encode(msg))


# --- round-trips and tags ----------------------------------------------------------------------


def test_ask_roundtrip_and_tag():
    ask = m.Ask(
        id="a1",
        messages=[
            m.Message(role="system", content="be brief"),
            m.Message(
                role="user",
                content=[
                    m.Text(text="look at this"),
                    m.Image(url="https://example.invalid/cat.png", media_type="image/png"),
                    m.Document(text="doc body", name="d.txt"),
                    m.ToolCall(id="c1", name="lookup", arguments={"q": "x"}),
                    m.ToolResult(call_id="c1", content="42"),
                ],
            ),
        ],
        strategy="failover",
        providers=["p1", "p2"],
        tier="pro",
        schema={"type": "object"},
        tools=[m.Tool(name="lookup", parameters={"type": "object"})],
        params=m.Params(temperature=0.2, max_tokens=10, stop=["\n"]),
        cache="skip",
        budget_ms=1234,
        labels={"exp": "b"},
    )
    wire = json.loads(codec.encode(ask))
    assert wire["type"] == "Ask"
    assert wire["messages"][1]["content"][0] == {"type": "Text", "text": "look at this"}
    back = roundtrip(ask, codec.ask)
    assert back == ask
    assert back.messages[1].text() == "look at this"


def test_answer_roundtrip_and_tag():
    answer = m.Answer(
        id="a1",
        text="hi",
        data={"k": [1, 2]},
        confidence=0.5,
        providers=["p1"],
        usage=m.TokenUsage(input_tokens=3, output_tokens=4),
        route=[m.Step(provider="p0", outcome="timeout", ms=12.5, detail="slow"), m.Step(provider="p1", outcome="ok", ms=3.0)],
    )
    assert json.loads(codec.encode(answer))["type"] == "Answer"
    back = roundtrip(answer, codec.ask_reply)
    assert isinstance(back, m.Answer)
    assert back == answer


def test_failure_roundtrip_and_tag():
    failure = m.Failure(kind=m.RATE_LIMITED, message="slow down", provider="p1", retry_after_s=1.5)
    wire = json.loads(codec.encode(failure))
    assert wire["type"] == "Failure"
    assert wire["kind"] == "rate_limited"
    back = roundtrip(failure, codec.ask_reply)
    assert isinstance(back, m.Failure)
    assert back == failure
    # the same bytes are also a valid provider reply
    assert roundtrip(failure, codec.complete_reply) == failure


def test_reply_union_picks_by_tag():
    completion = m.Completion(id="c", ask_id="a", provider="p", model="p-1", text="t")
    assert isinstance(roundtrip(completion, codec.complete_reply), m.Completion)
    with pytest.raises(msgspec.ValidationError):
        codec.ask_reply.decode(codec.encode(completion))  # a Completion is not an ask reply


def test_cancel_roundtrip():
    cancel = m.Cancel(ask_id="a", call_id="c", reason="quorum")
    assert roundtrip(cancel, codec.cancel) == cancel


# --- Failure kinds ------------------------------------------------------------------------------


def test_unknown_failure_kind_is_kept_as_it_came_and_is_not_retryable():
    raw = b'{"type":"Failure","kind":"quota_exhausted_v9","message":"out of credit"}'
    failure = codec.ask_reply.decode(raw)
    assert isinstance(failure, m.Failure)
    assert (failure.kind, failure.message) == ("quota_exhausted_v9", "out of credit")
    assert failure.retryable is False  # a kind this version does not know: not retried
    wire = json.loads(codec.encode(failure))  # passed on unchanged
    assert (wire["kind"], wire["message"], wire["retryable"]) == ("quota_exhausted_v9", "out of credit", False)
    # the sender's verdict travels with it
    newer = codec.ask_reply.decode(b'{"type":"Failure","kind":"brand_new","message":"x","retryable":true}')
    assert newer.kind == "brand_new" and newer.retryable is True


def test_unknown_failure_kind_maps_to_unknown_failure_keeping_its_kind():
    failure = m.Failure(kind="quota_exhausted_v9", message="out of credit", provider="p")
    exc = errors.error_for(failure)
    assert type(exc) is errors.UnknownFailure and isinstance(exc, errors.LlmError)
    assert not isinstance(exc, errors.InternalError)
    assert exc.kind == "quota_exhausted_v9" and exc.failure is failure and exc.provider == "p"
    assert not exc.retryable
    assert str(exc) == "quota_exhausted_v9 [p]: out of credit"
    assert errors.UnknownFailure.kind == ""  # the class names no kind: each instance keeps its own


def _kind_literals_in_source() -> list[str]:
    """Every ``Failure(kind=<str literal>)`` / ``Outcome(kind=…)`` / ``….failure(…, kind=…)`` /
    ``errors.failure("<kind>", …)`` under bus/ and actors/, as "path:line kind"."""
    import ast
    import pathlib

    top = pathlib.Path(__file__).resolve().parent.parent
    found = []
    for path in sorted([*(top / "bus").rglob("*.py"), *(top / "actors").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            args = [kw.value for kw in node.keywords if kw.arg == "kind"] if name in ("Failure", "Outcome", "failure") else []
            if isinstance(func, ast.Attribute) and ast.unparse(func) == "errors.failure" and node.args:
                args.append(node.args[0])  # bus.errors.failure(kind, message)
            found += [f"{path.relative_to(top)}:{node.lineno} {a.value!r}" for a in args
                      if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return found


def test_failure_kinds_in_the_source_are_named_by_their_constants():
    # a typo in a literal (kind="rate_limted") would travel as an unknown kind: no retry, no
    # failover by class, the generic exception. Constants (m.RATE_LIMITED) fail at import instead.
    assert _kind_literals_in_source() == []


@pytest.mark.parametrize("kind", sorted(m.FAILURE_KINDS))
def test_retryable_is_derived_from_kind(kind):
    failure = m.Failure(kind=kind, message="x")
    assert failure.retryable is (kind in m.RETRYABLE_KINDS)
    # decoded without the field, it is derived the same way
    decoded = codec.ask_reply.decode(f'{{"type":"Failure","kind":"{kind}","message":"x"}}'.encode())
    assert decoded.retryable is (kind in m.RETRYABLE_KINDS)


def test_retryable_kinds_are_the_expected_ones():
    assert m.RETRYABLE_KINDS == {"timeout", "rate_limited", "overloaded", "unavailable", "internal"}
    assert m.RETRYABLE_KINDS <= m.FAILURE_KINDS
    assert not m.Failure(kind=m.BAD_REQUEST, message="x").retryable


def test_explicit_retryable_wins_over_kind():
    failure = m.Failure(kind=m.TIMEOUT, message="x", retryable=False)
    assert failure.retryable is False
    assert roundtrip(failure, codec.ask_reply).retryable is False


# --- schema tolerance ---------------------------------------------------------------------------


def test_unknown_fields_are_ignored_on_decode():
    ask = codec.ask.decode(
        b'{"type":"Ask","id":"a","messages":[{"role":"user","content":"hi","mood":"calm"}],'
        b'"priority":7,"params":{"temperature":0.1,"seed":3}}'
    )
    assert ask.id == "a"
    assert ask.messages[0].content == "hi"
    assert ask.params.temperature == 0.1
    answer = codec.ask_reply.decode(b'{"type":"Answer","id":"a","text":"t","new_field":{"x":1}}')
    assert answer == m.Answer(id="a", text="t")
    failure = codec.ask_reply.decode(b'{"type":"Failure","kind":"timeout","message":"m","extra":[1]}')
    assert failure == m.Failure(kind="timeout", message="m")


def test_defaults_are_omitted_on_the_wire_and_restored():
    wire = json.loads(codec.encode(m.Ask(id="a", messages=[m.Message(role="user", content="q")])))
    assert wire == {"type": "Ask", "id": "a", "messages": [{"role": "user", "content": "q"}]}
    back = codec.ask.decode(json.dumps(wire).encode())
    assert back.cache == "use" and back.stream is False and back.budget_ms is None


def test_hot_path_messages_alone_leave_defaults_out():
    hot = {m.Ask, m.Complete, m.Completion, m.Chunk, m.Outcome, m.Usage, m.Outcomes, m.Usages, m.StreamAck,
           m.Message, m.Tool, m.Params, m.Text, m.Image, m.Document, m.ToolResult}
    structs = [v for v in vars(m).values()
               if isinstance(v, type) and issubclass(v, msgspec.Struct) and v.__module__ == m.__name__
               and not v.__name__.startswith("_")]
    assert hot <= set(structs)
    for cls in structs:
        assert cls.__struct_config__.omit_defaults is (cls in hot), cls.__name__


def every_field(cls) -> set[str]:
    return set(cls.__struct_fields__) | ({"type"} if cls.__struct_config__.tag else set())


@pytest.mark.parametrize("msg", [
    m.BreakerState(provider="p"),
    m.Answer(id="a", text="t"),
    m.Failure(kind=m.TIMEOUT, message="slow"),
    m.HealthReport(providers=[m.ProviderHealth(breaker=m.BreakerState(provider="p"))]),
    m.CostReport(by="provider", lines=[m.CostLine(key="p")]),
    m.LedgerEntry(ask_id="a", call_id="c", provider="p", model="x", usage=m.TokenUsage(), cost_usd=None),
    m.CacheStats(directory="/tmp/c"),
    m.BudgetReport(budgets=[m.Budget(scope="user", name="u", period="day", limit_usd=1.0)]),
    m.StrategyReport(default="single"),
], ids=lambda msg: type(msg).__name__)
def test_everything_off_the_hot_path_carries_every_field(msg):
    wire = json.loads(codec.encode(msg))
    assert set(wire) == every_field(type(msg))
    for name, value in wire.items():  # embedded values too
        inner = getattr(msg, name, None)
        for item in inner if isinstance(inner, list) else [inner]:
            if isinstance(item, msgspec.Struct):
                shown = value[0] if isinstance(value, list) else value
                assert set(shown) == every_field(type(item)), (name, shown)
    assert msgspec.json.decode(codec.encode(msg), type=type(msg)) == msg


def test_a_default_breaker_and_answer_say_closed_and_zero_cost():
    assert json.loads(codec.encode(m.BreakerState(provider="p"))) == {
        "type": "BreakerState", "provider": "p", "state": "closed", "consecutive_failures": 0,
        "half_open_successes": 0, "open_until": 0.0, "reason": "", "probe_round": 0, "changed_at": 0.0,
        "detail": "",
    }
    answer = json.loads(codec.encode(m.Answer(id="a", text="t")))
    assert answer["cost_usd"] == 0.0 and answer["cached"] is False and answer["data"] is None
    assert answer["usage"] == {"input_tokens": 0, "output_tokens": 0, "cached_tokens": 0}
    assert json.loads(codec.encode(m.Answer(id="a", text="t", cost_usd=None)))["cost_usd"] is None  # unknown


def test_missing_required_field_is_rejected():
    with pytest.raises(msgspec.ValidationError, match="id"):
        codec.ask.decode(b'{"type":"Ask","messages":[]}')


# --- errors ---------------------------------------------------------------------------------------


def test_error_for_maps_every_kind_to_a_distinct_class():
    classes = {}
    for kind in m.FAILURE_KINDS:
        exc = errors.error_for(m.Failure(kind=kind, message="boom", provider="p", retry_after_s=2.0))
        assert isinstance(exc, errors.LlmError)
        assert type(exc) is not errors.LlmError
        assert exc.kind == kind
        assert type(exc).kind == kind
        assert exc.failure.kind == kind
        assert exc.message == "boom" and exc.provider == "p" and exc.retry_after_s == 2.0
        assert kind in str(exc)
        classes[kind] = type(exc)
    assert len(set(classes.values())) == len(m.FAILURE_KINDS)
    assert classes[m.TIMEOUT] is errors.DeadlineExceeded
    assert classes[m.BAD_REQUEST] is errors.BadRequest
    assert classes[m.OVERLOADED] is errors.Overloaded
    assert classes[m.UNAVAILABLE] is errors.Unavailable
    assert classes[m.ALL_FAILED] is errors.AllFailed
    assert classes[m.RATE_LIMITED] is errors.RateLimited
    assert classes[m.CANCELLED] is errors.Cancelled
    assert issubclass(classes[m.CONTEXT_LENGTH], errors.BadRequest)


def test_error_failure_roundtrip():
    failure = m.Failure(kind=m.OVERLOADED, message="full", provider="p")
    exc = errors.error_for(failure)
    assert exc.failure is failure
    assert exc.retryable
    # an exception raised locally builds its Failure on demand
    local = errors.RateLimited("429", provider="p", retry_after_s=3.0)
    assert local.failure == m.Failure(kind=m.RATE_LIMITED, message="429", provider="p", retry_after_s=3.0)
    assert not errors.BadRequest("no").retryable


def test_config_error_is_not_an_llm_error():
    assert not issubclass(errors.ConfigError, errors.LlmError)


# --- hypothesis ------------------------------------------------------------------------------------

texts = st.text(max_size=40)
kinds = st.one_of(st.sampled_from(sorted(m.FAILURE_KINDS)), st.text(min_size=1, max_size=20))
floats = st.floats(allow_nan=False, allow_infinity=False, width=64)

steps = st.builds(m.Step, provider=texts, outcome=texts, ms=floats, detail=st.none() | texts)

failures = st.builds(
    m.Failure,
    kind=kinds,
    message=texts,
    provider=st.none() | texts,
    retry_after_s=st.none() | floats,
    retryable=st.none() | st.booleans(),
    route=st.lists(steps, max_size=3),
)

parts = st.one_of(
    st.builds(m.Text, text=texts),
    st.builds(m.Image, url=st.none() | texts, data=st.none() | texts, media_type=st.none() | texts),
    st.builds(m.ToolCall, id=texts, name=texts, arguments=st.dictionaries(texts, st.integers() | texts, max_size=3)),
    st.builds(m.ToolResult, call_id=texts, content=texts, is_error=st.booleans()),
)
chat = st.builds(
    m.Message,
    role=st.sampled_from(["system", "user", "assistant", "tool"]),
    content=texts | st.lists(parts, max_size=3),
)
asks = st.builds(
    m.Ask,
    id=texts,
    messages=st.lists(chat, max_size=3),
    strategy=st.none() | texts,
    providers=st.none() | st.lists(texts, max_size=3),
    tier=st.none() | texts,
    user=st.none() | texts,
    params=st.builds(
        m.Params,
        temperature=st.none() | floats,
        max_tokens=st.none() | st.integers(min_value=0, max_value=2**31),
        stop=st.lists(texts, max_size=2),
    ),
    cache=st.sampled_from(["use", "refresh", "skip"]),
    budget_ms=st.none() | st.integers(min_value=0, max_value=10**9),
    stream=st.booleans(),
    labels=st.dictionaries(texts, texts, max_size=3),
)


@settings(deadline=None, max_examples=200)
@given(failures)
def test_failure_roundtrip_property(failure):
    assert isinstance(failure.retryable, bool)
    back = codec.ask_reply.decode(codec.encode(failure))
    assert back == failure


@settings(deadline=None, max_examples=200)
@given(asks)
def test_ask_roundtrip_property(ask):
    assert codec.ask.decode(codec.encode(ask)) == ask
