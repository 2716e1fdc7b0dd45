"""Learned reliability shared by every router, kept in JetStream KV so it survives restarts.

Two buckets of the root (file storage):

- ``<root>_reliability``, key ``provider.<name>``: that provider's soft counts as JSON
  (``actors.pure.vote.Reliability.export``: per field, per stated-confidence bin, overall) and
  ``labels`` (the labelled answers alone: right, n per field).
- ``<root>_answers``, key ``ask.<id>`` (kept ``ANSWERS_TTL_S``): what each provider answered per
  field of a consensus ask (kind, value, stated confidence), so that a label given later with
  ``llmbus feedback`` can tell who was right.

Writers add, never overwrite: a router's merges observe into ``Shared`` (its local view), which
remembers what it has not written yet (``pending``); every ``FLUSH_S`` the router adds that to each
provider's stored counts by compare-and-set (read the revision, ``vote.combine``, update at that
revision; read again on a conflict). ``llmbus feedback`` adds labelled answers (weight
``LABEL_WEIGHT`` each) the same way. Every router watches the bucket (``KvMirror``): its view of a
provider is the stored counts plus what it has not flushed yet, so all routers vote with the same
weights, a new router starts warm, and a restarted one loses at most ``FLUSH_S`` of learning.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from typing import Any

import anyio
from anyio.abc import TaskStatus
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from bus.streams import KvMirror, ensure_kv
from actors.pure import canonical
from actors.pure.vote import FUZZY_KINDS, Reliability, combine

PREFIX = "provider."
ASK_PREFIX = "ask."
FLUSH_S = 0.5
ANSWERS_TTL_S = 7 * 24 * 3600.0
LABEL_WEIGHT = 5.0  # a labelled answer counts as this many answers judged by agreement
WINDOW = 500.0  # online: older asks fade over about this many observations (per provider and field)
_PLAIN = re.compile(r"[A-Za-z0-9_=-]{1,200}\Z")


def ask_key(ask_id: str) -> str:
    """The ``<root>_answers`` key of an ask id (hashed when the id has characters KV keys refuse)."""
    return ASK_PREFIX + (ask_id if _PLAIN.match(ask_id) else "h" + hashlib.sha256(ask_id.encode()).hexdigest()[:40])


class Shared(Reliability):
    """A router's reliability: the stored counts plus its own observations not yet flushed."""

    __slots__ = ("pending", "stored")

    def __init__(self) -> None:
        super().__init__(window=WINDOW)
        self.pending = Reliability()  # no decay: raw sums to add to the store
        self.stored: dict[str, dict[str, Any]] = {}  # provider -> its KV value, decoded

    def observe(self, provider: str, name: str, stated: float | None, correct: float, weight: float = 1.0) -> None:
        super().observe(provider, name, stated, correct, weight)
        self.pending.observe(provider, name, stated, correct, weight)

    def take_pending(self) -> dict[str, dict[str, Any]]:
        """provider -> the counts to add, and forget them (``give_back`` on a failed write)."""
        out = {p: self.pending.export(p) for p in self.pending.providers()}
        self.pending = Reliability()
        return out

    def give_back(self, provider: str, delta: dict[str, Any]) -> None:
        mine = self.pending.export(provider)
        self.pending.load(provider, combine(mine, delta))

    def stored_changed(self, provider: str, value: dict[str, Any] | None) -> None:
        if value is None:
            self.stored.pop(provider, None)
        else:
            self.stored[provider] = value
        self.load(provider, combine(value, self.pending.export(provider)))


async def add(kv, provider: str, delta: dict[str, Any], decay: float = 1.0 - 1.0 / WINDOW) -> dict[str, Any]:
    """Add ``delta`` to ``provider.<provider>`` by compare-and-set (again on a conflict); the new value."""
    key = PREFIX + provider
    for _ in range(100):
        try:
            entry = await kv.get(key)
            stored, revision = json.loads(entry.value) if entry.value else None, entry.revision
        except (KeyNotFoundError, NotFoundError):
            stored, revision = None, None
        value = combine(stored, delta, decay)
        raw = json.dumps(value, separators=(",", ":")).encode()
        try:
            if revision is None:
                await kv.create(key, raw)
            else:
                await kv.update(key, raw, last=revision)
            return value
        except KeyWrongLastSequenceError:  # another writer was quicker: read again
            await asyncio.sleep(0)
    raise RuntimeError(f"reliability of {provider}: too many conflicting writers")


