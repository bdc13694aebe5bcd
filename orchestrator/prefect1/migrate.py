"""`orchestrator migrate`: rewrite a Prefect 1 flow's imports to orchestrator's.

    orchestrator migrate flows/            # show a unified diff of every change
    orchestrator migrate flows/ --write    # rewrite the files

    from orchestrator.prefect1.migrate import migrate_source
    migrate_source("from prefect import Flow\\n").source   # 'from orchestrator import Flow\\n'

It works on the syntax tree (the standard library's `ast` for what a name
means, `tokenize` for where a module name sits inside an import) and changes
only the exact characters of each Prefect 1 name, so comments, formatting and
everything else stay as they were. Names are looked up in the name table
(orchestrator.prefect1.names), which follows re-exports: `prefect.Flow`,
`prefect.core.Flow` and `prefect.core.flow.Flow` all become `orchestrator.Flow`.

What it rewrites: `import prefect` (then `prefect.Flow`, `prefect.context.get(...)`
become `orchestrator.Flow`, `orchestrator.context.get(...)`), `import prefect as
pf` (then `pf.engine.state.Success` becomes `pf.states.Success`), `from
prefect.x import (a, b as c)`, and strings that are exactly a Prefect 1
environment variable (`"PREFECT__LOGGING__LEVEL"`).

A file is rewritten whole or not at all: when one of its Prefect 1 names has no
counterpart (or a change cannot be made safely), the file is left as it is and
the report says which name, where, and what to do. Half a conversion would mix
Prefect's and orchestrator's classes in one flow, which fails in ways that are
harder to read than the report. Every file written still compiles.
"""

import ast
import bisect
import difflib
import io
import itertools
import os
import tempfile
import tokenize
from pathlib import Path

from ..exceptions import OrchestratorError
from .names import resolve, resolve_env_name

__all__ = ["MigrationInputError", "Unmapped", "SourceMigration", "FileMigration",
           "MigrationReport", "migrate_source", "migrate_paths", "python_files"]

# Exit codes of `orchestrator migrate`.
EXIT_ALL_MAPPED, EXIT_SOME_UNMAPPED, EXIT_BAD_INPUT = 0, 1, 2

# Modules that `import orchestrator` loads (orchestrator/__init__.py), so
# `orchestrator.states.Success` needs no import of its own.
LOADED_BY_ROOT = frozenset({
    "orchestrator", "orchestrator.cache_validators", "orchestrator.executors",
    "orchestrator.results", "orchestrator.serializers", "orchestrator.signals",
    "orchestrator.states", "orchestrator.triggers",
})

# Folders never walked: version control, caches, and virtualenvs (a venv in the
# tree may hold a real prefect package, which must not be rewritten).
_SKIPPED_FOLDERS = frozenset({"__pycache__", "node_modules", "site-packages"})


class MigrationInputError(OrchestratorError):
    """A path to migrate does not exist or holds no Python file."""


class Unmapped:
    """A Prefect 1 name (or a change) the codemod could not make, and what to do."""

    __slots__ = ("path", "line", "name", "what_to_do")

    def __init__(self, path, line, name, what_to_do):
        self.path, self.line, self.name, self.what_to_do = path, line, name, what_to_do

    def __str__(self):
        return f"{self.path}:{self.line}: {self.name}: {self.what_to_do}"

    def __repr__(self):
        return f"Unmapped({str(self)!r})"


class SourceMigration:
    """The outcome for one source text: `source` (the rewritten text, or the
    original when nothing changed or something is unmapped) and `unmapped`."""

    def __init__(self, original, source, unmapped):
        self.original, self.source, self.unmapped = original, source, unmapped

    @property
    def changed(self):
        return self.source != self.original


class _Edit:
    __slots__ = ("start", "end", "text")

    def __init__(self, start, end, text):
        self.start, self.end, self.text = start, end, text


class _CannotConvert(Exception):
    """A change that cannot be made safely (odd formatting, an unreadable token)."""

    def __init__(self, message, line=None):
        super().__init__(message)
        self.line = line


