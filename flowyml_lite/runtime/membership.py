"""Which live node attempts which schedule's fires: rendezvous hashing over the live nodes.

Processes sharing a store split the schedules between them instead of racing for every fire:
each schedule belongs to the live node with the highest hash of (node, schedule), so a node
joining or leaving moves only its own share. Views may disagree for a heartbeat while a node
joins or is declared lost; then a fire may be attempted twice (the store's claim keeps it once)
or late (the new owner claims it by the misfire policy). "Once" never depends on this.
"""

from __future__ import annotations

import threading
import zlib
from typing import Dict, Iterable, Tuple


class Membership:
    """The live nodes as this node last saw them, and whether this node owns a schedule."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._lock = threading.Lock()
        self._nodes: Tuple[str, ...] = (node_id,)
        self._seeds: Tuple[Tuple[str, int], ...] = ((node_id, _seed(node_id)),)
        self._mine: Dict[str, bool] = {}  # name -> owned, for the current set of nodes

    @property
    def nodes(self) -> Tuple[str, ...]:
        return self._nodes

    def update(self, live: Iterable[str]) -> bool:
        """Set the live nodes (this one is always among them); True if the set changed."""
        nodes = tuple(sorted(set(live) | {self.node_id}))
        with self._lock:
            if nodes == self._nodes:
                return False
            self._nodes = nodes
            self._seeds = tuple((n, _seed(n)) for n in nodes)
            self._mine = {}
        return True

    def owns(self, name: str) -> bool:
        """True if this node attempts ``name``'s fires (always, when it is alone)."""
        seeds, mine = self._seeds, self._mine
        if len(seeds) == 1:
            return True
        found = mine.get(name)
        if found is not None:
            return found
        key = zlib.crc32(name.encode("utf-8", "surrogatepass"))
        best, owner = -1, ""
        for node, seed in seeds:
            score = _mix(key ^ seed)
            if score > best or (score == best and node < owner):
                best, owner = score, node
        found = mine[name] = owner == self.node_id
        return found


_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finalizer: every input bit moves every output bit (crc32 alone is too linear)."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _seed(node_id: str) -> int:
    return _mix(zlib.crc32(node_id.encode("utf-8", "surrogatepass")) + 0x9E3779B97F4A7C15) & _MASK
