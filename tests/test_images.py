"""Images: the provider image endpoint (inline or object-store references), the images actor's
tier policy, and count quotas exact under concurrency with two cost actors."""

from __future__ import annotations

import anyio
import pytest

from bus import messages as m
from bus.deadline import deadline_in
from bus.errors import BadRequest, BudgetExceeded
from bus.subjects import COST_QUOTAS, PROVIDER_IMAGE
from actors.providers.images import render_placeholder

IMAGES_TOML = """
[router]
strategy = "single"
providers = ["mock"]

[providers.mock]
model = "m-1"

[providers.cheap]
model = "c-1"

[images]
providers = ["mock"]

[tiers.free.quotas]
images = {{ per = "month", limit = 0 }}
[tiers.free.images]
over_quota = "placeholder"

[tiers.pro.quotas]
images = {{ per = "month", limit = {pro} }}
[tiers.pro.images]
over_quota = "refuse"

[tiers.premium.quotas]
images = {{ per = "day", limit = 1 }}
[tiers.premium.images]
over_quota = "cheaper"
cheaper_provider = "cheap"
cheaper_model = "cheap-image"
"""

PNG = b"\x89PNG\r\n\x1a\n"


def test_placeholder_is_a_deterministic_png_of_the_size():
    from PIL import Image
    import io

    a = render_placeholder("a beach at sunset", "320x200")
    assert a.startswith(PNG) and a == render_placeholder("a beach at sunset", "320x200")
    assert a != render_placeholder("a mountain at dawn", "320x200")
    assert Image.open(io.BytesIO(a)).size == (320, 200)


@pytest.mark.anyio
async def test_mock_images_inline_then_through_the_object_store(stack):
    async with stack(IMAGES_TOML.format(pro=3), names=["provider.mock"]) as s:
        rpc = s.client.rpc
        req = m.ImageRequest(id="c1", ask_id="a1", prompt="a beach at sunset", size="256x256", count=2)
        small = await rpc.service(PROVIDER_IMAGE, req, deadline=deadline_in(10_000), name="mock")
        assert isinstance(small, m.ImageResult), small
        assert [p.ref for p in small.images] == [None, None] and small.images[0].data.startswith(PNG)
        assert small.images[0].data == render_placeholder("a beach at sunset", "256x256", label="mock")

        s.actor("mock").inline_max_bytes = 1000  # over it: the object store
        big = await rpc.service(PROVIDER_IMAGE, req, deadline=deadline_in(10_000), name="mock")
        assert all(p.data is None and p.ref is not None for p in big.images), big
        assert big.images[0].ref.bucket == f"{s.root}_images"
        assert await s.client.image_bytes(big) == await s.client.image_bytes(small)

        # a photo-sized image (over the 1 MiB max_payload) never travels in the message
        s.actor("mock").inline_max_bytes = 10 << 20
        noisy = m.ImageRequest(id="c2", ask_id="a2", prompt="noise", size="1024x1024", labels={"mock.image": "noise"})
        photo = await rpc.service(PROVIDER_IMAGE, noisy, deadline=deadline_in(20_000), name="mock")
        assert isinstance(photo, m.ImageResult), photo
        assert photo.images[0].ref is not None and photo.images[0].ref.size > s.client.nc.max_payload
        (data,) = await s.client.image_bytes(photo)
        assert data.startswith(PNG) and len(data) == photo.images[0].ref.size

        bad = await rpc.service(PROVIDER_IMAGE, m.ImageRequest(id="c3", ask_id="a3", prompt="x", size="huge"),
                                deadline=deadline_in(5000), name="mock")
        assert isinstance(bad, m.Failure) and bad.kind == m.BAD_REQUEST and "size" in bad.message


