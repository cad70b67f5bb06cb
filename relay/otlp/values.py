"""Conversion between OTLP ``AnyValue``/``KeyValue`` protobuf messages and plain Python values.

OTLP common types: https://github.com/open-telemetry/opentelemetry-proto/blob/main/opentelemetry/proto/common/v1/common.proto
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

__all__ = ["any_to_py", "attrs_to_dict", "py_to_any", "dict_to_attrs", "as_int", "as_float", "as_bool", "as_str"]


def any_to_py(v: AnyValue) -> Any:
    """An ``AnyValue`` as a Python value: str, int, float, bool, bytes, list, dict, or None when unset."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_to_py(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_to_py(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


#: ``AnyValue`` fields whose Python value is the field itself (``attrs_to_dict``'s fast path).
_SCALAR_KINDS = frozenset({"string_value", "int_value", "double_value", "bool_value", "bytes_value"})


def attrs_to_dict(attrs: Iterable[KeyValue]) -> dict[str, Any]:
    """A repeated ``KeyValue`` field as a dict (later keys win); values as ``any_to_py``.

    The hot path of every span the pipeline reads: a non-empty string (most attributes) is read without asking
    which field of the ``oneof`` is set, and scalars without the recursive call."""
    out: dict[str, Any] = {}
    for kv in attrs:
        v = kv.value
        s = v.string_value
        if s:
            out[kv.key] = s
            continue
        kind = v.WhichOneof("value")
        out[kv.key] = getattr(v, kind) if kind in _SCALAR_KINDS else any_to_py(v)
    return out


def py_to_any(value: Any, out: AnyValue | None = None) -> AnyValue:
    """A Python value as an ``AnyValue`` (dicts become kvlists, lists arrays, other objects strings)."""
    out = AnyValue() if out is None else out
    if value is None:
        return out
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        if -(2**63) <= value < 2**63:
            out.int_value = value
        else:
            out.string_value = str(value)
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, (bytes, bytearray)):
        out.bytes_value = bytes(value)
    elif isinstance(value, Mapping):
        kvl = KeyValueList()
        for k, v in value.items():
            py_to_any(v, kvl.values.add(key=str(k)).value)
        out.kvlist_value.CopyFrom(kvl)
    elif isinstance(value, (list, tuple)):
        arr = ArrayValue()
        for v in value:
            py_to_any(v, arr.values.add())
        out.array_value.CopyFrom(arr)
    else:
        out.string_value = json.dumps(value, default=str)
    return out


#: Exact scalar types → ``AnyValue`` field (the hot path of ``dict_to_attrs``; subclasses such as enums take
#: ``py_to_any``'s isinstance route, so the result is the same).
_SCALAR_FIELDS = {str: "string_value", float: "double_value", bool: "bool_value"}


def dict_to_attrs(d: Mapping[str, Any], out: Any) -> None:
    """Append ``d``'s items to a repeated ``KeyValue`` field ``out`` (None values are skipped); same encoding as
    ``py_to_any``."""
    add = out.add
    for k, v in d.items():
        if v is None:
            continue
        t = type(v)
        f = _SCALAR_FIELDS.get(t)
        if f is not None:
            setattr(add(key=k).value, f, v)
        elif t is int and -(2**63) <= v < 2**63:
            add(key=k).value.int_value = v
        else:
            py_to_any(v, add(key=k).value)


# Tolerant coercion: Claude Code sends some numbers and booleans as strings (observed in Claude Code's exports,
# tests/fixtures/claude-code/).


def as_int(v: Any) -> int | None:
    """Coerce int, float, or a numeric string to int; None for anything else."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            try:
                return int(float(v))
            except ValueError:
                return None
    return None


def as_float(v: Any) -> float | None:
    """Coerce int, float or a numeric string to float; None for anything else."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None


def as_bool(v: Any) -> bool | None:
    """Coerce a bool or the strings ``true``/``false`` (any case) to bool; None otherwise."""
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        s = v.strip().lower()
        if s == "true":
            return True
        if s == "false":
            return False
    if isinstance(v, int):
        return bool(v)
    return None


def as_str(v: Any) -> str | None:
    """A non-empty string form of ``v`` (JSON for containers); None for None or ''."""
    if v is None:
        return None
    if isinstance(v, str):
        return v or None
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)
