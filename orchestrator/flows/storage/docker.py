"""Prefect 1's `Docker` storage, kept with the flow but never built or loaded:
there is no Docker engine or agent here, and its errors say what to use."""

import os
import warnings
from pathlib import PurePosixPath

from .base import StorageError
from .pickled import _slug
from .prefect1 import _masked, _Prefect1Storage


class Docker(_Prefect1Storage):
    """Prefect 1's Docker storage, kept with the flow but not built: there is no
    Docker engine or Docker agent here.

    Registration records where the flow would be in the image and builds
    nothing (with a warning); a run of the flow cannot load it on this host
    and its error says which storage to use instead (Script, Local, Git,
    GitHub, S3, ...). The arguments are Prefect 1's and are stored as given.
    """

    _fields = ("registry_url", "base_image", "dockerfile", "dockerignore",
               "python_dependencies", "image_name", "image_tag", "env_vars", "files",
               "prefect_version", "local_image", "ignore_healthchecks", "base_url",
               "tls_config", "build_kwargs", "prefect_directory", "path",
               "extra_dockerfile_commands")
    _repr_fields = ("registry_url", "image_name", "image_tag")

    def __init__(self, registry_url=None, base_image=None, dockerfile=None, dockerignore=None,
                 python_dependencies=None, image_name=None, image_tag=None, env_vars=None,
                 files=None, prefect_version=None, local_image=False,
                 ignore_healthchecks=False, base_url=None, tls_config=False,
                 build_kwargs=None, prefect_directory="/opt/prefect", path=None,
                 stored_as_script=False, extra_dockerfile_commands=None, **kwargs):
        # Refused when made, as Prefect 1 refuses them.
        if base_image and dockerfile:
            raise StorageError(
                f"Docker storage got base_image={base_image!r} and dockerfile="
                f"{dockerfile!r}; give only one of them"
            )
        relative = [p for p in (files or {}) if not os.path.isabs(p)]
        if relative:
            raise StorageError(
                f"Docker storage files: {', '.join(map(repr, relative))} are not absolute "
                "paths; give each file to copy into the image by its absolute path"
            )
        self.registry_url = registry_url
        self.base_image = base_image
        self.dockerfile = dockerfile
        self.dockerignore = dockerignore
        self.python_dependencies = list(python_dependencies or [])
        self.image_name = image_name
        self.image_tag = image_tag
        self.env_vars = dict(env_vars or {})
        self.files = dict(files or {})
        self.prefect_version = prefect_version
        self.local_image = local_image
        self.ignore_healthchecks = ignore_healthchecks
        self.base_url = base_url
        # A docker.tls.TLSConfig cannot be stored as JSON: kept as "TLS on".
        self.tls_config = tls_config if isinstance(tls_config, bool) else True
        self.build_kwargs = dict(build_kwargs or {})
        self.prefect_directory = prefect_directory
        self.path = path
        self.extra_dockerfile_commands = (list(extra_dockerfile_commands)
                                          if extra_dockerfile_commands is not None else None)
        self._set_options(kwargs, stored_as_script=stored_as_script)

    def __repr__(self):
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._repr_fields)
        if self.env_vars:
            shown += f", env_vars={_masked(self.env_vars)}"
        return f"Docker({shown})"

    @property
    def name(self):
        """The image's full name, registry/image:tag (Prefect 1's `name`)."""
        if self.image_name is None or self.image_tag is None:
            raise StorageError(
                "Docker storage has no image_name and image_tag (no image is built here); "
                "give both to name an image built elsewhere"
            )
        return f"{PurePosixPath(self.registry_url or '', self.image_name)}:{self.image_tag}"

    def add_flow(self, flow, project=None, version=None):
        """Record where the flow would be in the image; no image is built here."""
        self._check_add(flow, project, version)
        location = self.path or f"{self.prefect_directory}/flows/{_slug(flow.name)}.prefect"
        warnings.warn(
            f"Flow {flow.name!r} has Docker storage: no Docker image is built here, and "
            "this orchestrator runs flows as local processes, so its runs will fail to "
            "load it. Use Script, Local, Git, GitHub or S3 storage (and LocalRun) to run "
            "it here", UserWarning, stacklevel=2)
        self.flows[flow.name] = location
        self._flows[flow.name] = flow
        return location

    def get_flow(self, flow_name=None):
        flow_name, location = self._entry(flow_name)
        image = (f"image {self.name}" if self.image_name and self.image_tag
                 else "an image that was never built here")
        raise StorageError(
            f"Flow {flow_name!r} has Docker storage: it lives at {location} inside "
            f"{image}, and this orchestrator runs flows as local processes (it has no "
            "Docker agent), so it cannot load it. Give the flow storage this host can "
            "read, e.g. storage=Script('flows/etl.py'), Local(), GitHub(...) or S3(...), "
            "with run_config=LocalRun(), and register it again"
        )
