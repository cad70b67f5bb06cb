"""Jira notifier lifecycle against the fake Jira, on Cloud (REST v3, ADF) and Data Center (REST v2, wiki markup):
one issue per alert group, comments on repeats, restarts, resolve, reopen window, Won't Fix, lost responses.

Semantics: Alertmanager's ``jira_configs`` (https://prometheus.io/docs/alerting/latest/configuration/#jira_config)
and jiralert (https://github.com/prometheus-community/jiralert); details in ``relay/notify/jira/notifier.py``.
"""

from __future__ import annotations

import pytest

from relay.alert import AlertState
from relay.notify.base import NotifyError
from relay.notify.jira.notifier import JiraNotifier, dedup_key
from tests.fakes.jira import FakeJira
from tests.fakes.jira_support import (
    GROUP_KEY,
    RUNBOOK,
    SESSION_URL,
    Clock,
    jira_config,
    make_alert,
    make_notification,
)

DAY = 86400.0


@pytest.fixture(params=["cloud", "datacenter"])
def flavor(request):
    return request.param


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def jira(flavor, clock):
    async with FakeJira(flavor, clock=clock, search_lag=30) as fake:
        yield fake


@pytest.fixture
async def notifiers():
    made: list[JiraNotifier] = []

    def make(fake: FakeJira, clock: Clock, **overrides) -> JiraNotifier:
        n = JiraNotifier("ops", 0, jira_config(fake, **overrides), clock=clock)
        made.append(n)
        return n

    yield make
    for n in made:
        await n.close()


def links_in_adf(node) -> list[str]:
    out = []
    if isinstance(node, dict):
        for mark in node.get("marks") or []:
            if mark.get("type") == "link":
                out.append(mark["attrs"]["href"])
        for child in node.get("content") or []:
            out += links_in_adf(child)
    return out


async def test_first_firing_creates_exactly_one_issue_with_figures_and_links(jira, clock, notifiers):
    notifier = notifiers(jira, clock, components=["ai-usage"], labels=["relay", "team {{ group_labels.team }}"])
    state = await notifier.notify(make_notification(make_alert(123.45)), {})

    issues = jira.issues()
    assert len(issues) == 1
    issue = issues[0]
    assert state == {
        "issue": issue.key,
        "issue_id": issue.id,
        "created_at": clock(),
        "dedup_key": dedup_key(GROUP_KEY),
        "firing": [make_alert().fingerprint],
        "action": "created",
    }
    assert issue.issue_type == "Bug" and issue.priority == "Highest" and issue.components == ["ai-usage"]
    assert issue.summary == "BudgetExceeded (team=payments)"
    assert sorted(issue.labels) == sorted(["relay", "team_payments", dedup_key(GROUP_KEY)])
    text = issue.description_text
    for figure in ("123.45", "spend", "limit", "100", "month (UTC)", "alice@example.com", "Monthly budget exceeded"):
        assert figure in text
    if jira.flavor == "cloud":
        assert isinstance(issue.description, dict) and issue.description["type"] == "doc"
        assert SESSION_URL in links_in_adf(issue.description) and RUNBOOK in links_in_adf(issue.description)
    else:
        assert isinstance(issue.description, str)
        assert f"[Langfuse session|{SESSION_URL}]" in issue.description and RUNBOOK in issue.description
    assert jira.comments(issue.key) == []


async def test_repeat_comments_with_new_figures_and_never_opens_a_second_issue(jira, clock, notifiers):
    notifier = notifiers(jira, clock)
    state = await notifier.notify(make_notification(make_alert(120.0)), {})
    key = state["issue"]

    clock.advance(4 * 3600)
    repeat = make_notification(make_alert(180.5), seq=2, repeat=True, created_at=clock())
    state2 = await notifier.notify(repeat, state)
    assert state2["issue"] == key and state2["action"] == "commented"
    assert state2["created_at"] == state["created_at"]
    # A retry of the same notification (e.g. the outbox did not get the answer) adds no second comment.
    assert (await notifier.notify(repeat, state))["issue"] == key

    assert len(jira.issues()) == 1
    comments = jira.comments(key)
    assert len(comments) == 1
    assert "180.50" in comments[0].text and "still firing" in comments[0].text
    assert "relay notification 2" in comments[0].text

    clock.advance(4 * 3600)
    await notifier.notify(make_notification(make_alert(181.0), seq=3, repeat=True, created_at=clock()), state2)
    assert len(jira.issues()) == 1 and len(jira.comments(key)) == 2


