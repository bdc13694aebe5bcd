"""Prefect 1's run configs (UniversalRun, DockerRun, KubernetesRun, ECSRun,
VertexRun): their constructors and stored refs as in Prefect 1.4.1, labels,
hidden env values, and which runs our agents leave for another kind of agent."""

import inspect
import json
import sys
import time
import warnings

import pytest
from helpers import claim, cli

from orchestrator import service
from orchestrator.service.explain import explain_flow_run
from orchestrator.run_configs import (AGENT_KINDS, DockerRun, ECSRun, KubernetesRun, LocalRun,
                                      RunConfig, RunConfigError, UniversalRun, VertexRun,
                                      needs_other_agent)
from orchestrator.daemons.agent import Agent, runs_as_a_process

PREFECT1_CLASSES = [UniversalRun, DockerRun, KubernetesRun, ECSRun, VertexRun]

# inspect.signature of Prefect 1.4.1's classes, without the annotations.
PREFECT1_SIGNATURES = {
    "UniversalRun": "(env=None, labels=None)",
    "DockerRun": "(*, image=None, env=None, labels=None, ports=None, host_config=None)",
    "KubernetesRun": "(*, job_template_path=None, job_template=None, image=None, env=None, "
                     "cpu_limit=None, cpu_request=None, memory_limit=None, "
                     "memory_request=None, service_account_name=None, "
                     "image_pull_secrets=None, labels=None, image_pull_policy=None)",
    "ECSRun": "(*, task_definition=None, task_definition_path=None, "
              "task_definition_arn=None, image=None, env=None, cpu=None, memory=None, "
              "task_role_arn=None, execution_role_arn=None, run_task_kwargs=None, "
              "labels=None)",
    "VertexRun": "(*, env=None, labels=None, image=None, machine_type='e2-standard-4', "
                 "scheduling=None, service_account=None, network=None, "
                 "worker_pool_specs=None)",
}


# -- constructors and refs, as Prefect 1.4.1 --------------------------------------
@pytest.mark.parametrize("cls", PREFECT1_CLASSES, ids=lambda cls: cls.__name__)
def test_the_constructor_is_prefect1s(cls):
    assert str(inspect.signature(cls)) == PREFECT1_SIGNATURES[cls.__name__]


def test_local_run_takes_every_keyword_of_prefect1s_with_its_defaults():
    ours = inspect.signature(LocalRun).parameters
    for name in ("env", "working_dir", "labels"):  # Prefect 1: all keyword-only, None
        assert ours[name].default is None
        assert ours[name].kind in (inspect.Parameter.KEYWORD_ONLY,
                                   inspect.Parameter.POSITIONAL_OR_KEYWORD)


def test_universal_run_takes_env_and_labels_by_position_as_in_prefect1():
    assert UniversalRun({"A": "1"}, ["x"]).to_ref() == {
        "type": "UniversalRun", "labels": ["x"], "env": {"A": "1"}}


