"""JetStream streams and KV buckets the bus keeps (names derived from the subject root).

Failures of JetStream and KV calls come in two sorts. **Transient** (``TRANSIENT``: a timeout, the
connection reconnecting or closed, no responders while JetStream comes back after a server
restart, the server's 503/500): the same call may work in a moment, so ``retrying`` calls again
with backoff (10 ms doubling to 1 s) within the caller's deadline, and a consumer gives the event
back and tries again later — no actor exits for one. **Everything else** (the server refused the
request, the event does not decode or fails validation): trying again cannot help; a consumer
acknowledges such an event, logs it once and counts it (``on_skip``), and goes on with the next.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from typing import TypeVar

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats import errors as nats_errors
from nats.js import errors as js_errors
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from bus import codec
from bus.deadline import now
from bus.errors import ConfigError
from bus.subjects import Subjects

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (
    TimeoutError,  # nats.errors.TimeoutError is one too
    OSError,
    nats_errors.ConnectionClosedError,
    nats_errors.ConnectionReconnectingError,
    nats_errors.NoRespondersError,
    nats_errors.OutboundBufferLimitError,
    nats_errors.StaleConnectionError,
    nats_errors.FlushTimeoutError,
    js_errors.ServiceUnavailableError,
    js_errors.ServerError,
    js_errors.NoStreamResponseError,
)
_BACKOFF_S = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def is_transient(exc: BaseException) -> bool:
    """True for a JetStream/KV failure that the same call may not meet again in a moment."""
    return isinstance(exc, TRANSIENT)


async def retrying(op: Callable[[], Awaitable[T]], *, deadline: float) -> T:
    """``await op()``, called again after a transient failure with backoff while ``deadline``
    (``bus.deadline.now`` seconds) allows; the last failure, or any other, is raised."""
    for attempt in range(1 << 30):
        try:
            return await op()
        except TRANSIENT:
            pause = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
            if now() + pause >= deadline:
                raise
            await asyncio.sleep(pause)
    raise AssertionError("unreachable")


class Skipped:
    """Counts events a consumer skipped, and logs each kind of problem at most every ``every_s``."""

    def __init__(self, log, every_s: float = 10.0) -> None:
        self.log = log
        self.every_s = every_s
        self.count = 0
        self._said: dict[str, float] = {}

    def __call__(self, why: str, **fields) -> None:
        self.count += 1
        t = time.monotonic()
        key = why.split(":", 1)[0]
        if t - self._said.get(key, -math.inf) >= self.every_s:
            self._said[key] = t
            self.log.warning("event_skipped", why=why, skipped=self.count, **fields)

EVENTS_MAX_AGE_S = 7 * 24 * 3600.0
EVENTS_MAX_BYTES = 1 << 30


async def ensure_stream(nc: NATS, name: str, subjects: list[str], *, max_age_s: float, max_bytes: int,
                        no_ack: bool = True) -> None:
    """Create (or update) a stream of the root: file storage, oldest dropped first, replicas of the
    connection (``replicas_of``), and ``no_ack`` unless told
    (a stream that captures request subjects would otherwise answer every request with a PubAck)."""
    config = StreamConfig(
        name=name,
        subjects=subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age_s,
        max_bytes=max_bytes,
        no_ack=no_ack,
        num_replicas=replicas_of(nc),
    )
    js = nc.jetstream()
    with _replicas_checked(nc, name):
        try:
            await js.add_stream(config)
        except BadRequestError:  # exists with other settings: bring it to ours
            await js.update_stream(config)


# JetStream's error codes for replicas it cannot place: not clustered, or fewer servers than replicas
_NO_PLACE = {10074, 10005, 10023}


@contextmanager
def _replicas_checked(nc: NATS, what: str):
    """Turn "cannot place N replicas" (a server error nats-py reports like a transient one) into a
    ``ConfigError`` that names the setting: retrying cannot help."""
    try:
        yield
    except js_errors.APIError as exc:
        if replicas_of(nc) > 1 and getattr(exc, "err_code", None) in _NO_PLACE:
            raise ConfigError(f"{what}: the NATS server cannot keep {replicas_of(nc)} replicas "
                              f"({exc.description}): set bus.replicas to at most the cluster's size "
                              "(1 for a single server)") from None
        raise


def replicas_of(nc: NATS) -> int:
    """Replicas for what ``nc`` creates: ``bus.replicas`` through ``bus.connection.connect`` (3 on
    a cluster of 3), 1 for a connection made otherwise."""
    return getattr(nc, "replicas", 1)


async def ensure_events_stream(nc: NATS, subjects: Subjects) -> None:
    """The stream that keeps ``<root>.events.>`` (outcomes, usage). Not ``no_ack``: it answers a
    publish that carries a reply subject with its PubAck (providers publish usage so, and send it
    again until acknowledged: ``actors/providers/events.py``); plain publishes get no answer."""
    await ensure_stream(nc, subjects.events_stream, [subjects.events],
                        max_age_s=EVENTS_MAX_AGE_S, max_bytes=EVENTS_MAX_BYTES, no_ack=False)


async def ensure_record_stream(nc: NATS, subjects: Subjects, *, max_age_s: float, max_bytes: int,
                               errors_only: bool = False) -> None:
    """The stream that records the root's requests and replies (DESIGN §4). ``errors_only``: it
    captures only ``<root>.recorded.>``, where the error recorder writes."""
    await ensure_stream(nc, subjects.record_stream,
                        [subjects.recorded_errors] if errors_only else subjects.recorded,
                        max_age_s=max_age_s, max_bytes=max_bytes)


async def ensure_kv(
    nc: NATS, bucket: str, *, history: int = 1, storage: StorageType = StorageType.FILE, ttl: float | None = None
) -> KeyValue:
    """Open the KV bucket ``bucket``, creating it (file storage unless told) when it does not exist yet."""
    js = nc.jetstream()
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        pass
    try:
        with _replicas_checked(nc, f"KV bucket {bucket}"):
            return await js.create_key_value(KeyValueConfig(bucket=bucket, history=history, storage=storage,
                                                            ttl=ttl, replicas=replicas_of(nc)))
    except BadRequestError:  # created concurrently by another actor
        return await js.key_value(bucket)


async def ensure_object_store(nc: NATS, bucket: str, *, ttl_s: float | None = None):
    """Open the JetStream object store ``bucket``, creating it (file storage, objects kept ``ttl_s``)."""
    from nats.js.api import ObjectStoreConfig

    js = nc.jetstream()
    try:
        return await js.object_store(bucket)
    except BucketNotFoundError:
        pass
    try:
        return await js.create_object_store(bucket, config=ObjectStoreConfig(ttl=ttl_s, storage=StorageType.FILE))
    except BadRequestError:  # created concurrently by another actor
        return await js.object_store(bucket)


class KvMirror:
    """A live local copy of the keys of a KV bucket that match ``pattern`` (``values[key] = bytes``).

    ``run`` is ready once the current values are loaded; later changes arrive through the watch
    (an ordered push consumer). ``restart()`` re-creates the watch — after a reconnect the server
    may have dropped its ephemeral consumer. ``on_change(key, value | None)`` sees every change.
    """

    def __init__(self, nc: NATS, bucket: str, pattern: str = ">", on_change=None) -> None:
        self.nc = nc
        self.bucket = bucket
        self.pattern = pattern
        self.values: dict[str, bytes] = {}
        self.kv: KeyValue | None = None
        self.on_change = on_change
        self.skipped = 0  # values on_change could not take
        self._restart = anyio.Event()

    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        self.kv = await ensure_kv(self.nc, self.bucket)
        ready = False
        pause = 0.01
        while True:
            try:
                watcher = await self.kv.watch(self.pattern)
            except NotFoundError:  # a new server without the bucket (its store was lost): make it again
                await anyio.sleep(pause)
                pause = min(1.0, pause * 2)
                try:
                    self.kv = await ensure_kv(self.nc, self.bucket)
                except TRANSIENT:
                    pass
                continue
            except TRANSIENT:  # the server is restarting: watch again shortly, never give up
                await anyio.sleep(pause)
                pause = min(1.0, pause * 2)
                continue
            pause = 0.01
            self._restart = anyio.Event()
            async with anyio.create_task_group() as tg:

                async def stop_on_restart() -> None:
                    await self._restart.wait()
                    await watcher.stop()

                tg.start_soon(stop_on_restart)
                try:
                    async for entry in watcher:
                        if entry is None:  # the initial values are all in
                            if not ready:
                                ready = True
                                task_status.started()
                            continue
                        self._apply(entry.key, entry.value or None)  # a delete or purge leaves no value
                except TRANSIENT:  # the connection went away under the watch: watch again
                    await anyio.sleep(0.05)
                tg.cancel_scope.cancel()

    def _apply(self, key: str, value: bytes | None) -> None:
        if value is None:
            self.values.pop(key, None)
        else:
            self.values[key] = value
        if self.on_change is not None:
            try:
                self.on_change(key, value)
            except Exception as exc:  # a value this reader cannot take must not stop the mirror
                self.skipped += 1
                if self.skipped == 1 or self.skipped % 1000 == 0:
                    structlog.get_logger("llmbus.streams").warning(
                        "kv_value_skipped", bucket=self.bucket, key=key[:80], skipped=self.skipped,
                        error=f"{type(exc).__name__}: {exc}"[:300])

    def restart(self) -> None:
        self._restart.set()


async def consume(
    nc: NATS,
    *,
    stream: str,
    subject: str,
    durable: str,
    type_,
    handle,
    log,
    ack_wait_s: float = 5.0,
    on_skip: Skipped | None = None,
    task_status: TaskStatus = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Feed every message of ``subject`` in ``stream``, decoded as ``type_``, to ``await handle(msg)``
    through a durable pull consumer: a message is acknowledged after ``handle`` returns, so none is
    lost while the consumer is down (it starts with messages published after its creation).

    A message that does not decode, or whose ``handle`` raises anything but a transient failure,
    is poison: acknowledged, counted and logged by ``on_skip`` — it never crashes the consumer or
    comes back. A transient failure gives the message (and the rest of its batch) back and fetches
    again after a backoff. Messages fetched but not handled when this is cancelled are given back
    at once (nak); after a crash the server redelivers them after ``ack_wait_s``."""
    skip = on_skip or Skipped(log)
    js = nc.jetstream()
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.NEW, ack_wait=ack_wait_s)
    psub = await retrying(lambda: js.pull_subscribe(subject, durable=durable, stream=stream, config=config),
                          deadline=now() + 30.0)
    task_status.started()
    decode = codec.decoder(type_).decode
    pause = 0.0
    while True:
        if pause:
            await anyio.sleep(pause)
        try:
            batch = await psub.fetch(batch=256, timeout=0.5)
        except (NatsTimeoutError, TimeoutError):  # idle: nothing to fetch is not worth a log line
            continue
        except Exception as exc:  # the server is restarting: try again shortly
            pause = min(1.0, max(0.05, 2 * pause))
            skip.log.info("fetch_failed", stream=stream, error=str(exc) or type(exc).__name__, retry_in_s=pause)
            continue
        pause = 0.0
        for i, msg in enumerate(batch):
            try:
                try:
                    item = decode(msg.data)
                except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError) as exc:
                    skip(f"undecodable: {exc}", subject=msg.subject)
                else:
                    await handle(item)
            except TRANSIENT as exc:  # give it back; the next fetch brings it again
                await _give_back(nc, batch[i:])
                pause = 0.2
                skip.log.info("event_retry", stream=stream, error=str(exc) or type(exc).__name__)
                break
            except Exception as exc:  # a bug or a refused request: retrying the same event cannot help
                skip(f"handler failed: {type(exc).__name__}: {exc}", subject=msg.subject)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await _give_back(nc, batch[i:])
                raise
            try:
                await msg.ack()
            except Exception:  # noqa: S110 — disconnected: it is redelivered, and handlers count it once
                pass


async def _give_back(nc: NATS, msgs) -> None:
    for msg in msgs:
        if nc.is_closed:
            return
        try:
            await msg.nak()
        except Exception:  # disconnected: the server redelivers after ack_wait
            return


async def delete_root(nc: NATS, root: str) -> list[str]:
    """Delete every stream and KV bucket of the subject root ``root`` (tests and benchmarks clean
    up with it: the events stream alone reserves 1 GiB of the server's storage). Returns the names."""
    subjects = Subjects(root)
    js = nc.jetstream()
    gone = []
    for info in await js.streams_info():
        name = info.config.name
        if name in (subjects.events_stream, subjects.record_stream) or name.startswith(
                (f"KV_{subjects.bucket('')}", f"OBJ_{subjects.bucket('')}")):
            await js.delete_stream(name)
            gone.append(name)
    return gone
