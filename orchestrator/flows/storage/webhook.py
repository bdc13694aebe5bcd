"""Prefect 1's `Webhook` storage: the flow sent with one HTTP request at
registration and fetched with another at each run, with requests-style
arguments sent through urllib."""

import hashlib
import json
import logging
import os
import socket
import string
import urllib.parse
import warnings
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from .base import StorageError
from .credentials import _basic_auth, _secret_value
from .pickled import _flow_from_bytes, _flow_from_script, _flow_to_bytes, _KeepsDigests
from .prefect1 import _Prefect1Storage

# The package's name, not __name__: all of storage logs through one logger,
# the name logging settings and tests select its records by (a child logger's
# records would carry the child's name).
logger = logging.getLogger("orchestrator.flows.storage")


_HTTP_METHODS = ("GET", "PATCH", "POST", "PUT")
_REQUEST_ARGUMENTS = ("url", "params", "headers", "data", "json", "timeout", "auth", "cookies",
                      "verify", "cert", "allow_redirects", "proxies", "stream")
_WEBHOOK_TIMEOUT = 300  # seconds, when the request arguments give no timeout


class _TemplateValues(Mapping):
    """`${NAME}` in Webhook request arguments: the environment variable NAME,
    else the secret NAME (Prefect 1's lookup order)."""

    def __init__(self, what):
        self.what = what

    def __getitem__(self, name):
        value = os.environ.get(name)
        if value is not None:
            return value
        return _secret_value(name, self.what, missing=(
            f"{self.what}: template ${{{name}}} is neither an environment variable nor a "
            f"secret; set one of them (`orchestrator secret set {name}`)"))

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


def _render_templates(value, what):
    """`value` (a dict) with `${NAME}` in its strings replaced, in nested dicts too
    (not in lists), as Prefect 1 does."""
    rendered = {}
    for key, item in value.items():
        if isinstance(item, str):
            try:
                rendered[key] = string.Template(item).substitute(_TemplateValues(what))
            except ValueError as exc:
                raise StorageError(
                    f"{what}: {key}={item!r} has a bad template ({exc}); write ${{NAME}} "
                    "for a value and $$ for a literal $"
                ) from None
        elif isinstance(item, dict):
            rendered[key] = _render_templates(item, what)
        else:
            rendered[key] = item
    return rendered


class WebhookResponse:
    """The answer to a Webhook request: `status_code`, `headers`, `content`,
    `text`, `json()` (what Prefect 1's `_build_responses` held, from requests)."""

    def __init__(self, status_code, headers, content, url):
        self.status_code = status_code
        self.headers = headers
        self.content = content
        self.url = url

    @property
    def ok(self):
        return self.status_code < 400

    @property
    def text(self):
        return self.content.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.content)

    def __repr__(self):
        return f"<WebhookResponse [{self.status_code}]>"


def _send_request(method, arguments, body, what, template_url):
    """Send one HTTP request described by requests-style `arguments` (already
    rendered); the response, or a StorageError naming `template_url` (never the
    rendered one, which may hold a secret)."""
    import urllib.request

    url = _request_url(arguments, what, template_url)
    headers = {str(k): str(v) for k, v in (arguments.get("headers") or {}).items()}
    body = _request_body(arguments, body, headers)
    _add_credentials(arguments, headers, what)
    timeout = _request_timeout(arguments)
    opener = urllib.request.build_opener(*_request_handlers(arguments, url))
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    return _open(opener, request, timeout, what, template_url)


def _request_url(arguments, what, template_url):
    """The URL to send to, `params` added to its query; refuses arguments not
    supported here, and a URL that is not http(s)."""
    unknown = [k for k in arguments if k not in _REQUEST_ARGUMENTS]
    if unknown:
        raise StorageError(
            f"{what}: request argument {unknown[0]!r} is not supported here; the supported "
            f"ones are {', '.join(_REQUEST_ARGUMENTS)}"
        )
    url = arguments.get("url")
    if not isinstance(url, str) or "://" not in url:
        raise StorageError(f"{what}: url={template_url!r} is not an http(s) URL; give "
                           "e.g. {'url': 'https://flows.example.com/etl'}")
    params = arguments.get("params")
    if params:
        query = params if isinstance(params, str) else urllib.parse.urlencode(params, doseq=True)
        url += ("&" if urllib.parse.urlsplit(url).query else "?") + query
    return url


