"""``GET /metrics`` read with prometheus_client's own parser, and ``RunMetrics`` on its own.

The run counters live in the process (``RunMetrics``): they never go down, whatever history's
pruning deletes. Skipped where prometheus_client is not installed (the stdlib-only runs).
"""

from __future__ import annotations

import threading
from typing import Dict, Iterator, List, Tuple

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from flowyml_lite.api import ApiApp, Request
from flowyml_lite.api.metrics import LAG_BUCKETS, RunMetrics, run_metrics_for

parser = pytest.importorskip("prometheus_client.parser")

HOST = "127.0.0.1:8080"


def ok() -> None:
    return None


def boom() -> None:
    raise RuntimeError("boom")


Families = Dict[str, "Family"]


class Family:
    def __init__(self, kind: str, samples: List[Tuple[str, Dict[str, str], float]]) -> None:
        self.kind = kind
        self.samples = samples

    def value(self, name: str, **labels: str) -> float:
        (found,) = [v for n, ls, v in self.samples if n == name and ls == labels]
        return found


def scrape(app: ApiApp) -> Families:
    response = app.handle(Request("GET", "/metrics", {"Host": HOST}))
    assert response.status == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    families: Families = {}
    for family in parser.text_string_to_metric_families(response.body.decode("utf-8")):
        assert family.name not in families, f"{family.name} appears twice"
        families[family.name] = Family(family.type, [(s.name, s.labels, s.value) for s in family.samples])
    return families


def run(app: ApiApp, name: str) -> None:
    response = app.handle(Request("POST", f"/api/schedules/{name}/run?wait=true", {"Host": HOST}))
    assert response.status == 200, response.body


@pytest.fixture
def scheduler() -> Iterator[PipelineScheduler]:
    sched = PipelineScheduler(SchedulerConfig(persist_schedules=False, history_max_runs=1))
    sched.schedule_hourly("nightly", ok)
    sched.schedule_hourly("broken", boom)
    yield sched
    sched.close()


class TestExposition:
    def test_is_parsed_by_prometheus_client_with_the_expected_types(
        self, scheduler: PipelineScheduler
    ) -> None:
        app = ApiApp(scheduler)
        run(app, "nightly")
        families = scrape(app)
        assert families["flowyml_lite_up"].kind == "gauge"
        assert families["flowyml_lite_up"].value("flowyml_lite_up", status="stopped") == 1
        assert families["flowyml_lite_runs"].kind == "counter"
        assert families["flowyml_lite_start_lag_seconds"].kind == "histogram"
        assert (
            families["flowyml_lite_schedule_enabled"].value(
                "flowyml_lite_schedule_enabled", schedule="nightly"
            )
            == 1
        )

    def test_counts_runs_by_schedule_and_status(self, scheduler: PipelineScheduler) -> None:
        app = ApiApp(scheduler)
        run(app, "nightly")
        run(app, "nightly")
        run(app, "broken")
        runs = scrape(app)["flowyml_lite_runs"]
        assert runs.value("flowyml_lite_runs_total", schedule="nightly", status="succeeded") == 2
        assert runs.value("flowyml_lite_runs_total", schedule="broken", status="failed") == 1

    def test_the_counters_do_not_go_down_when_history_is_pruned(self, scheduler: PipelineScheduler) -> None:
        app = ApiApp(scheduler)
        for _ in range(3):
            run(app, "nightly")
        scheduler.store.prune_runs(None, 1)
        assert len(scheduler.get_history("nightly")) == 1
        runs = scrape(app)["flowyml_lite_runs"]
        assert runs.value("flowyml_lite_runs_total", schedule="nightly", status="succeeded") == 3

    def test_last_success_and_failure_are_timestamps_per_schedule(self, scheduler: PipelineScheduler) -> None:
        app = ApiApp(scheduler)
        run(app, "nightly")
        run(app, "broken")
        families = scrape(app)
        success = families["flowyml_lite_schedule_last_success_timestamp_seconds"]
        failure = families["flowyml_lite_schedule_last_failure_timestamp_seconds"]
        history = {
            e["schedule_name"]: e for e in scheduler.get_history("nightly") + scheduler.get_history("broken")
        }
        from datetime import datetime

        expected = datetime.fromisoformat(history["nightly"]["completed_at"]).timestamp()
        assert success.value(
            "flowyml_lite_schedule_last_success_timestamp_seconds", schedule="nightly"
        ) == pytest.approx(expected)
        assert [ls["schedule"] for _, ls, _ in failure.samples] == ["broken"]

    def test_the_lag_histogram_counts_every_started_run(self, scheduler: PipelineScheduler) -> None:
        app = ApiApp(scheduler)
        run(app, "nightly")
        run(app, "broken")
        lag = scrape(app)["flowyml_lite_start_lag_seconds"]
        assert lag.value("flowyml_lite_start_lag_seconds_count") == 2
        assert lag.value("flowyml_lite_start_lag_seconds_bucket", le="+Inf") == 2

    def test_a_schedule_name_with_quotes_and_backslashes_round_trips(self) -> None:
        name = 'say "hi" C:\\jobs\\'
        sched = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        try:
            sched.schedule_hourly(name, ok)
            families = scrape(ApiApp(sched))
        finally:
            sched.close()
        enabled = families["flowyml_lite_schedule_enabled"]
        assert enabled.value("flowyml_lite_schedule_enabled", schedule=name) == 1


