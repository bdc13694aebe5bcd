"""The web page at / in a real browser (Debian's Chromium, driven by Playwright),
against a real `orchestrator up`: the token screen, starting a run with a
parameter and following it to Success, cancelling a run, the runs filters in the
URL, "why has it not started?", schedules, agents and limits, a phone-sized
screen and the keyboard.

One server and one browser for the module; the tests run in file order and
build on each other's runs (each one signs in again if it runs alone)."""

import os
import re
import socket
import subprocess
from contextlib import closing
from pathlib import Path

import pytest
from helpers import ServiceProcess, register_flows

CHROMIUM = "/usr/bin/chromium"
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None
if sync_playwright is None or not os.path.exists(CHROMIUM):
    pytest.skip("Chromium is not installed: scripts/test installs Debian's chromium "
                "(apt-get) — run it as root", allow_module_level=True)

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
WORD = "bonjour-from-the-browser"
LONG_PATH = "/data/incoming/" + "quarterly-sales-for-every-region-" * 6 + "2024.csv"

FLOWS = '''
import time
from orchestrator import Flow, Parameter, get_logger, task
from orchestrator.schedules import CronSchedule

@task
def numbers():
    return [1, 2, 3]

@task
def square(x):
    return x * x

@task
def say(word, squares):
    get_logger().info("the browser test says %s (total %d)", word, sum(squares))

with Flow("greeter") as greeter:
    say(Parameter("word", default="hello"), square.map(numbers()))

@task
def nap():
    time.sleep(60)

with Flow("sleeper") as sleeper:
    nap()

@task
def report():
    get_logger().info("morning report")

with Flow("weekday", schedule=CronSchedule("0 6 * * 1-5")) as weekday:
    report()

from orchestrator.artifacts import create_link_artifact, create_markdown_artifact

@task
def publish(markdown):
    create_markdown_artifact(markdown)
    create_link_artifact("https://example.com/sales?q=1")
    create_link_artifact("javascript:window.pwned = 6")

with Flow("reporter") as reporter:
    publish(Parameter("markdown", default=""))
'''


