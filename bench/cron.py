#!/usr/bin/env python3
"""Benchmark: the native cron engine (``CronExpression``) against croniter, cronsim, APScheduler 3's
CronTrigger and croniter-rs. A benchmark, not a test: it prints numbers and says which of the
project's targets are met; it fails only if it cannot run.

Measured, for each expression in UTC and in America/New_York:
- **iterate**: µs per next fire when iterating (each library's own way: ``next()`` on
  ``CronExpression.iter``, ``croniter.get_next(datetime)``, ``next(CronSim)``,
  ``CronTrigger.get_next_fire_time(prev, prev)``, croniter-rs ``get_next(datetime)``);
- **first**: µs to construct and get the first fire (native: the compile cache is warm, as it is for
  a scheduler that recomputes a schedule; the ``cold`` column clears it first);
- **chain**: µs per call of what the scheduler calls after each fire, ``fire = f(fire)``:
  ``trigger`` is ``flowyml_lite.core.triggers.CronTrigger.next_after`` (it resumes the search kept
  from its previous answer), ``next_utc`` the stateless ``CronExpression.next_utc`` (a new search
  every call). Shown beside native iteration and croniter-rs's construct + first.
The implementations are interleaved: every round measures every case, rotating the order of the
implementations, and each number is the median over the rounds. Then the import time of each
library (a fresh interpreter per sample, median).

croniter-rs is not DST-aware: it runs on naive wall times (the zone's wall clock at the start), so
its New York rows search the same wall times without any zone arithmetic. APScheduler 3 has no
``L``: n/a.

    python bench/cron.py            # ~1 minute
    python bench/cron.py --quick    # ~10 s, noisier
    python bench/cron.py --profile  # also cProfile native iteration, split by module
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import math
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # flowyml_lite from this checkout

from flowyml_lite.core.triggers import CronTrigger  # noqa: E402
from flowyml_lite.cron import CronExpression  # noqa: E402
from flowyml_lite.cron import native as native_module  # noqa: E402

UTC = timezone.utc
EXPRESSIONS = ["* * * * *", "*/5 * * * *", "0 9 * * 1-5", "0 0 1 * *", "0 0 29 2 *", "0 12 L * *"]
ZONES = ["UTC", "America/New_York"]
START = datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC)
# A sample iterates at most this far, then starts a fresh iterator (untimed), so sparse
# expressions never run into year 9999 and every library searches the same years.
HORIZON_FIRES = {"0 0 29 2 *": 50, "0 0 1 * *": 1000, "0 12 L * *": 1000}
IMPLS = ["native", "croniter", "cronsim", "apscheduler", "croniter-rs"]

Step = Callable[[], Any]


class NotApplicable(Exception):
    """This implementation cannot run this case (e.g. APScheduler 3 and ``L``)."""


def zone_of(name: str) -> Any:
    from zoneinfo import ZoneInfo

    return UTC if name == "UTC" else ZoneInfo(name)


# -- the implementations: make(expr, zone) -> step() that returns the next fire ----------------------


def make_native(expr: str, zone: str) -> Step:
    return CronExpression(expr, zone).iter(START).__next__


def first_native(expr: str, zone: str) -> Any:
    return CronExpression(expr, zone).next(START)


class UncachedNative:
    """The native engine without its compile cache (``_compile`` unwrapped): a cold compile that
    leaves the cache, and so the other measurements, untouched."""

    name = "native-uncached"

    def compile(self, expression: str, hash_key: Optional[str] = None) -> Any:
        return native_module._compile.__wrapped__(expression, hash_key)


UNCACHED = UncachedNative()


def first_native_cold(expr: str, zone: str) -> Any:
    return CronExpression(expr, zone, engine=UNCACHED).next(START)


def make_croniter(expr: str, zone: str) -> Step:
    from croniter import croniter

    return functools.partial(croniter(expr, START.astimezone(zone_of(zone))).get_next, datetime)


def first_croniter(expr: str, zone: str) -> Any:
    from croniter import croniter

    return croniter(expr, START.astimezone(zone_of(zone))).get_next(datetime)


def make_cronsim(expr: str, zone: str) -> Step:
    from cronsim import CronSim

    return CronSim(expr, START.astimezone(zone_of(zone))).__next__


def first_cronsim(expr: str, zone: str) -> Any:
    from cronsim import CronSim

    return next(CronSim(expr, START.astimezone(zone_of(zone))))


def _trigger(expr: str, zone: str) -> Any:
    from apscheduler.triggers.cron import CronTrigger

    if "L" in expr:
        raise NotApplicable("APScheduler 3 has no L")
    return CronTrigger.from_crontab(expr, timezone=zone_of(zone))


def make_apscheduler(expr: str, zone: str) -> Step:
    trigger = _trigger(expr, zone)
    get = trigger.get_next_fire_time
    state = [START.astimezone(zone_of(zone))]

    def step() -> Any:
        fire = get(state[0], state[0])
        state[0] = fire
        return fire

    return step


def first_apscheduler(expr: str, zone: str) -> Any:
    start = START.astimezone(zone_of(zone))
    return _trigger(expr, zone).get_next_fire_time(start, start)


def make_croniter_rs(expr: str, zone: str) -> Step:
    import croniter_rs

    naive = START.astimezone(zone_of(zone)).replace(tzinfo=None)
    return functools.partial(croniter_rs.croniter(expr, naive).get_next, datetime)


def first_croniter_rs(expr: str, zone: str) -> Any:
    import croniter_rs

    naive = START.astimezone(zone_of(zone)).replace(tzinfo=None)
    return croniter_rs.croniter(expr, naive).get_next(datetime)


MAKERS: Dict[str, Callable[[str, str], Step]] = {
    "native": make_native,
    "croniter": make_croniter,
    "cronsim": make_cronsim,
    "apscheduler": make_apscheduler,
    "croniter-rs": make_croniter_rs,
}
FIRSTS: Dict[str, Callable[[str, str], Any]] = {
    "native": first_native,
    "native-cold": first_native_cold,
    "croniter": first_croniter,
    "cronsim": first_cronsim,
    "apscheduler": first_apscheduler,
    "croniter-rs": first_croniter_rs,
}
# The scheduler's call after each fire: ``fire = chain(fire)``.
CHAINS: Dict[str, Callable[[str, str], Callable[[datetime], Optional[datetime]]]] = {
    "trigger": lambda expr, zone: CronTrigger(expr, zone).next_after,
    "next_utc": lambda expr, zone: CronExpression(expr, zone).next_utc,
}

MODULES = {
    "croniter": "croniter",
    "cronsim": "cronsim",
    "apscheduler": "apscheduler.triggers.cron",
    "croniter-rs": "croniter_rs",
}


def available(impl: str) -> bool:
    module = MODULES.get(impl)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# -- timing ---------------------------------------------------------------------------------------


def time_iterate(impl: str, expr: str, zone: str, calls: int) -> float:
    """µs per step over ``calls`` steps, in chunks no longer than the case's horizon."""
    make = MAKERS[impl]
    chunk = min(calls, HORIZON_FIRES.get(expr, calls))
    total = 0
    done = 0
    while done < calls:
        step = make(expr, zone)  # untimed
        n = min(chunk, calls - done)
        t0 = time.perf_counter_ns()
        for _ in range(n):
            step()
        total += time.perf_counter_ns() - t0
        done += n
    return total / done / 1000


