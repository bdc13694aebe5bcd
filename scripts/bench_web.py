"""Web page benchmark: the page at / as `orchestrator server` serves it, on loopback.

    python scripts/bench_web.py [--quick] [--repeats 10] [--runs 10000]
                                [--chromium /usr/bin/chromium]
                                [--json bench-results/web.json]

1. Page weight: the bytes (uncompressed, as served over HTTP) of index.html,
   app.js and app.css, fetched with urllib; and the requests the page makes
   to render the runs view (#/runs), as headless Chromium (playwright) sees
   them with page.on("request"), up to the network going quiet after the
   render. Every request must go to 127.0.0.1.
2. Time to first render of the runs view with --runs runs in the store (a mix
   of states, seeded in one transaction): a new page at URL/#/runs per load, from navigation start to
   app.js's performance.mark("runs-rendered") (read after
   body[data-rendered=runs] appears). The first load of a fresh browser
   context is cold and reported apart; the median is over --repeats warm loads.
3. The same for the run view (#/runs/ID) of one run of a flow mapping a
   logging task over 100 items (~100 task runs, ~1,200 log lines), executed
   with `orchestrator execute RUN_ID`: navigation start to
   body[data-rendered=run], taken by a MutationObserver an init script puts
   on the page (app.js makes no mark for this view).

Every load also records the wall time around goto + wait_for_selector, the
Resource Timing of each API call (a slow endpoint shows there), and any
console error, page error, failed request or HTTP status >= 400.

`--quick` takes fewer loads (5) for a smoke run; the store still holds --runs
runs. A table goes to stdout, JSON to bench-results/web.json. Everything uses
one temporary ORCHESTRATOR_HOME; the server it starts is stopped at the end.
"""

import argparse
import json
import os
import platform
import re
import statistics
import textwrap
import time
import urllib.parse
import urllib.request

from benchkit import (
    ServiceProcess,
    cli,
    forget_outside_api,
    new_home,
    open_store,
    print_log_problems,
    write_json,
)

FLOWS = textwrap.dedent('''
    from orchestrator import Flow, Parameter, get_logger, task

    @task
    def noop(n):
        return n

    @task
    def chatty(x):
        log = get_logger()
        for i in range(10):
            log.info("item %d, line %d of 10", x, i)
        return x

    with Flow("web-bench") as web_bench_flow:
        noop(Parameter("n"))

    with Flow("map-logs") as map_logs_flow:
        chatty.map(list(range(100)))
''')
SEED_FLOW = "p/web-bench"
DETAIL_FLOW = "p/map-logs"
TOKEN_KEY = "orchestrator.token"  # app.js keeps the token in localStorage under this key
STATIC = ("index.html", "app.js", "app.css")

LOCAL_HOST = "127.0.0.1"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
SELECTOR_TIMEOUT_MS = 30000
SLOW_ENDPOINT_MS = 100  # an API call slower than this (median) is named in the output

# Targets; None: no target for that figure.
RUNS_RENDER_TARGET_MS = 300
RUN_RENDER_TARGET_MS = None

# Seeded runs: (state, share); finished ones get start and end times, Running a start.
STATE_MIX = [("Success", 6), ("Failed", 1), ("Cancelled", 1), ("Scheduled", 1),
             ("Running", 1)]
FINISHED = ("Success", "Failed", "Cancelled", "TimedOut", "Skipped", "TriggerFailed",
            "Cached")

# Runs in every page before its own scripts (add_init_script is not subject to the
# page's CSP): the token for the page's origin, and the time data-rendered is set.
INIT_SCRIPT = """
(() => {
  try {
    if (location.origin === %(origin)s) localStorage.setItem(%(key)s, %(token)s);
  } catch (err) { /* about:blank has no localStorage */ }
  const seen = {};
  window.__benchRendered = seen;
  new MutationObserver((records) => {
    for (const r of records) {
      const value = r.target.dataset && r.target.dataset.rendered;
      if (value && !(value in seen)) seen[value] = performance.now();
    }
  }).observe(document, {subtree: true, attributes: true, attributeFilter: ["data-rendered"]});
})();
"""

