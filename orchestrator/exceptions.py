"""The exception root of the project and its user-facing errors.

Every error a user can cause derives from `OrchestratorError` and says what
was wrong, with which value, and how to fix it. Some also derive from the
builtin a Prefect 1 user would catch (`ValueError`, `TypeError`).
"""


class OrchestratorError(Exception):
    """Root of every error this package raises on purpose."""


class FlowValidationError(OrchestratorError, ValueError):
    """A flow's graph is not valid: a cycle, a foreign task, a bad reference task."""


class ParameterError(OrchestratorError, ValueError):
    """Parameters given to a run do not match the flow's parameters."""


class TaskDefinitionError(OrchestratorError, ValueError):
    """A task was defined or called with arguments that cannot work."""


class ContextError(OrchestratorError, AttributeError):
    """Something tried to change the read-only run context."""


class ConfigError(OrchestratorError, ValueError):
    """A configuration file or environment override is not valid."""


class ResultError(OrchestratorError):
    """A result could not be written, read or serialized."""


class TaskCallError(OrchestratorError, TypeError):
    """A task was called in a flow with arguments its `run` does not take."""


class InputError(OrchestratorError, ValueError):
    """A value given at an edge (command line, request body, library call) is not
    valid; `field` names it as the REST API does ("name", "parameters.day")."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.field = field

    def __reduce__(self):  # keep `field` when pickled to another process
        return type(self), (str(self), self.field)


class Unavailable(OrchestratorError):
    """What the call must write cannot be written now (its disk is full): the same
    call later works. The CLI exits with code 3; the REST API answers 503."""


class NotFound(OrchestratorError, LookupError):
    """No such project, flow, run, secret or limit (the REST API answers 404).

    `kind` ("project", "flow", "flow run", "secret", ...) and `name` say what was
    looked for, so that each edge can add its own advice (`advised`): the store
    and the use cases say what is missing, not which command to run."""

    def __init__(self, message, kind=None, name=None):
        super().__init__(message)
        self.kind = kind
        self.name = name

    @classmethod
    def named(cls, kind, name, known, fix=""):
        import difflib  # on use: `import orchestrator` should not pay for it

        close = difflib.get_close_matches(str(name), [str(k) for k in known], n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        return cls(f"No {kind} named {name!r}.{hint}{(' ' + fix) if fix else ''}",
                   kind=kind, name=name)

    def advised(self, fix):
        """This error with `fix` (what to do about it) after its message."""
        message = str(self)
        separator = " " if message.endswith((".", "?")) else "; "
        return type(self)(f"{message}{separator}{fix}", kind=self.kind, name=self.name)


class Conflict(OrchestratorError):
    """The request contradicts what is stored: a reused idempotency key, a finished
    run to cancel, a schedule to pause that the flow does not have (409)."""


class SecretNotFound(OrchestratorError, LookupError):
    """No secret with that name where this run looks for secrets."""


class AttemptLost(OrchestratorError):
    """A run process wrote about a run that another attempt owns now, or that
    another process ended: the write changed nothing, and the process stops."""

    def __init__(self, message, run_id=None, attempt=None, owner=None, state=None):
        super().__init__(message)
        self.run_id = run_id
        self.attempt = attempt      # the writer's attempt
        self.owner = owner          # the attempt that owns the run now
        self.state = state          # the run's state now
