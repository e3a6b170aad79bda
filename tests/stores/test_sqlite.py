"""Behaviour of the SQLite store beyond the contract: durability, schema, errors, several processes."""

from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List, Optional

import pytest

from flowyml_lite.errors import SchemaVersionError, StoreError
from flowyml_lite.stores import open_store
from flowyml_lite.stores import sqlite as sqlite_store
from flowyml_lite.stores.base import QUEUED, RUNNING, SUCCEEDED, NodeRecord, RunRecord, ScheduleRecord
from flowyml_lite.stores.schema import ACTIVE_CONDITION, SCHEMA_VERSION
from flowyml_lite.stores.sqlite import DEFAULT_PATH, SQLiteStore

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
            (sqlite_store._COUNT_ACTIVE, "runs_schedule_status"),
            (sqlite_store._ACTIVE_OF, "runs_schedule_status"),
            (sqlite_store._ACTIVE_ALL, "runs_schedule_status"),
            (sqlite_store._ACTIVE_OF_NODE, "runs_node_status"),
            (sqlite_store._LOSE_OF_NODE, "runs_node_status"),
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
        [sqlite_store._PRUNE, sqlite_store._ANY_PRUNABLE, sqlite_store._KEEP_FROM, sqlite_store._NEWEST_FIRE],
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
        deadline = time.monotonic() + 60
        while not all(os.path.exists(f"{go}.{i}") for i in range(processes)) and time.monotonic() < deadline:
            time.sleep(0.01)
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