class _Source:
    """A source text with ast and tokenize positions turned into string offsets."""

    def __init__(self, text):
        self.text = text
        # Lines split as the tokenizer splits them (\n, \r\n and \r).
        self.lines = io.StringIO(text, newline="").readlines()
        self.starts = []
        offset = 0
        for line in self.lines:
            self.starts.append(offset)
            offset += len(line)
        self.starts.append(offset)
        self.newline = next((ending for ending in ("\r\n", "\n", "\r")
                             if self.lines and self.lines[0].endswith(ending)), "\n")

    def offset(self, lineno, col_bytes):
        """String offset of an ast position (line from 1, column in UTF-8 bytes)."""
        if lineno > len(self.lines):
            return len(self.text)
        line = self.lines[lineno - 1]
        return self.starts[lineno - 1] + len(
            line.encode("utf-8")[:col_bytes].decode("utf-8", errors="replace"))

    def token_offset(self, position):
        """String offset of a tokenize position (line from 1, column in characters)."""
        row, col = position
        return self.starts[row - 1] + col if row <= len(self.lines) else len(self.text)

    def span(self, node):
        return (self.offset(node.lineno, node.col_offset),
                self.offset(node.end_lineno, node.end_col_offset))

    def indent_before(self, node):
        """The indentation of the line `node` starts, or None when something other
        than whitespace stands before it on that line (`if x: import prefect`)."""
        line = self.lines[node.lineno - 1]
        before = line[:len(line.encode("utf-8")[:node.col_offset].decode("utf-8"))]
        return before if before.strip() == "" else None


def _is_prefect(name):
    return name == "prefect" or name.startswith("prefect.")


def _binds_name(node, name):
    """Whether `node` gives `name` a value other than the orchestrator package."""
    if isinstance(node, ast.Name):
        return node.id == name and not isinstance(node.ctx, ast.Load)
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name == name
    if isinstance(node, ast.arg):
        return node.arg == name
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return any((alias.asname or alias.name.partition(".")[0]) == name
                   and not (isinstance(node, ast.Import)
                            and alias.name.partition(".")[0] == "orchestrator")
                   for alias in node.names)
    return False


def _module_of(target, kind):
    """The orchestrator module to import for a target of `kind`."""
    return target if kind == "module" else target.rpartition(".")[0]


class _Binding:
    """A local name a Prefect 1 import binds: `prefect`, `pf`, `Flow`, `state`."""

    def __init__(self, local, prefect_path, kind, target, rename_to=None):
        self.local = local
        self.prefect_path = prefect_path
        self.kind = kind          # "module" or "name": what the import binds
        self.target = target      # what the local name will be bound to
        self.rename_to = rename_to  # `import prefect` binds `orchestrator` instead
        self.needed_modules = set()  # modules its rewritten uses need imported
        self.uses_root = False       # a use lands on a name `import orchestrator` gives

    @property
    def new_local(self):
        return self.rename_to or self.local

    def loaded(self, module):
        """Whether `module` is loaded once this binding's own import has run."""
        return module == self.target or (self.target == "orchestrator"
                                         and module in LOADED_BY_ROOT)


