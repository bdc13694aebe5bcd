"""Resource managers: set a resource up before a block of tasks, clean it up after.

    @resource_manager
    class TempDir:
        def __init__(self, prefix):
            self.prefix = prefix

        def setup(self):                # its return value is what the block uses
            return tempfile.mkdtemp(prefix=self.prefix)

        def cleanup(self, path):        # runs once the block's tasks finished
            shutil.rmtree(path)

    with Flow("etl") as flow:
        with TempDir("etl-") as workdir:
            rows = extract(workdir)
            load(rows, workdir)

As in Prefect 1 (`prefect.resource_manager`), the block adds three tasks: one
that makes the manager object (`TempDir(...)`, its arguments may be tasks),
`TempDir.setup` and `TempDir.cleanup`. Cleanup runs when every task of the
block finished, whatever their states, and is skipped when the setup failed
or was skipped. Setup and cleanup do not decide the flow's state; the block's
own tasks do. A class without `setup` gives None to the block.

Outside `with Flow(...)`, pass the flow: `ctx = TempDir("etl-", flow=flow)`,
then tasks added to that flow inside `with ctx as workdir:` belong to the block.
"""

from ..exceptions import TaskDefinitionError
from . import signals
from .flow import active_resource
from .task import Task, current_flow

__all__ = ["resource_manager", "ResourceManager", "ResourceContext", "ResourceInitTask",
           "ResourceSetupTask", "ResourceCleanupTask", "resource_cleanup_trigger"]


class ResourceInitTask(Task):
    """Makes the resource manager object: its run() is the decorated class."""

    resource_role = "init"

    def __init__(self, resource_class, **kwargs):
        self.run = resource_class  # before Task.__init__, which checks run's signature
        super().__init__(**kwargs)


class ResourceSetupTask(Task):
    """Calls the manager's setup(); its result is what the block's tasks get."""

    resource_role = "setup"

    def run(self, mgr):
        return mgr.setup()


class ResourceCleanupTask(Task):
    """Calls the manager's cleanup(resource) once the block's tasks finished."""

    resource_role = "cleanup"

    def run(self, mgr, resource=None):
        mgr.cleanup(resource)


def resource_cleanup_trigger(upstream_states):
    """Run the cleanup when every upstream task finished, if the manager was
    made and set up; skip it when either of those did not succeed."""
    for edge, state in upstream_states.items():
        if not state.is_finished():
            raise signals.TRIGGERFAIL(
                'Trigger was "resource_cleanup_trigger" but some of the upstream tasks '
                "were not finished.")
        what = {"mgr": "init", "resource": "setup"}.get(edge.key)
        if what is None:
            continue
        if state.is_skipped():
            raise signals.SKIP(f"Resource manager {what} skipped")
        if not state.is_successful():
            raise signals.SKIP(f"Resource manager {what} failed")
    return True


class ResourceContext:
    """The `with` block of one resource; made by calling a ResourceManager."""

    def __init__(self, init_task, setup_task, cleanup_task, flow):
        self.init_task = init_task
        self.setup_task = setup_task
        self.cleanup_task = cleanup_task
        self._flow = flow
        self._tasks = {}   # in the order they were added
        self._tokens = []

    def add_task(self, task, flow):
        """Flow.add_task's call: `task` was added to `flow` inside this block."""
        if flow is not self._flow:
            raise TaskDefinitionError(
                f"Task {task.name!r} was added to flow {flow.name!r} inside the block of "
                f"resource {self.init_task.name!r}, which belongs to flow "
                f"{self._flow.name!r}; one resource block belongs to one flow")
        self._tasks[task] = None

    def __enter__(self):
        self._tokens.append(active_resource.set(self))
        return self.setup_task

    def __exit__(self, *exc_info):
        active_resource.reset(self._tokens.pop())
        flow = self._flow
        inside = set(self._tasks)
        for child in self._tasks:
            # The block's first tasks wait for the setup; its last ones are
            # waited for by the cleanup.
            upstream = flow.upstream_tasks(child)
            if self.setup_task is not None and not inside & upstream \
                    and self.setup_task not in upstream:
                child.set_upstream(self.setup_task, flow=flow)
            downstream = flow.downstream_tasks(child)
            if not inside & downstream and self.cleanup_task not in downstream:
                child.set_downstream(self.cleanup_task, flow=flow)


