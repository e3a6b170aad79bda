"""The command line: what it prints, and exit codes scripts can rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

from flowyml_lite.cli import main
from flowyml_lite.core.scheduler import PipelineScheduler
from flowyml_lite.core.scheduler_config import SchedulerConfig

ROOT = Path(__file__).resolve().parents[1]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class TestNext:
    def test_prints_instants_with_offsets_and_marks_a_gap_fire(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = run(
            capsys, "next", "30 2 * * *", "--tz", "America/New_York", "--after", "2024-03-09", "-n", "3"
        )
        assert code == 0
        lines = [line for line in out.splitlines() if line.startswith("  2024")]
        assert [line.split()[0] for line in lines] == [
            "2024-03-09T02:30:00-05:00",
            "2024-03-10T03:00:00-04:00",
            "2024-03-11T02:30:00-04:00",
        ]
        assert "DST" in lines[1] and "DST" not in lines[0] + lines[2]

    def test_a_sixth_field_of_star_is_warned_of(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, "next", "0 0 * * * *", "-n", "2")
        assert code == 0 and "fires every second of each matching minute" in err
        assert "warning" not in run(capsys, "next", "0 0 * * * 0", "-n", "2")[2]

    def test_json_output_lists_the_second_pass_of_a_fold(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(
            capsys,
            "next",
            "*/30 1 * * *",
            "--tz",
            "America/New_York",
            "--after",
            "2024-11-03T00:00",
            "-n",
            "4",
            "--json",
        )
        assert code == 0
        fires = json.loads(out)["fires"]
        assert [f["fire"] for f in fires] == [
            "2024-11-03T01:00:00-04:00",
            "2024-11-03T01:30:00-04:00",
            "2024-11-03T01:00:00-05:00",
            "2024-11-03T01:30:00-05:00",
        ]
        assert "second pass" in fires[2]["dst_note"]

    def test_a_bad_field_exits_2_naming_field_and_text(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(capsys, "next", "0 9 * * 8")
        assert (code, out) == (2, "")
        assert err.strip() == "error: day-of-week: '8' is out of range 0-7 in '0 9 * * 8'"

    def test_an_unknown_zone_exits_2_with_a_suggestion(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, "next", "0 9 * * *", "--tz", "Europe/Londn")
        assert code == 2 and "Europe/London" in err

    def test_a_bad_after_exits_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, "next", "0 9 * * *", "--after", "yesterday")
        assert code == 2 and "ISO 8601" in err


class TestExplain:
    def test_explains_in_english(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert run(capsys, "explain", "0 9 * * 1-5")[:2] == (0, "At 09:00, Monday through Friday\n")

    def test_a_bad_expression_exits_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, "explain", "0 9 * *")
        assert code == 2 and "error:" in err


class TestStoreCommands:
    @pytest.fixture
    def db(self, tmp_path: Path) -> str:
        path = str(tmp_path / "s.db")
        scheduler = PipelineScheduler(SchedulerConfig(db_path=path))
        scheduler.schedule_daily("etl", lambda: None, hour=2, timezone="America/New_York")
        scheduler.run_now("etl", wait=True)
        scheduler.close()
        return path

    def test_list_show_history_and_health_read_the_store(
        self, db: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = run(capsys, "list", "--db", db, "--json")
        assert code == 0 and [row["name"] for row in json.loads(out)] == ["etl"]
        code, out, _ = run(capsys, "show", "etl", "--db", db, "--json")
        assert json.loads(out)["value"] == "02:00"
        code, out, _ = run(capsys, "history", "etl", "--db", db, "--json")
        assert [e["status"] for e in json.loads(out)] == ["succeeded"]
        code, out, _ = run(capsys, "health", "--db", db, "--json")
        assert json.loads(out)["runs"]["succeeded"] == 1

    def test_disable_enable_remove_change_the_store(
        self, db: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert run(capsys, "disable", "etl", "--db", db)[0] == 0
        assert json.loads(run(capsys, "show", "etl", "--db", db, "--json")[1])["enabled"] is False
        assert run(capsys, "enable", "etl", "--db", db)[0] == 0
        shown = json.loads(run(capsys, "show", "etl", "--db", db, "--json")[1])
        assert shown["enabled"] is True and shown["next_fire"] is not None
        assert run(capsys, "remove", "etl", "--db", db)[0] == 0
        assert json.loads(run(capsys, "list", "--db", db, "--json")[1]) == []

    def test_db_names_the_file_to_read_whatever_store_the_environment_names(
        self, db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("FLOWYML_SCHEDULER_STORE_URL", "postgresql+psycopg://u:p@127.0.0.1:1/none")
        code, out, _ = run(capsys, "list", "--db", db, "--json")
        assert code == 0 and [row["name"] for row in json.loads(out)] == ["etl"]

    def test_an_unknown_schedule_exits_3(self, db: str, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, "show", "nope", "--db", db)
        assert code == 3 and "no schedule named 'nope'" in err


class TestHelpAndDemo:
    def test_no_command_prints_help_and_exits_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys)
        assert code == 2 and "demo" in out and "explain" in out

    def test_the_demo_runs_from_the_source_tree_and_prints_runs_and_a_summary(self, tmp_path: Path) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "flowyml_lite", "demo", "--seconds", "3", "--db", str(tmp_path / "d.db")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        lines: List[str] = result.stdout.splitlines()
        assert any("etl_every_2s" in line and "ok" in line and "run_id=" in line for line in lines)
        assert any(line.strip().startswith("summary") for line in lines)
        assert "Traceback" not in result.stdout + result.stderr


class TestNoSurprises:
    @pytest.fixture
    def db(self, tmp_path: Path) -> str:
        path = str(tmp_path / "s.db")
        scheduler = PipelineScheduler(SchedulerConfig(db_path=path))
        scheduler.schedule_interval("often", lambda: None, seconds=6)
        scheduler.schedule_hourly("quiet", lambda: None)
        scheduler.run_now("often", wait=True)
        scheduler.close()
        return path

    @pytest.mark.parametrize(
        "command", [["list"], ["health"], ["show", "x"], ["history", "x"], ["disable", "x"]]
    )
    def test_a_missing_database_exits_3_and_creates_nothing(
        self, command: List[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        typo = tmp_path / "typo.db"
        code, _, err = run(capsys, *command, "--db", str(typo))
        assert code == 3
        assert f"no database at {typo}" in err
        assert list(tmp_path.iterdir()) == []

    def test_history_of_a_schedule_without_runs_says_so(
        self, db: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = run(capsys, "history", "quiet", "--db", db)
        assert (code, out) == (0, "no runs of 'quiet' yet\n")

    @pytest.mark.parametrize("count", ["0", "-1", "x"])
    def test_a_count_below_1_is_refused_alike_everywhere(
        self, count: str, db: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        for argv in (["next", "* * * * *", "-n", count], ["history", "often", "--db", db, "-n", count]):
            with pytest.raises(SystemExit) as exit_info:
                main(argv)
            assert exit_info.value.code == 2
            assert "-n" in capsys.readouterr().err

    @pytest.mark.parametrize("seconds", ["-1", "0", "nan"])
    def test_the_demo_refuses_a_duration_that_is_not_positive(
        self, seconds: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exit_info:
            main(["demo", "--seconds", seconds])
        assert exit_info.value.code == 2
        assert "--seconds" in capsys.readouterr().err

    def test_intervals_are_shown_with_a_unit(self, db: str, capsys: pytest.CaptureFixture[str]) -> None:
        _, out, _ = run(capsys, "list", "--db", db)
        assert "every 6 s" in out

    def test_show_prints_options_as_text(self, db: str, capsys: pytest.CaptureFixture[str]) -> None:
        _, out, _ = run(capsys, "show", "often", "--db", db)
        assert "max_instances=1" in out and "{" not in out
        assert "every 6 s  (Every 6 s)" in out

    def test_a_skipped_run_has_no_lag_and_no_duration(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        import threading

        path = str(tmp_path / "s.db")
        gate = threading.Event()
        scheduler = PipelineScheduler(SchedulerConfig(db_path=path))
        try:
            scheduler.schedule_hourly("slow", lambda: gate.wait(10) and None)
            scheduler.run_now("slow")
            scheduler.run_now("slow")  # overlaps the first: skipped
            _, out, _ = run(capsys, "history", "slow", "--db", path)
        finally:
            gate.set()
            scheduler.close()
        skipped, running = out.splitlines()  # newest first
        assert "running" in running and "running " in running.split("lag")[1]  # elapsed, not 0.000s
        assert "skipped" in skipped and "lag         -" in skipped and "0.000s" not in skipped

    def test_a_closed_pipe_ends_the_output_quietly(self) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "flowyml_lite", "next", "* * * * * *", "-n", "100000"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None and process.stderr is not None
        process.stdout.readline()
        process.stdout.close()  # as `| head -1` does
        err = process.stderr.read()
        process.wait(60)
        process.stderr.close()
        assert "BrokenPipeError" not in err and "Traceback" not in err

    def test_the_demo_removes_its_temporary_folder(self, tmp_path: Path) -> None:
        import os

        result = subprocess.run(
            [sys.executable, "-m", "flowyml_lite", "demo", "--seconds", "1"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )
        assert result.returncode == 0, result.stderr
        assert list(tmp_path.iterdir()) == []
        assert "0 runs, success rate" not in result.stdout  # no rate is shown for zero runs


class TestReadOnlyDatabase:
    """An operator who may read the app's database but not write it can still inspect it."""

    @pytest.fixture
    def db(self, tmp_path: Path) -> str:
        path = str(tmp_path / "app.db")
        scheduler = PipelineScheduler(SchedulerConfig(db_path=path))
        scheduler.schedule_daily("etl", lambda: None, hour=2)
        scheduler.run_now("etl", wait=True)
        scheduler.close()
        return path

    def test_read_commands_open_it_read_only_when_it_cannot_be_written(
        self, db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from flowyml_lite.core import scheduler as scheduler_module
        from flowyml_lite.errors import StoreError

        def refused(config: object) -> None:
            raise StoreError(f"sqlite store {db!r}: attempt to write a readonly database")

        monkeypatch.setattr(scheduler_module, "open_store", refused)  # what a user without write access gets
        code, out, _ = run(capsys, "list", "--db", db, "--json")
        assert code == 0 and [row["name"] for row in json.loads(out)] == ["etl"]
        code, out, _ = run(capsys, "history", "etl", "--db", db, "--json")
        assert [e["status"] for e in json.loads(out)] == ["succeeded"]
        code, out, _ = run(capsys, "health", "--db", db, "--json")
        assert json.loads(out)["runs"]["succeeded"] == 1
        code, _, err = run(capsys, "disable", "etl", "--db", db)  # a change is not tried read-only
        assert code != 0 and "readonly" in err
        assert sorted(p.name for p in Path(db).parent.iterdir()) == ["app.db"]  # nothing created beside it

    def test_as_a_user_who_may_only_read_it(self, db: str, tmp_path: Path) -> None:
        """Real permissions: the CLI run as ``nobody`` on a root-owned database (root only)."""
        import os
        import shutil
        import tempfile

        python = "/usr/bin/python3"
        runuser = shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin")
        if not hasattr(os, "geteuid") or os.geteuid() != 0 or not os.path.exists(python) or not runuser:
            pytest.skip("needs root and runuser (to run the CLI as nobody), and /usr/bin/python3")
        here = tempfile.mkdtemp(prefix="flowyml-ro-")  # under /tmp, traversable by nobody
        try:
            shutil.copytree(Path(__file__).resolve().parents[1] / "flowyml_lite", Path(here) / "flowyml_lite")
            shutil.copy(db, Path(here) / "app.db")
            for root, dirs, files in os.walk(here):
                for name in dirs:
                    os.chmod(os.path.join(root, name), 0o755)
                for name in files:
                    os.chmod(os.path.join(root, name), 0o644)
            # A directory anyone may write (like /tmp), a file only its owner may: a read-write open
            # would create -wal and -shm files owned by nobody, and lock the app out of its database.
            os.chmod(here, 0o1777)
            command = [python, "-m", "flowyml_lite", "list", "--db", f"{here}/app.db"]
            done = subprocess.run(
                [runuser, "-u", "nobody", "--", *command],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=here,
                env={"PYTHONPATH": here, "PATH": "/usr/bin:/bin"},
            )
            assert done.returncode == 0, done.stderr
            assert "etl" in done.stdout
            assert sorted(os.listdir(here)) == ["app.db", "flowyml_lite"]
        finally:
            shutil.rmtree(here, ignore_errors=True)


def test_a_directory_given_as_the_database_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "list", "--db", str(tmp_path))
    assert code != 0 and "it is a directory" in err


