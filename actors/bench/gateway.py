"""The ``gateway`` section of ``llmbus bench``: an HTTP ask through the gateway against a bus ask.

One server process (``python -m actors.bench.gateway URL ROOT PORT… [--uvloop]``, on the loop the
bench runs on) runs the router, the ``zero``
mock provider (0 ms) and three HTTP front ends on the same router:

- ``gateway`` — the gateway actor as shipped (Starlette on uvicorn with httptools), its dashboard off
  (``llmbus bench --only dashboard`` measures what the dashboard costs);
- ``gateway h11`` — the same with uvicorn's pure-Python h11 parser (is httptools worth it?);
- ``bare ASGI`` — a bare ASGI function on uvicorn+httptools doing the same translation and bus ask
  (``actors.gateway.chat``) with no Starlette, no key check, no disconnect watch: what Starlette
  and the gateway's own checks cost.

This process is the client of all four paths: ``bus`` (``Client.send`` of the same Ask, as the other
sections do) and each HTTP path through a raw HTTP/1.1 keep-alive loader on asyncio streams (one
connection per worker, the request bytes built once, the response read by Content-Length) — so the
client costs about what ``Client.send`` does, and the figures measure the server, not an HTTP
client library (measured against the gateway, sequentially: httpx +2.0 ms p50 and 8× the client CPU
of this loader, aiohttp +0.9 ms and 3×).

Goals (issue 18): the gateway adds ≤ 1 ms at p50 over the bus ask, and serves ≥ 2,000 HTTP asks/s
at 64 in flight in its one process. Throughput on 2 cores shared with other work moves with their
load, so each path also reports the CPU time per ask of the server process and of the client
(``/proc``), and what one core of server CPU would serve.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from contextlib import AsyncExitStack

import anyio
import msgspec
from rich.console import Console

from bus import messages as m
from bus.client import Client
from bus.connection import connect
from actors.bench.measure import (
    PROMPT, Plan, Progress, Send, client_send, drop_jetstream, failed_asks, flat, goal, measure, over, paths_table,
    spawn, throughput, wait_ready,
)

ROOT = "bench-gateway"
HTTP_PATHS = ("gateway", "gateway h11", "bare ASGI")
PATHS = ("bus", *HTTP_PATHS)
FULL = Plan(warmup=200, samples=2000, seconds=3.0, rounds=3, concurrency=(64,))
QUICK = Plan(warmup=20, samples=100, seconds=0.3, rounds=1, concurrency=(64,))
BODY = msgspec.json.encode({"model": "zero", "messages": [{"role": "user", "content": PROMPT[0].content}]})


def describe(plan: Plan) -> None:
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Loader:
    """A raw HTTP/1.1 client: ``send()`` posts the chat request on a free keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.request = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                        f"authorization: Bearer bench\r\ncontent-length: {len(BODY)}\r\n\r\n").encode() + BODY
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def send(self) -> bool:
        reused = bool(self.idle)
        try:
            conn = self.idle.pop() if reused else await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:  # not listening (yet)
            return False
        reader, writer = conn
        try:
            writer.write(self.request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            # the server closed an idle keep-alive connection (uvicorn: after 5 s): as HTTP clients
            # do, send again once on a new one
            return await self.send() if reused else False
        self.idle.append(conn)
        return head.startswith(b"HTTP/1.1 200") and b'"[zero] ' in body

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_per_ask(send: Send, pid: int, *, asks: int, concurrency: int = 64) -> dict[str, float]:
    """CPU µs per ask spent by the server process and by this one (the client), at ``concurrency``:
    a figure the machine's load does not move (throughput on 2 shared cores does). One core's
    worth of server CPU serves ``1e6 / server`` asks a second."""
    server0, client0 = cpu_s(pid), time.process_time()
    answered, _, _ = await throughput(send, concurrency, seconds=60.0, max_asks=asks)
    n = max(1, answered)
    server = (cpu_s(pid) - server0) * 1e6 / n
    return {"server": round(server, 1), "client": round((time.process_time() - client0) * 1e6 / n, 1),
            "server_asks_per_core_s": round(1e6 / server, 0) if server else 0.0}


async def run(url: str, plan: Plan = FULL, progress: Progress = lambda s: None) -> dict:
    ports = {p: free_port() for p in HTTP_PATHS}
    loaders: list[Loader] = []
    try:
        async with AsyncExitStack() as stack:
            nc = await connect(url, name="bench-ready")
            stack.push_async_callback(nc.close)
            uvloop = type(asyncio.get_running_loop()).__module__.startswith("uvloop")  # the server runs on it too
            proc = spawn(["actors.bench.gateway", url, ROOT, *(str(ports[p]) for p in HTTP_PATHS)], uvloop, stack)
            for name in ("router", "provider-zero", "gateway", "gateway-h11"):
                await wait_ready(nc, f"$SRV.PING.{ROOT}-{name}", proc)
            client = await stack.enter_async_context(Client(url, root=ROOT, name="bench-client"))
            sends: dict[str, Send] = {
                "bus": client_send(client, m.Ask(id="", messages=PROMPT, strategy="single", providers=["zero"]))}
            for p in HTTP_PATHS:
                loader = Loader(ports[p])
                loaders.append(loader)
                sends[p] = loader.send
            for _ in range(400):  # the bare front end has no discovery: ready once it answers
                if await sends["bare ASGI"]():
                    break
                await anyio.sleep(0.05)
            progress(f"gateway: ready (server process {proc.pid}); measuring {', '.join(PATHS)}")
            paths = await measure(sends, plan, lambda s: progress(f"gateway: {s}"))
            progress("gateway: CPU time per ask (server process, this process) at 64 in flight")
            for p, send in sends.items():
                paths[p]["cpu_us_per_ask"] = await cpu_per_ask(send, proc.pid, asks=plan.max_asks // 4)
    finally:
        for loader in loaders:
            loader.close()
        await drop_jetstream(url, [ROOT])
    bus, gw = flat(paths["bus"]), flat(paths["gateway"])
    out = {
        "paths": paths,
        "gateway_adds_p50_ms": round(gw["p50_ms"] - bus["p50_ms"], 4),
        "starlette_adds_p50_ms": round(gw["p50_ms"] - flat(paths["bare ASGI"])["p50_ms"], 4),
        "over_bus": {p: over(flat(paths[p]), bus) for p in HTTP_PATHS},
        "failed": failed_asks(paths),
    }
    progress(f"gateway: p50 {gw['p50_ms']:.3f} ms vs bus {bus['p50_ms']:.3f} ms "
             f"({out['gateway_adds_p50_ms']:+.3f} ms); {gw['asks_per_s@64']:,.0f} HTTP asks/s at 64")
    return out


def goals(result: dict) -> list[dict]:
    gw = flat(result["paths"]["gateway"])
    return [goal("gateway adds at p50 over a bus ask", result["gateway_adds_p50_ms"], 1.0, "≤", " ms"),
            goal("HTTP asks/s through the gateway at 64 in flight", gw["asks_per_s@64"], 2000.0, "≥", "/s")]


def report(loop: str, result: dict, console: Console) -> None:
    table = paths_table(
        f"llmbus bench — gateway — {loop}",
        "server process: router + zero mock + the HTTP front ends; client: this process "
        "(Client.send for bus, a raw keep-alive HTTP/1.1 loader for the others)",
        {p: result["paths"][p] for p in PATHS}, {f"{p} / bus": result["over_bus"][p] for p in HTTP_PATHS})
    cpu = {p: result["paths"][p].get("cpu_us_per_ask") for p in PATHS}
    if all(cpu.values()):
        for key, name in (("server", "server CPU µs/ask"), ("client", "client CPU µs/ask"),
                          ("server_asks_per_core_s", "asks/s per server core")):
            table.add_row(name, *(f"{cpu[p][key]:,.0f}" for p in PATHS),
                          *(f"{cpu[p][key] / cpu['bus'][key]:.2f}×" for p in HTTP_PATHS))
    console.print(table)
    console.print(f"the gateway adds {result['gateway_adds_p50_ms']:+.3f} ms at p50 over a bus ask; Starlette and "
                  f"the gateway's checks {result['starlette_adds_p50_ms']:+.3f} ms over a bare ASGI function",
                  highlight=False)


# --- the server process ----------------------------------------------------------------------------


def bare_asgi(client: Client):
    """The chat endpoint as one ASGI function: the same translation, no framework."""
    from bus.deadline import deadline_in
    from bus.rpc import new_id
    from actors.gateway import chat

    encode = msgspec.json.Encoder().encode
    headers = [(b"content-type", b"application/json")]

    async def app(scope, receive, send) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        req = chat.decode_chat(body)
        ask = chat.to_ask(req, ask_id=new_id(), strategy="single", providers=[req.model], user=None, tier=None,
                          budget_ms=30_000)
        reply = await client.send(ask, deadline=deadline_in(30_000))
        status, out = (200, encode(chat.completion(reply, req.model, False))) if type(reply) is m.Answer else \
            (500, encode({"error": reply.message}))
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})

    return app