class ResourceManager:
    """What `@resource_manager` makes of a class: call it with the class's own
    arguments (tasks or values) inside a flow to get a `with` block.

    `init_task_kwargs`, `setup_task_kwargs` and `cleanup_task_kwargs` are Task
    settings for the three tasks (e.g. `{"max_retries": 2, "retry_delay": 5}`).
    """

    def __init__(self, resource_class, name=None, init_task_kwargs=None,
                 setup_task_kwargs=None, cleanup_task_kwargs=None):
        if not callable(resource_class):
            raise TaskDefinitionError(
                f"resource_manager({resource_class!r}): decorate a class with setup() "
                "and cleanup(resource) methods")
        if not callable(getattr(resource_class, "cleanup", None)):
            raise TaskDefinitionError(
                f"resource_manager: {getattr(resource_class, '__name__', resource_class)!r} "
                "has no cleanup(self, resource) method; a resource manager needs one "
                "(setup(self) is optional)")
        self.resource_class = resource_class
        self.name = name or getattr(resource_class, "__name__", "resource")
        self.init_task_kwargs = dict(init_task_kwargs or {})
        self.setup_task_kwargs = dict(setup_task_kwargs or {})
        self.cleanup_task_kwargs = dict(cleanup_task_kwargs or {})
        self.init_task_kwargs.setdefault("name", self.name)
        self.setup_task_kwargs.setdefault("name", f"{self.name}.setup")
        # The resource (a client, a cluster) is rarely picklable: never checkpointed.
        self.setup_task_kwargs.setdefault("checkpoint", False)
        self.cleanup_task_kwargs.setdefault("name", f"{self.name}.cleanup")
        self.cleanup_task_kwargs.setdefault("trigger", resource_cleanup_trigger)
        self.cleanup_task_kwargs.setdefault("skip_on_upstream_skip", False)
        self.cleanup_task_kwargs.setdefault("checkpoint", False)

    def __repr__(self):
        return f"<ResourceManager: {self.name}>"

    def __call__(self, *args, flow=None, **kwargs):
        flow = flow if flow is not None else current_flow()
        if flow is None:
            raise TaskDefinitionError(
                f"Resource {self.name!r} was used outside a `with Flow(...)` block, so it "
                f"has no flow to add its tasks to; use it inside the block, or pass "
                f"flow=...: {self.name}(..., flow=flow)")
        init_task = ResourceInitTask(self.resource_class, **self.init_task_kwargs)
        init_task = init_task(*args, flow=flow, **kwargs)
        if callable(getattr(self.resource_class, "setup", None)):
            setup_task = ResourceSetupTask(**self.setup_task_kwargs)(init_task, flow=flow)
            cleanup_task = ResourceCleanupTask(**self.cleanup_task_kwargs)(
                init_task, setup_task, flow=flow)
        else:
            setup_task = None
            cleanup_task = ResourceCleanupTask(**self.cleanup_task_kwargs)(init_task,
                                                                          flow=flow)
        return ResourceContext(init_task, setup_task, cleanup_task, flow)


def resource_manager(resource_class=None, *, name=None, init_task_kwargs=None,
                     setup_task_kwargs=None, cleanup_task_kwargs=None):
    """Make a class a resource manager: `@resource_manager` or
    `@resource_manager(name=..., setup_task_kwargs=...)` (see the module docstring)."""
    def decorate(cls):
        return ResourceManager(cls, name=name, init_task_kwargs=init_task_kwargs,
                               setup_task_kwargs=setup_task_kwargs,
                               cleanup_task_kwargs=cleanup_task_kwargs)

    return decorate if resource_class is None else decorate(resource_class)
