#!/usr/bin/env python3
"""Fuzz the cron parser and search: for any text, only ``CronError`` may escape.

Each input is compiled by the native engine (``NativeEngine().compile``); when it compiles, a
``CronExpression`` in a zone picked from the input searches a few fires from a start picked from
the input, and the fires are checked: strictly after the start, increasing, each one matching the
expression or a fixed-time gap fire, the same instants (fold included) as repeated ``next_utc``
calls; the engine's ``iter_walls`` must equal repeated ``next_wall``. ``explain()`` must work too.

Uses atheris (coverage-guided libFuzzer) when it imports, else a Hypothesis random-text harness.
Both start from the seed inputs in ``seeds.txt`` (one per line) and the tokens of ``cron.dict``.
CI runs ``python fuzz/run.py --count 20000``; the exit status is non-zero, with the input printed,
on any other exception. Crash reproducers of atheris go to ``fuzz/crashes/``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import time
import traceback
import zlib
from datetime import datetime, timezone
from typing import Any, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repository root: run without installing

UTC = timezone.utc
ZONES = [
    "UTC",
    "America/New_York",
    "Europe/London",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Pacific/Apia",
    "America/St_Johns",
    "Asia/Kolkata",
    "America/Havana",
    "Europe/Moscow",
    "Asia/Pyongyang",
]
# Starts near DST transitions of 2024 (New York, London, Sydney, Lord Howe) and some plain ones.
STARTS = [
    datetime(2024, 3, 10, 6, 59, 30, tzinfo=UTC),
    datetime(2024, 11, 3, 5, 30, tzinfo=UTC),
    datetime(2024, 11, 3, 6, 10, tzinfo=UTC),
    datetime(2024, 3, 31, 0, 45, tzinfo=UTC),
    datetime(2024, 10, 27, 0, 59, 59, 999999, tzinfo=UTC),
    datetime(2024, 4, 6, 15, 20, tzinfo=UTC),
    datetime(2024, 10, 5, 15, 25, tzinfo=UTC),
    datetime(2011, 12, 29, 20, 0, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(2024, 2, 28, 23, 59, 59, 500000, tzinfo=UTC),
    datetime(2037, 6, 15, 12, tzinfo=UTC),
]
HASH_KEYS = [None, "fuzz", ""]


class Harness:
    """The checks run on every input; counts the inputs and keeps the last failing one."""

    def __init__(self, engines: List[str]) -> None:
        from flowyml_lite.cron import CronError, CronExpression
        from flowyml_lite.cron.native import NativeEngine

        self.cron_error = CronError
        self.expression_type = CronExpression
        self.native = NativeEngine()
        self.engines = engines
        self.count = 0
        self.valid = 0  # inputs that compiled and were searched
        self.failure: Optional[str] = None

    def run_bytes(self, data: bytes) -> None:
        """One input as bytes (atheris): its UTF-8 text, then the same bytes read as a recipe.

        Raw text exercises the parser's error paths; recipes (``structured``) reach valid
        expressions, and so the search, far more often than byte mutations of text do.
        """
        selector = zlib.crc32(data)
        self.run_text(data.decode("utf-8", "replace"), selector)
        self.run_text(structured(data), selector >> 1)

    def run_text(self, text: str, selector: int) -> None:
        """One input; re-raises (after recording it) anything but CronError."""
        self.count += 1
        try:
            self._check(text, selector)
        except self.cron_error:
            pass
        except BaseException:
            self.failure = f"input {text!r} (selector {selector})\n{traceback.format_exc()}"
            raise

    def _check(self, text: str, selector: int) -> None:
        key = HASH_KEYS[selector % len(HASH_KEYS)]
        compiled = self.native.compile(text, key)
        self.valid += 1
        zone = ZONES[(selector >> 2) % len(ZONES)]
        start = STARTS[(selector >> 6) % len(STARTS)]
        walls, wall = [], start.replace(tzinfo=None)
        for _ in range(6):
            wall = compiled.next_wall(wall)
            if wall is None:
                break
            walls.append(wall)
        assert list(itertools.islice(compiled.iter_walls(start.replace(tzinfo=None)), 6)) == walls, (
            "iter_walls != repeated next_wall"
        )
        for engine in self.engines:
            expr = self.expression_type(text, zone, key, engine=engine)
            fires = [f.astimezone(UTC) for f in itertools.islice(expr.iter(start), 4)]
            first = expr.next(start)
            assert (first.astimezone(UTC) if first else None) == (fires[0] if fires else None), "next != iter"
            previous = start
            for fire in fires:
                assert expr.next_utc(previous) == fire, "iter != repeated next_utc"
                assert fire > previous, f"{fire} is not after {previous}"
                if not expr.matches(fire):
                    assert expr.is_fixed_time, f"{fire} does not match a frequent expression"
                    assert (expr.dst_note(fire) or "").startswith("moved"), f"{fire} does not match"
                previous = fire
        expr.explain()


# Field items with holes for numbers. Mostly shapes that the field accepts, with numbers that fit
# every field; sometimes any shape anywhere and numbers out of range, to reach the error paths.
COMMON = ["*", "{a}", "{a}", "{a}-{b}", "*/{n}", "{a}-{b}/{n}", "{a}/{n}", "H", "H/{n}", "H({a}-{b})"]
EXTRA = {
    2: ["L", "L-{a}", "{a}W", "LW", "?", "{a}-L"],
    3: ["{name}", "{name}-{name}"],
    4: ["{a}L", "L{a}", "{a}#{k}", "?", "{name}", "{name}-{name}"],
}
ANYTHING = sorted({t for extra in EXTRA.values() for t in extra} | set(COMMON) | {"H({a}-{b})/{n}", ""})
MONTH_NAMES = ["JAN", "feb", "Dec", "XYZ"]
DAY_NAMES = ["MON", "fri", "SUN", "sat", "XYZ"]
MACROS = ["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight", "@every"]


def structured(data: bytes) -> str:
    """An expression built from ``data``: a field count, then per field its items' shapes and numbers."""
    it = iter(data)

    def byte() -> int:
        return next(it, 0)

    first = byte()
    if first % 16 == 15:
        return MACROS[(first // 16) % len(MACROS)]
    fields = []
    for index in range(5 + first % 3):
        items = []
        for _ in range(1 + byte() % 3 if byte() % 4 == 0 else 1):
            wild = byte() % 8 == 7
            shapes = ANYTHING if wild else COMMON + EXTRA.get(index, [])
            low, high = (0, 64) if wild else ((1, 12) if index in (2, 3) else (0, 12))
            names = MONTH_NAMES if index == 3 else DAY_NAMES
            a, b = low + byte() % (high - low + 1), low + byte() % (high - low + 1)
            numbers = {
                "a": a,
                "b": b,
                "n": 1 + byte() % 31,
                "k": byte() % 7,
                "name": names[byte() % len(names)],
            }
            items.append(shapes[byte() % len(shapes)].format(**numbers))
        fields.append(",".join(items))
    return " ".join(fields)


def load_seeds() -> List[str]:
    with open(os.path.join(HERE, "seeds.txt"), encoding="utf-8") as f:
        seeds = [line.rstrip("\n") for line in f]
    # Inputs a text file cannot hold on one line.
    return [*seeds, "", "\n", "0 9 * * 1-5\n", "0\x0b9 * * 1-5", "0 0 * * \u00a0", "\x00 * * * *"]


def load_tokens() -> List[str]:
    tokens = []
    with open(os.path.join(HERE, "cron.dict"), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith('"') and line.endswith('"'):
                tokens.append(line[1:-1].encode("ascii").decode("unicode_escape"))
    return tokens


def fuzz_with_atheris(atheris: Any, harness: Harness, count: int) -> None:
    """Coverage-guided: libFuzzer mutates the seeds; it exits the process when done."""
    started = time.perf_counter()
    corpus = tempfile.mkdtemp(prefix="flowyml-fuzz-corpus-")  # libFuzzer adds its finds here
    for i, seed in enumerate(load_seeds()):
        with open(os.path.join(corpus, f"seed-{i:03d}"), "wb") as f:
            f.write(seed.encode("utf-8"))
    crashes = os.path.join(HERE, "crashes")
    os.makedirs(crashes, exist_ok=True)

    def one_input(data: bytes) -> None:
        try:
            harness.run_bytes(data)
        except BaseException:
            print(f"\nFAILED on {harness.failure}", file=sys.stderr, flush=True)
            shutil.rmtree(corpus, ignore_errors=True)
            raise
        if harness.count == 2 * count:  # libFuzzer exits right after its last run: report now
            shutil.rmtree(corpus, ignore_errors=True)
            report("atheris", count, harness, time.perf_counter() - started)

    args = [
        sys.argv[0],
        f"-runs={count}",
        f"-dict={os.path.join(HERE, 'cron.dict')}",
        f"-artifact_prefix={crashes}{os.sep}",
        "-max_len=96",
        "-timeout=20",
        "-print_final_stats=0",
        corpus,
    ]
    atheris.Setup(args, one_input)
    atheris.Fuzz()


def fuzz_with_hypothesis(harness: Harness, count: int) -> None:
    """Random text: raw unicode, cron tokens glued together, and the seeds."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    tokens = load_tokens()
    texts = st.one_of(
        st.binary(min_size=8, max_size=64).map(structured),
        st.text(max_size=40),
        st.lists(st.sampled_from(tokens), max_size=16).map("".join),
        st.lists(st.sampled_from(tokens), max_size=16).map(" ".join),
        st.sampled_from(load_seeds()),
    )

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(text=texts, selector=st.integers(0, 2**32 - 1))
    def one_input(text: str, selector: int) -> None:
        harness.run_text(text, selector)

    started = time.perf_counter()
    one_input()
    report("hypothesis", harness.count, harness, time.perf_counter() - started)


def report(how: str, inputs: int, harness: Harness, elapsed: float) -> None:
    print(
        f"fuzz ({how}): {inputs} inputs run in {elapsed:.1f} s ({harness.count} texts, "
        f"{harness.valid} valid expressions searched); only CronError escaped",
        flush=True,
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000, help="inputs to run (default 20000)")
    parser.add_argument(
        "--engine",
        choices=["native", "croniter", "both"],
        default="native",
        help="engines that search each compiled input (default: native)",
    )
    parser.add_argument(
        "--hypothesis", action="store_true", help="use the Hypothesis harness even with atheris"
    )
    parser.add_argument(
        "--replay", nargs="+", metavar="FILE", help="run these inputs (e.g. crash files) and stop"
    )
    args = parser.parse_args(argv)
    engines = ["native", "croniter"] if args.engine == "both" else [args.engine]
    if args.replay:
        harness = Harness(engines)
        for path in args.replay:
            with open(path, "rb") as f:
                harness.run_bytes(f.read())  # raises, with its traceback, on a failing input
        print(f"replayed {len(args.replay)} inputs: only CronError escaped")
        return 0
    atheris: Optional[Any] = None
    if not args.hypothesis:
        try:
            import atheris as found

            atheris = found
        except ImportError:
            print("atheris is not installed: using the Hypothesis harness", flush=True)
    if atheris is not None:
        with atheris.instrument_imports():
            import flowyml_lite.cron.explain
            import flowyml_lite.cron.native
            import flowyml_lite.cron.parser
            import flowyml_lite.timezones  # noqa: F401
        harness = Harness(engines)
        fuzz_with_atheris(atheris, harness, args.count)  # does not return
        return 0
    harness = Harness(engines)
    try:
        fuzz_with_hypothesis(harness, args.count)
    except BaseException:
        print(f"FAILED after {harness.count} inputs on {harness.failure}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
