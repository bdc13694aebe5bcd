"""Who a process is, across hosts: the identity of the host a pid belongs to,
and unique ids for agents and run processes.

A pid means something only inside one kernel boot and one PID namespace.
Host names do not tell that: cloned VMs and containers share them, and two
containers may both run their agent as pid 1. So a process is recorded with
`host_identity()` beside its pid, and only a process with the same identity
may judge that pid gone (see daemons/reaper.py); everyone else waits for
the lease (heartbeat or last-seen) to expire.

    host_identity()   # "boot:eea83b04-...;pidns:4026531836"
    new_id()          # "3f2a9c1e-..." (a uuid4), one per agent or run process
"""

import functools
import os
import socket
import subprocess
import uuid
from pathlib import Path

# The agent hands each run process its id in this variable (see service/execution.py).
RUN_PROCESS_ID_ENV = "ORCHESTRATOR_RUN_PROCESS_ID"

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_PID_NAMESPACE = "/proc/self/ns/pid"


def new_id():
    """A fresh unique id for an agent or a run process."""
    return str(uuid.uuid4())


def host_identity():
    """The identity under which this process's pids mean something: the kernel
    boot and the PID namespace. Equal identities see the same process table.

    Where /proc does not tell (not Linux), the host name, this boot's start
    time and the machine's hardware address stand in; the pid namespace is
    then the host's own.
    """
    return _identity(os.getpid())


@functools.lru_cache(maxsize=4)
def _identity(pid):
    # Cached per pid: a forked child (another namespace after unshare) looks again.
    try:
        boot = _boot_id()
        namespace = os.readlink(_PID_NAMESPACE)  # "pid:[4026531836]"
    except OSError:
        node = uuid.getnode()
        # With no hardware address, getnode() makes one up per process (the
        # multicast bit set): every process would be a host of its own.
        node = "none" if node & 0x010000000000 else f"{node:012x}"
        return f"host:{socket.gethostname()};boot:{_boot_time()};node:{node}"
    return f"boot:{boot};pidns:{namespace[namespace.find('[') + 1:].rstrip(']')}"


@functools.lru_cache(maxsize=1)
def _boot_id():
    """This boot's id: the same for every process of the boot, so read once."""
    return _BOOT_ID.read_text().strip()


def _boot_time():
    """When this host booted (whole seconds), or "unknown" where nothing says."""
    try:
        out = subprocess.run(["sysctl", "-n", "kern.boottime"], check=False, capture_output=True,
                             text=True, timeout=5).stdout  # "{ sec = 1716800000, ... }"
        return out.split("sec =")[1].split(",")[0].strip()
    except (OSError, IndexError, ValueError, subprocess.SubprocessError):
        return "unknown"