READ_TIMINGS = """(mark) => {
  const entry = mark ? performance.getEntriesByName(mark)[0] : null;
  const nav = performance.getEntriesByType("navigation")[0];
  return {
    mark_ms: entry ? entry.startTime : null,
    observed_ms: window.__benchRendered || {},
    navigation: nav ? {response_end_ms: nav.responseEnd,
                       dom_content_loaded_ms: nav.domContentLoadedEventEnd,
                       load_ms: nav.loadEventEnd, bytes: nav.encodedBodySize} : null,
    resources: performance.getEntriesByType("resource").map((e) => ({
      url: e.name, start_ms: e.startTime, end_ms: e.responseEnd,
      duration_ms: e.responseEnd - e.startTime,
      wait_ms: e.responseStart - e.requestStart, bytes: e.encodedBodySize})),
  };
}"""


def seed(home, runs):
    """`runs` - 1 runs of the small flow in one transaction (a mix of states,
    scheduled a minute apart up to now), then one run of the mapping flow, executed:
    `runs` runs in all, the mapping one the newest."""
    store = open_store(home)
    try:
        flow_id = store.get_flow(SEED_FLOW)["id"]
        states = [state for state, share in STATE_MIX for _ in range(share)]
        now = time.time()
        began = time.perf_counter()
        with store.atomic():
            for i in range(runs - 1):
                store.create_flow_run(flow_id, parameters={"n": i}, labels=["bench"],
                                      scheduled_start_time=now - (runs - 1 - i) * 60,
                                      state=states[i % len(states)])
            # Times for the table's Started and Duration columns: one UPDATE each.
            p = store.db.param
            finished = ", ".join([p] * len(FINISHED))
            store.db.execute_sql(
                f"UPDATE flow_run SET start_time = scheduled_start_time + 1, "
                f"end_time = scheduled_start_time + 2 + (id % 50) "
                f"WHERE flow_id = {p} AND state IN ({finished})", [flow_id, *FINISHED])
            store.db.execute_sql(
                f"UPDATE flow_run SET start_time = scheduled_start_time + 1, "
                f"heartbeat = scheduled_start_time + 1 WHERE flow_id = {p} AND state = {p}",
                [flow_id, "Running"])
        seed_seconds = time.perf_counter() - began
        detail = store.create_flow_run(store.get_flow(DETAIL_FLOW)["id"])
    finally:
        store.close()
    began = time.perf_counter()
    cli(home, "execute", detail["id"])
    execute_seconds = time.perf_counter() - began
    store = open_store(home)
    try:
        run = store.get_flow_run(detail["id"])
        task_runs = store.task_runs(run["id"])
        mapped = [t for t in task_runs if t["map_index"] is not None and t["map_index"] >= 0]
        # The run view shows INFO and above by default.
        log_lines = len(store.logs(run["id"], min_level=20, limit=10 ** 6))
        total_runs = len(store.list_flow_runs(limit=runs + 10))
    finally:
        store.close()
    if run["state"] != "Success":
        raise SystemExit(f"run {run['id']} of {DETAIL_FLOW} ended {run['state']}: "
                         f"{run['message']}")
    return {"runs_in_store": total_runs, "seed_seconds": seed_seconds,
            "detail_run_id": run["id"], "detail_task_runs": len(task_runs),
            "detail_mapped_task_runs": len(mapped),
            "detail_mapped_slugs": len({t["task_slug"] for t in mapped}),
            "detail_log_lines_info": log_lines, "detail_execute_seconds": execute_seconds}


