"""Start lags, and when health says fires start late: a tenth of the starts of the last minute, or a
few if they are a hundredth; one hiccup among many on-time starts is not news, a minute on time
clears it."""

from __future__ import annotations

from typing import Any, List

from flowyml_lite.runtime import lateness
from flowyml_lite.runtime.lateness import StartLags


def lags_at(monkeypatch: Any, starts: List[tuple]) -> StartLags:
    """StartLags holding ``(seconds ago, lag)`` starts, read at monotonic time 1,000."""
    clock = [0.0]
    monkeypatch.setattr(lateness.time, "monotonic", lambda: clock[0])
    lags = StartLags()
    for ago, lag in sorted(starts, key=lambda s: -s[0]):
        clock[0] = 1000.0 - ago
        lags.add(lag)
    clock[0] = 1000.0
    monkeypatch.setattr(lateness, "REREAD_SECONDS", 0.0)
    return lags


class TestWhenFiresStartLate:
    def test_on_time_starts_are_no_problem(self, monkeypatch: Any) -> None:
        assert lags_at(monkeypatch, [(i, 0.002) for i in range(50)]).problem() is None

    def test_three_late_starts_in_the_last_minute_are(self, monkeypatch: Any) -> None:
        starts = [(i, 0.002) for i in range(50)] + [(5, 1.4), (6, 1.6), (7, 1.2)]
        problem = lags_at(monkeypatch, starts).problem()
        assert problem is not None
        assert problem.startswith("3 of 53 fire(s) in the last 60 s started more than 1 s after")
        assert "(the worst 1.6 s late)" in problem

    def test_one_late_start_among_many_on_time_is_not(self, monkeypatch: Any) -> None:
        starts = [(i * 0.5, 0.002) for i in range(100)] + [(10, 2.5)]
        assert lags_at(monkeypatch, starts).problem() is None

    def test_a_few_late_among_thousands_on_time_are_not(self, monkeypatch: Any) -> None:
        """A peer died: the fires it held start 2 s late on the others, a handful among thousands."""
        starts = [(1 + i * 0.05, 0.002) for i in range(970)] + [(0.1 * i, 2.0) for i in range(6)]
        assert lags_at(monkeypatch, starts).problem() is None
        more = starts + [(0.6 + 0.05 * i, 2.0) for i in range(6)]  # 12 of 982: over a hundredth
        assert lags_at(monkeypatch, more).problem() is not None

    def test_twenty_starts_on_time_since_the_last_late_one_end_it(self, monkeypatch: Any) -> None:
        """The store came back after an outage: the fires it held started seconds late, and the
        fires since start on time; health is running again without waiting for the minute to pass."""
        late = [(30 - i * 0.1, 5.0) for i in range(40)]
        assert lags_at(monkeypatch, late + [(20 - i * 0.1, 0.002) for i in range(19)]).problem() is not None
        assert lags_at(monkeypatch, late + [(20 - i * 0.1, 0.002) for i in range(20)]).problem() is None

    def test_a_late_start_of_the_only_schedule_is(self, monkeypatch: Any) -> None:
        """A schedule every minute that starts 1.5 s late: one start in the window, and it is late."""
        problem = lags_at(monkeypatch, [(30, 1.5)]).problem()
        assert problem is not None and problem.startswith("1 of 1 fire(s)")

    def test_late_starts_older_than_the_window_are_forgotten(self, monkeypatch: Any) -> None:
        starts = [(70, 3.0), (65, 3.0), (61, 3.0)] + [(i, 0.002) for i in range(10)]
        assert lags_at(monkeypatch, starts).problem() is None

    def test_sorted_gives_every_lag_for_the_percentiles(self, monkeypatch: Any) -> None:
        assert lags_at(monkeypatch, [(3, 0.3), (2, 0.1), (1, 0.2)]).sorted() == [0.1, 0.2, 0.3]


def test_problem_is_worked_out_again_at_most_every_quarter_second(monkeypatch: Any) -> None:
    clock = [1000.0]
    monkeypatch.setattr(lateness.time, "monotonic", lambda: clock[0])
    lags = StartLags()
    assert lags.problem() is None
    for _ in range(5):
        lags.add(3.0)
    assert lags.problem() is None  # the answer of a moment ago
    clock[0] += 0.3
    assert lags.problem() is not None
