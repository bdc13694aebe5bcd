"""Tables of the store. Only `orchestrator.store` imports this module.

Times are UTC seconds since the epoch (REAL): compact, index-friendly and the
same in SQLite and PostgreSQL. JSON columns hold plain lists and dicts.
Every query the CLI, agent and scheduler make is served by an index below.
A foreign key gets no index of its own (peewee's default) where a composite
index starts with it: that index serves the key's look-ups and cascades, and
a second one would be written on every insert for nothing.
"""

import json

import peewee as pw

database = pw.DatabaseProxy()


def from_json(value):
    """The value of a JSON column as a raw statement reads it: its text parsed
    (None stays None, and so does a value the driver parsed already)."""
    return json.loads(value) if isinstance(value, str) else value


class JSONField(pw.TextField):
    """A JSON document in a text column."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, sort_keys=True)

    def python_value(self, value):
        return from_json(value)


class BaseModel(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class SchemaVersion(BaseModel):
    version = pw.IntegerField()
    applied = pw.DoubleField()


class Project(BaseModel):
    name = pw.CharField(unique=True)
    created = pw.DoubleField()


class Flow(BaseModel):
    project = pw.ForeignKeyField(Project, backref="flows", on_delete="CASCADE")
    name = pw.CharField()
    version = pw.IntegerField()
    fingerprint = pw.CharField()
    storage = JSONField()
    run_config = JSONField(null=True)
    schedule = JSONField(null=True)
    parameters = JSONField()
    labels = JSONField()
    settings = JSONField()
    archived = pw.BooleanField(default=False)
    schedule_active = pw.BooleanField(default=True)
    created = pw.DoubleField()

    class Meta:
        indexes = (
            (("project", "name", "version"), True),
            (("project", "name", "archived"), False),
            (("name", "archived"), False),
            (("archived", "schedule_active"), False),
        )


class RunIdField(pw.AutoField):
    """A run's id, never given to another run, even after its run is deleted:
    AUTOINCREMENT on SQLite (whose plain rowid reuses the highest id); a
    PostgreSQL sequence never reuses one anyway."""

    def ddl(self, ctx):
        node = super().ddl(ctx)
        db = self.model._meta.database
        if isinstance(getattr(db, "obj", db), pw.SqliteDatabase):
            node = pw.NodeList((node, pw.SQL("AUTOINCREMENT")))
        return node


class FlowRun(BaseModel):
    id = RunIdField()
    flow = pw.ForeignKeyField(Flow, backref="runs", on_delete="CASCADE", index=False)
    name = pw.CharField()
    parameters = JSONField()
    labels = JSONField()
    state = pw.CharField()
    message = pw.TextField(null=True)
    scheduled_start_time = pw.DoubleField()
    start_time = pw.DoubleField(null=True)
    end_time = pw.DoubleField(null=True)
    heartbeat = pw.DoubleField(null=True)
    agent = pw.CharField(null=True)
    pid = pw.IntegerField(null=True)
    # Where `pid` means something (see store/identity.py), and the run process's
    # unique id: only a process on that host judges the pid gone.
    host_id = pw.CharField(null=True)
    process_id = pw.CharField(null=True)
    idempotency_key = pw.CharField(null=True, unique=True)
    auto_scheduled = pw.BooleanField(default=False)
    restarts = pw.IntegerField(default=0)
    # Each claim (or start by hand) mints the next attempt; every later write
    # about the run is a compare-and-set on it (see lifecycle.py).
    attempt = pw.IntegerField(default=0, constraints=[pw.SQL("DEFAULT 0")])
    created = pw.DoubleField()
    updated = pw.DoubleField()

    class Meta:
        # Listings read one page through these whatever the filters (see
        # Store.list_flow_runs): newest first by (state), (flow), (flow, state);
        # latest scheduled first by time, (state, time), (flow, time), and
        # (flow, auto_scheduled, state, time), which the scheduler uses too.
        indexes = (
            (("state", "scheduled_start_time"), False),
            (("state", "id"), False),
            (("flow", "id"), False),
            (("flow", "state", "id"), False),
            (("scheduled_start_time", "id"), False),
            (("flow", "scheduled_start_time", "id"), False),
            (("flow", "auto_scheduled", "state", "scheduled_start_time"), False),
        )


class TaskRun(BaseModel):
    # Keeps its own index on flow_run although the unique index starts with it:
    # on SQLite that one is (flow_run, id) and lists a run's task runs in id order
    # without a sort.
    flow_run = pw.ForeignKeyField(FlowRun, backref="task_runs", on_delete="CASCADE")
    task_slug = pw.CharField()
    task_name = pw.CharField()
    map_index = pw.IntegerField(default=-1)
    state = pw.CharField()
    message = pw.TextField(null=True)
    result_location = pw.TextField(null=True)
    run_count = pw.IntegerField(default=0)
    start_time = pw.DoubleField(null=True)
    end_time = pw.DoubleField(null=True)

    class Meta:
        indexes = ((("flow_run", "task_slug", "map_index"), True),)


class StateEvent(BaseModel):
    flow_run = pw.ForeignKeyField(FlowRun, backref="events", on_delete="CASCADE",
                                  index=False)
    task_slug = pw.CharField(null=True)
    map_index = pw.IntegerField(null=True)
    state = pw.CharField()
    message = pw.TextField(null=True)
    time = pw.DoubleField()

    class Meta:
        indexes = ((("flow_run", "id"), False),)


class Log(BaseModel):
    flow_run = pw.ForeignKeyField(FlowRun, backref="logs", on_delete="CASCADE",
                                  index=False)
    task_slug = pw.CharField(null=True)
    map_index = pw.IntegerField(null=True)
    time = pw.DoubleField()
    level = pw.IntegerField()
    logger = pw.CharField()
    message = pw.TextField()

    class Meta:
        indexes = ((("flow_run", "id"), False),)


class Secret(BaseModel):
    name = pw.CharField(unique=True)
    value = pw.TextField()
    updated = pw.DoubleField()


class Agent(BaseModel):
    name = pw.CharField(unique=True)
    labels = JSONField()
    host = pw.CharField()
    pid = pw.IntegerField()
    # This agent process's unique id, and where its pid means something (see
    # store/identity.py): a name alone says neither.
    uid = pw.CharField(null=True)
    host_id = pw.CharField(null=True)
    limit = pw.IntegerField(null=True)
    # Prefect 1's rule: takes a run without labels only when it has none itself.
    strict_labels = pw.BooleanField(default=False, constraints=[pw.SQL("DEFAULT FALSE")])
    started = pw.DoubleField()
    last_seen = pw.DoubleField()


class ConcurrencyLimit(BaseModel):
    """At most `limit` runs with `label` (kind 'label') or task runs with tag
    `label` (kind 'tag') at once."""

    kind = pw.CharField()
    label = pw.CharField()
    limit = pw.IntegerField()
    updated = pw.DoubleField()

    class Meta:
        indexes = ((("kind", "label"), True),)


class TaskSlot(BaseModel):
    """A task run holding a slot of a tag's concurrency limit. It counts while its
    run is active on `attempt` and, with a lease, until `expires` (the holder
    renews it while it runs): a dead holder's slot frees itself."""

    tag = pw.CharField()
    flow_run = pw.ForeignKeyField(FlowRun, on_delete="CASCADE")
    holder = pw.CharField()
    acquired = pw.DoubleField()
    attempt = pw.IntegerField(default=0, constraints=[pw.SQL("DEFAULT 0")])
    expires = pw.DoubleField(null=True)

    class Meta:
        indexes = ((("tag", "holder"), True), (("flow_run",), False), (("holder",), False))


class Artifact(BaseModel):
    """What a task run published for people to read (Prefect 1's artifacts): a
    markdown report or a link. The id is a UUID, as Prefect 1's are, made by the
    run's process when the task asks, so the task need not wait for the write.
    `task_slug` is None for one made outside a task (a flow's state handler)."""

    id = pw.CharField(primary_key=True, max_length=36)
    flow_run = pw.ForeignKeyField(FlowRun, on_delete="CASCADE", index=False)
    task_slug = pw.CharField(null=True)
    map_index = pw.IntegerField(default=-1)
    kind = pw.CharField()  # "markdown" or "link"
    text = pw.TextField()
    created = pw.DoubleField()
    updated = pw.DoubleField()

    class Meta:
        # Oldest first, ties broken by id: both orders read straight off an index.
        indexes = ((("flow_run", "created", "id"), False),
                   (("flow_run", "task_slug", "map_index", "created", "id"), False))


INITIAL_MODELS = [SchemaVersion, Project, Flow, FlowRun, TaskRun, StateEvent, Log, Secret]
ALL_MODELS = INITIAL_MODELS + [Agent, ConcurrencyLimit, TaskSlot, Artifact]
