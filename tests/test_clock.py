"""SystemClock and FakeClock: readings, moving fake time, and waits that fake time ends."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import List

import pytest

from flowyml_lite.clock import SYSTEM_CLOCK, Clock, FakeClock, SystemClock

START = datetime(2024, 3, 10, 6, 0, tzinfo=timezone.utc)


class Waiter:
    """A thread that waits on a condition through a clock until told to stop, counting wake-ups."""

    def __init__(self, clock: Clock, timeout: float = 3600.0) -> None:
        self.clock = clock
        self.condition = threading.Condition()
        self.wakeups = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.timeout = timeout

    def _run(self) -> None:
        with self.condition:
            while not self.stop:
                self.clock.now()
                self.clock.wait(self.condition, self.timeout)
                self.wakeups += 1
                self.condition.notify_all()  # tells a test in woken() that we woke

    def woken(self, times: int) -> int:
        """Wait (at most 10 real seconds) until the thread woke ``times`` times; the count then."""
        with self.condition:
            self.condition.wait_for(lambda: self.wakeups >= times, 10.0)
            return self.wakeups

    def __enter__(self) -> Waiter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self.condition:
            self.stop = True
            self.condition.notify_all()
        self.thread.join(10.0)
        assert not self.thread.is_alive()


class TestSystemClock:
    def test_now_is_aware_utc(self) -> None:
        now = SystemClock().now()
        assert now.tzinfo is timezone.utc
        assert abs(now - datetime.now(timezone.utc)) < timedelta(minutes=1)

    def test_monotonic_never_goes_back(self) -> None:
        readings = [SYSTEM_CLOCK.monotonic() for _ in range(100)]
        assert readings == sorted(readings)

    def test_wait_returns_when_notified(self) -> None:
        with Waiter(SYSTEM_CLOCK) as waiter, waiter.condition:
            waiter.condition.notify_all()

    def test_wait_with_a_past_deadline_returns_at_once(self) -> None:
        condition = threading.Condition()
        with condition:
            SYSTEM_CLOCK.wait(condition, -5.0)
            SYSTEM_CLOCK.wait(condition, 0.0)


class TestFakeClockReadings:
    def test_now_is_the_start_instant_until_moved(self) -> None:
        clock = FakeClock(START)
        assert clock.now() == START and clock.now() == START

    def test_an_aware_start_in_another_zone_is_converted_to_utc(self) -> None:
        plus_two = timezone(timedelta(hours=2))
        clock = FakeClock(datetime(2024, 1, 1, 12, tzinfo=plus_two))
        assert clock.now() == datetime(2024, 1, 1, 10, tzinfo=timezone.utc)
        assert clock.now().tzinfo is timezone.utc

    def test_a_naive_start_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="aware"):
            FakeClock(datetime(2024, 1, 1))

    def test_advance_moves_now_and_monotonic_by_seconds_or_a_timedelta(self) -> None:
        clock = FakeClock(START)
        mono = clock.monotonic()
        assert clock.advance(90) == START + timedelta(seconds=90)
        clock.advance(timedelta(hours=1))
        assert clock.now() == START + timedelta(seconds=3690)
        assert clock.monotonic() == mono + 3690

    def test_advance_refuses_to_go_back(self) -> None:
        with pytest.raises(ValueError, match="negative"):
            FakeClock(START).advance(-1)

    def test_set_forward_moves_monotonic_and_set_back_leaves_it(self) -> None:
        clock = FakeClock(START)
        mono = clock.monotonic()
        clock.set(START + timedelta(days=1))
        assert clock.monotonic() == mono + 86400
        clock.set(START)
        assert clock.now() == START and clock.monotonic() == mono + 86400

    def test_it_satisfies_the_clock_protocol(self) -> None:
        clocks: List[Clock] = [FakeClock(START), SystemClock()]
        assert all(isinstance(c.now(), datetime) for c in clocks)


class TestFakeClockWaits:
    def test_advance_wakes_a_waiting_thread(self) -> None:
        clock = FakeClock(START)
        with Waiter(clock) as waiter:
            assert clock.wait_for_waiters(1)
            clock.advance(1)
            assert waiter.woken(1) == 1
            assert clock.wait_for_waiters(1)  # it looped and waits again

    def test_set_wakes_a_waiting_thread(self) -> None:
        clock = FakeClock(START)
        with Waiter(clock) as waiter:
            assert clock.wait_for_waiters(1)
            clock.set(START - timedelta(hours=1))
            assert waiter.woken(1) == 1

    def test_every_waiter_wakes_on_advance(self) -> None:
        clock = FakeClock(START)
        with Waiter(clock) as a, Waiter(clock) as b:
            assert clock.wait_for_waiters(2)
            clock.advance(5)
            assert (a.woken(1), b.woken(1)) == (1, 1)

    def test_a_real_notify_wakes_a_fake_wait(self) -> None:
        clock = FakeClock(START)
        with Waiter(clock) as waiter:
            assert clock.wait_for_waiters(1)
            with waiter.condition:
                waiter.condition.notify_all()
            assert waiter.woken(1) == 1
            assert clock.now() == START

    def test_a_wait_whose_deadline_has_passed_returns_without_blocking(self) -> None:
        clock = FakeClock(START)
        condition = threading.Condition()
        with condition:
            clock.now()
            clock.wait(condition, 0)
            clock.wait(condition, -1)
        assert clock.waiting == 0

    def test_a_move_between_reading_the_time_and_waiting_is_not_slept_through(self) -> None:
        # The caller reads the time, another thread moves the clock past the caller's deadline,
        # then the caller waits: the deadline counts from its reading, so the wait returns at once.
        clock = FakeClock(START)
        condition = threading.Condition()
        with condition:
            clock.now()
            mover = threading.Thread(target=clock.advance, args=(10,))
            mover.start()
            mover.join()
            clock.wait(condition, 10.0)  # would block forever if the deadline counted from now
        assert clock.waiting == 0

    def test_time_does_not_pass_by_itself(self) -> None:
        clock = FakeClock(START)
        with Waiter(clock, timeout=0.001) as waiter:
            assert clock.wait_for_waiters(1)
            threading.Event().wait(0.05)  # real time passes; a fake 1 ms timeout must not end the wait
            with waiter.condition:
                assert waiter.wakeups == 0
        assert clock.now() == START

    def test_wait_for_waiters_gives_up_when_nobody_waits(self) -> None:
        assert FakeClock(START).wait_for_waiters(1, timeout=0.01) is False

    def test_a_waiter_on_a_reentrant_condition_is_woken(self) -> None:
        clock = FakeClock(START)
        condition = threading.Condition(threading.RLock())
        woke = threading.Event()

        def run() -> None:
            with condition, condition:
                clock.now()
                clock.wait(condition, 60)
                woke.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert clock.wait_for_waiters(1)
        clock.advance(60)
        assert woke.wait(10.0)
        thread.join(10.0)