def time_chain(impl: str, expr: str, zone: str, calls: int) -> float:
    """µs per ``fire = f(fire)`` call; one trigger per sample, back to START at each horizon (a new
    search: the first call after it costs what a stateless call costs, and is counted)."""
    f = CHAINS[impl](expr, zone)  # untimed
    chunk = min(calls, HORIZON_FIRES.get(expr, calls))
    total = 0
    done = 0
    while done < calls:
        fire: Optional[datetime] = START
        n = min(chunk, calls - done)
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fire = f(fire)  # type: ignore[arg-type]
        total += time.perf_counter_ns() - t0
        done += n
    return total / done / 1000


def time_first(impl: str, expr: str, zone: str, calls: int) -> float:
    first = FIRSTS[impl]
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        first(expr, zone)
    return (time.perf_counter_ns() - t0) / calls / 1000


TIMERS: Dict[str, Callable[[str, str, str, int], float]] = {
    "iterate": time_iterate,
    "first": time_first,
    "chain": time_chain,
}


def calibrate(measure: Callable[[int], float], budget_s: float) -> int:
    """A call count that makes one sample last about ``budget_s``."""
    per_call_us = measure(20)
    return max(20, min(200000, int(budget_s * 1e6 / max(per_call_us, 0.05))))


Key = Tuple[str, str, str, str]  # (kind, impl, expr, zone)


