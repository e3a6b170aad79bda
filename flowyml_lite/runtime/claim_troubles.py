"""What the claims do when the store does not simply answer: a transaction that raised (it may
have committed), one the store refused at once (one outcome or one schedule's claim it will not
take), a claim answered after the scheduler stopped, and a store that took so long that later
instants superseded the claim's. A part of ``Claims`` (``claims.py``), kept apart to be read apart.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..clock import Clock
from ..core.schedule import Options
from ..stores.base import ACTIVE_STATUSES, MISSED, SKIPPED, Claim, Outcome, RunRecord, Store
from .health import Troubles
from .outcomes import OutcomeWriter
from .planning import Ahead
from .table import Fire, ScheduleTable

logger = logging.getLogger("flowyml_lite.scheduler.claims")

RETRY_MAX_SECONDS = 5.0
#: A claim the store answered this much later than asked is checked for instants due meanwhile.
LATE_ANSWER_SECONDS = 1.0
#: ...and this many times longer than it took lately: the store was stuck on it, not only slow.
STUCK_FACTOR = 4.0
#: The most claim calls spent finding the claims a store refuses on their own in a group.
CLAIMS_APART_CALLS = 64
#: Why a run whose claim's transaction raised is recorded (if that transaction committed after all).
STOPPED_WHILE_CLAIMING = "not run: the scheduler was stopped while this fire's claim waited for the store"
UNANSWERED = "not run: the store did not answer its claim, which may have been committed all the same"

Planned = Tuple[Claim, Callable[[], Any], Options]  # a claim, the function it runs, its options


class GivenUp(threading.Event):
    """Set when ``stop()`` gave up waiting for a loop stuck in a store call. ``lock`` is held
    around setting it and around each hand-over of won runs, so no hand-over straddles it: runs
    are either started before ``stop()`` returns, or recorded skipped."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def give_up(self) -> None:
        """Set it, once no hand-over is under way."""
        with self.lock:
            self.set()


