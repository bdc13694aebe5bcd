"""Prefect 1's object store storage, `S3`, `GCS` and `Azure`: the flow uploaded
through fsspec at registration and downloaded at each run (extras s3, gcs,
azure install the store's package)."""

import hashlib
import logging
import os
import re
from pathlib import Path

from .base import StorageError, _flow_file_being_loaded
from .credentials import _default_secret, _secret_value
from .pickled import (_flow_from_bytes, _flow_from_script, _flow_to_bytes, _KeepsDigests,
                      _timestamped_key)
from .prefect1 import _masked, _Prefect1Storage

# The package's name, not __name__: all of storage logs through one logger,
# the name logging settings and tests select its records by (a child logger's
# records would carry the child's name).
logger = logging.getLogger("orchestrator.flows.storage")


class _ObjectStore(_KeepsDigests, _Prefect1Storage):
    """A flow uploaded to an object store at registration and downloaded at each
    run, through fsspec and the store's package (s3fs, gcsfs, adlfs: extras).

    Pickled flows (the default) go to a new key per registration,
    '<flow slug>/<UTC time slug>' unless a key is given, with their sha256
    recorded in the ref. With `stored_as_script=True` the flow's .py file is
    uploaded (or, without a local script, expected at the key) and run at each
    run.
    """

    _protocol = ""      # fsspec's name for the store
    _package = ""       # the package fsspec needs for it
    _extra = ""         # our extra that installs that package
    _container_word, _key_word, _script_hint = "bucket", "key", ""

    def _set_script_and_options(self, local_script_path, options, stored_as_script):
        """`local_script_path` made absolute (with stored_as_script and none given,
        the flow file being loaded), then Prefect 1's shared options."""
        if local_script_path is None and stored_as_script:
            local_script_path = _flow_file_being_loaded()
        self.local_script_path = (os.path.abspath(os.fspath(local_script_path))
                                  if local_script_path else None)
        self._digests = {}
        self._set_options(options, stored_as_script=stored_as_script)

    def _container(self):
        raise NotImplementedError

    def _given_key(self):
        """The key (blob name) given to the constructor, or None."""
        return self.key

    def _script_to_upload(self):
        """The local .py file to upload with stored_as_script, or None."""

    def _filesystem_options(self, for_upload):
        return {}

    def _url(self, key):
        return f"{self._protocol}://{self._container()}/{key}"

    def _filesystem(self, for_upload=False):
        storage_name = type(self).__name__
        install = (f"install it with `pip install -e '.[{self._extra}]'` (or `pip install "
                   f"{self._package}`) on every host that registers or runs such flows")
        try:
            import fsspec
        except ImportError:
            raise StorageError(
                f"{storage_name} storage needs the fsspec and {self._package} packages, "
                f"which are not installed; {install}"
            ) from None
        if not self._container():
            raise StorageError(
                f"{storage_name} storage has no {self._container_word}; give e.g. "
                f"{storage_name}({self._container_word}='my-flows')"
            )
        try:
            return fsspec.filesystem(self._protocol, **self._filesystem_options(for_upload))
        except ImportError as exc:
            raise StorageError(
                f"{storage_name} storage needs the {self._package} package ({exc}); {install}"
            ) from None
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(
                f"{storage_name} storage cannot connect to {self._protocol}://"
                f"{self._container()} ({type(exc).__name__}: {exc}); check its settings "
                "and this host's credentials"
            ) from None

    def _upload(self, key, data, flow_name):
        filesystem = self._filesystem(for_upload=True)
        path, url = f"{self._container()}/{key}", self._url(key)
        try:
            self._check_can_write(filesystem, path, url)
            filesystem.pipe_file(path, data)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(
                f"Cannot upload flow {flow_name!r} to {url} ({type(exc).__name__}: {exc}); "
                f"check that the {self._container_word} exists and this host's credentials "
                "may write to it"
            ) from None
        logger.info("Uploaded flow %r to %s (%d bytes)", flow_name, url, len(data))

    def _check_can_write(self, filesystem, path, url):
        """Raise StorageError if writing `path` must not replace what is there."""

    def _download(self, key, flow_name):
        filesystem = self._filesystem()
        url = self._url(key)
        try:
            return filesystem.cat_file(f"{self._container()}/{key}")
        except FileNotFoundError:
            raise StorageError(
                f"Flow {flow_name!r} is not at {url}: the object was deleted or never "
                "uploaded; register the flow again (or upload its script there)"
            ) from None
        except Exception as exc:
            raise StorageError(
                f"Cannot download flow {flow_name!r} from {url} ({type(exc).__name__}: "
                f"{exc}); check this host's credentials and network"
            ) from None

    def add_flow(self, flow, project=None, version=None):
        """Upload the flow (pickled, or its script), or check its script is at the key."""
        self._check_add(flow, project, version)
        storage_name = type(self).__name__
        key = self._given_key() or _timestamped_key(flow.name)
        if self.stored_as_script:
            script = self._script_to_upload()
            if script is not None:
                try:
                    data = Path(script).read_bytes()
                except OSError as exc:
                    raise StorageError(
                        f"{storage_name} storage cannot read local_script_path {script!r} "
                        f"({exc}); give the flow's .py file"
                    ) from None
                self._upload(key, data, flow.name)
            elif not self._given_key():
                raise StorageError(
                    f"{storage_name} storage with stored_as_script=True needs "
                    f"{self._key_word}= (where the flow's .py file is in the "
                    f"{self._container_word}){self._script_hint}"
                )
            else:
                self._load(flow.name, key, None)  # the script must be there, and define it
            self._digests.pop(flow.name, None)
        else:
            data = _flow_to_bytes(flow, storage_name)
            self._upload(key, data, flow.name)
            self._digests[flow.name] = hashlib.sha256(data).hexdigest()
        self.flows[flow.name] = key
        self._flows[flow.name] = flow
        return key

    def _load(self, flow_name, key, digest):
        data = self._download(key, flow_name)
        where = self._url(key)
        if self.stored_as_script:
            return _flow_from_script(data, flow_name, where, key)
        return _flow_from_bytes(data, flow_name, where, digest)

    def get_flow(self, flow_name=None):
        fallback = self._given_key() if self.stored_as_script else None
        flow_name, key = self._entry(flow_name, fallback=fallback)
        return self._load(flow_name, key, self._digests.get(flow_name))


