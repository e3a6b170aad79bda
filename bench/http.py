#!/usr/bin/env python3
"""HTTP benchmark: the stdlib server (``ApiServer``) against uvicorn serving the ASGI app, in one run,
with http.server's ThreadingHTTPServer in front of the same routes as the baseline.

Measures, for each server in turn (each in its own process; the load comes from this process):
  keep-alive  requests/s, p50 and p99 latency of GET /api/schedules (20 schedules) and GET /api/health
              with 1, 10 and 50 keep-alive clients (asyncio connections, each sending its next request
              when the previous answer is in)
  slow        the slow-client ramp: 0, 250, 500 and 1,000 connections that send part of a request and
              then one byte every 10 s; at each step, real requests (a new connection each) for a few
              seconds: answered, failed, p99; then all slow connections closed at once and the real
              requests measured again
  lag         the start lag of an interval schedule firing every 0.5 s in the server process, idle,
              under the keep-alive load, during the ramp, and when the slow connections all close

    python bench/http.py                 # everything, about 3 minutes
    python bench/http.py --quick         # shorter windows, 1 and 10 clients, ramp to 250
    python bench/http.py --save          # also write bench/results/http-<UTC time>.txt

Everything stays on 127.0.0.1 and every loop is bounded in time. On a shared 2-core machine the
client and the server share the cores: compare the two servers within one run, not across runs.
"""

from __future__ import annotations

import os
import sys

# This file is named http.py: run as a script its folder comes first on sys.path, where it would
# stand in for the standard library's http package. Drop that entry before anything imports http.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from typing import Any, Dict, List, Optional, Tuple  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SERVERS = ("stdlib", "uvicorn", "threading")


# -- the server process -------------------------------------------------------------------------


