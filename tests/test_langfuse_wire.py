"""The byte-level Langfuse encoder (``relay.exporters.langfuse_encode`` on ``relay.otlp.wire``) against the upb-based
encoder it replaced (``tests/support/langfuse_reference.py``): for generated traces and observations with every
attribute value type, the bytes must be identical to upb's ``SerializeToString`` of the message the old code built,
and parse to an equal ``ExportTraceServiceRequest``; where the old code raised, the new one raises the same type.

Protobuf wire format: https://protobuf.dev/programming-guides/encoding/ .
"""

from __future__ import annotations

import enum
import math
import os
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from relay.exporters import langfuse_encode
from relay.model import Level, Observation, ObservationType, TraceInfo
from relay.otlp import wire
from relay.otlp.values import dict_to_attrs, py_to_any
from tests.support import langfuse_reference

FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),  # CI replays one fixed sequence of examples, as tests/test_fuzz_*
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Color(enum.IntEnum):
    RED = 1


# Keys that collide with the Langfuse attributes relay sets, or that relay drops when usage/cost details are set.
SPECIAL_KEYS = [
    "langfuse.trace.name",
    "langfuse.trace.tags",
    "langfuse.user.id",
    "langfuse.session.id",
    "langfuse.environment",
    "langfuse.trace.metadata.team",
    "langfuse.observation.type",
    "langfuse.observation.input",
    "langfuse.observation.metadata.a",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.cost",
    "llm.token_count.prompt",
    "llm.cost.total",
    "llm.cost.input",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "",
]

keys = st.one_of(st.sampled_from(SPECIAL_KEYS), st.text(max_size=12), st.text(min_size=120, max_size=140))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),  # beyond int64: a string
    st.sampled_from([0, -1, 1, 2**63 - 1, -(2**63), 2**63, True, False, 1.0, 0.0, -0.0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),  # non-ASCII included; Hypothesis leaves out lone surrogates
    st.text(min_size=60, max_size=200),  # around the cache limit and one-byte lengths
    st.sampled_from(["a", "é", "日本", "", "x" * 64, "x" * 65, "y" * 127, "y" * 128]),
    st.binary(max_size=20),
    st.sampled_from(list(ObservationType) + [Color.RED, Decimal("1.5")]),  # subclasses, other objects (JSON)
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
        st.frozensets(st.integers(0, 3), max_size=2),
    ),
    max_leaves=6,
)
attr_dicts = st.dictionaries(keys, values, max_size=8)
hex_ids = st.binary(min_size=8, max_size=8).filter(any).map(bytes.hex)
trace_hex = st.binary(min_size=16, max_size=16).filter(any).map(bytes.hex)
times = st.one_of(st.just(0), st.integers(min_value=1, max_value=2**63 - 1), st.sampled_from([1, 2**64 - 1]))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=4,
)


@st.composite
def observations(draw: Any, trace_id: str) -> Observation:
    return Observation(
        id=draw(hex_ids),
        trace_id=draw(st.sampled_from([trace_id, ""])) if trace_id else draw(trace_hex),
        name=draw(st.one_of(st.just(""), st.text(max_size=10), st.sampled_from(["chat m", "execute_tool Bash"]))),
        type=draw(st.sampled_from(list(ObservationType))),
        start_ns=draw(times),
        end_ns=draw(times),
        parent_id=draw(st.one_of(st.none(), st.just(""), hex_ids)),
        level=draw(st.sampled_from(list(Level))),
        status_message=draw(st.one_of(st.none(), st.text(max_size=10))),
        model=draw(st.one_of(st.none(), st.just(""), st.sampled_from(["claude-sonnet-4-5", "gpt-4o", 7]))),
        model_parameters=draw(st.one_of(st.none(), st.dictionaries(st.text(max_size=6), json_values, max_size=3))),
        usage_details=draw(
            st.one_of(
                st.none(),
                st.dictionaries(
                    st.sampled_from(["input", "output", "cache_read_input_tokens", "é"]),
                    st.one_of(st.none(), st.integers(0, 10**9), st.floats(0, 1e9)),
                    max_size=4,
                ),
            )
        ),
        cost_details=draw(
            st.one_of(
                st.none(),
                st.dictionaries(
                    st.sampled_from(["total", "input"]),
                    st.one_of(st.none(), st.floats(allow_nan=False), st.integers(0, 10)),
                    max_size=2,
                ),
            )
        ),
        completion_start_ns=draw(st.one_of(st.none(), st.integers(0, 2**62))),
        input=draw(st.one_of(st.none(), st.text(max_size=30), json_values)),
        output=draw(st.one_of(st.none(), st.text(max_size=300), json_values)),
        metadata=draw(st.dictionaries(st.text(max_size=6), st.one_of(st.none(), json_values), max_size=3)),
        attributes=draw(attr_dicts),
        events=draw(st.lists(st.tuples(st.text(max_size=6), times, attr_dicts), max_size=2)),
        status_error=draw(st.booleans()),
        scope=draw(st.one_of(st.none(), st.tuples(st.sampled_from(["", "agent", "é"]), st.sampled_from(["", "1.0"])))),
    )


