#!/usr/bin/env bash
# Build the container image (Dockerfile) and use it the way docs/container.md tells users to, on a
# real Docker engine; then validate compose.yaml and run it (PostgreSQL, Redis, two workers).
#
#   1. the demo inside the image, with --network none;
#   2. `serve` with a volume: healthy by its HEALTHCHECK, a schedule created through the API, the
#      container restarted and then replaced, the schedules and their history still there;
#   3. the core with no system tz database: a zone fails with the message to install tzdata, and
#      resolves with the image built with EXTRAS=tzdata;
#   4. compose.yaml: `docker compose config` (or docker-compose), then up with local PostgreSQL and
#      Redis images: both workers healthy, one shared store (schedules made through one worker's API
#      run, no fire twice), worker-1 killed and its schedules taken over by worker-2, down.
#
# No public image registry is needed: the base image is made here from Debian packages with
# mmdebstrap (cached in $FLOWYML_DOCKER_CACHE, default /var/cache/flowyml-docker) and given to the
# Dockerfile as --build-arg BASE; PostgreSQL and Redis images are made the same way. Containers use
# only --network none or Docker's own bridge; the builds fetch Python packages from PyPI (this host's
# CA bundle goes into the test base image, so a TLS-inspecting proxy the host trusts works too).
#
# As root it installs docker.io, mmdebstrap and docker-compose with apt-get when missing, and starts
# dockerd when none runs (stopping it again at the end). Elsewhere, when Docker cannot be used, it
# skips with a message; with CI=true that is a failure.
# Environment: FLOWYML_DOCKER_BASE (use this base image instead of making one, e.g. python:3.12-slim),
# FLOWYML_DOCKER_REF (build from this git revision instead of the working tree),
# FLOWYML_DOCKER_COMPOSE=0 (skip running compose; it is still validated), FLOWYML_DOCKER_CACHE.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

IN_CI=false
case "${CI:-}" in true | TRUE | True | 1 | yes) IN_CI=true ;; esac
IS_ROOT=false
[ "$(id -u)" -eq 0 ] && IS_ROOT=true
CACHE=${FLOWYML_DOCKER_CACHE:-/var/cache/flowyml-docker}
SUITE=bookworm
MIRRORS=(
    "deb http://deb.debian.org/debian $SUITE main"
    "deb http://deb.debian.org/debian $SUITE-updates main"
    "deb http://deb.debian.org/debian-security $SUITE-security main"
)
CACHE_DAYS=30  # a cached root file system older than this is made again (security updates)
IMAGE=flowyml-lite:test
RUN_ID="flowyml-test-$$"
TOKEN="test-token-$$-$RANDOM"
export DOCKER_BUILDKIT=0  # the classic builder: no buildx plugin or registry needed
export PIP_DISABLE_PIP_VERSION_CHECK=1

STARTED=$EPOCHREALTIME
CURRENT=""
STEP_T0=""
TIMINGS=()
WORK=""
DOCKERD_PID=""
CONTAINERS=()
VOLUMES=()
COMPOSE=()
COMPOSE_UP=false

say() { printf '%s\n' "$*"; }
seconds_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

begin() {
    CURRENT=$1
    STEP_T0=$EPOCHREALTIME
    printf '\n--> docker: %s   (at %ss)\n' "$1" "$(seconds_since "$STARTED")"
}

end() {
    local took
    took=$(seconds_since "$STEP_T0")
    TIMINGS+=("$(printf '%8ss  %s%s' "$took" "$CURRENT" "${1:+  ($1)}")")
    printf '<-- docker: %s: %s in %ss\n' "$CURRENT" "${1:-ok}" "$took"
    CURRENT=""
}

ON_FAIL=""  # a function that shows what helps to understand a failure of the current step

fail() {
    say "FAILED: $*"
    if [ -n "$ON_FAIL" ]; then
        local hook=$ON_FAIL
        ON_FAIL=""
        "$hook" || true
    fi
    exit 1
}

# Docker cannot be used here: a failure in CI, a message (and success) elsewhere.
cannot_run() {
    if $IN_CI; then
        fail "$1 (CI must run the container tests)"
    fi
    say "SKIPPED: the container tests: $1"
    exit 0
}

