// The web page: flows, runs, a run's timeline and logs, agents. It speaks only
// to the public REST API under /api, with the token kept in this browser.
"use strict";

const TOKEN_KEY = "orchestrator.token";
const FINISHED = ["Success", "Failed", "Cancelled", "TimedOut", "Skipped", "TriggerFailed",
                  "Cached"];
const STATES = ["Scheduled", "Submitted", "Running", "Cancelling", "Success", "Failed",
                "Cancelled", "TimedOut", "Skipped", "TriggerFailed", "Cached"];
const LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];

let timer = null;       // the current view's refresh
let viewSerial = 0;     // a view left behind ignores its late answers

class AuthNeeded extends Error {}
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// -- building elements (text always as text: nothing from the API is parsed as HTML)
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function badge(state) {
  const el = h("span", {class: "badge", dataset: {state}}, state);
  el.style.background = `var(--${state}, var(--Pending))`;
  return el;
}

function dot(run) {
  const el = h("a", {class: "dot", href: `#/runs/${run.id}`,
                     title: `Run ${run.id}: ${run.state}`,
                     "aria-label": `Run ${run.id}: ${run.state}`});
  el.style.background = `var(--${run.state}, var(--Pending))`;
  return el;
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
         `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function duration(startIso, endIso) {
  if (!startIso) return "—";
  const ms = (endIso ? new Date(endIso) : new Date()) - new Date(startIso);
  return seconds(ms / 1000) + (endIso ? "" : " …");
}

function seconds(s) {
  if (s < 1) return `${Math.max(0, Math.round(s * 1000))} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

function ago(iso) {
  if (!iso) return "never";
  const s = (Date.now() - new Date(iso)) / 1000;
  return s < 60 ? `${Math.max(0, Math.round(s))} s ago` : `${seconds(s)} ago`;
}

// -- the API ------------------------------------------------------------------------
async function api(path, method = "GET", body = undefined) {
  const token = localStorage.getItem(TOKEN_KEY);
  if (!token) throw new AuthNeeded("");
  const options = {method, headers: {Authorization: `Bearer ${token}`}};
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const res = await fetch(path, options);
  if (res.status === 401) throw new AuthNeeded("The server refused this token.");
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    throw new ApiError(res.status, (data && data.error && data.error.message) ||
                       `${res.status} ${res.statusText}`);
  }
  return data;
}

