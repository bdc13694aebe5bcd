"""Labels: the one check every place that takes labels uses.

Prefect 1 users know the pitfall: `labels="prod"` became four labels, one
per character. Here a single string is one label (with a warning saying to
pass a list), and anything else that is not a list of non-empty strings is
an error naming the value.
"""

import warnings


def check_labels(value, owner, error, stacklevel=3):
    """`value` as a sorted list of unique labels; raises `error` (a class) if it
    cannot be. `owner` names where the labels were given, for messages."""
    if value is None:
        return []
    if isinstance(value, str):
        warnings.warn(
            f"{owner}: labels={value!r} is a string; it is taken as one label "
            f"[{value!r}], not one per character. Pass a list: labels=[{value!r}]",
            UserWarning, stacklevel=stacklevel)
        value = [value]
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise error(f"{owner}(labels={value!r}): labels must be a list of strings, not "
                    f"{type(value).__name__}; e.g. labels=['prod']")
    for label in value:
        if not isinstance(label, str):
            raise error(f"{owner}(labels={list(value)!r}): label {label!r} is a "
                        f"{type(label).__name__}, not a string; write it as "
                        f"{str(label)!r}")
        if not label.strip():
            raise error(f"{owner}(labels={list(value)!r}): labels cannot be empty or "
                        f"blank; remove {label!r}")
    return sorted(set(value))
