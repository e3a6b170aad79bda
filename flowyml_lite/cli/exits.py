"""The command line's exit codes, and the error of a command that finds no database."""

from __future__ import annotations

from ..errors import FlowymlLiteError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3


class NoDatabaseError(FlowymlLiteError):
    """A command that reads or changes schedules found no database file (it never creates one)."""
