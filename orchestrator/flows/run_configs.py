"""Run configs: what a flow run needs from the agent that runs it.

    LocalRun(labels=["prod", "gpu"], env={"STAGE": "prod"}, working_dir="/srv/etl")

Labels decide which agents may pick a run up: an agent takes a run whose
labels are a subset of its own. Prefect 1 turned `labels="prod"` into four
labels ("p", "r", "o", "d"); here a string is one label, with a warning that
says to pass a list. A run config is stored as `to_ref()` (a JSON dict) and
rebuilt with `RunConfig.from_ref(ref)`.

Prefect 1's other run configs are here with their constructors, so flows
written for them load and register unchanged: `UniversalRun` (any agent),
`DockerRun`, `KubernetesRun`, `ECSRun` and `VertexRun`. Our agents run flows as
local processes, so they run `LocalRun`, `UniversalRun` and flows without a
run config; a run whose flow needs a Docker, Kubernetes, ECS or Vertex agent
waits, and `orchestrator explain RUN` says so (see `needs_other_agent`).
"""

import json
import os
import warnings
from collections.abc import Mapping
from urllib.parse import urlsplit

from ..exceptions import OrchestratorError
from ..core.labels import check_labels
from .refs import Referable

__all__ = ["RunConfigError", "RunConfig", "LocalRun", "UniversalRun", "DockerRun",
           "KubernetesRun", "ECSRun", "VertexRun", "AGENT_KINDS", "needs_other_agent"]

#: The kind of agent each run config is written for. Ours are "local" agents and
#: also run "any" (UniversalRun); Prefect 1 had one agent per other kind.
AGENT_KINDS = {"LocalRun": "local", "UniversalRun": "any", "DockerRun": "Docker",
               "KubernetesRun": "Kubernetes", "ECSRun": "ECS", "VertexRun": "Vertex"}
_OUR_AGENT_KINDS = ("local", "any")


def needs_other_agent(run_config):
    """The kind of agent ("Docker", "Kubernetes", "ECS" or "Vertex") that
    `run_config` (a RunConfig, its ref, or None) needs and ours are not; None
    when our agents run it. A type this version does not know is left to our
    agents, as before it had a kind."""
    if run_config is None:
        return None
    if isinstance(run_config, Mapping):
        name = run_config.get("type")
        member = RunConfig._types.get(name)
    else:
        name, member = type(run_config).__name__, type(run_config)
    # A subclass (class MyDockerRun(DockerRun)) needs what its base needs.
    for each in (member.__mro__ if member is not None else ()) + (name,):
        kind = AGENT_KINDS.get(getattr(each, "__name__", each))
        if kind is not None:
            return None if kind in _OUR_AGENT_KINDS else kind
    return None


class RunConfigError(OrchestratorError, ValueError):
    """A run config was given a value it cannot use; the message names it."""


def _env(env, owner):
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise RunConfigError(
            f"{owner}(env={env!r}): env must be a dict of str to str, not "
            f"{type(env).__name__}; e.g. env={{'STAGE': 'prod'}}"
        )
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise RunConfigError(
                f"{owner}: environment variable name {key!r} is not valid; names are "
                "non-empty strings without '=' such as 'STAGE'"
            )
        if not isinstance(value, str):
            raise RunConfigError(
                f"{owner}: env[{key!r}] = {value!r} is a {type(value).__name__}; "
                f"environment values must be strings: env={{{key!r}: {str(value)!r}}}"
            )
    return {key: env[key] for key in sorted(env)}


