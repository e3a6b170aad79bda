#!/usr/bin/env bash
# Set up and run every check of flowyml_lite: the one test command of README.md, also run by .ci/run.
#
# Makes .venv (the project with all extras, test and dev tools), starts throw-away Redis and
# PostgreSQL servers on 127.0.0.1, then runs ruff, mypy --strict, vermin, pytest, the stdlib-only
# tests again on Python 3.9 and 3.13 (pyenv) without the extras, and a bounded fuzz run.
#
# With CI=true (as root on Debian) it installs missing apt packages itself and nothing may be
# skipped: a server that cannot start, or a missing Python 3.9/3.13, is a failure. Elsewhere those
# steps are skipped with a message and the tests that need a server skip with a reason.
# Environment: PYTHON (interpreter for .venv, default python3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PY=${PYTHON:-python3}
IN_CI=false
case "${CI:-}" in true | TRUE | True | 1 | yes) IN_CI=true ;; esac
IS_ROOT=false
[ "$(id -u)" -eq 0 ] && IS_ROOT=true
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
if $IN_CI; then
    export FLOWYML_TEST_REQUIRE_SERVICES=1
fi

STARTED=$EPOCHREALTIME
CURRENT=""
STEP_T0=""
TIMINGS=()
WORK=""
REDIS_PIDFILE=""
PG_DATA=""
PG_AS=()
PG_BIN=""

say() { printf '%s\n' "$*"; }
seconds_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

begin() {
    CURRENT=$1
    STEP_T0=$EPOCHREALTIME
    printf '\n==> %s   (at %ss)\n' "$1" "$(seconds_since "$STARTED")"
}

end() {
    local took
    took=$(seconds_since "$STEP_T0")
    TIMINGS+=("$(printf '%8ss  %s%s' "$took" "$CURRENT" "${1:+  ($1)}")")
    printf '<== %s: %s in %ss\n' "$CURRENT" "${1:-ok}" "$took"
    CURRENT=""
}

# A step that cannot run here: a failure in CI, a message elsewhere.
unavailable() {
    if $IN_CI; then
        say "ERROR: $1 (CI must run every step)"
        exit 1
    fi
    say "SKIPPED: $1"
    end "skipped"
}

stop_services() {
    if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
        "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 30 stop >/dev/null 2>&1 || true
    fi
    if [ -n "$REDIS_PIDFILE" ] && [ -f "$REDIS_PIDFILE" ]; then
        local pid
        pid=$(cat "$REDIS_PIDFILE")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
}

on_exit() {
    local rc=$?
    set +e
    stop_services
    printf '\n==== time per step\n'
    local line
    for line in "${TIMINGS[@]}"; do say "$line"; done
    if [ "$rc" -ne 0 ] && [ -n "$CURRENT" ]; then
        say "$(printf '%8ss  %s  (FAILED)' "$(seconds_since "$STEP_T0")" "$CURRENT")"
    fi
    say "$(printf '%8ss  total' "$(seconds_since "$STARTED")")"
    if [ "$rc" -ne 0 ]; then
        say "FAILED${CURRENT:+ at step: $CURRENT} (exit code $rc)"
    else
        say "all steps passed"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() {  # wait_for_port PORT SECONDS
    "$PY" - "$1" "$2" <<'EOF'
import socket, sys, time
port, limit = int(sys.argv[1]), float(sys.argv[2])
deadline = time.monotonic() + limit
while True:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"nothing answers on 127.0.0.1:{port} after {limit:g}s")
        time.sleep(0.1)
EOF
}

# pytest, with "no tests collected" (exit code 5) counted as the failure it is here.
run_pytest() {  # run_pytest PYTHON ARGS...
    local python=$1 rc=0
    shift
    timeout -k 10 900 "$python" -m pytest "$@" || rc=$?
    if [ "$rc" -eq 5 ]; then
        say "ERROR: pytest collected no tests"
        exit 1
    fi
    [ "$rc" -eq 0 ] || exit "$rc"
}