@pytest.mark.anyio
async def test_tiers_placeholder_refuse_and_cheaper(stack, pricing_file):
    toml = IMAGES_TOML.format(pro=1) + f'\n[cost]\npricing = "{pricing_file}"\n'
    async with stack(toml, names=["cost", "images", "provider.mock", "provider.cheap"]) as s:
        c = s.client
        free = await c.image("a beach at sunset", tier="free", size="128x128")
        assert free.placeholder and free.provider == "placeholder" and "tier:free:images:month" in free.metadata["over_quota"]

        pro = await c.image("a beach at sunset", tier="pro", size="128x128")
        assert not pro.placeholder and pro.provider == "mock" and pro.quota == "tier:pro:images:month"
        assert pro.metadata["quota_left"] == 0
        with pytest.raises(BudgetExceeded, match="tier:pro:images:month.*limit 1"):
            await c.image("another beach", tier="pro", size="128x128")
        again = await c.image("a beach at sunset", tier="pro", size="128x128", ask_id=pro.ask_id)  # a retry holds once
        assert again.provider == "mock"

        first = await c.image("a city", tier="premium", size="128x128")
        assert first.provider == "mock"
        cheaper = await c.image("a city at night", tier="premium", size="128x128")
        assert cheaper.provider == "cheap" and cheaper.model == "cheap-image" and cheaper.metadata["cheaper"]

        untiered = await c.image("no tier", size="128x128")
        assert untiered.provider == "mock" and untiered.quota is None
        with pytest.raises(BadRequest):
            await c.image("", tier="pro")
        with pytest.raises(BadRequest, match="no tier"):
            await c.image("x", tier="gold")

        report = await c.rpc.service(COST_QUOTAS, m.QuotaQuery(), deadline=deadline_in(5000))
        by_tier = {q.tier: q for q in report.quotas}
        assert (by_tier["pro"].used, by_tier["pro"].left) == (1, 0)
        assert (by_tier["premium"].used, by_tier["premium"].period) == (1, "day")
        assert by_tier["free"].limit == 0


@pytest.mark.anyio
async def test_quota_exact_under_100_concurrent_asks_with_two_cost_actors(stack, pricing_file):
    toml = IMAGES_TOML.format(pro=37) + f'\n[cost]\npricing = "{pricing_file}"\n'
    async with stack(toml, names=["cost", "images", "provider.mock"]) as s:
        await s.add("cost")
        made, refused = [], []

        async def one(i: int) -> None:
            try:
                made.append(await s.client.image(f"picture {i}", tier="pro", size="64x64", budget_ms=30_000))
            except BudgetExceeded as exc:
                refused.append(exc)

        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(one, i)
        assert (len(made), len(refused)) == (37, 63), [str(e) for e in refused[:2]]
        report = await s.client.rpc.service(COST_QUOTAS, m.QuotaQuery(), deadline=deadline_in(5000))
        pro = next(q for q in report.quotas if q.tier == "pro")
        assert (pro.used, pro.held, pro.left) == (37, 0, 0)


@pytest.fixture
def pricing_file(tmp_path):
    path = tmp_path / "pricing.toml"
    path.write_text('[mock."m-1"]\ninput = 1.0\noutput = 2.0\ntaken = "2026-11-25"\nsource = "test"\n')
    return str(path)


# --- the real SDKs against the loopback wire server -------------------------------------------------

from actors.fakes import gemini as ge  # noqa: E402
from actors.fakes import openai as oa  # noqa: E402
from actors.fakes.server import WireServer  # noqa: E402

ADAPTERS = {
    "openai": ("/v1", oa.images, "/v1/images/generations", "gpt-image-1"),
    "gemini": ("", ge.image_response, ":generateContent", "gemini-2.5-flash-image"),
}


