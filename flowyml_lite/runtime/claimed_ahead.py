"""Runs claimed before their instant: kept here until it comes, then started together.

With real time, the loop plans and claims the fires due within a moment (``loop.STAGE_SECONDS``),
a group at a time, so that when each instant comes only the hand-over to the executors is left:
the store's transaction (milliseconds for a burst on SQLite, a round trip on PostgreSQL) is no
longer between the instant and the start, and a steady flow of fires is claimed in groups. At
the instant a run starts as its schedule stands then: paused
or removed, it does not (recorded ``skipped``); redefined, only if the new timetable still fires
then; held up past the instant (a frozen process), as the misfire policy decides. A run whose
schedule changed since the claim (a resume, a re-declaration, a change synced from another
process), or that starts over a second late, starts only if the store still has its row active:
a peer may have judged this node lost, or the schedule been removed and declared again.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import (
    AbstractSet,
    Any,
    Callable,
    ContextManager,
    Dict,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Set,
    Tuple,
)

from ..core.schedule import Options
from ..stores.base import ACTIVE_STATUSES, FAILED, MISSED, SKIPPED, Outcome, RunRecord, ScheduleRecord, Store
from .by_instant import ByInstant
from .outcomes import OutcomeWriter
from .table import ScheduleTable

logger = logging.getLogger("flowyml_lite.scheduler.claims")

#: Why a run claimed ahead was not started.
PAUSED_BEFORE = "the schedule was paused after this fire was claimed, before its instant"
REMOVED_BEFORE = "the schedule was removed after this fire was claimed, before its instant"
REDEFINED_BEFORE = "the schedule was redefined after this fire was claimed, before its instant"
STOPPED_BEFORE_INSTANT = "the scheduler stopped before this fire's instant"
OVERLAP_MANUAL = "overlap: a manual run of this schedule, started after this fire was claimed, still runs"
#: Why an instant of a schedule declared again elsewhere is recorded without running (``ran``).
ALREADY_RAN = (
    "already run here at this instant, claimed ahead under the schedule's previous declaration "
    "(removed and declared again just before the instant)"
)
#: Schedules whose last started instant is remembered, at most: beyond it, instants older than
#: REMEMBER_SECONDS are forgotten (a removal and re-declaration elsewhere is seen well within it).
MAX_REMEMBERED = 200_000
REMEMBER_SECONDS = 60.0
#: A held run released this late is started only if the store still has its row active.
VERIFY_LATE_SECONDS = 1.0
#: ``stop()`` waits this long at most for the instants of the runs it holds (whatever its timeout:
#: the fires are this node's, and no other node can claim them).
AT_STOP_WAIT_SECONDS = 1.0


class Held(NamedTuple):
    """A won claim's runs, waiting for ``instant``; ``definition`` and ``next_fire`` are the
    schedule's as the claim left it."""

    instant: datetime
    name: str
    func: Callable[[], Any]
    runs: List[RunRecord]
    opts: Options
    definition: str
    next_fire: Optional[datetime]
    record: ScheduleRecord  # the table's row object at the claim: replaced if the row changes


Ended = Tuple[Held, str, str]  # a held run not started: its status and why
Submit = Callable[[str, Callable[[], Any], List[RunRecord], Options], Any]