# What Prefect 1.4.1's serialize() gives for the same calls (without
# "__version__"; Prefect 1 stores env=None where we store {}).
@pytest.mark.parametrize("config, ref", [
    (UniversalRun(), {"type": "UniversalRun", "labels": [], "env": {}}),
    (DockerRun(image="python:3.11", ports=["8080", 9000], host_config={"mem_limit": "2g"}),
     {"type": "DockerRun", "labels": [], "env": {}, "image": "python:3.11",
      "ports": [8080, 9000], "host_config": {"mem_limit": "2g"}}),
    (KubernetesRun(cpu_limit=2, cpu_request=0.5, memory_limit="4Gi",
                   image_pull_secrets=("regcred",), image_pull_policy="Always"),
     {"type": "KubernetesRun", "labels": [], "env": {}, "job_template_path": None,
      "job_template": None, "image": None, "cpu_limit": "2", "cpu_request": "0.5",
      "memory_limit": "4Gi", "memory_request": None, "service_account_name": None,
      "image_pull_secrets": ["regcred"], "image_pull_policy": "Always"}),
    (KubernetesRun(job_template_path="s3://bucket/job.yaml"),
     {"type": "KubernetesRun", "labels": [], "env": {}, "job_template_path":
      "s3://bucket/job.yaml", "job_template": None, "image": None, "cpu_limit": None,
      "cpu_request": None, "memory_limit": None, "memory_request": None,
      "service_account_name": None, "image_pull_secrets": None, "image_pull_policy": None}),
    (ECSRun(cpu=1024, memory="2 GB", run_task_kwargs={"cluster": "flows"}),
     {"type": "ECSRun", "labels": [], "env": {}, "task_definition": None,
      "task_definition_path": None, "task_definition_arn": None, "image": None,
      "cpu": "1024", "memory": "2 GB", "task_role_arn": None, "execution_role_arn": None,
      "run_task_kwargs": {"cluster": "flows"}}),
    (VertexRun(), {"type": "VertexRun", "labels": [], "env": {}, "image": None,
                   "machine_type": "e2-standard-4", "scheduling": None,
                   "service_account": None, "network": None, "worker_pool_specs": None}),
], ids=lambda value: type(value).__name__ if isinstance(value, RunConfig) else "")
def test_the_ref_holds_what_prefect1_stored_and_round_trips_through_json(config, ref):
    assert config.to_ref() == ref
    rebuilt = RunConfig.from_ref(json.loads(json.dumps(config.to_ref())))
    assert type(rebuilt) is type(config)
    assert rebuilt == config


@pytest.mark.parametrize("cls", PREFECT1_CLASSES, ids=lambda cls: cls.__name__)
def test_labels_and_env_are_kept_and_checked_as_for_local_run(cls):
    config = cls(env={"B": "2", "A": "1"}, labels=["prod", "eu", "prod"])
    assert config.labels == ["eu", "prod"]
    assert config.env == {"A": "1", "B": "2"}
    assert RunConfig.from_ref(config.to_ref()) == config
    assert config != cls(labels=["prod"])
    with pytest.raises(RunConfigError, match=rf"{cls.__name__}\(labels=5\): labels must be"):
        cls(labels=5)
    with pytest.raises(RunConfigError, match=r"env\['PORT'\] = 8080 is a int"):
        cls(env={"PORT": 8080})


@pytest.mark.parametrize("cls", PREFECT1_CLASSES, ids=lambda cls: cls.__name__)
def test_a_string_label_is_one_label_with_a_warning_at_the_caller(cls):
    with pytest.warns(UserWarning) as caught:
        config = cls(labels="prod")
    assert config.labels == ["prod"]
    [warning] = caught
    assert f"{cls.__name__}: labels='prod' is a string" in str(warning.message)
    assert warning.filename == __file__


@pytest.mark.parametrize("cls", PREFECT1_CLASSES, ids=lambda cls: cls.__name__)
def test_repr_hides_env_values(cls):
    text = repr(cls(env={"TOKEN": "s3cret"}, labels=["prod"]))
    assert "s3cret" not in text
    assert text.startswith(f"{cls.__name__}(labels=['prod'], env={{'TOKEN': ...}}")


def test_repr_hides_values_inside_templates_and_keyword_dicts():
    text = repr(ECSRun(task_definition={"containerDefinitions": [
        {"environment": [{"name": "TOKEN", "value": "s3cret"}]}]},
        run_task_kwargs={"overrides": {"password": "hunter2"}}, cpu=512))
    assert "s3cret" not in text and "hunter2" not in text
    assert text == ("ECSRun(labels=[], task_definition={'containerDefinitions': ...}, "
                    "cpu='512', run_task_kwargs={'overrides': ...})")
    assert repr(DockerRun(image="python:3.11", ports=[80])) == (
        "DockerRun(labels=[], image='python:3.11', ports=[80])")


# -- what Prefect 1 checks and reads when the config is made --------------------------
JOB_YAML = "apiVersion: batch/v1\nkind: Job\nspec:\n  template: {}\n"


@pytest.mark.parametrize("form", ["{path}", "file://{path}", "local://{path}"])
def test_a_local_job_template_is_read_when_the_config_is_made(tmp_path, form):
    path = tmp_path / "job.yaml"
    path.write_text(JOB_YAML)
    config = KubernetesRun(job_template_path=form.format(path=path))
    assert config.job_template == {"apiVersion": "batch/v1", "kind": "Job",
                                   "spec": {"template": {}}}
    assert config.job_template_path is None
    path.unlink()  # the ref holds the template, not the file's name
    assert RunConfig.from_ref(config.to_ref()) == config


