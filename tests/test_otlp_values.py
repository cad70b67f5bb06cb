"""``relay.otlp.values.attrs_to_dict`` (the pipeline's hot path) against the plain ``any_to_py`` definition, over
every ``AnyValue`` kind (https://github.com/open-telemetry/opentelemetry-proto, ``common/v1/common.proto``)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from relay.otlp.values import any_to_py, attrs_to_dict, py_to_any

_scalars = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.binary(max_size=8),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8,
)


def _kv(key: str, value: object) -> KeyValue:
    kv = KeyValue(key=key)
    if value is not None:
        py_to_any(value, kv.value)
    return kv


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "gen_ai.x"]), _values), max_size=6))
def test_attrs_to_dict_is_any_to_py_per_key_later_keys_win(pairs):
    kvs = [_kv(k, v) for k, v in pairs]
    expected: dict = {}
    for kv in kvs:
        expected[kv.key] = any_to_py(kv.value)
    assert attrs_to_dict(kvs) == expected


def test_empty_string_and_unset_values_keep_their_meaning():
    kvs = [KeyValue(key="empty", value=AnyValue(string_value="")), KeyValue(key="unset")]
    assert attrs_to_dict(kvs) == {"empty": "", "unset": None}