# -- the server ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`orchestrator up --port 0` in a home of its own, with project "p" registered."""
    from orchestrator.store import Store

    base = tmp_path_factory.mktemp("web")
    home = base / "home"
    home.mkdir()
    source = base / "web_flows.py"
    source.write_text(FLOWS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ORCHESTRATOR_HOME", str(home))
        with closing(Store.open()) as store:
            register_flows(store, source)
    with ServiceProcess("up", "--poll-interval", "0.1", home=home, log_dir=base) as up:
        yield up.wait_for_banner()
        try:
            up.stop()
        except subprocess.TimeoutExpired:
            pass  # killed on leaving the with block


# -- the browser --------------------------------------------------------------------------------
class Web:
    """One browser context and page; every request, page error and console error."""

    def __init__(self, browser, server, shots):
        self.server = server
        self.shots = shots
        self.requests = []
        self.errors = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.watch(self.context)
        self.page = self.context.new_page()
        self.watch_page(self.page)
        self.page.set_default_timeout(15000)
        self.run_ids = {}
        self.refusals_allowed = False  # while a wrong token is being tried
        self.refusals = []

    def watch(self, context):
        context.on("request", lambda request: self.requests.append(request.url))

    def watch_page(self, page):
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", self._console)

    def _console(self, msg):
        if msg.type != "error":
            return
        if self.refusals_allowed and "status of 401" in msg.text:
            self.refusals.append(msg.text)  # Chromium logs the refused request
        else:
            self.errors.append(f"console: {msg.text}")

    def call(self, method, path, body=None):
        """A request to the server's API that must succeed: its JSON document."""
        status, document = self.server.api(method, path, body)
        assert 200 <= status < 300, f"{method} {path}: {status} {document}"
        return document

    def url(self, hash_=""):
        return f"{self.server.url}/{hash_}"

    def go(self, hash_, rendered):
        """Open the page at `hash_` (a fresh load) and wait for the view to draw."""
        same_document = self.page.url.startswith(self.server.url)
        self.page.goto(self.url(hash_))
        if same_document:  # only the hash changed: load it afresh
            self.page.reload()
        self.page.wait_for_selector(f"body[data-rendered='{rendered}']")

    def sign_in(self):
        """The token screen, if it shows, gets the right token."""
        page = self.page
        if page.url.startswith(self.server.url):
            token = page.evaluate("() => localStorage.getItem('orchestrator.token')")
            if token == self.server.token:
                return
        page.goto(self.url("#/flows"))
        page.locator("#token").fill(self.server.token)
        page.get_by_role("button", name="Save").click()
        page.wait_for_selector("body[data-rendered='flows']")

    def run_id(self, name):
        """The run an earlier test of this module made."""
        if name not in self.run_ids:
            pytest.skip(f"needs the {name} run an earlier test in this module starts")
        return self.run_ids[name]

    def shot(self, name, page=None):
        path = self.shots / f"{name}.png"
        (page or self.page).screenshot(path=str(path), full_page=True)
        return path

    def assert_clean(self):
        assert self.errors == [], "the page reported errors"


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = os.environ.get("ORCHESTRATOR_TEST_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("web") / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the web page: {path}")
    return path


@pytest.fixture(scope="module")
def web(browser, server, shots):
    w = Web(browser, server, shots)
    yield w
    w.context.close()


@pytest.fixture
def page(web):
    web.sign_in()
    return web.page


def rows(page):
    return page.locator("#runs tbody tr[data-run]")


# -- 1. the token ---------------------------------------------------------------------------------
def test_the_token_screen_refuses_a_wrong_token_and_accepts_the_right_one(web):
    page = web.page
    response = page.goto(web.url())
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    expect(page.locator("#token")).to_be_visible()
    expect(page.locator("#token")).to_be_focused()
    expect(page.get_by_role("heading", name="API token")).to_be_visible()

    web.refusals_allowed = True
    page.locator("#token").fill("not-the-token")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".login [role=alert]")).to_have_text("The server refused this token.")
    expect(page.locator("#token")).to_be_visible()
    expect(page.locator("#forget")).to_be_hidden()
    web.shot("01-token-refused")

    page.locator("#token").fill(web.server.token)
    page.get_by_role("button", name="Save").click()
    page.wait_for_selector("body[data-rendered='flows']")
    web.refusals_allowed = False
    assert web.refusals, "the refused request was expected in the console"
    expect(page.get_by_role("heading", name="Flows", exact=True)).to_be_visible()
    expect(page.locator("article[data-flow='p/greeter']")).to_be_visible()
    expect(page.locator("#forget")).to_be_visible()
    expect(page.locator("#health")).to_contain_text("agent alive")
    web.shot("02-flows")
    web.assert_clean()


