"""``serve``: the same route table served three ways, so one test checks all of them.

- ``stdlib``: ``ApiServer`` on a real loopback socket, through urllib;
- ``asgi``: ``create_app`` called in-process by a small asyncio ASGI client (standard library only:
  runs wherever the tests run, Python 3.9 without any package included);
- ``uvicorn``: ``create_app`` under uvicorn on a real loopback socket, through urllib (skipped only
  where uvicorn is not installed; the test extra installs it).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import unquote

import pytest

from flowyml_lite.api import ApiServer
from flowyml_lite.api.asgi import AsgiApp, create_app

#: urllib without the machine's proxy settings: the tests talk to 127.0.0.1 directly.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
Reply = Tuple[int, Dict[str, str], bytes]


class Served:
    """A running server: ``url`` and ``fetch()``, whichever way it serves."""

    kind = ""
    url = ""

    def fetch(
        self,
        path: str,
        method: str = "GET",
        body: Any = None,
        *,
        data: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> Reply:
        """(status, lower-cased headers, body) of one request; error statuses are returned."""
        sent = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            sent.setdefault("Content-Type", "application/json")
        if data is None and method in ("POST", "PUT", "PATCH"):
            data = b""
        return self._exchange(method, path, sent, data)

    def _exchange(self, method: str, path: str, headers: Dict[str, str], data: Optional[bytes]) -> Reply:
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with OPENER.open(request, timeout=30) as response:
                return response.status, _lower(response.headers.items()), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, _lower(exc.headers.items()), exc.read()

    def close(self) -> None:
        raise NotImplementedError


def _lower(items: Any) -> Dict[str, str]:
    return {k.lower(): v for k, v in items}


class StdlibServed(Served):
    kind = "stdlib"

    def __init__(self, scheduler: Any, options: Dict[str, Any]) -> None:
        self.server = ApiServer(scheduler, port=0, **options).start()
        self.url = self.server.url

    def close(self) -> None:
        self.server.stop()


class AsgiServed(Served):
    """Calls the ASGI app the way a server would: one ``http`` scope per request, body in one message."""

    kind = "asgi"

    def __init__(self, scheduler: Any, options: Dict[str, Any], root_path: str = "") -> None:
        self.app: AsgiApp = create_app(scheduler, **options)
        self.url = "http://127.0.0.1:8000"
        self.root_path = root_path

    def _exchange(self, method: str, path: str, headers: Dict[str, str], data: Optional[bytes]) -> Reply:
        sent = {k.lower(): v for k, v in headers.items()}
        sent.setdefault("host", "127.0.0.1:8000")
        if data is not None:
            sent.setdefault("content-length", str(len(data)))
        return asgi_call(self.app, method, path, sent, data or b"", root_path=self.root_path)

    def close(self) -> None:
        asyncio.run(self.app.shutdown())


def asgi_call(
    app: Callable[..., Any],
    method: str,
    target: str,
    headers: Dict[str, str],
    body: bytes = b"",
    *,
    root_path: str = "",
    chunks: Optional[List[bytes]] = None,
) -> Reply:
    """One request through an ASGI app; ``chunks``: the body in several ``http.request`` messages."""
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + unquote(path),
        "raw_path": (root_path + path).encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": root_path,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    parts = list(chunks) if chunks is not None else [body]
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    sent: List[Dict[str, Any]] = []

    async def receive() -> Dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    if not sent:
        return 0, {}, b""
    start = sent[0]
    assert start["type"] == "http.response.start"
    reply_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}
    content = b"".join(m.get("body", b"") for m in sent[1:])
    assert not sent[-1].get("more_body"), "the response never ended"
    return start["status"], reply_headers, content


class UvicornServed(Served):
    kind = "uvicorn"

    def __init__(self, scheduler: Any, options: Dict[str, Any]) -> None:
        uvicorn = pytest.importorskip("uvicorn")
        self.app = create_app(scheduler, **options)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # Nagle off
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, lifespan="on", log_config=None, access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        ready = threading.Event()
        for _ in range(200):  # bounded: 10 s
            if self.server.started:
                ready.set()
                break
            ready.wait(0.05)
        assert ready.is_set(), "uvicorn did not start"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


KINDS = {"stdlib": StdlibServed, "asgi": AsgiServed, "uvicorn": UvicornServed}


@pytest.fixture(params=sorted(KINDS))
def serve(request: pytest.FixtureRequest) -> Iterator[Callable[..., Served]]:
    """``serve(scheduler, **ApiServer options)`` -> a running ``Served``, closed after the test."""
    started: List[Served] = []

    def start(scheduler: Any, **options: Any) -> Served:
        served = KINDS[request.param](scheduler, options)
        started.append(served)
        return served

    yield start
    for served in started:
        served.close()
