"""`orchestrator up`: the API, scheduler, agent and reaper in one process.
For hosts that split them, `orchestrator server` runs the API alone
(`ApiServer`) and `orchestrator scheduler` the scheduler and reaper
(`Housekeeping`); `orchestrator agent` runs agents.

The main thread serves the WSGI app with waitress; the agent loops in a
thread of its own; a service thread drives the reaper and the scheduler with
a `schedule.Scheduler`. SIGINT or SIGTERM stop claiming runs, wait for
running ones up to a grace period, and leave every run in a truthful state.
"""

import datetime as _dt
import logging
import os
import signal
import threading
import time

import filelock
import schedule
import waitress

from ..api import MAX_BODY_BYTES, create_app
from ..config import API_TOKEN_FILE, API_URL_FILE, api_token, home_dir, load_config
from ..service.agents import silent_after
from ..daemons.agent import Agent
from ..daemons.leadership import Leadership
from ..daemons.reaper import Reaper
from ..daemons.scheduler import Scheduler
from ..store import OutageLog, StoreUnavailable

logger = logging.getLogger(__name__)

REAPER_EVERY = 5
SCHEDULER_EVERY = 5


class ApiServer:
    """The REST API on waitress. `publish()` writes where it listens to
    `$ORCHESTRATOR_HOME/api-url` so `orchestrator.Client()` finds it, unless
    another server of this home holds that file (a lock says so); it removes
    only the file it wrote, when it stops."""

    def __init__(self, store, host="127.0.0.1", port=4200, status=None, on_run_created=None,
                 threads=4):
        self.store = store
        self.started = time.time()
        self.token_path = home_dir() / API_TOKEN_FILE
        token = api_token(create=True)
        self.app = create_app(store, token, status=status or self.status,
                              on_run_created=on_run_created)
        self.server = waitress.create_server(
            self.app, host=host, port=port, threads=threads, ident="orchestrator",
            clear_untrusted_proxy_headers=True,
            # Above the API's own 1 MiB limit, so a body somewhat too big gets the
            # API's JSON 413 (waitress reads a body whole, before the app and its token
            # check see it, so this also bounds what a caller without the token can send).
            max_request_body_size=MAX_BODY_BYTES * 4)
        # Where a client on this host reaches it (an IPv6 literal in brackets).
        local = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
        if ":" in local:
            local = f"[{local}]"
        self.url = f"http://{local}:{self.server.effective_port}"
        self.url_path = home_dir() / API_URL_FILE
        self._url_lock = filelock.FileLock(str(self.url_path) + ".lock")
        self.published = False

    def status(self):
        return {"status": "ok", "database": safe_database_url(self.store.url),
                "started": _iso(self.started), "agent": {"alive": False,
                                                         "reason": "not in this process"}}

    def publish(self):
        """Write this server's address to api-url (before anyone is told of it), or
        leave the file to the live server of this home that wrote it. True when
        written."""
        try:
            self._url_lock.acquire(timeout=0)
        except filelock.Timeout:
            return False
        draft = self.url_path.with_name(f".{API_URL_FILE}.{os.getpid()}")
        draft.write_text(self.url + "\n")
        os.replace(draft, self.url_path)
        self.published = True
        return True

    def address_line(self):
        """The banner's line about where clients find this server."""
        line = f"  API:     {self.url}/api/health"
        if not self.published:
            line += (f"\n           (another server of this home is in {self.url_path}; "
                     f"clients reach this one with ORCHESTRATOR_API_URL={self.url})")
        return line

    def run(self, stopping):
        """Serve until `close()` (from a signal handler) ends waitress's loop."""
        try:
            self.server.run()
        except OSError:
            # Closing the listening socket from the signal handler ends
            # waitress's select() with EBADF: that is the requested stop.
            if not stopping.is_set():
                raise
        finally:
            self.unpublish()

    def unpublish(self):
        if not self.published:
            return
        try:
            if self.url_path.read_text().strip() == self.url:
                self.url_path.unlink()
        except OSError:
            pass
        self.published = False
        self._url_lock.release()

    def close(self):
        self.server.close()


