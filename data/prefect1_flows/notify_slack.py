"""Post the daily KPI digest to Slack, and tell Slack when a task fails.

The webhook URL is the Prefect secret SLACK_WEBHOOK_URL (locally:
PREFECT__CONTEXT__SECRETS__SLACK_WEBHOOK_URL). `slack_notifier` is attached
to the risky task only, and only for Failed states.
"""
from prefect import Flow, Parameter, task
from prefect.engine.state import Failed
from prefect.tasks.notifications import SlackTask
from prefect.tasks.secrets import PrefectSecret
from prefect.triggers import all_finished
from prefect.utilities.notifications import slack_notifier

KPIS = {"signups": 41, "churned": 3, "mrr": 12840}

post_digest = SlackTask(name="post digest")
post_alert = SlackTask(name="post alert", trigger=all_finished)


@task
def digest(day):
    lines = [f"*KPIs for {day}*"] + [f"- {k}: {v}" for k, v in sorted(KPIS.items())]
    return "\n".join(lines)


# backend_info=False: these runs are local, there is no Cloud URL to link to.
@task(state_handlers=[slack_notifier(only_states=[Failed], backend_info=False)])
def reconcile_billing(mrr):
    if mrr != KPIS["mrr"]:
        raise ValueError(f"billing says {mrr}, KPIs say {KPIS['mrr']}")
    return "billing reconciled"


with Flow("slack-digest") as flow:
    day = Parameter("day", default="2024-05-01")
    billed = Parameter("billed_mrr", default=12840)
    url = PrefectSecret("SLACK_WEBHOOK_URL")
    posted = post_digest(message=digest(day), webhook_url=url)
    reconciled = reconcile_billing(billed)
    post_alert(
        message={"text": "reconcile finished", "blocks": []},
        upstream_tasks=[reconciled, posted],
    )