class _Migrator:
    def __init__(self, text, path):
        self.path = path
        self.source = _Source(text)
        self.unmapped = []
        self.edits = []
        self.bindings = {}

    def report(self, node_or_line, name, what_to_do):
        line = node_or_line if isinstance(node_or_line, int) else node_or_line.lineno
        key = (line, name)
        if all((u.line, u.name) != key for u in self.unmapped):
            self.unmapped.append(Unmapped(self.path, line, name, what_to_do))

    def replace(self, start, end, text, expected=None):
        old = self.source.text[start:end]
        if expected is not None and "".join(old.split()) != "".join(expected.split()):
            raise _CannotConvert(f"expected {expected!r} at this place, found {old!r}",
                                 line=bisect.bisect_right(self.source.starts, start))
        if old != text:
            self.edits.append(_Edit(start, end, text))

    # -- the passes ------------------------------------------------------------------
    def run(self, tree):
        self.parents = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
        self.binds_orchestrator = any(_binds_name(node, "orchestrator")
                                      for node in ast.walk(tree))
        imports = [node for node in ast.walk(tree)
                   if isinstance(node, ast.Import) and any(_is_prefect(a.name)
                                                           for a in node.names)
                   or isinstance(node, ast.ImportFrom) and node.level == 0
                   and node.module and _is_prefect(node.module)]
        for node in imports:
            self.bind(node)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in self.bindings:
                self.rewrite_use(node)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                self.rewrite_env_name(node)
            elif isinstance(node, ast.Call):
                self.check_dynamic_import(node)
        for node in imports:
            self.rewrite_import(node)

    def bind(self, node):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _is_prefect(alias.name):
                    continue
                if alias.asname:
                    self.add_binding(node, alias.asname, alias.name, as_module=True)
                else:
                    self.check_orchestrator_is_free(node.lineno)
                    self.add_binding(node, "prefect", "prefect", as_module=True,
                                     rename_to="orchestrator")
            return
        for alias in node.names:
            if alias.name == "*":
                self.report(node, f"from {node.module} import *",
                            "a star import hides which names the file uses; import the "
                            f"names one by one (from {node.module} import Flow, task, ...)")
                continue
            self.add_binding(node, alias.asname or alias.name, f"{node.module}.{alias.name}")

    def add_binding(self, node, local, prefect_path, as_module=False, rename_to=None):
        resolution = resolve(prefect_path, as_module=as_module)
        if not resolution.supported or resolution.target is None:
            self.report(node, resolution.matched, resolution.reason
                        or f"{resolution.matched} has no single counterpart; import "
                           "the names it holds instead")
            return
        existing = self.bindings.get(local)
        if existing is None:
            self.bindings[local] = _Binding(local, prefect_path, resolution.kind,
                                            resolution.target, rename_to)
        elif existing.target != resolution.target or existing.rename_to != rename_to:
            self.report(node, local, f"{local!r} is bound to two different Prefect 1 names "
                                     f"({existing.prefect_path} and {prefect_path}); give "
                                     "one of them another name")

    def check_orchestrator_is_free(self, line):
        """The rewrite is about to use the name `orchestrator`: the file must not
        use that name for something else."""
        if self.binds_orchestrator:
            raise _CannotConvert("the file gives the name `orchestrator` to something "
                                 "else, and `import prefect` would become `import "
                                 "orchestrator`", line=line)

    def rewrite_use(self, name_node):
        binding = self.bindings[name_node.id]
        chain, node = [], name_node
        parent = self.parents.get(node)
        while isinstance(parent, ast.Attribute) and parent.value is node:
            chain.append(parent)
            node, parent = parent, self.parents.get(parent)
        dotted = ".".join([binding.prefect_path] + [a.attr for a in chain])
        resolution = resolve(dotted)
        if not resolution.supported:
            self.report(name_node, resolution.matched, resolution.reason)
            return
        used = len(resolution.matched.split(".")) - len(binding.prefect_path.split("."))
        covered = chain[used - 1] if used > 0 else name_node
        target = resolution.target
        if target is None:
            self.report(name_node, resolution.matched,
                        f"{resolution.matched} has no single counterpart; use the names "
                        "it holds")
            return
        module = _module_of(target, resolution.kind)
        if module in LOADED_BY_ROOT:
            binding.uses_root = True
        if target == binding.target:
            text = binding.new_local
        elif target.startswith(binding.target + "."):
            text = binding.new_local + target[len(binding.target):]
            if not binding.loaded(module):
                binding.needed_modules.add(module)
        else:
            # Not under what the local name is bound to: the full name, imported.
            self.check_orchestrator_is_free(name_node.lineno)
            text = target
            binding.needed_modules.add(module if module not in LOADED_BY_ROOT
                                       else "orchestrator")
        expected = ".".join([name_node.id] + [a.attr for a in chain[:used]])
        start, end = self.source.span(covered)
        self.replace(start, end, text, expected=expected)

    def rewrite_env_name(self, node):
        value = node.value
        if not value.startswith("PREFECT__") or not all(
                c.isupper() or c.isdigit() or c == "_" for c in value):
            return
        if isinstance(self.parents.get(node), ast.JoinedStr):
            return  # a piece of an f-string, not a name on its own
        ours, reason = resolve_env_name(value)
        if ours is None:
            self.report(node, value, reason)
            return
        start, end = self.source.span(node)
        literal = self.source.text[start:end]
        tokens = [t for t in _tokens(literal) if t.type not in (
            tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)]
        if len(tokens) != 1 or tokens[0].type != tokenize.STRING:
            raise _CannotConvert(f"the string {value!r} is written in several pieces")
        quote_at = min(i for i in (literal.find("'"), literal.find('"')) if i >= 0)
        prefix, body = literal[:quote_at], literal[quote_at:]
        quote = body[:3] if body[:3] in ("'''", '"""') else body[0]
        if body != f"{quote}{value}{quote}":
            raise _CannotConvert(f"the string {value!r} has escapes")
        self.replace(start, end, f"{prefix}{quote}{ours}{quote}")

    def check_dynamic_import(self, node):
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if called not in ("import_module", "__import__") or not node.args:
            return
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str) \
                and _is_prefect(first.value):
            self.report(node, first.value,
                        f"a dynamic import of {first.value}; write it as an import "
                        "statement so it can be converted")

    # -- import statements -----------------------------------------------------------
    def rewrite_import(self, node):
        try:
            if isinstance(node, ast.Import):
                self.rewrite_plain_import(node)
            else:
                self.rewrite_from_import(node)
        except _CannotConvert as exc:
            exc.line = exc.line or node.lineno
            raise

    def rewrite_plain_import(self, node):
        extra = []
        for alias in node.names:
            if not _is_prefect(alias.name):
                continue
            local = alias.asname or "prefect"
            binding = self.bindings.get(local)
            if binding is None:
                return  # reported when it was bound
            if alias.asname:
                text = (binding.target if binding.target == local
                        else f"{binding.target} as {local}")
                modules = sorted(binding.needed_modules)
            else:
                # `import prefect`: import what its uses need, `orchestrator` first.
                needed = sorted(m for m in binding.needed_modules if m not in LOADED_BY_ROOT)
                root = ["orchestrator"] if binding.uses_root or not needed else []
                text, *modules = root + needed
            start, end = self.source.span(alias)
            expected = alias.name + (f" as {alias.asname}" if alias.asname else "")
            if len(node.names) == 1:
                self.replace(start, end, text, expected=expected)
                extra.extend(modules)
            else:
                self.replace(start, end, ", ".join([text] + modules), expected=expected)
        self.append_imports(node, [f"import {m}" for m in dict.fromkeys(extra)])

    def rewrite_from_import(self, node):
        new_aliases = []   # (target module, alias text, original alias node)
        extra = []
        for alias in node.names:
            if alias.name == "*":
                return
            local = alias.asname or alias.name
            binding = self.bindings.get(local)
            if binding is None or binding.target != resolve(
                    f"{node.module}.{alias.name}").target:
                return  # reported when it was bound
            module, _, name = binding.target.rpartition(".")
            text = name if name == local else f"{name} as {local}"
            new_aliases.append((module, text, alias))
            extra.extend(sorted(binding.needed_modules))
        modules = list(dict.fromkeys(module for module, _, _ in new_aliases))
        if len(modules) == 1 and modules[0]:
            start, end = self.module_span(node)
            self.replace(start, end, modules[0], expected=node.module)
            for _, text, alias in new_aliases:
                start, end = self.source.span(alias)
                self.replace(start, end, text, expected=alias.name + (
                    f" as {alias.asname}" if alias.asname else ""))
        else:
            # The names now live in several modules: one statement per module.
            statements = []
            for module in modules:
                texts = [text for m, text, _ in new_aliases if m == module]
                if module:
                    statements.append(f"from {module} import {', '.join(texts)}")
                else:  # the package itself: `from prefect import engine`
                    statements.extend(f"import {text}" for text in texts)
            if self.has_comment(node):
                raise _CannotConvert("an import with comments inside it would have to be "
                                     "split in several")
            start, end = self.source.span(node)
            self.replace(start, end, self.join_statements(node, statements))
        self.append_imports(node, [f"import {m}" for m in dict.fromkeys(extra)])

    def module_span(self, node):
        """Offsets of the dotted module name in `from MODULE import ...`."""
        start, end = self.source.span(node)
        first = last = None
        for token in _tokens(self.source.text[start:end]):
            if token.type == tokenize.NAME and token.string == "import":
                break
            if token.type == tokenize.NAME and token.string == "from" and first is None:
                continue
            if token.type in (tokenize.NAME, tokenize.OP):
                if first is None:
                    first = token
                last = token
        if first is None:
            raise _CannotConvert("no module name found in the import")
        # Token columns count from the start of the statement's first line.
        base_row = node.lineno
        def absolute(position):
            row, col = position
            if row == 1:
                return start + col
            return self.source.starts[base_row + row - 2] + col
        return absolute(first.start), absolute(last.end)

    def has_comment(self, node):
        start, end = self.source.span(node)
        return any(t.type == tokenize.COMMENT for t in _tokens(self.source.text[start:end]))

    def join_statements(self, node, statements):
        indent = self.source.indent_before(node)
        if indent is None:
            return "; ".join(statements)
        return (self.source.newline + indent).join(statements)

    def append_imports(self, node, statements):
        """Add `statements` right after the import `node`: on lines of their own at
        its indentation, or after a `;` when it shares its line with other code."""
        if not statements:
            return
        _, end = self.source.span(node)
        next_line = self.source.starts[node.end_lineno]
        rest = self.source.text[end:next_line]
        indent = self.source.indent_before(node)
        if indent is None or (rest.strip() and not rest.strip().startswith("#")):
            self.edits.append(_Edit(end, end, "".join(f"; {s}" for s in statements)))
            return
        newline = self.source.newline
        lead = "" if rest.endswith(("\n", "\r")) else newline  # the file's last line
        self.edits.append(_Edit(next_line, next_line, lead + "".join(
            f"{indent}{s}{newline}" for s in statements)))

    def apply(self):
        text = self.source.text
        ordered = sorted(self.edits, key=lambda e: (e.start, e.end))
        for before, after in itertools.pairwise(ordered):
            if after.start < before.end:
                raise _CannotConvert("two changes overlap")
        for edit in reversed(ordered):
            text = text[:edit.start] + edit.text + text[edit.end:]
        return text


