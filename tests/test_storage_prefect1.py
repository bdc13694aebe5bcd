"""Prefect 1's storage classes (GitHub, GitLab, Bitbucket, S3, GCS, Azure,
Webhook, Docker): their constructors, refs, registration and loading.

Real components where they run here: git repositories served by a local
HTTP server (dumb protocol, with an access-token check), a local HTTP server
for Webhook storage, the store for secrets and registration. The clouds do
not run here: S3, GCS and Azure are in-memory fsspec filesystems registered
under the protocols s3fs, gcsfs and adlfs would serve, so our code goes
through fsspec exactly as it does with them.
"""

import base64
import http.server
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest

from orchestrator import Flow, service
from orchestrator.service import execution as backend
from orchestrator.flows.loading import load_flows_from_file
from orchestrator.storage import (
    GCS,
    S3,
    Azure,
    Bitbucket,
    Docker,
    GitHub,
    GitLab,
    Storage,
    StorageError,
    Webhook,
)

HELLO = '''
from orchestrator import Flow, Parameter, task

@task
def greet(name):
    return "{greeting}, " + name

with Flow("hello") as flow:
    greet(Parameter("name", default="world"))
'''


def hello_source(greeting="Hello"):
    return HELLO.replace("{greeting}", greeting)


def greeting_of(flow):
    """Run `flow` and return what its `greet` task returned."""
    state = flow.run()
    assert state.is_successful(), state
    [greet] = flow.get_tasks(name="greet")
    return state.result[greet].result


def make_hello(greeting="Hello", tmp_path=None):
    """A 'hello' Flow built from HELLO (in a file, so its source is real)."""
    path = Path(tmp_path) / f"hello_{greeting.lower()}.py"
    path.write_text(hello_source(greeting))
    return load_flows_from_file(path)["hello"], path


# -- constructors: Prefect 1.4.1's signatures -------------------------------------------

R = "required"
PREFECT1_SIGNATURES = {  # read from inspect.signature(prefect.storage.X) in Prefect 1.4.1
    GitHub: [("repo", R), ("path", R), ("ref", None), ("access_token_secret", None),
             ("base_url", None)],
    GitLab: [("repo", R), ("host", None), ("path", None), ("ref", None),
             ("access_token_secret", None)],
    Bitbucket: [("project", R), ("repo", R), ("workspace", None), ("host", None),
                ("path", None), ("ref", None), ("access_token_secret", None),
                ("cloud_username_secret", None), ("cloud_app_password_secret", None)],
    S3: [("bucket", R), ("key", None), ("stored_as_script", False),
         ("local_script_path", None), ("client_options", None), ("upload_options", None)],
    GCS: [("bucket", R), ("key", None), ("project", None), ("stored_as_script", False),
          ("local_script_path", None)],
    Azure: [("container", R), ("connection_string_secret", None), ("blob_name", None),
            ("overwrite", False), ("stored_as_script", False)],
    Webhook: [("build_request_kwargs", R), ("build_request_http_method", R),
              ("get_flow_request_kwargs", R), ("get_flow_request_http_method", R),
              ("stored_as_script", False), ("flow_script_path", None)],
    Docker: [("registry_url", None), ("base_image", None), ("dockerfile", None),
             ("dockerignore", None), ("python_dependencies", None), ("image_name", None),
             ("image_tag", None), ("env_vars", None), ("files", None),
             ("prefect_version", None), ("local_image", False), ("ignore_healthchecks", False),
             ("base_url", None), ("tls_config", False), ("build_kwargs", None),
             ("prefect_directory", "/opt/prefect"), ("path", None), ("stored_as_script", False),
             ("extra_dockerfile_commands", None)],
}


@pytest.mark.parametrize("cls", list(PREFECT1_SIGNATURES), ids=lambda c: c.__name__)
def test_constructor_takes_prefect1_arguments_with_prefect1_defaults(cls):
    parameters = list(inspect.signature(cls.__init__).parameters.values())
    assert parameters[0].name == "self" and parameters[-1].kind is inspect.Parameter.VAR_KEYWORD
    found = [(p.name, R if p.default is inspect.Parameter.empty else p.default)
             for p in parameters[1:-1]]
    assert found == PREFECT1_SIGNATURES[cls]


WEBHOOK_ARGS = dict(build_request_kwargs={"url": "http://127.0.0.1:9/up"},
                    build_request_http_method="POST",
                    get_flow_request_kwargs={"url": "http://127.0.0.1:9/down"},
                    get_flow_request_http_method="GET")

EVERY_STORAGE = [
    lambda: GitHub(repo="org/flows", path="/flows/etl.py", ref="v1",
                   access_token_secret="GH_TOKEN", base_url="https://ghe.example.com/api/v3"),
    lambda: GitLab(repo="data/flows", host="gitlab.example.com", path="etl.py"),
    lambda: Bitbucket(project="DATA", repo="flows", workspace="acme", path="etl.py",
                      cloud_username_secret="U", cloud_app_password_secret="P"),
    lambda: S3(bucket="flows", key="etl.pkl", client_options={"region_name": "eu-west-1"},
               upload_options={"ServerSideEncryption": "AES256"}),
    lambda: GCS(bucket="flows", project="analytics", labels=["gcp"]),
    lambda: Azure(container="flows", connection_string_secret="AZ", blob_name="etl",
                  overwrite=True),
    lambda: Webhook(**WEBHOOK_ARGS, secrets=["API_KEY"]),
    lambda: Docker(registry_url="registry.example.com/team", image_name="etl", image_tag="1",
                   python_dependencies=["pandas"], env_vars={"TOKEN": "t0ps3cret"},
                   files={"/etc/app.toml": "app.toml"}),
]


