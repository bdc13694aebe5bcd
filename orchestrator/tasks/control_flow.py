"""Control flow tasks: FilterTask, and the branches (case, merge, ifelse, switch).

    from orchestrator.tasks.control_flow import FilterTask

    drop_failures = FilterTask()                              # no None, no exceptions
    evens = FilterTask(filter_func=lambda x: x % 2 == 0,
                       log_func=lambda kept: f"kept {kept}")

    with Flow("numbers") as flow:
        clean = drop_failures(divide.map([1, 0, 2]))          # [1.0, 0.5]

FilterTask runs when all its upstream tasks have finished, failed or not
(trigger `all_finished`, not skipped with them), so it can drop the results of
mapped children that failed (their result is the exception) or were skipped.
The branches are the ones `orchestrator` exports; they are here too because
Prefect 1 users import them from `prefect.tasks.control_flow`.
"""

from ..core import triggers
from ..core.control_flow import case, ifelse, merge, switch
from ..core.task import Task
from ..engine.run_logging import get_logger

__all__ = ["FilterTask", "case", "ifelse", "merge", "switch"]


def _is_a_result(value):
    return not isinstance(value, (type(None), BaseException))


class FilterTask(Task):
    """Keeps the items of a list for which `filter_func(item)` is true (by default:
    the items that are neither None nor an exception). `log_func(kept)`, if given,
    makes the INFO line logged with the kept items."""

    def __init__(self, filter_func=None, log_func=None, **kwargs):
        if filter_func is not None and not callable(filter_func):
            raise TypeError(f"FilterTask: filter_func={filter_func!r} is not callable; pass "
                            "a function of one item that returns True to keep it")
        if log_func is not None and not callable(log_func):
            raise TypeError(f"FilterTask: log_func={log_func!r} is not callable; pass a "
                            "function of the kept items that returns the text to log")
        kwargs.setdefault("skip_on_upstream_skip", False)
        kwargs.setdefault("trigger", triggers.all_finished)
        self.filter_func = filter_func or _is_a_result
        self.log_func = log_func
        super().__init__(**kwargs)

    def run(self, task_results):
        kept = [item for item in task_results if self.filter_func(item)]
        if self.log_func is not None:
            get_logger().info(self.log_func(kept))
        return kept