cleanup() {
    local c v
    if $COMPOSE_UP; then
        "${COMPOSE[@]}" down -v --remove-orphans -t 20 >/dev/null 2>&1 || true
    fi
    for c in "${CONTAINERS[@]}"; do docker rm -f -v "$c" >/dev/null 2>&1 || true; done
    for v in "${VOLUMES[@]}"; do docker volume rm -f "$v" >/dev/null 2>&1 || true; done
    if [ -n "$DOCKERD_PID" ]; then
        say "stopping the dockerd this script started (pid $DOCKERD_PID)"
        kill -TERM "$DOCKERD_PID" 2>/dev/null || true
        for _ in $(seq 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$DOCKERD_PID" 2>/dev/null; then
            say "dockerd did not stop in 30 s: killing it"
            kill -KILL "$DOCKERD_PID" 2>/dev/null || true
        fi
    fi
    if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
}

on_exit() {
    local rc=$?
    set +e
    cleanup
    printf '\n---- docker: time per step\n'
    local line
    for line in "${TIMINGS[@]}"; do say "$line"; done
    if [ "$rc" -ne 0 ] && [ -n "$CURRENT" ]; then
        say "$(printf '%8ss  %s  (FAILED)' "$(seconds_since "$STEP_T0")" "$CURRENT")"
    fi
    say "$(printf '%8ss  total' "$(seconds_since "$STARTED")")"
    if [ "$rc" -ne 0 ]; then say "container tests FAILED${CURRENT:+ at: $CURRENT}"; fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

apt_install() {  # apt_install PACKAGE... (waits for another apt to finish; updates lists when needed)
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends)
    "${apt[@]}" "$@" >/dev/null || { apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null && "${apt[@]}" "$@" >/dev/null; }
}

docker_build() {  # docker_build TAG ARGS... CONTEXT: the build's output goes to a log shown on failure
    local tag=$1
    shift
    local log="$WORK/build-${tag//[:\/]/-}.log"
    if ! docker build -t "$tag" "$@" >"$log" 2>&1; then
        tail -n 40 "$log"
        fail "docker build of $tag failed (the end of its log is above)"
    fi
}

# ---------------------------------------------------------------- the engine

begin "engine: docker.io, dockerd"
if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
    if $IS_ROOT && command -v apt-get >/dev/null 2>&1; then
        apt_install docker.io || cannot_run "apt-get could not install docker.io"
    elif ! command -v docker >/dev/null 2>&1; then
        cannot_run "no docker command (install Docker, or run as root on Debian to have it installed)"
    fi
fi
if docker info >/dev/null 2>&1; then
    say "using the running Docker engine"
elif $IS_ROOT && command -v dockerd >/dev/null 2>&1; then
    mkdir -p "$CACHE"
    # A pid file left by a dockerd that was killed would stop this one from starting.
    if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        rm -f /var/run/docker.pid
    fi
    dockerd >"$CACHE/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 150); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 0.2
    done
    if ! docker info >/dev/null 2>&1; then
        tail -n 30 "$CACHE/dockerd.log" || true
        kill -0 "$DOCKERD_PID" 2>/dev/null || DOCKERD_PID=""
        cannot_run "dockerd did not start (its log is above, in $CACHE/dockerd.log)"
    fi
    say "started dockerd (pid $DOCKERD_PID, log $CACHE/dockerd.log); it is stopped at the end"
else
    cannot_run "no Docker engine answers and this is not root (cannot start dockerd)"
fi
docker version --format 'client {{.Client.Version}}, engine {{.Server.Version}}'
end

WORK=$(mktemp -d "${TMPDIR:-/tmp}/flowyml-docker.XXXXXX")
chmod 755 "$WORK"

# ---------------------------------------------------------------- base images

# A root file system of Debian packages, made by mmdebstrap and kept in the cache, imported as IMAGE.
# Prints nothing; the image's label records which tarball it came from.
debian_image() {  # debian_image IMAGE PACKAGES
    local image=$1 packages=$2 key tar stamp
    key=$(printf '%s %s %s' "$SUITE" "$packages" "${MIRRORS[*]}" | sha256sum | cut -c1-12)
    tar="$CACHE/rootfs-$SUITE-$key.tar"
    if [ -f "$tar" ] && [ -n "$(find "$tar" -mtime "+$CACHE_DAYS" 2>/dev/null)" ]; then
        say "$tar is older than $CACHE_DAYS days: making it again"
        rm -f "$tar"
    fi
    if [ ! -f "$tar" ]; then
        if ! command -v mmdebstrap >/dev/null 2>&1; then
            if $IS_ROOT && command -v apt-get >/dev/null 2>&1; then
                apt_install mmdebstrap || fail "apt-get could not install mmdebstrap"
            else
                cannot_run "mmdebstrap is missing (apt-get install mmdebstrap), or set FLOWYML_DOCKER_BASE"
            fi
        fi
        mkdir -p "$CACHE"
        say "making $tar: mmdebstrap --variant=minbase --include=$packages $SUITE"
        local t0=$EPOCHREALTIME
        mmdebstrap --quiet --format=tar --variant=minbase --include="$packages" \
            --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            "$SUITE" "$tar.part" "${MIRRORS[@]}" || fail "mmdebstrap failed"
        mv "$tar.part" "$tar"
        say "made in $(seconds_since "$t0")s ($(du -h "$tar" | cut -f1))"
    fi
    stamp="$key-$(stat -c %Y "$tar")"
    if [ "$(docker image inspect -f '{{index .Config.Labels "io.flowyml-lite.rootfs"}}' "$image" 2>/dev/null)" != "$stamp" ]; then
        say "docker import $tar $image"
        docker import --change "LABEL io.flowyml-lite.rootfs=$stamp" "$tar" "$image" >/dev/null
    fi
}

begin "base image: Debian $SUITE with python3 (mmdebstrap, cached)"
if [ -n "${FLOWYML_DOCKER_BASE:-}" ]; then
    BASE=$FLOWYML_DOCKER_BASE
    end "given: $BASE"
else
    debian_image flowyml-debian-python:test python3,python3-venv,ca-certificates
    # The machine's trust store goes into the test base, so pip in the build trusts what this host
    # trusts (e.g. a TLS-inspecting proxy); an official Python image needs nothing of the kind.
    mkdir -p "$WORK/base"
    printf 'FROM flowyml-debian-python:test\n' >"$WORK/base/Dockerfile"
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$WORK/base/"
        printf 'COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n' >>"$WORK/base/Dockerfile"
    fi
    docker_build flowyml-base:test "$WORK/base"
    BASE=flowyml-base:test
    end "$(docker run --rm --network none "$BASE" python3 --version)"
fi

# ---------------------------------------------------------------- the image

CONTEXT=$ROOT
if [ -n "${FLOWYML_DOCKER_REF:-}" ]; then
    CONTEXT="$WORK/context"
    mkdir -p "$CONTEXT"
    git -C "$ROOT" archive "$FLOWYML_DOCKER_REF" | tar -x -C "$CONTEXT"
    say "building from $FLOWYML_DOCKER_REF ($(git -C "$ROOT" rev-parse --short "$FLOWYML_DOCKER_REF"))"
fi

build() {  # build TAG [--build-arg ...]: the Dockerfile of the project
    local tag=$1
    shift
    # The build stage gets a tag too, so the pruning at the end keeps its layers (the dependencies) cached.
    docker_build "$tag-build-stage" --target build --build-arg "BASE=$BASE" "$@" "$CONTEXT"
    docker_build "$tag" --build-arg "BASE=$BASE" "$@" "$CONTEXT"
}

begin "build $IMAGE (the core, no extras)"
build "$IMAGE"
end "$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')"

begin "image: non-root user, refuses to serve without a token"
uid=$(docker run --rm --network none --entrypoint id "$IMAGE" -u)
[ "$uid" = 10001 ] || fail "the image runs as uid $uid, not 10001"
rc=0
out=$(docker run --rm --network none "$IMAGE" 2>&1) || rc=$?
say "$out" | tail -n 3
if [ "$rc" -eq 0 ] || ! grep -q FLOWYML_SCHEDULER_API_TOKEN <<<"$out"; then
    fail "serve on 0.0.0.0 without a token started (exit $rc) or did not name FLOWYML_SCHEDULER_API_TOKEN"
fi
end "uid $uid; exit code $rc without a token"

begin "demo inside the image, --network none"
out=$(timeout 120 docker run --rm --network none --entrypoint flowyml-lite "$IMAGE" demo --seconds 5 2>&1) ||
    { say "$out"; fail "the demo failed in the container"; }
say "$out" | sed -n '/^summary/,$p'
grep -q "total [1-9][0-9]* runs" <<<"$out" || fail "the demo recorded no runs"
end

# ---------------------------------------------------------------- serve with a volume

mkdir -p "$WORK/app"
cat >"$WORK/app/myjobs.py" <<'EOF'
"""The app of the container tests: one schedule in code, one pipeline the API may schedule."""

from flowyml_lite import PipelineScheduler

# Settings from FLOWYML_SCHEDULER_*: the image puts the SQLite store on the /data volume.
scheduler = PipelineScheduler()


def beat() -> None:
    pass


def hello() -> str:
    return "hello"


scheduler.schedule_interval("beat", beat, seconds=1)
for i in range(1, 9):  # for the workers of compose.yaml to split between them
    scheduler.schedule_interval(f"tick_{i}", beat, seconds=1)
EOF
chmod 644 "$WORK/app/myjobs.py"
printf 'FROM %s\nCOPY myjobs.py /app/\n' "$IMAGE" >"$WORK/app/Dockerfile"

# Calls the API of a published port from this host: api PORT METHOD PATH [JSON] -> prints the JSON.
cat >"$WORK/api.py" <<'EOF'
import json, sys, urllib.error, urllib.request
port, method, path = sys.argv[1:4]
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
headers = {"Content-Type": "application/json"}
if len(sys.argv) > 5:
    headers["Authorization"] = "Bearer " + sys.argv[5]
request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers)
try:
    with urllib.request.urlopen(request, timeout=10) as response:
        status, text = response.status, response.read().decode()