def test_a_relative_template_path_is_read_from_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "task.yaml").write_text("family: flows\n")
    monkeypatch.chdir(tmp_path)
    config = ECSRun(task_definition_path="task.yaml")
    assert (config.task_definition, config.task_definition_path) == ({"family": "flows"}, None)
    # Prefect 1 read "file://task.yaml" as an empty path and failed; this reads the file.
    assert KubernetesRun(job_template_path="file://task.yaml").job_template == {
        "family": "flows"}


def test_a_job_template_given_as_yaml_text_is_kept_as_a_dict():
    assert KubernetesRun(job_template=JOB_YAML).job_template["kind"] == "Job"


@pytest.mark.parametrize("make, words", [
    (lambda: KubernetesRun(job_template_path="/no/such/job.yaml"),
     "KubernetesRun(job_template_path='/no/such/job.yaml'): cannot read '/no/such/job.yaml' "
     "(No such file or directory); a local job template is read when the run config is "
     "made"),
    (lambda: ECSRun(task_definition_path="/no/such/td.yaml"),
     "a local task definition is read when the run config is made"),
    (lambda: KubernetesRun(job_template="- a\n- b\n"),
     "job_template is YAML for a list, not a mapping"),
    (lambda: KubernetesRun(job_template="kind: [Job\n"), "job_template (a string) is not "
                                                         "valid YAML"),
    (lambda: KubernetesRun(job_template={"kind": "Job"}, job_template_path="s3://b/j.yaml"),
     "give job_template_path or job_template, not both"),
    (lambda: KubernetesRun(image_pull_policy="always"),
     "KubernetesRun(image_pull_policy='always'): not a pull policy; use one of 'Always', "
     "'IfNotPresent', 'Never'"),
    (lambda: ECSRun(task_definition={"family": "f"}, task_definition_arn="flows:1"),
     "give one of task_definition, task_definition_path or task_definition_arn, not "
     "task_definition and task_definition_arn"),
    (lambda: ECSRun(task_definition_arn="flows:1", image="python:3.11"),
     "give task_definition_arn or image, not both"),
    (lambda: DockerRun(ports=8080), "DockerRun(ports=8080): ports must be a list of port "
                                    "numbers, not int; e.g. ports=[8080]"),
    (lambda: DockerRun(ports=["http"]), "port 'http' is not a whole number"),
    (lambda: DockerRun(image=3), "DockerRun(image=3): image must be a string, not int"),
    (lambda: DockerRun(host_config=["mem_limit=2g"]), "host_config must be a dict"),
    (lambda: VertexRun(worker_pool_specs=["e2"]), "worker_pool_specs must be a list of dicts"),
    (lambda: ECSRun(run_task_kwargs={"when": object()}), "run_task_kwargs cannot be stored as "
                                                         "JSON"),
    (lambda: KubernetesRun(image_pull_secrets=[5]), "5 is a int, not a string"),
], ids=range(15))
def test_what_prefect1_refuses_is_refused_naming_the_value(make, words):
    # (Prefect 1 raised ValueError for these; RunConfigError is one.)
    with pytest.raises(RunConfigError) as info:
        make()
    assert words in str(info.value)


def test_a_remote_template_is_kept_for_the_agent_and_never_read_here():
    assert ECSRun(task_definition_path="gcs://b/td.yaml").task_definition_path == \
        "gcs://b/td.yaml"
    assert KubernetesRun(job_template_path="agent:///etc/job.yaml").job_template is None


def test_one_image_pull_secret_given_as_a_string_is_one_name_with_a_warning():
    # Prefect 1 made "regcred" into seven one-letter secrets.
    with pytest.warns(UserWarning, match=r"image_pull_secrets='regcred' is a string") as caught:
        config = KubernetesRun(image_pull_secrets="regcred")
    assert config.image_pull_secrets == ["regcred"]
    assert caught[0].filename == __file__