@pytest.mark.parametrize("make", EVERY_STORAGE)
def test_every_storage_survives_a_json_round_trip_of_its_ref(make):
    storage = make()
    ref = json.loads(json.dumps(storage.to_ref()))
    rebuilt = Storage.from_ref(ref)
    assert type(rebuilt) is type(storage)
    assert rebuilt.to_ref() == storage.to_ref()
    assert rebuilt == storage
    assert rebuilt.labels == storage.labels


def test_a_flow_file_that_only_builds_each_storage_imports_without_network_or_secrets(
        tmp_path, monkeypatch):
    """Built as Prefect 1 users build them, even with values missing on this
    host (an unset environment variable): nothing is reached or checked yet."""
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "GITHUB_ACCESS_TOKEN", "BUCKET"):
        monkeypatch.delenv(name, raising=False)
    flow_file = tmp_path / "prefect1_style.py"
    flow_file.write_text('''
import os
from orchestrator import Flow
from orchestrator.storage import GitHub, GitLab, Bitbucket, S3, GCS, Azure, Webhook, Docker

with Flow("a", storage=GitHub(repo="org/flows", path="/flows/a.py",
                              access_token_secret="MISSING_SECRET")) as a:
    pass
b = Flow("b", storage=GitLab("group/flows", path="b.py", ref="develop"))
c = Flow("c", storage=Bitbucket("PROJ", "flows", host="https://bb.example.com", path="c.py"))
d = Flow("d", storage=S3(bucket=os.environ.get("BUCKET"), labels="aws"))
e = Flow("e", storage=GCS("flows", stored_as_script=True, key="e.py"))
f = Flow("f", storage=Azure("flows"))
g = Flow("g", storage=Webhook({"url": "https://x.example.com/${MISSING}"}, "PUT",
                              {"url": "https://x.example.com/${MISSING}"}, "GET"))
h = Flow("h", storage=Docker(registry_url="r.example.com", base_image="python:3.11"))
''')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flows = load_flows_from_file(flow_file)
    assert sorted(flows) == list("abcdefgh")
    assert flows["d"].storage.labels == ["aws"]  # a string is one label ...
    assert any("labels='aws' is a string" in str(w.message) for w in caught)  # ... said so
    assert flows["e"].storage.local_script_path == str(flow_file)


@pytest.mark.parametrize("ref", [
    {"type": "GitHub", "path": "etl.py"},
    {"type": "S3", "bucket": "b", "flows": {"hello": {"key": "k"}}},
    {"type": "Webhook", "build_request_kwargs": {}},
])
def test_an_incomplete_ref_says_to_register_again(ref):
    with pytest.raises(StorageError) as info:
        Storage.from_ref(ref)
    assert f"{ref['type']} storage reference" in str(info.value)
    assert "register the flow again" in str(info.value)


def test_the_options_every_prefect1_storage_takes_are_accepted_and_kept():
    storage = S3("flows", secrets=["AWS_CREDENTIALS"], labels=["aws", "prod"],
                 add_default_labels=False, result=None)
    assert storage.secrets == ["AWS_CREDENTIALS"]
    assert storage.labels == ["aws", "prod"]
    assert storage.add_default_labels is False
    rebuilt = Storage.from_ref(json.loads(json.dumps(storage.to_ref())))
    assert (rebuilt.secrets, rebuilt.labels) == (["AWS_CREDENTIALS"], ["aws", "prod"])


def test_an_unknown_argument_is_refused_with_the_closest_name_and_the_list():
    with pytest.raises(StorageError) as info:
        GitHub(repo="org/flows", path="etl.py", refs="main")
    message = str(info.value)
    assert "GitHub storage got an unexpected argument 'refs'. Did you mean 'ref'?" in message
    assert "access_token_secret" in message and "labels" in message


@pytest.mark.parametrize("make, fragments", [
    (lambda: Bitbucket("P", "r", workspace="acme", access_token_secret="T"),
     ["workspace='acme'", "access_token_secret='T'", "drop one"]),
    (lambda: Webhook({"url": "u"}, "FETCH", {"url": "u"}, "GET"),
     ["build_request_http_method='FETCH'", "GET, PATCH, POST, PUT"]),
    (lambda: Docker(base_image="python:3.11", dockerfile="Dockerfile"),
     ["base_image='python:3.11'", "only one"]),
    (lambda: Docker(files={"relative/app.toml": "app.toml"}),
     ["'relative/app.toml'", "absolute"]),
])
def test_what_prefect1_refuses_when_made_is_refused_when_made(make, fragments):
    with pytest.raises(StorageError) as info:
        make()
    for fragment in fragments:
        assert fragment in str(info.value)


