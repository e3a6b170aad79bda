"""The claims: whether a due fire runs, and that it runs once (DESIGN §4).

The next instant's fires are planned and claimed a moment before it (``prepare``; the won runs
wait in ``claimed_ahead.py``); what is left is claimed at the instant. For every wake of the loop:
the due fires of schedules this node owns are planned by their misfire policy and claimed together
in one store transaction (``Store.claim_many``) that also carries the
outcomes finished since the last one. Schedules another live node owns are not followed here at
all (the table queues no fire of theirs): when the split changes, the sync re-reads every state
and the table queues the newly owned fires, so a fire the old owner never claimed is claimed then.
Won runs go to the runner; a refused claim refuses only its own schedule, which is re-read. A
claim the store was stuck on (a cut link) has its instants superseded when later ones are due by
its answer; planning itself is in ``planning.py``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime, timedelta
from typing import (
    Any,
    Callable,
    ContextManager,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from ..clock import Clock
from ..core.schedule import Options
from ..core.triggers import Trigger
from ..errors import ScheduleError
from ..stores.base import (
    ACTIVE_STATUSES,
    MISSED,
    RUNNING,
    SKIPPED,
    Claim,
    RunRecord,
    ScheduleRecord,
    Store,
)
from .claim_troubles import (
    RETRY_MAX_SECONDS,
    STOPPED_WHILE_CLAIMING,
    ClaimTroubles,
    GivenUp,
    Planned,
    contended,
)
from .claimed_ahead import ALREADY_RAN, ClaimedAhead, Held, Submit
from .health import Troubles
from .membership import Membership
from .outcomes import OutcomeWriter
from .planning import US, Ahead, plan, run_key, still
from .refusals import Refusals
from .refused import RefusedClaims
from .table import Fire, ScheduleTable

logger = logging.getLogger("flowyml_lite.scheduler.claims")

CLAIM_GROUP = 1000  # claims per transaction at most: the first runs start while later groups are claimed
_OPTIONS_CACHE = 100_000  # parsed options dicts kept at most (then forgotten, and parsed again)
_AHEAD_KEPT = 100_000  # plans made ahead kept at most (those of fires that never came are dropped)
FIRST_GROUP = 10  # the first group of a burst is small, then groups grow GROUP_GROWTH-fold
GROUP_GROWTH = 4
PLAN_RETRY_SECONDS = 60  # a trigger that raised is asked again after this long
BLOCKED_AFTER = 3  # fires skipped for overlap in a row before health reports the schedule blocked


def group_sizes(count: int, small_first: bool = True) -> List[int]:
    """How ``count`` due fires are claimed: groups of FIRST_GROUP, then GROUP_GROWTH times more each,
    up to CLAIM_GROUP (or CLAIM_GROUP at once when a burst goes on); a remainder of at most a
    quarter of a group more rides along with it, never past CLAIM_GROUP."""
    sizes: List[int] = []
    size = FIRST_GROUP if small_first else CLAIM_GROUP
    while count > 0:
        if count <= size * 5 // 4 and count <= CLAIM_GROUP:
            size = count
        size = min(size, count)
        sizes.append(size)
        count -= size
        size = min(size * GROUP_GROWTH, CLAIM_GROUP)
    return sizes



class Claims(ClaimTroubles):
    """Plans and claims due fires, and hands the won runs to ``submit``."""

    def __init__(
        self,
        table: ScheduleTable,
        store: Store,
        writer: OutcomeWriter,
        membership: Membership,
        troubles: Troubles,
        clock: Clock,
        node_id: str,
        submit: Submit,
        announce: Callable[[RunRecord], None] = lambda run: None,
        batch: Callable[[], ContextManager[None]] = contextlib.nullcontext,
        adopt: Optional[Callable[[ScheduleRecord], None]] = None,
        busy: Callable[[], Mapping[str, int]] = dict,
        claim_ahead: bool = True,
    ) -> None:
        self._table = table
        #: Takes a row re-read after a refused claim, rebuilding the trigger if another process
        #: redefined the schedule (a sync of that row later would see nothing new to adopt).
        self._adopt = adopt if adopt is not None else table.set_record
        self._store = store
        self._writer = writer
        self._membership = membership
        self._troubles = troubles
        self._clock = clock
        self._node = node_id
        self._submit = submit
        self._announce = announce
        self._batch = batch
        self._options: Dict[int, Tuple[Dict[str, Any], Options]] = {}  # id(options dict) -> parsed
        self._refusals = Refusals()
        self._refused = RefusedClaims(table, store, self._refusals, troubles, self._adopt)
        self._ahead: Dict[Fire, Ahead] = {}  # fires planned before their instant (``prepare``)
        #: Runs claimed before their instant (``prepare``), started when it comes.
        self.claimed_ahead = ClaimedAhead(
            table, store, writer, submit, batch, announce, node_id, group_sizes, self.options, clock.now, busy
        )
        self._busy = busy  # the schedules with runs in flight here (how many): not claimed ahead
        self._claim_ahead = claim_ahead
        self._failures = 0
        #: Schedules whose claim failed on its own, while others went through: how many times.
        self._failed_alone: Dict[str, int] = {}
        self._unplannable: Set[str] = set()  # schedules whose trigger raised (health says so)
        #: How long the store has taken to answer claims lately (a decaying maximum, seconds).
        self._typical = 0.0
        self._blocked: Dict[str, int] = {}  # name -> fires skipped for overlap in a row
        #: When the claim transaction in progress began (monotonic), for health; None between them.
        self.in_store_since: Optional[float] = None
        table.owns = membership.owns  # the table queues only the fires this node attempts

    def options(self, record: ScheduleRecord) -> Options:
        """The record's options, parsed once per stored dict (declarations share one dict for
        equal options, so most schedules find theirs parsed already by another)."""
        cached = self._options.get(id(record.options))
        if cached is not None and cached[0] is record.options:
            return cached[1]
        opts = Options.from_dict(record.options)
        if len(self._options) >= _OPTIONS_CACHE:
            self._options.clear()
        self._options[id(record.options)] = (record.options, opts)  # the dict kept: its id stays its own
        return opts

    def manual(self, record: ScheduleRecord, opts: Options) -> List[RunRecord]:
        """Claim a manual run of ``record`` now (``run_now``): a row of its own, not a fire of its
        timetable (next_fire is compare-and-set to itself), overlap counted as for any fire."""
        name = record.name
        now = self._clock.now()
        run = RunRecord(run_key(now), name, now, RUNNING, self._node, reason="manual")
        for _ in range(5):
            current = record.next_fire
            if not record.enabled:
                raise ScheduleError(f"{name!r} is disabled (paused): enable({name!r}) first")
            if current is None:
                raise ScheduleError(
                    f"{name!r} has no next fire (a one-off that already ran, or past its end_date): "
                    "declare it again with a new time to run it"
                )
            held = self.claimed_ahead.manual_beside(name)  # claimed ahead, not running yet
            try:
                stored = self._store.claim(name, current, current, [run], opts.max_instances + held)
            except Exception as exc:  # it may have committed all the same: never left running
                self._settle_runs(name, [run], exc)
                raise
            if stored is not None:
                return stored
            # Lost a race with the loop, or this instant is taken (two manual runs within one tick).
            run.fire_time += US
            record = self._store.get_schedule(name) or record
        raise ScheduleError(f"could not claim a manual run of {name!r}: its state kept changing")

    # -- a wake's worth of due fires ------------------------------------------------------
    def process(
        self,
        due: List[Tuple[str, datetime]],
        now: datetime,
        small_first: bool = True,
        given_up: Optional[GivenUp] = None,
    ) -> None:
        """Claim the due fires this node owns (in groups), pass over the rest, start the winners.

        ``small_first``: the first group is small, so the first runs start while the rest are
        claimed (the loop passes False when it goes on with a burst it has already started).
        ``given_up``: set once ``stop()`` gave up waiting for the calling loop; the runs a claim
        won after that are recorded ``skipped``, not started after ``stop()`` returned."""
        table = self._table
        if self.claimed_ahead:
            self.claimed_ahead.start_due(now)  # claimed before their instant: only the hand-over is left
        if not due:
            return
        if self._writer.backlogged:
            self._troubles.report(
                "outcomes", f"{self._writer.pending} run outcomes wait for the store: not claiming new fires"
            )
            with table.lock:
                for name, fire in due:
                    table.push(now + timedelta(seconds=0.5), name, fire)
            return
        sizes = group_sizes(len(due), small_first)
        # A pass of several groups is a burst: its claims carry only outcomes of the schedules they
        # claim, and the writer waits for the pass (the lock), so no group waits for the outcomes of
        # the runs started before it: they are committed together right after. Refused claims (each
        # a store read, maybe a round trip) are dealt with once the lock is let go.
        burst = len(sizes) > 1
        refused: List[Tuple[Claim, datetime]] = []
        start = 0
        try:
            with self._writer.commit_lock:
                for size in sizes:
                    if given_up is not None and given_up.is_set():  # stop() gave up on this loop
                        with table.lock:  # the rest is for the next loop (or owner) to claim
                            for name, fire in due[start:]:
                                table.push(fire, name, fire)
                        break
                    if start:  # planned on the clock of its own claim (the one before may have waited)
                        now = self._clock.now()
                    group, start = due[start : start + size], start + size
                    planned = self._plan_group(group, now)
                    if planned:
                        concerning = {c.name for c, _, _ in planned} if burst else None
                        answered = self._claim_group(planned, now, concerning, given_up=given_up)
                        refused.extend((claim, now) for claim in answered or ())
                        if start < len(due):
                            time.sleep(0)  # let the run threads just woken take the GIL and start their runs
        finally:
            for claim, asked in refused:
                self._refused.look_again(claim, asked)

    def _plan_group(self, group: Sequence[Fire], now: datetime) -> List[Planned]:
        """The claims of the fires of ``group`` still due and owned here, planned at ``now`` (their
        plans made ahead when still good)."""
        table, owns = self._table, self._membership.owns
        planned: List[Planned] = []
        with table.lock:
            for name, fire in group:
                ahead = self._ahead.pop((name, fire), None) if self._ahead else None
                record = table.records.get(name)
                trigger = table.triggers.get(name)
                func = table.funcs.get(name)
                if record is None or trigger is None or func is None or record.next_fire != fire:
                    continue
                if not owns(name):
                    # Queued before the split changed: the owner claims it now (and this node
                    # re-reads the schedule's state if it is handed back).
                    if name in self._blocked or self._refusals.tries:
                        self.unblock(name)
                    continue
                if ahead is not None and still(ahead, record, trigger, now):
                    if self._unplannable:
                        self._plannable(name)
                    ahead.claim.runs[0].started_at = now
                    planned.append((ahead.claim, func, ahead.opts))
                    continue
                claim, opts = self._plan(name, record, trigger, fire, now)
                if claim is not None and opts is not None:
                    ran = self.claimed_ahead.ran(record, fire)
                    if ran is not None:
                        claim = _without_run_at(claim, fire, ran)
                    planned.append((claim, func, opts))
        return planned

    def may_prepare(self) -> bool:
        """Whether claims ahead may be made now: not while the store holds writers off for upkeep
        or the outcome writer is in a commit (the loop would wait for it, and the runs it holds
        start late: the claim can wait a moment). Both pass within milliseconds; outcomes backed
        up (a store outage) are ``prepare``'s to see: it plans, and leaves the claims for the instant."""
        return not (self._store.maintaining or self._writer.commit_lock.locked())

    def wants_room(self) -> bool:
        """Whether the store waits for a quiet moment for upkeep (claims ahead reach further)."""
        return self._store.wants_quiet

    def prepare(self, due: List[Fire], now: datetime, patience: Optional[float] = None) -> Set[Fire]:
        """Plan ``due`` (fires popped a moment before their instants) and claim them ahead, so that
        at each instant only the hand-over is left; the fires claimed. One not claimed now (its
        schedule has a run in flight here, which may end before the instant, or one held for an
        earlier instant; the store refused or failed) is claimed at its instant with its plan, if
        that still holds. ``patience``: how long the claim may wait for another writer (runs
        already held start meanwhile only if it gives up in time); None: as long as any write."""
        table = self._table
        if len(self._ahead) > _AHEAD_KEPT:  # plans of fires that never came (the loop stopped)
            self._ahead.clear()
        planned: List[Planned] = []
        busy = self._busy() if self._claim_ahead else {}
        ahead = self.claimed_ahead
        holding = ahead.holds() if ahead else frozenset()
        with table.lock:
            for name, fire in due:
                record = table.records.get(name)
                trigger = table.triggers.get(name)
                func = table.funcs.get(name)
                if record is None or trigger is None or fire < now or record.next_fire != fire:
                    continue  # gone, or a stale entry: the schedule moved on
                if (name, fire) in holding:
                    continue  # queued again by a sync: held already, the instant decides
                if not record.enabled or not self._membership.owns(name):
                    continue
                try:
                    claim, opts = self._claim_for(name, record, trigger, fire, fire)
                except Exception:  # planned again at the instant, which reports it
                    continue
                if len(claim.runs) == 1:
                    self._ahead[(name, fire)] = Ahead(record, record.options, trigger, claim, opts)
                    free = name not in busy and not ahead.holding(name)
                    if self._claim_ahead and func is not None and free:
                        # full (another process's runs): refused, and made again at the instant
                        planned.append((claim._replace(ahead=True), func, opts))
        if not planned or self._writer.backlogged:
            return set()
        lock = self._writer.commit_lock
        if not lock.acquire(timeout=-1 if patience is None else patience):
            return set()  # the writer's commit goes on: claimed at the instant instead
        try:
            if patience is None:
                refused = self._claim_group(planned, now, None, ahead=True)
            else:
                with self._store.waiting_at_most(patience):
                    refused = self._claim_group(planned, now, None, ahead=True)
        finally:
            lock.release()
        if refused is None:
            return set()
        left = {(c.name, c.expected_next) for c in refused}
        claimed = {(c.name, c.expected_next) for c, _, _ in planned} - left
        for key in claimed:
            self._ahead.pop(key, None)
        return claimed

    def _plan(
        self, name: str, record: ScheduleRecord, trigger: Trigger, fire: datetime, now: datetime
    ) -> Tuple[Optional[Claim], Optional[Options]]:
        """The claim of a due fire and its options (table lock held); None, health told, if its
        options or next instant cannot be worked out (a trigger that raises): the fire is looked at
        again in a minute."""
        try:
            claim, opts = self._claim_for(name, record, trigger, fire, now)
        except Exception as exc:
            message = f"{name!r}: its next fire after {fire.isoformat()} cannot be worked out: {exc!r}"
            if self._troubles.report(f"plan:{name}", message):
                logger.exception("%s (trying again every %d s)", message, PLAN_RETRY_SECONDS)
            self._unplannable.add(name)
            self._table.push(now + timedelta(seconds=PLAN_RETRY_SECONDS), name, fire)
            return None, None
        if self._unplannable:
            self._plannable(name)
        return claim, opts

    def _claim_for(
        self, name: str, record: ScheduleRecord, trigger: Trigger, fire: datetime, now: datetime
    ) -> Tuple[Claim, Options]:
        """The claim of ``fire`` as planned at ``now`` (raises what parsing or the trigger raises)."""
        opts = self.options(record)
        runs, new_next = plan(name, trigger, fire, now, opts, self._node)
        return Claim(name, fire, new_next, runs, opts.max_instances), opts

    def _plannable(self, name: Optional[str]) -> None:
        """``name`` (every schedule if None) plans again, or no longer needs to: health forgets it."""
        for each in list(self._unplannable) if name is None else [name]:
            if each in self._unplannable:
                self._unplannable.discard(each)
                self._troubles.clear(f"plan:{each}")

    def _claim_group(
        self,
        group: Sequence[Planned],
        now: datetime,
        concerning: Optional[Set[str]],
        ahead: bool = False,
        given_up: Optional[GivenUp] = None,
    ) -> Optional[List[Claim]]:
        """Claim ``group`` with the pending outcomes (only if they may concern ``concerning``, when
        given) in one transaction and hand the won runs over (or, ``ahead`` of their instants, hold
        them until then); the refused claims, for ``_refused``; None if the store failed. The
        caller holds the writer's commit lock."""
        failing: Dict[int, Exception] = {}  # claims of the group the store refuses on their own
        quick = False  # the store refused at once (an answer, not a timeout)
        try:
            outcomes = self._writer.take(concerning)
            self.in_store_since = time.monotonic()
            try:
                results = self._store.claim_many([c for c, _, _ in group], outcomes)
            except Exception as first:
                self._writer.give_back(outcomes)
                quick = time.monotonic() - (self.in_store_since or 0.0) <= 1.0
                quick = quick and not ahead and not contended(first)
                if not quick:
                    # A store that times out or a lock another writer holds, not a refusal; or
                    # a claim ahead (claimed at the instant instead): nothing else to try.
                    raise
                results, outcomes = self._claim_apart(group, outcomes, first, failing)
                # The first call raised: it may have committed, and then its claims come back
                # refused when made again. Their runs are settled as for any unanswered claim.
                unseen = [g for i, g in enumerate(group) if results[i] is None or i in failing]
                if unseen:
                    self._settle_unanswered(unseen, first)
            finally:
                self.in_store_since = None
        except Exception as exc:
            self._settle_unanswered(group, exc)
            if ahead:  # claimed at the instant instead, which reports a failure
                logger.debug("claiming %d fire(s) ahead: %r", len(group), exc)
                return None
            if quick and len(group) == 1 and not self._failures:
                # The claim before went through: this one may be refused on its own (or be the
                # first of an outage: counted as a failure all the same, so the next claim that
                # goes through knows the store was away). Named in health until it goes through
                # (another claim's success does not clear it, as it clears an outage's "claims").
                self._failures += 1
                with self._table.lock:
                    self._failing_alone(group[0][0], exc, now)
                return None
            self._failures += 1
            delay = min(0.1 * 2 ** min(self._failures, 10), RETRY_MAX_SECONDS)
            message = f"claiming {len(group)} fire(s): {type(exc).__name__}: {exc}"
            if self._troubles.report("claims", message):
                logger.error(
                    "store error while %s (retrying every %.1f s at most)", message, RETRY_MAX_SECONDS
                )
            with self._table.lock:
                for claim, _, _ in group:
                    self._table.push(now + timedelta(seconds=delay), claim.name, claim.expected_next)
            return None
        self._writer.done(outcomes)
        # The first answer after the store failed: its fires waited for the store to come back, and
        # one whose next instant is due by now gives way to it (else it would run late, and the
        # instant due now be skipped for overlap with it). A store that is only slow supersedes
        # nothing this way (its fires must run, late).
        recovering = self._failures > 0
        if self._failures or self._troubles.any():  # any(): no lock taken while all is well
            self._failures = 0
            lasted = self._troubles.clear("claims")
            if lasted is not None:
                logger.warning("store answers claims again after %.1f s", lasted)
        refused: List[Claim] = []
        won: List[Tuple[str, Callable[[], Any], List[RunRecord], Options]] = []
        held: List[Held] = []  # won ahead of their instant
        ended: List[RunRecord] = []  # missed, or skipped for overlap, at the claim
        answered = self._clock.now()
        stuck = recovering or self._answered_late(answered, now)
        table = self._table
        with table.lock:
            for index, ((claim, func, opts), stored) in enumerate(zip(group, results)):
                if failing and index in failing:
                    if ahead:
                        refused.append(claim)  # not held: claimed at its instant, which reports it
                    else:
                        self._failing_alone(claim, failing[index], now)
                    continue
                if stored is None:
                    refused.append(claim)
                    continue
                if self._failed_alone and claim.name in self._failed_alone:
                    del self._failed_alone[claim.name]
                    self._troubles.clear(f"claims:{claim.name}")
                passed = stuck and claim.new_next is not None and claim.new_next <= answered
                if passed and opts.catchup != "all":
                    stored = self._superseded(stored, answered, now, recovering)
                record = table.records.get(claim.name)
                if record is None:
                    continue
                record.next_fire = claim.new_next
                active = [r for r in stored if r.status in ACTIVE_STATUSES]
                if len(active) == 1:
                    record.last_fire = active[0].fire_time
                elif active:
                    record.last_fire = max(r.fire_time for r in active)
                if claim.new_next is not None and record.enabled:
                    table.push(claim.new_next, claim.name, claim.new_next)
                if self._refusals.tries:
                    self._refusals.settled(claim.name)
                if active and ahead:
                    made = (record.definition_hash, claim.new_next, record)
                    held.append(Held(claim.expected_next, claim.name, func, active, opts, *made))
                    self.unblock(claim.name)
                elif active:
                    won.append((claim.name, func, active, opts))
                    self.unblock(claim.name)
                elif any(r.reason == "overlap" for r in stored):
                    self._note_blocked(claim.name, opts)
                if len(active) != len(stored):
                    ended.extend(r for r in stored if r.status not in ACTIVE_STATUSES)
                    _log_ended(claim.name, stored, len(active))
        if held:
            self.claimed_ahead.add(held)
        lock = getattr(given_up, "lock", None)  # a GivenUp's: no hand-over straddles stop()
        with lock if lock is not None else contextlib.nullcontext():
            if won and given_up is not None and given_up.is_set():
                ended.extend(self._not_started(won, STOPPED_WHILE_CLAIMING))
                won = []
            with self._batch():
                for name, func, runs, opts in won:
                    self._submit(name, func, runs, opts)
        for run in ended:
            self._announce(run)
        return refused

    def held(self) -> List[str]:
        """The schedules whose fire waits on a row held in the store (for health; no I/O)."""
        return self._refused.held()

    def unblock(self, name: Optional[str] = None) -> None:
        """Forget that ``name`` (every schedule if None) was blocked by overlap: it moved to another
        node, was paused or removed, or this node's share changed."""
        for each in list(self._blocked) if name is None else (name,):
            if self._blocked.pop(each, 0) >= BLOCKED_AFTER:
                self._troubles.clear(f"blocked:{each}")
        for each in list(self._failed_alone) if name is None else (name,):  # nor its refused claim
            if self._failed_alone.pop(each, None) is not None:
                self._troubles.clear(f"claims:{each}")
        if self._unplannable:  # nor is its trigger's trouble this node's to report
            self._plannable(name)
        if self._refusals.tries:  # nor are its refused claims to be tried again here
            self._refusals.settled(name)

    def _note_blocked(self, name: str, opts: Options) -> None:
        """Fires of ``name`` keep being skipped for overlap: after a few, health says so."""
        count = self._blocked[name] = self._blocked.get(name, 0) + 1
        if count >= BLOCKED_AFTER:
            hint = " (runs last longer than the schedule's interval, or wait for a free run thread"
            hint += "; set timeout_seconds to end hung ones)" if opts.timeout_seconds is None else ")"
            message = (
                f"{name!r}: {count} fires in a row skipped because {opts.max_instances} earlier "
                f"run(s) are still going{hint}"
            )
            if self._troubles.report(f"blocked:{name}", message):
                logger.warning("%s", message)