class RunConfig(Referable):
    """What a run needs from its agent: `labels`, plus a subclass's own settings.

    A subclass names its own settings in `_fields` (stored in its ref beside
    labels and env), or defines `to_ref()` and `_from_ref(ref)` itself;
    `RunConfig.from_ref` picks the subclass by the ref's "type".
    """

    _types = {}
    _kind = "run config"
    _error = RunConfigError
    labels = ()
    _fields = ()  # a subclass's own settings, stored in its ref beside labels and env

    def validate(self):
        """Check what can only be checked where the run starts; raise RunConfigError."""

    def _set_labels_and_env(self, labels, env):
        # stacklevel 4: the warning points at the line that made the run config.
        self.labels = check_labels(labels, type(self).__name__, RunConfigError, stacklevel=4)
        self.env = _env(env, type(self).__name__)

    def to_ref(self):
        ref = {"type": type(self).__name__, "labels": list(self.labels), "env": dict(self.env)}
        for name in self._fields:
            # A copy: changing the ref must not change the config.
            ref[name] = json.loads(json.dumps(getattr(self, name)))
        return ref

    @classmethod
    def _from_ref(cls, ref):
        known = ("labels", "env") + cls._fields
        return cls(**{name: ref[name] for name in known if name in ref})

    def __repr__(self):
        parts = [f"labels={self.labels!r}"]
        if self.env:
            parts.append(f"env={_masked(self.env)}")
        parts += [f"{name}={_masked(getattr(self, name))}" for name in self._fields
                  if getattr(self, name) is not None]
        return f"{type(self).__name__}({', '.join(parts)})"


