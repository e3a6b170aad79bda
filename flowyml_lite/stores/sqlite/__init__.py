"""The embedded store: one SQLite file shared by every process on the host (stdlib ``sqlite3``).

Writes: every write is one explicit ``BEGIN IMMEDIATE`` transaction on the store's one writer
connection (autocommit mode, ``isolation_level=None``), so the compare-and-set of a claim and its
inserts are atomic across processes; ``busy_timeout`` makes a writer wait for another process
instead of failing. Threads of one process queue on a lock (microseconds) rather than on SQLite's
busy handler, which sleeps in millisecond steps. A group of claims or outcomes is one transaction.

Reads: on connections of their own, taken from a small pool, never under the writer's lock. WAL
lets them read the last committed state beside a writer, so neither a long write in this process
nor another process holding the write lock makes ``history()`` or ``stats()`` wait.

The file: the store remembers which file it opened (device and inode) and checks, before each
write and read, that the path still names it. A file deleted or replaced under a running process
raises StoreFileReplacedError from then on instead of writing to a file nobody else sees.

The package: ``store.py`` puts together the parts below into SQLiteStore (one class: the claim path
is a method of the class, with no extra call per fire).

- ``connection.py``: the writer connection (pragmas, WAL, migration), write transactions and the
  bounded wait for another writer, the pool of readers, the connections a forked child inherits;
- ``files.py``: the file's identity checks and the hints of the store's errors;
- ``rows.py``: column lists, records to rows and back;
- ``schedules.py``, ``claims.py``, ``runs.py`` (outcomes, history, counts), ``nodes.py``;
- ``maintenance.py``: the WAL checkpoint off the claim path, pruning old runs.
"""

from __future__ import annotations

from .connection import DEFAULT_PATH, SYNCHRONOUS_MODES  # noqa: F401 - importable from here, as before
from .store import SQLiteStore

__all__ = ["DEFAULT_PATH", "SQLiteStore"]