// -- routing --------------------------------------------------------------------------
function route() {
  const hash = location.hash.replace(/^#/, "") || "/flows";
  const [path, query] = hash.split("?");
  return {parts: path.split("/").filter(Boolean), params: new URLSearchParams(query || "")};
}

async function show() {
  clearInterval(timer);
  timer = null;
  const serial = ++viewSerial;
  const {parts, params} = route();
  const section = parts[0] || "flows";
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.getElementById("forget").hidden = !localStorage.getItem(TOKEN_KEY);
  const main = document.getElementById("main");
  const view = {main, serial, live: () => serial === viewSerial};
  try {
    if (!localStorage.getItem(TOKEN_KEY)) throw new AuthNeeded("");
    if (section === "runs" && parts[1]) await runView(view, parts[1]);
    else if (section === "runs") await runsView(view, params);
    else if (section === "agents") await agentsView(view);
    else await flowsView(view);
  } catch (err) {
    if (view.live()) failed(main, err);
  }
}

function failed(main, err) {
  clearInterval(timer);
  if (err instanceof AuthNeeded) { loginView(main, err.message); return; }
  main.replaceChildren(h("h1", {}, "Something went wrong"),
                       h("p", {class: "error", role: "alert"}, err.message));
}

function every(ms, view, step) {
  timer = setInterval(async () => {
    if (!view.live()) return;
    try { await step(); } catch (err) { if (view.live()) failed(view.main, err); }
  }, ms);
}

// -- the token ------------------------------------------------------------------------
function loginView(main, problem) {
  document.getElementById("forget").hidden = true;
  const input = h("input", {type: "password", id: "token", autocomplete: "off",
                            "aria-describedby": "token-help", required: true});
  const form = h("form", {class: "card login", onsubmit: (e) => {
    e.preventDefault();
    localStorage.setItem(TOKEN_KEY, input.value.trim());
    show();
  }},
    h("h1", {}, "API token"),
    problem ? h("p", {class: "error", role: "alert"}, problem) : null,
    h("label", {for: "token"}, "Token"),
    input,
    h("p", {id: "token-help", class: "muted"},
      "Print it on the server with ", h("code", {}, "orchestrator token"),
      " (it is in $ORCHESTRATOR_HOME/api-token). It stays in this browser only."),
    h("button", {type: "submit"}, "Save"));
  main.replaceChildren(form);
  input.focus();
}

// -- flows ------------------------------------------------------------------------------
async function flowsView(view) {
  const draw = async () => {
    const {flows} = await api("/api/flows");
    if (!view.live()) return;
    const open = new Set([...view.main.querySelectorAll("form.params")].map((f) => f.dataset.flow));
    if (open.size) return;  // someone is filling in a run form: do not redraw under them
    view.main.replaceChildren(
      h("h1", {}, "Flows"),
      flows.length ? h("div", {class: "flows"}, flows.map((f) => flowCard(f, draw)))
        : h("p", {class: "muted"}, "No flows yet. Register one with: orchestrator register -p PROJECT FILE"));
    document.body.dataset.rendered = "flows";
  };
  await draw();
  every(5000, view, draw);
}

function flowCard(flow, redraw) {
  const actions = h("div", {class: "actions"});
  const runButton = h("button", {type: "button", dataset: {action: "run"},
                                 "aria-expanded": "false"}, "Run now");
  const card = h("article", {class: "card", dataset: {flow: flow.full_name}});
  runButton.addEventListener("click", () => {
    const existing = card.querySelector("form.params");
    if (existing) { existing.remove(); runButton.setAttribute("aria-expanded", "false"); return; }
    runButton.setAttribute("aria-expanded", "true");
    card.append(runForm(flow));
    const first = card.querySelector("form.params input, form.params button");
    if (first) first.focus();
  });
  actions.append(runButton);
  if (flow.schedule) {
    const paused = !flow.schedule_active;
    actions.append(h("button", {type: "button", class: "quiet",
                                dataset: {action: paused ? "resume" : "pause"},
                                onclick: async (e) => {
      e.target.disabled = true;
      try {
        // Redraw this card from the answer: the list may hold an open run form elsewhere.
        const updated = await api(`/api/flows/${flow.id}/schedule/${paused ? "resume" : "pause"}`, "POST");
        const fresh = flowCard(updated, redraw);
        card.replaceWith(fresh);
        const again = fresh.querySelector(`button[data-action=${paused ? "pause" : "resume"}]`);
        if (again) again.focus();
      } catch (err) { e.target.disabled = false; alertIn(card, err); }
    }}, paused ? "Resume schedule" : "Pause schedule"));
  }
  card.append(
    h("div", {class: "flow-head"},
      h("div", {},
        h("h2", {}, `${flow.project}/${flow.name}`, h("span", {class: "muted"}, `  v${flow.version}`)),
        h("span", {class: "dots", "aria-label": "Last runs"},
          flow.recent_runs.slice().reverse().map(dot))),
      actions),
    h("dl", {class: "facts"},
      h("dt", {}, "Schedule"),
      h("dd", {}, flow.schedule_description
        ? [flow.schedule_description, flow.schedule_active ? "" : " (paused)"] : "none"),
      h("dt", {}, "Next run"), h("dd", {}, when(flow.next_run)),
      h("dt", {}, "Labels"), h("dd", {}, flow.labels.join(", ") || "none"),
      h("dt", {}, "Runs"), h("dd", {}, h("a", {href: `#/runs?flow=${encodeURIComponent(flow.full_name)}`}, "all runs"))));
  return card;
}

function runForm(flow) {
  const inputs = flow.parameters.map((p) => {
    const id = `param-${flow.id}-${p.name}`;
    const text = p.callable_default || p.default === null || p.default === undefined ? ""
      : (typeof p.default === "string" ? p.default : JSON.stringify(p.default));
    return {p, input: h("input", {id, name: p.name, value: text, required: p.required,
                                  placeholder: p.callable_default ? "computed at run time" : ""})};
  });
  const form = h("form", {class: "params", dataset: {flow: flow.full_name}},
    inputs.length ? inputs.map(({p, input}) => h("label", {for: input.id},
      `${p.name}${p.required ? " (required)" : ""}`, input))
      : h("p", {class: "muted"}, "This flow has no parameters."),
    h("div", {}, h("button", {type: "submit"}, "Start run")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const parameters = {};
    for (const {p, input} of inputs) {
      if (input.value === "" && !p.required) continue;
      parameters[p.name] = typeof p.default === "string" ? input.value : parseValue(input.value);
    }
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const run = await api("/api/flow_runs", "POST", {flow: flow.id, parameters});
      location.hash = `#/runs/${run.id}`;
    } catch (err) { button.disabled = false; alertIn(form, err); }
  });
  return form;
}

