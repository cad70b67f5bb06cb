"""Render a :class:`~relay.reports.model.Report` as a Slack Block Kit message.

Limits respected (Block Kit, https://docs.slack.dev/reference/block-kit/blocks): at most 50
blocks, header text ≤ 150 characters, section text ≤ 3000, at most 10 section fields of ≤ 2000 characters each,
and a top-level ``text`` fallback (the notification line). ``mrkdwn`` control characters ``&``, ``<``, ``>`` are
escaped in every value taken from the data (https://docs.slack.dev/messaging/formatting-message-text).
"""

from __future__ import annotations

from typing import Any

from relay.reports import fmt
from relay.reports.headlines import Headline, headlines
from relay.reports.model import Breakdown, Report

__all__ = ["render_slack", "MAX_BLOCKS", "MAX_SECTION_TEXT", "MAX_HEADER_TEXT"]

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_FIELD_TEXT = 2000


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(s: str, limit: int) -> str:
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, MAX_SECTION_TEXT)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(text, MAX_SECTION_TEXT)}]}


def _with_change(h: Headline) -> str:
    ch = h.change
    return h.show(h.current) + ("" if ch == fmt.NA else f" ({ch})")


def _breakdown(title: str, rows: list[Breakdown], noun: str) -> dict[str, Any] | None:
    if not rows:
        return None
    lines = [f"*{_esc(title)}*"]
    for b in rows:
        ch = fmt.change(b.cost_nanos, b.prev_cost_nanos)
        extra = f", {fmt.count(b.sessions)} sessions" if b.sessions is not None else ""
        vs = "" if ch == fmt.NA else f" ({ch} vs last {noun})"
        lines.append(f"• `{_esc(b.key)}` {fmt.usd(b.cost_nanos)}{vs}" + f" — {fmt.count(b.api_calls)} calls{extra}")
    return _section("\n".join(lines))


def _budget_alert_blocks(r: Report) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if r.budgets is not None:
        if not r.budgets:
            out.append(_section("*Budgets*\nNo budget rules apply to this scope."))
        else:
            icon = {"ok": ":large_green_circle:", "forecast_over": ":large_orange_circle:", "over": ":red_circle:"}
            lines = ["*Budgets*"]
            for b in r.budgets:
                top = f"; top {_esc(b.group)}, {b.groups_over} of {b.groups} over" if b.group else ""
                lines.append(
                    f"{icon.get(b.status, '')} *{_esc(b.name)}* ({_esc(b.scope)}, {_esc(b.window)}{top}): "
                    f"{fmt.usd(b.spend_nanos)} of {fmt.usd(b.limit_nanos)} ({fmt.percent(b.used, 0)}), "
                    f"burn {fmt.usd(b.burn_rate_nanos_per_day)}/day, forecast {fmt.usd(b.forecast_nanos)}"
                )
            out.append(_section("\n".join(lines)))
    if r.alerts is not None:
        a = r.alerts
        lines = [
            f"*Alerts*\n{a.fired} fired, {a.resolved} resolved, {len(a.still_firing)} still firing; "
            f"Jira: {a.jira_opened} opened, {a.jira_resolved} resolved, {len(a.jira_open)} open"
            + (f" ({_esc(', '.join(a.jira_open[:10]))})" if a.jira_open else "")
        ]
        lines += [
            f"• :rotating_light: {_esc(name)} ({_esc(sev)}) since {_esc(since)}"
            for name, sev, since in a.still_firing[:10]
        ]
        out.append(_section("\n".join(lines)))
    return out


