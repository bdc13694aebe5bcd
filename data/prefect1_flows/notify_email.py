# Email the weekly report to finance through the office relay.
#
# The relay is internal and unauthenticated, so smtp_type="INSECURE";
# host and port come from the environment (SMTP_HOST / SMTP_PORT), the
# same way our k8s job sets them.
import os

from prefect import Flow, Parameter, task
from prefect.run_configs import UniversalRun
from prefect.tasks.notifications.email_task import EmailTask

HERE = os.path.dirname(os.path.abspath(__file__))

send_report = EmailTask(
    subject="Weekly orders report",
    email_from="reports@example.test",
    smtp_server=os.environ.get("SMTP_HOST", "localhost"),
    smtp_port=int(os.environ.get("SMTP_PORT", "25")),
    smtp_type="INSECURE",
    name="email finance",
)


@task
def render_body(week):
    return f"<h1>Orders, week {week}</h1><p>See the attached CSV.</p>"


@task
def attachment_path():
    return [os.path.join(HERE, "inputs", "orders.csv")]


with Flow("weekly-email", run_config=UniversalRun(labels=["mail"])) as flow:
    week = Parameter("week", default="2024-W18")
    to = Parameter("to", default="finance@example.test")
    send_report(
        msg=render_body(week),
        msg_plain="Orders report attached.",
        email_to=to,
        attachments=attachment_path(),
    )
