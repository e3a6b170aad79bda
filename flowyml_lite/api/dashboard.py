"""``GET /``: the dashboard, one page over the JSON API (no external assets, works air-gapped).

The page an on-call engineer opens first: every schedule's state at a glance with a strip of its
recent runs, relative times (exact instants on hover, in the schedule's zone and the viewer's),
the timetable in words, a panel per schedule with its next fires and runs, a run view with its
own URL (``#/runs/NAME/RUN_KEY``: traceback, output, attempts), the nodes sharing the store, and
actions with feedback. The style and script live in ``dashboard_css.py`` and ``dashboard_js.py``.
"""

# ruff: noqa: E501  (HTML lines)

from .dashboard_css import DASHBOARD_CSS
from .dashboard_js import DASHBOARD_JS

_BODY = """
<header>
  <h1>flowyml_lite <span>scheduler</span></h1>
  <span id="status" class="status stopped" role="status">loading</span>
  <span id="node" class="meta"></span>
  <span class="spacer"></span>
  <label class="meta" for="token">API token</label>
  <input id="token" type="password" autocomplete="off" placeholder="only for changes">
</header>
<main>
  <p id="offline" class="banner" role="alert" hidden></p>
  <div class="toolbar">
    <div id="chips" class="chips" role="group" aria-label="filter by state"></div>
    <span class="spacer"></span>
    <span id="shown" class="meta none"></span>
    <label class="sr-only" for="search">search schedules</label>
    <input id="search" class="search" type="search" placeholder="Search schedules  ( / )" autocomplete="off">
    <button id="create-open" class="btn primary" type="button">New schedule</button>
  </div>
  <div class="card">
    <table>
      <thead><tr>
        <th class="col-state">State</th><th>Schedule</th><th class="col-strip">Recent runs (newest right)</th>
        <th class="col-time">Last run</th><th class="col-time">Next run</th><th class="col-act"><span class="sr-only">actions</span></th>
      </tr></thead>
      <tbody id="rows"><tr><td colspan="6" class="empty">loading&hellip;</td></tr></tbody>
    </table>
  </div>
  <h2 data-anchor="nodes">Nodes sharing this store</h2>
  <div class="card">
    <table>
      <thead><tr><th>Node</th><th>Host</th><th>PID</th><th>Started</th><th>Last heartbeat</th><th>Runs in flight</th><th>State</th></tr></thead>
      <tbody id="nodes"></tbody>
    </table>
  </div>
</main>
<div id="toasts" aria-live="polite"></div>

<dialog id="run-dialog" aria-labelledby="run-title">
  <div class="dhead"><h2 id="run-title">run</h2><button id="run-close" class="btn" type="button">Close</button></div>
  <div id="run-body" class="dbody"></div>
</dialog>

<dialog id="create-dialog" aria-labelledby="create-title">
  <div class="dhead"><h2 id="create-title">New schedule</h2></div>
  <form id="create-form" class="dbody" method="dialog">
    <div class="row"><label for="c-name">Name</label><input id="c-name" name="name" required placeholder="nightly-etl"></div>
    <div class="row"><label for="c-pipeline">Pipeline</label><select id="c-pipeline" name="pipeline_name" required></select></div>
    <div class="row"><label for="c-type">Runs</label>
      <select id="c-type" name="schedule_type">
        <option value="cron">on a cron expression</option><option value="interval">every N seconds</option>
        <option value="daily">daily</option><option value="hourly">hourly</option><option value="once">once</option>
      </select></div>
    <div class="row" id="f-cron"><label for="c-cron">Cron expression</label><input id="c-cron" name="cron_expression" placeholder="0 9 * * 1-5" autocomplete="off"></div>
    <div id="preview" class="preview" aria-live="polite"></div>
    <div class="row" id="f-interval" hidden><label for="c-interval">Every (seconds)</label><input id="c-interval" name="interval_seconds" type="number" min="0.001" step="any" value="3600"></div>
    <div class="row" id="f-hour" hidden><label for="c-hour">Hour</label><input id="c-hour" name="hour" type="number" min="0" max="23" value="9"></div>
    <div class="row" id="f-minute" hidden><label for="c-minute">Minute</label><input id="c-minute" name="minute" type="number" min="0" max="59" value="0"></div>
    <div class="row" id="f-at" hidden><label for="c-at">At (ISO 8601)</label><input id="c-at" name="at" placeholder="2030-01-01T09:00:00+00:00"></div>
    <div class="row"><label for="c-zone">Time zone</label><input id="c-zone" name="timezone" placeholder="UTC" autocomplete="off"></div>
    <p id="form-error" class="form-error" role="alert"></p>
    <div class="acts"><button id="create-cancel" class="btn" type="button">Cancel</button><button class="btn primary" type="submit">Create</button></div>
  </form>
</dialog>
"""

DASHBOARD_HTML = (
    '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    '<link rel="icon" href="data:,">\n<title>flowyml_lite scheduler</title>\n<style>'
    + DASHBOARD_CSS
    + "</style>\n</head>\n<body>"
    + _BODY
    + "<script>"
    + DASHBOARD_JS
    + "</script>\n</body>\n</html>\n"
)
