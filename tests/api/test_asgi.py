"""``flowyml_lite.api.asgi``: what only the ASGI app does (lifespan, receiving the body in messages,
the mount point) and the app mounted in a real FastAPI application under a prefix.

The requests every server answers alike run against it in ``test_server.py`` (the ``serve`` fixture).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import threading
from typing import Any, AsyncIterator, Dict, Iterator, List

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig, plugins
from flowyml_lite.api.asgi import AsgiApp, _target, create_app
from flowyml_lite.errors import ConfigurationError, PluginNotInstalledError
from tests.api.conftest import asgi_call

TOKEN = "s3cret-token"
CHROMIUM = "/usr/bin/chromium"
HOST = {"host": "127.0.0.1:8000"}


def ok() -> None:
    return None


@pytest.fixture
def scheduler() -> Iterator[PipelineScheduler]:
    sched = PipelineScheduler(SchedulerConfig(persist_schedules=False))
    sched.schedule_daily("nightly", ok, hour=3)
    yield sched
    sched.close()


@pytest.fixture
def app(scheduler: PipelineScheduler) -> Iterator[AsgiApp]:
    asgi = create_app(scheduler, pipelines={"etl": ok})
    yield asgi
    asyncio.run(asgi.shutdown())


def lifespan(app: AsgiApp, *events: str) -> List[Dict[str, Any]]:
    """Drive the lifespan protocol through ``events`` ("startup", "shutdown"); the messages sent back."""
    incoming = [{"type": f"lifespan.{event}"} for event in events]
    sent: List[Dict[str, Any]] = []

    async def run() -> None:
        async def receive() -> Dict[str, Any]:
            if incoming:
                return incoming.pop(0)
            await asyncio.sleep(3600)  # a server sends nothing more until it shuts down
            raise AssertionError("unreachable")

        async def send(message: Dict[str, Any]) -> None:
            sent.append(dict(message))

        task = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
        for _ in range(1000):  # bounded: the app answers each event or ends
            if task.done() or len(sent) == len(events):
                break
            await asyncio.sleep(0.01)
        if not task.done():
            task.cancel()

    asyncio.run(run())
    return sent


class TestLifespan:
    def test_startup_and_shutdown_start_and_stop_a_managed_scheduler(
        self, scheduler: PipelineScheduler
    ) -> None:
        app = create_app(scheduler, manage_scheduler=True)
        assert lifespan(app, "startup") == [{"type": "lifespan.startup.complete"}]
        try:
            assert scheduler.status() == "running"
        finally:
            assert lifespan(app, "shutdown") == [{"type": "lifespan.shutdown.complete"}]
        assert scheduler.status() == "stopped"

    def test_an_unmanaged_scheduler_is_left_alone(self, app: AsgiApp, scheduler: PipelineScheduler) -> None:
        sent = lifespan(app, "startup", "shutdown")
        assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        assert scheduler.status() == "stopped"

    def test_a_scheduler_that_cannot_start_fails_the_startup_with_the_reason(
        self, scheduler: PipelineScheduler, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def refuse() -> None:
            raise ConfigurationError("the store is read-only")

        monkeypatch.setattr(scheduler, "start", refuse)
        sent = lifespan(create_app(scheduler, manage_scheduler=True), "startup")
        assert sent == [{"type": "lifespan.startup.failed", "message": "the store is read-only"}]


class TestRequests:
    def test_a_declared_body_over_the_limit_with_expect_100_continue_is_a_413_before_it_is_sent(
        self, app: AsgiApp
    ) -> None:
        async def never() -> Dict[str, Any]:
            raise AssertionError("the body was read")

        sent: List[Dict[str, Any]] = []

        async def send(message: Dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/api/schedules",
            "raw_path": b"/api/schedules",
            "query_string": b"",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-length", b"2000000"),
                (b"expect", b"100-continue"),
            ],
        }
        asyncio.run(app(scope, never, send))
        assert sent[0]["status"] == 413
        assert json.loads(sent[1]["body"])["error"]["code"] == "too_large"

    def test_a_declared_body_over_the_limit_is_read_to_its_end_then_refused(self, app: AsgiApp) -> None:
        chunks = [b"x" * (1 << 20), b"x" * (1 << 20), b"x"]
        headers = {**HOST, "content-length": str(sum(map(len, chunks)))}
        status, _, body = asgi_call(app, "POST", "/api/schedules", headers, chunks=chunks)
        assert status == 413 and json.loads(body)["error"]["code"] == "too_large"

    def test_a_body_over_the_limit_in_several_messages_is_a_413(self, app: AsgiApp) -> None:
        chunks = [b"x" * (400 << 10)] * 3  # no Content-Length: as a server passes a chunked body on
        status, _, body = asgi_call(app, "POST", "/api/schedules", dict(HOST), chunks=chunks)
        assert status == 413 and json.loads(body)["error"]["code"] == "too_large"

    def test_a_body_in_several_messages_is_joined(self, app: AsgiApp, scheduler: PipelineScheduler) -> None:
        text = json.dumps({"name": "report", "pipeline_name": "etl", "schedule_type": "hourly"}).encode()
        chunks = [text[:10], text[10:20], text[20:]]
        headers = {**HOST, "content-type": "application/json"}
        status, _, _ = asgi_call(app, "POST", "/api/schedules", headers, chunks=chunks)
        assert status == 201
        assert scheduler.get_schedule("report").schedule_type == "hourly"

    @pytest.mark.parametrize("length", ["-1", "lots", "1e3"])
    def test_a_bad_content_length_is_a_json_400(self, app: AsgiApp, length: str) -> None:
        status, _, body = asgi_call(app, "POST", "/api/schedules", {**HOST, "content-length": length})
        assert status == 400 and "Content-Length" in json.loads(body)["error"]["message"]

    def test_a_client_gone_before_its_body_arrived_gets_no_answer(self, app: AsgiApp) -> None:
        status, _, _ = asgi_call(app, "POST", "/api/schedules", dict(HOST), chunks=[])  # only a disconnect
        assert status == 0  # nothing was sent

    def test_a_websocket_is_refused(self, app: AsgiApp) -> None:
        sent: List[Dict[str, Any]] = []

        async def receive() -> Dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: Dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(app({"type": "websocket", "path": "/", "headers": []}, receive, send))
        assert sent == [{"type": "websocket.close", "code": 1008}]

    def test_an_unknown_scope_type_is_an_error(self, app: AsgiApp) -> None:
        async def receive() -> Dict[str, Any]:
            return {}

        async def send(message: Dict[str, Any]) -> None:
            return None

        with pytest.raises(ValueError, match="telepathy"):
            asyncio.run(app({"type": "telepathy"}, receive, send))

    def test_requests_under_a_mount_point_reach_the_routes(self, app: AsgiApp) -> None:
        status, _, body = asgi_call(app, "GET", "/api/schedules/nightly", dict(HOST), root_path="/scheduler")
        assert status == 200 and json.loads(body)["name"] == "nightly"

    @pytest.mark.parametrize(
        ("scope", "target"),
        [
            ({"path": "/api/x%2Fy", "raw_path": b"/api/x%2Fy", "query_string": b"n=1"}, "/api/x%2Fy?n=1"),
            ({"path": "/api/a b"}, "/api/a%20b"),  # no raw_path: the path encoded again
            ({"path": "/s/api/health", "raw_path": b"/s/api/health", "root_path": "/s"}, "/api/health"),
            ({"path": "/s", "raw_path": b"/s", "root_path": "/s"}, "/"),
            (
                {"path": "/api/health", "raw_path": b"/api/health", "root_path": "/s"},
                "/api/health",
            ),  # stripped
            ({"path": "/sx/api", "raw_path": b"/sx/api", "root_path": "/s"}, "/sx/api"),
        ],
    )
    def test_the_target_keeps_encoded_slashes_and_drops_the_mount_point(
        self, scope: Dict[str, Any], target: str
    ) -> None:
        assert _target(scope) == target


class TestCreateApp:
    def test_off_loopback_the_same_rules_as_the_stdlib_server_apply(
        self, scheduler: PipelineScheduler
    ) -> None:
        with pytest.raises(ConfigurationError, match="--allow-host"):
            create_app(scheduler, "0.0.0.0", token=TOKEN)
        with pytest.raises(ConfigurationError, match="token"):
            create_app(scheduler, "0.0.0.0", allow_hosts=["scheduler.example.com"])
        with pytest.raises(ConfigurationError, match="empty or only whitespace"):
            create_app(scheduler, token="  ")

    def test_off_loopback_only_the_allowed_names_are_served(self, scheduler: PipelineScheduler) -> None:
        app = create_app(scheduler, "0.0.0.0", token=TOKEN, allow_hosts=["scheduler.example.com"])
        try:
            assert asgi_call(app, "GET", "/api/schedules", {"host": "scheduler.example.com"})[0] == 200
            assert asgi_call(app, "GET", "/api/schedules", {"host": "127.0.0.1:8000"})[0] == 403
        finally:
            asyncio.run(app.shutdown())

    def test_the_uvicorn_server_plugin_without_uvicorn_names_the_extra(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
        monkeypatch.delitem(sys.modules, "flowyml_lite_ext.uvicorn_server", raising=False)
        monkeypatch.setitem(plugins._registry, "servers", {})  # not loaded yet
        with pytest.raises(PluginNotInstalledError) as caught:
            plugins.get("servers", "uvicorn")
        assert "pip install 'flowyml-lite[asgi]'" in str(caught.value)

    def test_the_uvicorn_server_plugin_is_found_when_uvicorn_is_installed(self) -> None:
        pytest.importorskip("uvicorn")
        from flowyml_lite_ext.uvicorn_server import serve

        assert plugins.get("servers", "uvicorn") is serve


class TestMountedInFastApi:
    """The API under /scheduler in a FastAPI application, its lifespan starting the scheduler."""

    @pytest.fixture
    def client(self, scheduler: PipelineScheduler) -> Iterator[Any]:
        fastapi = pytest.importorskip("fastapi")
        testclient = pytest.importorskip("fastapi.testclient")
        from contextlib import asynccontextmanager

        api = create_app(
            scheduler, token=TOKEN, allow_hosts=["testserver"], pipelines={"etl": ok}, manage_scheduler=True
        )

        @asynccontextmanager
        async def lifespan(_: Any) -> AsyncIterator[None]:
            await api.startup()  # a mounted app's own lifespan is not run by Starlette
            yield
            await api.shutdown()

        outer = fastapi.FastAPI(lifespan=lifespan)

        @outer.get("/hello")
        def hello() -> Dict[str, str]:
            return {"hello": "world"}

        outer.mount("/scheduler", api)
        with testclient.TestClient(outer) as test_client:
            yield test_client
        assert scheduler.status() == "stopped"

    def test_the_api_answers_under_the_prefix(self, client: Any, scheduler: PipelineScheduler) -> None:
        response = client.get("/scheduler/api/schedules")
        assert response.status_code == 200
        assert [s["name"] for s in response.json()] == ["nightly"]
        assert client.get("/scheduler/api/health").json() == {"status": "ok"}  # started by the lifespan
        assert scheduler.status() == "running"

    def test_the_host_application_keeps_its_own_routes(self, client: Any) -> None:
        assert client.get("/hello").json() == {"hello": "world"}
        assert client.get("/api/schedules").status_code == 404  # only under the prefix

    def test_changes_need_the_token_and_work_with_it(self, client: Any, scheduler: PipelineScheduler) -> None:
        response = client.post("/scheduler/api/schedules/nightly/disable")
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
        body = {"name": "team/report", "pipeline_name": "etl", "schedule_type": "daily", "hour": 6}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert client.post("/scheduler/api/schedules", json=body, headers=headers).status_code == 201
        response = client.post("/scheduler/api/schedules/team%2Freport/disable", headers=headers)
        assert response.status_code == 200
        assert scheduler.get_schedule("team/report").enabled is False

    def test_errors_are_the_apis_json(self, client: Any) -> None:
        response = client.get("/scheduler/api/nothing")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"] == "not_found"
        response = client.put("/scheduler/api/schedules")
        assert response.status_code == 405 and response.headers["allow"] == "GET, POST"

    def test_the_dashboard_and_the_document_are_served_under_the_prefix(self, client: Any) -> None:
        page = client.get("/scheduler/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        document = client.get("/scheduler/api/openapi.json").json()
        assert document["openapi"] == "3.0.3"


class TestDashboardMountedInABrowser:
    """The dashboard page under /scheduler/ of a FastAPI app served by uvicorn, in Chromium: its
    script finds the API under the same prefix."""

    def test_the_page_lists_the_schedules_under_the_prefix(self, scheduler: PipelineScheduler) -> None:
        fastapi = pytest.importorskip("fastapi")
        uvicorn = pytest.importorskip("uvicorn")
        sync_api = pytest.importorskip("playwright.sync_api")
        if not os.path.exists(CHROMIUM):
            pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
        outer = fastapi.FastAPI()
        outer.mount("/scheduler", create_app(scheduler))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        server = uvicorn.Server(uvicorn.Config(outer, lifespan="off", log_config=None, access_log=False))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            for _ in range(200):  # bounded: 10 s
                if server.started:
                    break
                threading.Event().wait(0.05)
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/scheduler/"
            with sync_api.sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--headless", "--no-sandbox"]
                )
                try:
                    page = browser.new_page()
                    page.goto(url)
                    sync_api.expect(page.get_by_text("nightly").first).to_be_visible(timeout=15000)
                finally:
                    browser.close()
        finally:
            server.should_exit = True
            thread.join(10)
            sock.close()
