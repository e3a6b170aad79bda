"""The HTTP API's routes: a request in, a JSON response out, no sockets (``server.py`` adds those).

Endpoints are flowyml's (the guide's list, with its request and response shapes) plus history,
run-now, pipelines, ``/metrics``, an OpenAPI document and the dashboard. Errors are JSON:
``{"error": {"code": ..., "message": ...}}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from ..core.schedule import OPTION_NAMES, SCHEDULE_TYPES
from ..errors import (
    ApiError,
    ConfigurationError,
    CronError,
    FlowymlLiteError,
    ScheduleError,
    ScheduleNotFoundError,
    SchemaVersionError,
    StoreError,
    StoreFileReplacedError,
    TimezoneError,
)

logger = logging.getLogger("flowyml_lite.api")

MAX_BODY_BYTES = 1 << 20
MAX_HISTORY = 10_000  # as many runs as a schedule keeps by default (history_max_runs)
MAX_WAIT_SECONDS = 3600
JSON_TYPE = "application/json"
#: Fields a POST /api/schedules body may carry (flowyml's ScheduleRequest plus the scheduler's options).
#: The schedule options a create request may set: every option but ``retry_on`` (exception
#: classes are code; a request names no code).
_OPTION_FIELDS = tuple(name for name in OPTION_NAMES if name != "retry_on")
CREATE_FIELDS = frozenset(
    {
        "name",
        "pipeline_name",
        "schedule_type",
        "hour",
        "minute",
        "interval_seconds",
        "cron_expression",
        "timezone",
        "project_name",
        "context",
        "at",
        *_OPTION_FIELDS,
    }
)


@dataclass
class Request:
    """What the server read from the socket."""

    method: str
    target: str  # path and query, as sent
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> Optional[str]:
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: Dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body decoded (tests and clients)."""
        return json.loads(self.body.decode("utf-8"))


def json_response(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload, default=str).encode("utf-8"))