def test_yaml_without_pyyaml_is_an_error_naming_the_extra(tmp_path, monkeypatch):
    # PyYAML is installed here; a None entry makes `import yaml` fail as if it were not.
    monkeypatch.setitem(sys.modules, "yaml", None)
    (tmp_path / "job.yaml").write_text(JOB_YAML)
    with pytest.raises(RunConfigError) as info:
        KubernetesRun(job_template_path=str(tmp_path / "job.yaml"))
    assert "needs PyYAML, which is not installed; install it with: pip install -e '.[yaml]'" \
        in str(info.value)
    # Nothing else needs it.
    assert KubernetesRun(job_template={"kind": "Job"}, cpu_limit=1).cpu_limit == "1"


# -- which agent runs what ------------------------------------------------------------
@pytest.mark.parametrize("config, kind", [
    (None, None), (LocalRun(), None), (UniversalRun(), None), (DockerRun(), "Docker"),
    (KubernetesRun(), "Kubernetes"), (ECSRun(), "ECS"), (VertexRun(), "Vertex"),
], ids=lambda value: type(value).__name__ if isinstance(value, RunConfig) else str(value))
def test_needs_other_agent_for_configs_and_their_refs(config, kind):
    assert needs_other_agent(config) == kind
    if config is not None:
        assert needs_other_agent(config.to_ref()) == kind


def test_every_run_config_has_an_agent_kind_and_a_subclass_has_its_bases():
    assert set(AGENT_KINDS) == set(RunConfig._types)
    assert needs_other_agent({"type": "SomeFutureRun"}) is None

    class TeamDockerRun(DockerRun):
        pass

    try:
        assert needs_other_agent(TeamDockerRun()) == "Docker"
        assert needs_other_agent(TeamDockerRun().to_ref()) == "Docker"
    finally:
        del RunConfig._types["TeamDockerRun"]  # keep the family as it was for other tests


FLOWS = '''
import os
from orchestrator import Flow, Parameter, task
from orchestrator.run_configs import DockerRun, ECSRun, LocalRun, UniversalRun
from orchestrator.storage import Script

@task
def record(out):
    with open(out, "a") as fh:
        fh.write(os.environ.get("ORCH_TEST_VALUE", "unset") + "\\n")

with Flow("in-docker", storage=Script(__file__),
          run_config=DockerRun(image="python:3.11", env={"TOKEN": "s3cret"})) as docker_flow:
    record(Parameter("out"))

with Flow("on-ecs", storage=Script(__file__), run_config=ECSRun(cpu=256)) as ecs_flow:
    record(Parameter("out"))

with Flow("anywhere", storage=Script(__file__),
          run_config=UniversalRun(env={"ORCH_TEST_VALUE": "from-universal"},
                                  labels=["etl"])) as universal_flow:
    record(Parameter("out"))

with Flow("here", storage=Script(__file__), run_config=LocalRun()) as local_flow:
    record(Parameter("out"))
'''


@pytest.fixture
def run_config_flows_store(registered_store):
    """A Store whose project "p" holds the flows of FLOWS."""
    return registered_store(FLOWS, "prefect1_run_config_flows.py")


def make_run(store, flow, out, **options):
    return service.create_flow_run(store, flow, parameters={"out": str(out)}, **options)["id"]


def wait_until_finished(agent, store, run_ids, timeout=30):
    deadline = time.monotonic() + timeout
    states = None
    while time.monotonic() < deadline:
        agent.run_once()
        states = [store.get_flow_run(r)["state"] for r in run_ids]
        if all(s in ("Success", "Failed", "Cancelled") for s in states) and not agent.children:
            return states
        time.sleep(0.05)
    raise AssertionError(f"runs did not finish: {states}")


def test_a_registered_flow_keeps_its_run_config(run_config_flows_store):
    flow = run_config_flows_store.get_flow("in-docker", project="p")
    assert RunConfig.from_ref(flow["run_config"]) == DockerRun(image="python:3.11",
                                                               env={"TOKEN": "s3cret"})
    flow = run_config_flows_store.get_flow("anywhere", project="p")
    assert RunConfig.from_ref(flow["run_config"]) == UniversalRun(
        env={"ORCH_TEST_VALUE": "from-universal"}, labels=["etl"])
    assert flow["labels"] == ["etl"]  # a run config's labels are the flow's