class Up:
    def __init__(self, store, host="127.0.0.1", port=4200, labels=(), hostname_label=True,
                 limit=None, poll_interval=0.25, grace=30.0, strict_labels=False):
        config = load_config()["services"]
        self.store = store
        self.grace = grace
        self.agent = Agent(store, labels=labels, hostname_label=hostname_label, limit=limit,
                           poll_interval=poll_interval, cancel_grace=config["cancel_grace"],
                           strict_labels=strict_labels)
        # Runs due now start without waiting for the agent's next poll.
        self.housekeeping = Housekeeping(store, on_runs_created=self.agent.wake.set)
        self.reaper = self.housekeeping.reaper
        self.scheduler = self.housekeeping.scheduler
        self.stopping = threading.Event()
        self.started = time.time()
        self.ticks = self.housekeeping.ticks
        self.api = ApiServer(store, host, port, status=self.status,
                             on_run_created=lambda run: self.agent.wake.set())
        self.server = self.api.server
        self.url = self.api.url
        # Runs reach this API (library tasks such as create_flow_run use it).
        self.agent.env["ORCHESTRATOR_API_URL"] = self.url

    def status(self):
        return {
            "status": "stopping" if self.stopping.is_set() else "ok",
            "database": safe_database_url(self.store.url), "started": _iso(self.started),
            "agent": dict(self.housekeeping.liveness("agent"), name=self.agent.name,
                          labels=self.agent.labels, running=len(self.agent.children),
                          warm_starts=self.agent.warm_status()),
            **self.housekeeping.status(),
        }

    def serve(self):
        # Handlers first: a signal that arrives while starting up stops it cleanly.
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)
        home = home_dir()
        self.api.publish()  # before the address is announced, so clients find it
        print(f"orchestrator up: database {safe_database_url(self.store.url)}\n"
              f"  flows:   {home / 'flows'}\n  results: {home / 'results'}\n"
              f"  logs:    {home / 'logs'} (and `orchestrator logs RUN`)\n"
              f"  agent:   {self.agent.name}, labels {', '.join(self.agent.labels) or 'none'}"
              f"{' (strict)' if self.agent.strict_labels else ''}\n"
              f"{self.api.address_line()}\n"
              f"  web:     {self.url}/\n"
              f"  token:   {self.api.token_path} (print it with: orchestrator token)\n"
              f"{_open_home_warning(home)}"
              "Stop with Ctrl-C.", flush=True)
        self.housekeeping.reap()  # runs a crash left behind, at once
        threads = [threading.Thread(target=self._agent_loop, name="orchestrator-agent",
                                    daemon=True),
                   threading.Thread(target=self.agent.answer_the_doorbell,
                                    args=(self.stopping,), name="orchestrator-doorbell",
                                    daemon=True),
                   threading.Thread(target=self.housekeeping.run, args=(self.stopping,),
                                    name="orchestrator-services", daemon=True)]
        for thread in threads:
            thread.start()
        try:
            self.api.run(self.stopping)
        finally:
            self.stopping.set()
            self.agent.wake.set()
            for thread in threads:
                thread.join(10)
            left = self.agent.stop(self.grace)
            print("orchestrator up: stopped" + (
                f"; runs still going on in their own processes: {', '.join(map(str, left))}"
                if left else "."), flush=True)

    def _request_stop(self, signum, frame):
        self.stopping.set()
        self.agent.wake.set()
        self.server.close()

    def _agent_loop(self):
        while not self.stopping.is_set():
            self.housekeeping.tick("agent", self.agent.run_once)
            self.agent.wake.wait(self.agent.poll_interval)
            self.agent.wake.clear()


