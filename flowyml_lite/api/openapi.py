"""``GET /api/openapi.json``: an OpenAPI 3.0 description of the endpoints in ``app.py``."""

from __future__ import annotations

from typing import Any, Dict

from .. import __version__
from .app import CREATE_FIELDS, MAX_HISTORY, routes

_SUMMARIES = {
    ("GET", "/"): "The dashboard (HTML)",
    ("GET", "/dashboard"): "The dashboard (HTML)",
    ("GET", "/metrics"): "Prometheus metrics (text format 0.0.4)",
    ("GET", "/api/health"): "Liveness: 200 while the scheduler runs, 503 otherwise",
    ("GET", "/api/openapi.json"): "This document",
    ("GET", "/api/scheduler/health"): "Scheduler health and metrics (health_check())",
    ("GET", "/api/pipelines"): "Pipelines that POST /api/schedules can schedule",
    ("GET", "/api/schedules"): "List all schedules (orphans included)",
    ("POST", "/api/schedules"): "Create (or redefine) a schedule",
    ("GET", "/api/schedules/health"): "Scheduler health (flowyml's path)",
    ("GET", "/api/schedules/registered-pipelines"): "Pipelines that can be scheduled (flowyml's path)",
    ("GET", "/api/schedules/{name}"): "One schedule",
    ("DELETE", "/api/schedules/{name}"): "Delete a schedule and its history",
    ("POST", "/api/schedules/{name}/enable"): "Enable (resume) a schedule",
    ("POST", "/api/schedules/{name}/disable"): "Disable (pause) a schedule; it stays paused across restarts",
    ("POST", "/api/schedules/{name}/run"): "Run a schedule now, outside its timetable",
    ("GET", "/api/schedules/{name}/history"): "Runs of a schedule, newest first",
}

_ERROR = {
    "description": "Error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    }
                },
            }
        }
    },
}

_CREATE_BODY = {
    "type": "object",
    "required": ["name", "schedule_type"],
    "additionalProperties": False,
    "properties": {
        **{name: {} for name in sorted(CREATE_FIELDS)},
        "name": {"type": "string"},
        "pipeline_name": {"type": "string", "description": "a registered pipeline; default: name"},
        "schedule_type": {"type": "string", "enum": ["cron", "daily", "hourly", "interval"]},
        "hour": {"type": "integer", "minimum": 0, "maximum": 23},
        "minute": {"type": "integer", "minimum": 0, "maximum": 59},
        "interval_seconds": {"type": "number", "exclusiveMinimum": 0},
        "cron_expression": {"type": "string", "example": "0 9 * * 1-5"},
        "timezone": {"type": "string", "example": "Europe/London"},
        "project_name": {"type": "string", "description": "accepted for flowyml compatibility; ignored"},
        "misfire_grace_seconds": {"type": "number", "minimum": 0},
        "catchup": {"type": "string", "enum": ["latest", "skip", "all"]},
        "max_catchup": {"type": "integer", "minimum": 1},
        "max_instances": {"type": "integer", "minimum": 1},
        "context": {"type": "object"},
    },
}


def openapi_document() -> Dict[str, Any]:
    """The document, built from the route table so it cannot drift from the routes."""
    paths: Dict[str, Dict[str, Any]] = {}
    for method, path in routes():
        operation: Dict[str, Any] = {
            "summary": _SUMMARIES.get((method, path), ""),
            "responses": {"200": {"description": "OK"}, "4XX": _ERROR, "5XX": _ERROR},
        }
        if "{name}" in path:
            operation["parameters"] = [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ]
        if path.endswith("/history"):
            operation["parameters"].append(
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY},
                }
            )
        if method != "GET":
            operation["security"] = [{"token": []}]
        if (method, path) == ("POST", "/api/schedules"):
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _CREATE_BODY}},
            }
            operation["responses"]["201"] = {"description": "Scheduled"}
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "flowyml_lite scheduler API", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "required for changes when the server has a token (always off loopback)",
                }
            }
        },
    }
