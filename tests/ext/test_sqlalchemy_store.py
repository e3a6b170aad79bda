"""SQLAlchemyStore beyond the contract suite (tests/stores/ runs that on it too).

Schema, files shared with SQLiteStore, configuration, errors, processes racing on PostgreSQL,
and the scheduler end to end on PostgreSQL with the Redis lock.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import pytest

from flowyml_lite import plugins
from flowyml_lite.core.scheduler import PipelineScheduler, open_store
from flowyml_lite.core.scheduler_config import SchedulerConfig
from flowyml_lite.errors import ConfigurationError, PluginNotInstalledError, SchemaVersionError, StoreError
from flowyml_lite.stores.base import (
    MISSED,
    QUEUED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    Claim,
    NodeRecord,
    Outcome,
    RunRecord,
    ScheduleRecord,
)
from flowyml_lite.stores.schema import SCHEMA_VERSION, to_us
from flowyml_lite.stores.sqlite import SQLiteStore

sa = pytest.importorskip("sqlalchemy", reason="the sqlalchemy extra is not installed")

from flowyml_lite_ext.sqlalchemy_store import NODES, RUNS, SCHEDULES, SCHEMA_VERSION_TABLE, SQLAlchemyStore  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 3, 10, 6, 0, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def sched(name: str = "etl", definition_hash: str = "h1") -> ScheduleRecord:
    return ScheduleRecord(
        name,
        "interval",
        "60",
        "UTC",
        definition_hash,
        options={"catchup": "all"},
        context={"k": [1]},
        next_fire=T0,
    )


def run(name: str, fire: datetime, status: str = RUNNING, node: str = "node-a") -> RunRecord:
    return RunRecord(uuid.uuid4().hex, name, fire, status, node_id=node, started_at=fire)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fill(store: Any) -> None:
    """Write one of everything: schedules (one disabled), a claim of two runs, a finished run, a node."""
    store.declare_schedule(sched())
    store.declare_schedule(sched("paused"))
    store.set_enabled("paused", False, None)
    claimed = store.claim("etl", T0, at(2), [run("etl", at(0)), run("etl", at(1), QUEUED)], 1)
    assert claimed is not None
    store.finish_run(claimed[0].run_key, SUCCEEDED, at(0.5), 2.5, run_id="r-1")
    store.heartbeat(NodeRecord("node-a", "host", 7, T0, at(1)))


def _check_filled(store: Any) -> None:
    got = store.get_schedule("etl")
    assert got is not None and got.next_fire == at(2) and got.last_fire == at(1)
    assert got.options == {"catchup": "all"} and got.context == {"k": [1]}
    assert store.get_schedule("paused").enabled is False
    assert [(r.status, r.run_id, r.duration_seconds) for r in store.history("etl")] == [
        (QUEUED, None, None),
        (SUCCEEDED, "r-1", 2.5),
    ]
    assert [r.fire_time for r in store.active_runs("etl")] == [at(1)]
    assert store.list_nodes() == [NodeRecord("node-a", "host", 7, T0, at(1))]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sched.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, db: Path) -> Iterator[SQLAlchemyStore]:
    """An opened SQLAlchemyStore on a SQLite file, and one in a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        store = SQLAlchemyStore(f"sqlite:///{db}")
    else:
        url, schema = request.getfixturevalue("pg_schema")
        store = SQLAlchemyStore(url, schema=schema)
    store.open()
    yield store
    store.close()