def error_response(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": {"code": code, "message": message}})


Handler = Callable[["ApiApp", Request, List[str], Dict[str, List[str]]], Response]
PipelineFactory = Callable[[], Any]


class ApiApp:
    """Routes requests to a ``PipelineScheduler``.

    ``token``: when set, every request that changes something must send ``Authorization: Bearer
    <token>``. ``allowed_hosts``: when set, requests whose ``Host`` names another host are refused
    (a loopback server is then safe from DNS rebinding). Requests with an ``Origin`` other than
    their own host are refused whatever the token, so a web page cannot drive the API (CSRF).
    ``pipelines``: name -> function (or flowyml_lite ``Pipeline``) that POST /api/schedules may use.
    ``token_for_reads``: reads need the token too, except the dashboard page and ``/api/health``.
    """

    def __init__(
        self,
        scheduler: Any,
        *,
        token: Optional[str] = None,
        allowed_hosts: Optional[List[str]] = None,
        pipelines: Optional[Mapping[str, Any]] = None,
        token_for_reads: bool = False,
    ) -> None:
        self.scheduler = scheduler
        self.token = token or None
        self.token_for_reads = bool(token_for_reads) and self.token is not None
        self.allowed_hosts = {h.lower() for h in allowed_hosts} if allowed_hosts else None
        self.pipelines: Dict[str, Any] = dict(pipelines or {})
        from .metrics import run_metrics_for

        run_metrics_for(scheduler)  # count runs from now on, not from the first scrape
        self.relinked = self.relink()

    # -- entry point -------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer one request; never raises (errors become JSON error responses)."""
        try:
            response = self._dispatch(request)
        except ApiError as exc:
            response = error_response(exc.status, exc.code, str(exc))
        except ScheduleNotFoundError as exc:
            response = error_response(404, "not_found", str(exc))
        except (CronError, TimezoneError, ScheduleError, ConfigurationError) as exc:
            response = error_response(400, "invalid", str(exc))
        except (SchemaVersionError, StoreFileReplacedError) as exc:  # a retry does not mend these
            logger.warning("%s %s failed: %s", request.method, request.target, exc)
            response = error_response(500, "scheduler_error", "the scheduler failed; see the server log")
        except StoreError as exc:  # the request was fine; the store did not take it: try again
            logger.warning("%s %s failed: %s", request.method, request.target, exc)
            response = error_response(
                503,
                "store_unavailable",
                "the store did not answer (down, restarting or unreachable; details in the server "
                "log): a change asked for may or may not have been made, so read it back, then retry",
            )
        except FlowymlLiteError as exc:
            # Logged, not shown: store errors name files, hosts and queries.
            logger.warning("%s %s failed: %s", request.method, request.target, exc)
            response = error_response(500, "scheduler_error", "the scheduler failed; see the server log")
        except Exception:  # a bug or a failing store: logged with its traceback, not shown
            logger.exception("%s %s failed", request.method, request.target)
            response = error_response(500, "internal", "internal error; see the server log")
        return response

    def _dispatch(self, request: Request) -> Response:
        method = request.method.upper()
        parts = urlsplit(request.target)
        raw = [p for p in parts.path.split("/") if p]
        segments = [unquote(p) for p in raw]
        query = parse_qs(parts.query, keep_blank_values=True)  # ?limit= is a bad limit, not no limit
        self._check_origin(request)
        allowed: List[str] = []
        for route_method, pattern, handler in _ROUTES:
            params = _match(pattern, segments)
            if params is None:
                continue
            if route_method != method and not (route_method == "GET" and method == "HEAD"):
                allowed.append(route_method)
                continue
            if method not in ("GET", "HEAD") or (self.token_for_reads and handler not in _OPEN_READS):
                self._check_token(request)
            return handler(self, request, params, query)
        if allowed:
            response = error_response(
                405,
                "method_not_allowed",
                f"{method} is not allowed here; use {', '.join(sorted(set(allowed)))}",
            )
            response.headers["Allow"] = ", ".join(sorted(set(allowed)))
            return response
        raise ApiError(404, "not_found", f"no endpoint {parts.path}; GET /api/openapi.json lists them")

    # -- security ----------------------------------------------------------------------

    def _check_origin(self, request: Request) -> None:
        host = (request.header("Host") or "").lower()
        if self.allowed_hosts is not None and host:  # no Host at all (HTTP/1.0): not a browser
            name = _host_name(host)
            if name not in self.allowed_hosts:
                raise ApiError(
                    403,
                    "host_not_allowed",
                    f"Host {host!r} is not served here; start the server with --allow-host {name or 'NAME'} "
                    "if it is reached through that name",
                )
        origin = request.header("Origin")
        if origin and origin.lower() != "null":
            origin_host = urlsplit(origin).netloc.lower()
            if origin_host != host:
                raise ApiError(403, "cross_origin", f"requests from {origin} are refused (cross-origin)")
        elif origin:
            raise ApiError(403, "cross_origin", "requests from an opaque origin are refused")

    def _check_token(self, request: Request) -> None:
        if self.token is None:
            return
        sent = request.header("Authorization") or ""
        scheme, _, credential = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credential.strip().encode(), self.token.encode()
        ):
            raise ApiError(
                401, "unauthorized", "this request needs the API token: send 'Authorization: Bearer <token>'"
            )

    # -- helpers -----------------------------------------------------------------------

    def relink(self) -> List[str]:
        """Give back their function to stored schedules created for a registered pipeline.

        ``POST /api/schedules`` records the pipeline's name in the schedule's context; a process
        that starts with that pipeline registered declares those schedules again with the same
        definition (state and history kept), so they run here. Returns the names re-linked.
        """
        from .overview import PIPELINE_KEY

        pipelines = self.registered_pipelines()
        linked = []
        for schedule in self.scheduler.list_schedules(include_orphans=True):
            wanted = schedule.context.get(PIPELINE_KEY) if isinstance(schedule.context, dict) else None
            if not schedule.is_orphan or not isinstance(wanted, str) or wanted not in pipelines:
                continue
            record = self.scheduler.store.get_schedule(schedule.pipeline_name)
            if record is None:
                continue
            try:
                _declare_again(self.scheduler, record, _runner(pipelines[wanted]))
            except (FlowymlLiteError, ApiError, TypeError, ValueError) as exc:
                logger.warning("schedule %r (pipeline %r) not re-linked: %s", record.name, wanted, exc)
                continue
            linked.append(record.name)
            logger.info("schedule %r runs pipeline %r again", record.name, wanted)
        return linked

    def registered_pipelines(self) -> Dict[str, Any]:
        """Pipelines POST /api/schedules can use: those given to the server, then scheduled functions."""
        found: Dict[str, Any] = {}
        for schedule in self.scheduler.list_schedules():
            if schedule.pipeline_func is not None:
                found.setdefault(schedule.pipeline_name, schedule.pipeline_func)
        found.update(self.pipelines)
        return found


