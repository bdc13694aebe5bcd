"""Which flow the innermost `with Flow(...)` block is building: set by
`Flow.__enter__`, read when a task is called there. In a module of its own so
that core/task.py and core/flow.py need not import each other."""

import contextvars

building_flow = contextvars.ContextVar("orchestrator_building_flow", default=None)
