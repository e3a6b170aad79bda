"""Which live node attempts which schedule's fires: rendezvous hashing over the live peers.

Processes sharing a store split the schedules between them instead of racing for every fire.
Only *peers* split: live nodes that serve the very same set of schedules (equal ``serves``
digests, see ``ServedSet``), so a schedule is never handed to a node that cannot run it. Among
peers each schedule belongs to the one with the highest hash of (node, schedule), so a node
joining or leaving moves only its own share. A node whose set differs (another app, or a schedule
just added through the API) attempts all of its own schedules. Views may disagree for a heartbeat
while a node joins, changes its set or is declared lost; then a fire may be attempted twice (the
store's claim keeps it once) or late (the new owner claims it by the misfire policy). "Once"
never depends on this.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from typing import Dict, Iterable, Optional, Tuple


class Membership:
    """The live nodes as this node last saw them, and whether this node owns a schedule."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._lock = threading.Lock()
        self._nodes: Tuple[str, ...] = (node_id,)
        self._seeds: Tuple[Tuple[str, int], ...] = ((node_id, _seed(node_id)),)
        self._mine: Dict[str, bool] = {}  # name -> owned, for the current peers
        self._live: Tuple[Tuple[str, Optional[str]], ...] = ()  # other live nodes, with their digests
        self._serves: Optional[str] = None  # this node's digest (None: it serves nothing here)

    @property
    def nodes(self) -> Tuple[str, ...]:
        """Every live node as last seen, this one included."""
        return tuple(sorted({self.node_id, *(n for n, _ in self._live)}))

    @property
    def peers(self) -> Tuple[str, ...]:
        """The live nodes this one splits its schedules with (itself included)."""
        return self._nodes

    def update(self, live: Iterable[Tuple[str, Optional[str]]]) -> bool:
        """Set the other live nodes and their digests; True if this node's peers changed."""
        with self._lock:
            self._live = tuple(sorted((n, d) for n, d in live if n != self.node_id))
            return self._regroup()

    def serve(self, digest: Optional[str]) -> bool:
        """Set this node's own digest; True if its peers changed (so its share did too)."""
        with self._lock:
            self._serves = digest
            return self._regroup()

    def _regroup(self) -> bool:
        mine = self._serves
        peers = {self.node_id} | {n for n, d in self._live if mine is not None and d == mine}
        nodes = tuple(sorted(peers))
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
        found = mine[name] = _winner(name, seeds) == self.node_id
        return found


def owner_among(name: str, nodes: Iterable[str]) -> str:
    """The node among ``nodes`` (live peers serving the same schedules) that attempts ``name``."""
    return _winner(name, [(node, _seed(node)) for node in sorted(nodes)])


def _winner(name: str, seeds: Iterable[Tuple[str, int]]) -> str:
    key = zlib.crc32(name.encode("utf-8", "surrogatepass"))
    best, owner = -1, ""
    for node, seed in seeds:
        score = _mix(key ^ seed)
        if score > best or (score == best and node < owner):
            best, owner = score, node
    return owner


_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finalizer: every input bit moves every output bit (crc32 alone is too linear)."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _seed(node_id: str) -> int:
    return _mix(zlib.crc32(node_id.encode("utf-8", "surrogatepass")) + 0x9E3779B97F4A7C15) & _MASK


class ServedSet:
    """An order-free digest of a set of schedule names, kept up to date one name at a time.

    The sum of a 64-bit hash of each name (blake2b), modulo 2**64: adding or removing a name is
    O(1), so declaring 100,000 schedules costs no rehash of the whole set.
    """

    def __init__(self) -> None:
        self._sum = 0
        self.count = 0

    def add(self, name: str) -> None:
        self._sum = (self._sum + _name_hash(name)) & _MASK
        self.count += 1

    def discard(self, name: str) -> None:
        self._sum = (self._sum - _name_hash(name)) & _MASK
        self.count -= 1

    def clear(self) -> None:
        self._sum = self.count = 0

    @property
    def digest(self) -> str:
        return f"{self.count}:{self._sum:016x}"


def _name_hash(name: str) -> int:
    raw = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(raw, "big")
