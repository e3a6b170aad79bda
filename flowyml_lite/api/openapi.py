"""``GET /api/openapi.json``: an OpenAPI 3.0.3 description of the endpoints in ``app.py``.

Built from the route table, so a route cannot go undocumented: one without an entry in ``_OPERATIONS``
is still listed (with a generic summary), and ``tests/api/test_server.py`` fails on it. 3.0.3, not 3.1:
``nullable: true`` instead of ``type: [.., "null"]``, and ``exclusiveMinimum`` is a boolean beside
``minimum``. Checked by openapi-spec-validator and fuzzed by schemathesis against a live server.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional, Tuple

from .. import __version__
from ..core.schedule import SCHEDULE_TYPES
from .app import CREATE_FIELDS, MAX_HISTORY, MAX_WAIT_SECONDS, routes

JSON = "application/json"
_RUN_STATUSES = ["running", "queued", "succeeded", "failed", "timed_out", "missed", "skipped", "lost"]


def _ref(name: str) -> Dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Dict[str, Any]) -> Dict[str, Any]:
    return {**schema, "nullable": True}


_INSTANT = {"type": "string", "format": "date-time"}
_SECONDS = {"type": "number", "minimum": 0}
_POSITIVE_SECONDS = {"type": "number", "minimum": 0, "exclusiveMinimum": True}

_SCHEMAS: Dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "example": "not_found"},
                    "message": {"type": "string"},
                },
            }
        },
    },
    "Schedule": {
        "type": "object",
        "required": ["name", "pipeline_name", "schedule_type", "schedule_value", "enabled", "timezone"],
        "properties": {
            "name": {"type": "string"},
            "pipeline_name": {"type": "string"},
            "schedule_type": {"type": "string", "example": "cron"},
            "schedule_value": {"type": "string", "example": "0 2 * * *"},
            "timezone": {"type": "string", "example": "Europe/Paris"},
            "enabled": {"type": "boolean"},
            "next_run": _nullable(_INSTANT),
            "last_run": _nullable(_INSTANT),
            "context": {"type": "object"},
            "misfire_grace_seconds": _nullable({"type": "number"}),
            "catchup": {"type": "string"},
            "max_catchup": {"type": "integer"},
            "max_instances": {"type": "integer"},
            "is_orphan": {"type": "boolean"},
        },
    },
    "Run": {
        "type": "object",
        "required": ["schedule_name", "fire_time", "status"],
        "properties": {
            "schedule_name": {"type": "string"},
            "fire_time": _INSTANT,
            "started_at": _nullable(_INSTANT),
            "completed_at": _nullable(_INSTANT),
            "status": {"type": "string", "enum": _RUN_STATUSES},
            "success": _nullable({"type": "boolean"}),
            "duration_seconds": _nullable({"type": "number"}),
            "error": _nullable({"type": "string"}),
            "run_id": _nullable({"type": "string"}),
            "node": _nullable({"type": "string"}),
            "reason": _nullable({"type": "string"}),
            "start_lag_seconds": _nullable({"type": "number"}),
        },
    },
    "RunReply": {
        "type": "object",
        "required": ["status", "run"],
        "properties": {
            "status": {"type": "string", "description": "accepted (202), or the run's outcome (200)"},
            "message": {"type": "string"},
            "run": _ref("Run"),
        },
    },
    "Changed": {
        "type": "object",
        "required": ["status", "schedule"],
        "properties": {"status": {"type": "string", "enum": ["success"]}, "schedule": _ref("Schedule")},
    },
    "Created": {
        "type": "object",
        "required": ["status", "schedule"],
        "properties": {
            "status": {"type": "string", "enum": ["success"]},
            "message": {"type": "string"},
            "schedule": _ref("Schedule"),
        },
    },
    "Removed": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["success"]}, "message": {"type": "string"}},
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "enum": ["running", "degraded", "stopped"]},
            "node_id": {"type": "string"},
            "num_schedules": {"type": "integer"},
            "enabled_schedules": {"type": "integer"},
            "metrics": {"type": "object"},
            "warnings": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["running", "degraded", "stopped"]}},
    },
    "Liveness": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok", "degraded", "stopped"]}},
    },
    "Pipelines": {
        "type": "object",
        "required": ["registered"],
        "properties": {
            "registered": {"type": "array", "items": {"type": "string"}},
            "templates": {"type": "array", "items": {}},
            "metadata": {"type": "array", "items": {}},
        },
    },
    "Overview": {
        "type": "object",
        "required": ["status", "schedules"],
        "properties": {
            "now": _INSTANT,
            "status": {"type": "string"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "schedules": {"type": "array", "items": _ref("Schedule")},
        },
    },
    "Node": {
        "type": "object",
        "required": ["node_id"],
        "properties": {
            "node_id": {"type": "string"},
            "hostname": _nullable({"type": "string"}),
            "pid": _nullable({"type": "integer"}),
            "heartbeat": _nullable(_INSTANT),
            "alive": {"type": "boolean"},
        },
    },
    "Fires": {
        "type": "object",
        "required": ["fires"],
        "properties": {
            "timezone": {"type": "string"},
            "description": {"type": "string"},
            "fires": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"fire": _INSTANT, "utc": _INSTANT, "zone": _nullable({"type": "string"})},
                },
            },
        },
    },
}

_CREATE_BODY: Dict[str, Any] = {
    "type": "object",
    "required": ["name", "schedule_type"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "example": "daily_etl"},
        "pipeline_name": {"type": "string", "description": "a registered pipeline; default: name"},
        "schedule_type": {"type": "string", "enum": list(SCHEDULE_TYPES)},
        "cron_expression": _nullable({"type": "string", "example": "0 9 * * 1-5"}),
        "hour": _nullable({"type": "integer", "minimum": 0, "maximum": 23}),
        "minute": _nullable({"type": "integer", "minimum": 0, "maximum": 59}),
        "interval_seconds": _nullable(
            {**_SECONDS, "description": "> 0 for an interval; other types: 0 or null (flowyml's default)"}
        ),
        "at": _nullable({"type": "string", "description": "once: an ISO 8601 instant with its offset"}),
        "timezone": _nullable({"type": "string", "example": "Europe/London"}),
        "project_name": {"description": "accepted for flowyml compatibility; ignored"},
        "misfire_grace_seconds": _SECONDS,
        "catchup": {"type": "string", "enum": ["latest", "skip", "all"]},
        "max_catchup": {"type": "integer", "minimum": 1},
        "max_instances": {"type": "integer", "minimum": 1},
        "context": _nullable({"type": "object"}),
        "timeout_seconds": _nullable(_POSITIVE_SECONDS),
        "retries": {"type": "integer", "minimum": 0},
        "retry_delay_seconds": _SECONDS,
        "retry_backoff": {"type": "number", "minimum": 1},
        "jitter_seconds": _SECONDS,
        "start_date": _nullable({"type": "string", "description": "ISO 8601 instant with its offset"}),
        "end_date": _nullable({"type": "string", "description": "ISO 8601 instant with its offset"}),
        "executor": {"type": "string", "example": "thread"},
    },
}

_ERRORS = {
    400: "Bad request: a malformed request, or an invalid field, expression, zone or query parameter",
    401: "The API token is missing or wrong (Authorization: Bearer <token>)",
    403: "Refused: a cross-origin request, or a Host name this server does not serve",
    404: "No such schedule, run or pipeline",
    408: "The request (headers and body) did not arrive within the server's request timeout",
    411: "A chunked body: send Content-Length",
    413: "The body is over 1 MiB",
    414: "The request line is too long",
    415: "The body is not application/json",
    431: "The request headers are too large",
    500: "The scheduler or its store failed (details in the server log only)",
    503: "The server has too many open connections",
    504: "run?wait=true waited longer than its timeout (the run goes on)",
}
_COMMON = (400, 403, 408, 414, 431, 500, 503)


def _json(description: str, schema: Dict[str, Any]) -> Dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _query(name: str, schema: Dict[str, Any], description: str, required: bool = False) -> Dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _count(default: int, hi: int) -> Dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": hi, "default": default}


# (method, path) -> (summary, {status: response}, extra errors, query parameters)
_Op = Tuple[str, Dict[str, Any], Tuple[int, ...], List[Dict[str, Any]]]
_HTML = {"description": "The dashboard page", "content": {"text/html": {"schema": {"type": "string"}}}}
_SCHEDULE_LIST = _json("The schedules", {"type": "array", "items": _ref("Schedule")})
_OPERATIONS: Dict[Tuple[str, str], _Op] = {
    ("GET", "/"): ("The dashboard (HTML)", {"200": _HTML}, (), []),
    ("GET", "/dashboard"): ("The dashboard (HTML)", {"200": _HTML}, (), []),
    ("GET", "/metrics"): (
        "Prometheus metrics (text format 0.0.4)",
        {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
        (),
        [],
    ),
    ("GET", "/api/live"): (
        "Liveness: 200 while the process answers, whatever its store does; its status in the body",
        {"200": _json("Answering", _ref("Status"))},
        (),
        [],
    ),
    ("GET", "/api/health"): (
        "Readiness: 200 while the scheduler runs and nothing is wrong, 503 otherwise",
        {
            "200": _json("Running", _ref("Liveness")),
            "503": _json(
                "Not running (or, an Error: too many open connections)",
                {"oneOf": [_ref("Liveness"), _ref("Error")]},
            ),
        },
        (),
        [],
    ),
    ("GET", "/api/openapi.json"): (
        "This document",
        {"200": _json("OpenAPI 3.0.3", {"type": "object"})},
        (),
        [],
    ),
    ("GET", "/api/scheduler/health"): (
        "Scheduler health and metrics (health_check())",
        {"200": _json("Health", _ref("Health"))},
        (),
        [],
    ),
    ("GET", "/api/schedules/health"): (
        "Scheduler health (flowyml's path)",
        {"200": _json("Health", _ref("Health"))},
        (),
        [],
    ),
    ("GET", "/api/pipelines"): (
        "Pipelines that POST /api/schedules can schedule",
        {"200": _json("Pipelines", _ref("Pipelines"))},
        (),
        [],
    ),
    ("GET", "/api/schedules/registered-pipelines"): (
        "Pipelines that can be scheduled (flowyml's path)",
        {"200": _json("Pipelines", _ref("Pipelines"))},
        (),
        [],
    ),
    ("GET", "/api/overview"): (
        "Every schedule with its state and recent runs (the dashboard's view)",
        {"200": _json("Overview", _ref("Overview"))},
        (),
        [_query("runs", _count(30, 100), "recent runs per schedule")],
    ),
    ("GET", "/api/nodes"): (
        "Scheduler processes sharing the store, alive or not",
        {"200": _json("Nodes", {"type": "array", "items": _ref("Node")})},
        (),
        [],
    ),
    ("GET", "/api/cron"): (
        "A cron expression in words, and its next fires",
        {"200": _json("Fires", _ref("Fires"))},
        (),
        [
            _query("expression", {"type": "string", "minLength": 1}, "e.g. 0 9 * * 1-5", required=True),
            _query("timezone", {"type": "string"}, "IANA zone; default: the scheduler's"),
            _query("n", _count(5, 100), "how many fires"),
            _query("name", {"type": "string"}, "a schedule name, for H (hashed) fields"),
        ],
    ),
    ("GET", "/api/schedules"): ("List all schedules (orphans included)", {"200": _SCHEDULE_LIST}, (), []),
    ("POST", "/api/schedules"): (
        "Create (or redefine) a schedule",
        {"201": _json("Scheduled", _ref("Created"))},
        (404, 411, 413, 415),
        [],
    ),
    ("GET", "/api/schedules/{name}"): (
        "One schedule",
        {"200": _json("The schedule", _ref("Schedule"))},
        (404,),
        [],
    ),
    ("DELETE", "/api/schedules/{name}"): (
        "Delete a schedule and its history",
        {"200": _json("Removed", _ref("Removed"))},
        (404, 411, 413),
        [],
    ),
    ("POST", "/api/schedules/{name}/enable"): (
        "Enable (resume) a schedule",
        {"200": _json("Enabled", _ref("Changed"))},
        (404, 411, 413),
        [],
    ),
    ("POST", "/api/schedules/{name}/disable"): (
        "Disable (pause) a schedule; it stays paused across restarts",
        {"200": _json("Disabled", _ref("Changed"))},
        (404, 411, 413),
        [],
    ),
    ("POST", "/api/schedules/{name}/run"): (
        "Run a schedule now, outside its timetable",
        {
            "200": _json("Finished (waited for), or skipped at once (max_instances)", _ref("RunReply")),
            "202": _json("Started; its outcome appears in the history", _ref("RunReply")),
        },
        (404, 411, 413, 504),
        [
            _query("wait", {"type": "boolean", "default": False}, "wait for the outcome"),
            _query("timeout", _count(60, MAX_WAIT_SECONDS), "seconds to wait"),
        ],
    ),
    ("GET", "/api/schedules/{name}/history"): (
        "Runs of a schedule, newest first",
        {"200": _json("Runs", {"type": "array", "items": _ref("Run")})},
        (404,),
        [_query("limit", _count(50, MAX_HISTORY), "how many runs")],
    ),
    ("GET", "/api/schedules/{name}/upcoming"): (
        "The next fires of a schedule",
        {"200": _json("Fires", _ref("Fires"))},
        (404,),
        [_query("n", _count(5, 100), "how many fires")],
    ),
    ("GET", "/api/schedules/{name}/runs/{run_key}"): (
        "One run with its traceback and output",
        {"200": _json("The run", _ref("Run"))},
        (404,),
        [],
    ),
}
_OPEN_READS = {("GET", "/"), ("GET", "/dashboard"), ("GET", "/api/health"), ("GET", "/api/live")}
_PATH_PARAMS = {"name": "the schedule's name (a / in it written %2F)", "run_key": "the run's key"}


def openapi_document(app: Optional[Any] = None) -> Dict[str, Any]:
    """The document for ``app`` (an ``ApiApp``: its token policy decides which operations are secured);
    without one, a server with a token that requires it for changes."""
    token = True if app is None else getattr(app, "token", None) is not None
    token_for_reads = bool(getattr(app, "token_for_reads", False))
    paths: Dict[str, Dict[str, Any]] = {}
    for method, path in routes():
        summary, responses, errors, query = _OPERATIONS.get(
            (method, path), (f"{method} {path}", {"200": {"description": "OK"}}, (404,), [])
        )
        secured = token and (method != "GET" or (token_for_reads and (method, path) not in _OPEN_READS))
        statuses = sorted({*_COMMON, *errors, *((401,) if secured else ())})
        operation: Dict[str, Any] = {
            "summary": summary,
            "operationId": _operation_id(method, path),
            "responses": {
                **responses,
                **{str(s): _json(_ERRORS[s], _ref("Error")) for s in statuses if str(s) not in responses},
            },
        }
        parameters = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}, "description": d}
            for p, d in _PATH_PARAMS.items()
            if "{" + p + "}" in path
        ]
        parameters.extend(query)
        if parameters:
            operation["parameters"] = parameters
        if secured:
            operation["security"] = [{"token": []}]
        if (method, path) == ("POST", "/api/schedules"):
            operation["requestBody"] = {
                "required": True,
                "content": {JSON: {"schema": _CREATE_BODY}},
            }
        paths.setdefault(path, {})[method.lower()] = operation
    _add_shadowed(paths)
    create = _CREATE_BODY
    # A field the route accepts but this table does not describe yet is still allowed (any value).
    create["properties"].update({f: {} for f in sorted(CREATE_FIELDS) if f not in create["properties"]})
    document: Dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "flowyml_lite scheduler API",
            "version": __version__,
            "description": 'Errors are JSON {"error": {"code", "message"}}. Changes need the token '
            "when the server has one (always off loopback); reads too with --token-for-reads.",
        },
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
    }
    return document


_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a JSON object",
}


def body_problem(body: Dict[str, Any]) -> Optional[str]:
    """What in a ``POST /api/schedules`` body contradicts the document (a type, range or choice),
    or None: the route checks its body against the same table the document shows, whatever the
    schedule type (a field of another type must still be null or valid)."""
    properties = _CREATE_BODY["properties"]
    for name, value in body.items():
        schema = properties.get(name)
        if schema and not _conforms(schema, value):
            shown = json.dumps(value, default=str)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            why = f" ({schema['description']})" if schema.get("description") else ""
            return f"{name!r} must be {_expected(schema)}{why}, got {shown}"
    return None


def _conforms(schema: Dict[str, Any], value: Any) -> bool:
    if value is None:
        return bool(schema.get("nullable")) or "type" not in schema
    kind = schema.get("type")
    if kind in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, int if kind == "integer" else (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is not None and (value < lo or (schema.get("exclusiveMinimum") and value == lo)):
            return False
        return hi is None or value <= hi
    if kind == "string":
        return (
            isinstance(value, str)
            and len(value) >= schema.get("minLength", 0)
            and ("enum" not in schema or value in schema["enum"])
        )
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    return True


def _expected(schema: Dict[str, Any]) -> str:
    if "enum" in schema:
        words = "one of " + ", ".join(str(v) for v in schema["enum"])
    elif schema.get("minLength"):
        words = "a non-empty string"
    else:
        words = _TYPE_WORDS.get(str(schema.get("type")), "a value")
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is not None and hi is not None:
            words += f" from {lo} to {hi}"
        elif lo is not None:
            words += f" > {lo}" if schema.get("exclusiveMinimum") else f" >= {lo}"
    return words + (" (or null)" if schema.get("nullable") else "")


def _add_shadowed(paths: Dict[str, Dict[str, Any]]) -> None:
    """``/api/schedules/health`` is also ``/api/schedules/{name}`` for the methods that path does not
    take itself (``DELETE /api/schedules/health`` removes a schedule named health): OpenAPI matches
    the concrete path first, so it lists those operations too, with the name fixed."""
    for path, operations in paths.items():
        if "{" in path:
            continue
        segments = path.split("/")
        for template, templated in paths.items():
            parts = template.split("/")
            if "{" not in template or len(parts) != len(segments):
                continue
            if not all(p == s or p.startswith("{") for p, s in zip(parts, segments)):
                continue
            for method, operation in templated.items():
                if method in operations:
                    continue
                fixed = dict(operation)
                fixed["operationId"] = _operation_id(method, path)
                kept = [p for p in operation.get("parameters", []) if p["in"] != "path"]
                fixed.pop("parameters", None)
                if kept:
                    fixed["parameters"] = kept
                operations[method] = fixed


def _operation_id(method: str, path: str) -> str:
    words = [w.strip("{}").replace("-", "_").replace(".", "_") for w in path.split("/") if w]
    return "_".join([method.lower(), *words]) if words else f"{method.lower()}_root"


def undocumented_routes() -> List[Tuple[str, str]]:
    """Routes with no entry here (the test suite keeps this empty)."""
    return [(m, p) for m, p in routes() if (m, p) not in _OPERATIONS]
