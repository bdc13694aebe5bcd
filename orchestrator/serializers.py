"""Serializers for results: `PickleSerializer` (cloudpickle), `JSONSerializer`."""

from .core.serializers import *  # noqa: F401,F403
from .core.serializers import __all__  # noqa: F401
