"""Capture of a run's output inside this process (thread and async executors).

What a run writes is found by a context variable, ``CURRENT_OUTPUT``, set around the run: a
thread's context, or an asyncio task's own copy of it. So concurrent runs never mix their
output, and code outside any run is not captured.

- ``logging`` records: one handler on the root logger (installed at the first run) copies every
  record emitted inside a run, from any logger, into the run's buffer. Records still go to your
  own handlers as before. So that INFO records of a run are captured, a root level above INFO is
  lowered to INFO at installation, and each handler already on the root logger is given the old
  root level as its own (when it had a lower one), so those handlers show what they showed before.
  While no handler of yours is configured, records outside runs at WARNING and above still reach
  Python's last-resort handler (stderr), as they did before.
- ``print()`` and other writes to ``sys.stdout``/``sys.stderr``: both are wrapped (at the first
  run, and again whenever something replaced them) by a stream that forwards every write
  unchanged and, inside a run, copies it into the run's buffer. Writes to the file descriptors
  themselves (C extensions, subprocesses) are not captured here; the process executor captures those.

Each buffer keeps the last ``MAX_RUN_TEXT`` characters (64 KiB) with a marker of what was cut.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from typing import Any, Iterable, List, Optional, Tuple

from ..stores.base import MAX_RUN_TEXT

#: How a captured record reads in a run's output.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Characters kept free for the "[... N characters cut ...]" marker at the front of a cut buffer.
_MARKER_ROOM = 48


class OutputBuffer:
    """A thread-safe text buffer that keeps the tail: at most ``limit`` characters, cut at the front."""

    def __init__(self, limit: int = MAX_RUN_TEXT) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._chunks: List[str] = []
        self._size = 0
        self._cut = 0  # characters dropped from the front so far

    def write(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            self._chunks.append(text)
            self._size += len(text)
            if self._size > 2 * self.limit:  # amortised: compact only when twice over the bound
                joined = "".join(self._chunks)
                drop = len(joined) - self.limit
                self._cut += drop
                self._chunks = [joined[drop:]]
                self._size = self.limit

    def text(self) -> Optional[str]:
        """Everything kept so far (None when nothing was written), within ``limit`` characters."""
        if not self._chunks and not self._cut:  # most runs write nothing
            return None
        with self._lock:
            joined = "".join(self._chunks)
            cut = self._cut
        if not joined and not cut:
            return None
        if cut == 0 and len(joined) <= self.limit:
            return joined
        keep = max(0, self.limit - _MARKER_ROOM)
        tail = joined[len(joined) - keep :] if keep else ""
        return f"[... {cut + len(joined) - len(tail)} characters cut ...]\n" + tail


#: The buffer of the run the current thread or task belongs to (None outside runs).
CURRENT_OUTPUT: contextvars.ContextVar[Optional[OutputBuffer]] = contextvars.ContextVar(
    "flowyml_lite_run_output", default=None
)


class RunLogHandler(logging.Handler):
    """Copies records emitted inside a run into that run's buffer (one instance, on the root logger)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        buffer = CURRENT_OUTPUT.get()
        last_resort = logging.lastResort
        if buffer is None and (last_resort is None or record.levelno < last_resort.level):
            return  # outside runs, and nothing for the last resort: most records of a process
        others, teed = self._others(record)
        if buffer is not None and not teed:
            try:
                buffer.write(self.format(record) + "\n")
            except Exception:
                self.handleError(record)
        # This handler's presence must not silence Python's last-resort output (stderr, WARNING
        # and above) in a program that configured no handler of its own, inside runs or not.
        if last_resort is not None and record.levelno >= last_resort.level and not others:
            RunStream._local.busy = True  # the record is in the run's buffer already
            try:
                last_resort.handle(record)
            finally:
                RunStream._local.busy = False

    def _others(self, record: logging.LogRecord) -> Tuple[bool, bool]:
        """(another handler saw the record, one of them writes it to a wrapped stdout/stderr).

        The walk of ``Logger.callHandlers``. A handler made after capture was installed may hold
        the wrapped stream, which copies the record into the run already: not twice.
        """
        others = teed = False
        logger: Optional[logging.Logger] = logging.getLogger(record.name)
        while logger is not None:
            for handler in logger.handlers:
                if handler is not self:
                    others = True
                    stream = getattr(handler, "stream", None)
                    if isinstance(stream, RunStream) and record.levelno >= handler.level:
                        teed = True
            logger = logger.parent if logger.propagate else None
        return others, teed


class RunStream:
    """Wraps ``sys.stdout`` or ``sys.stderr``: forwards every write, copies a run's writes to its buffer."""

    _local = threading.local()  # guards against copying twice when streams wrap each other

    def __init__(self, target: Any) -> None:
        self._target = target

    def write(self, text: str) -> Any:
        buffer = CURRENT_OUTPUT.get()
        if buffer is not None and isinstance(text, str) and not getattr(self._local, "busy", False):
            self._local.busy = True
            try:
                buffer.write(text)
                return self._target.write(text)
            finally:
                self._local.busy = False
        return self._target.write(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._target.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, buffer...
        return getattr(self._target, name)


_install_lock = threading.Lock()
_handler: Optional[RunLogHandler] = None
_undo: List[Tuple[logging.Handler, int]] = []  # (handler, its level before) of handlers raised at install
_root_level_before: Optional[int] = None
_logger = logging.getLogger("flowyml_lite.executors")


def install() -> None:
    """Make sure run output is captured: the root handler once, the stream wrappers when missing.

    Called by the thread and async executors before each run; cheap after the first call.
    """
    global _handler, _root_level_before
    if _handler is None:
        with _install_lock:
            if _handler is None:
                root = logging.getLogger()
                old_level = root.level
                if old_level > logging.INFO:
                    for existing in root.handlers:
                        if existing.level < old_level:
                            _undo.append((existing, existing.level))
                            existing.setLevel(old_level)
                    root.setLevel(logging.INFO)
                    _root_level_before = old_level
                handler = RunLogHandler()
                root.addHandler(handler)
                _handler = handler
                _logger.debug(
                    "run output capture installed (root level %s -> %s)",
                    logging.getLevelName(old_level),
                    logging.getLevelName(root.level),
                )
    # sys.stdout/sys.stderr may have been replaced since (test frameworks, redirect_stdout):
    # wrap the current ones. Rebinding them is atomic; a wrapper never wraps a wrapper.
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name, None)
        if stream is not None and not isinstance(stream, RunStream):
            setattr(sys, name, RunStream(stream))


def uninstall() -> None:
    """Undo ``install``: the root handler and levels as they were, the streams unwrapped.

    For tests and embedding programs that want logging exactly as before; runs that are still
    going stop being captured. The next run installs capture again.
    """
    global _handler, _root_level_before
    with _install_lock:
        root = logging.getLogger()
        if _handler is not None:
            root.removeHandler(_handler)
            _handler = None
        if _root_level_before is not None and root.level == logging.INFO:
            root.setLevel(_root_level_before)
        _root_level_before = None
        for handler, level in _undo:
            handler.setLevel(level)
        _undo.clear()
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name, None)
            if isinstance(stream, RunStream):
                setattr(sys, name, stream._target)
