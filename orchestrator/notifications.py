"""State handlers that notify: Prefect 1's `prefect.utilities.notifications`.

    from orchestrator.notifications import gmail_notifier, slack_notifier
    from orchestrator.states import Failed, Running

    @task(state_handlers=[slack_notifier(ignore_states=[Running])])
    def load(): ...

    flow = Flow("etl", state_handlers=[slack_notifier(only_states=[Failed])])

They live with the Slack and e-mail tasks in `orchestrator.tasks.notifications`,
which has the details (secrets, SMTP settings).
"""

from .tasks.notifications import (callback_factory, gmail_notifier, slack_message_formatter,
                                  slack_notifier)

__all__ = ["slack_notifier", "gmail_notifier", "callback_factory", "slack_message_formatter"]
