"""What the authoring layer needs from the layers above it, and gets without
importing them: `flow.run()` needs the engine, `flow.register()` the service
and the store, `flow.visualize()` the engine's drawing, `context.logger` and
`task.logger` the engine's run logging; storage that needs a secret (an access
token) reads it as the task library's `Secret` does (`read_secret`).

The package root (orchestrator/__init__.py) fills these in once, with
functions that import what they call on first use, so `import orchestrator`
stays cheap and `orchestrator.core` imports nothing above it. Every import
of a module of the package runs the root first, so the ports are always
filled before a flow can use them.
"""

_PORTS = {}
_NAMES = ("run_flow", "register_flow", "visualize", "get_logger", "task_logger",
          "read_secret")


def fill(**functions):
    """Set ports by name (the package root does this once)."""
    unknown = set(functions) - set(_NAMES)
    if unknown:
        raise TypeError(f"no such port: {', '.join(sorted(unknown))}; the ports are "
                        f"{', '.join(_NAMES)}")
    _PORTS.update(functions)


def call(name, *args, **kwargs):
    """Call port `name`; a port left empty is a bug of the package, said plainly."""
    try:
        function = _PORTS[name]
    except KeyError:
        raise RuntimeError(f"orchestrator.core.ports.{name} was never filled in: import "
                           "orchestrator (the package root fills the ports)") from None
    return function(*args, **kwargs)
