#!/usr/bin/env python3
"""Several scheduler processes sharing one PostgreSQL database: throughput, cost and fairness.

Starts its own throw-away PostgreSQL (fsync on, as a real server) and Redis in a temporary
directory, then for each scenario a fresh database and N worker processes, each a
PipelineScheduler on the SQLAlchemy store with its own node id (and, when run as root, its own
UTS namespace, so its own host name). Every worker declares the same schedules; the fires are
one-off schedules (``schedule_once``) due at chosen instants, running a no-op job.

  burst   10,000 fires due at one instant, N = 1, 2, 4 workers: claimed-and-recorded fires/s
          (fires / (last completed_at - the instant)), commits and rollbacks per fire (deltas of
          pg_stat_database xact_commit / xact_rollback of the scenario's database, heartbeats and
          everything else included), claim attempts per fire, fires per worker, CPU seconds of
          the workers and of PostgreSQL
  spread  10,000 fires spread evenly over 10 s across 4 workers: start lag p50/p99/max
          (started_at - fire_time of each run), fires per worker
  propagation  3 workers serving one 1 s interval schedule, heartbeat 1 s and 5 s: a control
          scheduler on the same database (never started, as the CLI) disables, enables and
          redefines it; seconds from its call's return until the workers' runs show the change
          (last run after a disable, first run after an enable, last old and first new cadence
          after a redefinition), and a schedule added on one worker alone until its first run

    python bench/multinode.py                 # everything (about 5 minutes on 2 cores)
    python bench/multinode.py --fires 2000 --workers 1 2 --no-spread   # a smoke run
    python bench/multinode.py --no-burst --no-spread   # the propagation scenario alone
    python bench/multinode.py --save          # also writes bench/results/multinode-<UTC>.txt

Needs PostgreSQL's server binaries (initdb, pg_ctl; /usr/lib/postgresql/*/bin), redis-server for
``--redis``, and the postgres and redis extras in this Python.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

UTC = timezone.utc
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
PROPAGATION_SCHEDULE = "tick"


# =====================================================================================
# Worker side: one PipelineScheduler, reporting a JSON line when it stops.
# =====================================================================================


def _noop() -> None:
    return None


def worker_main(spec: Dict[str, Any]) -> None:
    """Declare the scenario's schedules, start, print READY, run until stdin closes, print RESULT."""
    import logging

    from flowyml_lite.core.scheduler import PipelineScheduler
    from flowyml_lite.core.scheduler_config import SchedulerConfig
    from flowyml_lite_ext.sqlalchemy_store import SQLAlchemyStore

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    counts: Dict[str, float] = {
        "claim_many": 0,
        "claims": 0,
        "claimed": 0,
        "finish_runs": 0,
        "outcomes": 0,
        "claim_seconds": 0.0,
        "finish_seconds": 0.0,
    }

    class CountingStore(SQLAlchemyStore):
        """The store, counting what the runtime asks of it."""

        def claim_many(self, claims: Any, outcomes: Any = ()) -> Any:
            started = time.perf_counter()
            result = super().claim_many(claims, outcomes)
            counts["claim_seconds"] += time.perf_counter() - started
            counts["claim_many"] += 1
            counts["claims"] += len(claims)
            counts["claimed"] += sum(1 for r in result if r is not None)
            counts["outcomes"] += len(outcomes)
            return result

        def finish_runs(self, outcomes: Any) -> Any:
            counts["finish_runs"] += 1
            counts["outcomes"] += len(outcomes)
            started = time.perf_counter()
            try:
                return super().finish_runs(outcomes)
            finally:
                counts["finish_seconds"] += time.perf_counter() - started

    store = CountingStore(spec["url"])
    config = SchedulerConfig(
        store="postgresql",
        store_url=spec["url"],
        node_id=spec["node"],
        heartbeat_seconds=1.0,
        node_timeout_seconds=10.0,
        max_concurrent_runs=spec["concurrency"],
        **(
            {"distributed": True, "lock_backend": "redis", "redis_url": spec["redis_url"]}
            if spec.get("redis_url")
            else {}
        ),
        history_retention_days=None,
        history_max_runs=None,
    )
    scheduler = PipelineScheduler(config, store=store)
    start = datetime.fromisoformat(spec["first"])
    step = timedelta(microseconds=spec["step_us"])
    for i in range(spec["fires"]):
        scheduler.schedule_once(f"f{i:06d}", _noop, at=start + step * i)
    scheduler.start()
    print("READY", flush=True)
    sys.stdin.readline()
    scheduler.close()
    print("RESULT " + json.dumps({"node": spec["node"], **counts}), flush=True)


def propagation_worker_main(spec: Dict[str, Any]) -> None:
    """The propagation scenario's worker: declare ``tick`` (1 s), start, obey stdin, print RESULT.

    Each line on stdin ``add NAME`` declares NAME (1 s interval, no-op) here only and answers
    ``ADDED <time.time() after the call>``; end of input stops the worker.
    """
    import logging

    from flowyml_lite.core.scheduler import PipelineScheduler
    from flowyml_lite.core.scheduler_config import SchedulerConfig
    from flowyml_lite_ext.sqlalchemy_store import SQLAlchemyStore

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    heartbeat = float(spec["heartbeat"])
    config = SchedulerConfig(
        store="postgresql",
        store_url=spec["url"],
        node_id=spec["node"],
        heartbeat_seconds=heartbeat,
        node_timeout_seconds=max(10.0, 6 * heartbeat),
        history_retention_days=None,
        history_max_runs=None,
    )
    scheduler = PipelineScheduler(config, store=SQLAlchemyStore(spec["url"]))
    scheduler.schedule_interval(PROPAGATION_SCHEDULE, _noop, seconds=1)
    scheduler.start()
    print("READY", flush=True)
    added = []
    for line in sys.stdin:
        words = line.split()
        if len(words) == 2 and words[0] == "add":
            scheduler.schedule_interval(words[1], _noop, seconds=1)
            print(f"ADDED {time.time():.6f}", flush=True)
            added.append(words[1])
    scheduler.close()
    print("RESULT " + json.dumps({"node": spec["node"], "added": added}), flush=True)


