"""Slack message rendering: Block Kit payloads (plain dicts, ready for ``chat.postMessage`` / ``chat.update`` /
an incoming webhook) for an alert group, its thread updates, its resolved note and a test message.

Layout: the group message is a top-level ``text`` (the notification / fallback
string, with the critical mention) and **one attachment** whose ``color`` is the severity colour (critical
``#D92D20``, warning ``#F79009``, info ``#2E90FA``, resolved ``#12B76A``) and whose ``blocks`` hold a header
(emoji, ``[FIRING:n]`` / ``[RESOLVED]``, alert name and group scope), the key figures (see
:mod:`relay.notify.slack.format`), the window, labels, summary / description, links (Langfuse session or trace,
runbook, rule) and a context line with the fingerprint and a silence hint
(``relay silence add 'alertname="…"' 'team.id="…"' --duration 2h --comment '…'``, ready to paste). A group of several alerts gets one compact
section per alert, cut with a ``+N more`` line to stay within Slack's limits.

Slack limits honoured (https://docs.slack.dev/reference/block-kit/blocks): ≤ 50 blocks per message, header
``plain_text`` ≤ 150 chars, section text ≤ 3000 chars, ≤ 10 fields of ≤ 2000 chars, context ≤ 10 elements,
message ``text`` ≤ 40,000 chars (https://docs.slack.dev/reference/methods/chat.postMessage).
Links are ``mrkdwn`` links rather than buttons: URL buttons need an interactivity endpoint, without which
Slack flags every click with a warning.
"""

from __future__ import annotations

import shlex
from typing import Any

from relay.alert import ALERTNAME, Alert, AlertState, Notification
from relay.notify.slack.format import (
    duration,
    escape,
    extra_figures,
    figures_line,
    headline,
    link,
    slack_date,
    truncate,
)

__all__ = [
    "SEVERITY_COLORS",
    "RESOLVED_COLOR",
    "MAX_BLOCKS",
    "HEADER_MAX",
    "SECTION_TEXT_MAX",
    "FIELD_TEXT_MAX",
    "MAX_FIELDS",
    "TEXT_MAX",
    "group_severity",
    "group_title",
    "silence_command",
    "alert_links",
    "group_message",
    "thread_update",
    "resolved_note",
    "ping_message",
    "normalize_mention",
]

SEVERITY_COLORS = {"critical": "#D92D20", "warning": "#F79009", "info": "#2E90FA"}
RESOLVED_COLOR = "#12B76A"
SEVERITY_EMOJI = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}
RESOLVED_EMOJI = ":white_check_mark:"
_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}

MAX_BLOCKS = 50
HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
MAX_FIELDS = 10
CONTEXT_TEXT_MAX = 2000
TEXT_MAX = 40_000
#: Block budget of a group message besides the per-alert sections: header, group fields, "+N more", 2 contexts.
_FIXED_BLOCKS = 5
#: Lines per thread-update section before "+N more".
_MAX_LINES = 20
#: Labels never shown as fields (they are in the header / colour already).
_HIDDEN_LABELS = {ALERTNAME, "severity"}


def normalize_mention(mention: str | None) -> str | None:
    """Slack syntax for a mention: ``@here``/``@channel``/``@everyone`` → ``<!here>``…; ``<…>`` forms (``<!subteam^S1>``,
    ``<@U1>``) unchanged; None/empty → None."""
    if not mention or not mention.strip():
        return None
    m = mention.strip()
    if m.lower() in ("@here", "@channel", "@everyone", "here", "channel", "everyone"):
        return f"<!{m.lstrip('@').lower()}>"
    return m


def group_severity(alerts: list[Alert]) -> str:
    """The highest ``severity`` among ``alerts`` (``critical`` > ``warning`` > ``info``; unknown values count as
    ``warning``); ``warning`` for an empty list."""
    best = "warning" if not alerts else "info"
    for a in alerts:
        sev = a.severity if a.severity in _SEVERITY_RANK else "warning"
        if _SEVERITY_RANK[sev] > _SEVERITY_RANK[best]:
            best = sev
    return best


def _scope(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in _HIDDEN_LABELS)


