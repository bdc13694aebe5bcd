"""Flow storage (Local, Script, Module, Git) and flow fingerprints, with real
files, a real git repository and real subprocesses where a flow crosses
processes. Every error path is checked by what its message says."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import cloudpickle
import pytest

from orchestrator import Flow, task
from orchestrator.exceptions import OrchestratorError
from orchestrator.flows.loading import load_flows_from_file
from orchestrator.storage import (Git, Local, Module, Script, Storage, StorageError,
                                  flow_fingerprint)

HELLO = '''
from orchestrator import Flow, Parameter, task

@task
def greet(name):
    return "{greeting}, " + name

with Flow("{flow_name}") as flow:
    greet(Parameter("name", default="world"))
'''


def write_flow(path, greeting="Hello", flow_name="hello", source=HELLO):
    """Write a flow file whose `greet` task returns '<greeting>, <name>'."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source.replace("{greeting}", greeting).replace("{flow_name}", flow_name))
    return path


def load_flow(path, name="hello"):
    return load_flows_from_file(path)[name]


def greeting_of(flow, **parameters):
    """Run `flow` and return what its `greet` task returned."""
    state = flow.run(**parameters)
    assert state.is_successful(), state
    [greet] = flow.get_tasks(name="greet")
    return state.result[greet].result


def run_python(code, *args, env=None, cwd=None):
    """Run `python -c code args` in a fresh interpreter with this test's environment."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=60, cwd=cwd,
                          env=dict(os.environ) if env is None else env, check=False)


LOAD_AND_RUN = """
    import json, sys
    from orchestrator.storage import Storage, StorageError
    storage = Storage.from_ref(json.loads(sys.argv[1]))
    try:
        flow = storage.get_flow(sys.argv[2])
    except StorageError as exc:
        print("StorageError: " + str(exc))
        raise SystemExit(3)
    state = flow.run()
    [greet] = flow.get_tasks(name="greet")
    print(json.dumps({"ok": state.is_successful(), "result": state.result[greet].result}))