def _tokens(text):
    try:
        return list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError) as exc:
        raise _CannotConvert(f"cannot read the tokens ({exc})") from None


def migrate_source(text, path="<source>"):
    """Rewrite one source text; raises SyntaxError when it is not Python."""
    tree = ast.parse(text, filename=str(path))
    migrator = _Migrator(text, path)
    try:
        migrator.run(tree)
        if migrator.unmapped:
            return SourceMigration(text, text, migrator.unmapped)
        new_text = migrator.apply()
    except _CannotConvert as exc:
        migrator.report(exc.line or 1, "(file)", f"cannot be converted safely: {exc}; "
                                                 "change its Prefect 1 imports by hand")
        return SourceMigration(text, text, migrator.unmapped)
    try:
        compile(new_text, str(path), "exec")
    except SyntaxError as exc:
        migrator.report(exc.lineno or 1, "(file)",
                        f"the converted file would not compile ({exc.msg}); it is left as "
                        "it is: change its Prefect 1 imports by hand, and please report this")
        return SourceMigration(text, text, migrator.unmapped)
    return SourceMigration(text, new_text, [])


# -- files and folders ---------------------------------------------------------------
class FileMigration:
    """One file's outcome: `diff` (unified, empty when unchanged), `unmapped`, and
    `error` when the file could not be read as Python (bad input)."""

    def __init__(self, path, diff="", unmapped=(), error=None, changed=False):
        self.path, self.diff, self.unmapped = path, diff, list(unmapped)
        self.error, self.changed = error, changed