def _request_body(arguments, body, headers):
    """The bytes to send: `body` (the flow), else the arguments' `json` or `data`;
    says what they are in `headers` unless a Content-Type is there."""
    if body is None and arguments.get("json") is not None:
        body = json.dumps(arguments["json"]).encode("utf-8")
        headers.setdefault("Content-Type", "application/json")
    elif body is None and arguments.get("data") is not None:
        data = arguments["data"]
        body = (urllib.parse.urlencode(data).encode("utf-8") if isinstance(data, dict)
                else data.encode("utf-8") if isinstance(data, str) else bytes(data))
    if body is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/octet-stream"
    return body


def _add_credentials(arguments, headers, what):
    """The arguments' `auth` (a user and password) and `cookies`, as headers."""
    auth = arguments.get("auth")
    if auth is not None:
        if not isinstance(auth, (list, tuple)) or len(auth) != 2:
            raise StorageError(f"{what}: auth must be a (user, password) pair")
        headers["Authorization"] = _basic_auth(*auth).split(": ", 1)[1]
    cookies = arguments.get("cookies")
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())


def _request_timeout(arguments):
    """Seconds to wait: the arguments' `timeout` (of a (connect, read) pair, the
    longer), else `_WEBHOOK_TIMEOUT`."""
    timeout = arguments.get("timeout")
    if isinstance(timeout, (list, tuple)):
        timeout = max(t for t in timeout if t is not None) if any(timeout) else None
    return _WEBHOOK_TIMEOUT if timeout is None else timeout


