"""Real Prefect 1 flows run unchanged.

data/prefect1_flows holds flow files written against Prefect 1 the way its
users write them, and expected.json what Prefect 1.4.1 made of each (recorded
by scripts/record_prefect1_outcomes.py, since CI has no Prefect 1). Here the
folder is copied, converted with `orchestrator migrate DIR --write`, and each
converted flow is run with `flow.run()` under the same parameters, local
Slack and SMTP servers and environment: its final state, every task's state
and result (per map index), and the messages it sent must be Prefect 1's.
The unconverted files must also run with the Prefect 1 import switch on.

The recorder script is imported for what both sides share: the servers, the
environment, and how an outcome is described.
"""

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import service_env

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "data" / "prefect1_flows"
EXPECTED = json.loads((FLOWS / "expected.json").read_text())["flows"]
FLOW_FILES = sorted(EXPECTED)


def _load_recorder():
    spec = importlib.util.spec_from_file_location(
        "record_prefect1_outcomes", ROOT / "scripts" / "record_prefect1_outcomes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


recorder = _load_recorder()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A copy of the folder after `orchestrator migrate DIR --write`, and the
    command's result."""
    base = tmp_path_factory.mktemp("prefect1-converted")
    folder = recorder.copy_flows(FLOWS, base / "flows")
    home = base / "home"
    home.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "migrate", str(folder), "--write"],
        env=service_env(home), cwd=base, capture_output=True, text=True, timeout=120, check=False)
    return folder, proc


@pytest.fixture(scope="module")
def servers():
    with recorder.SlackWebhook() as slack, recorder.SmtpSink() as smtp:
        yield slack, smtp


@pytest.fixture(scope="module")
def switch_outcomes(tmp_path_factory):
    """Every unconverted flow run in one `orchestrator` process with the
    Prefect 1 import switch on (its own servers; the switch stays out of this
    test process): {file: outcome}, or the process's error output."""
    base = tmp_path_factory.mktemp("prefect1-switch")
    folder = recorder.copy_flows(FLOWS, base / "flows")
    home = base / "home"
    home.mkdir()
    out = base / "outcomes.json"
    env = service_env(home)
    env["ORCHESTRATOR__COMPAT__PREFECT_IMPORTS"] = "true"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "record_prefect1_outcomes.py"),
         "--all", str(folder), "--engine", "orchestrator", "--out", str(out)],
        env=env, cwd=base, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0 or not out.exists():
        return proc.stderr[-3000:] or f"exit code {proc.returncode}"
    return json.loads(out.read_text())


def _show(outcome):
    return json.dumps(outcome, sort_keys=True)[:300]


def _same_result(expected, actual):
    # An exception's type must match; its message may be worded better here
    # (README: errors name the value, the problem and the fix).
    if isinstance(expected, dict) and "error" in expected:
        return isinstance(actual, dict) and actual.get("error") == expected["error"]
    return expected == actual


def _same_task(expected, actual):
    if isinstance(expected, list) or isinstance(actual, list):
        return (isinstance(expected, list) and isinstance(actual, list)
                and len(expected) == len(actual)
                and all(_same_task(e, a) for e, a in zip(expected, actual)))
    if expected.get("state") != actual.get("state"):
        return False
    if "map" in expected or "map" in actual:
        return _same_task(expected.get("map"), actual.get("map"))
    return _same_result(expected.get("result"), actual.get("result"))


def differences(expected, actual):
    """Lines saying how `actual` (orchestrator) differs from `expected`
    (Prefect 1.4.1); empty when it does not."""
    if "error" in actual:
        return [f"did not run: {actual['error']}"]
    lines = []
    if actual["state"] != expected["state"]:
        lines.append(f"flow ends {actual['state']}, Prefect 1: {expected['state']}")
    want, got = expected["tasks"], actual["tasks"]
    for name in sorted(set(want) | set(got)):
        if name not in got:
            lines.append(f"task {name!r} missing; Prefect 1: {_show(want[name])}")
        elif name not in want:
            lines.append(f"task {name!r} is not in Prefect 1's run: {_show(got[name])}")
        elif not _same_task(want[name], got[name]):
            lines.append(f"task {name!r}: {_show(got[name])}; Prefect 1: {_show(want[name])}")
    for sent in ("slack", "emails"):
        if expected.get(sent) != actual.get(sent):
            lines.append(f"{sent} sent: {actual.get(sent)}; Prefect 1: {expected.get(sent)}")
    return lines


