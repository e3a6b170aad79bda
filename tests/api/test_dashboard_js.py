"""The dashboard's JavaScript, run by Node.js against a live server with a minimal DOM stand-in.

It renders the schedules and the health counters, shows names as text (not HTML), and its buttons
change the scheduler. Skipped where no ``node`` (18 or newer, for ``fetch``) is installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from flowyml_lite.api import ApiServer
from flowyml_lite.api.dashboard import DASHBOARD_HTML

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed: the page's script is not run")

# Just enough DOM for the page's script: elements keep children, text, classes and click listeners.
# Once the script has loaded and refreshed, it reports the page, clicks the first row's "pause" and
# "history" buttons, and reports again.
HARNESS = r"""
const fs = require("fs");
const [base, scriptPath] = process.argv.slice(2);
class El {
  constructor(tag) { this.tag = tag; this.children = []; this.listeners = {}; this.textContent = "";
                     this.className = ""; this.style = {}; this.value = ""; }
  appendChild(c) { this.children.push(c); return c; }
  replaceChildren(...c) { this.children = c; }
  insertRow() { const r = new El("tr"); this.children.push(r); return r; }
  addEventListener(ev, fn) { (this.listeners[ev] = this.listeners[ev] || []).push(fn); }
  click() { for (const fn of this.listeners.click || []) fn(); }
  all() { return [this, ...this.children.flatMap(c => c.all())]; }
}
const ids = {};
const byId = (id) => (ids[id] = ids[id] || new El(id));
global.document = { getElementById: byId, createElement: (t) => new El(t) };
global.sessionStorage = { getItem: () => null, setItem: () => {} };
global.confirm = () => true;
global.setInterval = () => 0;
const realFetch = fetch;
global.fetch = (path, opts) => realFetch(base + path, opts);
eval(fs.readFileSync(scriptPath, "utf8"));
const wait = (ms) => new Promise(r => setTimeout(r, ms));
const page = () => ({
  health: byId("health").children.map(c => c.textContent),
  rows: byId("rows").children.map(r => r.children.map(c => c.textContent)),
  history: byId("history").all().filter(e => e.tag === "tr").length,
  error: byId("error").textContent,
});
(async () => {
  await wait(700);
  const before = page();
  const first = byId("rows").children[0];
  first.all().find(e => e.tag === "button" && e.textContent === "pause").click();
  await wait(700);
  first.all().find(e => e.tag === "button" && e.textContent === "history").click();
  await wait(700);
  console.log(JSON.stringify({before, after: page()}));
})();
"""


@pytest.fixture
def scheduler() -> Iterator[PipelineScheduler]:
    sched = PipelineScheduler(SchedulerConfig(persist_schedules=False))
    sched.schedule_cron("<b>nightly</b>", lambda: None, "0 2 * * *", timezone="Europe/Paris")
    sched.schedule_interval("tick", lambda: None, seconds=30)
    sched.start()
    sched.run_now("<b>nightly</b>", wait=True)
    yield sched
    sched.stop(timeout=5)


def run_page(server: ApiServer, tmp_path: Path) -> Dict[str, Any]:
    html = DASHBOARD_HTML
    script = tmp_path / "dashboard.js"
    script.write_text(html[html.index("<script>") + len("<script>") : html.index("</script>")])
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    assert NODE is not None
    done = subprocess.run(
        [NODE, str(harness), server.url, str(script)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


class TestTheDashboardScript:
    def test_renders_schedules_and_health_and_its_pause_button_pauses(
        self, scheduler: PipelineScheduler, tmp_path: Path
    ) -> None:
        with ApiServer(scheduler, port=0) as server:
            seen = run_page(server, tmp_path)
        before, after = seen["before"], seen["after"]
        assert before["error"] == "" and after["error"] == ""
        assert before["health"][0] == "running"
        assert "2 schedules here" in before["health"]
        assert [row[0] for row in before["rows"]] == ["<b>nightly</b>", "tick"]  # set as text
        assert before["rows"][0][1:3] == ["cron 0 2 * * *", "Europe/Paris"]
        assert before["rows"][0][5] == "enabled"
        assert after["rows"][0][5] == "paused" and after["rows"][0][3] == "-"
        assert {s.pipeline_name: s.enabled for s in scheduler.list_schedules()} == {
            "<b>nightly</b>": False,
            "tick": True,
        }
        assert after["history"] == 2  # the header row and the one manual run

    def test_never_parses_server_data_as_html(self) -> None:
        script = DASHBOARD_HTML[DASHBOARD_HTML.index("<script>") :]
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in script

    def test_a_refused_change_is_shown_as_the_servers_message(
        self, scheduler: PipelineScheduler, tmp_path: Path
    ) -> None:
        with ApiServer(scheduler, port=0, token="s3cret") as server:  # the page has no token typed in
            seen = run_page(server, tmp_path)
        assert "API token" in seen["after"]["error"]
        assert all(s.enabled for s in scheduler.list_schedules())