async def test_comment_only_when_something_changed_or_on_repeat(jira, clock, notifiers):
    notifier = notifiers(jira, clock)
    state = await notifier.notify(make_notification(make_alert(120.0)), {})
    key = state["issue"]
    clock.advance(300)
    same = await notifier.notify(make_notification(make_alert(121.0), seq=2, created_at=clock()), state)
    assert same["action"] == "unchanged" and jira.comments(key) == []
    clock.advance(300)
    joined = make_notification(make_alert(121.0), make_alert(130.0, user="bob@example.com"), seq=3, created_at=clock())
    changed = await notifier.notify(joined, same)
    assert changed["action"] == "commented" and len(changed["firing"]) == 2
    assert "bob@example.com" in jira.comments(key)[0].text and len(jira.issues()) == 1


async def test_severity_change_updates_priority_of_the_open_issue(jira, clock, notifiers):
    notifier = notifiers(jira, clock)
    state = await notifier.notify(make_notification(make_alert(severity="warning")), {})
    assert jira.issue(state["issue"]).priority == "High"
    clock.advance(300)
    await notifier.notify(make_notification(make_alert(severity="critical"), seq=2, created_at=clock()), state)
    assert jira.issue(state["issue"]).priority == "Highest"
    assert len(jira.requests("PUT")) == 1


async def test_restart_inside_search_lag_uses_relays_own_log(jira, clock, notifiers):
    """Jira's search does not show the new issue yet; the state the outbox kept is what prevents a duplicate."""
    state = await notifiers(jira, clock).notify(make_notification(), {})
    clock.advance(5)  # well inside the 30 s search lag
    restarted = notifiers(jira, clock)  # a new process
    lagging = await restarted.client.search(restarted._jql(dedup_key(GROUP_KEY), firing=True), ["labels"])
    assert lagging == []  # the search cannot see the issue yet
    searches_before = len(jira.requests("POST", "search"))
    state2 = await restarted.notify(make_notification(make_alert(150.0), seq=2, repeat=True, created_at=clock()), state)
    assert state2["issue"] == state["issue"] and state2["action"] == "commented"
    assert len(jira.issues()) == 1 and len(jira.comments(state["issue"])) == 1
    assert len(jira.requests("POST", "search")) == searches_before  # found by key, not by search


async def test_restart_with_empty_state_after_the_lag_finds_the_issue_by_search(jira, clock, notifiers):
    state = await notifiers(jira, clock).notify(make_notification(), {})
    clock.advance(31)
    restarted = notifiers(jira, clock)
    state2 = await restarted.notify(make_notification(seq=2, repeat=True, created_at=clock()), {})
    assert state2["issue"] == state["issue"] and state2["created_at"] is None
    assert len(jira.issues()) == 1 and len(jira.comments(state["issue"])) == 1
    path = "search/jql" if jira.flavor == "cloud" else "^search$"
    last = jira.requests("POST", path)[-1]
    assert dedup_key(GROUP_KEY) in last.body["jql"] and "labels" in last.body["fields"]


async def test_lost_create_response_is_not_retried_into_a_duplicate(jira, clock, notifiers):
    notifier = notifiers(jira, clock)
    jira.drop_response(method="POST", path="^issue$")
    with pytest.raises(NotifyError) as err:
        await notifier.notify(make_notification(), {})
    assert err.value.retryable
    assert len(jira.issues()) == 1  # Jira did create it; relay does not know the key

    clock.advance(2)  # the outbox retries soon, inside the search lag
    with pytest.raises(NotifyError) as err:
        await notifier.notify(make_notification(), {})
    assert err.value.retryable and err.value.retry_after == pytest.approx(28)
    assert len(jira.issues()) == 1

    clock.advance(29)  # after the lag the search shows it
    state = await notifier.notify(make_notification(), {})
    assert len(jira.issues()) == 1 and state["issue"] == jira.issues()[0].key


