import prefect
from prefect import Flow, Parameter, Task, task
from prefect.utilities.context import Context


class Describe(Task):
    def run(self, region):
        ctx = prefect.context
        self.logger.info("describing %s", region)
        return {
            "flow": ctx.flow_name,
            "task": ctx.task_name,
            "region": region,
            "parameters": dict(ctx.parameters),
            "run_count": ctx.get("task_run_count"),
        }


@task
def per_shard(shard):
    logger = prefect.context.get("logger")
    logger.info("shard %s", shard)
    return {"shard": shard, "map_index": prefect.context.map_index}


@task
def from_custom_context():
    # A Context object is a dict with attribute access.
    c = Context(team="analytics", tier=2)
    with prefect.context(team="platform"):
        inner = prefect.context.team
    return {"c.team": c.team, "c.tier": c["tier"], "inner": inner,
            "outer": prefect.context.get("team", "unset")}


with Flow("context-logger") as flow:
    region = Parameter("region", default="eu")
    Describe(name="describe")(region)
    per_shard.map(["a", "b", "c"])
    from_custom_context()
