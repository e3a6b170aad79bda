"""``flowyml-lite serve`` and ``flowyml-lite run-now``, run as real processes.

Each test works in a directory holding ``myjobs.py``, whose scheduler keeps its schedules in a
SQLite file next to it: ``nightly`` succeeds, ``broken`` raises. The processes import
flowyml_lite from this repository (PYTHONPATH) and are always killed in a ``finally``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig

ROOT = Path(__file__).resolve().parents[2]
TOKEN_ENV = "FLOWYML_SCHEDULER_API_TOKEN"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
MYJOBS = """\
from pathlib import Path

from flowyml_lite import PipelineScheduler, SchedulerConfig

scheduler = PipelineScheduler(SchedulerConfig(db_path=str(Path(__file__).with_name("jobs.db"))))


def nightly():
    return None


def broken():
    raise RuntimeError("boom: disk full")


scheduler.schedule_daily(
    "nightly", nightly, hour=3, timezone="America/New_York", retries=2, timeout_seconds=30
)
scheduler.schedule_daily("broken", broken, hour=4)
"""

SIDE_EFFECTS = """\
from pathlib import Path

from flowyml_lite import PipelineScheduler, SchedulerConfig


def send_invoices():
    Path(__file__).with_name("invoices-sent").write_text("sent")


def make():
    from myjobs import scheduler
    return scheduler


def make_typed() -> PipelineScheduler:
    return make()


def make_broken() -> PipelineScheduler:
    raise ValueError("no settings")
"""


def environment(**extra: str) -> Dict[str, str]:
    """This environment without scheduler settings, tokens or proxies, importing this repository."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("FLOWYML_SCHEDULER_") and not k.lower().endswith("_proxy")
    }
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def cli(cwd: Path, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowyml_lite", *args],
        cwd=cwd,
        env=environment(**(env or {})),
        capture_output=True,
        text=True,
        timeout=60,
    )


def jobs_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "myjobs.py").write_text(MYJOBS)
    return path


def first_line(process: subprocess.Popen[str], timeout: float = 30) -> str:
    """The first stdout line, or an AssertionError if none comes within ``timeout`` seconds."""
    assert process.stdout is not None
    stream = process.stdout
    lines: List[str] = []
    reader = threading.Thread(target=lambda: lines.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert lines and lines[0], f"serve printed no line (exit code {process.poll()})"
    return lines[0]


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)
    if process.stdout is not None:
        process.stdout.close()