class TestSchema:
    def test_the_tables_the_shared_ddl_creates_match_the_statements_view_of_them(
        self, any_store: SQLAlchemyStore
    ) -> None:
        inspector = sa.inspect(any_store._engine)
        for table in (SCHEDULES, RUNS, NODES, SCHEMA_VERSION_TABLE):
            reflected = {c["name"]: c for c in inspector.get_columns(table.name)}
            assert list(reflected) == [c.name for c in table.columns], table.name
            for column in table.columns:
                # SQLite lets a non-INTEGER PRIMARY KEY hold NULL (a documented quirk): skip keys here.
                if not column.primary_key:
                    assert reflected[column.name]["nullable"] == column.nullable, (
                        f"{table.name}.{column.name}"
                    )
                assert reflected[column.name]["type"]._type_affinity is column.type._type_affinity, (
                    f"{table.name}.{column.name}: {reflected[column.name]['type']} vs {column.type}"
                )

    def test_a_new_database_has_one_version_row_at_the_current_version(
        self, any_store: SQLAlchemyStore
    ) -> None:
        with any_store._engine.connect() as conn:
            assert conn.execute(sa.select(SCHEMA_VERSION_TABLE)).all() == [(1, SCHEMA_VERSION)]

    def test_the_partial_indexes_of_active_runs_exist(self, any_store: SQLAlchemyStore) -> None:
        indexes = {i["name"] for i in sa.inspect(any_store._engine).get_indexes("runs")}
        assert {"runs_schedule_status", "runs_node_status"} <= indexes

    def test_the_sync_finds_changed_schedules_through_an_index(self, any_store: SQLAlchemyStore) -> None:
        indexes = sa.inspect(any_store._engine).get_indexes("schedules")
        assert [i["column_names"] for i in indexes if i["name"] == "schedules_updated_at"] == [["updated_at"]]

    def test_instants_are_stored_as_integer_microseconds_since_the_epoch(
        self, any_store: SQLAlchemyStore
    ) -> None:
        fire = datetime(2024, 3, 10, 6, 0, 0, 123456, tzinfo=timezone.utc)
        any_store.declare_schedule(ScheduleRecord("etl", "interval", "60", "UTC", "h1", next_fire=fire))
        with any_store._engine.connect() as conn:
            stored = conn.execute(sa.select(SCHEDULES.c.next_fire)).scalar_one()
        assert stored == to_us(fire, "fire") == 1710050400123456

    def test_the_unique_fire_constraint_holds_in_the_database_itself(
        self, any_store: SQLAlchemyStore
    ) -> None:
        any_store.declare_schedule(sched())
        assert any_store.claim("etl", T0, at(1), [run("etl", T0)], 1) is not None
        copy = sa.insert(RUNS).from_select(
            ["run_key", "schedule", "fire_time", "status", "node_id"],
            sa.select(sa.literal("other"), RUNS.c.schedule, RUNS.c.fire_time, RUNS.c.status, RUNS.c.node_id),
        )
        with pytest.raises(sa.exc.IntegrityError), any_store._engine.begin() as conn:
            conn.execute(copy)

    def test_a_database_with_a_newer_schema_version_is_refused(self, any_store: SQLAlchemyStore) -> None:
        with any_store._engine.begin() as conn:
            conn.execute(sa.update(SCHEMA_VERSION_TABLE).values(version=SCHEMA_VERSION + 1))
        any_store.close()
        with pytest.raises(SchemaVersionError, match="upgrade flowyml-lite"):
            any_store.open()

    @pytest.mark.postgres
    def test_a_role_without_create_privilege_uses_a_database_already_created(
        self, pg_store: SQLAlchemyStore, pg_schema: Tuple[str, str]
    ) -> None:
        url, schema = pg_schema
        role = f"flowyml_dml_{uuid.uuid4().hex[:8]}"
        with pg_store._engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
            conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
            conn.exec_driver_sql(
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}"
            )
        try:
            limited = SQLAlchemyStore(sa.make_url(url).set(username=role, password=None), schema=schema)
            limited.open()
            limited.declare_schedule(sched())
            assert limited.claim("etl", T0, at(1), [run("etl", T0)], 1) is not None
            limited.close()
        finally:
            with pg_store._engine.begin() as conn:
                conn.exec_driver_sql(f"DROP OWNED BY {role}")
                conn.exec_driver_sql(f"DROP ROLE {role}")

    def test_concurrent_first_opens_of_an_empty_database_all_succeed(
        self, pg_schema: Tuple[str, str]
    ) -> None:
        url, schema = pg_schema
        stores = [SQLAlchemyStore(url, schema=schema) for _ in range(4)]
        errors: List[BaseException] = []
        barrier = threading.Barrier(len(stores))

        def opener(store: SQLAlchemyStore) -> None:
            barrier.wait()
            try:
                store.open()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=opener, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        with stores[0]._engine.connect() as conn:
            assert conn.execute(sa.select(SCHEMA_VERSION_TABLE)).all() == [(1, SCHEMA_VERSION)]
        for store in stores:
            store.close()


class TestSharedWithSQLiteStore:
    """DESIGN §5: a database written by one SQL store opens in the other."""

    def test_a_file_written_by_sqlitestore_opens_here_with_everything(self, db: Path) -> None:
        first = SQLiteStore(db)
        _fill(first)
        first.close()
        second = SQLAlchemyStore(f"sqlite:///{db}")
        _check_filled(second)
        second.close()

    def test_a_file_written_here_opens_in_sqlitestore_with_everything(self, db: Path) -> None:
        first = SQLAlchemyStore(f"sqlite:///{db}")
        _fill(first)
        first.close()
        second = SQLiteStore(db)
        _check_filled(second)
        second.close()

    def test_both_stores_open_on_one_file_share_its_claims(self, db: Path) -> None:
        native, other = SQLiteStore(db), SQLAlchemyStore(f"sqlite:///{db}")
        native.declare_schedule(sched())
        assert other.declare_schedule(sched()).created_at == native.get_schedule("etl").created_at  # type: ignore[union-attr]
        assert native.claim("etl", T0, at(1), [run("etl", T0)], 5) is not None
        assert other.claim("etl", T0, at(1), [run("etl", T0)], 5) is None
        assert other.claim("etl", at(1), at(2), [run("etl", at(1))], 5) is not None
        assert native.claim("etl", at(1), at(2), [run("etl", at(1))], 5) is None
        assert [r.fire_time for r in native.history("etl")] == [at(1), at(0)]
        native.close()
        other.close()

    def test_the_file_is_in_wal_mode_with_foreign_keys_on(self, db: Path) -> None:
        store = SQLAlchemyStore(f"sqlite:///{db}")
        store.open()
        with store._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        store.close()
        with sqlite3.connect(str(db)) as raw:
            assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

    def test_active_runs_on_sqlite_use_the_partial_index(self, db: Path) -> None:
        store = SQLAlchemyStore(f"sqlite:///{db}")
        store.declare_schedule(sched())
        store.claim(
            "etl", T0, at(3), [run("etl", at(i), SUCCEEDED if i < 2 else RUNNING) for i in range(3)], 1
        )
        assert [r.fire_time for r in store.active_runs()] == [at(2)]
        assert [r.fire_time for r in store.active_runs("etl")] == [at(2)]
        assert store.active_runs("other") == []
        store.close()