except urllib.error.HTTPError as exc:
    status, text = exc.code, exc.read().decode()
print(json.dumps({"status": status, "body": json.loads(text) if text else None}))
EOF
api() { python3 "$WORK/api.py" "$@"; }
# jq-free JSON checks: jget EXPRESSION (Python, over `r` = the parsed input) -> prints the result.
jget() { python3 -c "import json, sys; r = json.load(sys.stdin); print($1)"; }
jfilter() { python3 -c "import json, sys; r = json.load(sys.stdin); print(json.dumps($1))"; }  # -> JSON

wait_healthy() {  # wait_healthy CONTAINER SECONDS
    local state health
    for _ in $(seq $(($2 * 5))); do
        state=$(docker inspect -f '{{.State.Status}}' "$1")
        health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$1")
        [ "$health" = healthy ] && return 0
        if [ "$state" = exited ] || [ "$state" = dead ] || [ "$health" = unhealthy ]; then break; fi
        sleep 0.2
    done
    docker logs --tail 30 "$1" 2>&1 || true
    fail "$1 is $state/${health:-no health} after ${2}s (its log is above)"
}

host_port() { docker port "$1" 8080/tcp | head -n 1 | sed 's/.*://'; }

run_serve() {  # run_serve NAME: the app image, the volume, a port of 127.0.0.1 on Docker's bridge
    docker run -d --name "$1" -v "$RUN_ID-data:/data" -p 127.0.0.1::8080 \
        --health-interval 1s -e FLOWYML_SCHEDULER_API_TOKEN="$TOKEN" \
        "$IMAGE-app" myjobs:scheduler --pipeline hello=myjobs:hello >/dev/null
    CONTAINERS+=("$1")
}

