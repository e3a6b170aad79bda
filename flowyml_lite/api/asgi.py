"""The API as an ASGI application: the same route table (``ApiApp``) for uvicorn, gunicorn's uvicorn
worker, or mounting in a FastAPI/Starlette app. ASGI is a calling convention, so this needs no package.

>>> from flowyml_lite import PipelineScheduler, SchedulerConfig
>>> app = create_app(PipelineScheduler(SchedulerConfig(persist_schedules=False)))
>>> # uvicorn.run(app)  or  fastapi_app.mount("/scheduler", app)

``flowyml-lite serve --server uvicorn`` runs it with ``flowyml_lite_ext.uvicorn_server`` (the ``asgi``
extra; a plugin of kind ``servers``, since this package imports only the standard library).

Routes run in a pool of ``threads`` threads (store reads and ``run?wait=true`` block), so the event
loop never waits on them. The server in front owns the connections, their limits and timeouts:
errors it produces itself (a malformed request line, for one) are its own, not this JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Awaitable, Callable, Dict, List, Mapping, MutableMapping, Optional, Tuple
from urllib.parse import quote

from ..errors import ConfigurationError
from .app import MAX_BODY_BYTES, ApiApp, Request, Response, error_response
from .server import DEFAULT_HOST, DEFAULT_THREADS, HandlerPool, build_app

logger = logging.getLogger("flowyml_lite.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
_DISCARD_LIMIT = 64 << 20


class AsgiApp:
    """An ASGI 3 application serving ``api`` (an ``ApiApp``): HTTP and lifespan.

    ``manage_scheduler``: the lifespan's startup starts the scheduler and its shutdown stops it
    (for ``uvicorn module:app``). Mounted in another app, whose lifespan does not reach mounted apps,
    call ``await app.startup()`` and ``await app.shutdown()`` from that app's lifespan instead.
    """

    def __init__(
        self,
        api: ApiApp,
        *,
        threads: int = DEFAULT_THREADS,
        max_body_bytes: int = MAX_BODY_BYTES,
        manage_scheduler: bool = False,
    ) -> None:
        self.api = api
        self.max_body_bytes = max_body_bytes
        self.manage_scheduler = manage_scheduler
        self._threads = threads
        self._pool: Optional[HandlerPool] = None

    @property
    def scheduler(self) -> Any:
        return self.api.scheduler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":  # none served: refuse the handshake
            await receive()
            await send({"type": "websocket.close", "code": 1008})
        else:
            raise ValueError(f"unsupported ASGI scope type {kind!r}")

    # -- lifespan ------------------------------------------------------------------------------

    async def startup(self) -> None:
        """Start the scheduler (when ``manage_scheduler``)."""
        if self.manage_scheduler:
            await self._in_thread(self.scheduler.start)

    async def shutdown(self) -> None:
        """Stop the scheduler (when ``manage_scheduler``, waiting for its jobs as ``stop()`` does)
        and let the handler threads end."""
        if self.manage_scheduler:
            await self._in_thread(self.scheduler.stop)
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("the scheduler did not start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                except Exception as exc:
                    logger.exception("the scheduler did not stop cleanly")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- requests ------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: Dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers") or []:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        method = str(scope["method"])
        response = await self._read_and_handle(scope, method, headers, receive)
        if response is None:  # the client went away
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": _header_list(response),
            }
        )
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else response.body})

    async def _read_and_handle(
        self, scope: Scope, method: str, headers: Dict[str, str], receive: Receive
    ) -> Optional[Response]:
        length_text = headers.get("content-length")
        if length_text is not None:
            if not (length_text.isascii() and length_text.isdigit()):
                return error_response(400, "bad_request", f"bad Content-Length {length_text[:20]!r}")
            if int(length_text) > self.max_body_bytes:
                if headers.get("expect", "").lower() == "100-continue":
                    return _too_large(self.max_body_bytes)  # before the server asks for the body
                return await self._refuse_body(receive)
        chunks: List[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body") or b""
            size += len(chunk)
            if size > self.max_body_bytes:
                return await self._refuse_body(receive, bool(message.get("more_body")))
            chunks.append(chunk)
            more = bool(message.get("more_body"))
        request = Request(method, _target(scope), headers, b"".join(chunks))
        response: Response = await self._in_thread(self.api.handle, request)
        return response

    async def _refuse_body(self, receive: Receive, more: bool = True) -> Optional[Response]:
        """413, after reading and dropping the rest of the body (up to 64 MiB): a server answering
        while the client still sends closes the connection, and the client sees a reset instead."""
        dropped = 0
        while more and dropped < _DISCARD_LIMIT:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            dropped += len(message.get("body") or b"")
            more = bool(message.get("more_body"))
        return _too_large(self.max_body_bytes)

    async def _in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        """``func(*args)`` in a handler thread (daemon: a long ``run?wait=true`` never holds up exit)."""
        if self._pool is None:
            self._pool = HandlerPool(self._threads, "flowyml-lite-asgi-handler")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if not future.done():
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

        def work() -> None:
            try:
                result: Tuple[bool, Any] = (True, func(*args))
            except BaseException as exc:  # handed to the awaiting coroutine
                result = (False, exc)
            with contextlib.suppress(RuntimeError):  # a closed event loop: nobody waits any more
                loop.call_soon_threadsafe(settle, *result)

        self._pool.submit(work)
        return await future


def _target(scope: Scope) -> str:
    """Path (still percent-encoded: ``%2F`` in a name must not split it) and query, relative to the
    mount point (``root_path``)."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(str(scope.get("path") or "/"), safe="/%")
    root = quote(str(scope.get("root_path") or ""), safe="/%").rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :] or "/"
    query = scope.get("query_string") or b""
    return path + ("?" + query.decode("latin-1") if query else "")


def _header_list(response: Response) -> List[Tuple[bytes, bytes]]:
    headers = [
        (b"content-type", response.content_type.encode("latin-1")),
        (b"content-length", str(len(response.body)).encode("ascii")),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
    ]
    headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items())
    return headers


def _too_large(limit: int) -> Response:
    return error_response(413, "too_large", f"request body over {limit} bytes")


def create_app(
    scheduler: Any,
    host: str = DEFAULT_HOST,
    *,
    token: Optional[str] = None,
    pipelines: Optional[Mapping[str, Any]] = None,
    allow_hosts: Optional[List[str]] = None,
    token_for_reads: bool = False,
    threads: int = DEFAULT_THREADS,
    max_body_bytes: int = MAX_BODY_BYTES,
    manage_scheduler: bool = False,
) -> AsgiApp:
    """The API and dashboard of ``scheduler`` as an ASGI application.

    The options are ``ApiServer``'s, with the same rules: ``host`` is the address the ASGI server
    binds (default loopback: the loopback names are the allowed Host names); off loopback a
    ``token`` and ``allow_hosts`` are required (ConfigurationError otherwise). Mounted in a public
    app, pass its ``host`` (e.g. ``"0.0.0.0"``), a token and the names clients use.
    ``manage_scheduler``: the ASGI lifespan starts and stops the scheduler.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigurationError(f"threads must be an integer >= 1, got {threads!r}")
    api = build_app(
        scheduler,
        host,
        token=token,
        pipelines=pipelines,
        allow_hosts=allow_hosts,
        token_for_reads=token_for_reads,
    )
    return AsgiApp(api, threads=threads, max_body_bytes=max_body_bytes, manage_scheduler=manage_scheduler)
