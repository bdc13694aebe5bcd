"""Notifications: Slack and e-mail, as tasks and as state handlers.

    from orchestrator.tasks.notifications import EmailTask, SlackTask
    from orchestrator.notifications import slack_notifier
    from orchestrator.states import Failed

    with Flow("etl", state_handlers=[slack_notifier(only_states=[Failed])]) as flow:
        done = load()
        SlackTask(message="etl loaded")(upstream_tasks=[done])
        EmailTask(subject="etl", msg="<b>loaded</b>", email_to="ops@example.com",
                  smtp_server="mail.example.com", smtp_port=587,
                  smtp_type="STARTTLS")(upstream_tasks=[done])

Secrets, by the names Prefect 1 uses (see `orchestrator.tasks.secrets` for
where they are read): the Slack webhook URL is secret `SLACK_WEBHOOK_URL`
(or `webhook_secret=`); SMTP logins are `EMAIL_USERNAME` and
`EMAIL_PASSWORD` (not needed with `smtp_type="INSECURE"`).

Slack gets a JSON POST (a dict message as it is, text as {"text": ...});
an answer other than 2xx fails the task. E-mail goes over SMTP with SSL (the
default, port 465), STARTTLS or INSECURE (plain, for an internal relay),
checking the server's certificate against the system's trusted ones.

`slack_notifier` and `gmail_notifier` are state handlers for flows and tasks
(re-exported by `orchestrator.notifications`). As in Prefect 1 they work bare,
`state_handlers=[slack_notifier]`, or with settings,
`slack_notifier(only_states=[Failed], webhook_secret="OPS_HOOK")`. Unlike
Prefect 1, a state they ignore needs no secret and sends nothing.
"""

import functools
import html
import inspect
import json
import os
import socket

from ..core.context import context
from ..core.states import State
from ..core.task import Task
from ..exceptions import InputError, OrchestratorError
from .run_defaults import defaults_from_attrs
from .secrets import Secret

__all__ = ["SlackTask", "EmailTask", "NotificationError", "slack_notifier",
           "gmail_notifier", "callback_factory", "slack_message_formatter"]

TIMEOUT_SECONDS = 30.0  # a webhook or mail server that hangs fails the task
SMTP_TYPES = ("SSL", "STARTTLS", "INSECURE")


class NotificationError(OrchestratorError, ValueError):
    """A Slack message or an e-mail could not be sent; the message says why."""


# -- sending -----------------------------------------------------------------------
def post_to_webhook(url, payload, proxies=None, timeout=TIMEOUT_SECONDS):
    """POST `payload` as JSON to `url`; raises NotificationError unless it is taken."""
    import urllib.error
    import urllib.request

    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise NotificationError(
            "The Slack webhook URL is not an http(s) URL; set the secret to the URL Slack "
            "gave (https://hooks.slack.com/services/...)")
    request = urllib.request.Request(url, data=json.dumps(payload).encode("utf-8"),
                                     headers={"Content-Type": "application/json"},
                                     method="POST")
    # No proxies given: the http_proxy/https_proxy environment applies, as with requests.
    opener = urllib.request.build_opener(
        *([urllib.request.ProxyHandler(proxies)] if proxies is not None else []))
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read(500).decode("utf-8", errors="replace").strip()
        raise NotificationError(
            f"The Slack webhook answered {exc.code} {exc.reason}"
            f"{': ' + body if body else ''}; check the webhook URL in the secret and "
            "the message") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NotificationError(f"Cannot reach the Slack webhook: {reason}; check the "
                                "URL in the secret and this host's network") from None


def _smtp_type(smtp_type):
    kind = str(smtp_type).upper()
    if kind not in SMTP_TYPES:
        raise InputError(f"{smtp_type!r} is an unsupported value for smtp_type; use one of "
                         f"{', '.join(SMTP_TYPES)}")
    return kind


