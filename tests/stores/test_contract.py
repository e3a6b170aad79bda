"""The store contract (flowyml_lite/stores/base.py), run against every store implementation."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional

import pytest

from flowyml_lite.stores.base import (
    FAILED,
    LOST,
    MAX_RUN_TEXT,
    MISSED,
    QUEUED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    TIMED_OUT,
    Claim,
    NodeRecord,
    Outcome,
    RunRecord,
    ScheduleRecord,
    Store,
)

T0 = datetime(2024, 3, 10, 6, 0, tzinfo=timezone.utc)
NEW_YORK = timezone(timedelta(hours=-5))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def sched(
    name: str = "etl", definition_hash: str = "h1", next_fire: Optional[datetime] = T0, **kw: object
) -> ScheduleRecord:
    fields: Dict[str, Any] = {"schedule_type": "interval", "schedule_value": "60", "timezone": "UTC"}
    fields.update(kw)
    return ScheduleRecord(name=name, definition_hash=definition_hash, next_fire=next_fire, **fields)


def run(
    name: str, fire: datetime, status: str = RUNNING, node: str = "node-a", key: Optional[str] = None
) -> RunRecord:
    return RunRecord(
        run_key=key or uuid.uuid4().hex,
        schedule=name,
        fire_time=fire,
        status=status,
        node_id=node,
        started_at=fire if status == RUNNING else None,
    )


def claim_one(
    store: Store,
    name: str,
    minutes: float,
    status: str = RUNNING,
    max_instances: int = 1,
    node: str = "node-a",
) -> Optional[List[RunRecord]]:
    """Claim the fire at ``minutes`` (expected to be the schedule's next fire), advancing a minute."""
    return store.claim(
        name, at(minutes), at(minutes + 1), [run(name, at(minutes), status, node)], max_instances
    )


def history_statuses(store: Store, name: str) -> List[str]:
    return [r.status for r in store.history(name)]


def claim_of(
    name: str,
    minutes: float,
    status: str = RUNNING,
    max_instances: int = 1,
    node: str = "node-a",
    advance: float = 1,
) -> Claim:
    """The group-claim part for the fire at ``minutes`` (the schedule's next fire), advancing ``advance``."""
    return Claim(
        name, at(minutes), at(minutes + advance), [run(name, at(minutes), status, node)], max_instances
    )


def done(run_key: str, status: str = SUCCEEDED, minutes: float = 0.5, **kw: Any) -> Outcome:
    """A final outcome of ``run_key``, completed at ``minutes``."""
    return Outcome(run_key, status, at(minutes), kw.pop("duration_seconds", 30.0), **kw)


def uses_server_clock(request: pytest.FixtureRequest) -> bool:
    """True for a store that stamps heartbeats and judges expiry by its server's clock (PostgreSQL)."""
    return "postgresql" in request.node.callspec.params.get("store", "")


class TestDeclareSchedule:
    def test_a_new_schedule_is_stored_with_its_definition_and_timestamps(self, store: Store) -> None:
        stored = store.declare_schedule(sched(options={"catchup": "all"}, context={"env": "prod"}))
        assert stored.name == "etl" and stored.definition_hash == "h1"
        assert stored.options == {"catchup": "all"} and stored.context == {"env": "prod"}
        assert stored.enabled is True and stored.next_fire == T0 and stored.last_fire is None
        assert stored.created_at is not None and stored.created_at.tzinfo is not None
        assert store.get_schedule("etl") == stored

    def test_redeclaring_with_the_same_hash_keeps_the_stored_state(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert claim_one(store, "etl", 0) is not None
        store.set_enabled("etl", False, at(1))
        again = store.declare_schedule(sched(next_fire=at(500), context={"new": 1}))
        assert again.enabled is False
        assert again.next_fire == at(1) and again.last_fire == at(0)
        assert again.context == {}
        assert len(store.history("etl")) == 1

    def test_redeclaring_with_another_hash_replaces_the_definition_but_keeps_enabled(
        self, store: Store
    ) -> None:
        store.declare_schedule(sched())
        assert claim_one(store, "etl", 0) is not None
        store.set_enabled("etl", False, at(1))
        changed = store.declare_schedule(
            sched(
                definition_hash="h2",
                schedule_type="cron",
                schedule_value="*/5 * * * *",
                timezone="Europe/Paris",
                next_fire=at(5),
                options={"max_instances": 2},
                enabled=True,
            )
        )
        assert (changed.schedule_type, changed.schedule_value, changed.timezone) == (
            "cron",
            "*/5 * * * *",
            "Europe/Paris",
        )
        assert changed.definition_hash == "h2" and changed.options == {"max_instances": 2}
        assert changed.next_fire == at(5)
        assert changed.enabled is False
        assert changed.last_fire == at(0)
        assert len(store.history("etl")) == 1
        assert store.get_schedule("etl") == changed

    def test_get_schedule_of_an_unknown_name_is_none(self, store: Store) -> None:
        assert store.get_schedule("nope") is None

    def test_list_schedules_is_ordered_by_name(self, store: Store) -> None:
        for name in ("b", "c", "a"):
            store.declare_schedule(sched(name))
        assert [s.name for s in store.list_schedules()] == ["a", "b", "c"]

    def test_a_schedule_without_next_fire_is_stored(self, store: Store) -> None:
        assert store.declare_schedule(sched(next_fire=None)).next_fire is None

    def test_options_that_are_not_json_are_rejected_naming_the_field(self, store: Store) -> None:
        with pytest.raises(ValueError, match="options"):
            store.declare_schedule(sched(options={"f": object()}))
        with pytest.raises(ValueError, match="context"):
            store.declare_schedule(sched(context={"x": float("nan")}))
        assert store.get_schedule("etl") is None

    def test_options_come_back_as_json_would_give_them(self, store: Store) -> None:
        stored = store.declare_schedule(sched(options={"tags": ("a", "b"), "n": 1.5, "none": None}))
        assert stored.options == {"tags": ["a", "b"], "n": 1.5, "none": None}
        assert store.get_schedule("etl").options == stored.options  # type: ignore[union-attr]

    def test_changing_a_returned_record_does_not_change_the_store(self, store: Store) -> None:
        store.declare_schedule(sched(options={"a": 1}))
        got = store.get_schedule("etl")
        assert got is not None
        got.options["a"] = 2
        got.enabled = False
        again = store.get_schedule("etl")
        assert again is not None and again.options == {"a": 1} and again.enabled is True


class TestReturnedRecordsAreIndependent:
    def test_records_with_the_same_options_and_context_share_no_dict(self, store: Store) -> None:
        for name in ("a", "b"):
            store.declare_schedule(sched(name, options={"catchup": "all", "n": 1}, context={"tags": ["x"]}))
        a, b = store.list_schedules()
        a.options["catchup"] = "skip"
        a.context["tags"].append("y")
        again = store.get_schedule("a")
        assert again is not None and again.options == {"catchup": "all", "n": 1}
        assert again.context == {"tags": ["x"]}
        assert b.options == {"catchup": "all", "n": 1} and b.context == {"tags": ["x"]}
        assert store.get_schedule("b").options is not store.get_schedule("b").options  # type: ignore[union-attr]


class TestScheduleStates:
    def test_an_empty_store_has_no_states(self, store: Store) -> None:
        assert store.schedule_states() == {}

    def test_every_schedule_s_hash_and_state_agree_with_its_full_record(self, store: Store) -> None:
        store.declare_schedule(sched("claimed", options={"catchup": "all"}, context={"env": "prod"}))
        store.declare_schedule(sched("paused"))
        store.declare_schedule(sched("redefined"))
        store.declare_schedule(sched("never", next_fire=None))
        assert claim_one(store, "claimed", 0) is not None
        store.set_enabled("paused", False, None)
        store.declare_schedule(sched("redefined", definition_hash="h2", next_fire=at(7)))
        states = store.schedule_states()
        assert sorted(states) == ["claimed", "never", "paused", "redefined"]
        for record in store.list_schedules():
            state = states[record.name]
            assert (
                state.definition_hash,
                state.enabled,
                state.next_fire,
                state.last_fire,
                state.created_at,
                state.updated_at,
            ) == (
                record.definition_hash,
                record.enabled,
                record.next_fire,
                record.last_fire,
                record.created_at,
                record.updated_at,
            )
        assert states["claimed"].last_fire == at(0) and states["claimed"].next_fire == at(1)
        assert states["paused"].enabled is False and states["paused"].next_fire is None
        assert states["redefined"].definition_hash == "h2" and states["redefined"].next_fire == at(7)
        assert states["never"].next_fire is None
        assert all(s.updated_at is not None and s.updated_at.tzinfo is not None for s in states.values())

    def test_the_states_are_a_snapshot_later_changes_do_not_reach(self, store: Store) -> None:
        store.declare_schedule(sched())
        states = store.schedule_states()
        store.set_enabled("etl", False, None)
        store.delete_schedule("etl")
        assert states["etl"].enabled is True
        states.clear()
        assert store.schedule_states() == {}


class TestDatetimes:
    def test_a_naive_datetime_is_rejected(self, store: Store) -> None:
        with pytest.raises(ValueError, match="naive"):
            store.declare_schedule(sched(next_fire=datetime(2024, 1, 1, 9, 0)))
        store.declare_schedule(sched())
        with pytest.raises(ValueError, match="naive"):
            store.claim("etl", datetime(2024, 3, 10, 6, 0), at(1), [], 1)
        assert store.get_schedule("etl").next_fire == T0  # type: ignore[union-attr]

    def test_instants_in_any_zone_are_stored_and_returned_in_utc(self, store: Store) -> None:
        local = T0.astimezone(NEW_YORK)
        stored = store.declare_schedule(sched(next_fire=local))
        assert stored.next_fire == T0 and stored.next_fire.utcoffset() == timedelta(0)
        runs = store.claim("etl", local, at(1).astimezone(NEW_YORK), [run("etl", local)], 1)
        assert runs is not None and runs[0].fire_time == T0 and runs[0].fire_time.utcoffset() == timedelta(0)

    def test_microseconds_survive(self, store: Store) -> None:
        precise = T0 + timedelta(microseconds=123457)
        assert store.declare_schedule(sched(next_fire=precise)).next_fire == precise
        assert store.get_schedule("etl").next_fire == precise  # type: ignore[union-attr]


class TestEnableAndDelete:
    def test_set_enabled_changes_the_flag_and_next_fire(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert store.set_enabled("etl", False, None) is True
        got = store.get_schedule("etl")
        assert got is not None and got.enabled is False and got.next_fire is None
        assert store.set_enabled("etl", True, at(3)) is True
        got = store.get_schedule("etl")
        assert got is not None and got.enabled is True and got.next_fire == at(3)

    def test_changed_since_returns_only_rows_enabled_disabled_or_declared_after_the_mark(
        self, store: Store
    ) -> None:
        import time

        store.declare_schedule(sched())
        store.declare_schedule(sched("other"))
        time.sleep(0.002)
        mark = datetime.now(timezone.utc)
        time.sleep(0.002)
        assert store.changed_since(mark) == []
        store.set_enabled("etl", False, None)
        store.declare_schedule(sched("new"))
        assert sorted(r.name for r in store.changed_since(mark)) == ["etl", "new"]
        assert claim_one(store, "other", 0) is not None  # a claim is not a change of definition
        changed = store.changed_since(mark)
        assert sorted(r.name for r in changed) == ["etl", "new"]
        assert store.schedule_versions(mark) == {r.name: r.updated_at for r in changed}
        store.maintain()  # upkeep never changes what is stored
        assert store.schedule_versions(mark) == {r.name: r.updated_at for r in changed}

    def test_set_enabled_of_an_unknown_schedule_is_false(self, store: Store) -> None:
        assert store.set_enabled("nope", True, T0) is False

    def test_deleting_a_schedule_deletes_its_history(self, store: Store) -> None:
        store.declare_schedule(sched())
        store.declare_schedule(sched("other"))
        assert claim_one(store, "etl", 0) is not None
        assert claim_one(store, "other", 0) is not None
        assert store.delete_schedule("etl") is True
        assert store.get_schedule("etl") is None
        assert store.history("etl") == [] and store.active_runs("etl") == []
        assert store.stats().total == 1
        assert len(store.history("other")) == 1

    def test_deleting_an_unknown_schedule_is_false(self, store: Store) -> None:
        assert store.delete_schedule("nope") is False

    def test_a_deleted_schedule_can_be_declared_again_with_an_empty_history(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert claim_one(store, "etl", 0) is not None
        store.delete_schedule("etl")
        store.declare_schedule(sched())
        assert claim_one(store, "etl", 0) is not None
        assert len(store.history("etl")) == 1

    def test_delete_all_removes_every_schedule_and_run_and_counts_schedules(self, store: Store) -> None:
        for name in ("a", "b", "c"):
            store.declare_schedule(sched(name))
            assert claim_one(store, name, 0) is not None
        assert store.delete_all() == 3
        assert store.list_schedules() == [] and store.active_runs() == [] and store.stats().total == 0
        assert store.delete_all() == 0


class TestClaim:
    def test_a_claim_advances_next_fire_sets_last_fire_and_stores_the_run(self, store: Store) -> None:
        store.declare_schedule(sched())
        mine = run("etl", T0)
        claimed = store.claim("etl", T0, at(1), [mine], 1)
        assert claimed == [mine]
        got = store.get_schedule("etl")
        assert got is not None and got.next_fire == at(1) and got.last_fire == T0
        assert store.history("etl") == [mine]

    def test_a_claim_with_a_stale_expected_next_returns_none_and_changes_nothing(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert store.claim("etl", at(-1), at(1), [run("etl", at(-1))], 1) is None
        got = store.get_schedule("etl")
        assert got is not None and got.next_fire == T0 and got.last_fire is None
        assert store.history("etl") == []

    def test_a_stale_claim_of_only_missed_instants_changes_nothing(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert store.claim("etl", at(-1), at(1), [run("etl", at(-1), MISSED)], 1) is None
        assert store.claim("etl", at(-1), at(1), [], 1) is None
        assert store.get_schedule("etl").next_fire == T0  # type: ignore[union-attr]
        assert store.history("etl") == []

    def test_the_second_claim_of_one_fire_loses(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert claim_one(store, "etl", 0, node="node-a") is not None
        assert claim_one(store, "etl", 0, node="node-b") is None
        assert [r.node_id for r in store.history("etl")] == ["node-a"]

    def test_a_claim_of_an_unknown_or_disabled_schedule_returns_none(self, store: Store) -> None:
        assert claim_one(store, "nope", 0) is None
        store.declare_schedule(sched())
        store.set_enabled("etl", False, T0)
        assert claim_one(store, "etl", 0) is None
        assert store.history("etl") == []

    def test_a_claim_when_next_fire_is_unset_returns_none(self, store: Store) -> None:
        store.declare_schedule(sched(next_fire=None))
        assert claim_one(store, "etl", 0) is None

    def test_a_duplicate_fire_time_makes_the_whole_claim_fail(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert claim_one(store, "etl", 0, status=MISSED) is not None
        store.set_enabled("etl", True, at(1))  # someone rewinds next_fire...
        result = store.claim("etl", at(1), at(2), [run("etl", at(1), MISSED), run("etl", at(0), RUNNING)], 1)
        assert result is None
        got = store.get_schedule("etl")
        assert got is not None and got.next_fire == at(1) and got.last_fire is None
        assert [r.fire_time for r in store.history("etl")] == [at(0)]

    def test_two_records_with_one_fire_time_in_a_claim_fail_it(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert store.claim("etl", T0, at(1), [run("etl", T0, MISSED), run("etl", T0, RUNNING)], 1) is None
        assert store.history("etl") == []

    def test_a_claim_to_no_next_fire_ends_the_schedule(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert store.claim("etl", T0, None, [run("etl", T0)], 1) is not None
        got = store.get_schedule("etl")
        assert got is not None and got.next_fire is None and got.last_fire == T0

    def test_a_claim_without_runs_only_advances_next_fire(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert store.claim("etl", T0, at(1), [], 1) == []
        got = store.get_schedule("etl")
        assert got is not None and got.next_fire == at(1) and got.last_fire is None

    def test_fires_of_other_schedules_do_not_collide(self, store: Store) -> None:
        store.declare_schedule(sched("a"))
        store.declare_schedule(sched("b"))
        assert claim_one(store, "a", 0) is not None
        assert claim_one(store, "b", 0) is not None

    def test_a_record_of_another_schedule_is_rejected(self, store: Store) -> None:
        store.declare_schedule(sched())
        with pytest.raises(ValueError, match="other"):
            store.claim("etl", T0, at(1), [run("other", T0)], 1)
        assert store.get_schedule("etl").next_fire == T0  # type: ignore[union-attr]

    def test_last_fire_never_moves_back(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert store.claim("etl", T0, at(10), [run("etl", at(9))], 5) is not None
        store.set_enabled("etl", True, at(10))
        assert store.claim("etl", at(10), at(11), [run("etl", at(3))], 5) is not None
        assert store.get_schedule("etl").last_fire == at(9)  # type: ignore[union-attr]

    def test_concurrent_claims_from_threads_have_exactly_one_winner_per_fire(self, store: Store) -> None:
        store.declare_schedule(sched())
        fires = 60
        wins: List[List[datetime]] = [[] for _ in range(4)]
        barrier = threading.Barrier(4)

        def contender(index: int) -> None:
            barrier.wait()
            for i in range(fires):
                if store.claim("etl", at(i), at(i + 1), [run("etl", at(i), SUCCEEDED, f"n{index}")], 1):
                    wins[index].append(at(i))

        threads = [threading.Thread(target=contender, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [f for w in wins for f in w]
        assert sorted(won) == [at(i) for i in range(fires)]
        assert store.stats("etl").succeeded == fires


class TestOverlap:
    def test_a_fire_while_one_runs_is_stored_skipped_for_overlap(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert claim_one(store, "etl", 0) is not None
        second = claim_one(store, "etl", 1)
        assert second is not None and [(r.status, r.reason) for r in second] == [(SKIPPED, "overlap")]
        got = store.get_schedule("etl")
        assert got is not None and got.next_fire == at(2)
        assert got.last_fire == at(0)
        assert history_statuses(store, "etl") == [SKIPPED, RUNNING]
        assert [r.fire_time for r in store.active_runs("etl")] == [at(0)]

    def test_max_instances_two_allows_two_concurrent_runs(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert claim_one(store, "etl", 0, max_instances=2)[0].status == RUNNING  # type: ignore[index]
        assert claim_one(store, "etl", 1, max_instances=2)[0].status == RUNNING  # type: ignore[index]
        third = claim_one(store, "etl", 2, max_instances=2)
        assert third is not None and third[0].status == SKIPPED and third[0].reason == "overlap"
        assert len(store.active_runs("etl")) == 2

    def test_a_finished_run_no_longer_counts_as_overlap(self, store: Store) -> None:
        store.declare_schedule(sched())
        first = claim_one(store, "etl", 0)
        assert first is not None
        store.finish_run(first[0].run_key, SUCCEEDED, at(0.5), 30.0)
        assert claim_one(store, "etl", 1)[0].status == RUNNING  # type: ignore[index]

    def test_queued_runs_count_as_overlap(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert claim_one(store, "etl", 0, status=QUEUED) is not None
        assert claim_one(store, "etl", 1)[0].status == SKIPPED  # type: ignore[index]

    def test_runs_of_other_schedules_do_not_count_as_overlap(self, store: Store) -> None:
        store.declare_schedule(sched("a"))
        store.declare_schedule(sched("b"))
        assert claim_one(store, "a", 0) is not None
        assert claim_one(store, "b", 0)[0].status == RUNNING  # type: ignore[index]

    def test_overlap_leaves_missed_records_as_they_are(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert claim_one(store, "etl", 0) is not None
        result = store.claim("etl", at(1), at(3), [run("etl", at(1), MISSED), run("etl", at(2))], 1)
        assert result is not None and [r.status for r in result] == [MISSED, SKIPPED]
        assert result[0].reason is None and result[1].reason == "overlap"


class TestBatchClaim:
    def test_a_batch_claim_stores_the_first_running_and_the_rest_queued(self, store: Store) -> None:
        store.declare_schedule(sched())
        batch = [run("etl", at(0), RUNNING)] + [run("etl", at(i), QUEUED) for i in (1, 2)]
        claimed = store.claim("etl", T0, at(3), batch, 1)
        assert claimed == batch
        got = store.get_schedule("etl")
        assert got is not None and got.next_fire == at(3) and got.last_fire == at(2)
        assert [r.status for r in store.active_runs("etl")] == [RUNNING, QUEUED, QUEUED]

    def test_a_batch_with_missed_instants_records_them_and_runs_the_latest(self, store: Store) -> None:
        store.declare_schedule(sched())
        batch = [run("etl", at(i), MISSED) for i in range(3)] + [run("etl", at(3), RUNNING)]
        batch[0] = RunRecord(batch[0].run_key, "etl", at(0), MISSED, reason="3 missed instants")
        assert store.claim("etl", T0, at(4), batch, 1) == batch
        assert history_statuses(store, "etl") == [RUNNING, MISSED, MISSED, MISSED]
        assert store.history("etl")[-1].reason == "3 missed instants"
        assert store.get_schedule("etl").last_fire == at(3)  # type: ignore[union-attr]

    def test_a_claim_of_only_missed_instants_leaves_last_fire(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert store.claim("etl", T0, at(2), [run("etl", at(i), MISSED) for i in range(2)], 1) is not None
        assert store.get_schedule("etl").last_fire is None  # type: ignore[union-attr]
        assert store.active_runs("etl") == []


class TestRunTransitions:
    def test_start_run_marks_a_queued_run_running_with_its_start(self, store: Store) -> None:
        store.declare_schedule(sched())
        queued = claim_one(store, "etl", 0, status=QUEUED)
        assert queued is not None
        assert store.start_run(queued[0].run_key, at(0.25)) is True
        (stored,) = store.history("etl")
        assert stored.status == RUNNING and stored.started_at == at(0.25)

    def test_finish_run_records_the_outcome(self, store: Store) -> None:
        store.declare_schedule(sched())
        claimed = claim_one(store, "etl", 0)
        assert claimed is not None
        assert store.finish_run(claimed[0].run_key, FAILED, at(0.5), 30.0, error="boom", run_id="r-1") is True
        (stored,) = store.history("etl")
        assert (stored.status, stored.completed_at, stored.duration_seconds) == (FAILED, at(0.5), 30.0)
        assert (stored.error, stored.run_id) == ("boom", "r-1")
        assert store.active_runs() == []

    def test_finish_run_may_set_the_start_and_a_reason(self, store: Store) -> None:
        store.declare_schedule(sched())
        claimed = claim_one(store, "etl", 0, status=QUEUED)
        assert claimed is not None
        assert store.finish_run(
            claimed[0].run_key, SKIPPED, at(0.5), None, started_at=at(0.25), reason="locked"
        )
        (stored,) = store.history("etl")
        assert (stored.status, stored.started_at, stored.reason) == (SKIPPED, at(0.25), "locked")

    def test_finish_run_without_a_start_or_reason_keeps_the_stored_ones(self, store: Store) -> None:
        store.declare_schedule(sched())
        claimed = store.claim("etl", T0, at(1), [RunRecord("k", "etl", T0, QUEUED, reason="manual")], 1)
        assert claimed is not None
        store.start_run("k", at(0.1))
        assert store.finish_run("k", SUCCEEDED, at(0.5), 24.0)
        (stored,) = store.history("etl")
        assert (stored.started_at, stored.reason) == (at(0.1), "manual")

    def test_a_run_finishes_only_once(self, store: Store) -> None:
        store.declare_schedule(sched())
        claimed = claim_one(store, "etl", 0)
        assert claimed is not None
        assert store.finish_run(claimed[0].run_key, SUCCEEDED, at(0.5), 1.0) is True
        assert store.finish_run(claimed[0].run_key, FAILED, at(0.6), 2.0, error="late") is False
        assert store.start_run(claimed[0].run_key, at(0.7)) is False
        (stored,) = store.history("etl")
        assert stored.status == SUCCEEDED and stored.error is None and stored.duration_seconds == 1.0

    def test_a_lost_run_refuses_start_and_finish(self, store: Store) -> None:
        store.declare_schedule(sched())
        running = claim_one(store, "etl", 0)
        queued = store.claim("etl", at(1), at(2), [run("etl", at(1), QUEUED)], 5)
        assert running is not None and queued is not None
        store.mark_node_lost("node-a", "node node-a stopped heartbeating")
        assert store.finish_run(running[0].run_key, SUCCEEDED, at(0.5), 1.0) is False
        assert store.start_run(queued[0].run_key, at(1.5)) is False
        assert history_statuses(store, "etl") == [LOST, LOST]

    def test_unknown_run_keys_are_refused(self, store: Store) -> None:
        assert store.start_run("nope", T0) is False
        assert store.finish_run("nope", SUCCEEDED, T0, 1.0) is False

    def test_finish_run_with_an_active_status_is_an_error(self, store: Store) -> None:
        store.declare_schedule(sched())
        claimed = claim_one(store, "etl", 0)
        assert claimed is not None
        with pytest.raises(ValueError, match="final status"):
            store.finish_run(claimed[0].run_key, RUNNING, at(1), None)
        assert store.active_runs("etl")[0].status == RUNNING


class TestHistory:
    def test_history_is_newest_fire_first_and_limited(self, store: Store) -> None:
        store.declare_schedule(sched())
        # Claimed out of order: history orders by fire time, not by insertion.
        assert store.claim("etl", T0, at(10), [run("etl", at(i), SUCCEEDED) for i in (3, 1, 4, 0, 2)], 1)
        assert [r.fire_time for r in store.history("etl")] == [at(i) for i in (4, 3, 2, 1, 0)]
        assert [r.fire_time for r in store.history("etl", limit=2)] == [at(4), at(3)]
        assert store.history("etl", limit=0) == []

    def test_run_at_finds_the_run_of_one_instant_of_one_schedule(self, store: Store) -> None:
        store.declare_schedule(sched("a"))
        store.declare_schedule(sched("b"))
        assert store.claim("a", T0, at(10), [run("a", at(i), SUCCEEDED) for i in (0, 1, 2)], 1)
        found = store.run_at("a", at(1))
        assert found is not None and (found.schedule, found.fire_time) == ("a", at(1))
        assert found == next(r for r in store.history("a") if r.fire_time == at(1))
        assert store.run_at("a", at(1).astimezone(NEW_YORK)) == found
        assert store.run_at("a", at(3)) is None and store.run_at("b", at(1)) is None

    def test_history_holds_only_the_named_schedule(self, store: Store) -> None:
        store.declare_schedule(sched("a"))
        store.declare_schedule(sched("b"))
        assert claim_one(store, "a", 0) is not None
        assert {r.schedule for r in store.history("a")} == {"a"}
        assert store.history("nope") == []

    def test_recent_runs_are_each_schedule_s_history_read_together(self, store: Store) -> None:
        for name, count in (("a", 5), ("b", 1), ("c", 0)):
            store.declare_schedule(sched(name))
            if count:
                runs = [run(name, at(i), SUCCEEDED) for i in range(count)]
                assert store.claim(name, T0, at(10), runs, 1)
        recent = store.recent_runs(["a", "b", "c", "nope"], 3)
        assert sorted(recent) == ["a", "b"]  # a schedule with no run (or none at all) is left out
        for name in ("a", "b"):
            assert recent[name] == store.history(name, 3)
        assert store.recent_runs([], 3) == {}

    def test_active_runs_lists_running_and_queued_runs_by_schedule(self, store: Store) -> None:
        for name in ("b", "a"):
            store.declare_schedule(sched(name))
            assert store.claim(name, T0, at(2), [run(name, at(0)), run(name, at(1), QUEUED)], 1)
        store.declare_schedule(sched("done"))
        done = claim_one(store, "done", 0)
        assert done is not None
        store.finish_run(done[0].run_key, SUCCEEDED, at(1), 1.0)
        assert [(r.schedule, r.status) for r in store.active_runs()] == [
            ("a", RUNNING),
            ("a", QUEUED),
            ("b", RUNNING),
            ("b", QUEUED),
        ]
        assert [r.fire_time for r in store.active_runs("b")] == [at(0), at(1)]
        assert store.active_runs("done") == []


class TestStats:
    def _fill(self, store: Store) -> None:
        store.declare_schedule(sched("a"))
        store.declare_schedule(sched("b"))
        outcomes = [(SUCCEEDED, 1.0), (SUCCEEDED, 3.0), (FAILED, 5.0)]
        for i, (status, seconds) in enumerate(outcomes):
            claimed = claim_one(store, "a", i)
            assert claimed is not None
            store.finish_run(claimed[0].run_key, status, at(i + 0.5), seconds)
        assert store.claim("a", at(3), at(5), [run("a", at(3), MISSED), run("a", at(4))], 1)
        assert claim_one(store, "a", 5) is not None  # skipped: at(4) runs
        assert claim_one(store, "b", 0) is not None
        store.mark_node_lost("node-a", "gone")  # a@4 and b@0 become lost

    def test_stats_count_each_status_and_average_finished_durations(self, store: Store) -> None:
        self._fill(store)
        stats = store.stats("a")
        assert (stats.total, stats.succeeded, stats.failed) == (6, 2, 1)
        assert (stats.missed, stats.skipped, stats.lost, stats.running) == (1, 1, 1, 0)
        assert stats.avg_duration_seconds == pytest.approx(3.0)

    def test_stats_of_every_schedule_add_up(self, store: Store) -> None:
        self._fill(store)
        stats = store.stats()
        assert (stats.total, stats.lost) == (7, 2)
        assert stats.avg_duration_seconds == pytest.approx(3.0)

    def test_running_runs_are_counted_and_have_no_duration(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert claim_one(store, "etl", 0) is not None
        stats = store.stats("etl")
        assert (stats.total, stats.running, stats.avg_duration_seconds) == (1, 1, None)

    def test_stats_of_an_empty_store_are_zero(self, store: Store) -> None:
        stats = store.stats()
        assert stats.total == 0 and stats.avg_duration_seconds is None


class TestNodes:
    def node(self, node_id: str = "node-a", beat: float = 0) -> NodeRecord:
        return NodeRecord(node_id, "host-1", 4242, started_at=T0, heartbeat=at(beat))

    def test_heartbeat_inserts_then_refreshes_the_node_row(
        self, store: Store, request: pytest.FixtureRequest
    ) -> None:
        store.heartbeat(self.node(beat=0))
        store.heartbeat(self.node("node-b", beat=0))
        first = {n.node_id: n.heartbeat for n in store.list_nodes()}
        store.heartbeat(self.node(beat=1))
        nodes = store.list_nodes()
        if uses_server_clock(request):  # the server stamps its own clock: later, never earlier
            assert [(n.node_id, n.hostname, n.pid, n.started_at) for n in nodes] == [
                ("node-a", "host-1", 4242, T0),
                ("node-b", "host-1", 4242, T0),
            ]
            assert nodes[0].heartbeat >= first["node-a"] and nodes[1].heartbeat == first["node-b"]
        else:
            assert nodes == [self.node(beat=1), self.node("node-b", beat=0)]

    def test_mark_node_lost_turns_its_running_and_queued_runs_lost(self, store: Store) -> None:
        store.heartbeat(self.node())
        store.heartbeat(self.node("node-b"))
        store.declare_schedule(sched())
        store.declare_schedule(sched("other"))
        done = claim_one(store, "etl", 0)
        assert done is not None
        store.finish_run(done[0].run_key, SUCCEEDED, at(0.5), 1.0)
        assert store.claim("etl", at(1), at(3), [run("etl", at(1)), run("etl", at(2), QUEUED)], 1)
        assert claim_one(store, "other", 0, node="node-b") is not None
        lost = store.mark_node_lost("node-a", "node-a missed its heartbeat")
        assert [(r.fire_time, r.status, r.reason) for r in lost] == [
            (at(1), LOST, "node-a missed its heartbeat"),
            (at(2), LOST, "node-a missed its heartbeat"),
        ]
        assert history_statuses(store, "etl") == [LOST, LOST, SUCCEEDED]
        assert store.history("etl")[0].reason == "node-a missed its heartbeat"
        assert [r.node_id for r in store.active_runs()] == ["node-b"]
        assert [n.node_id for n in store.list_nodes()] == ["node-b"]

    def test_a_lost_run_no_longer_blocks_the_schedule(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert claim_one(store, "etl", 0) is not None
        store.mark_node_lost("node-a", "crashed")
        assert claim_one(store, "etl", 1)[0].status == RUNNING  # type: ignore[index]

    def test_mark_node_lost_of_a_node_without_runs_returns_nothing(self, store: Store) -> None:
        assert store.mark_node_lost("ghost", "gone") == []

    def test_remove_node_deletes_only_the_row(self, store: Store) -> None:
        store.heartbeat(self.node())
        store.declare_schedule(sched())
        assert claim_one(store, "etl", 0) is not None
        store.remove_node("node-a")
        store.remove_node("never-there")
        assert store.list_nodes() == []
        assert [r.status for r in store.active_runs()] == [RUNNING]

    def test_nodes_survive_delete_all(self, store: Store) -> None:
        store.heartbeat(self.node())
        store.delete_all()
        assert [n.node_id for n in store.list_nodes()] == ["node-a"]


def finished_runs(
    store: Store, name: str, minutes: List[float], status: str = SUCCEEDED, took: float = 0.5
) -> None:
    """Claim the fire at each of ``minutes`` (in order) and finish it ``took`` minutes later."""
    for minute in minutes:
        claimed = claim_one(store, name, minute, max_instances=100)
        assert claimed is not None
        assert store.finish_run(claimed[0].run_key, status, at(minute + took), 1.0)


def fire_minutes(store: Store, name: str) -> List[float]:
    """The fire instants of ``name``'s history as minutes after T0, oldest first."""
    return sorted((r.fire_time - T0).total_seconds() / 60 for r in store.history(name, limit=100_000))


class TestPruneRuns:
    def test_runs_beyond_the_newest_keep_last_are_deleted(self, store: Store) -> None:
        store.declare_schedule(sched())
        finished_runs(store, "etl", list(range(10)))
        assert store.prune_runs(None, 3) == 7
        assert fire_minutes(store, "etl") == [7, 8, 9]
        assert store.stats("etl").succeeded == 3

    def test_runs_that_fired_and_finished_before_the_cutoff_are_deleted(self, store: Store) -> None:
        store.declare_schedule(sched())
        finished_runs(store, "etl", list(range(10)))  # each completes at minute + 0.5
        assert store.prune_runs(at(5), None) == 5
        assert fire_minutes(store, "etl") == [5, 6, 7, 8, 9]

    def test_a_run_that_completed_after_the_cutoff_is_kept(self, store: Store) -> None:
        store.declare_schedule(sched())
        finished_runs(store, "etl", [0], took=20)  # fired before the cutoff, finished after it
        finished_runs(store, "etl", [1, 2, 3])
        assert store.prune_runs(at(10), None) == 2
        assert fire_minutes(store, "etl") == [0, 3]

    def test_the_newest_run_of_a_schedule_is_kept_however_old(self, store: Store) -> None:
        store.declare_schedule(sched())
        finished_runs(store, "etl", [0, 1, 2])
        assert store.prune_runs(at(10_000), 1) == 2
        assert fire_minutes(store, "etl") == [2]
        assert store.prune_runs(at(10_000), 1) == 0
        assert fire_minutes(store, "etl") == [2]

    def test_running_and_queued_runs_are_never_deleted(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert claim_one(store, "etl", 0, max_instances=100) is not None  # stays running
        finished_runs(store, "etl", [1, 2, 3])
        assert store.claim("etl", at(4), at(6), [run("etl", at(4), QUEUED), run("etl", at(5), QUEUED)], 100)
        assert store.prune_runs(at(10_000), 1) == 3
        assert [(r.fire_time, r.status) for r in store.history("etl")] == [
            (at(5), QUEUED),
            (at(4), QUEUED),
            (at(0), RUNNING),
        ]

    def test_active_runs_count_towards_keep_last(self, store: Store) -> None:
        store.declare_schedule(sched())
        finished_runs(store, "etl", [0, 1, 2, 3, 4])
        assert claim_one(store, "etl", 5, max_instances=100) is not None  # running, the newest
        assert store.prune_runs(None, 2) == 4
        assert history_statuses(store, "etl") == [RUNNING, SUCCEEDED]

    def test_every_final_status_is_pruned(self, store: Store) -> None:
        store.declare_schedule(sched())
        finished_runs(store, "etl", [0], status=SUCCEEDED)
        finished_runs(store, "etl", [1], status=FAILED)
        assert claim_one(store, "etl", 2, status=MISSED) is not None
        assert claim_one(store, "etl", 3, status=SKIPPED) is not None
        assert claim_one(store, "etl", 4, node="dead", max_instances=100) is not None
        assert len(store.mark_node_lost("dead", "crashed")) == 1
        finished_runs(store, "etl", [5])
        assert store.prune_runs(at(100), None) == 5
        assert fire_minutes(store, "etl") == [5]

    @pytest.mark.parametrize(
        ("older_than", "keep_last", "left"),
        [
            (3, 5, [5, 6, 7, 8, 9]),  # the count removes more than the age
            (5, 8, [5, 6, 7, 8, 9]),  # the age removes more than the count
            (3, None, [3, 4, 5, 6, 7, 8, 9]),
            (None, 8, [2, 3, 4, 5, 6, 7, 8, 9]),
        ],
    )
    def test_a_run_is_deleted_when_either_criterion_says_so(
        self, store: Store, older_than: Optional[int], keep_last: Optional[int], left: List[int]
    ) -> None:
        store.declare_schedule(sched())
        finished_runs(store, "etl", list(range(10)))
        cutoff = None if older_than is None else at(older_than)
        assert store.prune_runs(cutoff, keep_last) == 10 - len(left)
        assert fire_minutes(store, "etl") == left

    def test_keep_last_counts_each_schedule_separately(self, store: Store) -> None:
        for name in ("a", "b", "c"):
            store.declare_schedule(sched(name))
        finished_runs(store, "a", list(range(6)))
        finished_runs(store, "b", [0, 1])
        assert store.prune_runs(None, 3) == 3
        assert (fire_minutes(store, "a"), fire_minutes(store, "b"), fire_minutes(store, "c")) == (
            [3, 4, 5],
            [0, 1],
            [],
        )

    def test_a_limit_stops_after_that_many_rows_oldest_first_schedules_by_name(self, store: Store) -> None:
        for name in ("b", "a"):
            store.declare_schedule(sched(name))
            finished_runs(store, name, [0, 1, 2, 3, 4])
        assert store.prune_runs(None, 1, limit=6) == 6
        assert (fire_minutes(store, "a"), fire_minutes(store, "b")) == ([4], [2, 3, 4])
        assert store.prune_runs(None, 1, limit=6) == 2
        assert (fire_minutes(store, "a"), fire_minutes(store, "b")) == ([4], [4])

    def test_more_rows_than_one_batch_are_all_pruned(self, store: Store) -> None:
        from flowyml_lite.stores.schema import PRUNE_BATCH_ROWS

        store.declare_schedule(sched())
        count = PRUNE_BATCH_ROWS + 1500
        missed = [run("etl", T0 + timedelta(seconds=i), MISSED) for i in range(count)]
        assert store.claim("etl", T0, at(1), missed, 1) is not None
        assert store.prune_runs(None, 1, limit=PRUNE_BATCH_ROWS + 1000) == PRUNE_BATCH_ROWS + 1000
        assert len(store.history("etl", limit=count)) == 500
        assert store.prune_runs(None, 1) == 499
        assert [r.fire_time for r in store.history("etl")] == [T0 + timedelta(seconds=count - 1)]

    def test_with_nothing_to_prune_nothing_changes(self, store: Store) -> None:
        assert store.prune_runs(at(100), 1) == 0  # an empty store
        store.declare_schedule(sched())
        finished_runs(store, "etl", [0, 1, 2])
        assert store.prune_runs(None, None) == 0
        assert store.prune_runs(at(-10), 3) == 0
        assert fire_minutes(store, "etl") == [0, 1, 2]

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ((datetime(2024, 1, 1), None), "naive"),
            ((None, 0), "keep_last must be an integer >= 1"),
            ((None, True), "keep_last must be an integer >= 1"),
            ((None, 2.5), "keep_last must be an integer >= 1"),
        ],
    )
    def test_bad_arguments_are_rejected(self, store: Store, args: Any, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            store.prune_runs(*args)

    def test_a_limit_below_one_is_rejected(self, store: Store) -> None:
        with pytest.raises(ValueError, match="limit must be an integer >= 1"):
            store.prune_runs(None, 1, limit=0)

    def test_claims_stay_exactly_once_after_pruning(self, store: Store) -> None:
        store.declare_schedule(sched())
        finished_runs(store, "etl", [0, 1, 2, 3])
        assert store.prune_runs(at(100), 1) == 3
        # The next fire is claimed once; a stale claim of a pruned fire is still refused (CAS).
        assert claim_one(store, "etl", 4, node="node-a") is not None
        assert claim_one(store, "etl", 4, node="node-b") is None
        assert store.claim("etl", at(1), at(2), [run("etl", at(1))], 1) is None
        # The kept newest finished row still holds its instant against a rewound next_fire.
        store.set_enabled("etl", True, at(5))
        assert store.claim("etl", at(5), at(6), [run("etl", at(3), MISSED)], 100) is None
        assert [r.fire_time for r in store.history("etl")] == [at(4), at(3)]
        assert {r.node_id for r in store.history("etl")} == {"node-a"}

    def test_pruning_beside_claims_in_another_thread_never_touches_an_active_run(self, store: Store) -> None:
        store.declare_schedule(sched())
        fires = 60
        done = threading.Event()
        errors: List[BaseException] = []

        def prune_until_done() -> None:
            try:
                while not done.is_set():
                    store.prune_runs(at(fires), 1)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        pruner = threading.Thread(target=prune_until_done)
        pruner.start()
        try:
            for i in range(fires):
                claimed = claim_one(store, "etl", i)
                assert claimed is not None, f"claim of fire {i} refused"
                assert store.finish_run(claimed[0].run_key, SUCCEEDED, at(i + 0.5), 1.0), f"run {i} vanished"
        finally:
            done.set()
            pruner.join()
        assert errors == []
        store.prune_runs(at(fires), 1)
        assert fire_minutes(store, "etl") == [fires - 1]


class TestGroupClaims:
    """``claim_many``: outcomes first, then every claim exactly as ``claim``, in one transaction."""

    def test_a_group_claims_every_schedule_and_answers_each_claim_in_order(self, store: Store) -> None:
        for name in ("c", "a", "b"):
            store.declare_schedule(sched(name))
        claims = [claim_of("c", 0), claim_of("a", 0), claim_of("b", 0, status=MISSED)]
        results = store.claim_many(claims)
        assert [None if r is None else [(x.schedule, x.status) for x in r] for r in results] == [
            [("c", RUNNING)],
            [("a", RUNNING)],
            [("b", MISSED)],
        ]
        assert [r[0] for r in results if r] == [c.runs[0] for c in claims]
        for name in ("a", "b", "c"):
            got = store.get_schedule(name)
            assert got is not None and got.next_fire == at(1)
        assert store.get_schedule("b").last_fire is None  # type: ignore[union-attr]
        assert store.get_schedule("a").last_fire == at(0)  # type: ignore[union-attr]
        assert [(r.schedule, r.status) for r in store.active_runs()] == [("a", RUNNING), ("c", RUNNING)]

    def test_a_refused_claim_in_a_group_refuses_only_itself(self, store: Store) -> None:
        for name in ("ok-1", "stale", "disabled", "ok-2"):
            store.declare_schedule(sched(name))
        store.set_enabled("disabled", False, T0)
        results = store.claim_many(
            [
                claim_of("ok-1", 0),
                claim_of("stale", -1),  # another process claimed it first: next_fire moved on
                claim_of("disabled", 0),
                claim_of("unknown", 0),
                claim_of("ok-2", 0),
            ]
        )
        assert [r is not None for r in results] == [True, False, False, False, True]
        assert store.get_schedule("stale").next_fire == T0  # type: ignore[union-attr]
        assert store.get_schedule("disabled").next_fire == T0  # type: ignore[union-attr]
        assert store.history("stale") == [] and store.history("disabled") == []
        assert [len(store.history(name)) for name in ("ok-1", "ok-2")] == [1, 1]

    def test_a_claim_colliding_with_a_stored_fire_refuses_only_itself(self, store: Store) -> None:
        for name in ("rewound", "a", "b"):
            store.declare_schedule(sched(name))
        assert claim_one(store, "rewound", 0, status=MISSED) is not None
        store.set_enabled("rewound", True, T0)  # next_fire rewound onto a fire already stored
        results = store.claim_many([claim_of("a", 0), claim_of("rewound", 0), claim_of("b", 0)])
        assert [r is not None for r in results] == [True, False, True]
        got = store.get_schedule("rewound")
        assert got is not None and got.next_fire == T0 and got.last_fire is None
        assert history_statuses(store, "rewound") == [MISSED]
        assert history_statuses(store, "a") == history_statuses(store, "b") == [RUNNING]

    def test_a_lone_claim_refused_after_advancing_leaves_the_schedule_as_it_was(self, store: Store) -> None:
        store.declare_schedule(sched("rewound"))
        assert claim_one(store, "rewound", 0, status=MISSED) is not None
        store.set_enabled("rewound", True, T0)  # next_fire rewound onto a fire already stored
        assert store.claim_many([claim_of("rewound", 0)]) == [None]
        got = store.get_schedule("rewound")
        assert got is not None and got.next_fire == T0 and got.last_fire is None
        assert history_statuses(store, "rewound") == [MISSED]
        assert store.claim_many([claim_of("unknown", 0)]) == [None]
        stale = store.claim_many([claim_of("rewound", -1)])
        assert stale == [None] and store.get_schedule("rewound").next_fire == T0  # type: ignore[union-attr]

    def test_a_run_key_already_stored_refuses_only_its_claim(self, store: Store) -> None:
        for name in ("a", "b", "c"):
            store.declare_schedule(sched(name))
        assert store.claim("a", T0, at(1), [run("a", T0, key="taken")], 1) is not None
        again = Claim("b", T0, at(1), [run("b", T0, key="taken")], 1)
        results = store.claim_many([again, claim_of("c", 0)])
        assert [r is not None for r in results] == [False, True]
        assert store.history("b") == [] and store.get_schedule("b").next_fire == T0  # type: ignore[union-attr]

    def test_claims_of_one_schedule_in_a_group_are_judged_in_order(self, store: Store) -> None:
        store.declare_schedule(sched())
        results = store.claim_many(
            [
                claim_of("etl", 0, max_instances=5),
                claim_of("etl", 1, max_instances=5),  # expects what the first one set
                claim_of("etl", 1, max_instances=5),  # stale by then
                claim_of("etl", 2, max_instances=5),
            ]
        )
        assert [r is not None for r in results] == [True, True, False, True]
        got = store.get_schedule("etl")
        assert got is not None and got.next_fire == at(3) and got.last_fire == at(2)
        assert [r.fire_time for r in store.active_runs("etl")] == [at(0), at(1), at(2)]

    def test_overlap_in_a_group_counts_the_runs_claimed_before_it_in_the_group(self, store: Store) -> None:
        store.declare_schedule(sched())
        results = store.claim_many([claim_of("etl", 0), claim_of("etl", 1)])
        assert [[(r.status, r.reason) for r in rs or []] for rs in results] == [
            [(RUNNING, None)],
            [(SKIPPED, "overlap")],
        ]
        assert store.get_schedule("etl").last_fire == at(0)  # type: ignore[union-attr]

    def test_a_claim_ahead_that_would_overlap_is_refused_and_writes_nothing(self, store: Store) -> None:
        store.declare_schedule(sched())
        store.declare_schedule(sched("other"))
        assert claim_one(store, "etl", 0) is not None  # another process's run, active
        ahead = claim_of("etl", 1)._replace(ahead=True)
        results = store.claim_many([ahead, claim_of("other", 0)._replace(ahead=True)])
        assert results[0] is None and results[1] is not None  # refused alone, the other granted
        got = store.get_schedule("etl")
        assert got is not None and got.next_fire == at(1)  # left for the claim at the instant
        assert history_statuses(store, "etl") == [RUNNING]
        (at_instant,) = store.claim_many([claim_of("etl", 1)])  # still full then: skipped
        assert at_instant is not None and [(r.status, r.reason) for r in at_instant] == [(SKIPPED, "overlap")]

    def test_a_claim_ahead_alone_that_would_overlap_is_refused(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert claim_one(store, "etl", 0) is not None
        assert store.claim_many([claim_of("etl", 1)._replace(ahead=True)]) == [None]
        assert history_statuses(store, "etl") == [RUNNING]

    def test_a_claim_ahead_with_room_is_stored_as_any_claim(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert claim_one(store, "etl", 0, max_instances=2) is not None
        (stored,) = store.claim_many([claim_of("etl", 1, max_instances=2)._replace(ahead=True)])
        assert stored is not None and stored[0].status == RUNNING

    def test_two_claims_of_one_fire_in_a_group_store_it_once(self, store: Store) -> None:
        store.declare_schedule(sched())
        store.declare_schedule(sched("other"))
        first = Claim("etl", T0, T0, [run("etl", T0)], 5)  # next_fire stays: the same fire again
        results = store.claim_many([first, claim_of("etl", 0, max_instances=5), claim_of("other", 0)])
        assert [r is not None for r in results] == [True, False, True]
        assert len(store.history("etl")) == 1

    def test_a_group_writes_its_outcomes_before_its_claims(self, store: Store) -> None:
        store.declare_schedule(sched())
        first = claim_one(store, "etl", 0)
        assert first is not None
        # The run of fire 0 ended just as fire 1 came due: fire 1 runs, no overlap.
        results = store.claim_many([claim_of("etl", 1)], [done(first[0].run_key, minutes=0.9)])
        assert results[0] is not None and results[0][0].status == RUNNING
        assert history_statuses(store, "etl") == [RUNNING, SUCCEEDED]

    def test_a_refused_outcome_in_a_group_does_not_refuse_the_claims(self, store: Store) -> None:
        store.declare_schedule(sched())
        results = store.claim_many([claim_of("etl", 0)], [done("no-such-run")])
        assert results[0] is not None and history_statuses(store, "etl") == [RUNNING]

    def test_a_group_with_only_outcomes_records_them(self, store: Store) -> None:
        store.declare_schedule(sched())
        first = claim_one(store, "etl", 0)
        assert first is not None
        assert store.claim_many([], [done(first[0].run_key, FAILED, error="boom")]) == []
        assert history_statuses(store, "etl") == [FAILED]

    def test_an_empty_group_changes_nothing(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert store.claim_many([]) == []
        assert store.get_schedule("etl").next_fire == T0  # type: ignore[union-attr]

    def test_an_invalid_claim_or_outcome_writes_nothing_of_the_group(self, store: Store) -> None:
        store.declare_schedule(sched())
        store.declare_schedule(sched("other"))
        first = claim_one(store, "etl", 0)
        assert first is not None
        naive = Claim("other", datetime(2024, 3, 10, 6, 0), at(1), [], 1)
        with pytest.raises(ValueError, match="naive"):
            store.claim_many([claim_of("etl", 1, max_instances=5), naive], [done(first[0].run_key)])
        with pytest.raises(ValueError, match="other"):
            store.claim_many([Claim("etl", at(1), at(2), [run("other", at(1))], 5)])
        with pytest.raises(ValueError, match="final status"):
            store.claim_many([claim_of("other", 0)], [done(first[0].run_key, RUNNING)])
        assert history_statuses(store, "etl") == [RUNNING]
        assert store.get_schedule("etl").next_fire == at(1)  # type: ignore[union-attr]
        assert store.get_schedule("other").next_fire == T0  # type: ignore[union-attr]

    def test_a_group_larger_than_one_statement_claims_every_schedule(self, store: Store) -> None:
        names = [f"job-{i:04d}" for i in range(1203)]
        for name in names:
            store.declare_schedule(sched(name))
        claims = [claim_of(name, 0, status=RUNNING if i % 2 else QUEUED) for i, name in enumerate(names)]
        stale = claim_of(names[7], 5)
        results = store.claim_many([*claims[:600], stale, *claims[600:]])
        assert sum(r is not None for r in results) == len(names) and results[600] is None
        assert len(store.active_runs()) == len(names)
        # Again with every fire still active: each schedule's one instance is busy.
        again = store.claim_many([claim_of(name, 1) for name in names])
        assert {r[0].status for r in again if r} == {SKIPPED} and None not in again
        states = store.schedule_states()
        assert {s.next_fire for s in states.values()} == {at(2)}

    def test_concurrent_group_claims_from_threads_have_exactly_one_winner_per_fire(
        self, store: Store
    ) -> None:
        names = [f"job-{i}" for i in range(8)]
        for name in names:
            store.declare_schedule(sched(name))
        fires = 25
        wins: List[List[RunRecord]] = [[] for _ in range(3)]
        barrier = threading.Barrier(3)

        def contender(index: int) -> None:
            barrier.wait()
            for i in range(fires):
                claims = [claim_of(n, i, SUCCEEDED, node=f"n{index}") for n in names]
                for result in store.claim_many(claims):
                    wins[index].extend(result or [])

        threads = [threading.Thread(target=contender, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = sorted((r.schedule, r.fire_time) for w in wins for r in w)
        assert won == sorted((n, at(i)) for n in names for i in range(fires))
        assert store.stats().succeeded == len(names) * fires


class TestOutcomes:
    """``finish_runs``: final outcomes, retries, and the owner's word over a lost verdict."""

    def claimed(self, store: Store, minutes: float = 0, status: str = RUNNING, node: str = "node-a") -> str:
        claimed = claim_one(store, "etl", minutes, status, max_instances=10, node=node)
        assert claimed is not None
        return claimed[0].run_key

    def test_outcomes_are_recorded_in_one_call_with_one_answer_each(self, store: Store) -> None:
        store.declare_schedule(sched())
        keys = [self.claimed(store, i) for i in range(3)]
        answers = store.finish_runs(
            [
                done(keys[0], SUCCEEDED, 0.5, run_id="r-0"),
                done("no-such-run"),
                done(keys[1], FAILED, 1.5, error="ValueError: bad", duration_seconds=2.0),
                done(keys[2], TIMED_OUT, 2.5, reason="timed out after 30 s"),
            ]
        )
        assert answers == [True, False, True, True]
        by_fire = {r.fire_time: r for r in store.history("etl")}
        assert (by_fire[at(0)].status, by_fire[at(0)].run_id, by_fire[at(0)].completed_at) == (
            SUCCEEDED,
            "r-0",
            at(0.5),
        )
        assert (by_fire[at(1)].status, by_fire[at(1)].error, by_fire[at(1)].duration_seconds) == (
            FAILED,
            "ValueError: bad",
            2.0,
        )
        assert (by_fire[at(2)].status, by_fire[at(2)].reason) == (TIMED_OUT, "timed out after 30 s")
        assert store.active_runs() == []

    def test_no_outcomes_is_no_answers(self, store: Store) -> None:
        assert store.finish_runs([]) == []

    def test_a_timed_out_run_is_final_and_frees_its_instance(self, store: Store) -> None:
        store.declare_schedule(sched())
        key = self.claimed(store, 0)
        assert store.finish_runs([done(key, TIMED_OUT, 0.5, reason="timed out")]) == [True]
        assert claim_one(store, "etl", 1)[0].status == RUNNING  # type: ignore[index]
        assert store.finish_runs([done(key, SUCCEEDED, 0.7)]) == [False]
        stats = store.stats("etl")
        assert (stats.timed_out, stats.running, stats.total) == (1, 1, 2)
        assert stats.avg_duration_seconds == pytest.approx(30.0)

    def test_a_retry_keeps_the_row_active_with_the_next_attempt_s_instant(self, store: Store) -> None:
        store.declare_schedule(sched())
        key = self.claimed(store, 0)
        retry = Outcome(
            key,
            QUEUED,
            completed_at=at(0.5),  # ignored: the fire is not over
            duration_seconds=30.0,
            error="ConnectionError: reset",
            started_at=at(0.1),
            reason="attempt 1 of 3 failed; retry at 06:01",
            attempt=2,
            traceback="Traceback (most recent call last):\n  ...\nConnectionError: reset\n",
            next_attempt_at=at(1),
        )
        assert store.finish_runs([retry]) == [True]
        (row,) = store.history("etl")
        assert (row.status, row.attempt, row.next_attempt_at, row.completed_at) == (QUEUED, 2, at(1), None)
        assert row.error == "ConnectionError: reset" and row.traceback is not None
        assert row.started_at == at(0.1) and row.reason == "attempt 1 of 3 failed; retry at 06:01"
        assert store.active_runs("etl") == [row]
        # Still the fire's one row: a later fire overlaps it, and its own fire is never claimed again.
        assert claim_one(store, "etl", 1)[0].status == SKIPPED  # type: ignore[index]
        assert store.stats("etl").total == 2

    def test_the_next_attempt_starts_on_the_same_row(self, store: Store) -> None:
        store.declare_schedule(sched())
        key = self.claimed(store, 0)
        store.finish_runs([Outcome(key, QUEUED, None, attempt=2, next_attempt_at=at(1))])
        assert store.start_run(key, at(1)) is True
        (row,) = store.history("etl")
        assert (row.status, row.attempt, row.started_at, row.next_attempt_at) == (RUNNING, 2, at(1), None)

    def test_the_fire_ends_with_the_outcome_of_its_last_attempt(self, store: Store) -> None:
        store.declare_schedule(sched())
        key = self.claimed(store, 0)
        store.finish_runs(
            [Outcome(key, QUEUED, None, error="E: 1", traceback="tb 1", attempt=2, next_attempt_at=at(1))]
        )
        store.start_run(key, at(1))
        assert store.finish_runs([done(key, SUCCEEDED, 1.5, attempt=2, run_id="r-2", output="ok\n")]) == [
            True
        ]
        (row,) = store.history("etl")
        assert (row.status, row.attempt, row.error, row.traceback) == (SUCCEEDED, 2, None, None)
        assert (row.run_id, row.output, row.completed_at, row.next_attempt_at) == (
            "r-2",
            "ok\n",
            at(1.5),
            None,
        )
        assert store.active_runs() == []

    def test_two_outcomes_of_one_run_in_a_batch_apply_in_order(self, store: Store) -> None:
        store.declare_schedule(sched())
        retried, finished = self.claimed(store, 0), self.claimed(store, 1)
        answers = store.finish_runs(
            [
                Outcome(retried, QUEUED, None, attempt=2, next_attempt_at=at(2)),
                done(retried, FAILED, 2.5, attempt=2, error="E: 2"),
                done(finished, SUCCEEDED, 1.5),
                done(finished, FAILED, 1.6),
            ]
        )
        assert answers == [True, True, True, False]
        assert [(r.status, r.attempt) for r in store.history("etl")] == [(SUCCEEDED, 1), (FAILED, 2)]

    def test_an_owner_s_outcome_replaces_a_lost_verdict(self, store: Store) -> None:
        store.declare_schedule(sched())
        key = self.claimed(store, 0, node="node-a")
        assert len(store.mark_node_lost("node-a", "node-a missed its heartbeat")) == 1
        # node-a was alive after all (a long pause): its real outcome is the truth.
        assert store.finish_runs([done(key, SUCCEEDED, 0.5, node_id="node-a", run_id="r-1")]) == [True]
        (row,) = store.history("etl")
        assert (row.status, row.run_id, row.reason, row.node_id) == (SUCCEEDED, "r-1", None, "node-a")
        assert store.active_runs() == []
        stats = store.stats("etl")
        assert (stats.succeeded, stats.lost) == (1, 0)

    def test_an_owner_s_retry_makes_a_lost_run_active_again(self, store: Store) -> None:
        store.declare_schedule(sched())
        key = self.claimed(store, 0, node="node-a")
        store.mark_node_lost("node-a", "gone")
        retry = Outcome(key, QUEUED, None, attempt=2, next_attempt_at=at(1), node_id="node-a")
        assert store.finish_runs([retry]) == [True]
        assert [(r.status, r.attempt) for r in store.active_runs()] == [(QUEUED, 2)]
        assert claim_one(store, "etl", 1)[0].status == SKIPPED  # type: ignore[index]

    def test_a_lost_verdict_stands_against_any_other_outcome(self, store: Store) -> None:
        store.declare_schedule(sched())
        key = self.claimed(store, 0, node="node-a")
        store.mark_node_lost("node-a", "node-a missed its heartbeat")
        answers = store.finish_runs(
            [done(key, SUCCEEDED, node_id="node-b"), done(key, SUCCEEDED), done(key, FAILED, node_id="")]
        )
        assert answers == [False, False, False]
        (row,) = store.history("etl")
        assert (row.status, row.reason) == (LOST, "node-a missed its heartbeat")

    def test_a_final_outcome_is_never_overwritten_even_by_the_owner(self, store: Store) -> None:
        store.declare_schedule(sched())
        key = self.claimed(store, 0, node="node-a")
        assert store.finish_runs([done(key, FAILED, node_id="node-a")]) == [True]
        assert store.finish_runs([done(key, SUCCEEDED, node_id="node-a")]) == [False]
        assert history_statuses(store, "etl") == [FAILED]

    def test_traceback_and_output_are_kept_bounded_with_their_tail(self, store: Store) -> None:
        store.declare_schedule(sched())
        key = self.claimed(store, 0)
        huge = "x" * (3 * MAX_RUN_TEXT) + "the end\n"
        store.finish_runs([done(key, FAILED, traceback=huge, output="o" * MAX_RUN_TEXT + "last line\n")])
        (row,) = store.history("etl")
        assert row.traceback is not None and row.output is not None
        assert len(row.traceback) <= MAX_RUN_TEXT and row.traceback.endswith("x" * 100 + "the end\n")
        assert len(row.output) <= MAX_RUN_TEXT and row.output.endswith("last line\n")
        assert "characters cut" in row.traceback

    def test_a_run_id_or_error_of_any_type_is_stored_as_its_text(self, store: Store) -> None:
        store.declare_schedule(sched())
        key = self.claimed(store, 0)
        run_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
        error = ValueError("bad")
        assert store.finish_runs([done(key, FAILED, run_id=run_id, error=error)]) == [True]
        (row,) = store.history("etl")
        assert (row.run_id, row.error) == ("12345678-1234-5678-1234-567812345678", "bad")

    def test_texts_no_database_can_keep_are_stored_escaped_never_refused(self, store: Store) -> None:
        """A NUL (PostgreSQL's text refuses it) or a lone surrogate (not UTF-8: no driver sends it;
        ``os.fsdecode`` makes them of a file name that is not UTF-8) in a job's error, traceback,
        output, run_id or reason: refused, the outcome would wait forever and every claim that
        carries it would fail with it, silencing every schedule of the process."""
        store.declare_schedule(sched())
        key, other = self.claimed(store, 0), self.claimed(store, 1)
        bad = "caf\udce9 \x00 end"
        outcome = Outcome(
            key, FAILED, at(0.5), error=f"FileNotFoundError: {bad}", traceback=bad, output=bad, run_id=bad
        )
        assert store.finish_runs([outcome, done(other)]) == [True, True]
        assert store.finish_run(self.claimed(store, 2), FAILED, at(2.5), 1.0, error=bad, reason=bad) is True
        escaped = "caf\\udce9 \\x00 end"
        rows = {row.fire_time: row for row in store.history("etl")}
        first = rows[at(0)]
        assert (first.status, first.error, first.traceback, first.output, first.run_id) == (
            FAILED,
            f"FileNotFoundError: {escaped}",
            escaped,
            escaped,
            escaped,
        )
        assert (rows[at(2)].error, rows[at(2)].reason) == (escaped, escaped)
        assert rows[at(1)].status == SUCCEEDED

    def test_a_claimed_record_with_a_text_no_database_can_keep_is_stored_escaped(self, store: Store) -> None:
        store.declare_schedule(sched())
        record = RunRecord("k", "etl", T0, MISSED, node_id="node-a", reason="why \x00", error="e \ud800")
        (stored,) = store.claim("etl", T0, at(1), [record], 1) or []
        assert (stored.reason, stored.error) == ("why \\x00", "e \\ud800")
        assert store.history("etl") == [stored]

    @pytest.mark.parametrize("status", [RUNNING, "finished", ""])
    def test_an_outcome_neither_final_nor_a_retry_is_rejected_before_anything_is_written(
        self, store: Store, status: str
    ) -> None:
        store.declare_schedule(sched())
        key, other = self.claimed(store, 0), self.claimed(store, 1)
        with pytest.raises(ValueError, match="neither a final status"):
            store.finish_runs([done(other), done(key, status)])
        assert history_statuses(store, "etl") == [RUNNING, RUNNING]

    def test_a_final_outcome_without_its_end_is_rejected(self, store: Store) -> None:
        store.declare_schedule(sched())
        key = self.claimed(store, 0)
        with pytest.raises(ValueError, match="completed_at"):
            store.finish_runs([Outcome(key, SUCCEEDED, None)])
        with pytest.raises(ValueError, match="naive"):
            store.finish_runs([Outcome(key, SUCCEEDED, datetime(2024, 3, 10, 6, 1))])
        assert history_statuses(store, "etl") == [RUNNING]

    def test_finish_run_keeps_the_attempt_and_texts_it_does_not_take(self, store: Store) -> None:
        store.declare_schedule(sched())
        key = self.claimed(store, 0)
        store.finish_runs(
            [Outcome(key, QUEUED, None, traceback="tb 1", output="o 1", attempt=2, next_attempt_at=at(1))]
        )
        store.start_run(key, at(1))
        assert store.finish_run(key, SUCCEEDED, at(1.5), 30.0, run_id=uuid.UUID(int=7)) is True
        (row,) = store.history("etl")
        assert (row.status, row.attempt, row.traceback, row.output) == (SUCCEEDED, 2, "tb 1", "o 1")
        assert (row.next_attempt_at, row.run_id) == (None, str(uuid.UUID(int=7)))

    def test_finish_run_is_the_one_outcome_case_without_the_lost_override(self, store: Store) -> None:
        store.declare_schedule(sched())
        key = self.claimed(store, 0)
        store.mark_node_lost("node-a", "gone")
        assert store.finish_run(key, SUCCEEDED, at(0.5), 1.0) is False
        other = self.claimed(store, 1)
        with pytest.raises(ValueError, match="final status"):
            store.finish_run(other, QUEUED, at(1.5), 1.0)
        assert store.finish_run(other, TIMED_OUT, at(1.5), 30.0, reason="timed out") is True
        assert store.stats("etl").timed_out == 1


class TestRunFields:
    """attempt, traceback, output and next_attempt_at: written by claims and outcomes, read everywhere."""

    def record(self, key: str = "k", status: str = QUEUED) -> RunRecord:
        return RunRecord(
            key,
            "etl",
            T0,
            status,
            node_id="node-a",
            attempt=3,
            traceback="tb",
            output="out",
            next_attempt_at=at(2),
            error="E: x",
            reason="manual",
        )

    def test_a_claimed_record_keeps_its_fields_in_every_reader(self, store: Store) -> None:
        store.declare_schedule(sched())
        mine = self.record()
        claimed = store.claim("etl", T0, at(1), [mine], 1)
        assert claimed == [mine]
        assert store.history("etl") == [mine]
        assert store.active_runs() == [mine] and store.active_runs("etl") == [mine]
        (lost,) = store.mark_node_lost("node-a", "gone")
        assert lost == mine.with_status(LOST, "gone")
        assert store.history("etl") == [lost]

    def test_a_group_claimed_record_keeps_its_fields(self, store: Store) -> None:
        store.declare_schedule(sched())
        store.declare_schedule(sched("other"))
        mine = self.record()
        results = store.claim_many([Claim("etl", T0, at(1), [mine], 1), claim_of("other", 0)])
        assert results[0] == [mine] and store.history("etl") == [mine]

    def test_a_new_run_starts_at_attempt_one_without_texts(self, store: Store) -> None:
        store.declare_schedule(sched())
        assert claim_one(store, "etl", 0) is not None
        (row,) = store.history("etl")
        assert (row.attempt, row.traceback, row.output, row.next_attempt_at) == (1, None, None, None)

    def test_texts_of_a_claimed_record_are_bounded(self, store: Store) -> None:
        store.declare_schedule(sched())
        long = RunRecord(
            "k", "etl", T0, FAILED, output="y" * (MAX_RUN_TEXT + 10), traceback="z" * MAX_RUN_TEXT
        )
        (stored,) = store.claim("etl", T0, at(1), [long], 1) or []
        assert len(stored.output or "") <= MAX_RUN_TEXT and (stored.output or "").endswith("y" * 100)
        assert store.history("etl") == [stored]


class TestNodeExpiry:
    def test_a_node_silent_longer_than_the_timeout_has_expired(
        self, store: Store, request: pytest.FixtureRequest
    ) -> None:
        import time

        now = datetime.now(timezone.utc)
        for node_id in ("node-b", "node-a"):
            store.heartbeat(NodeRecord(node_id, "host-1", 1, now, now))
        time.sleep(0.05)
        later = datetime.now(timezone.utc)
        assert store.expired_nodes(3600, later) == []
        assert [n.node_id for n in store.expired_nodes(0.01, later)] == ["node-a", "node-b"]

    def test_expiry_is_judged_on_the_store_s_clock(
        self, store: Store, request: pytest.FixtureRequest
    ) -> None:
        store.heartbeat(NodeRecord("old", "h", 1, T0, at(0)))
        store.heartbeat(NodeRecord("new", "h", 2, T0, at(1)))
        if uses_server_clock(request):
            # Heartbeats carry the server's instant, and so does expiry: a client clock a year
            # ahead declares nobody dead.
            assert store.expired_nodes(59.5, datetime.now(timezone.utc) + timedelta(days=365)) == []
            return
        # One clock for every writer: the instants given are the truth.
        assert store.expired_nodes(60, at(1)) == []  # exactly the timeout is not more than it
        assert store.expired_nodes(59.5, at(1)) == [NodeRecord("old", "h", 1, T0, at(0))]
        assert [n.node_id for n in store.expired_nodes(30, at(2))] == ["new", "old"]

    def test_no_nodes_none_expired(self, store: Store) -> None:
        assert store.expired_nodes(0, datetime.now(timezone.utc)) == []


class TestDeclaredBy:
    """``mark_declared``: which node last declared a schedule, and when (the store's clock)."""

    def test_mark_declared_stamps_each_named_schedule_with_the_node_and_now(self, store: Store) -> None:
        for name in ("a", "b", "c"):
            store.declare_schedule(sched(name))
        before = datetime.now(timezone.utc) - timedelta(seconds=5)
        store.mark_declared("node-a", ["a", "c", "no-such-schedule"])
        after = datetime.now(timezone.utc) + timedelta(seconds=5)
        by_name = {s.name: s for s in store.list_schedules()}
        assert (by_name["a"].declared_by, by_name["c"].declared_by, by_name["b"].declared_by) == (
            "node-a",
            "node-a",
            None,
        )
        declared = by_name["a"].declared_at
        assert declared is not None and before <= declared <= after and declared.utcoffset() == timedelta(0)
        assert by_name["b"].declared_at is None
        assert store.get_schedule("c") == by_name["c"]

    def test_the_last_node_to_declare_a_schedule_is_recorded(self, store: Store) -> None:
        store.declare_schedule(sched())
        store.mark_declared("node-a", ["etl"])
        store.mark_declared("node-b", ["etl"])
        assert store.get_schedule("etl").declared_by == "node-b"  # type: ignore[union-attr]

    def test_re_declaring_a_schedule_keeps_who_declared_it(self, store: Store) -> None:
        store.declare_schedule(sched())
        store.mark_declared("node-a", ["etl"])
        stamped = store.get_schedule("etl")
        assert stamped is not None
        same = store.declare_schedule(sched(declared_by="node-x"))
        assert (same.declared_by, same.declared_at) == ("node-a", stamped.declared_at)
        redefined = store.declare_schedule(sched(definition_hash="h2", declared_by="node-x"))
        assert (redefined.declared_by, redefined.declared_at) == ("node-a", stamped.declared_at)
        assert store.get_schedule("etl") == redefined

    def test_a_schedule_declared_with_its_node_stores_it(self, store: Store) -> None:
        stamp = T0 + timedelta(microseconds=7)
        stored = store.declare_schedule(sched(declared_by="node-a", declared_at=stamp))
        assert (stored.declared_by, stored.declared_at) == ("node-a", stamp)
        assert store.get_schedule("etl") == stored
        assert store.list_schedules() == [stored] and store.changed_since(T0 - timedelta(days=1)) == [stored]

    def test_marking_declared_is_not_a_change_of_definition(self, store: Store) -> None:
        import time

        store.declare_schedule(sched())
        time.sleep(0.002)
        mark = datetime.now(timezone.utc)
        time.sleep(0.002)
        store.mark_declared("node-a", ["etl"])
        assert store.changed_since(mark) == [] and store.schedule_versions(mark) == {}
        store.mark_declared("node-a", [])

    def test_claims_and_enabling_keep_the_declaring_node(self, store: Store) -> None:
        store.declare_schedule(sched())
        store.mark_declared("node-a", ["etl"])
        assert claim_one(store, "etl", 0) is not None
        store.set_enabled("etl", False, None)
        assert store.get_schedule("etl").declared_by == "node-a"  # type: ignore[union-attr]


# -- migration ------------------------------------------------------------------------

_V1_ROWS = (
    "INSERT INTO schema_version (id, version) VALUES (1, 1)",
    "INSERT INTO schedules (name, type, value, timezone, definition_hash, options, context, enabled, "
    "next_fire, last_fire, created_at, updated_at) VALUES ('etl', 'interval', '60', 'UTC', 'h1', "
    f"'{{\"catchup\":\"all\"}}', '{{}}', 1, {int(at(2).timestamp()) * 10**6}, "
    f"{int(at(1).timestamp()) * 10**6}, {int(T0.timestamp()) * 10**6}, {int(T0.timestamp()) * 10**6})",
    "INSERT INTO runs (run_key, schedule, fire_time, status, node_id, started_at, completed_at, "
    "duration_seconds, error, run_id, reason) VALUES "
    f"('done', 'etl', {int(T0.timestamp()) * 10**6}, 'failed', 'node-a', NULL, "
    f"{int(at(0.5).timestamp()) * 10**6}, 30.0, 'E: boom', 'r-1', NULL), "
    f"('busy', 'etl', {int(at(1).timestamp()) * 10**6}, 'running', 'node-a', NULL, NULL, NULL, NULL, NULL, "
    "'manual')",
    "INSERT INTO nodes (node_id, hostname, pid, started_at, heartbeat) VALUES "
    f"('node-a', 'host-1', 7, {int(T0.timestamp()) * 10**6}, {int(at(1).timestamp()) * 10**6})",
)


def _v1_statements() -> List[str]:
    from flowyml_lite.stores.schema import _V1, VERSION_TABLE_DDL

    return [VERSION_TABLE_DDL, *_V1, *_V1_ROWS]


def _v1_sqlite_file(path: Any) -> None:
    import sqlite3

    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        for statement in _v1_statements():
            conn.execute(statement)
    finally:
        conn.close()


def _v1_store(kind: str, request: pytest.FixtureRequest, tmp_path: Any) -> Store:
    """A store of ``kind`` (not yet opened) over a database written with the version-1 schema."""
    from tests.stores.conftest import STORE_FACTORIES

    if kind in ("sqlite", "sqlalchemy-sqlite"):
        _v1_sqlite_file(tmp_path / "store.db")
        return STORE_FACTORIES[kind](request, tmp_path)
    url = request.getfixturevalue("postgres_url")
    sa = pytest.importorskip("sqlalchemy", reason="the sqlalchemy extra is not installed")
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    from flowyml_lite_ext.sqlalchemy_store import SQLAlchemyStore

    schema = f"test_{uuid.uuid4().hex[:16]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
        for statement in _v1_statements():
            conn.exec_driver_sql(statement)
    store = SQLAlchemyStore(url, schema=schema)

    def drop() -> None:
        store.close()
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()

    request.addfinalizer(drop)
    return store


class TestMigrationFromVersionOne:
    """A database written by the first schema opens at the current version with every row intact."""

    @pytest.mark.parametrize("kind", ["sqlite", "sqlalchemy-sqlite", "sqlalchemy-postgresql"])
    def test_a_version_one_database_opens_at_the_current_version_with_its_rows(
        self, kind: str, request: pytest.FixtureRequest, tmp_path: Any
    ) -> None:
        store = _v1_store(kind, request, tmp_path)
        store.open()
        try:
            got = store.get_schedule("etl")
            assert got is not None
            assert (got.next_fire, got.last_fire, got.options, got.enabled) == (
                at(2),
                at(1),
                {"catchup": "all"},
                True,
            )
            assert (got.declared_by, got.declared_at) == (None, None)
            rows = store.history("etl")
            assert [
                (r.run_key, r.status, r.attempt, r.traceback, r.output, r.next_attempt_at) for r in rows
            ] == [
                ("busy", RUNNING, 1, None, None, None),
                ("done", FAILED, 1, None, None, None),
            ]
            assert (rows[1].error, rows[1].run_id, rows[1].duration_seconds) == ("E: boom", "r-1", 30.0)
            assert rows[0].reason == "manual"
            assert [n.node_id for n in store.list_nodes()] == ["node-a"]
            # The migrated database takes the new fields.
            assert store.finish_runs([Outcome("busy", QUEUED, None, attempt=2, next_attempt_at=at(3))]) == [
                True
            ]
            store.mark_declared("node-b", ["etl"])
            assert store.get_schedule("etl").declared_by == "node-b"  # type: ignore[union-attr]
            assert store.claim_many([claim_of("etl", 2, max_instances=2)])[0] is not None
            assert [(r.status, r.attempt) for r in store.active_runs("etl")] == [(QUEUED, 2), (RUNNING, 1)]
        finally:
            store.close()
        store.open()  # a second opening finds nothing to migrate
        assert len(store.history("etl")) == 3
        store.close()
        if kind == "sqlite":
            import sqlite3

            from flowyml_lite.stores.schema import SCHEMA_VERSION

            conn = sqlite3.connect(str(tmp_path / "store.db"))
            try:
                assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
                assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            finally:
                conn.close()
