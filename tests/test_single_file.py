"""The single-file build (scripts/build -> orchestrator.pyz) as an edge box runs
it: a plain python3, no virtualenv, a minimal environment (PATH=/usr/bin:/bin
and HOME only), the home in its default place under HOME.

The .pyz is built once per session into a temporary folder (about 10 s; the
package index is needed), or taken from ORCHESTRATOR_PYZ when that is set.
ORCHESTRATOR_PYZ_PYTHON runs it with another interpreter (say, a 3.10).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT

from orchestrator.daemons.agent import orchestrator_command
from orchestrator.version import __version__

MINIMAL_PATH = "/usr/bin:/bin"
API_LINE = re.compile(r"API:\s+(http://127\.0\.0\.1:(\d+))/api/health")

FLOW = '''
import boxpkg   # installed on the box (its user site-packages), not in the .pyz

from orchestrator import Flow, Parameter, get_logger, task


@task
def greet(name):
    return f"Hello, {name}, from {boxpkg.WHERE}!"


@task
def say(text):
    get_logger().info(text)


with Flow("edge-hello") as flow:
    say(greet(Parameter("name", default="world")))
'''


@pytest.fixture(scope="session")
def pyz(tmp_path_factory):
    given = os.environ.get("ORCHESTRATOR_PYZ")
    if given:
        return Path(given).resolve()
    out = tmp_path_factory.mktemp("pyz") / "orchestrator.pyz"
    done = subprocess.run(["bash", str(ROOT / "scripts" / "build"), str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"scripts/build failed:\n{done.stdout}\n{done.stderr}"
    return out


def box_python():
    """A python3 >= 3.10 found with PATH=/usr/bin:/bin, as on a box; else the
    interpreter this venv was made from (a pyenv one, say), by absolute path."""
    if os.environ.get("ORCHESTRATOR_PYZ_PYTHON"):
        return os.environ["ORCHESTRATOR_PYZ_PYTHON"]
    found = shutil.which("python3", path=MINIMAL_PATH)
    if found and subprocess.run([found, "-c", "import sys; sys.exit(sys.version_info < (3, 10))"],
                                check=False).returncode == 0:
        return found
    return str(Path(sys.base_prefix) / "bin" / "python3")


class Box:
    """A home folder and a working folder with no virtualenv; `env` is all the
    environment the .pyz gets, as `env -i PATH=/usr/bin:/bin HOME=...` gives."""

    def __init__(self, folder):
        self.python = box_python()
        self.home = folder / "user"
        self.cwd = folder / "work"
        self.home.mkdir()
        self.cwd.mkdir()
        self.env = {"PATH": MINIMAL_PATH, "HOME": str(self.home)}

    def run(self, *args, timeout=120):
        return subprocess.run([self.python, *map(str, args)], env=self.env, cwd=self.cwd,
                              capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def box(tmp_path):
    return Box(tmp_path)


def test_the_pyz_holds_pure_python_only_so_one_file_fits_every_cpython(pyz):
    with zipfile.ZipFile(pyz) as archive:
        names = archive.namelist()
    assert "site-packages/orchestrator/api/web/index.html" in names
    assert [name for name in names if name.endswith((".so", ".pyd", ".dylib"))] == []


def test_run_processes_start_as_python_dash_m_from_an_install_and_the_binary_when_frozen(
        monkeypatch):
    assert orchestrator_command() == [sys.executable, "-m", "orchestrator"]
    assert orchestrator_command("/opt/py") == ["/opt/py", "-m", "orchestrator"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)  # a PyInstaller executable
    assert orchestrator_command() == [sys.executable]


def request(url, method="GET", body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type"), error.read()


def test_the_pyz_runs_up_registers_and_runs_a_flow_in_a_minimal_environment(pyz, box):
    version = box.run(pyz, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"orchestrator, version {__version__}"

    # A package the box has installed itself, for the flow to import.
    minor = box.run("-c", "import sys; print('%d.%d' % sys.version_info[:2])").stdout.strip()
    user_site = box.home / ".local" / "lib" / f"python{minor}" / "site-packages"
    user_site.mkdir(parents=True)
    (user_site / "boxpkg.py").write_text('WHERE = "the box"\n')
    flow_file = box.cwd / "edge_hello.py"
    flow_file.write_text(FLOW)
    created = box.run(pyz, "project", "create", "edge")
    assert created.returncode == 0, created.stderr

    out_path, err_path = box.cwd / "up.stdout", box.cwd / "up.stderr"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        up = subprocess.Popen([box.python, str(pyz), "up", "--port", "0", "--poll-interval",
                               "0.1"], env=box.env, cwd=box.cwd, stdin=subprocess.DEVNULL,
                              stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while not (found := API_LINE.search(out_path.read_text())):
            assert up.poll() is None and time.monotonic() < deadline, \
                f"no API line:\n{out_path.read_text()}\n{err_path.read_text()}"
            time.sleep(0.1)
        url = found.group(1)
        home = box.home / ".orchestrator"  # the default ORCHESTRATOR_HOME
        token = (home / "api-token").read_text().strip()
        assert home.stat().st_mode & 0o777 == 0o700
        for name in ("orchestrator.db", "api-token"):
            assert (home / name).stat().st_mode & 0o777 == 0o600, name

        status, _, body = request(url + "/api/health", token=token)
        assert status == 200 and json.loads(body)["version"] == __version__
        # The web page's files are read from inside the zip.
        status, kind, page = request(url + "/")
        assert status == 200 and kind.startswith("text/html") and b"<html" in page.lower()
        status, _, _ = request(url + "/api/flows")
        assert status == 401

        # Registered over REST: the server loads the file in a child started from the .pyz.
        status, _, body = request(url + "/api/flows", "POST", token=token, body={
            "project": "edge", "storage": {"type": "Script", "path": str(flow_file)}})
        assert status == 201, body
        status, _, body = request(url + "/api/flow_runs", "POST", token=token, body={
            "flow": "edge/edge-hello", "parameters": {"name": "Ada"}})
        assert status == 201, body
        run_id = json.loads(body)["id"]

        deadline = time.monotonic() + 90
        while True:
            run = json.loads(request(f"{url}/api/flow_runs/{run_id}", token=token)[2])
            if run["state"] in ("Success", "Failed", "Cancelled", "TimedOut"):
                break
            assert time.monotonic() < deadline, (run, err_path.read_text())
            time.sleep(0.2)
        logs = json.loads(request(f"{url}/api/flow_runs/{run_id}/logs", token=token)[2])
        messages = [line["message"] for line in logs["logs"]]
        stderr_files = sorted((home / "logs").glob(f"run-{run_id}.*.stderr"))
        assert run["state"] == "Success", (run, messages,
                                           [p.read_text() for p in stderr_files])
        assert "Hello, Ada, from the box!" in messages

        up.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0, err_path.read_text()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)
