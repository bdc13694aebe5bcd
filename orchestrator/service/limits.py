"""Use cases about concurrency limits: label limits on runs, tag limits on tasks."""

from ..core import validation
from ..exceptions import InputError

__all__ = ["LIMIT_KINDS", "concurrency_limits", "concurrency_limit", "set_concurrency_limit",
           "delete_concurrency_limit"]

LIMIT_KINDS = ("label", "tag")


def concurrency_limits(store):
    """Every concurrency limit, label limits first: dicts with kind, label, limit and
    holders (the ids of the runs holding it)."""
    return [concurrency_limit(store, kind, label, limit) for kind in LIMIT_KINDS
            for label, limit in sorted(store.concurrency_limits(kind).items())]


def concurrency_limit(store, kind, label, limit):
    """One limit as a dict, with the runs holding it now."""
    holders = (store.limit_holders(label=label) if kind == "label"
               else store.tag_slot_holders(label))
    return {"kind": kind, "label": label, "limit": limit, "holders": holders}


def set_concurrency_limit(store, label, limit, kind="label"):
    """At most `limit` runs with label `label` (kind "label") or tasks tagged `label`
    (kind "tag") at once; 0 holds them all. Returns the limit as a dict."""
    _check_kind(kind)
    label = validation.check_name(label, "label", what="Label")
    limit = validation.check_concurrency_limit(limit)
    store.set_concurrency_limit(label, limit, kind=kind)
    return concurrency_limit(store, kind, label, limit)


def delete_concurrency_limit(store, label, kind="label"):
    """Remove the limit of `label`; NotFound when there is none."""
    _check_kind(kind)
    store.delete_concurrency_limit(label, kind=kind)


def _check_kind(kind):
    if kind not in LIMIT_KINDS:
        raise InputError(f"Limit kind {kind!r} is not known; use label or tag", "kind")