def group_title(n: Notification) -> str:
    """``[FIRING:2] BudgetExceeded · team.id=platform`` / ``[RESOLVED] …`` (Alertmanager's default title plus the
    group-label scope; alerts of several rules show up to three alert names). Plain text, not escaped."""
    name = n.common_labels.get(ALERTNAME) or n.group_labels.get(ALERTNAME)
    if not name:
        names = sorted({a.name for a in n.alerts if a.name})
        name = ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "") or "alerts"
    status = f"[FIRING:{len(n.firing)}]" if n.firing else "[RESOLVED]"
    scope = _scope(n.group_labels)
    return f"{status} {name}" + (f" · {scope}" if scope else "")


def _quote(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def silence_command(labels: dict[str, str], duration_: str = "2h", comment: str = "acknowledged in Slack") -> str:
    """A ``relay silence add`` command muting ``labels`` (``alertname`` first), ready to paste into a POSIX shell:
    every matcher and the required ``--comment`` are shell-quoted, e.g. ``relay silence add
    'alertname="BudgetExceeded"' 'team.id="platform"' --duration 2h --comment 'acknowledged in Slack'``."""
    names = sorted(labels, key=lambda k: (k != ALERTNAME, k))
    matchers = " ".join(shlex.quote(f"{k}={_quote(labels[k])}") for k in names)
    return f"relay silence add {matchers} --duration {duration_} --comment {shlex.quote(comment)}"


def _silence_labels(n: Notification) -> dict[str, str]:
    labels = dict(n.group_labels)
    name = n.common_labels.get(ALERTNAME)
    if name:
        labels[ALERTNAME] = name
    if len(labels) <= (1 if name else 0):  # grouping by nothing: the alerts' common labels
        labels.update({k: v for k, v in n.common_labels.items() if k != "severity"})
    return labels


def alert_links(alert: Alert) -> list[tuple[str, str]]:
    """``(title, url)`` pairs of an alert: its ``links`` (Langfuse session/trace, Jira…), the ``runbook_url``
    annotation and the rule's ``generator_url``; http(s) URLs only, duplicates dropped."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    candidates = list(alert.links.items())
    if alert.annotations.get("runbook_url"):
        candidates.append(("Runbook", alert.annotations["runbook_url"]))
    if alert.generator_url:
        candidates.append(("Rule", alert.generator_url))
    for title, url in candidates:
        if url.startswith(("http://", "https://")) and url not in seen and len(url) <= 3000:
            seen.add(url)
            out.append((title, url))
    return out


def _mrkdwn(text: str, limit: int = SECTION_TEXT_MAX) -> dict[str, str]:
    return {"type": "mrkdwn", "text": truncate(text, limit) or " "}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _context(*texts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_mrkdwn(t, CONTEXT_TEXT_MAX) for t in texts if t][:10]}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": truncate(text, HEADER_MAX), "emoji": True}}


def _field(label: str, value: str) -> dict[str, str]:
    return _mrkdwn(f"*{escape(label)}*\n{value}", FIELD_TEXT_MAX)


def _since(alert: Alert) -> float:
    return alert.fired_at or alert.active_at


def _alert_emoji(alert: Alert) -> str:
    if alert.state is AlertState.RESOLVED:
        return RESOLVED_EMOJI
    return SEVERITY_EMOJI.get(alert.severity, SEVERITY_EMOJI["warning"])


def _timing(alert: Alert, now: float) -> str:
    since = _since(alert)
    if alert.state is AlertState.RESOLVED:
        end = alert.ends_at or now
        text = f"Resolved {slack_date(end)}"
        return text + (f" after {duration(end - since)}" if since else "")
    return f"Firing since {slack_date(since)}" if since else ""


def _window_text(alert: Alert) -> str:
    """The window description, with its start when the rule reported one (``values.window_start``)."""
    text = escape(alert.window)
    start = alert.values.get("window_start", 0.0)
    if start > 0:
        text += (" " if text else "") + f"since {slack_date(start)}"
    return text


def _links_text(alert: Alert) -> str:
    return " · ".join(link(url, title) for title, url in alert_links(alert))


# ------------------------------------------------------------------------------------------------ group message
def _single_alert_blocks(n: Notification, alert: Alert, silence: str | None) -> list[dict[str, Any]]:
    head, used = headline(alert)
    summary = alert.annotations.get("summary", "")
    blocks: list[dict[str, Any]] = []
    if alert.state is AlertState.RESOLVED:
        head = "Last figures: " + head
    top = (f"*{escape(summary)}*\n" if summary else "") + head
    blocks.append(_section(top))
    fields = []
    if alert.window:
        fields.append(_field("Window", _window_text(alert)))
    fields.append(_field("Severity", escape(alert.severity)))
    fields += [_field(label, value) for label, value in extra_figures(alert, used)]
    label_items = [(k, v) for k, v in sorted(alert.labels.items()) if k not in _HIDDEN_LABELS]
    room = MAX_FIELDS - len(fields)
    fields += [_field(k, escape(v)) for k, v in label_items[: max(room, 0)]]
    blocks.append({"type": "section", "fields": fields[:MAX_FIELDS]})
    overflow = label_items[max(room, 0) :]
    description = alert.annotations.get("description", "")
    if description and description != summary:
        blocks.append(_section(escape(description)))
    links = _links_text(alert)
    if links:
        blocks.append(_section(":link: " + links))
    facts = [_timing(alert, n.created_at), f"fingerprint `{alert.fingerprint}`"]
    if alert.rule:
        facts.append(f"rule `{escape(alert.rule)}`")
    if overflow:
        facts.append("labels " + escape(", ".join(f"{k}={v}" for k, v in overflow)))
    blocks.append(_context(" · ".join(f for f in facts if f)))
    if silence:
        blocks.append(_context(silence))
    return blocks


def _compact_alert_text(alert: Alert, common: dict[str, str], now: float) -> str:
    own = {k: v for k, v in alert.labels.items() if k not in _HIDDEN_LABELS and common.get(k) != v}
    labels = " ".join(f"`{escape(k)}={escape(v)}`" for k, v in sorted(own.items()))
    lines = [f"{_alert_emoji(alert)} *{escape(alert.name or 'alert')}*" + (f" {labels}" if labels else "")]
    if alert.annotations.get("summary"):
        lines.append(escape(alert.annotations["summary"]))
    lines.append(figures_line(alert))
    facts = [_window_text(alert), _timing(alert, now), _links_text(alert), f"`{alert.fingerprint}`"]
    lines.append(" · ".join(f for f in facts if f))
    return "\n".join(lines)


def _multi_alert_blocks(n: Notification, silence: str | None) -> list[dict[str, Any]]:
    common = n.common_labels
    fields = [_field(k, escape(v)) for k, v in sorted(n.group_labels.items()) if k not in _HIDDEN_LABELS]
    windows = {a.window for a in n.alerts if a.window}
    if len(windows) == 1:
        fields.append(_field("Window", escape(windows.pop())))
    fields.append(_field("Alerts", f"{len(n.firing)} firing, {len(n.resolved)} resolved"))
    blocks: list[dict[str, Any]] = [{"type": "section", "fields": fields[:MAX_FIELDS]}]
    # firing first (most severe first), then resolved
    ordered = sorted(
        n.alerts,
        key=lambda a: (a.state is AlertState.RESOLVED, -_SEVERITY_RANK.get(a.severity, 1), a.name, a.fingerprint),
    )
    room = MAX_BLOCKS - _FIXED_BLOCKS
    shown = ordered[:room]
    blocks += [_section(_compact_alert_text(a, common, n.created_at)) for a in shown]
    more = len(ordered) - len(shown) + n.truncated_alerts
    if more > 0:
        blocks.append(_context(f"+{more} more alert{'s' if more != 1 else ''} in this group"))
    if silence:
        blocks.append(_context(silence))
    return blocks


def group_message(n: Notification, *, mention: str | None = None, silence_duration: str = "2h") -> dict[str, Any]:
    """The message of an alert group: ``{"text": …, "attachments": [{"color", "fallback", "blocks"}]}``.

    The look follows ``n.status``: firing (severity colour, silence hint) or resolved (green, no hint).
    ``mention`` (Slack syntax, see :func:`normalize_mention`) prefixes ``text`` when a critical alert fires.
    """
    resolved = not n.firing
    title = group_title(n)
    if resolved:
        color, emoji = RESOLVED_COLOR, RESOLVED_EMOJI
    else:
        sev = group_severity(n.firing)
        color, emoji = SEVERITY_COLORS[sev], SEVERITY_EMOJI[sev]
    silence = None
    if not resolved and _silence_labels(n):
        silence = ":no_bell: To silence: `" + escape(silence_command(_silence_labels(n), silence_duration)) + "`"
    if len(n.alerts) == 1 and not n.truncated_alerts:
        body = _single_alert_blocks(n, n.alerts[0], silence)
    else:
        body = _multi_alert_blocks(n, silence)
    blocks = [_header(f"{emoji} {title}")] + body
    # the title only: Slack shows ``text`` above the attachment, whose first section already has the summary
    text = escape(title)
    if mention and not resolved and any(a.severity == "critical" for a in n.firing):
        text = f"{mention} {text}"
    return {
        "text": truncate(text, TEXT_MAX),
        "attachments": [{"color": color, "fallback": truncate(escape(title), 300), "blocks": blocks[:MAX_BLOCKS]}],
    }


# ------------------------------------------------------------------------------------------------ thread replies
def _lines_section(heading: str, alerts: list[Alert], common: dict[str, str]) -> dict[str, Any]:
    lines = [heading]
    for a in alerts[:_MAX_LINES]:
        own = {k: v for k, v in a.labels.items() if k not in _HIDDEN_LABELS and common.get(k) != v}
        labels = " ".join(f"`{escape(k)}={escape(v)}`" for k, v in sorted(own.items()))
        lines.append(f"• *{escape(a.name or 'alert')}*" + (f" {labels}" if labels else "") + f" — {figures_line(a)}")
    if len(alerts) > _MAX_LINES:
        lines.append(f"… +{len(alerts) - _MAX_LINES} more")
    return _section("\n".join(lines))


def _plural(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def thread_update(
    n: Notification, *, new: list[Alert], resolved: list[Alert], repeat: bool, mention: str | None = None
) -> dict[str, Any]:
    """A thread reply describing what changed in a still-firing group: ``new`` alerts firing, alerts
    ``resolved`` since the last notification, and — for a ``repeat`` reminder or any other update — the current
    figures of every firing alert. Returns ``{"text", "blocks"}``; ``mention`` prefixes ``text`` when a new
    critical alert fires."""
    common = n.common_labels
    blocks: list[dict[str, Any]] = []
    summary: list[str] = []
    if new:
        emoji = SEVERITY_EMOJI[group_severity(new)]
        blocks.append(_lines_section(f"{emoji} *{_plural(len(new), 'new alert')} firing*", new, common))
        summary.append(f"{_plural(len(new), 'new alert')} firing")
    if resolved:
        blocks.append(_lines_section(f"{RESOLVED_EMOJI} *{len(resolved)} resolved*", resolved, common))
        summary.append(f"{len(resolved)} resolved")
    if repeat or not (new or resolved):
        heading = ":repeat: *Still firing* (reminder)" if repeat else ":arrows_counterclockwise: *Update*"
        since = min((_since(a) for a in n.firing if _since(a)), default=0.0)
        if since and n.created_at:
            heading += f", for {duration(n.created_at - since)}"
        blocks.append(_lines_section(heading + " — current figures:", n.firing, common))
        summary.append("still firing" if repeat else "updated")
    blocks.append(_context(f"{_plural(len(n.firing), 'alert')} firing now · {escape(group_title(n))}"))
    text = escape(f"{', '.join(summary).capitalize()}: {group_title(n)}")
    if mention and any(a.severity == "critical" for a in new):
        text = f"{mention} {text}"
    return {"text": truncate(text, TEXT_MAX), "blocks": blocks[:MAX_BLOCKS]}


def resolved_note(n: Notification) -> dict[str, Any]:
    """The short thread reply posted when the whole group resolved: how long it fired and the last figures of the
    alerts resolved now. Returns ``{"text", "blocks"}``."""
    starts = [_since(a) for a in n.alerts if _since(a)]
    ends = [a.ends_at for a in n.alerts if a.ends_at is not None and a.ends_at > 0] or [n.created_at]
    last_end = max(ends)
    head = f"{RESOLVED_EMOJI} *Resolved*"
    if starts and last_end:
        head += f" after {duration(last_end - min(starts))}"
    blocks = [_lines_section(head + ". Last figures:" if n.alerts else head, n.alerts, n.common_labels)]
    text = escape(f"Resolved: {group_title(n)}")
    return {"text": truncate(text, TEXT_MAX), "blocks": blocks}


def ping_message(receiver: str, integration: str, now: float) -> dict[str, Any]:
    """A test notification (for ``relay notify test``): ``{"text", "attachments"}`` in the info colour."""
    text = f"relay test notification for receiver {receiver} ({integration})"
    blocks = [
        _header(":bell: relay test notification"),
        _section(
            f"This is a test from receiver *{escape(receiver)}*, integration `{escape(integration)}`. "
            "If you can read this, relay can post alerts here."
        ),
        _context(f"Sent {slack_date(now)}"),
    ]
    return {
        "text": escape(text),
        "attachments": [{"color": SEVERITY_COLORS["info"], "fallback": escape(text), "blocks": blocks}],
    }
