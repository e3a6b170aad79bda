"""The HTTP API's routes, called as pure functions: ``ApiApp.handle(Request) -> Response``.

Every test drives a real ``PipelineScheduler`` (an in-memory store, or a SQLite file in
``tmp_path`` where a restart matters) and checks both the response and the scheduler's state.
Request and response shapes follow flowyml's FastAPI router (``ScheduleRequest``, ``{"status":
"success", ...}``); errors are ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowyml_lite import Pipeline, PipelineScheduler, SchedulerConfig, step
from flowyml_lite.api import ApiApp, Request, Response, routes
from flowyml_lite.api.app import CREATE_FIELDS

HOST = "127.0.0.1:8080"
JSON = "application/json"
TOKEN = "s3cret-token"
#: The keys of each schedule in flowyml's GET /api/schedules.
FLOWYML_SCHEDULE_KEYS = {
    "pipeline_name",
    "schedule_type",
    "schedule_value",
    "enabled",
    "last_run",
    "next_run",
    "timezone",
}


def ok() -> None:
    return None


def boom() -> None:
    raise RuntimeError("boom: disk full")


def call(
    app: ApiApp,
    method: str,
    target: str,
    body: Any = None,
    *,
    content: Optional[bytes] = None,
    headers: Optional[Mapping[str, Optional[str]]] = None,
) -> Response:
    """One request as the server would pass it: Host set, a JSON body encoded with its type."""
    sent: Dict[str, Optional[str]] = {"Host": HOST}
    if body is not None:
        content = json.dumps(body).encode("utf-8")
    if content is not None:
        sent["Content-Type"] = JSON
    sent.update(headers or {})
    clean = {k: v for k, v in sent.items() if v is not None}
    return app.handle(Request(method, target, clean, content or b""))


def error_of(response: Response, status: int) -> Dict[str, str]:
    """The ``error`` object of a JSON error response with this status."""
    assert response.status == status, response.body
    assert response.content_type == JSON
    payload = response.json()
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"code", "message"}
    return payload["error"]  # type: ignore[no-any-return]


def flowyml_request(name: str, schedule_type: str, **fields: Any) -> Dict[str, Any]:
    """A body as flowyml's UI sends it: every ScheduleRequest field, with its defaults."""
    body: Dict[str, Any] = {
        "name": name,
        "pipeline_name": "etl",
        "schedule_type": schedule_type,
        "hour": 0,
        "minute": 0,
        "interval_seconds": 0,
        "cron_expression": None,
        "timezone": "UTC",
        "project_name": None,
    }
    body.update(fields)
    return body


def path_of(name: str) -> str:
    return "/api/schedules/" + quote(name, safe="")


@pytest.fixture
def scheduler() -> Iterator[PipelineScheduler]:
    """A stopped scheduler on the memory store with one schedule, ``nightly``."""
    sched = PipelineScheduler(SchedulerConfig(persist_schedules=False))
    sched.schedule_daily("nightly", ok, hour=3)
    yield sched
    sched.close()


@pytest.fixture
def app(scheduler: PipelineScheduler) -> ApiApp:
    return ApiApp(scheduler, pipelines={"etl": ok, "broken": boom})


@pytest.fixture
def running() -> Iterator[PipelineScheduler]:
    """A started scheduler (loop and heartbeat threads) on the memory store."""
    sched = PipelineScheduler(SchedulerConfig(persist_schedules=False))
    sched.start()
    yield sched
    sched.close()


def sqlite_scheduler(path: Path) -> PipelineScheduler:
    return PipelineScheduler(SchedulerConfig(db_path=str(path)))


def scheduler_with_orphan(tmp_path: Path, minute: int = 0) -> PipelineScheduler:
    """A scheduler on a SQLite file where another process declared ``ghost`` (hourly at ``minute``)."""
    db = tmp_path / "schedules.db"
    elsewhere = sqlite_scheduler(db)
    elsewhere.schedule_hourly("ghost", ok, minute=minute)
    elsewhere.close()
    return sqlite_scheduler(db)


class TestListSchedules:
    def test_lists_each_schedule_with_flowymls_keys(self, app: ApiApp) -> None:
        response = call(app, "GET", "/api/schedules")
        assert response.status == 200
        (item,) = response.json()
        assert set(item) >= FLOWYML_SCHEDULE_KEYS
        assert item["name"] == item["pipeline_name"] == "nightly"
        assert (item["schedule_type"], item["schedule_value"], item["timezone"]) == ("daily", "03:00", "UTC")
        assert item["enabled"] is True and item["last_run"] is None
        assert datetime.fromisoformat(item["next_run"]).hour == 3

    def test_includes_stored_schedules_that_have_no_function_in_this_process(self, tmp_path: Path) -> None:
        here = scheduler_with_orphan(tmp_path, minute=7)
        try:
            here.schedule_daily("live", ok, hour=1)
            items = {s["name"]: s for s in call(ApiApp(here), "GET", "/api/schedules").json()}
        finally:
            here.close()
        assert set(items) == {"ghost", "live"}
        assert items["ghost"]["is_orphan"] is True and items["live"]["is_orphan"] is False
        assert set(items["ghost"]) >= FLOWYML_SCHEDULE_KEYS
        assert items["ghost"]["schedule_value"] == "7"

    def test_flowyml_style_paths_with_a_trailing_slash_reach_the_same_route(self, app: ApiApp) -> None:
        assert call(app, "GET", "/api/schedules/").json() == call(app, "GET", "/api/schedules").json()
        assert call(app, "GET", "/api/schedules/nightly/").json()["name"] == "nightly"

    def test_an_empty_scheduler_lists_nothing(self) -> None:
        sched = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        try:
            response = call(ApiApp(sched), "GET", "/api/schedules")
        finally:
            sched.close()
        assert (response.status, response.json()) == (200, [])


class TestGetSchedule:
    def test_returns_the_schedule_by_name(self, app: ApiApp) -> None:
        response = call(app, "GET", "/api/schedules/nightly")
        assert response.status == 200
        assert response.json()["name"] == "nightly"
        assert set(response.json()) >= FLOWYML_SCHEDULE_KEYS

    def test_an_unknown_name_is_a_404_that_names_it(self, app: ApiApp) -> None:
        error = error_of(call(app, "GET", "/api/schedules/weekly"), 404)
        assert error["code"] == "not_found"
        assert "weekly" in error["message"]