class MigrationReport:
    """What `migrate_paths` did, file by file, and the exit code that sums it up."""

    def __init__(self, files, written):
        self.files, self.written = files, written

    @property
    def unmapped(self):
        return [u for f in self.files for u in f.unmapped]

    @property
    def exit_code(self):
        if any(f.error for f in self.files):
            return EXIT_BAD_INPUT
        return EXIT_SOME_UNMAPPED if self.unmapped else EXIT_ALL_MAPPED

    def diff(self):
        return "".join(f.diff for f in self.files)

    def summary(self):
        """The report printed at the end: each problem with file:line, then counts."""
        lines = [f"{f.path}: {f.error}" for f in self.files if f.error]
        lines += [str(u) for u in self.unmapped]
        changed = sum(1 for f in self.files if f.changed)
        left = [f for f in self.files if f.unmapped]
        untouched = len(self.files) - changed - len(left) - sum(
            1 for f in self.files if f.error)
        verb = "rewritten" if self.written else "to rewrite (run again with --write)"
        counts = [f"{changed} file{'s' * (changed != 1)} {verb}"]
        if left:
            names = len(self.unmapped)
            counts.append(f"{len(left)} left as {'they are' if len(left) > 1 else 'it is'} "
                          f"({names} Prefect 1 name{'s' * (names != 1)} not mapped: see "
                          "above, and \"Coming from Prefect 1\" in the README)")
        errors = sum(1 for f in self.files if f.error)
        if errors:
            counts.append(f"{errors} not read (not Python)")
        counts.append(f"{untouched} without Prefect 1 imports")
        lines.append("migrate: " + ", ".join(counts))
        return "\n".join(lines)


