#!/usr/bin/env python3
"""The shape of the package, measured from its source: how often the edges
(CLI, REST API, client, task library) call the store directly, imports that
point up the layers, import circles, string literals of state names, the most
complex functions and the module sizes.

    python scripts/measure_shape.py                   # this checkout
    python scripts/measure_shape.py --root /tmp/old   # another checkout, e.g. a
                                                      # `git worktree` of an older commit
    python scripts/measure_shape.py --json shape.json

It reads both the current layout and the one before `service/`, `flows/`,
`daemons/`, `cli/` and `prefect1/` existed, so two commits can be compared.
Complexity needs `radon` (pip install radon); without it that part is left out.
"""

import argparse
import ast
import json
import pathlib
import sys

# Layers, lowest first; a module's layer is the first prefix it matches (after
# "orchestrator."). The old layout's names are listed beside the new ones.
LAYERS = [
    ("foundation", ("exceptions", "version", "config", "exit_codes")),
    ("core", ("core.", "schedules", "labels", "validation")),
    ("engine", ("engine.", "artifacts")),
    ("store", ("store.",)),
    ("flows", ("flows.", "storage", "flow_files", "refs", "run_configs",
               "prefect1.", "prefect1_names", "prefect1_imports", "migrate")),
    ("service", ("service", "backend", "explain", "documents")),
    ("daemons", ("daemons.", "services.")),
    ("edges", ("api.", "api", "cli", "up", "client", "tasks.")),
]
SIBLINGS = {frozenset(("engine", "store"))}  # neither may import the other
EDGES = ("cli", "api.", "client", "up", "tasks.")
STATE_NAMES = {
    "Pending", "Scheduled", "Retrying", "Paused", "Resume", "Queued", "Submitted", "Running",
    "Cancelling", "Finished", "Success", "Cached", "Mapped", "Skipped", "Failed",
    "TriggerFailed", "TimedOut", "ValidationFailed", "Looped", "Cancelled"}