class TestLifecycle:
    def test_a_closed_store_opens_again_on_use(self, any_store: SQLAlchemyStore) -> None:
        any_store.declare_schedule(sched())
        any_store.close()
        any_store.close()
        assert any_store.get_schedule("etl") is not None

    def test_open_is_idempotent(self, any_store: SQLAlchemyStore) -> None:
        any_store.declare_schedule(sched())
        any_store.open()
        assert [s.name for s in any_store.list_schedules()] == ["etl"]

    def test_an_in_memory_sqlite_url_is_one_database_for_every_thread(self) -> None:
        store = SQLAlchemyStore("sqlite://")
        store.declare_schedule(sched())
        seen: List[Any] = []
        thread = threading.Thread(target=lambda: seen.append(store.get_schedule("etl")))
        thread.start()
        thread.join(30)
        assert seen and seen[0] is not None
        store.close()

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
    def test_a_forked_child_uses_its_own_connections(self, any_store: SQLAlchemyStore) -> None:
        any_store.declare_schedule(sched())
        pid = os.fork()
        if pid == 0:  # the child: claim through the inherited store, then leave without cleanup
            try:
                ok = any_store.claim("etl", T0, at(1), [run("etl", T0)], 1) is not None
            except BaseException:
                ok = False
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert any_store.get_schedule("etl").next_fire == at(1)  # type: ignore[union-attr]
        assert any_store.claim("etl", at(1), at(2), [run("etl", at(1))], 5) is not None

    def test_the_store_is_shared(self) -> None:
        assert SQLAlchemyStore.shared is True

    def test_repr_hides_the_password(self) -> None:
        store = SQLAlchemyStore("postgresql+psycopg://flowyml:s3cret@db.example:5432/app")
        assert "s3cret" not in repr(store) and "***" in repr(store)


class TestConfiguration:
    def test_from_config_uses_store_url(self, db: Path) -> None:
        store = SQLAlchemyStore.from_config(SchedulerConfig(store="sqlalchemy", store_url=f"sqlite:///{db}"))
        assert store.url.database == str(db)

    def test_from_config_without_a_url_opens_the_sqlite_file_at_db_path(self, db: Path) -> None:
        store = open_store(SchedulerConfig(store="sqlalchemy", db_path=str(db)))
        assert isinstance(store, SQLAlchemyStore) and store.dialect == "sqlite"
        store.declare_schedule(sched())
        store.close()
        assert SQLiteStore(db).get_schedule("etl") is not None

    def test_the_postgresql_store_without_a_url_is_a_configuration_error(self) -> None:
        with pytest.raises(ConfigurationError, match="store_url"):
            SQLAlchemyStore.from_config(SchedulerConfig(store="postgresql"))

    @pytest.mark.parametrize("name", ["sqlalchemy", "postgresql"])
    def test_the_registry_names_resolve_to_this_store(self, name: str) -> None:
        assert plugins.get("stores", name) is SQLAlchemyStore

    def test_the_stores_open_store_helper_passes_the_url(self, db: Path) -> None:
        from flowyml_lite.stores import open_store as open_named

        store = open_named("sqlalchemy", url=f"sqlite:///{db}")
        assert isinstance(store, SQLAlchemyStore)
        store.close()


class TestErrors:
    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("mysql://u@h/db", "supports PostgreSQL and SQLite"),
            ("not a url", "not an SQLAlchemy URL"),
        ],
    )
    def test_a_url_this_store_cannot_use_is_a_configuration_error(self, url: str, message: str) -> None:
        with pytest.raises(ConfigurationError, match=message):
            SQLAlchemyStore(url)

    def test_the_postgres_spelling_of_libpq_and_heroku_is_understood(self) -> None:
        store = SQLAlchemyStore("postgres://u:secret@db.internal:5432/jobs")
        assert (store.url.drivername, store.dialect) == ("postgresql+psycopg", "postgresql")

    @pytest.mark.parametrize(
        ("url", "schema"),
        [
            ("sqlite:///x.db", "s"),
            ("postgresql+psycopg://h/db", "bad-name; DROP"),
            ("postgresql+psycopg://h/db", "Upper"),
        ],
    )
    def test_a_schema_is_a_postgresql_identifier(self, url: str, schema: str) -> None:
        with pytest.raises(ConfigurationError, match="schema"):
            SQLAlchemyStore(url, schema=schema)

    def test_a_missing_driver_other_than_the_extra_s_says_to_install_it_or_use_psycopg(self) -> None:
        """The postgres extra installs psycopg 3: it would not bring pg8000 or psycopg2."""
        with pytest.raises(PluginNotInstalledError, match=r"install pg8000 yourself, or use postgresql\+psycopg://"):
            SQLAlchemyStore("postgresql+pg8000://u@127.0.0.1/db")

    def test_an_unreachable_server_is_a_store_error_with_a_hint_and_no_password(self) -> None:
        pytest.importorskip("psycopg", reason="the postgres extra is not installed")
        store = SQLAlchemyStore(f"postgresql+psycopg://flowyml:s3cret@127.0.0.1:{_closed_port()}/db")
        with pytest.raises(StoreError, match="PostgreSQL runs and is reachable") as info:
            store.open()
        assert "s3cret" not in str(info.value) and "flowyml:***@127.0.0.1" in str(info.value)

    def test_a_file_that_is_not_a_database_is_a_store_error_naming_it(self, tmp_path: Path) -> None:
        path = tmp_path / "junk.db"
        path.write_bytes(b"this is not a database" * 100)
        with pytest.raises(StoreError, match=r"junk\.db"):
            SQLAlchemyStore(f"sqlite:///{path}").open()