# -- 1. the static files over HTTP ---------------------------------------------------------
def page_weight(base_url):
    files = {}
    for name in STATIC:
        url = base_url + ("/" if name == "index.html" else f"/static/{name}")
        # No Accept-Encoding: the bytes as the server sends them uncompressed.
        with urllib.request.urlopen(urllib.request.Request(url), timeout=10) as resp:
            body = resp.read()
            files[name] = {"url": url, "status": resp.status, "bytes": len(body),
                           "content_type": resp.headers.get("Content-Type"),
                           "content_encoding": resp.headers.get("Content-Encoding"),
                           "cache_control": resp.headers.get("Cache-Control"),
                           "csp": resp.headers.get("Content-Security-Policy")}
    return {"files": files, "total_bytes": sum(f["bytes"] for f in files.values())}


# -- 2. and 3. loads in Chromium -------------------------------------------------------------
def endpoint_key(url):
    """/api/flow_runs/17/logs?cursor=0&level=INFO -> /api/flow_runs/{id}/logs?cursor&level"""
    parts = urllib.parse.urlsplit(url)
    path = re.sub(r"/[0-9]+(?=/|$)", "/{id}", parts.path)
    keys = sorted({k for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)})
    return path + ("?" + "&".join(keys) if keys else "")


def is_local(url):
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme in ("data", "blob", "about"):
        return True  # nothing goes over the network
    return scheme in ("http", "https", "ws", "wss") and \
        urllib.parse.urlsplit(url).hostname == LOCAL_HOST


