"""Opening the store the use cases work on: the database `config.toml` (or
ORCHESTRATOR__DATABASE__URL) names, migrated to this version on first use."""

__all__ = ["open_store"]


def open_store(connections=None):
    """The Store of this home's database; `connections` caps the connections this
    process holds on PostgreSQL (one per thread that uses the store at once)."""
    from ..store import Store

    return Store.open(connections=connections)