# -- 2. a run with a parameter and a mapped task --------------------------------------------------
def test_run_now_with_a_changed_parameter_follows_the_run_to_success(web, page):
    web.go("#/flows", "flows")
    card = page.locator("article[data-flow='p/greeter']")
    card.locator("button[data-action=run]").click()
    expect(card.locator("button[data-action=run]")).to_have_attribute("aria-expanded", "true")
    word = card.locator("form.params input[name=word]")
    expect(word).to_have_value("hello")
    expect(word).to_be_focused()
    word.fill(WORD)
    card.get_by_role("button", name="Start run").click()

    page.wait_for_url(re.compile(r"#/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    web.run_ids["greeter"] = run_id
    expect(page.locator("#run-state")).to_have_text(re.compile(r"^Success"), timeout=30000)
    expect(page.locator("h1")).to_contain_text(f"Run {run_id}")
    expect(page.locator("button[data-action=cancel]")).to_have_count(0)

    gantt = page.locator("#gantt")
    assert gantt.locator(".bar").count() >= 3  # numbers, the mapped group, say
    mapped = gantt.locator("details[data-mapped]")
    expect(mapped).to_have_count(1)
    expect(mapped.locator("summary")).to_have_text(re.compile(r"square\S* \(3 mapped\)"))
    mapped.locator("summary").click()
    expect(mapped).to_have_attribute("open", "")
    for i in range(3):
        expect(mapped.locator(".label", has_text=re.compile(rf"^square\S*\[{i}\]$"))
               ).to_be_visible()
    expect(mapped.locator(".bar")).to_have_count(4)  # the group's bar and one per child
    expect(mapped.locator(":scope > .row .bar[data-state=Success]")).to_have_count(3)

    expect(page.locator("#parameters")).to_contain_text(f'"word": "{WORD}"')
    expect(page.locator("#logs")).to_contain_text(f"the browser test says {WORD} (total 14)",
                                                  timeout=15000)
    states = page.locator("#states li .badge")
    expect(states.first).to_have_text("Scheduled")
    expect(states.last).to_have_text("Success")
    names = states.all_inner_texts()
    assert names.index("Scheduled") < names.index("Running") < names.index("Success"), names
    web.shot("03-run-success")

    # The log level filter: at ERROR the info line is gone, back at DEBUG it returns.
    page.select_option("#log-level", "ERROR")
    expect(page.locator("#logs")).not_to_contain_text("the browser test says")
    page.select_option("#log-level", "DEBUG")
    expect(page.locator("#logs")).to_contain_text(f"the browser test says {WORD}")
    # The task filter: one mapped child's lines only, then all again.
    child = page.locator("#log-task option", has_text=re.compile(r"^square")).first
    page.select_option("#log-task", child.get_attribute("value"))
    expect(page.locator("#logs")).to_contain_text("Task 'square[0]': Starting task run")
    expect(page.locator("#logs")).not_to_contain_text("the browser test says")
    page.select_option("#log-task", "")
    expect(page.locator("#logs")).to_contain_text(f"the browser test says {WORD}")
    web.assert_clean()


# -- 3. cancelling ------------------------------------------------------------------------------
def test_cancel_run_stops_a_running_run(web, page):
    web.go("#/flows", "flows")
    card = page.locator("article[data-flow='p/sleeper']")
    card.locator("button[data-action=run]").click()
    expect(card.locator("form.params")).to_contain_text("This flow has no parameters.")
    card.get_by_role("button", name="Start run").click()
    page.wait_for_url(re.compile(r"#/runs/\d+$"))
    web.run_ids["sleeper"] = int(page.url.rsplit("/", 1)[1])

    expect(page.locator("#run-state")).to_have_text(re.compile(r"^Running"), timeout=20000)
    page.locator("button[data-action=cancel]").click()
    expect(page.locator("#run-state")).to_have_text(re.compile(r"^Cancelled"), timeout=20000)
    expect(page.locator("button[data-action=cancel]")).to_have_count(0)
    expect(page.locator("#states li .badge").last).to_have_text("Cancelled")
    web.shot("04-run-cancelled")
    web.assert_clean()


# -- 4. the runs view's filters live in the URL ---------------------------------------------------
def test_the_runs_filters_are_in_the_url_and_survive_a_reload(web, page):
    greeter, sleeper = web.run_id("greeter"), web.run_id("sleeper")
    web.go("#/runs", "runs")
    flows_shown = set(page.locator("#runs tbody tr[data-run] td:nth-child(2)").all_inner_texts())
    assert {"p/greeter", "p/sleeper"} <= flows_shown, flows_shown

    page.select_option("#f-flow", "p/greeter")
    page.wait_for_url(re.compile(r"#/runs\?flow=p(%2F|/)greeter$"))
    expect(rows(page).filter(has_not_text="p/greeter")).to_have_count(0)
    expect(rows(page).filter(has_text="p/greeter").first).to_be_visible()
    web.shot("05-runs-filtered-by-flow")

    page.reload()
    page.wait_for_selector("body[data-rendered='runs']")
    expect(page.locator("#f-flow")).to_have_value("p/greeter")
    expect(rows(page).filter(has_not_text="p/greeter")).to_have_count(0)
    expect(rows(page).filter(has_text="p/greeter").first).to_be_visible()

    # The state filter joins it; then "any flow" keeps only the state.
    page.select_option("#f-state", "Success")
    page.wait_for_url(re.compile(r"#/runs\?flow=p(%2F|/)greeter&state=Success$"))
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_have_attribute("data-run", str(greeter))
    page.select_option("#f-flow", "")
    page.wait_for_url(re.compile(r"#/runs\?state=Success$"))
    page.select_option("#f-state", "Cancelled")
    page.wait_for_url(re.compile(r"#/runs\?state=Cancelled$"))
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_have_attribute("data-run", str(sleeper))
    page.reload()
    page.wait_for_selector("body[data-rendered='runs']")
    expect(page.locator("#f-state")).to_have_value("Cancelled")
    expect(page.locator("#f-flow")).to_have_value("")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).locator(".badge")).to_have_text("Cancelled")
    web.shot("06-runs-filtered-by-state")

    # A run's link opens its page.
    rows(page).first.locator("a").click()
    page.wait_for_url(re.compile(rf"#/runs/{sleeper}$"))
    expect(page.locator("#run-state")).to_have_text(re.compile(r"^Cancelled"))
    web.assert_clean()