class TestCreateSchedule:
    @pytest.mark.parametrize(
        ("schedule_type", "fields", "value"),
        [
            ("cron", {"cron_expression": "0 9 * * 1-5", "timezone": "Europe/London"}, "0 9 * * 1-5"),
            ("daily", {"hour": 6, "minute": 30}, "06:30"),
            ("hourly", {"minute": 15}, "15"),
            ("interval", {"interval_seconds": 90}, "90"),
        ],
    )
    def test_a_flowyml_schedule_request_creates_the_schedule(
        self,
        app: ApiApp,
        scheduler: PipelineScheduler,
        schedule_type: str,
        fields: Dict[str, Any],
        value: str,
    ) -> None:
        response = call(app, "POST", "/api/schedules", flowyml_request("report", schedule_type, **fields))
        assert response.status == 201
        payload = response.json()
        assert payload["status"] == "success"
        assert payload["message"] == "Scheduled 'report'"
        assert payload["schedule"]["schedule_type"] == schedule_type
        assert payload["schedule"]["schedule_value"] == value
        stored = scheduler.get_schedule("report")
        assert (stored.schedule_type, stored.schedule_value) == (schedule_type, value)
        assert stored.enabled and stored.next_run is not None
        assert stored.timezone == fields.get("timezone", "UTC")

    def test_a_cron_schedules_next_run_is_its_wall_time_in_its_zone(self, app: ApiApp) -> None:
        body = flowyml_request("report", "cron", cron_expression="0 9 * * 1-5", timezone="Europe/London")
        next_run = datetime.fromisoformat(
            call(app, "POST", "/api/schedules", body).json()["schedule"]["next_run"]
        )
        assert (next_run.hour, next_run.minute) == (9, 0)
        assert next_run.weekday() < 5
        assert next_run.utcoffset() is not None
        assert next_run.utcoffset().total_seconds() in (0, 3600)  # type: ignore[union-attr]

    def test_project_name_is_accepted_and_ignored(self, app: ApiApp, scheduler: PipelineScheduler) -> None:
        body = flowyml_request("report", "hourly", minute=5, project_name="marketing")
        assert call(app, "POST", "/api/schedules", body).status == 201
        assert scheduler.get_schedule("report").context == {"pipeline": "etl"}

    def test_the_minimal_body_uses_the_name_as_the_pipeline_and_zero_defaults(
        self, app: ApiApp, scheduler: PipelineScheduler
    ) -> None:
        response = call(app, "POST", "/api/schedules", {"name": "etl", "schedule_type": "daily"})
        assert response.status == 201
        assert scheduler.get_schedule("etl").schedule_value == "00:00"

    def test_null_hour_and_minute_mean_zero_as_in_flowyml(
        self, app: ApiApp, scheduler: PipelineScheduler
    ) -> None:
        body = flowyml_request("report", "daily", hour=None, minute=None)
        assert call(app, "POST", "/api/schedules", body).status == 201
        assert scheduler.get_schedule("report").schedule_value == "00:00"

    def test_options_and_context_are_passed_to_the_scheduler(
        self, app: ApiApp, scheduler: PipelineScheduler
    ) -> None:
        body = flowyml_request(
            "report", "hourly", catchup="skip", max_instances=2, misfire_grace_seconds=5, context={"k": [1]}
        )
        assert call(app, "POST", "/api/schedules", body).status == 201
        stored = scheduler.get_schedule("report")
        assert (stored.catchup, stored.max_instances, stored.misfire_grace_seconds) == ("skip", 2, 5)
        assert stored.context == {"k": [1], "pipeline": "etl"}

    def test_a_scheduled_function_can_be_reused_under_another_name(
        self, app: ApiApp, scheduler: PipelineScheduler
    ) -> None:
        body = flowyml_request("nightly-copy", "hourly", pipeline_name="nightly")
        assert call(app, "POST", "/api/schedules", body).status == 201
        assert scheduler.get_schedule("nightly-copy").pipeline_func is ok

    def test_a_registered_pipeline_object_runs_through_its_run_method(
        self, scheduler: PipelineScheduler
    ) -> None:
        @step(outputs="rows")
        def extract() -> List[int]:
            return [1, 2, 3]

        app = ApiApp(scheduler, pipelines={"ingest": Pipeline("ingest", [extract])})
        assert (
            call(
                app, "POST", "/api/schedules", flowyml_request("ingest", "hourly", pipeline_name="ingest")
            ).status
            == 201
        )
        run = call(app, "POST", "/api/schedules/ingest/run?wait=true").json()["run"]
        assert run["status"] == "succeeded"
        assert run["run_id"]  # the PipelineResult's run id, linked from history

    def test_the_created_schedule_fires_on_a_running_scheduler(self, running: PipelineScheduler) -> None:
        fired = threading.Event()
        app = ApiApp(running, pipelines={"ping": fired.set})
        body = flowyml_request("ping", "interval", pipeline_name="ping", interval_seconds=0.2)
        assert call(app, "POST", "/api/schedules", body).status == 201
        assert fired.wait(10), "the schedule created through the API never fired"
        assert running.wait_for_runs(10)
        history = call(app, "GET", "/api/schedules/ping/history").json()
        assert history and history[-1]["status"] == "succeeded"


class TestRedefinition:
    def test_posting_an_existing_name_replaces_its_definition(
        self, app: ApiApp, scheduler: PipelineScheduler
    ) -> None:
        call(app, "POST", "/api/schedules", flowyml_request("report", "daily", hour=6))
        response = call(
            app, "POST", "/api/schedules", flowyml_request("report", "cron", cron_expression="*/5 * * * *")
        )
        assert response.status == 201
        names = [s["name"] for s in call(app, "GET", "/api/schedules").json()]
        assert names.count("report") == 1
        stored = scheduler.get_schedule("report")
        assert (stored.schedule_type, stored.schedule_value) == ("cron", "*/5 * * * *")

    def test_a_paused_schedule_stays_paused_when_redefined(
        self, app: ApiApp, scheduler: PipelineScheduler
    ) -> None:
        call(app, "POST", "/api/schedules", flowyml_request("report", "daily", hour=6))
        call(app, "POST", "/api/schedules/report/disable")
        response = call(app, "POST", "/api/schedules", flowyml_request("report", "daily", hour=7))
        assert response.status == 201
        assert response.json()["schedule"]["enabled"] is False
        assert scheduler.get_schedule("report").schedule_value == "07:00"
        assert scheduler.get_schedule("report").enabled is False