# =====================================================================================
# Coordinator side: servers, scenarios, numbers.
# =====================================================================================


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port} after {limit:.0f} s") from None
            time.sleep(0.1)


class Servers:
    """A throw-away PostgreSQL cluster (fsync on) and Redis server in a temporary directory."""

    def __init__(self, redis: bool) -> None:
        self.dir = tempfile.mkdtemp(prefix="flowyml-multinode-")
        self.pg_port = free_port()
        self.pg_bin = self._pg_bin()
        self.as_pg: List[str] = ["runuser", "-u", "postgres", "--"] if IS_ROOT else []
        self.redis: Optional[subprocess.Popen[bytes]] = None
        self.redis_url: Optional[str] = None
        self._start_postgres()
        if redis:
            self._start_redis()

    @staticmethod
    def _pg_bin() -> str:
        base = "/usr/lib/postgresql"
        versions = sorted(os.listdir(base), key=lambda v: [int(p) for p in v.split(".") if p.isdigit()])
        if not versions:
            raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql")
        return os.path.join(base, versions[-1], "bin")

    def _start_postgres(self) -> None:
        data, sock = os.path.join(self.dir, "data"), os.path.join(self.dir, "sock")
        os.makedirs(sock)
        if IS_ROOT:  # PostgreSQL refuses to run as root: the cluster belongs to the postgres user
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(sock, "postgres", "postgres")
        subprocess.run(
            [
                *self.as_pg,
                f"{self.pg_bin}/initdb",
                "-D",
                data,
                "-U",
                "flowyml",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        options = f"-p {self.pg_port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=200"
        subprocess.run(
            [
                *self.as_pg,
                f"{self.pg_bin}/pg_ctl",
                "-D",
                data,
                "-l",
                f"{self.dir}/server.log",
                "-w",
                "-o",
                options,
                "start",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.data = data

    def _start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        port = free_port()
        self.redis = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port)
        self.redis_url = f"redis://127.0.0.1:{port}/0"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://flowyml@127.0.0.1:{self.pg_port}/{database}"

    def settings(self) -> Dict[str, str]:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url("postgres"))
        with engine.connect() as conn:
            shown = {
                name: str(conn.exec_driver_sql(f"SHOW {name}").scalar())
                for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers")
            }
        engine.dispose()
        return shown

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait(30)
        subprocess.run(
            [*self.as_pg, f"{self.pg_bin}/pg_ctl", "-D", self.data, "-m", "immediate", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


class Database:
    """A fresh database for one scenario, with an admin engine on the ``postgres`` database."""

    def __init__(self, servers: Servers, name: str, settings: Optional[Dict[str, str]] = None) -> None:
        import sqlalchemy as sa

        self.sa = sa
        self.name = name
        self.url = servers.url(name)
        self.admin = sa.create_engine(servers.url("postgres"), isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
            for setting, value in (settings or {}).items():
                conn.exec_driver_sql(f"ALTER DATABASE {name} SET {setting} = '{value}'")

    def xacts(self) -> Tuple[int, ...]:
        """(xact_commit, xact_rollback, rows inserted, updated, deleted, WAL bytes) so far."""
        with self.admin.connect() as conn:
            conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                self.sa.text(
                    "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, "
                    "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') FROM pg_stat_database WHERE datname = :d"
                ),
                {"d": self.name},
            ).one()
        return tuple(int(v) for v in row)

    def runs(self) -> List[Tuple[str, int, Optional[int], Optional[int], str, str]]:
        """(node_id, fire_time, started_at, completed_at, status, schedule) of every run (instants in µs)."""
        engine = self.sa.create_engine(self.url)
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT node_id, fire_time, started_at, completed_at, status, schedule FROM runs"
            ).all()
        engine.dispose()
        return [tuple(r) for r in rows]  # type: ignore[misc]

    def count_final(self) -> int:
        engine = self.sa.create_engine(self.url)
        with engine.connect() as conn:
            done = conn.exec_driver_sql("SELECT count(*) FROM runs WHERE status = 'succeeded'").scalar()
        engine.dispose()
        return int(done or 0)

    def drop(self) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        self.admin.dispose()


def prepare_schedules(url: str, fires: int, first: datetime, step_us: int) -> None:
    """Declare the scenario's schedules once, as the workers will (setup, not measured).

    Through a PipelineScheduler, so the rows are exactly what the workers' declarations expect,
    but with the inserts gathered into multi-row INSERTs instead of one transaction each.
    """
    from flowyml_lite.core.scheduler import PipelineScheduler
    from flowyml_lite.core.scheduler_config import SchedulerConfig
    from flowyml_lite.stores.base import ScheduleRecord
    from flowyml_lite_ext.sqlalchemy_store import SCHEDULES, SQLAlchemyStore

    class GatheringStore(SQLAlchemyStore):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.gathered: List[ScheduleRecord] = []

        def declare_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
            now = datetime.now(UTC)
            record.created_at = record.updated_at = now
            self.gathered.append(record)
            return record

        def flush(self) -> None:
            import sqlalchemy as sa

            from flowyml_lite.stores.schema import opt_to_us, to_json, to_us

            rows = [
                {
                    "name": r.name,
                    "type": r.schedule_type,
                    "value": r.schedule_value,
                    "timezone": r.timezone,
                    "definition_hash": r.definition_hash,
                    "options": to_json(r.options, "options"),
                    "context": to_json(r.context, "context"),
                    "enabled": 1,
                    "next_fire": opt_to_us(r.next_fire, "next_fire"),
                    "last_fire": None,
                    "created_at": to_us(r.created_at, "created_at"),  # type: ignore[arg-type]
                    "updated_at": to_us(r.updated_at, "updated_at"),  # type: ignore[arg-type]
                }
                for r in self.gathered
            ]
            with self._engine.begin() as conn:
                for start in range(0, len(rows), 1000):
                    conn.execute(sa.insert(SCHEDULES), rows[start : start + 1000])

    store = GatheringStore(url)
    scheduler = PipelineScheduler(SchedulerConfig(node_id="setup"), store=store)
    step = timedelta(microseconds=step_us)
    for i in range(fires):
        scheduler.schedule_once(f"f{i:06d}", _noop, at=first + step * i)
    store.flush()
    scheduler.close()
    store.close()


def start_workers(
    url: str, n: int, fires: int, first: datetime, step_us: int, concurrency: int, redis_url: Optional[str]
) -> List[subprocess.Popen[str]]:
    specs = [
        {
            "url": url,
            "node": f"worker-{i + 1}",
            "fires": fires,
            "first": first.isoformat(),
            "step_us": step_us,
            "concurrency": concurrency,
            "redis_url": redis_url,
        }
        for i in range(n)
    ]
    return launch_workers(specs)


def launch_workers(specs: Sequence[Dict[str, Any]]) -> List[subprocess.Popen[str]]:
    """One worker process per spec (worker i on host ``host-i`` when run as root); wait for READY."""
    workers = []
    for i, spec in enumerate(specs):
        command = [sys.executable, os.path.abspath(__file__), "worker", json.dumps(spec)]
        if IS_ROOT and shutil.which("unshare"):
            # Its own UTS namespace: its own host name, as on a host of its own.
            command = [
                "unshare",
                "--uts",
                "--",
                "sh",
                "-c",
                'hostname "$0" && exec "$@"',
                f"host-{i + 1}",
                *command,
            ]
        workers.append(
            subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        )
    for worker in workers:
        assert worker.stdout is not None
        line = worker.stdout.readline().strip()
        if line != "READY":
            raise RuntimeError(f"a worker did not start (said {line!r}); see its stderr above")
    return workers


def stop_workers(workers: Sequence[subprocess.Popen[str]]) -> List[Dict[str, Any]]:
    results = []
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.close()
    for worker in workers:
        assert worker.stdout is not None
        for line in worker.stdout:
            if line.startswith("RESULT "):
                results.append(json.loads(line[len("RESULT ") :]))
        worker.wait(120)
    return results


def wait_for(db: Database, fires: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    while db.count_final() < fires:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {db.count_final()} of {fires} fires recorded after {limit:.0f} s")
        time.sleep(0.25)


def cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system) of a live process; with ``children``, of its reaped children too."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu(servers: Servers) -> float:
    """CPU seconds the PostgreSQL cluster used so far: the postmaster, its live and its ended backends."""
    try:
        with open(os.path.join(servers.data, "postmaster.pid"), encoding="ascii") as fh:
            master = int(fh.readline())
    except (OSError, ValueError):
        return 0.0
    total = cpu_seconds(master, children=True)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == master:
            total += cpu_seconds(int(entry))
    return total


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def scenario(
    servers: Servers,
    label: str,
    n: int,
    fires: int,
    spread_seconds: float,
    lead_seconds: float,
    concurrency: int,
    redis: bool,
    settings: Optional[Dict[str, str]] = None,
    profile_dir: Optional[str] = None,
) -> Dict[str, Any]:
    """One scenario in a fresh database: N workers, ``fires`` fires over ``spread_seconds`` from T.

    With ``profile_dir``, worker 1 is sampled with py-spy (``--format raw``, only the thread holding
    the GIL: where the worker's CPU goes) from just before the first fire until every fire is
    recorded: ``<label>-worker-1.txt``. The CPU seconds of every worker and of PostgreSQL over the
    same span are measured in any case.
    """
    db = Database(servers, f"bench_{label}", settings)
    try:
        step_us = int(spread_seconds * 1_000_000 / fires) if spread_seconds else 0
        # Far enough ahead for the setup and the workers' start (measured: well under this on 2 cores).
        first = datetime.now(UTC) + timedelta(seconds=lead_seconds)
        t0 = time.monotonic()
        prepare_schedules(db.url, fires, first, step_us)
        print(
            f"  ({label}: schedules declared in {time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True
        )
        workers = start_workers(
            db.url, n, fires, first, step_us, concurrency, servers.redis_url if redis else None
        )
        ready = time.monotonic() - t0
        if datetime.now(UTC) > first - timedelta(seconds=3):
            for worker in workers:
                worker.kill()
            raise RuntimeError(f"setup took {ready:.1f} s, past the instant: raise --lead")
        time.sleep(max(0.0, (first - datetime.now(UTC)).total_seconds() - 1.5))
        before = db.xacts()
        cpu_before = [cpu_seconds(w.pid) for w in workers], postgres_cpu(servers)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        spy = None
        if profile_dir is not None:
            os.makedirs(profile_dir, exist_ok=True)
            out = os.path.join(profile_dir, f"{label}-worker-1.txt")
            spy_bin = os.path.join(os.path.dirname(sys.executable), "py-spy")
            spy_args = ["record", "--format", "raw", "--rate", "250", "--threads", "--gil", "--output", out]
            spy = subprocess.Popen(
                [spy_bin, *spy_args, "--pid", str(workers[0].pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        wait_for(db, fires, limit=600)
        cpu_workers = [cpu_seconds(w.pid) - b for w, b in zip(workers, cpu_before[0])]
        cpu_postgres = postgres_cpu(servers) - cpu_before[1]
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        # A backend flushes its statistics when its session ends (while idle, only now and then):
        # stop the workers first, so every commit of the scenario is counted (their shutdown's too).
        counts = stop_workers(workers)
        time.sleep(0.5)
        after = db.xacts()
        runs = db.runs()
    finally:
        db.drop()
    first_us = int((first - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000)
    final = [r for r in runs if r[4] == "succeeded"]
    last_done = max(r[3] for r in final if r[3] is not None)
    span = (last_done - first_us - int(spread_seconds * 1_000_000)) / 1e6 if spread_seconds else None
    lags = [(r[2] - r[1]) / 1000.0 for r in final if r[2] is not None]
    shares: Dict[str, int] = {}
    for r in final:
        shares[r[0]] = shares.get(r[0], 0) + 1
    commits, rollbacks = after[0] - before[0], after[1] - before[1]
    attempts = sum(c["claims"] for c in counts)
    return {
        "label": label,
        "workers": n,
        "fires": fires,
        "recorded": len(final),
        "statuses": sorted({r[4] for r in runs}),
        "duplicates": len(runs) - len({(r[5], r[1]) for r in runs}),
        "drain_seconds": (last_done - first_us) / 1e6,
        "fires_per_second": len(final) / ((last_done - first_us) / 1e6) if not spread_seconds else None,
        "tail_after_window_seconds": span,
        "commits_per_fire": commits / fires,
        "rows_inserted_per_fire": (after[2] - before[2]) / fires,
        "rows_updated_per_fire": (after[3] - before[3]) / fires,
        "rows_deleted_per_fire": (after[4] - before[4]) / fires,
        "wal_bytes_per_fire": (after[5] - before[5]) / fires,
        "rollbacks_per_fire": rollbacks / fires,
        "claim_attempts_per_fire": attempts / fires,
        "claim_transactions": sum(c["claim_many"] for c in counts),
        "store_seconds": sum(c["claim_seconds"] + c["finish_seconds"] for c in counts),
        "outcome_transactions": sum(c["finish_runs"] for c in counts),
        "lag_p50_ms": statistics.median(lags) if lags else None,
        "lag_p99_ms": percentile(lags, 0.99) if lags else None,
        "lag_max_ms": max(lags) if lags else None,
        "shares": dict(sorted(shares.items())),
        "setup_seconds": ready,
        "cpu_workers_seconds": [round(c, 2) for c in cpu_workers],
        "cpu_postgres_seconds": round(cpu_postgres, 2),
        "load_average": load,
    }


def store_alone(servers: Servers, fires: int, group: int = 1000) -> Dict[str, float]:
    """The store's ceiling: ``fires`` due fires claimed and recorded through SQLAlchemyStore alone.

    One connection, groups of ``group`` claims each carrying the previous group's outcomes (as the
    runtime sends them), no scheduler, no jobs: what one worker's store calls cost at most.
    """
    import uuid

    from flowyml_lite.stores.base import Claim, Outcome, RunRecord
    from flowyml_lite_ext.sqlalchemy_store import SQLAlchemyStore

    db = Database(servers, "bench_store_alone")
    try:
        due = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        prepare_schedules(db.url, fires, due, 0)
        store = SQLAlchemyStore(db.url)
        with store._engine.connect() as conn:
            names = [
                row[0] for row in conn.exec_driver_sql("SELECT name, next_fire FROM schedules ORDER BY name")
            ]
        record = store.get_schedule(names[0])
        assert record is not None and record.next_fire is not None
        fire = record.next_fire
        before = db.xacts()
        started = time.perf_counter()
        outcomes: List[Any] = []
        claimed = 0
        for start in range(0, len(names), group):
            claims = [
                Claim(
                    name, fire, None, [RunRecord(uuid.uuid4().hex, name, fire, "running", "bench", fire)], 1
                )
                for name in names[start : start + group]
            ]
            results = store.claim_many(claims, outcomes)
            done = datetime.now(UTC)
            outcomes = [Outcome(r[0].run_key, "succeeded", done, 0.0, node_id="bench") for r in results if r]
            claimed += len(outcomes)
        store.finish_runs(outcomes)
        elapsed = time.perf_counter() - started
        store.close()  # its sessions end: their statistics are flushed
        time.sleep(0.5)
        after = db.xacts()
    finally:
        db.drop()
    return {
        "fires": claimed,
        "seconds": elapsed,
        "fires_per_second": claimed / elapsed,
        "commits_per_fire": (after[0] - before[0]) / claimed,
    }


def housekeeping_costs(servers: Servers, schedules: int) -> Dict[str, float]:
    """Milliseconds per call of a worker's per-heartbeat store calls at ``schedules`` schedules.

    ``schedule_versions`` with nothing changed, beside what the contract's default does (read and
    decode every schedule, then filter); with every row changed within the sync's margin (just
    after a deploy) and nothing since, answered from the kept answer and by reading the rows again;
    plus heartbeat(), active_run_nodes() and expired_nodes().
    """
    from flowyml_lite.stores.base import NodeRecord

    db = Database(servers, "bench_housekeeping")
    try:
        prepare_schedules(db.url, schedules, datetime.now(UTC) + timedelta(days=1), 1000)
        from flowyml_lite_ext.sqlalchemy_store import SQLAlchemyStore

        store = SQLAlchemyStore(db.url)
        since = datetime.now(UTC) + timedelta(seconds=1)
        node = NodeRecord("worker-1", "host-1", os.getpid(), datetime.now(UTC), datetime.now(UTC))
        calls: Dict[str, Any] = {
            "schedule_versions, nothing changed": lambda: store.schedule_versions(since),
            # The contract's default: every schedule read and decoded, then filtered.
            "the same by a full read (no incremental query)": lambda: {
                r.name: r.updated_at for r in store.list_schedules() if r.updated_at and r.updated_at >= since
            },
            # A deploy declared every schedule within the sync's margin: asked again at every beat.
            "schedule_versions, all rows within the margin, unchanged since the last call": lambda: (
                store.schedule_versions(datetime.now(UTC) - timedelta(days=1))
            ),
            "the same, reading the rows again (no kept answer)": lambda: (
                setattr(store, "_versions", None),
                store.schedule_versions(datetime.now(UTC) - timedelta(days=1)),
            ),
            "heartbeat": lambda: store.heartbeat(node),
            "active_run_nodes (the lost-node judgment)": lambda: store.active_run_nodes(),
            "expired_nodes": lambda: store.expired_nodes(10.0, datetime.now(UTC)),
        }
        costs = {}
        for what, call in calls.items():
            call()
            rounds = 5 if "full" in what else 50
            started = time.perf_counter()
            for _ in range(rounds):
                call()
            costs[what] = (time.perf_counter() - started) / rounds * 1000
        store.close()
    finally:
        db.drop()
    return costs


# =====================================================================================
# Propagation: a change made by one process, in force on the workers.
# =====================================================================================

REDEFINED_SECONDS = 2.5  # the redefined interval: its fires at x.5 s tell it apart from the 1 s grid's


def _one_second_only(fire_us: int) -> bool:
    """A fire of the 1 s grid that the 2.5 s grid has not (an old-cadence fire, or a restored one)."""
    return fire_us % 1_000_000 == 0 and fire_us % 2_500_000 != 0


def _redefined_only(fire_us: int) -> bool:
    """A fire of the 2.5 s grid that the 1 s grid has not (at x.5 s)."""
    return fire_us % 2_500_000 == 0 and fire_us % 1_000_000 != 0


class Runs:
    """The started runs of a schedule, as the workers record them: (node, fire_time µs, started_at s)."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        self.sa = sa
        self.engine = sa.create_engine(url)

    def read(self, name: str, after: float) -> List[Tuple[str, int, float]]:
        """Runs of ``name`` started after ``after`` (time.time()), in fire order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                self.sa.text(
                    "SELECT node_id, fire_time, started_at FROM runs WHERE schedule = :s "
                    "AND started_at IS NOT NULL AND started_at > :t ORDER BY fire_time"
                ),
                {"s": name, "t": int(after * 1_000_000)},
            ).all()
        return [(str(r[0]), int(r[1]), int(r[2]) / 1e6) for r in rows]

    def wait(
        self, name: str, after: float, done: Any, limit: float
    ) -> Tuple[bool, List[Tuple[str, int, float]]]:
        """Poll every 50 ms until ``done(runs)``; (False, runs) after ``limit`` seconds."""
        deadline = time.time() + limit
        while True:
            runs = self.read(name, after)
            if done(runs):
                return True, runs
            if time.time() > deadline:
                return False, runs
            time.sleep(0.05)

    def duplicates(self, name: str) -> int:
        with self.engine.connect() as conn:
            found = conn.execute(
                self.sa.text("SELECT count(*) - count(DISTINCT fire_time) FROM runs WHERE schedule = :s"),
                {"s": name},
            ).scalar()
        return int(found or 0)

    def nodes(self, name: str) -> Dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                self.sa.text(
                    "SELECT node_id, count(*) FROM runs WHERE schedule = :s AND started_at IS NOT NULL "
                    "GROUP BY node_id ORDER BY node_id"
                ),
                {"s": name},
            ).all()
        return {str(r[0]): int(r[1]) for r in rows}


def propagation(servers: Servers, heartbeat: float, reps: int, n: int) -> Dict[str, Any]:
    """N workers serving ``tick`` (1 s); a control scheduler (never started) changes it; delays measured.

    Each repetition, from the control's call returning (time.time(), same host as the workers):
    disable, then watch ``2 heartbeats + 2 s``: runs of ``tick`` started after the call (expected
    none); enable: until the first run starts; redefine to 2.5 s: until the last run on the old
    1 s grid (fires at whole seconds not on the 2.5 s grid) and the first on the new one after it
    (at x.5 s), watched until the old grid has not fired for 6 s; redefine back to 1 s: the same
    the other way. A change not in force after ``6 heartbeats + 20 s`` is reported as such.
    Then, ``reps`` times, a schedule added on worker 1 alone (``add`` on its stdin): until its
    first run, which nodes run it, and the largest gap between ``tick``'s fires meanwhile (its split
    among the workers changes: worker 1 serves another set).
    """
    import logging

    from flowyml_lite.core.scheduler import PipelineScheduler
    from flowyml_lite.core.scheduler_config import SchedulerConfig
    from flowyml_lite_ext.sqlalchemy_store import SQLAlchemyStore

    # The control re-declares ``tick`` with another definition on purpose: no warning for that.
    logging.getLogger("flowyml_lite").setLevel(logging.ERROR)
    name = PROPAGATION_SCHEDULE
    settle = 2 * heartbeat + 2.0  # a change is watched this long at least
    limit = 6 * heartbeat + 20.0  # a change not in force by then is reported as such
    result: Dict[str, Any] = {
        "heartbeat_seconds": heartbeat,
        "workers": n,
        "repetitions": reps,
        "disable_seconds": [],
        "runs_after_disable": 0,
        "enable_seconds": [],
        "redefine_old_last_seconds": [],
        "redefine_new_first_seconds": [],
        "restore_old_last_seconds": [],
        "restore_new_first_seconds": [],
        "added_first_run_seconds": [],
        "added_nodes": [],
        "tick_max_gap_while_adding_seconds": [],
        "not_in_force": [],
    }
    db = Database(servers, f"bench_propagation_{int(heartbeat * 1000)}ms")
    workers: List[subprocess.Popen[str]] = []
    control = None
    runs = Runs(db.url)
    try:
        specs = [
            {"mode": "propagation", "url": db.url, "node": f"worker-{i + 1}", "heartbeat": heartbeat}
            for i in range(n)
        ]
        workers = launch_workers(specs)
        config = SchedulerConfig(
            store="postgresql",
            store_url=db.url,
            node_id="control",
            heartbeat_seconds=heartbeat,
            node_timeout_seconds=max(10.0, 6 * heartbeat),
            history_retention_days=None,
            history_max_runs=None,
        )
        control = PipelineScheduler(config, store=SQLAlchemyStore(db.url))
        control.schedule_interval(name, _noop, seconds=1)  # the workers' definition: no write
        time.sleep(2 * heartbeat + 1)  # every worker has seen the others: the split is in force
        began = time.time()
        ok, _ = runs.wait(name, began, lambda found: len(found) >= 2, limit)
        if not ok:
            raise RuntimeError(f"{name} does not fire on the workers")
        for _ in range(reps):
            control.disable(name)
            t = time.time()
            time.sleep(settle)
            late = runs.read(name, t)
            result["runs_after_disable"] += len(late)
            result["disable_seconds"].append(max((r[2] - t for r in late), default=0.0))

            control.enable(name)
            t = time.time()
            ok, found = runs.wait(name, t, bool, limit)
            if ok:
                result["enable_seconds"].append(min(r[2] for r in found) - t)
            else:
                result["not_in_force"].append("enable")
            time.sleep(1.5)  # a few fires at the 1 s cadence

            for seconds, key, is_old, is_new in (
                (REDEFINED_SECONDS, "redefine", _one_second_only, _redefined_only),
                (1.0, "restore", _redefined_only, _one_second_only),
            ):
                control.schedule_interval(name, _noop, seconds=seconds)
                t = time.time()

                def done(
                    found: List[Tuple[str, int, float]],
                    t: float = t,
                    is_old: Any = is_old,
                    is_new: Any = is_new,
                ) -> bool:
                    # In force: a fire of the new definition after the last of the old one, and none
                    # of the old one for two 2.5 s periods and a second (either grid shows up by then).
                    last_old = max((r[2] for r in found if is_old(r[1])), default=t)
                    new = [r[2] for r in found if is_new(r[1]) and r[2] > last_old]
                    now = time.time()
                    return bool(new) and now >= t + settle and now - last_old >= 2 * REDEFINED_SECONDS + 1

                ok, found = runs.wait(name, t, done, limit)
                last_old = max((r[2] for r in found if is_old(r[1])), default=t)
                new = [r[2] for r in found if is_new(r[1]) and r[2] > last_old]
                result[f"{key}_old_last_seconds"].append(last_old - t)
                if ok:
                    result[f"{key}_new_first_seconds"].append(min(new) - t)
                else:
                    result["not_in_force"].append(key)
            time.sleep(1.0)

        adder = workers[0]
        assert adder.stdin is not None and adder.stdout is not None
        for k in range(reps):
            added = f"added{k}"
            adder.stdin.write(f"add {added}\n")
            adder.stdin.flush()
            line = adder.stdout.readline().split()
            if len(line) != 2 or line[0] != "ADDED":
                raise RuntimeError(f"worker-1 did not add {added} (said {line!r})")
            t = float(line[1])
            ok, found = runs.wait(
                added, t, lambda found, t=t: bool(found) and time.time() >= t + settle, limit
            )
            if ok:
                result["added_first_run_seconds"].append(min(r[2] for r in found) - t)
            else:
                result["not_in_force"].append(added)
            result["added_nodes"].append(sorted({r[0] for r in found}))
            fires = [r[1] for r in runs.read(name, t - 1.0)]
            gaps = [(b - a) / 1e6 for a, b in zip(fires, fires[1:])]
            result["tick_max_gap_while_adding_seconds"].append(max(gaps, default=0.0))
        result["tick_nodes"] = runs.nodes(name)
        result["tick_duplicates"] = runs.duplicates(name)
        stop_workers(workers)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(30)
        if control is not None:
            control.close()
        runs.engine.dispose()
        db.drop()
    return result


def show_propagation(r: Dict[str, Any]) -> List[str]:
    def spread(values: Sequence[float]) -> str:
        if not values:
            return "none measured"
        return (
            f"min {min(values):.2f} / median {statistics.median(values):.2f} / max {max(values):.2f} s "
            f"({len(values)})"
        )

    hb = r["heartbeat_seconds"]
    lines = [
        f"  heartbeat {hb:g} s, {r['workers']} workers, {r['repetitions']} repetitions; tick runs per worker "
        + ", ".join(f"{k} {v}" for k, v in r["tick_nodes"].items())
        + f"; duplicate fires {r['tick_duplicates']}",
        f"    disable -> last run started after the call: {spread(r['disable_seconds'])}, "
        f"runs started after a disable returned: {r['runs_after_disable']}",
        f"    enable -> first run: {spread(r['enable_seconds'])} (1 s grid: up to 1 s of it is the cadence)",
        f"    redefine 1 s -> {REDEFINED_SECONDS:g} s: old cadence last started "
        f"{spread(r['redefine_old_last_seconds'])} after the call; new cadence alone from "
        f"{spread(r['redefine_new_first_seconds'])}",
        f"    redefine {REDEFINED_SECONDS:g} s -> 1 s: old cadence last started "
        f"{spread(r['restore_old_last_seconds'])}; new cadence alone from "
        f"{spread(r['restore_new_first_seconds'])}",
        f"    schedule added on worker-1 alone -> first run {spread(r['added_first_run_seconds'])}, run by "
        + ", ".join("+".join(nodes) or "nobody" for nodes in r["added_nodes"])
        + " (only the worker that declared it has its function); largest gap between tick's fires "
        f"meanwhile {max(r['tick_max_gap_while_adding_seconds'], default=0.0):.2f} s",
    ]
    if r["not_in_force"]:
        lines.append(f"    NOT IN FORCE within {6 * hb + 20:g} s: {', '.join(r['not_in_force'])}")
    return lines


def show(result: Dict[str, Any]) -> List[str]:
    r = result
    lines = [
        f"  {r['label']}: {r['workers']} worker(s), {r['recorded']}/{r['fires']} fires recorded, "
        f"statuses {r['statuses']}, duplicate fires {r['duplicates']}"
        + (
            f"; host load average {r['load_average']:.1f} at the start"
            if r.get("load_average") is not None
            else ""
        )
    ]
    if r["fires_per_second"] is not None:
        lines.append(
            f"    drained in {r['drain_seconds']:.2f} s = "
            f"{r['fires_per_second']:,.0f} claimed-and-recorded fires/s"
        )
    lines.append(
        f"    per fire: {r['commits_per_fire']:.3f} commits, {r['rollbacks_per_fire']:.4f} rollbacks, "
        f"{r['claim_attempts_per_fire']:.3f} claim attempts; {r['claim_transactions']} claim transactions, "
        f"{r['outcome_transactions']} outcome-only transactions, "
        f"{r['store_seconds']:.2f} s in them (all workers)"
    )
    lines.append(
        f"    rows per fire: {r['rows_inserted_per_fire']:.2f} inserted, "
        f"{r['rows_updated_per_fire']:.2f} updated, "
        f"{r['rows_deleted_per_fire']:.2f} deleted; WAL {r['wal_bytes_per_fire']:,.0f} bytes per fire "
        "(the whole cluster's: heartbeats and housekeeping included)"
    )
    lines.append(
        f"    start lag p50 {r['lag_p50_ms']:.1f} ms, p99 {r['lag_p99_ms']:.1f} ms, "
        f"max {r['lag_max_ms']:.1f} ms"
    )
    if r.get("cpu_workers_seconds") is not None:
        lines.append(
            f"    CPU from 1.5 s before the first fire to the last recorded: workers "
            f"{sum(r['cpu_workers_seconds']):.2f} s ("
            + " + ".join(f"{c:.2f}" for c in r["cpu_workers_seconds"])
            + f"), PostgreSQL {r['cpu_postgres_seconds']:.2f} s"
        )
    total = sum(r["shares"].values()) or 1
    lines.append(
        "    fires per worker: "
        + ", ".join(f"{k} {v} ({100 * v / total:.0f}%)" for k, v in r["shares"].items())
    )
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fires", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--spread-seconds", type=float, default=10.0)
    parser.add_argument("--spread-workers", type=int, default=4)
    parser.add_argument("--no-spread", action="store_true")
    parser.add_argument("--no-burst", action="store_true", help="only the spread scenarios")
    parser.add_argument("--redis", action="store_true", help="also a burst with the Redis lock (4 workers)")
    parser.add_argument(
        "--concurrency", type=int, default=10, help="max_concurrent_runs of each worker (the default: 10)"
    )
    parser.add_argument("--lead", type=float, default=60.0, help="seconds from setup to the first fire")
    parser.add_argument(
        "--no-propagation", action="store_true", help="without the propagation scenario (schedule changes)"
    )
    parser.add_argument(
        "--propagation-heartbeats",
        type=float,
        nargs="+",
        default=[1.0, 5.0],
        help="heartbeat_seconds of the propagation scenario's runs (default: 1 and the default 5)",
    )
    parser.add_argument("--propagation-reps", type=int, default=5, help="repetitions of each change")
    parser.add_argument("--propagation-workers", type=int, default=3)
    parser.add_argument("--save", action="store_true")
    parser.add_argument(
        "--profile-dir",
        help="sample worker 1 of each burst and of the spread with py-spy into this directory (raw format, "
        "GIL holder only)",
    )
    args = parser.parse_args(argv)

    servers = Servers(redis=args.redis)
    out: List[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        out.append(line)

    try:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        settings = servers.settings()
        say(f"flowyml_lite multinode benchmark, {stamp}")
        say(
            f"host: {platform.node()} ({os.cpu_count()} cores), Python {platform.python_version()}; "
            f"PostgreSQL {settings['server_version']} (fsync {settings['fsync']}, synchronous_commit "
            f"{settings['synchronous_commit']}, shared_buffers {settings['shared_buffers']}), "
            "own server on loopback"
        )
        say(
            f"workers: {'own UTS namespaces (unshare --uts)' if IS_ROOT else 'distinct node ids'}; "
            f"no-op job, max_concurrent_runs={args.concurrency}"
        )
        git = subprocess.run(["git", "-C", ROOT, "log", "--oneline", "-1"], capture_output=True, text=True)
        say(f"code: {git.stdout.strip()}")
        results = []
        # --no-burst --no-spread: the propagation scenario alone (no store-alone, no housekeeping costs).
        throughput = not (args.no_burst and args.no_spread)
        if throughput:
            alone = store_alone(servers, args.fires)
            say(
                f"\nstore alone (one connection, groups of 1,000 claims carrying the previous group's "
                f"outcomes): {alone['fires']:,} fires claimed and recorded in {alone['seconds']:.2f} s = "
                f"{alone['fires_per_second']:,.0f} fires/s, {alone['commits_per_fire']:.4f} commits per fire"
            )
        if not args.no_burst:
            say(f"\nburst: {args.fires:,} fires due at one instant")
        for n in [] if args.no_burst else args.workers:
            result = scenario(
                servers,
                f"burst{n}",
                n,
                args.fires,
                0.0,
                args.lead,
                args.concurrency,
                False,
                profile_dir=args.profile_dir,
            )
            results.append(result)
            for line in show(result):
                say(line)
        if args.redis and not args.no_burst:
            result = scenario(
                servers,
                "burst4redis",
                4,
                args.fires,
                0.0,
                args.lead,
                args.concurrency,
                True,
                profile_dir=args.profile_dir,
            )
            results.append(result)
            say("  (with the Redis lock)")
            for line in show(result):
                say(line)
        base = next((r for r in results if r["workers"] == 1 and r["label"] == "burst1"), None)
        if base is not None:
            for r in results[1:]:
                say(
                    f"  {r['label']} / burst1 fires/s: {r['fires_per_second'] / base['fires_per_second']:.2f}"
                )
        if not args.no_spread:
            n = args.spread_workers
            say(f"\nspread: {args.fires:,} fires spread evenly over {args.spread_seconds:g} s, {n} workers")
            result = scenario(
                servers,
                f"spread{n}",
                n,
                args.fires,
                args.spread_seconds,
                args.lead,
                args.concurrency,
                False,
                profile_dir=args.profile_dir,
            )
            results.append(result)
            for line in show(result):
                say(line)
            say(
                "  (again with synchronous_commit=off on the database: commits do not wait for the WAL flush)"
            )
            result = scenario(
                servers,
                f"spread{n}async",
                n,
                args.fires,
                args.spread_seconds,
                args.lead,
                args.concurrency,
                False,
                {"synchronous_commit": "off"},
            )
            results.append(result)
            for line in show(result):
                say(line)
        if throughput:
            say(f"\nhousekeeping store calls at {args.fires:,} schedules (ms per call)")
            for what, ms in housekeeping_costs(servers, args.fires).items():
                say(f"  {what}: {ms:.2f} ms")
        propagated = []
        if not args.no_propagation:
            say(
                f"\npropagation: {args.propagation_workers} workers each serving {PROPAGATION_SCHEDULE!r} "
                "(1 s interval, no-op job); a control PipelineScheduler on the same database, never "
                "started (as the CLI), disables, enables and redefines it; seconds from its call's "
                "return to the runs' started_at"
            )
            for heartbeat in args.propagation_heartbeats:
                found = propagation(servers, heartbeat, args.propagation_reps, args.propagation_workers)
                propagated.append(found)
                for line in show_propagation(found):
                    say(line)
        say("\nRESULTS " + json.dumps(results))
        if propagated:
            say("PROPAGATION " + json.dumps(propagated))
    finally:
        servers.stop()
    if args.save:
        os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
        path = os.path.join(ROOT, "bench", "results", f"multinode-{stamp}.txt")
        with open(path, "w") as fh:
            fh.write("\n".join(out) + "\n")
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "worker":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        worker_spec = json.loads(sys.argv[2])
        if worker_spec.get("mode") == "propagation":
            propagation_worker_main(worker_spec)
        else:
            worker_main(worker_spec)
    else:
        sys.exit(main())
