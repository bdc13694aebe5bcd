"""The parent of the modules that stand in for Prefect 1's (`prefect`,
`prefect.engine.state`, ...) under the import switch: flows pickled while the
switch served them name `orchestrator.prefect1_imports.prefect...`, so this
import path stays. The implementation is `orchestrator.prefect1.imports`."""

from .prefect1.imports import *  # noqa: F401,F403
from .prefect1.imports import __all__  # noqa: F401

__path__ = []  # a package with no directory: only the switch's finder imports under it
