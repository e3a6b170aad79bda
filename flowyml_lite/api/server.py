"""The HTTP server: the standard library's ``ThreadingHTTPServer`` in front of ``ApiApp``."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, List, Mapping, Optional, Type

from .. import __version__
from ..errors import ConfigurationError
from .app import MAX_BODY_BYTES, ApiApp, Request, Response, error_response

logger = logging.getLogger("flowyml_lite.api")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
TOKEN_ENV = "FLOWYML_SCHEDULER_API_TOKEN"
_LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"]
_DISCARD_LIMIT = 64 << 20  # bytes of a refused body read and dropped before answering


def _too_large() -> Response:
    return error_response(413, "too_large", f"request body over {MAX_BODY_BYTES} bytes")


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: Optional[str]) -> None:
    """Refuse to serve a non-loopback address without a token (ConfigurationError with the fix)."""
    if not is_loopback(host) and not token:
        raise ConfigurationError(
            f"serving on {host!r} without a token would let anyone who reaches the port change "
            f"schedules: pass a token (--token, or the {TOKEN_ENV} environment variable), or "
            "bind 127.0.0.1 and put an authenticating proxy in front"
        )


class _Handler(BaseHTTPRequestHandler):
    server_version = f"flowyml-lite/{__version__}"
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a slow client may take to send its request

    def _serve(self) -> None:
        app: ApiApp = self.server.app  # type: ignore[attr-defined]
        length_text = self.headers.get("Content-Length") or "0"
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if self.headers.get("Transfer-Encoding"):
            response = error_response(411, "length_required", "send a Content-Length, not a chunked body")
        elif length < 0:
            response = error_response(400, "bad_request", f"bad Content-Length {length_text!r}")
        elif length > MAX_BODY_BYTES:
            self._send(_too_large())  # first: a client that waits for an answer before sending gets it
            self._discard(length)
            return
        else:
            body = self.rfile.read(length) if length else b""
            response = app.handle(Request(self.command, self.path, dict(self.headers.items()), body))
        self._send(response)

    def _discard(self, length: int) -> None:
        """Read and drop a refused body, within bounds, before closing: closing on unread bytes resets
        the connection, and a client still sending would see a broken pipe instead of the 413."""
        remaining = min(length, _DISCARD_LIMIT)
        deadline = time.monotonic() + 10
        try:
            self.connection.settimeout(1.0)  # a client that sends nothing more is not waited for
            while remaining > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:  # timed out or gone: nothing more to tell it
            pass

    def handle_expect_100(self) -> bool:
        """Refuse an announced oversized body before the client sends it (curl asks for large bodies)."""
        try:
            too_large = int(self.headers.get("Content-Length") or "0") > MAX_BODY_BYTES
        except ValueError:
            too_large = False
        if too_large:
            self.close_connection = True
            self._send(_too_large())
            return False
        return super().handle_expect_100()

    def _send(self, response: Response) -> None:
        if response.status >= 400 and response.status not in (401, 403, 404, 405):
            self.close_connection = True  # the request may not have been read to its end
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in response.headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        # Changes and errors at INFO; the dashboard's polling reads at DEBUG.
        quiet = self.command in ("GET", "HEAD") and str(code).startswith(("2", "3"))
        logger.log(
            logging.DEBUG if quiet else logging.INFO,
            '%s "%s" %s',
            self.address_string(),
            self.requestline,
            code,
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: Any, app: ApiApp, family: int) -> None:
        self.address_family = family
        self.app = app
        super().__init__(address, _Handler)


class ApiServer:
    """Serves the HTTP API and dashboard for ``scheduler`` on ``host:port`` (port 0 picks a free one).

    Binding a non-loopback address without a ``token`` is refused: anyone who can reach the port
    could otherwise change schedules.

    >>> from flowyml_lite import PipelineScheduler, SchedulerConfig
    >>> scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
    >>> with ApiServer(scheduler, port=0) as server:
    ...     server.url.startswith("http://127.0.0.1:")
    True
    """

    def __init__(
        self,
        scheduler: Any,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        token: Optional[str] = None,
        pipelines: Optional[Mapping[str, Any]] = None,
        allow_hosts: Optional[List[str]] = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigurationError(f"port must be an integer 0-65535, got {port!r}")
        check_exposure(host, token)
        loopback = is_loopback(host)
        allowed = None
        if loopback:  # names a browser may use for this server; others are DNS rebinding
            allowed = [*_LOOPBACK_NAMES, host, *(allow_hosts or [])]
        elif allow_hosts:
            allowed = list(allow_hosts)
        self.app = ApiApp(scheduler, token=token, allowed_hosts=allowed, pipelines=pipelines)
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._server = _Server((host, port), self.app, family)
        except OSError as exc:
            raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.port: int = self._server.server_address[1]
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ApiServer:
        """Serve in a background thread; returns at once."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name="flowyml-lite-api",
                daemon=True,
            )
            self._thread.start()
            logger.info("HTTP API and dashboard on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop accepting requests and close the socket (requests in flight finish)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()