@st.composite
def traces(draw: Any) -> tuple[TraceInfo, list[Observation]]:
    trace_id = draw(st.one_of(trace_hex, trace_hex, st.just("")))  # "": every observation brings its own
    trace = TraceInfo(
        trace_id=trace_id,
        name=draw(st.one_of(st.none(), st.text(max_size=10))),
        user_id=draw(st.one_of(st.none(), st.text(max_size=10))),
        session_id=draw(st.one_of(st.none(), st.text(max_size=10), st.just("s" * 200))),
        tags=draw(st.lists(st.one_of(st.text(max_size=6), st.integers(), st.just("dup")), max_size=4)),
        metadata=draw(st.dictionaries(st.text(max_size=6), st.one_of(st.none(), json_values), max_size=3)),
        environment=draw(st.one_of(st.none(), st.sampled_from(["production", "Prod EU", "langfuse", "x" * 50]))),
        release=draw(st.one_of(st.none(), st.text(max_size=6))),
        version=draw(st.one_of(st.none(), st.text(max_size=6))),
        resource=draw(
            st.dictionaries(
                st.one_of(st.just("service.name"), st.text(max_size=8)),
                st.one_of(st.none(), st.just(""), values),
                max_size=4,
            )
        ),
    )
    obs = draw(st.lists(observations(trace_id), max_size=5))
    if not trace_id and obs:  # one trace per ResourceSpans in practice; several is still valid input
        obs = [o for o in obs if o.trace_id == obs[0].trace_id] or obs[:1]
    return trace, obs


def _same_as_reference(items: list[tuple[TraceInfo, list[Observation]]]) -> None:
    try:
        expected = langfuse_reference.encode_request(items).SerializeToString()
    except Exception as exc:  # the new encoder must fail the same way
        with pytest.raises(type(exc)):
            langfuse_encode.encode_request(items)
        return
    got = langfuse_encode.encode_request(items)
    assert got == expected
    parsed = ExportTraceServiceRequest.FromString(got)
    assert parsed.SerializeToString() == got
    if "nan" not in str(parsed):  # NaN != NaN: messages holding one never compare equal
        assert parsed == ExportTraceServiceRequest.FromString(expected)


@FUZZ
@given(st.lists(traces(), min_size=1, max_size=3))
def test_encoder_matches_upb_reference(items):
    _same_as_reference(items)