# -- 5. why has it not started? -----------------------------------------------------------------
def test_a_run_no_agent_can_take_explains_the_missing_label(web, page):
    run = web.call("POST", "/api/flow_runs", {
        "flow": "p/greeter", "labels": ["nowhere"], "parameters": {"word": LONG_PATH}})
    web.run_ids["stuck"] = run["id"]
    web.go(f"#/runs/{run['id']}", "run")
    explain = page.locator("#explain")
    expect(explain).to_be_visible()
    expect(explain).to_contain_text("Why has it not started?")
    expect(explain).to_contain_text("the run needs ['nowhere'], so it lacks ['nowhere']")
    expect(page.locator("#run-state")).to_have_text("Scheduled")
    expect(page.locator("#gantt")).to_contain_text("No task has started yet.")
    web.shot("07-run-explained")
    web.assert_clean()


# -- 6. schedules -----------------------------------------------------------------------------
def test_a_schedule_shows_in_words_and_pauses_and_resumes(web, page):
    web.go("#/flows", "flows")
    card = page.locator("article[data-flow='p/weekday']")
    schedule = card.locator("dt:text-is('Schedule') + dd")
    expect(schedule).to_have_text("every weekday at 06:00 UTC")
    expect(card.locator("dt:text-is('Next run') + dd")).to_have_text(
        re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
    expect(page.locator("article[data-flow='p/greeter'] dt:text-is('Schedule') + dd")
           ).to_have_text("none")
    expect(page.locator("article[data-flow='p/greeter'] [data-action=pause]")).to_have_count(0)

    card.get_by_role("button", name="Pause schedule").click()
    expect(card.locator("button[data-action=resume]")).to_have_text("Resume schedule")
    expect(card.locator("button[data-action=pause]")).to_have_count(0)
    expect(schedule).to_have_text("every weekday at 06:00 UTC (paused)")
    assert web.call("GET", "/api/flows?project=p")["flows"]
    web.shot("08-schedule-paused")

    card.get_by_role("button", name="Resume schedule").click()
    expect(card.locator("button[data-action=pause]")).to_have_text("Pause schedule")
    expect(schedule).to_have_text("every weekday at 06:00 UTC")
    active = {f["full_name"]: f["schedule_active"]
              for f in web.call("GET", "/api/flows?project=p")["flows"]}
    assert active["p/weekday"] is True
    web.assert_clean()


def test_pausing_a_schedule_while_a_run_form_is_open_shows_it_paused(web, page):
    web.go("#/flows", "flows")
    page.locator("article[data-flow='p/greeter'] button[data-action=run]").click()
    card = page.locator("article[data-flow='p/weekday']")
    try:
        card.get_by_role("button", name="Pause schedule").click()
        expect(card.locator("button[data-action=resume]")).to_have_text("Resume schedule",
                                                                        timeout=3000)
        expect(card.locator("dt:text-is('Schedule') + dd")).to_contain_text("(paused)")
    finally:
        flow = next(f for f in web.call("GET", "/api/flows?project=p")["flows"]
                    if f["full_name"] == "p/weekday")
        if not flow["schedule_active"]:
            web.shot("09-bug-schedule-paused-under-open-form")
            web.call("POST", f"/api/flows/{flow['id']}/schedule/resume")


# -- 7. agents and limits -----------------------------------------------------------------------
def test_the_agents_view_lists_the_agent_and_a_new_limit(web, page):
    agent = web.server.health()[2]["agent"]
    web.go("#/agents", "agents")
    row = page.locator("#agents tbody tr", has_text=agent["name"])
    expect(row).to_have_count(1)
    expect(row).to_contain_text(socket.gethostname())
    expect(row).not_to_contain_text("(gone)")
    expect(row.locator("td").nth(3)).to_have_text(re.compile(r"^\d+ s ago$"))
    expect(page.locator("#limits")).to_have_count(0)
    expect(page.locator("main")).to_contain_text("No limits.")

    web.call("PUT", "/api/concurrency_limits/label/gpu", {"limit": 2})
    try:
        page.reload()
        page.wait_for_selector("body[data-rendered='agents']")
        limit = page.locator("#limits tbody tr")
        expect(limit).to_have_count(1)
        expect(limit.locator("td")).to_have_text(["run label", "gpu", "0 / 2", "none"])
        web.shot("10-agents-and-limits")
    finally:
        web.call("DELETE", "/api/concurrency_limits/label/gpu")
    web.assert_clean()


# -- 8. a phone ---------------------------------------------------------------------------------
def test_a_phone_sized_screen_has_no_sideways_scrolling(web, browser, page):
    greeter = web.run_id("greeter")
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                has_touch=True, device_scale_factor=2,
                                storage_state=web.context.storage_state())
    web.watch(phone)
    try:
        tab = phone.new_page()
        web.watch_page(tab)
        tab.set_default_timeout(15000)
        widths = {}

        def visit(name, hash_, rendered):
            tab.goto(web.url(hash_))
            tab.wait_for_selector(f"body[data-rendered='{rendered}']")
            widths[name] = tab.evaluate("() => document.documentElement.scrollWidth")
            web.shot(f"11-phone-{name}", tab)

        visit("runs", "#/runs", "runs")
        expect(rows(tab).first).to_be_visible()
        visit("run", f"#/runs/{greeter}", "run")
        expect(tab.locator("#run-state")).to_have_text(re.compile(r"^Success"))
        tab.locator("#gantt details[data-mapped] summary").click()
        widths["run-mapped-open"] = tab.evaluate("() => document.documentElement.scrollWidth")
        visit("flows", "#/flows", "flows")
        visit("agents", "#/agents", "agents")
        assert all(w <= 390 for w in widths.values()), widths
    finally:
        phone.close()
    web.assert_clean()


