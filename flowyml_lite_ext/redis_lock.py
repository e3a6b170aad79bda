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
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit, urlunsplit

import redis  # ImportError here: the registry names the extra to install
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry

from flowyml_lite.errors import ConfigurationError, LockError
from flowyml_lite.locks.base import Lease, Lock

if TYPE_CHECKING:
    from flowyml_lite.core.scheduler_config import SchedulerConfig

__all__ = ["RedisLock"]

logger = logging.getLogger("flowyml_lite.locks.redis")

DEFAULT_PREFIX = "flowyml_lite:"
_POLL_SECONDS = 0.005
_MAX_POLL_SECONDS = 0.1

# Delete the key only while it still holds our token.
_RELEASE = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
"""
# Extend the key's TTL only while it still holds our token (and the owner's set with it).
_RENEW = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    if KEYS[2] and redis.call("PTTL", KEYS[2]) < tonumber(ARGV[2]) then
        redis.call("PEXPIRE", KEYS[2], ARGV[2])
    end
    return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
"""
# Take the lock for an owner: SET NX PX, then remember the key in the owner's set, which lives at
# least as long as the owner's longest lease.
_ACQUIRE_OWNED = """
if redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then
    redis.call("SADD", KEYS[2], KEYS[1])
    if redis.call("PTTL", KEYS[2]) < tonumber(ARGV[2]) then
        redis.call("PEXPIRE", KEYS[2], ARGV[2])
    end
    return 1
end
return 0
"""
# Take many locks for one owner in one round trip: KEYS[1] is the owner's set, KEYS[2..] the locks,
# ARGV[1] the TTL, ARGV[2..] the tokens. Returns 1 (taken) or 0 (held by someone) per lock.
_ACQUIRE_MANY = """
local ttl = ARGV[1]
local taken = {}
local any = false
for i = 2, #KEYS do
    if redis.call("SET", KEYS[i], ARGV[i], "NX", "PX", ttl) then
        redis.call("SADD", KEYS[1], KEYS[i])
        taken[i - 1] = 1
        any = true
    else
        taken[i - 1] = 0
    end
end
if any and redis.call("PTTL", KEYS[1]) < tonumber(ttl) then
    redis.call("PEXPIRE", KEYS[1], ttl)
end
return taken
"""
# Delete every lock in the owner's set whose token still starts with the owner's prefix.
_RELEASE_OWNER = """
local released = 0
local prefix = ARGV[1]
for _, key in ipairs(redis.call("SMEMBERS", KEYS[1])) do
    local token = redis.call("GET", key)
    if token and string.sub(token, 1, string.len(prefix)) == prefix then
        released = released + redis.call("DEL", key)
    end
end
redis.call("DEL", KEYS[1])
return released
"""


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
        self, owner: RedisLock, key: str, redis_key: str, token: str, owner_key: Optional[str] = None
    ) -> None:
        self.key = key
        self.redis_key = redis_key
        self._owner = owner
        self._token = token
        self._owner_key = owner_key
        self._released = False
        self._mutex = threading.Lock()

    def release(self) -> None:
        """Delete the lock if it still holds this lease's token; later calls do nothing.

        If Redis cannot be reached the error is logged, not raised: the TTL frees the lock.
        """
        with self._mutex:
            if self._released:
                return
            self._released = True
        self._owner._forget(self)
        try:
            self._owner._release_script(keys=[self.redis_key], args=[self._token])
        except RedisError as exc:
            logger.warning(
                "%s; the lock %r is freed when its TTL runs out", self._owner._message(exc), self.key
            )

    def renew(self, ttl_seconds: float) -> bool:
        """Set the remaining TTL to ``ttl_seconds``; False if the lease expired, was taken, or released."""
        ttl = _ttl_ms(ttl_seconds)
        with self._mutex:
            if self._released:
                return False
        try:
            keys = [self.redis_key] if self._owner_key is None else [self.redis_key, self._owner_key]
            return bool(self._owner._renew_script(keys=keys, args=[self._token, ttl]))
        except RedisError as exc:
            raise LockError(self._owner._message(exc)) from exc

    def __repr__(self) -> str:
        return f"<RedisLease {self.key!r}{' released' if self._released else ''}>"


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
        self._release_script = client.register_script(_RELEASE)
        self._renew_script = client.register_script(_RENEW)
        self._acquire_owned_script = client.register_script(_ACQUIRE_OWNED)
        self._release_owner_script = client.register_script(_RELEASE_OWNER)
        self._acquire_many_script = client.register_script(_ACQUIRE_MANY)
        self._held: Dict[int, _RedisLease] = {}
        # (redis key, token) of acquires whose reply never came: Redis may still have executed
        # them (a request retransmitted after a cut link), leaving a lock nobody holds for a TTL.
        self._unsure: List[Tuple[str, str]] = []
        self._mutex = threading.Lock()
        #: Held while those locks are deleted: an acquire meanwhile waits, or it would find its own
        #: node's stale lock and take it for another process's.
        self._cleaning = threading.Lock()
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
        self._release_unsure()
        while True:
            try:
                if owner_key is None:
                    taken = self._client.set(redis_key, token, nx=True, px=ttl)
                else:
                    taken = self._acquire_owned_script(keys=[redis_key, owner_key], args=[token, ttl])
            except RedisError as exc:
                with self._mutex:
                    self._unsure.append((redis_key, token))
                raise LockError(self._message(exc)) from exc
            if taken:
                lease = _RedisLease(self, key, redis_key, token, owner_key)
                with self._mutex:
                    self._held[id(lease)] = lease
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
        self._release_unsure()
        try:
            answers = self._acquire_many_script(keys=[owner_key, *redis_keys], args=[ttl, *tokens])
        except RedisError as exc:
            with self._mutex:
                self._unsure.extend(zip(redis_keys, tokens))
            raise LockError(self._message(exc)) from exc
        taken: List[Optional[Lease]] = []
        held: Dict[int, _RedisLease] = {}
        for key, redis_key, token, answer in zip(keys, redis_keys, tokens, answers):
            lease = _RedisLease(self, key, redis_key, token, owner_key) if answer else None
            if lease is not None:
                held[id(lease)] = lease
            taken.append(lease)
        with self._mutex:
            self._held.update(held)
        return taken

    def _release_unsure(self) -> None:
        """Delete the locks of acquires that failed without a reply, if Redis did take them after
        all (compare-and-delete on their tokens); kept for the next call while Redis fails."""
        if not self._unsure and not self._cleaning.locked():
            return
        with self._cleaning:
            with self._mutex:
                unsure, self._unsure = self._unsure, []
            for index, (redis_key, token) in enumerate(unsure):
                try:
                    if self._release_script(keys=[redis_key], args=[token]):
                        logger.warning("released %r: an acquire whose reply was lost had taken it", redis_key)
                except RedisError:
                    with self._mutex:
                        self._unsure[:0] = unsure[index:]
                    return

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

    def claim_fire(self, key: str, ttl_seconds: float) -> bool:
        """``SET <prefix>fire:<key> 1 NX PX ttl``: True for the first caller while the marker lives."""
        try:
            return bool(self._client.set(f"{self.prefix}fire:{key}", "1", nx=True, px=_ttl_ms(ttl_seconds)))
        except RedisError as exc:
            raise LockError(self._message(exc)) from exc

    def close(self) -> None:
        """Release every lease still held through this lock and close the connections."""
        with self._mutex:
            leases = list(self._held.values())
        for lease in leases:
            lease.release()
        try:
            self._client.close()
        except RedisError as exc:
            logger.warning("%s (while closing)", self._message(exc))

    def __repr__(self) -> str:
        return f"RedisLock({mask_url(self.url)!r}, prefix={self.prefix!r})"
