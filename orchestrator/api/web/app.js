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
  const artifacts = h("section", {id: "artifacts", hidden: true});
  let artifactsShown = "[]";  // redrawn only when they change: a reader keeps their place
  view.main.replaceChildren(head, facts, explain,
    h("h2", {}, "Timeline"), gantt, artifacts,
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
    const [run, tasks, history, published] = await Promise.all([
      api(`/api/flow_runs/${id}`), api(`/api/flow_runs/${id}/task_runs`),
      api(`/api/flow_runs/${id}/states`), api(`/api/flow_runs/${id}/artifacts`), tailLogs()]);
    if (!view.live()) return;
    drawHead(run);
    const seen = JSON.stringify(published.artifacts);
    if (seen !== artifactsShown) {
      artifactsShown = seen;
      artifacts.hidden = !published.artifacts.length;
      const shown = published.artifacts.slice(0, MAX_ARTIFACTS_SHOWN);
      const more = published.artifacts.length - shown.length;
      artifacts.replaceChildren(h("h2", {}, "Artifacts"), ...shown.map(artifactCard));
      if (more > 0) {
        artifacts.append(h("p", {class: "muted"},
          `and ${more} more: orchestrator show ${id} --json lists them all`));
      }
    }
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

// -- artifacts: markdown shown safely ----------------------------------------------------------
// A small subset of Markdown (headings, paragraphs, emphasis, code, lists, block
// quotes, links, tables) built as elements whose text is set as text: HTML in an
// artifact shows as written, never as markup, and only http, https and mailto
// URLs become links.
const SAFE_SCHEMES = ["http:", "https:", "mailto:"];
const MD_DEPTH = 8;
const MAX_ARTIFACTS_SHOWN = 200;  // of one run; a page of thousands would crawl  // nested quotes, lists and emphasis deeper than this stay text
const FENCE = /^ {0,3}(`{3,}|~{3,})/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^( *)([-*+]|\d{1,9}[.)])(?:[ \t]+|$)/;
const TABLE_RULE = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
const ESCAPABLE = "\\`*_{}[]()#+-.!|~<>";

function safeUrl(raw) {
  let url;
  try { url = new URL(raw.trim()); } catch (err) { return null; }  // relative, or not a URL
  return SAFE_SCHEMES.includes(url.protocol) ? url.href : null;
}

function outLink(href, ...children) {
  return h("a", {href, rel: "noopener noreferrer", target: "_blank"}, ...children);
}

function markdown(text) {
  return h("div", {class: "md"}, mdBlocks(text.replace(/\r\n?/g, "\n").split("\n"), 0));
}

function indentOf(line) { return line.length - line.trimStart().length; }

function isTableStart(lines, i) {
  return lines[i].includes("|") && i + 1 < lines.length && lines[i + 1].includes("|") &&
    TABLE_RULE.test(lines[i + 1]);
}

function startsBlock(lines, i) {
  const line = lines[i];
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) ||
    ITEM.test(line) || isTableStart(lines, i);
}

function mdBlocks(lines, depth) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (!line.trim()) { i++; continue; }
    if ((m = FENCE.exec(line))) {
      const close = new RegExp(`^ {0,3}${m[1][0] === "`" ? "`" : "~"}{${m[1].length},}[ \\t]*$`);
      const body = [];
      for (i++; i < lines.length && !close.test(lines[i]); i++) body.push(lines[i]);
      i++;
      out.push(h("pre", {}, h("code", {}, body.join("\n"))));
    } else if ((m = HEADING.exec(line))) {
      // Below the page's own h1 and h2: an artifact's "# Title" is an h3.
      const level = m[1].length;
      out.push(h(`h${Math.min(level + 2, 6)}`, {class: `md-h${level}`}, inline(m[2] || "", depth)));
      i++;
    } else if (RULE.test(line)) {
      out.push(h("hr", {}));
      i++;
    } else if (QUOTE.test(line)) {
      const body = [];
      for (; i < lines.length && QUOTE.test(lines[i]); i++) body.push(lines[i].replace(QUOTE, ""));
      out.push(h("blockquote", {}, depth < MD_DEPTH ? mdBlocks(body, depth + 1)
        : h("p", {}, body.join(" "))));
    } else if ((m = ITEM.exec(line))) {
      const [list, next] = mdList(lines, i, m, depth);
      out.push(list);
      i = next;
    } else if (isTableStart(lines, i)) {
      const aligns = tableCells(lines[i + 1]).map((c) => c.startsWith(":") && c.endsWith(":")
        ? "center" : c.endsWith(":") ? "right" : c.startsWith(":") ? "left" : "");
      const head = tableCells(line);
      const rows = [];
      for (i += 2; i < lines.length && lines[i].trim() && lines[i].includes("|"); i++) {
        rows.push(tableCells(lines[i]));
      }
      const cell = (tag, text, k) => {
        const el = h(tag, tag === "th" ? {scope: "col"} : {}, inline(text || "", depth));
        if (aligns[k]) el.style.textAlign = aligns[k];
        return el;
      };
      out.push(h("div", {class: "table-wrap"}, h("table", {},
        h("thead", {}, h("tr", {}, head.map((c, k) => cell("th", c, k)))),
        h("tbody", {}, rows.map((r) => h("tr", {}, head.map((_, k) => cell("td", r[k], k))))))));
    } else {
      const para = [line];
      for (i++; i < lines.length && lines[i].trim() && !startsBlock(lines, i); i++) para.push(lines[i]);
      out.push(h("p", {}, paragraph(para, depth)));
    }
  }
  return out;
}

