"""What every storage shares: `Storage`, the family's root and interface,
`StorageError`, the checks of `add_flow`'s arguments, and how a flow is picked
from those a file or module defines."""

import sys

from ...core.flow import Flow
from ...exceptions import OrchestratorError
from ..loading import FlowFileError, pick_flow
from ..refs import Referable


class StorageError(OrchestratorError):
    """A flow could not be stored, found or loaded; the message says how to fix it."""


class Storage(Referable):
    """Where a registered flow lives. Subclasses implement the four methods.

    `add_flow` runs at registration and records what `get_flow` needs;
    `to_ref()` must describe the object completely, because `get_flow` usually
    runs on `Storage.from_ref(ref)` in another process.
    """

    _types = {}
    _kind = "storage"
    _error = StorageError
    _fix = "register the flow again"

    @property
    def labels(self):
        """Labels this storage adds to its flows (agents must have them): those
        given as `labels=`, for the storages that take them."""
        return list(getattr(self, "_labels", ()))

    def __contains__(self, flow_name):
        """Is a flow of this name kept here (`flows`: name -> where it is kept)?"""
        return isinstance(flow_name, str) and flow_name in getattr(self, "flows", ())

    def add_flow(self, flow, project, version):
        """Keep `flow` (or check it can be found) at registration of `version`."""
        raise NotImplementedError

    def get_flow(self, flow_name):
        """The flow called `flow_name`, loaded now; raises StorageError."""
        raise NotImplementedError

    # Ref keys that `add_flow` fills in (where each registered flow went).
    _registration_keys = ("flows", "sha256")

    def settings_ref(self):
        """`to_ref()` without what `add_flow` records: what the storage was
        configured with, the same before and after registering, so comparing it
        tells a changed storage from the same one used again."""
        return {k: v for k, v in self.to_ref().items() if k not in self._registration_keys}


def _check_registration(flow, project, version, optional=False):
    """Check add_flow's arguments; with `optional`, project and version may be
    None (Prefect 1's `add_flow(flow)` had neither)."""
    if not isinstance(flow, Flow):
        raise StorageError(
            f"add_flow needs a Flow, got {flow!r} ({type(flow).__name__}); pass the "
            "object made by `with Flow(...) as flow:`"
        )
    if (not optional or project is not None) and (
            not isinstance(project, str) or not project.strip()):
        raise StorageError(
            f"Project {project!r} for flow {flow.name!r} must be a non-empty string"
        )
    if optional and version is None:
        return
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise StorageError(
            f"Version {version!r} for flow {flow.name!r} must be a whole number >= 0"
        )


def _pick(flows, name, where, how_to_choose):
    """The flow called `name` among `flows` (or the only one), as a StorageError if not."""
    if name is None and len(flows) > 1:
        raise StorageError(
            f"{where} defines {len(flows)} flows ({', '.join(sorted(flows))}); "
            f"{how_to_choose}"
        )
    try:
        return pick_flow(flows, name, where)
    except FlowFileError as exc:
        raise StorageError(str(exc)) from None


_FLOW_FILE_RUN_NAME = "__orchestrator_flow_file__"  # what load_flows_from_file runs files as


def _flow_file_being_loaded():
    """The flow file being loaded now (by `orchestrator register` or Script/Git
    storage), if a storage is being made while one is: Prefect 1's CLI put it in
    the context as `local_script_path` for the same purpose."""
    from ...core.context import context

    given = context.get("local_script_path")
    if given:
        return given
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") == _FLOW_FILE_RUN_NAME:
            return frame.f_globals.get("__file__")
        frame = frame.f_back
    return None
