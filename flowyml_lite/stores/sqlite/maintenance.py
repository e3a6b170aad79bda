"""The SQLite store's upkeep: the WAL checkpointed off the claim path (``maintain``), and old runs
pruned in bounded batches."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Callable, Optional

from ..schema import FINAL_CONDITION, PRUNE_BATCH_ROWS, check_prune, to_us
from .connection import _WAL_RESTART_FRAMES, _Connections

# Pruning walks the UNIQUE (schedule, fire_time) index of one schedule from its oldest fire. A
# disabled criterion gets _NO_CUT, below every instant, so one statement serves every combination.
_NO_CUT = -(2**63)
_NEWEST_FIRE = "SELECT MAX(fire_time) FROM runs WHERE schedule = ?"
_KEEP_FROM = "SELECT fire_time FROM runs WHERE schedule = ? ORDER BY fire_time DESC LIMIT 1 OFFSET ?"
_PRUNABLE = (
    f"FROM runs WHERE schedule = ? AND fire_time < ? AND {FINAL_CONDITION} "
    "AND (fire_time < ? OR completed_at IS NULL OR completed_at < ?) ORDER BY fire_time LIMIT ?"
)
_ANY_PRUNABLE = f"SELECT 1 {_PRUNABLE}"
_PRUNE = f"DELETE FROM runs WHERE rowid IN (SELECT rowid {_PRUNABLE})"


class _Maintenance(_Connections):
    def maintain(self, quiet: Optional[Callable[[], bool]] = None) -> None:
        """Checkpoint the WAL on a connection of its own; the scheduler calls this every second.

        SQLite's automatic checkpoint runs inside whichever commit crosses its threshold, fsync
        included, and that commit may be a claim on the scheduler's hot path: once maintained, the
        store turns it off and checkpoints here instead (PASSIVE: writers go on meanwhile). Under
        continuous writes a side checkpoint never lets the WAL restart (new frames keep arriving),
        so when it has grown past ``_WAL_RESTART_FRAMES`` the tail is copied with this process's
        writers held off for one fsync, and the next write restarts the WAL. That stall waits for a
        ``quiet()`` moment (no fire that needs a claim due soon: ``wants_quiet`` asks the loop to
        claim further ahead meanwhile) unless the WAL has grown a quarter past the mark (the longer
        the WAL, the longer the stall: measured, waiting for four times the mark made it 80 ms).
        """
        if self.read_only:
            return  # nothing to checkpoint: this store writes nothing
        if self._identity is None and self._file is not None:
            self.open()
        self._check_file()  # never a checkpoint connection to a file that took the old one's place
        with self._maintenance_lock:
            try:
                if self._checkpointer is None:
                    self._checkpointer = sqlite3.connect(
                        self._file or self.path,
                        timeout=self.busy_timeout,
                        isolation_level=None,
                        check_same_thread=False,
                    )
                    with self._lock:
                        conn = self._conn or self._connect()
                        conn.execute("PRAGMA wal_autocheckpoint=0")
                        self._checkpoints_here = True
                _, frames, _ = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                due = frames >= _WAL_RESTART_FRAMES
                now = due and (quiet is None or frames >= _WAL_RESTART_FRAMES * 5 // 4 or quiet())
                self.wants_quiet = due and not now  # the loop claims further ahead until the next look
                if now:
                    self.maintaining = True  # the loop claims nothing ahead until it is over
                    try:
                        with self._lock:
                            if self._conn is not None:
                                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    finally:
                        self.maintaining = False
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def prune_runs(
        self, older_than: Optional[datetime], keep_last: Optional[int], *, limit: Optional[int] = None
    ) -> int:
        """Delete old finished runs, keeping each schedule's newest (see Store.prune_runs).

        Per schedule: the bounds are read without the write lock, then each BEGIN IMMEDIATE
        transaction deletes at most PRUNE_BATCH_ROWS rows below the newest fire it sees.
        """
        check_prune(older_than, keep_last, limit)
        if older_than is None and keep_last is None:
            return 0
        cutoff = _NO_CUT if older_than is None else to_us(older_than, "older_than")
        deleted = 0
        for (name,) in self._read("SELECT name FROM schedules ORDER BY name"):
            if limit is not None and deleted >= limit:
                break
            beyond = _NO_CUT
            if keep_last is not None:
                found = self._read(_KEEP_FROM, (name, keep_last))  # the newest run not kept
                beyond = found[0][0] + 1 if found else _NO_CUT
            upper = max(cutoff, beyond)
            if upper == _NO_CUT or not self._read(_ANY_PRUNABLE, (name, upper, beyond, cutoff, 1)):
                continue
            while limit is None or deleted < limit:
                batch = PRUNE_BATCH_ROWS if limit is None else min(PRUNE_BATCH_ROWS, limit - deleted)
                count = self._prune_batch(name, upper, beyond, cutoff, batch)
                deleted += count
                if count < batch:
                    break
        return deleted

    def _prune_batch(self, name: str, upper: int, beyond: int, cutoff: int, batch: int) -> int:
        def body(conn: sqlite3.Connection) -> int:
            newest = conn.execute(_NEWEST_FIRE, (name,)).fetchone()[0]
            if newest is None:
                return 0
            return int(conn.execute(_PRUNE, (name, min(upper, newest), beyond, cutoff, batch)).rowcount)

        return self._write(body) or 0