def run_rounds(impls: List[str], rounds: int, budget_s: float) -> Dict[Key, Optional[float]]:
    cases = [(expr, zone) for expr in EXPRESSIONS for zone in ZONES]
    kinds: List[Tuple[str, str]] = [("iterate", impl) for impl in impls]
    kinds += [("first", impl) for impl in impls]
    if "native" in impls:
        kinds.append(("first", "native-cold"))
        kinds += [("chain", impl) for impl in CHAINS]
    counts: Dict[Key, int] = {}
    samples: Dict[Key, List[float]] = {}
    results: Dict[Key, Optional[float]] = {}
    for kind, impl in kinds:  # warm up (imports, zone tables, caches) and calibrate
        for expr, zone in cases:
            key = (kind, impl, expr, zone)
            timer = TIMERS[kind]
            try:
                timer(impl, expr, zone, HORIZON_FIRES.get(expr, 200))  # every year a sample visits
                counts[key] = calibrate(functools.partial(timer, impl, expr, zone), budget_s)
                samples[key] = []
            except NotApplicable:
                results[key] = None
    gc.disable()
    try:
        for r in range(rounds):
            for expr, zone in cases:
                order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]  # rotate every round
                for kind, impl in order:
                    key = (kind, impl, expr, zone)
                    if key not in samples:
                        continue
                    timer = TIMERS[kind]
                    samples[key].append(timer(impl, expr, zone, counts[key]))
            gc.collect()
    finally:
        gc.enable()
    for key, values in samples.items():
        results[key] = statistics.median(values)
    return results


def check_agreement(impls: List[str]) -> List[str]:
    """Where a peer's first fires differ from native's (in UTC): worth knowing next to its speed."""
    notes = []
    for expr in EXPRESSIONS:
        for zone in ZONES:
            ours = make_native(expr, zone)
            expected = [ours().astimezone(UTC) for _ in range(5)]
            for impl in impls:
                if impl == "native":
                    continue
                try:
                    step = MAKERS[impl](expr, zone)
                except NotApplicable:
                    continue
                got = []
                for _ in range(5):
                    fire = step()
                    if fire.tzinfo is None:  # croniter-rs: naive wall time in the zone
                        fire = fire.replace(tzinfo=zone_of(zone))
                    got.append(fire.astimezone(UTC))
                if got != expected:
                    first = next(i for i in range(5) if got[i] != expected[i])
                    notes.append(
                        f"{impl:12} {expr!r:15} {zone:17} fire #{first + 1}: "
                        f"{got[first].astimezone(zone_of(zone)).isoformat()} "
                        f"(native {expected[first].astimezone(zone_of(zone)).isoformat()})"
                    )
    return notes


# -- import time ----------------------------------------------------------------------------------