class S3(_ObjectStore):
    """Prefect 1's S3 storage: the flow uploaded to `bucket` at registration.

        S3(bucket="my-flows")                                    # pickled
        S3(bucket="my-flows", key="flows/etl.py", stored_as_script=True,
           local_script_path="flows/etl.py")                     # the script

    Needs the `s3` extra (`pip install -e '.[s3]'`: fsspec and s3fs).
    `client_options` are boto3 client arguments (endpoint_url, region_name,
    ...); `upload_options` are extra arguments of the upload (ServerSideEncryption,
    ...). Credentials come from the usual AWS places (environment, ~/.aws).
    """

    _fields = ("bucket", "key", "local_script_path", "client_options", "upload_options")
    _repr_fields = ("bucket", "key", "stored_as_script")
    _protocol, _package, _extra = "s3", "s3fs", "s3"
    _container_word, _key_word = "bucket", "key"
    _script_hint = (", or local_script_path= (the .py file to upload; `orchestrator "
                    "register FILE` uses FILE)")

    def __init__(self, bucket, key=None, stored_as_script=False, local_script_path=None,
                 client_options=None, upload_options=None, **kwargs):
        self.bucket = bucket
        self.key = key
        self.upload_options = upload_options
        self.client_options = client_options
        self._set_script_and_options(local_script_path, kwargs, stored_as_script)

    def __repr__(self):
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._repr_fields)
        if self.client_options:
            shown += f", client_options={_masked(self.client_options)}"
        return f"S3({shown})"

    def _container(self):
        return self.bucket

    def _script_to_upload(self):
        return self.local_script_path

    def _filesystem_options(self, for_upload):
        options = {"client_kwargs": dict(self.client_options or {})}
        if for_upload and self.upload_options:
            options["s3_additional_kwargs"] = dict(self.upload_options)
        return options


