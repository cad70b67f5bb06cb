"""Score delivery: retries with Retry-After, dead letters, idempotency across restarts and replays, custom scores,
tenants without Langfuse export (ledger only)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from relay.scores.config import ScoresConfig
from relay.scores.outbox import POSTS_IN_FLIGHT
from tests.fakes.langfuse import FakeLangfuse
from tests.support.inproc import replay, running_relay, settle
from tests.support.scores_truth import scores_settled, session_truth

FAST = {"scores": {"session_idle": "300ms", "check_interval": "50ms"}}
SCORES = "/api/public/scores"


def _refuse_scores(lf, times: int) -> None:
    """The next ``times`` single-score POSTs get Langfuse's 400 for invalid request data (not retryable)."""
    lf.fail(
        400,
        times=times,
        path=SCORES,
        shape="object",
        body={"message": "Invalid request data", "error": "InvalidRequestError"},
    )


async def _dead_and_queued(relay) -> tuple[list, int]:
    """The dead-lettered scores ``(tenant, status, reason, body)`` and how many scores relay queued."""
    dead = await relay.spool.db.run(
        lambda c: c.execute("SELECT tenant, status, reason, body FROM score_dead_letters").fetchall()
    )
    queued = await relay.spool.db.run(
        lambda c: c.execute("SELECT COUNT(*) FROM ledger_scores WHERE source='relay'").fetchone()[0]
    )
    return dead, queued


async def test_retry_after_is_honoured_then_every_score_is_delivered_once(tmp_path):
    async with FakeLangfuse() as lf:
        fault = lf.fail(503, times=2, path=SCORES, headers={"Retry-After": "1"})
        async with running_relay(tmp_path / "data", lf.base_url, FAST) as relay:
            await replay(relay, "protobuf-tools")
            await settle(relay)
            await scores_settled(relay)
        assert fault.hits == 2
        answered = [r for r in lf.requests if r.path == SCORES]
        refused = [r for r in answered if r.status == 503]
        # posts go out POSTS_IN_FLIGHT at a time: those sent with the refused one were already on their way; the
        # next ones wait for Retry-After
        later = [r for r in answered if r.status == 200 and r.received_at > refused[-1].received_at + 0.3]
        assert later and later[0].received_at - refused[-1].received_at >= 0.9  # waited for Retry-After
        ids = [s["id"] for s in lf.scores()]
        assert len(ids) == len(set(ids))  # nothing delivered twice
        assert {s["name"] for s in lf.scores() if "sessionId" in s} >= {"cost_usd", "outcome", "lines_changed"}


async def test_scores_are_posted_several_at_a_time_but_no_more_than_the_bound(tmp_path):
    """Langfuse takes one score per request: posting them one after the other delivered one score per round trip
    (with a real server's latency, a few per second). relay keeps up to ``POSTS_IN_FLIGHT`` posts in flight."""
    async with FakeLangfuse() as lf:
        lf.slow(0.2, times=None, path=SCORES, before=True)
        async with running_relay(tmp_path / "data", lf.base_url, FAST) as relay:
            await replay(relay, "protobuf-tools")
            await settle(relay)
            await scores_settled(relay, timeout=60)
        posts = [r for r in lf.requests if r.path == SCORES and r.answered_at is not None and r.status == 200]
        probes = [r for r in lf.requests if r.path == SCORES and r.status == 400]
    assert len(probes) == 1  # this server (v4.16) refused the array form once; single objects from then on
    assert len(posts) >= 2 * POSTS_IN_FLIGHT
    in_flight = max(sum(1 for o in posts if o.received_at <= p.received_at < o.answered_at) for p in posts)
    assert 2 <= in_flight <= POSTS_IN_FLIGHT
    ids = [s["id"] for s in lf.scores()]
    assert len(ids) == len(set(ids)) == len(posts)  # each delivered once