@settings(FUZZ, max_examples=60)
@given(st.lists(traces(), min_size=1, max_size=2))
def test_encoder_matches_reference_with_tiny_caches(items):
    """Caches cleared every few entries: no stale or evicted entry changes the output."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(wire, "_ENTRIES_MAX", 3)
        mp.setattr(langfuse_encode, "_NAMES_MAX", 2)
        mp.setattr(langfuse_encode, "_KEYS_SEEN_MAX", 2)
        mp.setattr(langfuse_encode, "_PARAMETERS_MAX", 2)
        mp.setattr(langfuse_encode, "_RESOURCES_MAX", 1)
        _same_as_reference(items)


@settings(FUZZ, max_examples=50)
@given(traces())
def test_encode_spans_is_one_resource_spans(trace):
    """``encode_spans`` is the ``ResourceSpans`` of the old encoder, and ``encode_request``'s element for it."""
    t, obs = trace
    try:
        expected = langfuse_reference.encode_spans(t, obs).SerializeToString()
    except Exception as exc:  # the new encoder must fail the same way
        with pytest.raises(type(exc)):
            langfuse_encode.encode_spans(t, obs)
        return
    got = langfuse_encode.encode_spans(t, obs)
    assert got == expected
    assert ResourceSpans.FromString(got).SerializeToString() == got
    if obs:
        assert langfuse_encode.encode_request([(t, obs)]) == wire.field(wire.tag(1, 2), got)


@FUZZ
@given(st.dictionaries(keys, values, max_size=10))
def test_attributes_match_dict_to_attrs(d):
    """``wire.attributes`` is the encoding of ``dict_to_attrs`` (repeated ``KeyValue``, field 1 here), twice in a row
    (the second from the cache)."""
    msg = AnyValue().kvlist_value
    dict_to_attrs(d, msg.values)
    for _ in range(2):
        assert wire.attributes(d, wire.tag(1, 2)) == msg.SerializeToString()


@FUZZ
@given(values)
def test_any_value_matches_py_to_any(v):
    assert wire.any_value(v) == py_to_any(v).SerializeToString()
    kv = KeyValue(key="k")
    py_to_any(v, kv.value)
    assert wire.key_value("k", v) == kv.SerializeToString()


def test_float_cache_keeps_signed_zero_and_nan_apart():
    """±0.0 compare equal and NaN never does: the cache must not hand one's encoding to the other."""
    for v in (0.0, -0.0, 0.0, math.nan, -0.0, 1, True, 1.0):
        msg = AnyValue().kvlist_value
        dict_to_attrs({"k": v}, msg.values)
        assert wire.attributes({"k": v}, wire.tag(1, 2)) == msg.SerializeToString()


@pytest.mark.parametrize(
    "change",
    [
        {"start_ns": 2**64},
        {"start_ns": -5, "end_ns": 0},
        {"end_ns": 2**64},
        {"events": [("e", 2**64, {})]},
        {"id": "00" * 8},
        {"id": "xyz"},
        {"parent_id": "12"},
        {"trace_id": "3" * 32},
    ],
)
def test_invalid_observations_fail_like_upb(change):
    """Out-of-range fixed64 times and bad ids: ValueError from both encoders (nothing half-written is returned)."""
    fields = {"id": "1" * 16, "trace_id": "2" * 32, "name": "n", "type": ObservationType.SPAN, "start_ns": 1}
    obs = Observation(**{"end_ns": 2, **fields, **change})
    trace = TraceInfo(trace_id="2" * 32)
    with pytest.raises(ValueError):
        langfuse_reference.encode_request([(trace, [obs])])
    with pytest.raises(ValueError):
        langfuse_encode.encode_request([(trace, [obs])])


def test_lone_surrogate_fails_like_upb():
    obs = Observation(id="1" * 16, trace_id="2" * 32, name="n", type=ObservationType.SPAN, start_ns=1, end_ns=2)
    obs.attributes = {"k": "bad \ud800"}
    trace = TraceInfo(trace_id="2" * 32)
    with pytest.raises(UnicodeEncodeError):
        langfuse_reference.encode_request([(trace, [obs])])
    with pytest.raises(UnicodeEncodeError):
        langfuse_encode.encode_request([(trace, [obs])])


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16383, 16384, 2**21 - 1, 2**21, 2**63, 2**64 - 1])
def test_varint(n):
    from google.protobuf.internal.encoder import _VarintBytes

    assert wire.varint(n) == _VarintBytes(n)


@pytest.mark.parametrize("n", [-1, 2**64])
def test_fixed64_range(n):
    with pytest.raises(ValueError):
        wire.fixed64(n)