"""


# -- the base class and references ---------------------------------------------------

def test_storage_error_is_an_orchestrator_error():
    assert issubclass(StorageError, OrchestratorError)


def test_from_ref_with_an_unknown_type_names_it_and_the_known_types():
    with pytest.raises(StorageError) as info:
        Storage.from_ref({"type": "Dropbox", "bucket": "b"})
    message = str(info.value)
    assert "Unknown storage type 'Dropbox'" in message
    for known in ("Git", "Local", "Module", "Script"):
        assert known in message


@pytest.mark.parametrize("ref", [None, "Local", {"path": "x"}, {"type": 3}])
def test_from_ref_without_a_type_says_what_to_pass(ref):
    with pytest.raises(StorageError, match="is not a dict with a 'type' key"):
        Storage.from_ref(ref)


@pytest.mark.parametrize("ref", [
    {"type": "Local", "flows": {"hello": "proj/hello/v1.pkl"}},
    {"type": "Script"},
    {"type": "Module"},
    {"type": "Git", "repo": "/srv/repo"},
])
def test_from_ref_with_missing_or_malformed_fields_says_to_register_again(ref):
    with pytest.raises(StorageError) as info:
        Storage.from_ref(ref)
    assert f"{ref['type']} storage reference" in str(info.value)
    assert "register the flow again" in str(info.value)


def test_a_subclass_from_ref_refuses_another_type():
    with pytest.raises(StorageError, match="cannot be loaded as Local"):
        Local.from_ref(Script("/x.py").to_ref())


@pytest.mark.parametrize("make", [
    lambda tmp: Local(),
    lambda tmp: Local(directory=tmp / "flows", add_default_labels=False),
    lambda tmp: Script(tmp / "f.py", flow_name="hello"),
    lambda tmp: Module("pkg.flows", flow_name="etl"),
    lambda tmp: Git("https://example.com/r.git", "flows/etl.py", ref="v2", cache_dir=tmp),
])
def test_every_storage_survives_a_json_round_trip_of_its_ref(make, tmp_path):
    storage = make(tmp_path)
    ref = json.loads(json.dumps(storage.to_ref()))
    rebuilt = Storage.from_ref(ref)
    assert type(rebuilt) is type(storage)
    assert rebuilt.to_ref() == storage.to_ref()
    assert rebuilt == storage
    assert rebuilt.labels == storage.labels


# -- Local ----------------------------------------------------------------------------

def test_local_pickles_the_flow_under_home_with_a_sidecar_and_loads_it_back(tmp_path, home):
    flow = load_flow(write_flow(tmp_path / "hello.py"))
    storage = Local()
    storage.add_flow(flow, "proj", 3)

    pickle_path = home / "flows" / "proj" / "hello" / "v3.pkl"
    data = pickle_path.read_bytes()
    meta = json.loads(pickle_path.with_suffix(".json").read_text())
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["python"] == "%d.%d.%d" % sys.version_info[:3]
    assert meta["cloudpickle"] == cloudpickle.__version__
    assert meta["orchestrator"] == __import__("orchestrator").__version__
    assert meta["host"] == socket.gethostname()
    # Written through temp files that were renamed: nothing else is left behind.
    assert sorted(p.name for p in pickle_path.parent.iterdir()
                  if p.name != ".lock") == ["v3.json", "v3.pkl"]

    loaded = Storage.from_ref(json.loads(json.dumps(storage.to_ref()))).get_flow("hello")
    assert loaded is not flow and loaded.name == "hello"
    assert greeting_of(loaded, name="Ada") == "Hello, Ada"


def test_local_keeps_each_version_and_loads_the_last_one_added(tmp_path, home):
    storage = Local()
    storage.add_flow(load_flow(write_flow(tmp_path / "one.py", "Hi")), "proj", 1)
    storage.add_flow(load_flow(write_flow(tmp_path / "two.py", "Bye")), "proj", 2)
    assert (home / "flows" / "proj" / "hello" / "v1.pkl").is_file()
    assert greeting_of(storage.get_flow("hello")) == "Bye, world"


def test_local_reads_orchestrator_home_when_called_not_when_made(tmp_path, monkeypatch):
    storage = Local()
    other_home = tmp_path / "other-home"
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(other_home))
    storage.add_flow(load_flow(write_flow(tmp_path / "hello.py")), "proj", 1)
    assert (other_home / "flows" / "proj" / "hello" / "v1.pkl").is_file()
    assert storage.to_ref()["directory"] is None


def test_local_directory_replaces_the_home_flows_directory(tmp_path, home):
    storage = Local(directory=tmp_path / "elsewhere")
    storage.add_flow(load_flow(write_flow(tmp_path / "hello.py")), "proj", 1)
    assert (tmp_path / "elsewhere" / "proj" / "hello" / "v1.pkl").is_file()
    assert not (home / "flows").exists()
    assert greeting_of(storage.get_flow("hello")) == "Hello, world"


def test_local_adds_the_hostname_label_unless_told_not_to():
    assert Local().labels == [socket.gethostname()]
    assert Local(add_default_labels=False).labels == []
    assert Storage.from_ref(Local(add_default_labels=False).to_ref()).labels == []


def test_local_names_cannot_escape_the_flows_directory(tmp_path, home):
    flow = load_flow(write_flow(tmp_path / "evil.py", flow_name="../../x"), "../../x")
    storage = Local()
    storage.add_flow(flow, "../../../proj", 1)
    flows_dir = (home / "flows").resolve()
    pickles = list(home.parent.rglob("*.pkl"))
    assert len(pickles) == 1
    assert pickles[0].resolve().is_relative_to(flows_dir)
    assert ".." not in Path(storage.to_ref()["flows"]["../../x"]["path"]).parts
    assert storage.get_flow("../../x").name == "../../x"


def test_local_names_that_clean_up_alike_still_get_their_own_files(tmp_path, home):
    storage = Local()
    storage.add_flow(load_flow(write_flow(tmp_path / "a.py", "Slash", "a/b"), "a/b"), "p", 1)
    storage.add_flow(load_flow(write_flow(tmp_path / "b.py", "Under", "a_b"), "a_b"), "p", 1)
    assert greeting_of(storage.get_flow("a/b")) == "Slash, world"
    assert greeting_of(storage.get_flow("a_b")) == "Under, world"


@pytest.mark.parametrize("bad_path", ["../../outside.pkl", "/etc/passwd", "proj/hello/v1.json"])
def test_local_refuses_to_load_from_a_path_outside_its_flows_directory(tmp_path, home,
                                                                          bad_path):
    outside = tmp_path / "outside.pkl"
    outside.write_bytes(cloudpickle.dumps(Flow("planted")))
    ref = Local().to_ref()
    ref["flows"] = {"hello": {"path": bad_path, "host": "h"}}
    with pytest.raises(StorageError) as info:
        Storage.from_ref(ref).get_flow("hello")
    assert "Refusing to load flow 'hello'" in str(info.value)
    assert "only loads .pkl files inside" in str(info.value)


def test_local_get_flow_of_an_unregistered_name_lists_what_it_holds(tmp_path):
    storage = Local()
    with pytest.raises(StorageError, match=r"no flow named 'hello' \(it holds: none\)"):
        storage.get_flow("hello")
    storage.add_flow(load_flow(write_flow(tmp_path / "hello.py")), "proj", 1)
    with pytest.raises(StorageError, match=r"no flow named 'helo' \(it holds: 'hello'\)"):
        storage.get_flow("helo")


def test_local_missing_pickle_says_which_host_registered_it_and_what_to_use(tmp_path, home):
    storage = Local()
    storage.add_flow(load_flow(write_flow(tmp_path / "hello.py")), "proj", 1)
    ref = storage.to_ref()
    ref["flows"]["hello"]["host"] = "build-box"
    (home / "flows" / "proj" / "hello" / "v1.pkl").unlink()
    with pytest.raises(StorageError) as info:
        Storage.from_ref(ref).get_flow("hello")
    message = str(info.value)
    assert "registered with Local storage on host 'build-box'" in message
    assert f"(this is host {socket.gethostname()!r})" in message
    assert str(home / "flows" / "proj" / "hello" / "v1.pkl") in message
    assert "is missing: register the flow again on this machine" in message
    assert "use Script or Git storage to run it elsewhere" in message


def test_local_flow_from_another_host_is_missing_here_and_nothing_is_created(tmp_path,
                                                                            home):
    ref = {"type": "Local", "directory": None, "add_default_labels": True,
           "host": "build-box", "flows": {"hello": {"path": "proj/hello/v1.pkl",
                                                    "host": "build-box"}}}
    with pytest.raises(StorageError, match="registered with Local storage on host "
                                           "'build-box'.*is missing"):
        Storage.from_ref(ref).get_flow("hello")
    assert list(home.iterdir()) == []


def test_local_pickle_changed_after_registration_is_reported_as_corrupt(tmp_path, home):
    storage = Local()
    storage.add_flow(load_flow(write_flow(tmp_path / "hello.py")), "proj", 1)
    path = home / "flows" / "proj" / "hello" / "v1.pkl"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(StorageError) as info:
        storage.get_flow("hello")
    assert "is corrupt" in str(info.value) and "sha256" in str(info.value)
    assert "register the flow again" in str(info.value)


def test_local_registration_waits_while_another_process_holds_the_flows_lock(tmp_path, home):
    # Registrations take the lock with flock(2), as filelock does: a process
    # holding the lock with filelock (an older orchestrator, say) is waited for.
    flow = load_flow(write_flow(tmp_path / "hello.py"))
    storage = Local()
    storage.add_flow(flow, "proj", 1)
    lock = home / "flows" / "proj" / "hello" / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, filelock
        with filelock.FileLock(sys.argv[1]):
            print("locked", flush=True)
            sys.stdin.readline()
    """), str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        done = threading.Event()
        writer = threading.Thread(target=lambda: (storage.add_flow(flow, "proj", 2),
                                                  done.set()))
        writer.start()
        assert not done.wait(0.5)  # held by the other process
        assert not (home / "flows" / "proj" / "hello" / "v2.pkl").exists()
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert done.wait(30)
        writer.join()
    finally:
        holder.kill()
        holder.wait()
    assert greeting_of(Storage.from_ref(storage.to_ref()).get_flow("hello")) == "Hello, world"


