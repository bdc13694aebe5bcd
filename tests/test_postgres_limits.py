"""Limits, claims and task-tag slots with several processes on one database.

On PostgreSQL the holder count and the claim (or the slot) ran in one READ
COMMITTED transaction, so flow, label and tag limits of 1 let several runs or
tasks run at once; only SQLite's write lock made them safe. A Dask worker lost
while it held a tag slot kept it, and the run hung. Each "host" here is its own
process (claimers are the store's claim and run moves, as an agent and its run
process make them); overlaps are counted from the recorded start and end times.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import overlap

from orchestrator import Flow, service, task
from orchestrator.store import Store

# A claimer process: claims one run at a time, runs it for `hold` seconds (start
# and finish, as a run process does) until no run is left Scheduled.
CLAIMER = r'''
import os, sys, time
from orchestrator.store import Store
url, agent, labels, hold = sys.argv[1], sys.argv[2], sys.argv[3].split(",") if sys.argv[3] else [], float(sys.argv[4])
store = Store.open(url=url)
while True:
    claimed = store.claim_runs(agent, labels, 1)
    for run_id, attempt in claimed:
        store.start_flow_run(run_id, os.getpid(), attempt=attempt)
        time.sleep(hold)
        store.finish_flow_run(run_id, attempt, "Success", "done")
    if not claimed:
        if not store.list_flow_runs(state=["Scheduled", "Submitted"], limit=1):
            break
        time.sleep(0.002)
'''

# Claims only (never starts): prints the (run, attempt) pairs it claimed.
CLAIM_ONLY = r'''
import json, sys, time
from orchestrator.store import Store
url, agent = sys.argv[1], sys.argv[2]
store = Store.open(url=url)
got = []
while True:
    claimed = store.claim_runs(agent, [], 10)
    got.extend(claimed)
    if not claimed and not store.list_flow_runs(state="Scheduled", limit=1):
        break
print(json.dumps(got))
'''


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request, home):
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{home / 'orchestrator.db'}"


def flow_named(name, **options):
    @task
    def noop():
        return 1

    with Flow(name, **options) as flow:
        noop()
    return flow


def overlapping_pairs(spans):
    """Pairs of (start, end) spans that overlap."""
    spans = sorted(spans)
    return sum(1 for i, (_, end) in enumerate(spans) for start, _ in spans[i + 1:]
               if start < end)


def run_claimers(url, count, labels=(), hold=0.01):
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, url, f"agent-{i}",
                               ",".join(labels), str(hold)],
                              stderr=subprocess.PIPE, text=True) for i in range(count)]
    try:
        errors = [p.communicate(timeout=50)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * count, errors


def spans(store, runs):
    found = [store.get_flow_run(r) for r in runs]
    assert {r["state"] for r in found} == {"Success"}
    return [(r["start_time"], r["end_time"]) for r in found]


def test_a_flow_limit_of_one_holds_with_four_claimers(database_url):
    store = Store.open(url=database_url)
    store.create_project("p")
    flow, _ = service.register_flow(store, flow_named("limited", max_concurrent_runs=1), "p")
    runs = [store.create_flow_run(flow["id"])["id"] for _ in range(24)]

    run_claimers(database_url, 4)

    assert overlapping_pairs(spans(store, runs)) == 0


def test_a_label_limit_of_one_holds_with_four_claimers(database_url):
    store = Store.open(url=database_url)
    store.create_project("p")
    flows = [service.register_flow(store, flow_named(name), "p")[0] for name in ("a", "b")]
    store.set_concurrency_limit("gpu", 1)
    runs = [store.create_flow_run(flows[i % 2]["id"], labels=["gpu"])["id"]
            for i in range(24)]

    run_claimers(database_url, 4, labels=["gpu"])

    assert overlapping_pairs(spans(store, runs)) == 0


def test_four_claimers_claim_each_run_exactly_once_on_postgresql(postgres_url):
    store = Store.open(url=postgres_url)
    store.create_project("p")
    flow, _ = service.register_flow(store, flow_named("many"), "p")
    runs = [store.create_flow_run(flow["id"])["id"] for _ in range(200)]
    procs = [subprocess.Popen([sys.executable, "-c", CLAIM_ONLY, postgres_url, f"agent-{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    try:
        outputs = [p.communicate(timeout=50) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outputs]
    claimed = [tuple(c) for out, _ in outputs for c in json.loads(out)]

    assert sorted(run for run, _ in claimed) == sorted(runs)  # each once, none missed
    assert {attempt for _, attempt in claimed} == {1}
    for run_id in runs[::20]:
        run = store.get_flow_run(run_id)
        assert (run["state"], run["attempt"]) == ("Submitted", 1)
        assert [e["state"] for e in store.state_events(run_id)] == ["Scheduled", "Submitted"]


def test_a_slot_whose_lease_ran_out_is_not_taken_back_over_another_holder(database_url):
    # Worker A is cut off past its lease; B takes the slot; A's task, run again,
    # must wait (it once re-took its own lapsed row: two holders of a limit of 1).
    store = Store.open(url=database_url)
    store.create_project("p")
    flow, _ = service.register_flow(store, flow_named("slots"), "p")
    run_id = store.create_flow_run(flow["id"])["id"]
    attempt = store.start_flow_run(run_id, os.getpid())  # slots count while it runs
    t0 = time.time()

    assert store.try_take_task_slot("db", 1, run_id, "a", attempt=attempt, lease=30, now=t0)
    assert not store.try_take_task_slot("db", 1, run_id, "b", attempt=attempt, lease=30, now=t0 + 5)
    assert store.try_take_task_slot("db", 1, run_id, "b", attempt=attempt, lease=30, now=t0 + 40)
    assert not store.try_take_task_slot("db", 1, run_id, "a", attempt=attempt, lease=30,
                                        now=t0 + 41)
    # A holder renewing before its lease runs out keeps its slot.
    assert store.try_take_task_slot("db", 1, run_id, "b", attempt=attempt, lease=30, now=t0 + 60)


# Takes and gives back a slot of tag "db" (limit 1) as a task on a worker does,
# `times` times, writing when it held it.
SLOT_TAKER = r'''
import sys, time
from orchestrator.store import Store
url, run_id, attempt, name, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
store = Store.open(url=url)
for i in range(10):
    holder = f"{run_id}:{attempt}:{name}[{i}]"
    while not store.try_take_task_slot("db", 1, run_id, holder, attempt=attempt, lease=30):
        time.sleep(0.001)
    with open(out, "a") as fh:
        fh.write(f"start {time.time()}\n")
    time.sleep(0.005)
    with open(out, "a") as fh:
        fh.write(f"end {time.time()}\n")
    store.release_task_slots(holder)
'''


def test_a_tag_limit_of_one_holds_with_four_slot_takers(database_url, tmp_path):
    store = Store.open(url=database_url)
    store.create_project("p")
    flow, _ = service.register_flow(store, flow_named("tagged"), "p")
    run = store.create_flow_run(flow["id"])["id"]
    attempt = store.start_flow_run(run, os.getpid())
    out = tmp_path / "spans.txt"
    procs = [subprocess.Popen([sys.executable, "-c", SLOT_TAKER, database_url, str(run),
                               str(attempt), f"task-{i}", str(out)],
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    try:
        errors = [p.communicate(timeout=50)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * 4, errors

    assert overlap(out) == (80, 1)


# -- task-tag limits on a real distributed cluster -----------------------------------
TAGGED = '''
import os, time
from pathlib import Path
from orchestrator import Flow, Parameter, task
from orchestrator.executors import DaskExecutor
from orchestrator.storage import Script

def mark(out, what, name=None):
    with open(out if name is None else out + ".log", "a") as fh:
        fh.write(f"{what} {time.time()}\\n" if name is None
                 else f"{name} {what} {time.time()}\\n")

@task(tags=["db"])
def query(i, out):
    mark(out, "start")
    time.sleep(0.3)
    mark(out, "end")

with Flow("tagged", storage=Script(__file__),
          executor=DaskExecutor(cluster_kwargs={"n_workers": 3, "threads_per_worker": 1,
                                                "processes": True})) as tagged:
    out = Parameter("out")
    for i in range(6):
        query(i, out)

@task(tags=["db"])
def slow(out):
    """Tells its worker's pid; the first time it runs it waits to be killed."""
    mark(out, "start", "slow")
    if not Path(out + ".killed").exists():
        Path(out + ".pid").write_text(str(os.getpid()))
        time.sleep(60)
    mark(out, "end", "slow")

