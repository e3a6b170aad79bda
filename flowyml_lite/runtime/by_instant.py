"""Items kept by the instant they are due at: the earliest instant and what is due by now, cheaply.

The loop keeps the fires it popped ahead of their instant here, and the claims the runs they won
ahead of it: with a steady flow of fires claimed half a second ahead that is hundreds of instants,
and both are asked at every pass what comes first and what is due.
"""

from __future__ import annotations

import heapq
from datetime import datetime
from typing import Callable, Dict, Generic, Hashable, Iterable, Iterator, List, Optional, TypeVar

T = TypeVar("T")


class ByInstant(Generic[T]):
    """A bucket of items per instant and a heap of the instants; not thread-safe (callers lock).
    An item is known by ``key(item)`` (the item itself by default): added twice, it is kept once."""

    def __init__(self, key: Callable[[T], Hashable] = lambda item: item) -> None:
        self._key = key
        self._buckets: Dict[datetime, Dict[Hashable, T]] = {}
        self._instants: List[datetime] = []  # a heap of the buckets' keys
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[T]:
        for instant in sorted(self._buckets):
            yield from self._buckets[instant].values()

    def add(self, instant: datetime, item: T) -> bool:
        """Keep ``item`` until ``instant``; False if it is kept already."""
        key = self._key(item)
        bucket = self._buckets.get(instant)
        if bucket is None:
            self._buckets[instant] = {key: item}
            heapq.heappush(self._instants, instant)
        elif key in bucket:
            return False
        else:
            bucket[key] = item
        self._count += 1
        return True

    def has(self, instant: datetime, item: T) -> bool:
        """Whether ``item`` is kept for ``instant``."""
        bucket = self._buckets.get(instant)
        return bucket is not None and self._key(item) in bucket

    def first(self) -> Optional[datetime]:
        """The earliest instant anything is due at."""
        return self._instants[0] if self._instants else None

    def count_due(self, now: datetime) -> int:
        """How many items are due at ``now`` or earlier (visits only the heap's due part)."""
        heap, count, stack = self._instants, 0, [0]
        while stack:
            i = stack.pop()
            if i < len(heap) and heap[i] <= now:
                count += len(self._buckets[heap[i]])
                stack.extend((2 * i + 1, 2 * i + 2))
        return count

    def pop_due(self, now: datetime) -> List[T]:
        """Remove and return the items due at ``now`` or earlier, earliest instant first."""
        due: List[T] = []
        heap = self._instants
        while heap and heap[0] <= now:
            due.extend(self._buckets.pop(heapq.heappop(heap)).values())
        self._count -= len(due)
        return due

    def discard(self, instant: datetime, keys: Iterable[Hashable]) -> None:
        """Remove the items of ``instant`` known by ``keys`` (those kept)."""
        bucket = self._buckets.get(instant)
        if bucket is None:
            return
        for key in keys:
            if bucket.pop(key, None) is not None:
                self._count -= 1
        if not bucket:
            self._drop(instant)

    def keep_only(self, keep: Callable[[T], bool]) -> List[T]:
        """Remove every item for which ``keep`` is false; return them."""
        gone: List[T] = []
        for instant, bucket in list(self._buckets.items()):
            dropped = [key for key, item in bucket.items() if not keep(item)]
            for key in dropped:
                gone.append(bucket.pop(key))
            if not bucket:
                self._drop(instant)
        self._count -= len(gone)
        return gone

    def clear(self) -> List[T]:
        """Remove everything; return it, earliest instant first."""
        items = list(self)
        self._buckets, self._instants, self._count = {}, [], 0
        return items

    def _drop(self, instant: datetime) -> None:
        del self._buckets[instant]
        self._instants.remove(instant)
        heapq.heapify(self._instants)
