"""Secret redaction (relay.redaction): the built-in catalogue against a corpus of realistic secrets in every
placement of an OTLP request, no false positives on the Claude Code captures, user patterns and allowlist, and
end to end through the wire: what relay stores and what reaches Langfuse carry no secret."""

from __future__ import annotations

import asyncio
import json
import os

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from relay.model import Signal
from relay.otlp.codec import Format, decompress, parse_export
from relay.redaction import REDACTED, Redactor, load_catalogue
from tests.fakes.langfuse import FakeLangfuse
from tests.secret_corpus import CORPUS
from tests.support.fixtures import load_scenario
from tests.support.inproc import running_relay, settle
from tests.support.relay_proc import parse_metric

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "claude-code")
TRACE_ID = bytes(range(1, 17))
SPAN_ID = bytes(range(1, 9))


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue()


def _kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def _s(text: str) -> AnyValue:
    return AnyValue(string_value=text)


def _trace_request(text: str, placement: str) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", _s("claude-code")))
    ss = rs.scope_spans.add()
    sp = ss.spans.add(
        trace_id=TRACE_ID, span_id=SPAN_ID, name="execute_tool Bash", start_time_unix_nano=1, end_time_unix_nano=2
    )
    sp.attributes.append(_kv("gen_ai.request.model", _s("claude-sonnet-4-5-20250929")))
    if placement == "resource":
        rs.resource.attributes.append(_kv("process.command_args", _s(text)))
    elif placement == "scope":
        ss.scope.attributes.append(_kv("scope.note", _s(text)))
    elif placement == "span":
        sp.attributes.append(_kv("gen_ai.tool.call.arguments", _s(text)))
    elif placement == "span-json":
        sp.attributes.append(_kv("tool_parameters", _s(json.dumps({"command": text, "timeout": 120000}))))
    elif placement == "array":
        v = AnyValue()
        v.array_value.values.extend([_s("first"), _s(text)])
        sp.attributes.append(_kv("process.command_args", v))
    elif placement == "kvlist":
        v = AnyValue()
        v.kvlist_value.values.append(_kv("env", _s(text)))
        sp.attributes.append(_kv("tool.input", v))
    elif placement == "event":
        sp.events.add(name="gen_ai.content.prompt", time_unix_nano=1).attributes.append(_kv("gen_ai.prompt", _s(text)))
    elif placement == "link":
        sp.links.add(trace_id=TRACE_ID, span_id=SPAN_ID).attributes.append(_kv("note", _s(text)))
    elif placement == "status":
        sp.status.code = 2
        sp.status.message = f"command failed: {text}"
    else:
        raise AssertionError(placement)
    return req


def _log_request(text: str, placement: str) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rec = rl.scope_logs.add().log_records.add(time_unix_nano=1, trace_id=TRACE_ID, span_id=SPAN_ID)
    rec.attributes.append(_kv("event.name", _s("claude_code.user_prompt")))
    if placement == "log-attribute":
        rec.attributes.append(_kv("prompt", _s(text)))
    elif placement == "log-body":
        rec.body.string_value = text
    elif placement == "log-body-kvlist":
        rec.body.kvlist_value.values.append(_kv("message", _s(text)))
    else:
        raise AssertionError(placement)
    return req


TRACE_PLACEMENTS = ["resource", "scope", "span", "span-json", "array", "kvlist", "event", "link", "status"]
LOG_PLACEMENTS = ["log-attribute", "log-body", "log-body-kvlist"]


def _leaks(payload: bytes, secret: str) -> bool:
    """True when any part of ``secret`` longer than 7 characters survived (JSON-escaped too)."""
    escaped = json.dumps(secret)[1:-1]
    return any(s.encode() in payload for s in {secret, escaped})


def test_corpus_is_big_and_varied():
    assert len(CORPUS) >= 40
    assert len({s.kind.split("-")[0] for s in CORPUS}) >= 15


