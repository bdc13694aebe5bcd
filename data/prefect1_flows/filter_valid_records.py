# Validate records in parallel and keep the good ones with FilterTask.
from prefect import Flow, task
from prefect.engine import signals
from prefect.tasks.control_flow import FilterTask
from prefect.triggers import all_finished

RECORDS = [
    {"id": 1, "email": "ana@example.test"},
    {"id": 2, "email": ""},
    {"id": 3, "email": "li@example.test"},
    {"id": 4, "email": None},
    {"id": 5, "email": "not-an-email"},
]


@task
def records():
    return RECORDS


@task
def validate(record):
    email = record["email"]
    if email is None:
        raise signals.SKIP(f"record {record['id']} has no email field")
    if "@" not in email:
        raise ValueError(f"record {record['id']}: bad email {email!r}")
    return record["id"]


drop_bad = FilterTask(
    name="keep valid",
    filter_func=lambda r: not isinstance(r, (BaseException, type(None))),
    trigger=all_finished,
)


@task
def publish(ids):
    return {"published": ids}


with Flow("filter-valid") as flow:
    checked = validate.map(records())
    publish(drop_bad(checked))