class ClaimTroubles:
    """The failure paths of ``Claims``; the state they use is made by ``Claims.__init__``."""

    _clock: Clock
    _writer: OutcomeWriter
    _node: str
    _store: Store
    _table: ScheduleTable
    _troubles: Troubles
    _ahead: Dict[Fire, Ahead]
    _failed_alone: Dict[str, int]
    _typical: float

    def _not_started(self, won: List[Tuple[str, Any, List[RunRecord], Options]], why: str) -> List[RunRecord]:
        """End the runs of ``won`` ``skipped`` for ``why`` instead of starting them."""
        now = self._clock.now()
        logger.warning("%d run(s) claimed as the scheduler stopped: not started (%s)", len(won), why)
        ended = []
        for name, _, runs, _ in won:
            for run in runs:
                self._writer.put(Outcome(run.run_key, SKIPPED, now, reason=why, node_id=self._node), name)
                ended.append(run.with_status(SKIPPED, why))
        return ended

    def _settle_unanswered(self, group: Sequence[Planned], exc: Exception) -> None:
        """A claim transaction that raised may have committed all the same (a connection reset
        during COMMIT, its answer lost): every active row it would have inserted gets a final
        outcome, so one that was committed is never left ``running`` with nobody to run it (it would
        hold its schedule's ``max_instances`` slot for as long as this node lives). Outcomes are
        written before any later claim (``take``), so a row that was not committed is only refused
        (no row), and a claim made again with the same runs inserts them afresh."""
        for claim, _, _ in group:
            self._settle_runs(claim.name, claim.runs, exc)
            # Its runs' keys are settled: the fire is planned afresh (new keys) when claimed again,
            # never with this plan, whose rows could be written after these outcomes.
            self._ahead.pop((claim.name, claim.expected_next), None)

    def _settle_runs(self, name: str, runs: Sequence[RunRecord], exc: Exception) -> None:
        """Record ``missed`` each active run of ``runs`` (of ``name``) a claim that raised
        ``exc`` may have inserted."""
        now = self._clock.now()
        reason = f"{UNANSWERED} ({type(exc).__name__}: {exc})"
        for run in runs:
            if run.status in ACTIVE_STATUSES:
                self._writer.put(Outcome(run.run_key, MISSED, now, reason=reason, node_id=self._node), name)

    def _claim_apart(
        self,
        group: Sequence[Planned],
        outcomes: List[Outcome],
        error: Exception,
        failing: Dict[int, Exception],
    ) -> Tuple[List[Optional[List[RunRecord]]], List[Outcome]]:
        """The store refused ``group``'s transaction at once (an answer, not a timeout): find what
        it refuses rather than every claim of the group, and every schedule, failing with it.

        First without the outcomes (the store may refuse one of them: a text it cannot keep, a
        row it will not update): they go to the writer, which writes them on its own. Then the
        claims in halves, each refused half halved again, down to the claims refused on their own
        (a trigger or a constraint on one schedule's rows), put in ``failing``: the others go
        through. When both first halves are refused, one read tells an outage (``error`` is
        raised: two more calls and a read) from several claims refused on their own; the halving
        makes ``CLAIMS_APART_CALLS`` calls at most, then what is left fails claim by claim."""
        claims = [c for c, _, _ in group]
        if outcomes:
            try:
                results = self._store.claim_many(claims, [])
            except Exception:
                pass
            else:
                logger.error(
                    "a claim failed with %d run outcome(s) and went through without them: "
                    "the outcome writer records them on their own",
                    len(outcomes),
                )
                self._writer.suspect(outcomes)
                return results, []
        if len(claims) == 1:
            raise error
        found: List[Optional[List[RunRecord]]] = [None] * len(claims)
        parts = [(0, len(claims))]
        calls, through, probed = 0, False, False
        while parts:
            low, high = parts.pop()
            if calls >= CLAIMS_APART_CALLS:  # enough: each claim left fails (and backs off) alone
                failing.update((index, error) for index in range(low, high))
                continue
            middle = (low + high) // 2
            halves = [(low, middle), (middle, high)]
            refused = []
            for part in halves:
                calls += 1
                try:
                    found[part[0] : part[1]] = self._store.claim_many(claims[part[0] : part[1]], [])
                    through = True
                except Exception as exc:
                    refused.append((part, exc))
            if len(refused) == 2 and not through and not probed:
                probed = True
                try:  # an outage, or several claims refused on their own?
                    self._store.get_schedule(claims[0].name)
                except Exception:
                    raise error from None
            for (part_low, part_high), why in refused:
                if part_high - part_low == 1:
                    failing[part_low] = why
                else:
                    parts.append((part_low, part_high))
        return found, []  # the store answers (the read did): each claim in ``failing`` is refused alone

    def _failing_alone(self, claim: Claim, error: Exception, now: datetime) -> None:
        """``claim`` failed on its own while the others of its group went through: its fire waits,
        looked at again with backoff (0.2 s up to 5 s), and health names its schedule until it
        goes through. Table lock held."""
        name = claim.name
        count = self._failed_alone[name] = self._failed_alone.get(name, 0) + 1
        delay = min(0.1 * 2 ** min(count, 10), RETRY_MAX_SECONDS)
        message = (
            f"claiming {name!r} fails while other claims go through ({type(error).__name__}: "
            f"{str(error)[:300]}): its fire {claim.expected_next.isoformat()} waits"
        )
        if self._troubles.report(f"claims:{name}", message):
            logger.error("%s (retrying every %.1f s at most)", message, RETRY_MAX_SECONDS)
        self._table.push(now + timedelta(seconds=delay), name, claim.expected_next)

    @property
    def answer_seconds(self) -> float:
        """How long the store took to answer claims lately (a decaying maximum, seconds)."""
        return self._typical

    def _answered_late(self, answered: datetime, asked: datetime) -> bool:
        """Whether the store was stuck on this claim (a cut link, a lock held for seconds): it took
        over a second, and far longer than it has lately; then later instants may have superseded
        the claim's. A store that is merely slow runs its fires late, and health says so until its
        answers are prompt again."""
        waited = (answered - asked).total_seconds()
        typical, self._typical = self._typical, max(waited, self._typical * 0.9)
        if waited <= LATE_ANSWER_SECONDS:
            # any() first: no lock taken on the fire path while all is well
            slow = self._troubles.any() and self._troubles.active("claims:slow")
            if slow and self._typical < LATE_ANSWER_SECONDS:
                self._troubles.clear("claims:slow")
            return False
        stuck = waited > STUCK_FACTOR * typical
        message = f"the store took {waited:.1f} s to answer a claim: fires start late"
        if self._troubles.report("claims:slow", message) and not stuck:
            logger.warning("%s", message)
        return stuck

    def _superseded(
        self, stored: List[RunRecord], answered: datetime, asked: datetime, recovering: bool
    ) -> List[RunRecord]:
        """The claim's runs, their instants superseded: the store answered after the schedule's next
        instant was due (a cut link, a lock held for seconds, or the claim was the first after the
        store came back). Running them now would make the fire due now refused for overlap with a
        stale one; recorded ``missed``, the next pass runs that."""
        waited = (
            "its claim waited for the store to come back"
            if recovering
            else f"the store took {(answered - asked).total_seconds():.1f} s to answer the claim"
        )
        reason = f"superseded by a later instant due at the same time ({waited})"
        ended = []
        for run in stored:
            if run.status in ACTIVE_STATUSES:
                outcome = Outcome(run.run_key, MISSED, answered, reason=reason, node_id=self._node)
                self._writer.put(outcome, run.schedule)
                run = run.with_status(MISSED, reason)
            ended.append(run)
        logger.info("%r: fire %s %s", stored[0].schedule, stored[-1].fire_time.isoformat(), reason)
        return ended


def contended(exc: BaseException) -> bool:
    """Whether ``exc`` says another writer was in the way (a lock, a busy file, a serialization
    failure): the store answered, but did not refuse anything in particular."""
    text = str(exc).lower()
    return any(word in text for word in ("locked", "busy", "lock timeout", "deadlock", "serializ"))