def test_corpus_redacted_in_every_placement(catalogue):
    hits: dict[str, int] = {}
    red = Redactor(catalogue, on_hit=lambda rule, n: hits.__setitem__(rule, hits.get(rule, 0) + n))
    total = leaked = 0
    missed = []
    for sample in CORPUS:
        for placement in TRACE_PLACEMENTS + LOG_PLACEMENTS:
            if placement in LOG_PLACEMENTS:
                msg, signal = _log_request(sample.text, placement), Signal.LOGS
            else:
                msg, signal = _trace_request(sample.text, placement), Signal.TRACES
            changed = red.redact_message(signal, msg)
            payload = msg.SerializeToString()
            total += 1
            if _leaks(payload, sample.secret):
                leaked += 1
                missed.append((sample.kind, placement))
            else:
                assert changed >= 1, (sample.kind, placement)  # a redaction is reported as a changed string
            # structure intact: ids, model name, the JSON of tool parameters
            parsed = type(msg).FromString(payload)
            if signal is Signal.TRACES:
                sp = parsed.resource_spans[0].scope_spans[0].spans[0]
                assert sp.trace_id == TRACE_ID and sp.span_id == SPAN_ID
                assert sp.attributes[0].value.string_value == "claude-sonnet-4-5-20250929"
                if placement == "span-json":
                    args = json.loads(sp.attributes[1].value.string_value)
                    assert args["timeout"] == 120000
                    if not _leaks(payload, sample.secret):
                        assert REDACTED in args["command"]
    assert leaked / total <= 0.01, f"{leaked} of {total} leaked: {missed}"
    assert sum(hits.values()) >= total * 0.99
    assert len(hits) >= 15  # many distinct rules fired, not one catch-all


def test_redaction_keeps_the_text_around_the_secret(catalogue):
    red = Redactor(catalogue)
    assert (
        red.redact("DATABASE_URL=postgres://app:s3cr3t-Pa55@db:5432/app")
        == "DATABASE_URL=postgres://app:[REDACTED]@db:5432/app"
    )
    text = '{"username": "svc", "password": "pa55-w0rd!x", "max_tokens": 8192, "token_count": 12}'
    out = red.redact(text)
    assert json.loads(out) == {"username": "svc", "password": REDACTED, "max_tokens": 8192, "token_count": 12}
    for clean in (
        "claude-sonnet-4-5-20250929",
        "a" * 64,
        "password: ${env:DB_PASSWORD}",
        "max_tokens: 8192",
        "the token: null",
        "Basic understanding of the code",
        "session 3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6f",
    ):
        assert red.redact(clean) == clean


@pytest.mark.parametrize(
    "value",
    [
        "msg_01XFDUDYJgAACzvnptvVoYEL",
        "toolu_01A09q90qw90lq917835lq9",
        "req_011CSHoEeqs5C35K2UUqkQ8a",
        "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881",
        "3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6f",
        "claude-opus-4-1-20250805",
        "claude-3-5-haiku-20241022",
        "us.anthropic.claude-sonnet-4-20250514-v1:0",
        "sha256:a1fce4363854ff888cff4b8e7875d600c2682390412a8cf79b37d0b11148b0fa",
        "8f14e45fceea167a5a36dedd4bea2543",
        "ZGVhZGJlZWZkZWFkYmVlZg==",
        "claude_code.token.usage",
        "input_tokens=1234 output_tokens=56",
        '{"file_path": "/home/u/src/auth/token_store.py", "limit": 200}',
        "git commit -m 'fix token refresh'",
    ],
)
def test_ids_model_names_and_hashes_are_not_secrets(catalogue, value):
    assert Redactor(catalogue).redact(value) == value


_JSON_KEYS = st.sampled_from(
    [
        "command",
        "password",
        "token",
        "api_key",
        "secret",
        "url",
        "path",
        "note",
        "Authorization",
        "headers",
        "env",
        "content",
        "max_tokens",
    ]
)
_LEAVES = st.one_of(
    st.sampled_from([s.text for s in CORPUS]),
    st.text(max_size=40),
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.none(),
)
_JSON = st.recursive(
    _LEAVES,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(_JSON_KEYS, kids, max_size=4)),
    max_leaves=12,
)
_REDACTOR: list[Redactor] = []