class Housekeeping:
    """The scheduler and the reaper, each on its timer, each acting only while
    this process leads it for the database (daemons/leadership.py: every
    process asks at each tick, one leads): the part of `up` that `orchestrator
    scheduler` runs alone.

    The reaper's leader judges every active run: by its process where the
    process is on this host (several `up` on one SQLite database share a host,
    so the leader sees all their processes), else by its heartbeat's age."""

    def __init__(self, store, on_runs_created=None):
        config = load_config()["services"]
        self.reaper = Reaper(store, heartbeat_timeout=config["heartbeat_timeout"])
        self.reaper_leadership = Leadership(store, "reaper")
        self.scheduler = Scheduler(store)
        self.on_runs_created = on_runs_created
        self.ticks = {}  # part name -> when its last step went well
        # A part is alive until it has not ticked for this long (as agents are).
        self.silent_after = silent_after(config["heartbeat_timeout"])
        # One for the process (up's agent too): a full disk is said once a minute,
        # not once per part.
        self.outage = OutageLog(logger, probe=store.probe_write)

    def status(self):
        """Each part's liveness, and whether this process leads it (as its last
        tick found: a status page never waits on the database)."""
        return {
            "scheduler": dict(self.liveness("scheduler"),
                              leader=self.scheduler.leadership.leading),
            "reaper": dict(self.liveness("reaper"), leader=self.reaper_leadership.leading),
        }

    def liveness(self, part):
        """Whether `part` ticked within `silent_after` seconds, and when it last did."""
        when = self.ticks.get(part)
        return {"alive": when is not None and time.time() - when < self.silent_after,
                "last_tick": _iso(when)}

    def reap(self):
        self.tick("reaper", self._reap_once)

    def _reap_once(self):
        if self.reaper_leadership.is_leader():
            self.reaper.run_once()

    def tick(self, name, step):
        """One step of part `name`; a failed step is said (once a minute while the
        store cannot be written) and the part goes on."""
        try:
            step()
            self.ticks[name] = time.time()
            self.outage.ok()
        except StoreUnavailable as exc:
            self.outage.failed(f"The {name}", exc)
        except Exception:  # a failed tick must not stop the service; say why
            logger.exception("orchestrator: the %s step failed; it runs again", name)

    def run(self, stopping):
        """Loop until `stopping` is set."""
        jobs = schedule.Scheduler()
        # At least twice per heartbeat timeout, so a dead run is noticed in time.
        every = min(REAPER_EVERY, self.reaper.heartbeat_timeout / 2)
        jobs.every(every).seconds.do(self.reap)
        jobs.every(SCHEDULER_EVERY).seconds.do(self.tick, "scheduler", self._schedule_once)
        self.tick("scheduler", self._schedule_once)
        try:
            while not stopping.is_set():
                jobs.run_pending()
                stopping.wait(max(0.1, min(jobs.idle_seconds or 1.0, 1.0)))
        finally:
            # Another process takes over at its next tick, not after a timeout.
            self.scheduler.release()
            self.reaper_leadership.release()

    def _schedule_once(self):
        if self.scheduler.is_leader():
            summary = self.scheduler.run_once()
            if summary and summary.get("created") and self.on_runs_created is not None:
                self.on_runs_created()


def _open_home_warning(home):
    """A banner line when others may read the home (its database holds secrets)."""
    try:
        mode = home.stat().st_mode & 0o777
    except OSError:
        return ""
    if not mode & 0o077:
        return ""
    return (f"  note:    {home} can be read by other users (mode {mode:o}), and the "
            f"database in it holds your secrets: chmod 700 {home}\n")


def _iso(epoch):
    return None if epoch is None else _dt.datetime.fromtimestamp(
        epoch, _dt.timezone.utc).isoformat()


def safe_database_url(url):
    """A database URL without its password (in the user part or the query)."""
    if url and "://" in url and "?" in url:
        url = url.split("?", 1)[0] + "?…"
    if url and "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}"
    return url