class TestRunMetrics:
    def test_observe_counts_final_outcomes_only(self) -> None:
        metrics = RunMetrics()
        metrics.observe({"schedule_name": "a", "status": "running"})
        metrics.observe(
            {"schedule_name": "a", "status": "timed_out", "completed_at": "2024-01-01T00:00:00+00:00"}
        )
        metrics.observe({"schedule_name": "a", "status": "skipped", "start_lag_seconds": None})
        assert (
            metrics.runs("a", "running"),
            metrics.runs("a", "timed_out"),
            metrics.runs("a", "skipped"),
        ) == (
            0,
            1,
            1,
        )

    def test_is_safe_to_call_from_many_threads(self) -> None:
        metrics = RunMetrics()

        def work() -> None:
            for _ in range(1000):
                metrics.observe({"schedule_name": "a", "status": "succeeded", "start_lag_seconds": 0.001})

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert metrics.runs("a", "succeeded") == 8000

    def test_a_lag_lands_in_the_first_bucket_that_holds_it(self) -> None:
        from flowyml_lite.api.metrics import _Lines

        metrics = RunMetrics()
        metrics.observe({"schedule_name": "a", "status": "succeeded", "start_lag_seconds": 0.3})
        out = _Lines()
        metrics.render(out)
        text = "\n".join(out)
        assert 'flowyml_lite_start_lag_seconds_bucket{le="0.25"} 0' in text
        assert 'flowyml_lite_start_lag_seconds_bucket{le="0.5"} 1' in text
        assert LAG_BUCKETS[0] > 0

    def test_bucket_bounds_are_written_as_other_exporters_write_them(self) -> None:
        """le="0.005", never le="0.0050000000000000001": a label is text, so another spelling of
        the same bound would be another series."""
        from flowyml_lite.api.metrics import _Lines

        metrics = RunMetrics(buckets=(0.005, 0.1, 1))
        out = _Lines()
        metrics.render(out)
        bounds = [line.split('le="')[1].split('"')[0] for line in out if "_bucket{" in line]
        assert bounds == ["0.005", "0.1", "1.0", "+Inf"]

    def test_a_scheduler_that_keeps_its_own_run_metrics_is_used(self) -> None:
        sched = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        try:
            own = RunMetrics()
            sched.run_metrics = own  # type: ignore[attr-defined]
            assert run_metrics_for(sched) is own
        finally:
            sched.close()


class TestStoreDown:
    def test_metrics_and_health_answer_degraded_instead_of_500(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from flowyml_lite.errors import StoreError

        sched = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        sched.schedule_hourly("nightly", ok)
        sched.start()
        app = ApiApp(sched)
        try:

            def down(*args: object, **kwargs: object) -> None:
                raise StoreError("could not connect to server: Connection refused")

            monkeypatch.setattr(sched.store, "list_schedules", down)
            families = scrape(app)  # asserts 200
            assert families["flowyml_lite_up"].value("flowyml_lite_up", status="degraded") == 1
            response = app.handle(Request("GET", "/api/scheduler/health", {"Host": HOST}))
            assert response.status == 200
            assert b"Connection refused" in response.body
        finally:
            sched.close()

    def test_metrics_and_health_answer_while_the_store_hangs(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A store that neither answers nor fails (a frozen database server): the endpoints answer
        from what health could read within its bound, never waiting on the store themselves."""
        import time

        sched = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        sched.schedule_hourly("nightly", ok)
        sched.start()
        app = ApiApp(sched)
        frozen = threading.Event()
        original = sched.store.list_schedules

        def hang(*args: object, **kwargs: object) -> object:
            frozen.wait(30)
            return original()

        try:
            monkeypatch.setattr(sched.store, "list_schedules", hang)
            for path in ("/api/scheduler/health", "/metrics"):
                started = time.monotonic()
                response = app.handle(Request("GET", path, {"Host": HOST}))
                assert response.status == 200 and time.monotonic() - started < 10, path
        finally:
            frozen.set()
            sched.close()
