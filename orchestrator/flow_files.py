"""Loading flows from a Python file, with errors that say what is wrong.

Used by the CLI now and by Script storage later: the file is executed as a
module and every `Flow` object at its top level is collected.
"""

import difflib
import runpy
import sys
import traceback
from pathlib import Path

from .core.flow import Flow
from .exceptions import OrchestratorError

__all__ = ["FlowFileError", "flows_in", "load_flows_from_file", "pick_flow"]


class FlowFileError(OrchestratorError):
    """A flow file is missing, does not run, or has no such flow."""


def load_flows_from_file(path):
    """Execute `path` and return {flow name: Flow} for flows defined in it."""
    path = Path(path)
    if not path.is_file():
        raise FlowFileError(
            f"Flow file {str(path)!r} does not exist; give the path to a .py file "
            "that defines a Flow"
        )
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        # Modules beside the flow file can be imported, now and when tasks run.
        sys.path.insert(0, folder)
    try:
        namespace = runpy.run_path(str(path), run_name="__orchestrator_flow_file__")
    except SyntaxError as exc:
        where = exc.filename or str(path)
        raise FlowFileError(
            f"{where}:{exc.lineno}: syntax error: {exc.msg}. Fix the file and try again."
        ) from None
    except SystemExit as exc:
        raise FlowFileError(
            f"{path} called sys.exit({exc.code!r}) while being loaded; keep that under "
            "`if __name__ == \"__main__\":` so loading the file only defines flows"
        ) from None
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise FlowFileError(
            f"Running {path} failed at {where.filename}:{where.lineno} with "
            f"{type(exc).__name__}: {exc}"
        ) from None
    flows = flows_in(namespace)
    if not flows:
        raise FlowFileError(
            f"{path} defines no Flow at its top level; create one with "
            "`with Flow(\"name\") as flow:`"
        )
    return flows


def pick_flow(flows, name, path):
    """The flow called `name` (or the only one) among `flows`."""
    if name is None:
        if len(flows) == 1:
            return next(iter(flows.values()))
        raise FlowFileError(
            f"{path} defines {len(flows)} flows ({', '.join(sorted(flows))}); "
            "choose one with --name"
        )
    if name in flows:
        return flows[name]
    close = difflib.get_close_matches(name, flows, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise FlowFileError(
        f"{path} has no flow named {name!r}; it defines: {', '.join(sorted(flows))}.{hint}"
    )


def flows_in(namespace):
    """The Flows defined at the top level of a module's namespace, by name (the
    first of each name)."""
    flows = {}
    for value in namespace.values():
        if isinstance(value, Flow):
            flows.setdefault(value.name, value)
    return flows