def send_email(message, smtp_server, smtp_port, smtp_type, username=None, password=None,
               timeout=TIMEOUT_SECONDS):
    """Send an email.message.Message over SMTP (SSL, STARTTLS or INSECURE)."""
    import smtplib
    import ssl

    kind = _smtp_type(smtp_type)
    where = f"{smtp_server}:{smtp_port}"
    try:
        if kind == "SSL":
            server = smtplib.SMTP_SSL(smtp_server, smtp_port, timeout=timeout,
                                      context=ssl.create_default_context())
        else:
            server = smtplib.SMTP(smtp_server, smtp_port, timeout=timeout)
    except (OSError, smtplib.SMTPException) as exc:
        raise NotificationError(f"Cannot connect to the SMTP server {where} ({kind}): {exc}; "
                                "check smtp_server, smtp_port and smtp_type") from None
    try:
        if kind == "STARTTLS":
            server.starttls(context=ssl.create_default_context())
        if kind != "INSECURE":
            server.login(username, password)
        server.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise NotificationError(
            f"The SMTP server {where} refused the login of {username!r} ({exc.smtp_code}); "
            "check the EMAIL_USERNAME and EMAIL_PASSWORD secrets") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise NotificationError(f"Sending e-mail through {where} ({kind}) failed: "
                                f"{exc}") from None
    finally:
        try:
            server.quit()
        except (OSError, smtplib.SMTPException):
            server.close()


def _login():
    return str(Secret("EMAIL_USERNAME").get()), str(Secret("EMAIL_PASSWORD").get())


def _addresses(value):
    if value is None or isinstance(value, str):
        return value
    return ", ".join(value)


# -- tasks -------------------------------------------------------------------------
class SlackTask(Task):
    """Sends `message` (text, or a dict as Slack's JSON) to a Slack webhook whose
    URL is secret `webhook_secret`, or `webhook_url` given when called."""

    def __init__(self, message=None, webhook_secret="SLACK_WEBHOOK_URL", **kwargs):
        self.message = message
        self.webhook_secret = webhook_secret
        super().__init__(**kwargs)

    @defaults_from_attrs("message", "webhook_secret")
    def run(self, message=None, webhook_secret=None, webhook_url=None):
        if message is None:
            raise InputError(f"SlackTask {self.name!r} has no message: pass message=... to "
                             "SlackTask(...) or when calling it")
        url = webhook_url or Secret(webhook_secret or "SLACK_WEBHOOK_URL").get()
        post_to_webhook(url, message if isinstance(message, dict) else {"text": message})


