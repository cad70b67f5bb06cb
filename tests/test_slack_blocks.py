"""Slack message rendering (``relay.notify.slack.blocks`` / ``slack_format``): every message is valid per slack-sdk's
block models and Slack's limits (checked by the fake Slack's validator), shows the figures that crossed with units,
the severity colour, links, the silence hint and the fingerprint."""

from __future__ import annotations

import shlex

import pytest
from slack_sdk.models.blocks import Block

from relay.alert import Alert, AlertState
from relay.notify.slack import format as fmt
from relay.notify.slack.blocks import (
    MAX_BLOCKS,
    group_message,
    normalize_mention,
    ping_message,
    resolved_note,
    silence_command,
    thread_update,
)
from tests.fakes.slack_payload import check_message
from tests.fakes.slack_samples import (
    budget_alert,
    error_rate_alert,
    notification,
    resolved,
    spike_alert,
    threshold_alert,
)


def blocks_of(msg: dict) -> list[dict]:
    """Top-level blocks followed by every attachment's blocks."""
    out = list(msg.get("blocks") or [])
    for att in msg.get("attachments") or []:
        out += att["blocks"]
    return out


def valid(msg: dict) -> dict:
    """Assert ``msg`` passes Slack's checks (slack-sdk block models + limits) and has a text fallback."""
    check_message(msg)  # raises PayloadError(invalid_blocks / msg_too_long / no_text)
    assert msg["text"].strip()
    for b in blocks_of(msg):
        assert Block.parse(b) is not None, b
    return msg


def content(msg: dict) -> str:
    """``text`` and every text string in the blocks, newline-joined."""
    parts = [msg["text"]]

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                parts.append(node["text"])
            for v in node.values():
                walk(v) if isinstance(v, (dict, list)) else None
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(blocks_of(msg))
    return "\n".join(parts)


def header(msg: dict) -> str:
    """Text of the first header block."""
    return next(b["text"]["text"] for b in blocks_of(msg) if b["type"] == "header")


def test_budget_alert_message():
    a = budget_alert()
    msg = valid(group_message(notification([a]), mention="<!subteam^S0ONCALL>"))
    att = msg["attachments"][0]
    assert att["color"] == "#D92D20"
    assert header(msg) == ":red_circle: [FIRING:1] TeamBudget · team.id=platform"
    text = content(msg)
    assert (
        "*$812.40* of *$1,000.00* (81.2%) · threshold 80% · forecast *$1,240.00* (limit reached <!date^1750518400^"
        in text
    )
    assert "*Input tokens*\n1,234,567" in text
    assert (
        "*Window*\nmonth (Europe/Berlin) since <!date^1748790400^{date_short_pretty} {time}|2025-06-01 15:06 UTC>"
        in text
    )
    for hidden in ("Window start", "Window end", "Projected", "Threshold percent", "Percent"):
        assert f"*{hidden}*" not in text
    assert "Team platform spent 81% of its monthly budget" in text
    assert "Spend is rising faster than usual." in text
    assert "<https://langfuse.example.com/project/p/sessions/s-1|Langfuse session>" in text
    assert "<https://runbooks.example.com/budget|Runbook>" in text
    assert f"fingerprint `{a.fingerprint}`" in text
    assert (
        "relay silence add 'alertname=\"TeamBudget\"' 'team.id=\"platform\"' --duration 2h "
        "--comment 'acknowledged in Slack'"
    ) in text
    assert msg["text"].startswith("<!subteam^S0ONCALL> [FIRING:1] TeamBudget")


def test_error_rate_alert_message():
    msg = valid(group_message(notification([error_rate_alert()]), mention="<!here>"))
    assert msg["attachments"][0]["color"] == "#F79009"
    text = content(msg)
    assert "*12.5%* failed (25 of 200) · threshold 5%" in text
    assert "Min count" not in text and "Count threshold" not in text
    assert "<https://langfuse.example.com/project/p/traces/t-1|Langfuse trace>" in text
    assert "last 10m" in text
    assert "<!here>" not in msg["text"]  # the mention is for critical alerts only


def test_threshold_alert_message_uses_unit_annotation():
    msg = valid(group_message(notification([threshold_alert()])))
    assert msg["attachments"][0]["color"] == "#2E90FA"
    text = content(msg)
    assert "*1,234,567* · threshold 1,000,000" in text
    assert "*Count*\n140" in text
    assert "*user.email*\nalice@example.com" in text


