"""The `orchestrator` command. Commands parse, call the library, and print.

Exit codes scripts can rely on (`orchestrator.exit_codes`): 0 ok, 1 the run
failed (when waited on), 2 bad input (with a one-line message, and nothing
stored), 3 the store cannot be written now (its disk is full, or its
PostgreSQL server takes no more connections; the same command later works),
4 `execute` stopped because another attempt owns the run.
Values are checked by `orchestrator.core.validation`, as in the REST API: ids and
limits here as they are parsed, names, labels and parameters by `service`.
"""

import contextlib
import datetime as _dt
import json
import os
import re
import sys
import time

import click

from .. import exit_codes
from ..core import validation
from ..core.states import StateName
from ..version import __version__
from ..exceptions import NotFound, OrchestratorError, Unavailable

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT = exit_codes.OK, exit_codes.RUN_FAILED, \
    exit_codes.BAD_INPUT


class UserError(click.ClickException):
    """A bad input: printed as one line, exit code 2."""

    exit_code = EXIT_BAD_INPUT


class StoreUnavailableError(click.ClickException):
    """The store cannot be written now (its disk is full, or its server takes no
    connection): one line, exit code 3."""

    exit_code = exit_codes.STORE_UNAVAILABLE


# What to do when something is not found, said as commands of this CLI (the
# store and the use cases say only what is missing).
_ADVICE = {
    "project": lambda name: f"Create it with: orchestrator project create {name}",
    "flow": lambda name: ("list flows with: orchestrator flows" if str(name).isdigit()
                          else "Register it with: orchestrator register -p PROJECT FILE"),
    "flow run": lambda name: "list runs with: orchestrator runs",
    "secret": lambda name: f"Set it with: orchestrator secret set {name}",
    "artifact": lambda name: "a run's artifacts are listed by: orchestrator show RUN",
    "concurrency limit": lambda name: "list them with: orchestrator concurrency list",
}


def _advised(exc):
    """The message of domain error `exc`, with this CLI's advice when it is a NotFound."""
    if isinstance(exc, NotFound) and exc.kind in _ADVICE:
        return str(exc.advised(_ADVICE[exc.kind](exc.name)))
    return str(exc)


@contextlib.contextmanager
def _user_errors():
    """A domain error inside the block becomes a one-line message and exit code 2
    (3 when the store cannot be written now)."""
    try:
        yield
    except Unavailable as exc:
        raise StoreUnavailableError(str(exc)) from None
    except OrchestratorError as exc:
        raise UserError(_advised(exc)) from None


