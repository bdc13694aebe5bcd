"""The package's layers point one way and its modules import in no circle,
read from the source (every import, also those inside functions)."""

import ast

from conftest import ROOT

PACKAGE = ROOT / "orchestrator"


def modules():
    """{dotted name: path} of every module of the package (packages by their __init__)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name, path, known):
    """The package's modules that module `name` imports (not its packages' __init__
    facades, which only re-export)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets.add(module)
            targets.update(f"{module}.{alias.name}" for alias in node.names)
    packages = {m for m, p in known.items() if p.name == "__init__.py"}
    return {t for t in targets if t in known and t not in packages and t != name}


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
