"""map_reduce beyond the basics (tests/test_documents_wire.py has every chunk read and provenance):
a pattern's worker prompt reaches every chunk call and its synthesis prompt the reducer, one
``documents`` log line per step (extract, chunk, map, reduce) with sizes and durations, and the
cold extraction done in a worker thread, never in the router's event loop."""

from __future__ import annotations

import base64
import threading

import anyio

import pytest

from actors.documents.samples import make_pdf
from actors.patterns import apply, patterns
from actors.strategies import map_reduce as mr
from actors.strategies import runner
from actors.strategies.base import Call, Done, Plan, Policy, Reply, options_for
from bus import messages as m
from bus.client import document

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

PAGES = [f"Page {i} finding: item {i} matters." for i in range(1, 9)]


def pdf_part(pages: list[str] = PAGES, name: str = "long.pdf") -> m.Document:
    return m.Document(data=base64.b64encode(make_pdf(pages)).decode(), media_type="application/pdf", name=name)


def policy(messages: list[m.Message], **options) -> mr.MapReduce:
    opts = options_for(mr.MapReduce, {"chunk_tokens": 20, "overlap_tokens": 3, "concurrency": 2, **options})
    return mr.MapReduce(Plan(m.Ask(id="a1", messages=messages), ["r", "w0", "w1"], opts, deadline=100.0))


def completion(text: str, provider: str) -> m.Completion:
    return m.Completion(id="c", ask_id="a1", text=text, provider=provider, model=f"{provider}-1")


def run_to_done(p: mr.MapReduce) -> tuple[list[Call], Done]:
    """Drive the policy by hand: every call answered (the reducer last), 10 ms apart."""
    now = 1.0
    pending = [a for a in p.start(now) if isinstance(a, Call)]
    calls = list(pending)
    while pending:
        call = pending.pop(0)
        now += 0.01
        text = "merged" if call.key == mr.REDUCE else f"read {call.key}"
        for action in p.step(Reply(call.key, completion(text, call.provider), 10.0, call.provider), now):
            if isinstance(action, Done):
                return calls, action
            pending.append(action)
            calls.append(action)
    raise AssertionError("the policy never finished")


def test_a_patterns_prompts_reach_the_chunk_calls_and_the_reducer():
    critique = patterns()["critique"]
    messages = [m.Message(role="user", content=[pdf_part(), m.Text(text="Is the plan sound?")])]
    messages, schema, options = apply(critique, messages, strategy="map_reduce", schema=None)
    assert options == {"reduce_template": critique.synthesis} and schema is None
    calls, done = run_to_done(policy(messages, **options))
    maps = [c for c in calls if c.purpose == "map"]
    reduce = next(c for c in calls if c.key == mr.REDUCE)
    assert len(maps) >= 3 and {c.provider for c in maps} == {"w0", "w1"}
    for call in (*maps, reduce):  # the worker prompt is each call's system message
        assert call.messages[0] == m.Message(role="system", content=critique.worker)
    prompt = reduce.messages[-1].content
    assert prompt.startswith("Several reviews of the same material follow.")  # the pattern's merge prompt …
    assert "## Request\n\nIs the plan sound?" in prompt and "{candidates}" not in prompt
    assert all(f"read {c.key}" in prompt for c in maps)  # … with every part's answer
    assert done.result.text == "merged" and done.metadata["map_reduce"]["answered"] == len(maps)


def test_without_a_pattern_the_default_reduce_prompt():
    calls, _ = run_to_done(policy([m.Message(role="user", content=[pdf_part(), m.Text(text="List the findings.")])]))
    reduce = next(c for c in calls if c.key == mr.REDUCE)
    assert [msg.role for msg in reduce.messages] == ["user"]
    assert reduce.messages[0].content.startswith("Several readers each read one part")


def test_one_log_line_per_step_with_sizes_and_durations():
    calls, done = run_to_done(policy([m.Message(role="user", content=[pdf_part(), m.Text(text="Findings?")])]))
    lines = {fields["step"]: fields for event, fields in done.log if event == "documents"}
    assert list(lines) == ["extract", "chunk", "map", "reduce"] and len(done.log) == 4
    maps = [c for c in calls if c.purpose == "map"]
    assert lines["extract"]["documents"] == 1 and lines["extract"]["bytes"] > 500 and lines["extract"]["chars"] > 200
    assert lines["extract"]["ms"] >= 0 and lines["chunk"]["chunks"] == len(maps) and lines["chunk"]["ms"] >= 0
    assert lines["map"]["answered"] == len(maps) and lines["map"]["chars_in"] >= lines["extract"]["chars"]
    assert lines["map"]["ms"] == pytest.approx(len(maps) * 10.0)  # from the first map call to the last answer
    assert lines["reduce"] == {"step": "reduce", "provider": "r", "chars_in": len(calls[-1].messages[-1].content),
                               "chars_out": len("merged"), "outcome": "ok", "ms": 10.0}
    bad = policy([m.Message(role="user", content=[m.Document(data="bm90IGEgcGRm", media_type="application/pdf",
                                                             name="bad.pdf"), m.Text(text="?")])])
    [failed] = bad.start(0.0)
    assert failed.result.kind == m.BAD_REQUEST and "bad.pdf" in failed.result.message
    assert [f["step"] for _, f in failed.log] == ["extract"] and "bad.pdf" in failed.log[0][1]["error"]


