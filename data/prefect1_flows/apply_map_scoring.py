"""Score leads with apply_map: a small per-item pipeline (clean -> score ->
branch on the score) applied to every lead."""
from prefect import Flow, apply_map, case, task
from prefect.tasks.control_flow import merge

LEADS = [
    {"name": "Acme", "employees": 900, "country": "de"},
    {"name": "TinyCo", "employees": 4, "country": "us"},
    {"name": "MidCorp", "employees": 120, "country": "fr"},
]


@task
def leads():
    return LEADS


@task
def score(lead):
    points = min(lead["employees"] // 100, 5) + (2 if lead["country"] in ("de", "fr") else 0)
    return {"name": lead["name"], "score": points}


@task
def is_hot(scored):
    return scored["score"] >= 3


@task
def route_to_sales(scored):
    return f"sales: {scored['name']}"


@task
def route_to_nurture(scored):
    return f"nurture: {scored['name']}"


def pipeline(lead):
    scored = score(lead)
    hot = is_hot(scored)
    with case(hot, True):
        a = route_to_sales(scored)
    with case(hot, False):
        b = route_to_nurture(scored)
    return merge(a, b)


@task
def summary(routes):
    return sorted(routes)


with Flow("lead-scoring") as flow:
    routed = apply_map(pipeline, leads())
    summary(routed)