def test_spike_alert_message():
    text = content(valid(group_message(notification([spike_alert()]))))
    assert "*$3,840.00* vs baseline $1,200.00 (×3.2, z 4.1) · threshold ×3" in text
    assert "*Stddev*\n$640.00" in text
    text = content(valid(group_message(notification([spike_alert(method="zscore")]))))
    assert "(×3.2, z 4.1) · threshold z 3.5" in text


def test_error_rate_count_rule_and_budget_without_forecast():
    a = error_rate_alert(annotations={"summary": "429s"})
    a.values.update({"threshold": 0.0, "count_threshold": 5.0, "failed": 7.0, "total": 40.0})
    assert "*7 failed* of 40 · threshold 5 failures" in content(valid(group_message(notification([a]))))
    b = budget_alert()
    b.values.update({"forecast": b.values["spend"], "projected_exceeded_at": 0.0})
    text = content(valid(group_message(notification([b]))))
    assert "forecast" not in text and "limit reached" not in text
    assert "*Projected exceeded at*" not in text


def test_resolved_look_is_green_without_silence_hint():
    a = resolved(budget_alert())
    msg = valid(group_message(notification([a]), mention="<!here>"))
    assert msg["attachments"][0]["color"] == "#12B76A"
    assert header(msg) == ":white_check_mark: [RESOLVED] TeamBudget · team.id=platform"
    text = content(msg)
    assert "relay silence" not in text
    assert "Last figures: *$812.40* of *$1,000.00*" in text
    assert "after 1h 11m" in text  # fired T0+60, resolved T0+4320
    assert "<!here>" not in msg["text"]


def test_group_of_many_alerts_is_cut_to_slack_limits():
    alerts = [
        budget_alert(
            team="platform",
            severity="warning",
            labels={"alertname": "TeamBudget", "severity": "warning", "team.id": "platform", "user": f"u{i:03d}"},
        )
        for i in range(120)
    ]
    alerts[7] = budget_alert(
        labels={"alertname": "TeamBudget", "severity": "critical", "team.id": "platform", "user": "boss"}
    )
    msg = valid(group_message(notification(alerts, group_labels={"team.id": "platform"}, truncated_alerts=30)))
    blocks = blocks_of(msg)
    assert len(blocks) <= MAX_BLOCKS
    sections = [b for b in blocks if b["type"] == "section" and "text" in b]
    shown = len(sections)
    assert 40 <= shown < 120
    assert f"+{120 - shown + 30} more alerts in this group" in content(msg)
    assert msg["attachments"][0]["color"] == "#D92D20"  # the worst severity colours the group
    assert "`user=boss`" in sections[0]["text"]["text"]  # critical first
    assert header(msg).startswith(":red_circle: [FIRING:120] TeamBudget")


def test_long_texts_are_truncated_and_escaped():
    a = budget_alert(
        labels={"alertname": "X" * 300, "severity": "warning", "team.id": "<b>&co</b>"},
        annotations={"summary": "s" * 5000, "description": "d" * 10_000},
    )
    msg = valid(group_message(notification([a])))
    assert len(header(msg)) <= 150
    for b in blocks_of(msg):
        if b["type"] == "section" and "text" in b:
            assert len(b["text"]["text"]) <= 3000
    assert "&lt;b&gt;&amp;co&lt;/b&gt;" in content(msg)
    assert "<b>" not in content(msg).replace(header(msg), "")


def test_thread_update_describes_the_change():
    old, new = budget_alert(), error_rate_alert(severity="critical")
    gone = resolved(spike_alert())
    n = notification([old, new, gone], group_labels={}, seq=2)
    msg = valid(thread_update(n, new=[new], resolved=[gone], repeat=False, mention="<!here>"))
    text = content(msg)
    assert ":red_circle: *1 new alert firing*" in text
    assert "*12.5%* failed (25 of 200)" in text
    assert ":white_check_mark: *1 resolved*" in text and "SpendSpike" in text
    assert "2 alerts firing now" in text
    assert msg["text"].startswith("<!here> 1 new alert firing, 1 resolved")


def test_thread_update_repeat_shows_current_figures():
    a = budget_alert()
    msg = valid(
        thread_update(
            notification([a], seq=5, repeat=True, created_at=a.fired_at + 4 * 3600),
            new=[],
            resolved=[],
            repeat=True,
            mention="<!here>",
        )
    )
    text = content(msg)
    assert ":repeat: *Still firing* (reminder), for 4h" in text
    assert "*$812.40* of *$1,000.00* (81.2%)" in text
    assert "<!here>" not in msg["text"]  # no new critical alert: no new ping