wait_runs() {  # wait_runs PORT SCHEDULE COUNT SECONDS: until the history holds COUNT runs
    local n=0
    for _ in $(seq $(($4 * 2))); do
        n=$(api "$1" GET "/api/schedules/$2/history?limit=1000" | jget 'len(r["body"])')
        [ "$n" -ge "$3" ] && return 0
        sleep 0.5
    done
    fail "$2 has $n runs after ${4}s, expected $3"
}

begin "serve with a volume: healthy, a schedule made through the API"
docker_build "$IMAGE-app" "$WORK/app"
docker volume create "$RUN_ID-data" >/dev/null
VOLUMES+=("$RUN_ID-data")
run_serve "$RUN_ID-serve"
t0=$EPOCHREALTIME
wait_healthy "$RUN_ID-serve" 60
say "healthy after $(seconds_since "$t0")s"
port=$(host_port "$RUN_ID-serve")
api "$port" GET /api/health
create='{"name": "api_every_second", "pipeline_name": "hello", "schedule_type": "interval", "interval_seconds": 1}'
[ "$(api "$port" POST /api/schedules "$create" | jget 'r["status"]')" = 401 ] ||
    fail "POST /api/schedules without the token was not refused with 401"
reply=$(api "$port" POST /api/schedules "$create" "$TOKEN")
[ "$(jget 'r["status"]' <<<"$reply")" = 201 ] || fail "POST /api/schedules: $reply"
wait_runs "$port" api_every_second 2 30
wait_runs "$port" beat 2 30
before=$(api "$port" GET "/api/schedules/api_every_second/history?limit=1000" |
    jget '" ".join(sorted(e["fire_time"] for e in r["body"]))')
