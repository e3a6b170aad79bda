"""``GET /``: a one-page dashboard over the JSON API (no external assets, works air-gapped)."""

# ruff: noqa: E501  (HTML, CSS and JavaScript lines)

DASHBOARD_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>flowyml_lite scheduler</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.3rem; margin: 0 0 .5rem; }
#health { margin: .5rem 0 1rem; }
.pill { display: inline-block; padding: .1rem .5rem; border-radius: .8rem; background: #eee; margin-right: .4rem; }
.running { background: #d4f5d4; } .degraded { background: #ffe3b3; } .stopped { background: #f5d4d4; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #e4e4e4; vertical-align: top; }
th { background: #f6f6f6; font-weight: 600; }
tr.off td { color: #888; }
button { margin-right: .25rem; cursor: pointer; }
code { font-size: 12px; }
#error { color: #b00020; white-space: pre-wrap; }
#history { margin-top: 1.5rem; }
.ok { color: #1a7f1a; } .bad { color: #b00020; }
</style>
</head>
<body>
<h1>flowyml_lite scheduler</h1>
<div id="health">loading...</div>
<label>API token (only needed for changes when the server has one):
<input id="token" type="password" size="24" autocomplete="off"></label>
<p id="error"></p>
<table>
<thead><tr><th>schedule</th><th>type</th><th>zone</th><th>next run</th><th>last run</th><th>state</th><th></th></tr></thead>
<tbody id="rows"></tbody>
</table>
<div id="history"></div>
<script>
"use strict";
const tokenBox = document.getElementById("token");
tokenBox.value = sessionStorage.getItem("flowyml_lite_token") || "";
tokenBox.addEventListener("change", () => sessionStorage.setItem("flowyml_lite_token", tokenBox.value));

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

async function call(method, path) {
  const headers = {};
  if (tokenBox.value) headers["Authorization"] = "Bearer " + tokenBox.value;
  const response = await fetch(path, {method: method, headers: headers});
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
  return body;
}

function show(error) {
  document.getElementById("error").textContent = error ? String(error.message || error) : "";
}

async function act(method, path) {
  try { await call(method, path); show(null); } catch (e) { show(e); }
  refresh();
}

async function history(name) {
  const box = document.getElementById("history");
  try {
    const runs = await call("GET", "/api/schedules/" + encodeURIComponent(name) + "/history?limit=50");
    box.replaceChildren();
    const h = document.createElement("h2");
    h.textContent = "History of " + name + " (newest first)";
    box.appendChild(h);
    const table = document.createElement("table");
    const head = table.insertRow();
    for (const title of ["fire time", "started", "duration (s)", "status", "node", "error"]) cell(head, title);
    for (const run of runs) {
      const row = table.insertRow();
      cell(row, run.fire_time); cell(row, run.started_at);
      cell(row, run.duration_seconds === null ? null : run.duration_seconds.toFixed(3));
      cell(row, run.status, run.success ? "ok" : (run.status === "running" ? "" : "bad"));
      cell(row, run.node); cell(row, run.error || run.reason);
    }
    box.appendChild(table);
  } catch (e) { show(e); }
}

function button(td, label, handler) {
  const b = document.createElement("button");
  b.textContent = label;
  b.addEventListener("click", handler);
  td.appendChild(b);
}

async function refresh() {
  try {
    const [health, schedules] = await Promise.all([call("GET", "/api/scheduler/health"), call("GET", "/api/schedules")]);
    const m = health.metrics;
    const box = document.getElementById("health");
    box.replaceChildren();
    const status = document.createElement("span");
    status.className = "pill " + health.status;
    status.textContent = health.status;
    box.appendChild(status);
    const facts = [
      health.num_schedules + " schedules here", health.orphan_schedules + " orphans",
      m.successful_runs + " succeeded", m.failed_runs + " failed", m.missed_runs + " missed",
      m.running_runs + " running", "node " + health.node_id,
    ];
    for (const fact of facts) {
      const span = document.createElement("span");
      span.className = "pill";
      span.textContent = fact;
      box.appendChild(span);
    }
    const rows = document.getElementById("rows");
    rows.replaceChildren();
    for (const s of schedules) {
      const row = rows.insertRow();
      if (!s.enabled) row.className = "off";
      const name = cell(row, s.name);
      name.style.cursor = "pointer";
      name.title = "show history";
      name.addEventListener("click", () => history(s.name));
      cell(row, s.schedule_type + " " + s.schedule_value);
      cell(row, s.timezone); cell(row, s.next_run); cell(row, s.last_run);
      cell(row, (s.enabled ? "enabled" : "paused") + (s.is_orphan ? " (orphan: no function here)" : ""));
      const td = cell(row, "");
      const path = "/api/schedules/" + encodeURIComponent(s.name);
      button(td, s.enabled ? "pause" : "resume", () => act("POST", path + (s.enabled ? "/disable" : "/enable")));
      if (!s.is_orphan) button(td, "run now", () => act("POST", path + "/run"));
      button(td, "history", () => history(s.name));
      button(td, "delete", () => { if (confirm("Delete " + s.name + " and its history?")) act("DELETE", path); });
    }
  } catch (e) { show(e); }
}
refresh();
setInterval(refresh, 5000);
</script>
</body>
</html>
"""
