"""OTLP/JSON export requests, from the parsed JSON tree (``json.loads``) to the protobuf message, fast.

OTLP/JSON is the proto3 JSON mapping (https://protobuf.dev/programming-guides/json/) with the OTLP deviations
(https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding): ``traceId``/``spanId``/``parentSpanId`` are hex,
not base64; enums may be integers; unknown fields are ignored. ``json_format.ParseDict`` of the protobuf runtime
implements the mapping for any message, generically and in pure Python: ~300 µs per GenAI span, 100 times the cost
of the binary protobuf path (``bench/ingest.py --phases genai-json``).

``fill`` converts the trees real exporters send with tables built once from the OTLP message descriptors, and
gives up — returns False — at the first thing it does not convert *exactly* as ``ParseDict`` does (after the hex ids
are rewritten and with ``ignore_unknown_fields``): a value of an unexpected JSON type, a quoted float or negative
number, ``null`` inside a list, a field spelled both ways, two members of a ``oneof``, a string with a UTF-16
surrogate, an id that is not hex pairs, nesting beyond the limit. The caller then clears the message and takes the
reference path (``relay.otlp.codec``), which accepts or refuses it with its own error message. So every request
decodes to the same message, or is refused with the same 400, either way (checked against the reference with
Hypothesis in ``tests/test_otlp_jsontree.py``).

``check_tree`` is the structural check both paths apply to every JSON container: nesting depth and object keys that
are not valid Unicode text.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

__all__ = ["fill", "check_tree", "TreeProblem"]

#: Any UTF-16 surrogate code point: ``json.loads`` joins escaped pairs, so one left in a ``str`` is unpaired, which
#: relay refuses in object keys (``check_tree``). In string fields the message's setter refuses it.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Integers as JSON strings (int64/fixed64 values): ``ParseDict`` also takes ``+1``, ``1_000`` or ``1e3``-style
#: floats; those rare spellings take the reference path.
_INT = re.compile(r"-?[0-9]+")
#: Bytes fields holding OTLP ids, hex in OTLP/JSON (``relay.otlp.jsonids`` rewrites the same places).
_HEX_ID_FIELDS = frozenset({"trace_id", "span_id", "parent_span_id"})
_HEX_ID_MESSAGES = frozenset(
    {
        "opentelemetry.proto.trace.v1.Span",
        "opentelemetry.proto.trace.v1.Span.Link",
        "opentelemetry.proto.logs.v1.LogRecord",
        "opentelemetry.proto.metrics.v1.Exemplar",
    }
)
_KEY_VALUE = "opentelemetry.proto.common.v1.KeyValue"
_ANY_VALUE = "opentelemetry.proto.common.v1.AnyValue"
_INT_TYPES = frozenset(
    {
        FieldDescriptor.CPPTYPE_INT32,
        FieldDescriptor.CPPTYPE_INT64,
        FieldDescriptor.CPPTYPE_UINT32,
        FieldDescriptor.CPPTYPE_UINT64,
    }
)
#: Largest int ``float()`` converts; beyond it ``ParseDict`` raises OverflowError (the reference path reports it).
_FLOAT_INT_LIMIT = 2**1023


class TreeProblem(Exception):
    """``check_tree`` found nesting deeper than its limit or an object key with an unpaired UTF-16 surrogate;
    ``message`` says which, for a 400 response."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _GiveUp(Exception):
    """The fast path cannot convert this tree exactly as the reference path does."""


_GIVE_UP = _GiveUp()


def check_tree(tree: Any, max_depth: int, depth: int = 1) -> None:
    """Raise :class:`TreeProblem` when a JSON container in ``tree`` (itself at nesting level ``depth``) lies deeper
    than ``max_depth`` levels or an object key is not valid Unicode text (a lone UTF-16 surrogate such as
    ``"\\ud800"``, which JSON escapes allow but UTF-8 cannot encode, RFC 8259 §8.2). Iterative, so hostile nesting
    never reaches a recursive parser."""
    stack = [(tree, depth)]
    while stack:
        node, level = stack.pop()
        if level > max_depth:
            raise TreeProblem(f"JSON nested deeper than {max_depth} levels")
        if isinstance(node, dict):
            for k, v in node.items():
                if not k.isascii():
                    try:
                        k.encode("utf-8")
                    except UnicodeEncodeError:
                        raise TreeProblem(
                            f"JSON object key {k.encode('utf-8', 'backslashreplace').decode()[:40]!r} "
                            "contains a lone UTF-16 surrogate"
                        ) from None
                if isinstance(v, (dict, list)):
                    stack.append((v, level + 1))
        else:
            stack.extend((x, level + 1) for x in node if isinstance(x, (dict, list)))


# ---------------------------------------------------------------------------------------------------- scalars
# Each returns the value ParseDict would set, or raises _GiveUp where ParseDict would do anything else.


def _string(v: Any) -> str:
    if type(v) is not str:  # an unpaired surrogate: the message's setter raises UnicodeEncodeError → give up
        raise _GIVE_UP
    return v


