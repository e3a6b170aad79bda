"""Helpers of the several-hosts cluster test: its own PostgreSQL and Redis, a network namespace,
four workers, and the analysis of what they did (the job log against the store's history).

Everything here starts real servers and real processes and stops only what it started (by pid, or
with ``pg_ctl`` on its own data directory). See tests/integration/test_cluster.py.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import json
import math
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import pytest

from tests.integration.workers.joblog import LogLine, Worker, read_json, read_log, wait_for

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ON_LINUX = sys.platform.startswith("linux")


def required(reason: str) -> None:
    """Skip, or fail in CI (a server or tool the CI must have is missing)."""
    if os.environ.get("FLOWYML_TEST_REQUIRE_SERVICES") == "1" or os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(cmd: Sequence[str], timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stdout}{done.stderr}")
    return done


# -- PostgreSQL ------------------------------------------------------------------------------


def postgres_bin() -> Optional[pathlib.Path]:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: [int(x) for x in re.findall(r"\d+", p)]
    )
    if found:
        return pathlib.Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return pathlib.Path(initdb).parent if initdb else None


class Postgres:
    """A throw-away PostgreSQL cluster in a temporary directory (run as the postgres user when root).

    The directory is made with ``tempfile.mkdtemp`` in the system's temporary directory, because
    pytest's own (mode 0700, root's) cannot be entered by the postgres user; ``destroy`` removes it.
    """

    def __init__(self, listen: Sequence[str]) -> None:
        bindir = postgres_bin()
        if bindir is None:
            required("PostgreSQL is not installed (initdb not found): apt-get install postgresql")
        assert bindir is not None
        self.bin = bindir
        directory = pathlib.Path(tempfile.mkdtemp(prefix="flowyml-cluster-pg-"))
        self.dir = directory
        self.data = directory / "data"
        self.log = directory / "server.log"
        self.listen = list(listen)
        self.port = free_port()
        self.user = "flowyml"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "sock").mkdir(exist_ok=True)
        self.as_owner: List[str] = []
        if IS_ROOT:
            shutil.chown(str(directory), "postgres", "postgres")
            shutil.chown(str(directory / "sock"), "postgres", "postgres")
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        run(
            [
                *self.as_owner,
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            timeout=120,
        )
        extra = [a for a in self.listen if a != "127.0.0.1"]
        if extra:  # initdb trusts loopback only; the namespace's peer (x.x.x.2) connects too
            with open(self.data / "pg_hba.conf", "a") as hba:
                for address in extra:
                    peer = address.rsplit(".", 1)[0] + ".2"
                    hba.write(f"host all all {peer}/32 trust\n")
        self.start()

    def _ctl(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return run([*self.as_owner, str(self.bin / "pg_ctl"), "-D", str(self.data), *args], timeout=timeout)

    def _options(self) -> str:
        return (
            f"-p {self.port} -k {self.dir / 'sock'} -c listen_addresses={','.join(self.listen)} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )

    def start(self) -> None:
        self._ctl("-l", str(self.log), "-w", "-t", "60", "-o", self._options(), "start")

    def stop(self) -> None:
        self._ctl("-w", "-t", "60", "-m", "fast", "stop")

    def restart(self) -> None:
        self._ctl("-l", str(self.log), "-w", "-t", "60", "-m", "fast", "-o", self._options(), "restart")

    def running(self) -> bool:
        return self._ctl("status", timeout=30).returncode == 0 if self.data.exists() else False

    def url(self, database: str, host: str = "127.0.0.1") -> str:
        return f"postgresql+psycopg://{self.user}@{host}:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')

    def destroy(self) -> None:
        subprocess.run(
            [*self.as_owner, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


# -- Redis -----------------------------------------------------------------------------------


class Redis:
    """A throw-away redis-server (no persistence) on a free port; stopped by its pid."""

    def __init__(self, directory: pathlib.Path, bind: Sequence[str]) -> None:
        server = shutil.which("redis-server")
        if server is None:
            required("redis-server is not installed: apt-get install redis-server")
        assert server is not None
        self.server = server
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.bind = list(bind)
        self.port = free_port()
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.start()

    def start(self) -> None:
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.server,
                    "--port",
                    str(self.port),
                    "--bind",
                    *self.bind,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.dir),
                    "--protected-mode",
                    "no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._answers, 30, "redis-server to answer")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.proc = None

    def url(self, host: str = "127.0.0.1") -> str:
        return f"redis://{host}:{self.port}/0"


# -- a network namespace joined to this one by a veth pair -------------------------------------


class NetNs:
    """``ip netns`` NAME with a veth pair: HOST_ADDR here, NS_ADDR inside; link down/up on this side."""

    def __init__(self) -> None:
        tag = os.getpid() % 200 + 20
        self.name = f"flowyml-cl{os.getpid()}"
        self.host_if, self.ns_if = f"flh{os.getpid() % 100000}", f"fln{os.getpid() % 100000}"
        self.host_addr, self.ns_addr = f"10.213.{tag}.1", f"10.213.{tag}.2"
        self.created = False

    @staticmethod
    def unavailable() -> Optional[str]:
        """Why a network namespace cannot be made here (None when it can)."""
        if not ON_LINUX:
            return "network namespaces are Linux only"
        if not IS_ROOT:
            return "creating a network namespace and a veth pair needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)"
        if shutil.which("ip") is None:
            return "the ip command (iproute2) is not installed"
        return None

    def create(self) -> None:
        in_use = run(["ip", "-o", "addr", "show"]).stdout
        if f" {self.host_addr}/" in in_use:
            raise RuntimeError(f"{self.host_addr} is already assigned on this machine")
        self.created = True
        run(["ip", "netns", "add", self.name])
        run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if])
        run(["ip", "link", "set", self.ns_if, "netns", self.name])
        run(["ip", "addr", "add", f"{self.host_addr}/30", "dev", self.host_if])
        run(["ip", "link", "set", self.host_if, "up"])
        inside = ["ip", "netns", "exec", self.name]
        run([*inside, "ip", "addr", "add", f"{self.ns_addr}/30", "dev", self.ns_if])
        run([*inside, "ip", "link", "set", self.ns_if, "up"])
        run([*inside, "ip", "link", "set", "lo", "up"])

    def prefix(self) -> List[str]:
        return ["ip", "netns", "exec", self.name]

    def link(self, up: bool) -> None:
        run(["ip", "link", "set", self.host_if, "up" if up else "down"])

    def destroy(self) -> None:
        if not self.created:
            return
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        self.created = False


# -- the workers ---------------------------------------------------------------------------------


@dataclass
class Settings:
    """The knobs of one cluster run."""

    schedules: int = 200
    heartbeat: float = 0.5
    node_timeout: float = 3.0
    grace: float = 10.0
    workers: int = 4


class Cluster:
    """Four workers on one database (and Redis), each its own host when root."""

    def __init__(
        self,
        directory: pathlib.Path,
        url: str,
        redis_url: Optional[str],
        settings: Settings,
        netns: Optional[NetNs] = None,
        netns_urls: Tuple[str, Optional[str]] = ("", None),
    ) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.log = directory / "jobs.log"
        self.settings = settings
        self.workers: List[Worker] = []
        self.names = [f"w{i}" for i in range(settings.workers)]
        for i, name in enumerate(self.names):
            in_ns = netns is not None and i == len(self.names) - 1  # the last worker is the one to cut off
            prefix: List[str] = netns.prefix() if in_ns and netns is not None else []
            args = [
                "--url",
                netns_urls[0] if in_ns else url,
                "--log",
                str(self.log),
                "--dir",
                str(directory),
                "--name",
                name,
                "--schedules",
                str(settings.schedules),
                "--heartbeat",
                str(settings.heartbeat),
                "--node-timeout",
                str(settings.node_timeout),
                "--grace",
                str(settings.grace),
            ]
            chosen_redis = netns_urls[1] if in_ns else redis_url
            if chosen_redis:
                args += ["--redis", chosen_redis]
            if IS_ROOT and ON_LINUX and shutil.which("unshare"):
                prefix = [*prefix, "unshare", "--uts"]
                args += ["--hostname", f"cluster-{name}"]
            self.workers.append(Worker(name, "cluster_worker.py", args, directory, prefix))
        wait_for(
            lambda: all(
                (directory / f"{n}.ready").exists() and (directory / f"{n}.status").exists()
                for n in self.names
            ),
            120,
            "every worker to start",
            self.workers,
        )
        self.ready = {n: read_json(directory / f"{n}.ready") for n in self.names}
        self.pids = {n: int(self.ready[n]["pid"]) for n in self.names}
        self.dead: Set[str] = set()

    def worker(self, name: str) -> Worker:
        return self.workers[self.names.index(name)]

    def status(self, name: str) -> Dict[str, Any]:
        return read_json(self.dir / f"{name}.status")

    def all_see(self, count: int) -> bool:
        """Every live worker's split counts ``count`` nodes."""
        return all(len(self.status(n)["nodes"]) == count for n in self.names if n not in self.dead)

    def signal(self, name: str, sig: int) -> None:
        os.kill(self.pids[name], sig)
        if sig == signal.SIGKILL:
            self.dead.add(name)
            self.worker(name).expected_exit = True
            self.worker(name).popen.wait(30)

    def stop(self) -> Dict[str, Dict[str, Any]]:
        """Ask every live worker to stop; their results (fails if a live worker does not drain)."""
        (self.dir / "stop").touch()
        results = {}
        try:
            for name, proc in zip(self.names, self.workers):
                if name in self.dead:
                    continue
                code = proc.wait_exit(90)
                results[name] = read_json(self.dir / f"{name}.result")
                results[name]["exit_code"] = code
        finally:
            self.kill()
        return results

    def kill(self) -> None:
        for proc in self.workers:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGCONT)
            proc.kill()

    def statuslog(self, name: str) -> List[Dict[str, Any]]:
        path = self.dir / f"{name}.statuslog"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- the analysis --------------------------------------------------------------------------------


