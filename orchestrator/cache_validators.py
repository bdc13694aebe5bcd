"""Cache validators for `@task(cache_for=..., cache_validator=...)`."""

from .core.cache_validators import *  # noqa: F401,F403
from .core.cache_validators import __all__  # noqa: F401
