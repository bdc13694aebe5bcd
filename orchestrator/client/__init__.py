"""`orchestrator.Client`: the REST API from Python scripts, on this host or
another (implemented in `orchestrator.client.rest`)."""

from .rest import *  # noqa: F401,F403
from .rest import __all__  # noqa: F401