class ReliabilityView:
    """The router's side: mirror the bucket into ``shared``, flush what it learned, keep the votes
    of each consensus ask for feedback."""

    def __init__(self, nc, subjects, log) -> None:
        self.nc = nc
        self.subjects = subjects
        self.log = log
        self.shared = Shared()
        self.mirror: KvMirror | None = None
        self.answers = None  # the <root>_answers bucket, once opened
        self._writes: set[asyncio.Task] = set()

    def _changed(self, key: str, value: bytes | None) -> None:
        self.shared.stored_changed(key.removeprefix(PREFIX), json.loads(value) if value is not None else None)

    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        self.mirror = KvMirror(self.nc, self.subjects.bucket("reliability"), PREFIX + ">", on_change=self._changed)
        self.answers = await ensure_kv(self.nc, self.subjects.bucket("answers"), ttl=ANSWERS_TTL_S)
        async with anyio.create_task_group() as tg:
            await tg.start(self.mirror.run)
            task_status.started()
            try:
                while True:
                    await anyio.sleep(FLUSH_S)
                    await self.flush()
            finally:
                with anyio.CancelScope(shield=True):
                    with anyio.move_on_after(2.0):
                        await self.flush()  # a router stopping keeps what it learned

    async def flush(self) -> None:
        kv = self.mirror.kv if self.mirror is not None else None
        if kv is None:
            return
        for provider, delta in self.shared.take_pending().items():
            try:
                await add(kv, provider, delta)
            except Exception as exc:  # the server is away: keep it for the next flush
                self.shared.give_back(provider, delta)
                self.log.info("reliability_flush_failed", provider=provider, error=str(exc) or type(exc).__name__)
                return

    def remember(self, ask_id: str, votes: dict[str, dict[str, Any]]) -> None:
        """Keep a consensus ask's votes (field -> {kind, votes: [[provider, value, stated]]}) for
        feedback; written in the background, off the ask's path."""
        if self.answers is None or not votes:
            return
        raw = json.dumps({"id": ask_id, "fields": votes}, separators=(",", ":"), ensure_ascii=False,
                         default=str).encode()
        task = asyncio.get_running_loop().create_task(self._put(ask_key(ask_id), raw))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _put(self, key: str, raw: bytes) -> None:
        try:
            await self.answers.put(key, raw)
        except Exception as exc:
            self.log.info("answers_put_failed", key=key[:60], error=str(exc) or type(exc).__name__)