class ClaimedAhead:
    """The runs claimed ahead of their instant, by instant (in the order claimed within one)."""

    def __init__(
        self,
        table: ScheduleTable,
        store: Store,
        writer: OutcomeWriter,
        submit: Submit,
        batch: Callable[[], ContextManager[None]],
        announce: Callable[[RunRecord], None],
        node_id: str,
        sizes: Callable[[int], List[int]],
        options: Callable[[ScheduleRecord], Options],
        clock: Callable[[], datetime],
        busy: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        self._table = table
        self._busy = busy  # the schedules with runs in flight here, and how many
        #: Schedules with a manual run claimed beside a held run (``manual_beside``): at its
        #: instant the held run is skipped for overlap if that manual run still runs.
        self._manual: Set[str] = set()
        self._store = store
        self._sizes = sizes
        self._options = options
        self._clock = clock  # each group of a long release is judged on the time it is handed over
        self._closed = False  # stop() is over: a claim answered after it gets no start
        self._writer = writer
        self._submit = submit
        self._batch = batch
        self._announce = announce
        self._node = node_id
        self._held: ByInstant[Held] = ByInstant(id)  # each claim's own
        self._keys: Set[Tuple[str, datetime]] = set()  # (name, instant) of each held run (``holds``)
        self._names: Dict[str, int] = {}  # name -> how many of its runs are held (``holding``)
        #: name -> (the instant of its last run started from here, its row's created_at) (``ran``).
        self._started: Dict[str, Tuple[datetime, Optional[datetime]]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._held)

    def add(self, held: List[Held]) -> None:
        with self._lock:
            if not self._closed:
                names = self._names
                for each in held:
                    self._held.add(each.instant, each)
                    self._keys.add((each.name, each.instant))
                    names[each.name] = names.get(each.name, 0) + 1
                return
        for each in held:  # a claim answered after stop() gave up waiting for the loop
            self._end(each, SKIPPED, STOPPED_BEFORE_INSTANT, each.instant)

    def ran(self, record: ScheduleRecord, instant: datetime) -> Optional[bool]:
        """Whether a run of ``record``'s schedule claimed ahead for ``instant`` was started here:
        None if not; True if under this very row (its run row exists: the instant only needs
        passing), False if under a row since removed and declared again by another process (the
        new row records the instant ``skipped``, ``ALREADY_RAN``, rather than running it twice)."""
        started = self._started.get(record.name)
        if started is None or started[0] != instant:
            return None
        return started[1] == record.created_at

    def holds(self) -> AbstractSet[Tuple[str, datetime]]:
        """(name, instant) of every run held now: a fire queued again meanwhile (a sync that saw
        its schedule re-created) is not claimed ahead twice. Kept as runs come and go: asked for
        each chunk of a burst's claims, it must not be rebuilt from all the runs held each time."""
        return self._keys

    def holding(self, name: str) -> bool:
        """Whether a run of ``name`` is held (for any instant): its next instant is not claimed
        ahead too, which would count the held run against ``max_instances``."""
        return name in self._names

    def manual_beside(self, name: str) -> int:
        """A manual run of ``name`` is being claimed: how many runs of it are held (they do not
        run yet, so they do not count against its ``max_instances``; at their instant they are
        skipped for overlap instead if the manual run still runs then, as a fire claimed at its
        instant would be)."""
        with self._lock:
            held = self._names.get(name, 0)
            if held:
                self._manual.add(name)
            return held

    def first(self) -> Optional[datetime]:
        """The earliest instant a run is held for (the loop wakes then)."""
        with self._lock:
            return self._held.first()

    def count_due(self, now: datetime) -> int:
        """How many held runs are due at ``now``."""
        with self._lock:
            return self._held.count_due(now) if self._held else 0

    def reopen(self) -> None:
        """The scheduler starts (again)."""
        self._closed = False

    def drop(self, name: Optional[str] = None) -> None:
        """Forget the runs held for ``name`` (every schedule if None): removed in this process, its
        rows went with it, and a schedule declared again under the name claims its own fires."""
        with self._lock:
            if name is None:
                self._held.clear()
                self._keys, self._names = set(), {}
                self._started.clear()
            else:
                self._forget(self._held.keep_only(lambda h: h.name != name))
                self._started.pop(name, None)

    def start_due(self, now: datetime) -> int:
        """Start the held runs whose instant is ``now`` or earlier, together; how many there were."""
        if not self._held:
            return 0
        with self._lock:
            due = self._held.pop_due(now)
            if not due:
                return 0
            if not self._held:
                self._keys, self._names = set(), {}
            else:
                self._forget(due)
        self._release(due, now)
        return len(due)

    def at_stop(self, now: Callable[[], datetime]) -> None:
        """At stop: a held run whose instant comes within ``AT_STOP_WAIT_SECONDS`` starts at it (its
        fire is this node's: no other can claim it now); one further off is recorded ``skipped``."""
        deadline = time.monotonic() + AT_STOP_WAIT_SECONDS
        while self._held and time.monotonic() < deadline:
            first = self.first()
            if first is None:
                break
            wait = (first - now()).total_seconds()
            if wait > deadline - time.monotonic():
                break
            if wait > 0:
                time.sleep(min(wait, 0.05))  # the wall clock is read again: never early
                continue
            self.start_due(now())
        with self._lock:
            rest = self._held.clear()
            self._keys, self._names, self._closed = set(), {}, True
        for held in rest:
            self._end(held, SKIPPED, STOPPED_BEFORE_INSTANT, now())

    def _forget(self, gone: List[Held]) -> None:
        """Take ``gone`` (no longer held) out of the keys and name counts; lock held."""
        names = self._names
        for each in gone:
            self._keys.discard((each.name, each.instant))
            left = names.get(each.name, 0) - 1
            if left > 0:
                names[each.name] = left
            else:
                names.pop(each.name, None)

    def _release(self, due: List[Held], now: datetime) -> None:
        """Start ``due`` a group at a time (a small one first: its runs start while the rest are
        handed over), as each schedule stands now (see the module's docstring); the runs to check
        in the store first start after the others of their group, checked with one read."""
        begin = 0
        for size in self._sizes(len(due)):
            if begin:
                time.sleep(0)  # let the run threads just woken take the interpreter and start
                now = max(now, self._clock())
            group, begin = due[begin : begin + size], begin + size
            try:
                start, check, ended = self._judge(group, now)
            except Exception as exc:  # never a held run without an outcome
                logger.exception("judging %d run(s) claimed ahead", len(group))
                start, check, ended = [], [], [(h, FAILED, _could_not(exc)) for h in group]
            self._start(start, now)
            if check:
                active = self._active(check)
                self._start([held for held in check if held.runs[0].run_key in active], now)
                for held in check:
                    if held.runs[0].run_key not in active:
                        logger.info(
                            "%r: fire %s not started: its row is no longer active (judged lost, or removed)",
                            held.name,
                            held.instant.isoformat(),
                        )
            for held, status, why in ended:
                self._end(held, status, why, now)

    def _start(self, start: List[Held], now: datetime) -> None:
        """Hand ``start`` to the runner together, and remember each as run here (``ran``)."""
        if not start:
            return
        with self._batch():
            for held in start:
                try:
                    self._submit(held.name, held.func, held.runs, held.opts)
                except Exception as exc:  # never a held run without an outcome
                    logger.exception("could not start the run of %r claimed ahead", held.name)
                    self._end(held, FAILED, _could_not(exc), now)
        started = self._started
        if len(started) > MAX_REMEMBERED:  # forget the instants long past, not this burst's
            cutoff = now - timedelta(seconds=REMEMBER_SECONDS)
            self._started = started = {n: v for n, v in started.items() if v[0] >= cutoff}
        for held in start:
            started[held.name] = (held.instant, held.record.created_at)

    def _judge(self, group: List[Held], now: datetime) -> Tuple[List[Held], List[Held], List[Ended]]:
        """Of ``group``: the runs that start now, those that start if the store still has their row
        active, and the others with their status and reason."""
        table = self._table
        start: List[Held] = []
        check: List[Held] = []
        ended: List[Ended] = []
        busy = self._busy() if self._manual else {}
        with table.lock:
            for held in group:
                record = table.records.get(held.name)
                func = table.funcs.get(held.name)
                if record is None or func is None:
                    ended.append((held, SKIPPED, REMOVED_BEFORE))
                    continue
                if not record.enabled:
                    ended.append((held, SKIPPED, PAUSED_BEFORE))
                    continue
                if record.definition_hash != held.definition:
                    if record.next_fire != held.instant:
                        ended.append((held, SKIPPED, REDEFINED_BEFORE))
                        continue
                    # the new timetable fires then too: the instant runs, as now defined
                    held = held._replace(opts=self._options(record), definition=record.definition_hash)
                why = _stale(held, record.next_fire, now)
                if why:
                    ended.append((held, MISSED, why))
                    continue
                if held.name in self._manual:
                    self._manual.discard(held.name)
                    if busy.get(held.name, 0) >= held.opts.max_instances:
                        ended.append((held, SKIPPED, OVERLAP_MANUAL))
                        continue
                if func is not held.func:  # a re-declaration may bring a new function
                    held = held._replace(func=func)
                late = (now - held.instant).total_seconds() > VERIFY_LATE_SECONDS
                changed = record is not held.record or record.next_fire != held.next_fire
                (check if late or changed else start).append(held)
        return start, check, ended

    def _active(self, check: List[Held]) -> Set[str]:
        """The run keys of ``check`` whose rows the store still has active (one read, not a write:
        never held up by another writer); all of them if the store cannot say."""
        try:
            recent = self._store.recent_runs([held.name for held in check], 5)
        except Exception as exc:  # the rows are ours unless shown otherwise: they run
            logger.warning("could not check %d run(s) claimed ahead (running them): %s", len(check), exc)
            return {held.runs[0].run_key for held in check}
        return {run.run_key for runs in recent.values() for run in runs if run.status in ACTIVE_STATUSES}

    def _end(self, held: Held, status: str, why: str, now: datetime) -> None:
        level = logging.WARNING if status == MISSED else logging.INFO
        logger.log(level, "%r: fire %s not started: %s", held.name, held.instant.isoformat(), why)
        for run in held.runs:
            self._writer.put(Outcome(run.run_key, status, now, reason=why, node_id=self._node), held.name)
            self._announce(run.with_status(status, why))


def _could_not(exc: BaseException) -> str:
    return f"could not start: {type(exc).__name__}: {exc}"


def _stale(held: Held, next_fire: Optional[datetime], now: datetime) -> str:
    """Why a run claimed ahead no longer runs at ``now`` (the process was held up past its instant),
    as planning at ``now`` would decide (``planning.plan``); empty if it still runs."""
    opts = held.opts
    if opts.catchup == "all":
        return ""
    if next_fire is not None and held.instant < next_fire <= now:
        return "superseded by a later instant due at the same time (the process was held up after its claim)"
    late = (now - held.instant).total_seconds()
    if late > opts.misfire_grace_seconds and opts.catchup == "skip":
        held_up = f"the process was held up {late:.1f} s past its instant after its claim"
        return f"misfire: {held_up} (catchup=skip)"
    return ""