def test_webhook_methods_are_taken_in_any_case():
    storage = Webhook({"url": "u"}, "put", {"url": "u"}, "get")
    assert (storage.build_request_http_method, storage.get_flow_request_http_method) == (
        "PUT", "GET")


def test_values_that_are_not_json_are_refused_when_stored_naming_the_field():
    storage = S3("flows", client_options={"config": object()})
    with pytest.raises(StorageError, match=r"S3 storage client_options=.* cannot be stored"):
        storage.to_ref()


def test_reprs_do_not_show_values_that_are_often_secrets():
    docker = Docker(env_vars={"TOKEN": "t0ps3cret"})
    s3 = S3("flows", client_options={"aws_secret_access_key": "s3cr3tkey"})
    assert "t0ps3cret" not in repr(docker) and "'TOKEN': ..." in repr(docker)
    assert "s3cr3tkey" not in repr(s3) and "'aws_secret_access_key': ..." in repr(s3)


# -- GitHub, GitLab, Bitbucket -----------------------------------------------------------

def test_clone_urls_are_built_as_each_service_serves_repositories():
    assert GitHub("org/flows", "etl.py").clone_url == "https://github.com/org/flows.git"
    assert GitHub("org/flows", "etl.py", base_url="https://api.github.com").clone_url == \
        "https://github.com/org/flows.git"
    assert GitHub("org/flows", "etl.py",
                  base_url="https://ghe.example.com/api/v3").clone_url == \
        "https://ghe.example.com/org/flows.git"
    assert GitLab("group/flows").clone_url == "https://gitlab.com/group/flows.git"
    assert GitLab("group/flows", host="gitlab.example.com").clone_url == \
        "https://gitlab.example.com/group/flows.git"
    assert Bitbucket("DATA", "flows", workspace="acme").clone_url == \
        "https://bitbucket.org/acme/flows.git"
    assert Bitbucket("DATA", "flows", host="https://bb.example.com/").clone_url == \
        "https://bb.example.com/scm/DATA/flows.git"


@pytest.mark.parametrize("storage, fragments", [
    (GitLab("123456", path="etl.py"), ["repo='123456' is a project id", "group/project"]),
    (Bitbucket("DATA", "flows", path="etl.py"), ["neither workspace=", "host="]),
    (GitLab("group/flows"), ["has no path", "path='flows/etl.py'"]),
])
def test_a_git_host_storage_that_cannot_name_a_file_says_what_to_give(storage, fragments):
    with pytest.raises(StorageError) as info:
        storage.get_flow("hello")
    for fragment in fragments:
        assert fragment in str(info.value)


