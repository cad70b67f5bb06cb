"""``kind: score`` rules over relay's own scores and app scores, end to end: traffic → scores → ledger score table
→ rules engine → alerts (also after a restart: score rules are backfilled from the score table)."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid

import aiohttp
import pytest
import yaml

from relay.alerting.rules.load import RulesError, RuleSet
from tests.fakes.langfuse import FakeLangfuse
from tests.support.cc_traffic import CCTraffic
from tests.support.inproc import running_relay, settle
from tests.support.scores_truth import scores_settled

RULES = {
    "groups": [
        {
            "name": "quality",
            "rules": [
                {
                    "alert": "LowToolAcceptRate",
                    "kind": "score",
                    "score": "tool_accept_rate",
                    "aggregate": "avg",
                    "matchers": ['score_subject="session"'],
                    "op": "<",
                    "value": 0.6,
                    "window": "1d",
                    "group_by": ["team.id"],
                },
                {
                    "alert": "ThumbsDownRate",
                    "kind": "score",
                    "score": "thumbs",
                    "aggregate": "rate",
                    "match": {"equals": 0},
                    "op": ">",
                    "value": 0.2,
                    "window": "7d",
                    "min_count": 5,
                },
                {
                    "alert": "FailedSessions",
                    "kind": "score",
                    "score": "outcome",
                    "aggregate": "rate",
                    "match": {"equals": "failed"},
                    "op": ">=",
                    "value": 0.5,
                    "window": "1d",
                },
            ],
        }
    ]
}


def _tool(t: CCTraffic, decision: str):
    tuid = f"toolu_{uuid.uuid4().hex[:20]}"
    evs = [t.event("tool_decision", tool_use_id=tuid, decision=decision, source="user_temporary", tool_name="Bash")]
    if decision == "accept":
        evs.append(t.event("tool_result", tool_use_id=tuid, success="true", tool_name="Bash", duration_ms="5"))
    return evs


async def _alerts(relay, timeout: float = 10.0, want: set[str] | None = None) -> dict[str, list]:
    deadline = time.monotonic() + timeout
    while True:
        firing: dict[str, list] = {}
        for a in relay.alerting.engine.alerts():
            if a.state.value == "firing":
                firing.setdefault(a.labels["alertname"], []).append(a)
        if want is None or set(firing) >= want or time.monotonic() > deadline:
            return firing
        await asyncio.sleep(0.05)


async def test_score_rules_fire_on_relay_and_app_scores_and_survive_a_restart(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(RULES))
    ov = {
        "scores": {"session_idle": "300ms", "check_interval": "50ms"},
        "rules": {"files": [str(rules)], "evaluation_interval": "100ms", "watch": False},
    }
    platform = CCTraffic(resource={"team.id": "platform"})
    search = CCTraffic(resource={"team.id": "search"})
    auth = {"Authorization": "Basic " + base64.b64encode(b"pk-lf-test:sk-lf-test").decode()}
    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url, ov) as relay:
            url = f"http://127.0.0.1:{relay.http.port}"
            async with aiohttp.ClientSession() as s:
                # platform: 1 of 3 tool uses accepted (0.33 < 0.6); search: all accepted
                for t, decisions in ((platform, ["accept", "reject", "reject"]), (search, ["accept", "accept"])):
                    evs = [t.event("user_prompt", prompt_length="3"), t.api_request(0.01)]
                    for d in decisions:
                        evs += _tool(t, d)
                    evs.append(t.api_request(0.01))
                    async with s.post(
                        url + "/v1/logs", data=t.request(*evs), headers={"Content-Type": "application/x-protobuf"}
                    ) as r:
                        assert r.status == 200
                # app feedback: 2 thumbs-down of 5 (40 % > 20 %)
                for v in (0, 1, 0, 1, 1):
                    async with s.post(
                        url + "/api/public/scores",
                        headers=auth,
                        json={"name": "thumbs", "value": v, "traceId": uuid.uuid4().hex},
                    ) as r:
                        assert r.status == 200
            await settle(relay)
            await scores_settled(relay)
            firing = await _alerts(relay, want={"LowToolAcceptRate", "ThumbsDownRate"})
            assert [a.labels["team.id"] for a in firing["LowToolAcceptRate"]] == ["platform"]
            [low] = firing["LowToolAcceptRate"]
            assert low.values["value"] == pytest.approx(1 / 3) and low.values["count"] == 1
            [thumbs] = firing["ThumbsDownRate"]
            assert thumbs.values["value"] == pytest.approx(0.4) and thumbs.values["count"] == 5
            assert "FailedSessions" not in firing  # both sessions ended clean
        # restart: the windows are backfilled from the score table
        async with running_relay(tmp_path / "data", lf.base_url, ov) as relay:
            await relay.alerting._starting
            firing = await _alerts(relay, want={"LowToolAcceptRate", "ThumbsDownRate"})
            assert {"LowToolAcceptRate", "ThumbsDownRate"} <= set(firing)
            assert firing["ThumbsDownRate"][0].values["count"] == 5


def test_score_rule_schema(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "g",
                        "rules": [
                            {
                                "alert": "X",
                                "kind": "score",
                                "score": "thumbs",
                                "aggregate": "rate",
                                "op": ">",
                                "value": 0.2,
                                "window": "1d",
                            }
                        ],
                    }
                ]
            }
        )
    )
    with pytest.raises(RulesError, match="match"):
        RuleSet.load([str(bad)])
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(RULES))
    assert [r.kind for r in RuleSet.load([str(good)]).rules] == ["score"] * 3