@pytest.mark.parametrize("damage, expected", [
    (lambda meta: meta.write_text("{not json"), "is not valid metadata"),
    (lambda meta: meta.write_text('{"python": "3.11.7"}'), "is not valid metadata"),
    (lambda meta: meta.unlink(), "metadata file"),
])
def test_local_damaged_metadata_is_reported_as_corrupt(tmp_path, home, damage, expected):
    storage = Local()
    storage.add_flow(load_flow(write_flow(tmp_path / "hello.py")), "proj", 1)
    damage(home / "flows" / "proj" / "hello" / "v1.json")
    with pytest.raises(StorageError) as info:
        storage.get_flow("hello")
    assert "is corrupt" in str(info.value) and expected in str(info.value)
    assert "register the flow again" in str(info.value)


class _FailsToUnpickle:
    """Pickles fine; unpickling calls int('not a number') and raises ValueError."""

    def __reduce__(self):
        return (int, ("not a number",))


def _replace_pickle(path, data, **meta_changes):
    """Put `data` in place of a stored pickle, with a matching sha256 in its sidecar."""
    path.write_bytes(data)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta.update(meta_changes, sha256=hashlib.sha256(data).hexdigest())
    meta_path.write_text(json.dumps(meta))


def test_local_pickle_that_fails_to_load_under_the_same_versions_says_register_again(
        tmp_path, home):
    storage = Local()
    storage.add_flow(load_flow(write_flow(tmp_path / "hello.py")), "proj", 1)
    _replace_pickle(home / "flows" / "proj" / "hello" / "v1.pkl",
                    cloudpickle.dumps(_FailsToUnpickle()))
    with pytest.raises(StorageError) as info:
        storage.get_flow("hello")
    message = str(info.value)
    assert "could not be unpickled" in message and "ValueError" in message
    assert "register the flow again" in message
    assert "cloudpickle" not in message


def test_local_pickle_from_other_python_and_cloudpickle_versions_names_both_when_it_fails(
        tmp_path, home):
    storage = Local()
    storage.add_flow(load_flow(write_flow(tmp_path / "hello.py")), "proj", 1)
    _replace_pickle(home / "flows" / "proj" / "hello" / "v1.pkl",
                    cloudpickle.dumps(_FailsToUnpickle()),
                    python="3.8.10", cloudpickle="1.6.0")
    with pytest.raises(StorageError) as info:
        storage.get_flow("hello")
    message = str(info.value)
    assert "registered with Python 3.8.10 and cloudpickle 1.6.0" in message
    now = "%d.%d.%d" % sys.version_info[:3]
    assert f"this process has Python {now} and cloudpickle {cloudpickle.__version__}" in message


def test_local_pickle_from_other_versions_is_still_loaded_when_it_can_be(
        tmp_path, home, log_records):
    storage = Local()
    storage.add_flow(load_flow(write_flow(tmp_path / "hello.py")), "proj", 1)
    meta_path = home / "flows" / "proj" / "hello" / "v1.json"
    meta = json.loads(meta_path.read_text())
    meta.update(python="3.8.10", cloudpickle="1.6.0")
    meta_path.write_text(json.dumps(meta))
    assert greeting_of(storage.get_flow("hello")) == "Hello, world"
    assert any("pickled with Python 3.8.10 and cloudpickle 1.6.0" in m
               for m in log_records.messages("orchestrator.flows.storage"))


