"""Behaviour of the SQLite store beyond the contract: durability, schema, errors, several processes."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest

from flowyml_lite.errors import SchemaVersionError, StoreError, StoreFileReplacedError
from flowyml_lite.stores import open_store
from flowyml_lite.stores import sqlite as sqlite_store
from flowyml_lite.stores.base import (
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Claim,
    NodeRecord,
    Outcome,
    RunRecord,
    ScheduleRecord,
)
from flowyml_lite.stores.schema import ACTIVE_CONDITION, SCHEMA_VERSION
from flowyml_lite.stores.sqlite import DEFAULT_PATH, SQLiteStore, maintenance
from tests.waiting import until

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 3, 10, 6, 0, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def sched(name: str = "etl") -> ScheduleRecord:
    return ScheduleRecord(name, "interval", "60", "UTC", "h1", options={"catchup": "all"}, next_fire=T0)


def run(name: str, fire: datetime, status: str = RUNNING, node: str = "node-a") -> RunRecord:
    return RunRecord(uuid.uuid4().hex, name, fire, status, node_id=node)


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sched.db"


class TestDurability:
    def test_a_new_instance_on_the_same_file_finds_everything(self, db: Path) -> None:
        first = SQLiteStore(db)
        first.declare_schedule(sched())
        first.declare_schedule(sched("paused"))
        first.set_enabled("paused", False, None)
        claimed = first.claim("etl", T0, at(2), [run("etl", at(0)), run("etl", at(1), QUEUED)], 1)
        assert claimed is not None
        first.finish_run(claimed[0].run_key, SUCCEEDED, at(0.5), 2.5, run_id="r-1")
        first.heartbeat(NodeRecord("node-a", "host", 7, T0, at(1)))
        first.close()

        second = SQLiteStore(db)
        got = second.get_schedule("etl")
        assert got is not None and got.next_fire == at(2) and got.last_fire == at(1)
        assert got.options == {"catchup": "all"}
        assert second.get_schedule("paused").enabled is False  # type: ignore[union-attr]
        assert [(r.status, r.run_id) for r in second.history("etl")] == [(QUEUED, None), (SUCCEEDED, "r-1")]
        assert [n.node_id for n in second.list_nodes()] == ["node-a"]
        second.close()

    def test_a_closed_store_opens_again_on_use(self, db: Path) -> None:
        store = SQLiteStore(db)
        store.declare_schedule(sched())
        store.close()
        store.close()
        assert store.get_schedule("etl") is not None
        store.close()

    def test_open_is_idempotent(self, db: Path) -> None:
        store = SQLiteStore(db)
        store.open()
        store.declare_schedule(sched())
        store.open()
        assert len(store.list_schedules()) == 1
        store.close()

    def test_the_default_path_is_in_the_working_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        store = SQLiteStore()
        assert store.path == DEFAULT_PATH == ".flowyml_scheduler.db"
        store.open()
        store.close()
        assert (tmp_path / ".flowyml_scheduler.db").is_file()

    def test_open_store_builds_the_sqlite_backend_by_name(self, db: Path) -> None:
        store = open_store("sqlite", path=str(db))
        assert isinstance(store, SQLiteStore) and store.shared is True
        store.close()
        assert db.is_file()


class TestSynchronous:
    """PRAGMA synchronous: NORMAL by default (fsync at checkpoints), FULL on request (at every commit)."""

    @pytest.mark.parametrize(("mode", "pragma"), [(None, 1), ("normal", 1), ("full", 2), ("FULL", 2)])
    def test_the_stores_connection_uses_the_mode(self, db: Path, mode: Optional[str], pragma: int) -> None:
        store = SQLiteStore(db) if mode is None else SQLiteStore(db, synchronous=mode)
        store.open()
        try:
            assert store._conn is not None
            assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == pragma
        finally:
            store.close()

    def test_an_unknown_mode_is_refused_with_the_choices(self, db: Path) -> None:
        from flowyml_lite.errors import ConfigurationError

        with pytest.raises(ConfigurationError, match=r"'normal'.*'full'"):
            SQLiteStore(db, synchronous="off")
        assert not db.exists()

    def test_the_scheduler_config_chooses_it(self, db: Path) -> None:
        from flowyml_lite import PipelineScheduler, SchedulerConfig

        scheduler = PipelineScheduler(SchedulerConfig(db_path=str(db), sqlite_synchronous="full"))
        try:
            store = scheduler.store
            assert isinstance(store, SQLiteStore) and store.synchronous == "full"
            assert store._conn is not None and store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
        finally:
            scheduler.close()


class TestSchema:
    def test_a_new_file_has_the_current_schema_version_and_its_tables(self, db: Path) -> None:
        SQLiteStore(db).open()
        with raw(db) as conn:
            assert conn.execute("SELECT id, version FROM schema_version").fetchall() == [(1, SCHEMA_VERSION)]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"schedules", "runs", "nodes", "schema_version"} <= tables
        assert {"runs_schedule_status", "runs_node_status"} <= indexes

    def test_instants_are_stored_as_integer_microseconds_since_the_epoch(self, db: Path) -> None:
        store = SQLiteStore(db)
        store.declare_schedule(sched())
        store.close()
        with raw(db) as conn:
            (value,) = conn.execute("SELECT next_fire FROM schedules").fetchone()
        assert value == int(T0.timestamp()) * 1_000_000

    def test_the_file_is_in_wal_mode(self, db: Path) -> None:
        SQLiteStore(db).open()
        with raw(db) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def test_a_file_with_a_newer_schema_version_is_refused(self, db: Path) -> None:
        store = SQLiteStore(db)
        store.open()
        store.close()
        with raw(db) as conn:
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
        with pytest.raises(SchemaVersionError, match=f"version {SCHEMA_VERSION + 1}.*upgrade flowyml-lite"):
            SQLiteStore(db).open()
        with pytest.raises(SchemaVersionError, match=r"sched\.db"):
            SQLiteStore(db).list_schedules()

    def test_integrity_check_is_ok_after_use(self, db: Path) -> None:
        store = SQLiteStore(db)
        for name in ("a", "b"):
            store.declare_schedule(sched(name))
            store.claim(name, T0, at(1), [run(name, T0)], 1)
        store.delete_schedule("a")
        store.close()
        with raw(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []

    @pytest.mark.parametrize(
        ("query", "index"),
        [
            (sqlite_store.claims._COUNT_ACTIVE, "runs_schedule_status"),
            (sqlite_store.runs._ACTIVE_OF, "runs_schedule_status"),
            (sqlite_store.runs._ACTIVE_ALL, "runs_schedule_status"),
            (sqlite_store.nodes._ACTIVE_OF_NODE, "runs_node_status"),
            (sqlite_store.nodes._LOSE_OF_NODE, "runs_node_status"),
        ],
    )
    def test_active_run_queries_use_the_partial_indexes(self, db: Path, query: str, index: str) -> None:
        SQLiteStore(db).open()
        with raw(db) as conn:
            plan = " ".join(
                str(r) for r in conn.execute(f"EXPLAIN QUERY PLAN {query}", ["x"] * query.count("?"))
            )
        assert index in plan and "'SCAN runs'" not in plan

    @pytest.mark.parametrize(
        "query",
        [maintenance._PRUNE, maintenance._ANY_PRUNABLE, maintenance._KEEP_FROM, maintenance._NEWEST_FIRE],
    )
    def test_pruning_queries_search_one_schedule_by_fire_time_without_a_scan(
        self, db: Path, query: str
    ) -> None:
        SQLiteStore(db).open()
        with raw(db) as conn:
            params = ["x"] + [1] * (query.count("?") - 1)
            plan = " ".join(str(r) for r in conn.execute(f"EXPLAIN QUERY PLAN {query}", params))
        assert "INDEX sqlite_autoindex_runs_2 (schedule=?" in plan and "'SCAN runs'" not in plan

    def test_finished_runs_leave_the_partial_indexes(self, db: Path) -> None:
        store = SQLiteStore(db)
        store.declare_schedule(sched())
        claimed = store.claim("etl", T0, at(2), [run("etl", at(0)), run("etl", at(1), QUEUED)], 1)
        assert claimed is not None
        store.finish_run(claimed[0].run_key, SUCCEEDED, at(0.5), 1.0)
        store.close()
        with raw(db) as conn:
            counts = [
                conn.execute(
                    f"SELECT COUNT(*) FROM runs INDEXED BY {index} WHERE {ACTIVE_CONDITION}"
                ).fetchone()[0]
                for index in ("runs_schedule_status", "runs_node_status")
            ]
        assert counts == [1, 1]

    def test_the_unique_fire_constraint_holds_in_the_file_itself(self, db: Path) -> None:
        store = SQLiteStore(db)
        store.declare_schedule(sched())
        store.claim("etl", T0, at(1), [run("etl", T0)], 1)
        store.close()
        with raw(db) as conn, pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO runs (run_key, schedule, fire_time, status, node_id) "
                "SELECT 'other', schedule, fire_time, status, node_id FROM runs"
            )


class TestErrors:
    def test_a_file_that_is_not_a_database_gives_a_store_error_naming_it(self, tmp_path: Path) -> None:
        path = tmp_path / "notes.txt"
        path.write_text("not a database, just text " * 100)
        with pytest.raises(StoreError, match=r"notes\.txt"):
            SQLiteStore(path).open()

    def test_a_missing_directory_gives_a_store_error_naming_the_path(self, tmp_path: Path) -> None:
        with pytest.raises(StoreError, match="no-such-dir"):
            SQLiteStore(tmp_path / "no-such-dir" / "x.db").get_schedule("etl")

    def test_a_writer_waits_for_another_process_lock_rather_than_failing(self, db: Path) -> None:
        store = SQLiteStore(db, busy_timeout=10)
        store.declare_schedule(sched())
        holder = raw(db)
        holder.execute("BEGIN IMMEDIATE")
        released = threading.Event()

        def release_soon() -> None:
            time.sleep(0.2)
            holder.execute("COMMIT")
            released.set()

        thread = threading.Thread(target=release_soon)
        thread.start()
        assert store.claim("etl", T0, at(1), [run("etl", T0)], 1) is not None
        assert released.is_set()
        thread.join()
        holder.close()
        store.close()

    def test_a_lock_held_past_the_busy_timeout_is_a_store_error(self, db: Path) -> None:
        store = SQLiteStore(db, busy_timeout=0.05)
        store.declare_schedule(sched())
        holder = raw(db)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match=r"sched\.db.*locked"):
                store.claim("etl", T0, at(1), [run("etl", T0)], 1)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # The failed transaction left nothing behind: the claim succeeds now.
        assert store.claim("etl", T0, at(1), [run("etl", T0)], 1) is not None
        store.close()


class TestSharedFile:
    def test_two_instances_on_one_file_racing_in_threads_have_one_winner_per_fire(self, db: Path) -> None:
        stores = [SQLiteStore(db), SQLiteStore(db)]
        stores[0].declare_schedule(sched())
        fires = 80
        wins: List[List[int]] = [[], []]
        barrier = threading.Barrier(2)

        def contender(index: int) -> None:
            barrier.wait()
            for i in range(fires):
                if stores[index].claim(
                    "etl", at(i), at(i + 1), [run("etl", at(i), SUCCEEDED, f"n{index}")], 1
                ):
                    wins[index].append(i)

        threads = [threading.Thread(target=contender, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(wins[0] + wins[1]) == list(range(fires))
        assert len(stores[1].history("etl", limit=1000)) == fires
        for s in stores:
            s.close()

    @pytest.mark.slow
    def test_processes_racing_on_one_file_have_exactly_one_winner_per_fire(
        self, tmp_path: Path, db: Path
    ) -> None:
        store = SQLiteStore(db)
        store.declare_schedule(sched())
        store.close()
        fires, processes = 150, 3
        worker = textwrap.dedent(
            f"""
            import json, os, sys, time, uuid
            from datetime import datetime, timedelta, timezone
            sys.path.insert(0, {str(REPO)!r})
            from flowyml_lite.stores.base import RunRecord
            from flowyml_lite.stores.sqlite import SQLiteStore
            index, db, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
            t0 = datetime(2024, 3, 10, 6, 0, tzinfo=timezone.utc)
            at = lambda i: t0 + timedelta(minutes=i)
            store = SQLiteStore(db)
            store.open()
            open(go + "." + str(index), "w").close()
            while not os.path.exists(go):
                time.sleep(0.001)
            wins = []
            for i in range({fires}):
                record = RunRecord(uuid.uuid4().hex, "etl", at(i), "succeeded", node_id="p" + str(index))
                if store.claim("etl", at(i), at(i + 1), [record], 1):
                    wins.append(i)
            print(json.dumps(wins))
            """
        )
        go = str(tmp_path / "go")
        children = [
            subprocess.Popen(
                [sys.executable, "-c", worker, str(i), str(db), go],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for i in range(processes)
        ]
        until(lambda: all(os.path.exists(f"{go}.{i}") for i in range(processes)), 60)
        Path(go).touch()
        wins = []
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err.decode()
            wins.append(json.loads(out))
        everything = [i for w in wins for i in w]
        assert sorted(everything) == list(range(fires)), "a fire was claimed twice or by nobody"
        store = SQLiteStore(db)
        assert store.stats("etl").succeeded == fires
        assert store.get_schedule("etl").next_fire == at(fires)  # type: ignore[union-attr]
        store.close()

    @pytest.mark.slow
    def test_processes_racing_with_group_claims_have_exactly_one_winner_per_fire(
        self, tmp_path: Path, db: Path
    ) -> None:
        schedules, fires, processes = 500, 6, 3
        store = SQLiteStore(db)
        for i in range(schedules):
            store.declare_schedule(sched(f"job-{i:03d}"))
        store.close()
        worker = textwrap.dedent(
            f"""
            import json, os, sys, time, uuid
            from datetime import datetime, timedelta, timezone
            sys.path.insert(0, {str(REPO)!r})
            from flowyml_lite.stores.base import Claim, Outcome, RunRecord
            from flowyml_lite.stores.sqlite import SQLiteStore
            index, db, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
            t0 = datetime(2024, 3, 10, 6, 0, tzinfo=timezone.utc)
            minute = timedelta(minutes=1)
            at = lambda i: t0 + i * minute
            store = SQLiteStore(db)
            store.open()
            open(go + "." + str(index), "w").close()
            while not os.path.exists(go):
                time.sleep(0.001)
            wins, finished = [], []
            while True:  # as the loop does: claim what is due by the stored state, until nothing is
                due = sorted(
                    (name, state.next_fire)
                    for name, state in store.schedule_states().items()
                    if state.next_fire < at({fires})
                )
                if not due:
                    break
                start = index * len(due) // {processes}  # each process from its own place
                claims = [
                    Claim(name, fire, fire + minute, [RunRecord(uuid.uuid4().hex, name, fire, "running")], 99)
                    for name, fire in due[start:] + due[:start]
                ]
                outcomes = [Outcome(k, "succeeded", at(0), 0.0) for k in finished]
                results = store.claim_many(claims, outcomes)
                finished = [result[0].run_key for result in results if result is not None]
                wins.extend([c.name, (c.expected_next - t0) // minute] for c, r in zip(claims, results) if r)
            store.finish_runs([Outcome(k, "succeeded", at(0), 0.0) for k in finished])
            print(json.dumps(wins))
            """
        )
        go = str(tmp_path / "go")
        children = [
            subprocess.Popen(
                [sys.executable, "-c", worker, str(i), str(db), go],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for i in range(processes)
        ]
        until(lambda: all(os.path.exists(f"{go}.{i}") for i in range(processes)), 60)
        Path(go).touch()
        won = []
        for child in children:
            out, err = child.communicate(timeout=300)
            assert child.returncode == 0, err.decode()
            won.extend(tuple(w) for w in json.loads(out))
        everything = sorted((f"job-{s:03d}", i) for s in range(schedules) for i in range(fires))
        assert sorted(won) == everything, "a fire was claimed twice, skipped, or by nobody"
        store = SQLiteStore(db)
        assert store.stats().succeeded == schedules * fires and store.active_runs() == []
        assert {s.next_fire for s in store.list_schedules()} == {at(fires)}
        store.close()

    def test_threads_of_one_process_share_one_store(self, db: Path) -> None:
        store = SQLiteStore(db)
        store.declare_schedule(sched())
        results: queue.Queue[bool] = queue.Queue()
        claimed: queue.Queue[Optional[RunRecord]] = queue.Queue()

        def finisher() -> None:
            record = claimed.get()
            while record is not None:
                results.put(store.finish_run(record.run_key, SUCCEEDED, record.fire_time, 0.0))
                record = claimed.get()

        workers = [threading.Thread(target=finisher) for _ in range(3)]
        for w in workers:
            w.start()
        for i in range(100):
            result = store.claim("etl", at(i), at(i + 1), [run("etl", at(i))], 1000)
            assert result is not None
            claimed.put(result[0])
        for _ in workers:
            claimed.put(None)
        for w in workers:
            w.join()
        assert [results.get_nowait() for _ in range(100)] == [True] * 100
        assert store.stats("etl").succeeded == 100 and store.active_runs() == []
        store.close()

    @pytest.mark.slow
    @pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
    def test_a_process_killed_mid_transaction_loses_only_its_uncommitted_work(self, db: Path) -> None:
        worker = textwrap.dedent(
            f"""
            import sys, time, uuid
            from datetime import datetime, timezone
            sys.path.insert(0, {str(REPO)!r})
            from flowyml_lite.stores.base import RunRecord, ScheduleRecord
            from flowyml_lite.stores.sqlite import SQLiteStore
            t0 = datetime(2024, 3, 10, 6, 0, tzinfo=timezone.utc)
            store = SQLiteStore(sys.argv[1])
            store.declare_schedule(ScheduleRecord("etl", "interval", "60", "UTC", "h1", next_fire=t0))
            store.claim("etl", t0, None, [RunRecord("committed", "etl", t0, "running")], 1)
            conn = store._conn
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE runs SET status = 'succeeded'")
            conn.execute("DELETE FROM schedules")
            print("holding", flush=True)
            time.sleep(60)
            """
        )
        child = subprocess.Popen([sys.executable, "-c", worker, str(db)], stdout=subprocess.PIPE)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"holding"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()

        store = SQLiteStore(db, busy_timeout=5)
        assert [(r.run_key, r.status) for r in store.history("etl")] == [("committed", RUNNING)]
        assert store.finish_run("committed", SUCCEEDED, at(1), 60.0) is True  # the dead writer's lock is gone
        store.close()
        with raw(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
    def test_a_forked_child_uses_its_own_connection(self, db: Path) -> None:
        store = SQLiteStore(db)
        store.declare_schedule(sched())
        pid = os.fork()
        if pid == 0:  # the child: claim through the inherited store object, then exit at once
            code = 0 if store.claim("etl", T0, at(1), [run("etl", T0, node="child")], 1) else 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert [r.node_id for r in store.history("etl")] == ["child"]
        assert store.claim("etl", at(1), at(2), [run("etl", at(1))], 5) is not None
        store.close()


# -- readers beside the writer ------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE schedules SET enabled = enabled")
    print("holding", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    conn.execute("ROLLBACK")
    """
)


@contextmanager
def write_lock_held_by_another_process(path: Path) -> Iterator[None]:
    """Another process holds the SQLite write lock of ``path`` (BEGIN IMMEDIATE) until the block ends."""
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == b"holding"
        yield
    finally:
        child.stdin.close()
        child.wait(timeout=30)
        child.stdout.close()


def in_thread(work: Callable[[], object], wait: float = 20.0) -> object:
    """``work()`` run on another thread; fails if it has not returned after ``wait`` seconds."""
    results: queue.Queue[object] = queue.Queue()

    def target() -> None:
        try:
            results.put(("ok", work()))
        except BaseException as exc:  # handed to the test
            results.put(("error", exc))

    threading.Thread(target=target, daemon=True).start()
    try:
        kind, value = results.get(timeout=wait)  # type: ignore[misc]
    except queue.Empty:
        pytest.fail(f"still waiting after {wait} s")
    if kind == "error":
        raise value  # type: ignore[misc]
    return value


def every_read(store: SQLiteStore) -> Dict[str, object]:
    """The answer of every read method of ``store`` (the schedule "etl" and one node exist)."""
    return {
        "get_schedule": store.get_schedule("etl"),
        "list_schedules": store.list_schedules(),
        "schedule_states": store.schedule_states(),
        "changed_since": store.changed_since(T0),
        "schedule_versions": store.schedule_versions(T0),
        "history": store.history("etl"),
        "active_runs": store.active_runs(),
        "stats": store.stats(),
        "list_nodes": store.list_nodes(),
        "expired_nodes": store.expired_nodes(60, at(10)),
    }


class TestReadersNeverWaitForTheWriter:
    def filled(self, db: Path) -> SQLiteStore:
        store = SQLiteStore(db, busy_timeout=30)
        store.declare_schedule(sched())
        assert store.claim("etl", T0, at(1), [run("etl", T0)], 1) is not None
        store.heartbeat(NodeRecord("node-a", "host", 7, T0, at(0)))
        return store

    def test_every_read_answers_while_another_process_holds_the_write_lock(self, db: Path) -> None:
        store = self.filled(db)
        expected = every_read(store)
        with write_lock_held_by_another_process(db):
            assert in_thread(lambda: every_read(store)) == expected
        store.close()

    def test_a_new_store_opens_and_reads_while_another_process_holds_the_write_lock(self, db: Path) -> None:
        self.filled(db).close()
        with write_lock_held_by_another_process(db):
            fresh = SQLiteStore(db, busy_timeout=30)
            history = in_thread(lambda: fresh.history("etl"))
            assert [r.fire_time for r in history] == [T0]  # type: ignore[attr-defined]
        fresh.close()

    def test_reads_answer_while_a_write_of_this_store_waits_for_the_lock(self, db: Path) -> None:
        store = self.filled(db)
        waiting = threading.Thread(target=lambda: store.heartbeat(NodeRecord("node-b", "h", 8, T0, at(1))))
        with write_lock_held_by_another_process(db):
            waiting.start()
            # The heartbeat holds it, waiting in SQLite's busy handler for the other process.
            until(store._lock.locked, 20)
            assert store._lock.locked() and waiting.is_alive()
            assert [n.node_id for n in in_thread(store.list_nodes)] == ["node-a"]  # type: ignore[attr-defined]
            assert in_thread(lambda: store.stats().running) == 1
        waiting.join(timeout=30)
        assert [n.node_id for n in store.list_nodes()] == ["node-a", "node-b"]
        store.close()

    def test_reads_do_not_use_the_writer_connection(self, db: Path) -> None:
        store = self.filled(db)
        statements: List[str] = []
        assert store._conn is not None
        store._conn.set_trace_callback(statements.append)
        every_read(store)
        assert statements == []
        store.close()

    def test_a_read_sees_every_write_committed_before_it(self, db: Path) -> None:
        store = SQLiteStore(db)
        store.declare_schedule(sched())
        for i in range(50):
            claimed = store.claim("etl", at(i), at(i + 1), [run("etl", at(i))], 1)
            assert claimed is not None and store.active_runs("etl") == claimed
            assert store.finish_runs([Outcome(claimed[0].run_key, SUCCEEDED, at(i + 0.5))]) == [True]
            assert store.active_runs("etl") == [] and store.stats().succeeded == i + 1
        store.close()

    def test_threads_read_beside_a_writer_without_errors(self, db: Path) -> None:
        store = SQLiteStore(db)
        store.declare_schedule(sched())
        stop = threading.Event()
        errors: List[BaseException] = []
        seen: List[List[int]] = [[] for _ in range(4)]

        def reader(index: int) -> None:
            try:
                while not stop.is_set():
                    seen[index].append(len(store.history("etl", limit=1000)))
                    store.stats()
            except BaseException as exc:  # handed to the test
                errors.append(exc)

        readers = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
        for t in readers:
            t.start()
        try:
            for i in range(100):
                assert store.claim("etl", at(i), at(i + 1), [run("etl", at(i), SUCCEEDED)], 1) is not None
        finally:
            stop.set()
            for t in readers:
                t.join()
        assert errors == [] and all(counts == sorted(counts) for counts in seen)  # never back in time
        assert len(store.history("etl", limit=1000)) == 100
        assert len(store._readers) <= sqlite_store.connection._IDLE_READERS
        store.close()

    def test_close_closes_the_idle_readers_and_a_later_read_opens_again(self, db: Path) -> None:
        store = self.filled(db)
        every_read(store)
        idle = [conn for _, conn in store._readers]
        assert idle
        store.close()
        assert store._readers == [] and store._conn is None
        with pytest.raises(sqlite3.ProgrammingError):
            idle[0].execute("SELECT 1")
        assert [r.fire_time for r in store.history("etl")] == [T0]
        store.close()

    def test_a_path_with_uri_characters_is_read_where_it_was_written(self, tmp_path: Path) -> None:
        directory = tmp_path / "odd name %20 #?&=;"
        directory.mkdir()
        store = SQLiteStore(directory / "jobs.db")
        store.declare_schedule(sched())
        assert [s.name for s in store.list_schedules()] == ["etl"]
        assert sorted(p.name for p in tmp_path.iterdir()) == [directory.name]  # no file elsewhere
        store.close()

    def test_an_in_memory_database_reads_on_its_one_connection(self) -> None:
        store = SQLiteStore(":memory:")
        store.declare_schedule(sched())
        assert store.claim("etl", T0, at(1), [run("etl", T0)], 1) is not None
        assert [r.fire_time for r in store.history("etl")] == [T0] and store._readers == []
        store.close()

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
    def test_a_forked_child_reads_on_connections_of_its_own(self, db: Path) -> None:
        store = self.filled(db)
        every_read(store)  # the parent has idle readers the child must not use
        pid = os.fork()
        if pid == 0:
            try:
                ok = [r.fire_time for r in store.history("etl")] == [T0] and store.stats().running == 1
            except BaseException:
                ok = False
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert store.stats().running == 1
        store.close()


# -- the file deleted or replaced ---------------------------------------------------


class TestTheFileDeletedOrReplaced:
    def test_deleting_the_directory_stops_every_write_with_an_error_that_says_what_to_do(
        self, tmp_path: Path
    ) -> None:
        directory = tmp_path / "data"
        directory.mkdir()
        path = directory / "jobs.db"
        store = SQLiteStore(path)
        store.declare_schedule(sched())
        shutil.rmtree(directory)
        with pytest.raises(
            StoreFileReplacedError, match=r"jobs\.db.*was deleted.*Stop this process.*start it again"
        ) as caught:
            store.claim("etl", T0, at(1), [run("etl", T0)], 1)
        assert isinstance(caught.value, StoreError)
        with pytest.raises(StoreFileReplacedError):
            store.maintain()  # the checkpointer does not open (and create) a file at the path either
        assert not directory.exists()  # nothing written, nothing re-created
        # Another process re-creates the path and works on: this store still refuses, reads included.
        directory.mkdir()
        other = SQLiteStore(path)
        other.declare_schedule(sched())
        assert other.claim("etl", T0, at(1), [run("etl", T0, node="other")], 1) is not None
        for call in (
            lambda: store.claim("etl", T0, at(1), [run("etl", T0)], 1),
            lambda: store.finish_runs([Outcome("k", SUCCEEDED, at(1))]),
            lambda: store.heartbeat(NodeRecord("node-a", "h", 1, T0, T0)),
            lambda: store.history("etl"),
            lambda: store.list_schedules(),
        ):
            with pytest.raises(StoreFileReplacedError, match="was deleted"):
                call()
        assert [r.node_id for r in other.history("etl")] == ["other"]
        other.close()
        store.close()

    def test_replacing_the_file_stops_writes_and_reads(self, tmp_path: Path) -> None:
        path = tmp_path / "jobs.db"
        store = SQLiteStore(path)
        store.declare_schedule(sched())
        claimed = store.claim("etl", T0, at(1), [run("etl", T0)], 1)
        assert claimed is not None
        replacement = tmp_path / "restored.db"
        restored = SQLiteStore(replacement)
        restored.declare_schedule(sched("from-backup"))
        restored.close()
        os.replace(replacement, path)
        for stale in ("-wal", "-shm"):  # the old file's, as the error message says
            Path(f"{path}{stale}").unlink()
        with pytest.raises(StoreFileReplacedError, match=r"replaced by another file.*-wal"):
            store.finish_runs([Outcome(claimed[0].run_key, SUCCEEDED, at(0.5))])
        with pytest.raises(StoreFileReplacedError, match="replaced by another file"):
            store.get_schedule("etl")
        # A restart (close, then open) takes the file now at the path.
        store.close()
        assert [s.name for s in store.list_schedules()] == ["from-backup"]
        assert store.declare_schedule(sched()).name == "etl"
        store.close()

    def test_deleting_the_write_ahead_log_stops_every_call_and_a_clean_close_keeps_its_commits(
        self, tmp_path: Path
    ) -> None:
        """Commits since the last checkpoint live in the -wal file: deleted under an open store,
        they are in this process's open copy alone and no other process can open the database."""
        path = tmp_path / "jobs.db"
        store = SQLiteStore(path)
        store.declare_schedule(sched())
        claimed = store.claim("etl", T0, at(1), [run("etl", T0)], 1)
        assert claimed is not None
        Path(f"{path}-wal").unlink()
        with pytest.raises(StoreFileReplacedError, match=r"write-ahead log .*-wal\) was deleted.*cleanly"):
            store.finish_runs([Outcome(claimed[0].run_key, SUCCEEDED, at(0.5))])
        with pytest.raises(StoreFileReplacedError, match="write-ahead log"):
            store.history("etl")
        store.close()  # SQLite writes the log it holds into the database file
        again = SQLiteStore(path)
        assert [r.fire_time for r in again.history("etl")] == [T0]  # the claim made before survived
        again.close()

    def test_a_writer_reopened_after_its_log_ended_with_it_is_no_false_alarm(self, tmp_path: Path) -> None:
        """Closing the last connection ends the -wal file (SQLite deletes it): the writer dropped
        after an I/O error, or a parent closing after a fork, must not look like a deleted log."""
        path = tmp_path / "jobs.db"
        store = SQLiteStore(path)
        store.declare_schedule(sched())
        with store._lock:
            store._drop_writer()  # the last connection: SQLite checkpoints and deletes the log
        assert not Path(f"{path}-wal").exists()
        assert store.claim("etl", T0, at(1), [run("etl", T0)], 1) is not None
        assert [r.fire_time for r in store.history("etl")] == [T0]
        store.close()

    def test_a_store_that_never_wrote_also_notices(self, tmp_path: Path) -> None:
        path = tmp_path / "jobs.db"
        SQLiteStore(path).open()
        store = SQLiteStore(path)
        assert store.list_schedules() == []
        path.unlink()
        with pytest.raises(StoreFileReplacedError):
            store.list_schedules()
        assert not path.exists()
        store.close()


# -- failed writes ------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test (needs root), unmounted afterwards."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        for target in (mount_point / "ro", mount_point):
            if os.path.ismount(target):
                subprocess.run(["umount", "-l", str(target)], check=False)


def fill(directory: Path) -> Path:
    """Write a file into ``directory`` until its file system is full; return the file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


class TestFailedWrites:
    def test_a_full_disk_fails_the_write_cleanly_and_the_store_writes_again_once_space_is_freed(
        self, small_tmpfs: Path
    ) -> None:
        store = SQLiteStore(small_tmpfs / "jobs.db")
        store.declare_schedule(sched())
        claimed = store.claim("etl", T0, at(1), [run("etl", T0)], 5)
        assert claimed is not None
        filler = fill(small_tmpfs)
        big = Outcome(claimed[0].run_key, FAILED, at(0.5), output="o" * 60_000, traceback="t" * 60_000)
        group = [Claim("etl", at(1), at(2), [run("etl", at(1))], 5)]
        for _ in range(3):  # each try fails alone; nothing is half written
            with pytest.raises(StoreError, match=r"full.*free space"):
                store.claim_many(group, [big])
        assert [r.status for r in store.history("etl")] == [RUNNING]  # reads go on
        assert store.get_schedule("etl").next_fire == at(1)  # type: ignore[union-attr]
        filler.unlink()
        results = store.claim_many(group, [big])
        assert results[0] is not None
        assert [(r.status, len(r.output or "")) for r in store.history("etl")] == [
            (RUNNING, 0),
            (FAILED, 60_000),
        ]
        store.close()
        with raw(small_tmpfs / "jobs.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

    def test_a_read_only_file_system_fails_the_write_and_the_store_works_once_it_is_writable(
        self, small_tmpfs: Path
    ) -> None:
        SQLiteStore(small_tmpfs / "jobs.db").declare_schedule(sched())  # then closed by the GC
        view = small_tmpfs / "ro"  # the same directory, mounted read-only
        view.mkdir()
        for command in (
            ["mount", "--bind", str(small_tmpfs), str(view)],
            ["mount", "-o", "remount,ro,bind", str(view)],
        ):
            if subprocess.run(command, capture_output=True).returncode != 0:
                pytest.skip("cannot make a read-only bind mount here")
        store = SQLiteStore(view / "jobs.db")
        with pytest.raises(StoreError, match=r"jobs\.db.*writable"):
            store.claim("etl", T0, at(1), [run("etl", T0)], 1)
        subprocess.run(["mount", "-o", "remount,rw,bind", str(view)], check=True)
        assert store.claim("etl", T0, at(1), [run("etl", T0)], 1) is not None
        store.close()

    @pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None,
        reason="needs root and setpriv(1) to run a process that file permissions apply to",
    )
    def test_a_read_only_file_fails_the_write_and_the_same_store_writes_once_it_is_writable(
        self, db: Path
    ) -> None:
        SQLiteStore(db).declare_schedule(sched())  # created, then closed by the GC
        db.chmod(0o444)
        worker = textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(REPO)!r})
            from datetime import datetime, timezone
            from flowyml_lite.errors import StoreError
            from flowyml_lite.stores.base import NodeRecord
            from flowyml_lite.stores.sqlite import SQLiteStore
            t0 = datetime(2024, 3, 10, 6, 0, tzinfo=timezone.utc)
            store = SQLiteStore(sys.argv[1], busy_timeout=5)
            for _ in sys.stdin:
                try:
                    store.heartbeat(NodeRecord("node-a", "host", 1, t0, t0))
                    print("ok", flush=True)
                except StoreError as exc:
                    print("error", exc, flush=True)
            """
        )
        # Root without CAP_DAC_OVERRIDE: the file's mode applies to it as to any user.
        drop = "-dac_override,-dac_read_search"
        child = subprocess.Popen(
            [
                "setpriv",
                f"--bounding-set={drop}",
                f"--inh-caps={drop}",
                sys.executable,
                "-c",
                worker,
                str(db),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        try:
            child.stdin.write("try\n")
            child.stdin.flush()
            first = child.stdout.readline()
            if first.startswith("ok"):
                pytest.skip("this process can write a read-only file (file permissions do not apply)")
            assert first.startswith("error") and "readonly" in first and "writable" in first, first
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").chmod(0o644)
            child.stdin.write("try\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "ok"
        finally:
            child.stdin.close()
            child.wait(timeout=30)
            child.stdout.close()
        store = SQLiteStore(db)
        assert [n.node_id for n in store.list_nodes()] == ["node-a"]
        store.close()

    def test_a_lock_held_by_another_process_past_busy_timeout_fails_each_write_and_then_it_succeeds(
        self, db: Path
    ) -> None:
        store = SQLiteStore(db, busy_timeout=0.2)
        store.declare_schedule(sched())
        claimed = store.claim("etl", T0, at(1), [run("etl", T0)], 5)
        assert claimed is not None
        outcome = Outcome(claimed[0].run_key, SUCCEEDED, at(0.5))
        with write_lock_held_by_another_process(db):
            with pytest.raises(StoreError, match=r"locked.*busy_timeout=0\.2 s"):
                store.finish_runs([outcome])
            with pytest.raises(StoreError, match="locked"):
                store.claim_many([Claim("etl", at(1), at(2), [run("etl", at(1))], 5)], [outcome])
            assert store.active_runs() == claimed  # reads answer meanwhile
        assert store.finish_runs([outcome]) == [True]
        assert store.claim_many([Claim("etl", at(1), at(2), [run("etl", at(1))], 5)])[0] is not None
        store.close()


class TestGroupStatements:
    @pytest.mark.parametrize(
        ("query", "index"),
        [
            (sqlite_store.claims._active_counts_of(3), "runs_schedule_status"),
            (sqlite_store.claims._states_of(3), "sqlite_autoindex_schedules_1"),
            (sqlite_store.runs._FINISH_RUN, "sqlite_autoindex_runs_1"),
        ],
    )
    def test_group_statements_find_their_rows_by_index(self, db: Path, query: str, index: str) -> None:
        SQLiteStore(db).open()
        with raw(db) as conn:
            plan = " ".join(
                str(r) for r in conn.execute(f"EXPLAIN QUERY PLAN {query}", ["x"] * query.count("?"))
            )
        assert index in plan and "'SCAN runs'" not in plan and "'SCAN schedules'" not in plan

    def test_a_group_claim_is_one_transaction(self, db: Path) -> None:
        store = SQLiteStore(db)
        for name in ("a", "b", "c"):
            store.declare_schedule(sched(name))
        statements: List[str] = []
        assert store._conn is not None
        store._conn.set_trace_callback(statements.append)
        claims = [Claim(name, T0, at(1), [run(name, T0)], 1) for name in ("a", "b", "c")]
        assert None not in store.claim_many(claims)
        assert [s for s in statements if s.split()[0] in ("BEGIN", "COMMIT", "ROLLBACK")] == [
            "BEGIN IMMEDIATE",
            "COMMIT",
        ]
        store.close()


# -- upkeep: the WAL restart that stalls writers waits for a quiet moment -------------------


class _SpyConnection:
    """The writer connection, recording the SQL it is given."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.sql: List[str] = []

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        self.sql.append(sql)
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self.conn, name)


class TestUpkeep:
    def test_the_wal_restart_that_holds_writers_off_waits_until_nothing_is_due_soon(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store = SQLiteStore(tmp_path / "jobs.db")
        store.declare_schedule(sched())
        store.maintain()  # from now on the store checkpoints here, not inside commits
        assert store.claim("etl", T0, at(1), [run("etl", T0)], 1) is not None
        with raw(tmp_path / "jobs.db") as conn:
            frames = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        assert frames >= 2
        monkeypatch.setattr(maintenance, "_WAL_RESTART_FRAMES", frames)  # at the mark, not a quarter past
        spy = _SpyConnection(store._conn)  # type: ignore[arg-type]
        store._conn = spy  # type: ignore[assignment]
        store.maintain(quiet=lambda: False)  # a fire is due soon: the stall waits
        assert not [q for q in spy.sql if "wal_checkpoint" in q]
        store.maintain(quiet=lambda: True)
        assert [q for q in spy.sql if "wal_checkpoint" in q]
        monkeypatch.setattr(maintenance, "_WAL_RESTART_FRAMES", frames // 2)  # far past: waits no longer
        spy.sql.clear()
        store.maintain(quiet=lambda: False)
        assert [q for q in spy.sql if "wal_checkpoint" in q]
        store._conn = spy.conn
        store.close()


class TestWithoutJsonFunctions:
    """An SQLite built without its JSON functions (before 3.38 they were optional) loses nothing."""

    def test_declared_by_is_stamped_one_name_at_a_time(
        self, db: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(sqlite_store.nodes, "_has_json_each", lambda: False)
        store = SQLiteStore(db)
        for name in ("a", "b", 'it\'s "quoted" ü'):
            store.declare_schedule(sched(name))
        store.mark_declared("node-a", ["a", 'it\'s "quoted" ü', "no-such-schedule"])
        by_name = {s.name: s.declared_by for s in store.list_schedules()}
        assert by_name == {"a": "node-a", "b": None, 'it\'s "quoted" ü': "node-a"}
        store.close()

    def test_with_them_names_that_need_escaping_in_json_are_stamped_too(self, db: Path) -> None:
        store = SQLiteStore(db)
        names = ["back\\slash", 'quote"d', "tab\tand ü and 日本"]
        for name in (*names, "other"):
            store.declare_schedule(sched(name))
        store.mark_declared("node-b", names)
        by_name = {s.name: s.declared_by for s in store.list_schedules()}
        assert by_name == {**{name: "node-b" for name in names}, "other": None}
        store.close()


class TestReadOnly:
    """``SQLiteStore(path, read_only=True)``: reads a file this process may not write."""

    @pytest.fixture
    def written(self, tmp_path: Path) -> str:
        path = str(tmp_path / "app.db")
        store = SQLiteStore(path)
        store.declare_schedule(ScheduleRecord("etl", "interval", "60", "UTC", "h", {}, {}, next_fire=T0))
        store.close()
        assert sorted(os.listdir(tmp_path)) == ["app.db"]  # the last connection removed -wal and -shm
        return path

    def test_it_reads_and_refuses_every_write_with_a_clear_error(self, written: str) -> None:
        store = SQLiteStore(written, read_only=True)
        try:
            assert [r.name for r in store.list_schedules()] == ["etl"]
            assert store.get_schedule("etl") is not None and store.history("etl", 10) == []
            with pytest.raises(StoreError, match="opened read-only: it takes no writes"):
                store.set_enabled("etl", False, None)
        finally:
            store.close()
        assert SQLiteStore(written).get_schedule("etl").enabled  # type: ignore[union-attr]

    def test_it_creates_no_file_beside_the_database(self, written: str) -> None:
        store = SQLiteStore(written, read_only=True)
        store.list_schedules()
        store.close()
        assert sorted(os.listdir(os.path.dirname(written))) == ["app.db"]

    def test_a_missing_file_or_another_kind_of_database_is_named(self, tmp_path: Path) -> None:
        with pytest.raises(StoreError, match="no database file to read"):
            SQLiteStore(str(tmp_path / "none.db"), read_only=True).open()
        other = str(tmp_path / "other.db")
        sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
        with pytest.raises(StoreError, match="not a flowyml_lite database"):
            SQLiteStore(other, read_only=True).open()

    def test_an_older_schema_is_not_migrated_and_says_how(self, written: str) -> None:
        conn = sqlite3.connect(written)
        conn.execute("UPDATE schema_version SET version = 2")
        conn.commit()
        conn.close()
        with pytest.raises(StoreError, match="open it once with write access to migrate it"):
            SQLiteStore(written, read_only=True).open()


class TestPathErrors:
    def test_a_directory_given_as_the_file_is_named_as_such(self, tmp_path: Path) -> None:
        with pytest.raises(StoreError, match=r"it is a directory: give the path of a file, e\.g\. "):
            SQLiteStore(str(tmp_path)).open()

    def test_a_missing_directory_is_named(self, tmp_path: Path) -> None:
        with pytest.raises(StoreError, match=r"its directory .*missing does not exist"):
            SQLiteStore(str(tmp_path / "missing" / "jobs.db")).open()


class TestAWriteThatMayWaitOnlySoLong:
    """Claims made ahead of their instant wait for another writer only as long as the runs
    already held can spare: then they give up (StoreError) and are made at the instant."""

    def test_gives_up_while_another_process_holds_the_write_lock_and_writes_as_usual_after(
        self, db: Path
    ) -> None:
        store = SQLiteStore(str(db))
        store.open()
        store.declare_schedule(sched())
        other = raw(db)
        other.execute("BEGIN IMMEDIATE")  # another process's long write
        released = threading.Event()
        timer = threading.Timer(10, lambda: (other.execute("ROLLBACK"), released.set()))
        timer.start()
        claim = Claim("etl", T0, at(1), [run("etl", T0)], 1)
        try:
            with store.waiting_at_most(0.05), pytest.raises(StoreError):
                store.claim_many([claim])
            assert not released.is_set()  # gave up long before busy_timeout (30 s) or the other's end
        finally:
            timer.cancel()
        other.execute("ROLLBACK")
        assert store.claim_many([claim])[0] is not None  # the usual wait again outside the block
        store.close()

    def test_gives_up_while_another_thread_of_this_process_writes(self, db: Path) -> None:
        store = SQLiteStore(str(db))
        store.open()
        store.declare_schedule(sched())
        entered, leave = threading.Event(), threading.Event()

        def long_write(conn: sqlite3.Connection) -> None:
            entered.set()
            leave.wait(10)

        writer = threading.Thread(target=lambda: store._write(long_write))
        writer.start()
        assert entered.wait(5)
        try:
            with store.waiting_at_most(0.05), pytest.raises(StoreError, match="another write"):
                store.claim_many([Claim("etl", T0, at(1), [run("etl", T0)], 1)])
            assert writer.is_alive()  # it gave up while the other write went on
        finally:
            leave.set()
            writer.join(5)
        store.close()
