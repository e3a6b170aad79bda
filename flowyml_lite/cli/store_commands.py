"""The commands that read or change the schedules in a store (or through a running serve, ``--url``):
``list``, ``show``, ``history``, ``enable``, ``disable``, ``remove``, ``health``."""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

from ..errors import ScheduleNotFoundError, StoreError
from .exits import EXIT_FAILURE, EXIT_OK, NoDatabaseError
from .remote import _api, _quote


def _open_store(args: argparse.Namespace, read: bool = False) -> Any:
    """The configured store, opened; a SQLite file that does not exist is an error, never created.

    ``read``: the command only reads, so a SQLite file this user may not write (an operator
    inspecting the app's database) is opened read-only instead of refused.
    """

    from ..core.scheduler import open_store
    from ..core.scheduler_config import SchedulerConfig

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
    from ..stores.sqlite import SQLiteStore

    store = SQLiteStore(config.db_path, read_only=True)
    store.open()
    return store


def _may_write(path: str) -> bool:
    """Whether this user may write the database and the -wal and -shm files beside it. If not, a
    read-write open would create those files as this user, and lock the app out of its database."""

    files = [path] + [path + end for end in ("-wal", "-shm") if os.path.exists(path + end)]
    return all(os.access(f, os.W_OK) for f in files)


def _timetable(kind: str, value: str) -> str:
    """``interval 6`` -> ``every 6 s``; other kinds as written."""
    if kind == "interval":
        from ..api.overview import seconds_text

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

    from ..timezones import get_zone

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
    from ..api.overview import describe

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
    from ..core.options import OPTION_NAMES, Options

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
        from ..api.overview import run_json

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
        from ..core.scheduler_config import SchedulerConfig
        from ..core.triggers import build_trigger

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

    from ..api.overview import alive_nodes, schedule_state, silent_nodes
    from ..core.scheduler_config import SchedulerConfig

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
