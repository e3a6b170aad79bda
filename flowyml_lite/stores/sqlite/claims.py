"""The SQLite store's claims: compare-and-set a schedule's next fire and insert its runs, one claim
or a group in one transaction (judged together on the state read in it, redone one by one in
savepoints only when a run collides with a stored one)."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from ..base import ACTIVE_STATUSES, SKIPPED, Claim, Outcome, RunRecord
from ..schema import ACTIVE_CONDITION, to_us
from .connection import _Abort
from .rows import _FIRE, _REASON, _RUN_COLUMNS, _STATUS, Row, T, _as_stored, _run_row
from .runs import _outcome_params, _Runs

_COUNT_ACTIVE = f"SELECT COUNT(*) FROM runs WHERE schedule = ? AND {ACTIVE_CONDITION}"
_ADVANCE = "UPDATE schedules SET next_fire = ? WHERE name = ? AND enabled = 1 AND next_fire = ?"
_ADVANCE_LAST = (
    "UPDATE schedules SET next_fire = ?, "
    "last_fire = CASE WHEN last_fire IS NULL OR last_fire < ? THEN ? ELSE last_fire END "
    "WHERE name = ? AND enabled = 1 AND next_fire = ?"
)
# A group claim reads the state of its schedules first, so it sets last_fire itself.
_ADVANCE_TO = (
    "UPDATE schedules SET next_fire = ?, last_fire = ? WHERE name = ? AND enabled = 1 AND next_fire = ?"
)
_INSERT_RUN = f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({', '.join('?' * 15)})"
# Statements with a list of names are built for at most this many (SQLite before 3.32 allows 999
# parameters in a statement).
_IN_CHUNK = 500


def _states_of(count: int) -> str:
    marks = ", ".join("?" * count)
    return f"SELECT name, enabled, next_fire, last_fire FROM schedules WHERE name IN ({marks})"


def _active_counts_of(count: int) -> str:
    return (
        "SELECT schedule, COUNT(*) FROM runs INDEXED BY runs_schedule_status "
        f"WHERE schedule IN ({', '.join('?' * count)}) AND {ACTIVE_CONDITION} GROUP BY schedule"
    )


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


class _PreparedClaim:
    """A claim's values as the runs and schedules tables hold them."""

    __slots__ = ("ahead", "any_active", "expected", "max_instances", "name", "new", "rows", "runs")

    def __init__(self, claim: Claim) -> None:
        name = self.name = claim.name
        self.expected = to_us(claim.expected_next, "expected_next")
        self.new = None if claim.new_next is None else to_us(claim.new_next, "new_next")
        self.runs = claim.runs
        self.rows = rows = [_run_row(name, run) for run in claim.runs]
        self.max_instances = claim.max_instances
        self.ahead = claim.ahead
        self.any_active = False
        for row in rows:
            if row[_STATUS] in ACTIVE_STATUSES:
                self.any_active = True
                break

    def stored(self, rows: Optional[List[Row]]) -> Optional[List[RunRecord]]:
        """The records of this claim as stored (None for a refused claim)."""
        return None if rows is None else [_as_stored(r, row) for r, row in zip(self.runs, rows)]


def _overlapping(rows: List[Row]) -> List[Row]:
    """Copies of ``rows`` with every active run turned ``skipped`` for overlap."""
    out = []
    for row in rows:
        if row[_STATUS] in ACTIVE_STATUSES:
            row = list(row)
            row[_STATUS], row[_REASON] = SKIPPED, "overlap"
        out.append(row)
    return out


