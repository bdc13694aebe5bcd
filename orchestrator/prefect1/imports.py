"""The Prefect 1 import switch: `import prefect` in flow files, served by orchestrator.

With `[compat] prefect_imports = true` in `$ORCHESTRATOR_HOME/config.toml` (or
`ORCHESTRATOR__COMPAT__PREFECT_IMPORTS=true`), a flow file that says

    from prefect import Flow, task
    from prefect.engine.signals import SKIP
    import prefect

gets orchestrator's objects, looked up in the name table
(orchestrator.prefect1.names). A name we do not provide fails where it is used
with "Prefect 1 name prefect.x.y is not supported by orchestrator; see ...":
an ImportError at `from prefect.x import y` and `import prefect.x`, an
AttributeError at `prefect.x.y` (so hasattr() and getattr(m, n, default) work).

It never hides a real `prefect` package from other code:

- The flow file itself (and the functions it defines, so imports inside task
  bodies too) gets its own `__import__`, which answers `prefect...` from the
  table without touching `sys.modules["prefect"]`. Libraries the flow file
  imports still get whatever `prefect` is installed.
- Everywhere else in a process that loads flows, `import prefect` falls back to
  the table only when no real `prefect` can be imported: our finder sits at the
  end of `sys.meta_path`, after every finder that could find a real one. This is
  what serves an import inside a task body of a pickled flow (Local storage: a
  function rebuilt from a pickle has the interpreter's own builtins).

The modules standing in for `prefect`, `prefect.engine.state`, ... are named
`orchestrator.prefect1_imports.prefect...`, so a flow pickled with one of them
loads in any process that has orchestrator, with or without the switch. That
name stays put wherever this module lives: `orchestrator/prefect1_imports.py`
is their parent package (a re-export of this module), and pickles name it.
"""

import builtins
import importlib
import importlib.machinery
import opcode
import sys
import threading
import types

from ..exceptions import ConfigError

__all__ = ["UnsupportedPrefect1Name", "prefect_imports_enabled", "flow_file_builtins",
           "install_finder", "alias_module"]

# Stand-in modules are submodules of orchestrator.prefect1_imports, a package
# with no directory: only the finder below can import under it. (The name is
# in pickled flows: it must not follow this module if it moves.)
_ALIAS_PARENT = "orchestrator.prefect1_imports"
_ALIAS_PREFIX = _ALIAS_PARENT + "."
_lock = threading.RLock()


class UnsupportedPrefect1Name(ImportError):
    """A Prefect 1 name orchestrator does not provide (or that Prefect 1 has not).

    An ImportError, so `from prefect.x import y` fails at the import statement
    with this message, and `try: import ... except ImportError` works as usual.
    """


def prefect_imports_enabled():
    """Whether `[compat] prefect_imports` is on for this home (raises ConfigError
    for a bad configuration, as every command does)."""
    from ..config import load_config

    return bool(load_config()["compat"]["prefect_imports"])


def _is_prefect(name):
    return name == "prefect" or name.startswith("prefect.")


def _unsupported(resolution):
    from .names import unsupported_message

    return UnsupportedPrefect1Name(unsupported_message(resolution), name=resolution.name)


def _import_target(prefect_name, target):
    """The orchestrator object `target` ("module.attribute") that `prefect_name` maps to."""
    module_name, _, attribute = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise UnsupportedPrefect1Name(
            f"Prefect 1 name {prefect_name} maps to {target}, which this installation of "
            f"orchestrator cannot import ({type(exc).__name__}: {exc}); install the extra "
            "it names, or update orchestrator", name=prefect_name) from None


def _module_getattr(prefect_module):
    """The `__getattr__` (PEP 562) of the stand-in for `prefect_module`: a name is
    looked up in the table when first used, then kept in the module."""
    def __getattr__(name):
        from .names import resolve

        prefect_name = f"{prefect_module}.{name}"
        resolution = resolve(prefect_name)
        if resolution.kind == "name":
            value = _import_target(prefect_name, resolution.target)
        elif resolution.kind == "module":
            value = alias_module(prefect_name)
        elif name.startswith("__") and resolution.kind == "unknown":
            # Dunder probes (copy, pickle, inspect, doctest) want the usual answer.
            raise AttributeError(f"module {prefect_module!r} has no attribute {name!r}")
        elif _called_by_from_import():
            # An ImportError, or Python would replace our message by its own.
            raise _unsupported(resolution)
        else:
            # `prefect.Client`, hasattr(), getattr(m, n, default): an AttributeError.
            raise AttributeError(_unsupported(resolution).msg)
        setattr(sys.modules[_ALIAS_PREFIX + prefect_module], name, value)
        return value

    return __getattr__