class _Commands(click.Group):
    """The command group: wherever a command meets a store that cannot be written
    (a full disk), the user gets one line and exit code 3, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Unavailable as exc:
            raise StoreUnavailableError(str(exc)) from None


class _Checked(click.ParamType):
    """An argument checked by a function of `orchestrator.core.validation` as click
    parses it. A bad value is a one-line error with exit code 2 (click's own
    BadParameter would print the usage too)."""

    def __init__(self, name, check):
        self.name = name
        self.check = check

    def convert(self, value, param, ctx):
        with _user_errors():
            return self.check(value)


def _whole_number(text):
    """Command-line text as an int when it is one (validation says what else is
    wrong with it); at most 50 digits, so that int() has no long work to do."""
    if isinstance(text, str) and re.fullmatch(r"\s*-?[0-9]{1,50}\s*", text):
        return int(text)
    return text


RUN_ID = _Checked("run_id", validation.check_id)
LABEL = _Checked("label", lambda text: validation.check_name(text, "label", what="Label"))
LIMIT = _Checked("limit", lambda text: validation.check_concurrency_limit(_whole_number(text)))


def _parse_params(pairs, params_file):
    values = {}
    if params_file is not None:
        data = _read_params_file(params_file)
        if not isinstance(data, dict):
            raise UserError(
                f"--params-file {params_file.name}: holds a {type(data).__name__}, "
                "not a JSON object of parameter names to values"
            )
        values.update(data)
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise UserError(f"--param {pair!r} should look like name=value (e.g. day=2024-05-01)")
        try:
            values[name] = json.loads(text)
        except RecursionError:
            raise UserError(f"--param {name}: its value nests lists or objects too deeply; "
                            f"flatten it (at most {validation.MAX_DEPTH} levels)") from None
        except ValueError:
            values[name] = text  # a bare word is a string
    return values


def _read_params_file(params_file):
    """The JSON in a --params-file (opened as bytes: we say when it is not UTF-8,
    rather than fail decoding it)."""
    raw = params_file.read()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark some editors write is fine
    except UnicodeDecodeError as exc:
        raise UserError(
            f"--params-file {params_file.name}: not UTF-8 text (byte 0x{raw[exc.start]:02x} "
            f"at offset {exc.start}); save it as UTF-8 JSON") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"--params-file {params_file.name}: not JSON ({exc.msg} at line "
            f"{exc.lineno}); it should hold an object like {{\"day\": \"2024-05-01\"}}"
        ) from None
    except RecursionError:
        raise UserError(f"--params-file {params_file.name}: nests lists or objects too "
                        f"deeply; flatten it (at most {validation.MAX_DEPTH} levels)"
                        ) from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise UserError(f"--params-file {params_file.name}: not JSON we can read ({exc}); "
                        "write large numbers as strings") from None


def _load_config():
    """The configuration, checked before a command starts work with it: a bad
    setting is a one-line error, before a run is claimed or a service starts."""
    from ..config import load_config

    with _user_errors():
        return load_config()


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="orchestrator")
def main():
    """Run Prefect 1 style flows on this machine."""


@main.command("run-file")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--name", "flow_name", help="Which flow, when the file defines several.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A parameter value (JSON, or a bare string). Repeatable.")
@click.option("--params-file", type=click.File("rb"), help="A JSON object of parameters.")
@click.option("--executor", type=click.Choice(["local", "threads", "processes"]),
              default=None, help="Override the flow's executor.")
@click.option("--json", "as_json", is_flag=True, help="Print task states as JSON.")
def run_file(path, flow_name, params, params_file, executor, as_json):
    """Run a flow defined in PATH in this process and print its task states.

    Exit code 0 when the flow succeeds, 1 when it fails, 2 for bad input.
    """
    from ..engine.executors import LocalDaskExecutor, LocalExecutor
    from ..flows.loading import load_flows_from_file, pick_flow

    values = _parse_params(params, params_file)
    with _user_errors():
        flow = pick_flow(load_flows_from_file(path), flow_name, path)
        chosen = {"local": LocalExecutor, "threads": lambda: LocalDaskExecutor("threads"),
                  "processes": lambda: LocalDaskExecutor("processes")}.get(executor)
        state = flow.run(parameters=values, executor=chosen() if chosen else None)
    rows = []
    for t in flow.sorted_tasks():
        s = state.result.get(t) if isinstance(state.result, dict) else None
        if s is None:
            continue
        rows.append({"task": flow.slugs[t], "state": type(s).__name__,
                     "message": s.message or ""})
    if as_json:
        click.echo(json.dumps({"flow": flow.name, "state": type(state).__name__,
                               "message": state.message, "tasks": rows}, indent=2))
    else:
        width = max([len(r["task"]) for r in rows] + [4])
        click.echo(f"{'TASK':<{width}}  {'STATE':<13}  MESSAGE")
        for r in rows:
            click.echo(f"{r['task']:<{width}}  {r['state']:<13}  {r['message']}")
        click.echo(f"\nFlow {flow.name!r}: {type(state).__name__}: {state.message}")
    sys.exit(EXIT_OK if state.is_successful() else EXIT_RUN_FAILED)


# -- the store ------------------------------------------------------------------
# Connections a command's process may hold on PostgreSQL, one per thread that
# uses the store at once: `up` its API's threads, its agent and its services;
# a run process ONE, which its threads take in turn. Others: db.DEFAULT_CONNECTIONS.
CONNECTIONS = {"up": 4 + 2, "server": 4, "agent": 1, "scheduler": 1, "execute": 1}
# A run process waits this long for the database to take its connection before
# it gives its run back (exit code 3; the agent schedules it again).
EXECUTE_CONNECT_WAIT = 60.0


def _open_store(command=None, wait=0.0):
    """The store, with the connections `command` needs; while the database takes
    no connection, tried again for up to `wait` seconds (said once on stderr)."""
    from .. import service

    deadline = time.monotonic() + wait
    said = False
    while True:
        try:
            with _user_errors():
                return service.open_store(connections=CONNECTIONS.get(command))
        except StoreUnavailableError as exc:
            if time.monotonic() >= deadline:
                raise
            if not said:
                click.echo(f"orchestrator {command}: {exc.message} Waiting up to "
                           f"{wait:.0f} s.", err=True)
                said = True
            time.sleep(1.0)


def _when(epoch):
    if epoch is None:
        return ""
    return _dt.datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(start, end):
    if start is None:
        return ""
    seconds = (end or time.time()) - start
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}m"


def _table(rows, columns):
    """Print dict rows as aligned columns: [(header, key), ...]."""
    if not rows:
        return
    cells = [[str(r.get(key, "") if r.get(key) is not None else "") for _, key in columns]
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (h, _) in enumerate(columns)]
    click.echo("  ".join(h.ljust(w) for (h, _), w in zip(columns, widths)).rstrip())
    for c in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())


def _echo_json(value):
    click.echo(json.dumps(value, indent=2, default=str))


@main.group()
def project():
    """Projects group flows."""


@project.command("create")
@click.argument("name")
def project_create(name):
    """Create project NAME (nothing happens if it exists)."""
    from .. import service

    store = _open_store()
    with _user_errors():
        _, created = service.create_project(store, name)
    click.echo(f"Created project {name!r}." if created else f"Project {name!r} already exists.")


@main.command()
@click.option("--project", "-p", "project_name", required=True, help="Project to register in.")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--name", "flow_name", help="Register only this flow of the file.")
@click.option("--label", "labels", multiple=True, help="An extra label. Repeatable.")
def register(project_name, path, flow_name, labels):
    """Register the flows defined in PATH (a Python file)."""
    from .. import service
    from ..flows.loading import load_flows_from_file, pick_flow

    store = _open_store()
    with _user_errors():
        service.get_project(store, project_name)
        flows = load_flows_from_file(path)
        chosen = [pick_flow(flows, flow_name, path)] if flow_name else list(flows.values())
        for flow in chosen:
            record, new = service.register_flow(store, flow, project_name, labels=list(labels))
            what = "registered" if new else "unchanged, kept"
            click.echo(f"Flow {record['project']}/{record['name']}: {what} version "
                       f"{record['version']} (id {record['id']}, labels "
                       f"{', '.join(record['labels']) or 'none'})")


@main.command("register-ref", hidden=True)
def register_ref():
    """Register the flow a JSON request on stdin names (the API's child process).

    Reads {"project", "storage", "flow_name", "labels"}; writes one JSON line to
    stdout: {"flow": record, "new": bool} (exit 0) or {"error": {"kind", "message"}}
    (exit 2). What the flow's code prints goes to stderr.
    """
    from .. import service
    from ..exceptions import Conflict

    try:
        request = json.loads(sys.stdin.read())
    except ValueError:
        request = None
    if not isinstance(request, dict) or not {"project", "storage"} <= set(request):
        raise UserError('register-ref reads a JSON object with "project" and "storage" on '
                        "stdin; it is the API's helper, not meant to be run by hand")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            store = _open_store()
            record, new = service.register_from_ref(
                store, request["project"], request["storage"],
                flow_name=request.get("flow_name"), labels=request.get("labels"))
    except (OrchestratorError, UserError) as exc:
        kind = ("NotFound" if isinstance(exc, NotFound)
                else "Conflict" if isinstance(exc, Conflict) else "Error")
        message = exc.format_message() if isinstance(exc, UserError) else _advised(exc)
        click.echo(json.dumps({"error": {"kind": kind, "message": message}}))
        sys.exit(EXIT_BAD_INPUT)
    click.echo(json.dumps({"flow": record, "new": new}))


@main.command("run")
@click.argument("flow_ref", metavar="FLOW")
@click.option("--project", "-p", "project_name", help="The flow's project, if ambiguous.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A parameter value (JSON, or a bare string). Repeatable.")
@click.option("--params-file", type=click.File("rb"), help="A JSON object of parameters.")
@click.option("--name", "run_name", help="The run's name (default: generated).")
@click.option("--label", "labels", multiple=True, help="Run labels (default: the flow's).")
@click.option("--idempotency-key", help="Creating a run twice with one key gives one run.")
@click.option("--local", is_flag=True, help="Execute the run here and now.")
@click.option("--watch", is_flag=True, help="Wait for the run, printing its logs.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
def run_flow(flow_ref, project_name, params, params_file, run_name, labels,
             idempotency_key, local, watch, as_json):
    """Create a run of registered flow FLOW (name, PROJECT/NAME or id)."""
    from .. import service

    values = _parse_params(params, params_file)
    if local:
        _load_config()
    store = _open_store()
    options = dict(project=project_name, parameters=values, name=run_name,
                   labels=list(labels) if labels else None, idempotency_key=idempotency_key)
    attempt, claimer = None, f"orchestrator run --local (pid {os.getpid()})"
    with _user_errors():
        if local:
            # Claimed for this process as it is created: no agent can take it first.
            run, created, attempt = service.create_flow_run_here(store, flow_ref, claimer,
                                                                 **options)
        else:
            run, created = service.create_flow_run(store, flow_ref, report=True, **options)
    if as_json and not (local or watch):
        _echo_json(_run_json(run))
        return
    if created:
        click.echo(f"Created flow run {run['id']} ({run['name']}) of "
                   f"{run['project']}/{run['flow_name']} v{run['flow_version']}.", err=as_json)
    else:
        click.echo(f"Flow run {run['id']} ({run['name']}) of {run['project']}/"
                   f"{run['flow_name']} already exists for idempotency key "
                   f"{idempotency_key!r}; it is {run['state']}. Nothing new was created.",
                   err=as_json)
    if local and not created:  # an earlier run of this key: here, if still Scheduled
        with _user_errors():
            attempt = service.claim_run_here(store, run["id"], claimer)
    if local and attempt is None:  # not this command's to execute (now): wait for it
        watch, local = True, False
    if local:
        state = _execute(store, run["id"], attempt=attempt)
        run = service.get_flow_run(store, run["id"])
        if as_json:
            _echo_json(_run_json(run))
        else:
            click.echo(f"Flow run {run['id']} ({run['name']}): {state}: {run['message'] or ''}")
        sys.exit(EXIT_OK if state == StateName.SUCCESS else EXIT_RUN_FAILED)
    if watch:
        sys.exit(_watch(store, run["id"], as_json))
    click.echo("It is Scheduled: a running `orchestrator up` or `orchestrator agent` picks "
               "it up. To run it here instead: orchestrator execute " + str(run["id"]))


def _execute(store, run_id, agent=None, attempt=None, config=None):
    from .. import service
    from ..exceptions import AttemptLost
    from ..service.execution import execute_flow_run

    with _user_errors():
        try:
            return execute_flow_run(store, run_id, service.load_flow, agent=agent,
                                    attempt=attempt, config=config)
        except AttemptLost as exc:  # another attempt owns the run: this one stops
            click.echo(f"orchestrator execute: {exc}", err=True)
            sys.exit(exit_codes.TAKEN_OVER)


@main.command(hidden=True)
@click.argument("padding", required=False)
def zygote(padding):
    """Serve an agent's warm starts (the agent starts it; not meant to be run by hand).

    Reads requests on stdin and forks a run process for each; PADDING keeps room
    in its command line for its children's `execute RUN`."""
    from .. import service
    from ..daemons.zygote import serve

    sys.exit(serve(_run_command, prepare=lambda: service.open_store_ahead(
        connections=CONNECTIONS["execute"])))


def _run_command(argv):
    """`orchestrator ARGV...` in a warm-start process's child. The agent's own
    request, `execute RUN --agent NAME --attempt N`, goes straight to the
    command's function (parsing it again was a fifth of a warm run's CPU; the
    function needs no click context), with the errors handled as the command
    line handles them; anything else through the command line."""
    if len(argv) != 6 or argv[0] != "execute" or argv[2:5:2] != ["--agent", "--attempt"]:
        return main(args=argv, prog_name="orchestrator")
    try:
        try:
            execute.callback(run_id=RUN_ID.convert(argv[1], None, None),
                             agent_name=argv[3], attempt=int(argv[5]))
        except Unavailable as exc:
            raise StoreUnavailableError(str(exc)) from None
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("Aborted!", err=True)
        sys.exit(1)


@main.command(hidden=False)
@click.argument("run_id", type=RUN_ID)
@click.option("--agent", "agent_name", hidden=True,
              help="The agent that claimed the run (set by agents).")
@click.option("--attempt", type=click.IntRange(1), hidden=True,
              help="The attempt the agent's claim minted (set by agents).")
def execute(run_id, agent_name, attempt):
    """Execute flow run RUN_ID in this process (what an agent runs for each run).

    Exit code 4: another attempt of the run owns it now, and this process stopped.
    """
    config = _load_config()
    store = _open_store("execute", wait=EXECUTE_CONNECT_WAIT)
    state = _execute(store, run_id, agent=agent_name, attempt=attempt, config=config)
    click.echo(f"Flow run {run_id}: {state}")
    waiting_or_done = (StateName.SUCCESS, StateName.SCHEDULED, StateName.PAUSED)
    sys.exit(EXIT_OK if state in waiting_or_done else EXIT_RUN_FAILED)


def _watch(store, run_id, as_json):
    from .. import service
    from ..core.states import TERMINAL_RUN_STATES

    after, waited, hinted = 0, 0.0, False
    try:
        while True:
            for row in service.logs(store, run_id, after_id=after):
                after = row["id"]
                _print_log(row, as_json)
            run = service.get_flow_run(store, run_id)
            if run["state"] in TERMINAL_RUN_STATES:
                for row in service.logs(store, run_id, after_id=after):
                    _print_log(row, as_json)
                click.echo(f"Flow run {run_id} ({run['name']}): {run['state']}: "
                           f"{run['message'] or ''}", err=as_json)
                ok = run["state"] in (StateName.SUCCESS, StateName.SKIPPED)
                return EXIT_OK if ok else EXIT_RUN_FAILED
            if run["state"] == StateName.SCHEDULED and waited > 5 and not hinted:
                click.echo("Still Scheduled: is an agent running? Start one with "
                           "`orchestrator up`, or run it here with "
                           f"`orchestrator execute {run_id}`.", err=True)
                hinted = True
            time.sleep(0.25)
            waited += 0.25
    except KeyboardInterrupt:
        click.echo(f"Stopped watching; run {run_id} goes on.", err=True)
        return 130


_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def _print_log(row, as_json):
    if as_json:
        from ..service.documents import log_document

        # The API's document; `level` stays the level's name here and `task` the
        # task's slug, as this command has always printed them.
        document = log_document(row)
        click.echo(json.dumps(dict(document, level=document["level_name"],
                                   task=row["task_slug"])))
        return
    click.echo(f"{_when(row['time'])} {_level_name(row['level']):<7} {row['logger']} | "
               f"{row['message']}")


def _level_name(level):
    for name, number in sorted(_LEVELS.items(), key=lambda kv: -kv[1]):
        if level >= number:
            return name
    return str(level)


def _run_json(run):
    """A run as `--json` prints it: the REST API's document (orchestrator.service.documents)."""
    from ..service.documents import run_document

    return run_document(run)


@main.command()
@click.option("--project", "-p", "project_name", help="Only this project's flows.")
@click.option("--all", "include_archived", is_flag=True, help="Include archived versions.")
@click.option("--json", "as_json", is_flag=True)
def flows(project_name, include_archived, as_json):
    """List registered flows."""
    from .. import service

    store = _open_store()
    with _user_errors():
        if project_name:
            service.get_project(store, project_name)
        rows = service.list_flows(store, project=project_name,
                                  include_archived=include_archived)
    if as_json:
        _echo_json([{k: r[k] for k in ("id", "project", "name", "version", "labels",
                                        "parameters", "archived")} for r in rows])
        return
    for r in rows:
        r["params"] = ", ".join(p["name"] for p in r["parameters"])
        r["labels_text"] = ", ".join(r["labels"])
        r["registered"] = _when(r["created"])
        r["status"] = "archived" if r["archived"] else ""
    _table(rows, [("ID", "id"), ("PROJECT", "project"), ("FLOW", "name"),
                  ("VERSION", "version"), ("PARAMETERS", "params"),
                  ("LABELS", "labels_text"), ("REGISTERED", "registered"), ("", "status")])
    if not rows:
        click.echo("No flows registered. Register some with: orchestrator register -p PROJECT FILE")


@main.command()
@click.option("--flow", "flow_ref", help="Only runs of this flow (name, PROJECT/NAME or id).")
@click.option("--state", "states", multiple=True, help="Only runs in this state. Repeatable.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 100000))
@click.option("--json", "as_json", is_flag=True)
def runs(flow_ref, states, limit, as_json):
    """List flow runs, newest first."""
    from .. import service

    store = _open_store()
    with _user_errors():
        rows = service.list_flow_runs(store, flow=flow_ref or None, states=states, limit=limit)
    if as_json:
        _echo_json([_run_json(r) for r in rows])
        return
    for r in rows:
        r["flow_text"] = f"{r['project']}/{r['flow_name']}"
        r["scheduled"] = _when(r["scheduled_start_time"])
        r["started"] = _when(r["start_time"])
        r["took"] = _duration(r["start_time"], r["end_time"])
    _table(rows, [("ID", "id"), ("FLOW", "flow_text"), ("NAME", "name"), ("STATE", "state"),
                  ("SCHEDULED", "scheduled"), ("STARTED", "started"), ("DURATION", "took")])
    if not rows:
        click.echo("No flow runs.")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def agents(as_json):
    """List the agents: name, unique id, host, whether alive, and the runs they hold."""
    from .. import service
    from ..service.documents import agent_document

    found = service.agents(_open_store())
    rows = [agent for agent, _, _ in found]
    docs = [agent_document(*one) for one in found]
    if as_json:
        _echo_json({"agents": docs})
        return
    for row, doc in zip(rows, docs):
        doc["seen"] = _when(row["last_seen"])
        doc["state"] = "alive" if doc["alive"] else "silent"
        doc["runs"] = ", ".join(map(str, doc["running"]))
    _table(docs, [("NAME", "name"), ("ID", "id"), ("HOST", "host"), ("PID", "pid"),
                  ("STATE", "state"), ("LAST SEEN", "seen"), ("RUNS", "runs")])
    if not docs:
        click.echo("No agents.")


@main.command()
@click.argument("run_id", type=RUN_ID)
@click.option("--json", "as_json", is_flag=True)
def show(run_id, as_json):
    """Show a flow run with its task runs and the artifacts its tasks published."""
    from .. import service

    store = _open_store()
    with _user_errors():
        run = service.get_flow_run(store, run_id)
    task_runs = service.task_runs(store, run["id"])
    artifacts = service.artifacts(store, run["id"])
    if as_json:
        from ..service.documents import artifact_document, task_run_document

        # The API's documents (a task run also under `task`, as this command has
        # always printed it).
        data = _run_json(run)
        data["task_runs"] = [dict(task_run_document(t), task=t["task_slug"]) for t in task_runs]
        data["artifacts"] = [artifact_document(a) for a in artifacts]
        _echo_json(data)
        return
    click.echo(f"Flow run {run['id']} ({run['name']}) of {run['project']}/{run['flow_name']} "
               f"v{run['flow_version']}")
    click.echo(f"  state:      {run['state']}{': ' + run['message'] if run['message'] else ''}")
    click.echo(f"  parameters: {json.dumps(run['parameters'])}")
    click.echo(f"  labels:     {', '.join(run['labels']) or 'none'}")
    click.echo(f"  scheduled:  {_when(run['scheduled_start_time'])}")
    click.echo(f"  started:    {_when(run['start_time'])}   "
               f"duration: {_duration(run['start_time'], run['end_time'])}")
    if run["attempt"] > 1 or run["restarts"]:
        restarts = run["restarts"]
        click.echo(f"  attempt:    {run['attempt']} (restarted {restarts} "
                   f"time{'' if restarts == 1 else 's'})")
    click.echo("")
    for t in task_runs:
        t["task"] = t["task_slug"] + ("" if t["map_index"] < 0 else f"[{t['map_index']}]")
        t["took"] = _duration(t["start_time"], t["end_time"])
        t["runs"] = t["run_count"] or ""
        t["msg"] = (t["message"] or "")[:80]
    _table(task_runs, [("TASK", "task"), ("STATE", "state"), ("DURATION", "took"),
                       ("RUNS", "runs"), ("MESSAGE", "msg")])
    if artifacts:
        click.echo("")
        for a in artifacts:
            # One line each: a link whole, a markdown report by its first line
            # (--json has the full text).
            lines = a["text"].strip().splitlines() or [""]
            a["task"] = (a["task_slug"] or "(flow)") + (
                "" if a["map_index"] is None else f"[{a['map_index']}]")
            a["shown"] = lines[0][:100] + (" ..." if len(lines) > 1 or len(lines[0]) > 100
                                           else "")
            a["made"] = _when(a["created"])
        _table(artifacts, [("ARTIFACT", "kind"), ("TASK", "task"), ("CREATED", "made"),
                           ("TEXT", "shown")])


@main.command()
@click.argument("run_id", type=RUN_ID)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the run ends.")
@click.option("--level", type=click.Choice(list(_LEVELS), case_sensitive=False),
              default="DEBUG", help="Only lines at this level or above.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def logs(run_id, follow, level, as_json):
    """Print the log of a flow run."""
    from .. import service
    from ..core.states import TERMINAL_RUN_STATES

    store = _open_store()
    with _user_errors():
        run = service.get_flow_run(store, run_id)
    after, min_level = 0, _LEVELS[level.upper()]
    while True:
        rows = service.logs(store, run["id"], after_id=after, min_level=min_level)
        for row in rows:
            _print_log(row, as_json)
            after = row["id"]
        if len(rows) == 1000:
            continue
        if not follow or service.get_flow_run(store, run["id"])["state"] in TERMINAL_RUN_STATES:
            if follow:
                for row in service.logs(store, run["id"], after_id=after, min_level=min_level):
                    _print_log(row, as_json)
            return
        try:
            time.sleep(0.25)
        except KeyboardInterrupt:
            return


@main.command("config")
@click.option("--json", "as_json", is_flag=True)
def show_config(as_json):
    """Print the effective configuration and where each value came from."""
    from ..config import home_dir, load_config

    with _user_errors():
        config = load_config()
    rows = [{"setting": f"{section}.{key}", "value": json.dumps(value), "source": source}
            for section, key, value, source in config.items_with_sources()]
    if as_json:
        _echo_json({"home": str(home_dir()), "settings": rows})
        return
    click.echo(f"ORCHESTRATOR_HOME: {home_dir()}")
    _table(rows, [("SETTING", "setting"), ("VALUE", "value"), ("SOURCE", "source")])


@main.group()
def secret():
    """Secrets for flows: values are stored, never printed."""


@secret.command("set")
@click.argument("name")
def secret_set(name):
    """Set secret NAME from standard input (or a prompt), never from the command line."""
    if sys.stdin.isatty():
        value = click.prompt(f"Value for {name}", hide_input=True, confirmation_prompt=True)
    else:
        value = sys.stdin.read()
        if value.endswith("\n"):
            value = value[:-1]
    if not value:
        raise UserError(f"Secret {name!r} would be empty; pipe the value on standard input")
    from .. import service

    store = _open_store()
    with _user_errors():
        service.set_secret(store, name, value)
    click.echo(f"Secret {name!r} set.")


@secret.command("list")
def secret_list():
    """List secret names (never values)."""
    from .. import service

    for name in service.secret_names(_open_store()):
        click.echo(name)


@secret.command("delete")
@click.argument("name")
def secret_delete(name):
    """Delete secret NAME."""
    from .. import service

    with _user_errors():
        service.delete_secret(_open_store(), name)
    click.echo(f"Secret {name!r} deleted.")


@main.command()
@click.argument("run_id", type=RUN_ID)
@click.option("--wait", "wait_seconds", type=click.FloatRange(0, 86400), default=None,
              help="Wait up to this many seconds for the run to end Cancelled.")
def cancel(run_id, wait_seconds):
    """Cancel a flow run: at once if it has not started, else its process is stopped."""
    from .. import service

    store = _open_store()
    with _user_errors():
        run = service.get_flow_run(store, run_id)
        state = service.cancel_flow_run(store, run["id"])
    deadline = time.monotonic() + (wait_seconds or 0)
    while state == StateName.CANCELLING and time.monotonic() < deadline:
        time.sleep(0.2)
        state = service.get_flow_run(store, run["id"])["state"]
    if state == StateName.CANCELLING:
        click.echo(f"Flow run {run['id']} is Cancelling: its agent stops its process "
                   "(SIGTERM, then SIGKILL after a grace period), or, run by hand, the "
                   "process stops itself at its next heartbeat.")
    else:
        click.echo(f"Flow run {run['id']} is {state}.")


@main.command()
@click.argument("run_id", type=RUN_ID)
@click.option("--json", "as_json", is_flag=True)
def explain(run_id, as_json):
    """Say why a flow run has not started (or what it is doing)."""
    from .. import service

    store = _open_store()
    with _user_errors():
        reasons = service.explain_flow_run(store, run_id)
        run = service.get_flow_run(store, run_id)
    if as_json:
        _echo_json({"id": run["id"], "state": run["state"], "reasons": reasons})
        return
    click.echo(f"Flow run {run['id']} ({run['name']}) is {run['state']}.")
    for reason in reasons:
        click.echo(f"- {reason}")


@main.group()
def concurrency():
    """Limits on how many runs with a label run at once."""


# Unknown options are arguments here, so that `set x -1` is a limit said to be
# out of range, not "no such option '-1'".
@concurrency.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("label", type=LABEL)
@click.argument("limit", type=LIMIT)
@click.option("--tag", is_flag=True,
              help="LABEL is a task tag: at most LIMIT tasks with it run at once, across runs.")
def concurrency_set(label, limit, tag):
    """At most LIMIT runs with LABEL at once (0 holds them all)."""
    from .. import service

    with _user_errors():
        service.set_concurrency_limit(_open_store(), label, limit,
                                      kind="tag" if tag else "label")
    if tag:
        click.echo(f"At most {limit} tasks tagged {label!r} run at once.")
    else:
        click.echo(f"At most {limit} runs with label {label!r} run at once.")


@concurrency.command("list")
@click.option("--json", "as_json", is_flag=True)
def concurrency_list(as_json):
    """List the label and task-tag limits and the runs holding them."""
    from .. import service

    store = _open_store()
    rows = [dict(limit, running=", ".join(map(str, limit["holders"])))
            for limit in service.concurrency_limits(store)]
    if as_json:
        _echo_json(rows)
        return
    _table(rows, [("KIND", "kind"), ("LABEL", "label"), ("LIMIT", "limit"),
                  ("RUNNING", "running")])
    if not rows:
        click.echo("No concurrency limits.")


@concurrency.command("delete")
@click.argument("label")
def concurrency_delete(label):
    """Remove the limit of LABEL."""
    from .. import service

    with _user_errors():
        service.delete_concurrency_limit(_open_store(), label)
    click.echo(f"Removed the limit of label {label!r}.")


def _listen_options(command):
    """--host, --port and --expose, for the commands that serve the API."""
    command = click.option("--expose", is_flag=True,
                           help="Listen on every interface (0.0.0.0).")(command)
    command = click.option("--port", type=click.IntRange(0, 65535), default=4200,
                           show_default=True,
                           help="Port to listen on (0: any free port).")(command)
    return click.option("--host", default="127.0.0.1", show_default=True,
                        help="Address to listen on.")(command)


def _stop_on_signals(*wakes):
    """An Event set by SIGINT or SIGTERM, which also call each of `wakes`.
    (A handler only sets flags; the loops do the work of stopping.)"""
    import signal
    import threading

    stopping = threading.Event()

    def request_stop(signum, frame):
        stopping.set()
        for wake in wakes:
            wake()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    return stopping


def _agent_options(command):
    """The options of the commands that run an agent (`up` and `agent`)."""
    for option in reversed((
            click.option("--label", "labels", multiple=True,
                         help="A label of runs to take. Repeatable."),
            click.option("--no-hostname-label", is_flag=True,
                         help="Do not add this host's name to the agent's labels."),
            click.option("--strict-labels", is_flag=True,
                         help="Take a run without labels only when the agent has none "
                              "(Prefect 1's rule); by default any agent takes it."),
            click.option("--limit", type=click.IntRange(1, 10000), default=None,
                         help="At most this many runs at once."),
            click.option("--poll-interval", type=click.FloatRange(0.05, 3600), default=0.25,
                         show_default=True, help="Seconds between looks for new runs."),
            click.option("--grace", type=click.FloatRange(0, 86400), default=30.0,
                         show_default=True,
                         help="On SIGINT/SIGTERM, seconds to wait for running flow runs."))):
        command = option(command)
    return command


@main.command()
@_listen_options
@_agent_options
def up(host, port, expose, labels, no_hostname_label, strict_labels, limit, poll_interval,
       grace):
    """Run everything in one process: API, scheduler, agent and reaper."""
    from .up import Up

    if expose:
        host = "0.0.0.0"
    store = _open_store("up")
    try:
        service = Up(store, host=host, port=port, labels=list(labels),
                     hostname_label=not no_hostname_label, limit=limit,
                     poll_interval=poll_interval, grace=grace, strict_labels=strict_labels)
    except (OrchestratorError, OSError) as exc:
        raise UserError(f"Cannot start: {exc}") from None
    service.serve()


@main.command()
@_listen_options
def server(host, port, expose):
    """Serve the REST API alone (agents and the scheduler run elsewhere)."""
    from .up import ApiServer, safe_database_url

    if expose:
        host = "0.0.0.0"
    store = _open_store("server")
    try:
        api = ApiServer(store, host=host, port=port)
    except (OrchestratorError, OSError) as exc:
        raise UserError(f"Cannot start: {exc}") from None
    stopping = _stop_on_signals(api.close)
    api.publish()  # before the address is announced, so clients find it
    click.echo(f"orchestrator server: database {safe_database_url(store.url)}\n"
               f"{api.address_line()}\n"
               f"  web:     {api.url}/\n"
               f"  token:   {api.token_path} (print it with: orchestrator token)\n"
               "Stop with Ctrl-C.")
    api.run(stopping)
    click.echo("orchestrator server: stopped.")


@main.command("scheduler")
def scheduler_command():
    """Create scheduled runs and fail runs whose process died (no API, no agent)."""
    from .up import Housekeeping, safe_database_url

    store = _open_store("scheduler")
    with _user_errors():
        housekeeping = Housekeeping(store)
    stopping = _stop_on_signals()
    click.echo(f"orchestrator scheduler: database {safe_database_url(store.url)}; one "
               "process per database leads the scheduler and the reaper, others stand by "
               "and take over when it stops. Stop with Ctrl-C.")
    housekeeping.reap()
    housekeeping.run(stopping)
    click.echo("orchestrator scheduler: stopped.")


@main.command()
@click.option("--rotate", is_flag=True, help="Replace the token (restart running servers).")
def token(rotate):
    """Print the REST API's token (made at the first server start)."""
    from ..config import api_token, rotate_api_token

    with _user_errors():
        value = rotate_api_token() if rotate else api_token(create=True)
    click.echo(value)
    if rotate:
        click.echo("A new token is in place; restart `orchestrator up` or `orchestrator "
                   "server` for it to take effect.", err=True)


@main.command()
@_agent_options
@click.option("--name", "agent_name", help="The agent's name (default: host-pid).")
def agent(labels, no_hostname_label, strict_labels, limit, poll_interval, grace, agent_name):
    """Execute scheduled runs whose labels this agent has, each in its own process."""
    from ..daemons.agent import Agent

    config = _load_config()["services"]
    store = _open_store("agent")
    worker = Agent(store, name=agent_name, labels=list(labels),
                   hostname_label=not no_hostname_label, limit=limit,
                   poll_interval=poll_interval, cancel_grace=config["cancel_grace"],
                   strict_labels=strict_labels, heartbeat_timeout=config["heartbeat_timeout"])
    with _user_errors():
        worker.register()  # a --name another running agent holds is refused here
    stop = _stop_on_signals(worker.wake.set)
    fitting = None if limit else worker.fitting_limit()  # PostgreSQL: what it has room for
    shown = limit or (f"{fitting} (what the database has connections for)" if fitting
                      else "none")
    click.echo(f"Agent {worker.name} started: labels {', '.join(worker.labels) or 'none'}"
               f"{' (strict)' if strict_labels else ''}; limit {shown}.", err=True)
    worker.run(stop)
    left = worker.stop(grace)
    if left:
        click.echo(f"Agent {worker.name} stopped; runs still going on: "
                   f"{', '.join(map(str, left))}.", err=True)
    else:
        click.echo(f"Agent {worker.name} stopped.", err=True)


# -- schedules: orchestrator schedule pause|resume FLOW ---------------------------------
@main.group("schedule")
def schedule_group():
    """Pause or resume a flow's schedule."""


def _set_schedule_active(flow_ref, project_name, active):
    from .. import service

    store = _open_store()
    try:
        with _user_errors():
            flow, deleted = service.set_schedule_active(store, flow_ref, active,
                                                        project=project_name)
            name = f"{flow['project']}/{flow['name']}"
    finally:
        store.close()
    return name, deleted


@schedule_group.command("pause")
@click.argument("flow_ref", metavar="FLOW")
@click.option("--project", "-p", "project_name", help="The flow's project (when the name "
              "is in several).")
def schedule_pause(flow_ref, project_name):
    """Stop scheduling FLOW and delete its future auto-scheduled runs."""
    name, deleted = _set_schedule_active(flow_ref, project_name, False)
    click.echo(f"Paused the schedule of {name}; deleted {deleted} future "
               f"run{'' if deleted == 1 else 's'}. Resume it with: orchestrator schedule "
               f"resume {name}")


@schedule_group.command("resume")
@click.argument("flow_ref", metavar="FLOW")
@click.option("--project", "-p", "project_name", help="The flow's project (when the name "
              "is in several).")
def schedule_resume(flow_ref, project_name):
    """Schedule FLOW again; the scheduler creates its next runs at its next tick."""
    name, _ = _set_schedule_active(flow_ref, project_name, True)
    click.echo(f"Resumed the schedule of {name}; the scheduler (orchestrator up) creates its "
               "next runs within seconds.")


@main.command("migrate")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--write", is_flag=True, help="Rewrite the files (default: print a diff).")
def migrate(paths, write):
    """Change Prefect 1 imports in PATH (.py files, or folders of them) to orchestrator's.

    Prints a unified diff (stdout) and a report (stderr) of every Prefect 1 name
    it could not map, with file:line and what to do; --write rewrites the files.
    A file with a name it cannot map is left as it is. Exit code 0 when every
    name was mapped, 1 when some were not, 2 for bad input (a missing path, a
    file that is not Python).
    """
    from ..prefect1.migrate import MigrationInputError, migrate_paths

    try:
        report = migrate_paths(paths, write=write)
    except MigrationInputError as exc:
        raise UserError(str(exc)) from None
    if not write:
        click.echo(report.diff(), nl=False)
    click.echo(report.summary(), err=True)
    sys.exit(report.exit_code)