def modules(root):
    """{dotted name: path} of the package's modules (packages by their __init__)."""
    found = {}
    for path in sorted((root / "orchestrator").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def is_reexport(path):
    """True when a module holds only its docstring, imports, `__all__` (and
    `__path__`, which makes a re-export a package for stand-in modules)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] in (
                ["__all__"], ["__path__"]):
            continue
        return False
    return True


def layer(name, known):
    short = name[len("orchestrator."):]
    if "." not in short and name in known and is_reexport(known[name]):
        return "public"
    for rank, (layer_name, prefixes) in enumerate(LAYERS):
        if any(short == p.rstrip(".") or short.startswith(p if p.endswith(".") else p + ".")
               for p in prefixes):
            return layer_name
    return "public" if name in ("orchestrator", "orchestrator.__main__") else "other"


def imports(name, path, known):
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
            subs = {f"{module}.{alias.name}" for alias in node.names}
            targets.update(subs)
            if not subs <= set(known):  # names from the module itself, not its submodules
                targets.add(module)
    packages = {m for m, p in known.items() if p.name == "__init__.py" and is_reexport(p)}
    return {t for t in targets if t in known and t not in packages and t != name}


def upward_imports(graph, known):
    order = {n: i for i, (n, _) in enumerate(LAYERS)}
    order.update(public=len(LAYERS), other=-1)
    found = []
    for name, targets in graph.items():
        mine = layer(name, known)
        if mine == "public":
            continue
        for target in targets:
            theirs = layer(target, known)
            if order[theirs] > order[mine] or frozenset((mine, theirs)) in SIBLINGS:
                found.append(f"{name} -> {target}")
    return sorted(found)


def circles(graph):
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, groups, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def store_calls(known):
    """Calls `<something named store>.method(...)` and store imports in the edges."""
    calls, via_service = {}, {}
    for name, path in known.items():
        short = name[len("orchestrator."):]
        if not short.startswith(EDGES) and short not in ("cli", "up", "client"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            owner_name = owner.id if isinstance(owner, ast.Name) else (
                owner.attr if isinstance(owner, ast.Attribute) else
                (owner.func.id if isinstance(owner, ast.Call)
                 and isinstance(owner.func, ast.Name) else ""))
            if owner_name in ("store", "_store", "_open_store") and node.func.attr != "close":
                calls[name] = calls.get(name, 0) + 1
            elif owner_name == "service":
                via_service[name] = via_service.get(name, 0) + 1
    return calls, via_service


def state_literals(known):
    per_file = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        # Not counted: docstrings, `__all__` (names of the state classes) and the
        # members of an enum, which is where the vocabulary is meant to be written.
        skipped = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)
                   and isinstance(n.value, ast.Constant)}
        for node in ast.walk(tree):
            enum = isinstance(node, ast.ClassDef) and any(
                "Enum" in ast.unparse(base) for base in node.bases)
            exported = isinstance(node, ast.Assign) and any(
                getattr(t, "id", None) == "__all__" for t in node.targets)
            if enum or exported:
                skipped.update(id(n) for n in ast.walk(node))
        count = sum(1 for n in ast.walk(tree) if isinstance(n, ast.Constant)
                    and n.value in STATE_NAMES and id(n) not in skipped)
        if count:
            per_file[name] = count
    return per_file


def complexity(root, top):
    try:
        from radon.complexity import cc_visit
    except ImportError:
        return None
    found = []
    for path in (root / "orchestrator").rglob("*.py"):
        for block in cc_visit(path.read_text()):
            owner = getattr(block, "classname", None)
            label = f"{owner}.{block.name}" if owner else block.name
            found.append((block.complexity, f"{path.relative_to(root)}:{label}"))
    return sorted(found, reverse=True)[:top]


def sizes(known):
    top_level = {n: p for n, p in known.items() if n.count(".") == 1 and p.name != "__init__.py"}
    lines = {n: len(p.read_text().splitlines()) for n, p in known.items()}
    reexports = sorted(n for n, p in top_level.items() if is_reexport(p))
    implementation = sorted(n for n in top_level if n not in reexports)
    return {
        "top_level_modules": len(top_level),
        "top_level_reexports": reexports,
        "top_level_implementation": implementation,
        "top_level_implementation_lines": sum(lines[n] for n in implementation),
        "largest_modules": sorted(((lines[n], n) for n in known), reverse=True)[:8],
        "total_lines": sum(lines.values()),
    }


def measure(root):
    known = modules(root)
    graph = {name: imports(name, path, known) for name, path in known.items()}
    calls, via_service = store_calls(known)
    literals = state_literals(known)
    return {
        "store_calls_from_edges": calls, "service_calls_from_edges": via_service,
        "upward_imports": upward_imports(graph, known), "circles": circles(graph),
        "state_literals": literals, "complexity": complexity(root, 8), "sizes": sizes(known),
    }


def report(result):
    calls = result["store_calls_from_edges"]
    print(f"direct store calls from the edges: {sum(calls.values())}  "
          + ", ".join(f"{k}={v}" for k, v in sorted(calls.items())))
    via = result["service_calls_from_edges"]
    print(f"service calls from the edges:      {sum(via.values())}  "
          + ", ".join(f"{k}={v}" for k, v in sorted(via.items())))
    print(f"upward imports:                    {len(result['upward_imports'])}")
    for line in result["upward_imports"]:
        print(f"    {line}")
    print(f"import circles:                    {len(result['circles'])}")
    for group in result["circles"]:
        print(f"    {' <-> '.join(group)}")
    literals = result["state_literals"]
    print(f"state-name literals:               {sum(literals.values())} in {len(literals)} files")
    for name, count in sorted(literals.items(), key=lambda kv: -kv[1]):
        print(f"    {count:4d}  {name}")
    if result["complexity"] is not None:
        print("most complex functions (cyclomatic):")
        for score, where in result["complexity"]:
            print(f"    {score:4d}  {where}")
    s = result["sizes"]
    print(f"top-level modules: {s['top_level_modules']} ({len(s['top_level_reexports'])} "
          f"re-exports, {len(s['top_level_implementation'])} implementation with "
          f"{s['top_level_implementation_lines']} lines: "
          f"{', '.join(n.split('.', 1)[1] for n in s['top_level_implementation'])})")
    print("largest modules: " + ", ".join(f"{n} {c}" for c, n in s["largest_modules"]))
    print(f"lines in the package: {s['total_lines']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parent.parent,
                        help="a checkout of the project (default: this one)")
    parser.add_argument("--json", type=pathlib.Path, help="also write the figures here")
    args = parser.parse_args()
    if not (args.root / "orchestrator" / "__init__.py").is_file():
        parser.error(f"--root {args.root} holds no orchestrator package; give a checkout "
                     "of the project")
    result = measure(args.root)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
