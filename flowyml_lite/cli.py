"""The command line: ``python -m flowyml_lite`` (also installed as ``flowyml-lite``).

Exit codes: 0 success, 1 a runtime failure, 2 bad input (a bad expression, zone or argument),
3 no such schedule.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import __version__
from .apps import load_attribute, load_scheduler
from .errors import (
    ConfigurationError,
    FlowymlLiteError,
    LockError,
    ScheduleNotFoundError,
    ServerUnreachableError,
    StoreError,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3


_FACTORY_HELP = (
    "APP is a function that builds and returns the scheduler: call it (without this, only a "
    "function annotated '-> PipelineScheduler' is called: any other may be a job)"
)


#: The parser of each command, for errors said with that command's usage.
_COMMANDS: Dict[str, argparse.ArgumentParser] = {}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowyml-lite",
        description="A pipeline scheduler on the standard library: run the demo, inspect cron expressions, "
        "manage the schedules in a store, and serve them over HTTP with a dashboard.",
        epilog="examples:\n  python -m flowyml_lite demo --seconds 20\n"
        '  python -m flowyml_lite next "30 2 * * *" --tz America/New_York --after 2024-03-09 -n 3\n'
        '  python -m flowyml_lite explain "0 9 * * 1-5"\n'
        "  python -m flowyml_lite list --db .flowyml_scheduler.db\n"
        "  python -m flowyml_lite serve myjobs:scheduler --port 8080",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flowyml-lite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run example pipelines on the embedded SQLite store and show each run")
    demo.add_argument(
        "--seconds", type=_positive_seconds, default=65.0, help="how long to run (default 65, Ctrl-C stops)"
    )
    demo.add_argument("--db", help="SQLite file (default: a new file in a temporary directory)")
    demo.add_argument("-v", "--verbose", action="store_true", help="show the scheduler's own log lines")

    nxt = sub.add_parser("next", help="print the next fire instants of a cron expression")
    nxt.add_argument("expression", help='a cron expression, quoted: "0 9 * * 1-5"')
    nxt.add_argument("--tz", default="UTC", help="IANA time zone (default UTC)")
    nxt.add_argument("-n", type=_count, default=10, help="how many instants (default 10)")
    nxt.add_argument("--after", help="start after this ISO 8601 instant (default now; no offset = in --tz)")
    nxt.add_argument("--engine", default="native", help="cron engine: native (default) or croniter")
    nxt.add_argument("--hash-key", help="key for H fields (the scheduler uses the schedule name)")
    nxt.add_argument("--json", action="store_true", help="print JSON")

    explain = sub.add_parser("explain", help="describe a cron expression in English")
    explain.add_argument("expression")

    def store_command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--db", help="SQLite file (default: FLOWYML_SCHEDULER_DB_PATH or .flowyml_scheduler.db)"
        )
        return p

    for name, help_text in (
        ("list", "list the schedules in the store"),
        ("health", "summarize the store's runs"),
    ):
        store_command(name, help_text).add_argument("--json", action="store_true", help="print JSON")
    show = store_command("show", "show one schedule")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print JSON")
    history = store_command("history", "show a schedule's runs, newest first")
    history.add_argument("name")
    history.add_argument("-n", "--limit", type=_count, default=20, help="how many runs (default 20)")
    history.add_argument("--json", action="store_true", help="print JSON")
    for name, help_text in (
        ("enable", "resume a schedule"),
        ("disable", "pause a schedule (kept across restarts)"),
        ("remove", "delete a schedule and its history"),
    ):
        store_command(name, help_text).add_argument("name")
    for name in ("show", "history", "enable", "disable", "remove"):
        remote = sub.choices[name]
        remote.add_argument(
            "--url", help="a running 'serve' to ask instead of the store, e.g. http://127.0.0.1:8080"
        )
        remote.add_argument("--token", help="the server's API token (default: FLOWYML_SCHEDULER_API_TOKEN)")

    serve = sub.add_parser(
        "serve",
        help="run the scheduler with the HTTP API and dashboard",
        description="Run a scheduler and serve the HTTP API (/api/...), /metrics and the dashboard (/). "
        "APP is module:attribute of your PipelineScheduler (or of a function returning one: see "
        "--factory), imported "
        "from the current directory so its schedules are declared; without APP, the store's schedules "
        "are served as orphans (visible and manageable, run by the processes that declare them).",
        epilog="examples:\n  python -m flowyml_lite serve myjobs:scheduler\n"
        "  FLOWYML_SCHEDULER_API_TOKEN=s3cret python -m flowyml_lite serve myjobs:scheduler \\\n"
        "      --host 0.0.0.0 --allow-host scheduler.example.com\n"
        "  python -m flowyml_lite serve myjobs:scheduler --server uvicorn",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "app", nargs="?", help="module:attribute of a PipelineScheduler, e.g. myjobs:scheduler"
    )
    serve.add_argument("--factory", action="store_true", help=_FACTORY_HELP)
    serve.add_argument("--db", help="SQLite file when there is no APP (default: FLOWYML_SCHEDULER_DB_PATH)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8080, help="port (default 8080; 0 picks a free one)")
    serve.add_argument(
        "--token-file",
        metavar="PATH",
        help="file holding the API token required for changes (default: FLOWYML_SCHEDULER_API_TOKEN); "
        "a token is needed off loopback",
    )
    serve.add_argument(
        "--token",
        help="the API token itself (discouraged: other users see it in 'ps'; "
        "use the variable or --token-file)",
    )
    serve.add_argument(
        "--token-for-reads",
        action="store_true",
        help="require the token for reads too (the dashboard page and /api/health stay open)",
    )
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name clients use (repeatable); required off loopback",
    )
    serve.add_argument(
        "--server",
        choices=["stdlib", "uvicorn"],
        default="stdlib",
        help="stdlib (default, nothing to install) or uvicorn (pip install 'flowyml-lite[asgi]')",
    )
    serve.add_argument(
        "--pipeline",
        action="append",
        default=[],
        metavar="NAME=MODULE:ATTR",
        help="a pipeline POST /api/schedules may schedule (repeatable)",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="log every request")

    run_now = sub.add_parser("run-now", help="run a schedule now, outside its timetable")
    run_now.add_argument("name")
    where = run_now.add_mutually_exclusive_group(required=True)
    where.add_argument("--app", help="module:attribute of the PipelineScheduler that has its function")
    where.add_argument("--url", help="a running 'serve', e.g. http://127.0.0.1:8080")
    run_now.add_argument("--factory", action="store_true", help=_FACTORY_HELP)
    run_now.add_argument("--token", help="the server's API token (default: FLOWYML_SCHEDULER_API_TOKEN)")
    run_now.add_argument("--json", action="store_true", help="print JSON")
    _COMMANDS.clear()
    _COMMANDS.update(sub.choices)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = _parser()
    given = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(given)
    if extra:  # said by the parser of the command they follow, so its usage shows what it takes
        command = given.index(args.command) if args.command in given else len(given)
        first = min(i for i, arg in enumerate(given) if arg in extra)
        said_by = _COMMANDS.get(args.command, parser) if first > command else parser
        said_by.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = _HANDLERS[args.command]
    try:
        code = handler(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python's exit flush from failing too.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except (ScheduleNotFoundError, NoDatabaseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except (StoreError, LockError, ServerUnreachableError) as exc:  # the input was fine; this failed
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (FlowymlLiteError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(seconds=args.seconds, db_path=args.db, verbose=args.verbose)


def _parse_after(text: Optional[str], zone_name: str) -> datetime:
    if text is None:
        return datetime.now(timezone.utc)
    from .timezones import get_zone

    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--after {text!r} is not an ISO 8601 date or time, e.g. 2024-03-09T12:00 or "
            "2024-03-09T12:00:00+00:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=get_zone(zone_name).tzinfo)
    return moment


def _cmd_next(args: argparse.Namespace) -> int:
    from .core.declarations import every_second_note
    from .cron.expression import CronExpression, utc_offset_text

    expr = CronExpression(args.expression, timezone=args.tz, hash_key=args.hash_key, engine=args.engine)
    note = every_second_note(args.expression)
    if note is not None:
        print(f"warning: {note}", file=sys.stderr)
    after = _parse_after(args.after, args.tz)
    rows: List[Dict[str, Any]] = []
    for fire in expr.iter(after):
        rows.append(
            {
                "fire": fire.isoformat(),
                "utc": fire.astimezone(timezone.utc).isoformat(),
                "offset": utc_offset_text(fire),
                "zone_abbreviation": fire.tzname(),
                "dst_note": expr.dst_note(fire),
            }
        )
        if len(rows) >= args.n:
            break
    if args.json:
        print(json.dumps({"expression": args.expression, "timezone": args.tz, "fires": rows}, indent=2))
        return EXIT_OK
    kind = "fixed-time" if expr.is_fixed_time else "frequent"
    print(f"{args.expression!r} in {args.tz} ({kind}), after {after.isoformat()}:")
    for row in rows:
        note = f"  <- DST: {row['dst_note']}" if row["dst_note"] else ""
        print(f"  {row['fire']:<32} {row['zone_abbreviation'] or '':<6} = {row['utc']}{note}")
    if not rows:
        print("  (no more fires)")
    return EXIT_OK


def _cmd_explain(args: argparse.Namespace) -> int:
    from .cron.explain import explain
    from .cron.native import NativeEngine

    NativeEngine().compile(args.expression, "explain")  # validate first, for a precise error
    print(explain(args.expression))
    return EXIT_OK


class NoDatabaseError(FlowymlLiteError):
    """A command that reads or changes schedules found no database file (it never creates one)."""


def _open_store(args: argparse.Namespace, read: bool = False) -> Any:
    """The configured store, opened; a SQLite file that does not exist is an error, never created.

    ``read``: the command only reads, so a SQLite file this user may not write (an operator
    inspecting the app's database) is opened read-only instead of refused.
    """
    import os

    from .core.scheduler import open_store
    from .core.scheduler_config import SchedulerConfig
    from .errors import StoreError

    # --db names the SQLite file to read, whatever store the environment names.
    overrides = {"db_path": args.db, "store": "sqlite", "store_url": None} if args.db else {}
    config = SchedulerConfig.from_env(**overrides)
    sqlite = config.resolved_store() == "sqlite"
    if sqlite and not os.path.exists(config.db_path):
        raise NoDatabaseError(
            f"no database at {config.db_path}; give the file with --db PATH (or FLOWYML_SCHEDULER_DB_PATH)"
        )
    file = sqlite and os.path.isfile(config.db_path)
    if not (read and file and not _may_write(config.db_path)):
        try:
            return open_store(config)
        except StoreError as exc:
            text = str(exc).lower()
            if not (read and file and ("readonly" in text or "unable to open" in text)):
                raise
    from .stores.sqlite import SQLiteStore

    store = SQLiteStore(config.db_path, read_only=True)
    store.open()
    return store


def _may_write(path: str) -> bool:
    """Whether this user may write the database and the -wal and -shm files beside it. If not, a
    read-write open would create those files as this user, and lock the app out of its database."""
    import os

    files = [path] + [path + end for end in ("-wal", "-shm") if os.path.exists(path + end)]
    return all(os.access(f, os.W_OK) for f in files)


def _timetable(kind: str, value: str) -> str:
    """``interval 6`` -> ``every 6 s``; other kinds as written."""
    if kind == "interval":
        from .api.overview import seconds_text

        try:
            return "every " + seconds_text(float(value))
        except ValueError:
            return value
    return value


def _options_text(options: Dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items())) or "-"


def _zoned(text: Optional[str], zone: str) -> Optional[str]:
    """An ISO instant shown in ``zone`` (the schedule's own), as the HTTP API shows its next run."""
    if not text:
        return text
    from datetime import datetime

    from .timezones import get_zone

    try:
        return datetime.fromisoformat(text).astimezone(get_zone(zone).tzinfo).isoformat()
    except Exception:  # a zone this process lacks: the instant as stored
        return text


_RUN_INSTANTS = ("fire_time", "started_at", "completed_at", "next_attempt_at")


def _schedule_row(record: Any, zoned: bool = False) -> Dict[str, Any]:
    """A stored schedule for display; ``zoned``: its instants in its own zone (else UTC)."""
    zone = record.timezone if zoned else "UTC"
    return {
        "name": record.name,
        "type": record.schedule_type,
        "value": record.schedule_value,
        "timezone": record.timezone,
        "enabled": record.enabled,
        "next_fire": _zoned(record.next_fire.isoformat(), zone) if record.next_fire else None,
        "last_fire": _zoned(record.last_fire.isoformat(), zone) if record.last_fire else None,
        "options": record.options,
        "context": record.context,
    }


def _cmd_list(args: argparse.Namespace) -> int:
    store = _open_store(args, read=True)
    rows = [_schedule_row(r) for r in store.list_schedules()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print("no schedules")
    for row in rows:
        state = "enabled " if row["enabled"] else "disabled"
        print(
            f"{state}  {row['name']:<24} {row['type']:<8} {_timetable(row['type'], row['value']):<16} "
            f"{row['timezone']:<20} next {row['next_fire'] or '-'}"
        )
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    if args.url:
        row = _row_from_api(_api("GET", args, f"/api/schedules/{_quote(args.name)}"))
    else:
        record = _open_store(args, read=True).get_schedule(args.name)
        if record is None:
            raise ScheduleNotFoundError(args.name)
        row = _schedule_row(record, zoned=True)
    if args.json:
        print(json.dumps(row, indent=2))
        return EXIT_OK
    from .api.overview import describe

    text = dict(row)
    words = describe(row["type"], row["value"], row["name"])
    text["value"] = f"{_timetable(row['type'], row['value'])}  ({words})"
    text["enabled"] = "yes" if row["enabled"] else "no (paused)"
    text["next_fire"] = row["next_fire"] or "-"
    text["last_fire"] = row["last_fire"] or "-"
    text["options"] = _options_text(row["options"])
    text["context"] = json.dumps(row["context"], sort_keys=True) if row["context"] else "-"
    for key, value in text.items():
        print(f"{key:>10}: {value}")
    return EXIT_OK


def _row_from_api(item: Dict[str, Any]) -> Dict[str, Any]:
    """A schedule from the HTTP API in the shape of ``_schedule_row``: the options a store keeps
    (the four always there, and every other one set to something else than its default)."""
    from .core.options import OPTION_NAMES, Options

    always = ("misfire_grace_seconds", "catchup", "max_catchup", "max_instances")
    defaults = Options()
    options = {
        k: item[k]
        for k in OPTION_NAMES
        if k in item and (k in always or (item[k] is not None and item[k] != getattr(defaults, k, None)))
    }
    return {
        "name": item.get("name"),
        "type": item.get("schedule_type"),
        "value": item.get("schedule_value"),
        "timezone": item.get("timezone"),
        "enabled": item.get("enabled"),
        "next_fire": item.get("next_run"),
        "last_fire": item.get("last_run"),
        "options": options,
        "context": item.get("context") or {},
    }


def _cmd_history(args: argparse.Namespace) -> int:
    if args.url:
        zone = _api("GET", args, f"/api/schedules/{_quote(args.name)}").get("timezone") or "UTC"
        entries = _api("GET", args, f"/api/schedules/{_quote(args.name)}/history?limit={args.limit}")
    else:
        from .api.overview import run_json

        store = _open_store(args, read=True)
        record = store.get_schedule(args.name)
        if record is None:
            raise ScheduleNotFoundError(args.name)
        zone = record.timezone
        entries = [run_json(r, details=True) for r in store.history(args.name, args.limit)]
    for entry in entries:  # each schedule's instants in its own zone, whichever way they were read
        for key in _RUN_INSTANTS:
            if isinstance(entry.get(key), str):
                entry[key] = _zoned(entry[key], zone)
    if args.json:
        print(json.dumps(entries, indent=2))
        return EXIT_OK
    if not entries:
        print(f"no runs of {args.name!r} yet")
    for e in entries:
        print(_history_line(e))
    return EXIT_OK


def _history_line(e: Dict[str, Any]) -> str:
    """One run: fire time, status, attempt, start lag, duration (elapsed while running), run id, error."""
    status = e.get("status") or "-"
    lag = e.get("start_lag_seconds")
    lag_text = f"{lag * 1000:.1f} ms" if lag is not None and status not in ("skipped", "missed") else "-"
    if status == "running":
        elapsed = e.get("elapsed_seconds")
        took = f"running {elapsed:.1f}s" if elapsed is not None else "running"
    elif e.get("started_at") and e.get("duration_seconds") is not None and lag_text != "-":
        took = f"{e['duration_seconds']:.3f}s"
    else:
        took = "-"
    attempt = e.get("attempt") or 1
    detail = e.get("error") or e.get("reason") or ""
    first = detail.splitlines()[0] if detail else ""
    tries = f"attempt {attempt}" if attempt > 1 else ""
    return (
        f"{e.get('fire_time')!s:<32}  {status:<9} {tries:<10}"  # a manual run's instant has microseconds
        f"lag {lag_text:>9}  {took:>12}  run_id={e.get('run_id') or '-'}  {first}"
    ).rstrip()


def _cmd_state(args: argparse.Namespace) -> int:
    if args.url:
        path = f"/api/schedules/{_quote(args.name)}"
        if args.command == "remove":
            _api("DELETE", args, path)
        else:
            _api("POST", args, f"{path}/{args.command}")
        print(f"{args.command}d {args.name!r}" if args.command != "remove" else f"removed {args.name!r}")
        return EXIT_OK
    store = _open_store(args)
    record = store.get_schedule(args.name)
    if record is None:
        raise ScheduleNotFoundError(args.name)
    if args.command == "remove":
        store.delete_schedule(args.name)
    elif args.command == "disable":
        store.set_enabled(args.name, False, None)
    elif not record.enabled:
        from .core.scheduler_config import SchedulerConfig
        from .core.triggers import build_trigger

        config = SchedulerConfig.from_env()
        trigger = build_trigger(
            record.schedule_type,
            record.schedule_value,
            record.timezone,
            record.name,
            config.cron_engine,
            config.timezone_provider,
        )
        store.set_enabled(args.name, True, trigger.next_after(datetime.now(timezone.utc)))
    print(f"{args.command}d {args.name!r}" if args.command != "remove" else f"removed {args.name!r}")
    return EXIT_OK


def _store_problems(store: Any) -> Dict[str, List[str]]:
    """What needs a look, by what is wrong (from the store alone, as the dashboard judges it):
    schedules failing (their last runs failed), late (their next fire is over a minute past, or
    past at all when their node is silent) and orphaned (no live node serves them); silent nodes
    (two heartbeats missed, not judged lost yet) and lost ones (past the node timeout)."""
    from datetime import datetime, timezone

    from .api.overview import alive_nodes, schedule_state, silent_nodes
    from .core.scheduler_config import SchedulerConfig

    config = SchedulerConfig.from_env()
    now = datetime.now(timezone.utc)
    timeout = float(config.node_timeout_seconds)
    alive = alive_nodes(store, timeout, now)
    silent = silent_nodes(store, alive, float(config.heartbeat_seconds), now)
    window = max(2 * timeout, 3 * float(config.heartbeat_seconds))
    found: Dict[str, List[str]] = {"failing": [], "late": [], "orphaned": []}
    records = store.list_schedules()
    recent = store.recent_runs([record.name for record in records], 10)
    for record in records:
        state = schedule_state(
            record,
            recent.get(record.name, []),
            here=False,
            node_id="",
            alive=alive,
            orphan_window=window,
            now=now,
            silent=silent,
        )["state"]
        if state in found:
            found[state].append(record.name)
    found["silent_nodes"] = sorted(silent)
    found["lost_nodes"] = sorted(n.node_id for n in store.list_nodes() if n.node_id not in alive)
    return found


def _cmd_health(args: argparse.Namespace) -> int:
    store = _open_store(args, read=True)
    stats = store.stats()
    nodes = store.list_nodes()
    problems = _store_problems(store)
    bad = {kind: names for kind, names in problems.items() if names}
    report = {
        "status": "attention" if bad else "ok",
        "problems": bad,
        "schedules": len(store.list_schedules()),
        "runs": {
            "succeeded": stats.succeeded,
            "failed": stats.failed,
            "timed_out": stats.timed_out,
            "missed": stats.missed,
            "skipped": stats.skipped,
            "lost": stats.lost,
            "running": stats.running,
        },
        "avg_duration_seconds": stats.avg_duration_seconds,
        "nodes": [{"node_id": n.node_id, "heartbeat": n.heartbeat.isoformat()} for n in nodes],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        said = "; ".join(
            f"{len(names)} {kind.replace('_', ' ')} ({', '.join(names[:10])})" for kind, names in bad.items()
        )
        print(f"status: {report['status']}" + (f": {said}" if said else ""))
        print(f"schedules: {report['schedules']}")
        print("runs: " + ", ".join(f"{k} {v}" for k, v in report["runs"].items()))
        for node in report["nodes"]:
            print(f"node {node['node_id']}: last heartbeat {node['heartbeat']}")
    return EXIT_FAILURE if bad else EXIT_OK  # a monitoring check: non-zero when something needs a look


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging
    import os
    import signal
    import threading

    from .api import TOKEN_ENV, ApiServer
    from .api.server import check_exposure, check_token, read_token_file

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.token is not None and args.token_file is not None:
        raise ConfigurationError("give the token once: --token-file or --token, not both")
    token: Optional[str]
    if args.token_file is not None:
        token = read_token_file(args.token_file)
    elif args.token is not None:
        token = check_token(args.token, "--token")
        print(
            f"warning: a token given with --token shows in 'ps' to every user of this machine; "
            f"use {TOKEN_ENV} or --token-file",
            file=sys.stderr,
        )
    else:
        token = check_token(os.environ.get(TOKEN_ENV), TOKEN_ENV)
    check_exposure(args.host, token, args.allow_host)  # before the store is opened or created
    if args.token_for_reads and not token:
        raise ConfigurationError(f"--token-for-reads needs a token ({TOKEN_ENV} or --token-file)")
    run_server = None
    if args.server != "stdlib":  # a plugin (flowyml_lite_ext): its missing package named before anything
        from . import plugins

        run_server = plugins.get("servers", args.server)
    pipelines = {}
    for item in args.pipeline:
        name, sep, spec = item.partition("=")
        if not sep or not name:
            raise ConfigurationError(
                f"--pipeline {item!r}: write NAME=module:attribute, e.g. etl=myjobs:run_etl"
            )
        pipelines[name] = load_attribute(spec, "--pipeline")
    _check_listen(args.host, args.port)  # before the app is imported or the store opened
    scheduler = _scheduler_for(args.app, args.db, args.factory)
    if run_server is not None:

        def ready(url: str) -> None:
            where = "dashboard /, API /api/schedules"
            print(f"flowyml-lite serving {url} with {args.server} ({where}); Ctrl-C stops")
            sys.stdout.flush()

        run_server(
            scheduler,
            args.host,
            args.port,
            token=token,
            pipelines=pipelines,
            allow_hosts=args.allow_host,
            token_for_reads=args.token_for_reads,
            access_log=args.verbose,
            ready=ready,
        )
        return EXIT_OK
    server = ApiServer(
        scheduler,
        args.host,
        args.port,
        token=token,
        pipelines=pipelines,
        allow_hosts=args.allow_host,
        token_for_reads=args.token_for_reads,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    scheduler.start()
    server.start()
    print(
        f"flowyml-lite serving {server.url} (dashboard /, API /api/schedules, metrics /metrics); Ctrl-C stops"
    )
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        _stop_gently(scheduler)
    return EXIT_OK


def _check_listen(host: str, port: int) -> None:
    """ConfigurationError when nothing could listen on ``host:port`` (in use, or not an address here)."""
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind(address)
        except OSError as exc:
            reason = "the port is in use" if exc.errno in (98, 48, 10048) else exc.strerror or str(exc)
            raise ConfigurationError(
                f"cannot listen on {host}:{port}: {reason}; pick another with --port (0 picks a free one)"
            ) from None


def _stop_gently(scheduler: Any) -> None:
    """Stop the scheduler, waiting for runs in flight; a second Ctrl-C (or SIGTERM) stops at once."""
    import os
    import signal

    try:
        mine = [r for r in scheduler.store.active_runs() if r.node_id == scheduler.node_id]
    except Exception:  # the store is down: stop without counting
        mine = []
    if mine:
        count = len(mine)

        def now(*_: Any) -> None:
            message = f"\nstopping now: {count} unfinished run(s) will be recorded as lost"
            print(message, file=sys.stderr, flush=True)
            os._exit(130)

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, now)
        print(f"waiting for {count} run(s) (Ctrl-C again to stop now)", file=sys.stderr, flush=True)
    scheduler.stop()


def _cmd_run_now(args: argparse.Namespace) -> int:
    import os

    if args.app:
        from .executors.child_import import holding_starts

        with holding_starts():  # the app's module may call start() as it is imported
            scheduler = _scheduler_for(args.app, None, args.factory)
        try:
            entry = scheduler.run_now(args.name, wait=True)
        finally:
            scheduler.stop()
    else:
        entry = _post_run(args.url, args.name, args.token or os.environ.get("FLOWYML_SCHEDULER_API_TOKEN"))
    if args.json:
        print(json.dumps(entry, indent=2))
    elif entry["status"] == "skipped":
        print(f"{args.name}: skipped: {entry.get('reason') or 'an earlier run is still in progress'}")
    else:
        print(f"{args.name}: {entry['status']} (fire {entry['fire_time']}, run_id {entry['run_id'] or '-'})")
        if entry.get("error"):
            print(entry["error"])
    return EXIT_OK if entry["status"] in ("succeeded", "running") else EXIT_FAILURE


def _post_run(url: str, name: str, token: Optional[str], timeout: int = 3600) -> Dict[str, Any]:
    import urllib.error
    import urllib.parse
    import urllib.request

    url = _base_url(url)
    target = (
        f"{url.rstrip('/')}/api/schedules/{urllib.parse.quote(name, safe='')}/run?wait=true&timeout={timeout}"
    )
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(target, data=b"", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout + 30) as response:
            return json.loads(response.read())["run"]  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = str(exc)
        if exc.code == 404 and "no schedule" in message:
            raise ScheduleNotFoundError(name) from None
        raise FlowymlLiteError(f"{target}: {exc.code} {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServerUnreachableError(
            f"cannot reach {url}: {getattr(exc, 'reason', exc)}; is 'serve' running?"
        ) from None


def _base_url(url: str) -> str:
    """``127.0.0.1:8080`` -> ``http://127.0.0.1:8080``."""
    return url if "://" in url else "http://" + url


def _quote(name: str) -> str:
    import urllib.parse

    return urllib.parse.quote(name, safe="")


def _api(method: str, args: argparse.Namespace, path: str) -> Any:
    """One request to a running 'serve' (``args.url``, ``args.token``); its JSON answer."""
    import os
    import urllib.error
    import urllib.request

    base = _base_url(args.url).rstrip("/")
    token = args.token or os.environ.get("FLOWYML_SCHEDULER_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(base + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = str(exc)
        if exc.code == 404 and "no schedule" in message:
            raise ScheduleNotFoundError(args.name) from None
        raise FlowymlLiteError(f"{base}{path}: {exc.code} {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServerUnreachableError(
            f"cannot reach {base}: {getattr(exc, 'reason', exc)}; is 'serve' running?"
        ) from None


def _count(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text}")
    return value


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535 (0 picks a free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {value}")
    return value


def _scheduler_for(app: Optional[str], db: Optional[str], factory: bool = False) -> Any:
    """The user's scheduler (``module:attr``; a factory is called only when it says it is one, or
    with ``--factory``: any other callable may be a job), or one from the environment."""
    from .core.scheduler import PipelineScheduler
    from .core.scheduler_config import SchedulerConfig

    if app is None:
        overrides: Dict[str, Any] = {"db_path": db, "store": "sqlite", "store_url": None} if db else {}
        config = SchedulerConfig.from_env(**overrides)
        if config.resolved_store() == "sqlite" and not os.path.exists(config.db_path):
            print(  # a new, empty store (a fresh volume), or a typo: say which file it is
                f"note: no database at {config.db_path}: creating a new, empty one",
                file=sys.stderr,
            )
        return PipelineScheduler(config)
    return load_scheduler(app, factory)


_HANDLERS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": _cmd_demo,
    "next": _cmd_next,
    "explain": _cmd_explain,
    "list": _cmd_list,
    "show": _cmd_show,
    "history": _cmd_history,
    "enable": _cmd_state,
    "disable": _cmd_state,
    "remove": _cmd_state,
    "health": _cmd_health,
    "serve": _cmd_serve,
    "run-now": _cmd_run_now,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
