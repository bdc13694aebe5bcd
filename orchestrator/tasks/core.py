"""Prefect 1's core tasks under their own names: functions, constants,
collections and operators.

    from orchestrator.tasks.core import Add, Constant, FunctionTask, GetItem, List

    with Flow("sums") as flow:
        total = Add()(x, 10)                  # what `x + 10` builds
        first = GetItem(default=0)(rows, 0)   # what `rows[0]` builds, with a default
        both = List()(a, b)                   # [result of a, result of b]

Flows rarely name these: `@task`, `t + 1`, `t[0]` and lists of tasks make them.
`FunctionTask` and `Constant` are the very classes the engine uses. The other
classes subclass the engine's own operator, item and collection tasks (what
`t + 1`, `t[0]` and `[t, u]` build, which keep their own classes) and give
them Prefect 1's constructors and run() arguments (`x`, `y`; `task_result`,
`key`; `arg_1`, `arg_2`, ...), so a flow that builds them by hand runs
unchanged. `And` and `Or` are Python's `and` and `or`, as in Prefect 1.
"""

import operator

from ..core.task import Constant, FunctionTask, Task, no_default
from ..core.task import GetItem as _EngineGetItem
from ..core.task import _Collection as _EngineCollection
from ..core.task import _OperatorTask as _EngineOperator
from .run_defaults import defaults_from_attrs

__all__ = [
    "FunctionTask", "Constant", "VarArgsTask", "List", "Tuple", "Set", "Dict",
    "GetItem", "GetAttr", "Add", "Sub", "Mul", "Div", "FloorDiv", "Pow", "Mod", "And",
    "Or", "Not", "Equal", "NotEqual", "GreaterThan", "GreaterThanOrEqual", "LessThan",
    "LessThanOrEqual",
]


# -- collections -----------------------------------------------------------------
class VarArgsTask(Task):
    """A task called with any number of positional inputs, given to run() as
    keyword arguments `arg_1`, `arg_2`, ... (run() cannot take *args)."""

    def bind(self, *args, mapped=False, upstream_tasks=None, flow=None, **kwargs):
        inputs = {f"arg_{i}": value for i, value in enumerate(args, 1)}
        clash = set(inputs) & set(kwargs)
        if clash:
            raise TypeError(
                f"Task {self.name!r} got {min(clash)!r} both by position and by "
                "name; pass the inputs by position only")
        inputs.update(kwargs)
        return super().bind(mapped=mapped, upstream_tasks=upstream_tasks, flow=flow,
                            **inputs)


def _in_call_order(task_results):
    return [value for _, value in sorted(task_results.items(),
                                         key=lambda item: int(item[0].rsplit("_", 1)[-1]))]


class _Gathering(VarArgsTask, _EngineCollection):
    """List, Tuple and Set: the engine's collection task, with Prefect 1's
    constructor (Task settings only) and its `arg_N` inputs."""

    kind = list

    def __init__(self, *args, **kwargs):
        Task.__init__(self, *args, **kwargs)
        self.size, self.keys = None, None

    def run(self, **task_results):
        return self.kind(_in_call_order(task_results))


class List(_Gathering):
    """Collects its inputs into a list, in the order they were given."""

    kind = list


class Tuple(_Gathering):
    """Collects its inputs into a tuple, in the order they were given."""

    kind = tuple


class Set(_Gathering):
    """Collects its inputs into a set."""

    kind = set


class Dict(_EngineCollection):
    """Makes a dict from a list of keys and a list of values of the same length."""

    kind = dict

    def __init__(self, *args, **kwargs):
        Task.__init__(self, *args, **kwargs)
        self.size, self.keys = None, None

    def run(self, keys, values):
        keys, values = list(keys), list(values)
        if len(keys) != len(values):
            raise ValueError(
                f"Task {self.name!r} got {len(keys)} keys and {len(values)} values; "
                "pass one value per key")
        return dict(zip(keys, values))


# -- items and attributes ----------------------------------------------------------
class GetItem(_EngineGetItem):
    """`task_result[key]`; with `default`, that value instead of a KeyError."""

    def __init__(self, default=no_default, *args, **kwargs):
        Task.__init__(self, *args, **kwargs)
        self.key = None  # given to run() here, not to the constructor
        self.default = default

    @defaults_from_attrs("default")
    def run(self, task_result, key, default=no_default):
        try:
            return task_result[key]
        except KeyError:
            if default is no_default:
                raise
            return default


class GetAttr(Task):
    """`task_result.attr` (dotted for nested: "a.b"); with `default`, that value
    instead of an AttributeError."""

    def __init__(self, default=no_default, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.default = default

    @defaults_from_attrs("default")
    def run(self, task_result, attr, default=no_default):
        try:
            return operator.attrgetter(attr)(task_result)
        except AttributeError:
            if default is no_default:
                raise
            return default


# -- operators ---------------------------------------------------------------------
class _Operator(_EngineOperator):
    """The engine's operator task with Prefect 1's constructor (Task settings
    only) and run(x, y)."""

    operation = None  # each subclass's two-argument function

    def __init__(self, *args, **kwargs):
        Task.__init__(self, *args, **kwargs)
        self.fn = type(self).operation

    def run(self, x, y):
        return self.fn(x, y)


def _and(x, y):
    return x and y


def _or(x, y):
    return x or y


class Add(_Operator):
    """Evaluates `x + y`."""

    operation = staticmethod(operator.add)


class Sub(_Operator):
    """Evaluates `x - y`."""

    operation = staticmethod(operator.sub)


class Mul(_Operator):
    """Evaluates `x * y`."""

    operation = staticmethod(operator.mul)


class Div(_Operator):
    """Evaluates `x / y`."""

    operation = staticmethod(operator.truediv)


class FloorDiv(_Operator):
    """Evaluates `x // y`."""

    operation = staticmethod(operator.floordiv)


class Pow(_Operator):
    """Evaluates `x ** y`."""

    operation = staticmethod(operator.pow)


class Mod(_Operator):
    """Evaluates `x % y`."""

    operation = staticmethod(operator.mod)


class And(_Operator):
    """Evaluates `x and y`."""

    operation = staticmethod(_and)


class Or(_Operator):
    """Evaluates `x or y`."""

    operation = staticmethod(_or)


class Not(_Operator):
    """Evaluates `not x`."""

    operation = staticmethod(operator.not_)

    def run(self, x):
        return not x


class Equal(_Operator):
    """Evaluates `x == y`."""

    operation = staticmethod(operator.eq)


class NotEqual(_Operator):
    """Evaluates `x != y`."""

    operation = staticmethod(operator.ne)


class GreaterThan(_Operator):
    """Evaluates `x > y`."""

    operation = staticmethod(operator.gt)


class GreaterThanOrEqual(_Operator):
    """Evaluates `x >= y`."""

    operation = staticmethod(operator.ge)


class LessThan(_Operator):
    """Evaluates `x < y`."""

    operation = staticmethod(operator.lt)


class LessThanOrEqual(_Operator):
    """Evaluates `x <= y`."""

    operation = staticmethod(operator.le)
