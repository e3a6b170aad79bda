"""The HTTP server: one selector thread reads requests, a bounded pool of threads answers them.

Why not ``ThreadingHTTPServer``: it gives every connection a thread that blocks on each read with a
per-read timeout, so a thousand clients sending a byte every few seconds hold a thousand threads and
every real request waits; closing them all at once wakes a thousand threads that fight over the GIL
with the scheduler. Here a connection costs a buffer until its request has fully arrived:

- the selector thread accepts, reads and parses (request line, headers, body by ``Content-Length``)
  without blocking, and holds each request to one deadline for all of it (``request_timeout``);
- a complete request goes to a pool of at most ``threads`` handler threads (``ApiApp.handle``);
  the response goes out in one write on a ``TCP_NODELAY`` socket (two writes would let Nagle's
  algorithm hold the second for a delayed ACK: 40 ms per keep-alive request instead of 0.4 ms);
- at most ``max_connections`` are open: beyond it the oldest idle keep-alive connection is closed,
  else the oldest request still arriving after a second, else the newcomer gets a 503;
- every answer is JSON ``{"error": {"code", "message"}}``, also for requests that never reach the
  route table (malformed request line 400, 408, 413, 414, 431, 505).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import selectors
import socket
import sys
import threading
import time
from collections import OrderedDict, deque
from types import TracebackType
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Tuple, Type

from ..errors import ConfigurationError
from ..runtime.gate import GATE
from .app import MAX_BODY_BYTES, ApiApp, Request, Response, error_response
from .http11 import MAX_REQUEST_LINE, Head, Refused, encode_response, header, parse_head

logger = logging.getLogger("flowyml_lite.api")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
TOKEN_ENV = "FLOWYML_SCHEDULER_API_TOKEN"
DEFAULT_THREADS = 8  # more add no throughput under the GIL, and each busy one delays the scheduler
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_KEEPALIVE_TIMEOUT = 15.0
_LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"]
_DISCARD_LIMIT = 64 << 20  # bytes of a refused body read and dropped before closing
_LINGER_SECONDS = 2.0  # how long a closing connection's unread input is drained
_EVICT_AFTER = 1.0  # a request still arriving after this long may be closed for a newcomer
_MAX_LINGERING = 256  # closing connections drained beyond max_connections; more are closed at once
_SWEEP_SECONDS = 0.25


# -- exposure policy (shared with asgi.py and the CLI) ----------------------------------------


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token(token: Optional[str], source: str = "the token") -> Optional[str]:
    """``token`` if usable, None if not given; a blank one is a ConfigurationError (it would match
    a blank ``Authorization`` header, or look like protection where there is none)."""
    if token is None:
        return None
    if not token.strip():
        raise ConfigurationError(
            f"{source} is empty or only whitespace: set a real secret (e.g. the output of "
            "'python -c \"import secrets; print(secrets.token_urlsafe(32))\"'), or unset it"
        )
    if not all("\x21" <= c <= "\x7e" for c in token):
        raise ConfigurationError(
            f"{source} has spaces, control or non-ASCII characters, which an Authorization header "
            "cannot carry reliably: use letters, digits and punctuation only"
        )
    return token


def read_token_file(path: str) -> str:
    """The token in ``path`` (surrounding whitespace and the final newline removed)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigurationError(f"cannot read --token-file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"--token-file {path} is not UTF-8 text") from None
    return check_token(text.strip() or text, f"the token in --token-file {path}") or ""


def check_exposure(host: str, token: Optional[str], allow_hosts: Optional[List[str]] = None) -> None:
    """Refuse to serve a non-loopback address without a token and a Host allow-list.

    Without a token anyone who reaches the port could change schedules; without a Host allow-list a
    web page on another site could read the API through DNS rebinding (its name resolving to this
    server), token or not for reads.
    """
    check_token(token)
    if is_loopback(host):
        return
    missing = []
    if not token:
        missing.append(f"a token (the {TOKEN_ENV} environment variable, or --token-file)")
    if not [h for h in allow_hosts or [] if h.strip()]:
        missing.append("the Host names clients use (--allow-host NAME, repeatable)")
    if missing:
        raise ConfigurationError(
            f"serving on {host!r} reaches beyond this machine and needs {' and '.join(missing)}; "
            "or bind 127.0.0.1 and put an authenticating proxy in front"
        )


def allowed_hosts_for(host: str, allow_hosts: Optional[List[str]]) -> List[str]:
    """The Host names served: on loopback the loopback names too (any other name is DNS rebinding)."""
    extra = [h.strip() for h in allow_hosts or [] if h.strip()]
    return [*_LOOPBACK_NAMES, host, *extra] if is_loopback(host) else extra


def build_app(
    scheduler: Any,
    host: str,
    *,
    token: Optional[str],
    pipelines: Optional[Mapping[str, Any]],
    allow_hosts: Optional[List[str]],
    token_for_reads: bool,
) -> ApiApp:
    """The route table with this exposure policy applied (ConfigurationError when it is unsafe)."""
    check_exposure(host, token, allow_hosts)
    if token_for_reads and not token:
        raise ConfigurationError("token_for_reads (--token-for-reads) needs a token to require")
    return ApiApp(
        scheduler,
        token=token,
        allowed_hosts=allowed_hosts_for(host, allow_hosts),
        pipelines=pipelines,
        token_for_reads=token_for_reads,
    )


# -- the handler pool ----------------------------------------------------------------------------


class HandlerPool:
    """At most ``size`` daemon threads, started as work arrives; daemon so that a request waiting
    for a long run (``run?wait=true``) never holds up the interpreter's exit."""

    def __init__(self, size: int, name: str) -> None:
        import queue

        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue[Optional[Tuple[Callable[..., None], Tuple[Any, ...]]]] = (
            queue.SimpleQueue()
        )
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []
        self._closed = False

    def submit(self, func: Callable[..., None], *args: Any) -> None:
        self._queue.put((func, args))
        if self._idle.acquire(blocking=False):  # a thread is waiting for work: it takes this one
            return
        with self._lock:
            if len(self._threads) < self._size and not self._closed:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads) + 1}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            func, args = item
            try:
                func(*args)
            except Exception:  # the callers answer their own errors; this is a bug
                logger.exception("HTTP handler failed")
            del item, func, args
            self._idle.release()

    def shutdown(self) -> None:
        """Threads end after their current work (not waited for)."""
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)