@task(tags=["db"])
def crash(out):
    """Kills its worker, every time it runs."""
    os.kill(os.getpid(), 9)

@task
def pause():
    time.sleep(1.5)

@task(tags=["db"])
def after(out, _):
    mark(out, "start", "after")
    mark(out, "end", "after")
    return "done"

with Flow("lost", storage=Script(__file__),
          executor=DaskExecutor(cluster_kwargs={"n_workers": 3, "threads_per_worker": 1,
                                                "processes": True})) as lost:
    out = Parameter("out")
    slow(out)
    after(out, pause())

with Flow("killer", storage=Script(__file__),
          executor=DaskExecutor(cluster_kwargs={"n_workers": 3, "threads_per_worker": 1,
                                                "processes": True})) as killer:
    out = Parameter("out")
    crash(out)
    after(out, pause())
'''


@pytest.fixture
def tagged(postgres_url, home, tmp_path):
    """(store, env, out): the flows above registered on PostgreSQL, tag 'db' limited
    to 1, and where their tasks write their spans."""
    from orchestrator.flows.loading import load_flows_from_file

    env = dict(os.environ, ORCHESTRATOR_DATABASE_URL=postgres_url,
               ORCHESTRATOR__SERVICES__TASK_SLOT_LEASE="3")
    path = tmp_path / "tagged.py"
    path.write_text(TAGGED)
    store = Store.open(url=postgres_url)
    store.create_project("p")
    for flow in load_flows_from_file(path).values():
        service.register_flow(store, flow, "p")
    store.set_concurrency_limit("db", 1, kind="tag")
    return store, env, tmp_path / "spans.txt"


def execute(env, run_id):
    return subprocess.Popen([sys.executable, "-m", "orchestrator", "execute", str(run_id)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)


def finish(proc, what):
    try:
        return proc.communicate(timeout=90)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{what}: the run hung (still running after 90 s)")


def test_a_tag_limit_of_one_holds_on_dask_workers_on_postgresql(tagged):
    store, env, out = tagged
    run = service.create_flow_run(store, "tagged", parameters={"out": str(out)})["id"]

    errors = finish(execute(env, run), "tagged")

    assert store.get_flow_run(run)["state"] == "Success", errors
    assert overlap(out) == (12, 1)  # 6 tasks started and ended, one at a time


def test_a_task_whose_worker_is_lost_runs_again_and_finds_its_slot(tagged):
    store, env, out = tagged
    run = service.create_flow_run(store, "lost", parameters={"out": str(out)})["id"]
    proc = execute(env, run)
    pid_file = Path(f"{out}.pid")
    while not pid_file.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()
    time.sleep(0.2)  # the pid is written before the task sleeps: let it hold the slot
    Path(f"{out}.killed").touch()
    os.kill(int(pid_file.read_text()), signal.SIGKILL)

    errors = finish(proc, "lost worker")

    final = store.get_flow_run(run)
    assert final["state"] == "Success", (final["message"], errors)
    tasks = {t["task_slug"]: t["state"] for t in store.task_runs(run)}
    assert set(tasks.values()) == {"Success"}, tasks
    # slow ran twice (killed, then again); `after` waited for its slot both times.
    marks = [line.split() for line in Path(f"{out}.log").read_text().splitlines()]
    assert [(name, kind) for name, kind, _ in marks] == [
        ("slow", "start"), ("slow", "start"), ("slow", "end"), ("after", "start"),
        ("after", "end")]


def test_a_task_that_kills_its_worker_fails_and_its_slot_is_given_back(tagged):
    store, env, out = tagged
    env = dict(env, DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0")
    run = service.create_flow_run(store, "killer", parameters={"out": str(out)})["id"]

    errors = finish(execute(env, run), "killed worker")

    final = store.get_flow_run(run)
    assert final["state"] == "Failed", (final["message"], errors)
    tasks = {t["task_slug"].split("-")[0]: t for t in store.task_runs(run)}
    assert tasks["crash"]["state"] == "Failed"
    assert "worker" in tasks["crash"]["message"] and "lost" in tasks["crash"]["message"]
    assert tasks["after"]["state"] == "Success"  # the lost slot came back by its lease
    assert "Traceback" not in errors

