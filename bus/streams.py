"""JetStream streams and KV buckets the bus keeps (names derived from the subject root)."""

from __future__ import annotations

import anyio
import msgspec
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
from nats.js.errors import BadRequestError, BucketNotFoundError
from nats.js.kv import KeyValue

from bus import codec
from bus.subjects import Subjects

EVENTS_MAX_AGE_S = 7 * 24 * 3600.0
EVENTS_MAX_BYTES = 1 << 30


async def ensure_events_stream(nc: NATS, subjects: Subjects) -> None:
    """Create (or update) the stream that keeps ``<root>.events.>`` (outcomes, usage)."""
    js = nc.jetstream()
    config = StreamConfig(
        name=subjects.events_stream,
        subjects=[subjects.events],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=EVENTS_MAX_AGE_S,
        max_bytes=EVENTS_MAX_BYTES,
        no_ack=True,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:  # exists with other settings: bring it to ours
        await js.update_stream(config)


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
        return await js.create_key_value(KeyValueConfig(bucket=bucket, history=history, storage=storage, ttl=ttl))
    except BadRequestError:  # created concurrently by another actor
        return await js.key_value(bucket)


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
        self._restart = anyio.Event()

    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        self.kv = await ensure_kv(self.nc, self.bucket)
        ready = False
        while True:
            watcher = await self.kv.watch(self.pattern)
            self._restart = anyio.Event()
            async with anyio.create_task_group() as tg:

                async def stop_on_restart() -> None:
                    await self._restart.wait()
                    await watcher.stop()

                tg.start_soon(stop_on_restart)
                async for entry in watcher:
                    if entry is None:  # the initial values are all in
                        if not ready:
                            ready = True
                            task_status.started()
                        continue
                    value = entry.value or None  # a delete or purge leaves no value
                    if value is None:
                        self.values.pop(entry.key, None)
                    else:
                        self.values[entry.key] = value
                    if self.on_change is not None:
                        self.on_change(entry.key, value)
                tg.cancel_scope.cancel()

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
    task_status: TaskStatus = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Feed every message of ``subject`` in ``stream``, decoded as ``type_``, to ``await handle(msg)``
    (a message that does not decode is skipped) through a durable pull consumer: a message is
    acknowledged after ``handle`` returns, so none is lost while the
    consumer is down (it starts with messages published after its creation). Messages fetched but
    not handled when this is cancelled are given back at once (nak); after a crash the server
    redelivers them after ``ack_wait_s``."""
    js = nc.jetstream()
    psub = await js.pull_subscribe(
        subject,
        durable=durable,
        stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.NEW, ack_wait=ack_wait_s),
    )
    task_status.started()
    decode = codec.decoder(type_).decode
    while True:
        try:
            batch = await psub.fetch(batch=256, timeout=0.5)
        except NatsTimeoutError:
            continue
        except Exception as exc:  # the server is restarting: try again shortly
            log.warning("fetch_failed", stream=stream, error=str(exc) or type(exc).__name__)
            await anyio.sleep(0.5)
            continue
        for i, msg in enumerate(batch):
            try:
                try:
                    item = decode(msg.data)
                except msgspec.DecodeError:
                    item = None  # not ours to count
                if item is not None:
                    await handle(item)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    for rest in batch[i:]:
                        if not nc.is_closed:
                            await rest.nak()
                raise
            await msg.ack()


async def delete_root(nc: NATS, root: str) -> list[str]:
    """Delete every stream and KV bucket of the subject root ``root`` (tests and benchmarks clean
    up with it: the events stream alone reserves 1 GiB of the server's storage). Returns the names."""
    subjects = Subjects(root)
    js = nc.jetstream()
    gone = []
    for info in await js.streams_info():
        name = info.config.name
        if name == subjects.events_stream or name.startswith(f"KV_{subjects.bucket('')}"):
            await js.delete_stream(name)
            gone.append(name)
    return gone