def _integer(v: Any) -> int:
    t = type(v)
    if t is int:
        return v  # range: the message's setter raises ValueError → the caller gives up
    if t is str and _INT.fullmatch(v):
        return int(v)
    raise _GIVE_UP


def _double(v: Any) -> float:
    t = type(v)
    if t is float:
        if v - v == 0.0:  # finite (NaN and ±inf as bare JSON literals are ParseDict errors)
            return v
    elif t is int and -_FLOAT_INT_LIMIT < v < _FLOAT_INT_LIMIT:
        return float(v)
    raise _GIVE_UP


def _boolean(v: Any) -> bool:
    if type(v) is not bool:
        raise _GIVE_UP
    return v


def _base64(v: Any) -> bytes:
    if type(v) is not str:
        raise _GIVE_UP
    encoded = v.encode("utf-8")  # ParseDict's own steps (json_format._ConvertScalarFieldValue)
    return base64.urlsafe_b64decode(encoded + b"=" * (4 - len(encoded) % 4))


def _hex_id(v: Any) -> bytes:
    if type(v) is not str:
        raise _GIVE_UP
    raw = bytes.fromhex(v)  # ValueError on a non-hex digit → give up
    if 2 * len(raw) != len(v):  # fromhex skips whitespace; relay.otlp.jsonids wants hex pairs only
        raise _GIVE_UP
    return raw


def _enum_converter(field: FieldDescriptor) -> Callable[[Any], int]:
    names = {v.name: v.number for v in field.enum_type.values}
    numbers = frozenset(names.values())

    def convert(v: Any) -> int:
        if type(v) is str:
            n = names.get(v)
            if n is not None:
                return n
        elif type(v) is int and v in numbers:
            return v
        raise _GIVE_UP

    return convert


def _scalar_converter(message: Descriptor, field: FieldDescriptor) -> Callable[[Any], Any]:
    cpp = field.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        if field.type == FieldDescriptor.TYPE_BYTES:
            if field.name in _HEX_ID_FIELDS and message.full_name in _HEX_ID_MESSAGES:
                return _hex_id
            return _base64
        return _string
    if cpp in _INT_TYPES:
        return _integer
    if cpp == FieldDescriptor.CPPTYPE_DOUBLE:  # (float32 would need ParseDict's range check; no OTLP field is one)
        return _double
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return _boolean
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        return _enum_converter(field)
    raise NotImplementedError(f"{message.full_name}.{field.name}: cpp type {cpp}")


# ---------------------------------------------------------------------------------------------------- messages

_MSG, _REPEATED_MSG, _SCALAR, _REPEATED_SCALAR, _ATTRIBUTES, _ANY, _OTHER_SPELLING = range(7)

#: (kind, attribute name, converter or sub-table, oneof name or None)
_Entry = tuple[int, str, Any, str | None]
_TABLES: dict[str, dict[str, _Entry]] = {}


def _is_repeated(f: FieldDescriptor) -> bool:
    """Whether ``f`` is repeated (``is_repeated`` from protobuf 6; ``label`` before, removed in 7)."""
    flag = getattr(f, "is_repeated", None)
    return bool(flag) if flag is not None else f.label == FieldDescriptor.LABEL_REPEATED


def _table(message: Descriptor) -> dict[str, _Entry]:
    """JSON key → how to set it, for one message type (built once, recursively; OTLP types are not recursive
    except through AnyValue, which has its own converter)."""
    cached = _TABLES.get(message.full_name)
    if cached is not None:
        return cached
    if message.full_name.startswith("google.protobuf.") or message.GetOptions().map_entry:
        raise NotImplementedError(f"{message.full_name}: well-known and map types are not supported")
    table: dict[str, _Entry] = {}
    _TABLES[message.full_name] = table
    for f in message.fields:
        oneof = f.containing_oneof.name if f.containing_oneof is not None else None
        repeated = _is_repeated(f)
        entry: _Entry
        if f.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            sub = f.message_type
            if sub.full_name == _ANY_VALUE and not repeated:
                entry = (_ANY, f.name, None, oneof)
            elif sub.full_name == _ANY_VALUE:
                entry = (_REPEATED_MSG, f.name, _ANY, oneof)
            elif sub.full_name == _KEY_VALUE and repeated:
                entry = (_ATTRIBUTES, f.name, None, oneof)
            else:
                entry = (_REPEATED_MSG if repeated else _MSG, f.name, _table(sub), oneof)
        else:
            convert = _scalar_converter(message, f)
            entry = (_REPEATED_SCALAR if repeated else _SCALAR, f.name, convert, oneof)
        table[f.json_name] = entry
        if f.name != f.json_name:
            table[f.name] = (_OTHER_SPELLING, f.name, None, oneof)
    return table


