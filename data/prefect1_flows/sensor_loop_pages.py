# Cursor-paginated "API" drained with LOOP: one task run, many iterations.
from prefect import Flow, task, context
from prefect.engine.signals import LOOP

PAGES = {
    None: {"items": ["a", "b"], "next": "c2"},
    "c2": {"items": ["c"], "next": "c3"},
    "c3": {"items": ["d", "e", "f"], "next": None},
}


@task
def drain_cursor():
    state = context.get("task_loop_result", {"cursor": None, "items": []})
    page = PAGES[state["cursor"]]
    items = state["items"] + page["items"]
    if page["next"] is None:
        return {"items": items, "loops": context.get("task_loop_count")}
    raise LOOP(message=f"next page {page['next']}",
               result={"cursor": page["next"], "items": items})


@task
def count(result):
    return len(result["items"])


with Flow("loop-pages") as flow:
    drained = drain_cursor()
    count(drained)
