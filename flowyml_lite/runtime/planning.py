"""Planning a due fire: which run rows to claim and the schedule's next instant, by the misfire
policy (DESIGN §4), at the instant or ahead of it, and the run keys those rows get."""

from __future__ import annotations

import itertools
import os
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from ..core.schedule import Options
from ..core.triggers import Trigger
from ..stores.base import MISSED, QUEUED, RUNNING, Claim, RunRecord, ScheduleRecord

US = timedelta(microseconds=1)
MISSED_DETAIL_LIMIT = 20  # more missed instants than this are recorded as one summary row


class Ahead(NamedTuple):
    """A fire planned before its instant, and what its plan was made from (checked at the instant)."""

    record: ScheduleRecord
    options: Dict[str, Any]
    trigger: Trigger
    claim: Claim
    opts: Options


def run_key(fire: datetime) -> str:
    """A unique run key that sorts by fire instant, so the store's index grows at its end.

    The fire in microseconds, then 64 random bits drawn once per process and a counter: unique
    across processes without a uuid4 (a system call) per fire.
    """
    global _KEY_LAST
    last = _KEY_LAST  # (instant, its text), one tuple: threads share it safely
    if last[0] != fire:  # a burst's fires share their instant: its text is worked out once
        _KEY_LAST = last = (fire, f"{(fire - _EPOCH) // US:014x}")
    return f"{last[1]}{_KEY_PREFIX}{next(_KEY_COUNTER):06x}"


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_KEY_PREFIX = uuid.uuid4().hex[:16]
_KEY_COUNTER = itertools.count()
_KEY_LAST = (_EPOCH, f"{0:014x}")


def _renew_key_prefix() -> None:
    global _KEY_PREFIX
    _KEY_PREFIX = uuid.uuid4().hex[:16]  # a forked child must not repeat its parent's keys


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_key_prefix)


def still(ahead: Ahead, record: ScheduleRecord, trigger: Trigger, now: datetime) -> bool:
    """A plan made before the instant holds at ``now``: nothing it was made from changed, the fire
    is within its grace and the instant after it is not due as well (else it is planned again)."""
    claim = ahead.claim
    return (
        ahead.record is record
        and ahead.trigger is trigger
        and ahead.options is record.options
        and record.enabled
        and (now - claim.expected_next).total_seconds() <= ahead.opts.misfire_grace_seconds
        and (claim.new_next is None or claim.new_next > now)
    )


def plan(
    name: str, trigger: Trigger, fire: datetime, now: datetime, opts: Options, node: str
) -> Tuple[List[RunRecord], Optional[datetime]]:
    """The run rows to claim for a due fire, and the next fire, by the misfire policy (DESIGN §4).

    One instant due: it runs if it is within the grace, else the policy decides. Several instants
    of the schedule due at once (the process was down or stalled, even for less than the grace):
    the most recent runs if it is within the grace, whatever the policy (it is on time), and the
    policy decides for the older ones, so a pile-up never becomes a run per instant at once, each
    refused for overlap with the one before.
    """
    grace = opts.misfire_grace_seconds
    if (now - fire).total_seconds() <= grace:
        new_next = trigger.next_after(fire)
        if new_next is None or new_next > now:  # the common case: one instant, on time
            return [RunRecord(run_key(fire), name, fire, RUNNING, node, started_at=now)], new_next
    keep = max(opts.max_catchup, MISSED_DETAIL_LIMIT) + 1
    instants, count = trigger.fires_until(fire - US, now, keep)
    new_next = trigger.next_after(now)
    policy = f"catchup={opts.catchup}"
    on_time = bool(instants) and (now - instants[-1]).total_seconds() <= grace
    if opts.catchup == "all":
        to_run = instants[-opts.max_catchup :]
    elif opts.catchup == "latest" or on_time:
        to_run = instants[-1:]
    else:
        to_run = []
    missed_count = count - len(to_run)
    runs: List[RunRecord] = []
    if missed_count:
        missed_known = instants[: len(instants) - len(to_run)]
        if missed_count <= MISSED_DETAIL_LIMIT and len(missed_known) == missed_count:
            for t in missed_known:
                why = f"{_missed_why(t, now, grace)} ({policy})"
                runs.append(RunRecord(run_key(t), name, t, MISSED, node, reason=why))
        else:
            last = missed_known[-1] if missed_known else fire
            runs.append(
                RunRecord(
                    run_key(fire),
                    name,
                    fire,
                    MISSED,
                    node,
                    reason=f"{missed_count} missed instants from {fire.isoformat()} to "
                    f"{last.isoformat()} ({_missed_why(fire, now, grace)}, {policy})",
                )
            )
    for i, t in enumerate(to_run):  # the first runs now; "catch-up" unless it is on time
        reason = "catch-up" if i or (now - t).total_seconds() > grace else None
        status, started = (QUEUED, None) if i else (RUNNING, now)
        runs.append(RunRecord(run_key(t), name, t, status, node, started, reason=reason))
    return runs, new_next


def _missed_why(instant: datetime, now: datetime, grace: float) -> str:
    """Why ``instant`` is not run: too late (a misfire), or a later instant was due with it."""
    if (now - instant).total_seconds() > grace:
        return "misfire"
    return "superseded by a later instant due at the same time"