function parseValue(text) {
  try { return JSON.parse(text); } catch (err) { return text; }
}

function alertIn(el, err) {
  if (err instanceof AuthNeeded) { failed(document.getElementById("main"), err); return; }
  const old = el.querySelector(".error");
  if (old) old.remove();
  el.append(h("p", {class: "error", role: "alert"}, err.message));
}

// -- runs -------------------------------------------------------------------------------
async function runsView(view, params) {
  const query = new URLSearchParams();
  for (const key of ["flow", "state", "since", "until"]) if (params.get(key)) query.set(key, params.get(key));
  const pageQuery = () => { const q = new URLSearchParams(query); q.set("limit", "50"); return q; };
  // Both at once: the filter's flow list and the first page of runs.
  const [{flows}, firstPage] = await Promise.all([
    api("/api/flows"), api("/api/flow_runs?" + pageQuery())]);
  if (!view.live()) return;
  const flowSelect = h("select", {id: "f-flow", name: "flow"}, h("option", {value: ""}, "any flow"),
    flows.map((f) => h("option", {value: f.full_name, selected: params.get("flow") === f.full_name},
                       f.full_name)));
  const stateSelect = h("select", {id: "f-state", name: "state"}, h("option", {value: ""}, "any state"),
    STATES.map((s) => h("option", {value: s, selected: params.get("state") === s}, s)));
  const timeInput = (name) => h("input", {id: `f-${name}`, name, type: "datetime-local",
                                           value: localInput(params.get(name))});
  const sinceInput = timeInput("since");
  const untilInput = timeInput("until");
  const form = h("form", {class: "filters", role: "search"},
    h("label", {for: "f-flow"}, "Flow", flowSelect),
    h("label", {for: "f-state"}, "State", stateSelect),
    h("label", {for: "f-since"}, "Scheduled from", sinceInput),
    h("label", {for: "f-until"}, "until", untilInput),
    h("button", {type: "submit"}, "Filter"));
  const apply = (e) => {
    if (e) e.preventDefault();
    const q = new URLSearchParams();
    if (flowSelect.value) q.set("flow", flowSelect.value);
    if (stateSelect.value) q.set("state", stateSelect.value);
    if (sinceInput.value) q.set("since", new Date(sinceInput.value).toISOString());
    if (untilInput.value) q.set("until", new Date(untilInput.value).toISOString());
    location.hash = "#/runs" + (q.toString() ? "?" + q : "");
  };
  form.addEventListener("submit", apply);
  flowSelect.addEventListener("change", apply);
  stateSelect.addEventListener("change", apply);
  const body = h("tbody", {});
  const more = h("button", {type: "button", class: "quiet", hidden: true}, "Show more");
  const count = h("p", {class: "muted", "aria-live": "polite"});
  view.main.replaceChildren(
    h("h1", {}, "Runs"), form,
    h("div", {class: "table-wrap"}, h("table", {id: "runs"},
      h("thead", {}, h("tr", {}, ["Run", "Flow", "State", "Scheduled", "Started", "Duration",
                                  "Labels"].map((c) => h("th", {scope: "col"}, c)))), body)),
    count, more);
  let cursor = null;
  let paged = false;  // older pages shown: the list stays still until "Back to newest"
  const say = () => {
    const n = body.children.length;
    count.textContent = n ? `${n} runs shown` + (paged ? " (not refreshing while older runs are shown)" : "")
      : "No runs match.";
  };
  const fill = async (ready) => {
    if (paged) return;
    const page = ready || await api("/api/flow_runs?" + pageQuery());
    if (!view.live() || paged) return;
    body.replaceChildren(...page.flow_runs.map(runRow));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    say();
  };
  more.addEventListener("click", async () => {
    try {
      const q = pageQuery();
      q.set("cursor", cursor);
      const page = await api("/api/flow_runs?" + q);
      if (!view.live()) return;
      paged = true;
      body.append(...page.flow_runs.map(runRow));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      newest.hidden = false;
      say();
    } catch (err) { failed(view.main, err); }
  });
  const newest = h("button", {type: "button", class: "quiet", hidden: true, onclick: () => {
    paged = false;
    newest.hidden = true;
    fill(null).catch((err) => failed(view.main, err));
  }}, "Back to newest");
  more.after(newest);
  await fill(firstPage);
  document.body.dataset.rendered = "runs";
  performance.mark("runs-rendered");
  every(3000, view, () => fill(null));
}

function localInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function runRow(run) {
  return h("tr", {dataset: {run: run.id}},
    h("td", {}, h("a", {href: `#/runs/${run.id}`}, `${run.id} ${run.name}`)),
    h("td", {}, run.flow),
    h("td", {}, badge(run.state)),
    h("td", {}, when(run.scheduled_start_time)),
    h("td", {}, when(run.start_time)),
    h("td", {}, duration(run.start_time, run.end_time)),
    h("td", {class: "wrap"}, run.labels.join(", ")));
}

// -- one run ------------------------------------------------------------------------------
async function runView(view, id) {
  if (!/^[0-9]+$/.test(id)) throw new ApiError(404, `${id} is not a run id`);
  const head = h("div", {class: "flow-head"});
  const facts = h("dl", {class: "facts"});
  const explain = h("div", {});
  const gantt = h("div", {class: "gantt card", id: "gantt"});
  const states = h("ol", {id: "states"});
  const params = h("pre", {class: "json", id: "parameters"});
  const level = h("select", {id: "log-level", "aria-label": "Lowest log level"},
    LEVELS.map((l) => h("option", {value: l, selected: l === "INFO"}, l)));
  const taskFilter = h("select", {id: "log-task", "aria-label": "Lines of which task"},
    h("option", {value: ""}, "all tasks"));
  const logs = h("div", {class: "logs", id: "logs", role: "log", "aria-live": "polite", tabindex: "0"});
  view.main.replaceChildren(head, facts, explain,
    h("h2", {}, "Timeline"), gantt,
    h("div", {class: "grid2"},
      h("section", {}, h("h2", {}, "Parameters"), params),
      h("section", {}, h("h2", {}, "State history"), states)),
    h("h2", {}, "Logs ", level, " ", taskFilter), logs);

  let logCursor = "0";
  let finished = false;
  let taskCount = 0;
  let tailing = null;  // one tail at a time, or lines would be shown twice
  const restartLogs = () => {
    (tailing || Promise.resolve()).then(() => {
      logCursor = "0";
      logs.replaceChildren();
      return tailLogs();
    }).catch((err) => failed(view.main, err));
  };
  level.addEventListener("change", restartLogs);
  taskFilter.addEventListener("change", restartLogs);

  function tailLogs() {
    if (!tailing) tailing = tailOnce().finally(() => { tailing = null; });
    return tailing;
  }

  async function tailOnce() {
    const levelNow = level.value;
    const taskNow = taskFilter.value;
    const only = taskNow ? `&task=${encodeURIComponent(taskNow)}` : "";
    for (let pages = 0; pages < 20; pages++) {
      const page = await api(`/api/flow_runs/${id}/logs?cursor=${logCursor}&level=${levelNow}${only}`);
      if (!view.live() || levelNow !== level.value || taskNow !== taskFilter.value) return;
      const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
      for (const line of page.logs) {
        logs.append(h("div", {class: line.level_name},
          `${when(line.time)} ${line.level_name.padEnd(7)} ${line.task_slug ? line.task_slug + " | " : ""}${line.message}`));
      }
      if (atBottom) logs.scrollTop = logs.scrollHeight;
      logCursor = page.next_cursor;
      if (page.logs.length < 1000) return;
    }
  }

  async function refresh() {
    // One round trip's worth of waiting: the run, its parts and new log lines at once.
    const [run, tasks, history] = await Promise.all([
      api(`/api/flow_runs/${id}`), api(`/api/flow_runs/${id}/task_runs`),
      api(`/api/flow_runs/${id}/states`), tailLogs()]);
    if (!view.live()) return;
    drawHead(run);
    params.textContent = JSON.stringify(run.parameters, null, 2);
    states.replaceChildren(...history.states.map((s) => h("li", {},
      badge(s.state), " ", when(s.time), s.message ? ` — ${s.message}` : "")));
    taskCount = tasks.task_runs.length;
    const slugs = [...new Set(tasks.task_runs.map((t) => t.task_slug))];
    const listed = [...taskFilter.options].slice(1).map((o) => o.value);
    for (const slug of slugs) {
      if (!listed.includes(slug)) taskFilter.append(h("option", {value: slug}, slug));
    }
    drawGantt(gantt, run, tasks.task_runs);
    if (run.state === "Scheduled" || run.state === "Submitted") {
      const answer = await api(`/api/flow_runs/${id}/explain`);
      if (!view.live()) return;
      explain.replaceChildren(h("div", {class: "notice", id: "explain"},
        h("strong", {}, "Why has it not started? "),
        h("ul", {}, answer.reasons.map((r) => h("li", {}, r)))));
    } else {
      explain.replaceChildren();
    }
    document.body.dataset.rendered = "run";
    if (FINISHED.includes(run.state) && !finished) {
      finished = true;
      clearInterval(timer);
      every(10000, view, refresh);  // still look now and then (a rename, late logs)
    }
  }

  function drawHead(run) {
    const cancellable = !FINISHED.includes(run.state) && run.state !== "Cancelling";
    head.replaceChildren(
      h("h1", {}, `Run ${run.id} `, h("span", {class: "muted"}, run.name), " ", badge(run.state)),
      h("div", {class: "actions"}, cancellable ? h("button", {type: "button", class: "danger",
        dataset: {action: "cancel"}, onclick: async (e) => {
          e.target.disabled = true;
          try { await api(`/api/flow_runs/${run.id}/cancel`, "POST"); await refresh(); }
          catch (err) { e.target.disabled = false; alertIn(head, err); }
        }}, "Cancel run") : null));
    facts.replaceChildren(
      h("dt", {}, "Flow"), h("dd", {}, h("a", {href: `#/runs?flow=${encodeURIComponent(run.flow)}`}, run.flow), ` v${run.flow_version}`),
      h("dt", {}, "State"), h("dd", {id: "run-state"}, run.state, run.message ? `: ${run.message}` : ""),
      h("dt", {}, "Scheduled"), h("dd", {}, when(run.scheduled_start_time)),
      h("dt", {}, "Started"), h("dd", {}, when(run.start_time)),
      h("dt", {}, "Duration"), h("dd", {}, duration(run.start_time, run.end_time)),
      h("dt", {}, "Labels"), h("dd", {}, run.labels.join(", ") || "none"),
      h("dt", {}, "Agent"), h("dd", {}, run.agent || "—"));
  }

  await refresh();
  // Every second; every 5 s for a run of thousands of task runs (the whole list
  // comes each time, and a small machine should not spend its time on that).
  let skip = 0;
  every(1000, view, async () => {
    if (finished || skip-- > 0) return;
    await refresh();
    skip = taskCount > 1000 ? 4 : 0;
  });
}