class _Claims(_Runs):
    def claim(
        self,
        name: str,
        expected_next: datetime,
        new_next: Optional[datetime],
        runs: Sequence[RunRecord],
        max_instances: int,
    ) -> Optional[List[RunRecord]]:
        """Compare-and-set ``next_fire`` and insert ``runs`` in one transaction (see Store.claim)."""
        claim = _PreparedClaim(Claim(name, expected_next, new_next, runs, max_instances))
        return claim.stored(self._write(lambda conn: self._claim_one(conn, claim)))

    def claim_many(
        self, claims: Sequence[Claim], outcomes: Sequence[Outcome] = ()
    ) -> List[Optional[List[RunRecord]]]:
        """Write ``outcomes``, then every claim, in one BEGIN IMMEDIATE transaction (see Store).

        Every argument is checked before anything is written. The claims are judged in Python on
        the schedules' state read inside the transaction (one SELECT per 500 schedules), then
        written with one executemany for the schedules and one for the runs; only if a run collides
        with a stored one (a rewound ``next_fire``) are they redone one by one, each in a savepoint,
        so a refused claim refuses only itself.
        """
        finished = [_outcome_params(o) for o in outcomes]
        prepared = [_PreparedClaim(c) for c in claims]
        if not finished and not prepared:
            return []
        if not finished and len(prepared) == 1:
            # A lone claim needs no savepoint: refused, its whole transaction is rolled back. Two
            # statements fewer, each a moment the loop gives the interpreter up on a busy process.
            claim = prepared[0]
            rows = self._write(lambda conn: self._claim_one(conn, claim))
            return [claim.stored(rows)]

        def body(conn: sqlite3.Connection) -> List[Optional[List[Row]]]:
            if finished:
                self._finish(conn, finished)
            if len(prepared) == 1:
                return self._claim_each(conn, prepared)
            conn.execute("SAVEPOINT claims")
            try:
                stored = self._claim_group(conn, prepared)
            except sqlite3.IntegrityError:
                stored = None
            if stored is None:
                conn.execute("ROLLBACK TO claims")
                conn.execute("RELEASE claims")
                return self._claim_each(conn, prepared)
            conn.execute("RELEASE claims")
            return stored

        stored = self._write(body)
        assert stored is not None
        return [claim.stored(rows) for claim, rows in zip(prepared, stored)]

    def _claim_one(self, conn: sqlite3.Connection, claim: _PreparedClaim) -> List[Row]:
        """One claim on the database as it is (raises _Abort to refuse it): ``Store.claim``."""
        name, rows = claim.name, claim.rows
        if claim.any_active and conn.execute(_COUNT_ACTIVE, (name,)).fetchone()[0] >= claim.max_instances:
            if claim.ahead:
                raise _Abort  # made again at its instant (Claim.ahead)
            rows = _overlapping(rows)
        last = max((row[_FIRE] for row in rows if row[_STATUS] in ACTIVE_STATUSES), default=None)
        if last is None:
            cursor = conn.execute(_ADVANCE, (claim.new, name, claim.expected))
        else:
            cursor = conn.execute(_ADVANCE_LAST, (claim.new, last, last, name, claim.expected))
        if cursor.rowcount != 1:
            raise _Abort
        try:
            if len(rows) == 1:
                conn.execute(_INSERT_RUN, rows[0])
            else:
                conn.executemany(_INSERT_RUN, rows)
        except sqlite3.IntegrityError:
            raise _Abort from None
        return rows

    def _claim_each(
        self, conn: sqlite3.Connection, claims: Sequence[_PreparedClaim]
    ) -> List[Optional[List[Row]]]:
        """The claims one by one, each in a savepoint of its own (a refusal undoes only itself)."""
        results: List[Optional[List[Row]]] = []
        for claim in claims:
            conn.execute("SAVEPOINT claim")
            try:
                results.append(self._claim_one(conn, claim))
            except _Abort:
                conn.execute("ROLLBACK TO claim")
                results.append(None)
            conn.execute("RELEASE claim")
        return results

    def _claim_group(
        self, conn: sqlite3.Connection, claims: Sequence[_PreparedClaim]
    ) -> Optional[List[Optional[List[Row]]]]:
        """The claims judged together on the state read now; None if the writes disagree with it.

        Raises IntegrityError when a run collides with a stored one (the caller redoes the claims
        one by one). Claims of one schedule are judged in order, each on the state the earlier
        ones leave, exactly as separate ``claim`` calls would be.
        """
        names = list(dict.fromkeys(c.name for c in claims))
        state: Dict[str, List[Any]] = {}  # name -> [enabled, next_fire, last_fire]
        for chunk in _chunks(names):
            for name, enabled, next_fire, last_fire in conn.execute(_states_of(len(chunk)), chunk):
                state[name] = [enabled, next_fire, last_fire]
        counting = list(dict.fromkeys(c.name for c in claims if c.any_active and c.name in state))
        active: Dict[str, int] = dict.fromkeys(counting, 0)
        for chunk in _chunks(counting):
            active.update(conn.execute(_active_counts_of(len(chunk)), chunk).fetchall())
        results: List[Optional[List[Row]]] = []
        advances: List[Tuple[Any, ...]] = []
        inserts: List[Row] = []
        fires: Set[Tuple[str, int]] = set()
        keys: Set[str] = set()
        for claim in claims:
            name, rows = claim.name, claim.rows
            current = state.get(name)
            if current is None or not current[0] or current[1] != claim.expected:
                results.append(None)
                continue
            full = claim.any_active and active[name] >= claim.max_instances
            if full and claim.ahead:  # made again at its instant (Claim.ahead)
                results.append(None)
                continue
            if len(rows) == 1:  # the common case, without building sets
                fire, key = (name, rows[0][_FIRE]), rows[0][0]
                if fire in fires or key in keys:
                    results.append(None)
                    continue
                fires.add(fire)
                keys.add(key)
            elif rows:
                claim_fires = {(name, row[_FIRE]) for row in rows}
                claim_keys = {row[0] for row in rows}
                if (
                    len(claim_fires) != len(rows)
                    or len(claim_keys) != len(rows)
                    or not fires.isdisjoint(claim_fires)
                    or not keys.isdisjoint(claim_keys)
                ):
                    results.append(None)
                    continue
                fires |= claim_fires
                keys |= claim_keys
            if full:
                rows = _overlapping(rows)
            last = current[2]
            if claim.any_active:
                for row in rows:
                    if row[_STATUS] in ACTIVE_STATUSES:
                        active[name] += 1
                        if last is None or row[_FIRE] > last:
                            last = row[_FIRE]
            advances.append((claim.new, last, name, claim.expected))
            current[1], current[2] = claim.new, last
            inserts.extend(rows)
            results.append(rows)
        if advances and conn.executemany(_ADVANCE_TO, advances).rowcount != len(advances):
            return None
        if inserts:
            conn.executemany(_INSERT_RUN, inserts)
        return results
