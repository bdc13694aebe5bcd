"""`Git` storage: a flow file in a git repository, checked out at a branch, tag
or commit in a clone cached on the host that runs it. Takes our arguments and
Prefect 1's; GitHub, GitLab and Bitbucket (`git_hosts`) clone through it."""

import hashlib
import logging
import os
import re
import shutil
import subprocess
import urllib.parse
import warnings
from pathlib import Path, PurePosixPath

from ...config import home_dir
from ..loading import FlowFileError, load_flows_from_file
from .base import Storage, StorageError, _check_registration, _pick
from .credentials import _basic_auth, _secret_value
from .prefect1 import (_json_copy, _options_from_ref, _options_ref, _storage_options,
                       _warn_ignored_options)

# The package's name, not __name__: all of storage logs through one logger,
# the name logging settings and tests select its records by (a child logger's
# records would carry the child's name).
logger = logging.getLogger("orchestrator.flows.storage")


def _git_error_line(stderr):
    """The line of git's stderr that says what went wrong.

    That is git's first `fatal:`/`error:` line (after it come generic hints
    such as "Please make sure you have the correct access rights"), else its
    last line.
    """
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("fatal:", "error:")):
            return line
    return lines[-1] if lines else "(git printed no message)"


# Git's positional arguments in each form: Prefect 1 put the flow file first.
_GIT_PREFECT1_ORDER = ("flow_path", "repo", "repo_host", "flow_name", "git_token_secret_name",
                       "git_token_username", "git_clone_url_secret_name", "branch_name", "tag",
                       "commit", "clone_depth", "use_ssh", "format_access_token")
_GIT_OWN_ORDER = ("repo", "path", "ref", "cache_dir")
# Arguments only Prefect 1's Git has: any of them gives a call Prefect 1's meaning.
_GIT_PREFECT1_ONLY = frozenset(_GIT_PREFECT1_ORDER) - {"repo", "flow_name"}
_GIT_REF_KEYWORDS = {None: "ref", "branch": "branch_name", "tag": "tag", "commit": "commit"}
_SCP_LIKE_URL = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:")


def _looks_like_flow_file(value):
    return isinstance(value, str) and value.endswith(".py")


def _looks_like_repository(value):
    return isinstance(value, str) and (
        "://" in value or bool(_SCP_LIKE_URL.match(value)) or value.rstrip("/").endswith(".git")
        or os.path.isabs(value) or os.path.isdir(value))


def _git_order(args, given):
    """Which of Git's two positional orders `args` are in, given the keywords
    `given`: (repo, path, ...) or Prefect 1's (flow_path, repo, ...)."""
    if "repo" in given:
        return _GIT_PREFECT1_ORDER   # Git("flows/etl.py", repo="org/flows")
    if "path" in given or "flow_path" in given:
        return _GIT_OWN_ORDER        # Git("/srv/git/flows", path="flows/etl.py")
    if len(args) == 1:
        return _GIT_PREFECT1_ORDER   # Git("flows/etl.py", git_clone_url_secret_name=...)
    first, second = args[0], args[1]
    if _looks_like_flow_file(first) != _looks_like_flow_file(second):
        return _GIT_OWN_ORDER if _looks_like_flow_file(second) else _GIT_PREFECT1_ORDER
    if _looks_like_repository(first) != _looks_like_repository(second):
        return _GIT_OWN_ORDER if _looks_like_repository(first) else _GIT_PREFECT1_ORDER
    raise StorageError(
        f"Git({first!r}, {second!r}) is ambiguous: Prefect 1 reads it as "
        f"Git(flow_path={first!r}, repo={second!r}), this orchestrator as "
        f"Git(repo={first!r}, path={second!r}), and neither value looks like a .py file "
        "or a repository URL. Name them: Git(repo=..., path=...) or "
        "Git(flow_path=..., repo=...)"
    )