def test_local_pickle_that_is_not_a_flow_is_reported(tmp_path, home):
    storage = Local()
    storage.add_flow(load_flow(write_flow(tmp_path / "hello.py")), "proj", 1)
    _replace_pickle(home / "flows" / "proj" / "hello" / "v1.pkl", cloudpickle.dumps([1, 2]))
    with pytest.raises(StorageError, match="holds a list, not a Flow"):
        storage.get_flow("hello")


def test_local_flow_is_loaded_and_run_in_a_fresh_process(tmp_path, home):
    storage = Local()
    storage.add_flow(load_flow(write_flow(tmp_path / "hello.py", "Bonjour")), "proj", 1)
    done = run_python(LOAD_AND_RUN, json.dumps(storage.to_ref()), "hello", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ok": True, "result": "Bonjour, world"}


def test_local_flow_needing_a_module_missing_at_run_time_names_module_host_and_python(
        tmp_path, home):
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "greeting_helpers_7f3a.py").write_text("def salute():\n    return 'Ahoy'\n")
    flow_path = tmp_path / "uses_helper.py"
    flow_path.write_text(textwrap.dedent('''
        from orchestrator import Flow, task
        from greeting_helpers_7f3a import salute

        @task
        def greet():
            return salute() + ", world"

        with Flow("hello") as flow:
            greet()
    '''))
    # Register in a process that can import the helper module (pickled by reference).
    register = run_python("""
        import json, sys
        from orchestrator.flows.loading import load_flows_from_file
        from orchestrator.storage import Local
        storage = Local()
        storage.add_flow(load_flows_from_file(sys.argv[1])["hello"], "proj", 1)
        print(json.dumps(storage.to_ref()))
    """, str(flow_path), env=dict(os.environ, PYTHONPATH=str(helpers)))
    assert register.returncode == 0, register.stderr
    ref = register.stdout

    without = run_python(LOAD_AND_RUN, ref, "hello", cwd=tmp_path)
    assert without.returncode == 3, without.stderr
    message = without.stdout
    assert "needs module 'greeting_helpers_7f3a'" in message
    assert f"registered on host {socket.gethostname()!r}" in message
    assert "with Python %d.%d.%d" % sys.version_info[:3] in message
    assert "Script, Git or Module storage" in message
    assert "Traceback" not in without.stderr

    with_module = run_python(LOAD_AND_RUN, ref, "hello", cwd=tmp_path,
                             env=dict(os.environ, PYTHONPATH=str(helpers)))
    assert with_module.returncode == 0, with_module.stderr
    assert json.loads(with_module.stdout)["result"] == "Ahoy, world"


def test_local_flow_holding_an_unpicklable_value_says_what_to_do_instead():
    @task
    def use(lock):
        return lock

    with Flow("locked") as flow:
        use(threading.Lock())
    with pytest.raises(StorageError) as info:
        Local().add_flow(flow, "proj", 1)
    message = str(info.value)
    assert "Flow 'locked' cannot be pickled for Local storage" in message
    assert "lock" in message
    assert "Script, Module or Git storage" in message


@pytest.mark.parametrize("args, expected", [
    (("not a flow", "proj", 1), "add_flow needs a Flow, got 'not a flow'"),
    ((Flow("f"), "", 1), "Project '' for flow 'f' must be a non-empty string"),
    ((Flow("f"), "proj", -1), "Version -1 for flow 'f' must be a whole number >= 0"),
    ((Flow("f"), "proj", "2"), "Version '2' for flow 'f'"),
    ((Flow("f"), "proj", True), "Version True for flow 'f'"),
])
def test_add_flow_checks_its_arguments(args, expected):
    with pytest.raises(StorageError) as info:
        Local().add_flow(*args)
    assert expected in str(info.value)


def test_local_directory_must_be_a_path():
    with pytest.raises(StorageError, match="directory=5 is not a path"):
        Local(directory=5)


def test_local_unwritable_directory_is_reported(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StorageError) as info:
        Local(directory=blocker).add_flow(Flow("f"), "proj", 1)
    assert "Cannot write flow 'f'" in str(info.value)
    assert "writable" in str(info.value)


# -- Script ---------------------------------------------------------------------------

def test_script_runs_the_file_at_every_get_flow_so_edits_take_effect(tmp_path, home,
                                                                   monkeypatch):
    write_flow(tmp_path / "flows" / "hello.py", "Hello")
    monkeypatch.chdir(tmp_path)
    storage = Script("flows/hello.py")
    assert storage.to_ref()["path"] == str(tmp_path / "flows" / "hello.py")
    storage.add_flow(load_flow(tmp_path / "flows" / "hello.py"), "proj", 1)
    assert storage.flow_name == "hello"
    assert not (home / "flows").exists()  # nothing pickled

    rebuilt = Storage.from_ref(json.loads(json.dumps(storage.to_ref())))
    assert greeting_of(rebuilt.get_flow("hello")) == "Hello, world"
    write_flow(tmp_path / "flows" / "hello.py", "Howdy")
    assert greeting_of(rebuilt.get_flow("hello")) == "Howdy, world"
    assert greeting_of(rebuilt.get_flow(None)) == "Howdy, world"