async def test_a_refused_score_is_dead_lettered_with_its_reason(tmp_path):
    async with FakeLangfuse() as lf:
        _refuse_scores(lf, times=1)
        async with running_relay(tmp_path / "data", lf.base_url, FAST) as relay:
            await replay(relay, "protobuf-text")
            await settle(relay)
            await scores_settled(relay)
            dead, queued = await _dead_and_queued(relay)
        assert len(dead) == 1 and dead[0][1] == 400 and "Invalid request data" in dead[0][2]
        assert len(lf.stored_scores()) == queued - 1


async def test_restart_and_replay_update_scores_in_place(tmp_path):
    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url, FAST) as relay:
            await replay(relay, "protobuf-subagent")
            await settle(relay)
            await scores_settled(relay)
        first = lf.stored_scores()
        async with running_relay(tmp_path / "data", lf.base_url, FAST) as relay:
            await replay(relay, "protobuf-subagent")  # the same export again, e.g. a client retry after a restart
            await settle(relay)
            await scores_settled(relay)
        again = lf.stored_scores()
    assert set(again) == set(first)
    assert {k: v["value"] for k, v in again.items()} == {k: v["value"] for k, v in first.items()}
    ((sid, truth),) = session_truth("protobuf-subagent").items()
    stored = {s["name"]: s["value"] for s in again.values() if s.get("sessionId") == sid}
    assert stored["interactions"] == truth["interactions"]


async def test_custom_scores_and_a_tenant_without_langfuse_keeps_scores_in_the_ledger(tmp_path):
    custom = {
        "scores": {
            **FAST["scores"],
            "custom": [
                {"name": "expensive_session", "figure": "cost_usd", "threshold": {"op": ">", "value": 0.05}},
                {"name": "calls_per_tool", "ratio": ["api_calls", "tool_uses"]},
                {
                    "name": "slow_interaction",
                    "level": "interaction",
                    "figure": "duration_s",
                    "threshold": {"op": ">=", "value": 3600},
                },
            ],
        }
    }
    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url, custom) as relay:
            await replay(relay, "protobuf-tools")
            await settle(relay)
            await scores_settled(relay)
        ((sid, truth),) = session_truth("protobuf-tools").items()
        stored = {s["name"]: s for s in lf.stored_scores().values() if s.get("sessionId") == sid}
        assert stored["expensive_session"]["value"] == (1.0 if truth["cost_usd"] > 0.05 else 0.0)
        assert stored["expensive_session"]["dataType"] == "BOOLEAN"
        assert stored["calls_per_tool"]["value"] == pytest.approx(7 / 6)  # 7 api_request, 6 tool_result events
        slow = [s for s in lf.stored_scores().values() if s["name"] == "slow_interaction"]
        assert len(slow) == 1 and slow[0]["value"] == 0.0
        assert {c["name"] for c in lf.rest.configs_of("project-test")} >= {"expensive_session", "calls_per_tool"}

    # no Langfuse: the scores are computed into the ledger only, nothing is queued
    async with running_relay(tmp_path / "data2", None, FAST) as relay:
        await replay(relay, "protobuf-tools")
        await settle(relay)
        await scores_settled(relay)
        rows = await relay.spool.db.run(
            lambda c: c.execute(
                "SELECT name, value, string_value FROM ledger_scores WHERE session_id IS NOT NULL"
            ).fetchall()
        )
    got = {n: (v if s is None else s) for n, v, s in rows}
    assert got["outcome"] == "clean" and got["interactions"] == 1


def test_custom_score_config_is_validated():
    with pytest.raises(ValidationError, match="unknown figure"):
        ScoresConfig.model_validate({"custom": [{"name": "x", "figure": "nope"}]})
    with pytest.raises(ValidationError, match="exactly one"):
        ScoresConfig.model_validate({"custom": [{"name": "x"}]})
    with pytest.raises(ValidationError, match="not built-in"):
        ScoresConfig.model_validate({"custom": [{"name": "outcome", "figure": "cost_usd"}]})
    assert ScoresConfig.model_validate({"session_idle": "5m"}).session_idle == 300.0
    assert ScoresConfig().session_idle == 1800.0


