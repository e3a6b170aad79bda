"""``ApiServer``: the API on real sockets (port 0, loopback), through urllib, http.client and raw sockets.

What the routes answer is ``test_app.py``'s subject; here: configuration checks before binding,
HTTP framing (HEAD, keep-alive, Content-Length limits), concurrency, the security headers as a
client sends them, and a clean stop.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from flowyml_lite.api import ApiServer, is_loopback
from flowyml_lite.errors import ConfigurationError

TOKEN = "s3cret-token"
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


class TestServing:
    def test_serves_the_schedules_as_json(self, server: ApiServer) -> None:
        status, headers, body = fetch(server.url + "/api/schedules")
        assert status == 200
        assert headers["Content-Type"] == "application/json"
        assert [s["name"] for s in json.loads(body)] == ["nightly"]

    @pytest.mark.parametrize("host", ["localhost", "::1"])
    def test_serves_on_the_other_loopback_names(self, scheduler: PipelineScheduler, host: str) -> None:
        try:
            srv = ApiServer(scheduler, host, 0).start()
        except ConfigurationError as exc:  # a machine without IPv6
            pytest.skip(str(exc))
        try:
            assert srv.url == (f"http://[{host}]:{srv.port}" if ":" in host else f"http://{host}:{srv.port}")
            status, _, body = fetch(srv.url + "/api/schedules")
            assert status == 200 and json.loads(body)[0]["name"] == "nightly"
        finally:
            srv.stop()

    def test_every_response_carries_nosniff_no_store_and_its_length(self, server: ApiServer) -> None:
        for path in ("/api/schedules", "/metrics", "/", "/api/nothing"):
            _, headers, body = fetch(server.url + path)
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Cache-Control"] == "no-store"
            assert int(headers["Content-Length"]) == len(body)

    def test_a_post_body_reaches_the_scheduler(self, server: ApiServer, scheduler: PipelineScheduler) -> None:
        body = {"name": "report", "pipeline_name": "etl", "schedule_type": "hourly", "minute": 5}
        status, _, payload = fetch(server.url + "/api/schedules", "POST", body)
        assert status == 201
        assert json.loads(payload)["status"] == "success"
        assert scheduler.get_schedule("report").schedule_value == "5"

    def test_an_encoded_slash_in_a_name_reaches_the_route(
        self, server: ApiServer, scheduler: PipelineScheduler
    ) -> None:
        scheduler.schedule_hourly("team/etl", ok)
        status, _, payload = fetch(server.url + "/api/schedules/team%2Fetl/run?wait=true", "POST")
        assert status == 200
        assert json.loads(payload)["run"]["schedule_name"] == "team/etl"

    def test_head_sends_the_headers_and_no_body(self, server: ApiServer) -> None:
        _, _, get_body = fetch(server.url + "/api/schedules")
        raw = raw_exchange(
            server.port,
            b"HEAD /api/schedules HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        status, headers, body = split_response(raw)
        assert status == 200
        assert int(headers["content-length"]) == len(get_body) > 0
        assert body == b""

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

    def test_concurrent_requests_from_several_threads_all_succeed(self, server: ApiServer) -> None:
        paths = ["/api/schedules", "/api/scheduler/health", "/metrics", "/api/schedules/nightly"] * 10

        def get(path: str) -> int:
            return fetch(server.url + path)[0]

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(get, paths))
        assert statuses == [200] * len(paths)


class TestBodyLimits:
    def test_a_declared_length_over_one_mebibyte_is_answered_413_before_any_body_arrives(
        self, server: ApiServer
    ) -> None:
        raw = raw_exchange(
            server.port,
            b"POST /api/schedules HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2000000\r\n\r\n",  # the body never comes: the server must not wait for it
        )
        status, headers, body = split_response(raw)
        assert status == 413
        assert headers["connection"] == "close"
        assert json.loads(body)["error"]["code"] == "too_large"

    def test_a_body_of_exactly_one_mebibyte_is_read_and_parsed(self, server: ApiServer) -> None:
        prefix, suffix = b'{"name": "report", "padding": "', b'"}'
        data = prefix + b"x" * ((1 << 20) - len(prefix) - len(suffix)) + suffix
        assert len(data) == 1 << 20
        status, _, body = fetch(
            server.url + "/api/schedules", "POST", data=data, headers={"Content-Type": "application/json"}
        )
        assert status == 400  # not 413: it was read, and its unknown field named
        assert "padding" in json.loads(body)["error"]["message"]

    def test_a_client_sending_a_large_body_receives_the_413(self, server: ApiServer) -> None:
        status, _, body = fetch(
            server.url + "/api/schedules",
            "POST",
            data=b"x" * (16 << 20),
            headers={"Content-Type": "application/json"},
        )
        assert status == 413
        assert json.loads(body)["error"]["code"] == "too_large"

    def test_an_oversized_body_announced_with_expect_100_continue_gets_no_100(
        self, server: ApiServer
    ) -> None:
        raw = raw_exchange(
            server.port,
            b"POST /api/schedules HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n",
        )
        status, _, _ = split_response(raw)
        assert status == 413

    def test_a_chunked_body_is_a_411(self, server: ApiServer) -> None:
        raw = raw_exchange(
            server.port,
            b"POST /api/schedules HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        )
        status, _, body = split_response(raw)
        assert status == 411
        assert json.loads(body)["error"]["code"] == "length_required"

    @pytest.mark.parametrize("length", [b"-5", b"lots"])
    def test_a_bad_content_length_is_a_400(self, server: ApiServer, length: bytes) -> None:
        raw = raw_exchange(
            server.port,
            b"POST /api/schedules HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + length + b"\r\n\r\n",
        )
        status, _, body = split_response(raw)
        assert status == 400
        assert "Content-Length" in json.loads(body)["error"]["message"]


class TestErrorsOverHttp:
    def test_a_405_carries_the_allow_header(self, server: ApiServer) -> None:
        status, headers, body = fetch(server.url + "/api/schedules", "PUT", data=b"")
        assert status == 405
        assert headers["Allow"] == "GET, POST"
        assert json.loads(body)["error"]["code"] == "method_not_allowed"

    def test_an_options_request_gets_a_json_405_like_any_other_method(self, server: ApiServer) -> None:
        status, headers, body = fetch(server.url + "/api/schedules", "OPTIONS")
        assert status == 405
        assert headers["Content-Type"] == "application/json"
        assert headers["Allow"] == "GET, POST"
        assert json.loads(body)["error"]["code"] == "method_not_allowed"


class TestSecurityOverHttp:
    @pytest.fixture
    def server(self, scheduler: PipelineScheduler) -> Iterator[ApiServer]:
        with ApiServer(
            scheduler, port=0, token=TOKEN, pipelines={"etl": ok}, allow_hosts=["scheduler.lan"]
        ) as srv:
            yield srv

    @pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
    def test_a_change_without_the_token_is_a_401_and_changes_nothing(
        self, server: ApiServer, scheduler: PipelineScheduler, headers: Dict[str, str]
    ) -> None:
        status, _, _ = fetch(server.url + "/api/schedules/nightly/disable", "POST", data=b"", headers=headers)
        assert status == 401
        status, _, _ = fetch(server.url + "/api/schedules/nightly", "DELETE", headers=headers)
        assert status == 401
        record = scheduler.store.get_schedule("nightly")
        assert record is not None and record.enabled

    def test_the_token_in_a_bearer_header_is_accepted(
        self, server: ApiServer, scheduler: PipelineScheduler
    ) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        status, _, _ = fetch(server.url + "/api/schedules/nightly/disable", "POST", data=b"", headers=headers)
        assert status == 200
        assert scheduler.get_schedule("nightly").enabled is False

    def test_reads_stay_open(self, server: ApiServer) -> None:
        assert fetch(server.url + "/api/schedules")[0] == 200
        assert fetch(server.url + "/metrics")[0] == 200

    def test_a_foreign_host_on_loopback_is_refused_as_dns_rebinding(self, server: ApiServer) -> None:
        status, _, body = fetch(
            server.url + "/api/schedules", headers={"Host": f"rebind.attacker.example:{server.port}"}
        )
        assert status == 403
        assert json.loads(body)["error"]["code"] == "host_not_allowed"

    @pytest.mark.parametrize("name", ["scheduler.lan", "localhost", "127.0.0.1"])
    def test_the_loopback_names_and_allow_hosts_are_served(self, server: ApiServer, name: str) -> None:
        assert fetch(server.url + "/api/schedules", headers={"Host": f"{name}:{server.port}"})[0] == 200

    def test_a_cross_origin_change_is_refused_even_with_the_token(
        self, server: ApiServer, scheduler: PipelineScheduler
    ) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"}
        status, _, body = fetch(
            server.url + "/api/schedules/nightly/disable", "POST", data=b"", headers=headers
        )
        assert status == 403
        assert json.loads(body)["error"]["code"] == "cross_origin"
        assert scheduler.get_schedule("nightly").enabled

    def test_a_same_origin_change_with_the_token_is_accepted(
        self, server: ApiServer, scheduler: PipelineScheduler
    ) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "Origin": server.url}
        status, _, _ = fetch(server.url + "/api/schedules/nightly/disable", "POST", data=b"", headers=headers)
        assert status == 200
        assert scheduler.get_schedule("nightly").enabled is False


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
