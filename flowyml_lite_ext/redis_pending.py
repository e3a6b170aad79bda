"""The Redis lock's pending releases: locks this node may hold that nobody holds, kept with their token.

Two kinds: acquires whose reply never came (Redis may still have executed them, as for a request
retransmitted after a cut link, leaving a lock nobody holds for a TTL), and releases Redis did not
answer (this node's own lock would hold its schedule up for the rest of the TTL). Both are deleted
by compare-and-delete on their tokens, in one round trip, by the next call that reaches Redis.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Callable, Iterable, List, Optional, Tuple

from redis.exceptions import RedisError

from flowyml_lite.errors import LockError
from flowyml_lite_ext.redis_scripts import pipelined

logger = logging.getLogger("flowyml_lite.locks.redis")


class PendingReleases:
    """The (redis key, token) pairs to delete once Redis answers; ``message`` words a Redis error."""

    def __init__(self, client: Any, release_script: Any, message: Callable[[BaseException], str]) -> None:
        self._client = client
        self._release_script = release_script
        self._message = message
        # (redis key, token) of acquires whose reply was lost, and of releases that failed.
        self._unsure: List[Tuple[str, str]] = []
        self._unreleased: List[Tuple[str, str]] = []
        self._release_outage: Optional[float] = None  # monotonic time of the outage's first failure
        self._releasing: List[Tuple[str, str]] = []  # taken from the two lists by a round trip under way
        self._mutex = threading.Lock()
        #: Held while those locks are deleted: an acquire meanwhile waits, or it would find its own
        #: node's stale lock and take it for another process's.
        self._cleaning = threading.Lock()

    def unsure(self, pairs: Iterable[Tuple[str, str]]) -> None:
        """Keep (redis key, token) of acquires whose reply was lost."""
        with self._mutex:
            self._unsure.extend(pairs)

    def release_later(self, redis_key: str, token: str, exc: BaseException) -> None:
        """A release failed: keep it for the next call that reaches Redis; log once per outage."""
        with self._mutex:
            self._unreleased.append((redis_key, token))
            first = self._release_outage is None
            if first:
                self._release_outage = time.monotonic()
        if first:
            logger.warning(
                "%s; could not release %r: it is released as soon as Redis answers again "
                "(so are the other locks whose release fails meanwhile)",
                self._message(exc),
                redis_key,
            )

    def release(self) -> None:
        """Delete, in one round trip, the locks this node may hold that nobody holds: those of
        acquires whose reply was lost (if Redis did take them after all) and those whose release
        failed (compare-and-delete on their tokens). LockError while Redis fails: they are kept
        for the next call, and the acquire that asked fails too (it would fail on its own)."""
        if not self._unsure and not self._unreleased and not self._cleaning.locked():
            return
        with self._cleaning:
            with self._mutex:
                unsure, self._unsure = self._unsure, []
                unreleased, self._unreleased = self._unreleased, []
                self._releasing = unsure + unreleased  # still pending while this round trip lasts
            if not unsure and not unreleased:
                return
            try:
                answers = self._delete(unsure + unreleased)
            except RedisError as exc:
                with self._mutex:
                    self._unsure[:0] = unsure
                    self._unreleased[:0] = unreleased
                    self._releasing = []
                raise LockError(self._message(exc)) from exc
            for (redis_key, _), answer in zip(unsure, answers):
                if answer:
                    logger.warning("released %r: an acquire whose reply was lost had taken it", redis_key)
            with self._mutex:
                self._releasing = []
                began = self._release_outage if not self._unreleased else None
                if began is not None:
                    self._release_outage = None
            if began is not None:
                logger.warning(
                    "released the %d lock(s) whose release had failed, %.1f s after the first failure",
                    len(unreleased),
                    time.monotonic() - began,
                )

    def _delete(self, pairs: List[Tuple[str, str]]) -> List[Any]:
        return pipelined(self._client, self._release_script, [([k], [t]) for k, t in pairs])

    def release_quietly(self) -> None:
        """Try the kept releases now that Redis answered a call; they stay kept if it fails."""
        if self._unreleased or self._unsure:
            with contextlib.suppress(LockError):
                self.release()

    def redis_keys(self) -> List[str]:
        """The redis keys of every kept pair, those of a round trip under way included."""
        with self._mutex:
            kept = self._unreleased + self._unsure + self._releasing
        return [redis_key for redis_key, _ in kept]
