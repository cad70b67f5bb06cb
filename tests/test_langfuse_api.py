"""relay as a drop-in Langfuse host: the REAL Langfuse Python SDK (``langfuse`` from PyPI) with its base URL at relay,
and the public API on the wire (auth, durable scores in both shapes, legacy ingestion, proxying, crash safety)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import time
import uuid

import aiohttp
import pytest

from tests.fakes.langfuse import FakeLangfuse
from tests.support.inproc import running_relay, settle
from tests.support.relay_proc import RelayProcess

PK, SK = "pk-lf-test", "sk-lf-test"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise TimeoutError("condition not met")


async def test_the_langfuse_sdk_works_against_relay(tmp_path):
    from langfuse import Langfuse

    async with FakeLangfuse() as lf:
        lf.score_batches = False  # a v4.16 server: relay turns the SDK's batches into single posts
        lf.rest.add_prompt("project-test", "greeting", "Hello {{name}}", version=3)
        lf.rest.add_dataset("project-test", "golden", "golden answers")
        async with running_relay(tmp_path / "data", lf.base_url) as relay:
            base = f"http://127.0.0.1:{relay.http.port}"
            trace_id = uuid.uuid4().hex

            def use_sdk():
                client = Langfuse(public_key=PK, secret_key=SK, base_url=base, flush_interval=0.1)
                assert client.auth_check() is True
                client.create_score(
                    name="thumbs", value=0, trace_id=trace_id, data_type="BOOLEAN", comment="user clicked thumbs-down"
                )
                client.create_score(name="helpfulness", value=0.75, trace_id=trace_id)
                prompt = client.get_prompt("greeting", cache_ttl_seconds=0)
                dataset = client.api.datasets.get("golden")
                with client.start_as_current_observation(
                    name="answer",
                    as_type="generation",
                    model="claude-sonnet-5",
                    usage_details={"input": 10, "output": 5},
                ):
                    pass
                client.flush()
                client.shutdown()
                bad = Langfuse(public_key="pk-lf-other", secret_key="sk-wrong", base_url=base)
                try:
                    denied = bad.auth_check()
                except Exception as e:  # the SDK raises its UnauthorizedError on 401
                    denied = type(e).__name__
                bad.shutdown()
                return prompt, dataset, denied

            prompt, dataset, denied = await asyncio.to_thread(use_sdk)
            assert prompt.prompt == "Hello {{name}}" and prompt.version == 3
            assert prompt.compile(name="Ada") == "Hello Ada"
            assert dataset.name == "golden"
            assert denied in (False, "UnauthorizedError")
            await settle(relay)
            app_scores = lambda: [s for s in lf.scores() if s["traceId"] == trace_id]  # noqa: E731
            scores = await wait_for(lambda: len(app_scores()) >= 2 and app_scores())
            await asyncio.sleep(0.3)
            scores = app_scores()
            ledger = await relay.spool.db.run(
                lambda c: c.execute(
                    "SELECT name, value, source, trace_id FROM ledger_scores WHERE source='api' ORDER BY name"
                ).fetchall()
            )
        by_name = {s["name"]: s for s in scores}
        assert len(scores) == 2  # each once
        assert by_name["thumbs"]["value"] == 0 and by_name["thumbs"]["dataType"] == "BOOLEAN"
        assert by_name["thumbs"]["traceId"] == trace_id and by_name["thumbs"]["comment"] == "user clicked thumbs-down"
        assert by_name["helpfulness"]["value"] == 0.75
        assert ledger == [("helpfulness", 0.75, "api", trace_id), ("thumbs", 0.0, "api", trace_id)]
        [gen] = lf.view().generations()  # tracing through relay still works
        assert gen.name == "answer"
        # the SDK's own requests reached Langfuse with the tenant's keys, the bad key never did
        proxied = [r for r in lf.requests if r.path in ("/api/public/projects", "/api/public/v2/prompts/greeting")]
        assert proxied and all(r.public_key == PK and r.status == 200 for r in proxied)


async def test_scores_both_shapes_auth_and_legacy_ingestion_on_the_wire(tmp_path):
    overrides = {"tenants": [{"name": "acme", "tokens": ["relay-token-acme"]}]}
    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url, overrides) as relay:
            base = f"http://127.0.0.1:{relay.http.port}/api/public"
            trace = uuid.uuid4().hex
            async with aiohttp.ClientSession() as s:
                # no or wrong credentials: 401, nothing reaches Langfuse
                for headers in (
                    {},
                    basic(PK, "nope"),
                    basic("pk-other", "relay-token-acme"),
                    {"Authorization": "Bearer nope"},
                ):
                    async with s.get(base + "/projects", headers=headers) as r:
                        assert r.status == 401 and (await r.json())["error"] == "UnauthorizedError"
                before = len([r for r in lf.requests if r.path == "/api/public/projects"])  # relay's own link lookup
                assert all(r.status == 200 for r in lf.requests)  # nothing with bad credentials was forwarded
                # the tenant's Langfuse keys, pk + relay token, or a bearer relay token
                for headers in (
                    basic(PK, SK),
                    basic(PK, "relay-token-acme"),
                    {"Authorization": "Bearer relay-token-acme"},
                ):
                    async with s.get(base + "/projects", headers=headers) as r:
                        assert r.status == 200 and (await r.json())["data"][0]["id"] == "project-test"
                assert len([r for r in lf.requests if r.path == "/api/public/projects"]) == before + 3
                # health needs no auth
                async with s.get(base + "/health") as r:
                    assert r.status == 200 and (await r.json())["version"] == lf.version
                # single object → 200 {"id"}; the given id is kept
                async with s.post(
                    base + "/scores",
                    headers=basic(PK, SK),
                    json={"id": "score-1", "name": "correct", "value": 1, "traceId": trace},
                ) as r:
                    assert r.status == 200 and await r.json() == {"id": "score-1"}
                # array → 202, or 207 with the invalid item refused; gzip bodies too
                body = gzip.compress(
                    json.dumps(
                        [
                            {"name": "tone", "value": "friendly", "dataType": "CATEGORICAL", "traceId": trace},
                            {"name": "bad", "value": 2, "dataType": "BOOLEAN", "traceId": trace},
                        ]
                    ).encode()
                )
                async with s.post(
                    base + "/scores",
                    data=body,
                    headers={**basic(PK, SK), "Content-Encoding": "gzip", "Content-Type": "application/json"},
                ) as r:
                    assert r.status == 207
                    doc = await r.json()
                    assert doc["accepted"] == 1 and doc["rejected"] == 1 and "BOOLEAN" in doc["errors"][0]["message"]
                async with s.post(
                    base + "/scores",
                    headers=basic(PK, SK),
                    json=[{"name": "latency_ok", "value": 1, "sessionId": "s-1"}],
                ) as r:
                    assert r.status == 202 and await r.json() == {"message": "Accepted"}
                # invalid → 400 with a message, never a 500
                for bad in (b"{not json", b'{"name": "x"}', b'{"name": "x", "value": 1}'):
                    async with s.post(base + "/scores", data=bad, headers=basic(PK, SK)) as r:
                        assert r.status == 400 and "Invalid request data" in (await r.json())["message"]
                # legacy ingestion: score-create stored, sdk-log taken, trace items refused per item
                batch = {
                    "batch": [
                        {
                            "id": "ev-1",
                            "type": "score-create",
                            "timestamp": "2026-12-06T10:00:00Z",
                            "body": {"name": "legacy", "value": 0.5, "traceId": trace},
                        },
                        {"id": "ev-2", "type": "sdk-log", "timestamp": "2026-12-06T10:00:00Z", "body": {"log": "x"}},
                        {
                            "id": "ev-3",
                            "type": "trace-create",
                            "timestamp": "2026-12-06T10:00:00Z",
                            "body": {"id": trace},
                        },
                    ]
                }
                async with s.post(base + "/ingestion", headers=basic(PK, SK), json=batch) as r:
                    assert r.status == 207
                    doc = await r.json()
                    assert [x["id"] for x in doc["successes"]] == ["ev-1", "ev-2"]
                    assert [x["id"] for x in doc["errors"]] == ["ev-3"] and "OTLP" in doc["errors"][0]["message"]
                # other OTLP paths are not Langfuse's
                async with s.post(base + "/otel/v1/logs", headers=basic(PK, SK), data=b"") as r:
                    assert r.status == 404
                # a proxied write with a body (score configs), and a large response streamed back unchanged
                async with s.post(
                    base + "/score-configs",
                    headers=basic(PK, SK),
                    json={"name": "thumbs", "dataType": "BOOLEAN", "description": "x" * 300_000},
                ) as r:
                    assert r.status == 200 and (await r.json())["name"] == "thumbs"
                assert [c["name"] for c in lf.rest.configs_of("project-test")].count("thumbs") == 1
                big = "lorem ipsum " * 250_000
                lf.rest.add_prompt("project-test", "big", big)
                identity = {**basic(PK, SK), "Accept-Encoding": "identity"}
                async with s.get(base + "/v2/prompts/big", headers=identity) as r:
                    assert r.status == 200 and (await r.json())["prompt"] == big
                # percent-encoded path segments stay encoded (a prompt in a folder), query strings pass through
                lf.rest.add_prompt("project-test", "team/greeting", "Hi {{name}}", version=2)
                async with s.get(
                    base + "/v2/prompts/team%2Fgreeting?label=production&x=a%26b", headers=basic(PK, SK)
                ) as r:
                    assert r.status == 200 and (await r.json())["version"] == 2
                [seen] = [q for q in lf.requests if q.path.startswith("/api/public/v2/prompts/team")]
                assert seen.path == "/api/public/v2/prompts/team/greeting"  # decoded by the fake's router only
                # a prompt that does not exist: Langfuse's 404 streams back as is
                async with s.get(base + "/v2/prompts/missing", headers=basic(PK, SK)) as r:
                    assert r.status == 404 and (await r.json())["error"] == "LangfuseNotFoundError"
            await wait_for(lambda: len(lf.scores()) >= 4)
            await asyncio.sleep(0.3)
            ledger = await relay.spool.db.run(
                lambda c: c.execute(
                    "SELECT name, value, string_value FROM ledger_scores WHERE source='api' ORDER BY name"
                ).fetchall()
            )
        stored = lf.stored_scores()
        assert {s["name"] for s in stored.values()} == {"correct", "tone", "latency_ok", "legacy"}
        assert len(lf.scores()) == 4
        assert stored["score-1"]["value"] == 1
        assert stored["ev-1"]["name"] == "legacy"  # the event id keeps SDK retries idempotent
        assert ledger == [
            ("correct", 1.0, None),
            ("latency_ok", 1.0, None),
            ("legacy", 0.5, None),
            (("tone", None, "friendly")),
        ]


@pytest.mark.slow
def test_a_score_acknowledged_before_kill9_is_delivered_once_after_restart(tmp_path):
    import httpx

    with FakeLangfuse.run_in_thread() as lf:
        fake = lf.fake
        fake.fail(503, times=None, path="/api/public/scores")  # Langfuse down: the score stays queued
        overrides = {"exporters": {"langfuse": {"base_url": fake.base_url, "public_key": PK, "secret_key": SK}}}
        relay = RelayProcess(tmp_path / "data", overrides).start()
        try:
            r = httpx.post(
                relay.http_url + "/api/public/scores",
                auth=(PK, SK),
                json={"name": "thumbs", "value": 1, "dataType": "BOOLEAN", "traceId": "t" * 32},
            )
            assert r.status_code == 200
            score_id = r.json()["id"]
            relay.kill9()
        finally:
            if relay.proc and relay.proc.poll() is None:
                relay.kill9()
        fake.clear_faults()
        relay = RelayProcess(
            tmp_path / "data",
            overrides,
            http_port=relay.http_port,
            grpc_port=relay.grpc_port,
            admin_port=relay.admin_port,
        ).start()
        try:
            deadline = time.monotonic() + 20
            while not fake.scores() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)
            assert [s["id"] for s in fake.scores()] == [score_id]
            assert fake.scores()[0]["name"] == "thumbs"
        finally:
            assert relay.terminate() == 0


# ---------------------------------------------------------------------------------------------------- fuzzing
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from relay.langfuse_api.proxy import score_problem  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=12,
)
_scoreish = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=10) | st.integers(),
        "value": _json,
        "dataType": st.sampled_from(["NUMERIC", "BOOLEAN", "CATEGORICAL", "TEXT", "CORRECTION", "OTHER"]) | _json,
        "traceId": st.text(max_size=8),
        "sessionId": _json,
        "id": _json,
        "source": st.sampled_from(["API", "EVAL"]),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_json, _scoreish))
def test_score_validation_never_raises_and_accepts_only_valid_scores(body):
    problem = score_problem(body)
    assert problem is None or isinstance(problem, str)
    if problem is None:  # what relay accepts, the v4.16 server would accept too (the fake enforces its rules)
        from tests.fakes.langfuse import _score_problem

        assert _score_problem(body) is None
        assert isinstance(body["name"], str) and body["name"]


async def test_garbage_bodies_get_a_4xx_never_a_500(tmp_path):
    import random

    rnd = random.Random(7)
    samples = [
        b"",
        b"\x00\xff",
        b"[]",
        b"[1, 2]",
        b"null",
        b'{"batch": 5}',
        b'{"batch": [1, "x", null]}',
        b'[{"name": "a", "value": {"x": 1}, "traceId": "t"}]',
        b'{"name": "", "value": 1, "traceId": "t"}',
        bytes(rnd.getrandbits(8) for _ in range(200)),
    ]
    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url) as relay:
            base = f"http://127.0.0.1:{relay.http.port}/api/public"
            async with aiohttp.ClientSession() as s:
                for path in ("/scores", "/ingestion"):
                    for body in samples:
                        for enc in (None, "gzip", "br"):
                            headers = {**basic(PK, SK), "Content-Type": "application/json"}
                            if enc:
                                headers["Content-Encoding"] = enc
                            async with s.post(base + path, data=body, headers=headers) as r:
                                assert r.status < 500, (path, body, enc, r.status)
                                if r.status >= 400:
                                    assert "message" in await r.json()
