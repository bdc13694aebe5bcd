"""Local, Git and Module storage called the way Prefect 1.4.1 flow files call
them, beside our own call forms: how each call is read, what it stores, and
that the flow comes back from real git repositories (local ones, and one served
over HTTP by a local server that checks an access token), real files, real
modules and a fresh process. Expected values marked "Prefect 1.4.1" were read
from Prefect 1.4.1 itself (its constructors, `git_clone_url`, `add_flow`)."""

import base64
import hashlib
import http.server
import json
import socket
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import pytest
from helpers import cli

from orchestrator import Flow, service
from orchestrator.service import execution as backend
from orchestrator.flows.loading import load_flows_from_file
from orchestrator.storage import Git, Local, Module, Storage, StorageError

HELLO = '''
from orchestrator import Flow, Parameter, task

@task
def greet(name):
    return "{greeting}, " + name

with Flow("{flow_name}") as flow:
    greet(Parameter("name", default="world"))
'''


def hello_source(greeting="Hello", flow_name="hello"):
    return HELLO.replace("{greeting}", greeting).replace("{flow_name}", flow_name)


def write(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def greeting_of(flow):
    """Run `flow` and return what its `greet` task returned."""
    state = flow.run()
    assert state.is_successful(), state
    [greet] = flow.get_tasks(name="greet")
    return state.result[greet].result


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def git_env(tmp_path, monkeypatch):
    """git with a fixed identity and no user or system configuration."""
    empty_config = tmp_path / "gitconfig"
    empty_config.write_text("")
    for key, value in {"GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
                       "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
                       "GIT_CONFIG_GLOBAL": str(empty_config), "GIT_CONFIG_NOSYSTEM": "1"
                       }.items():
        monkeypatch.setenv(key, value)


def run_git(*args, cwd):
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Repo:
    """A git repository in `path` on branch main; `commit` writes files and commits."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.mkdir(parents=True)
        run_git("init", "-q", "-b", "main", cwd=self.path)

    def commit(self, files, branch="main", tag=None):
        run_git("checkout", "-q", "-B", branch, cwd=self.path)
        for name, text in files.items():
            write(self.path / name, text)
        run_git("add", "-A", cwd=self.path)
        run_git("commit", "-q", "-m", "flows", cwd=self.path)
        if tag:
            run_git("tag", tag, cwd=self.path)
        return run_git("rev-parse", "HEAD", cwd=self.path)


@pytest.fixture
def repo(tmp_path, git_env):
    return Repo(tmp_path / "flows-repo")


class GitServer:
    """Bare repositories under `root` served over HTTP (git's dumb protocol), with
    every Authorization header seen; with `required` set, others get a 401."""

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
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def publish(self, name, files):
        """Serve `files` ({path: text}) as the main branch of repository `name` ('org/flows')."""
        work = Repo(self.root.parent / ("work-" + name.replace("/", "-")))
        work.commit(files)
        bare = self.root / f"{name}.git"
        run_git("clone", "-q", "--bare", str(work.path), str(bare), cwd=self.root)
        run_git("update-server-info", cwd=bare)  # what the dumb protocol reads

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def git_server(tmp_path, git_env):
    root = tmp_path / "served"
    root.mkdir()
    server = GitServer(root)
    yield server
    server.close()


# -- Git: how a call is read ----------------------------------------------------------

@pytest.mark.parametrize("make, url, path, at", [
    # Prefect 1.4.1's git_clone_url, without the empty '@' it put before the host
    # (the token goes in a header here, never in the URL).
    (lambda: Git(repo="org/repo", flow_path="flows/etl.py", repo_host="github.com",
                 branch_name="dev"),
     "https://github.com/org/repo.git", "flows/etl.py", ("branch_name", "dev")),
    (lambda: Git("flows/etl.py", "org/repo"),
     "https://github.com/org/repo.git", "flows/etl.py", None),
    (lambda: Git("flows/etl.py", "org/repo", "gitlab.example.com", tag="v1"),
     "https://gitlab.example.com/org/repo.git", "flows/etl.py", ("tag", "v1")),
    (lambda: Git("flows/etl.py", repo="org/repo", commit="0a1b2c3d"),
     "https://github.com/org/repo.git", "flows/etl.py", ("commit", "0a1b2c3d")),
    (lambda: Git(flow_path="/flows/flow.py", repo="org/repo", use_ssh=True),
     "git@github.com:org/repo.git", "flows/flow.py", None),
    (lambda: Git(flow_path="etl.py", repo="team/flows", repo_host="bitbucket.org",
                 use_ssh=True, branch_name="prod"),
     "git@bitbucket.org:team/flows.git", "etl.py", ("branch_name", "prod")),
])
def test_prefect1_call_forms_build_prefect1s_clone_url_and_ref(make, url, path, at):
    storage = make()
    assert storage.url == url
    assert storage.path == storage.flow_path == path
    for keyword in ("branch_name", "tag", "commit"):
        expected = at[1] if at and at[0] == keyword else None
        assert getattr(storage, keyword) == expected
    if at is None:
        assert storage.ref is None and "the default branch" in storage._at()


@pytest.mark.parametrize("make, repo, path, ref", [
    (lambda: Git("/srv/git/flows", "flows/etl.py", ref="v1"), "/srv/git/flows",
     "flows/etl.py", "v1"),
    (lambda: Git(repo="https://git.example.com/flows.git", path="etl.py", ref="dev"),
     "https://git.example.com/flows.git", "etl.py", "dev"),
    (lambda: Git("https://git.example.com/flows.git", "flows/etl.py"),
     "https://git.example.com/flows.git", "flows/etl.py", "main"),
    (lambda: Git("/srv/git/flows", "flows/etl.py", "v2"), "/srv/git/flows", "flows/etl.py",
     "v2"),
])
def test_our_call_forms_keep_their_meaning_and_their_ref(make, repo, path, ref):
    storage = make()
    assert (storage.repo, storage.url, storage.path, storage.ref) == (repo, repo, path, ref)
    assert storage.to_ref() == {"type": "Git", "repo": repo, "path": path, "ref": ref,
                                "cache_dir": None}


@pytest.mark.parametrize("make, expected", [
    # The positional argument ending in .py is the flow file ...
    (lambda: Git("flows/etl.py", "/srv/git/flows"), ("/srv/git/flows", "flows/etl.py")),
    (lambda: Git("/srv/git/flows", "flows/etl.py"), ("/srv/git/flows", "flows/etl.py")),
    # ... else the URL (or .git name, absolute path, existing directory) is the repository.
    (lambda: Git("https://h.example/r.git", "flows/etl"), ("https://h.example/r.git",
                                                            "flows/etl")),
    (lambda: Git("flows/etl", "https://h.example/r.git"), ("https://h.example/r.git",
                                                            "flows/etl")),
    (lambda: Git("flows/etl", "git@h.example:org/r.git"), ("git@h.example:org/r.git",
                                                            "flows/etl")),
    # A keyword settles it: with repo= the positional is Prefect 1's flow_path ...
    (lambda: Git("etl", repo="https://h.example/r.git"), ("https://h.example/r.git", "etl")),
    # ... with path= (ours) it is the repository.
    (lambda: Git("https://h.example/r.git", path="etl"), ("https://h.example/r.git", "etl")),
])
def test_two_positional_arguments_are_read_in_the_order_their_values_say(make, expected):
    storage = make()
    assert (storage.url, storage.path) == expected


def test_positional_arguments_that_could_be_either_order_are_refused_asking_for_keywords():
    with pytest.raises(StorageError) as info:
        Git("flows", "etl")
    message = str(info.value)
    assert "Git('flows', 'etl') is ambiguous" in message
    assert "Git(flow_path='flows', repo='etl')" in message
    assert "Git(repo='flows', path='etl')" in message
    assert "Git(repo=..., path=...) or Git(flow_path=..., repo=...)" in message


def test_a_prefect1_keyword_gives_owner_slash_name_prefect1s_meaning_and_ours_keeps_it_a_path():
    assert Git(repo="org/flows", path="etl.py", tag="v1").url == \
        "https://github.com/org/flows.git"
    assert Git(repo="org/flows", path="etl.py").url == "org/flows"


@pytest.mark.parametrize("call, fragments", [
    (lambda: Git("f.py", "org/r", branch_name="dev", tag="v1"),
     ["branch_name='dev', tag='v1'", "give only one of branch_name, tag, commit"]),
    (lambda: Git("f.py", "org/r", commit="abc", ref="main"), ["commit='abc', ref='main'"]),
    (lambda: Git("flows/etl.py", repo_host="github.com"),
     ["needs repo=", "git_clone_url_secret_name="]),
    (lambda: Git("f.py", "org/r", branch="dev"),
     ["unexpected argument 'branch'", "Did you mean 'branch_name'?"]),
    (lambda: Git(repo="org/r", path="a.py", flow_path="b.py"),
     ["path='a.py' and flow_path='b.py'", "give one"]),
    (lambda: Git("f.py", "org/r", clone_depth=0), ["clone_depth=0 must be a whole number"]),
    (lambda: Git("f.py", "org/r", branch_name="-x"), ["branch_name='-x' is not a branch name"]),
    (lambda: Git("f.py", repo="org/r", flow_name="a", repo_host="a b"),
     ["repo_host='a b' is not a host name"]),
    (lambda: Git("a.py", "org/r", "github.com", "f", "T", "u", None, None, None, None, 1,
                 False, True, "extra"), ["14 positional arguments", "at most 13"]),
    (lambda: Git("flows/etl.py", "org/r", repo="org/s"), ["repo='org/s'", "give it once"]),
])
def test_calls_prefect1_refuses_are_refused_when_made_naming_the_fix(call, fragments):
    with pytest.raises(StorageError) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value)


def test_arguments_that_would_be_ignored_are_said_to_be():
    with pytest.warns(UserWarning, match="use_ssh=True clones with this host's SSH keys, so "
                                         "git_token_secret_name='TOKEN' is not used"):
        Git("f.py", "org/r", use_ssh=True, git_token_secret_name="TOKEN")
    with pytest.warns(UserWarning, match="gives the whole clone URL, so repo, repo_host are "
                                         "not used"):
        Git("f.py", "org/r", repo_host="x.example", git_clone_url_secret_name="URL")


def test_prefect1_attributes_are_there_with_prefect1s_defaults():
    storage = Git("flows/etl.py", "org/flows")
    # Prefect 1.4.1: repo_host 'github.com', token user = the repo's owner, depth 1.
    assert (storage.repo, storage.repo_host, storage.git_token_username, storage.clone_depth,
            storage.use_ssh, storage.format_access_token, storage.flow_name) == (
        "org/flows", "github.com", "org", 1, False, True, None)
    assert storage.flows == {} and "etl" not in storage and storage.labels == []


@pytest.mark.parametrize("make", [
    lambda: Git(repo="org/repo", flow_path="flows/etl.py", branch_name="dev",
                git_token_secret_name="GH", git_token_username="bot", labels=["gpu"]),
    lambda: Git("flows/etl.py", "org/repo", "gitlab.example.com", "etl", tag="v1",
                format_access_token=False, clone_depth=5, secrets=["API"]),
    lambda: Git("flows/etl.py", git_clone_url_secret_name="URL", commit="abc123"),
    lambda: Git(flow_path="etl.py", repo="org/r", use_ssh=True, add_default_labels=False),
])
def test_prefect1_forms_survive_a_json_round_trip_of_their_ref(make):
    storage = make()
    ref = json.loads(json.dumps(storage.to_ref()))
    rebuilt = Storage.from_ref(ref)
    assert rebuilt == storage and rebuilt.to_ref() == ref
    for name in ("url", "path", "ref", "branch_name", "tag", "commit", "flow_name",
                 "git_token_secret_name", "git_token_username", "git_clone_url_secret_name",
                 "clone_depth", "use_ssh", "format_access_token", "labels", "secrets"):
        assert getattr(rebuilt, name) == getattr(storage, name), name


def test_a_ref_keeps_the_clone_url_decided_when_the_storage_was_made(tmp_path, monkeypatch):
    """'org/flows' meant GitHub when registered: a directory of that name where the
    run happens does not change it."""
    storage = Git(repo="org/flows", flow_path="etl.py", git_token_secret_name="GH")
    ref = json.loads(json.dumps(storage.to_ref()))
    (tmp_path / "org" / "flows").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert Storage.from_ref(ref).url == "https://github.com/org/flows.git"


# -- Git: loading from real repositories -----------------------------------------------

def test_branch_tag_commit_and_default_branch_check_out_what_prefect1_did(repo, home):
    first = repo.commit({"flows/hello.py": hello_source("One")}, tag="v1")
    repo.commit({"flows/hello.py": hello_source("Dev")}, branch="dev")
    repo.commit({"flows/hello.py": hello_source("Two")}, branch="main")  # the default branch
    at_repo = {"repo": str(repo.path), "flow_path": "flows/hello.py"}

    assert greeting_of(Git(**at_repo).get_flow("hello")) == "Two, world"
    assert greeting_of(Git(**at_repo, branch_name="dev").get_flow("hello")) == "Dev, world"
    assert greeting_of(Git(**at_repo, tag="v1").get_flow("hello")) == "One, world"
    assert greeting_of(Git(**at_repo, commit=first).get_flow("hello")) == "One, world"

    repo.commit({"flows/hello.py": hello_source("Three")}, branch="main")
    assert greeting_of(Git(**at_repo).get_flow("hello")) == "Three, world"


def test_tag_and_branch_name_look_only_among_tags_and_branches(repo):
    repo.commit({"hello.py": hello_source("Tagged")}, tag="release")
    repo.commit({"hello.py": hello_source("Branch")}, branch="release")
    assert greeting_of(Git("hello.py", str(repo.path), tag="release").get_flow("hello")) == \
        "Tagged, world"
    assert greeting_of(Git("hello.py", str(repo.path), branch_name="release")
                       .get_flow("hello")) == "Branch, world"
    with pytest.raises(StorageError) as info:
        Git("hello.py", str(repo.path), branch_name="v9").get_flow("hello")
    message = str(info.value)
    assert "branch 'v9' is not in" in message
    assert "branches: main, release; tags: release" in message
    assert "Fix branch_name=" in message


def test_a_missing_flow_file_names_the_branch_and_lists_python_files(repo):
    repo.commit({"flows/hello.py": hello_source()}, branch="dev")
    with pytest.raises(StorageError) as info:
        Git(flow_path="flows/etl.py", repo=str(repo.path), branch_name="dev").get_flow("hello")
    message = str(info.value)
    assert "'flows/etl.py' is not a file in" in message and "at branch 'dev'" in message
    assert ".py files there: flows/hello.py" in message


def test_flow_name_picks_one_flow_of_several_and_registering_another_is_refused(repo):
    two = hello_source("A", "a") + hello_source("B", "b").replace("flow", "flow_b")
    repo.commit({"flows.py": two})
    storage = Git("flows.py", str(repo.path), flow_name="b")
    assert greeting_of(storage.get_flow()) == "B, world"
    assert storage.add_flow(Flow("b")) == "flows.py" and storage.flows == {"b": "flows.py"}
    with pytest.raises(StorageError, match="set to flow 'b' .* was given flow 'a'"):
        storage.add_flow(Flow("a"))


def test_our_form_still_clones_a_local_repository_at_a_ref(repo, home):
    repo.commit({"flows/hello.py": hello_source("Ours")}, tag="v1")
    storage = Git(str(repo.path), "flows/hello.py", ref="v1")
    storage.add_flow(Flow("hello"), "etl", 1)
    checkout = home / "git" / hashlib.sha1(str(repo.path).encode()).hexdigest()
    assert (checkout / ".git").is_dir()
    assert greeting_of(storage.get_flow("hello")) == "Ours, world"


def test_a_ref_stored_before_prefect1s_form_existed_still_loads(repo):
    repo.commit({"flows/hello.py": hello_source("Stored")})
    old_ref = {"type": "Git", "repo": str(repo.path), "path": "flows/hello.py", "ref": "main",
               "cache_dir": None}
    storage = Storage.from_ref(old_ref)
    assert greeting_of(storage.get_flow("hello")) == "Stored, world"
    assert storage.settings_ref() == old_ref  # so a registered flow keeps its version


def test_a_relative_owner_slash_name_in_our_form_says_how_to_mean_github(tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageError) as info:
        Git("org/flows", "etl.py").get_flow("etl")
    message = str(info.value)
    assert "cannot clone 'org/flows'" in message
    assert "Git(repo='org/flows', flow_path='etl.py', repo_host='github.com')" in message


def test_the_token_secret_is_sent_as_prefect1_formatted_it_and_kept_out_of_everything(
        git_server, store, home):
    token = "t0ken-n0t-to-be-seen"
    store.set_secret("GIT_TOKEN", token)
    git_server.required = basic("org", token)  # Prefect 1.4.1: "{owner}:{token}@host"
    git_server.publish("org/flows", {"hello.py": hello_source("Private")})
    storage = Git(flow_path="hello.py", repo="org/flows", repo_host=f"http://{git_server.host}",
                  git_token_secret_name="GIT_TOKEN")

    assert storage.add_flow(Flow("hello"), "etl", 1) == "hello.py"

    assert greeting_of(storage.get_flow("hello")) == "Private, world"
    assert git_server.required in git_server.seen_authorization
    configs = [c.read_text() for c in (home / "git").glob("*/.git/config")]
    assert configs
    for where in [json.dumps(storage.to_ref()), repr(storage), *configs]:
        assert token not in where
        assert git_server.required.split()[1] not in where


@pytest.mark.parametrize("options, secret, expected", [
    ({"git_token_username": "bot"}, "tok", ("bot", "tok")),
    ({"format_access_token": False}, "x-token-auth:tok", ("x-token-auth", "tok")),
])
def test_token_user_and_unformatted_tokens_are_sent_as_prefect1_put_them_in_the_url(
        git_server, store, options, secret, expected):
    store.set_secret("GIT_TOKEN", secret)
    git_server.required = basic(*expected)
    git_server.publish("org/flows", {"hello.py": hello_source("Token")})
    storage = Git("hello.py", "org/flows", f"http://{git_server.host}",
                  git_token_secret_name="GIT_TOKEN", **options)
    assert greeting_of(storage.get_flow("hello")) == "Token, world"


def test_without_a_token_a_private_repository_says_how_to_give_one(git_server):
    git_server.required = basic("org", "something")
    git_server.publish("org/private", {"hello.py": hello_source()})
    with pytest.raises(StorageError) as info:
        Git("hello.py", "org/private", f"http://{git_server.host}").get_flow("hello")
    message = str(info.value)
    assert "cannot clone" in message
    assert "git_token_secret_name='NAME'" in message and "orchestrator secret set NAME" in message


def test_a_clone_url_secret_is_used_whole_and_its_credentials_go_in_a_header(
        git_server, store, home):
    git_server.required = basic("deploy", "s3cret")
    git_server.publish("org/flows", {"hello.py": hello_source("By URL")})
    store.set_secret("FLOWS_URL", f"http://deploy:s3cret@{git_server.host}/org/flows.git")
    storage = Git("hello.py", git_clone_url_secret_name="FLOWS_URL", branch_name="main")
    assert greeting_of(storage.get_flow("hello")) == "By URL, world"
    assert "FLOWS_URL" in repr(storage)
    [config] = [c.read_text() for c in (home / "git").glob("*/.git/config")]
    assert "s3cret" not in config and f"http://{git_server.host}/org/flows.git" in config


def test_a_missing_token_secret_names_it_and_how_to_set_it(git_server, store):
    git_server.publish("org/flows", {"hello.py": hello_source()})
    with pytest.raises(StorageError) as info:
        Git("hello.py", "org/flows", f"http://{git_server.host}",
            git_token_secret_name="NOT_SET").get_flow("hello")
    assert "secret 'NOT_SET' is not set" in str(info.value)
    assert "orchestrator secret set NOT_SET" in str(info.value)


def test_a_registered_prefect1_git_flow_runs_from_the_store_with_its_token(git_server, store):
    store.set_secret("GIT_TOKEN", "run-token")
    git_server.required = basic("org", "run-token")
    git_server.publish("org/flows", {"hello.py": hello_source("From the store")})
    flow = Flow("hello")
    flow.storage = Git(flow_path="hello.py", repo="org/flows",
                       repo_host=f"http://{git_server.host}", git_token_secret_name="GIT_TOKEN")
    record, new = service.register_flow(store, flow, "etl")
    assert new and record["storage"]["ref_kind"] == "default"
    assert service.register_flow(store, flow, "etl")[0]["version"] == record["version"]
    run = service.create_flow_run(store, "hello")
    assert backend.execute_flow_run(store, run["id"], service.load_flow) == "Success"


def test_a_prefect1_flow_file_with_git_storage_registers_and_runs_from_the_cli(
        repo, home, tmp_path, monkeypatch):
    """The flow file is Prefect 1's, imports aside: `orchestrator register` reads
    its Git storage, and the run loads the flow from the branch it names."""
    out = tmp_path / "out.txt"
    monkeypatch.setenv("HELLO_OUT", str(out))
    source = '''
        import os
        from orchestrator import Flow, task
        from orchestrator.storage import Git

        @task
        def say():
            with open(os.environ["HELLO_OUT"], "w") as f:
                f.write("{word}")

        with Flow("hello") as flow:
            say()
        flow.storage = Git(repo="{repo}", flow_path="flows/hello.py",
                           repo_host="github.com", branch_name="dev")
    '''
    flow_file = write(tmp_path / "hello.py", source.replace("{word}", "local copy")
                      .replace("{repo}", str(repo.path)))
    repo.commit({"flows/hello.py": flow_file.read_text().replace("local copy", "from dev")},
                branch="dev")
    cli(home, "project", "create", "etl")
    assert "registered version 1" in cli(home, "register", "-p", "etl", flow_file)
    cli(home, "run", "hello", "--local")
    assert out.read_text() == "from dev"


# -- Local -------------------------------------------------------------------------------

def test_local_stored_as_script_runs_the_file_at_every_run_and_pickles_nothing(tmp_path,
                                                                              home):
    script = write(tmp_path / "flows" / "etl.py", hello_source("Before"))
    storage = Local(path=str(script), stored_as_script=True)
    flow = load_flows_from_file(script)["hello"]
    assert storage.add_flow(flow, "etl", 1) == str(script)
    write(script, hello_source("After"))
    rebuilt = Storage.from_ref(json.loads(json.dumps(storage.to_ref())))
    assert greeting_of(rebuilt.get_flow("hello")) == "After, world"
    assert rebuilt.labels == [socket.gethostname()]
    assert not (home / "flows").exists()


def test_local_script_path_is_made_absolute_and_loads_in_a_fresh_process(tmp_path,
                                                                        monkeypatch):
    write(tmp_path / "flows" / "etl.py", hello_source("Fresh"))
    monkeypatch.chdir(tmp_path)
    storage = Local(path="flows/etl.py", stored_as_script=True)
    assert storage.path == str(tmp_path / "flows" / "etl.py")
    code = ("import json, sys\n"
            "from orchestrator.storage import Storage\n"
            "flow = Storage.from_ref(json.loads(sys.argv[1])).get_flow('hello')\n"
            "[greet] = flow.get_tasks(name='greet')\n"
            "print(flow.run().result[greet].result)\n")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(storage.to_ref())],
                          cwd="/", capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Fresh, world"


def test_local_script_path_may_be_a_module_as_in_prefect1(tmp_path, monkeypatch):
    write(tmp_path / "lgp_pkg" / "__init__.py", "")
    write(tmp_path / "lgp_pkg" / "flows.py", hello_source("Module path"))
    monkeypatch.syspath_prepend(str(tmp_path))
    storage = Local(path="lgp_pkg.flows", stored_as_script=True)
    assert storage.path == "lgp_pkg.flows"
    storage.add_flow(Flow("hello"))
    assert greeting_of(Storage.from_ref(storage.to_ref()).get_flow("hello")) == \
        "Module path, world"


def test_local_stored_as_script_without_path_uses_the_flow_file_being_registered(
        tmp_path, home):
    flow_file = write(tmp_path / "etl.py", '''
        from orchestrator import Flow
        from orchestrator.storage import Local
        flow = Flow("etl", storage=Local(stored_as_script=True))
    ''')
    flow = load_flows_from_file(flow_file)["etl"]
    assert flow.storage.path == str(flow_file)
    with pytest.raises(StorageError, match=r"stored_as_script=True needs path=.*"
                                           r"Local\(path='flows/etl.py'"):
        Local(stored_as_script=True).add_flow(Flow("etl"), "etl", 1)


def test_local_script_that_no_longer_defines_the_flow_is_reported(tmp_path):
    script = write(tmp_path / "etl.py", hello_source(flow_name="other"))
    with pytest.raises(StorageError, match="has no flow named 'hello'; it defines: other"):
        Local(path=script, stored_as_script=True).add_flow(Flow("hello"), "etl", 1)


def test_local_directory_expands_the_home_as_prefect1_and_validate_false_keeps_it(
        tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    flow = load_flows_from_file(write(tmp_path / "hello.py", hello_source("Home")))["hello"]
    storage = Local(directory="~/.prefect/flows")
    assert storage.directory == str(tmp_path / ".prefect" / "flows")
    location = storage.add_flow(flow, "etl", 2)
    assert location == str(tmp_path / ".prefect" / "flows" / "etl" / "hello" / "v2.pkl")
    assert greeting_of(Storage.from_ref(storage.to_ref()).get_flow("hello")) == "Home, world"
    kept = Local(directory="~/.prefect/flows", validate=False)
    assert kept.directory == "~/.prefect/flows"
    assert Storage.from_ref(kept.to_ref()).directory == "~/.prefect/flows"


def test_local_add_flow_with_only_the_flow_as_prefect1_calls_it(tmp_path, home):
    flow = load_flows_from_file(write(tmp_path / "hello.py", hello_source("Bare")))["hello"]
    storage = Local()
    location = Path(storage.add_flow(flow))
    assert location.parent == home / "flows" / "hello" and location.suffix == ".pkl"
    assert "hello" in storage
    assert greeting_of(Storage.from_ref(storage.to_ref()).get_flow("hello")) == "Bare, world"


def test_local_path_pickles_to_that_file_and_refuses_it_once_replaced(tmp_path):
    flow = load_flows_from_file(write(tmp_path / "hello.py", hello_source("Pinned")))["hello"]
    target = tmp_path / "out" / "hello.pkl"
    storage = Local(path=str(target))
    assert storage.add_flow(flow, "etl", 1) == str(target)
    ref = json.loads(json.dumps(storage.to_ref()))
    assert greeting_of(Storage.from_ref(ref).get_flow("hello")) == "Pinned, world"

    other = load_flows_from_file(write(tmp_path / "hello2.py", hello_source("Other")))["hello"]
    Local(path=str(target)).add_flow(other, "etl", 2)  # a second version, same path
    with pytest.raises(StorageError) as info:
        Storage.from_ref(ref).get_flow("hello")
    message = str(info.value)
    assert f"Refusing to unpickle flow 'hello' from {target}" in message
    assert "leave path= unset" in message


def test_local_path_to_a_py_file_without_stored_as_script_is_refused_not_overwritten(
        tmp_path):
    script = write(tmp_path / "etl.py", hello_source())
    with pytest.raises(StorageError) as info:
        Local(path=str(script)).add_flow(Flow("hello"), "etl", 1)
    assert "would be written over it" in str(info.value)
    assert "stored_as_script=True" in str(info.value)
    assert script.read_text() == hello_source()


def test_local_labels_and_options_are_prefect1s(tmp_path):
    host = socket.gethostname()
    assert Local(labels=["gpu"]).labels == sorted(["gpu", host])
    assert Local(labels=["gpu"], add_default_labels=False).labels == ["gpu"]
    assert Local(add_default_labels=None).labels == [host]  # None: Prefect 1's default
    storage = Local(labels=["gpu"], secrets=["DB"], result="kept?")
    assert Storage.from_ref(json.loads(json.dumps(storage.to_ref()))) == storage
    flow = load_flows_from_file(write(tmp_path / "hello.py", hello_source()))["hello"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        storage.add_flow(flow, "etl", 1)
    said = " ".join(str(w.message) for w in caught)
    assert "secrets=['DB']" in said and "SecretTask('DB')" in said
    assert "result='kept?' is not kept" in said
    with pytest.raises(StorageError, match="unexpected argument 'directry'. Did you mean "
                                           "'directory'?"):
        Local(directry="/tmp")


def test_local_refs_made_before_keep_their_shape():
    assert Local().to_ref() == {"type": "Local", "directory": None, "add_default_labels": True,
                                "host": socket.gethostname(), "flows": {}}


# -- Module ------------------------------------------------------------------------------

@pytest.fixture
def package(tmp_path, monkeypatch):
    """An importable package `lgp_flows` in tmp_path (removed from sys.modules after)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    write(tmp_path / "lgp_flows" / "__init__.py", "")
    before = set(sys.modules)
    yield tmp_path / "lgp_flows"
    for name in set(sys.modules) - before:
        if name.startswith("lgp_flows"):
            del sys.modules[name]


def test_module_colon_attribute_names_the_flow_or_a_function_making_it(package):
    write(package / "etl.py", hello_source("Attr") + '''
def build():
    return flow

settings = {"x": 1}
''')
    assert greeting_of(Module("lgp_flows.etl:flow").get_flow("hello")) == "Attr, world"
    assert greeting_of(Module("lgp_flows.etl:build").get_flow()) == "Attr, world"
    storage = Module("lgp_flows.etl:flow")
    assert storage.add_flow(Flow("hello")) == "lgp_flows.etl:flow"
    assert Storage.from_ref(storage.to_ref()) == storage
    for module, fragment in [("lgp_flows.etl:missing", "has no attribute 'missing'"),
                             ("lgp_flows.etl:settings", "is a dict, not a Flow"),
                             ("lgp_flows.nowhere:flow", "cannot import 'lgp_flows.nowhere'")]:
        with pytest.raises(StorageError, match=fragment):
            Module(module).get_flow("hello")
    with pytest.raises(StorageError, match="is flow 'hello', not 'etl'"):
        Module("lgp_flows.etl:flow").get_flow("etl")


def test_module_dunder_name_in_a_flow_file_registered_as_a_file_finds_its_module(package):
    flow_file = write(package / "scheduled.py", hello_source("By __name__").replace(
        "from orchestrator import", "from orchestrator.storage import Module\n"
        "from orchestrator import") + "\nflow.storage = Module(__name__)\n")
    flow = load_flows_from_file(flow_file)["hello"]
    assert flow.storage.module == "lgp_flows.scheduled"
    flow.storage.add_flow(flow, "etl", 1)
    assert greeting_of(Storage.from_ref(flow.storage.to_ref()).get_flow("hello")) == \
        "By __name__, world"


def test_module_dunder_name_of_a_file_no_import_finds_says_what_to_write(tmp_path):
    flow_file = write(tmp_path / "lonely" / "flows-file.py", '''
        from orchestrator import Flow
        from orchestrator.storage import Module
        flow = Flow("hello", storage=Module(__name__))
    ''')
    flow = load_flows_from_file(flow_file)["hello"]  # building it is fine ...
    with pytest.raises(StorageError) as info:       # ... registering says what to do
        flow.storage.add_flow(flow, "etl", 1)
    message = str(info.value)
    assert "'__orchestrator_flow_file__', the name a flow file runs under" in message
    assert "Module('mypackage.flows')" in message
    assert "Local(path='flows/etl.py', stored_as_script=True)" in message


def test_module_takes_prefect1s_options_and_keeps_the_old_ref_shape():
    assert Module("pkg.flows").to_ref() == {"type": "Module", "module": "pkg.flows",
                                            "flow_name": None}
    storage = Module("pkg.flows", labels=["etl"], secrets=["KEY"])
    assert storage.labels == ["etl"]
    assert Storage.from_ref(json.loads(json.dumps(storage.to_ref()))) == storage
    with pytest.raises(StorageError, match="unexpected argument 'flow'. Did you mean "
                                           "'flow_name'?"):
        Module("pkg.flows", flow="etl")
