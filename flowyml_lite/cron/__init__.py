"""Cron expressions: parse, search and explain, with time zones done right.

``CronExpression`` is the public entry point; engines (native, croniter) implement the
contract in ``contract.py`` and work on naive wall-clock times only.
"""

from ..errors import CronError
from .expression import CronExpression

__all__ = ["CronError", "CronExpression"]
