"""Run hooks are user code: called on a thread of their own, in order, so a hook that hangs, is slow
or raises (anything) delays only other hook calls, never a fire, a run's outcome or a stop; health
names a hook that hangs."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Any, Dict, List

from flowyml_lite import PipelineScheduler, SchedulerConfig
from flowyml_lite.runtime import hooks as hooks_module
from flowyml_lite.runtime.hooks import RunHooks
from flowyml_lite.stores.base import MISSED, RunRecord
from tests.waiting import until


class TestTheHookThread:
    def test_hooks_are_called_in_order_off_the_callers_thread_and_drain_waits_for_them(self) -> None:
        hooks = RunHooks(lambda run: {"schedule_name": run.schedule, "status": run.status})
        seen: List[tuple] = []
        hooks.on_finish.append(lambda e: seen.append((e["status"], threading.current_thread().name)))
        for i in range(50):
            hooks.tell("succeeded", {"status": f"succeeded-{i}"}, "job")
        hooks.announce(RunRecord("k", "job", datetime.now(timezone.utc), MISSED))
        assert hooks.close(5.0)
        assert [s for s, _ in seen] == [f"succeeded-{i}" for i in range(50)] + ["missed"]
        assert {name for _, name in seen} == {"flowyml_lite-hooks"}

    def test_a_hook_raising_system_exit_is_logged_and_the_next_hooks_still_run(self, caplog: Any) -> None:
        hooks = RunHooks(lambda run: {})
        after: List[str] = []

        def leaves(entry: Dict[str, Any]) -> None:
            raise SystemExit(3)

        hooks.on_success.append(leaves)
        hooks.on_finish.append(lambda e: after.append("finish"))
        told: List[Any] = []
        hooks.tell("succeeded", {"n": 1}, "job", told.append)
        hooks.tell("succeeded", {"n": 2}, "job")
        assert hooks.close(5.0)
        assert after == ["finish", "finish"] and told == [{"n": 1}]
        assert "a run hook failed for 'job'" in caplog.text and "SystemExit" in caplog.text

    def test_a_hanging_hook_is_named_and_later_calls_wait_for_it(self, monkeypatch: Any) -> None:
        monkeypatch.setattr(hooks_module, "SLOW_HOOK_SECONDS", 0.2)
        release = threading.Event()
        hooks = RunHooks(lambda run: {})
        hooks.on_failure.append(lambda e: release.wait(10))
        hooks.tell("failed", {}, "victim")
        hooks.tell("failed", {}, "victim")
        assert until(lambda: hooks.problem() is not None, 5, every=0.02)
        problem = hooks.problem() or ""
        assert "an on_failure hook has been running for" in problem and "'victim'" in problem
        assert "1 later hook call(s) wait" in problem
        assert not hooks.drain(0.1)
        release.set()
        assert hooks.close(5.0) and hooks.problem() is None

    def test_hooks_slower_than_the_runs_they_hear_of_are_named_as_behind(self, monkeypatch: Any) -> None:
        monkeypatch.setattr(hooks_module, "SLOW_HOOK_SECONDS", 0.3)
        hooks = RunHooks(lambda run: {})
        hooks.on_finish.append(lambda e: time.sleep(0.1))  # a webhook, called for every run
        for _ in range(20):
            hooks.tell("succeeded", {}, "busy")
        assert until(lambda: "behind" in (hooks.problem() or ""), 5, every=0.02)
        assert "call(s) wait" in (hooks.problem() or "")
        assert hooks.close(10.0) and hooks.problem() is None


class TestAScheduleWithAHangingHook:
    def test_does_not_stop_other_schedules_its_rows_end_and_health_names_the_hook(
        self, monkeypatch: Any
    ) -> None:
        monkeypatch.setattr(hooks_module, "SLOW_HOOK_SECONDS", 0.5)
        release = threading.Event()
        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))

        def alert(entry: Dict[str, Any]) -> None:
            if entry["schedule_name"] == "victim":
                release.wait(30)  # a pager call that never returns

        def broken() -> None:
            raise RuntimeError("no data")

        scheduler.on_failure(alert)
        scheduler.schedule_interval("victim", broken, seconds=0.2)
        for i in range(3):
            scheduler.schedule_interval(f"canary-{i}", lambda: None, seconds=0.2)
        scheduler.start()
        try:
            time.sleep(3.0)
            for i in range(3):
                runs = scheduler.get_history(f"canary-{i}", limit=100)
                ok = [e for e in runs if e["status"] == "succeeded"]
                assert len(ok) >= 10, f"canary-{i} stopped firing: {len(ok)} run(s)"
            victim = scheduler.get_history("victim", limit=100)
            assert sum(e["status"] == "failed" for e in victim) >= 10  # it keeps firing too
            assert not [e for e in victim if e["status"] == "skipped"]  # its runs end: no overlap
            assert scheduler.status() == "degraded"
            (problem,) = [p for p in scheduler.problems() if p["source"] == "hooks"]
            assert "on_failure hook has been running" in problem["message"]
            stopping = time.monotonic()
            assert scheduler.stop(timeout=10)
            assert time.monotonic() - stopping < 8  # it waits a few seconds for hooks, not forever
        finally:
            release.set()
            scheduler.stop(timeout=5)

    def test_run_now_with_wait_returns_after_the_runs_hooks(self) -> None:
        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        seen: List[str] = []
        scheduler.on_success(lambda e: (time.sleep(0.2), seen.append(e["schedule_name"])))
        scheduler.schedule_interval("export", lambda: None, hours=1)
        entry = scheduler.run_now("export", wait=True)
        assert entry["status"] == "succeeded" and seen == ["export"]
        scheduler.stop()

    def test_a_hook_that_waits_for_runs_or_runs_one_and_waits_does_not_wait_for_itself(self) -> None:
        """wait_for_runs() and run_now(wait=True) wait for hooks, but not the hook calling them."""
        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        answers: List[Any] = []

        def follow_up(entry: Dict[str, Any]) -> None:
            if entry["schedule_name"] == "export":
                answers.append(scheduler.wait_for_runs(timeout=20))
                answers.append(scheduler.run_now("notify", wait=True, timeout=20)["status"])

        scheduler.on_success(follow_up)
        scheduler.schedule_interval("export", lambda: None, hours=1)
        scheduler.schedule_interval("notify", lambda: None, hours=1)
        started = time.monotonic()
        assert scheduler.run_now("export", wait=True, timeout=30)["status"] == "succeeded"
        assert time.monotonic() - started < 10
        assert answers == [True, "succeeded"]
        scheduler.stop()

    def test_a_hook_hung_on_another_run_holds_run_now_with_wait_back_two_seconds_at_most(self) -> None:
        release = threading.Event()
        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        scheduler.on_finish(lambda e: release.wait(30) if e["schedule_name"] == "a" else None)
        scheduler.schedule_interval("a", lambda: None, hours=1)
        scheduler.schedule_interval("b", lambda: None, hours=1)
        try:
            scheduler.run_now("a")
            time.sleep(0.2)  # a's hook hangs on the hook thread
            started = time.monotonic()
            assert scheduler.run_now("b", wait=True, timeout=20)["status"] == "succeeded"
            assert time.monotonic() - started < 5  # 2 s for its hooks, then the outcome it has
        finally:
            release.set()
            scheduler.stop()

    def test_hooks_of_fires_skipped_at_their_claim_are_not_called_on_the_loop(self) -> None:
        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        heard: List[tuple] = []
        scheduler.on_finish(lambda e: heard.append((e["status"], threading.current_thread().name)))
        scheduler.schedule_interval("slow", lambda: time.sleep(0.6), seconds=0.1)  # overlaps itself
        scheduler.start()
        try:
            assert until(lambda: any(status == "skipped" for status, _ in heard), 5, every=0.02)
        finally:
            scheduler.stop()
        assert {name for _, name in heard} == {"flowyml_lite-hooks"}
