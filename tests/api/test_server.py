"""The API served: ``ApiServer`` on real sockets (port 0, loopback) and, through the ``serve`` fixture
(``conftest.py``), the ASGI app in-process and under uvicorn.

What the routes answer is ``test_app.py``'s subject; here: configuration checks before binding, the
same requests against every server (security headers, token, Host and Origin checks, body limits,
error JSON), the stdlib server's HTTP framing (malformed requests, keep-alive, pipelining, 100-continue),
its deadlines and connection limit, the OpenAPI document (validated, and fuzzed by schemathesis),
the ``serve`` command's options, and a clean stop.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from flowyml_lite.api import TOKEN_ENV, ApiServer, is_loopback
from flowyml_lite.api.openapi import undocumented_routes
from flowyml_lite.errors import ConfigurationError, StoreError

if TYPE_CHECKING:
    from tests.api.conftest import Served

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token"
JSON = "application/json"
#: urllib without the machine's proxy settings: the tests talk to 127.0.0.1 directly.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def ok() -> None:
    return None


def fetch(
    url: str,
    method: str = "GET",
    body: Any = None,
    *,
    data: Optional[bytes] = None,
    headers: Optional[Dict[str, str]] = None,
) -> Tuple[int, Message, bytes]:
    """(status, headers, body) of one request; error statuses are returned, not raised."""
    sent = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        sent.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with OPENER.open(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def final_response(raw: bytes) -> bytes:
    """``raw`` without the interim ``100 Continue`` responses before the final one."""
    while raw.startswith(b"HTTP/1.1 100 ") and b"\r\n\r\n" in raw:
        raw = raw.partition(b"\r\n\r\n")[2]
    return raw


def split_response(raw: bytes) -> Tuple[int, Dict[str, str], bytes]:
    """(status, lower-cased headers, body) of the final response in ``raw``."""
    head, _, body = final_response(raw).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send bytes on a new connection; read the final response to its Content-Length, or to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while True:
            response = final_response(data)
            if b"\r\n\r\n" in response and not response.startswith(b"HTTP/1.1 100 "):
                _, headers, body = split_response(response)
                if "content-length" in headers and len(body) >= int(headers["content-length"]):
                    return data
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        return False


@pytest.fixture
def scheduler() -> Iterator[PipelineScheduler]:
    sched = PipelineScheduler(SchedulerConfig(persist_schedules=False))
    sched.schedule_daily("nightly", ok, hour=3)
    yield sched
    sched.close()


@pytest.fixture
def server(scheduler: PipelineScheduler) -> Iterator[ApiServer]:
    with ApiServer(scheduler, port=0, pipelines={"etl": ok}) as srv:
        yield srv


class TestConfiguration:
    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "scheduler.example.com"])
    def test_a_non_loopback_host_without_a_token_is_refused_before_binding(
        self, scheduler: PipelineScheduler, host: str
    ) -> None:
        # 192.0.2.1 is not an address of this machine: binding it first would fail with another error.
        with pytest.raises(ConfigurationError) as caught:
            ApiServer(scheduler, host, 0, allow_hosts=["scheduler.lan"])
        message = str(caught.value)
        assert "token" in message and "FLOWYML_SCHEDULER_API_TOKEN" in message and "--token-file" in message
        assert "--allow-host" not in message
        assert "cannot listen" not in message

    @pytest.mark.parametrize("allow_hosts", [None, [], ["  "]])
    def test_a_non_loopback_host_without_a_host_allow_list_is_refused(
        self, scheduler: PipelineScheduler, allow_hosts: Optional[List[str]]
    ) -> None:
        with pytest.raises(ConfigurationError) as caught:
            ApiServer(scheduler, "0.0.0.0", 0, token=TOKEN, allow_hosts=allow_hosts)
        message = str(caught.value)
        assert "--allow-host" in message and "token" not in message.split("needs")[1]

    def test_without_both_the_message_names_both(self, scheduler: PipelineScheduler) -> None:
        with pytest.raises(ConfigurationError) as caught:
            ApiServer(scheduler, "0.0.0.0", 0)
        assert "--allow-host" in str(caught.value) and "FLOWYML_SCHEDULER_API_TOKEN" in str(caught.value)

    def test_a_non_loopback_host_with_a_token_and_allowed_hosts_is_accepted(
        self, scheduler: PipelineScheduler
    ) -> None:
        srv = ApiServer(scheduler, "0.0.0.0", 0, token=TOKEN, allow_hosts=["scheduler.lan"])  # never started
        try:
            assert srv.port > 0
            assert srv.app.allowed_hosts == {"scheduler.lan"}  # no loopback names off loopback
        finally:
            srv.stop()

    @pytest.mark.parametrize("token", ["", " ", "\t\n", "two words", "t\u00f6ken", "tab\there"])
    def test_a_blank_or_unsendable_token_is_refused_even_on_loopback(
        self, scheduler: PipelineScheduler, token: str
    ) -> None:
        with pytest.raises(ConfigurationError, match="token"):
            ApiServer(scheduler, port=0, token=token)

    def test_token_for_reads_without_a_token_is_refused(self, scheduler: PipelineScheduler) -> None:
        with pytest.raises(ConfigurationError, match="token"):
            ApiServer(scheduler, port=0, token_for_reads=True)

    @pytest.mark.parametrize(
        ("option", "value"),
        [("threads", 0), ("max_connections", 0), ("request_timeout", 0), ("keepalive_timeout", -1)],
    )
    def test_limits_must_be_positive(self, scheduler: PipelineScheduler, option: str, value: Any) -> None:
        with pytest.raises(ConfigurationError, match=option):
            ApiServer(scheduler, port=0, **{option: value})

    @pytest.mark.parametrize("port", [-1, 65536, 100_000, True, "8080", 80.0])
    def test_a_port_outside_0_to_65535_is_refused(self, scheduler: PipelineScheduler, port: Any) -> None:
        with pytest.raises(ConfigurationError, match="port"):
            ApiServer(scheduler, port=port)

    def test_a_busy_port_is_a_clear_configuration_error(
        self, scheduler: PipelineScheduler, server: ApiServer
    ) -> None:
        with pytest.raises(ConfigurationError) as caught:
            ApiServer(scheduler, port=server.port)
        message = str(caught.value)
        assert f"127.0.0.1:{server.port}" in message
        assert "in use" in message.lower()

    @pytest.mark.parametrize(
        ("host", "loopback"),
        [
            ("localhost", True),
            ("LOCALHOST", True),
            ("127.0.0.1", True),
            ("127.0.0.53", True),
            ("::1", True),
            ("0.0.0.0", False),
            ("::", False),
            ("10.0.0.1", False),
            ("example.com", False),
        ],
    )
    def test_is_loopback_knows_which_addresses_only_this_machine_reaches(
        self, host: str, loopback: bool
    ) -> None:
        assert is_loopback(host) is loopback

    def test_the_url_names_the_bound_port(self, server: ApiServer) -> None:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"


class TestServedEveryWay:
    """The same requests to the stdlib server, the ASGI app in-process, and the ASGI app under uvicorn."""

    @pytest.fixture
    def served(self, serve: Callable[..., Served], scheduler: PipelineScheduler) -> Served:
        return serve(scheduler, pipelines={"etl": ok})

    def test_serves_the_schedules_as_json(self, served: Served) -> None:
        status, headers, body = served.fetch("/api/schedules")
        assert status == 200
        assert headers["content-type"] == "application/json"
        assert [s["name"] for s in json.loads(body)] == ["nightly"]

    def test_every_response_carries_nosniff_no_store_and_its_length(self, served: Served) -> None:
        for path in ("/api/schedules", "/metrics", "/", "/api/nothing"):
            _, headers, body = served.fetch(path)
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["cache-control"] == "no-store"
            assert int(headers["content-length"]) == len(body)

    def test_the_dashboard_is_served(self, served: Served) -> None:
        status, headers, body = served.fetch("/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b"<html" in body.lower()

    def test_a_post_body_reaches_the_scheduler(self, served: Served, scheduler: PipelineScheduler) -> None:
        body = {"name": "report", "pipeline_name": "etl", "schedule_type": "hourly", "minute": 5}
        status, _, payload = served.fetch("/api/schedules", "POST", body)
        assert status == 201
        assert json.loads(payload)["status"] == "success"
        assert scheduler.get_schedule("report").schedule_value == "5"

    def test_an_encoded_slash_in_a_name_reaches_the_route(
        self, served: Served, scheduler: PipelineScheduler
    ) -> None:
        scheduler.schedule_hourly("team/etl", ok)
        status, _, payload = served.fetch("/api/schedules/team%2Fetl/run?wait=true", "POST")
        assert status == 200
        assert json.loads(payload)["run"]["schedule_name"] == "team/etl"

    def test_run_now_without_waiting_is_a_202(self, served: Served) -> None:
        status, _, payload = served.fetch("/api/schedules/nightly/run", "POST")
        assert status in (200, 202)  # 200 only if the run finished before the answer was written
        assert json.loads(payload)["run"]["schedule_name"] == "nightly"

    def test_head_sends_the_headers_and_no_body(self, served: Served) -> None:
        _, _, get_body = served.fetch("/api/schedules")
        status, headers, body = served.fetch("/api/schedules", "HEAD")
        assert status == 200
        assert int(headers["content-length"]) == len(get_body) > 0
        assert body == b""

    def test_an_unknown_endpoint_is_a_json_404(self, served: Served) -> None:
        status, headers, body = served.fetch("/api/nothing/here")
        assert status == 404 and headers["content-type"] == "application/json"
        assert json.loads(body)["error"]["code"] == "not_found"

    @pytest.mark.parametrize("method", ["PUT", "OPTIONS", "PATCH"])
    def test_a_wrong_method_is_a_json_405_with_the_allow_header(self, served: Served, method: str) -> None:
        status, headers, body = served.fetch("/api/schedules", method)
        assert status == 405
        assert headers["content-type"] == "application/json"
        assert headers["allow"] == "GET, POST"
        assert json.loads(body)["error"]["code"] == "method_not_allowed"

    def test_a_body_over_one_mebibyte_is_a_json_413(self, served: Served) -> None:
        status, _, body = served.fetch(
            "/api/schedules", "POST", data=b"x" * ((1 << 20) + 1), headers={"Content-Type": JSON}
        )
        assert status == 413
        assert json.loads(body)["error"]["code"] == "too_large"

    def test_a_body_of_exactly_one_mebibyte_is_read_and_parsed(self, served: Served) -> None:
        prefix, suffix = b'{"name": "report", "padding": "', b'"}'
        data = prefix + b"x" * ((1 << 20) - len(prefix) - len(suffix)) + suffix
        status, _, body = served.fetch("/api/schedules", "POST", data=data, headers={"Content-Type": JSON})
        assert status == 400  # not 413: it was read, and its unknown field named
        assert "padding" in json.loads(body)["error"]["message"]

    def test_an_invalid_create_body_names_the_field_and_the_documented_range(self, served: Served) -> None:
        body = {"name": "report", "pipeline_name": "etl", "schedule_type": "daily", "hour": 24}
        status, _, payload = served.fetch("/api/schedules", "POST", body)
        assert status == 400
        assert (
            json.loads(payload)["error"]["message"]
            == "'hour' must be an integer from 0 to 23 (or null), got 24"
        )

    def test_concurrent_requests_from_several_threads_all_succeed(self, served: Served) -> None:
        paths = ["/api/schedules", "/api/scheduler/health", "/metrics", "/api/schedules/nightly"] * 10
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(lambda path: served.fetch(path)[0], paths))
        assert statuses == [200] * len(paths)


class TestSecurityEveryWay:
    @pytest.fixture
    def served(self, serve: Callable[..., Served], scheduler: PipelineScheduler) -> Served:
        return serve(scheduler, token=TOKEN, pipelines={"etl": ok}, allow_hosts=["scheduler.lan"])

    @pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer "}])
    def test_a_change_without_the_token_is_a_401_and_changes_nothing(
        self, served: Served, scheduler: PipelineScheduler, headers: Dict[str, str]
    ) -> None:
        status, _, body = served.fetch("/api/schedules/nightly/disable", "POST", headers=headers)
        assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
        status, _, _ = served.fetch("/api/schedules/nightly", "DELETE", headers=headers)
        assert status == 401
        record = scheduler.store.get_schedule("nightly")
        assert record is not None and record.enabled

    def test_the_token_in_a_bearer_header_is_accepted(
        self, served: Served, scheduler: PipelineScheduler
    ) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        status, _, _ = served.fetch("/api/schedules/nightly/disable", "POST", headers=headers)
        assert status == 200
        assert scheduler.get_schedule("nightly").enabled is False

    def test_reads_stay_open(self, served: Served) -> None:
        assert served.fetch("/api/schedules")[0] == 200
        assert served.fetch("/metrics")[0] == 200

    def test_a_foreign_host_on_loopback_is_refused_as_dns_rebinding(self, served: Served) -> None:
        status, _, body = served.fetch("/api/schedules", headers={"Host": "rebind.attacker.example:8080"})
        assert status == 403
        assert json.loads(body)["error"]["code"] == "host_not_allowed"

    @pytest.mark.parametrize("name", ["scheduler.lan", "localhost", "127.0.0.1"])
    def test_the_loopback_names_and_allow_hosts_are_served(self, served: Served, name: str) -> None:
        assert served.fetch("/api/schedules", headers={"Host": f"{name}:8080"})[0] == 200

    def test_a_cross_origin_change_is_refused_even_with_the_token(
        self, served: Served, scheduler: PipelineScheduler
    ) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"}
        status, _, body = served.fetch("/api/schedules/nightly/disable", "POST", headers=headers)
        assert status == 403
        assert json.loads(body)["error"]["code"] == "cross_origin"
        assert scheduler.get_schedule("nightly").enabled

    def test_a_same_origin_change_with_the_token_is_accepted(
        self, served: Served, scheduler: PipelineScheduler
    ) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "Origin": served.url}
        status, _, _ = served.fetch("/api/schedules/nightly/disable", "POST", headers=headers)
        assert status == 200
        assert scheduler.get_schedule("nightly").enabled is False

    def test_a_store_failure_is_a_503_that_shows_no_path_or_internals(
        self, served: Served, scheduler: PipelineScheduler, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def fail(*args: Any, **kwargs: Any) -> None:
            raise StoreError("cannot open /var/lib/secret/jobs.db: database disk image is malformed")

        monkeypatch.setattr(scheduler, "list_schedules", fail)
        status, _, body = served.fetch("/api/schedules")
        assert status == 503
        error = json.loads(body)["error"]
        assert error["code"] == "store_unavailable" and "retry" in error["message"]
        assert "/var/lib" not in error["message"] and "malformed" not in error["message"]

    def test_a_store_that_a_retry_cannot_mend_is_a_500(
        self, served: Served, scheduler: PipelineScheduler, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from flowyml_lite.errors import StoreFileReplacedError

        def fail(*args: Any, **kwargs: Any) -> None:
            raise StoreFileReplacedError("the database file was replaced: restart the process")

        monkeypatch.setattr(scheduler, "list_schedules", fail)
        status, _, body = served.fetch("/api/schedules")
        assert status == 500 and json.loads(body)["error"]["code"] == "scheduler_error"

    def test_a_bug_is_a_500_that_names_no_exception_class(
        self, served: Served, scheduler: PipelineScheduler, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def fail(*args: Any, **kwargs: Any) -> None:
            raise KeyError("/home/ops/secret")

        monkeypatch.setattr(scheduler, "list_schedules", fail)
        status, _, body = served.fetch("/api/schedules")
        assert status == 500
        assert json.loads(body)["error"] == {
            "code": "internal",
            "message": "internal error; see the server log",
        }


class TestTokenForReads:
    @pytest.fixture
    def served(self, serve: Callable[..., Served], scheduler: PipelineScheduler) -> Served:
        return serve(scheduler, token=TOKEN, token_for_reads=True)

    @pytest.mark.parametrize(
        "path", ["/api/schedules", "/metrics", "/api/scheduler/health", "/api/openapi.json"]
    )
    def test_reads_need_the_token(self, served: Served, path: str) -> None:
        status, _, body = served.fetch(path)
        assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
        assert served.fetch(path, headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200

    @pytest.mark.parametrize("path", ["/", "/dashboard", "/api/health"])
    def test_the_dashboard_page_and_the_liveness_probe_stay_open(self, served: Served, path: str) -> None:
        assert served.fetch(path)[0] in (200, 503)  # 503: the scheduler is not started

    def test_the_openapi_document_marks_reads_as_secured(self, served: Served) -> None:
        _, _, body = served.fetch("/api/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
        paths = json.loads(body)["paths"]
        assert paths["/api/schedules"]["get"]["security"] == [{"token": []}]
        assert "401" in paths["/api/schedules"]["get"]["responses"]
        assert "security" not in paths["/api/health"]["get"]


def raw(port: int, request: bytes) -> Tuple[int, Dict[str, str], Any]:
    """Send bytes on a new connection; (status, headers, JSON body) of the answer."""
    status, headers, body = split_response(raw_exchange(port, request))
    return status, headers, json.loads(body) if headers.get("content-type") == JSON else body


class TestFraming:
    """What the stdlib server answers before a request reaches the routes: always JSON."""

    @pytest.mark.parametrize(
        ("request_bytes", "status", "code"),
        [
            (b"GARBAGE\r\n\r\n", 400, "bad_request"),
            (b"GET /\r\n\r\n", 400, "bad_request"),  # HTTP/0.9
            (b"GET / HTTP/1.1 extra\r\nHost: 127.0.0.1\r\n\r\n", 400, "bad_request"),
            (b"GET / FTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, "bad_request"),
            (b"G(T / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, "bad_request"),
            (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, "bad_request"),
            (b"GET / HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n", 505, "http_version_not_supported"),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "http_version_not_supported"),
            (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414, "uri_too_long"),
            (b"GET /" + b"a" * 70000, 414, "uri_too_long"),  # no end of line yet
            (
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n",
                431,
                "headers_too_large",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n",
                431,
                "headers_too_large",
            ),
            (b"GET / HTTP/1.1\r\n\r\n", 400, "bad_request"),  # HTTP/1.1 without Host
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "bad_request"),
            (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: 1\r\n\r\n", 400, "bad_request"),
            (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n folded\r\n\r\n", 400, "bad_request"),
            (
                b"POST /api/schedules HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
                "bad_request",
            ),
        ],
    )
    def test_a_request_that_cannot_be_parsed_gets_a_json_error_and_a_closed_connection(
        self, server: ApiServer, request_bytes: bytes, status: int, code: str
    ) -> None:
        got, headers, body = raw(server.port, request_bytes)
        assert (got, body["error"]["code"]) == (status, code)
        assert headers["content-type"] == JSON
        assert headers["connection"] == "close"
        assert "<" not in body["error"]["message"]  # no HTML

    @pytest.mark.parametrize("method", ["FOO", "PROPFIND", "TRACE", "CONNECT"])
    def test_an_unknown_method_is_a_json_405_on_a_known_path(self, server: ApiServer, method: str) -> None:
        status, headers, body = raw(
            server.port, method.encode() + b" /api/schedules HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        assert status == 405 and headers["allow"] == "GET, POST"
        assert body["error"]["code"] == "method_not_allowed"

    def test_an_unknown_method_on_an_unknown_path_is_a_json_404(self, server: ApiServer) -> None:
        status, _, body = raw(server.port, b"FOO /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status == 404 and body["error"]["code"] == "not_found"

    def test_http_1_0_is_served_and_closed(self, server: ApiServer) -> None:
        status, headers, _ = raw(server.port, b"GET /api/schedules HTTP/1.0\r\n\r\n")
        assert status == 200 and headers["connection"] == "close"

    def test_http_1_0_keep_alive_is_honoured(self, server: ApiServer) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            for _ in range(2):
                sock.sendall(b"GET /api/health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                status, headers, _ = read_response(sock)
                assert status == 503 and headers["connection"] == "keep-alive"

    def test_pipelined_requests_are_answered_in_order_on_one_connection(self, server: ApiServer) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                b"GET /api/schedules/nightly HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                b"GET /api/nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )
            assert [read_response(sock)[0] for _ in range(3)] == [200, 404, 503]

    def test_keep_alive_serves_two_requests_on_one_connection(self, server: ApiServer) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            connection.request("GET", "/api/schedules")
            first = connection.getresponse()
            assert first.status == 200
            first.read()
            sock = connection.sock
            assert sock is not None
            connection.request("GET", "/api/scheduler/health")
            second = connection.getresponse()
            assert second.status == 200
            assert json.loads(second.read())["num_schedules"] == 1
            assert connection.sock is sock  # the same socket: the server kept it open
        finally:
            connection.close()

    def test_connections_have_nagle_off(self, server: ApiServer) -> None:
        # Nagle's algorithm would hold a response's last segment for the client's delayed ACK (40 ms).
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            read_response(sock)
            conns = list(server._conns.values())
            assert conns and all(c.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for c in conns)

    def test_an_error_answer_is_read_whole_by_a_client_still_sending(self, server: ApiServer) -> None:
        # The server drains what the client sends after a 413 instead of resetting the connection.
        status, _, body = fetch(
            server.url + "/api/schedules", "POST", data=b"x" * (16 << 20), headers={"Content-Type": JSON}
        )
        assert status == 413 and json.loads(body)["error"]["code"] == "too_large"

    def test_a_declared_length_over_one_mebibyte_is_answered_413_before_any_body_arrives(
        self, server: ApiServer
    ) -> None:
        status, headers, body = raw(
            server.port,
            b"POST /api/schedules HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2000000\r\n\r\n",  # the body never comes: the server must not wait for it
        )
        assert status == 413
        assert headers["connection"] == "close"
        assert body["error"]["code"] == "too_large"

    def test_an_oversized_body_announced_with_expect_100_continue_gets_no_100(
        self, server: ApiServer
    ) -> None:
        raw_reply = raw_exchange(
            server.port,
            b"POST /api/schedules HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n",
        )
        assert raw_reply.startswith(b"HTTP/1.1 413 ")

    def test_a_body_announced_with_expect_100_continue_gets_the_100_then_the_answer(
        self, server: ApiServer
    ) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                b"POST /api/schedules/nightly/disable HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
            sock.sendall(b"{}")
            assert read_response(sock)[0] == 200

    def test_a_chunked_body_is_a_411(self, server: ApiServer) -> None:
        status, _, body = raw(
            server.port,
            b"POST /api/schedules HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        )
        assert status == 411
        assert body["error"]["code"] == "length_required"

    @pytest.mark.parametrize("length", [b"-5", b"lots", b"1e3", b"\xd9\xa3"])
    def test_a_bad_content_length_is_a_400(self, server: ApiServer, length: bytes) -> None:
        status, _, body = raw(
            server.port,
            b"POST /api/schedules HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + length + b"\r\n\r\n",
        )
        assert status == 400
        assert "Content-Length" in body["error"]["message"]


_unread: Dict[int, bytes] = {}  # bytes past the last response read from a socket (pipelining)


def read_response(sock: socket.socket) -> Tuple[int, Dict[str, str], bytes]:
    """The next response on a kept-alive socket (headers, then Content-Length bytes)."""
    data = _unread.pop(id(sock), b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, headers, _ = split_response(head + b"\r\n\r\n")
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed within a response"
        body += chunk
    if len(body) > length:
        _unread[id(sock)] = body[length:]
    return status, headers, body[:length]


def closed_by_server(sock: socket.socket) -> bytes:
    """What the server sent before closing ``sock`` (waits up to 10 s for the close)."""
    sock.settimeout(10)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


class TestDeadlines:
    def test_a_request_trickling_in_is_closed_at_its_deadline_whatever_each_read_brings(
        self, scheduler: PipelineScheduler
    ) -> None:
        with (
            ApiServer(scheduler, port=0, request_timeout=0.5) as srv,
            socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock,
        ):
            answer = b""
            for byte in b"GET /api/schedules HTTP/1.1\r\nHost: 127.0.0.1\r\n":  # never the blank line
                try:
                    sock.sendall(bytes([byte]))
                except OSError:  # closed by the server: the deadline passed
                    break
                threading.Event().wait(0.05)  # each byte well within any per-read timeout
            answer = closed_by_server(sock)
        status, headers, body = split_response(answer)
        assert status == 408 and headers["connection"] == "close"
        assert json.loads(body)["error"]["code"] == "request_timeout"

    def test_a_connection_that_sends_nothing_is_closed_after_the_keepalive_timeout(
        self, scheduler: PipelineScheduler
    ) -> None:
        with (
            ApiServer(scheduler, port=0, keepalive_timeout=0.3) as srv,
            socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock,
        ):
            assert closed_by_server(sock) == b""  # closed without an answer: no request was begun

    def test_slow_connections_do_not_keep_real_requests_from_being_answered(
        self, scheduler: PipelineScheduler
    ) -> None:
        with ApiServer(scheduler, port=0, threads=2) as srv:
            slow = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(200)]
            try:
                for sock in slow:
                    sock.sendall(b"GET /api/schedules HTTP/1.1\r\nHo")  # and nothing more
                assert [fetch(srv.url + "/api/schedules")[0] for _ in range(20)] == [200] * 20
            finally:
                for sock in slow:
                    sock.close()

    def test_many_connections_closing_at_once_leave_the_server_answering(
        self, scheduler: PipelineScheduler
    ) -> None:
        with ApiServer(scheduler, port=0) as srv:
            slow = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(300)]
            for sock in slow:
                sock.sendall(b"GET / HTTP/1.1\r\n")
            for sock in slow:
                sock.close()
            assert fetch(srv.url + "/api/schedules")[0] == 200
            for _ in range(200):  # bounded: 10 s
                if srv.open_connections == 0:
                    break
                threading.Event().wait(0.05)
            assert srv.open_connections == 0


class TestConnectionLimit:
    def test_at_the_limit_the_oldest_idle_keep_alive_connection_is_closed_for_a_newcomer(
        self, scheduler: PipelineScheduler
    ) -> None:
        with ApiServer(scheduler, port=0, max_connections=3) as srv:
            idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(3)]
            try:
                for sock in idle:  # each served once, then kept alive
                    sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    read_response(sock)
                assert fetch(srv.url + "/api/schedules")[0] == 200
                # An idle keep-alive connection made room: closed quietly. Usually the oldest, but
                # the last two became idle within microseconds of each other, so either may go.
                readable, _, _ = select.select(idle, [], [], 10)
                assert readable, "no idle connection was closed for the newcomer"
                closed = readable[0]
                assert closed_by_server(closed) == b""
                kept = [sock for sock in idle if sock is not closed][-1]
                kept.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert read_response(kept)[0] == 503  # a kept one is still served
            finally:
                for sock in idle:
                    sock.close()

    def test_at_the_limit_the_oldest_slow_request_is_closed_with_a_503(
        self, scheduler: PipelineScheduler
    ) -> None:
        with ApiServer(scheduler, port=0, max_connections=3) as srv:
            srv.evict_after = 0.0  # any request still arriving counts as slow
            slow = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(3)]
            try:
                for sock in slow:
                    sock.sendall(b"GET /api/schedules HTTP/1.1\r\n")
                    threading.Event().wait(0.05)  # accepted in this order
                assert fetch(srv.url + "/api/schedules")[0] == 200
                status, _, body = split_response(closed_by_server(slow[0]))
                assert status == 503 and json.loads(body)["error"]["code"] == "busy"
            finally:
                for sock in slow:
                    sock.close()

    def test_at_the_limit_with_no_connection_to_spare_the_newcomer_gets_a_json_503(
        self, scheduler: PipelineScheduler
    ) -> None:
        with ApiServer(scheduler, port=0, max_connections=2) as srv:
            srv.evict_after = 3600.0  # no request is slow enough to be closed
            busy = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(2)]
            try:
                for sock in busy:
                    sock.sendall(b"GET /api/schedules HTTP/1.1\r\n")
                threading.Event().wait(0.2)  # both accepted and begun
                status, _, body = fetch(srv.url + "/api/schedules")
                assert status == 503 and json.loads(body)["error"]["code"] == "busy"
            finally:
                for sock in busy:
                    sock.close()


def walk(node: Any) -> Iterator[Dict[str, Any]]:
    """Every JSON object in ``node``, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