def test_script_is_loaded_in_a_fresh_process(tmp_path):
    storage = Script(write_flow(tmp_path / "hello.py", "Hej"))
    done = run_python(LOAD_AND_RUN, json.dumps(storage.to_ref()), "hello")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == "Hej, world"


def test_script_add_flow_of_a_missing_file_says_so(tmp_path):
    storage = Script(tmp_path / "gone.py")
    with pytest.raises(StorageError) as info:
        storage.add_flow(Flow("hello"), "proj", 1)
    assert f"Flow file {str(tmp_path / 'gone.py')!r} does not exist" in str(info.value)


def test_script_add_flow_of_a_flow_the_file_does_not_define_lists_the_ones_it_does(tmp_path):
    storage = Script(write_flow(tmp_path / "hello.py"))
    with pytest.raises(StorageError) as info:
        storage.add_flow(Flow("hallo"), "proj", 1)
    message = str(info.value)
    assert "has no flow named 'hallo'; it defines: hello." in message
    assert "Did you mean 'hello'?" in message


def test_script_with_several_flows_needs_a_name(tmp_path):
    path = tmp_path / "two.py"
    path.write_text(HELLO.replace("{greeting}", "Hi").replace("{flow_name}", "one")
                    + "\nwith Flow('two') as other:\n    greet(Parameter('x'))\n")
    with pytest.raises(StorageError, match=r"defines 2 flows \(one, two\); choose one with "
                                           r"Script\(path, flow_name=\.\.\.\)"):
        Script(path).get_flow(None)
    assert Script(path, flow_name="two").get_flow(None).name == "two"


def test_script_add_flow_with_another_flow_name_is_refused(tmp_path):
    storage = Script(write_flow(tmp_path / "hello.py"), flow_name="other")
    with pytest.raises(StorageError, match="is set to flow 'other' but was given flow 'hello'"):
        storage.add_flow(load_flow(tmp_path / "hello.py"), "proj", 1)


def test_script_file_with_a_syntax_error_is_reported_with_its_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("from orchestrator import Flow\nflow = Flow('x'\n")
    with pytest.raises(StorageError, match=r"broken.py:2: syntax error"):
        Script(path).get_flow("x")


def test_script_path_must_be_a_path():
    with pytest.raises(StorageError, match="path=None is not a path"):
        Script(None)


# -- Module ---------------------------------------------------------------------------

@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    """A directory on sys.path for modules written by the test; they are forgotten after."""
    path = tmp_path / "modules"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    before = set(sys.modules)
    yield path
    for name in set(sys.modules) - before:
        if name.startswith("storage_test_"):
            del sys.modules[name]


def test_module_imports_the_module_and_finds_the_flow(module_dir, home):
    write_flow(module_dir / "storage_test_flows.py", "Salut")
    storage = Module("storage_test_flows")
    storage.add_flow(load_flow(module_dir / "storage_test_flows.py"), "proj", 1)
    rebuilt = Storage.from_ref(json.loads(json.dumps(storage.to_ref())))
    assert rebuilt.to_ref() == {"type": "Module", "module": "storage_test_flows",
                                "flow_name": "hello"}
    assert greeting_of(rebuilt.get_flow("hello")) == "Salut, world"
    assert not (home / "flows").exists()


def test_module_that_cannot_be_imported_names_it_and_the_sys_path_fix():
    with pytest.raises(StorageError) as info:
        Module("storage_test_nowhere.flows").get_flow("hello")
    message = str(info.value)
    assert "cannot import 'storage_test_nowhere.flows'" in message
    assert "sys.path (PYTHONPATH)" in message


def test_module_whose_own_import_is_missing_names_the_missing_dependency(module_dir):
    (module_dir / "storage_test_needs_dep.py").write_text("import storage_test_absent_dep\n")
    with pytest.raises(StorageError) as info:
        Module("storage_test_needs_dep").get_flow("hello")
    message = str(info.value)
    assert "Importing module 'storage_test_needs_dep' failed" in message
    assert "install 'storage_test_absent_dep'" in message


def test_module_that_raises_when_imported_is_reported(module_dir):
    (module_dir / "storage_test_raises.py").write_text("raise ValueError('no config')\n")
    with pytest.raises(StorageError, match="'storage_test_raises' failed with ValueError: "
                                           "no config"):
        Module("storage_test_raises").get_flow("hello")


def test_module_without_the_flow_lists_the_flows_it_has(module_dir):
    write_flow(module_dir / "storage_test_other.py", flow_name="etl")
    with pytest.raises(StorageError, match="Module 'storage_test_other' has no flow named "
                                           "'hello'; it defines: etl"):
        Module("storage_test_other").get_flow("hello")
    with pytest.raises(StorageError, match="has no flow named 'hello'"):
        Module("storage_test_other").add_flow(Flow("hello"), "proj", 1)


