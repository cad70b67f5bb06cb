"""Jira notifier error handling, ``check()`` and the REST client's search paging, against the fake Jira.

Retryable: 429 / 503 with ``Retry-After``, other 5xx, connection refused, timeouts. Permanent, with Jira's own
messages: bad project, missing required field, unknown transition, bad credentials (Jira REST,
https://developer.atlassian.com/cloud/jira/platform/rest/v3/).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from relay.alert import AlertState
from relay.notify.base import NotifyError
from relay.notify.jira.client import JiraClient
from relay.notify.jira.notifier import JiraNotifier
from tests.fakes.jira import GONE_MESSAGE, FakeJira, FakeProject
from tests.fakes.jira_support import Clock, jira_config, make_alert, make_notification


@pytest.fixture(params=["cloud", "datacenter"])
def flavor(request):
    return request.param


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def jira(flavor, clock):
    projects = [
        FakeProject("OPS", "Operations", components=("ai-usage",)),
        FakeProject("STRICT", "Strict", issue_types=("Incident",), required_fields=("customfield_10010",)),
    ]
    async with FakeJira(flavor, clock=clock, projects=projects) as fake:
        yield fake


@pytest.fixture
async def make(clock):
    made: list[JiraNotifier] = []

    def build(fake: FakeJira, **overrides) -> JiraNotifier:
        n = JiraNotifier("ops", 3, jira_config(fake, **overrides), clock=clock)
        made.append(n)
        return n

    yield build
    for n in made:
        await n.close()


async def test_rate_limit_is_retryable_with_retry_after_and_then_succeeds(jira, make):
    notifier = make(jira)
    assert notifier.integration == "jira/3"
    jira.rate_limit(retry_after=7, method="POST", path="search")
    with pytest.raises(NotifyError) as err:
        await notifier.notify(make_notification(), {})
    assert err.value.retryable and err.value.retry_after == 7 and err.value.status == 429
    assert jira.issues() == []
    state = await notifier.notify(make_notification(), {})
    assert state["action"] == "created" and len(jira.issues()) == 1


async def test_429_on_create_does_not_create_and_the_retry_creates_once(jira, make):
    notifier = make(jira)
    jira.rate_limit(retry_after=3, method="POST", path="^issue$")
    with pytest.raises(NotifyError) as err:
        await notifier.notify(make_notification(), {})
    assert err.value.retryable and err.value.retry_after == 3
    await notifier.notify(make_notification(), {})  # Jira refused, so no search-lag wait is needed
    assert len(jira.issues()) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retryable(jira, make, status):
    jira.fail(status, method="POST", retry_after=5 if status == 503 else None)
    with pytest.raises(NotifyError) as err:
        await make(jira).notify(make_notification(), {})
    assert err.value.retryable and err.value.status == status
    assert err.value.retry_after == (5 if status == 503 else None)


async def test_outage_is_retryable_and_recovers(jira, make):
    notifier = make(jira)
    await jira.outage()
    with pytest.raises(NotifyError) as err:
        await notifier.notify(make_notification(), {})
    assert err.value.retryable and err.value.status is None and "cannot connect" in str(err.value)
    await jira.restore()
    assert (await notifier.notify(make_notification(), {}))["action"] == "created"


async def test_dropped_connection_is_retryable(jira, make):
    jira.drop_response(method="POST", path="search")  # no answer at all: the connection is closed
    with pytest.raises(NotifyError) as err:
        await make(jira).notify(make_notification(), {})
    assert err.value.retryable and err.value.status is None


async def test_timeout_is_honoured_and_retryable(jira, make):
    jira.slow(3.0, method="POST", path="search")
    started = time.monotonic()
    with pytest.raises(NotifyError) as err:
        await make(jira, timeout=0.3).notify(make_notification(), {})
    assert err.value.retryable and "timed out" in str(err.value)
    assert time.monotonic() - started < 2.0


async def test_bad_project_is_permanent_with_jiras_message(jira, make):
    with pytest.raises(NotifyError) as err:
        await make(jira, project="NOPE").notify(make_notification(), {})
    assert not err.value.retryable and err.value.status == 400
    assert "The value 'NOPE' does not exist for the field 'project'." in str(err.value)


async def test_missing_required_field_is_permanent_with_jiras_message(jira, make):
    notifier = make(jira, project="STRICT", issue_type="Incident")
    with pytest.raises(NotifyError) as err:
        await notifier.notify(make_notification(), {})
    assert not err.value.retryable and "customfield_10010: Team is required." in str(err.value)
    fixed = make(
        jira,
        project="STRICT",
        issue_type="Incident",
        custom_fields={"customfield_10010": {"value": "{{ group_labels.team }}"}, "customfield_10020": 42.5},
    )
    state = await fixed.notify(make_notification(), {})
    issue = jira.issue(state["issue"])
    assert issue.custom == {"customfield_10010": {"value": "payments"}, "customfield_10020": 42.5}


async def test_unknown_priority_and_issue_type_are_permanent(jira, make):
    with pytest.raises(NotifyError) as err:
        await make(jira, priority_map={"critical": "P1"}).notify(make_notification(), {})
    assert not err.value.retryable and "priority" in str(err.value) and "P1" in str(err.value)
    with pytest.raises(NotifyError) as err:
        await make(jira, issue_type="Epic").notify(make_notification(), {})
    assert not err.value.retryable and "issuetype: Specify a valid issue type" in str(err.value)


async def test_bad_credentials_are_permanent(jira, make):
    if jira.flavor == "cloud":
        notifier = make(jira, api_token="wrong")
    else:
        notifier = make(jira, personal_access_token="wrong")
    with pytest.raises(NotifyError) as err:
        await notifier.notify(make_notification(), {})
    assert not err.value.retryable and err.value.status == 401
    assert "wrong" not in str(err.value)


async def test_unknown_resolve_transition_is_permanent_and_names_the_available_ones(jira, make, clock):
    notifier = make(jira, resolve_transition="Close Issue")
    state = await notifier.notify(make_notification(), {})
    resolved = make_notification(make_alert(state=AlertState.RESOLVED, ends_at=clock()), seq=2)
    with pytest.raises(NotifyError) as err:
        await notifier.notify(resolved, state)
    assert not err.value.retryable
    assert "'Close Issue'" in str(err.value) and "'Start Progress'" in str(err.value)


async def test_transition_found_by_target_status_name(jira, make, clock):
    notifier = make(jira, resolve_transition="done")  # transition "Done" (case-insensitive)
    state = await notifier.notify(make_notification(), {})
    jira.set_status(state["issue"], "In Progress")
    await notifier.notify(make_notification(make_alert(state=AlertState.RESOLVED, ends_at=clock()), seq=2), state)
    assert jira.issue(state["issue"]).status == "Done"


@pytest.mark.parametrize("template", ["{{ missing.deeper.still }}", "{{ alerts[0].value / 0 }}"])
async def test_template_error_is_permanent(jira, make, template):
    with pytest.raises(NotifyError) as err:
        await make(jira, summary=template).notify(make_notification(), {})
    assert not err.value.retryable and "summary template" in str(err.value)
    assert jira.issues() == []


async def test_templates_are_sandboxed(jira, make):
    with pytest.raises(NotifyError) as err:
        await make(jira, summary="{{ alerts[0].labels.__class__.__mro__ }}").notify(make_notification(), {})
    assert not err.value.retryable and "SecurityError" in str(err.value)


async def test_old_search_endpoint_is_gone_on_cloud():
    async with FakeJira("cloud") as fake:
        client = JiraClient(jira_config(fake, flavor="cloud"))
        try:
            with pytest.raises(NotifyError) as err:
                await client.request("POST", "search", json_body={"jql": "project = OPS"})
            assert err.value.status == 410 and not err.value.retryable and GONE_MESSAGE in str(err.value)
        finally:
            await client.close()


async def test_search_pages_through_every_result(jira, clock):
    client = JiraClient(jira_config(jira))
    try:
        for i in range(120):
            await client.create_issue(
                {
                    "project": {"key": "OPS"},
                    "issuetype": {"name": "Task"},
                    "summary": f"issue {i}",
                    "labels": ["bulk"] if i % 2 == 0 else ["other"],
                }
            )
        issues = await client.search('project = OPS AND labels = "bulk" ORDER BY created DESC', ["labels"])
    finally:
        await client.close()
    assert len(issues) == 60 and len({i["key"] for i in issues}) == 60
    assert all(i["fields"]["labels"] == ["bulk"] for i in issues)
    path = "search/jql" if jira.flavor == "cloud" else "^search$"
    pages = jira.requests("POST", path)
    assert len(pages) == 2
    if jira.flavor == "cloud":
        assert "nextPageToken" not in pages[0].body and pages[1].body["nextPageToken"]
    else:
        assert [p.body["startAt"] for p in pages] == [0, 50]


async def test_check_passes_for_a_good_config(jira, make, clock):
    notifier = make(
        jira,
        components=["ai-usage"],
        resolve_transition="Done",
        reopen_transition="Reopen",
        reopen_duration="7d",
        dedup_field="customfield_10050",
    )
    state = await notifier.notify(make_notification(), {})  # sample issues for the transition check
    await make(jira).notify(make_notification(group_key="other"), {})
    jira.set_status(state["issue"], "Done")
    assert await notifier.check() == []


async def test_check_reports_a_bad_project(jira, make):
    problems = await make(jira, project="NOPE").check()
    assert len(problems) == 1 and "project 'NOPE' not found" in problems[0]


async def test_check_reports_bad_auth(jira, make):
    bad = {"api_token": "nope"} if jira.flavor == "cloud" else {"personal_access_token": "nope"}
    problems = await make(jira, **bad).check()
    assert len(problems) == 1 and "authentication failed" in problems[0]


async def test_check_reports_each_bad_setting(jira, make, clock):
    notifier = make(
        jira,
        issue_type="Epic",
        components=["nope"],
        priority_map={"critical": "P1"},
        custom_fields={"customfield_999": "x"},
        resolve_transition="Close Issue",
    )
    await make(jira, issue_type="Bug").notify(make_notification(), {})  # an open sample issue... of type Bug
    problems = "\n".join(await notifier.check())
    for expected in ("issue_type 'Epic'", "component 'nope'", "priority 'P1'", "field 'customfield_999'"):
        assert expected in problems
    good_type = make(jira, resolve_transition="Close Issue")
    problems = await good_type.check()
    assert len(problems) == 1 and "resolve_transition 'Close Issue' is not offered" in problems[0]


async def test_check_reports_unreachable_jira(jira, make):
    notifier = make(jira)
    await jira.outage()
    problems = await notifier.check()
    assert len(problems) == 1 and "cannot connect" in problems[0]


async def test_check_probes_that_the_resolve_transition_accepts_the_resolution(jira, make, clock):
    """``relay check --probe``: a ``resolve_resolution`` needs the Resolution field on the resolve transition's
    screen (Jira rejects the transition otherwise) and must be one of its resolutions."""
    await make(jira).notify(make_notification(), {})  # an open sample issue
    assert await make(jira, resolve_transition="Done", resolve_resolution="Won't Fix").check() == []
    problems = await make(jira, resolve_transition="Done", resolve_resolution="Fixed Eventually").check()
    assert len(problems) == 1 and "resolve_resolution 'Fixed Eventually' is not a resolution" in problems[0]
    jira.transition_fields = {}  # the workflow's Done transition has no screen
    problems = await make(jira, resolve_transition="Done", resolve_resolution="Done").check()
    assert len(problems) == 1 and "no resolution field on its screen" in problems[0]
    assert await make(jira, resolve_transition="Done").check() == []  # no resolution sent: fine


async def test_resolve_without_the_resolution_field_still_resolves(jira, make, clock):
    """When the transition's screen has no Resolution field relay applies it without ``resolve_resolution``
    (sending it would be a 400 and the issue would never resolve)."""
    jira.transition_fields = {}
    notifier = make(jira, resolve_transition="Done", resolve_resolution="Won't Fix")
    state = await notifier.notify(make_notification(), {})
    clock.advance(60)
    resolved = make_notification(make_alert(state=AlertState.RESOLVED, ends_at=clock()), seq=2, created_at=clock())
    assert (await notifier.notify(resolved, state))["action"] == "resolved"
    issue = jira.issue(state["issue"])
    assert issue.status == "Done" and issue.resolution == "Done"


async def test_resolve_sets_the_configured_resolution_when_the_screen_has_it(jira, make, clock):
    notifier = make(jira, resolve_transition="Done", resolve_resolution="Won't Fix")
    state = await notifier.notify(make_notification(), {})
    resolved = make_notification(make_alert(state=AlertState.RESOLVED, ends_at=clock()), seq=2, created_at=clock())
    await notifier.notify(resolved, state)
    assert jira.issue(state["issue"]).resolution == "Won't Fix"


def test_relay_check_probe_reports_a_resolution_the_transition_refuses(tmp_path):
    """The CLI on the real wire: ``relay check --probe`` against a Jira whose Done transition has no screen."""
    root = Path(__file__).resolve().parents[1]
    with FakeJira.run_in_thread("cloud", transition_fields={}) as fake:
        auth = "Basic " + base64.b64encode(f"{fake.user}:{fake.api_token}".encode()).decode()
        req = urllib.request.Request(
            f"{fake.base_url}/rest/api/3/issue",
            method="POST",
            headers={"Authorization": auth, "Content-Type": "application/json"},
            data=json.dumps(
                {"fields": {"project": {"key": "OPS"}, "issuetype": {"name": "Bug"}, "summary": "an open sample issue"}}
            ).encode(),
        )
        assert urllib.request.urlopen(req, timeout=5).status == 201
        jira = {
            "flavor": "cloud",
            "api_url": fake.base_url,
            "user": fake.user,
            "api_token": fake.api_token,
            "project": "OPS",
            "resolve_transition": "Done",
        }
        cfg = tmp_path / "relay.yaml"
        for resolution, code in ((None, 0), ("Done", 1)):
            extra = {"resolve_resolution": resolution} if resolution else {}
            cfg.write_text(
                yaml.safe_dump(
                    {
                        "storage": {"directory": str(tmp_path / "data")},
                        "alerting": {
                            "route": {"receiver": "jira"},
                            "receivers": [{"name": "jira", "jira_configs": [{**jira, **extra}]}],
                        },
                    }
                )
            )
            r = subprocess.run(
                [sys.executable, "-m", "relay", "check", "--probe", "--config", str(cfg)],
                capture_output=True,
                text=True,
                cwd=root,
                timeout=60,
            )
            assert r.returncode == code, r.stdout + r.stderr
            if code:
                assert "resolve_transition 'Done' has no resolution field on its screen" in r.stderr
            else:
                assert "jira/0: OK" in r.stdout
