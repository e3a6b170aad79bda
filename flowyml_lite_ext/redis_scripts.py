"""The Redis lock's server side: its Lua scripts, and running one script many times in one round trip.

Each script checks a key's token and acts on it atomically on the server (see redis_lock.py for what
the lock makes of them); ``KEYS`` are the lock's keys (``<prefix>lock:<key>``) and its owner's set
(``<prefix>owner:<owner>``).
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

from redis.exceptions import NoScriptError

from flowyml_lite.locks.base import LOST, RENEWED, RETAKEN

# Delete the key only while it still holds our token.
RELEASE = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
"""
# Extend the key's TTL only while it still holds our token (and the owner's set with it).
RENEW = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    if KEYS[2] and redis.call("PTTL", KEYS[2]) < tonumber(ARGV[2]) then
        redis.call("PEXPIRE", KEYS[2], ARGV[2])
    end
    return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
"""
# Renew while the key holds our token (1); take it again where it is gone, as after a restart
# without persistence (2); 0 where another token holds it.
RENEW_OR_RETAKE = """
local token = redis.call("GET", KEYS[1])
if token and token ~= ARGV[1] then
    return 0
end
if token then
    redis.call("PEXPIRE", KEYS[1], ARGV[2])
else
    redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
end
if KEYS[2] then
    redis.call("SADD", KEYS[2], KEYS[1])
    if redis.call("PTTL", KEYS[2]) < tonumber(ARGV[2]) then
        redis.call("PEXPIRE", KEYS[2], ARGV[2])
    end
end
if token then
    return 1
end
return 2
"""
RENEWAL_ANSWERS = {0: LOST, 1: RENEWED, 2: RETAKEN}
# Take the lock for an owner: SET NX PX, then remember the key in the owner's set, which lives at
# least as long as the owner's longest lease.
ACQUIRE_OWNED = """
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
ACQUIRE_MANY = """
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
RELEASE_OWNER = """
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


def pipelined(client: Any, script: Any, calls: Sequence[Tuple[List[str], List[Any]]]) -> List[Any]:
    """Run ``script`` once per (keys, args) in one round trip; the script is loaded again (and
    the calls sent again) if the server has forgotten it, as after a restart."""
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        try:
            return list(pipe.execute())
        except NoScriptError:
            if attempt == 2:
                raise
            script.sha = client.script_load(script.script)
    raise AssertionError("unreachable")
