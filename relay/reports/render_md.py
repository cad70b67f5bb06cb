"""Render a :class:`~relay.reports.model.Report` as Markdown (GitHub-flavoured tables) for the command line.

Money in USD with two decimals; ``n/a`` marks a missing source or a change without a previous period; an empty
period renders as a short message (plus budgets and alerts, which do not depend on the period's usage).
"""

from __future__ import annotations

from relay.reports import fmt
from relay.reports.headlines import headlines
from relay.reports.model import Breakdown, Report

__all__ = ["render_markdown"]


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return out + [""]


def _breakdown(title: str, key: str, rows: list[Breakdown], sessions: bool = False) -> list[str]:
    if not rows:
        return []
    head = [key, "cost", "change", "API calls", "tokens"] + (["sessions"] if sessions else [])
    body = [
        [
            b.key,
            fmt.usd(b.cost_nanos),
            fmt.change(b.cost_nanos, b.prev_cost_nanos),
            fmt.count(b.api_calls),
            fmt.tokens(b.tokens),
        ]
        + ([fmt.count(b.sessions)] if sessions else [])
        for b in rows
    ]
    return [f"## {title}", ""] + _table(head, body)


def _budgets_alerts(r: Report) -> list[str]:
    out: list[str] = []
    if r.budgets is not None:
        out += ["## Budgets", ""]
        if not r.budgets:
            out += ["No budget rules apply to this scope.", ""]
        else:
            out += _table(
                ["budget", "scope", "window", "spend", "limit", "used", "burn/day", "forecast", "status"],
                [
                    [
                        b.name,
                        b.scope + (f" (top: {b.group}; {b.groups_over} of {b.groups} over)" if b.group else ""),
                        b.window,
                        fmt.usd(b.spend_nanos),
                        fmt.usd(b.limit_nanos),
                        fmt.percent(b.used, 0),
                        fmt.usd(b.burn_rate_nanos_per_day),
                        fmt.usd(b.forecast_nanos),
                        b.status.replace("_", " "),
                    ]
                    for b in r.budgets
                ],
            )
    if r.alerts is not None:
        a = r.alerts
        out += [
            "## Alerts",
            "",
            f"- Fired: {a.fired}; resolved: {a.resolved}; still firing at the end of the {r.noun}: "
            f"{len(a.still_firing)}",
            f"- Jira issues opened: {a.jira_opened}; resolved: {a.jira_resolved}; open: "
            f"{', '.join(a.jira_open) if a.jira_open else 'none'}",
        ]
        out += [f"  - firing: {name} ({sev}) since {since}" for name, sev, since in a.still_firing]
        out.append("")
    return out


def _num(x: float | None) -> str:
    return fmt.NA if x is None else f"{x:.4g}"


def _quality(r: Report) -> list[str]:
    q = r.quality
    if q is None:
        return []
    out = ["## Quality", ""]
    if q.outcomes:
        labels = [k for k in ("clean", "recovered", "abandoned", "failed") if k in q.outcomes or k in q.prev_outcomes]
        out += _table(
            ["session outcome", f"this {r.noun}", f"previous {r.noun}"],
            [[k, fmt.count(q.outcomes.get(k, 0)), fmt.count(q.prev_outcomes.get(k, 0))] for k in labels],
        )
    if q.scores:
        out += _table(
            ["score", "on", "count", "mean", "median", "min", "max", f"previous {r.noun}", "change"],
            [
                [
                    s.name,
                    s.level,
                    fmt.count(s.count),
                    _num(s.mean),
                    _num(s.p50),
                    _num(s.min),
                    _num(s.max),
                    _num(s.prev_mean),
                    fmt.NA if s.change is None else f"{s.change:+.4g}",
                ]
                for s in q.scores
            ],
        )
    if q.worst:
        out += [f"Worst sessions ({len(q.worst)}):", ""]
        out += _table(
            ["session", "outcome", "user", "cost"],
            [
                [
                    f"[{w.session_id}]({w.url})" if w.url else w.session_id,
                    w.outcome,
                    w.user or fmt.NA,
                    _num(w.cost_usd) if w.cost_usd is None else f"${w.cost_usd:.2f}",
                ]
                for w in q.worst
            ],
        )
    return out