def _without_run_at(claim: Claim, fire: datetime, same_row: bool) -> Claim:
    """``claim`` without a run at ``fire``, which already ran here, claimed ahead: under this
    schedule row (its run row exists: the claim only moves past the instant), or under a row since
    removed and declared again (the new row records the instant ``skipped``)."""
    runs = []
    for run in claim.runs:
        if run.fire_time == fire and run.status in ACTIVE_STATUSES:
            if same_row:
                continue
            run = run.with_status(SKIPPED, ALREADY_RAN)
        runs.append(run)
    return claim._replace(runs=runs)


def _log_ended(name: str, stored: Sequence[RunRecord], running: int) -> None:
    """Log what a won claim recorded without running: skips, and missed instants (logged once the
    claim is the store's, so a node whose claim was refused never reports instants it did not own)."""
    missed = [run for run in stored if run.status == MISSED]
    if missed:
        # A misfire is news; instants superseded within the grace (a loaded loop, a quick restart) are not.
        level = logging.WARNING if any("misfire" in (run.reason or "") for run in missed) else logging.INFO
        logger.log(
            level,
            "%r: %d missed row(s) from %s (%s), %d run(s) now",
            name,
            len(missed),
            missed[0].fire_time.isoformat(),
            missed[0].reason,
            running,
        )
    for run in stored:
        if run.status == SKIPPED:
            logger.warning("skipped %r fire %s: %s", name, run.fire_time.isoformat(), run.reason)
