"""The dashboard's stylesheet (inlined into the page: no external assets)."""

# ruff: noqa: E501  (CSS lines)

DASHBOARD_CSS = """
:root {
  --bg: #f5f6f8; --card: #fff; --ink: #1d2430; --muted: #667085; --line: #e4e7ec; --focus: #2f6fed;
  --ok: #12a150; --ok-bg: #e3f6ea; --bad: #d92d20; --bad-bg: #fdeceb; --warn: #c77700; --warn-bg: #fff3dc;
  --run: #2f6fed; --run-bg: #e6efff; --idle: #98a2b3; --idle-bg: #eef0f3; --orphan: #7a3fc4; --orphan-bg: #f1e9fb;
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
/* the script keeps the reader's place across live updates itself (keepPlace): no second adjustment */
html, body { overflow-anchor: none; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: var(--bg); }
button, input, select { font: inherit; color: inherit; }
a { color: var(--focus); }
:focus-visible { outline: 2px solid var(--focus); outline-offset: 2px; }
header { display: flex; align-items: center; gap: 12px; padding: 10px 20px; background: #101828; color: #fff; }
header h1 { font-size: 16px; margin: 0; font-weight: 650; letter-spacing: .2px; }
header h1 span { color: #98a2b3; font-weight: 400; }
header .spacer { flex: 1; }
header .meta { color: #98a2b3; font-size: 12px; }
header input { background: #1d2939; border: 1px solid #344054; color: #fff; border-radius: 6px; padding: 4px 8px; width: 150px; }
main { padding: 16px 20px 40px; max-width: 1440px; margin: 0 auto; }
.status { display: inline-flex; align-items: center; gap: 6px; padding: 2px 10px; border-radius: 999px; font-size: 12px; font-weight: 600; }
.status::before { content: ""; width: 8px; height: 8px; border-radius: 50%; background: currentColor; }
.status.running { background: #0b3d24; color: #5fe39a; } .status.degraded { background: #4a2f00; color: #ffc45c; } .status.stopped { background: #4a1410; color: #ff8f85; }
.toolbar { display: flex; flex-wrap: wrap; align-items: center; gap: 8px; margin-bottom: 12px; }
.chips { display: flex; flex-wrap: wrap; gap: 6px; }
.chip { border: 1px solid var(--line); background: var(--card); border-radius: 999px; padding: 3px 10px; cursor: pointer; font-size: 13px; }
.chip b { font-weight: 650; margin-left: 4px; }
.chip[aria-pressed="true"] { border-color: var(--ink); background: var(--ink); color: #fff; }
.chip.failing b { color: var(--bad); } .chip.late b { color: var(--warn); } .chip.orphaned b { color: var(--orphan); } .chip.running b { color: var(--run); }
.chip[aria-pressed="true"] b { color: #fff; }
.toolbar .spacer { flex: 1; }
.search { border: 1px solid var(--line); border-radius: 6px; padding: 5px 10px; width: 220px; background: var(--card); }
.btn { border: 1px solid var(--line); background: var(--card); border-radius: 6px; padding: 4px 10px; cursor: pointer; white-space: nowrap; }
.btn:hover:not(:disabled) { border-color: #b0b8c4; }
.btn:disabled { color: #b0b8c4; cursor: not-allowed; }
.btn.primary { background: var(--ink); color: #fff; border-color: var(--ink); }
.btn.danger { color: var(--bad); border-color: #f4c7c3; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; overflow: hidden; }
table { border-collapse: collapse; width: 100%; }
th { text-align: left; font-size: 12px; font-weight: 600; color: var(--muted); text-transform: uppercase; letter-spacing: .4px; padding: 8px 12px; border-bottom: 1px solid var(--line); background: #fafbfc; }
td { padding: 9px 12px; border-bottom: 1px solid var(--line); vertical-align: middle; }
tr.sched:hover > td { background: #fafbfd; }
tr.sched.open > td { background: #f7f9fc; border-bottom-color: transparent; }
.col-state { width: 118px; } .col-strip { width: 262px; } .col-time { width: 104px; } .col-act { width: 150px; text-align: right; }
.badge { display: inline-flex; align-items: center; gap: 6px; padding: 2px 9px; border-radius: 999px; font-size: 12px; font-weight: 600; white-space: nowrap; }
.badge::before { content: ""; width: 7px; height: 7px; border-radius: 50%; background: currentColor; }
.badge.healthy { color: var(--ok); background: var(--ok-bg); } .badge.failing { color: var(--bad); background: var(--bad-bg); }
.badge.late { color: var(--warn); background: var(--warn-bg); } .badge.running { color: var(--run); background: var(--run-bg); }
.badge.paused { color: #475467; background: var(--idle-bg); } .badge.orphaned { color: var(--orphan); background: var(--orphan-bg); }
.name { background: none; border: 0; padding: 0; font-weight: 600; cursor: pointer; text-align: left; max-width: 100%; overflow-wrap: anywhere; }
.name::before { content: "\\25B8"; display: inline-block; width: 14px; color: var(--muted); transition: transform .1s; }
tr.open .name::before { transform: rotate(90deg); }
.sub { color: var(--muted); font-size: 12px; margin-left: 14px; }
.sub code { font-size: 11.5px; background: #f2f4f7; padding: 0 4px; border-radius: 4px; color: #344054; }
.strip { display: flex; gap: 2px; align-items: center; height: 20px; }
.cell { width: 6px; height: 18px; border-radius: 2px; background: var(--idle-bg); cursor: pointer; flex: none; }
.cell.succeeded { background: var(--ok); } .cell.failed { background: var(--bad); } .cell.timed_out { background: #f97316; }
.cell.lost { background: #7a271a; } .cell.skipped { background: #d0d5dd; } .cell.missed { background: #fec84b; }
.cell.running { background: var(--run); animation: pulse 1.2s ease-in-out infinite; } .cell.queued { background: #a4bcfd; }
.cell:hover { transform: scaleY(1.15); }
@keyframes pulse { 50% { opacity: .45; } }
.none { color: var(--muted); font-size: 12px; }
.rel { white-space: nowrap; }
.rel.past-due { color: var(--warn); font-weight: 600; }
.acts { display: flex; gap: 6px; justify-content: flex-end; }
tr.panel > td { background: #f7f9fc; padding: 4px 16px 16px 38px; }
.panel-grid { display: grid; grid-template-columns: minmax(260px, 1fr) minmax(260px, 1fr); gap: 14px 28px; }
.panel h3 { font-size: 12px; text-transform: uppercase; letter-spacing: .4px; color: var(--muted); margin: 10px 0 6px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 14px; margin: 0; font-size: 13px; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
ol.fires { margin: 0; padding-left: 18px; font-size: 13px; font-variant-numeric: tabular-nums; }
table.runs { font-size: 13px; background: var(--card); border: 1px solid var(--line); border-radius: 8px; }
table.runs td, table.runs th { padding: 5px 10px; }
table.runs td { font-variant-numeric: tabular-nums; white-space: nowrap; }
/* the error column takes what the others leave (max-width: 0 lets it shrink below its text) and ends in an ellipsis */
td.err { color: var(--bad); width: 100%; max-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.st { font-weight: 600; } .st.succeeded { color: var(--ok); } .st.failed, .st.lost { color: var(--bad); } .st.timed_out { color: #c4320a; }
.st.running, .st.queued { color: var(--run); } .st.skipped, .st.missed { color: var(--muted); }
.panel-actions { margin-top: 12px; display: flex; gap: 8px; }
h2 { font-size: 14px; margin: 26px 0 8px; }
.empty { padding: 28px; text-align: center; color: var(--muted); }
.alive { color: var(--ok); font-weight: 600; } .lost { color: var(--bad); font-weight: 600; }
.silent { color: #b54708; font-weight: 600; }
#toasts { position: fixed; right: 18px; bottom: 18px; display: flex; flex-direction: column; gap: 8px; z-index: 20; max-width: 420px; }
.toast { background: #101828; color: #fff; padding: 10px 14px; border-radius: 8px; box-shadow: 0 6px 24px rgba(16,24,40,.25); font-size: 13px; border-left: 4px solid var(--idle); }
.toast.ok { border-left-color: #32d583; } .toast.bad { border-left-color: #f97066; } .toast.info { border-left-color: #84adff; }
.toast a { color: #b2ccff; margin-left: 6px; }
dialog { border: 1px solid var(--line); border-radius: 12px; padding: 0; width: min(760px, 92vw); box-shadow: 0 20px 50px rgba(16,24,40,.3); }
dialog::backdrop { background: rgba(16,24,40,.45); }
dialog .dhead { display: flex; align-items: center; gap: 10px; padding: 14px 18px; border-bottom: 1px solid var(--line); }
dialog .dhead h2 { margin: 0; font-size: 16px; flex: 1; overflow-wrap: anywhere; }
dialog .dbody { padding: 14px 18px 18px; max-height: 72vh; overflow: auto; }
pre { background: #101828; color: #e4e7ec; padding: 10px 12px; border-radius: 8px; font-size: 12px; overflow: auto; max-height: 320px; white-space: pre-wrap; overflow-wrap: anywhere; }
form .row { display: grid; grid-template-columns: 130px 1fr; gap: 8px; align-items: center; margin-bottom: 10px; }
form label { color: var(--muted); font-size: 13px; }
form input, form select { border: 1px solid var(--line); border-radius: 6px; padding: 5px 8px; width: 100%; background: #fff; }
.preview { background: #f7f9fc; border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; font-size: 13px; margin: 0 0 10px 138px; min-height: 38px; }
.preview.bad { color: var(--bad); background: var(--bad-bg); border-color: #f4c7c3; }
.form-error { color: var(--bad); margin: 0 0 10px; min-height: 1em; }
/* over the page, not in its flow: it shows wherever the reader has scrolled, and coming or going it moves nothing */
.banner { position: fixed; top: 10px; left: 50%; transform: translateX(-50%); z-index: 30; max-width: min(720px, 92vw); margin: 0;
  background: var(--bad-bg); color: var(--bad); border: 1px solid #f4c7c3; border-radius: 8px; padding: 8px 12px; box-shadow: 0 6px 24px rgba(16,24,40,.2); }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
"""