function mdList(lines, i, first, depth) {
  const ordered = /\d/.test(first[2]);
  const start = ordered ? parseInt(first[2], 10) : 1;
  const list = h(ordered ? "ol" : "ul", start !== 1 ? {start} : {});
  const base = first[1].length;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[1].length !== base || /\d/.test(m[2]) !== ordered) break;
    const inner = m[0].length;  // where the item's text begins: its lines are indented so
    const body = [lines[i].slice(inner)];
    let loose = false;
    for (i++; i < lines.length; i++) {
      const next = lines[i];
      if (!next.trim()) {
        // A blank line goes on with the item only if the item goes on after it.
        if (i + 1 < lines.length && lines[i + 1].trim() && indentOf(lines[i + 1]) >= inner) {
          body.push("");
          loose = true;
          continue;
        }
        break;
      }
      if (indentOf(next) >= Math.min(inner, base + 2)) body.push(next.slice(Math.min(indentOf(next), inner)));
      else if (startsBlock(lines, i)) break;
      else body.push(next);  // a lazy line of the item's paragraph
    }
    let content = depth < MD_DEPTH ? mdBlocks(body, depth + 1) : [body.join(" ")];
    if (!loose) content = content.flatMap((el) => el.tagName === "P" ? [...el.childNodes] : [el]);
    list.append(h("li", {}, content));
  }
  return [list, i];
}

function tableCells(row) {
  let text = row.trim();
  if (text.startsWith("|")) text = text.slice(1);
  if (text.endsWith("|") && !text.endsWith("\\|")) text = text.slice(0, -1);
  return text.split(/(?<!\\)\|/).map((c) => c.trim());
}

function paragraph(lines, depth) {
  const out = [];
  lines.forEach((line, k) => {
    if (k) out.push(/( {2,}|\\)$/.test(lines[k - 1]) ? h("br", {}) : " ");
    for (const node of inline(line.trim().replace(/\\$/, ""), depth)) out.push(node);
  });
  return out;
}

function matchingCloses(text, open, close) {
  // For each `open` (unescaped) the index of its matching `close`, or -1: one pass,
  // so a text of a million unclosed brackets is not read a million times.
  const match = new Int32Array(text.length).fill(-1);
  const stack = [];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === "\\") i++;
    else if (text[i] === open) stack.push(i);
    else if (text[i] === close && stack.length) match[stack.pop()] = i;
  }
  return match;
}

class InlineText {
  // One line of inline Markdown with what its scans found, so each scan runs once.
  constructor(text) {
    this.text = text;
    this.brackets = null;
    this.parens = null;
    this.noCloser = new Set();  // delimiters with no closer after the last search
  }

  linkAt(i) {
    // [label](url "title") at i: the label may hold brackets, the URL parentheses.
    const text = this.text;
    if (!this.brackets) {
      this.brackets = matchingCloses(text, "[", "]");
      this.parens = matchingCloses(text, "(", ")");
    }
    const j = this.brackets[i];
    if (j < 0 || text[j + 1] !== "(") return null;
    const k = this.parens[j + 1];
    if (k < 0) return null;
    const target = text.slice(j + 2, k).trim();
    const bracketed = /^<([^>]*)>/.exec(target);
    return {label: text.slice(i + 1, j), url: bracketed ? bracketed[1] : target.split(/\s+/)[0],
            end: k + 1};
  }

  codeEnd(run, from) {
    if (this.noCloser.has(run)) return -1;
    const end = this.text.indexOf(run, from);
    if (end < 0) this.noCloser.add(run);
    return end;
  }