def test_a_docker_run_is_not_claimed_and_runs_behind_it_are(run_config_flows_store, tmp_path):
    docker = make_run(run_config_flows_store, "in-docker", tmp_path / "docker.txt")
    here = make_run(run_config_flows_store, "here", tmp_path / "here.txt")
    assert claim(run_config_flows_store, "agent-a", [], 5, runs_config=runs_as_a_process) == [here]
    assert run_config_flows_store.get_flow_run(docker)["state"] == "Scheduled"
    assert claim(run_config_flows_store, "agent-a", ["anything"], 5,
                 runs_config=runs_as_a_process) == []


def test_many_waiting_docker_runs_do_not_hide_a_younger_run_an_agent_takes(run_config_flows_store,
                                                                           tmp_path):
    # The claim reads due runs a page at a time: 250 runs that wait for a Docker
    # agent fill more than a page, and the run behind them is still found.
    waiting = [make_run(run_config_flows_store, "in-docker", tmp_path / "d.txt")
               for _ in range(250)]
    here = make_run(run_config_flows_store, "here", tmp_path / "here.txt")
    assert claim(run_config_flows_store, "agent-a", [], 5, runs_config=runs_as_a_process) == [here]
    assert {run_config_flows_store.get_flow_run(r)["state"] for r in waiting} == {"Scheduled"}


def test_an_agent_leaves_docker_and_ecs_runs_scheduled(run_config_flows_store, tmp_path):
    runs = [make_run(run_config_flows_store, "in-docker", tmp_path / "d.txt"),
            make_run(run_config_flows_store, "on-ecs", tmp_path / "e.txt")]
    agent = Agent(run_config_flows_store, hostname_label=False)
    assert agent.run_once() == []
    assert agent.children == {}
    assert [run_config_flows_store.get_flow_run(r)["state"] for r in runs] == [
        "Scheduled", "Scheduled"]
    assert [run_config_flows_store.get_flow_run(r)["attempt"] for r in runs] == [0, 0]


def test_explain_says_which_agent_a_run_needs_and_how_to_change_the_flow(run_config_flows_store,
                                                                         tmp_path):
    docker = make_run(run_config_flows_store, "in-docker", tmp_path / "d.txt")
    ecs = make_run(run_config_flows_store, "on-ecs", tmp_path / "e.txt")
    # An agent is there, and takes neither.
    Agent(run_config_flows_store, hostname_label=False).run_once()

    reasons = explain_flow_run(run_config_flows_store, docker)
    assert reasons == [
        "Its flow p/in-docker has run config DockerRun, which needs a Docker agent; none of "
        "ours runs it (our agents run flows as local processes), so it waits. To run it "
        "here, give the flow run_config=LocalRun(...) or UniversalRun(...) with the same "
        "labels and env instead of DockerRun, and register it again."]
    assert "needs an ECS agent" in explain_flow_run(run_config_flows_store, ecs)[0]
    assert "s3cret" not in " ".join(reasons)


def test_orchestrator_explain_prints_it(run_config_flows_store, tmp_path, home):
    run = make_run(run_config_flows_store, "in-docker", tmp_path / "d.txt")
    assert "needs a Docker agent; none of ours runs it" in cli(home, "explain", run)


def test_a_universal_run_flow_runs_under_an_agent_with_its_env_and_labels(run_config_flows_store,
                                                                          tmp_path):
    out = tmp_path / "universal.txt"
    run = make_run(run_config_flows_store, "anywhere", out)
    assert run_config_flows_store.get_flow_run(run)["labels"] == ["etl"]
    assert Agent(run_config_flows_store, name="unlabelled", hostname_label=False).run_once() == []

    agent = Agent(run_config_flows_store, name="etl-agent", labels=["etl"], hostname_label=False)
    assert wait_until_finished(agent, run_config_flows_store, [run]) == ["Success"]
    assert out.read_text() == "from-universal\n"


def test_constructing_the_new_run_configs_warns_about_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for cls in PREFECT1_CLASSES:
            cls(labels=["a"], env={"A": "1"})