class TestCreateValidation:
    def test_a_bad_cron_expression_names_the_field(self, app: ApiApp, scheduler: PipelineScheduler) -> None:
        body = flowyml_request("report", "cron", cron_expression="0 9 * * MON-FRX")
        error = error_of(call(app, "POST", "/api/schedules", body), 400)
        assert "day-of-week" in error["message"]
        assert "FRX" in error["message"]
        assert "report" not in {s.name for s in scheduler.list_schedules(include_orphans=True)}

    def test_an_unknown_zone_suggests_close_names(self, app: ApiApp) -> None:
        body = flowyml_request("report", "daily", timezone="Europe/Londn")
        error = error_of(call(app, "POST", "/api/schedules", body), 400)
        assert "Europe/Londn" in error["message"]
        assert "Europe/London" in error["message"]

    def test_a_cron_schedule_without_an_expression_is_refused(self, app: ApiApp) -> None:
        error = error_of(call(app, "POST", "/api/schedules", flowyml_request("report", "cron")), 400)
        assert "cron_expression" in error["message"]

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"schedule_type": "daily", "hour": True}, "hour"),
            ({"schedule_type": "hourly", "minute": False}, "minute"),
            ({"schedule_type": "daily", "hour": "6"}, "hour"),
            ({"schedule_type": "interval", "interval_seconds": True}, "interval_seconds"),
            ({"schedule_type": "interval", "interval_seconds": "60"}, "interval_seconds"),
        ],
    )
    def test_a_wrongly_typed_number_is_refused_naming_the_field(
        self, app: ApiApp, scheduler: PipelineScheduler, fields: Dict[str, Any], field: str
    ) -> None:
        body = {"name": "report", "pipeline_name": "etl", **fields}
        error = error_of(call(app, "POST", "/api/schedules", body), 400)
        assert field in error["message"]
        assert "report" not in {s.name for s in scheduler.list_schedules()}

    @pytest.mark.parametrize(
        "fields",
        [
            {"schedule_type": "daily", "hour": 24},
            {"schedule_type": "hourly", "minute": 60},
            {"schedule_type": "interval", "interval_seconds": -5},
        ],
    )
    def test_an_out_of_range_number_is_refused(self, app: ApiApp, fields: Dict[str, Any]) -> None:
        error_of(
            call(app, "POST", "/api/schedules", {"name": "report", "pipeline_name": "etl", **fields}), 400
        )

    def test_unknown_fields_are_listed(self, app: ApiApp) -> None:
        body = flowyml_request("report", "hourly", colour="red", owner="ops")
        error = error_of(call(app, "POST", "/api/schedules", body), 400)
        assert "colour" in error["message"] and "owner" in error["message"]

    def test_an_unknown_schedule_type_is_refused(self, app: ApiApp) -> None:
        error = error_of(call(app, "POST", "/api/schedules", flowyml_request("report", "weekly")), 400)
        assert "weekly" in error["message"]

    @pytest.mark.parametrize("name", [None, "", 42])
    def test_a_name_is_required(self, app: ApiApp, name: Any) -> None:
        body = {"name": name, "pipeline_name": "etl", "schedule_type": "hourly"}
        if name is None:
            del body["name"]
        error = error_of(call(app, "POST", "/api/schedules", body), 400)
        assert "name" in error["message"]

    def test_an_unprintable_name_is_refused(self, app: ApiApp) -> None:
        error_of(call(app, "POST", "/api/schedules", flowyml_request("a\nb", "hourly")), 400)

    def test_an_unknown_pipeline_is_a_404_listing_the_known_ones(self, app: ApiApp) -> None:
        body = flowyml_request("report", "hourly", pipeline_name="nope")
        error = error_of(call(app, "POST", "/api/schedules", body), 404)
        assert error["code"] == "pipeline_not_found"
        assert "nope" in error["message"]
        for known in ("broken", "etl", "nightly"):
            assert known in error["message"]

    def test_deeply_nested_json_is_a_400_not_a_server_error(self, app: ApiApp) -> None:
        content = b'{"context": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        error_of(call(app, "POST", "/api/schedules", content=content), 400)

    @pytest.mark.parametrize("number", [b"1e999", b"NaN", b"-Infinity"])
    def test_a_context_number_json_cannot_store_is_a_400_naming_it(self, app: ApiApp, number: bytes) -> None:
        content = b'{"schedule_type": "hourly", "name": "report", "pipeline_name": "etl", "context": {"a": '
        error = error_of(call(app, "POST", "/api/schedules", content=content + number + b"}}"), 400)
        assert "context" in error["message"] and "NaN and infinity" in error["message"]

    def test_an_interval_too_long_to_compute_is_a_400_not_a_server_error(self, app: ApiApp) -> None:
        body = flowyml_request("report", "interval", interval_seconds=1e12)
        error_of(call(app, "POST", "/api/schedules", body), 400)


