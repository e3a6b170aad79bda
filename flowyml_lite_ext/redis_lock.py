"""The Redis lock: named mutexes for processes on any number of hosts (``pip install 'flowyml-lite[redis]'``).

A lock is ``SET <prefix>lock:<key> <random token> NX PX <ttl>``: it lapses by itself when its
holder dies (``expires = True``), so a holder must finish or ``renew`` within the TTL. Release and
renewal compare the token before they delete or extend, in one Lua script each, so a lease whose
TTL ran out can never release or extend the lock of the next holder. One Redis server (or a
primary with failover) is assumed; this is not Redlock over several independent servers.

Owners: a lease taken with ``owner=`` (a scheduler's node id) has a token that starts with the
owner, and its key joins the set ``<prefix>owner:<owner>``, so ``release_owner`` frees every lease
of a node declared lost at once instead of at its TTL (compare-and-delete by token prefix, in Lua,
so it never frees a lease another node took meanwhile).

An unreachable server fails fast: socket timeouts of ``socket_timeout`` (1.5 s), one reconnect
attempt, no backoff; every error is a LockError, so the scheduler goes on with the store's claim.
A release that fails is kept, with its token, and done (compare-and-delete) by the next call that
reaches the server: a node's own stale lock never holds its schedule up for the rest of its TTL.
A renewal (``renew_many``) whose key is gone, as after a restart without persistence, takes it
again; one another holder has is reported lost.

The Lua scripts are in redis_scripts.py; the releases kept until Redis answers in redis_pending.py.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Set
from urllib.parse import urlsplit, urlunsplit

import redis  # ImportError here: the registry names the extra to install
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry

from flowyml_lite.errors import ConfigurationError, LockError
from flowyml_lite.locks.base import LOST, RETAKEN, Lease, Lock
from flowyml_lite_ext import redis_scripts as scripts
from flowyml_lite_ext.redis_pending import PendingReleases
from flowyml_lite_ext.redis_scripts import RENEWAL_ANSWERS, pipelined

if TYPE_CHECKING:
    from flowyml_lite.core.scheduler_config import SchedulerConfig

__all__ = ["RedisLock"]

logger = logging.getLogger("flowyml_lite.locks.redis")

DEFAULT_PREFIX = "flowyml_lite:"
_POLL_SECONDS = 0.005
_MAX_POLL_SECONDS = 0.1


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "<unparseable URL>"


def _ttl_ms(ttl_seconds: Optional[float]) -> int:
    if ttl_seconds is None:
        ttl_seconds = RedisLock.default_ttl_seconds
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, (int, float)) or not ttl_seconds > 0:
        raise ValueError(f"ttl_seconds must be a number > 0, got {ttl_seconds!r}")
    if math.isinf(ttl_seconds):
        raise ValueError("ttl_seconds must be finite: a Redis lock always expires")
    return max(1, math.ceil(ttl_seconds * 1000))


#: What redis-py's errors say when the server wants a password it was not given (or a wrong one).
_PASSWORD_WANTED = (
    "NOAUTH",
    "Authentication required",
    "must be called with the client already authenticated",
    "WRONGPASS",
    "invalid password",
    "invalid username-password",
)


class _RedisLease(Lease):
    def __init__(
        self,
        owner: RedisLock,
        key: str,
        redis_key: str,
        token: str,
        owner_key: Optional[str] = None,
        until: float = 0.0,
    ) -> None:
        self.key = key
        self.redis_key = redis_key
        self._owner = owner
        self._token = token
        self._owner_key = owner_key
        self._released = False
        self._mutex = threading.Lock()
        #: Monotonic instant until which the key holds this lease (unless Redis lost it): measured
        #: from before the request that set its TTL, so never later than the key's real expiry.
        self.until = until

    def release(self) -> None:
        """Delete the lock if it still holds this lease's token; later calls do nothing.

        ``lost`` is set if the key was gone or another token held it. If Redis cannot be reached
        the release is kept and done as soon as Redis answers again (logged once per outage).
        """
        with self._mutex:
            if self._released:
                return
            self._released = True
        self._owner._forget(self)
        try:
            deleted = self._owner._release_script(keys=[self.redis_key], args=[self._token])
        except RedisError as exc:
            self._owner._pending.release_later(self.redis_key, self._token, exc)
            return
        if not deleted:
            self.lost = True
        self._owner._pending.release_quietly()  # Redis answers: a release kept from an outage goes now

    def renew(self, ttl_seconds: float) -> bool:
        """Set the remaining TTL to ``ttl_seconds``; False if the lease expired, was taken, or released."""
        ttl = _ttl_ms(ttl_seconds)
        with self._mutex:
            if self._released:
                return False
        start = time.monotonic()
        try:
            renewed = bool(self._owner._renew_script(keys=self.keys(), args=[self._token, ttl]))
        except RedisError as exc:
            raise LockError(self._owner._message(exc)) from exc
        self.until = start + ttl / 1000 if renewed else 0.0
        return renewed

    def __repr__(self) -> str:
        return f"<RedisLease {self.key!r}{' released' if self._released else ''}>"

    def keys(self) -> List[str]:
        """The lock's key, and its owner's set where it has an owner (the scripts' KEYS)."""
        return [self.redis_key] if self._owner_key is None else [self.redis_key, self._owner_key]

    @property
    def released(self) -> bool:
        with self._mutex:
            return self._released


class RedisLock(Lock):
    """Named mutexes in one Redis database: keys ``<prefix>lock:<key>``, fire markers ``<prefix>fire:<key>``.

    ``url`` is a redis-py URL (``redis://[:password@]host:6379/0``, ``rediss://`` for TLS,
    ``unix:///path.sock``). Give apps that share a database different ``prefix`` values.
    The server is pinged at construction, so a wrong URL fails at startup, not at the first fire.
    """

    expires = True

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout: float = 1.5,
        client: Optional[Any] = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        if client is None:
            try:
                # redis-py's default retries ten times with backoff: a stopped server would hold a
                # fire for most of a minute. One immediate reconnect (a connection the server closed
                # while idle) and no retry of a timeout keep every failure under ~2 socket timeouts.
                client = redis.Redis.from_url(
                    url,
                    socket_timeout=socket_timeout,
                    socket_connect_timeout=socket_timeout,
                    retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                    health_check_interval=0,
                )
            except ValueError as exc:
                raise ConfigurationError(
                    f"redis URL {mask_url(url)!r} is invalid ({exc}); "
                    "expected e.g. redis://localhost:6379/0 (set SchedulerConfig.redis_url)"
                ) from exc
        self._client = client
        self._release_script = client.register_script(scripts.RELEASE)
        self._renew_script = client.register_script(scripts.RENEW)
        self._acquire_owned_script = client.register_script(scripts.ACQUIRE_OWNED)
        self._release_owner_script = client.register_script(scripts.RELEASE_OWNER)
        self._acquire_many_script = client.register_script(scripts.ACQUIRE_MANY)
        self._renew_or_retake_script = client.register_script(scripts.RENEW_OR_RETAKE)
        self._held: Dict[int, _RedisLease] = {}
        #: The lease this process holds on each key: a key held here is not asked of Redis again
        #: (Redis restarted empty would grant it to a second run of the schedule beside the first).
        self._by_key: Dict[str, _RedisLease] = {}
        #: Acquires whose reply was lost and releases that failed: deleted once Redis answers again.
        self._pending = PendingReleases(client, self._release_script, self._message)
        self._mutex = threading.Lock()
        try:
            client.ping()
        except RedisError as exc:
            raise LockError(self._message(exc)) from exc

    @classmethod
    def from_config(cls, config: SchedulerConfig) -> RedisLock:
        """The lock of ``config.redis_url``."""
        if not config.redis_url:
            raise ConfigurationError(
                "the redis lock needs SchedulerConfig.redis_url (or FLOWYML_SCHEDULER_REDIS_URL), "
                "e.g. redis://localhost:6379/0"
            )
        return cls(config.redis_url)

    def _message(self, exc: BaseException) -> str:
        text = str(exc)
        if any(sign in text for sign in _PASSWORD_WANTED):
            hint = (
                "the Redis server wants a password (or another one): put it in SchedulerConfig.redis_url "
                "(FLOWYML_SCHEDULER_REDIS_URL), e.g. redis://:PASSWORD@host:6379/0"
            )
        else:
            hint = (
                "check that Redis is running and that SchedulerConfig.redis_url "
                "(FLOWYML_SCHEDULER_REDIS_URL) points at it"
            )
        return f"redis lock at {mask_url(self.url)}: {type(exc).__name__}: {text}; {hint}"

    def acquire(
        self,
        key: str,
        ttl_seconds: Optional[float] = None,
        timeout: float = 0.0,
        owner: Optional[str] = None,
    ) -> Optional[Lease]:
        """Take ``key`` for ``ttl_seconds``, trying for ``timeout`` s (0 = once); None if it stays held.

        With ``owner``, the lease is recorded under the owner for ``release_owner``.
        """
        ttl = _ttl_ms(ttl_seconds)
        redis_key = f"{self.prefix}lock:{key}"
        owner_key = None if owner is None else self._owner_key(owner)
        token = secrets.token_hex(16) if owner is None else f"{owner}:{secrets.token_hex(16)}"
        deadline = time.monotonic() + max(0.0, timeout)
        delay = _POLL_SECONDS
        self._pending.release()
        while True:
            start = time.monotonic()
            taken: Any = False
            try:
                if self._held_here(redis_key):
                    pass  # a lease of this process holds it: not free, whatever Redis remembers
                elif owner_key is None:
                    taken = self._client.set(redis_key, token, nx=True, px=ttl)
                else:
                    taken = self._acquire_owned_script(keys=[redis_key, owner_key], args=[token, ttl])
            except RedisError as exc:
                self._pending.unsure([(redis_key, token)])
                raise LockError(self._message(exc)) from exc
            if taken:
                lease = _RedisLease(self, key, redis_key, token, owner_key, start + ttl / 1000)
                self._remember([lease])
                return lease
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _MAX_POLL_SECONDS)

    def acquire_many(self, keys: Sequence[str], ttl_seconds: float, owner: str) -> List[Optional[Lease]]:
        """Try each of ``keys`` once for ``owner``, all in one round trip (one Lua script).

        One answer per key, in order: a Lease, or None where the lock is held (a key repeated in
        ``keys`` is taken once). If the reply is lost, every lock the script may have taken is
        deleted by compare-and-delete once Redis answers again, as for ``acquire``.
        """
        ttl = _ttl_ms(ttl_seconds)
        if not keys:
            return []
        owner_key = self._owner_key(owner)
        redis_keys = [f"{self.prefix}lock:{key}" for key in keys]
        # One random part per call and a counter: as unguessable as a token per key, and cheaper.
        base = f"{owner}:{secrets.token_hex(12)}"
        tokens = [f"{base}{index:08x}" for index in range(len(keys))]
        self._pending.release()
        here = self._held_here_many(redis_keys)
        asked = [index for index, redis_key in enumerate(redis_keys) if redis_key not in here]
        answers = [0] * len(keys)
        start = time.monotonic()
        if asked:
            asked_keys, asked_tokens = [redis_keys[i] for i in asked], [tokens[i] for i in asked]
            try:
                replies = self._acquire_many_script(keys=[owner_key, *asked_keys], args=[ttl, *asked_tokens])
            except RedisError as exc:
                self._pending.unsure(zip(asked_keys, asked_tokens))
                raise LockError(self._message(exc)) from exc
            for index, reply in zip(asked, replies):
                answers[index] = reply
        until = start + ttl / 1000
        taken: List[Optional[Lease]] = []
        for key, redis_key, token, answer in zip(keys, redis_keys, tokens, answers):
            taken.append(_RedisLease(self, key, redis_key, token, owner_key, until) if answer else None)
        self._remember([lease for lease in taken if isinstance(lease, _RedisLease)])
        return taken

    def _remember(self, leases: Sequence[_RedisLease]) -> None:
        with self._mutex:
            for lease in leases:
                self._held[id(lease)] = lease
                self._by_key[lease.redis_key] = lease

    def _held_here(self, redis_key: str) -> bool:
        """Whether a lease of this process holds ``redis_key`` (by its TTL, measured here)."""
        return bool(self._held_here_many([redis_key]))

    def _held_here_many(self, redis_keys: Sequence[str]) -> Set[str]:
        now = time.monotonic()
        with self._mutex:
            if not self._by_key:
                return set()
            found = (self._by_key.get(redis_key) for redis_key in redis_keys)
            return {lease.redis_key for lease in found if lease is not None and lease.until > now}

    def pending_releases(self) -> List[str]:
        """The keys of locks this node may hold that nobody holds (a failed release, an acquire whose
        reply was lost): deleted as soon as Redis answers again."""
        start = len(f"{self.prefix}lock:")
        return [redis_key[start:] for redis_key in self._pending.redis_keys()]

    def renew_many(self, leases: Sequence[Lease], ttl_seconds: float) -> List[str]:
        """Extend each of ``leases`` (taken through this lock) in one round trip (a pipeline).

        One answer per lease: RENEWED; RETAKEN where the key was gone (Redis restarted without
        persistence, or the lease lapsed) and is taken again with the lease's token, restoring
        mutual exclusion unless someone took it meanwhile; LOST where another token holds it.
        """
        ttl = _ttl_ms(ttl_seconds)
        ours = [lease for lease in leases if isinstance(lease, _RedisLease) and lease._owner is self]
        if len(ours) != len(leases):
            raise ValueError("renew_many takes only leases acquired through this lock")
        if not ours:
            return []
        calls = [(lease.keys(), [lease._token, ttl]) for lease in ours]
        start = time.monotonic()
        try:
            replies = pipelined(self._client, self._renew_or_retake_script, calls)
            answers = [RENEWAL_ANSWERS[int(reply)] for reply in replies]
        except RedisError as exc:
            raise LockError(self._message(exc)) from exc
        for lease, answer in zip(ours, answers):
            lease.until = 0.0 if answer == LOST else start + ttl / 1000
            # A lease released while this round trip was under way may have been deleted before
            # it and taken again by it: release it again, or it would hold the key for a TTL.
            if answer == RETAKEN and lease.released:
                try:
                    self._release_script(keys=[lease.redis_key], args=[lease._token])
                except RedisError as exc:
                    self._pending.release_later(lease.redis_key, lease._token, exc)
        self._pending.release_quietly()
        return answers

    def _owner_key(self, owner: str) -> str:
        if not isinstance(owner, str) or not owner:
            raise ValueError(f"owner must be a non-empty node id, got {owner!r}")
        return f"{self.prefix}owner:{owner}"

    def release_owner(self, owner: str) -> int:
        """Delete every lock ``owner`` holds (its node was declared lost); return how many.

        Compare-and-delete by token prefix in one Lua script: a lock another node took after the
        owner's lease lapsed is left alone.
        """
        try:
            released = self._release_owner_script(keys=[self._owner_key(owner)], args=[f"{owner}:"])
        except RedisError as exc:
            raise LockError(self._message(exc)) from exc
        return int(released)

    def _forget(self, lease: _RedisLease) -> None:
        with self._mutex:
            self._held.pop(id(lease), None)
            if self._by_key.get(lease.redis_key) is lease:
                del self._by_key[lease.redis_key]

    def claim_fire(self, key: str, ttl_seconds: float) -> bool:
        """``SET <prefix>fire:<key> 1 NX PX ttl``: True for the first caller while the marker lives."""
        try:
            return bool(self._client.set(f"{self.prefix}fire:{key}", "1", nx=True, px=_ttl_ms(ttl_seconds)))
        except RedisError as exc:
            raise LockError(self._message(exc)) from exc

    def close(self) -> None:
        """Release every lease still held through this lock, try the releases kept from an outage
        once more, and close the connections."""
        with self._mutex:
            leases = list(self._held.values())
        for lease in leases:
            lease.release()
        try:
            self._pending.release()
        except LockError as exc:
            kept = len(self.pending_releases())
            logger.warning("%s; %d lock(s) are freed when their TTL runs out", exc, kept)
        try:
            self._client.close()
        except RedisError as exc:
            logger.warning("%s (while closing)", self._message(exc))

    def __repr__(self) -> str:
        return f"RedisLock({mask_url(self.url)!r}, prefix={self.prefix!r})"
