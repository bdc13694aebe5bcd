"""Results: where checkpointed task results are written (`LocalResult`)."""

from .core.results import *  # noqa: F401,F403
from .core.results import __all__  # noqa: F401
