"""The schedules this process serves: definitions, cached state and the timer heap.

One condition variable guards it all; the loop sleeps on it until the earliest fire or a change.
Heap entries are (wake instant, sequence, name, the next_fire they are for); an entry whose
record moved on (another next_fire, disabled, removed) is stale and skipped when popped. Only the
fires of schedules this node owns are queued (``owns``, set by the claims from the membership):
when the split among peers changes, ``reown`` queues the newly owned ones.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..core.triggers import Trigger as TriggerLike
from ..stores.base import ScheduleRecord
from .membership import ServedSet

Entry = Tuple[datetime, int, str, Optional[datetime]]
Fire = Tuple[str, datetime]  # (schedule name, fire instant)


class ScheduleTable:
    """Functions, triggers and records by name, and the heap of their next fires."""

    def __init__(self) -> None:
        #: Held around every read and change of the table; entered directly (a Condition's own
        #: __enter__ is Python code), waited on and notified through ``cond``.
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.funcs: Dict[str, Callable[[], Any]] = {}
        self.triggers: Dict[str, TriggerLike] = {}
        self.records: Dict[str, ScheduleRecord] = {}
        self.heap: List[Entry] = []
        #: The instant of the fires the loop popped in its lead and planned (out of the heap until
        #: it comes), or None: what is due soonest is the earlier of it and the heap's first entry.
        self.staged_at: Optional[datetime] = None
        self._seq = itertools.count()
        self.served = ServedSet()  # the digest other nodes compare to find this node's peers
        # Whether this node attempts a schedule's fires; the others are kept but never queued.
        self.owns: Callable[[str], bool] = lambda name: True

    def serve(self, name: str, func: Callable[[], Any], trigger: TriggerLike) -> None:
        """Register the function and trigger of ``name``; caller holds ``cond``."""
        if name not in self.funcs:
            self.served.add(name)
        self.funcs[name] = func
        self.triggers[name] = trigger

    def set_record(self, record: ScheduleRecord) -> None:
        """Cache a record and (re)queue its next fire if this node owns it; caller holds ``cond``."""
        self.records[record.name] = record
        if record.enabled and record.next_fire is not None and self.owns(record.name):
            self._queue((record.next_fire, next(self._seq), record.name, record.next_fire))

    def push(self, when: datetime, name: str, fire: Optional[datetime]) -> None:
        """Wake for ``name`` at ``when`` (a retry of ``fire``, or a delayed start); caller holds ``cond``."""
        self._queue((when, next(self._seq), name, fire))

    def _queue(self, entry: Tuple[datetime, int, str, Optional[datetime]]) -> None:
        """Push a heap entry; wake the loop only if it is now the earliest (the loop waits for the
        earliest entry, so a later one changes nothing: 100,000 declarations wake it once)."""
        heap = self.heap
        heapq.heappush(heap, entry)
        if heap[0] is entry:
            self.cond.notify_all()

    def pop_due(self, now: datetime, limit: Optional[int] = None) -> List[Fire]:
        """(name, fire) of the live entries due at ``now``, at most ``limit``; caller holds ``cond``."""
        due: List[Fire] = []
        heap, records, funcs = self.heap, self.records, self.funcs
        most = len(heap) if limit is None else limit
        while heap and heap[0][0] <= now and len(due) < most:
            _, _, name, fire = heapq.heappop(heap)
            record = records.get(name)
            if record is None or fire is None or record.next_fire != fire or not record.enabled:
                continue
            if name in funcs:
                due.append((name, fire))
        return due

    def pop_ahead(self, until: datetime, limit: int) -> List[Fire]:
        """``pop_due`` for claims ahead: a retry (an entry that wakes later than its fire: a claim
        that failed, outcomes backed up) stays queued for its own time; caller holds ``cond``."""
        due: List[Fire] = []
        later: List[Tuple[datetime, int, str, Optional[datetime]]] = []
        heap, records, funcs = self.heap, self.records, self.funcs
        while heap and heap[0][0] <= until and len(due) < limit:
            entry = heapq.heappop(heap)
            when, _, name, fire = entry
            if fire is not None and when != fire:
                later.append(entry)
                continue
            record = records.get(name)
            if record is None or fire is None or record.next_fire != fire or not record.enabled:
                continue
            if name in funcs:
                due.append((name, fire))
        for entry in later:
            heapq.heappush(heap, entry)
        return due

    def first_is_a_retry(self) -> bool:
        """Whether the heap's first entry wakes later than its fire (a retry: taken at its time)."""
        heap = self.heap
        return bool(heap) and heap[0][3] is not None and heap[0][0] != heap[0][3]

    def reown(self) -> None:
        """The split changed: drop the entries of schedules owned elsewhere now, and queue the next
        fire of every schedule owned here that has no entry for it; caller holds ``cond``."""
        owns = self.owns
        heap = [entry for entry in self.heap if owns(entry[2])]
        queued = {(name, fire) for _, _, name, fire in heap}
        for name, record in self.records.items():
            fire = record.next_fire
            if fire is None or not record.enabled or (name, fire) in queued:
                continue
            if name in self.funcs and owns(name):
                heap.append((fire, next(self._seq), name, fire))
        heapq.heapify(heap)
        self.heap[:] = heap
        self.cond.notify_all()

    def next_wake(self) -> Optional[datetime]:
        """The earliest heap instant (stale entries included: waking early is harmless)."""
        return self.heap[0][0] if self.heap else None

    def quiet_for(self, seconds: float, now: datetime, also: Optional[datetime] = None) -> bool:
        """True if no fire that still needs a claim (in the heap, or staged) is due within
        ``seconds`` of ``now``, nor ``also`` (e.g. the first run claimed ahead) when given."""
        with self.lock:
            wake, staged = self.next_wake(), self.staged_at
        for other in (staged, also):
            if other is not None and (wake is None or other < wake):
                wake = other
        return wake is None or (wake - now).total_seconds() >= seconds

    def forget(self, name: str) -> None:
        """Drop a schedule (its heap entries go stale); caller holds ``cond``."""
        if self.funcs.pop(name, None) is not None:
            self.served.discard(name)
        self.triggers.pop(name, None)
        self.records.pop(name, None)
        self.cond.notify_all()

    def clear(self) -> None:
        """Drop everything; caller holds ``cond``."""
        self.served.clear()
        self.funcs.clear()
        self.triggers.clear()
        self.records.clear()
        self.heap.clear()
        self.cond.notify_all()