class EmailTask(Task):
    """Sends an e-mail over SMTP: `msg` as HTML and/or `msg_plain` as text, with
    `attachments` (file paths). The login is secrets EMAIL_USERNAME and
    EMAIL_PASSWORD unless `smtp_type="INSECURE"`."""

    def __init__(self, subject=None, msg=None, email_to=None, email_from=None,
                 smtp_server="smtp.gmail.com", smtp_port=465, smtp_type="SSL",
                 msg_plain=None, email_to_cc=None, email_to_bcc=None, attachments=None,
                 **kwargs):
        self.subject = subject
        self.msg = msg
        self.email_to = email_to
        self.email_from = email_from
        self.smtp_server = smtp_server
        self.smtp_port = smtp_port
        self.smtp_type = _smtp_type(smtp_type)
        self.msg_plain = msg_plain
        self.email_to_cc = email_to_cc
        self.email_to_bcc = email_to_bcc
        self.attachments = attachments or []
        super().__init__(**kwargs)

    @defaults_from_attrs("subject", "msg", "email_to", "email_from", "smtp_server",
                         "smtp_port", "smtp_type", "msg_plain", "email_to_cc", "email_to_bcc",
                         "attachments")
    def run(self, subject=None, msg=None, email_to=None, email_from=None, smtp_server=None,
            smtp_port=None, smtp_type=None, msg_plain=None, email_to_cc=None,
            email_to_bcc=None, attachments=None):
        from email import encoders
        from email.mime.base import MIMEBase
        from email.mime.multipart import MIMEMultipart
        from email.mime.text import MIMEText

        kind = _smtp_type(smtp_type)
        if not email_to:
            raise InputError(f"EmailTask {self.name!r} has no recipient: pass email_to=... "
                             "to EmailTask(...) or when calling it")
        username = password = None
        if kind != "INSECURE":
            username, password = _login()
        message = MIMEMultipart()
        message["Subject"] = subject or ""
        message["From"] = email_from or username or f"orchestrator@{socket.gethostname()}"
        message["To"] = _addresses(email_to)
        if email_to_cc:
            message["Cc"] = _addresses(email_to_cc)
        if email_to_bcc:
            message["Bcc"] = _addresses(email_to_bcc)  # send_message leaves it out
        # Plain text first, then HTML: mail clients show the last part they can.
        if msg_plain:
            message.attach(MIMEText(msg_plain, "plain"))
        if msg:
            message.attach(MIMEText(msg, "html"))
        for path in attachments or ():
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise InputError(f"EmailTask {self.name!r}: cannot attach {path!r}: "
                                 f"{exc.strerror}; check the path") from None
            part = MIMEBase("application", "octet-stream")
            part.set_payload(data)
            encoders.encode_base64(part)
            part.add_header("Content-Disposition", "attachment",
                            filename=os.path.basename(path))
            message.attach(part)
        send_email(message, smtp_server, smtp_port, kind, username, password)


# -- state handlers ----------------------------------------------------------------
def callback_factory(fn, check):
    """A state handler that calls `fn(obj, new_state)` when `check(new_state)` is True."""

    def state_handler(obj, old_state, new_state):
        if check(new_state) is True:
            fn(obj, new_state)
        return new_state

    return state_handler


def _state_classes(value, who, name):
    if value is None:
        return []
    members = list(value) if isinstance(value, (list, tuple, set, frozenset)) else None
    if members is None or not all(isinstance(s, type) and issubclass(s, State)
                                  for s in members):
        raise InputError(f"{who}: {name}={value!r} is not a list of state classes; pass e.g. "
                         f"{name}=[Failed] (from orchestrator.states import Failed)")
    return members


def _wanted(new_state, ignore_states, only_states):
    if any(isinstance(new_state, ignored) for ignored in ignore_states):
        return False
    return not only_states or any(isinstance(new_state, kept) for kept in only_states)


class _CurriedStateHandler:
    """A state handler that also takes its settings first, as Prefect 1's curried
    handlers do: `handler(obj, old, new)` runs it; `handler(setting=...)` returns
    a handler with those settings bound."""

    def __init__(self, name, fn, settings=None):
        self.fn = fn
        self.settings = dict(settings or {})
        functools.update_wrapper(self, fn)
        self.__name__ = self.__qualname__ = name  # what logs and errors call it
        self._setting_names = [n for n in inspect.signature(fn).parameters
                               if n not in ("tracked_obj", "old_state", "new_state")]
        for setting in ("ignore_states", "only_states"):
            _state_classes(self.settings.get(setting), name, setting)

    def __repr__(self):
        bound = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        return f"{self.__name__}({bound})"

    def __call__(self, *args, **settings):
        unknown = sorted(set(settings) - set(self._setting_names))
        if unknown:
            raise TypeError(f"{self.__name__}() has no setting {unknown[0]!r}; its settings "
                            f"are {', '.join(self._setting_names)}")
        merged = dict(self.settings, **settings)
        if not args:
            return _CurriedStateHandler(self.__name__, self.fn, merged)
        if len(args) != 3:
            raise TypeError(
                f"{self.__name__} is a state handler: it is called with (flow or task, "
                "old_state, new_state), or with settings only, e.g. "
                f"{self.__name__}(only_states=[Failed])")
        return self.fn(*args, **merged)


