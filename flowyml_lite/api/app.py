"""The HTTP API's routes: a request in, a JSON response out, no sockets (``server.py`` adds those).

Endpoints are flowyml's (the guide's list, with its request and response shapes) plus history,
run-now, pipelines, ``/metrics``, an OpenAPI document and the dashboard. Errors are JSON:
``{"error": {"code": ..., "message": ...}}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import (
    ApiError,
    ConfigurationError,
    CronError,
    FlowymlLiteError,
    ScheduleError,
    ScheduleNotFoundError,
    TimezoneError,
)

logger = logging.getLogger("flowyml_lite.api")

MAX_BODY_BYTES = 1 << 20
MAX_HISTORY = 1000
MAX_WAIT_SECONDS = 3600
JSON_TYPE = "application/json"
#: Fields a POST /api/schedules body may carry (flowyml's ScheduleRequest plus the scheduler's options).
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
        "misfire_grace_seconds",
        "catchup",
        "max_catchup",
        "max_instances",
        "context",
    }
)
_OPTION_FIELDS = ("misfire_grace_seconds", "catchup", "max_catchup", "max_instances", "context")


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
    """

    def __init__(
        self,
        scheduler: Any,
        *,
        token: Optional[str] = None,
        allowed_hosts: Optional[List[str]] = None,
        pipelines: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.scheduler = scheduler
        self.token = token or None
        self.allowed_hosts = {h.lower() for h in allowed_hosts} if allowed_hosts else None
        self.pipelines: Dict[str, Any] = dict(pipelines or {})

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
        except FlowymlLiteError as exc:
            logger.warning("%s %s failed: %s", request.method, request.target, exc)
            response = error_response(500, "scheduler_error", str(exc))
        except Exception as exc:  # a bug or a failing store: logged with its traceback, not shown
            logger.exception("%s %s failed", request.method, request.target)
            response = error_response(
                500, "internal", f"internal error ({type(exc).__name__}); see the server log"
            )
        return response

    def _dispatch(self, request: Request) -> Response:
        method = request.method.upper()
        parts = urlsplit(request.target)
        raw = [p for p in parts.path.split("/") if p]
        segments = [unquote(p) for p in raw]
        query = parse_qs(parts.query)
        self._check_origin(request)
        allowed: List[str] = []
        for route_method, pattern, handler in _ROUTES:
            params = _match(pattern, segments)
            if params is None:
                continue
            if route_method != method and not (route_method == "GET" and method == "HEAD"):
                allowed.append(route_method)
                continue
            if method not in ("GET", "HEAD"):
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
                401, "unauthorized", "this change needs the API token: send 'Authorization: Bearer <token>'"
            )

    # -- helpers -----------------------------------------------------------------------

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
    """A schedule as the API shows it: flowyml's keys plus ``name`` and the options."""
    out: Dict[str, Any] = {"name": schedule.pipeline_name}
    out.update(schedule.to_dict())
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
    else:
        raise ApiError(400, "invalid", f"schedule_type must be cron, daily, hourly or interval, got {kind!r}")
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
    wait = (query.get("wait") or ["false"])[-1].lower() in ("1", "true", "yes")
    timeout = _query_int(query, "timeout", 60, 1, MAX_WAIT_SECONDS)
    try:
        entry = app.scheduler.run_now(params[0], wait=wait, timeout=timeout)
    except FuturesTimeout:
        raise ApiError(
            504, "timeout", f"the run of {params[0]!r} did not finish within {timeout} s; it goes on"
        ) from None
    return json_response(200 if wait else 202, {"status": "success", "run": entry})


def _history(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    limit = _query_int(query, "limit", 50, 1, MAX_HISTORY)
    app.scheduler.get_schedule(params[0])  # 404 for a name that never existed
    return json_response(200, app.scheduler.get_history(params[0], limit))


def _health(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    return json_response(200, app.scheduler.health_check())


def _liveness(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    status = app.scheduler.status()  # no store reads: probes may call it every second
    return json_response(
        200 if status == "running" else 503, {"status": "ok" if status == "running" else status}
    )


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

    return json_response(200, openapi_document())


def _dashboard(app: ApiApp, request: Request, params: List[str], query: Dict[str, List[str]]) -> Response:
    from .dashboard import DASHBOARD_HTML

    response = Response(200, DASHBOARD_HTML.encode("utf-8"), "text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    )
    return response


_ROUTES: List[Tuple[str, Tuple[str, ...], Handler]] = [
    ("GET", (), _dashboard),
    ("GET", ("dashboard",), _dashboard),
    ("GET", ("metrics",), _metrics),
    ("GET", ("api", "health"), _liveness),
    ("GET", ("api", "openapi.json"), _openapi),
    ("GET", ("api", "scheduler", "health"), _health),
    ("GET", ("api", "pipelines"), _pipelines),
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
]


def routes() -> List[Tuple[str, str]]:
    """(method, path template) of every endpoint, for the docs and the OpenAPI document."""
    return [(m, "/" + "/".join("{name}" if p == "{}" else p for p in pattern)) for m, pattern, _ in _ROUTES]