class Served:
    """A running ``serve`` process and the URL it printed."""

    def __init__(self, cwd: Path, *args: str, env: Optional[Dict[str, str]] = None) -> None:
        self.cwd = cwd
        self.log = open(cwd / "serve.log", "w")  # noqa: SIM115 (closed in close())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flowyml_lite", "serve", *args],
            cwd=cwd,
            env=environment(**(env or {})),
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        try:
            self.line = first_line(self.process)
            words = [w for w in self.line.split() if w.startswith("http://")]
            assert words, f"no URL in {self.line!r}"
        except BaseException:
            self.close()
            raise
        self.url = words[0]

    def request(
        self, method: str, path: str, body: Any = None, headers: Optional[Dict[str, str]] = None
    ) -> Tuple[int, bytes]:
        """(status, body); error statuses are returned, not raised."""
        data = json.dumps(body).encode() if body is not None else (b"" if method != "GET" else None)
        sent = {"Content-Type": "application/json", **(headers or {})}
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        try:
            with OPENER.open(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get(self, path: str) -> Tuple[int, bytes]:
        return self.request("GET", path)

    def close(self) -> None:
        stop(self.process)
        self.log.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One ``serve myjobs:scheduler --port 0`` for the tests that only talk to it."""
    server = Served(
        jobs_dir(tmp_path_factory.mktemp("served")),
        "myjobs:scheduler",
        "--port",
        "0",
        "--pipeline",
        "etl=myjobs:nightly",
    )
    try:
        yield server
    finally:
        server.close()


class TestServe:
    def test_prints_its_url_on_the_first_line(self, served: Served) -> None:
        assert served.url.startswith("http://127.0.0.1:")
        port = int(served.url.rsplit(":", 1)[1])
        assert port > 0  # --port 0 picked a free port and the line says which

    def test_serves_the_schedules_of_the_app(self, served: Served) -> None:
        status, body = served.get("/api/schedules")
        assert status == 200
        assert {s["name"] for s in json.loads(body)} == {"broken", "nightly"}

    def test_runs_the_scheduler_it_serves(self, served: Served) -> None:
        status, body = served.get("/api/health")
        assert (status, json.loads(body)) == (200, {"status": "ok"})

    def test_a_pipeline_option_can_be_scheduled_through_the_api(self, served: Served) -> None:
        body = {"name": "adhoc", "pipeline_name": "etl", "schedule_type": "hourly", "minute": 30}
        status, payload = served.request("POST", "/api/schedules", body)
        try:
            assert status == 201, payload
            result = cli(served.cwd, "run-now", "adhoc", "--url", served.url)
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith("adhoc: succeeded")
        finally:
            served.request("DELETE", "/api/schedules/adhoc")
        assert {s["name"] for s in json.loads(served.get("/api/schedules")[1])} == {"broken", "nightly"}


class TestRunNowWithUrl:
    def test_a_succeeding_job_prints_its_outcome_and_exits_0(self, served: Served) -> None:
        result = cli(served.cwd, "run-now", "nightly", "--url", served.url)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("nightly: succeeded")

    def test_json_output_is_the_history_entry(self, served: Served) -> None:
        result = cli(served.cwd, "run-now", "nightly", "--url", served.url, "--json")
        assert result.returncode == 0, result.stderr
        entry = json.loads(result.stdout)
        assert (entry["schedule_name"], entry["status"]) == ("nightly", "succeeded")

    def test_a_failing_job_prints_its_error_and_exits_1(self, served: Served) -> None:
        result = cli(served.cwd, "run-now", "broken", "--url", served.url)
        assert result.returncode == 1
        assert result.stdout.startswith("broken: failed")
        assert "boom: disk full" in result.stdout

    def test_an_unknown_schedule_exits_3(self, served: Served) -> None:
        result = cli(served.cwd, "run-now", "weekly", "--url", served.url)
        assert result.returncode == 3
        assert "weekly" in result.stderr

    def test_the_run_is_in_the_servers_history(self, served: Served) -> None:
        cli(served.cwd, "run-now", "nightly", "--url", served.url)
        status, body = served.get("/api/schedules/nightly/history?limit=1")
        assert status == 200
        assert json.loads(body)[0]["status"] == "succeeded"

    def test_no_server_at_the_url_is_a_clear_error(self, tmp_path: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # bound, not listening: connections are refused
            result = cli(tmp_path, "run-now", "nightly", "--url", f"http://127.0.0.1:{port}")
        assert result.returncode == 1  # a failure, not bad input
        assert "cannot reach" in result.stderr


@pytest.fixture(scope="module")
def token_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A ``serve`` whose token comes from the environment."""
    cwd = jobs_dir(tmp_path_factory.mktemp("token"))
    server = Served(cwd, "myjobs:scheduler", "--port", "0", env={TOKEN_ENV: "s3cret"})
    try:
        yield server
    finally:
        server.close()


class TestServeWithToken:
    def test_a_change_without_the_token_from_the_environment_is_a_401(self, token_served: Served) -> None:
        assert token_served.request("POST", "/api/schedules/nightly/disable")[0] == 401
        assert json.loads(token_served.get("/api/schedules/nightly")[1])["enabled"] is True

    def test_run_now_sends_the_token_from_the_environment(self, token_served: Served) -> None:
        result = cli(
            token_served.cwd, "run-now", "nightly", "--url", token_served.url, env={TOKEN_ENV: "s3cret"}
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("nightly: succeeded")

    def test_run_now_with_a_wrong_token_exits_2_with_the_servers_message(self, token_served: Served) -> None:
        result = cli(token_served.cwd, "run-now", "nightly", "--url", token_served.url, "--token", "wrong")
        assert result.returncode == 2
        assert "401" in result.stderr and "token" in result.stderr


class TestServeStops:
    @pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
    def test_a_signal_stops_serve_with_exit_code_0(self, tmp_path: Path, sig: signal.Signals) -> None:
        server = Served(jobs_dir(tmp_path), "myjobs:scheduler", "--port", "0")
        try:
            assert server.get("/api/schedules")[0] == 200
            server.process.send_signal(sig)
            assert server.process.wait(10) == 0
            port = int(server.url.rsplit(":", 1)[1])
            with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
                probe.connect(("127.0.0.1", port))
        finally:
            server.close()


SLOWJOBS = (
    MYJOBS
    + """

def slow():
    import time

    time.sleep(60)


scheduler.schedule_daily("slow", slow, hour=5)
"""
)


def wait_for_text(path: Path, text: str, process: subprocess.Popen[str], limit: float = 30) -> str:
    """The file's content once it holds ``text`` (polled; an AssertionError after ``limit`` seconds)."""
    import time

    deadline = time.monotonic() + limit
    while True:
        content = path.read_text()
        if text in content:
            return content
        assert process.poll() is None, f"exited with {process.returncode}: {content}"
        assert time.monotonic() < deadline, f"{text!r} never appeared in {content!r}"
        time.sleep(0.1)


class TestServeStopsWithRunsInFlight:
    def test_ctrl_c_waits_for_runs_and_a_second_ctrl_c_stops_at_once(self, tmp_path: Path) -> None:
        cwd = tmp_path / "slow"
        cwd.mkdir()
        (cwd / "myjobs.py").write_text(SLOWJOBS)
        server = Served(cwd, "myjobs:scheduler", "--port", "0")
        try:
            assert server.request("POST", "/api/schedules/slow/run")[0] == 202
            server.process.send_signal(signal.SIGINT)
            waiting = "waiting for 1 run(s) (Ctrl-C again to stop now)"
            wait_for_text(cwd / "serve.log", waiting, server.process)
            server.process.send_signal(signal.SIGINT)
            assert server.process.wait(20) == 130
            log = (cwd / "serve.log").read_text()
            assert "stopping now: 1 unfinished run(s) will be recorded as lost" in log
        finally:
            server.close()


class TestRemoteCommands:
    """show, history, enable, disable and remove against a running serve (--url, http:// optional)."""

    def test_show_and_history_ask_the_server(self, served: Served) -> None:
        address = served.url.replace("http://", "")
        assert served.request("POST", "/api/schedules/nightly/run?wait=true")[0] == 200
        shown = cli(served.cwd, "show", "nightly", "--url", address, "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["value"] == "03:00"
        history = cli(served.cwd, "history", "nightly", "--url", served.url, "--json")
        assert history.returncode == 0, history.stderr
        assert "succeeded" in [e["status"] for e in json.loads(history.stdout)]

    def test_show_and_history_say_the_same_from_the_server_and_the_store(self, served: Served) -> None:
        assert served.request("POST", "/api/schedules/nightly/run?wait=true")[0] == 200
        both = []
        for where in (["--url", served.url], ["--db", "jobs.db"]):
            shown = cli(served.cwd, "show", "nightly", *where, "--json")
            history = cli(served.cwd, "history", "nightly", *where, "--json")
            assert shown.returncode == history.returncode == 0, shown.stderr + history.stderr
            both.append((json.loads(shown.stdout), json.loads(history.stdout)))
        (remote, remote_runs), (local, local_runs) = both
        assert remote["next_fire"] == local["next_fire"]
        assert remote["next_fire"].endswith("-05:00") or remote["next_fire"].endswith("-04:00")  # its zone
        assert remote["options"] == local["options"]
        assert (local["options"]["retries"], local["options"]["timeout_seconds"]) == (2, 30)
        assert set(remote_runs[0]) <= set(local_runs[0])  # the store's entries carry the API's keys
        for runs in (remote_runs, local_runs):
            assert runs[0]["fire_time"][-6:] in ("-05:00", "-04:00")

    def test_disable_enable_and_remove_change_the_servers_schedules(self, tmp_path: Path) -> None:
        server = Served(jobs_dir(tmp_path), "myjobs:scheduler", "--port", "0")
        try:
            assert cli(tmp_path, "disable", "nightly", "--url", server.url).returncode == 0
            assert json.loads(server.get("/api/schedules/nightly")[1])["enabled"] is False
            assert cli(tmp_path, "enable", "nightly", "--url", server.url).returncode == 0
            assert json.loads(server.get("/api/schedules/nightly")[1])["enabled"] is True
            assert cli(tmp_path, "remove", "broken", "--url", server.url).returncode == 0
            assert server.get("/api/schedules/broken")[0] == 404
            missing = cli(tmp_path, "show", "nope", "--url", server.url)
            assert missing.returncode == 3 and "nope" in missing.stderr
        finally:
            server.close()


class TestServeRefuses:
    def test_a_public_host_without_a_token_exits_2_before_creating_the_database(self, tmp_path: Path) -> None:
        cwd = jobs_dir(tmp_path)
        result = cli(cwd, "serve", "myjobs:scheduler", "--host", "0.0.0.0", "--port", "0")
        assert result.returncode == 2
        assert TOKEN_ENV in result.stderr
        assert not list(cwd.glob("*.db*"))

    def test_a_module_that_cannot_be_imported_exits_2_naming_it(self, tmp_path: Path) -> None:
        result = cli(jobs_dir(tmp_path), "serve", "nomodule:x", "--port", "0")
        assert result.returncode == 2
        assert "nomodule" in result.stderr

    def test_an_attribute_that_is_not_a_scheduler_exits_2(self, tmp_path: Path) -> None:
        result = cli(jobs_dir(tmp_path), "serve", "myjobs:nightly", "--port", "0")
        assert result.returncode == 2
        assert "PipelineScheduler" in result.stderr

    def test_a_job_named_as_the_app_is_not_run(self, tmp_path: Path) -> None:
        cwd = jobs_dir(tmp_path)
        (cwd / "sideeffects.py").write_text(SIDE_EFFECTS)
        for command in (
            ["serve", "sideeffects:send_invoices", "--port", "0"],
            ["run-now", "x", "--app", "sideeffects:send_invoices"],
        ):
            result = cli(cwd, *command)
            assert result.returncode == 2, result.stderr
            assert "is a function, not a PipelineScheduler" in result.stderr and "--factory" in result.stderr
            assert "Traceback" not in result.stderr
        assert not (cwd / "invoices-sent").exists()

    def test_a_misspelt_app_is_refused_before_its_module_declares_anything(self, tmp_path: Path) -> None:
        cwd = jobs_dir(tmp_path)
        result = cli(cwd, "serve", "myjobs:shceduler", "--port", "0")
        assert result.returncode == 2
        assert "defines no 'shceduler' (did you mean myjobs:scheduler?)" in result.stderr
        assert not list(cwd.glob("*.db*"))  # the module never ran: its scheduler made no store

    def test_a_factory_is_called_when_it_says_so_or_with_factory(self, tmp_path: Path) -> None:
        cwd = jobs_dir(tmp_path)
        (cwd / "sideeffects.py").write_text(SIDE_EFFECTS)
        typed = cli(cwd, "run-now", "nightly", "--app", "sideeffects:make_typed")
        flagged = cli(cwd, "run-now", "nightly", "--app", "sideeffects:make", "--factory")
        assert (typed.returncode, flagged.returncode) == (0, 0), (typed.stderr, flagged.stderr)
        failing = cli(cwd, "run-now", "nightly", "--app", "sideeffects:make_broken")
        assert failing.returncode == 2
        assert "calling it raised ValueError: no settings" in failing.stderr
        assert "Traceback" not in failing.stderr

    def test_a_busy_port_exits_2_with_the_reason(self, tmp_path: Path) -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            result = cli(jobs_dir(tmp_path), "serve", "myjobs:scheduler", "--port", str(port))
        assert result.returncode == 2
        assert "cannot listen" in result.stderr
        assert "port is in use" in result.stderr
        assert not list(tmp_path.glob("*.db*"))  # checked before the app (and its store) was loaded

    @pytest.mark.parametrize("port", ["-1", "65536", "http"])
    def test_a_port_out_of_range_exits_2(self, port: str, tmp_path: Path) -> None:
        result = cli(jobs_dir(tmp_path), "serve", "myjobs:scheduler", "--port", port)
        assert result.returncode == 2
        assert "--port" in result.stderr
        assert not list(tmp_path.glob("*.db*"))


class TestServeWithoutApp:
    def test_serves_the_stores_schedules_as_orphans(self, tmp_path: Path) -> None:
        db = tmp_path / "fleet.db"
        worker = PipelineScheduler(SchedulerConfig(db_path=str(db)))
        worker.schedule_hourly("ingest", lambda: None, minute=10)
        worker.close()
        server = Served(tmp_path, "--db", str(db), "--port", "0")
        try:
            items = json.loads(server.get("/api/schedules")[1])
        finally:
            server.close()
        assert [(s["name"], s["is_orphan"]) for s in items] == [("ingest", True)]

    def test_a_database_that_does_not_exist_is_created_and_said_so(self, tmp_path: Path) -> None:
        server = Served(tmp_path, "--db", str(tmp_path / "tpyo.db"), "--port", "0")
        try:
            assert json.loads(server.get("/api/schedules")[1]) == []
        finally:
            server.close()
        said = (tmp_path / "serve.log").read_text()
        assert "no database at" in said and "creating a new, empty one" in said
        assert (tmp_path / "tpyo.db").exists()


class TestRunNowInProcess:
    @pytest.mark.parametrize(
        ("name", "code", "outcome"), [("nightly", 0, "succeeded"), ("broken", 1, "failed")]
    )
    def test_runs_the_job_of_the_app_and_exits_with_its_outcome(
        self, tmp_path: Path, name: str, code: int, outcome: str
    ) -> None:
        cwd = jobs_dir(tmp_path)
        result = cli(cwd, "run-now", name, "--app", "myjobs:scheduler")
        assert result.returncode == code, result.stderr
        assert result.stdout.startswith(f"{name}: {outcome}")
        check = PipelineScheduler(SchedulerConfig(db_path=str(cwd / "jobs.db")))
        try:
            assert [e["status"] for e in check.get_history(name)] == [outcome]
        finally:
            check.close()

    def test_an_app_that_starts_itself_on_import_is_not_started_by_it(self, tmp_path: Path) -> None:
        """Only the named schedule runs: the command takes no share of the app's other fires (it
        would leave them in flight, later ``lost``, as it exits)."""
        cwd = jobs_dir(tmp_path)
        with (cwd / "myjobs.py").open("a") as module:
            module.write(
                "\nscheduler.schedule_interval('often', nightly, seconds=1)\nscheduler.start()\n"
                "import time\ntime.sleep(1.5)  # an app doing more work at import\n"
            )
        result = cli(cwd, "run-now", "nightly", "--app", "myjobs:scheduler")
        assert result.returncode == 0, result.stderr
        check = PipelineScheduler(SchedulerConfig(db_path=str(cwd / "jobs.db")))
        try:
            assert [e["reason"] for e in check.get_history("nightly")] == ["manual"]
            assert check.get_history("often") == []  # no fire of it claimed by the command
        finally:
            check.close()

    def test_an_unknown_schedule_exits_3(self, tmp_path: Path) -> None:
        result = cli(jobs_dir(tmp_path), "run-now", "weekly", "--app", "myjobs:scheduler")
        assert result.returncode == 3
        assert "weekly" in result.stderr

    def test_app_and_url_are_mutually_exclusive(self, tmp_path: Path) -> None:
        result = cli(
            tmp_path, "run-now", "nightly", "--app", "myjobs:scheduler", "--url", "http://127.0.0.1:1"
        )
        assert result.returncode == 2
        assert "not allowed with" in result.stderr


class TestHelp:
    def test_serve_help_describes_app_and_the_token_variable(self, tmp_path: Path) -> None:
        result = cli(tmp_path, "serve", "--help")
        assert result.returncode == 0
        assert "APP" in result.stdout
        assert TOKEN_ENV in result.stdout
        for option in ("--host", "--port", "--token", "--allow-host", "--pipeline"):
            assert option in result.stdout

    def test_run_now_help_offers_app_and_url(self, tmp_path: Path) -> None:
        result = cli(tmp_path, "run-now", "--help")
        assert result.returncode == 0
        assert "--app" in result.stdout and "--url" in result.stdout
