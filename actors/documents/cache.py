"""Extracted text by content hash (sha256 of the bytes and the format hint), in memory, LRU.

Shared by every provider actor of one process, so an ensemble of N providers extracts a document
once; a failure (encrypted, corrupt, empty) is kept too, so it is not parsed N times either. The
bound is on the characters kept, not on entries: one 500-page PDF weighs what it weighs. Safe to
use from worker threads (map_reduce extracts in one): a lock guards every read and write."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from actors.documents.extract import DocumentError, Extracted

MAX_CHARS = 64_000_000


def content_key(data: bytes, media_type: str | None) -> str:
    return hashlib.sha256(data).hexdigest() + ":" + (media_type or "")


class ExtractCache:
    def __init__(self, max_chars: int = MAX_CHARS) -> None:
        self.max_chars = max_chars
        self.chars = 0
        self.hits = self.misses = 0
        self._items: OrderedDict[str, Extracted | DocumentError] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Extracted | DocumentError | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key: str, item: Extracted | DocumentError) -> None:
        size = _size(item)
        with self._lock:
            if key in self._items or size > self.max_chars:
                return
            self._items[key] = item
            self.chars += size
            while self.chars > self.max_chars:
                _, old = self._items.popitem(last=False)
                self.chars -= _size(old)

    def __contains__(self, key: str) -> bool:  # a look that is not a hit or a miss
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)


def _size(item: Extracted | DocumentError) -> int:
    return sum(len(p) for p in item.pages) if isinstance(item, Extracted) else 1


CACHE = ExtractCache()