def expected_instants(kind: str, value: str, start: float, end: float) -> List[int]:
    """The fire instants (whole Unix seconds) of a schedule in [start, end]."""
    period = 1 if kind == "cron" else int(value)
    first = math.ceil(start / period) * period
    return list(range(first, math.floor(end) + 1, period))


_SUMMARY = re.compile(r"missed instants from (\S+) to (\S+) ")


def covered_by(row: Any, instant: int) -> bool:
    """A history row that accounts for ``instant``: its own fire, or a missed summary's range."""
    fire = row.fire_time.timestamp()
    if abs(fire - instant) < 1e-3:
        return True
    if row.status == "missed" and row.reason:
        found = _SUMMARY.search(row.reason)
        if found:
            low = datetime.fromisoformat(found.group(1)).timestamp()
            high = datetime.fromisoformat(found.group(2)).timestamp()
            return low - 1e-3 <= instant <= high + 1e-3
    return False


OVERLAP_SLACK = 0.75  # a finished run's row may stay active this long (its outcome on its way to the store)


def late_overlap(
    row: Any, name: str, instant: int, runs: Dict[str, List[Tuple[float, Optional[float]]]]
) -> bool:
    """A ``skipped`` (overlap) fire whose schedule's previous run, by the log, was still going at the
    instant (or had ended less than OVERLAP_SLACK before it, its outcome on the way to the store):
    what ``max_instances=1`` asks for when a run starts late, not a fire dropped by a fault. A run
    without an end line (its process was killed) does not count: the fault made that gap."""
    if row.status != "skipped" or not str(row.reason).startswith("overlap"):
        return False
    return any(
        fire < instant and end is not None and end > instant - OVERLAP_SLACK
        for fire, end in runs.get(name, [])
    )


