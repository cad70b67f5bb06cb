"""OTLP/JSON's fast path (``relay.otlp.jsontree.fill``) against the reference path (structural check, hex ids, the
protobuf runtime's ``json_format.ParseDict``): the same message for every request, or the same 400.

Requests are generated from the OTLP message descriptors themselves (every field of every message of the three
export requests, nested AnyValues), either clean — the shapes exporters send, which the fast path must take — or
with faults mixed in: values of the wrong JSON type, nulls, both spellings of a field, two members of a oneof,
integers out of range, quoted and non-finite floats, lone surrogates, ids that are not hex, unknown fields and
extension-looking keys, nesting beyond the limit.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.model import Signal
from relay.otlp import codec, jsontree
from relay.otlp.codec import MAX_JSON_DEPTH, REQUEST_TYPES, BadMessage, Format, parse_export
from tests.support.fixtures import load_scenario

EXAMPLES = int(os.environ.get("RELAY_FUZZ_EXAMPLES", 150))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_ID_FIELDS = {"trace_id": 16, "span_id": 8, "parent_span_id": 8}
_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _is_repeated(f: FieldDescriptor) -> bool:
    flag = getattr(f, "is_repeated", None)
    return bool(flag) if flag is not None else f.label == FieldDescriptor.LABEL_REPEATED


def _scalar(draw: Any, f: FieldDescriptor, faults: bool) -> Any:
    """A JSON value for one scalar field: what exporters send, or (``faults``) sometimes anything else."""
    if faults and draw(st.integers(0, 9)) == 0:
        return draw(_JUNK)
    cpp = f.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_STRING and f.type == FieldDescriptor.TYPE_BYTES:
        if f.name in _ID_FIELDS and f.containing_type.name in ("Span", "Link", "LogRecord", "Exemplar"):
            raw = draw(st.binary(min_size=_ID_FIELDS[f.name], max_size=_ID_FIELDS[f.name]))
            text = raw.hex().upper() if draw(st.booleans()) else raw.hex()
            if faults:
                text = draw(st.sampled_from([text, text[:-1], text[:2] + " " + text[2:], "zz" + text[2:], ""]))
            return text
        raw = draw(st.binary(max_size=12))
        text = base64.b64encode(raw).decode()
        if faults:
            text = draw(st.sampled_from([text, base64.urlsafe_b64encode(raw).decode().rstrip("="), "%%", "a"]))
        return text
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        alphabet = st.characters(codec="utf-8") if not faults else st.characters()  # faults: with surrogates
        text = draw(st.text(alphabet=alphabet, max_size=8))
        return text
    if cpp in _RANGES:
        lo, hi = _RANGES[cpp]
        n = draw(st.integers(lo - 3, hi + 3) if faults else st.integers(lo, hi))
        if faults:
            return draw(st.sampled_from([n, str(n), float(n) if abs(n) < 2**53 else n, f" {n}", f"+{n}", f"{n}.0"]))
        return str(n) if draw(st.booleans()) else n
    if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
        if faults:
            return draw(
                st.floats()
                | st.integers(-(2**1100), 2**1100)
                | st.sampled_from(["NaN", "Infinity", "-Infinity", "1.5", "nan", 10**400])
            )
        return draw(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**60), 2**60))
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return draw(st.booleans() | st.sampled_from(["true", 1])) if faults else draw(st.booleans())
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        names = [v.name for v in f.enum_type.values]
        numbers = [v.number for v in f.enum_type.values]
        if faults:
            return draw(st.sampled_from([*names, *numbers, "NOPE", 99, "1", 1.0, -1]))
        return draw(st.sampled_from(names) | st.sampled_from(numbers))
    raise AssertionError(f"unexpected field type {cpp}")


@st.composite
def message_json(draw: Any, desc: Descriptor, faults: bool, depth: int = 0) -> Any:
    """A JSON object for message type ``desc`` (AnyValue nesting limited by ``depth``)."""
    if faults and draw(st.integers(0, 30)) == 0:
        return draw(_JUNK)
    oneofs = {o.name: draw(st.sampled_from([None, *(f.name for f in o.fields)])) for o in desc.oneofs}
    obj: dict[str, Any] = {}
    for f in desc.fields:
        if f.containing_oneof is not None:
            chosen = oneofs[f.containing_oneof.name]
            if f.name != chosen and not (faults and draw(st.integers(0, 15)) == 0):
                continue
        elif not draw(st.integers(0, 2)):
            continue
        sub = f.message_type if f.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE else None
        if sub is not None and sub.name in ("AnyValue", "ArrayValue", "KeyValueList") and depth >= 3:
            continue
        if _is_repeated(f):
            n = draw(st.integers(0, 3))
            if sub is not None:
                value: Any = [draw(message_json(sub, faults, depth + 1)) for _ in range(n)]
            else:
                value = [_scalar(draw, f, faults) for _ in range(n)]
            if faults and value and draw(st.integers(0, 10)) == 0:
                value[draw(st.integers(0, len(value) - 1))] = None
        else:
            value = draw(message_json(sub, faults, depth + 1)) if sub is not None else _scalar(draw, f, faults)
        if draw(st.integers(0, 12)) == 0:
            value = None  # proto3 JSON: null is the default
        key = f.json_name
        if faults and f.name != f.json_name and draw(st.integers(0, 6)) == 0:
            key = f.name  # the proto field name, which ParseDict also takes
            if draw(st.booleans()):
                obj[f.json_name] = value  # … and both spellings
        obj[key] = value
    if draw(st.integers(0, 8)) == 0:  # a field this protobuf version does not know
        unknown = draw(st.sampled_from(["entityRefs", "x-extra", "[ext.name]", "\ud800", "é"] if faults else ["x"]))
        obj[unknown] = draw(_JUNK) if faults else draw(st.integers() | st.text(max_size=3))
    return obj


def _request(signal: Signal, faults: bool) -> st.SearchStrategy[Any]:
    return message_json(REQUEST_TYPES[signal].DESCRIPTOR, faults)


def _outcome(parse: Any, tree: Any, signal: Signal) -> tuple:
    msg = REQUEST_TYPES[signal]()
    try:
        parse(tree, msg)
    except BadMessage as e:
        return ("400", e.message, e.field)
    return ("ok", msg.SerializeToString(deterministic=True))


def _reference(tree: Any, signal: Signal) -> tuple:
    return _outcome(lambda t, m: codec._parse_json_tree(t, m, signal), json.loads(json.dumps(tree)), signal)


def _relay(tree: Any, signal: Signal) -> tuple:
    return _outcome(lambda t, m: codec._parse_json(json.dumps(t).encode(), m, signal), tree, signal)


SIGNALS = [Signal.TRACES, Signal.LOGS, Signal.METRICS]


@pytest.mark.parametrize("signal", SIGNALS)
@FUZZ
@given(data=st.data())
def test_clean_requests_take_the_fast_path_and_decode_as_the_reference(signal, data):
    tree = data.draw(_request(signal, faults=False))
    msg = REQUEST_TYPES[signal]()
    assert jsontree.fill(msg, json.loads(json.dumps(tree)), MAX_JSON_DEPTH), tree
    assert ("ok", msg.SerializeToString(deterministic=True)) == _reference(tree, signal)


@pytest.mark.parametrize("signal", SIGNALS)
@FUZZ
@given(data=st.data())
def test_any_request_decodes_or_is_refused_as_by_the_reference(signal, data):
    tree = data.draw(_request(signal, faults=True))
    if not isinstance(tree, dict):
        tree = {"resourceSpans": tree}
    assert _relay(tree, signal) == _reference(tree, signal)


SPAN = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "s"}


def _traces(**span: Any) -> dict:
    return {"resourceSpans": [{"scopeSpans": [{"spans": [{**SPAN, **span}]}]}]}


def _attr(value: Any) -> dict:
    return _traces(attributes=[{"key": "k", "value": value}])


def _nested(levels: int) -> dict:
    value: dict = {"stringValue": "deep"}
    for _ in range(levels):
        value = {"arrayValue": {"values": [value]}}
    return _attr(value)


CASES = [
    ("hex id with a space", _traces(spanId="b7ad6b71 69203331")),
    ("camel and snake spelling", {**_traces(), "resource_spans": []}),
    ("two oneof members", _attr({"stringValue": "a", "intValue": "1"})),
    ("oneof member and null", _attr({"stringValue": "a", "intValue": None})),
    ("int64 out of range", _attr({"intValue": str(2**63)})),
    ("quoted negative int", _attr({"intValue": "-5"})),
    ("int as float", _traces(startTimeUnixNano=1.0)),
    ("NaN literal", _attr({"doubleValue": float("nan")})),
    ("quoted NaN", _attr({"doubleValue": "NaN"})),
    ("huge int for a double", _attr({"doubleValue": 10**400})),
    ("lone surrogate value", _attr({"stringValue": "\ud800"})),
    ("lone surrogate attribute key", _traces(attributes=[{"key": "\udfff", "value": {"intValue": 1}}])),
    ("lone surrogate span name", _traces(name="a\ud800")),
    ("lone surrogate key", {**_traces(), "\udc00": 1}),
    ("extension key", {**_traces(), "[ext]": 1}),
    ("enum by unknown name", _traces(kind="SPAN_KIND_NOPE")),
    ("enum as a quoted number", _traces(kind="2")),
    ("null in a list", {"resourceSpans": [None]}),
    ("string where a message belongs", {"resourceSpans": [{"resource": "x"}]}),
    ("nested to the limit", _nested((MAX_JSON_DEPTH - 12) // 3)),
    ("nested beyond the limit", _nested(MAX_JSON_DEPTH // 3)),
    ("deep unknown field", {**_traces(), "x": _nested(MAX_JSON_DEPTH // 3)}),
    ("bytes value, url-safe base64 without padding", _attr({"bytesValue": "-_8"})),
]


@pytest.mark.parametrize("tree", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_edge_cases_match_the_reference(tree):
    assert _relay(tree, Signal.TRACES) == _reference(tree, Signal.TRACES)


def test_claude_code_json_capture_takes_the_fast_path():
    """Claude Code's OTLP/JSON export (``OTEL_EXPORTER_OTLP_PROTOCOL=http/json``), replayed byte for byte: every
    request converts on the fast path, to the reference's message."""
    reqs = load_scenario("json-tools")
    assert reqs
    for r in reqs:
        signal = Signal(r.signal)
        body = gzip.decompress(r.body) if r.content_encoding == "gzip" else r.body
        tree = json.loads(body)
        msg = REQUEST_TYPES[signal]()
        assert jsontree.fill(msg, tree, MAX_JSON_DEPTH), r.path
        assert ("ok", msg.SerializeToString(deterministic=True)) == _reference(tree, signal)
        assert parse_export(signal, body, Format.JSON).items > 0
