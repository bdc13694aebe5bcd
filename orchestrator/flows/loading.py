"""Loading flows from a Python file, with errors that say what is wrong.

Used by the CLI (run-file, register, register-ref) and by Script and Git
storage: the file is executed as a module and every `Flow` object at its top
level is collected. With `[compat] prefect_imports = true` the file's
`import prefect` statements get orchestrator's names (orchestrator.prefect1.imports).
"""

import difflib
import runpy
import sys
import traceback
from pathlib import Path

from ..core.flow import Flow
from ..exceptions import OrchestratorError
# Imported here, not when a file is loaded: it puts its fallback finder on
# sys.meta_path, which a run of a pickled flow needs for `import prefect` inside
# a task body (storage imports this module before it unpickles a flow).
from ..prefect1 import imports as prefect1_imports
from ..prefect1.imports import (UnsupportedPrefect1Name, flow_file_builtins,
                               prefect_imports_enabled)

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
    init_globals = None
    if prefect_imports_enabled():
        init_globals = {"__builtins__": flow_file_builtins()}
    try:
        namespace = runpy.run_path(str(path), init_globals=init_globals,
                                   run_name="__orchestrator_flow_file__")
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
        frames = traceback.extract_tb(exc.__traceback__)
        where = frames[-1]
        if isinstance(exc, UnsupportedPrefect1Name) or where.filename == _SWITCH_FILE:
            # Point at the flow file's line, not at the import switch's code.
            where = next((f for f in reversed(frames) if f.filename == str(path)), where)
        raise FlowFileError(
            f"Running {path} failed at {where.filename}:{where.lineno} with "
            f"{type(exc).__name__}: {exc}{_prefect_hint(exc, init_globals is not None)}"
        ) from None
    flows = flows_in(namespace)
    if not flows and _defines_prefect_flow(namespace):
        raise FlowFileError(
            f"{path} defines a Prefect 1 Flow (from the installed prefect package), not an "
            f"orchestrator Flow; {_PREFECT_FIX}"
        )
    if not flows:
        raise FlowFileError(
            f"{path} defines no Flow at its top level; create one with "
            "`with Flow(\"name\") as flow:`"
        )
    return flows


_SWITCH_FILE = prefect1_imports.__file__
_PREFECT_FIX = ("run `orchestrator migrate FILE --write` to change its imports, or set "
                "prefect_imports = true under [compat] in $ORCHESTRATOR_HOME/config.toml "
                "(see \"Coming from Prefect 1\" in the README)")


def _prefect_hint(exc, switch_on):
    """What to do when a flow file failed because `prefect` could not be imported."""
    missing = getattr(exc, "name", None) or ""
    if (isinstance(exc, ModuleNotFoundError) and not switch_on
            and (missing == "prefect" or missing.startswith("prefect."))):
        return f". This is a Prefect 1 flow file: {_PREFECT_FIX}"
    return ""


def _defines_prefect_flow(namespace):
    return any(type(value).__name__ == "Flow"
               and type(value).__module__.startswith("prefect.")
               for value in namespace.values())


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