async def serve(url: str, root: str, ports: list[int]) -> None:
    import uvicorn

    from actors.bench.measure import bench_settings
    from actors.gateway.actor import GatewayActor, _Server, listen_on
    from actors.gateway.config import GatewaySettings
    from actors.settings import CacheSettings
    from actors.runtime import run_actors
    from actors.stack import build_actors
    from bus.subjects import Subjects

    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    # the API alone: the dashboard's own cost is the dashboard section's (llmbus bench --only dashboard)
    settings = bench_settings(root, gateway=GatewaySettings(rpm=10**9, dashboard=False), cache=CacheSettings(enabled=False))
    actors = build_actors(settings, ["router", "provider.zero"])
    common = dict(settings=settings, subjects=Subjects(root))
    actors += [GatewayActor(listen=f"127.0.0.1:{ports[0]}", protocol="httptools", **common),
               GatewayActor(listen=f"127.0.0.1:{ports[1]}", protocol="h11", name="gateway-h11", **common)]
    async with anyio.create_task_group() as tg:
        await tg.start(run_actors, actors, url)
        async with Client(url, root=root, name="bench-bare-asgi") as client:
            config = uvicorn.Config(bare_asgi(client), lifespan="off", log_config=None, log_level="warning",
                                    access_log=False, http="httptools", server_header=False)
            config.load()
            server = _Server(config)
            server.lifespan = config.lifespan_class(config)
            await server.startup(sockets=[listen_on("127.0.0.1", ports[2])])
            await server.main_loop()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--uvloop"]
    url, root, *ports = args
    anyio.run(serve, url, root, [int(p) for p in ports], backend="asyncio",
              backend_options={"use_uvloop": True} if "--uvloop" in sys.argv else {})
