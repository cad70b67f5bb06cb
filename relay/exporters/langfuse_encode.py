"""Encode relay's observation model (``relay.model``) as OTLP trace protobuf shaped for Langfuse's OTLP endpoint.

Sources: Langfuse v4 reads trace-level fields per span, so they are copied onto **every** span (langfuse/langfuse
``worker/src/queues/otelIngestionQueue.ts``); attribute → Langfuse field mapping: Langfuse's OpenTelemetry docs
(https://langfuse.com/integrations/native/opentelemetry, attribute/property mapping) and langfuse/langfuse
``packages/shared/src/server/otel/OtelIngestionProcessor.ts``; explicit ``usage_details`` / ``cost_details`` JSON
so Langfuse neither re-interprets nor double-counts tokens
(https://langfuse.com/docs/observability/features/token-and-cost-tracking).

Units: times are Unix nanoseconds; ``cost_details`` values are USD; ``usage_details`` values are token counts.
Output is deterministic (sorted metadata keys, stable attribute order) so tests can compare encodings.

This is relay's hot path, so the request is written as protobuf bytes directly (``relay.otlp.wire``) rather than
built as upb messages: byte for byte what upb's ``SerializeToString`` gives for the message built field by field
(tests/test_langfuse_wire.py checks it against that encoder). The trace-level attributes are encoded once per trace;
encoded attributes, span names and model-parameter JSON are cached by value in bounded module-level dicts (cleared
when full; each lookup is one dict access, so concurrent callers see a value or recompute it).
"""

from __future__ import annotations

import functools
import json
import re
import struct
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from relay.model import Level, Observation, TraceInfo
from relay.otlp.wire import (
    attribute_entries,
    attributes,
    field,
    fixed64,
    string_attributes,
    tag,
    varint,
)

__all__ = [
    "SCOPE_NAME",
    "DEFAULT_SERVICE_NAME",
    "encode_spans",
    "encode_request",
    "trace_attributes",
    "observation_attributes",
    "normalize_environment",
    "valid_session_id",
    "iso_time",
    "relay_version",
]

SCOPE_NAME = "relay"
#: ``service.name`` put on the resource when the trace's resource has none (the OTel SDK default).
DEFAULT_SERVICE_NAME = "unknown_service"

_ENV_RE = re.compile(r"^[a-z0-9\-_]+$")
_ENV_MAX = 40
_SESSION_MAX = 199  # Langfuse drops session ids of 200+ US-ASCII chars (attribute mapping, session id)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Prefixes of token-count attributes Langfuse normalises into usage when no ``usage_details`` is given.
_TOKEN_PREFIXES = ("gen_ai.usage.", "llm.token_count.")
#: Cost attributes Langfuse reads when no ``cost_details`` is given (attribute mapping, cost).
_COST_KEYS = frozenset({"gen_ai.usage.cost", "llm.cost.total"})


@functools.cache
def relay_version() -> str:
    """relay's version for the instrumentation scope: ``relay.__version__``, else the installed distribution's
    version, else ``0+unknown`` (running from a source tree that is not installed); looked up once."""
    import relay

    v = getattr(relay, "__version__", None)
    if isinstance(v, str) and v:
        return v
    try:
        from importlib.metadata import version

        return version("relay")
    except Exception:  # PackageNotFoundError, or broken metadata
        return "0+unknown"


def normalize_environment(value: Any) -> str | None:
    """A Langfuse-valid environment name, or None to drop it (Langfuse's attribute mapping, environment).

    Langfuse requires lower case, ``^[a-z0-9-_]+$``, at most 40 characters and no ``langfuse`` prefix (it strips a
    leading ``langfuse-``/``langfuse_`` and otherwise falls back to ``default``). relay lower-cases, strips those
    prefixes, replaces each run of other characters by ``-``, trims ``-`` at the ends and truncates to 40; a value that
    is empty or still starts with ``langfuse`` afterwards is dropped. ``"Prod EU"`` → ``"prod-eu"``.
    """
    return _normalize_environment(value) if isinstance(value, str) else None


@functools.lru_cache(maxsize=256)  # a handful of environments, one lookup per trace
def _normalize_environment(value: str) -> str | None:
    env = value.strip().lower()
    while env.startswith(("langfuse-", "langfuse_")):
        env = env[len("langfuse-") :]
    env = re.sub(r"[^a-z0-9\-_]+", "-", env).strip("-")[:_ENV_MAX].strip("-")
    if not env or env.startswith("langfuse") or not _ENV_RE.match(env):
        return None
    return env


