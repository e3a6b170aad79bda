"""serve_forever(): a script's main loop, stopped cleanly by Ctrl-C and SIGTERM (docker stop, systemd)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys, time
from flowyml_lite import PipelineScheduler, SchedulerConfig
scheduler = PipelineScheduler(SchedulerConfig(db_path=sys.argv[1]))
def slow():
    open(sys.argv[2], "w").close()
    time.sleep(1.5)
scheduler.schedule_interval("slow", slow, seconds=1)
if __name__ == "__main__":
    scheduler.serve_forever()
"""


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_serve_forever_after_the_run_in_flight_is_recorded(tmp_path: Path, sig: int) -> None:
    script, db, started = tmp_path / "jobs.py", tmp_path / "jobs.db", tmp_path / "started"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db), str(started)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while not started.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "scheduler running: 1 schedule(s)" in err  # said where it is seen, logging or not
    reader = PipelineScheduler(SchedulerConfig(db_path=str(db)))
    statuses = [entry["status"] for entry in reader.get_history("slow")]
    reader.close()
    assert "succeeded" in statuses
    assert not {"running", "queued"} & set(statuses), statuses