def _host_name(host: str) -> str:
    """``example.org:8080`` -> ``example.org``; ``[::1]:8080`` -> ``::1``."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _declare_again(scheduler: Any, record: Any, func: Callable[[], Any]) -> None:
    """Declare a stored schedule with ``func`` and its stored definition (the same hash: state kept)."""
    options = dict(record.options)
    context = dict(record.context)
    kind, value, zone = record.schedule_type, record.schedule_value, record.timezone
    if kind == "cron":
        scheduler.schedule_cron(record.name, func, value, timezone=zone, context=context, **options)
    elif kind == "daily":
        hour, _, minute = value.partition(":")
        scheduler.schedule_daily(
            record.name, func, hour=int(hour), minute=int(minute), timezone=zone, context=context, **options
        )
    elif kind == "hourly":
        scheduler.schedule_hourly(
            record.name, func, minute=int(value), timezone=zone, context=context, **options
        )
    elif kind == "interval":
        scheduler.schedule_interval(
            record.name, func, seconds=float(value), timezone=zone, context=context, **options
        )
    elif kind == "once" and hasattr(scheduler, "schedule_once"):
        scheduler.schedule_once(record.name, func, value, timezone=zone, context=context, **options)
    else:
        raise ValueError(f"schedule type {kind!r} cannot be declared again here")


def _match(pattern: Tuple[str, ...], segments: List[str]) -> Optional[List[str]]:
    if len(pattern) != len(segments):
        return None
    params = []
    for want, got in zip(pattern, segments):
        if want == "{}":
            params.append(got)
        elif want != got:
            return None
    return params


def _body(request: Request) -> Dict[str, Any]:
    if len(request.body) > MAX_BODY_BYTES:
        raise ApiError(413, "too_large", f"request body over {MAX_BODY_BYTES} bytes")
    kind = (request.header("Content-Type") or JSON_TYPE).split(";")[0].strip().lower()
    if kind != JSON_TYPE:
        raise ApiError(415, "unsupported_media_type", f"send {JSON_TYPE}, not {kind}")
    try:
        payload = json.loads(request.body.decode("utf-8") or "null")
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return payload


def _query_int(query: Dict[str, List[str]], name: str, default: int, lo: int, hi: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        value = int(values[-1])
    except ValueError:
        raise ApiError(400, "invalid", f"{name} must be an integer, got {values[-1]!r}") from None
    if not lo <= value <= hi:
        raise ApiError(400, "invalid", f"{name} must be between {lo} and {hi}, got {value}")
    return value


def schedule_json(schedule: Any) -> Dict[str, Any]:
    """A schedule as the API shows it: flowyml's keys plus ``name`` and the options.

    ``pipeline_name`` is the registered pipeline a schedule created through the API runs (its
    context's ``pipeline``); for a schedule declared in code it is the schedule's name, as in flowyml.
    """
    from .overview import PIPELINE_KEY

    out: Dict[str, Any] = {"name": schedule.pipeline_name}
    out.update(schedule.to_dict())
    linked = schedule.context.get(PIPELINE_KEY) if isinstance(schedule.context, dict) else None
    if isinstance(linked, str) and linked:
        out["pipeline_name"] = linked
    return out


def _runner(pipeline: Any) -> Callable[[], Any]:
    """What a fire calls: a plain function itself, a ``Pipeline`` (or any object with ``run()``) its run."""
    if callable(pipeline):
        return pipeline  # type: ignore[no-any-return]
    run = getattr(pipeline, "run", None)
    if callable(run):
        return run  # type: ignore[no-any-return]
    raise ApiError(
        500, "invalid_pipeline", f"pipeline {pipeline!r} is neither callable nor has a run() method"
    )


# -- handlers ------------------------------------------------------------------------------


def _list_schedules(
    app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]
) -> Response:
    return json_response(200, [schedule_json(s) for s in app.scheduler.list_schedules(include_orphans=True)])


def _get_schedule(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    return json_response(200, schedule_json(app.scheduler.get_schedule(params[0])))


def _create_schedule(
    app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]
) -> Response:
    body = _body(request)
    unknown = sorted(set(body) - CREATE_FIELDS)
    if unknown:
        raise ApiError(
            400,
            "invalid",
            f"unknown field(s) {', '.join(unknown)}; the fields are {', '.join(sorted(CREATE_FIELDS))}",
        )
    from .openapi import body_problem  # the types and ranges GET /api/openapi.json documents

    problem = body_problem(body)
    if problem:
        raise ApiError(400, "invalid", problem)
    name = body.get("name")
    pipeline_name = body.get("pipeline_name", name)
    kind = body.get("schedule_type")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "invalid", "'name' (a string) is required")
    if not isinstance(pipeline_name, str):
        raise ApiError(400, "invalid", "'pipeline_name' must be a string")
    pipelines = app.registered_pipelines()
    if pipeline_name not in pipelines:
        known = ", ".join(sorted(pipelines)) or "none"
        raise ApiError(
            404,
            "pipeline_not_found",
            f"no pipeline named {pipeline_name!r} is registered with this server (known: {known}); "
            "pass it to the server (ApiServer(pipelines=...) or 'serve --pipeline NAME=module:attr')",
        )
    func = _runner(pipelines[pipeline_name])
    options = {k: body[k] for k in _OPTION_FIELDS if k in body}
    from .overview import PIPELINE_KEY

    context = body.get("context")
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise ApiError(400, "invalid", f"'context' must be a JSON object, got {type(context).__name__}")
    if context.get(PIPELINE_KEY, pipeline_name) != pipeline_name:
        raise ApiError(
            400,
            "invalid",
            f"context[{PIPELINE_KEY!r}] names the pipeline the schedule runs; it must be {pipeline_name!r} "
            "or left out",
        )
    options["context"] = {**context, PIPELINE_KEY: pipeline_name}  # survives restarts: see relink()
    zone = body.get("timezone")
    sched = app.scheduler
    if kind == "cron":
        expression = body.get("cron_expression")
        if not isinstance(expression, str) or not expression.strip():
            raise ApiError(400, "invalid", "a cron schedule needs 'cron_expression', e.g. \"0 9 * * 1-5\"")
        schedule = sched.schedule_cron(name, func, expression, timezone=zone, **options)
    elif kind == "daily":
        schedule = sched.schedule_daily(
            name,
            func,
            hour=_int_field(body, "hour", 0),
            minute=_int_field(body, "minute", 0),
            timezone=zone,
            **options,
        )
    elif kind == "hourly":
        schedule = sched.schedule_hourly(
            name, func, minute=_int_field(body, "minute", 0), timezone=zone, **options
        )
    elif kind == "interval":
        seconds = body.get("interval_seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise ApiError(400, "invalid", "an interval schedule needs 'interval_seconds', a number > 0")
        schedule = sched.schedule_interval(name, func, seconds=seconds, timezone=zone, **options)
    elif kind == "once" and hasattr(sched, "schedule_once"):
        at = body.get("at")
        if not isinstance(at, str) or not at.strip():
            raise ApiError(400, "invalid", "a once schedule needs 'at', an ISO 8601 instant with its offset")
        schedule = sched.schedule_once(name, func, at, **options)
    else:
        known = ", ".join(t for t in SCHEDULE_TYPES if t != "once" or hasattr(sched, "schedule_once"))
        raise ApiError(400, "invalid", f"schedule_type must be one of {known}, got {kind!r}")
    return json_response(
        201, {"status": "success", "message": f"Scheduled '{name}'", "schedule": schedule_json(schedule)}
    )


def _int_field(body: Dict[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "invalid", f"{name!r} must be an integer, got {value!r}")
    return int(value)


def _delete_schedule(
    app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]
) -> Response:
    app.scheduler.unschedule(params[0])
    return json_response(200, {"status": "success", "message": f"Schedule {params[0]} removed"})


def _enable(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    app.scheduler.enable(params[0])
    return json_response(
        200, {"status": "success", "schedule": schedule_json(app.scheduler.get_schedule(params[0]))}
    )


def _disable(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    app.scheduler.disable(params[0])
    return json_response(
        200, {"status": "success", "schedule": schedule_json(app.scheduler.get_schedule(params[0]))}
    )


def _run_now(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    wait_text = (query.get("wait") or ["false"])[-1].lower()
    if wait_text not in ("1", "true", "yes", "0", "false", "no"):
        raise ApiError(400, "invalid", f"wait must be true or false, got {wait_text[:20]!r}")
    wait = wait_text in ("1", "true", "yes")
    timeout = _query_int(query, "timeout", 60, 1, MAX_WAIT_SECONDS)
    name = params[0]
    try:
        entry = app.scheduler.run_now(name, wait=wait, timeout=timeout)
    except FuturesTimeout:
        entry = {"status": "running"}
    if wait and entry.get("status") in ("running", "queued"):
        raise ApiError(504, "timeout", f"the run of {name!r} did not finish within {timeout} s; it goes on")
    return json_response(*run_now_reply(name, entry, wait))


def run_now_reply(name: str, entry: Dict[str, Any], wait: bool) -> Tuple[int, Dict[str, Any]]:
    """The status code and body of a run-now: ``status`` is the run's own (or ``accepted``).

    A run still in flight (no wait) is a 202 with ``status: accepted`` and ``success: null``; a
    finished run (waited for, or skipped at once because an earlier run is still in progress) is a
    200 whose ``status`` is the run's outcome and whose ``message`` says it in words.
    """
    entry = dict(entry)
    status = str(entry.get("status"))
    if status in ("running", "queued"):
        entry["success"] = None
        entry["started_at"] = entry.get("started_at") if status == "running" else None
        return 202, {
            "status": "accepted",
            "message": f"run of {name!r} started; GET /api/schedules/{name}/history shows its outcome",
            "run": entry,
        }
    if status == "skipped":
        entry["started_at"] = None
        entry["start_lag_seconds"] = None
        reason = entry.get("reason") or "an earlier run is still in progress"
        message = f"run of {name!r} skipped: {reason} (max_instances)"
    elif status == "succeeded":
        message = f"run of {name!r} succeeded"
    else:
        message = f"run of {name!r} {status.replace('_', ' ')}" + (
            f": {entry['error']}" if entry.get("error") else ""
        )
    return 200, {"status": status, "message": message, "run": entry}


def _history(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    limit = _query_int(query, "limit", 50, 1, MAX_HISTORY)
    app.scheduler.get_schedule(params[0])  # 404 for a name that never existed
    return json_response(200, app.scheduler.get_history(params[0], limit))


def _health(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    from .overview import problems, store_answered

    health = app.scheduler.health_check()
    found: Dict[str, List[str]] = {"orphaned": [], "overdue": []}
    if store_answered(health):
        with contextlib.suppress(StoreError):  # health says degraded, and why
            found = problems(app.scheduler)
    health["orphaned_schedules"] = found["orphaned"]
    health["overdue_schedules"] = found["overdue"]
    warnings = list(health.get("warnings") or [])
    # Schedules no live process runs, or that fire over a minute late, are the fleet's problems
    # (this process may be an admin server that runs nothing): monitoring reads status and problems.
    fleet = []
    if found["orphaned"]:
        fleet.append(
            (
                "orphaned",
                f"{_count(len(found['orphaned']), 'schedule')} no live process runs (orphaned): "
                + ", ".join(found["orphaned"][:10]),
            )
        )
    if found["overdue"]:
        fleet.append(
            (
                "overdue",
                f"{_count(len(found['overdue']), 'schedule')} past due: " + ", ".join(found["overdue"][:10]),
            )
        )
    if fleet:
        warnings.extend(message for _, message in fleet)
        health["problems"] = list(health.get("problems") or []) + [
            {"source": f"schedules:{kind}", "message": text, "for_seconds": None} for kind, text in fleet
        ]
        if health.get("status") == "running":
            health["status"] = "degraded"
    health["warnings"] = warnings
    return json_response(200, health)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _overview(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    from .overview import overview

    runs = _query_int(query, "runs", 30, 1, 100)
    return json_response(200, overview(app.scheduler, runs))


def _nodes(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    from datetime import datetime, timezone

    from .overview import alive_nodes, node_rows, silent_nodes

    store, config, now = app.scheduler.store, app.scheduler.config, datetime.now(timezone.utc)
    alive = alive_nodes(store, float(config.node_timeout_seconds), now)
    silent = silent_nodes(store, alive, float(config.heartbeat_seconds), now)
    return json_response(200, node_rows(store, alive, store.active_runs(), silent))


def _run_detail(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    from .overview import find_run, run_json

    name, run_key = params
    app.scheduler.get_schedule(name)  # 404 for an unknown schedule
    run = find_run(app.scheduler, name, run_key, MAX_HISTORY)
    if run is None:
        raise ApiError(404, "not_found", f"no run {run_key!r} among the last {MAX_HISTORY} runs of {name!r}")
    return json_response(200, run_json(run, details=True))


def _upcoming(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    from datetime import datetime, timezone

    from .overview import describe, upcoming

    count = _query_int(query, "n", 5, 1, 100)
    record = app.scheduler.store.get_schedule(params[0])
    if record is None:
        raise ScheduleNotFoundError(params[0])
    fires = upcoming(app.scheduler, record, count, datetime.now(timezone.utc))
    return json_response(
        200,
        {
            "name": record.name,
            "timezone": record.timezone,
            "description": describe(record.schedule_type, record.schedule_value, record.name),
            "fires": [_fire_json(f) for f in fires],
        },
    )


def _fire_json(fire: Any) -> Dict[str, Any]:
    from datetime import timezone

    return {"fire": fire.isoformat(), "utc": fire.astimezone(timezone.utc).isoformat(), "zone": fire.tzname()}


def _cron_preview(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    from datetime import datetime, timezone

    from ..cron.explain import explain
    from ..cron.expression import CronExpression

    expression = (query.get("expression") or [""])[-1]
    zone = (query.get("timezone") or [app.scheduler.config.timezone])[-1] or "UTC"
    count = _query_int(query, "n", 5, 1, 100)
    if not expression.strip():
        raise ApiError(400, "invalid", 'send ?expression=, a cron expression such as "0 9 * * 1-5"')
    config = app.scheduler.config
    hash_key = (query.get("name") or [""])[-1] or None
    expr = CronExpression(
        expression,
        timezone=zone,
        hash_key=hash_key,
        engine=config.cron_engine,
        zone_provider=config.timezone_provider,
    )
    fires = []
    for fire in expr.iter(datetime.now(timezone.utc)):
        fires.append(_fire_json(fire))
        if len(fires) >= count:
            break
    try:
        description = explain(expression, hash_key=hash_key)
    except FlowymlLiteError:
        description = expression
    return json_response(
        200,
        {"expression": expression, "timezone": zone, "description": description, "fires": fires},
    )


#: Problems that leave this worker ready: it reaches its store and fires; what is wrong is a peer,
#: a job, a hook, a lock server or a clock (health still says ``degraded`` and names them).
_NOT_THIS_WORKER = ("silent:", "late", "hooks", "blocked:", "plan:", "executor:", "lock", "clock")


def _liveness(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    """Readiness: 200 while this worker fires and reaches its store; 503 stopped or while it cannot."""
    status = app.scheduler.status()  # no store reads: probes may call it every second
    if status == "running":
        return json_response(200, {"status": "ok"})
    if status != "degraded":
        return json_response(503, {"status": status})
    sources = [str(p["source"]) for p in app.scheduler.problems()]
    ready = bool(sources) and all(source.startswith(_NOT_THIS_WORKER) for source in sources)
    return json_response(200 if ready else 503, {"status": status, "problems": sources})


def _alive(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    """Liveness: the process answers. 200 whatever the store does, so a probe never restarts a
    worker for a database outage (which a restart cannot mend); the status is in the body."""
    return json_response(200, {"status": app.scheduler.status()})


def _pipelines(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    return json_response(
        200, {"registered": sorted(app.registered_pipelines()), "templates": [], "metadata": []}
    )


def _metrics(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    from .metrics import render_metrics

    return Response(
        200, render_metrics(app.scheduler).encode("utf-8"), "text/plain; version=0.0.4; charset=utf-8"
    )


def _openapi(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    from .openapi import openapi_document

    return json_response(200, openapi_document(app))


def _dashboard(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    from .dashboard import DASHBOARD_HTML

    response = Response(200, DASHBOARD_HTML.encode("utf-8"), "text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; script-src 'unsafe-inline'; "
        "style-src 'unsafe-inline'; frame-ancestors 'none'"
    )
    return response


#: Open even with token_for_reads: the page's HTML holds no data, and probes send no token.
_OPEN_READS = (_dashboard, _liveness, _alive)

_ROUTES: List[Tuple[str, Tuple[str, ...], Handler]] = [
    ("GET", (), _dashboard),
    ("GET", ("dashboard",), _dashboard),
    ("GET", ("metrics",), _metrics),
    ("GET", ("api", "health"), _liveness),
    ("GET", ("api", "live"), _alive),
    ("GET", ("api", "openapi.json"), _openapi),
    ("GET", ("api", "scheduler", "health"), _health),
    ("GET", ("api", "pipelines"), _pipelines),
    ("GET", ("api", "overview"), _overview),
    ("GET", ("api", "nodes"), _nodes),
    ("GET", ("api", "cron"), _cron_preview),
    ("GET", ("api", "schedules"), _list_schedules),
    ("POST", ("api", "schedules"), _create_schedule),
    # flowyml's own paths for these two, before the {name} routes they would otherwise match
    ("GET", ("api", "schedules", "health"), _health),
    ("GET", ("api", "schedules", "registered-pipelines"), _pipelines),
    ("GET", ("api", "schedules", "{}"), _get_schedule),
    ("DELETE", ("api", "schedules", "{}"), _delete_schedule),
    ("POST", ("api", "schedules", "{}", "enable"), _enable),
    ("POST", ("api", "schedules", "{}", "disable"), _disable),
    ("POST", ("api", "schedules", "{}", "run"), _run_now),
    ("GET", ("api", "schedules", "{}", "history"), _history),
    ("GET", ("api", "schedules", "{}", "upcoming"), _upcoming),
    ("GET", ("api", "schedules", "{}", "runs", "{}"), _run_detail),
]


def routes() -> List[Tuple[str, str]]:
    """(method, path template) of every endpoint, for the docs and the OpenAPI document."""
    return [(m, _template(pattern)) for m, pattern, _ in _ROUTES]


def _template(pattern: Tuple[str, ...]) -> str:
    names = iter(("{name}", "{run_key}"))  # the parameters in the order they appear
    return "/" + "/".join(next(names) if p == "{}" else p for p in pattern)
