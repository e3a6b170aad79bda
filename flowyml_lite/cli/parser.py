"""The command line's commands and their arguments (argparse), and the argument types they use."""

from __future__ import annotations

import argparse
from typing import Dict

from .. import __version__

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
