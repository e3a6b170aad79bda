"""The ``serve`` command: the scheduler and its HTTP API and dashboard in one process, until a signal."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, Optional

from ..apps import load_attribute, load_scheduler
from ..errors import ConfigurationError
from .exits import EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging
    import os
    import signal
    import threading

    from ..api import TOKEN_ENV, ApiServer
    from ..api.server import check_exposure, check_token, read_token_file

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.token is not None and args.token_file is not None:
        raise ConfigurationError("give the token once: --token-file or --token, not both")
    token: Optional[str]
    if args.token_file is not None:
        token = read_token_file(args.token_file)
    elif args.token is not None:
        token = check_token(args.token, "--token")
        print(
            f"warning: a token given with --token shows in 'ps' to every user of this machine; "
            f"use {TOKEN_ENV} or --token-file",
            file=sys.stderr,
        )
    else:
        token = check_token(os.environ.get(TOKEN_ENV), TOKEN_ENV)
    check_exposure(args.host, token, args.allow_host)  # before the store is opened or created
    if args.token_for_reads and not token:
        raise ConfigurationError(f"--token-for-reads needs a token ({TOKEN_ENV} or --token-file)")
    run_server = None
    if args.server != "stdlib":  # a plugin (flowyml_lite_ext): its missing package named before anything
        from .. import plugins

        run_server = plugins.get("servers", args.server)
    pipelines = {}
    for item in args.pipeline:
        name, sep, spec = item.partition("=")
        if not sep or not name:
            raise ConfigurationError(
                f"--pipeline {item!r}: write NAME=module:attribute, e.g. etl=myjobs:run_etl"
            )
        pipelines[name] = load_attribute(spec, "--pipeline")
    _check_listen(args.host, args.port)  # before the app is imported or the store opened
    scheduler = _scheduler_for(args.app, args.db, args.factory)
    if run_server is not None:

        def ready(url: str) -> None:
            where = "dashboard /, API /api/schedules"
            print(f"flowyml-lite serving {url} with {args.server} ({where}); Ctrl-C stops")
            sys.stdout.flush()

        run_server(
            scheduler,
            args.host,
            args.port,
            token=token,
            pipelines=pipelines,
            allow_hosts=args.allow_host,
            token_for_reads=args.token_for_reads,
            access_log=args.verbose,
            ready=ready,
        )
        return EXIT_OK
    server = ApiServer(
        scheduler,
        args.host,
        args.port,
        token=token,
        pipelines=pipelines,
        allow_hosts=args.allow_host,
        token_for_reads=args.token_for_reads,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    scheduler.start()
    server.start()
    print(
        f"flowyml-lite serving {server.url} (dashboard /, API /api/schedules, metrics /metrics); Ctrl-C stops"
    )
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        _stop_gently(scheduler)
    return EXIT_OK


def _check_listen(host: str, port: int) -> None:
    """ConfigurationError when nothing could listen on ``host:port`` (in use, or not an address here)."""
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind(address)
        except OSError as exc:
            reason = "the port is in use" if exc.errno in (98, 48, 10048) else exc.strerror or str(exc)
            raise ConfigurationError(
                f"cannot listen on {host}:{port}: {reason}; pick another with --port (0 picks a free one)"
            ) from None


def _stop_gently(scheduler: Any) -> None:
    """Stop the scheduler, waiting for runs in flight; a second Ctrl-C (or SIGTERM) stops at once."""
    import os
    import signal

    try:
        mine = [r for r in scheduler.store.active_runs() if r.node_id == scheduler.node_id]
    except Exception:  # the store is down: stop without counting
        mine = []
    if mine:
        count = len(mine)

        def now(*_: Any) -> None:
            message = f"\nstopping now: {count} unfinished run(s) will be recorded as lost"
            print(message, file=sys.stderr, flush=True)
            os._exit(130)

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, now)
        print(f"waiting for {count} run(s) (Ctrl-C again to stop now)", file=sys.stderr, flush=True)
    scheduler.stop()


def _scheduler_for(app: Optional[str], db: Optional[str], factory: bool = False) -> Any:
    """The user's scheduler (``module:attr``; a factory is called only when it says it is one, or
    with ``--factory``: any other callable may be a job), or one from the environment."""
    from ..core.scheduler import PipelineScheduler
    from ..core.scheduler_config import SchedulerConfig

    if app is None:
        overrides: Dict[str, Any] = {"db_path": db, "store": "sqlite", "store_url": None} if db else {}
        config = SchedulerConfig.from_env(**overrides)
        if config.resolved_store() == "sqlite" and not os.path.exists(config.db_path):
            print(  # a new, empty store (a fresh volume), or a typo: say which file it is
                f"note: no database at {config.db_path}: creating a new, empty one",
                file=sys.stderr,
            )
        return PipelineScheduler(config)
    return load_scheduler(app, factory)