function drawGantt(el, run, tasks) {
  const times = tasks.flatMap((t) => [t.start_time, t.end_time]).filter(Boolean)
    .map((t) => +new Date(t));
  if (run.start_time) times.push(+new Date(run.start_time));
  if (!times.length) {
    el.replaceChildren(h("p", {class: "muted"}, "No task has started yet."));
    return;
  }
  const t0 = Math.min(...times);
  const t1 = Math.max(...times, run.end_time ? +new Date(run.end_time) : Date.now());
  const span = Math.max(t1 - t0, 1);
  const bar = (t) => {
    const start = t.start_time ? +new Date(t.start_time) : null;
    const end = t.end_time ? +new Date(t.end_time) : (start ? Date.now() : null);
    const b = h("div", {class: "bar", title: `${t.task_slug}${t.map_index !== null ? `[${t.map_index}]` : ""}: ` +
      `${t.state}, ${t.start_time ? duration(t.start_time, t.end_time) : "not started"}`,
      dataset: {state: t.state}});
    b.style.background = `var(--${t.state}, var(--Pending))`;
    if (start !== null) {
      b.style.left = `${((start - t0) / span) * 100}%`;
      b.style.width = `${Math.max(((end - start) / span) * 100, 0.3)}%`;
    } else {
      b.style.left = "0"; b.style.width = "0";
    }
    return b;
  };
  const row = (label, ...bars) => h("div", {class: "row"},
    h("span", {class: "label", title: label}, label), h("div", {class: "track"}, bars));
  const groups = new Map();
  for (const t of tasks) {
    if (!groups.has(t.task_slug)) groups.set(t.task_slug, []);
    groups.get(t.task_slug).push(t);
  }
  const rows = [];
  for (const [slug, runs] of groups) {
    const children = runs.filter((t) => t.map_index !== null);
    const parent = runs.find((t) => t.map_index === null);
    if (!children.length) { rows.push(row(slug, bar(parent))); continue; }
    const starts = children.map((t) => t.start_time).filter(Boolean).sort();
    const ends = children.map((t) => t.end_time).filter(Boolean).sort();
    const failedChild = children.find((t) => !["Success", "Cached", "Skipped"].includes(t.state));
    const summary = {task_slug: slug, map_index: null,
                     state: parent ? parent.state : (failedChild ? failedChild.state : "Success"),
                     start_time: starts[0] || null, end_time: ends[ends.length - 1] || null};
    const shownChildren = children.slice(0, 200);
    rows.push(h("details", {dataset: {mapped: slug}},
      h("summary", {}, row(`▸ ${slug} (${children.length} mapped)`, bar(summary))),
      shownChildren.map((t) => row(`${slug}[${t.map_index}]`, bar(t))),
      children.length > shownChildren.length
        ? h("p", {class: "muted"}, `and ${children.length - shownChildren.length} more`) : null));
  }
  const opened = new Set([...el.querySelectorAll("details[open]")].map((d) => d.dataset.mapped));
  el.replaceChildren(...rows, h("div", {class: "axis"},
    h("span", {}, when(new Date(t0).toISOString())), h("span", {}, seconds(span / 1000))));
  for (const d of el.querySelectorAll("details")) if (opened.has(d.dataset.mapped)) d.open = true;
}