async def test_traces_closed_but_never_marked_are_scored_at_the_next_start(tmp_path):
    """A kill between the pipeline's commit and the scorer's write loses the in-memory mark: the next start finds
    the ledger's unscored traces and scores them (and their sessions)."""
    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url, FAST) as relay:
            await replay(relay, "protobuf-tools")
            await settle(relay)
            await scores_settled(relay)
            await relay.spool.db.run(
                lambda c: (c.execute("DELETE FROM score_subjects"), c.execute("DELETE FROM ledger_scores"))
            )
        expected = lf.stored_scores()
        lf.clear()
        async with running_relay(tmp_path / "data", lf.base_url, FAST) as relay:
            await scores_settled(relay)
            await asyncio.sleep(0.2)
            await scores_settled(relay)
        again = lf.stored_scores()
    assert set(again) == set(expected)
    for k, v in expected.items():
        if v["name"] != "duration_s":  # the bounds now come from the ledger's records, not the spans
            assert again[k]["value"] == pytest.approx(v["value"]), v["name"]


async def test_each_tenants_scores_go_to_its_own_project(tmp_path):
    import aiohttp

    from tests.support.cc_traffic import CCTraffic

    projects = {"pk-lf-a": ("sk-lf-a", "project-a"), "pk-lf-b": ("sk-lf-b", "project-b")}
    async with FakeLangfuse(projects) as lf:
        ov = {
            **FAST,
            "tenants": [
                {"name": "a", "tokens": ["tok-a"], "langfuse": {"public_key": "pk-lf-a", "secret_key": "sk-lf-a"}},
                {"name": "b", "tokens": ["tok-b"], "langfuse": {"public_key": "pk-lf-b", "secret_key": "sk-lf-b"}},
            ],
        }
        ta, tb = CCTraffic(), CCTraffic()
        async with running_relay(tmp_path / "data", lf.base_url, ov) as relay:
            async with aiohttp.ClientSession() as s:
                for token, t, cost in (("tok-a", ta, 0.5), ("tok-b", tb, 0.25)):
                    body = t.request(t.event("user_prompt", prompt_length="3"), t.api_request(cost))
                    async with s.post(
                        f"http://127.0.0.1:{relay.http.port}/v1/logs",
                        data=body,
                        headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {token}"},
                    ) as r:
                        assert r.status == 200
            await settle(relay)
            await scores_settled(relay)
        for project, t, cost in (("project-a", ta, 0.5), ("project-b", tb, 0.25)):
            scores = lf.scores(project)
            assert {s.get("sessionId") for s in scores if "sessionId" in s} == {t.session}
            [c] = [s for s in scores if s["name"] == "cost_usd" and "sessionId" in s]
            assert c["value"] == pytest.approx(cost)
            configs = {c["id"] for c in lf.rest.configs_of(project)}
            assert {s["configId"] for s in scores} <= configs  # each project's own configs


async def test_a_refused_score_config_does_not_hold_scores_back(tmp_path):
    async with FakeLangfuse() as lf:
        lf.rest.refuse_configs.add("duration_s")
        lf.rest.configs.setdefault("project-test", []).append(  # a same-named config of another type exists
            {
                "id": "cfg-x",
                "name": "interactions",
                "dataType": "CATEGORICAL",
                "isArchived": False,
                "categories": [{"label": "many", "value": 1}],
                "projectId": "project-test",
            }
        )
        async with running_relay(tmp_path / "data", lf.base_url, FAST) as relay:
            await replay(relay, "protobuf-text")
            await settle(relay)
            await scores_settled(relay)
            count = await relay.spool.db.run(
                lambda c: c.execute("SELECT COUNT(*) FROM ledger_scores WHERE source='relay'").fetchone()[0]
            )
    stored = lf.stored_scores().values()
    assert len(stored) == count  # all delivered
    untyped = [s["name"] for s in stored if "configId" not in s]
    assert sorted(untyped) == ["duration_s", "interactions"]  # the refused one and the mismatched one