async def test_resolve_after_a_lost_create_waits_for_the_search(jira, clock, notifiers):
    notifier = notifiers(jira, clock, resolve_transition="Done")
    jira.drop_response(method="POST", path="^issue$")
    with pytest.raises(NotifyError):
        await notifier.notify(make_notification(), {})
    clock.advance(5)
    resolved = make_notification(make_alert(state=AlertState.RESOLVED, ends_at=clock()), seq=2, created_at=clock())
    with pytest.raises(NotifyError) as err:
        await notifier.notify(resolved, {})
    assert err.value.retryable and err.value.retry_after == pytest.approx(25)
    clock.advance(26)
    state = await notifier.notify(resolved, {})
    assert state["action"] == "resolved" and jira.issue(state["issue"]).status == "Done"


async def test_retry_after_a_failed_comment_posts_it_once(jira, clock, notifiers):
    notifier = notifiers(jira, clock)
    state = await notifier.notify(make_notification(), {})
    repeat = make_notification(make_alert(150.0), seq=2, repeat=True, created_at=clock())
    jira.drop_response(method="POST", path="comment$")
    with pytest.raises(NotifyError):
        await notifier.notify(repeat, state)
    await notifier.notify(repeat, state)
    assert len(jira.comments(state["issue"])) == 1


async def test_resolve_comments_and_transitions_to_done(jira, clock, notifiers):
    notifier = notifiers(jira, clock, resolve_transition="Done")
    state = await notifier.notify(make_notification(), {})
    clock.advance(600)
    resolved = make_notification(make_alert(state=AlertState.RESOLVED, ends_at=clock()), seq=2, created_at=clock())
    state2 = await notifier.notify(resolved, state)
    issue = jira.issue(state["issue"])
    assert state2["action"] == "resolved" and issue.status == "Done" and issue.resolution == "Done"
    assert [t.name for t in jira.transitions_applied(issue.key)] == ["Done"]
    assert "RESOLVED" in jira.comments(issue.key)[0].text
    await notifier.notify(resolved, state2)  # retried: no second comment or transition
    assert len(jira.comments(issue.key)) == 1 and len(jira.transitions_applied()) == 1


async def test_resolved_without_an_issue_creates_nothing(jira, clock, notifiers):
    notifier = notifiers(jira, clock, resolve_transition="Done")
    resolved = make_notification(make_alert(state=AlertState.RESOLVED, ends_at=clock()))
    assert (await notifier.notify(resolved, {}))["action"] == "none"
    assert jira.issues() == []


async def test_refire_within_reopen_window_reopens_the_same_issue(jira, clock, notifiers):
    notifier = notifiers(jira, clock, resolve_transition="Done", reopen_transition="Reopen", reopen_duration="7d")
    state = await notifier.notify(make_notification(), {})
    clock.advance(600)
    state = await notifier.notify(
        make_notification(make_alert(state=AlertState.RESOLVED, ends_at=clock()), seq=2, created_at=clock()), state
    )
    clock.advance(2 * DAY)
    state3 = await notifier.notify(make_notification(make_alert(200.0), seq=3, created_at=clock()), state)
    issue = jira.issue(state["issue"])
    assert state3["issue"] == issue.key and state3["action"] == "reopened"
    assert issue.status == "To Do" and issue.resolution is None
    assert [t.name for t in jira.transitions_applied(issue.key)] == ["Done", "Reopen"]
    assert "200" in jira.comments(issue.key)[-1].text
    assert len(jira.issues()) == 1


async def test_refire_within_window_with_empty_state_reopens_found_issue(jira, clock, notifiers):
    notifier = notifiers(jira, clock, reopen_transition="Reopen", reopen_duration="7d")
    state = await notifier.notify(make_notification(), {})
    clock.advance(DAY)
    jira.set_status(state["issue"], "Done")  # closed by a person
    restarted = notifiers(jira, clock, reopen_transition="Reopen", reopen_duration="7d")
    state2 = await restarted.notify(make_notification(seq=2, created_at=clock()), {})
    assert state2["issue"] == state["issue"] and state2["action"] == "reopened"
    assert len(jira.issues()) == 1