// -- agents and limits ------------------------------------------------------------------------
async function agentsView(view) {
  const draw = async () => {
    const [{agents}, {concurrency_limits: limits}] = await Promise.all([
      api("/api/agents"), api("/api/concurrency_limits")]);
    if (!view.live()) return;
    const runLinks = (ids) => ids.length ? ids.map((id, i) => [i ? ", " : "", h("a", {href: `#/runs/${id}`}, String(id))]) : "none";
    view.main.replaceChildren(
      h("h1", {}, "Agents"),
      agents.length ? h("div", {class: "table-wrap"}, h("table", {id: "agents"},
        h("thead", {}, h("tr", {}, ["Agent", "Labels", "Host", "Last seen", "Running"].map((c) => h("th", {scope: "col"}, c)))),
        h("tbody", {}, agents.map((a) => h("tr", {},
          h("td", {}, a.name, a.alive ? "" : h("span", {class: "muted"}, " (gone)")),
          h("td", {class: "wrap"}, a.labels.join(", ") || "none"),
          h("td", {}, `${a.host} (pid ${a.pid})`),
          h("td", {}, ago(a.last_seen)),
          h("td", {class: "wrap"}, runLinks(a.running)))))))
        : h("p", {class: "muted"}, "No agent has run yet. Start one with: orchestrator up"),
      h("h2", {}, "Concurrency limits"),
      limits.length ? h("div", {class: "table-wrap"}, h("table", {id: "limits"},
        h("thead", {}, h("tr", {}, ["Kind", "Name", "Limit", "Held by"].map((c) => h("th", {scope: "col"}, c)))),
        h("tbody", {}, limits.map((l) => h("tr", {},
          h("td", {}, l.kind === "tag" ? "task tag" : "run label"), h("td", {}, l.label),
          h("td", {}, `${l.holders.length} / ${l.limit}`), h("td", {class: "wrap"}, runLinks(l.holders)))))))
        : h("p", {class: "muted"}, "No limits. Set one with: orchestrator concurrency set LABEL N"));
    document.body.dataset.rendered = "agents";
  };
  await draw();
  every(5000, view, draw);
}

// -- the header ---------------------------------------------------------------------------------
async function health() {
  const el = document.getElementById("health");
  try {
    const res = await fetch("/api/health");
    const data = await res.json();
    const agent = data.agent && data.agent.alive ? "agent alive" : "no agent in this process";
    el.textContent = `v${data.version} · ${agent}`;
  } catch (err) {
    el.textContent = "server not answering";
  }
}

document.getElementById("forget").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  show();
});
window.addEventListener("hashchange", () => {
  show().then(() => document.getElementById("main").focus({preventScroll: true}));
});
health();
setInterval(health, 15000);
show();