def votes_of(records, report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """From a consensus run's calls (the runner's records) and its ``metadata.consensus``: per field
    its kind and every usable answer's (provider, value, stated confidence)."""
    from bus import messages as m
    from actors.strategies.consensus import stated_confidence

    answers = [r.result for r in records if isinstance(r.result, m.Completion) and isinstance(r.result.data, dict)]
    out = {}
    for name, field in report.items():
        out[name] = {"kind": field.get("kind", "exact"),
                     "votes": [[c.provider, c.data.get(name), stated_confidence(c)] for c in answers]}
    return out


# --- labels (``llmbus feedback``) -----------------------------------------------------------------


def matches(kind: str, value: Any, correct: Any) -> bool:
    """Whether an answer is the labelled value: the same canonical key (names: or similar)."""
    if value is None:
        return False
    a, b = canonical.key(kind, value), canonical.key(kind, correct)
    if a is not None and a == b:
        return True
    return (kind in FUZZY_KINDS and isinstance(value, str) and isinstance(correct, str)
            and canonical.similar(kind, value, correct, canonical.NAME_THRESHOLD))


def judge(record: dict[str, Any], labels: dict[str, str]) -> tuple[dict[str, Reliability], list[dict[str, Any]]]:
    """(provider -> the counts the labels add, one row per labelled answer) for one remembered ask.
    A provider that abstained (null) on a labelled field is not counted for it."""
    fields = record.get("fields") or {}
    deltas: dict[str, Reliability] = {}
    rows = []
    for name, correct in labels.items():
        field = fields.get(name)
        if field is None:
            raise KeyError(name)
        kind = field.get("kind", "exact")
        for provider, value, stated in field.get("votes", []):
            if value is None:
                continue
            right = matches(kind, value, correct)
            deltas.setdefault(provider, Reliability()).observe(provider, name, stated, 1.0 if right else 0.0,
                                                               LABEL_WEIGHT)
            rows.append({"provider": provider, "field": name, "value": value, "right": right})
    return deltas, rows


async def feedback(nc, subjects, ask_id: str, labels: dict[str, str]) -> dict[str, Any]:
    """Apply labels to the remembered ask: each provider's counts in KV updated by compare-and-set.
    Raises LookupError when the ask is not remembered, KeyError for a field it did not have,
    FileExistsError for a field already labelled (a label counts once)."""
    answers = await ensure_kv(nc, subjects.bucket("answers"), ttl=ANSWERS_TTL_S)
    try:
        entry = await answers.get(ask_key(ask_id))
    except (KeyNotFoundError, NotFoundError):
        raise LookupError(ask_id) from None
    record = json.loads(entry.value)
    again = sorted(set(labels) & set(record.get("labelled") or {}))
    if again:
        raise FileExistsError(", ".join(again))
    deltas, rows = judge(record, labels)
    record["labelled"] = {**(record.get("labelled") or {}), **labels}
    try:  # mark the fields labelled first (compare-and-set): a label counts once, even when sent twice at once
        await answers.update(ask_key(ask_id), json.dumps(record, ensure_ascii=False).encode(), last=entry.revision)
    except KeyWrongLastSequenceError:
        raise FileExistsError("(being labelled now)") from None
    kv = await ensure_kv(nc, subjects.bucket("reliability"))
    for provider, rel in deltas.items():
        delta = rel.export(provider)
        delta["labels"] = {n: [c[0] / LABEL_WEIGHT, c[1] / LABEL_WEIGHT] for n, c in delta["fields"].items()}
        await add(kv, provider, delta)
    return {"ask_id": ask_id, "labels": labels, "answers": rows}


async def read_all(nc, subjects) -> dict[str, dict[str, Any]]:
    """provider -> its stored counts (empty when nothing was learned yet; the bucket is not created)."""
    try:
        kv = await nc.jetstream().key_value(subjects.bucket("reliability"))
    except BucketNotFoundError:
        return {}
    try:
        keys = await kv.keys()
    except Exception:  # NoKeysError: an empty bucket
        return {}
    out = {}
    for key in sorted(keys):
        if key.startswith(PREFIX):
            try:
                out[key.removeprefix(PREFIX)] = json.loads((await kv.get(key)).value)
            except (KeyNotFoundError, NotFoundError):
                continue
    return out


def summary(stored: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What ``llmbus reliability`` shows: per provider, per field the accuracy (soft counts with the
    prior, as the vote reads them), its weight, labelled answers, and the calibration bins."""
    rel = Reliability()
    for provider, value in stored.items():
        rel.load(provider, value)
    out = {}
    for provider, value in stored.items():
        labels = value.get("labels") or {}
        fields = {n: {"accuracy": round(rel.accuracy(provider, n), 4), "weight": round(c[1], 1),
                      "labelled": int(round(labels.get(n, [0, 0])[1])),
                      "labelled_right": int(round(labels.get(n, [0, 0])[0]))}
                  for n, c in sorted((value.get("fields") or {}).items())}
        bins = {b: round(c[0] / c[1], 4) if c[1] else None for b, c in sorted((value.get("bins") or {}).items())}
        overall = value.get("overall") or [0.0, 0.0]
        out[provider] = {"overall": round(rel._overall(provider), 4), "weight": round(overall[1], 1),
                         "fields": fields, "calibration_bins": bins}
    return out
