"""The dashboard's script (inlined into the page: no external assets, no framework).

It polls ``GET /api/overview`` every few seconds and rebuilds only the rows whose data changed,
swapping them in place: a row that did not change never leaves the document, so it keeps focus and
hover; focus that was on a rebuilt element moves to its replacement without scrolling; and the
first row on screen stays where it was on screen (``keepPlace``), whatever grew or shrank above it.
Scroll, focus and open panels survive; relative times tick every second on their own. Every
text from the server goes through ``textContent`` (names are never HTML).
"""

# ruff: noqa: E501  (JavaScript lines)

DASHBOARD_JS = r"""
"use strict";
const POLL_MS = 5000, STRIP = 30;
const $ = (id) => document.getElementById(id);
const view = { data: null, open: new Set(), filter: "all", search: "", rows: new Map(), upcoming: new Map() };
const viewerZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const tokenBox = $("token");
tokenBox.value = sessionStorage.getItem("flowyml_lite_token") || "";
tokenBox.addEventListener("change", () => sessionStorage.setItem("flowyml_lite_token", tokenBox.value));

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Where the API is: this page's folder, so it also works mounted under a prefix (/scheduler/).
const BASE = location.pathname.replace(/\/(dashboard)?$/, "");

async function call(method, path, body) {
  const headers = {};
  if (tokenBox.value) headers["Authorization"] = "Bearer " + tokenBox.value;
  const init = { method: method, headers: headers };
  if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const response = await fetch(BASE + path, init);
  const payload = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (payload.error && payload.error.message) || response.status + " " + response.statusText;
    const error = new Error(message);
    error.status = response.status;
    if (response.status === 401) tokenBox.focus();
    throw error;
  }
  return payload;
}

// -- time --------------------------------------------------------------------------------------
function parseTime(text) { return text ? new Date(text) : null; }
function relative(text, now) {
  const when = parseTime(text);
  if (!when) return "-";
  const seconds = Math.round((when.getTime() - now) / 1000);
  const abs = Math.abs(seconds);
  let amount;
  if (abs < 5) return seconds >= 0 ? "now" : "just now";
  if (abs < 60) amount = abs + " s";
  else if (abs < 3600) amount = Math.round(abs / 60) + " min";
  else if (abs < 86400 * 2) amount = Math.round(abs / 3600) + " h";
  else amount = Math.round(abs / 86400) + " days";
  return seconds > 0 ? "in " + amount : amount + " ago";
}
function inZone(text, zone) {
  const when = parseTime(text);
  if (!when) return "-";
  try {
    return new Intl.DateTimeFormat("en-GB", { timeZone: zone, year: "numeric", month: "short", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" }).format(when);
  } catch (e) { return when.toISOString(); }
}
function exact(text, zone) {
  if (!text) return "";
  const here = inZone(text, viewerZone);
  const there = inZone(text, zone);
  const named = zone === "UTC" ? there : there + " (" + zone + ")";
  return there === here ? named : named + "\n" + here + " (your time, " + viewerZone + ")";
}
function relTime(text, zone, pastDue) {
  const span = el("span", { class: "rel", "data-time": text || "", title: exact(text, zone) });
  if (pastDue) span.dataset.pastDue = "1";
  tick(span, Date.now());
  return span;
}
function tick(span, now) {
  const text = span.dataset.time;
  span.textContent = relative(text, now);
  if (span.dataset.pastDue) span.classList.toggle("past-due", !!text && parseTime(text).getTime() < now - 60000);
}
function seconds(value) {
  if (value === null || value === undefined) return "-";
  if (value < 1) return Math.round(value * 1000) + " ms";
  if (value < 120) return value.toFixed(value < 10 ? 2 : 1) + " s";
  if (value < 7200) return Math.round(value / 60) + " min";
  return (value / 3600).toFixed(1) + " h";
}
function firstLine(text) { return text ? String(text).split("\n")[0] : ""; }

// -- toasts ------------------------------------------------------------------------------------
function toast(kind, text, link) {
  const node = el("div", { class: "toast " + kind, role: kind === "bad" ? "alert" : "status" }, text);
  if (link) node.append(el("a", { href: link.href, text: link.text }));
  $("toasts").append(node);
  setTimeout(() => node.remove(), kind === "bad" ? 12000 : 6000);
  return node;
}

// -- states ------------------------------------------------------------------------------------
const STATES = ["failing", "late", "orphaned", "running", "paused", "healthy"];
function stateLabel(s) {
  if (s.state === "failing") return "failing \u00d7" + s.streak;
  return s.state;
}
function stateTitle(s) {
  if (s.state === "failing") return s.streak + " failed run(s) in a row" + (s.failing_since ? ", since " + inZone(s.failing_since, s.timezone) : "");
  if (s.state === "late" && s.served_by_silent) return "its next fire is past and " + s.served_by + " has stopped sending heartbeats: it fires again when that process answers, or when another takes over after the node timeout";
  if (s.state === "late") return "its next fire is more than a minute in the past: its process may be stuck or down";
  if (s.state === "orphaned") return "no live process declares this schedule: nothing will run it";
  if (s.state === "running") return s.running + " run(s) in flight";
  if (s.state === "paused") return "paused by a person; resume to run it again";
  return "its last run succeeded";
}
function visible(s) {
  if (view.filter !== "all" && s.state !== view.filter) return false;
  const q = view.search.trim().toLowerCase();
  if (!q) return true;
  return [s.name, s.pipeline_name, s.description, s.schedule_value, s.timezone, s.state]
    .some((v) => v && String(v).toLowerCase().includes(q));
}

// -- rendering ---------------------------------------------------------------------------------
function runTitle(run, zone) {
  const parts = [run.status.replace("_", " ") + (run.attempt > 1 ? " (attempt " + run.attempt + ")" : ""),
    "fired " + inZone(run.fire_time, zone)];
  if (run.start_lag_seconds !== null) parts.push("lag " + seconds(run.start_lag_seconds));
  if (run.status === "running" && run.elapsed_seconds !== null) parts.push("running for " + seconds(run.elapsed_seconds));
  else if (run.duration_seconds !== null && run.started_at) parts.push("took " + seconds(run.duration_seconds));
  if (run.error) parts.push(firstLine(run.error));
  else if (run.reason && run.reason !== "manual") parts.push(firstLine(run.reason));
  if (run.reason === "manual") parts.push("run by hand");
  return parts.join("\n");
}
function runLink(name, run) { return "#/runs/" + encodeURIComponent(name) + "/" + encodeURIComponent(run.run_key); }

function strip(s) {
  const box = el("div", { class: "strip", role: "img", "aria-label": s.runs.length + " recent runs of " + s.name });
  const runs = s.runs.slice(0, STRIP).reverse();  // oldest left, newest right
  if (!runs.length) box.append(el("span", { class: "none", text: "no runs yet" }));
  for (const run of runs) {
    box.append(el("span", { class: "cell " + run.status, title: runTitle(run, s.timezone), "data-status": run.status,
      onclick: () => { location.hash = runLink(s.name, run); } }));
  }
  return box;
}

function actionButtons(s) {
  const path = "/api/schedules/" + encodeURIComponent(s.name);
  const canRun = !s.is_orphan && s.enabled;
  const run = el("button", { class: "btn", type: "button", "data-act": "run", disabled: !canRun,
    title: s.is_orphan ? "its function lives in another process: run it there" : (s.enabled ? "run once now, outside the timetable" : "resume it first"),
    onclick: () => runNow(s.name) }, "Run now");
  const toggle = el("button", { class: "btn", type: "button", "data-act": s.enabled ? "pause" : "resume",
    onclick: () => act(s.enabled ? "Paused" : "Resumed", "POST", path + (s.enabled ? "/disable" : "/enable"), s.name) },
    s.enabled ? "Pause" : "Resume");
  return el("div", { class: "acts" }, run, toggle);
}

function scheduleRow(s) {
  const open = view.open.has(s.name);
  const nameButton = el("button", { class: "name", type: "button", "aria-expanded": open ? "true" : "false",
    "data-focus": "name:" + s.name, onclick: () => togglePanel(s.name) }, s.name);
  const served = s.served_by && s.served_by !== view.data.node_id ? " \u00b7 run by " + s.served_by : "";
  const what = el("div", { class: "sub" }, s.description + " \u00b7 " + s.timezone + served);
  const row = el("tr", { class: "sched" + (open ? " open" : ""), "data-name": s.name, "data-state": s.state, "data-anchor": "row:" + s.name },
    el("td", {}, el("span", { class: "badge " + s.state, title: stateTitle(s) }, stateLabel(s))),
    el("td", {}, nameButton, what),
    el("td", {}, strip(s)),
    el("td", {}, s.runs.length ? relTime(s.runs[0].fire_time, s.timezone) : el("span", { class: "none", text: "never" })),
    el("td", {}, s.next_run ? relTime(s.next_run, s.timezone, s.enabled) : el("span", { class: "none", text: s.enabled ? "none" : "paused" })),
    el("td", {}, actionButtons(s)));
  for (const button of row.querySelectorAll("button")) if (!button.dataset.focus) button.dataset.focus = button.dataset.act + ":" + s.name;
  return row;
}

function panelRow(s) {
  const path = "/api/schedules/" + encodeURIComponent(s.name);
  const facts = el("dl", { class: "facts" });
  const add = (k, v) => { facts.append(el("dt", { text: k }), el("dd", {}, v)); };
  add("timetable", el("span", {}, el("code", { text: s.schedule_type + " " + s.schedule_value }), " \u2014 " + s.description));
  add("zone", s.timezone);
  add("pipeline", s.pipeline_name);
  add("served by", s.served_by || "no live node (orphaned)");
  add("on overlap", "max " + s.max_instances + " at once; misfire grace " + s.misfire_grace_seconds + " s, catch-up " + s.catchup);
  add("last run", s.last_run ? inZone(s.last_run, s.timezone) : "never");
  const fires = el("ol", { class: "fires", "data-upcoming": s.name });
  const known = view.upcoming.get(s.name);
  if (known) fillFires(fires, known, s.timezone); else fires.append(el("li", { class: "none", text: "loading\u2026" }));
  const runs = el("table", { class: "runs" },
    el("thead", {}, el("tr", {}, ...["fire time", "status", "attempt", "lag", "duration", "node", "error"].map((t) => el("th", { text: t })))));
  const body = el("tbody");
  for (const run of s.runs.slice(0, 10)) {
    body.append(el("tr", {},
      el("td", {}, el("a", { href: runLink(s.name, run), title: "open this run", "data-focus": "run:" + s.name + ":" + run.run_key }, inZone(run.fire_time, s.timezone))),
      el("td", {}, el("span", { class: "st " + run.status, text: run.status.replace("_", " ") })),
      el("td", { text: run.attempt || 1 }),
      el("td", { text: seconds(run.start_lag_seconds) }),
      el("td", { text: run.status === "running" ? seconds(run.elapsed_seconds) + "\u2026" : (run.started_at ? seconds(run.duration_seconds) : "-") }),
      el("td", { text: run.node || "-" }),
      el("td", { class: "err", title: run.error || run.reason || "", text: firstLine(run.error || (run.reason !== "manual" ? run.reason : "")) || "" })));
  }
  if (!s.runs.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "none", text: "no runs yet" })));
  runs.append(body);
  const del = el("button", { class: "btn danger", type: "button", "data-focus": "delete:" + s.name,
    onclick: () => { if (confirm("Delete " + s.name + " and its whole history? This cannot be undone.")) act("Deleted", "DELETE", path, s.name); } },
    "Delete\u2026");
  return el("tr", { class: "panel", "data-panel": s.name, "data-anchor": "panel:" + s.name }, el("td", { colspan: 6 },
    el("div", { class: "panel-grid" },
      el("div", {}, el("h3", { text: "Schedule" }), facts),
      el("div", {}, el("h3", { text: "Next 5 fires (" + s.timezone + ")" }), fires)),
    el("h3", { text: "Recent runs" }), runs,
    el("div", { class: "panel-actions" }, del)));
}

function fillFires(list, fires, zone) {
  list.replaceChildren();
  if (!fires.length) list.append(el("li", { class: "none", text: "no more fires" }));
  for (const f of fires) list.append(el("li", { title: exact(f.fire, zone) }, inZone(f.fire, zone) + " \u2014 " + relative(f.fire, Date.now())));
}

async function loadUpcoming(name, zone) {
  try {
    const answer = await call("GET", "/api/schedules/" + encodeURIComponent(name) + "/upcoming?n=5");
    view.upcoming.set(name, answer.fires);
    const list = document.querySelector('ol[data-upcoming="' + CSS.escape(name) + '"]');
    if (list) keepPlace(() => fillFires(list, answer.fires, zone));
  } catch (e) { /* shown on the next refresh */ }
}

function togglePanel(name) {
  if (view.open.has(name)) view.open.delete(name); else { view.open.add(name); view.upcoming.delete(name); }
  render();
  const s = view.data && view.data.schedules.find((x) => x.name === name);
  if (s && view.open.has(name)) loadUpcoming(name, s.timezone);
}

function renderHeader(data) {
  const status = $("status");
  status.className = "status " + data.status;
  status.textContent = data.status;
  $("node").textContent = "node " + data.node_id;
  const chips = $("chips");
  const total = data.schedules.length;
  const key = JSON.stringify([view.filter, total, data.counts]);
  if (chips.dataset.key === key) return;  // unchanged: the chips (and a focused one) stay
  chips.dataset.key = key;
  chips.replaceChildren();
  const chip = (key, label, count) => el("button", { class: "chip " + key, type: "button", "aria-pressed": view.filter === key ? "true" : "false",
    "data-filter": key, "data-focus": "filter:" + key, onclick: () => { view.filter = view.filter === key && key !== "all" ? "all" : key; render(); } }, label, el("b", { text: count }));
  chips.append(chip("all", "All", total));
  for (const state of STATES) {
    const count = data.counts[state] || 0;
    if (count || view.filter === state) chips.append(chip(state, state[0].toUpperCase() + state.slice(1), count));
  }
}

const NODE_STATES = {
  alive: "sends heartbeats",
  silent: "has missed two heartbeats: frozen, cut off or dead; what it runs waits until it answers or is judged lost",
  lost: "past the node timeout: the next heartbeat of a live node judges it lost and shares out what it ran",
};
function renderNodes(data) {
  const body = $("nodes");
  body.replaceChildren();
  for (const n of data.nodes) {
    body.append(el("tr", { "data-anchor": "node:" + n.node_id },
      el("td", {}, el("code", { text: n.node_id }), n.node_id === data.node_id ? el("span", { class: "none", text: " (this process)" }) : null),
      el("td", { text: n.hostname }), el("td", { text: n.pid }),
      el("td", {}, relTime(n.started_at, viewerZone)),
      el("td", {}, relTime(n.heartbeat, viewerZone)),
      el("td", { text: n.runs_in_flight }),
      el("td", {}, el("span", { class: n.state, text: n.state, title: NODE_STATES[n.state] || "" }))));
  }
  if (!data.nodes.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "empty", text: "no scheduler process has sent a heartbeat to this store" })));
}

// Keep what the reader is looking at where it is on screen while `change` rewrites the page: note the
// first row (or heading) that is still on screen, by key, and scroll by however far it moved. The
// browser's own scroll anchoring follows elements, and rows are rebuilt (a new element, the same
// key), so it is switched off in the stylesheet (overflow-anchor: none) and this does the job: the
// same in every browser, and the two never both adjust. At the very top there is nothing to keep.
function keepPlace(change) {
  let key = null, top = 0;
  if (window.scrollY > 0) {
    for (const node of document.querySelectorAll("[data-anchor]")) {
      const box = node.getBoundingClientRect();
      if (box.bottom > 0 && box.height > 0) { key = node.dataset.anchor; top = box.top; break; }
    }
  }
  change();
  if (key === null) return;
  const again = document.querySelector('[data-anchor="' + CSS.escape(key) + '"]');
  if (!again) return;
  const moved = again.getBoundingClientRect().top - top;
  if (moved) window.scrollBy(0, moved);
}

// Make `children` the children of `parent`, in order, touching only what differs: a node that stays
// is never detached (detaching blurs it and can shift the page), a node no longer wanted is removed
// just before its successor goes in, all in one task (no layout in between, so no scroll jump).
function place(parent, children) {
  const wanted = new Set(children);
  let cursor = parent.firstChild;
  for (const child of children) {
    while (cursor && !wanted.has(cursor)) { const next = cursor.nextSibling; cursor.remove(); cursor = next; }
    if (child === cursor) cursor = cursor.nextSibling;
    else parent.insertBefore(child, cursor);
  }
  while (cursor) { const next = cursor.nextSibling; cursor.remove(); cursor = next; }
}

function render() {
  if (view.data) keepPlace(renderPage);
}

function renderPage() {
  const data = view.data;
  const active = document.activeElement;
  const focused = active && active !== document.body && active.dataset ? active.dataset.focus : null;
  renderHeader(data);
  const body = $("rows");
  const shown = data.schedules.filter(visible);
  const next = new Map();
  const children = [];
  for (const s of shown) {
    const key = JSON.stringify(s) + "|" + view.open.has(s.name) + "|" + (view.upcoming.get(s.name) ? 1 : 0);
    let entry = view.rows.get(s.name);
    if (!entry || entry.key !== key) entry = { key: key, row: scheduleRow(s), panel: view.open.has(s.name) ? panelRow(s) : null };
    next.set(s.name, entry);
    children.push(entry.row);
    if (entry.panel) children.push(entry.panel);
  }
  view.rows = next;
  if (!shown.length) {
    const text = data.schedules.length ? "no schedule matches this filter" : "no schedules yet: declare some in code, or create one here";
    const empty = body.querySelector("td.empty");
    if (empty && empty.textContent === text && body.children.length === 1) children.push(empty.parentNode);
    else children.push(el("tr", {}, el("td", { colspan: 6, class: "empty", text: text })));
  }
  place(body, children);
  $("shown").textContent = shown.length === data.schedules.length ? data.schedules.length + " schedules" : shown.length + " of " + data.schedules.length + " schedules";
  renderNodes(data);
  // The focused element was rebuilt: focus its replacement where the person left it. preventScroll:
  // focus() would otherwise scroll it into view, and it may be above or below what they are reading.
  if (focused && (!document.activeElement || document.activeElement === document.body)) {
    const again = document.querySelector('[data-focus="' + CSS.escape(focused) + '"]');
    if (again) again.focus({ preventScroll: true });
  }
}

async function refresh() {
  try {
    view.data = await call("GET", "/api/overview?runs=" + STRIP);
    $("offline").hidden = true;
    render();
  } catch (e) {
    $("offline").hidden = false;
    $("offline").textContent = (await whyNoOverview(e)) + " (retrying)";
  }
}

// The server answered but could not build the page (its store is down, say): its health says why.
async function whyNoOverview(e) {
  if (!e.status) return "cannot reach the scheduler: " + e.message;
  try {
    const health = await call("GET", "/api/scheduler/health");
    const said = (health.problems || []).map((p) => p.message).filter(Boolean);
    $("status").className = "status " + health.status;
    $("status").textContent = health.status;
    return "the scheduler answers but is " + health.status + (said.length ? ": " + said.join("; ") : ": " + e.message);
  } catch (_) {
    return "the scheduler failed to answer: " + e.message;
  }
}

// -- actions -----------------------------------------------------------------------------------
async function act(done, method, path, name) {
  try {
    await call(method, path);
    toast("ok", done + " " + name);
    if (method === "DELETE") { view.open.delete(name); }
  } catch (e) { toast("bad", name + ": " + e.message); }
  refresh();
}

async function runNow(name) {
  const pending = toast("info", "Running " + name + "\u2026");
  try {
    const answer = await call("POST", "/api/schedules/" + encodeURIComponent(name) + "/run?wait=true&timeout=60");
    pending.remove();
    const run = answer.run;
    const link = { href: runLink(name, run), text: "details" };
    if (answer.status === "succeeded") toast("ok", name + " succeeded in " + seconds(run.duration_seconds), link);
    else if (answer.status === "skipped") toast("info", name + " skipped: " + (run.reason || "an earlier run is still in progress"), link);
    else toast("bad", name + " " + answer.status.replace("_", " ") + (run.error ? ": " + firstLine(run.error) : ""), link);
  } catch (e) {
    pending.remove();
    toast("bad", name + ": " + e.message);
  }
  refresh();
}

// -- run detail (its own URL: #/runs/NAME/KEY) ---------------------------------------------------
async function showRun(name, key) {
  const dialog = $("run-dialog");
  const body = $("run-body");
  $("run-title").textContent = name;
  body.replaceChildren(el("p", { class: "none", text: "loading\u2026" }));
  if (!dialog.open) dialog.showModal();
  try {
    const run = await call("GET", "/api/schedules/" + encodeURIComponent(name) + "/runs/" + encodeURIComponent(key));
    const s = view.data && view.data.schedules.find((x) => x.name === name);
    const zone = s ? s.timezone : "UTC";
    $("run-title").textContent = name + " \u00b7 " + inZone(run.fire_time, zone);
    const facts = el("dl", { class: "facts" });
    const add = (k, v) => facts.append(el("dt", { text: k }), el("dd", {}, v));
    add("status", el("span", { class: "st " + run.status, text: run.status.replace("_", " ") }));
    add("fired", exact(run.fire_time, zone));
    add("started", run.started_at ? exact(run.started_at, zone) : "-");
    add("completed", run.completed_at ? exact(run.completed_at, zone) : "-");
    add("start lag", seconds(run.start_lag_seconds));
    add("duration", run.status === "running" ? "running for " + seconds(run.elapsed_seconds) : (run.started_at ? seconds(run.duration_seconds) : "-"));
    add("attempt", String(run.attempt || 1) + (run.next_attempt_at ? " (next attempt " + relative(run.next_attempt_at, Date.now()) + ")" : ""));
    add("node", run.node || "-");
    add("run id", run.run_id || "-");
    if (run.reason) add("reason", run.reason);
    if (run.error) add("error", el("span", { class: "st failed", text: run.error }));
    body.replaceChildren(facts,
      el("h3", { text: "Traceback" }), run.traceback ? el("pre", { "data-kind": "traceback", text: run.traceback }) : el("p", { class: "none", text: "none recorded" }),
      el("h3", { text: "Captured output" }), run.output ? el("pre", { "data-kind": "output", text: run.output }) : el("p", { class: "none", text: "none recorded" }));
  } catch (e) {
    body.replaceChildren(el("p", { class: "st failed", text: e.message }));
  }
}
function route() {
  const match = location.hash.match(/^#\/runs\/([^/]+)\/([^/]+)$/);
  if (match) showRun(decodeURIComponent(match[1]), decodeURIComponent(match[2]));
  else if ($("run-dialog").open) $("run-dialog").close();
}
$("run-dialog").addEventListener("close", () => { if (location.hash.startsWith("#/runs/")) history.replaceState(null, "", location.pathname + location.search); });
$("run-close").addEventListener("click", () => $("run-dialog").close());
window.addEventListener("hashchange", route);

// -- create ------------------------------------------------------------------------------------
const form = $("create-form");
const kinds = { cron: ["f-cron"], interval: ["f-interval"], daily: ["f-hour", "f-minute"], hourly: ["f-minute"], once: ["f-at"] };
function showKindFields() {
  const kind = form.elements.schedule_type.value;
  for (const id of ["f-cron", "f-interval", "f-hour", "f-minute", "f-at"]) $(id).hidden = !kinds[kind].includes(id);
  $("preview").hidden = kind !== "cron";
  if (kind === "cron") preview();
}
let previewTimer = null, previewSeq = 0;
function preview() {
  clearTimeout(previewTimer);
  previewTimer = setTimeout(async () => {
    const box = $("preview");
    const expression = form.elements.cron_expression.value;
    if (!expression.trim()) { box.className = "preview"; box.textContent = "type a cron expression, e.g. 0 9 * * 1-5"; return; }
    const seq = ++previewSeq;
    const zone = form.elements.timezone.value || "UTC";
    try {
      const answer = await call("GET", "/api/cron?n=5&expression=" + encodeURIComponent(expression) + "&timezone=" + encodeURIComponent(zone) + "&name=" + encodeURIComponent(form.elements.name.value));
      if (seq !== previewSeq) return;
      box.className = "preview";
      box.replaceChildren(el("div", { "data-explained": "1" }, el("b", { text: answer.description })),
        el("ol", { class: "fires" }, ...answer.fires.map((f) => el("li", { text: inZone(f.fire, zone) + " \u2014 " + relative(f.fire, Date.now()) }))));
    } catch (e) {
      if (seq !== previewSeq) return;
      box.className = "preview bad";
      box.textContent = e.message;
    }
  }, 200);
}
async function openCreate() {
  $("form-error").textContent = "";
  try {
    const answer = await call("GET", "/api/pipelines");
    const select = form.elements.pipeline_name;
    select.replaceChildren(...answer.registered.map((p) => el("option", { value: p, text: p })));
    if (!answer.registered.length) $("form-error").textContent = "no pipeline is registered with this server: start it with --pipeline NAME=module:attr";
  } catch (e) { $("form-error").textContent = e.message; }
  if (!form.elements.timezone.value) form.elements.timezone.value = viewerZone;
  showKindFields();
  $("create-dialog").showModal();
  form.elements.name.focus();
}
async function submitCreate(event) {
  event.preventDefault();
  const f = form.elements;
  const kind = f.schedule_type.value;
  const body = { name: f.name.value.trim(), pipeline_name: f.pipeline_name.value, schedule_type: kind, timezone: f.timezone.value.trim() || "UTC" };
  if (kind === "cron") body.cron_expression = f.cron_expression.value;
  if (kind === "interval") body.interval_seconds = Number(f.interval_seconds.value);
  if (kind === "daily") body.hour = Number(f.hour.value);
  if (kind === "daily" || kind === "hourly") body.minute = Number(f.minute.value);
  if (kind === "once") body.at = f.at.value;
  try {
    const answer = await call("POST", "/api/schedules", body);
    $("create-dialog").close();
    toast("ok", "Scheduled " + answer.schedule.name + (answer.schedule.next_run ? ": first run " + relative(answer.schedule.next_run, Date.now()) : ""));
    form.reset();
    refresh();
  } catch (e) { $("form-error").textContent = e.message; }
}
form.addEventListener("submit", submitCreate);
form.elements.schedule_type.addEventListener("change", showKindFields);
form.elements.cron_expression.addEventListener("input", preview);
form.elements.timezone.addEventListener("input", preview);
$("create-open").addEventListener("click", openCreate);
$("create-cancel").addEventListener("click", () => $("create-dialog").close());

// -- search, keys, polling ---------------------------------------------------------------------
$("search").addEventListener("input", (e) => { view.search = e.target.value; render(); });
document.addEventListener("keydown", (e) => {
  if (e.key === "/" && document.activeElement.tagName !== "INPUT" && !document.querySelector("dialog[open]")) { e.preventDefault(); $("search").focus(); }
});
setInterval(() => { const now = Date.now(); for (const span of document.querySelectorAll("[data-time]")) tick(span, now); }, 1000);
refresh().then(route);
setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
"""
