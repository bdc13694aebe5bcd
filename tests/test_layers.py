"""The package's layers point one way and its modules import in no circle,
read from the source (every import, also those inside functions)."""

import sys

from helpers import ROOT

# The reader of imports is the one scripts/measure_shape.py reports with.
sys.path.insert(0, str(ROOT / "scripts"))
from measure_shape import imports  # noqa: E402
from measure_shape import modules as package_modules  # noqa: E402


def modules():
    """{dotted name: path} of every module of the package (packages by their __init__)."""
    return package_modules(ROOT)


def graph():
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_the_core_imports_nothing_above_it():
    # Below the core: its errors, the version and the settings (config imports
    # only the errors).
    allowed = ("orchestrator.core.", "orchestrator.exceptions", "orchestrator.version",
               "orchestrator.config")
    upward = {f"{name} -> {target}" for name, targets in graph().items()
              if name.startswith("orchestrator.core.")
              for target in targets if not target.startswith(allowed)}
    assert not upward, sorted(upward)


def test_the_store_imports_nothing_that_runs_flows_or_serves_people():
    above = ("orchestrator.engine", "orchestrator.service", "orchestrator.daemons",
             "orchestrator.service.execution", "orchestrator.api", "orchestrator.cli",
             "orchestrator.cli.up", "orchestrator.client")
    upward = {f"{name} -> {target}" for name, targets in graph().items()
              if name.startswith("orchestrator.store.")
              for target in targets if target.startswith(above)}
    assert not upward, sorted(upward)


# The layers from the bottom up (README, "Layout"): a module imports only from its
# own layer and those below. engine and store are side by side: neither imports
# the other. Top-level re-exports (the public import paths) are not a layer: the
# package's own modules import the implementation, not them.
LAYERS = [
    ("foundation", ("exceptions", "version", "config", "exit_codes")),
    ("core", ("core",)),
    ("engine", ("engine",)),
    ("store", ("store",)),
    ("flows", ("flows", "prefect1")),
    ("service", ("service",)),
    ("daemons", ("daemons",)),
    ("edges", ("api", "cli", "client", "tasks")),
]
SIDE_BY_SIDE = {frozenset(("engine", "store"))}


def layer_of(name):
    """The layer of module `name` (orchestrator.x.y), None for the root's modules
    (the package itself, __main__ and the public re-exports)."""
    first = name.split(".")[1] if "." in name else ""
    for rank, (layer, parts) in enumerate(LAYERS):
        if first in parts:
            return rank, layer
    return None


def test_every_module_imports_only_its_own_layer_and_those_below():
    known = modules()
    top_level = {n for n in known if n.count(".") == 1 and n.split(".")[1] not in
                 {p for _, parts in LAYERS for p in parts}}
    against = []
    for name, targets in graph().items():
        mine = layer_of(name)
        if mine is None:
            continue
        for target in targets:
            if target in top_level or target == "orchestrator":
                against.append(f"{name} -> {target} (a public re-export; import the module)")
                continue
            theirs = layer_of(target)
            if theirs[0] > mine[0] or frozenset((mine[1], theirs[1])) in SIDE_BY_SIDE:
                against.append(f"{name} ({mine[1]}) -> {target} ({theirs[1]})")
    assert not against, sorted(against)


def test_every_subpackage_has_a_layer():
    packages = {n.split(".")[1] for n in modules() if n.count(".") >= 2}
    assert packages <= {p for _, parts in LAYERS for p in parts}, packages


def test_no_modules_import_each_other_in_a_circle():
    edges = graph()
    circles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                circles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not circles, [" -> ".join(c) for c in circles]


def test_the_checks_see_imports_inside_functions(tmp_path):
    # The reader must find a lazy import, or the tests above could not fail.
    known = {"orchestrator.core.x": tmp_path / "x.py", "orchestrator.engine.y": tmp_path / "y.py"}
    known["orchestrator.core.x"].write_text("def f():\n    from ..engine.y import g\n")
    assert imports("orchestrator.core.x", known["orchestrator.core.x"], known) == {
        "orchestrator.engine.y"}
