"""Coming from Prefect 1: the name table, `orchestrator migrate`, and the import switch.

The codemod and the switch run through the real command line; a fake `prefect`
package on a temporary sys.path stands for a real one, which must never be
hidden from code other than flow files.
"""

import importlib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import ROOT, assert_bad_input, service_env
from orchestrator.prefect1.names import (MODULES, NAMES, README_SECTION, UNSUPPORTED,
                                         readme_rows, resolve)

PREFECT1_PYTHON = Path("/opt/prefect1-venv/bin/python")

# Placed by the core change (Prefect 1's utilities re-exported from `orchestrator`).
EXPECTED_FROM_CORE = {
    "orchestrator.defaults_from_attrs", "orchestrator.as_task", "orchestrator.pause_task",
    "orchestrator.apply_map", "orchestrator.resource_manager", "orchestrator.Context",
    "orchestrator.raise_on_exception", "orchestrator.FlowRunner", "orchestrator.TaskRunner",
    "orchestrator.tags", "orchestrator.ResourceManager",
}


def orchestrator(home, *args, cwd=None, env=None, stdin=None):
    """`python -m orchestrator ARGS` over `home`; returns the finished process."""
    environment = service_env(home)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)],
                          cwd=cwd or ROOT, env=environment, capture_output=True, text=True,
                          timeout=120, input=stdin, check=False)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def import_dotted(dotted):
    """The object at `dotted` ("orchestrator.tasks.shell.ShellTask" or a module)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        for attribute in parts[end:]:
            value = getattr(value, attribute)
        return value
    raise ImportError(dotted)


def unimportable(targets):
    missing = {}
    for target in sorted(targets):
        try:
            import_dotted(target)
        except (ImportError, AttributeError) as exc:
            missing[target] = f"{type(exc).__name__}: {exc}"
    return missing


# -- the name table ------------------------------------------------------------------
def test_every_mapped_name_and_module_imports():
    missing = unimportable((set(NAMES.values()) | {m for m in MODULES.values() if m})
                           - EXPECTED_FROM_CORE)
    assert not missing, ("The name table maps Prefect 1 names to orchestrator names that "
                         "do not import:\n" + "\n".join(f"  {t}: {why}"
                                                        for t, why in missing.items()))


def test_the_core_utilities_the_table_names_import():
    """Expected from the core change: Prefect 1's utilities at orchestrator's root."""
    missing = unimportable(EXPECTED_FROM_CORE & set(NAMES.values()))
    assert not missing, ("Expected from the core change, not importable yet:\n"
                         + "\n".join(f"  {t}: {why}" for t, why in missing.items()))


def test_module_targets_are_modules_and_the_root_loads_what_migrate_assumes():
    from orchestrator.prefect1.migrate import LOADED_BY_ROOT

    for target in {m for m in MODULES.values() if m}:
        assert isinstance(import_dotted(target), type(sys)), target
    # `migrate` writes `orchestrator.states.Success` after a bare `import orchestrator`.
    check = ("import sys, orchestrator; print(sorted(m for m in sys.modules "
             "if m.startswith('orchestrator')))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", check], capture_output=True,
                                       text=True, check=True).stdout.replace("'", '"'))
    assert LOADED_BY_ROOT <= set(loaded), LOADED_BY_ROOT - set(loaded)


def test_resolve_follows_reexports_prefixes_and_says_why_not():
    assert resolve("prefect.core.flow.Flow").target == "orchestrator.Flow"
    assert resolve("prefect.engine.state.Success").target == "orchestrator.states.Success"
    context_get = resolve("prefect.context.get")
    assert (context_get.kind, context_get.matched) == ("name", "prefect.context")
    # `prefect.tasks.control_flow.case` is a class, and also the module it lives in.
    assert resolve("prefect.tasks.control_flow.case").kind == "name"
    assert resolve("prefect.tasks.control_flow.case", as_module=True).kind == "module"
    aws = resolve("prefect.tasks.aws.s3.S3Download")
    assert (aws.kind, aws.matched) == ("unsupported", "prefect.tasks.aws")
    assert "boto3" in aws.reason
    typo = resolve("prefect.engine.state.Sucess")
    assert typo.kind == "unknown" and "'Sucess'" in typo.reason


@pytest.mark.skipif(not PREFECT1_PYTHON.exists(), reason="Prefect 1.4.1 is not installed "
                    "in /opt/prefect1-venv (it is on the development machines, not in CI)")
def test_the_table_covers_every_public_name_of_prefect_1_4_1(tmp_path):
    """Walk Prefect 1.4.1's modules in its own interpreter: every public module and
    name it defines is mapped or marked unsupported, none is unknown."""
    walker = write(tmp_path / "walk.py", '''
        import importlib, inspect, json, pkgutil, sys, types, warnings
        warnings.simplefilter("ignore")
        found = {}
        def walk(name):
            try:
                module = importlib.import_module(name)
            except Exception:
                found[name] = "module"   # needs an extra: still a name users import
                return
            found[name] = "module"
            explicit = getattr(module, "__all__", None)
            for attribute, value in vars(module).items():
                if attribute.startswith("_") or isinstance(value, types.ModuleType):
                    continue
                defined = inspect.isclass(value) or inspect.isfunction(value)
                if explicit is not None:
                    if attribute not in explicit:
                        continue
                elif not defined or value.__module__ != name:
                    continue
                found[f"{name}.{attribute}"] = "name"
            for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
                if not info.name.startswith("_"):
                    walk(f"{name}.{info.name}")
        walk("prefect")
        print(json.dumps(found))
    ''')
    done = subprocess.run([str(PREFECT1_PYTHON), str(walker)], capture_output=True,
                          text=True, timeout=120, check=True)
    names = json.loads(done.stdout)
    assert "prefect.engine.state.Success" in names and len(names) > 500
    unknown = sorted(name for name, kind in names.items()
                     if resolve(name, as_module=kind == "module").kind == "unknown")
    assert not unknown, f"Prefect 1.4.1 names missing from the name table: {unknown}"


# -- the README ----------------------------------------------------------------------------
def readme_table():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Coming from Prefect 1", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ")
            and not line.startswith("| Prefect 1") and not line.startswith("|---")]


def orchestrator_paths_in_row(row):
    """The orchestrator objects a row of the table names, as dotted paths."""
    cells = [cell.strip() for cell in row.strip().strip("|").split(" | ")]
    left, right = cells[0], cells[-1]
    if right.startswith("not provided"):
        return set()
    right = re.sub(r" \(for `[^`]+`\)", "", right)  # the Prefect 1 name it stands for
    spans = re.findall(r"`([^`]+)`", right)
    if spans and re.fullmatch(r"orchestrator[\w.]*", spans[0]) and right.startswith(
            f"`{spans[0]}`:"):
        module = spans[0]
        names = re.findall(r"`([^`]+)`", left)[1:] if "the same names" in right \
            else spans[1:]
        return {f"{module}.{name}" for name in names}
    paths = set()
    for span in spans:
        statement = re.match(r"from (orchestrator[\w.]*) import (.+)", span)
        if statement:
            paths |= {f"{statement.group(1)}.{name.strip(' .')}"
                      for name in statement.group(2).split(",") if name.strip(" .")}
        else:
            paths |= {p.rstrip(".") for p in re.findall(r"\borchestrator(?:\.\w+)*", span)}
    return paths


def test_every_orchestrator_name_the_readme_table_gives_imports():
    rows = readme_table()
    assert rows, "the README has no table under \"Coming from Prefect 1\""
    paths = set().union(*(orchestrator_paths_in_row(row) for row in rows))
    assert "orchestrator.Flow" in paths
    missing = unimportable(paths - EXPECTED_FROM_CORE)
    assert not missing, f"The README names orchestrator objects that do not import: {missing}"


def test_the_readme_table_has_a_row_for_every_name_of_the_table():
    """The rows come from `readme_rows()` (/tmp/readme-migrate.md); the lead pastes them."""
    table = set(readme_table())
    absent = [row for row in readme_rows() if row not in table]
    assert not absent, (f"{len(absent)} rows of the name table are not in the README's "
                        f"table, e.g. {absent[:3]}")


def test_readme_rows_cover_every_name_and_say_where_it_is():
    text = "\n".join(readme_rows())
    for name in list(NAMES) + list(UNSUPPORTED):
        module, _, attribute = name.rpartition(".")
        assert (f"`{name}`" in text or f"`{module}`: " in text and f"`{attribute}`" in text), name
    assert "| `prefect.engine.state`: `State`," in text
    assert "`orchestrator.signals`: " in text and "`Signal` (for `PrefectSignal`)" in text


# -- orchestrator migrate ---------------------------------------------------------------
def test_from_imports_keep_their_comments_and_layout(home, tmp_path):
    flow = write(tmp_path / "etl.py", '''
        """ETL."""
        from prefect import (
            Flow,        # the graph
            task as t,   # renamed on purpose
            Parameter,
        )
        from prefect.engine.state import Success, Failed
        from prefect.engine import signals, state
        from prefect.tasks.shell import ShellTask


        @t
        def load(day):
            raise signals.SKIP("nothing to do")
    ''')
    done = orchestrator(home, "migrate", flow, "--write")
    assert done.returncode == 0, done.stderr
    assert flow.read_text() == textwrap.dedent('''
        """ETL."""
        from orchestrator import (
            Flow,        # the graph
            task as t,   # renamed on purpose
            Parameter,
        )
        from orchestrator.states import Success, Failed
        from orchestrator import signals, states as state
        from orchestrator.tasks.shell import ShellTask


        @t
        def load(day):
            raise signals.SKIP("nothing to do")
    ''').lstrip("\n")
    assert "1 file rewritten" in done.stderr and done.stdout == ""


def test_import_prefect_and_its_attribute_uses(home, tmp_path):
    flow = write(tmp_path / "flow.py", '''
        import os
        import prefect  # the whole package


        @prefect.task(max_retries=1)
        def hello(name):
            prefect.context.get("logger").info("hi %s", name)
            if not name:
                raise prefect.engine.signals.FAIL("no name")
            return prefect.tasks.shell.ShellTask(command="echo hi")


        with prefect.Flow("hello", executor=prefect.executors.LocalExecutor()) as flow:
            hello(prefect.Parameter("name"))
    ''')
    done = orchestrator(home, "migrate", "--write", flow)
    assert done.returncode == 0, done.stderr
    assert flow.read_text() == textwrap.dedent('''
        import os
        import orchestrator  # the whole package
        import orchestrator.tasks.shell


        @orchestrator.task(max_retries=1)
        def hello(name):
            orchestrator.context.get("logger").info("hi %s", name)
            if not name:
                raise orchestrator.signals.FAIL("no name")
            return orchestrator.tasks.shell.ShellTask(command="echo hi")


        with orchestrator.Flow("hello", executor=orchestrator.executors.LocalExecutor()) as flow:
            hello(orchestrator.Parameter("name"))
    ''').lstrip("\n")


def test_aliases_are_kept_and_names_reexported_elsewhere_are_found(home, tmp_path):
    flow = write(tmp_path / "alias.py", '''
        import prefect as pf
        import prefect.engine.state as st
        from prefect.core.flow import Flow
        from prefect.utilities.edges import unmapped
        from prefect.client import Secret
        from prefect import engine

        ok = (pf.engine.state.Success, st.Failed, pf.core.Flow is Flow, engine.signals.SKIP)
        shell = pf.tasks.shell.ShellTask
    ''')
    done = orchestrator(home, "migrate", "--write", flow)
    assert done.returncode == 0, done.stderr
    assert flow.read_text() == textwrap.dedent('''
        import orchestrator as pf
        import orchestrator.tasks.shell
        import orchestrator.states as st
        from orchestrator import Flow
        from orchestrator import unmapped
        from orchestrator.tasks.secrets import Secret
        import orchestrator as engine

        ok = (pf.states.Success, st.Failed, pf.Flow is Flow, engine.signals.SKIP)
        shell = pf.tasks.shell.ShellTask
    ''').lstrip("\n")
    namespace = {}
    exec(compile(flow.read_text(), str(flow), "exec"), namespace)
    from orchestrator.states import Failed, Success

    assert namespace["ok"][:3] == (Success, Failed, True)


def test_an_import_whose_names_moved_apart_is_split(home, tmp_path):
    flow = write(tmp_path / "split.py", '''
        def handler():
            from prefect.exceptions import PrefectSignal, FlowStorageError
            return PrefectSignal, FlowStorageError
    ''')
    done = orchestrator(home, "migrate", "--write", flow)
    assert done.returncode == 0, done.stderr
    assert flow.read_text() == textwrap.dedent('''
        def handler():
            from orchestrator.signals import Signal as PrefectSignal
            from orchestrator.storage import StorageError as FlowStorageError
            return PrefectSignal, FlowStorageError
    ''').lstrip("\n")


def test_prefect_environment_variable_names_in_strings(home, tmp_path):
    flow = write(tmp_path / "env.py", '''
        """Set PREFECT__LOGGING__LEVEL=DEBUG to see more (a docstring: kept)."""
        import os

        os.environ["PREFECT__LOGGING__LEVEL"] = "DEBUG"
        url = os.environ.get('PREFECT__CONTEXT__SECRETS__DB_URL')
        name = f"PREFECT__{'LOGGING'}__LEVEL"
    ''')
    done = orchestrator(home, "migrate", "--write", flow)
    assert done.returncode == 0, done.stderr
    text = flow.read_text()
    assert 'os.environ["ORCHESTRATOR__LOGGING__LEVEL"] = "DEBUG"' in text
    assert "os.environ.get('ORCHESTRATOR__LOCAL_SECRETS__DB_URL')" in text
    assert "Set PREFECT__LOGGING__LEVEL=DEBUG" in text
    assert "f\"PREFECT__{'LOGGING'}__LEVEL\"" in text


def test_unmapped_names_are_reported_and_their_file_is_left_whole(home, tmp_path):
    cloud = write(tmp_path / "flows" / "cloud.py", '''
        from prefect import Flow, task
        from prefect import Client
        import prefect


        @task
        def upload():
            prefect.tasks.aws.S3Upload(bucket="b")
    ''')
    star = write(tmp_path / "flows" / "star.py", "from prefect import *\n")
    env = write(tmp_path / "flows" / "env.py",
                "import os\nos.environ['PREFECT__CLOUD__API'] = 'x'\n")
    fine = write(tmp_path / "flows" / "sub" / "fine.py", "from prefect import Flow\n")
    before = {path: path.read_bytes() for path in (cloud, star, env)}
    done = orchestrator(home, "migrate", tmp_path / "flows", "--write")
    assert done.returncode == 1, done.stderr
    report = done.stderr.splitlines()
    assert f"{cloud}:2: prefect.Client: Prefect 1's GraphQL client" in report[0]
    assert any(line.startswith(f"{cloud}:8: prefect.tasks.aws: ") and "boto3" in line
               for line in report)
    assert any(line.startswith(f"{star}:1: from prefect import *: ") for line in report)
    assert any(line.startswith(f"{env}:2: PREFECT__CLOUD__API: ") for line in report)
    assert report[-1].startswith("migrate: 1 file rewritten, 3 left as they are (4 Prefect "
                                 "1 names not mapped")
    assert {path: path.read_bytes() for path in before} == before
    assert fine.read_text() == "from orchestrator import Flow\n"


def test_a_change_that_cannot_be_made_safely_leaves_the_file_whole(home, tmp_path):
    # The names now live in two modules, so the import must be split, and a comment
    # inside it would have nowhere to go.
    flow = write(tmp_path / "comment.py", '''
        from prefect.exceptions import (PrefectSignal,  # our base class
                                        FlowStorageError)
    ''')
    before = flow.read_bytes()
    done = orchestrator(home, "migrate", flow, "--write")
    assert done.returncode == 1
    assert f"{flow}:1: (file): cannot be converted safely" in done.stderr
    assert flow.read_bytes() == before


def test_typos_dynamic_imports_and_a_taken_name_are_reported(home, tmp_path):
    typo = write(tmp_path / "typo.py", "from prefect.engine.state import Sucess\n")
    dynamic = write(tmp_path / "dynamic.py", '''
        import importlib
        from prefect import Flow
        signals = importlib.import_module("prefect.engine.signals")
    ''')
    taken = write(tmp_path / "taken.py", '''
        import prefect
        orchestrator = "our own scheduler"
        flow = prefect.Flow("x")
    ''')
    before = {path: path.read_bytes() for path in (typo, dynamic, taken)}
    done = orchestrator(home, "migrate", "--write", typo, dynamic, taken)
    assert done.returncode == 1
    report = done.stderr.splitlines()
    assert report[0].startswith(f"{typo}:1: prefect.engine.state.Sucess: prefect.engine."
                                "state has no name 'Sucess' in Prefect 1.4.1"), report[0]
    assert report[1].startswith(f"{dynamic}:3: prefect.engine.signals: a dynamic import")
    assert report[2].startswith(f"{taken}:1: (file): cannot be converted safely: the file "
                                "gives the name `orchestrator` to something else")
    assert {path: path.read_bytes() for path in before} == before


def test_the_diff_is_shown_by_default_and_applies_as_a_patch(home, tmp_path):
    flows = tmp_path / "work"
    write(flows / "a.py", "from prefect import Flow\nimport prefect\nx = prefect.Flow\n")
    write(flows / "b.py", "print('no prefect here')\n")
    done = orchestrator(home, "migrate", "a.py", "b.py", cwd=flows)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("--- a/a.py\n+++ b/a.py\n")
    assert "-from prefect import Flow\n" in done.stdout
    assert "+from orchestrator import Flow\n" in done.stdout
    assert (flows / "a.py").read_text().startswith("from prefect import Flow")  # untouched
    assert done.stderr.splitlines()[-1] == ("migrate: 1 file to rewrite (run again with "
                                            "--write), 1 without Prefect 1 imports")
    subprocess.run(["patch", "-p1", "--quiet"], input=done.stdout, text=True, cwd=flows,
                   check=True)
    assert (flows / "a.py").read_text() == ("from orchestrator import Flow\nimport "
                                            "orchestrator\nx = orchestrator.Flow\n")


def test_line_endings_encodings_and_odd_layouts_are_kept(home, tmp_path):
    crlf = tmp_path / "crlf.py"
    crlf.write_bytes(b"import prefect\r\nflow = prefect.Flow('x')\r\n")
    latin = tmp_path / "latin.py"
    latin.write_bytes("# -*- coding: latin-1 -*-\nname = 'café'; from prefect import Flow\n"
                      .encode("latin-1"))
    inline = write(tmp_path / "inline.py", '''
        if True: import prefect; x = (prefect
                                     .context)
        s = "é"; from prefect.tasks.shell import ShellTask as Sh
    ''')
    done = orchestrator(home, "migrate", "--write", crlf, latin, inline)
    assert done.returncode == 0, done.stderr
    assert crlf.read_bytes() == b"import orchestrator\r\nflow = orchestrator.Flow('x')\r\n"
    assert latin.read_bytes() == ("# -*- coding: latin-1 -*-\nname = 'café'; from "
                                  "orchestrator import Flow\n").encode("latin-1")
    assert inline.read_text() == textwrap.dedent('''
        if True: import orchestrator; x = (orchestrator.context)
        s = "é"; from orchestrator.tasks.shell import ShellTask as Sh
    ''').lstrip("\n")
    for path in (crlf, latin, inline):
        compile(path.read_bytes(), str(path), "exec")


def test_folders_are_walked_but_not_hidden_folders_or_virtualenvs(home, tmp_path):
    write(tmp_path / "proj" / "flows" / "one.py", "from prefect import task\n")
    write(tmp_path / "proj" / ".git" / "hook.py", "from prefect import task\n")
    write(tmp_path / "proj" / "venv" / "pyvenv.cfg", "home = /usr/bin\n")
    real = write(tmp_path / "proj" / "venv" / "lib" / "prefect" / "core.py",
                 "from prefect.core.flow import Flow\n")
    done = orchestrator(home, "migrate", tmp_path / "proj")
    assert done.returncode == 0, done.stderr
    assert "flows/one.py" in done.stdout and "hook.py" not in done.stdout
    assert str(real) not in done.stdout + done.stderr


def test_bad_input_is_exit_code_2(home, tmp_path):
    assert_bad_input(orchestrator(home, "migrate", tmp_path / "nope"), "nope",
                     "no such file or folder")
    (tmp_path / "empty").mkdir()
    assert_bad_input(orchestrator(home, "migrate", tmp_path / "empty"), "no .py files")
    broken = write(tmp_path / "src" / "broken.py", "from prefect import (Flow\n")
    good = write(tmp_path / "src" / "good.py", "from prefect import Flow\n")
    done = orchestrator(home, "migrate", "--write", tmp_path / "src")
    assert done.returncode == 2
    assert f"{broken}: line 1: not valid Python" in done.stderr
    assert "Traceback" not in done.stderr
    assert good.read_text() == "from orchestrator import Flow\n"


# -- the import switch ----------------------------------------------------------------------
PREFECT1_FLOW = '''
    import prefect
    from prefect import Flow, Parameter, task
    from prefect.engine.signals import SKIP
    import prefect.engine.state as st


    @task
    def greet(name):
        # Imports inside a task body run when the task runs.
        from prefect.utilities.logging import get_logger
        import prefect.tasks.control_flow
        get_logger().info("hello %s", name)
        if prefect.context.get("flow_name") != "greet" or not issubclass(st.Skipped,
                                                                         st.Finished):
            raise ValueError("not orchestrator's context or states")
        return f"hello {name}"


    with Flow("greet") as flow:
        greet(Parameter("name", default="Ada"))
'''


def test_switch_off_a_prefect_flow_file_is_refused_with_what_to_do(home, tmp_path):
    flow = write(tmp_path / "greet.py", PREFECT1_FLOW)
    assert_bad_input(orchestrator(home, "run-file", flow), "No module named 'prefect'",
                     "orchestrator migrate", "prefect_imports = true")


def test_switch_on_run_file_with_prefect_imports(home, tmp_path):
    flow = write(tmp_path / "greet.py", PREFECT1_FLOW)
    done = orchestrator(home, "run-file", flow, "--json",
                        env={"ORCHESTRATOR__COMPAT__PREFECT_IMPORTS": "true"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["state"] == "Success"
    (home / "config.toml").write_text("[compat]\nprefect_imports = true\n")
    done = orchestrator(home, "run-file", flow)
    assert done.returncode == 0, done.stdout + done.stderr


def test_switch_setting_is_checked_and_off_by_default(home, tmp_path):
    from orchestrator.config import load_config

    assert load_config(home, environ={})["compat"]["prefect_imports"] is False
    on = load_config(home, environ={"ORCHESTRATOR__COMPAT__PREFECT_IMPORTS": "yes"})
    assert on["compat"]["prefect_imports"] is True
    flow = write(tmp_path / "greet.py", PREFECT1_FLOW)
    (home / "config.toml").write_text("[compat]\nprefect_imports = \"maybe\"\n")
    try:
        assert_bad_input(orchestrator(home, "run-file", flow),
                         "compat.prefect_imports = 'maybe'", "is not a boolean")
    finally:
        (home / "config.toml").unlink()


def test_switch_on_an_unsupported_name_fails_at_its_import_line(home, tmp_path):
    flow = write(tmp_path / "cloud.py", '''
        from prefect import Flow
        from prefect import Client

        with Flow("cloud") as flow:
            pass
    ''')
    line = assert_bad_input(
        orchestrator(home, "run-file", flow, env={"ORCHESTRATOR__COMPAT__PREFECT_IMPORTS": "1"}),
        f"{flow}:2", "Prefect 1 name prefect.Client is not supported by orchestrator; "
        f"see {README_SECTION}", "orchestrator.Client()")
    assert "UnsupportedPrefect1Name" in line


def test_switch_on_register_and_execute_a_pickled_and_a_script_flow(home, tmp_path):
    switch = {"ORCHESTRATOR__COMPAT__PREFECT_IMPORTS": "true"}
    pickled = write(tmp_path / "greet.py", PREFECT1_FLOW)
    script = write(tmp_path / "script_greet.py", PREFECT1_FLOW.replace(
        '"greet"', '"script-greet"') + f'''
    from orchestrator.storage import Script
    flow.storage = Script({str(tmp_path / "script_greet.py")!r})
    ''')
    script.write_text(script.read_text().replace(
        'prefect.context.get("flow_name") != "greet"',
        'prefect.context.get("flow_name") != "script-greet"'))
    assert orchestrator(home, "project", "create", "p").returncode == 0
    for path in (pickled, script):
        done = orchestrator(home, "register", "-p", "p", path, env=switch)
        assert done.returncode == 0, done.stderr
    for name in ("greet", "script-greet"):
        done = orchestrator(home, "run", name, "--local", env=switch)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Success" in done.stdout


def test_a_pickled_flow_that_holds_a_stand_in_module_runs_with_the_switch_off(home, tmp_path):
    flow = write(tmp_path / "ctx.py", '''
        import prefect
        from prefect import Flow, task


        @task
        def which():
            return prefect.context.flow_name   # `prefect` is pickled with the task


        with Flow("ctx") as flow:
            which()
    ''')
    assert orchestrator(home, "project", "create", "p").returncode == 0
    done = orchestrator(home, "register", "-p", "p", flow,
                        env={"ORCHESTRATOR__COMPAT__PREFECT_IMPORTS": "true"})
    assert done.returncode == 0, done.stderr
    done = orchestrator(home, "run", "ctx", "--local")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def real_prefect(tmp_path):
    """A folder holding a fake `prefect` package, standing for a real install."""
    site = tmp_path / "site"
    write(site / "prefect" / "__init__.py", '''
        REAL = True


        class Flow:
            def __init__(self, name):
                self.name = name

            def __enter__(self):
                return self

            def __exit__(self, *exc_info):
                return False


        Flow.__module__ = "prefect.core.flow"
    ''')
    write(site / "prefect" / "engine" / "__init__.py", "REAL = True\n")
    return site


def test_a_real_prefect_package_is_not_hidden_from_other_code(home, tmp_path, real_prefect):
    folder = tmp_path / "flows"
    write(folder / "helper.py", "import prefect\nREAL = getattr(prefect, 'REAL', False)\n")
    flow = write(folder / "mixed.py", '''
        import helper
        import prefect
        from prefect import Flow, task
        import orchestrator

        # The flow file gets orchestrator's names; the helper module, the real package.
        assert Flow is orchestrator.Flow, Flow
        assert helper.REAL is True
        assert not hasattr(prefect, "REAL")   # the stand-in, not the real package


        @task
        def inside():
            import prefect
            import sys
            assert prefect.Flow is orchestrator.Flow
            assert sys.modules["prefect"].REAL is True


        with Flow("mixed") as flow:
            inside()
    ''')
    switch = {"ORCHESTRATOR__COMPAT__PREFECT_IMPORTS": "true", "PYTHONPATH": str(real_prefect)}
    done = orchestrator(home, "run-file", flow, env=switch)
    assert done.returncode == 0, done.stdout + done.stderr
    # Elsewhere in the process, `import prefect` finds the real package even with the
    # switch on: the fallback comes after every other finder.
    probe = ("import orchestrator.flows.loading, prefect, prefect.engine; "
             "print(prefect.REAL, prefect.engine.REAL)")
    done = subprocess.run([sys.executable, "-c", probe], env={**service_env(home), **switch},
                          capture_output=True, text=True, check=False)
    assert done.stdout.split() == ["True", "True"], done.stderr


def test_switch_off_a_file_that_builds_a_real_prefect_flow_is_told_what_to_do(
        home, tmp_path, real_prefect):
    flow = write(tmp_path / "real.py", '''
        from prefect import Flow

        with Flow("real") as flow:
            pass
    ''')
    assert_bad_input(orchestrator(home, "run-file", flow, env={"PYTHONPATH": str(real_prefect)}),
                     "defines a Prefect 1 Flow (from the installed prefect package)",
                     "orchestrator migrate FILE --write")


def test_the_fallback_serves_prefect_only_while_the_switch_is_on(home):
    probe = ("import orchestrator.flows.loading, orchestrator\n"
             "try:\n"
             "    import prefect.engine.signals as s\n"
             "    print(s.FAIL is orchestrator.signals.FAIL)\n"
             "except ModuleNotFoundError as exc:\n"
             "    print('missing', exc.name)\n"
             "try:\n"
             "    import prefect.tasks.aws\n"
             "except ImportError as exc:\n"
             "    print(str(exc).split(';')[0])\n")
    for switch, expected in (("false", ["missing prefect", "No module named 'prefect'"]),
                             ("true", ["True", ("Prefect 1 name prefect.tasks.aws is not "
                                                "supported by orchestrator")])):
        env = {**service_env(home), "ORCHESTRATOR__COMPAT__PREFECT_IMPORTS": switch}
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                              text=True, check=False)
        assert done.stdout.splitlines() == expected, done.stderr


def test_loading_a_flow_file_in_process_leaves_sys_modules_prefect_alone(home, tmp_path,
                                                                        monkeypatch):
    from orchestrator.flows.loading import load_flows_from_file

    flow = write(tmp_path / "greet.py", PREFECT1_FLOW)
    monkeypatch.setenv("ORCHESTRATOR__COMPAT__PREFECT_IMPORTS", "true")
    had_prefect = "prefect" in sys.modules
    (greet,) = load_flows_from_file(flow).values()
    state = greet.run()
    assert state.is_successful(), state.result
    assert ("prefect" in sys.modules) == had_prefect


def test_the_stand_in_modules_keep_the_name_pickled_flows_hold(tmp_path):
    # Flows pickled while the switch served `prefect` name their stand-in modules
    # orchestrator.prefect1_imports.prefect...; a fresh process must import those.
    code = ("import importlib\n"
            "m = importlib.import_module('orchestrator.prefect1_imports.prefect.engine.state')\n"
            "from orchestrator.states import Success\n"
            "assert m.Success is Success, m.Success\n"
            "print(m.__name__)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "orchestrator.prefect1_imports.prefect.engine.state"