class GitServer:
    """Bare repositories under `root`, served over git's dumb HTTP protocol by a
    local server that wants `Authorization: <required>` when that is set."""

    def __init__(self, root):
        self.root = root
        self.required = None
        self.seen_authorization = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                given = self.headers.get("Authorization")
                server.seen_authorization.append(given)
                if server.required is not None and given != server.required:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def git(self, *args, cwd):
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              check=False, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def publish(self, repo_path, files, branch="main", tag=None):
        """Commit `files` ({path: text}) to branch `branch` of bare repo
        `repo_path` (e.g. 'org/flows.git'), made on first use."""
        bare = self.root / repo_path
        if not bare.exists():
            bare.mkdir(parents=True)
            self.git("init", "-q", "--bare", "-b", "main", cwd=bare)
        work = self.root.parent / ("work-" + repo_path.replace("/", "-"))
        if not work.exists():
            self.git("clone", "-q", str(bare), str(work), cwd=self.root)
        self.git("checkout", "-q", "-B", branch, cwd=work)
        for name, text in files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(text)
        self.git("add", "-A", cwd=work)
        self.git("commit", "-q", "-m", "flows", cwd=work)
        if tag:
            self.git("tag", tag, cwd=work)
        self.git("push", "-q", "--tags", "origin", branch, cwd=work)
        self.git("update-server-info", cwd=bare)  # what the dumb protocol reads
        return self.git("rev-parse", "HEAD", cwd=work)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def git_server(tmp_path, monkeypatch):
    empty_config = tmp_path / "gitconfig"
    empty_config.write_text("")
    for key, value in {"GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
                       "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
                       "GIT_CONFIG_GLOBAL": str(empty_config), "GIT_CONFIG_NOSYSTEM": "1"
                       }.items():
        monkeypatch.setenv(key, value)
    for name in ("GITHUB_ACCESS_TOKEN", "GITLAB_ACCESS_TOKEN", "BITBUCKET_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "served"
    root.mkdir()
    server = GitServer(root)
    yield server
    server.close()


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_github_clones_with_the_token_from_the_store_and_keeps_it_out_of_everything(
        git_server, store, home, log_records):
    token = "ghp_t0ken_n0t_to_be_seen"
    store.set_secret("GH_TOKEN", token)
    git_server.required = basic("x-access-token", token)
    git_server.publish("org/flows.git", {"flows/hello.py": hello_source("Hello")})
    storage = GitHub(repo="org/flows", path="/flows/hello.py",
                     access_token_secret="GH_TOKEN", base_url=git_server.url + "/api/v3")

    location = storage.add_flow(Flow("hello"), "etl", 1)

    assert location == "/flows/hello.py" and storage.flows == {"hello": "/flows/hello.py"}
    rebuilt = Storage.from_ref(json.loads(json.dumps(storage.to_ref())))
    assert greeting_of(rebuilt.get_flow("hello")) == "Hello, world"
    assert git_server.required in git_server.seen_authorization
    checkouts = list((home / "git").glob("*/.git/config"))
    assert checkouts, "the repository was cloned into the cache"
    for where in [json.dumps(storage.to_ref()), repr(storage), *log_records.messages(),
                  *(c.read_text() for c in checkouts)]:
        assert token not in where
        assert git_server.required.split()[1] not in where


def test_github_without_ref_follows_the_default_branch_and_a_ref_pins_a_tag(git_server):
    git_server.publish("org/flows.git", {"hello.py": hello_source("One")}, tag="v1")
    git_server.publish("org/flows.git", {"hello.py": hello_source("Two")})
    base = git_server.url
    assert greeting_of(GitHub("org/flows", "hello.py", base_url=base).get_flow("hello")) == \
        "Two, world"
    assert greeting_of(GitHub("org/flows", "hello.py", ref="v1",
                              base_url=base).get_flow("hello")) == "One, world"
    git_server.publish("org/flows.git", {"hello.py": hello_source("Three")})
    assert greeting_of(GitHub("org/flows", "hello.py", base_url=base).get_flow("hello")) == \
        "Three, world"


def test_github_token_falls_back_on_the_environment_as_in_prefect1(git_server, monkeypatch):
    monkeypatch.setenv("GITHUB_ACCESS_TOKEN", "env-token")
    git_server.required = basic("x-access-token", "env-token")
    git_server.publish("org/flows.git", {"hello.py": hello_source("Env")})
    storage = GitHub("org/flows", "hello.py", base_url=git_server.url)
    assert greeting_of(storage.get_flow("hello")) == "Env, world"


def test_a_private_repository_without_a_token_says_how_to_give_one(git_server):
    git_server.required = basic("x-access-token", "something")
    git_server.publish("org/private.git", {"hello.py": hello_source()})
    storage = GitHub("org/private", "hello.py", base_url=git_server.url)
    with pytest.raises(StorageError) as info:
        storage.add_flow(Flow("hello"), "etl", 1)
    message = str(info.value)
    assert message.startswith("GitHub storage for repo 'org/private': Git storage cannot clone")
    assert "access_token_secret='NAME'" in message and "orchestrator secret set NAME" in message
    assert storage.flows == {}


def test_a_missing_token_secret_names_it_and_how_to_set_it(git_server, store):
    storage = GitHub("org/flows", "hello.py", access_token_secret="NOPE",
                     base_url=git_server.url)
    with pytest.raises(StorageError) as info:
        storage.get_flow("hello")
    assert "secret 'NOPE' is not set" in str(info.value)
    assert "orchestrator secret set NOPE" in str(info.value)


def test_gitlab_sends_its_token_as_oauth2_and_a_missing_file_lists_the_python_files(
        git_server, store):
    store.set_secret("GL_TOKEN", "glpat-123")
    git_server.required = basic("oauth2", "glpat-123")
    git_server.publish("group/flows.git", {"etl/hello.py": hello_source("GitLab")})
    good = GitLab("group/flows", host=git_server.url, path="etl/hello.py",
                  access_token_secret="GL_TOKEN")
    assert greeting_of(good.get_flow("hello")) == "GitLab, world"
    wrong = GitLab("group/flows", host=git_server.url, path="etl/hola.py",
                   access_token_secret="GL_TOKEN")
    with pytest.raises(StorageError) as info:
        wrong.add_flow(Flow("hello"))
    assert "'etl/hola.py' is not a file" in str(info.value)
    assert "etl/hello.py" in str(info.value)


def test_bitbucket_server_clones_from_scm_with_a_bearer_token(git_server, store):
    store.set_secret("BB_TOKEN", "bb-http-token")
    git_server.required = "Bearer bb-http-token"
    git_server.publish("scm/DATA/flows.git", {"hello.py": hello_source("Bitbucket")})
    storage = Bitbucket("DATA", "flows", host=git_server.url, path="hello.py",
                        access_token_secret="BB_TOKEN")
    storage.add_flow(Flow("hello"), "etl", 3)
    assert greeting_of(storage.get_flow("hello")) == "Bitbucket, world"


def test_bitbucket_cloud_needs_both_the_user_and_the_app_password(store):
    store.set_secret("BB_USER", "ada")
    storage = Bitbucket("DATA", "flows", workspace="acme", path="hello.py",
                        cloud_username_secret="BB_USER")
    with pytest.raises(StorageError, match="cloud_app_password_secret .* is not set"):
        storage.get_flow("hello")


# -- S3, GCS, Azure ------------------------------------------------------------------------

@pytest.fixture
def object_stores(monkeypatch):
    """In-memory filesystems registered with fsspec as s3, gcs and az (what s3fs,
    gcsfs and adlfs provide); `made` lists (protocol, options) of each one made."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    made = []
    stores = {}
    for protocol in ("s3", "gcs", "az"):
        class InMemory(MemoryFileSystem):
            cachable = False  # see the options of every filesystem made
            store = {}
            pseudo_dirs = [""]

            def __init__(self, *args, _protocol=protocol, **options):
                made.append((_protocol, options))
                super().__init__()

        InMemory.protocol = (protocol,)
        stores[protocol] = InMemory
        fsspec.register_implementation(protocol, InMemory, clobber=True)

    class Stores:
        def data(self, protocol, path):
            return stores[protocol].store[f"/{path}"].getvalue()

        def put(self, protocol, path, data):
            stores[protocol]().pipe_file(path, data)

        def paths(self, protocol):
            return sorted(p.lstrip("/") for p in stores[protocol].store)

    result = Stores()
    result.made = made
    yield result
    registered = importlib.import_module("fsspec.registry")._registry
    for protocol in stores:
        registered.pop(protocol, None)


@pytest.fixture
def azure_connection(monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5")


@pytest.mark.parametrize("make, protocol, container", [
    (lambda: S3("flows"), "s3", "flows"),
    (lambda: GCS("flows", project="analytics"), "gcs", "flows"),
    (lambda: Azure("flows"), "az", "flows"),
])
def test_a_pickled_flow_goes_to_a_new_timestamped_key_and_comes_back(
        object_stores, azure_connection, tmp_path, make, protocol, container):
    flow, _ = make_hello("Cloud", tmp_path)
    storage = make()
    key = storage.add_flow(flow, "etl", 1)
    assert re.fullmatch(r"hello/\d{4}-\d\d-\d\dt\d\d-\d\d-\d\d-\d+-00-00", key), key
    assert object_stores.paths(protocol) == [f"{container}/{key}"]
    assert storage.flows == {"hello": key}
    rebuilt = Storage.from_ref(json.loads(json.dumps(storage.to_ref())))
    assert greeting_of(rebuilt.get_flow("hello")) == "Cloud, world"


def test_s3_options_reach_the_filesystem_client_and_upload_options_only_uploads(
        object_stores, tmp_path):
    flow, _ = make_hello("Hi", tmp_path)
    storage = S3("flows", key="etl/hello.pkl", client_options={"region_name": "eu-west-1"},
                 upload_options={"ServerSideEncryption": "AES256"})
    assert storage.add_flow(flow, "etl", 1) == "etl/hello.pkl"
    storage.get_flow("hello")
    upload, download = [options for protocol, options in object_stores.made if protocol == "s3"]
    assert upload == {"client_kwargs": {"region_name": "eu-west-1"},
                      "s3_additional_kwargs": {"ServerSideEncryption": "AES256"}}
    assert download == {"client_kwargs": {"region_name": "eu-west-1"}}


def test_a_pickle_replaced_after_registration_is_refused(object_stores, tmp_path):
    first, _ = make_hello("First", tmp_path)
    second, _ = make_hello("Second", tmp_path)
    old = S3("flows", key="etl/hello.pkl")
    old.add_flow(first, "etl", 1)
    S3("flows", key="etl/hello.pkl").add_flow(second, "etl", 2)  # same key, new flow
    with pytest.raises(StorageError) as info:
        old.get_flow("hello")
    assert "Refusing to unpickle flow 'hello' from s3://flows/etl/hello.pkl" in str(info.value)
    assert "leave the key unset" in str(info.value)


def test_a_pickle_without_a_recorded_digest_is_never_loaded(object_stores, tmp_path):
    flow, _ = make_hello("Hi", tmp_path)
    storage = S3("flows", key="k")
    storage.add_flow(flow, "etl", 1)
    ref = storage.to_ref()
    ref["sha256"] = {}
    with pytest.raises(StorageError, match="no digest of it was recorded"):
        Storage.from_ref(ref).get_flow("hello")


def test_s3_script_is_uploaded_from_local_script_path_and_run_again_at_each_run(
        object_stores, tmp_path, home):
    flow, path = make_hello("Script", tmp_path)
    storage = S3("flows", key="flows/hello.py", stored_as_script=True,
                 local_script_path=str(path))
    storage.add_flow(flow, "etl", 1)
    assert object_stores.data("s3", "flows/flows/hello.py") == path.read_bytes()
    object_stores.put("s3", "flows/flows/hello.py", hello_source("Edited").encode())
    loaded = Storage.from_ref(storage.to_ref()).get_flow("hello")
    assert greeting_of(loaded) == "Edited, world"
    [script] = (home / "scripts").glob("*/hello.py")  # tracebacks show a real file
    assert script.read_text() == hello_source("Edited")


def test_registering_a_flow_file_uploads_that_file_when_stored_as_script(
        object_stores, tmp_path):
    """As `prefect register -p FILE` gave S3 the file being loaded."""
    flow_file = tmp_path / "registered.py"
    flow_file.write_text(hello_source("Registered").replace(
        'with Flow("hello") as flow:',
        'from orchestrator.storage import GCS\n'
        'with Flow("hello", storage=GCS("b", key="etl.py", stored_as_script=True)) as flow:'))
    flow = load_flows_from_file(flow_file)["hello"]
    flow.storage.add_flow(flow, "etl", 1)
    assert object_stores.data("gcs", "b/etl.py") == flow_file.read_bytes()


def test_a_script_at_a_key_is_checked_at_registration(object_stores, azure_connection):
    object_stores.put("az", "flows/etl/hello.py", hello_source("Blob").encode())
    there = Azure("flows", blob_name="etl/hello.py", stored_as_script=True)
    there.add_flow(Flow("hello"), "etl", 1)
    assert greeting_of(there.get_flow("hello")) == "Blob, world"
    missing = Azure("flows", blob_name="etl/nothing.py", stored_as_script=True)
    with pytest.raises(StorageError, match=r"Flow 'hello' is not at az://flows/etl/nothing\.py"):
        missing.add_flow(Flow("hello"), "etl", 1)


def test_a_script_with_neither_key_nor_local_file_says_what_to_give(object_stores):
    with pytest.raises(StorageError) as info:
        S3("flows", stored_as_script=True).add_flow(Flow("hello"), "etl", 1)
    assert "needs key=" in str(info.value) and "local_script_path=" in str(info.value)


def test_azure_does_not_replace_a_named_blob_unless_overwrite(object_stores, azure_connection,
                                                             tmp_path):
    flow, _ = make_hello("Hi", tmp_path)
    Azure("flows", blob_name="etl").add_flow(flow, "etl", 1)
    with pytest.raises(StorageError, match="exists and overwrite=False"):
        Azure("flows", blob_name="etl").add_flow(flow, "etl", 2)
    Azure("flows", blob_name="etl", overwrite=True).add_flow(flow, "etl", 2)


def test_azure_reads_its_connection_string_from_the_named_secret(object_stores, store):
    store.set_secret("AZ_CONN", "AccountName=acct;AccountKey=a2V5")
    Azure("flows", connection_string_secret="AZ_CONN").add_flow(Flow("hello"), "etl", 1)
    assert ("az", {"connection_string": "AccountName=acct;AccountKey=a2V5"}) in \
        object_stores.made


def test_azure_without_a_connection_string_names_both_places(object_stores, monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(StorageError) as info:
        Azure("flows").add_flow(Flow("hello"), "etl", 1)
    assert "connection_string_secret='NAME'" in str(info.value)
    assert "AZURE_STORAGE_CONNECTION_STRING" in str(info.value)


@pytest.mark.parametrize("storage, protocol, package, extra", [
    (S3("flows"), "s3", "s3fs", "s3"),
    (GCS("flows"), "gcs", "gcsfs", "gcs"),
    (Azure("flows"), "az", "adlfs", "azure"),
])
def test_a_missing_sdk_names_the_extra_to_install(storage, protocol, package, extra,
                                                  monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # as if not installed
    monkeypatch.delitem(importlib.import_module("fsspec.registry")._registry, protocol,
                        raising=False)  # nor imported by fsspec before
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=a;AccountKey=a2V5")
    for use in (lambda: storage.add_flow(Flow("hello"), "etl", 1),
                lambda: storage.get_flow("hello")):
        with pytest.raises(StorageError) as info:
            storage.flows = {"hello": "k"}
            use()
        assert f"needs the {package} package" in str(info.value)
        assert f"pip install -e '.[{extra}]'" in str(info.value)


def test_without_fsspec_the_error_names_the_extra_too(monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(StorageError, match=r"needs the fsspec and s3fs packages.*\.\[s3\]"):
        S3("flows").add_flow(Flow("hello"), "etl", 1)


def test_a_bucket_missing_when_used_is_named(object_stores):
    with pytest.raises(StorageError, match=r"S3 storage has no bucket; give e\.g\."):
        S3(None).add_flow(Flow("hello"), "etl", 1)


def test_storage_secrets_and_result_are_kept_but_said_not_to_be_honoured(object_stores,
                                                                       tmp_path):
    flow, _ = make_hello("Hi", tmp_path)
    storage = S3("flows", secrets=["AWS_CREDENTIALS"], result=object())
    with pytest.warns(UserWarning) as caught:
        storage.add_flow(flow, "etl", 1)
    messages = [str(w.message) for w in caught]
    assert any("SecretTask('AWS_CREDENTIALS')" in m for m in messages)
    assert any("Flow('hello', result=...)" in m for m in messages)


def test_prefect1_add_flow_with_only_the_flow_still_works(object_stores, tmp_path):
    flow, _ = make_hello("Hi", tmp_path)
    storage = S3("flows")
    key = storage.add_flow(flow)
    assert "hello" in storage and storage.build() is storage
    assert greeting_of(storage.get_flow()) == "Hi, world"
    assert key == storage.flows["hello"]


# -- Webhook ---------------------------------------------------------------------------------

class FlowServer:
    """A local HTTP server keeping request bodies by path: PUT/POST/PATCH store,
    GET returns; it wants `Authorization: Bearer <token>` when `token` is set."""

    def __init__(self):
        self.bodies = {}
        self.requests = []
        self.token = None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _authorized(self):
                self.close_connection = True
                server.requests.append((self.command, self.path, dict(self.headers)))
                if server.token and self.headers.get("Authorization") != f"Bearer {server.token}":
                    self._answer(401, b"bad token")
                    return False
                if self.path.startswith("/broken"):
                    self._answer(500, b"disk full on the flow server")
                    return False
                return True

            def _answer(self, status, body):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _store(self):
                if self._authorized():
                    length = int(self.headers.get("Content-Length", 0))
                    server.bodies[self.path.split("?")[0]] = self.rfile.read(length)
                    self._answer(201, json.dumps({"id": self.path}).encode())

            do_PUT = do_POST = do_PATCH = _store

            def do_GET(self):
                if self._authorized():
                    body = server.bodies.get(self.path.split("?")[0])
                    self._answer(404, b"no such flow") if body is None else \
                        self._answer(200, body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def flow_server():
    server = FlowServer()
    yield server
    server.close()


def webhook(server, path="/flows/hello", token_template="${FLOW_TOKEN}", **kwargs):
    headers = {"Authorization": f"Bearer {token_template}"}
    return Webhook(
        build_request_kwargs={"url": server.url + path, "headers": headers},
        build_request_http_method="PUT",
        get_flow_request_kwargs={"url": server.url + path, "headers": headers,
                                 "params": {"v": "1"}},
        get_flow_request_http_method="GET", **kwargs)


def test_webhook_uploads_and_fetches_with_a_token_from_the_environment(flow_server, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("FLOW_TOKEN", "env-s3cret")
    flow_server.token = "env-s3cret"
    flow, _ = make_hello("Webhook", tmp_path)
    storage = webhook(flow_server)
    assert storage.add_flow(flow, "etl", 1) == "hello"
    assert storage._build_responses["hello"].json() == {"id": "/flows/hello"}
    assert "env-s3cret" not in json.dumps(storage.to_ref())
    rebuilt = Storage.from_ref(json.loads(json.dumps(storage.to_ref())))
    assert greeting_of(rebuilt.get_flow("hello")) == "Webhook, world"
    method, path, _ = flow_server.requests[-1]
    assert (method, path) == ("GET", "/flows/hello?v=1")


def test_webhook_template_falls_back_on_the_secret_of_that_name(flow_server, tmp_path, store,
                                                               monkeypatch):
    monkeypatch.delenv("FLOW_TOKEN", raising=False)
    store.set_secret("FLOW_TOKEN", "stored-s3cret")
    flow_server.token = "stored-s3cret"
    flow, _ = make_hello("Secret", tmp_path)
    storage = webhook(flow_server)
    storage.add_flow(flow, "etl", 1)
    assert greeting_of(storage.get_flow("hello")) == "Secret, world"


def test_webhook_template_that_is_nowhere_names_it(flow_server, tmp_path, store, monkeypatch):
    monkeypatch.delenv("FLOW_TOKEN", raising=False)
    with pytest.raises(StorageError) as info:
        webhook(flow_server).add_flow(Flow("hello"), "etl", 1)
    assert "template ${FLOW_TOKEN} is neither an environment variable nor a secret" in \
        str(info.value)
    assert flow_server.requests == []


def test_webhook_error_status_is_reported_without_the_rendered_secret(flow_server, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("FLOW_TOKEN", "wrong-s3cret")
    flow_server.token = "right"
    flow, _ = make_hello("Hi", tmp_path)
    with pytest.raises(StorageError) as info:
        webhook(flow_server).add_flow(flow, "etl", 1)
    assert "PUT " + flow_server.url + "/flows/hello answered 401" in str(info.value)
    assert "bad token" in str(info.value) and "wrong-s3cret" not in str(info.value)
    flow_server.token = None
    with pytest.raises(StorageError, match="answered 500 .*disk full on the flow server"):
        webhook(flow_server, path="/broken", token_template="x").add_flow(flow, "etl", 1)


def test_webhook_script_is_sent_as_is_and_data_in_the_arguments_is_replaced(flow_server,
                                                                          tmp_path):
    flow, path = make_hello("Script", tmp_path)
    storage = Webhook({"url": flow_server.url + "/s.py", "data": b"ignored"}, "POST",
                      {"url": flow_server.url + "/s.py"}, "GET",
                      stored_as_script=True, flow_script_path=str(path))
    with pytest.warns(RuntimeWarning, match="'data' in build_request_kwargs is replaced"):
        storage.add_flow(flow, "etl", 1)
    assert flow_server.bodies["/s.py"] == path.read_bytes()
    flow_server.bodies["/s.py"] = hello_source("Changed").encode()
    assert greeting_of(storage.get_flow("hello")) == "Changed, world"


def test_webhook_script_without_a_path_says_to_give_one(flow_server):
    storage = Webhook({"url": flow_server.url + "/s.py"}, "POST",
                      {"url": flow_server.url + "/s.py"}, "GET", stored_as_script=True)
    with pytest.raises(StorageError, match="stored_as_script=True needs flow_script_path="):
        storage.add_flow(Flow("hello"), "etl", 1)


def test_webhook_refuses_a_pickle_other_than_the_one_it_uploaded(flow_server, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv("FLOW_TOKEN", "t")
    flow, _ = make_hello("Hi", tmp_path)
    storage = webhook(flow_server)
    storage.add_flow(flow, "etl", 1)
    flow_server.bodies["/flows/hello"] += b" "
    with pytest.raises(StorageError, match="Refusing to unpickle flow 'hello' from GET"):
        storage.get_flow("hello")


def test_webhook_unsupported_request_argument_is_named(flow_server):
    storage = Webhook({"url": flow_server.url + "/x", "files": {"f": "x"}}, "POST",
                      {"url": flow_server.url + "/x"}, "GET")
    with pytest.raises(StorageError, match="request argument 'files' is not supported"):
        storage.add_flow(Flow("hello"), "etl", 1)


# -- Docker ------------------------------------------------------------------------------------

def test_docker_registration_builds_nothing_and_a_run_says_what_to_use(store):
    storage = Docker(registry_url="registry.example.com/team", image_name="etl",
                     image_tag="2024")
    with pytest.warns(UserWarning, match="no Docker image is built here"):
        location = storage.add_flow(Flow("My ETL"), "etl", 1)
    assert location == "/opt/prefect/flows/my-etl.prefect"
    assert storage.name == "registry.example.com/team/etl:2024"
    rebuilt = Storage.from_ref(json.loads(json.dumps(storage.to_ref())))
    with pytest.raises(StorageError) as info:
        rebuilt.get_flow("My ETL")
    message = str(info.value)
    assert "image registry.example.com/team/etl:2024" in message
    assert "no Docker agent" in message and "Script(" in message and "LocalRun()" in message


# -- registration and runs from the store --------------------------------------------------

def register(store, flow, storage):
    flow.storage = storage
    record, new = service.register_flow(store, flow, "etl")
    return record["version"], new


def test_registration_keeps_the_version_of_an_unchanged_storage_and_bumps_a_changed_one(
        object_stores, store, tmp_path):
    flow, _ = make_hello("Hi", tmp_path)
    assert register(store, flow, S3("flows")) == (1, True)
    assert register(store, flow, S3("flows")) == (1, False)
    assert register(store, flow, S3("other-bucket")) == (2, True)
    assert register(store, flow, S3("other-bucket", labels=["aws"])) == (3, True)
    assert "aws" in store.get_flow("etl/hello")["labels"]


def test_settings_ref_is_the_same_before_and_after_registering(object_stores, tmp_path):
    """What registration can compare to tell "the same storage again" (the full
    ref also says where each registered flow went)."""
    flow, _ = make_hello("Hi", tmp_path)
    storage = S3("flows")
    before = storage.settings_ref()
    storage.add_flow(flow, "etl", 1)
    assert storage.settings_ref() == before == S3("flows").settings_ref()
    assert storage.to_ref() != before
    assert S3("other").settings_ref() != before


def test_a_run_from_the_store_loads_an_s3_flow(object_stores, store, tmp_path):
    flow, _ = make_hello("From S3", tmp_path)
    register(store, flow, S3("flows"))
    run = service.create_flow_run(store, "hello")
    assert backend.execute_flow_run(store, run["id"], service.load_flow) == "Success"


def test_a_run_from_the_store_loads_a_github_flow_with_its_stored_token(git_server, store):
    store.set_secret("GH_TOKEN", "ghp_run")
    git_server.required = basic("x-access-token", "ghp_run")
    git_server.publish("org/flows.git", {"hello.py": hello_source("From GitHub")})
    flow = load_flows_from_file(Path(git_server.root.parent / "work-org-flows.git"
                                     / "hello.py"))["hello"]
    storage = GitHub("org/flows", "hello.py", access_token_secret="GH_TOKEN",
                     base_url=git_server.url)
    assert register(store, flow, storage) == (1, True)
    run = service.create_flow_run(store, "hello")
    assert backend.execute_flow_run(store, run["id"], service.load_flow) == "Success"


def test_a_run_of_a_docker_stored_flow_fails_saying_why(store):
    with pytest.warns(UserWarning):
        register(store, Flow("boxed"), Docker(image_name="boxed", image_tag="1"))
    run = service.create_flow_run(store, "boxed")
    assert backend.execute_flow_run(store, run["id"], service.load_flow) == "Failed"
    message = store.get_flow_run(run["id"])["message"]
    assert "Could not load the flow" in message and "no Docker agent" in message


def test_an_object_store_flow_loads_in_a_fresh_process_only_with_its_sdk(object_stores,
                                                                         tmp_path):
    """The ref alone is enough to find the flow elsewhere; without s3fs there,
    the run's process says which extra to install (and nothing is unpickled)."""
    flow, _ = make_hello("Hi", tmp_path)
    storage = S3("flows")
    storage.add_flow(flow, "etl", 1)
    code = ("import json, sys\n"
            "sys.modules['s3fs'] = None\n"
            "from orchestrator.storage import Storage, StorageError\n"
            "try:\n"
            "    Storage.from_ref(json.loads(sys.argv[1])).get_flow('hello')\n"
            "except StorageError as exc:\n"
            "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(storage.to_ref())],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ),
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "pip install -e '.[s3]'" in done.stdout