class TestHealthAsAMonitoringCheck:
    def test_ok_and_exit_0_while_a_live_node_serves_every_schedule_and_runs_succeed(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = str(tmp_path / "s.db")
        scheduler = PipelineScheduler(SchedulerConfig(db_path=path))
        scheduler.schedule_hourly("fine", lambda: None)
        scheduler.start()
        try:
            scheduler.run_now("fine", wait=True)
            code, out, _ = run(capsys, "health", "--db", path)
        finally:
            scheduler.close()
        assert code == 0 and out.startswith("status: ok"), out

    def test_failing_schedules_exit_1_naming_them(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = str(tmp_path / "s.db")
        scheduler = PipelineScheduler(SchedulerConfig(db_path=path))

        def broken() -> None:
            raise RuntimeError("upstream down")

        scheduler.schedule_hourly("broken", broken)
        scheduler.schedule_hourly("fine", lambda: None)
        scheduler.start()
        try:
            scheduler.run_now("broken", wait=True)
            code, out, _ = run(capsys, "health", "--db", path, "--json")
        finally:
            scheduler.close()
        report = json.loads(out)
        assert (code, report["status"], report["problems"]) == (1, "attention", {"failing": ["broken"]})

    def test_schedules_no_live_node_serves_are_orphaned(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = str(tmp_path / "s.db")
        scheduler = PipelineScheduler(SchedulerConfig(db_path=path))
        scheduler.schedule_hourly("fine", lambda: None)
        scheduler.close()  # the app stopped: nothing runs its schedules now
        code, out, _ = run(capsys, "health", "--db", path)
        assert code == 1 and out.startswith("status: attention: 1 orphaned (fine)"), out


class TestUsageErrors:
    def test_an_option_a_command_does_not_take_shows_that_commands_usage(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exit_:
            main(["list", "--url", "http://127.0.0.1:1"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2
        assert "usage: flowyml-lite list [-h] [--db DB] [--json]" in err
        assert "unrecognized arguments: --url http://127.0.0.1:1" in err

    def test_an_option_before_any_command_shows_the_top_level_usage(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exit_:
            main(["--bogus", "list"])
        assert exit_.value.code == 2 and "usage: flowyml-lite [-h]" in capsys.readouterr().err


class TestHistoryLines:
    def test_columns_line_up_whether_or_not_the_fire_time_has_microseconds(self) -> None:
        """A manual run's instant keeps its microseconds; the columns after it stay in place."""
        from flowyml_lite.cli import _history_line

        base = {"status": "succeeded", "start_lag_seconds": 0.001, "started_at": "x", "duration_seconds": 0.5}
        scheduled = _history_line(dict(base, fire_time="2026-12-07T20:34:00+00:00"))
        manual = _history_line(dict(base, fire_time="2026-12-07T20:34:02.502706+00:00", reason="manual"))
        assert scheduled.index("succeeded") == manual.index("succeeded")
        assert scheduled.index("lag") == manual.index("lag")