def made_by_fault(
    row: Any, instant: int, fault: Optional[Tuple[float, float]], settle: float, grace: float
) -> bool:
    """Whether the fault explains a gap at ``instant``.

    Any gap from 1 s before the fault to ``settle`` after its end. Before that, a ``missed`` or
    ``lost`` instant up to ``grace`` (misfire_grace_seconds) before the fault's start: a fire that was
    still waiting for its claim (late on a loaded machine) when the fault began, and that the fault
    then kept from running in time, is the fault's doing; one due earlier than that is not.
    """
    if fault is None:
        return False
    if fault[0] - 1.0 <= instant <= fault[1] + settle:
        return True
    return row is not None and row.status in ("missed", "lost") and fault[0] - grace <= instant < fault[0]


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@dataclass
class Report:
    """What a scenario left behind, measured over its window."""

    scenario: str
    window: Tuple[float, float]
    fault: Optional[Tuple[float, float]]
    fires: int = 0  # instants in the window that ran (a start line)
    expected: int = 0
    duplicates: List[Tuple[str, int, int]] = field(default_factory=list)  # schedule, instant, starts
    gaps: List[Tuple[str, int, str]] = field(default_factory=list)  # schedule, instant, accounting row
    unaccounted: List[Tuple[str, int]] = field(default_factory=list)
    outside_fault: List[Tuple[str, int]] = field(default_factory=list)  # gaps outside the fault window
    late_overlaps: List[Tuple[str, int]] = field(default_factory=list)  # skipped: the last run was late
    silent: List[str] = field(default_factory=list)  # schedules that started no run after the recovery
    share: Dict[str, int] = field(default_factory=dict)
    lag_p50: Optional[float] = None
    lag_p99: Optional[float] = None
    lag_max: Optional[float] = None
    statuses: Dict[str, int] = field(default_factory=dict)
    active_rows_left: List[str] = field(default_factory=list)
    recovery: Optional[float] = None  # seconds from the fault's end to the last gap
    degraded: Dict[str, List[Tuple[float, float, str]]] = field(default_factory=dict)
    mismatched: List[str] = field(default_factory=list)  # history and log disagree

    def line(self) -> str:
        ms = lambda v: "-" if v is None else f"{v * 1000:.0f}ms"  # noqa: E731
        fault = "" if self.fault is None else f" fault={self.fault[1] - self.fault[0]:.1f}s"
        recovery = "" if self.recovery is None else f" recovery={self.recovery:.1f}s"
        degraded = {
            n: f"{sum(b - a for a, b, _ in spans):.1f}s" for n, spans in self.degraded.items() if spans
        }
        return (
            f"[cluster {self.scenario}] window={self.window[1] - self.window[0]:.0f}s{fault} "
            f"fires={self.fires}/{self.expected} duplicates={len(self.duplicates)} gaps={len(self.gaps)} "
            f"(unaccounted={len(self.unaccounted)}, outside fault={len(self.outside_fault)}, "
            f"overlaps with a late run={len(self.late_overlaps)}){recovery} "
            f"silent={len(self.silent)} share={self.share} lag p50={ms(self.lag_p50)} p99={ms(self.lag_p99)} "
            f"max={ms(self.lag_max)} rows={self.statuses} active_left={len(self.active_rows_left)} "
            f"degraded={degraded}"
        )


