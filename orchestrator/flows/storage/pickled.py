"""Flows as bytes: pickled with a note of what pickled them, written to files
atomically, and loaded back only when they are the bytes that were stored
(a pickle runs code); also flow scripts received as bytes, and the names
stored flows get."""

import base64
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import socket
import sys
import tempfile
import unicodedata
from pathlib import PurePosixPath

import cloudpickle

from ...config import home_dir
from ...core.flow import Flow
from ...version import __version__
from ..loading import FlowFileError, load_flows_from_file
from .base import StorageError, _pick

# The package's name, not __name__: all of storage logs through one logger,
# the name logging settings and tests select its records by (a child logger's
# records would carry the child's name).
logger = logging.getLogger("orchestrator.flows.storage")


def _python_version():
    return "%d.%d.%d" % sys.version_info[:3]


def _minor(version):
    return ".".join(str(version).split(".")[:2])


_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_name(text):
    """`text` as one path component: no separators, no leading dot, not too long.

    A name that had to change gets a short digest of the original, so two
    names that clean up to the same text still get different directories.
    """
    safe = _UNSAFE_CHARS.sub("_", text).lstrip("._")[:80]
    if safe != text:
        digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
        safe = f"{safe}-{digest}" if safe else digest
    return safe


def _write_atomically(path, data):
    """Write `data` to `path` so readers see the old file or the new one, never half."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


def _slug(text):
    """`text` in lower case, runs of anything but ASCII letters and digits turned
    into one '-' (as Prefect 1 names uploaded flows: 'my-flow/2024-05-01t06-...')."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug or hashlib.sha1(str(text).encode("utf-8")).hexdigest()[:8]


def _timestamped_key(flow_name):
    """Prefect 1's key for a flow with no key given: '<flow slug>/<UTC time slug>'."""
    return f"{_slug(flow_name)}/{_slug(_dt.datetime.now(_dt.timezone.utc).isoformat())}"


def _unpickle_flow(data, flow_name, where, meta):
    """The Flow pickled in `data`; `meta` says where and with what it was pickled
    (host, python, cloudpickle), `where` names the copy in messages."""
    host = meta.get("host", "?")
    then_python, now_python = meta.get("python", "?"), _python_version()
    then_cp, now_cp = meta.get("cloudpickle", "?"), cloudpickle.__version__
    versions_differ = _minor(then_python) != _minor(now_python) or then_cp != now_cp
    if versions_differ:
        logger.warning(
            "Flow %r was pickled with Python %s and cloudpickle %s; loading it with "
            "Python %s and cloudpickle %s", flow_name, then_python, then_cp,
            now_python, now_cp)
    try:
        flow = cloudpickle.loads(data)
    except ModuleNotFoundError as exc:
        raise StorageError(
            f"Flow {flow_name!r} needs module {exc.name!r}, which is not importable "
            f"here; it was registered on host {host!r} with Python {then_python}. "
            f"Install {exc.name!r} in this environment, or register the flow with "
            "Script, Git or Module storage so it is loaded from source"
        ) from None
    except Exception as exc:
        if versions_differ:
            raise StorageError(
                f"Flow {flow_name!r} could not be unpickled from {where} "
                f"({type(exc).__name__}: {exc}): it was registered with Python "
                f"{then_python} and cloudpickle {then_cp}, this process has Python "
                f"{now_python} and cloudpickle {now_cp}. Register the flow again "
                "with this environment, or use Script or Git storage"
            ) from None
        raise StorageError(
            f"Flow {flow_name!r} could not be unpickled from {where} "
            f"({type(exc).__name__}: {exc}); register the flow again"
        ) from None
    if not isinstance(flow, Flow):
        raise StorageError(
            f"{where} holds a {type(flow).__name__}, not a Flow, so it is corrupt; "
            "register the flow again"
        )
    return flow


def _flow_to_bytes(flow, storage_name):
    """The flow pickled (cloudpickle) in a JSON envelope that says with what it
    was pickled, so a failure to load it elsewhere can say why."""
    try:
        pickled = cloudpickle.dumps(flow)
    except Exception as exc:
        raise StorageError(
            f"Flow {flow.name!r} cannot be pickled for {storage_name} storage "
            f"({type(exc).__name__}: {exc}); create clients and connections inside "
            "tasks instead of at flow definition, or store the flow as a script "
            "(stored_as_script=True)"
        ) from None
    return json.dumps({
        "flow": base64.b64encode(pickled).decode("ascii"),
        "versions": {"python": _python_version(), "cloudpickle": cloudpickle.__version__,
                     "orchestrator": __version__},
        "host": socket.gethostname(),
    }).encode("utf-8")


def _flow_from_bytes(data, flow_name, where, expected_sha256):
    """The flow in `data` (made by `_flow_to_bytes`), loaded only if `data` is
    exactly what was uploaded at registration: a pickle runs code, so one put
    there by anyone else is refused."""
    if not expected_sha256:
        raise StorageError(
            f"Refusing to unpickle flow {flow_name!r} from {where}: no digest of it was "
            "recorded at registration, so it cannot be told from one put there by "
            "someone else; register the flow again"
        )
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise StorageError(
            f"Refusing to unpickle flow {flow_name!r} from {where}: it is not the flow "
            "uploaded at registration (its sha256 differs), so it was replaced since, "
            "for instance by registering another version to the same key. Register the "
            "flow again, and leave the key unset so each version gets its own object"
        )
    try:
        envelope = json.loads(data.decode("utf-8"))
        pickled = base64.b64decode(envelope["flow"])
        versions = envelope.get("versions", {})
        meta = {"host": envelope.get("host", "?"), "python": versions.get("python", "?"),
                "cloudpickle": versions.get("cloudpickle", "?")}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StorageError(
            f"{where} does not hold a flow stored by this orchestrator (no flow "
            "envelope); register the flow again"
        ) from None
    return _unpickle_flow(pickled, flow_name, where, meta)


def _flow_from_script(data, flow_name, where, file_name):
    """Flow `flow_name` defined by the Python source `data` (from `where`).

    The source is written to `$ORCHESTRATOR_HOME/scripts/<sha256>/<file_name>`
    and run from there, so tracebacks show its lines; the same source is
    written once.
    """
    digest = hashlib.sha256(data).hexdigest()
    name = _safe_name(PurePosixPath(str(file_name)).name or "flow.py")
    if not name.endswith(".py"):
        name += ".py"
    path = home_dir() / "scripts" / digest[:40] / name
    try:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, data)
    except OSError as exc:
        raise StorageError(
            f"Cannot write the flow script from {where} to {path}: {exc}; check that "
            "ORCHESTRATOR_HOME is writable"
        ) from None
    try:
        flows = load_flows_from_file(path)
    except FlowFileError as exc:
        raise StorageError(f"Flow script from {where}: {exc}") from None
    return _pick(flows, flow_name, where, "pass the flow's name to get_flow")


class _KeepsDigests:
    """For storage that keeps pickled flows where others can write them (an object
    store, a web service): the sha256 of each flow it stored (`_digests`, flow
    name -> digest) goes into the ref, and a flow whose bytes differ is refused
    when loaded."""

    def _ref_extras(self):
        return {"sha256": dict(self._digests)}

    def _restore_extras(self, ref):
        digests = ref.get("sha256", {})
        if not isinstance(digests, dict):
            raise TypeError("'sha256' must map flow names to digests")
        self._digests = dict(digests)