class TestRequestBody:
    @pytest.mark.parametrize("content", [b"{bad", b"\xff\xfe{}", b'{"name": "x",}'])
    def test_invalid_json_is_a_400(self, app: ApiApp, content: bytes) -> None:
        error = error_of(call(app, "POST", "/api/schedules", content=content), 400)
        assert error["code"] == "invalid_json"

    @pytest.mark.parametrize("content", [b"[]", b'"report"', b"42", b"null", b""])
    def test_a_body_that_is_not_a_json_object_is_a_400(self, app: ApiApp, content: bytes) -> None:
        error = error_of(call(app, "POST", "/api/schedules", content=content), 400)
        assert "object" in error["message"]

    @pytest.mark.parametrize(
        "kind", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
    )
    def test_another_content_type_is_a_415(
        self, app: ApiApp, scheduler: PipelineScheduler, kind: str
    ) -> None:
        body = json.dumps(flowyml_request("report", "hourly")).encode()
        error = error_of(
            call(app, "POST", "/api/schedules", content=body, headers={"Content-Type": kind}), 415
        )
        assert kind in error["message"]
        assert "report" not in {s.name for s in scheduler.list_schedules()}

    def test_json_with_a_charset_parameter_is_accepted(self, app: ApiApp) -> None:
        body = json.dumps(flowyml_request("report", "hourly")).encode()
        response = call(
            app,
            "POST",
            "/api/schedules",
            content=body,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        assert response.status == 201

    def test_a_body_over_one_mebibyte_is_a_413(self, app: ApiApp) -> None:
        content = b'{"name": "' + b"x" * (1 << 20) + b'"}'
        error = error_of(call(app, "POST", "/api/schedules", content=content), 413)
        assert error["code"] == "too_large"


class TestDeleteSchedule:
    def test_removes_the_schedule_and_its_history(self, app: ApiApp, scheduler: PipelineScheduler) -> None:
        call(app, "POST", "/api/schedules/nightly/run?wait=true")
        response = call(app, "DELETE", "/api/schedules/nightly")
        assert response.status == 200
        assert response.json() == {"status": "success", "message": "Schedule nightly removed"}
        assert scheduler.store.get_schedule("nightly") is None
        assert scheduler.store.history("nightly", 10) == []
        error_of(call(app, "GET", "/api/schedules/nightly"), 404)

    def test_deleting_an_unknown_schedule_is_a_404(self, app: ApiApp) -> None:
        error_of(call(app, "DELETE", "/api/schedules/weekly"), 404)

    def test_an_orphan_can_be_deleted(self, tmp_path: Path) -> None:
        here = scheduler_with_orphan(tmp_path)
        try:
            assert call(ApiApp(here), "DELETE", "/api/schedules/ghost").status == 200
            assert here.store.get_schedule("ghost") is None
        finally:
            here.close()


class TestEnableDisable:
    def test_disable_pauses_and_enable_resumes(self, app: ApiApp, scheduler: PipelineScheduler) -> None:
        response = call(app, "POST", "/api/schedules/nightly/disable")
        assert response.status == 200
        assert response.json()["status"] == "success"
        assert response.json()["schedule"]["enabled"] is False
        assert response.json()["schedule"]["next_run"] is None
        assert scheduler.get_schedule("nightly").enabled is False
        response = call(app, "POST", "/api/schedules/nightly/enable")
        assert response.status == 200
        assert response.json()["schedule"]["enabled"] is True
        assert datetime.fromisoformat(response.json()["schedule"]["next_run"]).hour == 3

    @pytest.mark.parametrize("action", ["enable", "disable"])
    def test_an_unknown_schedule_is_a_404(self, app: ApiApp, action: str) -> None:
        error_of(call(app, "POST", f"/api/schedules/weekly/{action}"), 404)

    def test_a_pause_survives_a_new_scheduler_on_the_same_file(self, tmp_path: Path) -> None:
        db = tmp_path / "schedules.db"
        first = sqlite_scheduler(db)
        first.schedule_daily("nightly", ok, hour=3)
        assert call(ApiApp(first), "POST", "/api/schedules/nightly/disable").status == 200
        first.close()

        second = sqlite_scheduler(db)
        second.schedule_daily("nightly", ok, hour=3)  # the process declares it again on start
        item = call(ApiApp(second), "GET", "/api/schedules/nightly").json()
        assert (item["enabled"], item["next_run"]) == (False, None)
        assert call(ApiApp(second), "POST", "/api/schedules/nightly/enable").status == 200
        second.close()

        third = sqlite_scheduler(db)
        third.schedule_daily("nightly", ok, hour=3)
        try:
            assert third.get_schedule("nightly").enabled is True
        finally:
            third.close()


class TestRunNow:
    def test_without_wait_the_run_is_accepted_with_202(self, scheduler: PipelineScheduler) -> None:
        release = threading.Event()
        scheduler.schedule_hourly("nightly", lambda: release.wait(10) and None)
        try:
            response = call(ApiApp(scheduler), "POST", "/api/schedules/nightly/run")
        finally:
            release.set()
        assert response.status == 202
        payload = response.json()
        assert payload["status"] == "accepted"
        assert payload["run"]["schedule_name"] == "nightly"
        assert payload["run"]["status"] == "running"
        assert payload["run"]["success"] is None  # not "false": it has not failed
        assert scheduler.wait_for_runs(10)
        assert [e["status"] for e in scheduler.get_history("nightly")] == ["succeeded"]

    def test_with_wait_the_finished_run_is_returned_with_200(self, app: ApiApp) -> None:
        response = call(app, "POST", "/api/schedules/nightly/run?wait=true")
        assert response.status == 200
        payload = response.json()
        run = payload["run"]
        assert (run["status"], run["success"], run["error"]) == ("succeeded", True, None)
        assert run["completed_at"] is not None
        assert (payload["status"], payload["message"]) == ("succeeded", "run of 'nightly' succeeded")

    def test_a_failing_job_gives_status_failed_with_its_error(
        self, app: ApiApp, scheduler: PipelineScheduler
    ) -> None:
        call(app, "POST", "/api/schedules", flowyml_request("broken", "hourly", pipeline_name="broken"))
        response = call(app, "POST", "/api/schedules/broken/run?wait=true")
        assert response.status == 200
        payload = response.json()
        run = payload["run"]
        assert (run["status"], run["success"]) == ("failed", False)
        assert "boom: disk full" in run["error"]
        assert payload["status"] == "failed"  # the reply says what the run says, never "success"
        assert payload["message"].startswith("run of 'broken' failed: RuntimeError: boom")

    def test_a_run_skipped_because_the_last_one_is_still_running_says_so(
        self, scheduler: PipelineScheduler
    ) -> None:
        release = threading.Event()
        scheduler.schedule_hourly("slow", lambda: release.wait(10))
        app = ApiApp(scheduler)
        try:
            assert call(app, "POST", "/api/schedules/slow/run").status == 202
            response = call(app, "POST", "/api/schedules/slow/run?wait=true")
        finally:
            release.set()
        assert response.status == 200
        payload = response.json()
        assert payload["status"] == "skipped"
        assert "skipped" in payload["message"] and "max_instances" in payload["message"]
        assert payload["run"]["started_at"] is None and payload["run"]["start_lag_seconds"] is None
        assert scheduler.wait_for_runs(10)

    def test_a_run_that_outlasts_the_timeout_is_a_504_and_goes_on(self, scheduler: PipelineScheduler) -> None:
        release = threading.Event()
        scheduler.schedule_hourly("slow", lambda: release.wait(10))
        try:
            error = error_of(
                call(ApiApp(scheduler), "POST", "/api/schedules/slow/run?wait=true&timeout=1"), 504
            )
            assert error["code"] == "timeout"
        finally:
            release.set()
        assert scheduler.wait_for_runs(10)
        assert [e["status"] for e in scheduler.get_history("slow")] == ["succeeded"]

    def test_a_waited_run_reports_its_own_outcome_when_another_run_starts_meanwhile(
        self, scheduler: PipelineScheduler
    ) -> None:
        started, release = threading.Event(), threading.Event()

        def slow() -> None:
            started.set()
            release.wait(10)

        scheduler.schedule_hourly("slow", slow)
        app = ApiApp(scheduler)
        waited: Dict[str, Response] = {}
        caller = threading.Thread(
            target=lambda: waited.setdefault("r", call(app, "POST", "/api/schedules/slow/run?wait=true"))
        )
        caller.start()
        try:
            assert started.wait(10)
            second = call(app, "POST", "/api/schedules/slow/run").json()["run"]
            assert second["status"] == "skipped"  # max_instances=1: the first run is still going
        finally:
            release.set()
            caller.join(10)
        run = waited["r"].json()["run"]
        assert run["fire_time"] != second["fire_time"]
        assert run["status"] == "succeeded"

    @pytest.mark.parametrize("timeout", ["0", "3601", "soon"])
    def test_a_timeout_outside_one_to_3600_seconds_is_a_400(self, app: ApiApp, timeout: str) -> None:
        error = error_of(call(app, "POST", f"/api/schedules/nightly/run?wait=true&timeout={timeout}"), 400)
        assert "timeout" in error["message"]

    def test_an_unknown_schedule_is_a_404(self, app: ApiApp) -> None:
        error_of(call(app, "POST", "/api/schedules/weekly/run"), 404)

    def test_a_paused_schedule_is_not_run(self, app: ApiApp, scheduler: PipelineScheduler) -> None:
        call(app, "POST", "/api/schedules/nightly/disable")
        error = error_of(call(app, "POST", "/api/schedules/nightly/run?wait=true"), 400)
        assert "disabled" in error["message"]
        assert scheduler.get_history("nightly") == []

    def test_an_orphan_cannot_be_run_here(self, tmp_path: Path) -> None:
        here = scheduler_with_orphan(tmp_path)
        try:
            error = error_of(call(ApiApp(here), "POST", "/api/schedules/ghost/run?wait=true"), 400)
            assert "orphan" in error["message"]
            assert here.get_history("ghost") == []
        finally:
            here.close()


class TestHistory:
    def test_lists_runs_newest_first(self, app: ApiApp) -> None:
        for _ in range(3):
            call(app, "POST", "/api/schedules/nightly/run?wait=true")
        entries = call(app, "GET", "/api/schedules/nightly/history").json()
        assert len(entries) == 3
        fires = [datetime.fromisoformat(e["fire_time"]) for e in entries]
        assert fires == sorted(fires, reverse=True)
        assert {"started_at", "completed_at", "success", "duration_seconds", "error", "run_id"} <= set(
            entries[0]
        )

    def test_limit_caps_the_number_of_entries(self, app: ApiApp) -> None:
        for _ in range(3):
            call(app, "POST", "/api/schedules/nightly/run?wait=true")
        newest = call(app, "GET", "/api/schedules/nightly/history").json()[0]
        assert call(app, "GET", "/api/schedules/nightly/history?limit=1").json() == [newest]

    @pytest.mark.parametrize("limit", ["1", "10000"])
    def test_limits_from_1_to_the_runs_a_schedule_keeps_are_accepted(self, app: ApiApp, limit: str) -> None:
        assert call(app, "GET", f"/api/schedules/nightly/history?limit={limit}").status == 200

    @pytest.mark.parametrize("limit", ["0", "10001", "-1", "ten", "1.5"])
    def test_a_limit_outside_1_to_10000_is_a_400(self, app: ApiApp, limit: str) -> None:
        error = error_of(call(app, "GET", f"/api/schedules/nightly/history?limit={limit}"), 400)
        assert "limit" in error["message"]

    def test_an_unknown_schedule_is_a_404(self, app: ApiApp) -> None:
        error_of(call(app, "GET", "/api/schedules/weekly/history"), 404)


class TestHealth:
    @pytest.mark.parametrize("path", ["/api/scheduler/health", "/api/schedules/health"])
    def test_reports_the_schedulers_health_check(self, app: ApiApp, path: str) -> None:
        response = call(app, "GET", path)
        assert response.status == 200
        health = response.json()
        assert health["status"] == "stopped"
        assert health["num_schedules"] == 1
        assert {"total_runs", "successful_runs", "failed_runs", "success_rate"} <= set(health["metrics"])
        assert [r["name"] for r in health["next_runs"]] == ["nightly"]

    def test_liveness_is_503_while_the_scheduler_is_stopped(self, app: ApiApp) -> None:
        response = call(app, "GET", "/api/health")
        assert (response.status, response.json()) == (503, {"status": "stopped"})

    def test_liveness_is_200_while_the_scheduler_runs(self, running: PipelineScheduler) -> None:
        response = call(ApiApp(running), "GET", "/api/health")
        assert (response.status, response.json()) == (200, {"status": "ok"})

    @pytest.mark.parametrize("source", ["silent:peer-2", "hooks", "blocked:etl", "executor:thread", "lock"])
    def test_readiness_stays_200_while_the_trouble_is_a_peer_a_job_a_hook_or_the_lock_server(
        self, running: PipelineScheduler, source: str
    ) -> None:
        """This worker still fires and reaches its store: taking it out of a load balancer (or
        restarting it on an unhealthy container) would not help; health still says degraded."""
        running._troubles.report(source, "something is wrong elsewhere")
        response = call(ApiApp(running), "GET", "/api/health")
        assert (response.status, response.json()) == (200, {"status": "degraded", "problems": [source]})
        running._troubles.report("outcomes", "writing 3 outcome(s): StoreError: disk full")
        response = call(ApiApp(running), "GET", "/api/health")
        assert response.status == 503 and response.json()["problems"] == [source, "outcomes"]

    def test_live_answers_200_even_while_the_store_fails(self, running: PipelineScheduler) -> None:
        running._troubles.report("claims", "claiming 1 fire(s): StoreError: connection refused")
        assert call(ApiApp(running), "GET", "/api/health").status == 503  # readiness: not now
        response = call(ApiApp(running), "GET", "/api/live")
        assert (response.status, response.json()) == (200, {"status": "degraded"})  # alive: leave it be


class TestPipelines:
    @pytest.mark.parametrize("path", ["/api/pipelines", "/api/schedules/registered-pipelines"])
    def test_lists_the_given_pipelines_and_the_scheduled_functions(self, app: ApiApp, path: str) -> None:
        response = call(app, "GET", path)
        assert response.status == 200
        assert response.json() == {
            "registered": ["broken", "etl", "nightly"],
            "templates": [],
            "metadata": [],
        }

    def test_a_module_path_given_as_pipeline_name_is_never_imported(self, app: ApiApp) -> None:
        import sys

        body = flowyml_request("report", "hourly", pipeline_name="os_probe_never_imported:system")
        error = error_of(call(app, "POST", "/api/schedules", body), 404)
        assert error["code"] == "pipeline_not_found"
        assert "os_probe_never_imported" not in sys.modules


class TestOpenApi:
    def test_documents_every_route(self, app: ApiApp) -> None:
        response = call(app, "GET", "/api/openapi.json")
        assert response.status == 200
        document = response.json()
        assert document["openapi"].startswith("3.")
        for method, path in routes():
            assert method.lower() in document["paths"][path], f"{method} {path} is not documented"

    def test_the_routes_include_the_guides_and_flowymls_endpoints(self) -> None:
        expected = {
            ("GET", "/api/schedules"),
            ("POST", "/api/schedules"),
            ("GET", "/api/scheduler/health"),
            ("POST", "/api/schedules/{name}/enable"),
            ("POST", "/api/schedules/{name}/disable"),
            ("DELETE", "/api/schedules/{name}"),
            ("GET", "/api/schedules/{name}/history"),
            ("GET", "/api/schedules/health"),
            ("GET", "/api/schedules/registered-pipelines"),
            ("POST", "/api/schedules/{name}/run"),
            ("GET", "/metrics"),
        }
        assert expected <= set(routes())

    def test_the_create_body_lists_flowymls_fields(self, app: ApiApp) -> None:
        document = call(app, "GET", "/api/openapi.json").json()
        schema = document["paths"]["/api/schedules"]["post"]["requestBody"]["content"][JSON]["schema"]
        assert set(flowyml_request("x", "daily")) <= set(schema["properties"])


class TestDashboard:
    @pytest.mark.parametrize("path", ["/", "/dashboard"])
    def test_serves_html_with_a_content_security_policy(self, app: ApiApp, path: str) -> None:
        response = call(app, "GET", path)
        assert response.status == 200
        assert response.content_type.startswith("text/html")
        assert b"<html" in response.body
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy

    def test_writes_schedule_data_as_text_never_as_html(self, app: ApiApp) -> None:
        body = call(app, "GET", "/").body.decode("utf-8")
        assert "textContent" in body
        assert "innerHTML" not in body and "outerHTML" not in body and "document.write" not in body


class TestRoutingErrors:
    @pytest.mark.parametrize("path", ["/api/nothing", "/api/schedules/nightly/explode", "/favicon.ico"])
    def test_an_unknown_endpoint_is_a_json_404(self, app: ApiApp, path: str) -> None:
        error = error_of(call(app, "GET", path), 404)
        assert error["code"] == "not_found"

    @pytest.mark.parametrize(
        ("method", "path", "allow"),
        [
            ("PUT", "/api/schedules", "GET, POST"),
            ("POST", "/api/schedules/nightly", "DELETE, GET"),
            ("GET", "/api/schedules/nightly/run", "POST"),
            ("DELETE", "/metrics", "GET"),
        ],
    )
    def test_a_wrong_method_is_a_405_with_an_allow_header(
        self, app: ApiApp, scheduler: PipelineScheduler, method: str, path: str, allow: str
    ) -> None:
        response = call(app, method, path)
        error = error_of(response, 405)
        assert error["code"] == "method_not_allowed"
        assert response.headers["Allow"] == allow
        assert scheduler.get_schedule("nightly").enabled  # nothing was changed


class TestEncodedNames:
    NAME = "team/etl 50%"

    @pytest.fixture
    def app(self, scheduler: PipelineScheduler) -> ApiApp:
        scheduler.schedule_hourly(self.NAME, ok)
        return ApiApp(scheduler)

    def test_get_reads_the_name_with_a_slash(self, app: ApiApp) -> None:
        assert path_of(self.NAME) == "/api/schedules/team%2Fetl%2050%25"
        response = call(app, "GET", path_of(self.NAME))
        assert (response.status, response.json()["name"]) == (200, self.NAME)

    def test_history_disable_enable_and_run_find_it(self, app: ApiApp, scheduler: PipelineScheduler) -> None:
        assert call(app, "POST", path_of(self.NAME) + "/disable").status == 200
        assert scheduler.get_schedule(self.NAME).enabled is False
        assert call(app, "POST", path_of(self.NAME) + "/enable").status == 200
        assert scheduler.get_schedule(self.NAME).enabled is True
        run = call(app, "POST", path_of(self.NAME) + "/run?wait=true")
        assert (run.status, run.json()["run"]["schedule_name"]) == (200, self.NAME)
        history = call(app, "GET", path_of(self.NAME) + "/history?limit=5")
        assert [e["schedule_name"] for e in history.json()] == [self.NAME]

    def test_delete_removes_it(self, app: ApiApp, scheduler: PipelineScheduler) -> None:
        assert call(app, "DELETE", path_of(self.NAME)).status == 200
        assert scheduler.store.get_schedule(self.NAME) is None
        assert scheduler.store.get_schedule("team") is None

    def test_a_name_created_through_the_api_is_found_by_its_encoded_path(
        self, scheduler: PipelineScheduler
    ) -> None:
        app = ApiApp(scheduler, pipelines={"etl": ok})
        assert call(app, "POST", "/api/schedules", flowyml_request("a/b", "hourly")).status == 201
        assert call(app, "GET", "/api/schedules/a%2Fb").json()["name"] == "a/b"
        error_of(call(app, "GET", "/api/schedules/a/b"), 404)  # a raw slash is another path


class TestToken:
    @pytest.fixture
    def app(self, scheduler: PipelineScheduler) -> ApiApp:
        return ApiApp(scheduler, token=TOKEN, pipelines={"etl": ok})

    @pytest.mark.parametrize(
        "authorization",
        [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN, "Bearer", f"Bearer {TOKEN}x"],
    )
    def test_a_change_without_the_token_is_a_401_and_changes_nothing(
        self, app: ApiApp, scheduler: PipelineScheduler, authorization: Optional[str]
    ) -> None:
        headers = {"Authorization": authorization}
        attempts = [
            call(app, "POST", "/api/schedules", flowyml_request("report", "hourly"), headers=headers),
            call(app, "DELETE", "/api/schedules/nightly", headers=headers),
            call(app, "POST", "/api/schedules/nightly/disable", headers=headers),
            call(app, "POST", "/api/schedules/nightly/run?wait=true", headers=headers),
        ]
        for response in attempts:
            assert error_of(response, 401)["code"] == "unauthorized"
        assert scheduler.store.get_schedule("report") is None
        record = scheduler.store.get_schedule("nightly")
        assert record is not None and record.enabled
        assert scheduler.get_history("nightly") == []

    def test_the_right_token_is_accepted(self, app: ApiApp, scheduler: PipelineScheduler) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert (
            call(app, "POST", "/api/schedules", flowyml_request("report", "hourly"), headers=headers).status
            == 201
        )
        assert call(app, "POST", "/api/schedules/nightly/disable", headers=headers).status == 200
        assert call(app, "DELETE", "/api/schedules/report", headers=headers).status == 200
        assert scheduler.store.get_schedule("report") is None

    def test_the_scheme_is_case_insensitive(self, app: ApiApp) -> None:
        response = call(
            app, "POST", "/api/schedules/nightly/disable", headers={"Authorization": f"bearer {TOKEN}"}
        )
        assert response.status == 200

    @pytest.mark.parametrize(
        "path", ["/api/schedules", "/api/schedules/nightly", "/api/scheduler/health", "/metrics", "/"]
    )
    def test_reads_need_no_token(self, app: ApiApp, path: str) -> None:
        assert call(app, "GET", path).status == 200


class TestOrigin:
    @pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:9999", "null"])
    def test_a_cross_origin_change_is_a_403_even_with_the_token(
        self, scheduler: PipelineScheduler, origin: str
    ) -> None:
        app = ApiApp(scheduler, token=TOKEN, pipelines={"etl": ok})
        headers = {"Origin": origin, "Authorization": f"Bearer {TOKEN}"}
        created = call(app, "POST", "/api/schedules", flowyml_request("report", "hourly"), headers=headers)
        assert error_of(created, 403)["code"] == "cross_origin"
        error_of(call(app, "DELETE", "/api/schedules/nightly", headers=headers), 403)
        error_of(call(app, "POST", "/api/schedules/nightly/disable", headers=headers), 403)
        assert scheduler.store.get_schedule("report") is None
        record = scheduler.store.get_schedule("nightly")
        assert record is not None and record.enabled

    def test_a_cross_origin_read_is_refused_too(self, app: ApiApp) -> None:
        error_of(call(app, "GET", "/api/schedules", headers={"Origin": "http://evil.example"}), 403)

    def test_a_same_origin_request_is_accepted(self, app: ApiApp, scheduler: PipelineScheduler) -> None:
        headers = {"Origin": f"http://{HOST}"}
        assert (
            call(app, "POST", "/api/schedules", flowyml_request("report", "hourly"), headers=headers).status
            == 201
        )
        assert scheduler.store.get_schedule("report") is not None


class TestAllowedHosts:
    @pytest.fixture
    def app(self, scheduler: PipelineScheduler) -> ApiApp:
        return ApiApp(scheduler, allowed_hosts=["localhost", "127.0.0.1", "::1", "scheduler.lan"])

    @pytest.mark.parametrize(
        "host", ["rebind.attacker.example:8080", "rebind.attacker.example", "[::2]:8080"]
    )
    def test_a_foreign_host_is_a_403_that_says_how_to_allow_it(
        self, app: ApiApp, scheduler: PipelineScheduler, host: str
    ) -> None:
        response = call(app, "POST", "/api/schedules/nightly/disable", headers={"Host": host})
        error = error_of(response, 403)
        assert error["code"] == "host_not_allowed"
        assert "--allow-host" in error["message"]
        assert scheduler.get_schedule("nightly").enabled

    @pytest.mark.parametrize(
        "host", ["127.0.0.1:8080", "LOCALHOST:8080", "localhost", "[::1]:8080", "scheduler.lan:8080"]
    )
    def test_the_allowed_names_are_served_with_or_without_a_port(self, app: ApiApp, host: str) -> None:
        assert call(app, "GET", "/api/schedules", headers={"Host": host}).status == 200

    def test_a_request_without_a_host_header_is_served(self, app: ApiApp) -> None:
        # HTTP/1.0 tools send no Host; DNS rebinding needs a browser, and browsers always send one.
        assert call(app, "GET", "/api/schedules", headers={"Host": None}).status == 200


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["0 9 * * 1-5", "H H * * *", "@daily", "Europe/London", "Mars/Olympus", "etl", "all"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


class TestAnyCreateBody:
    """Whatever JSON a client sends to POST /api/schedules, the answer is a 201 or a JSON 4xx, never a 500."""

    @settings(max_examples=300, deadline=None)
    @given(
        st.dictionaries(
            st.sampled_from([*sorted(CREATE_FIELDS), "unknown_field"]),
            JSON_VALUES,
            max_size=8,
        ),
        st.sampled_from(["cron", "daily", "hourly", "interval", None]),
    )
    def test_never_a_server_error(self, body: Dict[str, Any], kind: Optional[str]) -> None:
        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        try:
            app = ApiApp(scheduler, pipelines={"etl": lambda: None})
            if kind is not None:
                body.setdefault("schedule_type", kind)
                body.setdefault("pipeline_name", "etl")
            response = call(app, "POST", "/api/schedules", content=json.dumps(body).encode("utf-8"))
            assert response.status in (201, 400, 404), response.body
            if response.status != 201:
                error_of(response, response.status)
        finally:
            scheduler.close()


def quoted(text: str) -> str:
    return quote(text, safe="")


class TestPipelineLink:
    def test_a_schedule_created_for_a_pipeline_names_it_and_runs_it(
        self, app: ApiApp, scheduler: PipelineScheduler
    ) -> None:
        response = call(app, "POST", "/api/schedules", flowyml_request("nightly-etl", "hourly"))
        assert response.json()["schedule"]["pipeline_name"] == "etl"
        assert response.json()["schedule"]["name"] == "nightly-etl"
        assert scheduler.get_schedule("nightly-etl").pipeline_func is ok

    def test_it_stays_linked_to_its_pipeline_across_a_restart(self, tmp_path: Path) -> None:
        first = sqlite_scheduler(tmp_path / "s.db")
        try:
            body = flowyml_request("nightly-etl", "hourly", minute=7)
            assert call(ApiApp(first, pipelines={"etl": ok}), "POST", "/api/schedules", body).status == 201
            next_run = first.get_schedule("nightly-etl").next_run
        finally:
            first.close()
        second = sqlite_scheduler(tmp_path / "s.db")
        try:
            app = ApiApp(second, pipelines={"etl": ok})
            assert app.relinked == ["nightly-etl"]
            schedule = second.get_schedule("nightly-etl")
            assert schedule.pipeline_func is ok and not schedule.is_orphan
            assert schedule.next_run == next_run  # the same definition: state kept
            assert call(app, "GET", "/api/schedules/nightly-etl").json()["pipeline_name"] == "etl"
            health = call(app, "GET", "/api/scheduler/health").json()
            assert health["orphaned_schedules"] == []
            run = call(app, "POST", "/api/schedules/nightly-etl/run?wait=true").json()
            assert run["status"] == "succeeded"
        finally:
            second.close()

    def test_without_its_pipeline_the_schedule_is_an_orphan_that_health_names(self, tmp_path: Path) -> None:
        first = sqlite_scheduler(tmp_path / "s.db")
        try:
            body = flowyml_request("nightly-etl", "hourly")
            call(ApiApp(first, pipelines={"etl": ok}), "POST", "/api/schedules", body)
        finally:
            first.close()
        second = sqlite_scheduler(tmp_path / "s.db")
        try:
            health = call(ApiApp(second), "GET", "/api/scheduler/health").json()
        finally:
            second.close()
        assert health["orphaned_schedules"] == ["nightly-etl"]
        assert any("orphaned" in w and "nightly-etl" in w for w in health["warnings"])
        [problem] = [p for p in health["problems"] if p["source"] == "schedules:orphaned"]
        assert "nightly-etl" in problem["message"]

    def test_a_context_naming_another_pipeline_is_refused(self, app: ApiApp) -> None:
        body = flowyml_request("x", "hourly", context={"pipeline": "other"})
        assert "pipeline" in error_of(call(app, "POST", "/api/schedules", body), 400)["message"]


class TestHealthProblems:
    def test_a_schedule_whose_next_fire_is_long_past_is_overdue(self, scheduler: PipelineScheduler) -> None:
        scheduler.store.set_enabled("nightly", True, datetime(2020, 1, 1, tzinfo=timezone.utc))
        health = call(ApiApp(scheduler), "GET", "/api/scheduler/health").json()
        assert health["overdue_schedules"] == ["nightly"]
        assert any(w == "1 schedule past due: nightly" for w in health["warnings"])

    def test_an_overdue_schedule_makes_a_running_scheduler_degraded_saying_why(
        self, scheduler: PipelineScheduler
    ) -> None:
        """Monitoring reads status and problems: a schedule that will not run on time is one."""
        scheduler.start()
        assert call(ApiApp(scheduler), "GET", "/api/scheduler/health").json()["status"] == "running"
        scheduler.store.set_enabled("nightly", True, datetime(2020, 1, 1, tzinfo=timezone.utc))
        with scheduler._table.cond:  # as a worker that stopped firing it would leave it
            scheduler._table.records["nightly"].next_fire = datetime(2020, 1, 1, tzinfo=timezone.utc)
            scheduler._table.heap.clear()
        health = call(ApiApp(scheduler), "GET", "/api/scheduler/health").json()
        assert health["status"] == "degraded"
        [fleet] = [p for p in health["problems"] if p["source"] == "schedules:overdue"]
        assert "nightly" in fleet["message"]

    def test_a_paused_schedule_is_no_problem(self, scheduler: PipelineScheduler) -> None:
        scheduler.disable("nightly")
        health = call(ApiApp(scheduler), "GET", "/api/scheduler/health").json()
        assert (health["overdue_schedules"], health["orphaned_schedules"], health["warnings"]) == ([], [], [])


def overview_of(app: ApiApp) -> Dict[str, Dict[str, Any]]:
    response = call(app, "GET", "/api/overview")
    assert response.status == 200
    return {s["name"]: s for s in response.json()["schedules"]}


class TestOverview:
    def test_each_schedule_has_its_state_at_a_glance(self, tmp_path: Path) -> None:
        sched = scheduler_with_orphan(tmp_path)
        release, began = threading.Event(), threading.Event()
        try:
            sched.schedule_hourly("fine", ok)
            sched.schedule_hourly("broken", boom)
            sched.schedule_hourly("paused", ok)
            sched.schedule_hourly("busy", lambda: began.set() or (release.wait(10) and None))
            sched.disable("paused")
            app = ApiApp(sched)
            call(app, "POST", "/api/schedules/fine/run?wait=true")
            for _ in range(3):
                call(app, "POST", "/api/schedules/broken/run?wait=true")
            call(app, "POST", "/api/schedules/busy/run")
            assert began.wait(10)  # started: until then it is queued, with no elapsed time
            rows = overview_of(app)
        finally:
            release.set()
            sched.close()
        states = {name: row["state"] for name, row in rows.items()}
        assert states == {
            "fine": "healthy",
            "broken": "failing",
            "paused": "paused",
            "busy": "running",
            "ghost": "orphaned",
        }
        assert rows["broken"]["streak"] == 3
        assert [r["status"] for r in rows["broken"]["runs"]] == ["failed"] * 3
        assert rows["busy"]["runs"][0]["elapsed_seconds"] is not None
        assert rows["busy"]["runs"][0]["success"] is None
        assert rows["fine"]["served_by"] == sched.node_id
        assert rows["ghost"]["served_by"] is None
        assert rows["fine"]["description"] == "Every hour at minute 00"

    def test_a_success_ends_a_failing_streak(self, scheduler: PipelineScheduler) -> None:
        flaky = iter([boom, boom, ok])
        scheduler.schedule_hourly("flaky", lambda: next(flaky)())
        app = ApiApp(scheduler)
        for _ in range(3):
            call(app, "POST", "/api/schedules/flaky/run?wait=true")
        row = overview_of(app)["flaky"]
        assert (row["state"], row["streak"], row["last_outcome"]) == ("healthy", 0, "succeeded")
        assert [r["status"] for r in row["runs"]] == ["succeeded", "failed", "failed"]

    def test_a_schedule_a_live_node_declared_is_served_by_it_not_an_orphan(self, tmp_path: Path) -> None:
        from flowyml_lite.stores.base import NodeRecord

        sched = scheduler_with_orphan(tmp_path)
        try:
            now = datetime.now(timezone.utc)
            sched.store.heartbeat(NodeRecord("worker-1", "host-a", 4242, now, now))
            sched.store.mark_declared("worker-1", ["ghost"])
            if sched.store.get_schedule("ghost").declared_by is None:  # type: ignore[union-attr]
                pytest.skip("this store does not record declarations yet")
            row = overview_of(ApiApp(sched))["ghost"]
        finally:
            sched.close()
        assert (row["state"], row["served_by"]) == ("healthy", "worker-1")

    def test_the_intervals_and_cron_expressions_are_described_in_words(
        self, scheduler: PipelineScheduler
    ) -> None:
        scheduler.schedule_interval("often", ok, seconds=6)
        scheduler.schedule_cron("weekdays", ok, "0 9 * * 1-5")
        rows = overview_of(ApiApp(scheduler))
        assert rows["often"]["description"] == "Every 6 s"
        assert rows["weekdays"]["description"] == "At 09:00, Monday through Friday"
        assert rows["nightly"]["description"] == "Every day at 03:00"


class TestRunDetail:
    def test_a_failed_run_has_its_own_url_with_error_attempt_and_node(
        self, app: ApiApp, scheduler: PipelineScheduler
    ) -> None:
        call(app, "POST", "/api/schedules", flowyml_request("broken", "hourly", pipeline_name="broken"))
        call(app, "POST", "/api/schedules/broken/run?wait=true")
        key = overview_of(app)["broken"]["runs"][0]["run_key"]
        response = call(app, "GET", f"/api/schedules/broken/runs/{key}")
        assert response.status == 200
        run = response.json()
        assert run["run_key"] == key and run["status"] == "failed"
        assert "boom: disk full" in run["error"]
        assert run["attempt"] == 1 and run["node"] == scheduler.node_id
        assert {"traceback", "output", "start_lag_seconds", "duration_seconds"} <= set(run)

    def test_an_unknown_run_is_a_404(self, app: ApiApp) -> None:
        assert error_of(call(app, "GET", "/api/schedules/nightly/runs/nope"), 404)["code"] == "not_found"


class TestCronPreview:
    def test_explains_an_expression_and_lists_its_next_fires_in_the_zone(self, app: ApiApp) -> None:
        target = f"/api/cron?expression={quoted('0 9 * * 1-5')}&timezone=Europe/London&n=5"
        response = call(app, "GET", target)
        assert response.status == 200
        payload = response.json()
        assert payload["description"] == "At 09:00, Monday through Friday"
        assert len(payload["fires"]) == 5
        for fire in payload["fires"]:
            moment = datetime.fromisoformat(fire["fire"])
            assert (moment.hour, moment.minute) == (9, 0) and moment.isoweekday() <= 5
            assert fire["zone"] in ("GMT", "BST")

    def test_a_bad_expression_is_a_400_naming_the_field(self, app: ApiApp) -> None:
        error = error_of(call(app, "GET", f"/api/cron?expression={quoted('0 25 * * *')}"), 400)
        assert "hour" in error["message"]

    def test_a_schedules_next_fires(self, app: ApiApp) -> None:
        payload = call(app, "GET", "/api/schedules/nightly/upcoming?n=3").json()
        assert payload["description"] == "Every day at 03:00"
        assert [datetime.fromisoformat(f["fire"]).hour for f in payload["fires"]] == [3, 3, 3]


class TestNodes:
    def test_lists_the_running_node_as_alive(self, running: PipelineScheduler) -> None:
        nodes = call(ApiApp(running), "GET", "/api/nodes").json()
        (node,) = nodes
        assert node["node_id"] == running.node_id
        assert node["alive"] is True and node["runs_in_flight"] == 0


class TestNodeStates:
    """A node that has missed two heartbeats is ``silent`` (what it runs is late as soon as its next
    fire is past), one past the node timeout is ``lost``: in the nodes list, the overview, health,
    the metrics and the CLI's health check alike."""

    @pytest.fixture
    def admin(self, tmp_path: Path) -> Iterator[PipelineScheduler]:
        from datetime import timedelta

        from flowyml_lite.stores.base import NodeRecord, ScheduleRecord

        admin = sqlite_scheduler(tmp_path / "fleet.db")  # heartbeats every 5 s, node timeout 30 s
        store, now = admin.store, datetime.now(timezone.utc)
        ago = lambda seconds: now - timedelta(seconds=seconds)  # noqa: E731
        store.heartbeat(NodeRecord("frozen", "other-host", 4242, ago(600), ago(15), "1:ab"))
        store.heartbeat(NodeRecord("fresh", "other-host", 4243, ago(600), now, "1:cd"))
        store.heartbeat(NodeRecord("dead", "other-host", 4244, ago(600), ago(300), "1:ef"))
        store.heartbeat(NodeRecord("admin", "other-host", 4245, ago(600), now))  # runs no schedule
        store.declare_schedule(ScheduleRecord("etl", "interval", "60", "UTC", "h", next_fire=ago(5)))
        store.mark_declared("frozen", ["etl"])
        yield admin
        admin.close()

    def test_nodes_are_alive_silent_or_lost(self, admin: PipelineScheduler) -> None:
        nodes = call(ApiApp(admin), "GET", "/api/nodes").json()
        states = {n["node_id"]: n["state"] for n in nodes}
        assert states == {"frozen": "silent", "fresh": "alive", "dead": "lost", "admin": "alive"}
        assert {n["node_id"]: n["alive"] for n in nodes}["dead"] is False

    def test_a_silent_nodes_schedule_is_late_when_its_fire_is_past(self, admin: PipelineScheduler) -> None:
        from flowyml_lite.api.overview import problems

        (etl,) = call(ApiApp(admin), "GET", "/api/overview").json()["schedules"]
        assert (etl["state"], etl["served_by"], etl["served_by_silent"]) == ("late", "frozen", True)
        assert problems(admin)["overdue"] == ["etl"]

    def test_the_metrics_count_workers_by_state(self, admin: PipelineScheduler) -> None:
        text = call(ApiApp(admin), "GET", "/metrics").body.decode()
        for state, count in (("alive", 1), ("silent", 1), ("lost", 1)):
            assert f'flowyml_lite_nodes{{state="{state}"}} {count}' in text

    def test_the_cli_health_check_names_them_and_fails(
        self, admin: PipelineScheduler, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from flowyml_lite.cli import main

        code = main(["health", "--db", admin.config.db_path])
        out = capsys.readouterr().out
        assert code == 1 and "status: attention" in out
        assert "1 silent nodes (frozen)" in out and "1 lost nodes (dead)" in out and "1 late (etl)" in out
