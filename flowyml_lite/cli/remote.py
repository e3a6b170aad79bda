"""``run-now`` (in this process, or through a running serve), and the requests to a running serve."""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, Optional

from ..errors import FlowymlLiteError, ScheduleNotFoundError, ServerUnreachableError
from .exits import EXIT_FAILURE, EXIT_OK
from .serve import _scheduler_for


def _cmd_run_now(args: argparse.Namespace) -> int:
    import os

    if args.app:
        from ..executors.child_import import holding_starts

        with holding_starts():  # the app's module may call start() as it is imported
            scheduler = _scheduler_for(args.app, None, args.factory)
        try:
            entry = scheduler.run_now(args.name, wait=True)
        finally:
            scheduler.stop()
    else:
        entry = _post_run(args.url, args.name, args.token or os.environ.get("FLOWYML_SCHEDULER_API_TOKEN"))
    if args.json:
        print(json.dumps(entry, indent=2))
    elif entry["status"] == "skipped":
        print(f"{args.name}: skipped: {entry.get('reason') or 'an earlier run is still in progress'}")
    else:
        print(f"{args.name}: {entry['status']} (fire {entry['fire_time']}, run_id {entry['run_id'] or '-'})")
        if entry.get("error"):
            print(entry["error"])
    return EXIT_OK if entry["status"] in ("succeeded", "running") else EXIT_FAILURE


def _post_run(url: str, name: str, token: Optional[str], timeout: int = 3600) -> Dict[str, Any]:
    import urllib.error
    import urllib.parse
    import urllib.request

    url = _base_url(url)
    target = (
        f"{url.rstrip('/')}/api/schedules/{urllib.parse.quote(name, safe='')}/run?wait=true&timeout={timeout}"
    )
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(target, data=b"", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout + 30) as response:
            return json.loads(response.read())["run"]  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = str(exc)
        if exc.code == 404 and "no schedule" in message:
            raise ScheduleNotFoundError(name) from None
        raise FlowymlLiteError(f"{target}: {exc.code} {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServerUnreachableError(
            f"cannot reach {url}: {getattr(exc, 'reason', exc)}; is 'serve' running?"
        ) from None


def _base_url(url: str) -> str:
    """``127.0.0.1:8080`` -> ``http://127.0.0.1:8080``."""
    return url if "://" in url else "http://" + url


def _quote(name: str) -> str:
    import urllib.parse

    return urllib.parse.quote(name, safe="")


def _api(method: str, args: argparse.Namespace, path: str) -> Any:
    """One request to a running 'serve' (``args.url``, ``args.token``); its JSON answer."""
    import os
    import urllib.error
    import urllib.request

    base = _base_url(args.url).rstrip("/")
    token = args.token or os.environ.get("FLOWYML_SCHEDULER_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(base + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = str(exc)
        if exc.code == 404 and "no schedule" in message:
            raise ScheduleNotFoundError(args.name) from None
        raise FlowymlLiteError(f"{base}{path}: {exc.code} {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServerUnreachableError(
            f"cannot reach {base}: {getattr(exc, 'reason', exc)}; is 'serve' running?"
        ) from None