# -- the folder itself ------------------------------------------------------------
def test_every_flow_file_has_a_recorded_outcome():
    files = sorted(p.name for p in FLOWS.glob("*.py"))
    assert files == FLOW_FILES, "re-run scripts/record_prefect1_outcomes.py"
    assert len(files) >= 20


@pytest.mark.parametrize("name", FLOW_FILES)
def test_flow_file_runs_nothing_at_import(name):
    """Loading a file defines its flow; a run only under `__main__`."""
    tree = ast.parse((FLOWS / name).read_text())
    for node in tree.body:
        guarded = (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                   and getattr(node.test.left, "id", None) == "__name__")
        if guarded:
            continue
        for call in ast.walk(node):
            if isinstance(call, ast.Call) and getattr(call.func, "attr", None) == "run" \
                    and getattr(call.func.value, "id", None) == "flow":
                pytest.fail(f"{name}:{call.lineno} runs its flow at import")


def test_differences_are_reported():
    """The comparison itself: a changed state, result or task is named."""
    expected = {"state": "Success", "tasks": {
        "a": {"state": "Success", "result": 1},
        "m": {"state": "Mapped", "map": [{"state": "Failed",
                                           "result": {"error": "ValueError", "message": "x"}}]}}}
    same = json.loads(json.dumps(expected))
    same["tasks"]["m"]["map"][0]["result"]["message"] = "x, better worded"
    assert differences(expected, same) == []
    changed = json.loads(json.dumps(expected))
    changed["state"] = "Failed"
    changed["tasks"]["a"]["result"] = 2
    changed["tasks"]["m"]["map"][0]["result"]["error"] = "KeyError"
    changed["tasks"]["b"] = {"state": "Success", "result": None}
    lines = differences(expected, changed)
    assert len(lines) == 4
    assert [line.split(" ")[1] for line in lines[1:]] == ["'a':", "'b'", "'m':"]


# -- converted by `orchestrator migrate` -----------------------------------------------
def test_migrate_maps_every_name(converted):
    folder, proc = converted
    assert proc.returncode == 0, (
        f"orchestrator migrate exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-3000:]}")
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            left = [n for n in names if n == "prefect" or n.startswith("prefect.")]
            assert not left, f"{path.name}:{node.lineno} still imports {left}"


@pytest.mark.parametrize("name", FLOW_FILES)
def test_converted_flow_runs_like_prefect1(name, converted, servers, monkeypatch):
    folder, proc = converted
    if proc.returncode not in (0, 1):
        pytest.fail(f"orchestrator migrate failed (exit {proc.returncode}): "
                    f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    slack, smtp = servers
    recorder.delivered(slack, smtp)  # nothing left over from another flow
    for key, value in recorder.flow_environment(slack.url, smtp.host, smtp.port).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the loader adds the folder
    expected = EXPECTED[name]
    try:
        actual = recorder.run_flow_file(folder / name, "orchestrator", expected["parameters"])
    except Exception as exc:  # noqa: BLE001 - say which flow and why, as a difference
        actual = {"error": f"{type(exc).__name__}: {exc}"}
    actual.update(recorder.delivered(slack, smtp))
    lines = differences(expected, actual)
    assert not lines, f"{name} differs from Prefect 1.4.1:\n  " + "\n  ".join(lines)


# -- unconverted, with the import switch ----------------------------------------------
@pytest.mark.parametrize("name", FLOW_FILES)
def test_unconverted_flow_runs_with_import_switch(name, switch_outcomes):
    if isinstance(switch_outcomes, str):
        pytest.fail(f"the flows did not run with the import switch on:\n{switch_outcomes}")
    lines = differences(EXPECTED[name], switch_outcomes[name])
    assert not lines, (f"{name} (import switch on) differs from Prefect 1.4.1:\n  "
                       + "\n  ".join(lines))