def _shape(x):
    """The JSON value with every string replaced by a marker: what redaction must preserve."""
    if isinstance(x, dict):
        return {k: _shape(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_shape(v) for v in x]
    return "s" if isinstance(x, str) else x


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_JSON, indent=st.sampled_from([None, 2]))
def test_redaction_never_breaks_json(doc, indent):
    """Tool parameters and messages arrive as JSON text inside attributes: whatever the secrets in them, the
    redacted text is still JSON of the same shape (keys, numbers, booleans, nesting), and no secret of the corpus
    that was embedded survives."""
    if not _REDACTOR:
        _REDACTOR.append(Redactor(load_catalogue()))
    text = json.dumps(doc, indent=indent)
    out = _REDACTOR[0].redact(text)
    parsed = json.loads(out)
    assert _shape(parsed) == _shape(doc)
    for sample in CORPUS:
        if sample.text in json.dumps(doc):
            assert not _leaks(out.encode(), sample.secret), sample.kind


def test_user_patterns_and_allowlist(catalogue):
    hits = []
    red = Redactor(
        catalogue,
        patterns=[r"ACME-\d{6}"],
        allowlist=["ghp_" + "0" * 36],
        on_hit=lambda rule, n: hits.append((rule, n)),
    )
    assert red.redact("ticket ACME-123456 opened") == f"ticket {REDACTED} opened"
    allowed = "ghp_" + "0" * 36
    assert red.redact(f"example token {allowed}") == f"example token {allowed}"
    assert ("custom-1", 1) in hits


def _fixture_requests():
    for scenario in sorted(os.listdir(FIXTURES)):
        if os.path.isdir(os.path.join(FIXTURES, scenario)):
            yield from load_scenario(scenario)


def test_no_false_positives_on_claude_code_captures(catalogue):
    hits: dict[str, int] = {}
    red = Redactor(catalogue, on_hit=lambda rule, n: hits.__setitem__(rule, hits.get(rule, 0) + n))
    n = 0
    for r in _fixture_requests():
        raw = decompress(r.body, r.content_encoding, 1 << 30)
        fmt = Format.JSON if "json" in r.content_type else Format.PROTOBUF
        req = parse_export(Signal(r.signal), raw, fmt)
        before = req.message.SerializeToString()
        assert red.redact_message(Signal(r.signal), req.message) == 0
        assert req.message.SerializeToString() == before
        n += 1
    assert n > 50 and hits == {}