def slack_message_formatter(tracked_obj, state, backend_info=True):
    """The Slack message (an attachment) that says `tracked_obj` is now in `state`."""
    if isinstance(state.result, BaseException):
        value = f"```{state.result!r}```"
    else:
        value = state.message
    fields = [] if value is None else [{"title": "Message", "value": value, "short": False}]
    kind = type(state).__name__
    attachment = {
        "fallback": "State change notification",
        "color": state.color,
        "author_name": "orchestrator",
        "title": kind,
        "fields": fields,
        "text": f"{tracked_obj.name} is now in a {kind} state",
        "footer": "orchestrator notification",
    }
    url = os.environ.get("ORCHESTRATOR_API_URL")
    if backend_info and url and context.get("running_with_backend", False) \
            and context.get("flow_run_id"):
        attachment["title_link"] = f"{url.rstrip('/')}/#/runs/{context.get('flow_run_id')}"
    return {"attachments": [attachment]}


def email_message_formatter(tracked_obj, state, email_to):
    """The e-mail that says `tracked_obj` is now in `state`: text and HTML."""
    from email.message import EmailMessage

    kind = type(state).__name__
    detail = repr(state.result) if isinstance(state.result, BaseException) \
        else f'"{state.message}"'
    text = f"{tracked_obj.name} is now in a {kind} state\n\nMessage: {detail}\n"
    message = EmailMessage()
    message["Subject"] = f"State change notification for {tracked_obj.name}"
    message["To"] = email_to
    message.set_content(text)
    message.add_alternative(
        f'<html><body><p style="border-left: 2px solid {state.color}; padding-left: 6px">'
        f"<code>{html.escape(tracked_obj.name)}</code> is now in a "
        f'<b style="color: {state.color}">{kind}</b> state<br><br>'
        f"Message: <pre>{html.escape(detail)}</pre></p></body></html>", subtype="html")
    return message


def _slack_notifier(tracked_obj, old_state, new_state, ignore_states=None, only_states=None,
                    webhook_secret=None, backend_info=True, proxies=None):
    """Posts each state change of the flow or task it is attached to to Slack
    (the webhook URL is secret `webhook_secret`, default SLACK_WEBHOOK_URL)."""
    if not _wanted(new_state, _state_classes(ignore_states, "slack_notifier", "ignore_states"),
                   _state_classes(only_states, "slack_notifier", "only_states")):
        return new_state
    url = Secret(webhook_secret or "SLACK_WEBHOOK_URL").get()
    try:
        post_to_webhook(url, slack_message_formatter(tracked_obj, new_state, backend_info),
                        proxies=proxies)
    except NotificationError as exc:
        raise NotificationError(f"Slack notification for {tracked_obj!r} failed: {exc}") \
            from None
    return new_state


def _gmail_notifier(tracked_obj, old_state, new_state, ignore_states=None, only_states=None,
                    smtp_server="smtp.gmail.com", smtp_port=465, smtp_type="SSL"):
    """E-mails each state change of the flow or task it is attached to, from and
    to the EMAIL_USERNAME account (logged in with EMAIL_PASSWORD), through Gmail
    unless `smtp_server`, `smtp_port` and `smtp_type` say otherwise."""
    if not _wanted(new_state, _state_classes(ignore_states, "gmail_notifier", "ignore_states"),
                   _state_classes(only_states, "gmail_notifier", "only_states")):
        return new_state
    username, password = _login()
    message = email_message_formatter(tracked_obj, new_state, username)
    message["From"] = username
    try:
        send_email(message, smtp_server, smtp_port, smtp_type, username, password)
    except NotificationError as exc:
        raise NotificationError(f"Email notification for {tracked_obj!r} failed: {exc}") \
            from None
    return new_state


slack_notifier = _CurriedStateHandler("slack_notifier", _slack_notifier)
gmail_notifier = _CurriedStateHandler("gmail_notifier", _gmail_notifier)