def test_a_phone_shows_a_run_with_a_long_parameter_without_sideways_scrolling(web, browser,
                                                                              page):
    stuck = web.run_id("stuck")
    phone = browser.new_context(viewport={"width": 390, "height": 844},
                                storage_state=web.context.storage_state())
    web.watch(phone)
    try:
        tab = phone.new_page()
        web.watch_page(tab)
        tab.goto(web.url(f"#/runs/{stuck}"))
        tab.wait_for_selector("body[data-rendered='run']")
        width = tab.evaluate("() => document.documentElement.scrollWidth")
        wide = tab.evaluate("""() => [...document.querySelectorAll("main *")]
            .filter((e) => e.getBoundingClientRect().width > window.innerWidth)
            .map((e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")
                 + (e.className ? "." + e.className : "")).slice(0, 6)""")
        if width > 390:
            web.shot("12-bug-phone-long-parameter", tab)
        assert width <= 390, f"wider than the screen: {wide}"
    finally:
        phone.close()


# -- 9. the keyboard ----------------------------------------------------------------------------
def test_tab_reaches_the_sections_and_enter_opens_one(web, page):
    web.go("#/flows", "flows")
    reached = []
    for _ in range(6):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("() => document.activeElement.textContent.trim()"))
        if reached[-1] == "Runs":
            break
    assert reached == ["Skip to content", "Flows", "Runs"], reached
    expect(page.locator("a[data-nav=runs]")).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"#/runs$"))
    page.wait_for_selector("body[data-rendered='runs']")
    expect(page.locator("a[data-nav=runs]")).to_have_attribute("aria-current", "page")
    expect(page.locator("a[data-nav=flows]")).not_to_have_attribute("aria-current", "page")
    expect(page.locator("main")).to_be_focused()  # the view is where Tab goes next
    page.keyboard.press("Tab")
    expect(page.locator("#f-flow")).to_be_focused()
    web.assert_clean()


# -- every page asked only this server ------------------------------------------------------------
def test_show_more_pages_back_through_older_runs_and_back_to_newest(web, page):
    made = [web.call("POST", "/api/flow_runs", {"flow": "p/weekday", "labels": ["nowhere"]})
            for _ in range(60)]
    total = len(web.call("GET", "/api/flow_runs?flow=p/weekday&limit=500")["flow_runs"])
    assert total > 50
    web.go("#/runs?flow=p%2Fweekday", "runs")
    rows = page.locator("#runs tbody tr")
    expect(rows).to_have_count(50)
    expect(rows.first).to_have_attribute("data-run", str(made[-1]["id"]))
    page.get_by_role("button", name="Show more").click()
    expect(rows).to_have_count(total)
    ids = [int(i) for i in rows.evaluate_all("rows => rows.map(r => r.dataset.run)")]
    assert ids == sorted(set(ids), reverse=True)  # newest first, none twice
    expect(page.get_by_role("button", name="Show more")).to_be_hidden()
    page.get_by_role("button", name="Back to newest").click()
    expect(rows).to_have_count(50)
    web.assert_clean()