# A venv kept between runs: (re)installed when the stamp (what it was built from) changes.
venv_is_current() {  # venv_is_current DIR STAMP
    [ -x "$1/bin/python" ] && "$1/bin/python" -c "" 2>/dev/null && [ "$(cat "$1/.flowyml-stamp" 2>/dev/null)" = "$2" ]
}

make_venv() {  # make_venv PYTHON DIR
    if [ -x "$2/bin/python" ] && "$2/bin/python" -c "" 2>/dev/null; then
        return
    fi
    "$1" -m venv --clear "$2"
}

# The newest installed pyenv interpreter of a minor version (3.9 -> .../versions/3.9.18/bin/python3).
pyenv_python() {  # pyenv_python 3.9
    local root candidate
    root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
    candidate=$(find "$root/versions" -maxdepth 1 -name "$1.*" 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$candidate" ] && [ -x "$candidate/bin/python3" ]; then
        echo "$candidate/bin/python3"
    fi
}

# ---------------------------------------------------------------- setup

begin "python: $PY"
"$PY" -c 'import sys; assert sys.version_info >= (3, 9), sys.version; print(sys.executable, sys.version.split()[0])'
end

begin "venv .venv: flowyml-lite[all,test,dev] (+ fuzz if atheris builds)"
STAMP="$(sha256sum pyproject.toml | cut -c1-16) $("$PY" -c 'import sys; print(sys.version.split()[0])')"
if venv_is_current .venv "$STAMP"; then
    say ".venv is up to date"
else
    make_venv "$PY" .venv
    .venv/bin/python -m pip install -q -e '.[all,test,dev]'
    if ! .venv/bin/python -m pip install -q -e '.[fuzz]'; then
        say "NOTE: atheris did not install; fuzz/run.py must use its fallback"
    fi
    echo "$STAMP" >.venv/.flowyml-stamp
fi
.venv/bin/python -m pip list --format=freeze 2>/dev/null |
    grep -iE '^(pytest|hypothesis|croniter|cronsim|apscheduler|croniter.rs|pytz|tzdata|redis|sqlalchemy|psycopg|ruff|mypy|vermin|atheris)==' |
    tr '\n' ' ' || true
echo
end

begin "services: apt packages redis-server, postgresql, chromium"
have_redis() { command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; }
have_postgres() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1; }
missing=()
have_redis || missing+=(redis-server)
have_postgres || missing+=(postgresql)
# The dashboard's browser tests drive Debian's Chromium (/usr/bin/chromium) through Playwright.
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then
    end "already installed"
elif $IS_ROOT && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be stale on a new machine: update only when the install fails.
    if apt-get install -y -q "${missing[@]}" ||
        { apt-get update -q && apt-get install -y -q "${missing[@]}"; }; then
        end "installed ${missing[*]}"
    else
        unavailable "apt-get could not install ${missing[*]}"
    fi
else
    say "not root (or no apt-get): cannot install ${missing[*]}"
    end "missing ${missing[*]}"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/flowyml-test.XXXXXX")
chmod 755 "$WORK"  # the postgres user must reach its data directory inside

# Each start_* returns non-zero (after showing its log) when the server does not come up.
start_redis() {
    local bin port dir="$WORK/redis"
    bin=$(command -v redis-server || echo /usr/bin/redis-server)
    # The guide's example names redis://localhost:6379/0: take that port when it is free.
    if "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 6379))' 2>/dev/null; then
        port=6379
    else
        port=$(free_port) || return 1
    fi
    mkdir -p "$dir" || return 1
    REDIS_PIDFILE="$dir/redis.pid"
    "$bin" --bind 127.0.0.1 --port "$port" --daemonize yes --dir "$dir" --pidfile "$REDIS_PIDFILE" \
        --logfile "$dir/redis.log" --save '' --appendonly no || return 1
    if ! wait_for_port "$port" 20; then
        cat "$dir/redis.log" 2>/dev/null
        return 1
    fi
    export FLOWYML_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
    say "FLOWYML_TEST_REDIS_URL=$FLOWYML_TEST_REDIS_URL"
}