def import_times(runs: int) -> Dict[str, Tuple[float, float]]:
    """Per module: (ms of ``python -c 'import X'`` minus bare python, ms cumulative by -X importtime)."""
    modules = {
        "flowyml_lite": "flowyml_lite",
        "flowyml_lite.cron": "flowyml_lite.cron",
        **{impl: MODULES[impl] for impl in MODULES if available(impl)},
    }
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONDONTWRITEBYTECODE="")

    def wall(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        return (time.perf_counter() - t0) * 1000

    def cumulative(module: str) -> float:
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stderr
        total = 0.0
        for line in out.splitlines():
            parts = line.split("|")
            # Top-level imports of the -c statement are the unindented names: the module and
            # the packages above it.
            top_level = len(parts) == 3 and not parts[2].startswith("  ") and parts[1].strip().isdigit()
            if top_level:
                name = parts[2].strip()
                if module == name or module.startswith(name + "."):
                    total += int(parts[1]) / 1000
        return total

    for module in modules.values():  # compile .pyc files first
        wall(f"import {module}")
    bare: List[float] = []
    walls: Dict[str, List[float]] = {name: [] for name in modules}
    for _ in range(runs):
        bare.append(wall("pass"))
        for name, module in modules.items():
            walls[name].append(wall(f"import {module}"))
    base = statistics.median(bare)
    return {
        name: (statistics.median(walls[name]) - base, statistics.median(cumulative(m) for m in [module] * 3))
        for name, module in modules.items()
    }


# -- profile --------------------------------------------------------------------------------------


def profile_native(cases: List[Tuple[str, str]], calls: int) -> None:
    """cProfile of native iteration: internal time by source file, C calls charged to their callers."""
    for expr, zone in cases:
        step = make_native(expr, zone)
        step()  # zone tables and compile cache warm, as in the timed runs
        profiler = cProfile.Profile()
        profiler.enable()
        done = 0
        while done < calls:
            step = make_native(expr, zone)
            for _ in range(min(calls - done, HORIZON_FIRES.get(expr, calls))):
                step()
                done += 1
        profiler.disable()
        stats: Dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        by_file: Dict[str, float] = {}

        def charge(where: str, seconds: float, by_file: Dict[str, float] = by_file) -> None:
            name = os.path.relpath(where, ROOT) if where.startswith(ROOT) else os.path.basename(where)
            by_file[name] = by_file.get(name, 0.0) + seconds

        for (filename, _, _), (_, _, tottime, _, callers) in stats.items():
            if filename == "~" and callers:  # a C function: charge each caller what it spent there
                for (caller_file, _, _), caller_stats in callers.items():
                    charge(caller_file, caller_stats[2])
            else:
                charge(filename, tottime)
        total = sum(by_file.values()) or 1.0
        split = ", ".join(
            f"{name} {100 * t / total:.0f}%"
            for name, t in sorted(by_file.items(), key=lambda kv: -kv[1])
            if t / total >= 0.01
        )
        print(f"- {expr!r:15} {zone:17} {split}")


# -- report ---------------------------------------------------------------------------------------


def fmt(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def geomean(values: List[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def versions() -> str:
    from importlib import metadata

    out = []
    for dist in ["croniter", "cronsim", "APScheduler", "croniter-rs", "tzdata"]:
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return ", ".join(out)


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average {', '.join(f'{x:.2f}' for x in load)}"
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter samples")
    parser.add_argument("--rounds", type=int, help="rounds (default 9, quick 3)")
    parser.add_argument("--profile", action="store_true", help="always profile native iteration")
    parser.add_argument("--no-import", action="store_true", help="skip the import-time measurement")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    budget = 0.002 if args.quick else 0.006

    impls = [impl for impl in IMPLS if available(impl)]
    missing = [impl for impl in IMPLS if impl not in impls]
    print(f"# Cron engine benchmark ({'quick' if args.quick else 'full'}: {rounds} rounds)")
    print(f"machine: {machine()}")
    print(f"peers: {versions()}")
    if missing:
        print(f"not installed (skipped): {', '.join(missing)}")
    started = time.perf_counter()
    results = run_rounds(impls, rounds, budget)

    peers = [impl for impl in impls if impl != "native"]
    titles = [("iterate", "µs per next() when iterating"), ("first", "µs per construct + first next()")]
    for kind, title in titles:
        columns = impls + (["native-cold"] if kind == "first" and "native" in impls else [])
        print(f"\n## {title} (median of {rounds} rounds)\n")
        head = f"| {'expression':13} | {'zone':16} | " + " | ".join(f"{c:>11}" for c in columns)
        if kind == "iterate":
            head += " | " + " | ".join(f"{p + ' ×':>13}" for p in peers)
        print(head + " |")
        print("|" + "|".join("-" * (len(cell) + 2) for cell in head.strip("| ").split(" | ")) + "|")
        for expr in EXPRESSIONS:
            for zone in ZONES:
                row = f"| {expr:13} | {zone:16} | " + " | ".join(
                    f"{fmt(results.get((kind, c, expr, zone))):>11}" for c in columns
                )
                if kind == "iterate":
                    ours = results.get((kind, "native", expr, zone))
                    cells = []
                    for p in peers:
                        theirs = results.get((kind, p, expr, zone))
                        cells.append("n/a" if ours is None or theirs is None else f"{theirs / ours:.1f}")
                    row += " | " + " | ".join(f"{c:>13}" for c in cells)
                print(row + " |")

    chain_ratios: List[float] = []
    if "native" in impls:
        print(f"\n## µs per scheduler call, fire = f(fire), beside iterating (median of {rounds} rounds)\n")
        rs = "croniter-rs" in impls
        head = (
            f"| {'expression':13} | {'zone':16} | {'iterate':>9} | {'trigger':>9} | {'next_utc':>9} | "
            + (f"{'rs first':>9} | " if rs else "")
            + f"{'trigger ÷ iterate':>17} | {'next_utc ÷ trigger':>18} |"
        )
        print(head)
        print("|" + "|".join("-" * (len(cell) + 2) for cell in head.strip("| ").split(" | ")) + "|")
        for expr in EXPRESSIONS:
            for zone in ZONES:
                it = results.get(("iterate", "native", expr, zone))
                tr = results.get(("chain", "trigger", expr, zone))
                nu = results.get(("chain", "next_utc", expr, zone))
                first_rs = results.get(("first", "croniter-rs", expr, zone))
                ratio = tr / it if it and tr else None
                if ratio is not None:
                    chain_ratios.append(ratio)
                row = f"| {expr:13} | {zone:16} | {fmt(it):>9} | {fmt(tr):>9} | {fmt(nu):>9} | "
                if rs:
                    row += f"{fmt(first_rs):>9} | "
                row += f"{(f'{ratio:.2f}' if ratio else 'n/a'):>17} | "
                row += f"{(f'{nu / tr:.1f}' if nu and tr else 'n/a'):>18} |"
                print(row)
        print(
            "\n(iterate: next() on CronExpression.iter, aware datetimes in the zone; trigger and next_utc "
            "return aware UTC datetimes, what the scheduler stores; rs first: croniter-rs construct + first "
            "get_next on naive wall times)"
        )

    print("\n## Speed-up of native (geometric mean over the cases both run; >1 = native faster)\n")
    speedups: Dict[Tuple[str, str], float] = {}
    for kind in ("iterate", "first"):
        for p in peers:
            ratios: List[float] = []
            for expr in EXPRESSIONS:
                for zone in ZONES:
                    ours = results.get((kind, "native", expr, zone))
                    theirs = results.get((kind, p, expr, zone))
                    if ours and theirs:
                        ratios.append(theirs / ours)
            if ratios:
                speedups[(kind, p)] = geomean(ratios)
                print(f"- {kind:8} vs {p:12}: {speedups[(kind, p)]:6.1f}×  ({len(ratios)} cases)")

    imports: Dict[str, Tuple[float, float]] = {}
    if not args.no_import:
        runs = 5 if args.quick else 15
        print(f"\n## Import time (ms; median of {runs} fresh interpreters)\n")
        imports = import_times(runs)
        print("| module            | wall minus bare python | -X importtime cumulative |")
        print("|-------------------|------------------------|--------------------------|")
        for name, (wall_ms, cumulative_ms) in imports.items():
            print(f"| {name:17} | {wall_ms:22.1f} | {cumulative_ms:24.1f} |")

    notes = check_agreement(impls)
    if notes:
        print("\n## Where the peers' first five fires differ from native's (not errors of native)\n")
        for note in notes:
            print(f"- {note}")

    print("\n## Targets\n")
    slow = [
        (expr, zone)
        for expr in EXPRESSIONS
        for zone in ZONES
        if (results.get(("iterate", "native", expr, zone)) or 0) > 5
    ]
    worst = max(results.get(("iterate", "native", e, z)) or 0 for e in EXPRESSIONS for z in ZONES)
    lines = [
        (not slow, f"native ≤ 5 µs per iterated next() in every case (worst {worst:.2f} µs)"),
    ]
    for peer, target in [("cronsim", 10.0), ("croniter", 20.0)]:
        got = speedups.get(("iterate", peer))
        if got is not None:
            text = f"geomean speed-up ≥ {target:.0f}× over {peer} (iterating: {got:.1f}×)"
            lines.append((got >= target, text))
    rs = speedups.get(("iterate", "croniter-rs"))
    if rs is not None:
        lines.append((rs >= 1 / 3, f"within 3× of croniter-rs (native takes {1 / rs:.2f}× its time)"))
    if chain_ratios:
        worst_chain = max(chain_ratios)
        lines.append(
            (
                worst_chain <= 2.0,
                f"the scheduler's next_after(fire) within 2× of iterating in every case "
                f"(worst {worst_chain:.2f}×, geometric mean {geomean(chain_ratios):.2f}×)",
            )
        )
    if "flowyml_lite" in imports:
        ms = imports["flowyml_lite"][0]
        lines.append((ms <= 30, f"import flowyml_lite ≤ 30 ms over bare python ({ms:.1f} ms)"))
    for ok, text in lines:
        print(f"- {'met    ' if ok else 'NOT MET'}  {text}")
    print(f"\n(total {time.perf_counter() - started:.0f} s)")

    if slow or args.profile:
        print("\n## Profile of native iteration (time by source file; C calls charged to their callers)\n")
        profile_native(slow or [(e, z) for e in EXPRESSIONS for z in ZONES], 20000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