def serve(kind: str) -> None:
    """Run one server on a free port; print the port; stop on SIGTERM."""
    import logging

    from flowyml_lite import PipelineScheduler, SchedulerConfig

    logging.basicConfig(level=logging.ERROR)
    scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
    for i in range(20):
        scheduler.schedule_cron(f"report-{i:02d}", _noop, f"{i} 3 * * *", timezone="Europe/Paris")
    scheduler.schedule_interval("heartbeat", _noop, seconds=0.5)  # its start lag: is the loop delayed?
    if kind == "stdlib":
        from flowyml_lite.api import ApiServer

        scheduler.start()
        server = ApiServer(scheduler, port=0).start()
        print(server.port, flush=True)
        signal.sigwait([signal.SIGTERM, signal.SIGINT])
        server.stop()
        scheduler.stop()
    elif kind == "threading":
        scheduler.start()
        server = threading_server(scheduler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(server.server_address[1], flush=True)
        signal.sigwait([signal.SIGTERM, signal.SIGINT])
        server.shutdown()
        scheduler.stop()
    else:
        from flowyml_lite_ext.uvicorn_server import serve as serve_uvicorn

        serve_uvicorn(scheduler, port=0, ready=lambda url: print(url.rsplit(":", 1)[1], flush=True))


def threading_server(scheduler: Any) -> Any:
    """The baseline: the same routes behind the standard library's ThreadingHTTPServer, a thread per
    connection and a 30 s timeout per read, headers and body written separately (as http.server does)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from flowyml_lite.api.app import ApiApp, Request

    app = ApiApp(scheduler, allowed_hosts=["127.0.0.1", "localhost"])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30

        def do_GET(self) -> None:
            response = app.handle(Request("GET", self.path, dict(self.headers.items()), b""))
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            return None  # the reset connections of the ramp; socketserver would print each traceback

    return Server(("127.0.0.1", 0), Handler)


def _noop() -> None:
    return None


class Server:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.process = subprocess.Popen(
            [sys.executable, __file__, "serve", kind], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        for _ in range(100):  # bounded: 10 s until the health probe says running
            try:
                if _get(self.port, "/api/health")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)

    def lags(self) -> List[Tuple[float, float]]:
        """(fire time as Unix time, start lag in ms) of the heartbeat schedule's runs."""
        from datetime import datetime

        entries = json.loads(_get(self.port, "/api/schedules/heartbeat/history?limit=1000")[1])
        return [
            (datetime.fromisoformat(e["fire_time"]).timestamp(), e["start_lag_seconds"] * 1000)
            for e in entries
            if e.get("start_lag_seconds") is not None
        ]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def _get(port: int, path: str) -> Tuple[int, bytes]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# -- the load ------------------------------------------------------------------------------------


def _request(path: str, port: int, close: bool = False) -> bytes:
    extra = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def keep_alive_load(port: int, path: str, clients: int, seconds: float) -> Dict[str, Any]:
    """``clients`` keep-alive connections, each sending its next request when its answer is in."""
    latencies: List[float] = []
    errors = 0
    request = _request(path, port)
    start = time.perf_counter()
    measure_from = start + 0.3  # the first requests warm up
    stop_at = measure_from + seconds

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                sent = time.perf_counter()
                if sent >= stop_at:
                    return
                writer.write(request)
                status = await _read_response(reader)
                done = time.perf_counter()
                if done >= measure_from:
                    if status != 200:
                        errors += 1
                    latencies.append(done - sent)
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return _summary(latencies, errors, seconds)


def _summary(latencies: List[float], errors: int, seconds: float) -> Dict[str, Any]:
    latencies.sort()

    def pct(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")
        )

    return {
        "rps": len(latencies) / seconds,
        "p50": pct(0.5),
        "p99": pct(0.99),
        "n": len(latencies),
        "errors": errors,
    }


async def fresh_connection_load(port: int, seconds: float) -> Dict[str, Any]:
    """One real client making requests on a new connection each, for ``seconds``: answered or not."""
    latencies: List[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    request = _request("/api/schedules", port, close=True)
    while time.perf_counter() < stop_at:
        sent = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            try:
                writer.write(request)
                status = await asyncio.wait_for(_read_response(reader), 5)
            finally:
                writer.close()
            if status == 200:
                latencies.append(time.perf_counter() - sent)
            else:
                errors += 1
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            errors += 1
    return _summary(latencies, errors, seconds)


class SlowClients:
    """Connections that send part of a request, then one more byte every 10 s."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.socks: List[socket.socket] = []
        self.refused = 0

    def open(self, total: int, budget: float = 20.0) -> None:
        """Up to ``total`` open slow connections, trying for ``budget`` seconds at most."""
        give_up = time.perf_counter() + budget
        while len(self.socks) < total and time.perf_counter() < give_up:
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                sock.sendall(b"GET /api/schedules HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                sock.setblocking(False)
                self.socks.append(sock)
            except OSError:  # refused, or not accepted in time
                self.refused += 1

    async def trickle(self, seconds: float) -> None:
        """One byte on every connection every 10 s (the first right away) for ``seconds``."""
        stop_at = time.perf_counter() + seconds
        while True:
            for sock in list(self.socks):
                try:
                    sock.send(b"x")
                except OSError:  # closed by the server (its deadline, or to make room)
                    self.socks.remove(sock)
                    sock.close()
            left = stop_at - time.perf_counter()
            if left <= 0:
                return
            await asyncio.sleep(min(10.0, left))

    def open_count(self) -> int:
        """Connections the server has not closed yet."""
        alive = []
        for sock in self.socks:
            try:
                data = sock.recv(65536)
                if not data:  # closed by the server
                    sock.close()
                    continue
            except BlockingIOError:
                pass
            except OSError:
                sock.close()
                continue
            alive.append(sock)
        self.socks = alive
        return len(alive)

    def close_all(self) -> None:
        for sock in self.socks:
            sock.close()
        self.socks = []


async def slow_ramp(server: Server, steps: List[int], seconds: float) -> List[Dict[str, Any]]:
    rows = []
    slow = SlowClients(server.port)
    for step in steps:
        slow.open(step)
        trickle = asyncio.ensure_future(slow.trickle(seconds + 0.5))
        result = await fresh_connection_load(server.port, seconds)
        await trickle
        rows.append({"slow": step, "open": slow.open_count(), **result})
    closing = time.time()
    slow.close_all()
    result = await fresh_connection_load(server.port, seconds)
    rows.append({"slow": "closed all", "open": 0, "closing": closing, **result})
    return rows


# -- the report -----------------------------------------------------------------------------------


def run(quick: bool) -> str:
    seconds = 1.0 if quick else 2.0
    levels = [1, 10] if quick else [1, 10, 50]
    steps = [0, 250] if quick else [0, 250, 500, 1000]
    lines = [
        f"flowyml_lite HTTP benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average at start {os.getloadavg()[0]:.2f}",
        f"commit: {_commit()}; uvicorn {_version('uvicorn')}",
        "client: this process, asyncio; servers: one process each, 20 schedules + 1 interval schedule;",
        "threading = the same routes behind http.server's ThreadingHTTPServer (the baseline)",
        "",
        f"keep-alive: requests/s, p50 and p99 in ms, {seconds:g} s per row after 0.3 s of warm-up",
        f"{'server':8} {'path':16} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}",
    ]
    results: Dict[Tuple[str, str, int], Dict[str, Any]] = {}
    ramp: Dict[str, List[Dict[str, Any]]] = {}
    lag: Dict[str, Dict[str, str]] = {}
    for kind in SERVERS:
        server = Server(kind)
        try:
            phases = {"idle": (time.time(), time.time() + 3)}
            time.sleep(3)  # the heartbeat fires on an idle server: the reference
            loaded = time.time()
            for path in ("/api/schedules", "/api/health"):
                for clients in levels:
                    row = asyncio.run(keep_alive_load(server.port, path, clients, seconds))
                    results[(kind, path, clients)] = row
                    lines.append(
                        f"{kind:8} {path:16} {clients:7d} {row['rps']:8.0f} {row['p50']:8.2f} "
                        f"{row['p99']:8.2f} {row['errors']:6d}"
                    )
            phases["keep-alive load"] = (loaded, time.time())
            ramped = time.time()
            ramp[kind] = asyncio.run(asyncio.wait_for(slow_ramp(server, steps, seconds * 2), 300))
            closing = ramp[kind][-1]["closing"]
            phases["slow ramp"] = (ramped, closing)
            phases["closing all, after"] = (closing, time.time())
            lag[kind] = _lag_by_phase(server.lags(), phases)
        finally:
            server.stop()
    for peer in SERVERS[1:]:
        lines += ["", f"ratio stdlib / {peer} (req/s)"]
        for path in ("/api/schedules", "/api/health"):
            ratios = []
            for c in levels:
                ratio = results[("stdlib", path, c)]["rps"] / max(results[(peer, path, c)]["rps"], 1)
                ratios.append(f"{c} clients {ratio:.2f}")
            lines.append(f"  {path:16} " + ", ".join(ratios))
    lines += [
        "",
        f"slow-client ramp: real GET /api/schedules on a new connection each, {seconds * 2:g} s per row,",
        "while N connections hold part of a request and send one byte every 10 s",
        f"{'server':8} {'slow conns':>10} {'still open':>10} {'answered':>8} {'failed':>6} "
        f"{'req/s':>7} {'p99 ms':>8}",
    ]
    for kind in SERVERS:
        for row in ramp[kind]:
            lines.append(
                f"{kind:8} {row['slow']!s:>10} {row['open']:10d} {row['n']:8d} {row['errors']:6d} "
                f"{row['rps']:7.0f} {row['p99']:8.2f}"
            )
    lines += [
        "",
        "scheduler start lag in the server process: an interval schedule firing every 0.5 s, its runs'",
        "start lag (ms) in each phase: fires, p50, max",
        f"{'server':9} " + " ".join(f"{name:>22}" for name in lag[SERVERS[0]]),
    ]
    for kind in SERVERS:
        lines.append(f"{kind:9} " + " ".join(f"{value:>22}" for value in lag[kind].values()))
    lines.append(f"load average at end {os.getloadavg()[0]:.2f}")
    return "\n".join(lines) + "\n"


def _lag_by_phase(lags: List[Tuple[float, float]], phases: Dict[str, Tuple[float, float]]) -> Dict[str, str]:
    out = {}
    for name, (start, end) in phases.items():
        values = sorted(lag for fire, lag in lags if start <= fire < end)
        out[name] = f"{len(values)}, {values[len(values) // 2]:.1f}, {values[-1]:.1f}" if values else "-"
    return out


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        )
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


def _version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "not installed"


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        serve(args[1])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter windows and fewer steps")
    parser.add_argument("--save", action="store_true", help="write bench/results/http-<UTC>.txt")
    options = parser.parse_args(args)
    report = run(options.quick)
    print(report, end="")
    if options.save:
        name = f"http-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.txt"
        path = os.path.join(ROOT, "bench", "results", name)
        with open(path, "w") as handle:
            handle.write(report)
        print(f"saved {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