def valid_session_id(value: Any) -> str | None:
    """The session id when Langfuse will keep it (non-empty, US-ASCII, fewer than 200 characters), else None
    (Langfuse's attribute mapping, session id)."""
    if not isinstance(value, str) or not value or len(value) > _SESSION_MAX or not value.isascii():
        return None
    return value


def iso_time(ns: int) -> str:
    """Unix nanoseconds as ISO-8601 UTC with microseconds and ``Z``, e.g. ``2025-07-13T05:20:00.123456Z`` (the
    format Langfuse parses for ``langfuse.observation.completion_start_time``). Sub-µs is truncated."""
    return (_EPOCH + timedelta(microseconds=ns // 1000)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ``json.dumps(value, ensure_ascii=False, sort_keys=…, separators=(",", ":"), default=str)`` — the same C encoder
# ``json.dumps`` builds on every call (``JSONEncoder.iterencode``), built once; without the circular-reference check
# (values come from decoded OTLP/JSON, never circular; a cycle raises RecursionError instead of ValueError).
if c_make_encoder is not None:
    _JSON_C = c_make_encoder(None, str, encode_basestring, None, ":", ",", False, False, True)
    _JSON_SORTED_C = c_make_encoder(None, str, encode_basestring, None, ":", ",", True, False, True)

    def _json(value: Any, *, sort: bool = False) -> str:
        return "".join((_JSON_SORTED_C if sort else _JSON_C)(value, 0))

else:  # pragma: no cover - CPython always has the C accelerator

    def _json(value: Any, *, sort: bool = False) -> str:
        return json.dumps(value, ensure_ascii=False, sort_keys=sort, separators=(",", ":"), default=str)


#: Model parameters' JSON by (keys, key types, values, value types): agents send the same few settings.
_PARAMETERS: dict[tuple[tuple[Any, ...], ...], str] = {}
_PARAMETERS_MAX = 1024
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _scalar_key(d: dict[Any, Any]) -> tuple[tuple[Any, ...], ...] | None:
    """A cache key that determines ``d``'s encoding (keys, values and their types), or None when ``d`` holds a
    non-scalar (1 == 1.0 == True inside it would share a key) or ±0.0 (equal, encoded apart)."""
    vals = tuple(d.values())
    types = tuple(map(type, vals))
    if not _SCALARS.issuperset(types) or 0.0 in vals:
        return None
    return (tuple(d), tuple(map(type, d)), vals, types)


def _parameters_json(params: dict[str, Any]) -> str:
    if (key := _scalar_key(params)) is None:
        return _json(params, sort=True)
    if (j := _PARAMETERS.get(key)) is None:
        if len(_PARAMETERS) >= _PARAMETERS_MAX:
            _PARAMETERS.clear()
        j = _PARAMETERS[key] = _json(params, sort=True)
    return j


def _content(value: Any) -> str:
    """Input/output/metadata values: strings as-is, anything else as JSON."""
    return value if isinstance(value, str) else _json(value)


def _tags(tags: Iterable[Any]) -> list[str]:
    out: list[str] = []
    for t in tags:
        s = t if isinstance(t, str) else _json(t)
        if s and s not in out:
            out.append(s)
    return out


def trace_attributes(trace: TraceInfo) -> dict[str, Any]:
    """The trace-level Langfuse attributes put on every span (Langfuse v4 reads them per span): ``langfuse.trace.name``,
    ``langfuse.user.id``, ``langfuse.session.id``, ``langfuse.trace.tags`` (array of strings),
    ``langfuse.trace.metadata.<k>`` (sorted, string values), ``langfuse.environment`` (normalised),
    ``langfuse.release``, ``langfuse.version`` — each only when set and valid."""
    out: dict[str, Any] = {}
    if trace.name:
        out["langfuse.trace.name"] = trace.name
    if trace.user_id:
        out["langfuse.user.id"] = trace.user_id
    if session := valid_session_id(trace.session_id):
        out["langfuse.session.id"] = session
    if tags := _tags(trace.tags):
        out["langfuse.trace.tags"] = tags
    for k in sorted(trace.metadata):
        v = trace.metadata[k]
        if v is not None:
            out[f"langfuse.trace.metadata.{k}"] = _content(v)
    if env := normalize_environment(trace.environment):
        out["langfuse.environment"] = env
    if trace.release:
        out["langfuse.release"] = trace.release
    if trace.version:
        out["langfuse.version"] = trace.version
    return out


def observation_attributes(obs: Observation) -> dict[str, Any]:
    """The observation-level Langfuse attributes of one observation (attribute mapping, usage/cost): type, level,
    status message, model (also as ``gen_ai.request.model``/``gen_ai.response.model``), model parameters (JSON),
    ``usage_details`` (JSON object string of ints), ``cost_details`` (JSON object string of USD floats), completion
    start (ISO), input/output and ``langfuse.observation.metadata.<k>`` (sorted)."""
    out: dict[str, Any] = {_TYPE_KEY: str(obs.type), _LEVEL_KEY: str(obs.level)}  # first: see _attribute_entries
    if obs.status_message:
        out["langfuse.observation.status_message"] = obs.status_message
    if obs.model:
        out["langfuse.observation.model.name"] = obs.model
    if obs.model_parameters:
        out["langfuse.observation.model.parameters"] = _parameters_json(obs.model_parameters)
    if obs.usage_details is not None:
        usage = {k: int(v) for k, v in obs.usage_details.items() if v is not None}
        out["langfuse.observation.usage_details"] = _json(usage, sort=True)
    if obs.cost_details is not None:
        cost = {k: float(v) for k, v in obs.cost_details.items() if v is not None}
        out["langfuse.observation.cost_details"] = _json(cost, sort=True)
    if obs.completion_start_ns is not None:
        out["langfuse.observation.completion_start_time"] = iso_time(obs.completion_start_ns)
    if obs.input is not None:
        out["langfuse.observation.input"] = _content(obs.input)
    if obs.output is not None:
        out["langfuse.observation.output"] = _content(obs.output)
    for k in sorted(obs.metadata):
        v = obs.metadata[k]
        if v is not None:
            out[f"langfuse.observation.metadata.{k}"] = _content(v)
    return out


def _id(hex_value: str, size: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(hex_value)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != size or raw == bytes(size):
        # Langfuse rejects the whole request for one bad id (upstream otel/v1/traces handler): fail before sending.
        raise ValueError(f"invalid {what} {hex_value!r}: need {size * 2} hex characters, not all zero")
    return raw


# Field keys (opentelemetry-proto: collector/trace/v1/trace_service.proto, trace/v1/trace.proto,
# resource/v1/resource.proto, common/v1/common.proto).
_REQUEST_RESOURCE_SPANS = tag(1, 2)  # ExportTraceServiceRequest.resource_spans
_RS_RESOURCE, _RS_SCOPE_SPANS = tag(1, 2), tag(2, 2)  # ResourceSpans.resource, .scope_spans
_RESOURCE_ATTRIBUTES = tag(1, 2)  # Resource.attributes
_SS_SCOPE, _SS_SPANS = tag(1, 2), tag(2, 2)  # ScopeSpans.scope, .spans
_SCOPE_NAME, _SCOPE_VERSION = tag(1, 2), tag(2, 2)  # InstrumentationScope.name, .version
_SPAN_TRACE_ID, _SPAN_NAME = tag(1, 2), tag(5, 2)
_SPAN_SPAN_ID, _SPAN_PARENT_SPAN_ID = tag(2, 2) + varint(8), tag(4, 2) + varint(8)  # with the length of 8-byte ids
_SPAN_KIND_INTERNAL = tag(6, 0) + varint(1)  # Span.kind = SPAN_KIND_INTERNAL
_SPAN_START, _SPAN_END = 7 << 3 | 1, 8 << 3 | 1  # fixed64 Unix ns: both keys are one byte
_SPAN_TIMES = struct.Struct("<BQBQ").pack
_SPAN_ATTRIBUTES, _SPAN_EVENTS, _SPAN_STATUS = tag(9, 2), tag(11, 2), tag(15, 2)
_EVENT_TIME, _EVENT_NAME, _EVENT_ATTRIBUTES = tag(1, 1), tag(2, 2), tag(3, 2)  # Span.Event
_STATUS_MESSAGE, _STATUS_CODE_ERROR = tag(2, 2), tag(3, 0) + varint(2)  # Status.message, code = ERROR


#: Encoded ``Span.name`` and ``Span.kind`` fields by span name (names repeat: operation and model or tool).
_NAMES: dict[str, bytes] = {}
#: Encoded ``langfuse.observation.type`` and ``.level`` attributes by (type, level).
_HEADS: dict[tuple[str, str], bytes] = {}
#: Encoded ``gen_ai.request.model`` / ``gen_ai.response.model`` fill-ins by (model, its type, which are missing).
_MODELS: dict[tuple[Any, type, tuple[bool, bool]], bytes] = {}
_NAMES_MAX = 8192


class _TraceParts:
    """What every span of one trace shares, encoded once: the trace id field and the trace-level attributes."""

    __slots__ = ("trace_hex", "trace_id", "attrs", "entries", "blob")

    def __init__(self, trace: TraceInfo) -> None:
        self.trace_hex = trace.trace_id
        self.trace_id: bytes | None = None  # the encoded ``Span.trace_id`` field, on first use
        #: ``trace_attributes(trace)`` as encoded ``Span.attributes`` elements, by key.
        self.attrs = trace_attributes(trace)
        self.entries = dict(zip(self.attrs, attribute_entries(self.attrs, _SPAN_ATTRIBUTES), strict=True))
        self.blob = b"".join(self.entries.values())


#: Attribute keys seen on spans with usage or cost details, and those of them dropped when the observation has
#: ``usage_details`` (token counts), ``cost_details`` (costs), or both: set operations in C instead of prefix tests
#: per key. They only grow (a key enters the drop sets before ``_KEYS_SEEN``), up to ``_KEYS_SEEN_MAX`` keys; keys
#: beyond are tested one by one.
_KEYS_SEEN: set[str] = set()
_DROP_WITH_USAGE: set[str] = set()
_DROP_WITH_COST: set[str] = set()
_DROP_WITH_BOTH: set[str] = set()
_KEYS_SEEN_MAX = 16384


def _dropped(k: str, usage: bool, cost: bool) -> bool:
    """Whether the attribute ``k`` is left out because the observation states usage / cost details."""
    return (usage and k.startswith(_TOKEN_PREFIXES) and k not in _COST_KEYS) or (
        cost and (k in _COST_KEYS or k.startswith("llm.cost."))
    )


def _classify(keys: Iterable[str]) -> None:
    for k in keys:
        if len(_KEYS_SEEN) >= _KEYS_SEEN_MAX:
            return
        if _dropped(k, True, False):
            _DROP_WITH_USAGE.add(k)
            _DROP_WITH_BOTH.add(k)
        if _dropped(k, False, True):
            _DROP_WITH_COST.add(k)
            _DROP_WITH_BOTH.add(k)
        _KEYS_SEEN.add(k)


_MODEL_KEYS = ("gen_ai.request.model", "gen_ai.response.model")
_TYPE_KEY, _LEVEL_KEY = "langfuse.observation.type", "langfuse.observation.level"


def _attribute_entries(obs: Observation, tp: _TraceParts, out: list[bytes]) -> None:
    """Append the encoded attributes of the span for ``obs`` to ``out``: its extra ``attributes`` first (minus
    those Langfuse would use to re-derive usage/cost the explicit JSON already states), then the trace-level and
    the observation-level Langfuse attributes, which win (a key the extra attributes already have keeps its place
    and takes the Langfuse value, as ``dict.update`` would).

    - ``usage_details`` set → token attributes ``gen_ai.usage.*`` / ``llm.token_count.*`` are dropped (except the
      cost key ``gen_ai.usage.cost``, which is usage-independent and dropped only when ``cost_details`` is set);
    - ``cost_details`` set → ``gen_ai.usage.cost`` / ``llm.cost.total`` / ``llm.cost.*`` are dropped;
    - a model also fills ``gen_ai.request.model`` / ``gen_ai.response.model`` when the span has none (existing
      values are the agent's own and are kept);
    - user/session: the explicit ``langfuse.user.id`` / ``langfuse.session.id`` outrank raw ``user.id`` /
      ``session.id`` / ``gen_ai.conversation.id`` in Langfuse, so the raw keys are kept as context.
    """
    extra: dict[str, Any] = obs.attributes  # None values are skipped by ``attributes``
    usage = obs.usage_details is not None
    cost = obs.cost_details is not None
    if usage or cost:
        if not _KEYS_SEEN.issuperset(extra):
            _classify(extra)
        if _KEYS_SEEN.issuperset(extra):
            drop = _DROP_WITH_BOTH if usage and cost else _DROP_WITH_USAGE if usage else _DROP_WITH_COST
            if not drop.isdisjoint(extra):
                extra = {k: v for k, v in extra.items() if k not in drop}
        else:  # more distinct keys than _KEYS_SEEN holds
            extra = {k: v for k, v in extra.items() if not _dropped(k, usage, cost)}
    own = observation_attributes(obs)
    if tp.entries.keys().isdisjoint(extra) and own.keys().isdisjoint(extra):
        out += attribute_entries(extra, _SPAN_ATTRIBUTES)  # None values are encoded as b""
        if (model := obs.model) and (
            need := (extra.get(_MODEL_KEYS[0]) is None, extra.get(_MODEL_KEYS[1]) is None)
        ) != (False, False):
            if (e := _MODELS.get((model, type(model), need))) is None:
                if len(_MODELS) >= _NAMES_MAX:
                    _MODELS.clear()
                e = _MODELS[model, type(model), need] = attributes(
                    {k: model for k, n in zip(_MODEL_KEYS, need, strict=True) if n}, _SPAN_ATTRIBUTES
                )
            out.append(e)
        out.append(tp.blob)
        items = iter(own.items())  # type and level first, then strings only
        (_, obs_type), (_, level) = next(items), next(items)
        if (head := _HEADS.get((obs_type, level))) is None:
            if len(_HEADS) >= _NAMES_MAX:
                _HEADS.clear()
            head = _HEADS[obs_type, level] = attributes({_TYPE_KEY: obs_type, _LEVEL_KEY: level}, _SPAN_ATTRIBUTES)
        out.append(head)
        out += string_attributes(items, _SPAN_ATTRIBUTES)
        return
    # the span sets Langfuse keys itself: they keep their place and take relay's value (dict order)
    merged = {k: v for k, v in extra.items() if v is not None}
    if obs.model:
        for k in _MODEL_KEYS:
            merged.setdefault(k, obs.model)
    merged.update(tp.attrs)
    merged.update(own)
    out += attribute_entries(merged, _SPAN_ATTRIBUTES)


def _span(obs: Observation, tp: _TraceParts) -> bytes:
    """One observation as an encoded OTLP ``Span``, as an element of ``ScopeSpans.spans`` (see ``encode_spans``)."""
    trace_hex = obs.trace_id or tp.trace_hex
    if tp.trace_hex and trace_hex != tp.trace_hex:
        raise ValueError(f"observation {obs.id} belongs to trace {trace_hex}, not {tp.trace_hex}")
    trace_id = tp.trace_id if trace_hex == tp.trace_hex else None
    if trace_id is None:
        trace_id = field(_SPAN_TRACE_ID, _id(trace_hex, 16, "trace id"))
        if trace_hex == tp.trace_hex:
            tp.trace_id = trace_id
        # else the trace has no id: each observation brings its own
    parts = [trace_id, _SPAN_SPAN_ID + _id(obs.id, 8, "span id")]
    if obs.parent_id:
        parts.append(_SPAN_PARENT_SPAN_ID + _id(obs.parent_id, 8, "parent span id"))
    name = obs.name or str(obs.type)
    if (e := _NAMES.get(name)) is None:
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        e = _NAMES[name] = (field(_SPAN_NAME, name.encode()) if name else b"") + _SPAN_KIND_INTERNAL
    parts.append(e)
    if start := obs.start_ns or obs.end_ns:  # then end is set too
        end = obs.end_ns or start
        try:
            parts.append(_SPAN_TIMES(_SPAN_START, start, _SPAN_END, end))
        except struct.error:
            raise ValueError(f"span times out of range for fixed64: {start}, {end}") from None
    _attribute_entries(obs, tp, parts)
    for ev_name, time_ns, attrs in obs.events:
        ev = _EVENT_TIME + fixed64(time_ns) if time_ns else b""
        if ev_name:
            ev += field(_EVENT_NAME, ev_name.encode())
        parts.append(field(_SPAN_EVENTS, ev + attributes(attrs, _EVENT_ATTRIBUTES)))
    if obs.status_error or obs.level == Level.ERROR:
        message = field(_STATUS_MESSAGE, obs.status_message.encode()) if obs.status_message else b""
        parts.append(field(_SPAN_STATUS, message + _STATUS_CODE_ERROR))
    parts[0] = _SS_SPANS + varint(sum(map(len, parts))) + parts[0]
    return b"".join(parts)


def encode_spans(trace: TraceInfo, observations: list[Observation]) -> bytes:
    """One trace as an encoded OTLP ``ResourceSpans`` (protobuf bytes; parse with ``ResourceSpans.FromString``).

    - resource attributes from ``trace.resource`` (plus ``service.name`` = ``unknown_service`` when missing);
    - one ``ScopeSpans`` per instrumentation scope, in order of first use: the observation's original ``scope``
      (name, version), which Langfuse shows as ``metadata.scope``, or ``relay`` at relay's version for
      observations relay made;
    - one ``Span`` (kind INTERNAL) per observation, in the given order within its scope. Ids come from lowercase
      hex (``trace_id`` 32, ``id`` and ``parent_id`` 16 characters; ``ValueError`` when invalid or when an
      observation names another trace); ``start_ns``/``end_ns`` are Unix ns (a missing end takes the start);
      status is ERROR with ``status_message`` when ``status_error`` or level ERROR, else unset; events are
      ``(name, time_ns, attributes)``;
    - span attributes: the observation's own ``attributes``, then ``trace_attributes`` (encoded once per trace),
      then ``observation_attributes`` — see ``_attribute_entries`` for which own attributes are dropped and which
      win.

    The bytes equal upb's serialisation of the same message built field by field (``relay.otlp.wire``).
    """
    parts = _resource_spans(trace, observations)
    del parts[0]  # the ExportTraceServiceRequest.resource_spans key and length
    return b"".join(parts)


#: Encoded ``ResourceSpans.resource`` fields by ``_scalar_key`` of the resource: one per service and host.
_RESOURCES: dict[tuple[tuple[Any, ...], ...], bytes] = {}
_RESOURCES_MAX = 256


def _resource(attrs: dict[str, Any]) -> bytes:
    """The ``ResourceSpans.resource`` field: the trace's resource attributes, plus ``service.name`` =
    ``unknown_service`` when missing."""
    if (key := _scalar_key(attrs)) is not None and (e := _RESOURCES.get(key)) is not None:
        return e
    resource = dict(attrs)
    if not resource.get("service.name"):
        resource["service.name"] = DEFAULT_SERVICE_NAME
    e = field(_RS_RESOURCE, attributes(resource, _RESOURCE_ATTRIBUTES))
    if key is not None:
        if len(_RESOURCES) >= _RESOURCES_MAX:
            _RESOURCES.clear()
        _RESOURCES[key] = e
    return e


def _resource_spans(trace: TraceInfo, observations: list[Observation]) -> list[bytes]:
    """The parts of one ``ExportTraceServiceRequest.resource_spans`` element (key and length first), to be joined
    once: each level's length is the sum of its parts' lengths, so no level is copied into the next."""
    tp = _TraceParts(trace)
    scopes: dict[tuple[str, str], list[bytes]] = {}
    for obs in observations:
        key = obs.scope or (SCOPE_NAME, relay_version())
        spans = scopes.get(key)
        if spans is None:
            spans = scopes[key] = []
        spans.append(_span(obs, tp))
    parts = [b"", _resource(trace.resource)]
    for (name, version), spans in scopes.items():
        scope = field(
            _SS_SCOPE,
            (field(_SCOPE_NAME, name.encode()) if name else b"")
            + (field(_SCOPE_VERSION, version.encode()) if version else b""),
        )
        parts.append(_RS_SCOPE_SPANS + varint(len(scope) + sum(map(len, spans))))
        parts.append(scope)
        parts += spans
    parts[0] = _REQUEST_RESOURCE_SPANS + varint(sum(map(len, parts)))
    return parts


def encode_request(items: list[tuple[TraceInfo, list[Observation]]]) -> bytes:
    """A serialised ``ExportTraceServiceRequest`` (the protobuf body of ``POST /api/public/otel/v1/traces``) with
    one ``ResourceSpans`` per ``(trace, observations)`` item (see ``encode_spans``); items without observations
    are skipped (OTLP spec: senders should not create empty envelopes)."""
    parts: list[bytes] = []
    for trace, observations in items:
        if observations:
            parts += _resource_spans(trace, observations)
    return b"".join(parts)
