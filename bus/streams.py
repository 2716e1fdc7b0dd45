"""JetStream streams the bus keeps (names derived from the subject root)."""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

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