def _name_git_arguments(args, given):
    """Git's arguments by name: `args` (positional) named in the order their
    values say, merged with the keywords `given` (those not None)."""
    if not args:
        return dict(given)
    order = _git_order(args, given)
    if len(args) > len(order):
        form = ", ".join(order)
        raise StorageError(
            f"Git storage got {len(args)} positional arguments; in the form Git({form}) it "
            f"takes at most {len(order)}: name the others"
        )
    named = dict(zip(order, args))
    for name, value in given.items():
        if name in named:
            raise StorageError(
                f"Git storage got {name}={value!r} and a positional argument read as "
                f"{name}={named[name]!r}; give it once"
            )
        named[name] = value
    return named


def _default_token_user(repo):
    """Prefect 1's user for an access token: the repository's owner ('org' of 'org/flows')."""
    if not repo:
        return None
    if "://" in repo:
        repo = urllib.parse.urlsplit(repo).path
    return repo.strip("/").split("/")[0] or None


def _split_credentials(url):
    """(`url` without user and password, an 'Authorization: Basic' header for them
    or None): credentials in an http(s) URL are sent as a header, so that git
    keeps them out of .git/config and this orchestrator out of its messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.username is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    header = _basic_auth(urllib.parse.unquote(parts.username),
                         urllib.parse.unquote(parts.password or ""))
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), header


def _with_scheme(host):
    host = host.rstrip("/")
    return host if "://" in host else f"https://{host}"


def _prefect1_clone_url(repo, repo_host, use_ssh):
    """The URL Prefect 1's Git cloned for `repo` ('org/flows') on `repo_host`:
    https://{repo_host}/{repo}.git, or git@{repo_host}:{repo}.git with use_ssh.

    A repo that is already a URL, or an absolute or ./-relative path, is used
    as it is (Prefect 1 would have garbled it); a repo_host with a scheme
    (http://git.internal:8080) keeps it.
    """
    if "://" in repo or _SCP_LIKE_URL.match(repo):
        return repo
    if os.path.isabs(repo) or repo.startswith(("./", "../", "~")):
        return os.path.abspath(os.path.expanduser(repo))
    name = repo.strip("/").removesuffix(".git")
    if use_ssh:
        host = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", repo_host).rstrip("/")
        return f"git@{host}:{name}.git"
    return f"{_with_scheme(repo_host)}/{name}.git"


def _git_header_env(url, header):
    """Environment that makes git send `header` to `url` (and nowhere else)."""
    index = int(os.environ.get("GIT_CONFIG_COUNT", "0") or 0)
    return {"GIT_CONFIG_COUNT": str(index + 1),
            f"GIT_CONFIG_KEY_{index}": f"http.{url}.extraHeader",
            f"GIT_CONFIG_VALUE_{index}": header}


# -- Git's arguments -------------------------------------------------------------
#
# The steps of `Git(...)`, each reading one thing from the arguments named by
# `_name_git_arguments`, then those of `Git._configure` (`_check*`), which
# check a stored ref too. Each refuses what cannot work with a message that
# says what to write instead.

def _flow_file_argument(named):
    """The flow file's path in the repository, given as `path` or Prefect 1's
    `flow_path`."""
    if "path" in named and "flow_path" in named and named["path"] != named["flow_path"]:
        raise StorageError(
            f"Git storage got path={named['path']!r} and flow_path="
            f"{named['flow_path']!r}, two names for the flow file; give one"
        )
    file_path = named.get("flow_path", named.get("path"))
    if "flow_path" in named and isinstance(file_path, str):
        file_path = file_path.lstrip("/")  # Prefect 1's examples write "/flows/flow.py"
    if file_path is None:
        raise StorageError(
            "Git storage needs the flow file's path in the repository: "
            "Git(repo, 'flows/etl.py') or Git(flow_path='flows/etl.py', repo=...)"
        )
    return file_path


def _ref_argument(named, prefect1):
    """(kind, value) of the one ref given (branch_name, tag, commit or ref);
    without one, Prefect 1's form takes the default branch and ours "main"."""
    refs = [(kind, named[keyword]) for kind, keyword in
            (("branch", "branch_name"), ("tag", "tag"), ("commit", "commit"), (None, "ref"))
            if named.get(keyword) is not None]
    if len(refs) > 1:
        shown = ", ".join(f"{_GIT_REF_KEYWORDS[k]}={v!r}" for k, v in refs)
        raise StorageError(
            f"Git storage got {shown}; give only one of branch_name, tag, commit "
            "(or ref)"
        )
    if refs:
        return refs[0]
    if prefect1:
        return "default", None
    return None, "main"


def _clone_source(named, prefect1):
    """(repo, the URL git clones): None for the URL when a secret holds it."""
    repo = named.get("repo")
    if named.get("git_clone_url_secret_name") is not None:
        return repo, None
    if repo is None:
        raise StorageError(
            "Git storage needs repo= (a URL, a local path, or Prefect 1's 'org/flows' "
            "with repo_host=) or git_clone_url_secret_name= (a secret holding the URL)"
        )
    if not isinstance(repo, str) or not repo.strip() or repo.startswith("-"):
        return repo, repo  # refused in _configure, with the message it always gave
    if prefect1:
        use_ssh = bool(named.get("use_ssh", False))
        return repo, _prefect1_clone_url(repo, named.get("repo_host", "github.com"), use_ssh)
    if "://" not in repo and os.path.isdir(repo):
        repo = os.path.abspath(repo)
    return repo, repo


def _warn_unused_credentials(named):
    """Warn about the ways of signing in a Git call gave that another one overrides."""
    # stacklevel 3: the line that called Git(...), past Git.__init__.
    url_secret = named.get("git_clone_url_secret_name")
    if url_secret is not None:
        ignored = [n for n in ("repo", "repo_host", "git_token_secret_name",
                               "git_token_username", "use_ssh", "format_access_token")
                   if n in named]
        if ignored:
            warnings.warn(
                f"Git storage: git_clone_url_secret_name={url_secret!r} gives the whole "
                f"clone URL, so {', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'}"
                " not used", UserWarning, stacklevel=3)
    elif named.get("use_ssh") and named.get("git_token_secret_name") is not None:
        warnings.warn(
            f"Git storage: use_ssh=True clones with this host's SSH keys, so "
            f"git_token_secret_name={named['git_token_secret_name']!r} is not used",
            UserWarning, stacklevel=3)


def _check_source(repo, url):
    """Refuse a repo or clone URL that is not one (a leading '-' would reach git
    as an option)."""
    if repo is not None and (not isinstance(repo, str) or not repo.strip()
                             or repo.startswith("-")):
        raise StorageError(
            f"Git storage repo={repo!r} is not a repository URL or path; give e.g. "
            "'https://github.com/org/flows.git' or '/srv/git/flows'"
        )
    if url is not None and (not isinstance(url, str) or url.startswith("-")):
        raise StorageError(f"Git storage clone URL {url!r} is not a repository URL")


def _checked_flow_file(path):
    """`path` as a POSIX path relative to the repository root, staying inside it."""
    if not isinstance(path, str) or not path.strip():
        raise StorageError(
            f"Git storage path={path!r} is not a path; give the flow file's path "
            "inside the repository, e.g. 'flows/etl.py'"
        )
    pure = PurePosixPath(path.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise StorageError(
            f"Git storage path={path!r} must be relative to the repository root and "
            "stay inside it, e.g. 'flows/etl.py'"
        )
    return pure


def _check_ref(ref, ref_kind):
    """Refuse a ref git could misread: empty, an option, or with spaces or control
    characters (and a `ref_kind` no code path gives)."""
    if ref_kind not in (None, "branch", "tag", "commit", "default"):
        raise TypeError(f"unknown ref_kind {ref_kind!r}")
    if ref_kind != "default" and (
            not isinstance(ref, str) or not ref or ref.startswith("-")
            or any(c.isspace() or ord(c) < 32 for c in ref)):
        keyword = _GIT_REF_KEYWORDS[ref_kind]
        what = {"ref": "a branch, tag or commit name", "branch_name": "a branch name",
                "tag": "a tag name", "commit": "a commit sha"}[keyword]
        raise StorageError(
            f"Git storage {keyword}={ref!r} is not {what}; give e.g. "
            "'main', 'v1.2' or a commit sha"
        )


def _checked_clone_depth(depth):
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise StorageError(
            f"Git storage clone_depth={depth!r} must be a whole number >= 1"
        )
    return depth


def _checked_repo_host(host):
    if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host):
        raise StorageError(
            f"Git storage repo_host={host!r} is not a host name; give e.g. "
            "'github.com' or 'gitlab.example.com'"
        )
    return host


class Git(Storage):
    """A flow file in a git repository, checked out at a branch, tag or commit.

    Two forms, ours and Prefect 1's (all of Prefect 1.4.1's arguments):

        Git("https://git.example.com/flows.git", "flows/etl.py", ref="v1.2")
        Git("/srv/git/flows", "flows/etl.py")                  # ref="main" by default
        Git(repo="org/flows", flow_path="flows/etl.py", repo_host="github.com",
            branch_name="dev", git_token_secret_name="GITHUB_TOKEN")
        Git("flows/etl.py", "org/flows", tag="v1")             # Prefect 1's order

    Ours: `repo` is a URL or a local path, used as it is; `path` is the flow
    file in it; `ref` a branch, tag or commit (default "main"); `cache_dir`
    where clones go. Prefect 1's: `repo` ('org/flows') on `repo_host`
    (default github.com; one with a scheme, http://git.internal:8080, keeps
    it) is cloned from https://{repo_host}/{repo}.git, or
    git@{repo_host}:{repo}.git with `use_ssh=True` (a repo that is already a
    URL or an absolute path is used as it is); `git_token_secret_name`
    names the secret holding an access token, sent as
    `git_token_username` (default: the repo's owner) and the token, or, with
    `format_access_token=False`, as the secret's value alone ('user:token');
    `git_clone_url_secret_name` names a secret holding the whole clone URL
    instead; one of `branch_name`, `tag` or `commit` (default: the
    repository's default branch); `flow_name` picks one flow of several in the
    file; a leading '/' in `flow_path` means the repository's root.

    Which form a call is (it decides how `repo` is read and the default ref):
    Prefect 1's when it gives `flow_path` or any argument only Prefect 1 had
    (repo_host, branch_name, tag, commit, git_token_*, git_clone_url_secret_name,
    clone_depth, use_ssh, format_access_token); ours otherwise. Positional
    arguments: with `repo=` named, or alone, the first is Prefect 1's
    `flow_path`; with `path=` or `flow_path=` named, it is the repository.
    Two or more are read in the order their values say: the one ending in
    `.py` is the flow file; else the one that is a URL, a `.git` name, an
    absolute path or an existing directory is the repository; if neither
    tells, the call is refused and asks for keywords.

    The repository is cloned once per host into `$ORCHESTRATOR_HOME/git/<sha1 of
    the URL>/` (or under `cache_dir`) and fetched at every `get_flow`, so a moved
    branch is picked up (`clone_depth` is kept but the cached clone is whole,
    so any commit can be checked out). A file lock next to the checkout keeps
    concurrent runs on one host from checking out over each other. Tokens and
    URLs from secrets are read when git runs and reach git as an HTTP header in
    its environment: never the stored ref, .git/config, a repr or a message.
    """

    timeout = 300  # seconds for any one git command, and for waiting on the lock
    # Extra environment for git (GitHub/GitLab/Bitbucket put an access token's
    # header here): the environment, unlike a command line or a URL, is not
    # visible to other users and never lands in .git/config or a stored ref.
    _credential_env = {}

    def __init__(self, *args, flow_path=None, repo=None, repo_host=None, flow_name=None,
                 git_token_secret_name=None, git_token_username=None,
                 git_clone_url_secret_name=None, branch_name=None, tag=None, commit=None,
                 clone_depth=None, use_ssh=None, format_access_token=None,
                 path=None, ref=None, cache_dir=None, **kwargs):
        options = _storage_options("Git", kwargs, _GIT_PREFECT1_ORDER + _GIT_OWN_ORDER[1:])
        given = {name: value for name, value in {
            "flow_path": flow_path, "repo": repo, "repo_host": repo_host,
            "flow_name": flow_name, "git_token_secret_name": git_token_secret_name,
            "git_token_username": git_token_username,
            "git_clone_url_secret_name": git_clone_url_secret_name,
            "branch_name": branch_name, "tag": tag, "commit": commit,
            "clone_depth": clone_depth, "use_ssh": use_ssh,
            "format_access_token": format_access_token, "path": path, "ref": ref,
            "cache_dir": cache_dir}.items() if value is not None}
        named = _name_git_arguments(args, given)
        prefect1 = bool(_GIT_PREFECT1_ONLY & set(named))
        file_path = _flow_file_argument(named)
        ref_kind, ref_value = _ref_argument(named, prefect1)
        repo, url = _clone_source(named, prefect1)
        _warn_unused_credentials(named)
        self._configure(
            repo=repo, url=url, path=file_path, ref=ref_value, ref_kind=ref_kind,
            cache_dir=named.get("cache_dir"), flow_name=named.get("flow_name"),
            prefect1={name: named[name] for name in _GIT_PREFECT1_ONLY - {"flow_path"}
                      if name in named and name not in ("branch_name", "tag", "commit")},
            options=options)

    def _configure(self, repo, url, path, ref, ref_kind, cache_dir, flow_name, prefect1,
                   options):
        """Check and set every attribute (the constructor's and `_from_ref`'s end)."""
        _check_source(repo, url)
        pure = _checked_flow_file(path)
        _check_ref(ref, ref_kind)
        depth = _checked_clone_depth(prefect1.get("clone_depth", 1))
        host = _checked_repo_host(prefect1.get("repo_host", "github.com"))
        self.repo = repo
        self.url = url            # what git clones; None: read from the URL secret
        self.path = pure.as_posix()
        self.ref = ref
        self._ref_kind = ref_kind  # None: any of branch, tag, commit (ours)
        self.cache_dir = os.path.abspath(os.fspath(cache_dir)) if cache_dir is not None else None
        self.flow_name = flow_name
        self._prefect1 = dict(prefect1)  # Prefect 1's settings that were given
        self.repo_host = host
        self.git_token_secret_name = prefect1.get("git_token_secret_name")
        self.git_token_username = (prefect1.get("git_token_username")
                                   or _default_token_user(repo))
        self.git_clone_url_secret_name = prefect1.get("git_clone_url_secret_name")
        self.clone_depth = depth
        self.use_ssh = bool(prefect1.get("use_ssh", False))
        self.format_access_token = bool(prefect1.get("format_access_token", True))
        self._labels = options["labels"]
        self.secrets = options["secrets"]
        self.result = options["result"]
        self.add_default_labels = options["add_default_labels"]
        self.stored_as_script = options["stored_as_script"]
        self.flows = {}    # flow name -> flow file, as Prefect 1 kept them
        self._flows = {}

    # Prefect 1's names for what is kept as `path` and `ref`.
    @property
    def flow_path(self):
        return self.path

    @property
    def branch_name(self):
        return self.ref if self._ref_kind == "branch" else None

    @property
    def tag(self):
        return self.ref if self._ref_kind == "tag" else None

    @property
    def commit(self):
        return self.ref if self._ref_kind == "commit" else None

    def __repr__(self):
        if self.repo is not None:
            repo = f"repo={self.repo!r}"
        else:
            repo = f"git_clone_url_secret_name={self.git_clone_url_secret_name!r}"
        at = "" if self._ref_kind == "default" else (
            f", {_GIT_REF_KEYWORDS[self._ref_kind]}={self.ref!r}")
        return f"Git({repo}, path={self.path!r}{at})"

    def _at(self):
        """Where in the history the flow is taken from, for messages."""
        if self._ref_kind is None:
            return repr(self.ref)
        if self._ref_kind == "default":
            return "the default branch"
        return f"{self._ref_kind} {self.ref!r}"

    def checkout_directory(self, url=None):
        """Where the repository at `url` (this storage's) is cloned on this host."""
        base = Path(self.cache_dir) if self.cache_dir is not None else home_dir() / "git"
        url = url if url is not None else self.url
        return base / hashlib.sha1(url.encode("utf-8")).hexdigest()

    def add_flow(self, flow, project=None, version=None):
        """Check the file at the ref defines `flow`; returns the file's path."""
        _check_registration(flow, project, version, optional=True)
        _warn_ignored_options(self, flow)
        if self.flow_name is not None and self.flow_name != flow.name:
            raise StorageError(
                f"Git storage is set to flow {self.flow_name!r} (flow_name=) but was given "
                f"flow {flow.name!r}; use one Git storage per flow"
            )
        self.get_flow(flow.name)
        self.flows[flow.name] = self.path
        self._flows[flow.name] = flow
        return self.path

    def _remote(self):
        """(the URL git clones, the environment that gives git its credentials),
        with the secrets they come from read now."""
        what = f"Git storage for {self.path!r}"
        if self.git_clone_url_secret_name is not None:
            value = _secret_value(self.git_clone_url_secret_name, what)
            url, header = _split_credentials(str(value).strip())
            return url, (_git_header_env(url, header) if header else {})
        if self.git_token_secret_name is not None and not self.use_ssh:
            token = str(_secret_value(self.git_token_secret_name, what))
            if self.format_access_token:
                header = _basic_auth(self.git_token_username or "", token)
            else:  # the secret is what goes before '@' in the URL: 'user:token' or 'token'
                user, _, password = token.partition(":")
                header = _basic_auth(user, password)
            return self.url, _git_header_env(self.url, header)
        return self.url, self._credential_env

    def _git(self, *args, cwd=None, env=None, url=None):
        full_env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
        full_env.update(self._credential_env if env is None else env)
        try:
            return subprocess.run(["git", *args], cwd=cwd, env=full_env, capture_output=True,
                                  text=True, timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise StorageError(
                "Git storage needs the `git` program, which is not on PATH; install git "
                "on the host that runs the flow"
            ) from None
        except subprocess.TimeoutExpired:
            raise StorageError(
                f"`git {args[0]}` for {url or self.url!r} did not finish within "
                f"{self.timeout} s; check the network and that the repository URL is right"
            ) from None

    def _reach_hint(self):
        """More for a clone or fetch that failed: what was likely meant."""
        if self.repo is not None and self._ref_kind is None and self.url == self.repo \
                and re.match(r"^[\w.-]+/[\w.-]+$", self.repo) and not os.path.exists(self.repo):
            return (f" ({self.repo!r} is not a directory here; for the GitHub repository "
                    f"{self.repo!r}, write Git(repo={self.repo!r}, flow_path={self.path!r}, "
                    "repo_host='github.com') or give its URL)")
        prefect1_form = self._ref_kind is not None or bool(self._prefect1)
        if (prefect1_form and self.git_token_secret_name is None
                and self.git_clone_url_secret_name is None and not self.use_ssh
                and (self.url or "").startswith(("http://", "https://"))):
            return (" (no access token was used: for a private repository pass "
                    "git_token_secret_name='NAME' and run `orchestrator secret set NAME`)")
        return ""

    def _update_checkout(self, checkout, url, env):
        if not (checkout / ".git").is_dir():
            shutil.rmtree(checkout, ignore_errors=True)
            partial = checkout.with_name(checkout.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            done = self._git("clone", "--quiet", "--no-checkout", "--", url, str(partial),
                             env=env, url=url)
            if done.returncode != 0:
                shutil.rmtree(partial, ignore_errors=True)
                raise StorageError(
                    f"Git storage cannot clone {url!r}: {_git_error_line(done.stderr)}; "
                    "check the URL and that this host can reach it (network, credentials)"
                    f"{self._reach_hint()}"
                )
            os.replace(partial, checkout)
            logger.info("Cloned %s into %s", url, checkout)
        else:
            done = self._git("fetch", "--quiet", "--force", "--prune", "--tags", "origin",
                             cwd=checkout, env=env, url=url)
            if done.returncode != 0:
                raise StorageError(
                    f"Git storage cannot fetch {url!r}: {_git_error_line(done.stderr)}; "
                    "check the URL and that this host can reach it (network, credentials)"
                    f"{self._reach_hint()}"
                )

    def _resolve_ref(self, checkout, url):
        kind, ref = self._ref_kind, self.ref
        candidates = {
            None: (f"refs/remotes/origin/{ref}", f"refs/tags/{ref}", ref),
            "branch": (f"refs/remotes/origin/{ref}",),
            "tag": (f"refs/tags/{ref}",),
            "commit": (ref,),
            "default": ("refs/remotes/origin/HEAD",),
        }[kind]
        for candidate in candidates:
            done = self._git("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}",
                             cwd=checkout, url=url)
            if done.returncode == 0:
                return done.stdout.strip()
        done = self._git("rev-parse", "--verify", f"{candidates[-1]}^{{commit}}", cwd=checkout,
                         url=url)
        listed = self._git("for-each-ref", "--format=%(refname)", "refs/remotes/origin",
                           "refs/tags", cwd=checkout, url=url).stdout.split()
        branches = sorted(r[len("refs/remotes/origin/"):] for r in listed
                          if r.startswith("refs/remotes/origin/") and not r.endswith("/HEAD"))
        tags = sorted(r[len("refs/tags/"):] for r in listed if r.startswith("refs/tags/"))
        known = f"branches: {', '.join(branches) or 'none'}; tags: {', '.join(tags) or 'none'}"
        git_says = _git_error_line(done.stderr)
        if kind is None:
            raise StorageError(
                f"Git storage: ref {ref!r} is not a branch, tag or commit of {url!r} "
                f"(git: {git_says}); {known}. Use one of them or a commit sha"
            )
        if kind == "default":
            raise StorageError(
                f"Git storage: {url!r} has no default branch here (git: {git_says}); {known}. "
                "Give branch_name=, tag= or commit="
            )
        raise StorageError(
            f"Git storage: {kind} {ref!r} is not in {url!r} (git: {git_says}); {known}. "
            f"Fix {_GIT_REF_KEYWORDS[kind]}=, or use branch_name=, tag= or commit= for "
            "what it is"
        )

    def _check_out(self, checkout, commit, url):
        done = self._git("checkout", "--quiet", "--force", "--detach", commit, cwd=checkout,
                         url=url)
        if done.returncode != 0:
            raise StorageError(
                f"Git storage cannot check out {self._at()} ({commit[:12]}) of "
                f"{url!r}: {_git_error_line(done.stderr)}; delete {checkout} to clone afresh"
            )
        self._git("clean", "-ffdxq", cwd=checkout, url=url)

    def _missing_path_error(self, checkout, commit, url):
        names = self._git("ls-tree", "-r", "--name-only", commit, cwd=checkout,
                          url=url).stdout.split("\n")
        python_files = [n for n in names if n.endswith(".py")]
        shown = ", ".join(python_files[:20]) or "none"
        if len(python_files) > 20:
            shown += f", ... ({len(python_files)} in all)"
        at = f"ref {self.ref!r}" if self._ref_kind is None else self._at()
        return StorageError(
            f"Git storage: {self.path!r} is not a file in {url!r} at {at} "
            f"(commit {commit[:12]}); .py files there: {shown}. Fix the path or the ref"
        )

    def get_flow(self, flow_name=None):
        import filelock  # (here: importing it costs every process that never checks out)

        url, env = self._remote()
        name = flow_name if flow_name is not None else self.flow_name
        checkout = self.checkout_directory(url)
        checkout.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(checkout) + ".lock", timeout=self.timeout)
        try:
            with lock:
                self._update_checkout(checkout, url, env)
                commit = self._resolve_ref(checkout, url)
                self._check_out(checkout, commit, url)
                flow_path = (checkout / self.path).resolve()
                if not flow_path.is_relative_to(checkout.resolve()) or not flow_path.is_file():
                    raise self._missing_path_error(checkout, commit, url)
                # Loaded under the lock: another run may check out another ref next.
                where = f"{self.path} in {url!r} at {self._at()} (commit {commit[:12]})"
                try:
                    flows = load_flows_from_file(flow_path)
                except FlowFileError as exc:
                    raise StorageError(f"Git storage, {where}: {exc}") from None
                return _pick(flows, name, where, "pass the flow's name to get_flow")
        except filelock.Timeout:
            raise StorageError(
                f"Git storage: another process has held {lock.lock_file} for more than "
                f"{self.timeout} s; wait for that run to finish, or stop the stuck process "
                "that holds the lock"
            ) from None

    def to_ref(self):
        ref = {"type": "Git", "repo": self.repo, "path": self.path, "ref": self.ref,
               "cache_dir": self.cache_dir}
        # Only what differs from our form, so refs of flows registered before keep
        # their shape (and the flows their version).
        if self.url != self.repo:
            ref["url"] = self.url
        if self._ref_kind is not None:
            ref["ref_kind"] = self._ref_kind
        if self.flow_name is not None:
            ref["flow_name"] = self.flow_name
        for name in sorted(self._prefect1):
            ref[name] = _json_copy(self._prefect1[name], "Git", name)
        ref.update(_options_ref(self))
        if self.add_default_labels is not None:
            ref["add_default_labels"] = self.add_default_labels
        if self.stored_as_script:
            ref["stored_as_script"] = True
        if self.flows:
            ref["flows"] = dict(self.flows)
        return ref

    @classmethod
    def _from_ref(cls, ref):
        repo = ref["repo"]
        if "url" in ref:
            url = ref["url"]
        else:  # our form, or a ref stored before Prefect 1's form existed
            if isinstance(repo, str) and "://" not in repo and os.path.isdir(repo):
                repo = os.path.abspath(repo)
            url = repo
        kind = ref.get("ref_kind")
        value = ref.get("ref")
        if kind is None and value is None:
            value = "main"
        storage = cls.__new__(cls)
        storage._configure(
            repo=repo, url=url, path=ref["path"], ref=value, ref_kind=kind,
            cache_dir=ref.get("cache_dir"), flow_name=ref.get("flow_name"),
            prefect1={name: ref[name] for name in _GIT_PREFECT1_ONLY if name in ref},
            options=_storage_options("Git", {
                **_options_from_ref(ref), "add_default_labels": ref.get("add_default_labels"),
                "stored_as_script": ref.get("stored_as_script", False)}, ()))
        flows = ref.get("flows", {})
        if not isinstance(flows, dict) or not all(isinstance(v, str) for v in flows.values()):
            raise TypeError("'flows' must map flow names to flow files")
        storage.flows = dict(flows)
        return storage