async def test_dead_lettered_scores_are_listed_and_replayed_by_the_cli(tmp_path, capsys):
    from relay.cli.main import main as relay_main

    config = tmp_path / "config.yaml"
    async with FakeLangfuse() as lf:
        _refuse_scores(lf, times=2)
        config.write_text(f"storage:\n  directory: {tmp_path / 'data'}\n")
        async with running_relay(tmp_path / "data", lf.base_url, FAST) as relay:
            await replay(relay, "protobuf-text")
            await settle(relay)
            await scores_settled(relay)
        delivered = len(lf.stored_scores())
        assert await asyncio.to_thread(relay_main, ["dead-letters", "--scores", "-c", str(config)]) == 0
        listed = [line for line in capsys.readouterr().out.splitlines() if "status 400" in line]
        assert len(listed) == 2 and all("Invalid request data" in line for line in listed)
        assert await asyncio.to_thread(relay_main, ["replay", "--scores", "-c", str(config)]) == 0
        assert "requeued 2 dead-lettered scores" in capsys.readouterr().out
        async with running_relay(tmp_path / "data", lf.base_url, FAST) as relay:
            await scores_settled(relay)
        assert len(lf.stored_scores()) == delivered + 2
        assert await asyncio.to_thread(relay_main, ["dead-letters", "--scores", "-c", str(config)]) == 0
        assert "no dead-lettered scores" in capsys.readouterr().out


async def test_a_server_that_takes_arrays_gets_each_pass_in_one_request(tmp_path):
    """Newer Langfuse servers take a JSON array of scores (202): a pass of queued scores is one request, not one
    per score; every score arrives once."""
    async with FakeLangfuse() as lf:
        lf.score_batches = True
        async with running_relay(tmp_path / "data", lf.base_url, FAST) as relay:
            await replay(relay, "protobuf-tools")
            await settle(relay)
            await scores_settled(relay)
        posts = [r for r in lf.requests if r.path == SCORES]
    ids = [s["id"] for s in lf.scores()]
    assert len(ids) == len(set(ids)) >= 8
    arrays = [r for r in posts if r.status == 202]
    assert arrays and len(posts) < len(ids)  # several scores per request
    assert not [r for r in posts if r.status not in (200, 202)]  # no refused probe on this server


async def test_a_refused_batch_is_sent_again_score_by_score(tmp_path):
    """A 207 says some scores of an array were refused, not which: relay posts that pass's scores one by one, so
    the refused one is dead-lettered with its own reason and the others arrive once (an accepted score sent again
    would only be an upsert)."""
    refused = {"message": "Invalid request data: value", "error": "InvalidRequestError"}
    async with FakeLangfuse() as lf:
        lf.score_batches = True
        batch = lf.fail(207, times=1, path=SCORES, shape="array", body={"accepted": 0, "rejected": 1, "errors": []})
        single = lf.fail(400, times=1, path=SCORES, shape="object", body=refused)
        async with running_relay(tmp_path / "data", lf.base_url, FAST) as relay:
            await replay(relay, "protobuf-tools")
            await settle(relay)
            await scores_settled(relay)
            dead, queued = await _dead_and_queued(relay)
    assert batch.hits == 1 and single.hits == 1
    assert len(dead) == 1 and dead[0][1] == 400 and "Invalid request data: value" in dead[0][2]
    ids = [s["id"] for s in lf.scores()]
    assert len(ids) == len(set(ids)) == queued - 1


async def test_a_transient_failure_of_an_array_retries_every_score_after_retry_after(tmp_path):
    async with FakeLangfuse() as lf:
        lf.score_batches = True
        fault = lf.fail(503, times=1, path=SCORES, shape="array", headers={"Retry-After": "1"})
        async with running_relay(tmp_path / "data", lf.base_url, FAST) as relay:
            await replay(relay, "protobuf-tools")
            await settle(relay)
            await scores_settled(relay)
        posts = [r for r in lf.requests if r.path == SCORES]
    assert fault.hits == 1
    refused = next(r for r in posts if r.status == 503)
    after = [r for r in posts if r.received_at > refused.received_at]
    assert after and after[0].received_at - refused.received_at >= 0.9  # waited for Retry-After
    ids = [s["id"] for s in lf.scores()]
    assert len(ids) == len(set(ids))  # nothing delivered twice, nothing lost (scores_settled: outbox empty)