def degraded_spans(entries: List[Dict[str, Any]], until: float) -> List[Tuple[float, float, str]]:
    """(from, to, problem sources) of each stretch a worker reported itself not ``running``."""
    spans = []
    for i, entry in enumerate(entries):
        if entry["status"] in ("running", "stopped"):  # stopped: the test asked it to stop
            continue
        end = entries[i + 1]["t"] if i + 1 < len(entries) else until
        sources = ",".join(sorted({str(p.get("source")) for p in entry["problems"]}))
        spans.append((entry["t"], end, f"{entry['status']}:{sources}"))
    return spans


def analyse(
    scenario: str,
    cluster: Cluster,
    url: str,
    window: Tuple[float, float],
    fault: Optional[Tuple[float, float]],
    settle: float,
) -> Report:
    """Compare the log with the store over ``window``; which gaps the fault explains: ``made_by_fault``."""
    from flowyml_lite_ext.sqlalchemy_store import SQLAlchemyStore

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "workers"))
    from cluster_worker import schedule_plan  # type: ignore[import-not-found]

    report = Report(scenario, window, fault)
    lines: List[LogLine] = read_log(cluster.log)
    starts: Dict[Tuple[str, int], List[LogLine]] = collections.defaultdict(list)
    for line in lines:
        if line.event == "start" and line.fire_seen is not None:
            starts[(line.schedule, round(line.fire_seen))].append(line)
    runs: Dict[str, List[Tuple[float, Optional[float]]]] = collections.defaultdict(list)  # (start, end)
    ends = {
        (line.schedule, line.pid, line.fire_seen): line.wall_time for line in lines if line.event == "end"
    }
    for line in lines:
        if line.event == "start" and line.fire_seen is not None:
            runs[line.schedule].append((line.fire_seen, ends.get((line.schedule, line.pid, line.fire_seen))))
    pid_name = {pid: name for name, pid in cluster.pids.items()}
    store = SQLAlchemyStore(url)
    store.open()
    try:
        plan = schedule_plan(cluster.settings.schedules)
        history = {name: store.history(name, limit=1_000_000) for name, _, _ in plan}
        active = store.active_runs()
    finally:
        store.close()
    report.active_rows_left = [
        f"{r.schedule}@{r.fire_time.isoformat()} {r.status} on {r.node_id}" for r in active
    ]
    statuses: collections.Counter[str] = collections.Counter()
    lags: List[float] = []
    share: collections.Counter[str] = collections.Counter()
    grace = cluster.settings.grace
    last_gap: Optional[float] = None
    for name, kind, value in plan:
        rows = history[name]
        by_fire = {round(r.fire_time.timestamp(), 3): r for r in rows}
        instants = expected_instants(kind, value, window[0], window[1])
        report.expected += len(instants)
        fired_after_fault = False
        for instant in instants:
            seen = starts.get((name, instant), [])
            if len(seen) > 1:
                report.duplicates.append((name, instant, len(seen)))
            if seen:
                report.fires += 1
                first = min(seen, key=lambda line: line.wall_time)
                lags.append(first.wall_time - instant)
                share[pid_name.get(first.pid, str(first.pid))] += 1
                if fault is not None and (instant > fault[1] or first.wall_time > fault[1]):
                    fired_after_fault = True  # an instant after the fault, or one of it caught up after
                row = by_fire.get(float(instant))
                if row is None or row.status not in ("succeeded", "lost"):
                    report.mismatched.append(f"{name}@{instant}: ran, row {row and (row.status, row.reason)}")
                continue
            accounting = [
                r for r in rows if r.status in ("missed", "lost", "skipped") and covered_by(r, instant)
            ]
            how = f"{accounting[0].status}: {accounting[0].reason}" if accounting else ""
            report.gaps.append((name, instant, how))
            if not accounting or not accounting[0].reason:
                report.unaccounted.append((name, instant))
            if accounting and late_overlap(accounting[0], name, instant, runs):
                # max_instances=1 at work: the previous fire's run was still going (it started late).
                report.late_overlaps.append((name, instant))
            elif not made_by_fault(accounting[0] if accounting else None, instant, fault, settle, grace):
                report.outside_fault.append((name, instant))
            if fault is not None and instant >= fault[1]:
                last_gap = instant if last_gap is None else max(last_gap, instant)
        # Silent: instants after the fault's end came, and no run started after it (a catch-up run
        # of an instant of the fault, started after it, may hold the next instant back for overlap).
        after = [i for i in instants if fault is not None and i > fault[1]]
        if after and not fired_after_fault:
            report.silent.append(name)
        for row in rows:
            if window[0] <= row.fire_time.timestamp() <= window[1]:
                statuses[row.status] += 1
    report.statuses = dict(statuses)
    report.share = dict(sorted(share.items()))
    report.lag_p50, report.lag_p99 = percentile(lags, 0.5), percentile(lags, 0.99)
    report.lag_max = max(lags) if lags else None
    if fault is not None:
        report.recovery = 0.0 if last_gap is None else max(0.0, last_gap - fault[1])
    end = window[1] + 30
    report.degraded = {n: degraded_spans(cluster.statuslog(n), end) for n in cluster.names}
    return report


def ts(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def wait_until(moment: float) -> None:
    left = moment - time.time()
    if left > 0:
        time.sleep(left)