_IMPORT_FROM = opcode.opmap["IMPORT_FROM"]


def _called_by_from_import():
    """Whether the attribute being looked up is the `y` of a `from x import y`
    statement (the caller of our `__getattr__` is at an IMPORT_FROM instruction)."""
    frame = sys._getframe(2)
    code = frame.f_code.co_code
    return 0 <= frame.f_lasti < len(code) and code[frame.f_lasti] == _IMPORT_FROM


def _public_names(prefect_module):
    """The supported names directly under `prefect_module` (its `__all__`)."""
    from .names import MODULES, NAMES

    start = prefect_module + "."
    return sorted({name[len(start):] for name in (*NAMES, *MODULES)
                   if name.startswith(start) and "." not in name[len(start):]})


class _Prefect1Loader:
    """Loads a stand-in module: it is made (or found) by alias_module, nothing to run."""

    @staticmethod
    def create_module(spec):
        name = spec.name[len(_ALIAS_PREFIX):] if spec.name.startswith(_ALIAS_PREFIX) \
            else spec.name
        return alias_module(name)

    @staticmethod
    def exec_module(module):
        pass


def alias_module(prefect_module):
    """The stand-in for Prefect 1 module `prefect_module` (made once, with its parents).

    Raises UnsupportedPrefect1Name when Prefect 1 has no such module or we do not
    provide it.
    """
    from .names import resolve

    private = _ALIAS_PREFIX + prefect_module
    with _lock:
        module = sys.modules.get(private)
        if module is not None:
            return module
        resolution = resolve(prefect_module, as_module=True)
        if resolution.kind == "name":
            parent, _, last = prefect_module.rpartition(".")
            raise ModuleNotFoundError(
                f"No module named {prefect_module!r}: in Prefect 1 it is a name, not a "
                f"module; write `from {parent} import {last}`", name=prefect_module)
        if resolution.kind != "module":
            raise _unsupported(resolution)
        parent = None
        if "." in prefect_module:
            parent = alias_module(prefect_module.rpartition(".")[0])
        # A plain module (with a PEP 562 __getattr__): cloudpickle pickles those by
        # name, so a flow that holds one still pickles.
        module = types.ModuleType(private, f"Prefect 1's {prefect_module}, served by "
                                           "orchestrator (see orchestrator.prefect1.imports)")
        module.__getattr__ = _module_getattr(prefect_module)
        module.__prefect1_name__ = prefect_module
        module.__path__ = []
        module.__package__ = private
        module.__loader__ = _Prefect1Loader
        module.__spec__ = importlib.machinery.ModuleSpec(private, _Prefect1Loader,
                                                         is_package=True)
        module.__all__ = _public_names(prefect_module)
        sys.modules[private] = module
        if parent is not None:
            setattr(parent, prefect_module.rpartition(".")[2], module)
        return module


def _import_prefect(name, fromlist):
    """`__import__` for `prefect...` names, answered from the table."""
    module = alias_module(name)
    return module if fromlist else alias_module("prefect")


def flow_file_builtins():
    """A builtins mapping for a flow file's namespace whose `__import__` serves
    `prefect...` from the name table and leaves every other import alone.

    A copy of builtins: the flow file's functions keep it, so their imports at
    run time are served the same way.
    """
    def __import__(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and _is_prefect(name):
            return _import_prefect(name, fromlist)
        return builtins.__import__(name, globals, locals, fromlist, level)

    namespace = dict(builtins.__dict__)
    namespace["__import__"] = __import__
    return namespace


class _Prefect1Finder:
    """At the end of `sys.meta_path`: imports stand-in modules by their own names
    always, and `prefect...` only when the switch is on and nothing before it
    found a real `prefect`."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname.startswith(_ALIAS_PREFIX):
            prefect_name = fullname[len(_ALIAS_PREFIX):]
            if not _is_prefect(prefect_name):
                return None
        elif _is_prefect(fullname):
            try:
                if not prefect_imports_enabled():
                    return None
            except ConfigError:
                return None  # a finder is no place to report a bad config file
            prefect_name = fullname
        else:
            return None
        from .names import resolve

        resolution = resolve(prefect_name, as_module=True)
        if resolution.kind == "name":
            return None  # `import prefect.Flow`: no such module, as with Prefect 1
        if resolution.kind != "module":
            raise _unsupported(resolution)
        return importlib.machinery.ModuleSpec(fullname, _Prefect1Loader, is_package=True)

    @classmethod
    def invalidate_caches(cls):
        pass


def install_finder():
    """Put the finder at the end of `sys.meta_path` (once)."""
    with _lock:
        if _Prefect1Finder not in sys.meta_path:
            sys.meta_path.append(_Prefect1Finder)


install_finder()
