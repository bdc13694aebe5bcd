"""Objects stored as JSON references: `{"type": "ClassName", ...}`.

Storage and run configs are recorded with a flow and rebuilt in another
process. A family's root class lists its members; `Root.from_ref(ref)` picks
the member named by the ref's "type" and calls its `_from_ref(ref)`, with
errors that say what was wrong and what to do.
"""

from ..exceptions import OrchestratorError


class Referable:
    """Mixin for a family root: set `_types = {}`, `_kind` (words for
    messages), `_error` (the exception class) and `_fix` (advice)."""

    _kind = "object"
    _error = OrchestratorError
    _fix = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "_types" in cls.__dict__:
            return  # a family root
        for base in cls.__mro__[1:]:
            if "_types" in base.__dict__:
                base._types[cls.__name__] = cls
                break

    def to_ref(self):
        """A JSON-able dict with everything `from_ref` needs."""
        raise NotImplementedError

    @classmethod
    def _from_ref(cls, ref):
        """The member's own constructor from its ref (called by `from_ref`)."""
        raise NotImplementedError

    def __eq__(self, other):
        return type(other) is type(self) and other.to_ref() == self.to_ref()

    __hash__ = None

    @classmethod
    def from_ref(cls, ref):
        """The object described by `ref` (a dict made by `to_ref()`)."""
        kind = cls._kind
        if not isinstance(ref, dict) or not isinstance(ref.get("type"), str):
            raise cls._error(
                f"{kind.capitalize()} reference {ref!r} is not a dict with a 'type' key; "
                f"pass the dict that {kind.replace(' ', '_')}.to_ref() returned")
        member = cls._types.get(ref["type"])
        if member is None:
            raise cls._error(
                f"Unknown {kind} type {ref['type']!r} in {ref!r}; known types: "
                f"{', '.join(sorted(cls._types))}{'; ' + cls._fix if cls._fix else ''}")
        if not issubclass(member, cls):
            raise cls._error(
                f"{kind.capitalize()} reference of type {ref['type']!r} cannot be loaded "
                f"as {cls.__name__}; use the family's from_ref")
        try:
            return member._from_ref(ref)
        except (KeyError, TypeError) as exc:
            raise cls._error(
                f"{ref['type']} {kind} reference {ref!r} is incomplete or malformed "
                f"({type(exc).__name__}: {exc}){'; ' + cls._fix if cls._fix else ''}"
            ) from None