  emphasisEnd(i, c, size) {
    // Opens only before text, and `_` not inside a word (snake_case stays as written).
    // A closer does not depend on its opener: none after one opener, none after a later one.
    const text = this.text;
    const after = text[i + size];
    if (after === undefined || /\s/.test(after)) return -1;
    if (c === "_" && i > 0 && /[\p{L}\p{N}]/u.test(text[i - 1])) return -1;
    const delim = c.repeat(size);
    if (this.noCloser.has(delim)) return -1;
    for (let j = text.indexOf(delim, i + size + 1); j > 0; j = text.indexOf(delim, j + 1)) {
      if (/\s/.test(text[j - 1]) || text[j - 1] === "\\") continue;
      if (c === "_" && j + size < text.length && /[\p{L}\p{N}]/u.test(text[j + size])) continue;
      return j;
    }
    this.noCloser.add(delim);
    return -1;
  }
}

const AUTOLINK = /<([a-z][a-z0-9+.-]*:[^\s<>]*)>/iy;
const BARE_URL = /https?:\/\/[^\s<>]+/iy;

function inline(text, depth, inLink = false) {
  const out = [];
  const line = new InlineText(text);
  let buf = "";
  const flush = () => { if (buf) { out.push(document.createTextNode(buf)); buf = ""; } };
  const at = (pattern, i) => { pattern.lastIndex = i; return pattern.exec(text); };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    let m;
    if (c === "\\" && i + 1 < text.length && ESCAPABLE.includes(text[i + 1])) {
      buf += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "`") {
      let n = 1;
      while (text[i + n] === "`") n++;
      const run = "`".repeat(n);
      const end = line.codeEnd(run, i + n);
      if (end < 0) { buf += run; i += n; continue; }
      let code = text.slice(i + n, end);
      if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ")) code = code.slice(1, -1);
      flush();
      out.push(h("code", {}, code));
      i = end + n;
      continue;
    }
    if (!inLink && (c === "[" || (c === "!" && text[i + 1] === "["))) {
      const link = line.linkAt(c === "!" ? i + 1 : i);
      if (link) {
        const href = safeUrl(link.url);
        if (href) {
          flush();
          // An image is shown as a link to it: the page loads nothing from elsewhere.
          out.push(outLink(href, link.label ? inline(link.label, depth + 1, true) : link.url));
        } else {
          buf += text.slice(i, link.end);  // not a link we make: shown as written
        }
        i = link.end;
        continue;
      }
    }
    if (!inLink && c === "<" && (m = at(AUTOLINK, i))) {
      const href = safeUrl(m[1]);
      if (href) { flush(); out.push(outLink(href, m[1])); } else buf += m[0];
      i += m[0].length;
      continue;
    }
    if (!inLink && (c === "h" || c === "H") && !(i && /[\w/]/.test(text[i - 1])) &&
        (m = at(BARE_URL, i))) {
      const url = m[0].replace(/[.,;:!?'")\]]+$/, "");
      const href = safeUrl(url);
      if (href) { flush(); out.push(outLink(href, url)); } else buf += url;
      i += url.length;
      continue;
    }
    if ((c === "*" || c === "_" || c === "~") && depth < MD_DEPTH) {
      let n = 1;
      while (text[i + n] === c) n++;
      // *emphasis*, **strong**, ***both***, ~~struck~~; other runs are text.
      const close = (c === "~" ? n === 2 : n <= 3) ? line.emphasisEnd(i, c, n) : -1;
      if (close < 0) { buf += c.repeat(n); i += n; continue; }
      flush();
      const inner = inline(text.slice(i + n, close), depth + 1, inLink);
      out.push(c === "~" ? h("del", {}, inner) : n === 3 ? h("strong", {}, h("em", {}, inner))
        : h(n === 2 ? "strong" : "em", {}, inner));
      i = close + n;
      continue;
    }
    buf += c;
    i++;
  }
  flush();
  return out;
}

function artifactCard(artifact) {
  const task = artifact.task_slug === null ? "the flow"
    : artifact.task_slug + (artifact.map_index === null ? "" : `[${artifact.map_index}]`);
  let body;
  if (artifact.kind === "link") {
    const href = safeUrl(artifact.text);
    body = h("p", {class: "artifact-link"}, href ? outLink(href, artifact.text)
      : [h("code", {}, artifact.text), h("span", {class: "muted"}, " (not an http, https or mailto link)")]);
  } else {
    body = markdown(artifact.text);
  }
  return h("article", {class: "card artifact", dataset: {kind: artifact.kind, artifact: artifact.id}},
    h("p", {class: "artifact-head muted"},
      `${artifact.kind === "link" ? "Link" : "Report"} from ${task} · ${when(artifact.updated)}`),
    body);
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