def test_resolved_note():
    n = notification([resolved(budget_alert())], seq=3)
    text = content(valid(resolved_note(n)))
    assert ":white_check_mark: *Resolved* after 1h 11m" in text
    assert "*$812.40*" in text


def test_ping_message_is_valid():
    msg = valid(ping_message("oncall", "slack/0", 1_750_000_000))
    assert "oncall" in msg["text"] and "slack/0" in msg["text"]


def test_silence_command_quotes_values():
    cmd = silence_command({"team.id": 'a"b', "alertname": "X"}, "30m")
    assert (
        cmd
        == """relay silence add 'alertname="X"' 'team.id="a\\"b"' --duration 30m --comment 'acknowledged in Slack'"""
    )
    assert shlex.split(cmd)[3:5] == ['alertname="X"', 'team.id="a\\"b"']


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("@here", "<!here>"),
        ("@channel", "<!channel>"),
        ("<!subteam^S1>", "<!subteam^S1>"),
        ("<@U1>", "<@U1>"),
        ("", None),
        (None, None),
    ],
)
def test_normalize_mention(raw, expected):
    assert normalize_mention(raw) == expected


@pytest.mark.parametrize(
    "v, unit, expected",
    [
        (1234.5, "usd", "$1,234.50"),
        (-3, "usd", "-$3.00"),
        (81.24, "percent", "81.2%"),
        (100, "percent", "100%"),
        (0.125, "ratio", "12.5%"),
        (0.0025, "ratio", "0.25%"),
        (1234567, "tokens", "1,234,567"),
        (0.85, "seconds", "850ms"),
        (45, "seconds", "45s"),
        (725, "seconds", "12m 5s"),
        (4320, "seconds", "1h 12m"),
        (273600, "seconds", "3d 4h"),
        (850, "ms", "850ms"),
        (3.25, "multiplier", "×3.25"),
        (4.14, "zscore", "z 4.1"),
        (1_750_000_000, "time", "2025-06-15 15:06 UTC"),
        (1234.5, "number", "1,234.5"),
        (0.01234, "number", "0.0123"),
    ],
)
def test_format_value(v, unit, expected):
    assert fmt.format_value(v, unit) == expected


@pytest.mark.parametrize(
    "name, unit",
    [
        ("spend", "usd"),
        ("cost_usd", "usd"),
        ("percent", "percent"),
        ("error_rate", "ratio"),
        ("ratio", "ratio"),
        ("input_tokens", "tokens"),
        ("latency_ms", "ms"),
        ("duration_seconds", "seconds"),
        ("exceeds_at", "time"),
        ("window_start", "time"),
        ("count", "count"),
        ("failed", "count"),
        ("tool_calls", "count"),
        ("count_threshold", "count"),
        ("zscore", "zscore"),
        ("threshold_percent", "percent"),
        ("foo", "number"),
    ],
)
def test_unit_of(name, unit):
    assert fmt.unit_of(name) == unit


def test_alert_kind_inference():
    assert fmt.alert_kind(budget_alert()) == "budget"
    assert fmt.alert_kind(error_rate_alert()) == "error_rate"
    assert fmt.alert_kind(threshold_alert()) == "threshold"
    assert fmt.alert_kind(spike_alert()) == "spike"
    bare = Alert(labels={"alertname": "X"}, state=AlertState.FIRING, value=7.5, values={"threshold": 5})
    assert fmt.headline(bare)[0] == "*7.5* · threshold 5"


def test_group_of_different_rules_without_group_labels():
    alerts = [budget_alert(), error_rate_alert(severity="critical"), resolved(spike_alert()), threshold_alert()]
    msg = valid(group_message(notification(alerts, group_labels={})))
    assert header(msg) == ":red_circle: [FIRING:3] ApiErrorRate, SpendSpike, TeamBudget +1"
    text = content(msg)
    assert "relay silence" not in text  # no label is common to all: no single silence can match the group
    assert "*Alerts*\n3 firing, 1 resolved" in text
    sections = [b["text"]["text"] for b in blocks_of(msg) if b["type"] == "section" and "text" in b]
    assert sections[0].startswith(":red_circle: *ApiErrorRate*")  # critical first, resolved last
    assert sections[-1].startswith(":white_check_mark: *SpendSpike*") and "after 1h 11m" in sections[-1]
