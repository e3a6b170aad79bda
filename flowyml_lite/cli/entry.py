"""The command line's entry point: parse the arguments, run the command, map its errors to exit codes."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Dict, Optional, Sequence

from ..errors import FlowymlLiteError, LockError, ScheduleNotFoundError, ServerUnreachableError, StoreError
from .cron_commands import _cmd_demo, _cmd_explain, _cmd_next
from .exits import EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_USAGE, NoDatabaseError
from .parser import _COMMANDS, _parser
from .remote import _cmd_run_now
from .serve import _cmd_serve
from .store_commands import _cmd_health, _cmd_history, _cmd_list, _cmd_show, _cmd_state


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