def render_markdown(r: Report) -> str:
    """The report as Markdown text (ends with a newline)."""
    out = [
        f"# {r.title}",
        "",
        f"{r.start} → {r.end} ({r.timezone}); generated {r.generated_at}"
        + (" — **posted late** (relay could not post at the scheduled time)" if r.late else "")
        + (
            f" — **so far**: the {r.noun} is still running; changes compare with the same part of the previous {r.noun}"
            if r.partial
            else ""
        ),
        "",
    ]
    if r.empty:
        out += [r.notes[0] if r.notes else "No usage recorded.", ""]
        out += _budgets_alerts(r)
        return "\n".join(out).rstrip() + "\n"
    prev_name = f"previous {r.noun}"
    out += ["## Summary", ""]
    out += _table(
        ["", f"this {r.noun}", prev_name, "change"],
        [[h.name, h.show(h.current), h.show(h.previous), h.change] for h in headlines(r)],
    )
    if r.series is not None and r.kind != "daily" and len(r.series.buckets) > 1:  # one row per day
        out += ["## Cost per day", ""]
        out += _table(
            ["day", "cost"] + (["previous " + r.noun] if r.series.previous is not None else []),
            [
                [label, fmt.usd(total)]
                + (
                    []
                    if r.series.previous is None
                    else [fmt.usd(r.series.previous[i]) if i < len(r.series.previous) else ""]
                )
                for i, (label, total) in enumerate(zip(r.series.buckets, r.series.totals, strict=False))
            ],
        )
    out += _breakdown("Cost by model", "model", r.by_model)
    out += _breakdown("Cost by user", "user", r.by_user, sessions=True)
    if r.group_label and r.by_group:
        out += [f"## Cost by {r.group_label}", ""]
        out += _table(
            [r.group_label, "cost", "change", "sessions", "active users", "API calls", "error rate", "top model"],
            [
                [
                    g.key,
                    fmt.usd(g.cost_nanos),
                    fmt.change(g.cost_nanos, g.prev_cost_nanos),
                    fmt.count(g.sessions),
                    fmt.count(g.active_users),
                    fmt.count(g.api_calls),
                    fmt.percent(g.api_errors / g.api_calls if g.api_calls else None),
                    g.top_model or fmt.NA,
                ]
                for g in r.by_group
            ],
        )
    if r.top_sessions:
        out += [f"## Top {len(r.top_sessions)} sessions by cost", ""]
        out += _table(
            ["session", "user", "cost", "interactions", "API calls", "length"],
            [
                [
                    f"[{s.session_id}]({s.url})" if s.url else s.session_id,
                    s.user or fmt.NA,
                    fmt.usd(s.cost_nanos),
                    fmt.count(s.interactions),
                    fmt.count(s.api_calls),
                    fmt.seconds(s.duration_s),
                ]
                for s in r.top_sessions
            ],
        )
    out += ["## API errors", ""]
    if r.errors:
        out += _table(
            ["error class", "status", "calls"],
            [
                [e.error_class, str(e.status_code) if e.status_code is not None else "—", fmt.count(e.count)]
                for e in r.errors[:10]
            ],
        )
    else:
        out += ["No failed API calls.", ""]
    out += ["## Tools", ""]
    if r.tools:
        out += _table(
            ["tool", "calls", "success rate", "accepted", "rejected"],
            [
                [t.tool, fmt.count(t.calls), fmt.percent(t.success_rate), fmt.count(t.accepts), fmt.count(t.rejects)]
                for t in r.tools[:15]
            ],
        )
    else:
        out += ["No tool events recorded.", ""]
    out += _quality(r)
    out += _budgets_alerts(r)
    if r.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in r.notes] + [""]
    return "\n".join(out).rstrip() + "\n"
