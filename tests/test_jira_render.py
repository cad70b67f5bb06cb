"""Jira config validation, relay markup → ADF / wiki markup, and the template context (no network)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from relay.notify.jira.adf import adf_to_text, markup_to_adf, markup_to_wiki, truncate
from relay.notify.jira.config import JiraConfig
from relay.notify.jira.notifier import dedup_key
from relay.notify.jira.templates import DEFAULT_DESCRIPTION, render, severity_of, template_context
from tests.fakes.jira_model import adf_problem
from tests.fakes.jira_support import SESSION_URL, make_alert, make_notification

CLOUD = {
    "flavor": "cloud",
    "api_url": "https://example.atlassian.net",
    "user": "a@example.com",
    "api_token": "sekrit-cloud-token",
    "project": "OPS",
}
DC = {
    "flavor": "datacenter",
    "api_url": "https://jira.example.com/rest/api/2/",
    "personal_access_token": "sekrit-dc-pat",
    "project": "OPS",
}


def test_config_defaults_and_flavours():
    cloud = JiraConfig(**CLOUD)
    assert cloud.api_version == "3" and cloud.send_resolved and cloud.issue_type == "Bug"
    assert cloud.priority_map == {"critical": "Highest", "warning": "High", "info": "Medium"}
    assert cloud.reopen_duration == 0 and cloud.wont_fix_resolution == "Won't Fix" and cloud.search_lag == 30
    dc = JiraConfig(**DC, reopen_transition="Reopen", reopen_duration="7d", timeout="2s")
    assert dc.api_url == "https://jira.example.com" and dc.api_version == "2"
    assert dc.reopen_duration == 7 * 86400 and dc.timeout == 2
    assert "sekrit" not in repr(dc) + repr(cloud)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"api_token": None}, "flavor cloud needs user"),
        ({"user": ""}, "flavor cloud needs user"),
        ({"personal_access_token": "x"}, "personal_access_token is for flavor datacenter"),
        ({"flavor": "datacenter"}, "flavor datacenter needs personal_access_token"),
        ({"api_url": "example.atlassian.net"}, "api_url must be an http(s) URL"),
        ({"reopen_duration": "1d"}, "reopen_duration needs reopen_transition"),
        ({"dedup_field": "labels"}, "dedup_field must be a custom field id"),
        ({"custom_fields": {"summary": "x"}}, "'summary' is set by relay"),
        ({"custom_fields": {"customfield_1": "{{ oops"}}, "custom_fields.customfield_1: invalid template"),
        ({"summary": "{% if %}"}, "summary: invalid template"),
        ({"labels": ["{{ a }"]}, "labels[0]: invalid template"),
        ({"project": ""}, "project"),
        ({"unknown_key": 1}, "unknown_key"),
    ],
)
def test_config_rejects(overrides, message):
    with pytest.raises(ValidationError) as err:
        JiraConfig(**{**CLOUD, **overrides})
    assert message in str(err.value)


def test_dedup_key_is_stable_label_safe_and_environment_qualified():
    key = dedup_key('{}:{alertname="X", team="a b"}')
    assert key == dedup_key('{}:{alertname="X", team="a b"}')
    assert key.startswith("relay-") and len(key) == 38 and " " not in key
    assert dedup_key("g", "prod") != dedup_key("g", "staging") != dedup_key("g")


def test_markup_to_adf_builds_a_valid_document():
    doc = markup_to_adf(
        "## Title **x**\n\nline one\nline `two`\n\n- item [Langfuse](https://l.example/s/1)\n"
        "* bare https://r.example/run.\n\ntrailing"
    )
    assert adf_problem(doc) is None
    assert [n["type"] for n in doc["content"]] == ["heading", "paragraph", "bulletList", "paragraph"]
    assert doc["content"][0]["attrs"] == {"level": 2}
    assert doc["content"][0]["content"][1] == {"type": "text", "text": "x", "marks": [{"type": "strong"}]}
    para = doc["content"][1]["content"]
    assert {"type": "hardBreak"} in para and {"type": "text", "text": "two", "marks": [{"type": "code"}]} in para
    items = doc["content"][2]["content"]
    link = items[0]["content"][0]["content"][1]
    assert link == {
        "type": "text",
        "text": "Langfuse",
        "marks": [{"type": "link", "attrs": {"href": "https://l.example/s/1"}}],
    }
    bare = items[1]["content"][0]["content"][1]
    assert bare["marks"][0]["attrs"]["href"] == "https://r.example/run"  # the full stop is not part of the URL
    assert adf_to_text(doc).splitlines()[:3] == ["Title x", "line one", "line two"]
    assert adf_problem(markup_to_adf("")) is None


def test_markup_to_wiki():
    wiki = markup_to_wiki("## Title\n\n- **Value:** 1 [Langfuse](https://l.example/s/1)\n\nuser_id=a*b {x}")
    assert wiki == "h2. Title\n\n* *Value:* 1 [Langfuse|https://l.example/s/1]\n\nuser\\_id=a\\*b \\{x\\}"


def test_truncate_counts_characters():
    assert truncate("abcdef", 4) == "abc…" and truncate("abc", 4) == "abc"


def test_default_description_has_figures_labels_links_and_runbook():
    n = make_notification(make_alert(1234.5678), make_alert(99.0, user="bob@example.com", severity="warning"))
    ctx = template_context(n, environment_name="prod", dedup_key="relay-x")
    assert ctx["severity"] == "critical" and ctx["alertname"] == "BudgetExceeded" and ctx["scope"] == "team=payments"
    text = render(DEFAULT_DESCRIPTION, ctx)
    for expected in (
        "1,234.57",
        "**spend:** 99",
        "bob@example.com",
        f"[Langfuse session]({SESSION_URL})",
        "**Runbook:** https://runbooks.example.com/budget",
        "month (UTC)",
    ):
        assert expected in text
    assert adf_problem(markup_to_adf(text)) is None


def test_template_alerts_expose_values_as_attribute():
    ctx = template_context(make_notification(make_alert(5.0)))
    assert render("{% for a in alerts %}{{ a.values.limit }}|{{ a['values'].spend }}{% endfor %}", ctx) == "100.0|5.0"


def test_severity_prefers_firing_alerts():
    from relay.alert import AlertState

    n = make_notification(
        make_alert(severity="info"), make_alert(severity="critical", state=AlertState.RESOLVED, ends_at=1.0, user="b")
    )
    assert severity_of(n) == "info"