def _masked(value):
    """`value` for a repr, without the values of mappings: env, templates and
    keyword dicts often hold tokens, so a repr (and any log line made from it)
    shows their keys only."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key!r}: ..." for key in value) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_masked(item) for item in value) + "]"
    return repr(value)


class LocalRun(RunConfig):
    """Run as a local process: extra environment variables and a working directory.

    `working_dir` is stored as an absolute path (relative paths are taken from
    the current directory when the config is made); it need not exist yet, and
    `validate()` checks it where the run starts.
    """

    def __init__(self, labels=None, env=None, working_dir=None):
        self.labels = check_labels(labels, "LocalRun", RunConfigError)
        self.env = _env(env, "LocalRun")
        if working_dir is not None:
            if not isinstance(working_dir, (str, os.PathLike)) or not os.fspath(working_dir):
                raise RunConfigError(
                    f"LocalRun(working_dir={working_dir!r}): working_dir must be a path "
                    "string such as '/srv/etl', or None for the agent's directory"
                )
            working_dir = os.path.abspath(os.path.expanduser(os.fspath(working_dir)))
        self.working_dir = working_dir

    def __repr__(self):
        parts = [f"labels={self.labels!r}"]
        if self.env:
            # Values are often tokens: show which variables are set, not their values.
            parts.append("env={" + ", ".join(f"{k!r}: ..." for k in self.env) + "}")
        if self.working_dir is not None:
            parts.append(f"working_dir={self.working_dir!r}")
        return f"LocalRun({', '.join(parts)})"

    def validate(self):
        if self.working_dir is None:
            return
        if not os.path.exists(self.working_dir):
            raise RunConfigError(
                f"LocalRun working_dir {self.working_dir!r} does not exist on this host; "
                "create it, or change the flow's run config"
            )
        if not os.path.isdir(self.working_dir):
            raise RunConfigError(
                f"LocalRun working_dir {self.working_dir!r} is a file, not a directory; "
                "point working_dir at a directory"
            )

    def to_ref(self):
        return {"type": "LocalRun", "labels": list(self.labels), "env": dict(self.env),
                "working_dir": self.working_dir}

    @classmethod
    def _from_ref(cls, ref):
        return cls(labels=ref.get("labels"), env=ref.get("env"),
                   working_dir=ref.get("working_dir"))


# -- Prefect 1's run configs for other agents ------------------------------------
# Their constructors are Prefect 1.4.1's (names, order, defaults, and the
# values they reject); what they store is what Prefect 1 serialized.

def _text(value, owner, name, example, numbers=False):
    """A string setting, or None. With `numbers`, a number becomes its string,
    as Prefect 1 stores it ("cpu=1024" is "1024")."""
    if value is None or isinstance(value, str):
        return value
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise RunConfigError(
        f"{owner}({name}={value!r}): {name} must be a string"
        f"{' or a number' if numbers else ''}, not {type(value).__name__}; "
        f"e.g. {name}={example!r}")


def _json_value(value, owner, name, example, kind=Mapping):
    """A dict (or, with kind=list, a list) setting that is stored as JSON, or None."""
    if value is None:
        return None
    if kind is Mapping:
        wrong = not isinstance(value, Mapping)
    else:  # a list of dicts
        wrong = not isinstance(value, (list, tuple)) or not all(
            isinstance(item, Mapping) for item in value)
    if wrong:
        shape = "a dict" if kind is Mapping else "a list of dicts"
        raise RunConfigError(
            f"{owner}({name}={value!r}): {name} must be {shape}; e.g. {name}={example!r}")
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise RunConfigError(
            f"{owner}: {name} cannot be stored as JSON ({exc}); use only strings, "
            "numbers, booleans, None, lists and dicts with string keys") from None


def _one_name_or_list(value, owner, name, example):
    """A list of strings; a single string is one item (Prefect 1 split it into
    characters, as it did labels), with a warning."""
    if value is None:
        return None
    if isinstance(value, str):
        warnings.warn(
            f"{owner}: {name}={value!r} is a string; it is taken as one name "
            f"[{value!r}], not one per character. Pass a list: {name}=[{value!r}]",
            UserWarning, stacklevel=3)
        return [value]
    try:
        items = list(value)
    except TypeError:
        raise RunConfigError(
            f"{owner}({name}={value!r}): {name} must be a list of strings, not "
            f"{type(value).__name__}; e.g. {name}={example!r}") from None
    for item in items:
        if not isinstance(item, str):
            raise RunConfigError(
                f"{owner}({name}={items!r}): {item!r} is a {type(item).__name__}, not a "
                f"string; e.g. {name}={example!r}")
    return items


def _parse_yaml(text, owner, name, source):
    try:
        import yaml  # only a YAML template needs it: imported here, not with the package
    except ImportError:
        raise RunConfigError(
            f"{owner}: {name} {source} is YAML, and reading it needs PyYAML, which is not "
            "installed; install it with: pip install -e '.[yaml]' (or pip install pyyaml), "
            "or pass the template as a dict") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RunConfigError(
            f"{owner}: {name} {source} is not valid YAML: {exc}") from None


def _local_template(path, owner, name, field):
    """What Prefect 1 does with a template path when the config is made: a local
    path (no scheme, file:// or local://) is read now and kept as the template,
    returned as (template, None); a remote one (s3://, gcs://, agent://...) is
    kept for the agent to read at run time, returned as (None, path)."""
    if not isinstance(path, str) or not path:
        raise RunConfigError(
            f"{owner}({name}={path!r}): {name} must be a path or URL string such as "
            f"'{field}.yaml' or 's3://bucket/{field}.yaml'")
    drive, _ = os.path.splitdrive(path)
    parts = urlsplit(path)
    if not drive and parts.scheme not in ("", "file", "local"):
        return None, path
    # (Prefect 1 read "file://job.yaml" as an empty path; this reads job.yaml.)
    local = path if drive else parts.netloc + parts.path
    try:
        with open(local) as fh:
            text = fh.read()
    except OSError as exc:
        raise RunConfigError(
            f"{owner}({name}={path!r}): cannot read {os.path.abspath(local)!r} "
            f"({exc.strerror}); a local {field} is read when the run config is made, so "
            "give a path that exists here, or a URL (s3://, gcs://, agent://) read by the "
            "agent at run time") from None
    template = _parse_yaml(text, owner, name, repr(path))
    if not isinstance(template, Mapping):
        raise RunConfigError(
            f"{owner}({name}={path!r}): the file holds a {type(template).__name__}, not a "
            f"mapping; a {field} is a YAML mapping such as 'kind: Job'")
    return template, None


class UniversalRun(RunConfig):
    """Run on any agent, with extra environment variables: Prefect 1's
    agent-neutral run config. Our agents run it as they run a LocalRun
    without a working_dir.

        UniversalRun(env={"STAGE": "prod"}, labels=["prod"])
    """

    def __init__(self, env=None, labels=None):
        self._set_labels_and_env(labels, env)


def _ports(ports):
    """DockerRun's ports as a list of ints; Prefect 1 stored "8080" as 8080 too."""
    if ports is None:
        return None
    problem = None
    if isinstance(ports, (str, bytes, Mapping)) or not hasattr(ports, "__iter__"):
        problem = f"ports must be a list of port numbers, not {type(ports).__name__}"
    else:
        ports = list(ports)
        for port in ports:
            if isinstance(port, bool) or not isinstance(port, (int, str)) or \
                    not str(port).strip().isdigit():
                problem = f"port {port!r} is not a whole number"
                break
    if problem:
        raise RunConfigError(f"DockerRun(ports={ports!r}): {problem}; e.g. ports=[8080]")
    return [int(port) for port in ports]


class DockerRun(RunConfig):
    """Run in a Docker container, by a Docker agent (Prefect 1's `DockerRun`).
    None of our agents runs containers: runs of a flow with it wait, and
    `orchestrator explain RUN` says so. Use LocalRun or UniversalRun to run here.
    """

    _fields = ("image", "ports", "host_config")

    def __init__(self, *, image=None, env=None, labels=None, ports=None, host_config=None):
        self._set_labels_and_env(labels, env)
        self.image = _text(image, "DockerRun", "image", "python:3.11-slim")
        self.ports = _ports(ports)
        self.host_config = _json_value(host_config, "DockerRun", "host_config",
                                       {"mem_limit": "2g"})


_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


class KubernetesRun(RunConfig):
    """Run as a Kubernetes Job, by a Kubernetes agent (Prefect 1's
    `KubernetesRun`). None of our agents runs jobs: runs of a flow with it wait,
    and `orchestrator explain RUN` says so. Use LocalRun or UniversalRun to run here.

    As in Prefect 1, a local `job_template_path` is read when the config is
    made and kept as `job_template` (a YAML file or string needs PyYAML: the
    `yaml` extra); a remote one (s3://, gcs://, agent://) is kept as a path.
    """

    _fields = ("job_template_path", "job_template", "image", "cpu_limit", "cpu_request",
               "memory_limit", "memory_request", "service_account_name",
               "image_pull_secrets", "image_pull_policy")

    def __init__(self, *, job_template_path=None, job_template=None, image=None, env=None,
                 cpu_limit=None, cpu_request=None, memory_limit=None, memory_request=None,
                 service_account_name=None, image_pull_secrets=None, labels=None,
                 image_pull_policy=None):
        owner = "KubernetesRun"
        self._set_labels_and_env(labels, env)
        if job_template_path is not None and job_template is not None:
            raise RunConfigError(
                "KubernetesRun: give job_template_path or job_template, not both; the "
                "path is read into job_template when it is local")
        if job_template_path is not None:
            job_template, job_template_path = _local_template(
                job_template_path, owner, "job_template_path", "job template")
        elif isinstance(job_template, str):
            job_template = _parse_yaml(job_template, owner, "job_template", "(a string)")
            if not isinstance(job_template, Mapping):
                raise RunConfigError(
                    f"KubernetesRun: job_template is YAML for a {type(job_template).__name__}"
                    ", not a mapping; give a Job spec such as 'kind: Job'")
        self.job_template_path = job_template_path
        self.job_template = _json_value(job_template, owner, "job_template",
                                        {"apiVersion": "batch/v1", "kind": "Job"})
        self.image = _text(image, owner, "image", "python:3.11-slim")
        self.cpu_limit = _text(cpu_limit, owner, "cpu_limit", "2", numbers=True)
        self.cpu_request = _text(cpu_request, owner, "cpu_request", "500m", numbers=True)
        self.memory_limit = _text(memory_limit, owner, "memory_limit", "4Gi", numbers=True)
        self.memory_request = _text(memory_request, owner, "memory_request", "1Gi",
                                    numbers=True)
        self.service_account_name = _text(service_account_name, owner,
                                          "service_account_name", "flows")
        self.image_pull_secrets = _one_name_or_list(image_pull_secrets, owner,
                                                    "image_pull_secrets", ["regcred"])
        if image_pull_policy is not None and image_pull_policy not in _PULL_POLICIES:
            raise RunConfigError(
                f"KubernetesRun(image_pull_policy={image_pull_policy!r}): not a pull "
                f"policy; use one of {', '.join(map(repr, _PULL_POLICIES))}")
        self.image_pull_policy = image_pull_policy


class ECSRun(RunConfig):
    """Run as an AWS ECS task, by an ECS agent (Prefect 1's `ECSRun`). None of
    our agents runs ECS tasks: runs of a flow with it wait, and
    `orchestrator explain RUN` says so. Use LocalRun or UniversalRun to run here.

    As in Prefect 1, a local `task_definition_path` is read when the config is
    made and kept as `task_definition` (YAML: the `yaml` extra); a remote one
    is kept as a path.
    """

    _fields = ("task_definition", "task_definition_path", "task_definition_arn", "image",
               "cpu", "memory", "task_role_arn", "execution_role_arn", "run_task_kwargs")

    def __init__(self, *, task_definition=None, task_definition_path=None,
                 task_definition_arn=None, image=None, env=None, cpu=None, memory=None,
                 task_role_arn=None, execution_role_arn=None, run_task_kwargs=None,
                 labels=None):
        owner = "ECSRun"
        self._set_labels_and_env(labels, env)
        given = [name for name, value in (("task_definition", task_definition),
                                          ("task_definition_path", task_definition_path),
                                          ("task_definition_arn", task_definition_arn))
                 if value is not None]
        if len(given) > 1:
            raise RunConfigError(
                f"ECSRun: give one of task_definition, task_definition_path or "
                f"task_definition_arn, not {' and '.join(given)}")
        if task_definition_arn is not None and image is not None:
            raise RunConfigError(
                "ECSRun: give task_definition_arn or image, not both: the image of a "
                "registered task definition is set in that definition")
        if task_definition_path is not None:
            task_definition, task_definition_path = _local_template(
                task_definition_path, owner, "task_definition_path", "task definition")
        self.task_definition = _json_value(task_definition, owner, "task_definition",
                                           {"family": "flows", "containerDefinitions": []})
        self.task_definition_path = task_definition_path
        self.task_definition_arn = _text(task_definition_arn, owner, "task_definition_arn",
                                         "prefectFlow:1")
        self.image = _text(image, owner, "image", "python:3.11-slim")
        self.cpu = _text(cpu, owner, "cpu", "1 vcpu", numbers=True)
        self.memory = _text(memory, owner, "memory", "2 GB", numbers=True)
        self.task_role_arn = _text(task_role_arn, owner, "task_role_arn",
                                   "arn:aws:iam::123456789012:role/flows")
        self.execution_role_arn = _text(execution_role_arn, owner, "execution_role_arn",
                                        "arn:aws:iam::123456789012:role/ecs-execution")
        self.run_task_kwargs = _json_value(run_task_kwargs, owner, "run_task_kwargs",
                                           {"cluster": "flows"})


class VertexRun(RunConfig):
    """Run as a Google Vertex AI custom job, by a Vertex agent (Prefect 1's
    `VertexRun`). None of our agents runs Vertex jobs: runs of a flow with it
    wait, and `orchestrator explain RUN` says so. Use LocalRun or UniversalRun
    to run here.
    """

    _fields = ("image", "machine_type", "scheduling", "service_account", "network",
               "worker_pool_specs")

    def __init__(self, *, env=None, labels=None, image=None, machine_type="e2-standard-4",
                 scheduling=None, service_account=None, network=None,
                 worker_pool_specs=None):
        owner = "VertexRun"
        self._set_labels_and_env(labels, env)
        self.image = _text(image, owner, "image", "python:3.11-slim")
        self.machine_type = _text(machine_type, owner, "machine_type", "e2-standard-4")
        self.scheduling = _json_value(scheduling, owner, "scheduling", {"timeout": "3600s"})
        self.service_account = _text(service_account, owner, "service_account",
                                     "flows@project.iam.gserviceaccount.com")
        self.network = _text(network, owner, "network",
                             "projects/123/global/networks/default")
        self.worker_pool_specs = _json_value(worker_pool_specs, owner, "worker_pool_specs",
                                             [{"machineSpec": {"machineType": "e2-standard-4"}}],
                                             kind=list)