def render_slack(r: Report) -> dict[str, Any]:
    """``{"text": fallback, "blocks": [...]}`` for ``chat.postMessage`` / an incoming webhook."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(r.title, MAX_HEADER_TEXT), "emoji": True}}
    ]
    when = f"{r.start[:10]} → {r.end[:10]} ({_esc(r.timezone)})"
    if r.late:
        when += " · :hourglass: *posted late* (relay could not post at the scheduled time)"
    blocks.append(_context(when))
    heads = {h.key: h for h in headlines(r)}
    if r.empty:
        msg = r.notes[0] if r.notes else "No usage recorded."
        blocks.append(_section(_esc(msg)))
        blocks += _budget_alert_blocks(r)
        return {"text": f"{r.title}: no usage recorded", "blocks": blocks[:MAX_BLOCKS]}

    c = r.current
    tok = (
        f"{fmt.tokens(c.total_tokens)} (in {fmt.tokens(c.input_tokens)}, out {fmt.tokens(c.output_tokens)}, "
        f"cache read {fmt.tokens(c.cache_read_tokens)}, cache write {fmt.tokens(c.cache_creation_tokens)})"
    )
    if c.has_metrics:
        code = (
            f"+{fmt.count(c.lines_added)} / −{fmt.count(c.lines_removed)} lines, {fmt.count(c.commits)} commits, "
            f"{fmt.count(c.pull_requests)} PRs; {fmt.usd(c.cost_per_pr_nanos)} per PR"
        )
    else:
        code = "not reported (no Claude Code metrics exported)"
    if c.tool_records:
        tools = (
            f"{_with_change(heads['tool_calls'])}; success {fmt.percent(c.tool_success_rate)}, "
            f"accepted {fmt.percent(c.accept_rate)}"
        )
    else:
        tools = "no tool events recorded"
    fields = [
        f"*Cost*\n{_with_change(heads['cost'])}",
        f"*Tokens*\n{tok}",
        f"*Cache hit ratio*\n{_with_change(heads['cache_hit_ratio'])}",
        f"*Sessions / users*\n{_with_change(heads['sessions'])} sessions, {_with_change(heads['active_users'])} users",
        f"*Interactions*\n{_with_change(heads['interactions'])}",
        f"*API calls*\n{_with_change(heads['api_calls'])}; errors {_with_change(heads['api_error_rate'])}",
        f"*Tool calls*\n{tools}",
        f"*Code*\n{code}",
    ]
    blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(f, MAX_FIELD_TEXT)} for f in fields]})
    blocks.append({"type": "divider"})
    for blk in (_breakdown("Cost by model", r.by_model, r.noun), _breakdown("Cost by user", r.by_user, r.noun)):
        if blk:
            blocks.append(blk)
    if r.group_label and r.by_group and not all(g.key == "(none)" for g in r.by_group):
        lines = [f"*Cost by {_esc(r.group_label)}*"]
        for g in r.by_group:
            ch = fmt.change(g.cost_nanos, g.prev_cost_nanos)
            lines.append(
                f"• `{_esc(g.key)}` {fmt.usd(g.cost_nanos)}"
                + ("" if ch == fmt.NA else f" ({ch})")
                + f" — {fmt.count(g.sessions)} sessions, {fmt.count(g.active_users)} users"
                + (f", mostly {_esc(g.top_model)}" if g.top_model else "")
            )
        blocks.append(_section("\n".join(lines)))
    if r.top_sessions:
        lines = [f"*Top {len(r.top_sessions)} sessions by cost*"]
        for s in r.top_sessions:
            name = f"<{s.url}|{_esc(s.session_id[:13])}>" if s.url else f"`{_esc(s.session_id[:13])}`"
            lines.append(
                f"• {name} {fmt.usd(s.cost_nanos)} — {_esc(s.user or 'unknown user')}, "
                f"{fmt.count(s.interactions)} interactions, {fmt.seconds(s.duration_s)}"
            )
        blocks.append(_section("\n".join(lines)))
    if r.errors:
        lines = ["*Top API errors*"] + [
            f"• {_esc(e.error_class)}"
            + (f" (HTTP {e.status_code})" if e.status_code is not None else "")
            + f": {fmt.count(e.count)}"
            for e in r.errors[:5]
        ]
        blocks.append(_section("\n".join(lines)))
    if r.tools:
        lines = ["*Tools*"] + [
            f"• `{_esc(t.tool)}` {fmt.count(t.calls)} calls, {fmt.percent(t.success_rate)} ok"
            + (f", {fmt.count(t.rejects)} rejected" if t.rejects else "")
            for t in r.tools[:8]
        ]
        blocks.append(_section("\n".join(lines)))
    if r.quality is not None:
        q = r.quality
        lines = ["*Quality*"]
        if q.outcomes:
            lines.append(
                "• outcomes: "
                + ", ".join(
                    f"{k} {fmt.count(q.outcomes[k])}"
                    for k in ("clean", "recovered", "abandoned", "failed")
                    if k in q.outcomes
                )
            )
        for st in [x for x in q.scores if x.level == "session"][:6]:
            ch = "" if st.change is None else f" ({st.change:+.3g} vs previous {r.noun})"
            lines.append(f"• `{_esc(st.name)}` mean {st.mean:.3g} over {fmt.count(st.count)} sessions{ch}")
        for w in q.worst[:3]:
            name = f"<{w.url}|{_esc(w.session_id[:13])}>" if w.url else f"`{_esc(w.session_id[:13])}`"
            lines.append(f"• {w.outcome}: {name} — {_esc(w.user or 'unknown user')}")
        blocks.append(_section(_cut("\n".join(lines), 2900)))
    blocks += _budget_alert_blocks(r)
    if r.notes:
        blocks.append(_context("\n".join(f"ℹ️ {_esc(n)}" for n in r.notes)))
    cost = heads["cost"]
    ch = cost.change
    text = f"{r.title}: {cost.show(cost.current)}" + ("" if ch == fmt.NA else f" ({ch} vs previous {r.noun})")
    return {"text": text, "blocks": blocks[:MAX_BLOCKS]}
