"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a live server.

Assertions are on what a person sees (a failing schedule's row says failing, the strip has one cell
per run, times are relative, run-now shows its outcome). Screenshots go to
``$FLOWYML_TEST_ARTIFACTS`` (default: ``<tmp>/flowyml_dashboard``). Without Playwright or
``/usr/bin/chromium`` the tests skip, except in CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from flowyml_lite.api import ApiServer

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ARTIFACTS = Path(
    os.environ.get("FLOWYML_TEST_ARTIFACTS") or Path(tempfile.gettempdir()) / "flowyml_dashboard"
)

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the stdlib-only runs (the test extra brings playwright)
    pytest.skip("playwright is not installed (pip install playwright)", allow_module_level=True)
# The page polls every 5 s: an expectation that waits for the next poll gets three polls' time
# (Playwright's default is 5 s, so a poll landing just after it made the tests flaky under load).
expect.set_options(timeout=15_000)

if not os.path.exists(CHROMIUM):  # pragma: no cover
    if IN_CI:
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (CI must run the browser tests)")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


def ok() -> None:
    return None


def boom() -> None:
    raise RuntimeError("upstream API returned HTTP 503")


class Site:
    """A started scheduler with schedules in every state, served on a free port."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        s = self.scheduler
        s.schedule_cron("nightly-etl", ok, "30 2 * * *", timezone="Europe/London")
        s.schedule_hourly("broken-report", boom, minute=15)
        s.schedule_daily("paused-job", ok, hour=9)
        s.schedule_interval("slow-export", lambda: self.gate.wait(60) and None, hours=1)
        s.schedule_cron("weekday-digest", ok, "0 9 * * 1-5", timezone="America/New_York")
        s.disable("paused-job")
        for _ in range(4):
            s.run_now("nightly-etl", wait=True)
        for _ in range(5):
            s.run_now("broken-report", wait=True)
        s.start()
        s.run_now("slow-export")
        self.server = ApiServer(s, "127.0.0.1", 0, pipelines={"etl": ok}).start()
        self.url = self.server.url

    def close(self) -> None:
        self.gate.set()
        self.server.stop()
        self.scheduler.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def site() -> Iterator[Site]:
    site = Site()
    yield site
    site.close()


@pytest.fixture
def page(browser: Any, site: Site) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1024, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    requests: List[str] = []
    errors: List[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    # the console's errors too (a resource the page's own content security policy refuses is one),
    # but not an API's 4xx answer the page expects and shows (a cron preview of half an expression)
    page.on(
        "console",
        lambda m: errors.append(m.text)
        if m.type == "error" and not m.text.startswith("Failed to load resource")
        else None,
    )
    page.goto(site.url + "/")
    expect(page.locator("tr.sched")).to_have_count(5)
    yield page
    context.close()
    assert not errors, errors
    outside = [u for u in requests if not u.startswith(site.url) and not u.startswith("data:")]
    assert not outside, f"the page fetched something outside its server: {outside}"


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def row(page: Page, name: str) -> Any:
    return page.locator(f'tr.sched[data-name="{name}"]')


class TestAtAGlance:
    def test_each_row_says_its_state(self, page: Page) -> None:
        expect(row(page, "broken-report").locator(".badge")).to_have_text("failing ×5")
        expect(row(page, "nightly-etl").locator(".badge")).to_have_text("healthy")
        expect(row(page, "paused-job").locator(".badge")).to_have_text("paused")
        expect(row(page, "slow-export").locator(".badge")).to_have_text("running")
        shot(page, "overview-1024")

    def test_the_strip_has_one_cell_per_recent_run_colored_by_outcome(self, page: Page) -> None:
        expect(row(page, "nightly-etl").locator(".cell.succeeded")).to_have_count(4)
        expect(row(page, "broken-report").locator(".cell.failed")).to_have_count(5)
        expect(row(page, "paused-job").locator(".cell")).to_have_count(0)
        expect(row(page, "paused-job")).to_contain_text("no runs yet")

    def test_hovering_a_cell_shows_fire_time_lag_duration_and_error(self, page: Page) -> None:
        title = row(page, "broken-report").locator(".cell").last.get_attribute("title") or ""
        assert title.startswith("failed")
        assert "fired " in title and "lag " in title and "took " in title
        assert "RuntimeError: upstream API returned HTTP 503" in title

    def test_times_are_relative_with_the_exact_instant_on_hover(self, page: Page) -> None:
        cells = row(page, "nightly-etl").locator(".rel")
        expect(cells.first).to_have_text(re.compile(r"^(just now|\d+ s ago)$"))
        expect(cells.last).to_have_text(re.compile(r"^in \d+ (min|h)$"))
        assert "(Europe/London)" in (cells.last.get_attribute("title") or "")

    def test_cron_expressions_are_explained_in_words(self, page: Page) -> None:
        expect(row(page, "weekday-digest")).to_contain_text("At 09:00, Monday through Friday")
        expect(row(page, "weekday-digest")).to_contain_text("America/New_York")

    def test_the_page_fits_1024_pixels_without_sideways_scrolling(self, page: Page) -> None:
        assert page.evaluate("document.scrollingElement.scrollWidth") <= 1024
        row(page, "broken-report").locator(".name").click()  # a panel whose runs have long errors
        expect(page.locator('tr[data-panel="broken-report"] table.runs tbody tr')).to_have_count(5)
        assert page.evaluate("document.scrollingElement.scrollWidth") <= 1024
        pause = row(page, "broken-report").locator('[data-act="pause"]')
        box = pause.bounding_box()
        assert box and box["x"] + box["width"] <= 1024 - 20, "the actions column is cut off"

    def test_the_nodes_table_shows_this_process_alive(self, page: Page, site: Site) -> None:
        nodes = page.locator("#nodes tr")
        expect(nodes).to_have_count(1)
        expect(nodes.first).to_contain_text(site.scheduler.node_id)
        expect(nodes.first).to_contain_text("alive")


class TestFilterAndSearch:
    def test_a_state_chip_shows_only_that_state(self, page: Page) -> None:
        page.locator('[data-filter="failing"]').click()
        expect(page.locator("tr.sched")).to_have_count(1)
        expect(page.locator("tr.sched")).to_have_attribute("data-name", "broken-report")
        page.locator('[data-filter="all"]').click()
        expect(page.locator("tr.sched")).to_have_count(5)

    def test_search_matches_names_and_descriptions(self, page: Page) -> None:
        page.keyboard.press("/")
        page.keyboard.type("monday")
        expect(page.locator("tr.sched")).to_have_count(1)
        expect(page.locator("#shown")).to_have_text("1 of 5 schedules")


class TestPanelsAndRuns:
    def test_a_panel_shows_the_next_five_fires_and_recent_runs(self, page: Page) -> None:
        row(page, "nightly-etl").locator(".name").click()
        panel = page.locator('tr[data-panel="nightly-etl"]')
        expect(panel.locator("ol.fires li")).to_have_count(5)
        expect(panel.locator("ol.fires li").first).to_contain_text("02:30:00")
        expect(panel.locator("table.runs tbody tr")).to_have_count(4)
        shot(page, "panel")

    def test_the_page_updates_itself_without_closing_panels_or_scrolling(
        self, page: Page, site: Site
    ) -> None:
        name = row(page, "broken-report").locator(".name")
        name.click()
        panel = page.locator('tr[data-panel="broken-report"]')
        expect(panel.locator("table.runs tbody tr")).to_have_count(5)
        room = page.evaluate("document.scrollingElement.scrollHeight - window.innerHeight")
        assert room >= 200, f"the page can scroll only {room} px: this test must set up a longer page"
        page.mouse.wheel(0, 200)
        page.wait_for_function("window.scrollY === 200")  # the wheel scrolls after mouse.wheel returns
        top = panel.evaluate("e => e.getBoundingClientRect().top")
        # the focused name is above the window now: focusing it again would scroll back up to it
        assert name.evaluate("e => e.getBoundingClientRect().bottom") < 0

        # A poll that changes other rows: the open panel and the focused name stay as they are.
        site.scheduler.run_now("nightly-etl", wait=True)
        expect(row(page, "nightly-etl").locator(".cell")).to_have_count(5)  # the next poll brought it
        expect(panel).to_be_visible()
        assert page.evaluate("window.scrollY") == 200
        assert panel.evaluate("e => e.getBoundingClientRect().top") == top
        expect(name).to_be_focused()

        # A poll that rebuilds the focused row and its panel: focus moves to the new name button,
        # without scrolling it into view.
        site.scheduler.run_now("broken-report", wait=True)
        expect(row(page, "broken-report").locator(".badge")).to_have_text("failing ×6")
        expect(panel.locator("table.runs tbody tr")).to_have_count(6)
        assert page.evaluate("window.scrollY") == 200
        assert panel.evaluate("e => e.getBoundingClientRect().top") == top
        expect(name).to_be_focused()
        shot(page, "live-update-scrolled")

    def test_a_run_has_its_own_url_with_error_and_traceback(self, page: Page, site: Site) -> None:
        (entry,) = site.scheduler.store.history("broken-report", 1)  # the newest failed run
        page.goto(f"{site.url}/#/runs/broken-report/{entry.run_key}")
        dialog = page.locator("#run-dialog")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("failed")
        expect(dialog).to_contain_text("RuntimeError: upstream API returned HTTP 503")
        expect(dialog).to_contain_text("attempt")
        shot(page, "run-detail")
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        expect(page).not_to_have_url(re.compile("#/runs/"))

    def test_clicking_a_strip_cell_opens_that_run(self, page: Page) -> None:
        row(page, "broken-report").locator(".cell").last.click()
        expect(page.locator("#run-dialog")).to_contain_text("RuntimeError")
        assert "#/runs/broken-report/" in page.url


class TestActions:
    def test_run_now_shows_its_outcome_in_a_toast(self, page: Page) -> None:
        row(page, "nightly-etl").locator('[data-act="run"]').click()
        expect(page.locator(".toast.ok")).to_contain_text("nightly-etl succeeded in")
        expect(row(page, "nightly-etl").locator(".cell")).to_have_count(5)
        shot(page, "run-now-toast")

    def test_a_failing_run_now_says_so_with_the_error(self, page: Page) -> None:
        row(page, "broken-report").locator('[data-act="run"]').click()
        expect(page.locator(".toast.bad")).to_contain_text("broken-report failed: RuntimeError: upstream")
        expect(row(page, "broken-report").locator(".badge")).to_have_text("failing ×6")

    def test_pause_and_resume_say_what_happened(self, page: Page, site: Site) -> None:
        row(page, "nightly-etl").locator('[data-act="pause"]').click()
        expect(page.locator(".toast.ok")).to_contain_text("Paused nightly-etl")
        expect(row(page, "nightly-etl").locator(".badge")).to_have_text("paused")
        assert site.scheduler.get_schedule("nightly-etl").enabled is False
        row(page, "nightly-etl").locator('[data-act="resume"]').click()
        expect(row(page, "nightly-etl").locator(".badge")).to_have_text("healthy")

    def test_delete_asks_first(self, page: Page, site: Site) -> None:
        row(page, "paused-job").locator(".name").click()
        page.once("dialog", lambda d: d.dismiss())
        page.locator('tr[data-panel="paused-job"] .btn.danger').click()
        expect(row(page, "paused-job")).to_have_count(1)
        page.once("dialog", lambda d: d.accept())
        page.locator('tr[data-panel="paused-job"] .btn.danger').click()
        expect(page.locator(".toast.ok")).to_contain_text("Deleted paused-job")
        expect(row(page, "paused-job")).to_have_count(0)
        assert "paused-job" not in {s.pipeline_name for s in site.scheduler.list_schedules()}

    def test_the_create_form_previews_a_cron_expression_and_creates_the_schedule(
        self, page: Page, site: Site
    ) -> None:
        page.locator("#create-open").click()
        page.locator("#c-name").fill("weekday-etl")
        page.locator("#c-pipeline").select_option("etl")
        page.locator("#c-zone").fill("Europe/Paris")
        page.locator("#c-cron").fill("*/15 9-17 * * 1-5")
        preview = page.locator("#preview")
        expect(preview).to_contain_text("Every 15 minutes")
        expect(preview.locator("li")).to_have_count(5)
        page.locator("#c-cron").fill("0 25 * * *")
        expect(preview).to_contain_text("hour")
        expect(preview).to_have_class(re.compile("bad"))
        page.locator("#c-cron").fill("*/15 9-17 * * 1-5")
        expect(preview.locator("li")).to_have_count(5)
        shot(page, "create-form")
        page.locator("#create-form button[type=submit]").click()
        expect(page.locator(".toast.ok")).to_contain_text("Scheduled weekday-etl")
        expect(row(page, "weekday-etl")).to_contain_text("Europe/Paris")
        assert site.scheduler.get_schedule("weekday-etl").timezone == "Europe/Paris"

    def test_the_create_form_shows_the_servers_refusal(self, page: Page) -> None:
        page.locator("#create-open").click()
        page.locator("#c-name").fill("every-second")
        page.locator("#c-type").select_option("interval")
        expect(page.locator("#c-cron")).to_be_hidden()
        page.locator("#c-interval").fill("0")
        page.locator("#c-interval").evaluate("e => e.removeAttribute('min')")
        page.locator("#create-form button[type=submit]").click()
        expect(page.locator("#form-error")).to_contain_text("interval")


class TestKeyboard:
    def test_tab_reaches_a_schedule_and_enter_opens_its_panel(self, page: Page) -> None:
        page.locator("#search").focus()
        for _ in range(40):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.classList.contains('name')"):
                break
        name = page.evaluate("document.activeElement.textContent")
        page.keyboard.press("Enter")
        expect(page.locator(f'tr[data-panel="{name}"]')).to_be_visible()
        assert page.evaluate("document.activeElement.getAttribute('aria-expanded')") == "true"


class TestWhenTheStoreFails:
    def test_the_page_says_the_store_s_problem_not_that_the_scheduler_is_unreachable(
        self, page: Page, site: Site, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from flowyml_lite.errors import StoreError

        def failing(*args: Any, **kwargs: Any) -> Any:
            raise StoreError("disk I/O error")

        store = site.scheduler.store
        for method in ("list_schedules", "active_runs", "stats", "list_nodes", "history"):
            monkeypatch.setattr(store, method, failing)
        offline = page.locator("#offline")
        expect(offline).to_be_visible()
        expect(offline).to_contain_text("answers but is degraded")
        expect(offline).to_contain_text("disk I/O error")
        expect(page.locator("#status")).to_have_text("degraded")
        expect(page.locator("tr.sched")).to_have_count(5)  # what it showed last stays
        shot(page, "store-failing")
