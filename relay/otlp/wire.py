"""Protobuf wire encoding of OTLP's common types (``AnyValue``, ``KeyValue``) straight to bytes, for the exporter's
hot path: building upb messages field by field costs several times more than writing their encoding.

The bytes are exactly what upb's ``SerializeToString`` writes for the same message built with
``relay.otlp.values.py_to_any`` / ``dict_to_attrs`` (fields in field-number order, proto3 defaults omitted, oneof
members always written), so both parse to equal messages. Wire format: https://protobuf.dev/programming-guides/encoding/
; message and field numbers: opentelemetry-proto ``opentelemetry/proto/common/v1/common.proto``
(https://github.com/open-telemetry/opentelemetry-proto/blob/main/opentelemetry/proto/common/v1/common.proto).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "varint",
    "field",
    "fixed64",
    "tag",
    "any_value",
    "key_value",
    "string_attributes",
    "attribute_entries",
    "attributes",
]

_INT64_MIN, _INT64_END = -(2**63), 2**63
_U64 = 2**64 - 1
#: One-byte varints (0–127), the length of almost every field relay writes.
_V1 = [bytes((i,)) for i in range(128)]
_DOUBLE = struct.Struct("<d").pack
_FIXED64 = struct.Struct("<Q").pack
#: ``KeyValue`` key field (1, length-delimited) with its length, per key: attribute keys repeat on every span.
_KEYS: dict[str, bytes] = {}
_KEYS_MAX = 8192
#: Encoded ``KeyValue`` elements, per field key by ``(key, value, type(value))`` (see ``_miss``); each cleared
#: when full.
_ENTRIES: dict[bytes, dict[tuple[str, Any, type], bytes]] = {}
_UNCACHED = object()
_ENTRIES_MAX = 16384
_ENTRY_STR_MAX = 64

# AnyValue members (common.proto): string_value = 1, bool_value = 2, int_value = 3, double_value = 4,
# array_value = 5, kvlist_value = 6, bytes_value = 7; ArrayValue.values = 1, KeyValueList.values = 1;
# KeyValue.key = 1, KeyValue.value = 2.
_STRING, _TRUE, _FALSE, _INT, _DOUBLE_TAG = b"\x0a", b"\x10\x01", b"\x10\x00", b"\x18", b"\x21"
_ARRAY, _KVLIST, _BYTES, _VALUES, _VALUE = b"\x2a", b"\x32", b"\x3a", b"\x0a", b"\x12"
_DOUBLE_VALUE = _VALUE + b"\x09" + _DOUBLE_TAG  # KeyValue.value = AnyValue{double_value}, 9 bytes


def varint(n: int) -> bytes:
    """The base-128 varint of ``n`` (0 ≤ n < 2^64; negative int64 values must be passed as ``n & (2**64 - 1)``,
    which is how protobuf writes them: ten bytes)."""
    if n < 128:
        return _V1[n]
    if n < 16384:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 2097152:
        return bytes((n & 0x7F | 0x80, (n >> 7) & 0x7F | 0x80, n >> 14))
    out = bytearray()
    while n > 127:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    """The key of a field: ``(number << 3) | wire_type`` as a varint (wire types: 0 varint, 1 fixed64, 2
    length-delimited, 5 fixed32)."""
    return varint(number << 3 | wire_type)


def field(key: bytes, body: bytes) -> bytes:
    """A length-delimited field (string, bytes, embedded message): ``key`` (see ``tag``), the length, ``body``."""
    n = len(body)
    return key + (_V1[n] if n < 128 else varint(n)) + body


def fixed64(n: int) -> bytes:
    """``n`` as 8 little-endian bytes (``fixed64`` fields such as OTLP's ``*_time_unix_nano``); ``ValueError``
    outside 0 ≤ n < 2^64, as upb raises."""
    if not 0 <= n <= _U64:
        raise ValueError(f"value out of range for fixed64: {n}")
    return _FIXED64(n)


def _key(k: str) -> bytes:
    p = _KEYS.get(k)
    if p is None:
        b = k.encode()
        n = len(b)
        p = _VALUES + (_V1[n] if n < 128 else varint(n)) + b if n else b""  # proto3: an empty key is not written
        if len(_KEYS) < _KEYS_MAX:
            _KEYS[k] = p
    return p


def any_value(value: Any) -> bytes:
    """The encoded ``AnyValue`` of a Python value, as ``py_to_any`` builds it: bool, int (as a string outside
    int64), float, str, bytes, mappings as kvlists (keys via ``str``; a None value leaves its ``KeyValue`` without
    value), lists/tuples as arrays (None items as empty values), anything else as its JSON (``default=str``);
    None → empty. ``UnicodeEncodeError`` for strings with lone surrogates (as upb)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return _TRUE if value else _FALSE
    if isinstance(value, int):
        if _INT64_MIN <= value < _INT64_END:
            return _INT + varint(value & _U64)
        return field(_STRING, str(value).encode())
    if isinstance(value, float):
        return _DOUBLE_TAG + _DOUBLE(value)
    if isinstance(value, str):
        return field(_STRING, value.encode())
    if isinstance(value, (bytes, bytearray)):
        return field(_BYTES, bytes(value))
    if isinstance(value, Mapping):
        return field(_KVLIST, b"".join([field(_VALUES, key_value(str(k), v)) for k, v in value.items()]))
    if isinstance(value, (list, tuple)):
        return field(_ARRAY, b"".join([field(_VALUES, any_value(v)) for v in value]))
    return field(_STRING, json.dumps(value, default=str).encode())


def key_value(key: str, value: Any) -> bytes:
    """The encoded ``KeyValue`` of ``key`` and ``value`` (see ``any_value``; None → the key alone)."""
    if value is None:
        return _key(key)
    return _key(key) + field(_VALUE, any_value(value))


def _string_entry(key_tag: bytes, key: str, b: bytes) -> bytes:
    """``KeyValue{key, AnyValue{string_value: b}}`` as an element of ``key_tag`` (``b``: the UTF-8 value)."""
    k = _KEYS.get(key) or _key(key)
    n = len(b)
    vn = _V1[n] if n < 128 else varint(n)
    n += 1 + len(vn)  # the AnyValue
    an = _V1[n] if n < 128 else varint(n)
    n += len(k) + 1 + len(an)  # the KeyValue
    return b"".join((key_tag, _V1[n] if n < 128 else varint(n), k, _VALUE, an, _STRING, vn, b))


def _entry(key_tag: bytes, key: str, value: Any) -> bytes:
    t = type(value)
    if t is str:
        return _string_entry(key_tag, key, value.encode())
    if t is float:
        k = _key(key)
        return (
            key_tag + _V1[len(k) + 11] + k + _DOUBLE_VALUE + _DOUBLE(value)
            if len(k) < 117
            else field(key_tag, k + _DOUBLE_VALUE + _DOUBLE(value))
        )
    return field(key_tag, _key(key) + field(_VALUE, any_value(value)))


def string_attributes(items: Iterable[tuple[str, str]], key_tag: bytes) -> list[bytes]:
    """``attribute_entries`` for ``(key, value)`` pairs whose values are mostly ``str`` (short values are cached with
    the others; long ones, such as message contents, are encoded without hashing them)."""
    cache = _ENTRIES.get(key_tag)
    if cache is None:
        cache = _ENTRIES[key_tag] = {}
    out = []
    for k, v in items:
        if type(v) is not str:
            out += attribute_entries({k: v}, key_tag)
        elif len(v) > _ENTRY_STR_MAX:
            out.append(_string_entry(key_tag, k, v.encode()))
        elif (e := cache.get((k, v, str))) is not None:
            out.append(e)
        else:
            out.append(_miss(cache, key_tag, k, v))
    return out


def _miss(cache: dict[tuple[str, Any, type], bytes], key_tag: bytes, key: str, value: Any) -> bytes:
    """Encode one attribute and cache it when ``(key, value, type)`` determines the encoding: short exact strings
    and bytes, ints, bools, floats other than ±0.0 and NaN (equal to a float of other bits), lists of exact strings
    (looked up as tuples)."""
    if value is None:
        return b""
    e = _entry(key_tag, key, value)
    t = type(value)
    if (
        ((t is str or t is bytes) and len(value) <= _ENTRY_STR_MAX)
        or t is int
        or t is bool
        or (t is float and value and value == value)
    ):
        ck = (key, value, t)
    elif t is list and len(value) <= 8 and all(type(x) is str and len(x) <= _ENTRY_STR_MAX for x in value):
        ck = (key, tuple(value), list)
    else:
        return e
    if len(cache) >= _ENTRIES_MAX:
        cache.clear()
    cache[ck] = e
    return e


def attribute_entries(d: Mapping[str, Any], key_tag: bytes) -> list[bytes]:
    """``d``'s items as elements of the repeated ``KeyValue`` field ``key_tag``, one per item in ``d``'s order
    (``b""`` for a None value, which is skipped) — joined, the encoding of ``dict_to_attrs(d, msg.<field>)``.

    Entries are cached per field key by ``(key, value, type)`` (see ``_miss``): the same key and value recur on many
    spans (operation, provider, model, port, session), and cached entries are found without a Python-level loop."""
    cache = _ENTRIES.get(key_tag)
    if cache is None:
        cache = _ENTRIES[key_tag] = {}
    values: list[Any] = list(d.values())
    types = list(map(type, values))
    if list in types:  # lists of strings are cached as tuples
        i = -1
        for _ in range(types.count(list)):
            i = types.index(list, i + 1)
            values[i] = tuple(values[i])
    if dict in types:  # kvlists are never cached
        i = -1
        for _ in range(types.count(dict)):
            i = types.index(dict, i + 1)
            values[i] = _UNCACHED
    entries: list[bytes | None]
    try:
        entries = list(map(cache.get, zip(d, values, types, strict=True)))
    except TypeError:  # an unhashable value (set, list of lists…): encode every item
        entries = [None] * len(types)
    if None in entries:  # visit the misses only (list.index runs in C)
        items = list(d.items())
        i = -1
        for _ in range(entries.count(None)):
            i = entries.index(None, i + 1)
            entries[i] = _miss(cache, key_tag, *items[i])
    return entries  # type: ignore[return-value]  # no None left


def attributes(d: Mapping[str, Any], key_tag: bytes) -> bytes:
    """``d``'s items as the repeated ``KeyValue`` field ``key_tag`` in ``d``'s order, None values skipped — the
    encoding of ``dict_to_attrs(d, msg.<field>)`` (see ``attribute_entries``)."""
    return b"".join(attribute_entries(d, key_tag))