class GCS(_ObjectStore):
    """Prefect 1's GCS storage: the flow uploaded to Google Cloud Storage `bucket`.

        GCS(bucket="my-flows", project="analytics")

    Needs the `gcs` extra (`pip install -e '.[gcs]'`: fsspec and gcsfs);
    credentials come from the usual Google places (GOOGLE_APPLICATION_CREDENTIALS, ...).
    """

    _fields = ("bucket", "key", "project", "local_script_path")
    _repr_fields = ("bucket", "key", "project", "stored_as_script")
    _protocol, _package, _extra = "gcs", "gcsfs", "gcs"
    _container_word, _key_word = "bucket", "key"
    _script_hint = S3._script_hint

    def __init__(self, bucket, key=None, project=None, stored_as_script=False,
                 local_script_path=None, **kwargs):
        self.bucket = bucket
        self.key = key
        self.project = project
        self._set_script_and_options(local_script_path, kwargs, stored_as_script)

    def _container(self):
        return self.bucket

    def _script_to_upload(self):
        return self.local_script_path

    def _filesystem_options(self, for_upload):
        return {"project": self.project} if self.project else {}


class Azure(_ObjectStore):
    """Prefect 1's Azure storage: the flow uploaded to Azure Blob Storage `container`.

        Azure(container="flows", connection_string_secret="AZURE_STORAGE")

    Needs the `azure` extra (`pip install -e '.[azure]'`: fsspec and adlfs).
    The connection string is the secret named by `connection_string_secret`,
    else the environment variable AZURE_STORAGE_CONNECTION_STRING. With
    `blob_name`, a second registration replaces the blob only with
    `overwrite=True`. With `stored_as_script=True`, the script must already be
    at `blob_name` (as in Prefect 1, Azure storage uploads no scripts).
    """

    _fields = ("container", "connection_string_secret", "blob_name", "overwrite")
    _repr_fields = ("container", "blob_name", "stored_as_script")
    _protocol, _package, _extra = "az", "adlfs", "azure"
    _container_word, _key_word = "container", "blob_name"
    _script_hint = ""

    def __init__(self, container, connection_string_secret=None, blob_name=None,
                 overwrite=False, stored_as_script=False, **kwargs):
        self.container = container
        self.connection_string_secret = connection_string_secret
        self.blob_name = blob_name
        self.overwrite = overwrite
        self._digests = {}
        self._set_options(kwargs, stored_as_script=stored_as_script)

    def _container(self):
        return self.container

    def _given_key(self):
        return self.blob_name

    def _connection_string(self):
        what = f"Azure storage for container {self.container!r}"
        if self.connection_string_secret is not None:
            return _secret_value(self.connection_string_secret, what)
        value = _default_secret("AZURE_STORAGE_CONNECTION_STRING")
        if not value:
            raise StorageError(
                f"{what} has no connection string: pass connection_string_secret='NAME' "
                "(and run `orchestrator secret set NAME`), or set the environment "
                "variable AZURE_STORAGE_CONNECTION_STRING"
            )
        return value

    def _filesystem_options(self, for_upload):
        connection_string = self._connection_string()
        if "AccountKey=" in connection_string or "SharedAccessSignature=" in connection_string:
            return {"connection_string": connection_string}
        # No key in it: sign in as this host's Azure identity, as Prefect 1 did
        # with DefaultAzureCredential.
        account = re.search(r"AccountName=([^;]+)", connection_string)
        return {"account_name": account.group(1) if account else None, "anon": False}

    def _check_can_write(self, filesystem, path, url):
        if not self.overwrite and filesystem.exists(path):
            raise StorageError(
                f"Azure storage: blob {url} exists and overwrite=False; pass "
                "overwrite=True to replace it, or leave blob_name unset so each "
                "registration gets its own blob"
            )
