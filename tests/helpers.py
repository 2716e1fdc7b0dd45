"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

LLMBUS = Path(sys.executable).parent / "llmbus"


async def wait_until(predicate: Callable[[], bool], *, within_s: float = 5.0, what: str = "") -> None:
    """Wait for a condition on in-process state (polled every 2 ms, bounded by ``within_s``)."""
    with anyio.move_on_after(within_s):
        while not predicate():
            await anyio.sleep(0.002)
        return
    raise AssertionError(f"not within {within_s}s: {what or predicate}")


def free_port() -> int:
    """A port nothing listens on (for a config's bus.port that must not reach a stray server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for an ``llmbus`` subprocess: none of the LLMBUS_* overrides leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMBUS_")}
    env.update(extra)
    env.setdefault("COLUMNS", "400")  # rich wraps stderr at 80 columns otherwise
    return env


def elapsed_since(start: float) -> float:
    return time.monotonic() - start


class CliProcess:
    """An ``llmbus`` subprocess whose stderr is read continuously (so the pipe never fills) and kept
    as lines, so a test can wait for a line (a readiness signal) instead of sleeping."""

    def __init__(self, process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.ended = False
        self._changed = anyio.Event()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    async def pump(self) -> None:
        buf = b""
        try:
            async for chunk in self.process.stderr:
                buf += chunk
                *complete, buf = buf.split(b"\n")
                if complete:
                    self.lines.extend(line.decode(errors="replace") for line in complete)
                    self._wake()
        finally:
            if buf:
                self.lines.append(buf.decode(errors="replace"))
            self.ended = True
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, text: str, *, within_s: float = 20.0) -> str:
        """The first stderr line containing ``text``; fails if the process ends first."""
        with anyio.move_on_after(within_s):
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                if self.ended:
                    raise AssertionError(f"llmbus ended before printing {text!r}:\n{self.stderr}")
                await self._changed.wait()
        raise AssertionError(f"no {text!r} on stderr within {within_s}s:\n{self.stderr}")

    async def stop(self, sig: int, *, within_s: float = 10.0) -> int:
        """Send ``sig`` and wait for the exit code."""
        self.process.send_signal(sig)
        with anyio.fail_after(within_s):
            return await self.process.wait()


@asynccontextmanager
async def cli_process(*args: str, env: dict[str, str]) -> AsyncIterator[CliProcess]:
    """Run ``llmbus *args``; on the way out a process still running gets SIGINT (so an embedded
    nats-server is stopped by its parent), then SIGKILL."""
    process = await anyio.open_process(
        [str(LLMBUS), *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    async with process:
        proc = CliProcess(process)
        async with anyio.create_task_group() as tg:
            tg.start_soon(proc.pump)
            try:
                yield proc
            finally:
                with anyio.CancelScope(shield=True):
                    if process.returncode is None:
                        process.send_signal(signal.SIGINT)
                        with anyio.move_on_after(10):
                            await process.wait()
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
