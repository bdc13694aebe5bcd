"""Prefect 1's storage for git hosting services, `GitHub`, `GitLab` and
`Bitbucket`: each names a repository the service's way and clones it with
`Git` storage, with an access token read at clone time."""

import os
import re

from .base import StorageError
from .credentials import _basic_auth, _default_secret, _secret_value
from .git import Git, _git_header_env, _with_scheme
from .prefect1 import _Prefect1Storage


class _GitHost(_Prefect1Storage):
    """A flow file in a repository on a git hosting service, cloned with our Git
    storage (cache, fetch at every run, lock, errors) from `clone_url`.

    An access token is read at clone time and given to git as an HTTP header
    through its environment: it is never part of the URL, `.git/config`, the
    stored ref, a repr or a log line.
    """

    _service = "Git"

    @property
    def clone_url(self):
        """The URL git clones (never with a token in it)."""
        raise NotImplementedError

    # A token for the service: the secret named by `access_token_secret`, else
    # this local secret or environment variable; sent as this user.
    _token_default = None
    _token_user = None

    def _auth_header(self):
        """'Authorization: ...' for git, or None for a public repository."""
        if self.access_token_secret is not None:
            token = _secret_value(self.access_token_secret, self._what())
        else:
            token = _default_secret(self._token_default)
        return None if not token else _basic_auth(self._token_user, token)

    def _what(self):
        return f"{type(self).__name__} storage for repo {self.repo!r}"

    def _checkout(self, flow_path):
        path = str(flow_path).lstrip("/")  # Prefect 1 examples write path="/flows/flow.py"
        ref = self.ref if self.ref else "HEAD"  # no ref: the repository's default branch
        try:
            git = Git(repo=self.clone_url, path=path, ref=ref)
        except StorageError as exc:
            raise StorageError(f"{self._what()}: {exc}") from None
        header = self._auth_header()
        if header is not None:
            git._credential_env = _git_header_env(self.clone_url, header)
        return git, header is not None

    def _no_path_error(self):
        return StorageError(
            f"{self._what()} has no path; give the flow file's path in the "
            f"repository, e.g. {type(self).__name__}(..., path='flows/etl.py')"
        )

    def get_flow(self, flow_name=None):
        if not self.flows and not self.path:
            raise self._no_path_error()
        flow_name, flow_path = self._entry(flow_name, fallback=self.path)
        return self._load(flow_path, flow_name)

    def _load(self, flow_path, flow_name):
        if not flow_path:
            raise self._no_path_error()
        git, with_token = self._checkout(flow_path)
        try:
            return git.get_flow(flow_name)
        except StorageError as exc:
            hint = ""
            if not with_token and ("cannot clone" in str(exc) or "cannot fetch" in str(exc)):
                hint = (" (no access token was used: for a private repository pass "
                        "access_token_secret='NAME' and run `orchestrator secret set NAME`)")
            raise StorageError(f"{self._what()}: {exc}{hint}") from None

    def add_flow(self, flow, project=None, version=None):
        """Record the flow's path, and check the file is there and defines it."""
        self._check_add(flow, project, version)
        self._load(self.path, flow.name)
        self.flows[flow.name] = self.path
        self._flows[flow.name] = flow
        return self.path


def _github_web_root(base_url):
    """The web address repositories are cloned from, given GitHub's REST API URL
    (`base_url`, Prefect 1's argument): api.github.com -> github.com,
    https://ghe.example.com/api/v3 -> https://ghe.example.com."""
    if not base_url:
        return "https://github.com"
    root = _with_scheme(base_url)
    root = re.sub(r"/api(/v3)?$", "", root)
    return re.sub(r"^(https?://)api\.github\.com$", r"\1github.com", root)


class GitHub(_GitHost):
    """Prefect 1's GitHub storage: flow file `path` of repository `repo`
    ('org/name'), at `ref` (branch, tag or commit; default: the default branch).

        GitHub(repo="org/flows", path="flows/etl.py", ref="main",
               access_token_secret="GITHUB_TOKEN")

    Cloned from https://github.com/org/flows.git; `base_url` (GitHub
    Enterprise's API URL, https://ghe.example.com/api/v3) clones from that
    host instead. The token is the secret named by `access_token_secret`, else
    the local secret or environment variable GITHUB_ACCESS_TOKEN, else none.
    """

    _fields = ("repo", "path", "ref", "access_token_secret", "base_url")
    _repr_fields = ("repo", "path", "ref")
    _token_default, _token_user = "GITHUB_ACCESS_TOKEN", "x-access-token"

    def __init__(self, repo, path, ref=None, access_token_secret=None, base_url=None,
                 **kwargs):
        self.repo = repo
        self.path = path
        self.ref = ref
        self.access_token_secret = access_token_secret
        self.base_url = base_url
        self._set_options(kwargs)

    @property
    def clone_url(self):
        return f"{_github_web_root(self.base_url)}/{self.repo}.git"


