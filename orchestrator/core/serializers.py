"""Serializers turn a task's result into bytes and back."""

import json

import cloudpickle

__all__ = ["Serializer", "PickleSerializer", "JSONSerializer"]


class Serializer:
    """Base: `serialize(value) -> bytes`, `deserialize(bytes) -> value`."""

    def serialize(self, value):
        raise NotImplementedError

    def deserialize(self, data):
        raise NotImplementedError

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))

    def __repr__(self):
        return f"{type(self).__name__}()"


class PickleSerializer(Serializer):
    """cloudpickle: any Python object that can be pickled, closures included."""

    def serialize(self, value):
        return cloudpickle.dumps(value)

    def deserialize(self, data):
        return cloudpickle.loads(data)


class JSONSerializer(Serializer):
    """JSON text (UTF-8): readable by anything, for JSON-compatible values only."""

    def serialize(self, value):
        return json.dumps(value).encode("utf-8")

    def deserialize(self, data):
        return json.loads(data.decode("utf-8"))