def load(context, url, selector, mark, problems, view):
    """One navigation in a new page: its timings and the requests it made."""
    page = context.new_page()
    requests = []
    page.on("request", lambda r: requests.append(
        {"method": r.method, "url": r.url, "type": r.resource_type}))
    page.on("requestfailed", lambda r: problems.append(
        f"{view}: request failed: {r.method} {r.url}: {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(
        f"{view}: HTTP {r.status} for {r.request.method} {r.url}"))
    page.on("console", lambda m: m.type in ("error", "warning") and problems.append(
        f"{view}: console {m.type}: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"{view}: page error: {e}"))
    try:
        began = time.perf_counter()
        page.goto(url, wait_until="commit")
        try:
            page.wait_for_selector(selector, state="attached", timeout=SELECTOR_TIMEOUT_MS)
        except Exception as exc:  # noqa: BLE001 - say what the page shows instead
            text = page.inner_text("main") if page.query_selector("main") else page.content()
            raise SystemExit(f"{view}: {selector} did not appear in "
                             f"{SELECTOR_TIMEOUT_MS / 1000:g} s ({exc.__class__.__name__}); "
                             f"the page shows:\n{text[:1000]}\nproblems: {problems[-5:]}")
        wall_ms = (time.perf_counter() - began) * 1000
        try:
            timings = page.evaluate(READ_TIMINGS, mark)
            timings["evaluate_error"] = None
        except Exception as exc:  # noqa: BLE001 - fall back to the wall time
            timings = {"mark_ms": None, "observed_ms": {}, "navigation": None,
                       "resources": [], "evaluate_error": repr(exc)}
        # The rest of the render's requests (the header's /api/health) come in here;
        # the view's own refresh is seconds away.
        page.wait_for_load_state("networkidle")
        shown = page.evaluate("""() => ({
            rows: document.querySelectorAll("#runs tbody tr").length,
            first_row: (document.querySelector("#runs tbody tr") || {dataset: {}}).dataset.run,
            mapped: document.querySelectorAll("#gantt details[data-mapped] .row").length,
            log_lines: document.querySelectorAll("#logs > div").length,
            error: (document.querySelector("main .error") || {}).textContent || null})""")
    finally:
        page.close()
    timings.update(wall_ms=wall_ms, requests=requests, shown=shown)
    if shown["error"]:
        problems.append(f"{view}: the page shows an error: {shown['error']}")
    return timings


def render_ms(timings, mark, rendered):
    """The mark's start time, else the observed data-rendered time, else wall time."""
    if timings["mark_ms"] is not None:
        return timings["mark_ms"], "performance mark"
    if rendered in timings["observed_ms"]:
        return timings["observed_ms"][rendered], "MutationObserver on data-rendered"
    return timings["wall_ms"], "wall time around goto + wait_for_selector"


def bench_view(browser, base_url, token, hash_, rendered, mark, repeats, problems):
    """A fresh context: one cold load, then `repeats` warm loads, each in a new page."""
    script = INIT_SCRIPT % {"origin": json.dumps(base_url), "key": json.dumps(TOKEN_KEY),
                            "token": json.dumps(token)}
    context = browser.new_context()
    try:
        context.add_init_script(script)
        selector = f"body[data-rendered={rendered}]"
        loads = [load(context, base_url + "/" + hash_, selector, mark, problems, rendered)
                 for _ in range(repeats + 1)]
    finally:
        context.close()
    for timings in loads:
        timings["render_ms"], timings["source"] = render_ms(timings, mark, rendered)
    cold, warm = loads[0], loads[1:]
    endpoints = {}
    for timings in warm:
        for r in timings["resources"]:
            endpoints.setdefault(endpoint_key(r["url"]), []).append(r)
    calls = {key: {"calls_per_load": len(rs) / len(warm),
                   "median_ms": statistics.median(r["duration_ms"] for r in rs),
                   "median_wait_ms": statistics.median(r["wait_ms"] for r in rs),
                   "max_ms": max(r["duration_ms"] for r in rs),
                   "median_bytes": statistics.median(r["bytes"] for r in rs)}
             for key, rs in endpoints.items()}
    counts = [len([r for r in t["requests"] if not r["url"].startswith("data:")])
              for t in warm]
    return {
        "hash": hash_, "loads_warm": len(warm), "timing_source": warm[0]["source"],
        "cold_ms": cold["render_ms"], "cold_wall_ms": cold["wall_ms"],
        "median_ms": statistics.median(t["render_ms"] for t in warm),
        "min_ms": min(t["render_ms"] for t in warm),
        "max_ms": max(t["render_ms"] for t in warm),
        "median_wall_ms": statistics.median(t["wall_ms"] for t in warm),
        "median_dom_content_loaded_ms": statistics.median(
            t["navigation"]["dom_content_loaded_ms"] for t in warm if t["navigation"])
        if any(t["navigation"] for t in warm) else None,
        "bytes_per_load": statistics.median(
            (t["navigation"]["bytes"] if t["navigation"] else 0)
            + sum(r["bytes"] for r in t["resources"]) for t in warm),
        "requests_per_load": {"min": min(counts), "max": max(counts)},
        "requests_first_warm_load": warm[0]["requests"],
        "endpoints": calls, "shown": warm[-1]["shown"],
        "evaluate_error": warm[0]["evaluate_error"],
        "per_load": [{"render_ms": t["render_ms"], "wall_ms": t["wall_ms"],
                      "mark_ms": t["mark_ms"], "observed_ms": t["observed_ms"],
                      "requests": len(t["requests"])} for t in loads],
        "all_request_urls": sorted({r["url"] for t in loads for r in t["requests"]}),
    }


def bench_browser(chromium, base_url, token, detail_run_id, repeats):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("playwright (Python) is needed: pip install playwright; the "
                         "browser is Debian's chromium (--chromium), nothing is downloaded")
    problems = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            version = browser.version
            runs_view = bench_view(browser, base_url, token, "#/runs", "runs",
                                   "runs-rendered", repeats, problems)
            run_view = bench_view(browser, base_url, token, f"#/runs/{detail_run_id}",
                                  "run", None, repeats, problems)
        finally:
            browser.close()
    return version, runs_view, run_view, problems


# -- the table -------------------------------------------------------------------------------
def print_table(lines):
    header = ("what", "value", "target", "ok?")
    rows = [(name, value, target or "-", "-" if ok is None else ("ok" if ok else "NO"))
            for name, value, target, ok in lines]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print("  ".join(f"{v:<{w}}" for v, w in zip(row, widths)) + "  " + row[3])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="Fewer loads: a smoke run.")
    parser.add_argument("--repeats", "--repeat", dest="repeats", type=int, default=None,
                        help="Warm loads per view after the cold one; medians are "
                             "reported (default 10; 5 with --quick).")
    parser.add_argument("--runs", type=int, default=10000,
                        help="Runs in the store for the runs view, the mapping run "
                             "among them (default 10000).")
    parser.add_argument("--chromium", default="/usr/bin/chromium",
                        help="The Chromium binary (never downloaded).")
    parser.add_argument("--json", default="bench-results/web.json")
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.quick else 10)
    if repeats < 1 or args.runs < 1:
        parser.error("--repeats and --runs must be at least 1")
    if not os.access(args.chromium, os.X_OK):
        parser.error(f"no Chromium at {args.chromium}")
    # The page must reach the server this benchmark starts, with its token.
    forget_outside_api()
    began = time.perf_counter()

    home = new_home("orchestrator-bench-web-", FLOWS)
    seeded = seed(home, args.runs)
    server = ServiceProcess(home, "server")
    try:
        server.wait_healthy()
        token = server.token
        weight = page_weight(server.base_url)
        version, runs_view, run_view, problems = bench_browser(
            args.chromium, server.base_url, token, seeded["detail_run_id"], repeats)
        server.check_running()
    finally:
        server.stop()
    server_problems = server.log_problems()

    urls = sorted(set(runs_view["all_request_urls"] + run_view["all_request_urls"]))
    not_local = sorted({u for u in urls if not is_local(u)})
    expected_rows = min(50, seeded["runs_in_store"])
    shown_runs, shown_run = runs_view["shown"], run_view["shown"]
    checks = {
        "runs_rows_shown": shown_runs["rows"], "runs_rows_expected": expected_rows,
        "first_row_run": shown_runs["first_row"],
        "run_view_mapped_rows": shown_run["mapped"],
        "run_view_mapped_rows_expected": (seeded["detail_mapped_task_runs"]
                                          + seeded["detail_mapped_slugs"]),
        "run_view_log_lines": shown_run["log_lines"],
        "run_view_log_lines_expected": seeded["detail_log_lines_info"],
    }
    checks["ok"] = (shown_runs["rows"] == expected_rows
                    and shown_runs["first_row"] == str(seeded["detail_run_id"])
                    and shown_run["log_lines"] == seeded["detail_log_lines_info"]
                    # a summary row per mapped task, then a row per child
                    and shown_run["mapped"] == (seeded["detail_mapped_task_runs"]
                                                + seeded["detail_mapped_slugs"]))
    runs_view["target_ms"] = RUNS_RENDER_TARGET_MS
    runs_view["ok"] = runs_view["median_ms"] < RUNS_RENDER_TARGET_MS
    run_view["target_ms"] = RUN_RENDER_TARGET_MS
    run_view["ok"] = None if RUN_RENDER_TARGET_MS is None \
        else run_view["median_ms"] < RUN_RENDER_TARGET_MS

    results = {
        "quick": args.quick, "cpus": os.cpu_count(), "python": platform.python_version(),
        "chromium": version, "repeats": repeats, "seed": seeded,
        "page_weight": weight,
        "requests": {"runs_view_per_load": runs_view["requests_per_load"],
                     "runs_view_first_warm_load": runs_view["requests_first_warm_load"],
                     "run_view_per_load": run_view["requests_per_load"],
                     "all_to_127_0_0_1": not not_local, "not_local": not_local},
        "runs_view": {k: v for k, v in runs_view.items()
                      if k not in ("requests_first_warm_load", "all_request_urls")},
        "run_view": {k: v for k, v in run_view.items()
                     if k not in ("requests_first_warm_load", "all_request_urls")},
        "render_checks": checks, "page_problems": problems[:50],
        "server_log_problems": server_problems[:20],
        "home": str(home), "bench_seconds": time.perf_counter() - began,
    }

    sizes = " + ".join(f"{weight['files'][n]['bytes']:,}" for n in STATIC)
    req = runs_view["requests_per_load"]
    req_text = str(req["max"]) if req["min"] == req["max"] else f"{req['min']}-{req['max']}"
    runs_n = f"{seeded['runs_in_store']:,} runs"
    lines = [
        ("page weight: index.html + app.js + app.css",
         f"{weight['total_bytes']:,} B ({sizes})", None, None),
        ("requests to render #/runs (listed below)", req_text, None, None),
        (f"requests of both views to {LOCAL_HOST}",
         f"{len(urls) - len(not_local)} of {len(urls)} distinct URLs", "all", not not_local),
        ("bytes fetched to render #/runs (static + API)",
         f"{runs_view['bytes_per_load']:,.0f} B", None, None),
        (f"#/runs first render, {runs_n} (median of {repeats} warm)",
         f"{runs_view['median_ms']:.0f} ms (min {runs_view['min_ms']:.0f}, max "
         f"{runs_view['max_ms']:.0f}; wall {runs_view['median_wall_ms']:.0f})",
         f"< {RUNS_RENDER_TARGET_MS} ms", runs_view["ok"]),
        ("#/runs first render, cold (first load, fresh browser)",
         f"{runs_view['cold_ms']:.0f} ms (wall {runs_view['cold_wall_ms']:.0f})", None, None),
        (f"#/runs/ID render, {seeded['detail_task_runs']} task runs, "
         f"{seeded['detail_log_lines_info']:,} log lines (median of {repeats} warm)",
         f"{run_view['median_ms']:.0f} ms (min {run_view['min_ms']:.0f}, max "
         f"{run_view['max_ms']:.0f}; wall {run_view['median_wall_ms']:.0f})",
         f"< {RUN_RENDER_TARGET_MS} ms" if RUN_RENDER_TARGET_MS else None, run_view["ok"]),
        ("#/runs/ID render, cold (first load, fresh context)",
         f"{run_view['cold_ms']:.0f} ms (wall {run_view['cold_wall_ms']:.0f})", None, None),
        ("rendered content (50 rows, newest first; all log lines)",
         f"{shown_runs['rows']} rows, {shown_run['mapped']} mapped, "
         f"{shown_run['log_lines']:,} log lines", "as stored", checks["ok"]),
        ("page problems (console errors, failed requests, HTTP >= 400)",
         str(len(problems)), "0", not problems),
    ]
    print(f"{runs_n} in the store (seeded in {seeded['seed_seconds']:.1f} s), "
          f"{repeats} warm load(s) per view, Chromium {version}, {os.cpu_count()} CPUs")
    print(f"render time: {runs_view['timing_source']} (#/runs), "
          f"{run_view['timing_source']} (#/runs/ID)")
    print_table(lines)
    print("\nrequests to render #/runs: " + ", ".join(
        f"{r['method']} {r['url'][len(server.base_url):]}"
        for r in runs_view["requests_first_warm_load"]))
    for view_name, view in (("#/runs", runs_view), ("#/runs/ID", run_view)):
        print(f"\nAPI calls of {view_name} (median of warm loads):")
        for key, c in sorted(view["endpoints"].items(), key=lambda kv: -kv[1]["median_ms"]):
            slow = "  SLOW" if c["median_ms"] > SLOW_ENDPOINT_MS else ""
            print(f"  {key:<44} {c['calls_per_load']:>4.1f}/load  {c['median_ms']:7.1f} ms "
                  f"(server wait {c['median_wait_ms']:.1f}, max {c['max_ms']:.1f})  "
                  f"{c['median_bytes']:>9,.0f} B{slow}")
    if runs_view["evaluate_error"]:
        print(f"\nperformance entries could not be read ({runs_view['evaluate_error']}); "
              "times are wall times")
    if not_local:
        print(f"\nrequests not to {LOCAL_HOST}: {not_local[:10]}")
    if problems:
        print(f"\n{len(problems)} page problem(s), e.g.:")
        for line in problems[:10]:
            print(f"  {line[:300]}")
    print_log_problems(server_problems)

    out = write_json(args.json, results)
    print(f"\nwrote {out} in {results['bench_seconds']:.0f} s (home {home})")


if __name__ == "__main__":
    main()