# -- artifacts: markdown shown as text, links only where safe -------------------------------------
HOSTILE_MARKDOWN = """# Sales <script>window.pwned = 1</script>

Totals for **May** with *care*, `code <b>` and a [safe link](https://example.com/report "t").
A snake_case_name stays as written.

<img src=x onerror="window.pwned = 2">

<b>bold?</b> and [bad link](javascript:window.pwned=3) and [page](data:text/html,hi)

- first item
- second with <i>tags</i>
  - nested item

3. three
4. four

| region | total |
|:-------|------:|
| north  | 10 <script>window.pwned = 4</script> |
| south  | 20 |

```
<script>window.pwned = 5</script>
```

> quoted <em>words</em>

The checksum of the data: """ + "0123456789abcdef" * 10 + """
"""


def test_a_runs_artifacts_show_markdown_as_text_and_only_safe_links(web, page):
    run = web.call("POST", "/api/flow_runs", {"flow": "p/reporter",
                                              "parameters": {"markdown": HOSTILE_MARKDOWN}})
    web.go(f"#/runs/{run['id']}", "run")
    expect(page.locator("#run-state")).to_have_text(re.compile(r"^Success"), timeout=30000)
    box = page.locator("#artifacts")
    expect(box.locator("article.artifact")).to_have_count(3)
    report = box.locator("article[data-kind=markdown]")
    expect(report.locator(".artifact-head")).to_contain_text("Report from publish")

    # Markup in the text is text: nothing of it became an element, nothing ran.
    expect(report.locator("h3")).to_have_text("Sales <script>window.pwned = 1</script>")
    for tag in ("script", "img", "b", "i", "em:text-is('words')", "[onerror]"):
        expect(report.locator(tag)).to_have_count(0)
    expect(report).to_contain_text('<img src=x onerror="window.pwned = 2">')
    expect(report).to_contain_text("<b>bold?</b>")
    expect(report.locator("blockquote")).to_have_text("quoted <em>words</em>")
    expect(report.locator("pre code")).to_have_text("<script>window.pwned = 5</script>")
    expect(report.locator("td").nth(1)).to_have_text("10 <script>window.pwned = 4</script>")
    assert page.evaluate("() => window.pwned") is None

    # The Markdown it reads: emphasis, code, lists, a table.
    expect(report.locator("strong")).to_have_text("May")
    expect(report.locator("em")).to_have_text("care")
    expect(report.locator("p code")).to_have_text("code <b>")
    expect(report).to_contain_text("A snake_case_name stays as written.")
    expect(report.locator(".md > ul > li")).to_have_count(2)
    expect(report.locator("ul ul > li")).to_have_text("nested item")
    expect(report.locator("ol")).to_have_attribute("start", "3")
    expect(report.locator("th")).to_have_text(["region", "total"])

    # Links: http, https and mailto only, opened apart from this page; others are text.
    links = box.locator("a")
    expect(links).to_have_count(2)
    expect(report.get_by_role("link", name="safe link")).to_have_attribute(
        "href", "https://example.com/report")
    for rel in links.evaluate_all("links => links.map(a => a.rel)"):
        assert "noopener" in rel.split(), rel
    expect(report).to_contain_text("[bad link](javascript:window.pwned=3)")
    expect(report).to_contain_text("[page](data:text/html,hi)")
    link = box.locator("article[data-kind=link]")
    expect(link.first.locator("a")).to_have_attribute("href", "https://example.com/sales?q=1")
    expect(link.nth(1).locator("a")).to_have_count(0)
    expect(link.nth(1)).to_contain_text("javascript:window.pwned = 6")
    web.shot("13-run-artifacts")

    page.set_viewport_size({"width": 390, "height": 844})  # a phone: no sideways scrolling
    try:
        width = page.evaluate("() => document.documentElement.scrollWidth")
        if width > 390:
            web.shot("14-bug-phone-artifacts")
        assert width <= 390
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})
    web.assert_clean()


def test_the_page_asked_only_its_own_server(web):
    assert web.requests, "no request was recorded"
    foreign = [u for u in web.requests
               if not (u.startswith(web.server.url + "/") or u.startswith("data:"))]
    assert foreign == [], foreign
    assert web.errors == []