async def test_refire_outside_reopen_window_opens_a_new_issue(jira, clock, notifiers):
    notifier = notifiers(jira, clock, resolve_transition="Done", reopen_transition="Reopen", reopen_duration="7d")
    state = await notifier.notify(make_notification(), {})
    state = await notifier.notify(
        make_notification(make_alert(state=AlertState.RESOLVED, ends_at=clock()), seq=2), state
    )
    clock.advance(8 * DAY)
    state3 = await notifier.notify(make_notification(seq=3, created_at=clock()), state)
    assert state3["action"] == "created" and state3["issue"] != state["issue"]
    assert len(jira.issues()) == 2 and jira.issue(state["issue"]).status == "Done"
    assert [t.name for t in jira.transitions_applied()] == ["Done"]


async def test_without_reopen_config_a_refire_after_done_opens_a_new_issue(jira, clock, notifiers):
    notifier = notifiers(jira, clock)
    state = await notifier.notify(make_notification(), {})
    jira.set_status(state["issue"], "Done")
    clock.advance(60)
    state2 = await notifier.notify(make_notification(seq=2, created_at=clock()), state)
    assert state2["action"] == "created" and len(jira.issues()) == 2


async def test_wont_fix_stays_closed_within_the_window_then_a_new_issue(jira, clock, notifiers):
    notifier = notifiers(jira, clock, reopen_transition="Reopen", reopen_duration="7d")
    state = await notifier.notify(make_notification(), {})
    key = state["issue"]
    clock.advance(3600)
    jira.set_status(key, "Done", resolution="Won't Fix")
    clock.advance(4 * 3600)
    state2 = await notifier.notify(make_notification(seq=2, repeat=True, created_at=clock()), state)
    assert state2["action"] == "wont_fix" and state2["issue"] == key
    # the same holds without relay's state (search path), e.g. after data loss
    restarted = notifiers(jira, clock, reopen_transition="Reopen", reopen_duration="7d")
    state_search = await restarted.notify(make_notification(seq=2, repeat=True, created_at=clock()), {})
    assert state_search["action"] == "wont_fix" and state_search["issue"] == key
    issue = jira.issue(key)
    assert issue.status == "Done" and issue.resolution == "Won't Fix" and jira.comments(key) == []
    assert len(jira.issues()) == 1 and [t.name for t in jira.transitions_applied()] == ["(set Done)"]

    clock.advance(8 * DAY)
    state3 = await notifier.notify(make_notification(seq=3, repeat=True, created_at=clock()), state2)
    assert state3["action"] == "created" and state3["issue"] != key and len(jira.issues()) == 2


async def test_environment_qualifies_the_dedup_key(jira, clock, notifiers):
    prod = await notifiers(jira, clock, environment="prod").notify(make_notification(), {})
    clock.advance(60)
    staging = await notifiers(jira, clock, environment="staging").notify(make_notification(), {})
    assert prod["issue"] != staging["issue"] and prod["dedup_key"] != staging["dedup_key"]
    assert len(jira.issues()) == 2


async def test_dedup_key_in_a_custom_field_instead_of_a_label(jira, clock, notifiers):
    notifier = notifiers(jira, clock, dedup_field="customfield_10050", labels=["relay"])
    state = await notifier.notify(make_notification(), {})
    issue = jira.issue(state["issue"])
    assert issue.labels == ["relay"] and issue.custom["customfield_10050"] == dedup_key(GROUP_KEY)
    clock.advance(31)
    state2 = await notifiers(jira, clock, dedup_field="customfield_10050").notify(
        make_notification(seq=2, repeat=True, created_at=clock()), {}
    )
    assert state2["issue"] == issue.key and len(jira.issues()) == 1
    path = "search/jql" if jira.flavor == "cloud" else "^search$"
    assert "cf[10050] ~" in jira.requests("POST", path)[-1].body["jql"]


async def test_an_unrelated_issue_with_similar_text_is_not_taken(jira, clock, notifiers):
    """With a text dedup field Jira's ``~`` is fuzzy; relay checks the exact value of what the search returns."""
    notifier = notifiers(jira, clock, dedup_field="customfield_10050")
    other = dedup_key("another group")
    await notifiers(jira, clock, dedup_field="customfield_10050").notify(
        make_notification(group_key="another group"), {}
    )
    jira.issues()[0].custom["customfield_10050"] = f"{other} {dedup_key(GROUP_KEY)}x"
    clock.advance(31)
    state = await notifier.notify(make_notification(), {})
    assert state["action"] == "created" and len(jira.issues()) == 2