# -- one connection ----------------------------------------------------------------------------

_READING, _BUSY, _WRITING, _DRAINING = "reading", "busy", "writing", "draining"


class _Conn:
    __slots__ = (
        "addr",
        "after_write",
        "buf",
        "deadline",
        "discard",
        "expect_sent",
        "head",
        "idle_since",
        "out",
        "request_started",
        "sock",
        "state",
    )

    def __init__(self, sock: socket.socket, addr: str, now: float) -> None:
        self.sock = sock
        self.addr = addr
        self.buf = bytearray()
        self.state = _READING
        self.idle_since = now  # waiting for the first byte of a request since
        self.request_started: Optional[float] = None
        self.deadline = 0.0
        self.head: Optional[Head] = None
        self.expect_sent = False
        self.out = b""
        self.after_write = ""  # "resume" (keep-alive) or "linger" (close)
        self.discard = 0  # input bytes still to drop while draining


def _fd_budget() -> int:
    """Connections this process can hold open, leaving room for the store and the scheduler."""
    if sys.platform == "win32":
        return 500  # select() on Windows watches at most 512 sockets
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return DEFAULT_MAX_CONNECTIONS
    return DEFAULT_MAX_CONNECTIONS * 64 if soft == resource.RLIM_INFINITY else max(16, soft - 64)


# -- the server ----------------------------------------------------------------------------------


