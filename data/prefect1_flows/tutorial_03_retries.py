"""Tutorial, part 3: a flaky API and retries.

The "API" fails on the first two attempts of each call and succeeds on the
third; prefect.context.task_run_count tells the task which attempt it is on,
so the outcome is the same on every run.
"""
import datetime

import prefect
from prefect import Flow, Parameter, task


class FlakyApiError(RuntimeError):
    pass


@task(max_retries=3, retry_delay=datetime.timedelta(seconds=0))
def call_flaky_api(endpoint):
    attempt = prefect.context.get("task_run_count")
    if attempt < 3:
        raise FlakyApiError(f"{endpoint}: 503 on attempt {attempt}")
    return {"endpoint": endpoint, "attempts": attempt}


@task(max_retries=1, retry_delay=datetime.timedelta(seconds=0))
def call_broken_api(endpoint):
    raise FlakyApiError(f"{endpoint} is down")


@task
def report(ok):
    return f"{ok['endpoint']} answered after {ok['attempts']} attempts"


with Flow("tutorial-retries") as flow:
    endpoint = Parameter("endpoint", default="/v1/quotes")
    ok = call_flaky_api(endpoint)
    report(ok)
    call_broken_api("/v1/legacy")
