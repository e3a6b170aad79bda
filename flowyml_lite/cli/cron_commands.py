"""The commands that need no store: ``demo``, and the cron tools ``next`` and ``explain``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

from .exits import EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(seconds=args.seconds, db_path=args.db, verbose=args.verbose)


def _parse_after(text: Optional[str], zone_name: str) -> datetime:
    if text is None:
        return datetime.now(timezone.utc)
    from ..timezones import get_zone

    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--after {text!r} is not an ISO 8601 date or time, e.g. 2024-03-09T12:00 or "
            "2024-03-09T12:00:00+00:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=get_zone(zone_name).tzinfo)
    return moment


def _cmd_next(args: argparse.Namespace) -> int:
    from ..core.declarations import every_second_note
    from ..cron.expression import CronExpression, utc_offset_text

    expr = CronExpression(args.expression, timezone=args.tz, hash_key=args.hash_key, engine=args.engine)
    note = every_second_note(args.expression)
    if note is not None:
        print(f"warning: {note}", file=sys.stderr)
    after = _parse_after(args.after, args.tz)
    rows: List[Dict[str, Any]] = []
    for fire in expr.iter(after):
        rows.append(
            {
                "fire": fire.isoformat(),
                "utc": fire.astimezone(timezone.utc).isoformat(),
                "offset": utc_offset_text(fire),
                "zone_abbreviation": fire.tzname(),
                "dst_note": expr.dst_note(fire),
            }
        )
        if len(rows) >= args.n:
            break
    if args.json:
        print(json.dumps({"expression": args.expression, "timezone": args.tz, "fires": rows}, indent=2))
        return EXIT_OK
    kind = "fixed-time" if expr.is_fixed_time else "frequent"
    print(f"{args.expression!r} in {args.tz} ({kind}), after {after.isoformat()}:")
    for row in rows:
        note = f"  <- DST: {row['dst_note']}" if row["dst_note"] else ""
        print(f"  {row['fire']:<32} {row['zone_abbreviation'] or '':<6} = {row['utc']}{note}")
    if not rows:
        print("  (no more fires)")
    return EXIT_OK


def _cmd_explain(args: argparse.Namespace) -> int:
    from ..cron.explain import explain
    from ..cron.native import NativeEngine

    NativeEngine().compile(args.expression, "explain")  # validate first, for a precise error
    print(explain(args.expression))
    return EXIT_OK
