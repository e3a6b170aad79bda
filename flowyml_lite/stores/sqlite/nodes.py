"""The SQLite store's nodes: heartbeats, the nodes judged lost (their runs with them), and which node
declared which schedules."""

from __future__ import annotations

import functools
import json
import sqlite3
from datetime import datetime
from typing import List, Sequence

from ..base import LOST, NodeRecord, RunRecord
from ..schema import ACTIVE_CONDITION, from_us, to_us
from .connection import _Connections
from .rows import _RUN_COLUMNS, _now_us, _run

_IN_JSON_LIST = "IN (SELECT value FROM json_each(?))"
_ACTIVE_OF_NODE = (
    f"SELECT {_RUN_COLUMNS} FROM runs WHERE node_id = ? AND {ACTIVE_CONDITION} ORDER BY schedule, fire_time"
)
_LOSE_OF_NODE = f"UPDATE runs SET status = ?, reason = ? WHERE node_id = ? AND {ACTIVE_CONDITION}"
_NODE_COLUMNS = "node_id, hostname, pid, started_at, heartbeat, serves"


@functools.cache
def _has_json_each() -> bool:
    """Whether this SQLite has the JSON functions (built in since 3.38, often compiled in before)."""
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute("SELECT value FROM json_each('[1]')").fetchall()
    except sqlite3.Error:
        return False
    finally:
        probe.close()
    return True


class _Nodes(_Connections):
    def heartbeat(self, node: NodeRecord) -> None:
        """Insert or refresh this node's row."""
        started, beat = to_us(node.started_at, "started_at"), to_us(node.heartbeat, "heartbeat")

        def body(conn: sqlite3.Connection) -> None:
            # UPDATE then INSERT rather than an upsert clause: portable and works on old SQLite.
            updated = conn.execute(
                "UPDATE nodes SET hostname = ?, pid = ?, started_at = ?, heartbeat = ?, serves = ? "
                "WHERE node_id = ?",
                (node.hostname, node.pid, started, beat, node.serves, node.node_id),
            ).rowcount
            if not updated:
                conn.execute(
                    f"INSERT INTO nodes ({_NODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (node.node_id, node.hostname, node.pid, started, beat, node.serves),
                )

        self._write(body)

    def list_nodes(self) -> List[NodeRecord]:
        """Every node row, ordered by node id."""
        rows = self._read(f"SELECT {_NODE_COLUMNS} FROM nodes ORDER BY node_id")
        return [NodeRecord(r[0], r[1], r[2], from_us(r[3]), from_us(r[4]), r[5]) for r in rows]  # type: ignore[arg-type]

    def mark_node_lost(self, node_id: str, reason: str) -> List[RunRecord]:
        """Turn the node's active runs into ``lost`` (reason given), delete its row; return them."""

        def body(conn: sqlite3.Connection) -> List[RunRecord]:
            rows = conn.execute(_ACTIVE_OF_NODE, (node_id,)).fetchall()
            conn.execute(_LOSE_OF_NODE, (LOST, reason, node_id))
            conn.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,))
            return [_run(row).with_status(LOST, reason) for row in rows]

        return self._write(body) or []

    def remove_node(self, node_id: str) -> None:
        """Delete the node row (clean shutdown, after its runs finished)."""
        self._write(lambda conn: conn.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,)))

    def expired_nodes(self, timeout_seconds: float, now: datetime) -> List[NodeRecord]:
        """Nodes whose heartbeat is more than ``timeout_seconds`` before ``now`` (one host, one clock)."""
        bound = to_us(now, "now") - timeout_seconds * 1_000_000
        sql = f"SELECT {_NODE_COLUMNS} FROM nodes WHERE heartbeat < ? ORDER BY node_id"
        rows = self._read(sql, (bound,))
        return [NodeRecord(r[0], r[1], r[2], from_us(r[3]), from_us(r[4]), r[5]) for r in rows]  # type: ignore[arg-type]

    def mark_declared(self, node_id: str, names: Sequence[str]) -> None:
        """Record that ``node_id`` declared the schedules ``names``, now; unknown names are ignored."""
        if not names:
            return
        now = _now_us()
        sql = "UPDATE schedules SET declared_by = ?, declared_at = ? WHERE name "
        if _has_json_each():  # one statement for 100,000 names: SQLite loops, not Python
            listed = json.dumps(list(names))
            self._write(lambda conn: conn.execute(sql + _IN_JSON_LIST, (node_id, now, listed)))
            return
        params = [(node_id, now, name) for name in names]
        self._write(lambda conn: conn.executemany(sql + "= ?", params))
