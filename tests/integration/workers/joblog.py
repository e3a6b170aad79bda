"""The append-only run log the integration workers write, and the harness the tests drive them with.

A worker's job appends one line per event with a single ``os.write`` on an ``O_APPEND`` descriptor,
so lines from concurrent processes never interleave (POSIX appends are atomic for small writes on a
local file system). A line is::

    fire_second <TAB> pid <TAB> wall_time <TAB> schedule <TAB> event <TAB> fire_seen

``fire_second`` is the job's start time rounded down to the second (the fire instant of a whole-second
interval grid when the start lag is under a second); ``wall_time`` is ``time.time()`` at the event;
``fire_seen`` is the fire instant the scheduler's running row for this process says it is executing
(Unix seconds, or ``?`` when it could not be read): the pipeline function takes no arguments, so this is
the only way for a job to learn its fire time.

Workers import this file as a sibling module (``import joblog``); tests import it as
``tests.integration.workers.joblog``. Standard library only.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar

ROOT = pathlib.Path(__file__).resolve().parents[3]
WORKERS = pathlib.Path(__file__).resolve().parent
T = TypeVar("T")


@dataclass(frozen=True)
class LogLine:
    """One event a job wrote."""

    fire_second: int
    pid: int
    wall_time: float
    schedule: str
    event: str
    fire_seen: Optional[float]


def append_line(
    path: str, schedule: str, event: str, fire_seen: Optional[float] = None, wall_time: Optional[float] = None
) -> float:
    """Append one event line with one write; return its wall time."""
    now = time.time() if wall_time is None else wall_time
    seen = "?" if fire_seen is None else f"{fire_seen:.6f}"
    line = f"{math.floor(now)}\t{os.getpid()}\t{now:.6f}\t{schedule}\t{event}\t{seen}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        data = line.encode()
        if os.write(fd, data) != len(data):
            raise OSError(f"short append to {path}")
    finally:
        os.close(fd)
    return now


def read_log(path: pathlib.Path) -> List[LogLine]:
    """Every complete line of the log (a missing file is an empty log)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for raw in text.splitlines(keepends=True):
        if not raw.endswith("\n"):
            continue  # a line being written right now; the next read sees it whole
        fire, pid, wall, schedule, event, seen = raw.rstrip("\n").split("\t")
        out.append(
            LogLine(int(fire), int(pid), float(wall), schedule, event, None if seen == "?" else float(seen))
        )
    return out


def write_json(path: str, data: Dict[str, Any]) -> None:
    """Write JSON atomically (temporary file, then rename), so a poller never reads half of it."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_json(path: pathlib.Path) -> Dict[str, Any]:
    with open(path) as handle:
        data: Dict[str, Any] = json.load(handle)
    return data


def wait_for(
    predicate: Callable[[], Optional[T]], timeout: float, what: str, procs: Sequence[Worker] = ()
) -> T:
    """Poll ``predicate`` every 20 ms until it returns a truthy value; fail after ``timeout`` seconds.

    Fails early, with the workers' stderr, when one of ``procs`` exits before the condition holds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for proc in procs:
            if proc.popen.poll() is not None and not proc.expected_exit:
                raise AssertionError(
                    f"waiting for {what}: worker {proc.name} exited with "
                    f"{proc.popen.returncode}\n{proc.stderr_text()}"
                )
        if time.monotonic() > deadline:
            details = "\n".join(f"--- {p.name} stderr ---\n{p.stderr_text()}" for p in procs)
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{details}")
        time.sleep(0.02)


class Worker:
    """A worker script run with this interpreter, flowyml_lite imported from the repository."""

    def __init__(
        self, name: str, script: str, args: Sequence[str], directory: pathlib.Path, prefix: Sequence[str] = ()
    ) -> None:
        """Start ``script`` with ``args`` in ``directory``; ``prefix`` wraps the command (``unshare``...)."""
        self.name = name
        self.stderr_path = directory / f"{name}.stderr"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
        for key in [k for k in env if k.upper().startswith("FLOWYML_SCHEDULER_")]:
            del env[key]  # the workers' configuration is what their arguments say
        self.expected_exit = False
        with open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(
                [*prefix, sys.executable, str(WORKERS / script), *args],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(directory),
            )

    @property
    def pid(self) -> int:
        """The pid of the started command (the wrapper's when there is a ``prefix``)."""
        return self.popen.pid

    def stderr_text(self, tail: int = 4000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def wait_exit(self, timeout: float) -> int:
        """Wait for the worker to exit by itself; its exit code (fails on timeout)."""
        self.expected_exit = True
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.name} did not exit within {timeout:.0f}s\n{self.stderr_text()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL the worker if it still runs, and reap it (a zombie's pid would still look alive)."""
        self.expected_exit = True
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(30)


# -- used inside the workers ------------------------------------------------------------------


def fire_seen(scheduler: Any, name: str) -> Optional[float]:
    """The fire instant (Unix seconds) of the run of ``name`` this process is executing, from the store.

    There is no API for a job to learn its fire time; this reads the one ``running`` row of this
    node (``max_instances=1``). None if there is not exactly one.
    """
    try:
        mine = [
            r
            for r in scheduler.store.active_runs(name)
            if r.node_id == scheduler.node_id and r.status == "running"
        ]
    except Exception:  # the log line is still written; the test reports the missing value
        return None
    return mine[0].fire_time.timestamp() if len(mine) == 1 else None


def wait_for_file(path: str, max_seconds: float) -> bool:
    """Block until ``path`` exists (True) or ``max_seconds`` pass (False): the workers' stop signal."""
    deadline = time.monotonic() + max_seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