def python_files(paths):
    """The .py files of `paths` (files as given; folders walked in name order,
    skipping hidden folders, caches and virtualenvs)."""
    found = []
    for given in paths:
        path = Path(given)
        if path.is_file():
            found.append(path)
            continue
        if not path.is_dir():
            raise MigrationInputError(
                f"{given}: no such file or folder; give Prefect 1 flow files (.py) or "
                "folders that hold them")
        before = len(found)
        for folder, subfolders, files in os.walk(path):
            subfolders[:] = sorted(
                name for name in subfolders
                if not name.startswith(".") and name not in _SKIPPED_FOLDERS
                and not (Path(folder) / name / "pyvenv.cfg").exists())
            found.extend(Path(folder) / name for name in sorted(files)
                         if name.endswith(".py"))
        if len(found) == before:
            raise MigrationInputError(
                f"{given}: a folder with no .py files in it; give Prefect 1 flow files "
                "or the folder that holds them")
    return list(dict.fromkeys(found))


def _read_python(path):
    """(text, encoding) of a Python file, decoded as Python decodes it."""
    raw = path.read_bytes()
    encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
    return raw.decode(encoding), encoding


def _write_atomically(path, text, encoding):
    """Replace `path` with `text`, never leaving half a file; keeps its mode."""
    mode = path.stat().st_mode
    fd, draft = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".migrate",
                                 dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as out:
            out.write(text)
        os.chmod(draft, mode & 0o7777)
        os.replace(draft, path)
    except BaseException:
        Path(draft).unlink(missing_ok=True)
        raise


def migrate_file(path, write=False):
    """Migrate one file; with `write`, rewrite it when every name maps."""
    try:
        text, encoding = _read_python(path)
    except (OSError, SyntaxError, UnicodeDecodeError, LookupError) as exc:
        return FileMigration(path, error=f"cannot be read as Python source ({exc})")
    try:
        outcome = migrate_source(text, path)
    except SyntaxError as exc:
        return FileMigration(path, error=f"line {exc.lineno}: not valid Python "
                                         f"({exc.msg}); fix it and run migrate again")
    except RecursionError:
        return FileMigration(path, error="nested too deeply for Python's parser")
    if not outcome.changed:
        return FileMigration(path, unmapped=outcome.unmapped)
    diff = "".join(
        line if line.endswith(("\n", "\r")) else line + "\n\\ No newline at end of file\n"
        for line in difflib.unified_diff(
            outcome.original.splitlines(keepends=True),
            outcome.source.splitlines(keepends=True),
            # git's a/ and b/ for relative paths, so `git apply` and `patch -p1` take it
            fromfile=str(path) if path.is_absolute() else f"a/{path}",
            tofile=str(path) if path.is_absolute() else f"b/{path}"))
    if write:
        _write_atomically(path, outcome.source, encoding)
    return FileMigration(path, diff=diff, changed=True)


def migrate_paths(paths, write=False):
    """Migrate every Python file of `paths`; see MigrationReport for the outcome.

    Raises MigrationInputError, before changing anything, when a path does not
    exist or a folder holds no .py file.
    """
    files = python_files(paths)
    return MigrationReport([migrate_file(path, write=write) for path in files], write)
