"""The `orchestrator` command. Commands parse, call the library, and print."""

import json
import sys

import click

from . import __version__
from .exceptions import OrchestratorError

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class UserError(click.ClickException):
    """A bad input: printed as one line, exit code 2."""

    exit_code = EXIT_BAD_INPUT


def _parse_params(pairs, params_file):
    values = {}
    if params_file is not None:
        try:
            data = json.loads(params_file.read())
        except json.JSONDecodeError as exc:
            raise UserError(
                f"--params-file {params_file.name}: not JSON ({exc.msg} at line "
                f"{exc.lineno}); it should hold an object like {{\"day\": \"2024-05-01\"}}"
            ) from None
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
        except json.JSONDecodeError:
            values[name] = text  # a bare word is a string
    return values


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="orchestrator")
def main():
    """Run Prefect 1 style flows on this machine."""


@main.command("run-file")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--name", "flow_name", help="Which flow, when the file defines several.")
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE",
              help="A parameter value (JSON, or a bare string). Repeatable.")
@click.option("--params-file", type=click.File("r"), help="A JSON object of parameters.")
@click.option("--executor", type=click.Choice(["local", "threads", "processes"]),
              default=None, help="Override the flow's executor.")
@click.option("--json", "as_json", is_flag=True, help="Print task states as JSON.")
def run_file(path, flow_name, params, params_file, executor, as_json):
    """Run a flow defined in PATH in this process and print its task states.

    Exit code 0 when the flow succeeds, 1 when it fails, 2 for bad input.
    """
    from .engine.executors import LocalDaskExecutor, LocalExecutor
    from .flow_files import load_flows_from_file, pick_flow

    values = _parse_params(params, params_file)
    try:
        flow = pick_flow(load_flows_from_file(path), flow_name, path)
        chosen = {"local": LocalExecutor, "threads": lambda: LocalDaskExecutor("threads"),
                  "processes": lambda: LocalDaskExecutor("processes")}.get(executor)
        state = flow.run(parameters=values, executor=chosen() if chosen else None)
    except OrchestratorError as exc:
        raise UserError(str(exc)) from None
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