@pytest.mark.postgres
class TestPostgresConcurrency:
    def test_concurrent_first_declarations_end_on_one_row(self, pg_schema: Tuple[str, str]) -> None:
        url, schema = pg_schema
        stores = [SQLAlchemyStore(url, schema=schema) for _ in range(4)]
        for store in stores:
            store.open()
        barrier = threading.Barrier(len(stores))
        results: List[ScheduleRecord] = []

        def declare(store: SQLAlchemyStore) -> None:
            barrier.wait()
            results.append(store.declare_schedule(sched()))

        threads = [threading.Thread(target=declare, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 4 and all(r == results[0] for r in results)
        assert len(stores[0].list_schedules()) == 1
        for store in stores:
            store.close()

    def test_nodes_reaping_one_dead_node_at_once_report_each_lost_run_once(
        self, pg_schema: Tuple[str, str]
    ) -> None:
        url, schema = pg_schema
        stores = [SQLAlchemyStore(url, schema=schema) for _ in range(4)]
        stores[0].declare_schedule(sched())
        claimed = stores[0].claim("etl", T0, at(3), [run("etl", at(i), node="dead") for i in range(3)], 5)
        assert claimed is not None and len(claimed) == 3
        barrier = threading.Barrier(len(stores))
        reported: List[RunRecord] = []

        def reap(store: SQLAlchemyStore) -> None:
            barrier.wait()
            reported.extend(store.mark_node_lost("dead", "no heartbeat"))

        threads = [threading.Thread(target=reap, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(r.fire_time for r in reported) == [at(0), at(1), at(2)]
        assert stores[0].stats("etl").lost == 3
        for store in stores:
            store.close()

    def test_processes_racing_on_postgresql_have_exactly_one_winner_per_fire(
        self, pg_store: SQLAlchemyStore, pg_schema: Tuple[str, str], tmp_path: Path
    ) -> None:
        url, schema = pg_schema
        pg_store.declare_schedule(sched())
        fires, processes = 150, 2
        worker = textwrap.dedent(
            f"""
            import json, os, sys, time, uuid
            from datetime import datetime, timedelta, timezone
            sys.path.insert(0, {str(REPO)!r})
            from flowyml_lite.stores.base import RunRecord
            from flowyml_lite_ext.sqlalchemy_store import SQLAlchemyStore
            index, url, schema, go = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
            t0 = datetime(2024, 3, 10, 6, 0, tzinfo=timezone.utc)
            at = lambda i: t0 + timedelta(minutes=i)
            store = SQLAlchemyStore(url, schema=schema)
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
                [sys.executable, "-c", worker, str(i), url, schema, go],
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
        assert pg_store.stats("etl").succeeded == fires
        assert pg_store.get_schedule("etl").next_fire == at(fires)  # type: ignore[union-attr]


def _wait_until(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit  # bounds a broken run only; nothing asserts on timing
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.mark.postgres
@pytest.mark.redis
class TestSchedulerEndToEnd:
    def test_two_schedulers_on_postgresql_and_redis_run_each_fire_once(
        self, pg_schema: Tuple[str, str], redis_url: str
    ) -> None:
        url, schema = pg_schema
        admin = SQLAlchemyStore(url, schema=schema)
        admin.open()  # creates the schema; the schedulers reach it through the URL's search_path
        store_url = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
        name = f"sync_{uuid.uuid4().hex[:8]}"
        calls: List[str] = []
        guard = threading.Lock()

        def make(node: str) -> PipelineScheduler:
            config = SchedulerConfig(
                store="postgresql",
                store_url=store_url,
                distributed=True,
                lock_backend="redis",
                redis_url=redis_url,
                node_id=node,
                heartbeat_seconds=0.5,
                node_timeout_seconds=5,
            )
            scheduler = PipelineScheduler(config)

            def job() -> None:
                with guard:
                    calls.append(node)

            scheduler.schedule_interval(name, job, seconds=0.5)
            return scheduler

        schedulers = [make("node-a"), make("node-b")]
        assert all(isinstance(s.store, SQLAlchemyStore) for s in schedulers)
        for s in schedulers:
            s.start()
        try:
            _wait_until(lambda: admin.stats(name).succeeded >= 4, "4 fires")
        finally:
            for s in schedulers:
                s.close()
        runs = admin.history(name, limit=1000)
        fires = [r.fire_time for r in runs]
        succeeded = [r for r in runs if r.status == SUCCEEDED]
        assert len(succeeded) >= 4
        assert len(calls) == len(succeeded), "a fire ran twice, or a run was not recorded"
        assert len(set(fires)) == len(fires)
        assert all(to_us(f, "fire") % 500_000 == 0 for f in fires), "fires off the 0.5 s grid"
        # A fire is skipped (lock held) or missed (stalled host) only on a badly overloaded machine.
        assert {r.status for r in runs} <= {SUCCEEDED, SKIPPED, MISSED}
        assert {r.node_id for r in runs} <= {"node-a", "node-b"}
        assert admin.list_nodes() == []  # both stopped cleanly
        admin.close()

    def test_the_guide_distributed_example_runs_on_sqlite_with_the_redis_lock(
        self, redis_url: str, tmp_path: Path
    ) -> None:
        config = SchedulerConfig(
            distributed=True, lock_backend="redis", redis_url=redis_url, db_path=str(tmp_path / "s.db")
        )
        scheduler = PipelineScheduler(config)
        done = threading.Event()
        scheduler.schedule_interval("guide", done.set, seconds=0.5)
        scheduler.start()
        try:
            assert done.wait(60)
            _wait_until(
                lambda: any(e["status"] == SUCCEEDED for e in scheduler.get_history("guide")),
                "the run's record",
            )
        finally:
            scheduler.close()


def _claim(name: str, minutes: float, node: str = "node-a", key: str = "") -> Claim:
    return Claim(
        name,
        at(minutes),
        at(minutes + 1),
        [RunRecord(key or uuid.uuid4().hex, name, at(minutes), RUNNING, node_id=node)],
        1,
    )


def _statements(store: SQLAlchemyStore) -> List[str]:
    """A list that collects the SQL of every statement the store's engine sends from now on."""
    sent: List[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    sa.event.listen(store._engine, "before_cursor_execute", record)
    return sent


@pytest.mark.postgres
class TestPostgresRoundTrips:
    """Group claims and group outcomes are one statement each, however many fires they carry."""

    def test_a_group_of_claims_with_the_previous_outcomes_is_one_statement(
        self, pg_store: SQLAlchemyStore
    ) -> None:
        names = [f"s{i:03d}" for i in range(60)]
        for name in names:
            pg_store.declare_schedule(sched(name))
        first = pg_store.claim_many([_claim(n, 0) for n in names])
        assert all(r is not None for r in first)
        outcomes = [Outcome(r[0].run_key, SUCCEEDED, at(0.5), 1.0, node_id="node-a") for r in first if r]
        sent = _statements(pg_store)
        second = pg_store.claim_many([_claim(n, 1) for n in names], outcomes)
        assert [r is not None and r[0].status == RUNNING for r in second] == [True] * len(names)
        assert len(sent) == 1, sent  # in autocommit: BEGIN, statement and COMMIT in one round trip
        assert pg_store.stats().succeeded == len(names) and pg_store.stats().running == len(names)

    def test_a_group_of_outcomes_is_one_statement(self, pg_store: SQLAlchemyStore) -> None:
        names = [f"s{i:03d}" for i in range(40)]
        for name in names:
            pg_store.declare_schedule(sched(name))
        claimed = pg_store.claim_many([_claim(n, 0) for n in names])
        sent = _statements(pg_store)
        outcomes = [Outcome(r[0].run_key, SUCCEEDED, at(0.5), 1.0) for r in claimed if r]
        assert pg_store.finish_runs(outcomes) == [True] * len(names)
        assert len(sent) == 1, sent

    def test_a_conflict_the_checks_did_not_foresee_refuses_only_its_claim(
        self, pg_store: SQLAlchemyStore
    ) -> None:
        # Two claims of one group carrying the same run key: the statement fails on the unique key,
        # so the group is redone claim by claim under savepoints, and only the second is refused.
        pg_store.declare_schedule(sched("a"))
        pg_store.declare_schedule(sched("b"))
        results = pg_store.claim_many([_claim("a", 0, key="same"), _claim("b", 0, key="same")])
        assert results[0] is not None and results[1] is None
        assert pg_store.get_schedule("b").next_fire == at(0)  # type: ignore[union-attr]
        assert [r.run_key for r in pg_store.history("a")] == ["same"] and pg_store.history("b") == []

    def test_schedule_versions_reads_two_columns_of_the_changed_rows_only(
        self, pg_store: SQLAlchemyStore
    ) -> None:
        pg_store.declare_schedule(sched())
        sent = _statements(pg_store)
        mark = datetime.now(timezone.utc) + timedelta(hours=1)
        assert pg_store.schedule_versions(mark) == {}
        (statement,) = sent
        assert "updated_at >=" in statement and "options" not in statement

    def test_schedule_versions_of_a_large_unchanged_window_cost_one_aggregate_row(
        self, pg_store: SQLAlchemyStore
    ) -> None:
        # A deploy declared many schedules within the sync's margin: every heartbeat asks for them.
        mark = datetime.now(timezone.utc) - timedelta(minutes=1)
        for i in range(250):
            pg_store.declare_schedule(sched(f"s{i:03d}"))
        first = pg_store.schedule_versions(mark)
        assert len(first) == 250
        sent = _statements(pg_store)
        assert pg_store.schedule_versions(mark + timedelta(microseconds=1)) == first
        (statement,) = sent
        assert "count(" in statement and "name" not in statement
        # Any change in the window is seen: a redefinition, a new row, a deleted one.
        pg_store.declare_schedule(sched("s007", definition_hash="h2"))
        pg_store.declare_schedule(sched("new"))
        pg_store.delete_schedule("s100")
        after = pg_store.schedule_versions(mark)
        assert set(after) == set(first) - {"s100"} | {"new"}
        assert after["s007"] is not None and after["s007"] > first["s007"]  # type: ignore[operator]

    def test_the_nodes_with_active_runs_are_read_without_the_runs(self, pg_store: SQLAlchemyStore) -> None:
        for name in ("a", "b", "c"):
            pg_store.declare_schedule(sched(name))
        for name, node in (("a", "node-2"), ("b", "node-1"), ("c", "node-2")):
            run = RunRecord(f"k-{name}", name, at(0), RUNNING, node, at(0))
            assert pg_store.claim(name, at(0), at(1), [run], 1) is not None
        sent = _statements(pg_store)
        assert pg_store.active_run_nodes() == ["node-1", "node-2"]
        (statement,) = sent
        assert "DISTINCT" in statement and "output" not in statement


@pytest.mark.postgres
class TestPostgresNeverWaits:
    """A row another transaction holds is refused at once; every other wait has a bound."""

    @staticmethod
    def _hold_row(store: SQLAlchemyStore, name: str) -> Any:
        conn = store._engine.connect()
        conn.begin()
        conn.execute(sa.select(SCHEDULES.c.name).where(SCHEDULES.c.name == name).with_for_update())
        return conn

    def test_a_claim_of_a_row_another_transaction_holds_is_refused_without_waiting(
        self, pg_schema: Tuple[str, str]
    ) -> None:
        # lock_timeout far above the test's bound: had the claim waited, the test would hang or
        # see a StoreError, never None.
        store = SQLAlchemyStore(pg_schema[0], schema=pg_schema[1], lock_timeout=600, statement_timeout=600)
        store.declare_schedule(sched("a"))
        store.declare_schedule(sched("b"))
        holder = self._hold_row(store, "a")
        try:
            results = store.claim_many([_claim("a", 0), _claim("b", 0)])
            assert results[0] is None and results[1] is not None
            assert store.claim("a", T0, at(1), [run("a", T0)], 1) is None
        finally:
            holder.rollback()
            holder.close()
        assert store.claim("a", T0, at(1), [run("a", T0)], 1) is not None
        store.close()

    def test_a_statement_waiting_on_a_held_row_fails_after_lock_timeout(
        self, pg_schema: Tuple[str, str]
    ) -> None:
        store = SQLAlchemyStore(pg_schema[0], schema=pg_schema[1], lock_timeout=0.2)
        store.declare_schedule(sched())
        holder = self._hold_row(store, "etl")
        try:
            with pytest.raises(StoreError, match="lock timeout"):
                store.set_enabled("etl", False, None)
        finally:
            holder.rollback()
            holder.close()
        assert store.set_enabled("etl", False, None) is True
        store.close()

    def test_a_client_frozen_inside_a_transaction_loses_its_row_locks_to_the_server(
        self, pg_schema: Tuple[str, str]
    ) -> None:
        store = SQLAlchemyStore(pg_schema[0], schema=pg_schema[1], idle_in_transaction_timeout=0.3)
        store.declare_schedule(sched())
        frozen = self._hold_row(store, "etl")  # then never speaks again, like a SIGSTOPped worker
        try:
            _wait_until(lambda: store.claim("etl", T0, at(1), [run("etl", T0)], 1) is not None, "the claim")
        finally:
            frozen.invalidate()
            frozen.close()
        store.close()

    def test_every_session_carries_the_bounds(self, pg_schema: Tuple[str, str]) -> None:
        url = f"{pg_schema[0]}{'&' if '?' in pg_schema[0] else '?'}options=-c%20application_name%3Dmine"
        store = SQLAlchemyStore(
            url, schema=pg_schema[1], lock_timeout=1.5, statement_timeout=7, idle_in_transaction_timeout=9
        )
        store.open()
        with store._engine.connect() as conn:
            shown = {
                name: conn.exec_driver_sql(f"SHOW {name}").scalar()
                for name in (
                    "lock_timeout",
                    "statement_timeout",
                    "idle_in_transaction_session_timeout",
                    "search_path",
                    "application_name",
                )
            }
            info = conn.connection.dbapi_connection.info  # type: ignore[union-attr]
            params = info.get_parameters()
        assert shown == {
            "lock_timeout": "1500ms",
            "statement_timeout": "7s",
            "idle_in_transaction_session_timeout": "9s",
            "search_path": pg_schema[1],
            "application_name": "mine",  # options already in the URL are kept
        }
        assert params["keepalives"] == "1" and params["tcp_user_timeout"] == "5000"
        assert params["connect_timeout"] == "5"
        store.close()

    @pytest.mark.parametrize("bad", [0, -1, float("nan"), True, "2"])
    def test_a_bound_that_is_not_a_positive_number_of_seconds_is_refused(self, bad: Any) -> None:
        with pytest.raises(ConfigurationError, match="lock_timeout"):
            SQLAlchemyStore("postgresql+psycopg://u@127.0.0.1/db", lock_timeout=bad)


@pytest.mark.postgres
class TestPostgresClock:
    """Heartbeats, liveness and updated_at on the server's clock: hosts' clocks do not matter."""

    def test_a_heartbeat_is_stamped_with_the_server_clock(self, pg_store: SQLAlchemyStore) -> None:
        skewed = datetime(2001, 1, 1, tzinfo=timezone.utc)  # a host whose clock is far behind
        before = datetime.now(timezone.utc)
        pg_store.heartbeat(NodeRecord("node-a", "host", 7, T0, skewed))
        (node,) = pg_store.list_nodes()
        assert abs((node.heartbeat - before).total_seconds()) < 3600  # the server's now, not 2001

    def test_expired_nodes_are_judged_by_the_server_clock_whatever_now_the_caller_gives(
        self, pg_store: SQLAlchemyStore
    ) -> None:
        pg_store.heartbeat(NodeRecord("fresh", "host", 7, T0, T0))
        far_future = datetime.now(timezone.utc) + timedelta(days=365)
        assert pg_store.expired_nodes(30, far_future) == []
        with pg_store._engine.begin() as conn:  # a beat from an hour ago, on the server's clock
            conn.execute(sa.update(NODES).values(heartbeat=NODES.c.heartbeat - 3600 * 1_000_000))
        assert [n.node_id for n in pg_store.expired_nodes(30, T0)] == ["fresh"]

    def test_updated_at_and_declared_at_come_from_the_server_clock(self, pg_store: SQLAlchemyStore) -> None:
        with pg_store._engine.connect() as conn:
            server = conn.exec_driver_sql("SELECT clock_timestamp()").scalar()
        stored = pg_store.declare_schedule(sched())
        pg_store.mark_declared("node-a", ["etl", "unknown"])
        got = pg_store.get_schedule("etl")
        assert got is not None and stored.updated_at is not None and got.declared_at is not None
        assert abs((stored.updated_at - server).total_seconds()) < 60
        assert abs((got.declared_at - server).total_seconds()) < 60 and got.declared_by == "node-a"


class _LostReply:
    """Breaks the connection of the store's next write just before its reply arrives.

    PostgreSQL writes a group claim or a group of outcomes as one statement in autocommit: the
    statement runs (``committed``) or not, then the driver reports the connection gone.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: SQLAlchemyStore, committed: bool) -> None:
        self.armed = True
        for name in ("_claim_group", "_finish_in"):
            real = getattr(store, name)
            monkeypatch.setattr(store, name, self._breaking(real, committed))

    def _breaking(self, real: Callable[..., Any], committed: bool) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            if not self.armed:
                return real(*args)
            self.armed = False
            if committed:
                real(*args)
            raise sa.exc.OperationalError(
                "the statement",
                {},
                Exception("server closed the connection unexpectedly"),
                connection_invalidated=True,
            )

        return call


@pytest.mark.postgres
class TestALostCommitReply:
    """A claim whose reply never came (it may have committed) is resolved by reading its run keys back."""

    def test_a_claim_that_committed_is_reported_claimed(
        self, pg_store: SQLAlchemyStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        pg_store.declare_schedule(sched())
        _LostReply(monkeypatch, pg_store, committed=True)
        claimed = pg_store.claim("etl", T0, at(1), [run("etl", T0)], 1)
        assert claimed is not None and [r.status for r in pg_store.history("etl")] == [RUNNING]
        assert any("reading back what was written" in r.getMessage() for r in caplog.records)

    def test_a_claim_that_did_not_commit_is_a_store_error_and_can_be_made_again(
        self, pg_store: SQLAlchemyStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        pg_store.declare_schedule(sched())
        _LostReply(monkeypatch, pg_store, committed=False)
        with pytest.raises(StoreError, match="server closed the connection"):
            pg_store.claim("etl", T0, at(1), [run("etl", T0)], 1)
        assert pg_store.history("etl") == []
        assert pg_store.claim("etl", T0, at(1), [run("etl", T0)], 1) is not None

    def test_outcomes_that_committed_are_reported_written(
        self, pg_store: SQLAlchemyStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        pg_store.declare_schedule(sched())
        claimed = pg_store.claim("etl", T0, at(1), [run("etl", T0)], 1)
        assert claimed is not None
        _LostReply(monkeypatch, pg_store, committed=True)
        assert pg_store.finish_runs([Outcome(claimed[0].run_key, SUCCEEDED, at(0.5), 1.0)]) == [True]
        assert pg_store.history("etl")[0].status == SUCCEEDED

    def test_a_claim_that_cannot_be_read_back_is_settled_missed_by_the_next_write(
        self, pg_store: SQLAlchemyStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        pg_store.declare_schedule(sched())
        pg_store.declare_schedule(sched("other"))
        _LostReply(monkeypatch, pg_store, committed=True)

        def unreachable(body: Any, error: BaseException) -> Any:
            raise StoreError("still unreachable")

        monkeypatch.setattr(pg_store, "_read_back", unreachable)
        with pytest.raises(StoreError):
            pg_store.claim("etl", T0, at(1), [run("etl", T0)], 1)
        # The caller was told the claim failed, so nobody runs it; the next write settles it.
        assert pg_store.claim("other", T0, at(1), [run("other", T0)], 1) is not None
        (row,) = pg_store.history("etl")
        assert row.status == MISSED and "COMMIT" in (row.reason or "")
        assert pg_store.stats("etl").running == 0


@pytest.mark.postgres
class TestPostgresConnections:
    def test_pooled_connections_the_server_ended_while_idle_are_replaced_without_an_error(
        self, pg_store: SQLAlchemyStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from flowyml_lite_ext import sqlalchemy_store

        pg_store.declare_schedule(sched())
        with pg_store._engine.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        killer = sa.create_engine(pg_store.url)
        with killer.connect() as conn:  # as a server restart does to every pooled connection
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        killer.dispose()
        monkeypatch.setattr(sqlalchemy_store, "PING_IDLE_SECONDS", 0.0)
        assert pg_store.get_schedule("etl") is not None
        assert pg_store.claim("etl", T0, at(1), [run("etl", T0)], 1) is not None


@pytest.mark.postgres
class TestALostCommitReplyInATransaction:
    """A group that needs a transaction (one schedule claimed twice) resolves a lost COMMIT reply too."""

    @staticmethod
    def _lose_next_commit_reply(monkeypatch: pytest.MonkeyPatch) -> None:
        from sqlalchemy.engine.base import RootTransaction

        real_commit = RootTransaction.commit
        armed = [True]

        def commit(transaction: Any) -> None:
            real_commit(transaction)
            if armed.pop() if armed else False:
                raise sa.exc.OperationalError(
                    "COMMIT",
                    {},
                    Exception("server closed the connection unexpectedly"),
                    connection_invalidated=True,
                )

        monkeypatch.setattr(RootTransaction, "commit", commit)

    def test_a_committed_group_is_reported_claimed(
        self, pg_store: SQLAlchemyStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        pg_store.declare_schedule(sched())
        self._lose_next_commit_reply(monkeypatch)
        results = pg_store.claim_many([_claim("etl", 0), _claim("etl", 1)])
        assert [r is not None for r in results] == [True, True]
        assert len(pg_store.history("etl")) == 2 and pg_store.get_schedule("etl").next_fire == at(2)  # type: ignore[union-attr]


@pytest.mark.postgres
class TestARowHeldOutsideTheScheduler:
    def test_its_fires_wait_health_says_why_and_every_instant_is_accounted_for_after(
        self, pg_schema: Tuple[str, str], caplog: pytest.LogCaptureFixture
    ) -> None:
        """Another session holds the schedule's row (SELECT ... FOR UPDATE, a frozen peer): claims
        skip locked rows, so every claim is refused. The loop must not spin on it nor say the fire
        already ran; health says the row is held; once it is free, the fires resume and the
        instants of the wait are recorded (missed or run), none lost."""
        import logging

        import sqlalchemy

        url, schema = pg_schema
        admin = SQLAlchemyStore(url, schema=schema)
        admin.open()
        scheduler = PipelineScheduler(SchedulerConfig(store=admin, heartbeat_seconds=0.2))
        scheduler.schedule_interval("tick", lambda: None, seconds=1)
        scheduler.start()
        engine = sqlalchemy.create_engine(url)
        try:
            _wait_until(lambda: admin.stats("tick").succeeded >= 1, "a first run")
            with caplog.at_level(logging.WARNING, logger="flowyml_lite"), engine.connect() as conn:
                with conn.begin():
                    lock = f'SELECT name FROM "{schema}".schedules WHERE name = %s FOR UPDATE'
                    conn.exec_driver_sql(lock, ("tick",))
                    _wait_until(lambda: any("held" in p["source"] for p in scheduler.problems()), "health")
                    assert scheduler.status() == "degraded"
                    time.sleep(3)
                    assert any("held" in p["source"] for p in scheduler.problems())
                lines = [r for r in caplog.records if r.name.startswith("flowyml_lite")]
                assert not any("already has a run" in r.getMessage() for r in lines)
                assert len(lines) < 40, f"{len(lines)} log lines in 4 s: the loop spins on the held row"
                held_until = datetime.now(timezone.utc)
            _wait_until(lambda: not scheduler.problems(), "health back")
            latest = lambda: max(r.fire_time for r in admin.history("tick", 100))  # noqa: E731
            _wait_until(lambda: latest() > held_until, "fires again")
        finally:
            scheduler.close()
            engine.dispose()
        fires = sorted(r.fire_time for r in admin.history("tick", 1000))
        seconds = [int(f.timestamp()) for f in fires]
        assert seconds == list(range(seconds[0], seconds[-1] + 1)), "an instant of the wait has no row"


class TestPruningInBoundedSteps:
    def test_a_limited_call_works_a_bounded_time_and_the_next_goes_on_where_it_stopped(
        self, any_store: SQLAlchemyStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every schedule one run over its cap (what a pass finds in steady state): a limited call
        visits one schedule when its time is up, says it has more to do, and the calls that follow
        finish the pass, each run pruned once."""
        import flowyml_lite_ext.sqlalchemy_store as module

        monkeypatch.setattr(module, "PRUNE_SECONDS_PER_CALL", 0.0)
        names = [f"s{i}" for i in range(5)]
        for name in names:
            any_store.declare_schedule(ScheduleRecord(name, "interval", "60", "UTC", "h", next_fire=T0))
            for minute in (1, 2, 3):
                due = any_store.get_schedule(name).next_fire
                (claimed,) = any_store.claim(name, due, at(minute), [run(name, at(minute))], 5) or []
                any_store.finish_run(claimed.run_key, "succeeded", at(minute), 0.1)
        calls = 0
        deleted = 0
        while True:
            deleted += any_store.prune_runs(None, 2, limit=1000)
            calls += 1
            if not any_store.pruning_left:
                break
        assert calls == 5 and deleted == 5
        assert all(len(any_store.history(name)) == 2 for name in names)


class TestAClaimPostgreSQLRefusesForOneSchedule:
    def test_the_other_claims_of_its_group_go_through_and_health_names_it_until_it_does(
        self, pg_schema: Tuple[str, str]
    ) -> None:
        """A trigger refuses the run rows of one schedule: its claim, in one statement with the
        claims of the schedules due at the same instant, failed them all, every instant (every
        schedule silent). The others now go through; health names the one refused; once the
        trigger is gone it fires again."""
        import sqlalchemy

        url, schema = pg_schema
        admin = SQLAlchemyStore(url, schema=schema)
        admin.open()
        scheduler = PipelineScheduler(SchedulerConfig(store=admin, heartbeat_seconds=0.2))
        names = ["a", "b", "bad", "c", "d"]
        for name in names:
            scheduler.schedule_interval(name, lambda: None, seconds=1)
        scheduler.start()
        engine = sqlalchemy.create_engine(url)
        function = f'"{schema}".refuse_bad'
        try:
            _wait_until(lambda: all(admin.stats(n).succeeded >= 1 for n in names), "first runs")
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    f"CREATE FUNCTION {function}() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.schedule = 'bad' THEN RAISE EXCEPTION 'refused by a trigger'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
                conn.exec_driver_sql(
                    f'CREATE TRIGGER refuse BEFORE INSERT ON "{schema}".runs '
                    f"FOR EACH ROW EXECUTE FUNCTION {function}()"
                )
            since = datetime.now(timezone.utc)
            later = lambda n: [r for r in admin.history(n, 20) if r.fire_time > since]  # noqa: E731
            _wait_until(lambda: all(len(later(n)) >= 3 for n in names if n != "bad"), "the others fire on")
            assert later("bad") == []
            _wait_until(lambda: "claims:bad" in {p["source"] for p in scheduler.problems()}, "health")
            assert scheduler.status() == "degraded"
            with engine.begin() as conn:
                conn.exec_driver_sql(f'DROP TRIGGER refuse ON "{schema}".runs')
            _wait_until(lambda: any(r.status == "succeeded" for r in later("bad")), "bad fires again")
            sources = lambda: {p["source"] for p in scheduler.problems()}  # noqa: E731
            _wait_until(lambda: "claims:bad" not in sources(), "health back")
        finally:
            scheduler.close()
            engine.dispose()