say "api_every_second ran at: $before"
# The command line inside the running container reads the same store (its path from the image's env).
docker exec "$RUN_ID-serve" flowyml-lite list
docker exec "$RUN_ID-serve" flowyml-lite history api_every_second -n 2
end

kept() {  # kept PORT WHAT: the schedules and the history from before are there
    local listing fires missing
    listing=$(api "$1" GET /api/schedules)
    say "$2: $(jget '", ".join(s["name"] + " (orphan: " + str(s.get("is_orphan")) + ")" for s in r["body"])' <<<"$listing")"
    for name in beat api_every_second; do
        jget "any(s['name'] == '$name' for s in r['body'])" <<<"$listing" | grep -q True ||
            fail "$2: schedule $name is gone"
    done
    fires=$(api "$1" GET "/api/schedules/api_every_second/history?limit=1000" | jget '" ".join(e["fire_time"] for e in r["body"])')
    missing=0
    for fire in $before; do grep -q -- "$fire" <<<"$fires" || missing=$((missing + 1)); done
    [ "$missing" -eq 0 ] || fail "$2: $missing runs of api_every_second from before are missing from its history"
}

begin "restart the container: schedules and history kept"
docker restart -t 40 "$RUN_ID-serve" >/dev/null
wait_healthy "$RUN_ID-serve" 60
port=$(host_port "$RUN_ID-serve")
kept "$port" "after docker restart"
n=$(api "$port" GET "/api/schedules/api_every_second/history?limit=1000" | jget 'len(r["body"])')
wait_runs "$port" api_every_second $((n + 2)) 30
say "api_every_second runs on after the restart: $n -> $((n + 2))+ runs"
end

begin "replace the container (same volume): schedules and history kept"
docker stop -t 40 "$RUN_ID-serve" >/dev/null
docker rm -v "$RUN_ID-serve" >/dev/null
run_serve "$RUN_ID-serve2"
wait_healthy "$RUN_ID-serve2" 60
port=$(host_port "$RUN_ID-serve2")
kept "$port" "in a new container"
docker run --rm --network none -v "$RUN_ID-data:/data" --entrypoint ls "$IMAGE" -ln /data
docker rm -f -v "$RUN_ID-serve2" >/dev/null
end

# ---------------------------------------------------------------- no tz database

begin "no system tz database: the core, then EXTRAS=tzdata"
build "$IMAGE-tzdata" --build-arg EXTRAS=tzdata
mkdir -p "$WORK/notz"
cat >"$WORK/notz/Dockerfile" <<'EOF'
ARG FROM
FROM ${FROM}
USER root
RUN rm -rf /usr/share/zoneinfo /usr/lib/zoneinfo /usr/share/lib/zoneinfo /etc/zoneinfo
USER 10001:10001
EOF
docker_build "$IMAGE-notz" --build-arg FROM="$IMAGE" "$WORK/notz"
docker_build "$IMAGE-tzdata-notz" --build-arg FROM="$IMAGE-tzdata" "$WORK/notz"
zones='import zoneinfo; print(len(zoneinfo.available_timezones()), "zones")'
say "core: $(docker run --rm --network none --entrypoint python3 "$IMAGE-notz" -c "$zones")"
rc=0
out=$(docker run --rm --network none --entrypoint flowyml-lite "$IMAGE-notz" \
    next "0 9 * * 1-5" --tz America/New_York -n 2 2>&1) || rc=$?