class TestOpenApi:
    @pytest.fixture
    def document(self, server: ApiServer) -> Dict[str, Any]:
        status, _, body = fetch(server.url + "/api/openapi.json")
        assert status == 200
        return dict(json.loads(body))

    def test_is_a_valid_openapi_3_0_3_document(self, document: Dict[str, Any]) -> None:
        validator = pytest.importorskip("openapi_spec_validator")
        assert document["openapi"] == "3.0.3"
        validator.validate(document)

    def test_every_route_has_its_own_entry(self) -> None:
        assert undocumented_routes() == []

    def test_uses_no_openapi_3_1_keywords(self, document: Dict[str, Any]) -> None:
        for node in walk(document):
            if "exclusiveMinimum" in node:  # 3.0: a boolean beside minimum; 3.1: a number
                assert node["exclusiveMinimum"] is True and "minimum" in node
            assert not isinstance(node.get("type"), list)  # 3.1 spells nullable ["string", "null"]

    def test_run_now_documents_the_202_and_the_504(self, document: Dict[str, Any]) -> None:
        responses = document["paths"]["/api/schedules/{name}/run"]["post"]["responses"]
        assert {"200", "202", "404", "504"} <= set(responses)

    def test_every_operation_documents_the_json_errors_any_request_can_get(
        self, document: Dict[str, Any]
    ) -> None:
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                responses = operation["responses"]
                for status in ("400", "403", "408", "414", "431", "500", "503"):
                    schema = responses[status]["content"][JSON]["schema"]
                    error = {"$ref": "#/components/schemas/Error"}
                    assert schema == error or error in schema["oneOf"], f"{method} {path} {status}"

    def test_without_a_token_nothing_is_secured(self, document: Dict[str, Any]) -> None:
        assert not [n for n in walk(document["paths"]) if "security" in n]

    def test_with_a_token_changes_are_secured_and_reads_are_not(self, scheduler: PipelineScheduler) -> None:
        with ApiServer(scheduler, port=0, token=TOKEN) as srv:
            paths = json.loads(fetch(srv.url + "/api/openapi.json")[2])["paths"]
        assert paths["/api/schedules"]["post"]["security"] == [{"token": []}]
        assert "401" in paths["/api/schedules/{name}"]["delete"]["responses"]
        assert "security" not in paths["/api/schedules"]["get"]

    def test_a_concrete_path_lists_the_operations_its_name_also_takes(self, document: Dict[str, Any]) -> None:
        # DELETE /api/schedules/health deletes a schedule named "health".
        assert set(document["paths"]["/api/schedules/health"]) == {"get", "delete"}


