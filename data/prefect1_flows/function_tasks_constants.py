"""Building a flow from plain functions: FunctionTask and Constant, the way
our older pipelines did it before @task was everywhere."""
from prefect import Flow
from prefect.tasks.core.constants import Constant
from prefect.tasks.core.function import FunctionTask


def normalise(names):
    return [n.strip().lower() for n in names]


def dedupe(names):
    return sorted(set(names))


def greeting(names, prefix):
    return [f"{prefix} {n}" for n in names]


names = Constant(["  Ada", "grace ", "ADA", "Linus"], name="raw names")
prefix = Constant("hi", name="prefix")
normalise_task = FunctionTask(normalise)
dedupe_task = FunctionTask(dedupe, name="dedupe names")
greet_task = FunctionTask(greeting)

flow = Flow("function-tasks")
flow.set_dependencies(normalise_task, keyword_tasks={"names": names})
flow.set_dependencies(dedupe_task, keyword_tasks={"names": normalise_task})
flow.set_dependencies(greet_task, keyword_tasks={"names": dedupe_task, "prefix": prefix})
