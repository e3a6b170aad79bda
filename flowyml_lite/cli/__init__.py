"""The command line: ``python -m flowyml_lite`` (also installed as ``flowyml-lite``).

Exit codes: 0 success, 1 a runtime failure, 2 bad input (a bad expression, zone or argument),
3 no such schedule.

The package: ``entry.py`` reads the command line and calls the command's function, ``parser.py``
defines the commands and their arguments, ``exits.py`` the exit codes; the commands are in
``cron_commands.py`` (demo, next, explain), ``store_commands.py`` (list, show, history, enable,
disable, remove, health), ``serve.py`` and ``remote.py`` (run-now, and the requests to a running serve).
"""

from __future__ import annotations

from .entry import main
from .exits import EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, NoDatabaseError
from .store_commands import _history_line  # noqa: F401 - importable from here, as before

__all__ = ["EXIT_FAILURE", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_USAGE", "NoDatabaseError", "main"]