@pytest.mark.timeout(60)
async def test_secrets_never_reach_the_spool_or_langfuse(tmp_path):
    """Through the wire: an OTLP/HTTP traces request and a logs request full of secrets; relay's database file and
    the spans at the fake Langfuse contain none of them, ids survive and the counter names the rules."""
    samples = CORPUS[:: max(1, len(CORPUS) // 20)]
    traces = ExportTraceServiceRequest()
    rs = traces.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", _s("my-agent")))
    ss = rs.scope_spans.add()
    root = ss.spans.add(
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        name="invoke_agent coder",
        start_time_unix_nano=10**18,
        end_time_unix_nano=10**18 + 10**9,
    )
    root.attributes.append(_kv("gen_ai.operation.name", _s("invoke_agent")))
    for i, sample in enumerate(samples):
        sp = ss.spans.add(
            trace_id=TRACE_ID,
            span_id=bytes([9, 9, 9, 9, 9, 9, 9, i + 1]),
            parent_span_id=SPAN_ID,
            name="execute_tool Bash",
            start_time_unix_nano=10**18 + i,
            end_time_unix_nano=10**18 + i + 1000,
        )
        sp.attributes.extend(
            [
                _kv("gen_ai.operation.name", _s("execute_tool")),
                _kv("gen_ai.tool.name", _s("Bash")),
                _kv("gen_ai.tool.call.arguments", _s(json.dumps({"command": sample.text}))),
            ]
        )
        sp.status.code = 2
        sp.status.message = sample.text
    logs = _log_request(samples[0].text, "log-body")
    data = tmp_path / "data"
    async with FakeLangfuse() as lf:
        async with running_relay(data, lf.base_url) as relay:
            url = f"http://127.0.0.1:{relay.http.port}"
            async with aiohttp.ClientSession() as s:
                for path, msg in (("/v1/traces", traces), ("/v1/logs", logs)):
                    async with s.post(
                        url + path, data=msg.SerializeToString(), headers={"Content-Type": "application/x-protobuf"}
                    ) as r:
                        assert r.status == 200
            await lf.wait_for_spans(len(samples) + 1, timeout=15)
            await settle(relay)
            metrics = relay.telemetry.render().decode()
            assert parse_metric(metrics, "relay_redactions_total") >= len(samples) * 2
        spans = lf.spans()
        assert {s.span_id for s in spans} >= {SPAN_ID.hex()}
        received = json.dumps([s.__dict__ for s in spans], default=str).encode()
    stored = b"".join(p.read_bytes() for p in data.iterdir() if p.is_file())
    for sample in samples:
        assert not _leaks(stored, sample.secret), sample.kind
        assert not _leaks(received, sample.secret), sample.kind
    assert REDACTED.encode() in received


def _spans_request(n: int, secret_every: int) -> ExportTraceServiceRequest:
    """``n`` spans in one scope; every ``secret_every``-th has an AWS key in an attribute."""
    req = ExportTraceServiceRequest()
    scope = req.resource_spans.add().scope_spans.add()
    for i in range(n):
        sp = scope.spans.add(name=f"s{i}", trace_id=os.urandom(16), span_id=os.urandom(8))
        text = f"export AWS_ACCESS_KEY_ID=AKIA{i:04d}QWERTYUIOPAS run {i}" if i % secret_every == 0 else f"step {i} ok"
        sp.attributes.append(_kv("gen_ai.prompt", _s(text)))
    return req


def test_redact_steps_yield_between_chunks_and_end_with_the_count(catalogue):
    red = Redactor(catalogue)
    msg, copy = _spans_request(130, 10), _spans_request(1, 1)
    copy.CopyFrom(msg)
    steps = list(red.redact_steps(Signal.TRACES, msg, every=64))
    assert steps == [None, None, 13]  # after spans 64 and 128 (more follow), then the total
    assert red.redact_message(Signal.TRACES, copy) == 13 and copy == msg
    assert b"AKIA" not in msg.SerializeToString()
    assert list(red.redact_steps(Signal.TRACES, _spans_request(64, 100), every=64)) == [1]  # one chunk: no pause
    logs = _log_request("nothing to see here", "log-body")
    assert list(red.redact_steps(Signal.LOGS, logs, every=1)) == [0]


async def test_a_large_request_does_not_hold_back_a_small_one(catalogue):
    """The receiver redacts in steps: a small request that arrives while a large one is being redacted is stored
    first, and both are stored redacted."""
    from relay.otlp.receiver import IngestGate
    from relay.redaction import STEP_ITEMS
    from relay.telemetry import Telemetry
    from tests.support.otlp_helpers import MemorySink

    sink = MemorySink()
    gate = IngestGate(sink, Telemetry(), "http", Redactor(catalogue))
    big = _spans_request(4 * STEP_ITEMS, 50).SerializeToString()
    small = _spans_request(3, 1).SerializeToString()
    results = await asyncio.gather(
        gate.submit("default", big, parse_export(Signal.TRACES, big, Format.PROTOBUF)),
        gate.submit("default", small, parse_export(Signal.TRACES, small, Format.PROTOBUF)),
    )
    assert [r.status for r in results] == ["stored", "stored"]
    assert [r.items for r in sink.stored] == [3, 4 * STEP_ITEMS]
    assert all(b"AKIA" not in r.payload for r in sink.stored)