@pytest.mark.anyio
@pytest.mark.parametrize("kind", list(ADAPTERS))
async def test_adapter_images_through_the_sdk(stack, monkeypatch, kind):
    suffix, body, path, model = ADAPTERS[kind]
    monkeypatch.setenv("WIRE_IMAGE_KEY", "sk-wire-image-secret")
    png = render_placeholder("a beach at sunset", "256x256")
    async with WireServer() as wire:
        toml = f"""
[providers.p]
kind = "{kind}"
model = "chat-model"
image_model = "{model}"
base_url = "{wire.url}{suffix}"
api_key_env = "WIRE_IMAGE_KEY"
"""
        async with stack(toml, names=["provider.p"]) as s:
            s.actor("p").inline_max_bytes = 1000  # the PNG goes through the object store
            wire.push(body([png]))
            req = m.ImageRequest(id="c1", ask_id="a1", prompt="a beach at sunset", size="1024x1024",
                                 style={"quality": "low"})
            got = await s.client.rpc.service(PROVIDER_IMAGE, req, deadline=deadline_in(10_000), name="p")
            assert isinstance(got, m.ImageResult), got
            assert got.model.startswith(model) and got.provider == "p" and got.usage.output_tokens > 0
            assert got.images[0].ref is not None and await s.client.image_bytes(got) == [png]
            sent = wire.requests[-1]
            assert path in sent.path and "sk-wire-image-secret" not in got.model
            wire_body = sent.json()
            if kind == "openai":
                assert (wire_body["model"], wire_body["n"], wire_body["quality"]) == (model, 1, "low")
            else:
                assert wire_body["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]
                assert wire_body["generationConfig"]["imageConfig"]["aspectRatio"] == "1:1"

            wire.push((oa.rate_limited if kind == "openai" else ge.rate_limited)())
            limited = await s.client.rpc.service(PROVIDER_IMAGE, req, deadline=deadline_in(10_000), name="p")
            assert isinstance(limited, m.Failure) and limited.kind == m.RATE_LIMITED and limited.retry_after_s


@pytest.mark.anyio
async def test_gateway_images_generations_by_tier(stack, pricing_file):
    import base64
    import httpx2 as httpx

    toml = IMAGES_TOML.format(pro=1) + f'\n[cost]\npricing = "{pricing_file}"\n[gateway]\nlisten = "127.0.0.1:0"\n'
    async with stack(toml, names=["router", "cost", "images", "provider.mock"]) as s:
        gw = await s.add("gateway")
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
            got = await http.post("/v1/images/generations", json={"prompt": "a beach at sunset", "size": "128x128"})
            assert got.status_code == 200, got.text
            body = got.json()
            assert base64.b64decode(body["data"][0]["b64_json"]).startswith(PNG)
            assert body["llmbus"]["provider"] == "mock" and body["llmbus"]["placeholder"] is False
            bad = await http.post("/v1/images/generations", json={"prompt": ""})
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"


def _llmbus(*args: str, env: dict[str, str]):
    import subprocess

    from tests.helpers import LLMBUS

    return subprocess.run([str(LLMBUS), *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.anyio
async def test_llmbus_image_by_tier_and_budget_show_lists_the_quotas(stack, pricing_file, tmp_path):
    import json

    from tests.helpers import cli_env

    toml = IMAGES_TOML.format(pro=1) + f'\n[cost]\npricing = "{pricing_file}"\n'
    async with stack(toml, names=["cost", "images", "provider.mock", "provider.cheap"]) as s:
        config = tmp_path / "llmbus.toml"
        config.write_text(toml)
        env = cli_env(LLMBUS_ROOT=s.root, LLMBUS_CONFIG=str(config), LLMBUS_NATS_URL=s.url)

        def run(*args):
            return anyio.to_thread.run_sync(lambda: _llmbus(*args, env=env))

        free = await run("image", "a beach at sunset", "--tier", "free", "--size", "128x128", "--out", str(tmp_path / "f.png"))
        assert free.returncode == 0 and "placeholder" in free.stderr, free.stderr
        assert (tmp_path / "f.png").read_bytes() == render_placeholder("a beach at sunset", "128x128", label="placeholder")
        pro = await run("image", "a beach at sunset", "--tier", "pro", "--size", "128x128", "--out", str(tmp_path / "p.png"))
        assert pro.returncode == 0 and "from mock/" in pro.stderr and "0 left" in pro.stderr, pro.stderr
        again = await run("image", "another beach", "--tier", "pro", "--size", "128x128", "--json")
        assert again.returncode == 1 and json.loads(again.stdout)["kind"] == "budget_exceeded"
        shown = await run("budget", "show", "--json")
        quotas = {q["tier"]: q for q in json.loads(shown.stdout)["quotas"]}
        assert (quotas["pro"]["used"], quotas["pro"]["left"], quotas["free"]["limit"]) == (1, 0, 0)


@pytest.mark.anyio
async def test_bench_images_smoke(nats_url):
    from actors.bench import images
    from actors.bench.measure import Plan

    got = await images.run(nats_url, Plan(warmup=1, samples=3, seconds=0.1, rounds=1, max_asks=8, concurrency=(2,)))
    assert got["failed"] == 0 and got["paths"]["object store"]["p50_ms"] > 0


@pytest.mark.anyio
async def test_an_image_call_is_priced_by_its_tokens_and_billed_in_the_ledger(stack, monkeypatch):
    from bus.subjects import COST_REPORT
    from tests.helpers import wait_until

    monkeypatch.setenv("WIRE_IMAGE_KEY", "sk-wire-image-secret")
    async with WireServer() as wire:
        toml = f"""
[providers.p]
kind = "openai"
model = "gpt-4o-mini"
image_model = "gpt-image-1"
base_url = "{wire.url}/v1"
api_key_env = "WIRE_IMAGE_KEY"
"""
        async with stack(toml, names=["cost", "images", "provider.p"]) as s:
            wire.push(oa.images([render_placeholder("x", "64x64")], prompt_tokens=9, image_tokens=1056))
            result = await s.client.image("a beach at sunset", provider="p", size="1024x1024", user="ann")
            expected = (9 * 5.00 + 1056 * 40.00) / 1e6  # config/pricing.toml: gpt-image-1
            assert result.cost_usd == pytest.approx(expected)
            cost = next(a for a in s.actors if a.kind == "cost")
            await wait_until(lambda: cost.totals.calls, what="the image call in the ledger")
            report = await s.client.rpc.service(COST_REPORT, m.CostQuery(by="user"), deadline=deadline_in(5000))
            assert [(line.key, line.calls) for line in report.lines] == [("ann", 1)]
            assert report.total.cost_usd == pytest.approx(expected)


@pytest.mark.anyio
async def test_a_quota_commit_counts_once_even_after_its_hold_lapsed(stack, pricing_file):
    from bus.subjects import COST_QUOTA_COMMIT, COST_QUOTA_RESERVE

    toml = IMAGES_TOML.format(pro=5) + f'\n[cost]\npricing = "{pricing_file}"\n'
    async with stack(toml, names=["cost"]) as s:
        cost = s.actor("cost")
        now = [1_764_000_000.0]
        cost.quotas.clock = lambda: now[0]
        rpc, dl = s.client.rpc, lambda: deadline_in(5000)
        got = await rpc.service(COST_QUOTA_RESERVE, m.QuotaReserve(call_id="a1", ask_id="a1", tier="pro", count=2,
                                                                   expires_at=now[0] + 1), deadline=dl())
        assert (got.quota.held, got.quota.left) == (2, 3)
        now[0] += 10  # the hold lapses before the commit arrives
        for _ in range(2):  # a repeated commit counts nothing more
            done = await rpc.service(COST_QUOTA_COMMIT, m.QuotaCommit(call_id="a1", tier="pro", count=2), deadline=dl())
            assert (done.quota.used, done.quota.held, done.quota.left) == (2, 0, 3)
        refused = await rpc.service(COST_QUOTA_RESERVE, m.QuotaReserve(call_id="a2", ask_id="a2", tier="pro", count=4),
                                    deadline=dl())
        assert isinstance(refused, m.Failure) and refused.kind == m.BUDGET_EXCEEDED and "used 2" in refused.message
        bad = await rpc.service(COST_QUOTA_RESERVE, m.QuotaReserve(call_id="a b", ask_id="x", tier="pro"), deadline=dl())
        assert isinstance(bad, m.Failure) and bad.kind == m.BAD_REQUEST


@pytest.mark.anyio
async def test_a_stalled_image_times_out_at_its_deadline_and_releases_its_hold(stack, pricing_file):
    import time

    from bus.errors import LlmError

    toml = IMAGES_TOML.format(pro=1) + f'\n[cost]\npricing = "{pricing_file}"\n'
    async with stack(toml, names=["cost", "images", "provider.mock"]) as s:
        started = time.perf_counter()
        with pytest.raises(LlmError) as err:
            await s.client.image("x", tier="pro", size="64x64", labels={"mock.fault": "stall"}, budget_ms=600)
        assert err.value.failure.kind == m.TIMEOUT and time.perf_counter() - started < 1.5
        held: list = []

        async def quota() -> m.Quota:
            report = await s.client.rpc.service(COST_QUOTAS, m.QuotaQuery(), deadline=deadline_in(2000))
            return next(q for q in report.quotas if q.tier == "pro")

        for _ in range(100):
            held.append((await quota()).held)
            if held[-1] == 0:
                break
            await anyio.sleep(0.02)
        assert held[-1] == 0, held
        made = await s.client.image("y", tier="pro", size="64x64")  # the quota was not spent by the timeout
        assert made.provider == "mock"
