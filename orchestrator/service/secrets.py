"""Use cases about secrets: values are written and read by flows, never shown;
their names can be listed."""

from ..core import validation
from ..exceptions import InputError

__all__ = ["set_secret", "get_secret", "secret_names", "delete_secret"]


def set_secret(store, name, value):
    """Store secret `name` with `value`: text, not empty (an empty secret is a value
    that never arrived). The value is never part of a message."""
    name = validation.check_name(name, "name", "Secret name")
    if not isinstance(value, str):
        raise InputError("A secret's value must be text; encode other data as JSON text",
                         "value")
    if not value:
        raise InputError(f"Secret {name!r} would be empty; give it a value", "value")
    store.set_secret(name, value)
    return name


def get_secret(store, name):
    """The value of secret `name`, or NotFound."""
    return store.get_secret(name)


def secret_names(store):
    """Every secret's name, sorted."""
    return store.secret_names()


def delete_secret(store, name):
    """Delete secret `name`; NotFound when there is none."""
    store.delete_secret(name)
