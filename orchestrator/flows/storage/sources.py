"""Storage that loads a flow from its source on the host that runs it, again at
every run, so edits take effect and nothing is pickled: `Script` (a .py file)
and `Module` (an importable module)."""

import functools
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path

from ...core.flow import Flow
from ..loading import FlowFileError, flows_in, load_flows_from_file
from .base import Storage, StorageError, _check_registration, _flow_file_being_loaded, _pick
from .prefect1 import _options_from_ref, _options_ref, _storage_options, _warn_ignored_options


def _bind_source_flow(storage, flow, project, version, what, optional=False):
    """Registration for storage that loads flows from source (Script, Module):
    check the flow can be found there, and remember its name."""
    _check_registration(flow, project, version, optional=optional)
    if storage.flow_name is not None and storage.flow_name != flow.name:
        raise StorageError(
            f"{what} is set to flow {storage.flow_name!r} but was given flow "
            f"{flow.name!r}; use one {type(storage).__name__} storage per flow")
    storage.get_flow(flow.name)
    storage.flow_name = flow.name


class Script(Storage):
    """A flow file executed again at every run: edits take effect, nothing is pickled."""

    def __init__(self, path, flow_name=None):
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise StorageError(
                f"Script storage path={path!r} is not a path; give the .py file that "
                "defines the flow"
            )
        self.path = os.path.abspath(os.fspath(path))
        self.flow_name = flow_name

    def __repr__(self):
        return f"Script(path={self.path!r}, flow_name={self.flow_name!r})"

    def add_flow(self, flow, project, version):
        _bind_source_flow(self, flow, project, version, f"Script storage for {self.path}")

    def get_flow(self, flow_name=None):
        name = flow_name if flow_name is not None else self.flow_name
        try:
            flows = load_flows_from_file(self.path)
        except FlowFileError as exc:
            raise StorageError(str(exc)) from None
        return _pick(flows, name, self.path,
                     "choose one with Script(path, flow_name=...)")

    def to_ref(self):
        return {"type": "Script", "path": self.path, "flow_name": self.flow_name}

    @classmethod
    def _from_ref(cls, ref):
        return cls(ref["path"], flow_name=ref.get("flow_name"))


_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
                          r"(:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)?$")
# What `__name__` is in a flow file that runs as a file, not as an imported module.
_FLOW_FILE_MODULE_NAMES = ("__main__", "__orchestrator_flow_file__")


def _importable_name_of(path):
    """The dotted name under which `import` finds the file `path` (its packages
    found by their __init__.py files), or None if it does not find that file."""
    path = Path(path).resolve()
    if path.suffix != ".py":
        return None
    parts = [] if path.stem == "__init__" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    name = ".".join(parts)
    if not parts or not _MODULE_NAME.match(name) or ":" in name:
        return None
    try:
        spec = importlib.util.find_spec(name)
    except Exception:  # a parent package that fails to import: not this name
        return None
    if spec is None or not spec.origin or Path(spec.origin).resolve() != path:
        return None
    return name


