"""When an auto-scheduled run counts as late, and when a flow's late-run policy
skips it: the one rule the scheduler (which skips late runs), an agent's
claim (which leaves alone a run the scheduler will skip) and `explain` share.

    Flow(..., late_runs="run_all" | "run_latest" | "skip", max_lateness=None)

- run_all: late runs run; with `max_lateness`, runs later than it are skipped;
- run_latest: of the late runs, only the latest runs;
- skip: late runs are skipped.

A run is late when it is more than `max_lateness` (if set), else
LATE_AFTER_SECONDS, past its scheduled start.
"""

POLICIES = ("run_all", "run_latest", "skip")
LATE_AFTER_SECONDS = 60.0


def policy(settings):
    """The flow's late-run policy (its settings as registered)."""
    return (settings or {}).get("late_runs") or "run_all"


def late_after(settings, default=LATE_AFTER_SECONDS):
    """Seconds past its start after which a run of the flow is late."""
    max_lateness = (settings or {}).get("max_lateness")
    return default if max_lateness is None else float(max_lateness)


def skipped_after(settings, default=LATE_AFTER_SECONDS):
    """Seconds past its start after which the policy skips a run whatever else is
    due (`max_lateness`, or the lateness itself under "skip"), or None when no
    lateness alone gets a run skipped (run_all without max_lateness; run_latest
    skips a late run only when a later one is due too)."""
    settings = settings or {}
    if settings.get("max_lateness") is not None:
        return float(settings["max_lateness"])
    return default if policy(settings) == "skip" else None
