"""JetStream streams and KV buckets the bus keeps (names derived from the subject root)."""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, BucketNotFoundError
from nats.js.kv import KeyValue

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


async def ensure_kv(nc: NATS, bucket: str, *, history: int = 1) -> KeyValue:
    """Open the KV bucket ``bucket``, creating it (file storage) when it does not exist yet."""
    js = nc.jetstream()
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        pass
    try:
        return await js.create_key_value(KeyValueConfig(bucket=bucket, history=history, storage=StorageType.FILE))
    except BadRequestError:  # created concurrently by another actor
        return await js.key_value(bucket)