say "$out"
if [ "$rc" -eq 0 ] || ! grep -q "tzdata" <<<"$out"; then
    fail "without a tz database the zone did not fail with a message naming tzdata (exit $rc)"
fi
say "with the tzdata extra: $(docker run --rm --network none --entrypoint python3 "$IMAGE-tzdata-notz" -c "$zones")"
out=$(docker run --rm --network none --entrypoint flowyml-lite "$IMAGE-tzdata-notz" \
    next "0 9 * * 1-5" --tz America/New_York -n 2 --after 2026-03-06T12:00:00Z 2>&1) ||
    { say "$out"; fail "the tzdata extra did not give the zone"; }
say "$out"
if ! grep -q -- "-05:00" <<<"$out" || ! grep -q -- "-04:00" <<<"$out"; then
    fail "the instants around the March 2026 change in New York do not show both offsets"
fi
end

# ---------------------------------------------------------------- compose.yaml

begin "compose.yaml: validate"
export FLOWYML_API_TOKEN=$TOKEN POSTGRES_PASSWORD="pw-$RANDOM$RANDOM"
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
elif $IS_ROOT && command -v apt-get >/dev/null 2>&1 && apt_install docker-compose; then
    COMPOSE=(docker-compose)
fi
if [ ${#COMPOSE[@]} -gt 0 ]; then
    "${COMPOSE[@]}" -f compose.yaml config -q
    services=$("${COMPOSE[@]}" -f compose.yaml config --services | sort | tr '\n' ' ')
    [ "$services" = "postgres redis worker-1 worker-2 " ] || fail "compose.yaml services: $services"
    end "$("${COMPOSE[@]}" version --short 2>/dev/null || echo "${COMPOSE[*]}"): valid; services $services"
else
    $IN_CI && fail "no docker compose plugin and no docker-compose"
    # A schema-ish check, so a broken file is still caught where no compose tool is installed.
    python3 - <<'EOF' || fail "compose.yaml does not parse or misses a service"
import yaml  # PyYAML
doc = yaml.safe_load(open("compose.yaml"))
services = doc["services"]
assert sorted(services) == ["postgres", "redis", "worker-1", "worker-2"], sorted(services)
for name, service in services.items():
    assert "image" in service or "build" in service, name
    assert name.startswith("worker") or "healthcheck" in service, name
EOF
    end "parsed with PyYAML only: no compose tool here"
fi

begin "compose.yaml: up with local PostgreSQL and Redis images, two workers, down"
if [ "${FLOWYML_DOCKER_COMPOSE:-1}" = 0 ] || [ ${#COMPOSE[@]} -eq 0 ]; then
    $IN_CI && fail "running compose.yaml was turned off or no compose tool is installed"
    end "skipped"
else
    # PostgreSQL and Redis from Debian packages, started the way the official images start them:
    # the database and user from POSTGRES_* on the first start; Redis reachable from other containers.
    debian_image flowyml-debian-services:test postgresql,redis-server
    mkdir -p "$WORK/postgres" "$WORK/redis"
    cat >"$WORK/postgres/start" <<'EOF'
#!/bin/sh
set -eu
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
data=/var/lib/postgresql/data
if [ ! -s "$data/PG_VERSION" ]; then
    printf '%s' "$POSTGRES_PASSWORD" >/tmp/pw
    "$bin/initdb" -D "$data" -U "$POSTGRES_USER" --pwfile=/tmp/pw -A scram-sha-256 --auth-local=trust \
        -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f /tmp/pw
    echo "host all all all scram-sha-256" >>"$data/pg_hba.conf"
    "$bin/pg_ctl" -D "$data" -o "-c listen_addresses=''" -w start >/dev/null
    [ "$POSTGRES_DB" = postgres ] || "$bin/createdb" -U "$POSTGRES_USER" "$POSTGRES_DB"
    "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
fi
exec "$bin/postgres" -D "$data" -c listen_addresses='*'
EOF
    cat >"$WORK/postgres/Dockerfile" <<'EOF'
FROM flowyml-debian-services:test
COPY start /usr/local/bin/postgres-start
RUN chmod 755 /usr/local/bin/postgres-start && mkdir -p /var/run/postgresql /var/lib/postgresql/data \
    && chown postgres:postgres /var/run/postgresql /var/lib/postgresql/data
USER postgres
ENTRYPOINT ["/usr/local/bin/postgres-start"]
EOF
    cat >"$WORK/redis/start" <<'EOF'
#!/bin/sh
# As the official image: `redis-server ARGS` without a config file serves other containers.
[ "${1:-}" = redis-server ] && shift
exec redis-server --protected-mode no "$@"
EOF
    cat >"$WORK/redis/Dockerfile" <<'EOF'
FROM flowyml-debian-services:test
COPY start /usr/local/bin/redis-start
RUN chmod 755 /usr/local/bin/redis-start
USER redis
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/redis-start"]
EOF
    docker_build flowyml-test-postgres:local "$WORK/postgres"
    docker_build flowyml-test-redis:local "$WORK/redis"
    # Same compose.yaml; only the images come from here (and the base of the workers' image).
    cat >"$WORK/compose.override.yaml" <<EOF
services:
  postgres:
    image: flowyml-test-postgres:local
  redis:
    image: flowyml-test-redis:local
  worker-1:
    build:
      context: $CONTEXT
      args:
        BASE: $BASE
    image: $IMAGE-fleet
  worker-2:
    build:
      context: $CONTEXT
      args:
        BASE: $BASE
    image: $IMAGE-fleet
EOF
    port1=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    port2=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    export FLOWYML_APP_DIR="$WORK/app" FLOWYML_WORKER1_PORT=$port1 FLOWYML_WORKER2_PORT=$port2
    COMPOSE+=(-p "$RUN_ID" -f compose.yaml -f "$WORK/compose.override.yaml")
    compose_diagnostics() {
        say "---- what the workers see (name, orphan here, next run) and the end of their logs"
        local p
        for p in "$port1" "$port2"; do
            api "$p" GET /api/schedules | jget '[(s["name"], s.get("is_orphan"), s.get("next_run")) for s in r["body"]]'
        done
        "${COMPOSE[@]}" ps
        "${COMPOSE[@]}" logs --no-color --tail 25 worker-1 worker-2 postgres | cut -c1-300
    }
    ON_FAIL=compose_diagnostics
    t0=$EPOCHREALTIME
    build "$IMAGE-fleet" --build-arg EXTRAS=postgres,redis  # what compose builds, so it finds it cached
    "${COMPOSE[@]}" build >"$WORK/compose-build.log" 2>&1 || { tail -n 40 "$WORK/compose-build.log"; fail "compose build"; }
    say "built the workers' image (EXTRAS=postgres,redis) in $(seconds_since "$t0")s"
    COMPOSE_UP=true
    t0=$EPOCHREALTIME
    "${COMPOSE[@]}" up -d >"$WORK/compose-up.log" 2>&1 || { cat "$WORK/compose-up.log"; "${COMPOSE[@]}" logs --tail 30; fail "compose up"; }
    w1=$("${COMPOSE[@]}" ps -q worker-1)
    w2=$("${COMPOSE[@]}" ps -q worker-2)
    wait_healthy "$w1" 120
    wait_healthy "$w2" 120
    say "up, PostgreSQL and Redis healthy, both workers healthy in $(seconds_since "$t0")s"
    # Schedules made through worker-1's API, for its pipeline "beat": each must run (whichever worker
    # the schedules fall to) and be seen through worker-2. Four, so that some fall to each worker.
    for i in 1 2 3 4; do
        reply=$(api "$port1" POST /api/schedules \
            "{\"name\": \"api_$i\", \"pipeline_name\": \"beat\", \"schedule_type\": \"interval\", \"interval_seconds\": 1}" "$TOKEN")
        [ "$(jget 'r["status"]' <<<"$reply")" = 201 ] || fail "POST /api/schedules on worker-1: $reply"
    done
    wait_runs "$port1" beat 6 60
    for i in 1 2 3 4; do wait_runs "$port2" "api_$i" 2 60; done
    history=$(api "$port2" GET "/api/schedules/beat/history?limit=1000")
    say "beat, seen from worker-2: $(jget '"%d runs, %d distinct fires, nodes %s" % (len(r["body"]), len({e["fire_time"] for e in r["body"]}), sorted({str(e.get("node")) for e in r["body"]}))' <<<"$history")"
    [ "$(jget 'len(r["body"]) == len({e["fire_time"] for e in r["body"]})' <<<"$history")" = True ] ||
        fail "a fire of beat ran twice across the two workers"
    nodes=$(api "$port1" GET /api/nodes)
    say "nodes in the store: $(jget '[(n["node_id"], n.get("alive")) for n in r["body"]]' <<<"$nodes")"
    [ "$(jget 'sum(1 for n in r["body"] if n.get("alive"))' <<<"$nodes")" -ge 2 ] ||
        fail "the store does not list both workers as live nodes"
    # worker-1 dies (SIGKILL): worker-2 takes its share of the schedules over once its heartbeat is
    # older than node_timeout_seconds (30 s), and no fire runs twice.
    node1=$(api "$port1" GET /api/scheduler/health | jget 'r["body"]["node_id"]')
    node2=$(api "$port2" GET /api/scheduler/health | jget 'r["body"]["node_id"]')
    names="beat tick_1 tick_2 tick_3 tick_4 tick_5 tick_6 tick_7 tick_8"
    owners=""
    for name in $names; do
        last=$(api "$port2" GET "/api/schedules/$name/history?limit=1" | jget 'r["body"][0]["node"]')
        [ "$last" = "$node1" ] && owners+="$name "
    done
    say "worker-1 is $node1, worker-2 is $node2; worker-1 runs: ${owners:-none of them (nothing to take over)}"
    stopped_at=$(date -u +%Y-%m-%dT%H:%M:%S.%6N+00:00)
    "${COMPOSE[@]}" kill worker-1 >/dev/null 2>&1
    t0=$EPOCHREALTIME
    for name in $names; do
        for _ in $(seq 240); do
            after=$(api "$port2" GET "/api/schedules/$name/history?limit=1000" |
                jfilter "[e for e in r['body'] if e['fire_time'] > '$stopped_at']")
            [ "$(jget "sum(e['node'] == '$node2' for e in r)" <<<"$after")" -ge 2 ] && break
            sleep 1
        done
        [ "$(jget "sum(e['node'] == '$node2' for e in r)" <<<"$after")" -ge 2 ] ||
            fail "$name did not run again within 240 s of worker-1's death"
        # A fire worker-1 claimed ahead of its instant just before it died is its own, recorded lost
        # (guarantees.md: the instants a process claimed in the half second before it dies).
        [ "$(jget "all(e['node'] == '$node2' or e['status'] == 'lost' for e in r)" <<<"$after")" = True ] ||
            fail "$name ran after worker-1 died on another node than worker-2"
    done
    say "worker-1 killed at $stopped_at: worker-2 runs all of them within $(seconds_since "$t0")s${owners:+ (took over: $owners)}"
    for name in $names; do
        history=$(api "$port2" GET "/api/schedules/$name/history?limit=1000")
        [ "$(jget 'len(r["body"]) == len({e["fire_time"] for e in r["body"]})' <<<"$history")" = True ] ||
            fail "a fire of $name ran twice"
    done
    ON_FAIL=""
    "${COMPOSE[@]}" down -v --remove-orphans -t 20 >/dev/null 2>&1
    COMPOSE_UP=false
    end
fi

# Images of earlier runs that this run's builds replaced (untagged now); what this run tagged stays,
# and with it the cached layers of the dependencies and the base images.
for label in org.opencontainers.image.title=flowyml-lite io.flowyml-lite.stage io.flowyml-lite.rootfs; do
    docker image prune -f --filter "label=$label" >/dev/null || true
done