def _unknown(key: str, value: Any, depth: int, max_depth: int) -> None:
    """An unknown field (ignored, as ``ParseDict(ignore_unknown_fields=True)`` does): its subtree still gets the
    structural check; ``[name]`` keys are extension syntax, which ``ParseDict`` refuses even then."""
    if key[:1] == "[" or (not key.isascii() and _SURROGATE.search(key)):
        raise _GIVE_UP
    if isinstance(value, (dict, list)):
        try:
            check_tree(value, max_depth, depth + 1)
        except TreeProblem:
            raise _GIVE_UP from None


def _message(msg: Any, obj: dict[str, Any], table: dict[str, _Entry], depth: int, max_depth: int) -> None:
    """Set ``obj``'s fields on ``msg``; ``obj`` is at nesting ``depth``."""
    if depth >= max_depth:  # a container value would lie beyond the limit: the reference path says which
        raise _GIVE_UP
    oneofs: set[str] | None = None
    for key, value in obj.items():
        entry = table.get(key)
        if entry is None:
            _unknown(key, value, depth, max_depth)
            continue
        if value is None:  # ParseDict clears the field: it is not set yet (no field is spelled twice here)
            if entry[0] is _OTHER_SPELLING:
                raise _GIVE_UP
            continue
        kind, name, arg, oneof = entry
        if oneof is not None:
            if oneofs is None:
                oneofs = {oneof}
            elif oneof in oneofs:
                raise _GIVE_UP
            else:
                oneofs.add(oneof)
        if kind is _SCALAR:
            setattr(msg, name, arg(value))
        elif kind is _ATTRIBUTES:
            if type(value) is not list:
                raise _GIVE_UP
            _attributes(getattr(msg, name), value, depth + 1, max_depth)
        elif kind is _MSG:
            if type(value) is not dict:
                raise _GIVE_UP
            sub = getattr(msg, name)
            sub.SetInParent()
            _message(sub, value, arg, depth + 1, max_depth)
        elif kind is _REPEATED_MSG:
            if type(value) is not list:
                raise _GIVE_UP
            add = getattr(msg, name).add
            for item in value:
                if type(item) is not dict:
                    raise _GIVE_UP
                if arg is _ANY:
                    _any(add(), item, depth + 2, max_depth)
                else:
                    _message(add(), item, arg, depth + 2, max_depth)
        elif kind is _ANY:
            if type(value) is not dict:
                raise _GIVE_UP
            sub = getattr(msg, name)
            sub.SetInParent()
            _any(sub, value, depth + 1, max_depth)
        elif kind is _REPEATED_SCALAR:
            if type(value) is not list:
                raise _GIVE_UP
            getattr(msg, name).extend([arg(x) for x in value])
        else:  # _OTHER_SPELLING: ParseDict takes both spellings, the later overriding or merging; rare
            raise _GIVE_UP


def _attributes(rep: Any, items: list[Any], depth: int, max_depth: int) -> None:
    """A repeated ``KeyValue`` field (``items`` at nesting ``depth``): the hot path of every span and log record.
    The common element, ``{"key": str, "value": {"<kind>Value": …}}``, is set directly."""
    if depth + 2 > max_depth:  # the KeyValue objects and their values
        raise _GIVE_UP
    add = rep.add
    for item in items:
        if type(item) is not dict:
            raise _GIVE_UP
        if len(item) == 2:
            key = item.get("key")
            value = item.get("value")
            if type(key) is str and type(value) is dict:  # surrogates: as in _string
                if len(value) == 1:
                    ((kind, v),) = value.items()
                    if kind == "stringValue" and type(v) is str:
                        add(key=key).value.string_value = v
                        continue
                    if kind == "intValue" and (type(v) is int or (type(v) is str and _INT.fullmatch(v))):
                        add(key=key).value.int_value = int(v)
                        continue
                    if kind == "boolValue" and type(v) is bool:
                        add(key=key).value.bool_value = v
                        continue
                kv = add(key=key)
                kv.value.SetInParent()
                _any(kv.value, value, depth + 2, max_depth)
                continue
        _message(add(), item, _KEY_VALUE_TABLE, depth + 1, max_depth)


def _any(msg: Any, obj: dict[str, Any], depth: int, max_depth: int) -> None:
    """An ``AnyValue`` (``obj`` at nesting ``depth``)."""
    _message(msg, obj, _ANY_VALUE_TABLE, depth, max_depth)


def fill(msg: Message, tree: dict[str, Any], max_depth: int) -> bool:
    """Set the fields of an OTLP/JSON export request ``tree`` (a dict from ``json.loads``, at nesting level 1) on
    the empty export request message ``msg``; True when done, False when the reference path must decide (``msg``
    is then partly filled: clear it first). Ids are converted from hex. Never raises for any JSON value."""
    try:
        _message(msg, tree, _table(msg.DESCRIPTOR), 1, max_depth)
    except (_GiveUp, ValueError, TypeError, AttributeError, OverflowError, RecursionError):
        return False
    return True


def _build() -> tuple[dict[str, _Entry], dict[str, _Entry]]:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    return _table(KeyValue.DESCRIPTOR), _table(AnyValue.DESCRIPTOR)


_KEY_VALUE_TABLE, _ANY_VALUE_TABLE = _build()