MOCKS = """
[router]
strategy = "map_reduce"
providers = ["r", "w0", "w1"]

[router.strategies.map_reduce]
chunk_tokens = 40
overlap_tokens = 5
""" + "".join(f'\n[providers.{p}]\nlatency = {{ dist = "fixed", ms = 2 }}\n' for p in ("r", "w0", "w1"))


async def test_through_the_router_extraction_is_off_the_loop_and_every_step_is_logged(stack, tmp_path, monkeypatch):
    from structlog.testing import capture_logs

    threads: list[int] = []
    real = mr.chunks_of

    def spy(ask, opts):
        threads.append(threading.get_ident())
        return real(ask, opts)

    monkeypatch.setattr(mr, "chunks_of", spy)
    doc = tmp_path / "plan.pdf"
    doc.write_bytes(make_pdf([f"Section {i}: the plan assumes {i * 10} percent growth." for i in range(1, 13)]))
    messages, schema, options = apply(patterns()["critique"], [m.Message(role="user", content=[
        document(doc), m.Text(text="Is the plan sound?")])], strategy="map_reduce", schema=None)
    async with stack(MOCKS) as s:
        with capture_logs() as logs:
            answer = await s.client.ask(messages, strategy_options=options, budget_ms=8000, cache="skip")
    assert threads and threading.main_thread().ident not in threads  # a worker thread extracted and chunked
    assert answer.text.startswith("[r] Several reviews of the same material follow.")
    assert all(f"{i * 10} percent growth" in answer.text for i in range(1, 13))
    assert all(src["ok"] for src in answer.metadata["sources"])
    steps = [e for e in logs if e.get("event") == "documents" and e.get("strategy") == "map_reduce"]
    assert [e["step"] for e in steps] == ["extract", "chunk", "map", "reduce"]
    assert all(e["ask_id"] == answer.id and e["ms"] >= 0 for e in steps)
    assert steps[1]["chunks"] == answer.metadata["map_reduce"]["chunks"] == len(answer.metadata["sources"])


async def test_every_shipped_pattern_with_map_reduce(stack, tmp_path):
    one, two = tmp_path / "a.pdf", tmp_path / "b.md"
    one.write_bytes(make_pdf([f"Claim {i}: revenue grows {i} percent." for i in range(1, 7)]))
    two.write_text("# Notes\n\n" + "\n\n".join(f"Note {i}: costs rise {i} percent." for i in range(1, 7)))
    async with stack(MOCKS) as s:
        for name, p in sorted(patterns().items()):
            msgs = [m.Message(role="user", content=[document(one), document(two), m.Text(text="Go.")])]
            msgs, schema, options = apply(p, msgs, strategy="map_reduce", schema=None)
            answer = await s.client.ask(msgs, schema=schema, strategy_options=options, budget_ms=8000, cache="skip")
            assert answer.metadata["map_reduce"]["reducer"] == "r" and len(answer.metadata["sources"]) >= 4, name
            assert {src["document"] for src in answer.metadata["sources"]} == {"a.pdf", "b.md"}, name
            if p.schema:  # extract: the reducer answers in the pattern's schema
                assert isinstance(answer.data, dict) and "entities" in answer.data, name
            else:
                assert answer.text.startswith(f"[r] {p.synthesis.splitlines()[0]}"), name
                assert "revenue grows 6 percent" in answer.text and "costs rise 6 percent" in answer.text, name


class SlowToPrepare(Policy):
    name = "test_slow_to_prepare"
    outcome = "sleep"

    async def prepare(self) -> None:
        if self.outcome == "raise":
            raise ValueError("broken preparation")
        await anyio.sleep(60)

    def begin(self, now):
        return [Call("0", "p")]


class NoCalls:
    def new_id(self):
        return "call-1"

    async def call(self, call, call_id, deadline):
        raise AssertionError("no call may start before the preparation is done")

    async def cancel(self, record, reason):
        pass


@pytest.mark.parametrize("outcome, kind", [("sleep", m.TIMEOUT), ("raise", m.INTERNAL)])
async def test_the_runner_bounds_a_policys_preparation_by_the_deadline(outcome, kind):
    policy = SlowToPrepare(Plan(m.Ask(id="a1", messages=[m.Message(role="user", content="?")]), ["p"], None, 0.0))
    policy.outcome = outcome
    clock = anyio.current_time
    with anyio.fail_after(2):
        result = await runner.run(policy, NoCalls(), deadline=clock() + 0.05, clock=clock)
    assert result.done.result.kind == kind and result.records == []
    assert ("did not finish in time" if kind == m.TIMEOUT else "broken preparation") in result.done.result.message