class GitLab(_GitHost):
    """Prefect 1's GitLab storage: flow file `path` of project `repo`
    ('group/project'), at `ref` (default: the default branch), on gitlab.com or
    the server `host` (https://gitlab.example.com).

        GitLab(repo="data/flows", path="flows/etl.py", access_token_secret="GITLAB_TOKEN")

    The token is the secret named by `access_token_secret`, else the local
    secret or environment variable GITLAB_ACCESS_TOKEN, else none.
    """

    _fields = ("repo", "host", "path", "ref", "access_token_secret")
    _repr_fields = ("repo", "host", "path", "ref")
    _token_default, _token_user = "GITLAB_ACCESS_TOKEN", "oauth2"

    def __init__(self, repo, host=None, path=None, ref=None, access_token_secret=None,
                 **kwargs):
        self.repo = repo
        self.host = host
        self.path = path
        self.ref = ref
        self.access_token_secret = access_token_secret
        self._set_options(kwargs)

    @property
    def clone_url(self):
        if str(self.repo).isdigit():
            raise StorageError(
                f"GitLab storage repo={self.repo!r} is a project id; git clones by path: "
                "give the project's path instead, e.g. repo='group/project'"
            )
        return f"{_with_scheme(self.host or 'https://gitlab.com')}/{self.repo}.git"


class Bitbucket(_GitHost):
    """Prefect 1's Bitbucket storage: flow file `path` of repository `repo` in
    `project`, at `ref` (default: the default branch).

        Bitbucket(project="DATA", repo="flows", host="https://bitbucket.example.com",
                  path="flows/etl.py", access_token_secret="BITBUCKET_TOKEN")   # Server
        Bitbucket(project="DATA", repo="flows", workspace="acme", path="flows/etl.py",
                  cloud_username_secret="BB_USER", cloud_app_password_secret="BB_PASSWORD")

    Bitbucket Server (`host`) is cloned from {host}/scm/{project}/{repo}.git with
    a bearer token (`access_token_secret`, else BITBUCKET_ACCESS_TOKEN);
    Bitbucket Cloud (`workspace`) from https://bitbucket.org/{workspace}/{repo}.git
    with a user name and app password (the two secrets, else
    BITBUCKET_CLOUD_USERNAME and BITBUCKET_CLOUD_APP_PASSWORD).
    """

    _fields = ("project", "repo", "workspace", "host", "path", "ref", "access_token_secret",
               "cloud_username_secret", "cloud_app_password_secret")
    _repr_fields = ("project", "repo", "workspace", "host", "path", "ref")

    def __init__(self, project, repo, workspace=None, host=None, path=None, ref=None,
                 access_token_secret=None, cloud_username_secret=None,
                 cloud_app_password_secret=None, **kwargs):
        if workspace and access_token_secret:
            # Refused when made, as Prefect 1 refuses it.
            raise StorageError(
                f"Bitbucket storage got workspace={workspace!r} (Bitbucket Cloud) and "
                f"access_token_secret={access_token_secret!r} (Bitbucket Server); Cloud "
                "signs in with cloud_username_secret and cloud_app_password_secret: drop "
                "one of the two"
            )
        self.project = project
        self.repo = repo
        self.workspace = workspace
        self.host = host
        self.path = path
        self.ref = ref
        self.access_token_secret = access_token_secret
        self.cloud_username_secret = cloud_username_secret
        self.cloud_app_password_secret = cloud_app_password_secret
        self._set_options(kwargs)

    @property
    def clone_url(self):
        if self.workspace:
            return f"https://bitbucket.org/{self.workspace}/{self.repo}.git"
        if not self.host:
            raise StorageError(
                f"Bitbucket storage for repo {self.repo!r} has neither workspace= "
                "(Bitbucket Cloud) nor host= (Bitbucket Server); give workspace='...' "
                "for bitbucket.org, or host='https://bitbucket.example.com' for a server"
            )
        return f"{_with_scheme(self.host)}/scm/{self.project}/{self.repo}.git"

    def _auth_header(self):
        what = self._what()
        if self.workspace:
            user = (_secret_value(self.cloud_username_secret, what)
                    if self.cloud_username_secret is not None
                    else os.environ.get("BITBUCKET_CLOUD_USERNAME"))
            password = (_secret_value(self.cloud_app_password_secret, what)
                        if self.cloud_app_password_secret is not None
                        else os.environ.get("BITBUCKET_CLOUD_APP_PASSWORD"))
            if bool(user) != bool(password):
                missing = ("cloud_app_password_secret (or BITBUCKET_CLOUD_APP_PASSWORD)"
                           if user else "cloud_username_secret (or BITBUCKET_CLOUD_USERNAME)")
                raise StorageError(f"{what}: Bitbucket Cloud needs a user name and an app "
                                   f"password; {missing} is not set")
            return _basic_auth(user, password) if user else None
        if self.access_token_secret is not None:
            token = _secret_value(self.access_token_secret, what)
        else:
            token = _default_secret("BITBUCKET_ACCESS_TOKEN")
        return f"Authorization: Bearer {token}" if token else None