class Module(Storage):
    """A flow defined in an importable module, imported again at every run.

        Module("mypackage.flows")              # the flow at its top level
        Module("mypackage.flows:etl_flow")     # the object at that attribute
        Module("mypackage.flows:build_flow")   # a function there, called to make the flow
        Module(__name__)                       # in the flow's own module

    The arguments are Prefect 1's (`module`, and `labels`, `add_default_labels`,
    `secrets`, `result`, `stored_as_script`), and `flow_name` picks one flow
    of several. `Module(__name__)` in a flow file given to `orchestrator
    register FILE` (where `__name__` is not the module's name) uses the dotted
    name under which the file can be imported, found from its packages'
    __init__.py files; if there is none, registering says what to write.
    """

    def __init__(self, module, flow_name=None, **kwargs):
        options = _storage_options("Module", kwargs, ("module", "flow_name"))
        if module in _FLOW_FILE_MODULE_NAMES:
            module = self._name_of_running_file(module)
        if not isinstance(module, str) or not _MODULE_NAME.match(module):
            raise StorageError(
                f"Module storage module={module!r} is not a module name; give a dotted "
                "name such as 'mypackage.flows' (or 'mypackage.flows:flow' for one object)"
            )
        self.module = module
        self.flow_name = flow_name
        self._labels = options["labels"]
        self.secrets = options["secrets"]
        self.result = options["result"]
        self.add_default_labels = options["add_default_labels"]
        self.stored_as_script = options["stored_as_script"]
        self.flows = {}    # flow name -> module, as Prefect 1 kept them
        self._flows = {}

    @staticmethod
    def _name_of_running_file(run_name):
        """The importable name of the flow file running as `run_name`, or `run_name`
        itself (refused when the flow is loaded) if it has none."""
        if run_name == "__main__":
            path = getattr(sys.modules.get("__main__"), "__file__", None)
        else:
            path = _flow_file_being_loaded()
        return (path and _importable_name_of(path)) or run_name

    def __repr__(self):
        return f"Module(module={self.module!r}, flow_name={self.flow_name!r})"

    def add_flow(self, flow, project=None, version=None):
        """Check the module defines `flow`; returns the module's name."""
        _bind_source_flow(self, flow, project, version,
                          f"Module storage for {self.module!r}", optional=True)
        _warn_ignored_options(self, flow)
        self.flows[flow.name] = self.module
        self._flows[flow.name] = flow
        return self.module

    def _import(self, name):
        if name in _FLOW_FILE_MODULE_NAMES:
            raise StorageError(
                f"Module storage got module {name!r}, the name a flow file runs under "
                "(Module(__name__) in a file run or registered as a file), and no module "
                "name imports that file; write its dotted name, e.g. "
                "Module('mypackage.flows'), with the package importable (PYTHONPATH), "
                "or use Local(path='flows/etl.py', stored_as_script=True) for the file"
            )
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if name == missing or name.startswith(missing + "."):
                raise StorageError(
                    f"Module storage cannot import {name!r} ({exc}); install the "
                    "package that provides it, or add its directory to sys.path "
                    "(PYTHONPATH) of the process that runs the flow"
                ) from None
            raise StorageError(
                f"Importing module {name!r} failed: {exc}; install {missing!r} "
                "in the environment that runs the flow"
            ) from None
        except Exception as exc:
            raise StorageError(
                f"Importing module {name!r} failed with {type(exc).__name__}: "
                f"{exc}; fix the module so importing it only defines flows"
            ) from None

    def get_flow(self, flow_name=None):
        module_name, _, attribute = self.module.partition(":")
        module = self._import(module_name)
        name = flow_name if flow_name is not None else self.flow_name
        if attribute:
            return self._flow_at(module, attribute, name)
        flows = flows_in(vars(module))
        if not flows:
            raise StorageError(
                f"Module {module_name!r} ({getattr(module, '__file__', None)}) defines no "
                "Flow at its top level; define one with `with Flow(\"name\") as flow:`"
            )
        return _pick(flows, name, f"Module {module_name!r}",
                     "choose one with Module(module, flow_name=...)")

    def _flow_at(self, module, attribute, name):
        """The flow at `attribute` of `module` ('flow' or 'flows.etl'), as Prefect 1
        found it: a callable there is called to make the flow."""
        try:
            found = functools.reduce(getattr, attribute.split("."), module)
        except AttributeError:
            raise StorageError(
                f"Module storage {self.module!r}: module {module.__name__!r} has no "
                f"attribute {attribute!r}; fix the part after ':', or drop it to find "
                "the flow by name"
            ) from None
        if callable(found) and not isinstance(found, Flow):
            try:
                found = found()
            except Exception as exc:
                raise StorageError(
                    f"Module storage {self.module!r}: calling it to make the flow failed "
                    f"with {type(exc).__name__}: {exc}"
                ) from None
        if not isinstance(found, Flow):
            raise StorageError(
                f"Module storage {self.module!r} is a {type(found).__name__}, not a Flow; "
                "point it at a Flow, or at a function that returns one"
            )
        if name is not None and found.name != name:
            raise StorageError(
                f"Module storage {self.module!r} is flow {found.name!r}, not {name!r}; "
                "point it at that flow, or drop the part after ':' to find it by name"
            )
        return found

    def to_ref(self):
        ref = {"type": "Module", "module": self.module, "flow_name": self.flow_name}
        ref.update(_options_ref(self))
        return ref

    @classmethod
    def _from_ref(cls, ref):
        return cls(ref["module"], flow_name=ref.get("flow_name"), **_options_from_ref(ref))
