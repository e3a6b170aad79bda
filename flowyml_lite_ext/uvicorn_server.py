"""uvicorn serving the API's ASGI app: ``flowyml-lite serve --server uvicorn``.

Needs ``pip install 'flowyml-lite[asgi]'``.

A plugin of kind ``servers`` (entry point ``flowyml_lite.servers``): the app itself,
``flowyml_lite.api.asgi.create_app``, needs only the standard library; running it needs uvicorn.
"""

from __future__ import annotations

import signal
import socket
import threading
from typing import Any, Callable, Optional

import uvicorn

from flowyml_lite.api.asgi import create_app
from flowyml_lite.api.server import DEFAULT_HOST, DEFAULT_PORT
from flowyml_lite.errors import ConfigurationError, FlowymlLiteError


def serve(
    scheduler: Any,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    max_connections: Optional[int] = None,
    keepalive_timeout: float = 15.0,
    access_log: bool = False,
    ready: Optional[Callable[[str], None]] = None,
    **options: Any,
) -> None:
    """Serve ``create_app(scheduler, host, **options)`` with uvicorn until SIGINT or SIGTERM; the
    lifespan starts and stops the scheduler. ``ready(url)`` is called once the port is bound."""
    app = create_app(scheduler, host, manage_scheduler=True, **options)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio turns Nagle off only on sockets that say they are TCP
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,  # the CLI's logging configuration stays
        access_log=access_log,
        limit_concurrency=max_connections,
        timeout_keep_alive=int(keepalive_timeout),
        server_header=False,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    if threading.current_thread() is threading.main_thread():
        # uvicorn stops on SIGINT/SIGTERM, then raises the signal again for the handler it found:
        # a handler that does nothing makes that a clean exit (code 0) instead of death by signal.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
    if ready is not None:
        ready(f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:  # the lifespan's startup failed: uvicorn logged why
        raise FlowymlLiteError("uvicorn did not start serving; the log above says why")
