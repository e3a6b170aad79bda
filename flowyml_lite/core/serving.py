"""This node among the nodes that share a store: whether it serves its schedules, and telling its
peers when that set changes (``runtime/membership.py`` splits the fires between peers)."""

from __future__ import annotations

import logging
import threading
from typing import Callable, List, Optional, Sequence

from ..runtime.claims import Claims
from ..runtime.membership import Membership
from ..runtime.sync import Sync
from ..runtime.table import ScheduleTable
from ..stores.base import Store

logger = logging.getLogger("flowyml_lite.scheduler")


class Serving:
    """Whether this node serves its schedules (between ``start()`` and ``stop()``), told to its peers.

    A process that only runs things by hand serves nothing, so it is handed nobody's fires.
    """

    def __init__(
        self,
        store: Store,
        table: ScheduleTable,
        membership: Membership,
        claims: Claims,
        sync: Sync,
        node_id: str,
        on_share_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._on_share_change = on_share_change  # e.g. the runner: fires taken over start late
        self._table = table
        self._membership = membership
        self._claims = claims
        self._sync = sync
        self._node_id = node_id
        self.on = False
        self._telling: Optional[threading.Thread] = None  # a goodbye heartbeat still waiting for the store

    def digest(self) -> Optional[str]:
        """The digest of the schedules this node's loop serves (peers serve the same), or None if off."""
        return self._table.served.digest if self.on else None

    def start(self) -> None:
        """Serve from now on: this node's peers are the live nodes with the same digest."""
        self.on = True
        self._membership.serve(self.digest())

    def withdraw(self, tell: Callable[[], None], seconds: float) -> None:
        """Serve nothing from now on, and ``tell`` the peers at once (a heartbeat serving nothing):
        a node that stops hands its share over while it waits for its runs, not after. Waits for
        the store ``seconds`` at most: ``stop()`` keeps to its timeout on a store that hangs."""
        if not self.on:
            return
        self.on = False
        # They see it at its next heartbeat, or when its row expires.
        self._telling = _bounded(tell, seconds, "tell the other nodes that this one stops serving")

    def stop(self, leave: bool, seconds: float) -> None:
        """Serve nothing from now on; ``leave`` (every run ended and its outcome is stored): remove
        this node's row too, rather than let it expire and the node be judged lost (waiting for
        the store ``seconds`` at most)."""
        self.on = False
        telling, self._telling = self._telling, None
        if telling is not None and telling.is_alive():
            leave = False  # removed now, the row would come back when that heartbeat gets through
        if leave:
            node = self._node_id
            _bounded(lambda: self._store.remove_node(node), seconds, "remove this node's row (it expires)")

    def resync(self, everything: bool) -> None:
        """Housekeeping's call: other processes' changes, or (``everything``) a new share of the
        schedules after a change of peers, whose old overlap reports no longer apply."""
        if everything:
            self._claims.unblock()
            self._on_share_change()
        self._sync.sync(everything)

    def changed(self, declared: Sequence[str] = ()) -> None:
        """This node's set of schedules changed (``declared``: these were declared again): while on, it
        splits its fires with its new peers from now on (other nodes see the change at their next
        heartbeat) and re-reads the states it now owns."""
        if not self.on:
            return
        if declared:
            self.mark_declared(declared)
        if self._membership.serve(self.digest()) and self._store.shared:
            try:
                self.resync(True)
            except Exception as exc:  # the next heartbeat's sync reads them
                logger.warning("could not re-read the schedules after a change of peers: %s", exc)

    def mark_declared(self, names: Sequence[str]) -> None:
        """Record in the store that this node serves ``names`` (what the fleet view shows)."""
        try:
            self._store.mark_declared(self._node_id, names)
        except Exception as exc:  # only the fleet view depends on it: never fatal
            logger.warning("could not record that this node serves %d schedule(s): %s", len(names), exc)


def _bounded(call: Callable[[], None], seconds: float, what: str) -> Optional[threading.Thread]:
    """Run ``call`` (a store write) on a thread of its own and wait ``seconds`` at most; a warning
    if it failed or did not answer in time, and then its thread if it still waits."""
    failed: List[Exception] = []

    def attempt() -> None:
        try:
            call()
        except Exception as exc:
            failed.append(exc)

    thread = threading.Thread(target=attempt, name="flowyml_lite-stopping", daemon=True)
    try:
        thread.start()
    except Exception as exc:  # no thread to be had (a pids limit): skipped, so stop() goes on
        logger.warning("could not %s: no thread to do it on (%s); skipped", what, exc)
        return None
    thread.join(seconds)
    if thread.is_alive():
        logger.warning("could not %s: the store did not answer within %.1f s", what, seconds)
        return thread
    if failed:
        logger.warning("could not %s: %s", what, failed[0])
    return None