def _request_handlers(arguments, url):
    """urllib's handlers for the arguments' `verify`, `cert`, `proxies` and
    `allow_redirects`."""
    import urllib.request

    handlers = []
    if url.startswith("https://"):
        handlers.append(urllib.request.HTTPSHandler(context=_tls_context(arguments)))
    if arguments.get("proxies") is not None:
        handlers.append(urllib.request.ProxyHandler(dict(arguments["proxies"])))
    if arguments.get("allow_redirects", True) is False:
        class NoRedirects(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None
        handlers.append(NoRedirects())
    return handlers


def _tls_context(arguments):
    """The TLS settings of the arguments' `verify` (False, or a CA bundle's path)
    and `cert` (a client certificate, with its key file or in one file)."""
    import ssl

    verify = arguments.get("verify", True)
    context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    cert = arguments.get("cert")
    if cert:
        certfile, keyfile = (cert, None) if isinstance(cert, str) else tuple(cert)
        context.load_cert_chain(certfile, keyfile)
    return context


def _open(opener, request, timeout, what, template_url):
    """The response to `request`; as Prefect 1's session, up to 3 more tries when
    no connection could be made."""
    import urllib.error

    for attempt in range(4):
        try:
            with opener.open(request, timeout=timeout) as answer:
                return WebhookResponse(answer.status, dict(answer.headers), answer.read(),
                                       template_url)
        except urllib.error.HTTPError as exc:
            return _error_response(exc, request.get_method(), what, template_url)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            refused = isinstance(reason, (ConnectionRefusedError, socket.gaierror))
            if refused and attempt < 3:
                continue
            raise StorageError(
                f"{what}: {request.get_method()} {template_url} failed "
                f"({type(reason).__name__}: {reason}); check that the server is up and "
                "reachable from this host"
            ) from None


def _error_response(error, method, what, template_url):
    """The response an HTTPError carries if it is a redirect not followed
    (allow_redirects=False); a StorageError if it is an error."""
    content = error.read() or b""
    response = WebhookResponse(error.code, dict(error.headers or {}), content, template_url)
    if error.code < 400:
        return response
    snippet = response.text.strip().replace("\n", " ")[:200]
    raise StorageError(
        f"{what}: {method} {template_url} answered {error.code} {error.reason}"
        f"{': ' + snippet if snippet else ''}; check the URL, the method and the "
        "credentials in the request arguments"
    ) from None


class Webhook(_KeepsDigests, _Prefect1Storage):
    """Prefect 1's Webhook storage: the flow sent with one HTTP request at
    registration and fetched with another at each run.

        Webhook(
            build_request_kwargs={"url": "https://flows.example.com/etl",
                                  "headers": {"Authorization": "Bearer ${FLOWS_TOKEN}"}},
            build_request_http_method="PUT",
            get_flow_request_kwargs={"url": "https://flows.example.com/etl",
                                     "headers": {"Authorization": "Bearer ${FLOWS_TOKEN}"}},
            get_flow_request_http_method="GET",
        )

    The request arguments are those of `requests` (url, params, headers, data,
    json, timeout, auth, cookies, verify, cert, allow_redirects, proxies);
    `${NAME}` in their strings is replaced when the request is sent by the
    environment variable NAME, else the secret NAME. The flow is pickled, or
    with `stored_as_script=True` the file `flow_script_path` is sent. The
    responses to the upload are in `_build_responses` (flow name -> response).
    """

    _fields = ("build_request_kwargs", "build_request_http_method", "get_flow_request_kwargs",
               "get_flow_request_http_method", "flow_script_path")

    def __init__(self, build_request_kwargs, build_request_http_method,
                 get_flow_request_kwargs, get_flow_request_http_method,
                 stored_as_script=False, flow_script_path=None, **kwargs):
        methods = {}
        for name, method in (("build_request_http_method", build_request_http_method),
                             ("get_flow_request_http_method", get_flow_request_http_method)):
            # Refused when made, as Prefect 1 refuses it.
            if not isinstance(method, str) or method.upper() not in _HTTP_METHODS:
                raise StorageError(
                    f"Webhook storage {name}={method!r} is not an HTTP method it sends; "
                    f"use one of {', '.join(_HTTP_METHODS)}"
                )
            methods[name] = method.upper()
        self.build_request_kwargs = build_request_kwargs
        self.build_request_http_method = methods["build_request_http_method"]
        self.get_flow_request_kwargs = get_flow_request_kwargs
        self.get_flow_request_http_method = methods["get_flow_request_http_method"]
        self.flow_script_path = flow_script_path
        self._build_responses = None
        self._digests = {}
        self._set_options(kwargs, stored_as_script=stored_as_script)

    def __repr__(self):
        build = (self.build_request_kwargs or {}).get("url")
        get = (self.get_flow_request_kwargs or {}).get("url")
        return (f"Webhook({self.build_request_http_method} {build!r}, "
                f"{self.get_flow_request_http_method} {get!r}, "
                f"stored_as_script={self.stored_as_script!r})")

    def _arguments(self, name):
        value = getattr(self, name)
        if not isinstance(value, dict):
            raise StorageError(
                f"Webhook storage {name}={value!r} is not a dict of request arguments; "
                "give e.g. {'url': 'https://flows.example.com/etl'}"
            )
        return value

    def add_flow(self, flow, project=None, version=None):
        """Send the flow (pickled, or the script `flow_script_path`) with the build request."""
        self._check_add(flow, project, version)
        what = f"Webhook storage, uploading flow {flow.name!r}"
        if self.stored_as_script:
            if not self.flow_script_path:
                raise StorageError(
                    f"{what}: stored_as_script=True needs flow_script_path= (the flow's "
                    ".py file to send)"
                )
            try:
                data = Path(self.flow_script_path).read_bytes()
            except OSError as exc:
                raise StorageError(
                    f"{what}: cannot read flow_script_path {self.flow_script_path!r} "
                    f"({exc}); give the flow's .py file"
                ) from None
        else:
            data = _flow_to_bytes(flow, "Webhook")
        template = self._arguments("build_request_kwargs")
        arguments = _render_templates(template, what)
        if "data" in arguments:
            warnings.warn(
                "Webhook storage: 'data' in build_request_kwargs is replaced by the flow's "
                "content; remove it", RuntimeWarning, stacklevel=2)
            del arguments["data"]
        arguments.pop("json", None)  # the body is the flow
        response = _send_request(self.build_request_http_method, arguments, data, what,
                                 template.get("url"))
        logger.info("Uploaded flow %r with %s %s (%d)", flow.name,
                    self.build_request_http_method, template.get("url"),
                    response.status_code)
        # One flow per Webhook storage, as in Prefect 1.
        self._build_responses = {flow.name: response}
        self.flows = {flow.name: flow.name}
        self._flows = {flow.name: flow}
        self._digests = {} if self.stored_as_script else {
            flow.name: hashlib.sha256(data).hexdigest()}
        return flow.name

    def get_flow(self, flow_name=None):
        flow_name, _ = self._entry(flow_name)
        what = f"Webhook storage, fetching flow {flow_name!r}"
        template = self._arguments("get_flow_request_kwargs")
        arguments = _render_templates(template, what)
        response = _send_request(self.get_flow_request_http_method, arguments, None, what,
                                 template.get("url"))
        where = f"{self.get_flow_request_http_method} {template.get('url')}"
        if self.stored_as_script:
            name = PurePosixPath(str(self.flow_script_path or "flow.py")).name
            return _flow_from_script(response.content, flow_name, where, name)
        return _flow_from_bytes(response.content, flow_name, where,
                                self._digests.get(flow_name))
