"""Opening the store the use cases work on: the database `config.toml` (or
ORCHESTRATOR__DATABASE__URL) names, migrated to this version on first use."""

__all__ = ["open_store", "open_store_ahead"]


def open_store(connections=None):
    """The Store of this home's database; `connections` caps the connections this
    process holds on PostgreSQL (one per thread that uses the store at once)."""
    from ..store import Store

    return Store.open(connections=connections)


def open_store_ahead(connections=None):
    """Open the store before it is needed (a warm run process waiting for its
    run), where holding it open costs nothing: an SQLite file. A PostgreSQL
    connection would sit idle in the server's few, so none is opened. The
    store, or None."""
    from ..store import Store, embedded

    if embedded():
        return Store.open(connections=connections, ahead=True)  # (the next open takes its check)
    return None