def test_module_without_any_flow_says_how_to_define_one(module_dir):
    (module_dir / "storage_test_empty.py").write_text("x = 1\n")
    with pytest.raises(StorageError, match="defines no Flow at its top level"):
        Module("storage_test_empty").get_flow("hello")


@pytest.mark.parametrize("name", ["", "my-flows", ".relative", 5, "a..b"])
def test_module_name_must_be_a_dotted_name(name):
    with pytest.raises(StorageError, match="is not a module name"):
        Module(name)


# -- Git ------------------------------------------------------------------------------

@pytest.fixture
def git_repo(tmp_path, monkeypatch):
    """A real git repository on branch main, with helpers to commit and tag."""
    empty_config = tmp_path / "gitconfig"
    empty_config.write_text("")
    for key, value in {"GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
                       "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
                       "GIT_CONFIG_GLOBAL": str(empty_config), "GIT_CONFIG_NOSYSTEM": "1"
                       }.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "repo"
    path.mkdir()

    class Repo:
        url = path.as_uri()

        def git(self, *args):
            done = subprocess.run(["git", *args], cwd=path, capture_output=True, text=True,
                                  check=False, timeout=30)
            assert done.returncode == 0, done.stderr
            return done.stdout.strip()

        def commit_flow(self, greeting, file="flows/hello.py"):
            write_flow(path / file, greeting)
            self.git("add", "-A")
            self.git("commit", "-q", "-m", f"greeting {greeting}")
            return self.git("rev-parse", "HEAD")

    repo = Repo()
    repo.path = path
    repo.git("init", "-q", "-b", "main")
    return repo


def test_git_loads_the_file_at_the_branch_and_follows_the_branch_when_it_moves(git_repo,
                                                                             home):
    git_repo.commit_flow("Hello")
    storage = Git(git_repo.url, "flows/hello.py")
    storage.add_flow(Flow("hello"), "proj", 1)
    checkout = home / "git" / hashlib.sha1(git_repo.url.encode()).hexdigest()
    assert (checkout / ".git").is_dir()
    assert greeting_of(storage.get_flow("hello")) == "Hello, world"

    git_repo.commit_flow("Bonjour")
    rebuilt = Storage.from_ref(json.loads(json.dumps(storage.to_ref())))
    assert greeting_of(rebuilt.get_flow("hello")) == "Bonjour, world"


def test_git_ref_can_be_a_tag_or_a_commit_and_a_repo_a_plain_path(git_repo, tmp_path):
    first = git_repo.commit_flow("One")
    git_repo.git("tag", "v1")
    git_repo.commit_flow("Two")
    by_tag = Git(str(git_repo.path), "flows/hello.py", ref="v1", cache_dir=tmp_path / "cache")
    by_commit = Git(str(git_repo.path), "flows/hello.py", ref=first[:10],
                    cache_dir=tmp_path / "cache")
    by_branch = Git(str(git_repo.path), "flows/hello.py", ref="main",
                    cache_dir=tmp_path / "cache")
    assert greeting_of(by_tag.get_flow("hello")) == "One, world"
    assert greeting_of(by_branch.get_flow("hello")) == "Two, world"
    assert greeting_of(by_commit.get_flow("hello")) == "One, world"
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == [
        hashlib.sha1(str(git_repo.path).encode()).hexdigest()]


