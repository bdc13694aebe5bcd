"""Audit trail via state handlers.

A task-level handler records every transition; a flow-level handler records
the flow's; a third handler turns a Failed state of a "soft" task into a
Success with a fallback value (handlers may return a different state).
"""
from prefect import Flow, Task, task
from prefect.engine.state import Failed, Success

TRANSITIONS = []


def audit(obj, old_state, new_state):
    TRANSITIONS.append(f"{obj.name}: {type(old_state).__name__} -> {type(new_state).__name__}")
    return new_state


def soften_failure(task, old_state, new_state):
    if isinstance(new_state, Failed):
        task.logger.warning("%s failed; using the fallback", task.name)
        return Success(message=f"softened: {new_state.message}", result="fallback")
    return new_state


@task(state_handlers=[audit])
def extract():
    return [3, 1, 2]


@task(state_handlers=[audit, soften_failure])
def enrich(rows):
    raise KeyError("geo lookup table missing")


class Sort(Task):
    def run(self, rows):
        return sorted(rows)


@task
def transitions_so_far(enriched, ordered):
    # Copy: later transitions must not change this task's result.
    return list(TRANSITIONS)


with Flow("audited", state_handlers=[audit]) as flow:
    rows = extract()
    enriched = enrich(rows)
    ordered = Sort(name="sort rows", state_handlers=[audit])(rows, upstream_tasks=[enriched])
    transitions_so_far(enriched, ordered)