start_postgres() {
    local port dir="$WORK/pg"
    port=$(free_port) || return 1
    mkdir -p "$dir/sock" || return 1
    if $IS_ROOT; then
        # PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
        chown -R postgres:postgres "$dir" || return 1
        PG_AS=(runuser -u postgres --)
    else
        PG_AS=(env)
    fi
    if ! "${PG_AS[@]}" "$PG_BIN/initdb" -D "$dir/data" -U flowyml -A trust -E UTF8 --locale=C --no-sync \
        >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log"
        return 1
    fi
    PG_DATA="$dir/data"
    if ! "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$dir/server.log" -w -t 60 -o \
        "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null; then
        cat "$dir/server.log" 2>/dev/null
        return 1
    fi
    "${PG_AS[@]}" "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U flowyml flowyml_test || return 1
    export FLOWYML_TEST_POSTGRES_URL="postgresql+psycopg://flowyml@127.0.0.1:$port/flowyml_test"
    say "FLOWYML_TEST_POSTGRES_URL=$FLOWYML_TEST_POSTGRES_URL"
}

begin "services: redis-server on 127.0.0.1"
if ! have_redis; then
    unavailable "redis-server is not installed: the Redis tests will skip (apt-get install redis-server)"
elif start_redis; then
    end
else
    unavailable "redis-server did not start (its log is above): the Redis tests will skip"
fi

begin "services: PostgreSQL on 127.0.0.1"
PG_BIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
if [ -z "$PG_BIN" ] && command -v initdb >/dev/null 2>&1; then PG_BIN=$(dirname "$(command -v initdb)"); fi
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    unavailable "PostgreSQL is not installed: the PostgreSQL tests will skip (apt-get install postgresql)"
elif start_postgres; then
    end
else
    unavailable "PostgreSQL did not start (its log is above): the PostgreSQL tests will skip"
fi

# ---------------------------------------------------------------- checks

begin "ruff check ."
timeout -k 10 300 .venv/bin/ruff check .
end

begin "mypy --strict flowyml_lite, then flowyml_lite_ext"
timeout -k 10 600 .venv/bin/mypy --strict flowyml_lite
timeout -k 10 600 .venv/bin/mypy --strict flowyml_lite_ext
end

begin "vermin -t=3.9- --violations --eval-annotations flowyml_lite"
# --eval-annotations counts annotation syntax too (a later get_type_hints must work on 3.9).
timeout -k 10 300 .venv/bin/vermin -t=3.9- --violations --no-tips --eval-annotations flowyml_lite
end

begin "pytest tests/ (Python $(.venv/bin/python -c 'import sys; print(sys.version.split()[0])'), all extras, servers)"
run_pytest .venv/bin/python tests -q -p no:cacheprovider
end

for minor in 3.9 3.13; do
    dir=".venv${minor/./}"
    begin "pytest tests/ on Python $minor without the extras ($dir: pytest + hypothesis only)"
    interpreter=$(pyenv_python "$minor")
    if [ -z "$interpreter" ]; then
        unavailable "no Python $minor under pyenv"
        continue
    fi
    stamp="$("$interpreter" -c 'import sys; print(sys.version.split()[0])') pytest hypothesis"
    if ! venv_is_current "$dir" "$stamp"; then
        make_venv "$interpreter" "$dir"
        "$dir/bin/python" -m pip install -q pytest hypothesis
        echo "$stamp" >"$dir/.flowyml-stamp"
    fi
    run_pytest "$dir/bin/python" tests -q -p no:cacheprovider
    end
done

begin "fuzz: fuzz/run.py (bounded)"
if [ -f fuzz/run.py ]; then
    if .venv/bin/python fuzz/run.py --help 2>/dev/null | grep -q -- '--count'; then
        timeout -k 10 300 .venv/bin/python fuzz/run.py --count 20000
    else
        timeout -k 10 300 .venv/bin/python fuzz/run.py
    fi
    end
else
    end "no fuzz/run.py yet"
fi

begin "container: scripts/docker_test.sh (image, volume, health check, tzdata, compose)"
# Skips with a message where Docker cannot run (in CI it must); -k 60 leaves time to stop its dockerd.
timeout -k 60 1500 bash scripts/docker_test.sh
end