def test_git_relative_repo_path_is_stored_absolute(git_repo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Git("repo", "flows/hello.py").to_ref()["repo"] == str(git_repo.path)


def test_git_flow_is_loaded_and_run_in_a_fresh_process(git_repo):
    git_repo.commit_flow("Hallo")
    storage = Git(git_repo.url, "flows/hello.py")
    done = run_python(LOAD_AND_RUN, json.dumps(storage.to_ref()), "hello")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == "Hallo, world"


def test_git_unknown_ref_lists_branches_and_tags(git_repo):
    git_repo.commit_flow("Hello")
    git_repo.git("tag", "v1")
    with pytest.raises(StorageError) as info:
        Git(git_repo.url, "flows/hello.py", ref="release").get_flow("hello")
    message = str(info.value)
    assert "ref 'release' is not a branch, tag or commit of" in message
    assert "git: fatal:" in message
    assert "branches: main; tags: v1" in message


def test_git_missing_path_lists_the_python_files_at_that_ref(git_repo):
    commit = git_repo.commit_flow("Hello")
    with pytest.raises(StorageError) as info:
        Git(git_repo.url, "flows/etl.py").get_flow("hello")
    message = str(info.value)
    assert "'flows/etl.py' is not a file in" in message
    assert f"at ref 'main' (commit {commit[:12]})" in message
    assert ".py files there: flows/hello.py" in message


def test_git_unreachable_repository_reports_gits_last_line(tmp_path, git_repo):
    url = (tmp_path / "no-such-repo").as_uri()
    with pytest.raises(StorageError) as info:
        Git(url, "flows/hello.py").get_flow("hello")
    message = str(info.value)
    assert f"cannot clone {url!r}: fatal:" in message
    assert "check the URL" in message


def test_git_flow_not_in_the_file_lists_the_flows_there(git_repo):
    git_repo.commit_flow("Hello")
    storage = Git(git_repo.url, "flows/hello.py")
    with pytest.raises(StorageError) as info:
        storage.add_flow(Flow("etl"), "proj", 1)
    message = str(info.value)
    assert f"flows/hello.py in {git_repo.url!r} at 'main'" in message
    assert "has no flow named 'etl'; it defines: hello" in message


def test_git_file_that_fails_to_run_is_reported_with_the_ref(git_repo):
    (git_repo.path / "flows").mkdir()
    (git_repo.path / "flows" / "hello.py").write_text("raise RuntimeError('boom')\n")
    git_repo.git("add", "-A")
    git_repo.git("commit", "-q", "-m", "broken")
    with pytest.raises(StorageError) as info:
        Git(git_repo.url, "flows/hello.py").get_flow("hello")
    assert "at 'main'" in str(info.value)
    assert "RuntimeError: boom" in str(info.value)


@pytest.mark.parametrize("kwargs, expected", [
    ({"repo": "", "path": "f.py"}, "repo='' is not a repository URL"),
    ({"repo": "--upload-pack=x", "path": "f.py"}, "is not a repository URL"),
    ({"repo": "r", "path": "../f.py"}, "path='../f.py' must be relative"),
    ({"repo": "r", "path": "/etc/f.py"}, "path='/etc/f.py' must be relative"),
    ({"repo": "r", "path": ""}, "path='' is not a path"),
    ({"repo": "r", "path": "f.py", "ref": "-b"}, "ref='-b' is not a branch"),
    ({"repo": "r", "path": "f.py", "ref": "my branch"}, "ref='my branch' is not"),
])
def test_git_checks_its_arguments(kwargs, expected):
    with pytest.raises(StorageError) as info:
        Git(**kwargs)
    assert expected in str(info.value)


def test_git_concurrent_get_flow_on_different_refs_do_not_mix_checkouts(git_repo):
    git_repo.commit_flow("Old")
    git_repo.git("tag", "old")
    git_repo.commit_flow("New")
    results, errors = [], []

    def load(ref, expected):
        try:
            flow = Git(git_repo.url, "flows/hello.py", ref=ref).get_flow("hello")
            results.append((greeting_of(flow), expected))
        except Exception as exc:  # collected and asserted below
            errors.append(repr(exc))

    threads = [threading.Thread(target=load, args=(ref, f"{word}, world"))
               for ref, word in [("old", "Old"), ("main", "New")] * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 8
    assert all(got == expected for got, expected in results), results


# -- fingerprints ---------------------------------------------------------------------

FINGERPRINTED = '''
import datetime
from orchestrator import Flow, Parameter, Task, task, triggers, unmapped

class Settings:
    def __init__(self):
        self.region = "eu"
        self.tables = {"sales", "stock", "staff", "suppliers"}

def default_day():
    return datetime.date.today().isoformat()

@task(max_retries=2, retry_delay=datetime.timedelta(seconds=RETRY_DELAY),
      tags=["etl", "db", "nightly", "eu"])
def extract(day, settings):
    return [day, settings.region, BODY]

class Load(Task):
    def run(self, rows, factor):
        return [r * factor for r in rows]

@task(trigger=TRIGGER)
def report(rows):
    return len(rows)

with Flow("fingerprinted") as flow:
    day = Parameter("day", default=DEFAULT)
    rows = extract(day, Settings())
    loaded = Load(name="load").map(MAPPED, unmapped(2)LOAD_ARGS)
    EDGE
    report(loaded)
'''

FINGERPRINT_BASE = {
    "RETRY_DELAY": "5", "BODY": "1", "TRIGGER": "triggers.all_successful",
    "DEFAULT": "default_day", "MAPPED": "[1, 2, 3]", "EDGE": "loaded.set_upstream(rows)",
    "LOAD_ARGS": "",
}


def _fingerprinted_flow_file(path, **changes):
    source = FINGERPRINTED
    for key, value in {**FINGERPRINT_BASE, **changes}.items():
        source = source.replace(key, value)
    path.write_text(source)
    return path


def test_fingerprint_is_the_same_for_the_same_flow_built_in_other_processes(tmp_path):
    path = _fingerprinted_flow_file(tmp_path / "flow.py")
    here = flow_fingerprint(load_flow(path, "fingerprinted"))
    assert here == flow_fingerprint(load_flow(path, "fingerprinted"))
    assert len(here) == 64 and int(here, 16) >= 0
    code = """
        import sys
        from orchestrator.flows.loading import load_flows_from_file
        from orchestrator.storage import flow_fingerprint
        print(flow_fingerprint(load_flows_from_file(sys.argv[1])["fingerprinted"]))
    """
    for seed in ("1", "2"):  # different string hashes, so different set orders
        done = run_python(code, str(path), env=dict(os.environ, PYTHONHASHSEED=seed))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == here


def test_fingerprint_does_not_depend_on_where_the_file_is(tmp_path):
    (tmp_path / "sub").mkdir()
    one = _fingerprinted_flow_file(tmp_path / "one.py")
    two = _fingerprinted_flow_file(tmp_path / "sub" / "two.py")
    assert flow_fingerprint(load_flow(one, "fingerprinted")) == flow_fingerprint(
        load_flow(two, "fingerprinted"))


@pytest.mark.parametrize("change", [
    {"BODY": "2"},                                        # a task body
    {"EDGE": "rows.set_upstream(day)"},                   # an edge
    {"EDGE": "pass"},                                     # an edge removed
    {"DEFAULT": "'2024-01-01'"},                          # a default value
    {"DEFAULT": "lambda: 'x'"},                           # a callable default
    {"RETRY_DELAY": "6"},                                 # a setting
    {"TRIGGER": "triggers.all_finished"},                 # a trigger
    {"TRIGGER": "triggers.some_successful(at_least=1)"},  # a trigger's closure...
    {"MAPPED": "[1, 2, 4]"},                              # a mapped constant
    {"LOAD_ARGS": ", task_args={'tags': ['x']}"},         # a copy's settings
])
def test_fingerprint_changes_when_behaviour_changes(tmp_path, change):
    base = flow_fingerprint(load_flow(_fingerprinted_flow_file(tmp_path / "base.py"),
                                      "fingerprinted"))
    changed = flow_fingerprint(load_flow(
        _fingerprinted_flow_file(tmp_path / "changed.py", **change), "fingerprinted"))
    assert changed != base


def test_fingerprint_sees_trigger_arguments_and_callable_default_bodies(tmp_path):
    def fingerprint(name, **change):
        return flow_fingerprint(load_flow(
            _fingerprinted_flow_file(tmp_path / f"{name}.py", **change), "fingerprinted"))

    assert (fingerprint("a", TRIGGER="triggers.some_successful(at_least=1)")
            != fingerprint("b", TRIGGER="triggers.some_successful(at_least=2)"))
    assert fingerprint("c", DEFAULT="lambda: 'x'") != fingerprint("d", DEFAULT="lambda: 'y'")


def test_fingerprint_changes_with_keyword_constants_and_the_schedule():
    @task
    def add(x, y):
        return x + y

    def build(y, schedule=None):
        with Flow("f", schedule=schedule) as flow:
            add(1, y)
        return flow

    assert flow_fingerprint(build(2)) == flow_fingerprint(build(2))
    assert flow_fingerprint(build(2)) != flow_fingerprint(build(3))
    from orchestrator.schedules import CronSchedule

    assert flow_fingerprint(build(2, schedule=CronSchedule("0 * * * *"))) != flow_fingerprint(
        build(2, schedule=CronSchedule("5 * * * *")))


def test_fingerprint_ignores_object_addresses():
    class Opaque:
        __slots__ = ()

    @task
    def use(value):
        return value

    def build():
        with Flow("f") as flow:
            use(Opaque())
        return flow

    one, two = build(), build()
    assert "0x" in repr(next(iter(one.constants.values()))["value"])
    assert flow_fingerprint(one) == flow_fingerprint(two)


def test_fingerprint_of_a_flow_without_source_code_uses_its_bytecode(tmp_path):
    # `python -c` code has no source file for inspect.getsource to read.
    code = """
        from orchestrator import Flow, task
        from orchestrator.storage import flow_fingerprint

        @task
        def compute(x):
            return [x * 2 for _ in range(BODY)]

        with Flow("inline") as flow:
            compute(1)
        print(flow_fingerprint(flow))
    """
    prints = []
    for body, seed in [("3", "1"), ("3", "2"), ("4", "1")]:
        done = run_python(code.replace("BODY", body), cwd=tmp_path,
                          env=dict(os.environ, PYTHONHASHSEED=seed))
        assert done.returncode == 0, done.stderr
        prints.append(done.stdout.strip())
    assert prints[0] == prints[1]
    assert prints[0] != prints[2]


def test_git_command_slower_than_the_timeout_is_reported(git_repo):
    git_repo.commit_flow("Hello")
    storage = Git(git_repo.url, "flows/hello.py")
    storage.timeout = 0.001
    with pytest.raises(StorageError, match=r"`git clone` for .* did not finish within "
                                           r"0.001 s; check the network"):
        storage.get_flow("hello")


def test_git_lock_held_too_long_by_another_process_is_reported(git_repo):
    git_repo.commit_flow("Hello")
    storage = Git(git_repo.url, "flows/hello.py")
    storage.timeout = 0.2
    checkout = storage.checkout_directory()
    checkout.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time, filelock
        with filelock.FileLock(sys.argv[1]):
            print("locked", flush=True)
            time.sleep(30)
    """), str(checkout) + ".lock"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StorageError) as info:
            storage.get_flow("hello")
    finally:
        holder.kill()
        holder.wait()
    assert f"another process has held {checkout}.lock for more than 0.2 s" in str(info.value)
    storage.timeout = Git.timeout
    assert greeting_of(storage.get_flow("hello")) == "Hello, world"


def test_git_missing_from_path_says_to_install_it(git_repo, tmp_path, monkeypatch):
    git_repo.commit_flow("Hello")
    (tmp_path / "empty-bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(StorageError, match="needs the `git` program, which is not on PATH"):
        Git(git_repo.url, "flows/hello.py").get_flow("hello")
