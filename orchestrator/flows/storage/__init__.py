"""Flow storage: where a registered flow is kept, and how a run loads it back.

Registration calls `storage.add_flow(flow, project, version)` and saves
`storage.to_ref()` (a JSON dict) with the flow version; the process that runs
the flow rebuilds the storage with `Storage.from_ref(ref)` and calls
`get_flow(name)`.

    Local()                       # default: a cloudpickle under $ORCHESTRATOR_HOME/flows
    Script("flows/etl.py")        # run the file again at run time: edits take effect
    Module("mypackage.flows")     # import a module on the run's sys.path
    Git("https://host/repo.git", "flows/etl.py", ref="v1.2")  # a file in a git checkout

Local, Module and Git also take Prefect 1.4.1's arguments, with their meaning:
`Local(path="flows/etl.py", stored_as_script=True)` runs that file at every
run, `Git(repo="org/flows", flow_path="flows/etl.py", branch_name="dev")`
clones from GitHub with a token from the secrets (each class's docstring says
how a call is read when the two forms differ).

Prefect 1's other storage classes take Prefect 1.4.1's arguments: GitHub,
GitLab and Bitbucket clone through Git with a token from the secrets; S3, GCS
and Azure upload the flow through fsspec (extras s3, gcs, azure); Webhook
sends it with HTTP requests; Docker is stored but cannot run here, and says so.

Local storage only works on the host that registered the flow (the Prefect 1
FAQ's `ModuleNotFoundError` case); its errors say so and name the storage
that works elsewhere. Pickles are loaded only from inside Local storage's own
flows directory, never from a path given by anyone else, or (S3, GCS, Azure,
Webhook) when their sha256 is the one recorded when they were uploaded.

`flow_fingerprint(flow)` is a digest of what makes a flow behave as it does,
so registering an unchanged flow can keep its version.

The package's modules hold one family each: `base` (Storage, StorageError),
`local`, `sources` (Script, Module), `git`, `git_hosts` (GitHub, GitLab,
Bitbucket), `object_stores` (S3, GCS, Azure), `webhook`, `docker`,
`fingerprint`; `prefect1`, `pickled` and `credentials` hold what several of
them share. Import the names from here (or from `orchestrator.storage`): flows
pickled before the split name their storage by these paths
(`orchestrator.flows.storage.Local`), so every storage class stays exported
here.
"""

from .base import Storage, StorageError
from .docker import Docker
from .fingerprint import flow_fingerprint
from .git import Git
from .git_hosts import Bitbucket, GitHub, GitLab
from .local import Local
from .object_stores import GCS, S3, Azure
from .sources import Module, Script
from .webhook import Webhook, WebhookResponse

__all__ = ["StorageError", "Storage", "Local", "Script", "Module", "Git", "GitHub", "GitLab",
           "Bitbucket", "S3", "GCS", "Azure", "Webhook", "WebhookResponse", "Docker",
           "flow_fingerprint"]
