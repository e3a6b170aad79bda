"""Housekeeping: who is alive (heartbeats, lost nodes, ownership), other processes' changes, pruning.

One thread ticks every second at most: store upkeep each tick, and each heartbeat period this
node's heartbeat, the judgment of other nodes (on the store's clock), the membership that splits
schedules between live nodes, and the adoption of changes made by other processes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime, timedelta
from typing import Callable, Dict, List, Optional, Set, Tuple

from ..clock import Clock
from ..locks.base import Lock
from ..stores.base import NodeRecord, RunRecord, Store
from . import gc_pause
from .clock_watch import ClockWatch
from .gate import GATE
from .health import Troubles
from .membership import Membership

logger = logging.getLogger("flowyml_lite.scheduler.housekeeping")

MAINTENANCE_SECONDS = 1.0
#: The full garbage collection put off by declarations in bulk is made when no fire is due this
#: soon: longer than the loop's stage window (the next instant's fires are claimed in it) plus
#: the collection itself (a heap of 100,000 schedules takes a few hundred milliseconds).
OWED_GC_QUIET_SECONDS = 1.0
PRUNE_EVERY_SECONDS = 600.0  # history retention: one pruning pass every 10 minutes
PRUNE_ROWS_PER_TICK = 5000  # a backlog is pruned over several ticks, so heartbeats never wait long


#: Lost runs of a node logged one by one; the rest in one line.
LOST_RUNS_LOGGED = 10
#: How far this host's clock may be from the store's before health says so.
SKEW_SECONDS = 2.0


def silent_after(heartbeat_seconds: float) -> float:
    """Seconds without a heartbeat after which a live node counts as silent: two missed, and a second."""
    return 2 * heartbeat_seconds + 1


class Housekeeping:
    """Heartbeats, lost-node judgments, membership, sync and pruning, on one thread."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        troubles: Troubles,
        membership: Membership,
        node_id: str,
        heartbeat_seconds: float,
        node_timeout_seconds: float,
        sync: Callable[[bool], None],
        history_retention_days: Optional[float],
        history_max_runs: Optional[int],
        lock: Optional[Lock] = None,
        announce: Callable[[RunRecord], None] = lambda run: None,
        serving: Callable[[], Optional[str]] = lambda: None,
        quiet: Optional[Callable[[], bool]] = None,
        quiet_for: Optional[Callable[[float], bool]] = None,
        adopt_changes: Callable[[], None] = lambda: None,
        clock_watch: Optional[ClockWatch] = None,
        take_over: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        #: A peer (a node serving the same schedules) is lost or gone: record in the store that
        #: this node serves them now, so the fleet view does not call them orphaned.
        self._take_over = take_over
        self._digests: Dict[str, Optional[str]] = {}  # node id -> what it served, at the last judgment
        self._adopt_changes = adopt_changes
        self._clock_watch = clock_watch
        self._judging_held_since = 0.0  # monotonic: since when a clock jump holds the judgment off
        self._quiet = quiet  # no fire due soon: upkeep that stalls writers may run now
        self._quiet_for = quiet_for  # no fire due within the seconds given
        self._clock = clock
        self._troubles = troubles
        self._membership = membership
        self._node = node_id
        self._beat_every = heartbeat_seconds
        self._timeout = node_timeout_seconds
        self._silent: Set[str] = set()  # live peers missing heartbeats, reported to health
        self._sync = sync
        self._retention_days = history_retention_days
        self._max_runs = history_max_runs
        self._lock = lock
        self._announce = announce
        self._serving = serving
        self.host = host_identity()
        self.started_at = clock.now()
        self.last_heartbeat: Optional[datetime] = None
        self._last_ok = 0.0  # time.monotonic() of the last heartbeat the store took
        self._next_prune: Optional[float] = None
        self._pruned = 0
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._seen: Set[str] = set()  # the node ids listed at the last judgment

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def heartbeat_problem(self) -> Optional[str]:
        """What health says while this node's heartbeats are overdue (the housekeeping thread is
        busy or stuck, e.g. pruning on a slow store), or None: the other nodes see it silent, and
        judge it lost after ``node_timeout_seconds``."""
        if not self.alive or not self._last_ok:
            return None
        quiet = time.monotonic() - self._last_ok
        if quiet <= silent_after(self._beat_every):
            return None
        return (
            f"this node has sent no heartbeat for {quiet:.0f} s (heartbeat_seconds={self._beat_every:g}): "
            f"the other nodes see it silent, and judge it lost after node_timeout_seconds={self._timeout:g}"
        )

    def start(self, prune: bool = True) -> None:
        """Start the thread (heartbeats only, without pruning or sync, for a never-started scheduler)."""
        if self.alive:
            return
        self._stopping.clear()
        self._next_prune = None if prune else float("inf")
        self._thread = threading.Thread(
            target=self._run, args=(prune,), name="flowyml_lite-heartbeat", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self._thread = None

    def _run(self, full: bool) -> None:
        tick = min(self._beat_every, MAINTENANCE_SECONDS)
        next_beat = time.monotonic() + self._beat_every
        while not self._stopping.wait(tick):
            GATE.pass_through()  # a fire due now goes first: its claim would wait for these writes
            try:
                self._store.maintain(self._quiet)  # e.g. SQLite's WAL checkpoint, out of the claims' commits
                if gc_pause.owed() and self._quiet_for is not None and self._quiet_for(OWED_GC_QUIET_SECONDS):
                    gc_pause.collect_owed()  # the full collection declarations put off, while none is due
                heartbeat = time.monotonic() >= next_beat
                if full and self._clock_watch is not None:
                    self._clock_watch.tick(heartbeat)  # first: a step it sees holds the judgment off
                if heartbeat:
                    next_beat = time.monotonic() + self._beat_every
                    self.beat(judge=full)
                    if full:
                        self._sync(False)
                    self._store_ok()
                elif full:
                    self._adopt_changes()  # a resume on another node is taken up within a second
            except Exception as exc:
                self._store_trouble(exc)
            if full:
                self.prune()

    def _store_ok(self) -> None:
        lasted = self._troubles.clear("store")
        if lasted is not None:
            logger.warning("the store answers again after %.1f s", lasted)

    def _store_trouble(self, exc: BaseException) -> None:
        message = f"housekeeping: {type(exc).__name__}: {exc}"
        if self._troubles.report("store", message):
            logger.error("store error during %s", message)

    # -- heartbeats and the judgment of other nodes ------------------------------------
    def beat(self, judge: bool = True) -> None:
        """Send this node's heartbeat; then, unless this node was itself cut off, judge the others."""
        now = self._clock.now()
        gap = time.monotonic() - self._last_ok if self._last_ok else 0.0
        self._store.heartbeat(
            NodeRecord(self._node, self.host, os.getpid(), self.started_at, now, self._serving())
        )
        self.last_heartbeat = now
        self._last_ok = time.monotonic()
        if not judge:
            return
        if gap > self._timeout / 2:
            # This node could not reach the store for a while: the others' heartbeats look as old
            # to it as its own looks to them. Give them one heartbeat period to show up first.
            logger.warning("heartbeat sent after %.0f s without the store: judging the others next time", gap)
            return
        watch = self._clock_watch
        if watch is not None and watch.jumped_within(self._beat_every + 1):
            # Heartbeats stamped before the jump look older than they are: the others get one
            # heartbeat period to stamp one on the new clock; never more than a node timeout.
            held = self._judging_held_since = self._judging_held_since or time.monotonic()
            if time.monotonic() - held < self._timeout:
                logger.warning("the wall clock jumped forward: judging the others after their next beats")
                return
        self._judging_held_since = 0.0
        self.judge(now, self._clock.now())

    def judge(self, now: datetime, after: Optional[datetime] = None) -> None:
        """Declare expired or dead nodes lost, and set the membership from the live ones (``now``:
        this host's clock as the heartbeat was sent; ``after``: once the store had taken it)."""
        active = self._store.active_run_nodes() if self._store.shared else []
        nodes = self._store.list_nodes()
        # Silence is measured on the store's clock: this node's own heartbeat, just written, is
        # stamped by the same clock as its peers' (a database server's on PostgreSQL).
        stamped = next((n.heartbeat for n in nodes if n.node_id == self._node), now)
        self._watch_skew(stamped, now, after or now)
        expired = {n.node_id for n in self._store.expired_nodes(self._timeout, now)}
        live: List[Tuple[str, Optional[str]]] = []
        left: Set[str] = set()  # judged lost here, or gone since the last judgment
        for node in nodes:
            if node.node_id == self._node:
                continue
            reason = None
            if node.node_id in expired:
                reason = f"node {node.node_id} stopped sending heartbeats at {node.heartbeat.isoformat()}"
            elif node.hostname == self.host and not pid_alive(node.pid, node.started_at):
                reason = f"node {node.node_id} (pid {node.pid} on this host) is no longer running"
            if reason:
                self.lose(node.node_id, reason)
                left.add(node.node_id)
            else:
                live.append((node.node_id, node.serves))
                self._watch_silence(node, stamped)
        known = {n.node_id for n in nodes} | {self._node}
        for gone in sorted(set(active) - known):  # runs whose node row is gone
            self.lose(gone, f"node {gone} is gone (no heartbeat row) with runs still active")
        # A node another process judged lost (one without the lock backend, e.g. an admin server)
        # leaves the list without this one seeing it expire: its leases are released here too.
        for gone in sorted(self._seen - known - set(active)):
            self._release_leases(gone)
        left |= self._seen - known
        digests = {n.node_id: n.serves for n in nodes}
        mine = self._serving()
        if mine is not None and any(self._digests.get(n, digests.get(n)) == mine for n in left):
            self._take_over()
        self._digests = digests
        for gone in sorted(self._silent - {node_id for node_id, _ in live}):  # lost, or left
            self._silent.discard(gone)
            self._troubles.clear(f"silent:{gone}")
        self._seen = known
        if self._membership.update(live) and self._store.shared:
            peers = ", ".join(self._membership.peers)
            logger.info("this node now splits its schedules with the live nodes %s", peers)
            self._sync(True)

    def _watch_skew(self, stamped: datetime, sent: datetime, taken: datetime) -> None:
        """This host's clock against the store's (the database server's on PostgreSQL), which
        stamped the heartbeat sent at ``sent`` and taken by ``taken`` on this host's clock."""
        if stamped > taken:
            skew = (stamped - taken).total_seconds()
        elif stamped < sent:
            skew = (stamped - sent).total_seconds()
        else:
            skew = 0.0  # within the round trip: the clocks agree as far as one can tell
        if abs(skew) <= SKEW_SECONDS:
            lasted = self._troubles.clear("clock-skew")
            if lasted is not None:
                logger.warning("this host's clock agrees with the store's again (after %.0f s)", lasted)
            return
        way = "behind" if skew > 0 else "ahead of"
        message = (
            f"this host's clock is {abs(skew):.1f} s {way} the store's: its fires start "
            f"{'late' if skew > 0 else 'early'} by that much, and changes other nodes make may not be "
            f"seen beyond the store's clock_skew_seconds={self._store.clock_skew_seconds:g}; "
            "synchronize the clocks (NTP)"
        )
        if self._troubles.report("clock-skew", message):
            logger.warning("%s", message)

    def _watch_silence(self, node: NodeRecord, now: datetime) -> None:
        """A live peer that serves schedules and has missed two heartbeats (frozen, cut off): its
        share of the schedules fires nowhere until it answers or is judged lost; health says so."""
        quiet = (now - node.heartbeat).total_seconds()
        key = f"silent:{node.node_id}"
        if node.serves is not None and quiet > silent_after(self._beat_every):
            self._silent.add(node.node_id)
            message = (
                f"node {node.node_id} has sent no heartbeat for {quiet:.0f} s: the schedules it runs do not "
                f"fire until it answers or is judged lost (after node_timeout_seconds={self._timeout:g})"
            )
            if self._troubles.report(key, message):
                logger.warning("%s", message)
        elif node.node_id in self._silent:
            self._silent.discard(node.node_id)
            lasted = self._troubles.clear(key)
            if lasted is not None:
                logger.warning("node %s sends heartbeats again (silent %.0f s)", node.node_id, lasted)

    def lose(self, node_id: str, reason: str) -> None:
        """Judge ``node_id`` lost: its runs in flight become ``lost``, its locks are released, and the
        live nodes share what it ran from the next membership update."""
        logger.warning("node %s is judged lost: %s", node_id, reason)
        runs = self._store.mark_node_lost(node_id, reason)
        for run in runs[:LOST_RUNS_LOGGED]:
            logger.warning("run of %r fired %s is lost: %s", run.schedule, run.fire_time.isoformat(), reason)
        if len(runs) > LOST_RUNS_LOGGED:
            more = len(runs) - LOST_RUNS_LOGGED
            logger.warning("and %d more runs of node %s are lost (see the history)", more, node_id)
        for run in runs:
            self._announce(run)
        self._release_leases(node_id)

    def _release_leases(self, node_id: str) -> None:
        """Release the locks ``node_id`` held (it is lost or gone), if this node has a lock backend."""
        release_owner = getattr(self._lock, "release_owner", None)  # absent in older lock plugins
        if release_owner is not None:
            try:
                released = release_owner(node_id)
                if released:
                    logger.warning("released %d lock(s) held by lost node %s", released, node_id)
            except Exception as exc:
                logger.warning("could not release the locks of lost node %s: %s", node_id, exc)

    # -- history retention ---------------------------------------------------------------
    def prune(self) -> None:
        """Delete runs past the history limits: a pass every 10 minutes, bounded work a tick."""
        days, most = self._retention_days, self._max_runs
        mono = self._clock.monotonic()
        if (days is None and most is None) or (self._next_prune is not None and mono < self._next_prune):
            return
        older_than: Optional[datetime] = None
        if days is not None:
            try:
                older_than = self._clock.now() - timedelta(days=days)
            except OverflowError:  # a retention reaching before year 1: no age limit
                older_than = None
        try:
            count = self._store.prune_runs(older_than, most, limit=PRUNE_ROWS_PER_TICK)
        except Exception as exc:  # never fatal to housekeeping: the next pass retries
            self._troubles.last_error = f"pruning history: {type(exc).__name__}: {exc}"
            logger.warning(
                "store error while pruning history (retried in %.0f s): %s", PRUNE_EVERY_SECONDS, exc
            )
            self._next_prune = mono + PRUNE_EVERY_SECONDS
            return
        self._pruned += count
        if count >= PRUNE_ROWS_PER_TICK or getattr(self._store, "pruning_left", False):
            self._next_prune = mono  # a backlog: go on at the next tick, after its heartbeat
            return
        self._next_prune = mono + PRUNE_EVERY_SECONDS
        if self._pruned:
            logger.info(
                "pruned %d run(s) from history (history_retention_days=%s, history_max_runs=%s)",
                self._pruned,
                days,
                most,
            )
        self._pruned = 0


def host_identity() -> str:
    """This host as seen by pids: hostname plus, on Linux, boot id and pid namespace.

    Two processes may judge each other's liveness by pid only when their identities are equal;
    containers sharing a hostname but not a pid namespace differ here.
    """
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            parts.append(f.read().strip()[:8])
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return "/".join(parts)


def pid_alive(pid: int, since: Optional[datetime] = None) -> bool:
    """True if ``pid`` runs and is the process that started around ``since`` (a zombie is dead).

    On Linux the process's start time from /proc tells a reused pid from the original: a process
    that started more than a few seconds after ``since`` is another one.
    """
    if pid == os.getpid() or os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True
    if fields[0] in ("Z", "X"):  # a zombie: dead, not yet reaped by its parent
        return False
    started = _process_start(int(fields[19]))
    if since is None or started is None or not _boot_time() <= since.timestamp() <= time.time():
        return True  # no start time to compare (or a node started before this boot: a fake clock)
    return started - since.timestamp() <= 5.0  # later: the pid was reused by another process
    return True


def _boot_time() -> float:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            return next(float(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return float("inf")


def _process_start(ticks: int) -> Optional[float]:
    boot = _boot_time()
    if boot == float("inf"):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")