#: schema-valid requests that the routes still refuse: a cron expression or zone that does not parse
#: is a 400 (the grammar is not in the schema), a pipeline or schedule that does not exist a 404.
SCHEMATHESIS_CONFIG = """\
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "401", "403", "404"]
"""


@pytest.mark.parametrize(("kind", "examples"), [("stdlib", 20), ("uvicorn", 8)])
def test_schemathesis_finds_nothing(
    scheduler: PipelineScheduler, tmp_path: Path, kind: str, examples: int
) -> None:
    """Every check schemathesis has, on every operation, against a live server with a token."""
    executable = Path(sys.executable).with_name("schemathesis")
    if not executable.exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    scheduler.start()
    if kind == "stdlib":
        server: Any = ApiServer(scheduler, port=0, token=TOKEN, pipelines={"etl": ok}).start()
        stop = server.stop
        url = server.url
    else:
        from tests.api.conftest import UvicornServed

        served = UvicornServed(scheduler, {"token": TOKEN, "pipelines": {"etl": ok}})
        stop, url = served.close, served.url
    try:
        result = subprocess.run(
            [
                str(executable),
                "--config-file",
                str(config),
                "run",
                url + "/api/openapi.json",
                "--checks",
                "all",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--max-examples",
                str(examples),
                "--seed",
                "20261206",
                "--workers",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")},
        )
    finally:
        stop()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def serve_cli(
    cwd: Path, *args: str, env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess[str]:
    """``python -m flowyml_lite serve ARGS`` that is expected to exit on its own."""
    return subprocess.run(
        [sys.executable, "-m", "flowyml_lite", "serve", *args],
        cwd=cwd,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def clean_env(extra: Optional[Dict[str, str]] = None, **more: str) -> Dict[str, str]:
    """This environment without scheduler settings, tokens or proxies, importing this repository."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("FLOWYML_") and not k.lower().endswith("_proxy")
    }
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    env.update(more)
    return env


class Serving:
    """A ``serve`` process running until ``close()``; ``url`` is the one it printed."""

    def __init__(self, cwd: Path, *args: str, env: Optional[Dict[str, str]] = None) -> None:
        command = [sys.executable, "-m", "flowyml_lite", "serve", *args]
        self.log = cwd / "serve.err"
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=clean_env(env),
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
        )
        assert self.process.stdout is not None
        lines: List[str] = []
        reader = threading.Thread(target=lambda: lines.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(30)
        words = [w for w in "".join(lines).split() if w.startswith("http://")]
        if not words:
            self.close()
            raise AssertionError(f"serve printed no URL: {lines!r}; stderr: {self.log.read_text()}")
        self.line = lines[0]
        self.url = words[0]

    def stderr(self) -> str:
        return self.log.read_text()

    def close(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


class TestServeCommand:
    def test_off_loopback_without_allow_host_exits_2_naming_the_option(self, tmp_path: Path) -> None:
        result = serve_cli(tmp_path, "--host", "0.0.0.0", "--port", "0", env={TOKEN_ENV: TOKEN})
        assert result.returncode == 2
        assert "--allow-host" in result.stderr
        assert not list(tmp_path.glob("*.db*"))  # refused before the store was opened

    @pytest.mark.parametrize("value", ["", "   "])
    def test_a_blank_token_variable_exits_2(self, tmp_path: Path, value: str) -> None:
        result = serve_cli(tmp_path, "--port", "0", env={TOKEN_ENV: value})
        assert result.returncode == 2
        assert TOKEN_ENV in result.stderr and "empty" in result.stderr

    def test_a_blank_token_file_exits_2(self, tmp_path: Path) -> None:
        (tmp_path / "token").write_text("  \n")
        result = serve_cli(tmp_path, "--port", "0", "--token-file", str(tmp_path / "token"))
        assert result.returncode == 2 and "--token-file" in result.stderr

    def test_a_missing_token_file_exits_2(self, tmp_path: Path) -> None:
        result = serve_cli(tmp_path, "--port", "0", "--token-file", str(tmp_path / "nope"))
        assert result.returncode == 2 and "cannot read --token-file" in result.stderr

    def test_token_for_reads_without_a_token_exits_2(self, tmp_path: Path) -> None:
        result = serve_cli(tmp_path, "--port", "0", "--token-for-reads")
        assert result.returncode == 2 and "--token-for-reads" in result.stderr

    def test_the_token_file_is_the_token_and_never_shows_in_the_command_line(self, tmp_path: Path) -> None:
        (tmp_path / "token").write_text(TOKEN + "\n")
        server = Serving(
            tmp_path,
            "--db",
            str(tmp_path / "jobs.db"),
            "--port",
            "0",
            "--token-file",
            str(tmp_path / "token"),
            "--token-for-reads",
        )
        try:
            assert fetch(server.url + "/api/schedules")[0] == 401
            assert (
                fetch(server.url + "/api/schedules", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
            )
            assert TOKEN not in " ".join(server.process.args)
        finally:
            assert server.close() == 0
        assert "warning" not in server.stderr()

    def test_a_token_on_the_command_line_works_with_a_warning(self, tmp_path: Path) -> None:
        server = Serving(tmp_path, "--db", str(tmp_path / "jobs.db"), "--port", "0", "--token", TOKEN)
        try:
            assert fetch(server.url + "/api/schedules/x", "DELETE")[0] == 401
        finally:
            server.close()
        assert "shows in 'ps'" in server.stderr()

    def test_server_uvicorn_serves_the_api_and_stops_cleanly_on_sigterm(self, tmp_path: Path) -> None:
        pytest.importorskip("uvicorn")
        server = Serving(tmp_path, "--db", str(tmp_path / "jobs.db"), "--port", "0", "--server", "uvicorn")
        try:
            assert "uvicorn" in server.line
            status, _, body = fetch(server.url + "/api/health")
            assert (status, json.loads(body)) == (200, {"status": "ok"})  # the lifespan started the scheduler
            assert fetch(server.url + "/api/nothing")[0] == 404
        finally:
            assert server.close() == 0

    def test_server_uvicorn_without_uvicorn_exits_2_with_the_install_command(self, tmp_path: Path) -> None:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; sys.modules['uvicorn'] = None\n"
                "from flowyml_lite.cli import main\n"
                "raise SystemExit(main(['serve', '--port', '0', '--server', 'uvicorn']))",
            ],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert "pip install 'flowyml-lite[asgi]'" in result.stderr
        assert not list(tmp_path.glob("*.db*"))


def api_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "flowyml-lite-api" and t.is_alive())


class TestStop:
    def test_stop_releases_the_port_and_ends_the_serving_thread(self, scheduler: PipelineScheduler) -> None:
        before = api_threads()
        srv = ApiServer(scheduler, port=0).start()
        port = srv.port
        assert fetch(srv.url + "/api/schedules")[0] == 200
        assert api_threads() == before + 1
        srv.stop()
        assert api_threads() == before
        assert port_is_free(port)
        again = ApiServer(scheduler, port=port)  # the same port binds again
        again.stop()

    def test_stop_without_start_returns(self, scheduler: PipelineScheduler) -> None:
        srv = ApiServer(scheduler, port=0)
        stopper = threading.Thread(target=srv.stop, daemon=True)
        stopper.start()
        stopper.join(10)
        assert not stopper.is_alive(), "stop() without start() hung"
        assert port_is_free(srv.port)

    def test_stop_twice_is_harmless(self, scheduler: PipelineScheduler) -> None:
        srv = ApiServer(scheduler, port=0).start()
        srv.stop()
        srv.stop()
        assert port_is_free(srv.port)

    def test_the_context_manager_starts_and_stops(self, scheduler: PipelineScheduler) -> None:
        with ApiServer(scheduler, port=0) as srv:
            port = srv.port
            assert fetch(srv.url + "/api/health")[0] == 503  # the scheduler itself is not started
        assert port_is_free(port)

    def test_a_request_in_flight_finishes_after_stop(self, scheduler: PipelineScheduler) -> None:
        started, release = threading.Event(), threading.Event()

        def slow() -> None:
            started.set()
            release.wait(10)

        scheduler.schedule_hourly("slow", slow)
        srv = ApiServer(scheduler, port=0).start()
        results: Dict[str, Any] = {}

        def client() -> None:
            results["response"] = fetch(srv.url + "/api/schedules/slow/run?wait=true", "POST", data=b"")

        caller = threading.Thread(target=client, daemon=True)
        caller.start()
        try:
            assert started.wait(10)
            srv.stop()
        finally:
            release.set()
        caller.join(10)
        status, _, body = results["response"]
        assert status == 200
        assert json.loads(body)["run"]["status"] == "succeeded"
