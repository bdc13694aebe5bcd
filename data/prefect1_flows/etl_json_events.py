import json
import os

import prefect
from prefect import Flow, Parameter, flatten, task
from prefect.storage import GitLab

EVENTS_FILE = os.path.join(os.path.dirname(__file__), "inputs", "events.json")


@task
def load_batches(path):
    with open(path) as f:
        doc = json.load(f)
    logger = prefect.context.get("logger")
    logger.info("loaded %d batches from %s", len(doc["batches"]), doc["source"])
    return [b["events"] for b in doc["batches"]]


@task
def tag_event(event, source):
    return dict(event, source=source, slow=event["ms"] > 300)


@task
def funnel(events):
    counts = {}
    for e in events:
        counts[e["type"]] = counts.get(e["type"], 0) + 1
    revenue = sum(e.get("amount", 0) for e in events)
    slow_users = sorted({e["user"] for e in events if e["slow"]})
    return {"counts": counts, "revenue": revenue, "slow_users": slow_users}


with Flow("json-events") as flow:
    path = Parameter("path", default=EVENTS_FILE)
    source = Parameter("source", default="web")
    batches = load_batches(path)
    tagged = tag_event.map(flatten(batches), source=prefect.unmapped(source))
    funnel(tagged)

flow.storage = GitLab(repo="analytics/pipelines", path="events/etl_json_events.py", ref="main")
