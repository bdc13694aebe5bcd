# Built with the imperative API: Task subclasses wired with add_edge and
# set_upstream/set_downstream, no `with Flow` block for the wiring.
from prefect import Flow, Task


class Extract(Task):
    def run(self):
        return [("2024-05-01", 3), ("2024-05-02", 5), ("2024-05-03", 4)]


class Transform(Task):
    def run(self, rows, factor):
        return [(day, n * factor) for day, n in rows]


class Factor(Task):
    def run(self):
        return 10


class Load(Task):
    def run(self, rows):
        return {day: n for day, n in rows}


class Announce(Task):
    def run(self):
        return "load finished"


extract = Extract(name="extract")
factor = Factor(name="factor")
transform = Transform(name="transform")
load = Load(name="load")
announce = Announce(name="announce")

flow = Flow("imperative-etl")
flow.add_edge(extract, transform, key="rows")
flow.add_edge(upstream_task=factor, downstream_task=transform, key="factor")
transform.set_downstream(load, key="rows", flow=flow)
announce.set_upstream(load, flow=flow)
flow.set_reference_tasks([load])