class ApiServer:
    """Serves the HTTP API and dashboard for ``scheduler`` on ``host:port`` (port 0 picks a free one).

    Off loopback a ``token`` and ``allow_hosts`` (the Host names clients use) are required, or the
    constructor raises ConfigurationError: anyone who can reach the port could otherwise change
    schedules, and a web page could read them through DNS rebinding. ``token_for_reads``: reads need
    the token too (the dashboard page and ``/api/health`` stay open). Limits: ``threads`` handler
    threads, ``max_connections`` open connections, ``request_timeout`` seconds for a whole request
    (headers and body), ``keepalive_timeout`` seconds idle between requests, ``max_body_bytes``.

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
        token_for_reads: bool = False,
        threads: int = DEFAULT_THREADS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigurationError(f"port must be an integer 0-65535, got {port!r}")
        for name, value in (("threads", threads), ("max_connections", max_connections)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an integer >= 1, got {value!r}")
        for name, seconds in (("request_timeout", request_timeout), ("keepalive_timeout", keepalive_timeout)):
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
                raise ConfigurationError(f"{name} must be a number of seconds > 0, got {seconds!r}")
        self.app = build_app(
            scheduler,
            host,
            token=token,
            pipelines=pipelines,
            allow_hosts=allow_hosts,
            token_for_reads=token_for_reads,
        )
        self.host = host
        self.max_connections = min(max_connections, _fd_budget())
        if self.max_connections < max_connections:
            logger.warning(
                "max_connections %d lowered to %d: the process may open only so many files "
                "(raise 'ulimit -n' for more)",
                max_connections,
                self.max_connections,
            )
        self.request_timeout = float(request_timeout)
        self.keepalive_timeout = float(keepalive_timeout)
        self.max_body_bytes = max_body_bytes
        self.evict_after = _EVICT_AFTER
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            if os.name != "nt":  # on Windows SO_REUSEADDR lets two servers share a port
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(min(socket.SOMAXCONN, 1024))
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._listener = listener
        self.port: int = listener.getsockname()[1]
        self._pool = HandlerPool(threads, "flowyml-lite-api-handler")
        self._selector = selectors.DefaultSelector()
        self._conns: Dict[socket.socket, _Conn] = {}
        self._idle: OrderedDict[_Conn, None] = OrderedDict()  # keep-alive connections, oldest first
        self._lock = threading.Lock()
        self._returned: Deque[Tuple[_Conn, str]] = deque()  # from handler threads, under _lock
        self._waker, self._wake_in = socket.socketpair()
        self._waker.setblocking(False)
        self._wake_in.setblocking(False)
        self._stopping = False
        self._stopped = False
        self._accept_paused_until = 0.0
        self._lingering = 0  # connections in _DRAINING: answered, closing, not counted against the limit
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def open_connections(self) -> int:
        """Connections open right now (a snapshot, for tests and monitoring)."""
        return len(self._conns)

    def start(self) -> ApiServer:
        """Serve in a background thread; returns at once."""
        if self._thread is None and not self._stopped:
            self._selector.register(self._listener, selectors.EVENT_READ, "accept")
            self._selector.register(self._wake_in, selectors.EVENT_READ, "wake")
            self._thread = threading.Thread(target=self._run, name="flowyml-lite-api", daemon=True)
            self._thread.start()
            logger.info("HTTP API and dashboard on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop accepting, close idle connections and the socket; requests in flight still finish."""
        thread = self._thread
        with self._lock:
            self._stopping = True
        if thread is not None:
            self._wake()
            thread.join(10)
            self._thread = None
        if not self._stopped:
            self._close_all()
        self._pool.shutdown()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    # -- the selector thread -------------------------------------------------------------------

    def _run(self) -> None:
        next_sweep = time.monotonic() + _SWEEP_SECONDS
        try:
            while not self._stopping:
                for key, mask in self._selector.select(max(0.0, next_sweep - time.monotonic())):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._take_returned()
                    elif mask & selectors.EVENT_WRITE:
                        self._on_writable(key.data)
                    else:
                        self._on_readable(key.data)
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + _SWEEP_SECONDS
        except Exception:  # never silent: a dead loop is a dead API
            logger.exception("the HTTP server loop failed; the API no longer answers")
        finally:
            self._close_all()

    def _close_all(self) -> None:
        with self._lock:
            self._stopped = True
            returned = list(self._returned)
            self._returned.clear()
        for conn, action in returned:
            if action == "write":  # finish the answer a handler thread began
                try:
                    conn.sock.settimeout(5)
                    conn.sock.sendall(conn.out)
                except OSError:
                    pass
            conn.state = _BUSY  # no longer registered
            self._close(conn)
        for conn in list(self._conns.values()):
            if conn.state != _BUSY:  # a handler thread finishes and closes its own
                self._close(conn)
        for sock in (self._listener, self._waker, self._wake_in):
            sock.close()
        self._selector.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (the loop wakes anyway) or closed (stopped)
            self._waker.send(b"\0")

    def _accept(self) -> None:
        now = time.monotonic()
        for _ in range(64):  # then let the connections already open have their turn
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors: stop accepting for a moment
                logger.warning("cannot accept connections: %s", exc.strerror or exc)
                self._selector.unregister(self._listener)
                self._accept_paused_until = now + 0.5
                return
            sock.setblocking(False)
            if sock.family != getattr(socket, "AF_UNIX", None):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(sock, str(address[0]), now)
            conn.deadline = now + self.keepalive_timeout
            refuse = len(self._conns) - self._lingering >= self.max_connections and not self._make_room(now)
            self._conns[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)
            if refuse:
                logger.warning("refused a connection from %s: %d open", conn.addr, len(self._conns))
                self._answer_and_close(conn, _busy(), 0)
            else:
                self._idle[conn] = None

    def _make_room(self, now: float) -> bool:
        """Close the oldest idle keep-alive connection, else the oldest request arriving for over
        ``_EVICT_AFTER`` seconds (a slow client's; a real one on any network arrives faster)."""
        if self._idle:
            oldest = next(iter(self._idle))
            self._close(oldest)
            return True
        slowest: Optional[_Conn] = None
        for conn in self._conns.values():
            started = conn.request_started
            if conn.state != _READING or started is None or now - started <= self.evict_after:
                continue
            if slowest is None or started < (slowest.request_started or now):
                slowest = conn
        if slowest is None:
            return False
        logger.info("closed a slow request from %s to make room", slowest.addr)
        self._answer_and_close(slowest, _busy(), 0)
        return True

    def _on_readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        if conn.state == _DRAINING:
            conn.discard -= len(data)
            if conn.discard <= 0:
                self._close(conn)
            return
        conn.buf += data
        if conn.head is None and b"\n" not in data and len(conn.buf) <= MAX_REQUEST_LINE:
            if conn.request_started is None:  # the request line is still arriving: nothing to parse
                self._start_request(conn, time.monotonic())
            return
        self._parse(conn, time.monotonic())

    def _start_request(self, conn: _Conn, now: float) -> None:
        conn.request_started = now
        conn.deadline = now + self.request_timeout
        self._idle.pop(conn, None)

    def _parse(self, conn: _Conn, now: float) -> None:
        """Start answering the request in ``conn.buf`` once all of it is there."""
        if conn.request_started is None:
            self._start_request(conn, now)
        try:
            if conn.head is None:
                conn.head = parse_head(bytes(conn.buf), self.max_body_bytes)
                if conn.head is None:
                    return
                expect = (header(conn.head.headers, "expect") or "").lower()
                if expect == "100-continue" and conn.head.length and not conn.expect_sent:
                    conn.expect_sent = True
                    self._send_quietly(conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
        except Refused as refused:
            logger.info("%s refused: %s %s", conn.addr, refused.response.status, refused)
            self._answer_and_close(conn, refused.response, refused.discard)
            return
        head = conn.head
        end = head.end + head.length
        if len(conn.buf) < end:
            return
        body = bytes(conn.buf[head.end : end])
        del conn.buf[:end]
        conn.head = None
        conn.expect_sent = False
        conn.state = _BUSY
        self._selector.unregister(conn.sock)
        keep_alive = head.keep_alive and not self._stopping
        request = Request(head.method, head.target, head.headers, body)
        self._pool.submit(self._handle, conn, head, request, keep_alive)

    # -- handler threads -----------------------------------------------------------------------

    def _handle(self, conn: _Conn, head: Head, request: Request, keep_alive: bool) -> None:
        GATE.pass_through()  # a fire of this process's scheduler is due: it goes first
        try:
            response = self.app.handle(request)
        except Exception:  # handle() never raises; if it does, the client still gets JSON
            logger.exception("%s %s failed", request.method, request.target)
            response = error_response(500, "internal", "internal error; see the server log")
        http10 = head.line.endswith("HTTP/1.0")
        data = encode_response(
            response,
            head_only=head.method == "HEAD",
            keep_alive=(True if http10 else None) if keep_alive else False,
        )
        # Changes and errors at INFO; the dashboard's polling reads at DEBUG.
        level = logging.DEBUG if head.method in ("GET", "HEAD") and response.status < 400 else logging.INFO
        if logger.isEnabledFor(level):
            logger.log(level, '%s "%s" %s', conn.addr, head.line, response.status)
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:  # the client is gone
            self._give_back(conn, "close")
            return
        conn.out = data[sent:]
        conn.after_write = "resume" if keep_alive else "linger"
        self._give_back(conn, "write" if conn.out else conn.after_write)

    def _give_back(self, conn: _Conn, action: str) -> None:
        with self._lock:
            stopped = self._stopped
            if not stopped:
                self._returned.append((conn, action))
        if not stopped:
            self._wake()
            return
        try:  # the loop has ended (stop() during the request): finish here, blocking
            if action == "write":
                conn.sock.settimeout(5)
                conn.sock.sendall(conn.out)
        except OSError:
            pass
        finally:
            conn.sock.close()

    # -- back on the selector thread --------------------------------------------------------------

    def _take_returned(self) -> None:
        try:
            while self._wake_in.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        with self._lock:
            returned = list(self._returned)
            self._returned.clear()
        now = time.monotonic()
        for conn, action in returned:
            if action == "close":
                self._close(conn)
            elif action == "write":
                conn.state = _WRITING
                conn.deadline = now + self.request_timeout
                self._selector.register(conn.sock, selectors.EVENT_WRITE, conn)
            else:
                self._after_response(conn, action, now)

    def _after_response(self, conn: _Conn, action: str, now: float) -> None:
        if action == "linger" or self._stopping:
            self._linger(conn, now)
            return
        conn.state = _READING
        conn.request_started = None
        conn.idle_since = now
        conn.deadline = now + self.keepalive_timeout
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        self._idle[conn] = None
        if conn.buf:  # the next request was sent before this answer (pipelining)
            self._parse(conn, now)

    def _on_writable(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self._selector.unregister(conn.sock)
            self._after_response(conn, conn.after_write, time.monotonic())

    def _answer_and_close(self, conn: _Conn, response: Response, discard: int) -> None:
        """Answer a refused request, then drain what the client still sends (closing on unread
        input resets the connection, and the client would see a reset instead of the answer)."""
        data = encode_response(response, head_only=False, keep_alive=False)
        conn.buf.clear()
        conn.head = None
        conn.discard = min(discard, _DISCARD_LIMIT)
        self._idle.pop(conn, None)
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        if sent < len(data):
            conn.out = data[sent:]
            conn.after_write = "linger"
            conn.state = _WRITING
            conn.deadline = time.monotonic() + self.request_timeout
            self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
            return
        self._selector.unregister(conn.sock)
        self._linger(conn, time.monotonic())

    def _linger(self, conn: _Conn, now: float) -> None:
        """Half-close after the last answer and read until the client closes too: a refused body
        still arriving (``conn.discard`` bytes, 10 s at most), else 2 s of whatever comes."""
        if self._lingering >= _MAX_LINGERING:
            self._close(conn)
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        self._idle.pop(conn, None)
        self._lingering += 1
        conn.state = _DRAINING
        conn.deadline = now + (10.0 if conn.discard else _LINGER_SECONDS)
        conn.discard = conn.discard or _DISCARD_LIMIT
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _sweep(self, now: float) -> None:
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        expired = [c for c in self._conns.values() if c.state != _BUSY and now >= c.deadline]
        for conn in expired:
            if conn.state == _READING and conn.request_started is not None:
                logger.info("%s sent no whole request within %g s", conn.addr, self.request_timeout)
                timeout = error_response(
                    408, "request_timeout", f"the request did not arrive within {self.request_timeout:g} s"
                )
                self._answer_and_close(conn, timeout, 0)
            else:
                self._close(conn)

    def _send_quietly(self, sock: socket.socket, data: bytes) -> None:
        """One non-blocking send of a short interim answer (100 Continue)."""
        with contextlib.suppress(OSError):
            sock.send(data)

    def _close(self, conn: _Conn) -> None:
        self._idle.pop(conn, None)
        if self._conns.pop(conn.sock, None) is None:
            return
        if conn.state == _DRAINING:
            self._lingering -= 1
        if conn.state != _BUSY:
            with contextlib.suppress(KeyError, ValueError):  # not registered (between states)
                self._selector.unregister(conn.sock)
        conn.sock.close()


def _busy() -> Response:
    return error_response(503, "busy", "the server has too many open connections; retry in a moment")
