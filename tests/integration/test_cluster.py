"""Several hosts on PostgreSQL and Redis: four workers share the fires, survive each other and the
servers, and never go quiet.

The test starts its own PostgreSQL and redis-server (it stops and restarts them) and four worker
processes (tests/integration/workers/cluster_worker.py), each a ``PipelineScheduler`` on
``postgresql+psycopg://`` with ``distributed=True, lock_backend="redis"``, a heartbeat of 0.5 s and a
node timeout of 3 s; as root each worker runs in its own UTS namespace with its own host name, so the
workers judge each other by heartbeats only, as hosts do. Schedules: ``tick`` (1 s interval),
``cron_sec`` (``* * * * * *``) and 200 intervals of 2, 3, 5 and 10 s; every run appends ``start`` and
``end`` lines with its fire instant to one ``O_APPEND`` log.

Every scenario ends with: no fire started twice (the log), no gap outside the fault's window and every
gap accounted for by a ``missed``/``lost``/``skipped`` row with a reason, every schedule firing again
after the fault, no active row without a live owner, health ``degraded`` while a server is away, and
every worker back to ``running``. The figures (fires, duplicates, gaps, share per worker, start lag)
are printed. ``FLOWYML_SOAK=1`` makes the steady state last 60 s instead of 20 s.

Run: ``python -m pytest tests/integration/test_cluster.py -q -s`` (as root for the network namespace).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import signal
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from tests.integration.cluster import (
    Cluster,
    NetNs,
    Postgres,
    Redis,
    Report,
    Settings,
    analyse,
    ts,
    wait_until,
)
from tests.integration.workers.joblog import read_log, wait_for

pytest.importorskip("sqlalchemy")
pytest.importorskip("psycopg")
pytest.importorskip("redis")

pytestmark = [pytest.mark.slow]

SETTINGS = Settings()
SETTLE = SETTINGS.node_timeout + 5.0  # after a fault's end, gaps are allowed this long (takeover, retries)
PRE = 5.0  # seconds of normal firing in the window before each fault
POST = 4.0  # seconds of normal firing after the settle time
STEADY = 60.0 if os.environ.get("FLOWYML_SOAK") == "1" else 20.0


@dataclass
class Servers:
    pg: Postgres
    redis: Redis
    netns: Optional[NetNs]
    netns_problem: Optional[str]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    base = tmp_path_factory.mktemp("cluster-servers")
    netns: Optional[NetNs] = None
    problem = NetNs.unavailable()
    if problem is None:
        netns = NetNs()
        try:
            netns.create()
        except Exception as exc:
            problem = f"could not make a network namespace with a veth pair: {exc}"
            netns.destroy()
            netns = None
    listen = ["127.0.0.1"] + ([netns.host_addr] if netns else [])
    pg: Optional[Postgres] = None
    redis: Optional[Redis] = None
    try:
        pg = Postgres(listen)
        redis = Redis(base / "redis", listen)
        yield Servers(pg, redis, netns, problem)
    finally:
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.destroy()
        if netns is not None:
            netns.destroy()


Fault = Callable[[Cluster, Servers], Tuple[float, float]]


def run_scenario(
    servers: Servers,
    tmp_path: pathlib.Path,
    name: str,
    fault: Optional[Fault],
    capsys: pytest.CaptureFixture[str],
    steady: float = 0.0,
    in_netns: bool = False,
) -> Tuple[Report, Cluster]:
    """Start the cluster on a fresh database, fire, apply ``fault``, fire on, stop, analyse."""
    database = f"cluster_{name}"
    servers.pg.create_database(database)
    url = servers.pg.url(database)
    netns_urls: Tuple[str, Optional[str]] = ("", None)
    if in_netns:
        assert servers.netns is not None
        host = servers.netns.host_addr
        netns_urls = (servers.pg.url(database, host), servers.redis.url(host))
    cluster = Cluster(
        tmp_path / "cluster",
        url,
        servers.redis.url(),
        SETTINGS,
        servers.netns if in_netns else None,
        netns_urls,
    )
    window_start, drain = 0.0, 0.0
    fault_span: Optional[Tuple[float, float]] = None
    try:
        wait_for(
            lambda: cluster.all_see(SETTINGS.workers), 60, "every worker to see all 4 nodes", cluster.workers
        )
        window_start = math.ceil(time.time()) + 2.0
        if fault is None:
            end = window_start + steady + 1.5
        else:
            wait_until(window_start + PRE)
            fault_span = fault(cluster, servers)
            end = fault_span[1] + SETTLE + POST
        wait_until(end)
        # Lag is not judged here (two noisy cores): wait until every fire up to the window's end has
        # been claimed or recorded by someone (each schedule's stored next fire is past it).
        waited = time.monotonic()
        wait_decided(cluster, url, end - 1.5)
        drain = time.monotonic() - waited
        owners = check_owners(cluster, url)
        final_status = settled_health(cluster)
        results = cluster.stop()
    finally:
        cluster.kill()
    report = analyse(name, cluster, url, (window_start, end - 1.5), fault_span, SETTLE)
    with capsys.disabled():
        print(
            "\n"
            + report.line()
            + f" drain={drain:.1f}s load="
            + "/".join(f"{x:.1f}" for x in os.getloadavg())
        )
        if fault_span is not None:
            print(f"[cluster {name}] fault {ts(fault_span[0])} .. {ts(fault_span[1])}")
        for worker, spans in report.degraded.items():
            for a, b, why in spans:
                print(f"[cluster {name}]   {worker} {why} {ts(a)} .. {ts(b)} ({b - a:.1f}s)")
        outside = set(report.outside_fault)
        shown = [g for g in report.gaps if (g[0], g[1]) in outside][:10] + report.gaps[:4]
        for gap in shown:
            where = "OUTSIDE the fault" if (gap[0], gap[1]) in outside else "in the fault"
            print(f"[cluster {name}]   gap {gap[0]}@{ts(gap[1])} {where}: {gap[2][:200]}")
    (tmp_path / "cluster" / "report.json").write_text(json.dumps(dataclasses.asdict(report), indent=1))
    # Nothing was left in flight without a live owner.
    assert owners == [], owners
    assert report.active_rows_left == [], report.active_rows_left
    assert all(r["drained"] and r["exit_code"] == 0 for r in results.values()), results
    # Once: no fire started twice.
    assert report.duplicates == [], report.duplicates[:20]
    # The history agrees with the log; every gap is accounted for, and only the fault made gaps.
    assert report.mismatched == [], report.mismatched[:20]
    assert report.unaccounted == [], report.unaccounted[:20]
    assert report.outside_fault == [], report.outside_fault[:20]
    assert report.silent == [], report.silent[:20]
    # Health came back: every live worker says ``running`` again (its problems named otherwise).
    still = {
        n: [p["message"] for p in v["problems"]] for n, v in final_status.items() if v["status"] != "running"
    }
    assert still == {}, still
    return report, cluster


def settled_health(cluster: Cluster, patience: float = 30.0) -> Dict[str, Dict[str, Any]]:
    """The live workers' status files once all say ``running`` (or as they are after ``patience``)."""
    deadline = time.monotonic() + patience
    while True:
        found = {n: cluster.status(n) for n in cluster.names if n not in cluster.dead}
        if all(v["status"] == "running" for v in found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def wait_decided(cluster: Cluster, url: str, moment: float) -> None:
    """Wait until every schedule's stored next fire is after ``moment``: its fires up to then have rows."""
    from flowyml_lite_ext.sqlalchemy_store import SQLAlchemyStore

    store = SQLAlchemyStore(url)
    store.open()
    polled = [0.0]

    def decided() -> bool:
        if time.monotonic() - polled[0] < 0.5:
            return False
        polled[0] = time.monotonic()
        try:
            records = store.list_schedules()
        except Exception:  # the server may be coming back
            return False
        return bool(records) and all(
            r.next_fire is not None and r.next_fire.timestamp() > moment for r in records
        )

    try:
        wait_for(decided, 120, "every fire up to the window's end to be claimed", cluster.workers)
    finally:
        store.close()


def check_owners(cluster: Cluster, url: str) -> List[str]:
    """Active rows whose node is not a live worker of this cluster with a fresh heartbeat."""
    from flowyml_lite_ext.sqlalchemy_store import SQLAlchemyStore

    live = {cluster.ready[n]["node_id"] for n in cluster.names if n not in cluster.dead}
    store = SQLAlchemyStore(url)
    store.open()
    try:
        active = store.active_runs()
        expired = {n.node_id for n in store.expired_nodes(SETTINGS.node_timeout, datetime.now(timezone.utc))}
    finally:
        store.close()
    return [
        f"{r.schedule}@{r.fire_time.isoformat()} {r.status} on {r.node_id}"
        for r in active
        if r.node_id not in live or r.node_id in expired
    ]


def degraded_during(report: Report, worker: str, span: Tuple[float, float], source: str) -> bool:
    """The worker reported itself degraded, naming ``source``, at some moment of ``span``."""
    return any(
        a <= span[1] and b >= span[0] and source in why for a, b, why in report.degraded.get(worker, [])
    )


def logged_during(worker: Any, span: Tuple[float, float], level: str, text: str = "") -> List[str]:
    """The ``level`` lines (containing ``text``) the worker logged during ``span`` (its stderr:
    ``asctime name pid logger LEVEL message``)."""
    found = []
    for line in worker.stderr_text(tail=10_000_000).splitlines():
        parts = line.split(" ", 6)
        if len(parts) < 7 or parts[5] != level or text not in parts[6]:
            continue
        try:
            at = datetime.strptime(f"{parts[0]} {parts[1]}", "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        if span[0] <= at <= span[1]:
            found.append(line)
    return found


# -- the faults -------------------------------------------------------------------------------------


def kill_mid_run(cluster: Cluster, servers: Servers) -> Tuple[float, float]:
    """SIGKILL the worker running ``tick`` right now (its start logged, its end not yet)."""
    pids = {pid: name for name, pid in cluster.pids.items()}

    def in_flight() -> Optional[str]:
        open_runs = {}
        for line in read_log(cluster.log):
            if line.schedule == "tick":
                key = (line.pid, line.fire_seen)
                if line.event == "start":
                    open_runs[key] = line.pid
                else:
                    open_runs.pop(key, None)
        for pid in open_runs.values():
            if pid in pids:
                return pids[pid]
        return None

    victim = wait_for(in_flight, 30, "a worker in the middle of a tick run")
    began = time.time()
    cluster.signal(victim, signal.SIGKILL)
    return began, time.time()


def freeze(cluster: Cluster, servers: Servers) -> Tuple[float, float]:
    """SIGSTOP one worker for node_timeout + 3 s, then SIGCONT."""
    began = time.time()
    cluster.signal("w1", signal.SIGSTOP)
    time.sleep(SETTINGS.node_timeout + 3.0)
    cluster.signal("w1", signal.SIGCONT)
    return began, time.time()


def pg_restart(cluster: Cluster, servers: Servers) -> Tuple[float, float]:
    began = time.time()
    servers.pg.restart()
    return began, time.time()


def pg_down(cluster: Cluster, servers: Servers) -> Tuple[float, float]:
    began = time.time()
    servers.pg.stop()
    time.sleep(10.0)
    servers.pg.start()
    return began, time.time()


def redis_down(cluster: Cluster, servers: Servers) -> Tuple[float, float]:
    began = time.time()
    servers.redis.stop()
    time.sleep(10.0)
    servers.redis.start()
    return began, time.time()


def cut_off(cluster: Cluster, servers: Servers) -> Tuple[float, float]:
    """Take the veth link of the last worker down for 20 s (its packets vanish), then up."""
    assert servers.netns is not None
    # Cut just after an instant where every schedule fires: the worker is then in the middle of its
    # claims and lock requests, the case where a request's fate is unknown to its sender.
    wait_until(math.ceil(time.time() / 10) * 10 + 0.02)
    began = time.time()
    servers.netns.link(False)
    try:
        time.sleep(20.0)
    finally:
        servers.netns.link(True)
    return began, time.time()


# -- the scenarios --------------------------------------------------------------------------------


class TestCluster:
    def test_steady_state(
        self, servers: Servers, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        report, _ = run_scenario(servers, tmp_path, "steady", None, capsys, steady=STEADY)
        # Every instant ran, except fires skipped because their schedule's previous run was still going
        # (it started late on a loaded machine: max_instances=1), which run_scenario prints.
        assert report.outside_fault == []
        assert report.fires + len(report.late_overlaps) == report.expected
        assert set(report.share) == {"w0", "w1", "w2", "w3"}  # every worker took a share
        w0, w1 = report.window
        degraded = {
            n: [s for s in spans if s[0] <= w1 and s[1] >= w0] for n, spans in report.degraded.items()
        }
        assert all(not spans for spans in degraded.values()), degraded

    def test_kill_9_mid_run(
        self, servers: Servers, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        report, cluster = run_scenario(servers, tmp_path, "kill9", kill_mid_run, capsys)
        assert len(cluster.dead) == 1
        assert report.statuses.get("lost", 0) >= 1  # the tick run it was in

    def test_sigstop_past_node_timeout(
        self, servers: Servers, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        run_scenario(servers, tmp_path, "sigstop", freeze, capsys)

    def test_postgres_restart(
        self, servers: Servers, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        report, cluster = run_scenario(servers, tmp_path, "pg_restart", pg_restart, capsys)
        assert report.fault is not None
        # The restart takes a second or less; a worker whose claim, outcome or heartbeat met it (it
        # logged an error) was degraded until its next write went through: its health, sampled every
        # 0.2 s, shows it, or (a shorter window than a sample) the recovery line ends it. A restart
        # no write met (reconnects are transparent) leaves every worker `running`: the truth.
        span = (report.fault[0], report.fault[1] + SETTLE)
        for worker in cluster.workers:
            errors = logged_during(worker, span, "ERROR")
            if errors:
                seen = degraded_during(report, worker.name, span, "store") or degraded_during(
                    report, worker.name, span, "outcomes"
                )
                assert seen or logged_during(worker, span, "WARNING", "again after"), (
                    worker.name,
                    errors[:3],
                    report.degraded,
                )

    def test_postgres_down_10s(
        self, servers: Servers, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        report, cluster = run_scenario(servers, tmp_path, "pg_down", pg_down, capsys)
        assert report.fault is not None
        for worker in cluster.names:
            assert degraded_during(report, worker, report.fault, "store"), (worker, report.degraded[worker])

    def test_redis_down_10s(
        self, servers: Servers, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        report, cluster = run_scenario(servers, tmp_path, "redis_down", redis_down, capsys)
        assert report.fault is not None
        # Fires go on on the store's claim alone: no gap but overlaps with late runs, and every worker
        # says why it is degraded.
        late = set(report.late_overlaps)
        assert [g for g in report.gaps if (g[0], g[1]) not in late] == []
        for worker in cluster.names:
            assert degraded_during(report, worker, report.fault, "lock"), (worker, report.degraded[worker])

    def test_worker_cut_off_by_a_network_namespace(
        self, servers: Servers, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        if servers.netns is None:
            pytest.skip(f"no network namespace: {servers.netns_problem}")
        report, cluster = run_scenario(servers, tmp_path, "netns", cut_off, capsys, in_netns=True)
        assert report.fault is not None
        cut = cluster.names[-1]
        assert degraded_during(report, cut, report.fault, "store"), report.degraded[cut]


class TestBlockedHealthAfterOwnershipMoves:
    """Health must not stay ``degraded`` for a schedule this node no longer claims.

    A node that saw 3 fires in a row of ``x`` skipped for overlap reports ``blocked:x``. When the
    run that blocked them has ended and the schedule has moved to another live node, this node never
    claims ``x`` again, so a report cleared only by this node's next won claim of ``x`` stays forever
    (seen in the cluster scenarios: a worker ``degraded`` for a minute after every fault, naming
    schedules that fire normally on another worker). One scheduler on a SQLite file and a peer
    node row (same schedules, another host) the test keeps alive; no servers needed.
    """

    def test_the_blocked_report_ends_when_the_schedule_moves_to_another_node(
        self, tmp_path: pathlib.Path
    ) -> None:
        import threading

        from flowyml_lite import PipelineScheduler, SchedulerConfig
        from flowyml_lite.runtime.membership import Membership
        from flowyml_lite.stores.base import NodeRecord

        config = SchedulerConfig(
            db_path=str(tmp_path / "s.db"), heartbeat_seconds=0.2, node_timeout_seconds=30
        )
        scheduler = PipelineScheduler(config)
        release = threading.Event()
        scheduler.schedule_interval("x", lambda: release.wait(60), seconds=1)
        scheduler.start()
        stop_beating = threading.Event()
        try:
            me = next(n for n in scheduler.store.list_nodes() if n.node_id == scheduler.node_id)
            digest = me.serves  # the peer serves the same schedules, so the two split them

            def owns_x(peer: str) -> bool:
                view = Membership(scheduler.node_id)
                view.serve(digest)
                view.update([(peer, digest)])
                return view.owns("x")

            peer = next(f"peer-host:1:{i}" for i in range(1000) if not owns_x(f"peer-host:1:{i}"))

            def beat() -> None:  # the peer's heartbeats (another host: no pid check applies)
                started = datetime.now(timezone.utc)
                while not stop_beating.wait(0.1):
                    now = datetime.now(timezone.utc)
                    scheduler.store.heartbeat(NodeRecord(peer, "peer-host/x/1", 1, started, now, digest))

            wait_for(
                lambda: any(p["source"] == "blocked:x" for p in scheduler.problems()),
                30,
                "x reported blocked",
            )
            release.set()  # the long run ends ...
            threading.Thread(target=beat, daemon=True).start()  # ... and x now belongs to the peer
            wait_for(lambda: peer in scheduler.health_check()["nodes"], 30, "the peer to be seen live")
            time.sleep(3.0)  # several heartbeats and fires of x later
            assert [p for p in scheduler.problems() if p["source"] == "blocked:x"] == []
            assert scheduler.status() == "running", scheduler.problems()
        finally:
            release.set()
            stop_beating.set()
            scheduler.close()


class TestALockRequestCutOffInFlight:
    """A Redis lock request sent just as the link drops must not leave a lock nobody holds.

    The worker's ``acquire`` times out (the link is down), but the kernel keeps retransmitting the
    request it had sent, and when the link is back Redis executes it: the key is set with a token the
    worker has forgotten, for the whole TTL, and every later fire of that schedule on any host is
    ``skipped`` ("the schedule's lock is held by another process") until it expires. Seen in the
    network scenario above. Expected: once Redis answers the worker again, an acquire whose outcome
    it never learned is undone (compare-and-delete with its token), so the key is free.
    """

    def test_an_acquire_that_timed_out_leaves_no_lock_once_redis_answers(
        self, servers: Servers, tmp_path: pathlib.Path
    ) -> None:
        import subprocess
        import sys

        import redis as redis_py

        if servers.netns is None:
            pytest.skip(f"no network namespace: {servers.netns_problem}")
        netns = servers.netns
        env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[2]))
        script = pathlib.Path(__file__).resolve().parent / "workers" / "ghost_lock_worker.py"
        client = redis_py.Redis.from_url(servers.redis.url())
        client.delete("ghost:lock:k")
        with open(tmp_path / "worker.log", "wb") as log:
            proc = subprocess.Popen(
                [
                    *netns.prefix(),
                    sys.executable,
                    str(script),
                    servers.redis.url(netns.host_addr),
                    str(tmp_path),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(lambda: (tmp_path / "ready").exists(), 30, "the lock client to start")
            netns.link(False)
            try:
                (tmp_path / "go").touch()
                wait_for(lambda: (tmp_path / "acquired").exists(), 30, "the acquire to give up")
                time.sleep(3.0)
            finally:
                netns.link(True)
            (tmp_path / "healed").touch()
            wait_for(lambda: (tmp_path / "answered").exists(), 60, "Redis to answer the client again")
            outcome = (tmp_path / "acquired").read_text()
            time.sleep(10.0)  # the retransmitted request arrives within seconds of the heal
            left = client.get("ghost:lock:k")
            ttl = client.pttl("ghost:lock:k")
            print(f"\nacquire during the cut: {outcome[:120]}; key after the heal: {left!r} (pttl {ttl} ms)")
            assert outcome.startswith("error"), outcome
            assert left is None, f"a lock nobody holds: {left!r}, {ttl} ms to live"
        finally:
            (tmp_path / "done").touch()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            client.delete("ghost:lock:k")
            client.close()
