"""Render a :class:`~relay.reports.model.Report` as CSV (RFC 4180, via the ``csv`` module) and as JSON.

CSV is long-form, one figure per row: ``section,key,metric,value,previous``. Money is USD with two decimals
(``cost_usd``), tokens and counts are integers, ratios 0..1 with four decimals; a missing figure is ``n/a``
(never 0). Sections: ``report`` (header fields), ``summary`` (headlines), ``model``, ``user``, ``group``,
``session``, ``error``, ``tool``, ``chart``, ``budget``, ``alerts``, ``note``.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from relay.reports import fmt
from relay.reports.headlines import headlines
from relay.reports.model import Report

__all__ = ["render_csv", "render_json", "CSV_HEADER"]

CSV_HEADER = ["section", "key", "metric", "value", "previous"]


def _num(v: Any, unit: str = "count") -> str:
    if v is None:
        return fmt.NA
    if unit == "usd":
        return fmt.usd_plain(v)
    if unit == "ratio":
        return f"{v:.4f}"
    if unit == "seconds":
        return f"{v:.0f}"
    return str(int(round(v))) if isinstance(v, (int, float)) else str(v)


def render_csv(r: Report) -> str:
    """The report as CSV text with the :data:`CSV_HEADER` header row."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for k in ("tenant", "kind", "period", "start", "end", "timezone", "generated_at"):
        w.writerow(["report", k, k, getattr(r, k), ""])
    w.writerow(["report", "scope", "scope", ", ".join(r.scope), ""])
    w.writerow(["report", "late", "late", str(r.late).lower(), ""])
    w.writerow(["report", "empty", "empty", str(r.empty).lower(), ""])
    for h in headlines(r):
        unit = "usd" if h.unit == "usd" else h.unit
        key = h.key + ("_usd" if unit == "usd" else "")
        w.writerow(["summary", key, h.name, _num(h.current, unit),
                    fmt.NA if r.previous is None else _num(h.previous, unit)])
    for section, rows in (("model", r.by_model), ("user", r.by_user)):
        for b in rows:
            w.writerow([section, b.key, "cost_usd", _num(b.cost_nanos, "usd"), _num(b.prev_cost_nanos, "usd")])
            w.writerow([section, b.key, "api_calls", _num(b.api_calls), ""])
            w.writerow([section, b.key, "tokens", _num(b.tokens), ""])
            if b.sessions is not None:
                w.writerow([section, b.key, "sessions", _num(b.sessions), ""])
    for g in r.by_group:
        w.writerow(["group", g.key, "cost_usd", _num(g.cost_nanos, "usd"), _num(g.prev_cost_nanos, "usd")])
        for m in ("sessions", "active_users", "api_calls", "api_errors"):
            w.writerow(["group", g.key, m, _num(getattr(g, m)), ""])
    for s in r.top_sessions:
        w.writerow(["session", s.session_id, "cost_usd", _num(s.cost_nanos, "usd"), ""])
        w.writerow(["session", s.session_id, "user", s.user or fmt.NA, ""])
        w.writerow(["session", s.session_id, "interactions", _num(s.interactions), ""])
        w.writerow(["session", s.session_id, "api_calls", _num(s.api_calls), ""])
        w.writerow(["session", s.session_id, "url", s.url or fmt.NA, ""])
    for e in r.errors:
        key = e.error_class + (f"/{e.status_code}" if e.status_code is not None else "")
        w.writerow(["error", key, "calls", _num(e.count), ""])
    for t in r.tools:
        for m in ("calls", "failures", "accepts", "rejects"):
            w.writerow(["tool", t.tool, m, _num(getattr(t, m)), ""])
    if r.series is not None:
        for i, label in enumerate(r.series.buckets):
            for k, v in r.series.stacks.items():
                w.writerow(["chart", label, f"cost_usd:{k}", _num(v[i], "usd"), ""])
        if r.series.previous is not None:
            for i, v in enumerate(r.series.previous):
                w.writerow(["chart", str(i), "previous_cost_usd", _num(v, "usd"), ""])
    for b in r.budgets or []:
        w.writerow(["budget", b.name, "spend_usd", _num(b.spend_nanos, "usd"), ""])
        w.writerow(["budget", b.name, "limit_usd", _num(b.limit_nanos, "usd"), ""])
        w.writerow(["budget", b.name, "burn_usd_per_day", _num(b.burn_rate_nanos_per_day, "usd"), ""])
        w.writerow(["budget", b.name, "forecast_usd", _num(b.forecast_nanos, "usd"), ""])
        w.writerow(["budget", b.name, "status", b.status, ""])
        if b.group is not None:
            w.writerow(["budget", b.name, "top_group", b.group, ""])
            w.writerow(["budget", b.name, "groups_over", _num(b.groups_over), ""])
    if r.alerts is not None:
        a = r.alerts
        for m, v in (("fired", a.fired), ("resolved", a.resolved), ("still_firing", len(a.still_firing)),
                     ("jira_opened", a.jira_opened), ("jira_resolved", a.jira_resolved),
                     ("jira_open", len(a.jira_open))):
            w.writerow(["alerts", "", m, _num(v), ""])
    for i, n in enumerate(r.notes):
        w.writerow(["note", str(i + 1), "note", n, ""])
    return buf.getvalue()


def render_json(r: Report) -> str:
    """The report as indented JSON (:meth:`Report.to_dict`; ``null`` for missing figures)."""
    return json.dumps(r.to_dict(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"
