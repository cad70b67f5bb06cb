"""Usage tables of ``relay report``, shaped like ccusage's (https://github.com/ryoppippi/ccusage): one row per
day, ISO week or month (``daily``/``weekly``/``monthly``), per session (``session``) or per user (``user``) over a
date range, optionally broken down by model, user or team (any ledger label). ccusage's ``blocks`` view (5-hour
billing blocks per user) is :mod:`relay.reports.blocks`.

Figures come from the ledger's LLM records (``usage_records`` with ``kind = 'llm'``): tokens by type, cost in
nano-USD (shown as USD), API calls (records derived from Claude Code's cost/token metrics carry cost and tokens
but are not calls), distinct sessions and users. Periods are cut at local midnights in the report's time zone
(:mod:`relay.reports.periods`); the range is half-open ``[since 00:00, until + 1 day 00:00)``, clipped to ``now``
so a period still running is marked ``partial`` ("so far").

Renderers: :func:`render_table_md` (a Markdown table, ``(so far)`` on the running period, Langfuse links for
sessions), :func:`render_table_json` (ccusage's JSON shape: ``{"daily": [...], "totals": {...}}`` with
camelCase token fields and ``totalCost`` in USD) and :func:`render_table_csv` (tidy CSV: one row per period ×
group, numbers only, an empty cell where a figure does not apply — never ``n/a``).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from relay.matchers import Matcher
from relay.reports.fmt import count, usage_json, usd
from relay.reports.periods import Period, period_containing, unix_ns
from relay.reports.sql import METRIC_SOURCE, label_expr, scope_sql

__all__ = [
    "TableRow",
    "UsageTable",
    "parse_day",
    "compute_table",
    "render_table_md",
    "render_table_json",
    "render_table_csv",
    "BREAKDOWN_ALIASES",
    "VIEWS",
]

VIEWS = ("daily", "weekly", "monthly", "session", "user")
#: ``--breakdown`` shorthands → ledger label.
BREAKDOWN_ALIASES = {"model": "model", "user": "user", "team": "team.id"}
_REL_RE = re.compile(r"^-(\d+)d$")


def parse_day(text: str, today: date) -> date:
    """A ``--since``/``--until`` value: ``YYYY-MM-DD`` or ``YYYYMMDD`` (ccusage), ``today``, ``yesterday`` or
    ``-Nd`` (N days before today). Raises ``ValueError`` naming the accepted forms."""
    t = text.strip().lower()
    if t == "today":
        return today
    if t == "yesterday":
        return today - timedelta(days=1)
    m = _REL_RE.match(t)
    if m:
        return today - timedelta(days=int(m.group(1)))
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(t, fmt).date()
        except ValueError:
            pass
    raise ValueError(f"invalid date {text!r}: use YYYY-MM-DD, YYYYMMDD, today, yesterday or -7d")


@dataclass
class TableRow:
    """One row: ``key`` the period label, session id or user; ``group`` the breakdown value (None on the row of
    the whole period/session/user). Tokens are counts, ``cost_nanos`` nano-USD. ``start``/``end`` ISO-8601
    (the clipped range of the row); ``partial`` True while the period is still running."""

    key: str
    group: str | None
    start: str
    end: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    cost_nanos: int = 0
    api_calls: int = 0
    sessions: int = 0
    users: int = 0
    models: list[str] = field(default_factory=list)
    partial: bool = False
    user: str | None = None
    url: str | None = None

    @property
    def total_tokens(self) -> int:
        """Input + output + cache creation + cache read tokens."""
        return self.input_tokens + self.output_tokens + self.cache_creation_tokens + self.cache_read_tokens


@dataclass
class UsageTable:
    """A view's rows (``rows``: each key's total row followed by its breakdown rows) and ``totals``."""

    view: str
    tenant: str
    timezone: str
    since: str
    until: str
    breakdown: str | None
    rows: list[TableRow]
    totals: TableRow
    scope: list[str] = field(default_factory=list)


_SUMS = (
    "SUM(input_tokens), SUM(output_tokens), SUM(cache_creation_tokens), SUM(cache_read_tokens), "
    f"SUM(cost_nanos), SUM(source != '{METRIC_SOURCE}'), COUNT(DISTINCT session_id), COUNT(DISTINCT user_id), "
    "GROUP_CONCAT(DISTINCT model)"
)


def _fill(row: TableRow, vals: Sequence[Any]) -> TableRow:
    (
        row.input_tokens,
        row.output_tokens,
        row.cache_creation_tokens,
        row.cache_read_tokens,
        row.cost_nanos,
        row.api_calls,
        row.sessions,
        row.users,
    ) = (int(v or 0) for v in vals[:8])
    row.models = sorted(set((vals[8] or "").split(","))) if vals[8] else []
    return row


def compute_table(
    conn: sqlite3.Connection,
    view: str,
    tenant: str,
    tz: ZoneInfo,
    since: date,
    until: date,
    now: datetime,
    *,
    breakdown: str | None = None,
    scope: Sequence[Matcher] = (),
    session_url: Callable[[str, str], str | None] | None = None,
) -> UsageTable:
    """The ``view`` table of ``tenant`` for local days ``since``..``until`` (inclusive) in ``tz``, up to ``now``
    (aware). ``breakdown`` a ledger label (``model``, ``user``, ``team.id``…). ``conn``: a ledger connection with
    ``relay_re`` registered (``SqliteReportSource``). Raises ``ValueError`` for an invalid label name or a range
    ending before it starts, ``sqlite3.Error`` for an unreadable ledger."""
    if until < since:
        raise ValueError(f"--until {until} is before --since {since}")
    grp = label_expr(breakdown) if breakdown else None
    extra, sparams = scope_sql(tuple(scope))
    lo = datetime.combine(since, datetime.min.time(), tzinfo=tz)
    hi = min(datetime.combine(until + timedelta(days=1), datetime.min.time(), tzinfo=tz), now)
    base = f"FROM usage_records WHERE kind = 'llm' AND tenant = ? AND time_ns >= ? AND time_ns < ?{extra}"
    rows: list[TableRow] = []
    if view in ("daily", "weekly", "monthly"):
        p: Period | None = period_containing(view, lo, tz)  # type: ignore[arg-type]  # checked just above
        while p is not None and p.start < hi:
            a, b = max(p.start, lo), min(p.end, hi)
            params = [tenant, unix_ns(a), unix_ns(b), *sparams]
            head = TableRow(p.label, None, a.isoformat(), b.isoformat(), partial=p.end > now)
            _fill(head, conn.execute(f"SELECT {_SUMS} {base}", params).fetchone())
            if head.cost_nanos or head.total_tokens or head.api_calls:
                rows.append(head)
                if grp:
                    for g, *vals in conn.execute(
                        f"SELECT {grp} AS g, {_SUMS} {base} GROUP BY g ORDER BY SUM(cost_nanos) DESC, g", params
                    ):
                        rows.append(
                            _fill(
                                TableRow(
                                    p.label,
                                    g if g is not None else "(none)",
                                    head.start,
                                    head.end,
                                    partial=head.partial,
                                ),
                                vals,
                            )
                        )
            p = p.next()
    else:
        key = "session_id" if view == "session" else "user_id"
        params = [tenant, unix_ns(lo), unix_ns(hi), *sparams]
        order = "SUM(cost_nanos) DESC, k"
        got = conn.execute(
            f"SELECT COALESCE({key}, '(none)') AS k, MIN(time_ns), MAX(time_ns), MIN(user_id), "
            f"{_SUMS} {base} GROUP BY k ORDER BY {order}",
            params,
        ).fetchall()
        by_group: dict[str, list[TableRow]] = {}
        if grp:
            for k, g, *vals in conn.execute(
                f"SELECT COALESCE({key}, '(none)') AS k, {grp} AS g, {_SUMS} {base} "
                "GROUP BY k, g ORDER BY SUM(cost_nanos) DESC, g",
                params,
            ):
                by_group.setdefault(k, []).append(_fill(TableRow(k, g if g is not None else "(none)", "", ""), vals))
        for k, first, last, user, *vals in got:
            s = datetime.fromtimestamp(first / 1e9, tz).isoformat(timespec="seconds")
            e = datetime.fromtimestamp(last / 1e9, tz).isoformat(timespec="seconds")
            row = _fill(TableRow(k, None, s, e, user=user if view == "session" else None), vals)
            if view == "session" and session_url is not None and k != "(none)":
                row.url = session_url(tenant, k)
            rows.append(row)
            for sub in by_group.get(k, []):
                sub.start, sub.end = s, e
                rows.append(sub)
    totals = TableRow("Total", None, lo.isoformat(), hi.isoformat())
    _fill(totals, conn.execute(f"SELECT {_SUMS} {base}", [tenant, unix_ns(lo), unix_ns(hi), *sparams]).fetchone())
    return UsageTable(
        view,
        tenant,
        str(tz.key),
        since.isoformat(),
        until.isoformat(),
        breakdown,
        rows,
        totals,
        [str(m) for m in scope],
    )


# ------------------------------------------------------------------------------------------------ renderers
_KEY_HEAD = {"daily": "Date", "weekly": "Week", "monthly": "Month", "session": "Session", "user": "User"}


def render_table_md(t: UsageTable) -> str:
    """A Markdown table like ccusage's terminal table: the period (``(so far)`` while running), models, tokens by
    type, cost; breakdown rows indented under their period; a total row. Sessions link to Langfuse when known."""
    scope = f" ({', '.join(t.scope)})" if t.scope else ""
    title = {"session": "by session", "user": "by user"}.get(t.view, t.view)
    out = [
        f"# Claude Code usage {title} — {t.tenant}{scope}",
        "",
        f"{t.since} → {t.until} ({t.timezone})" + (f"; breakdown by {t.breakdown}" if t.breakdown else ""),
        "",
    ]
    if not t.rows:
        out.append(f"No usage recorded for {t.tenant} from {t.since} to {t.until}.")
        return "\n".join(out) + "\n"
    head = [_KEY_HEAD[t.view]]
    if t.view == "session":
        head += ["User", "Last activity"]
    if t.view in ("session", "user") or t.view in ("daily", "weekly", "monthly"):
        head += ["Models"]
    head += ["Input", "Output", "Cache create", "Cache read", "Total tokens", "API calls", "Cost (USD)"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|"
        + "|".join(
            "---:" if i > 0 and h not in ("User", "Models", "Last activity") else "---" for i, h in enumerate(head)
        )
        + "|",
    ]

    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    for r in t.rows:
        if r.group is None:
            key = r.key + (" (so far)" if r.partial else "")
            if r.url:
                key = f"[{r.key}]({r.url})"
        else:
            key = f"  └ {r.group}"
        cells = [cell(key)]
        if t.view == "session":
            cells += ["" if r.group else cell(r.user or ""), "" if r.group else r.end[:16].replace("T", " ")]
        cells.append(cell(", ".join(r.models)) if r.group is None or t.breakdown != "model" else "")
        cells += [
            count(r.input_tokens),
            count(r.output_tokens),
            count(r.cache_creation_tokens),
            count(r.cache_read_tokens),
            count(r.total_tokens),
            count(r.api_calls),
            usd(r.cost_nanos),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    tot = t.totals
    cells = ["**Total**"] + ([""] * (2 if t.view == "session" else 0)) + [""]
    cells += [
        count(tot.input_tokens),
        count(tot.output_tokens),
        count(tot.cache_creation_tokens),
        count(tot.cache_read_tokens),
        count(tot.total_tokens),
        count(tot.api_calls),
        f"**{usd(tot.cost_nanos)}**",
    ]
    lines.append("| " + " | ".join(cells) + " |")
    out += lines
    if any(r.partial for r in t.rows):
        out += ["", "(so far): the period is still running; its figures cover it up to now."]
    return "\n".join(out) + "\n"


_JSON_KEY = {
    "daily": ("daily", "date"),
    "weekly": ("weekly", "week"),
    "monthly": ("monthly", "month"),
    "session": ("sessions", "sessionId"),
    "user": ("users", "user"),
}


def render_table_json(t: UsageTable) -> str:
    """ccusage-shaped JSON: ``{"<view>": [{<date|week|month|sessionId|user>, inputTokens, outputTokens,
    cacheCreationTokens, cacheReadTokens, totalTokens, totalCost (USD), apiCalls, modelsUsed, partial,
    breakdown: [{name, …}]}], "totals": {…}, "tenant", "timezone", "since", "until", "breakdownBy"}``; with
    ``--breakdown model`` each entry also has ccusage's ``modelBreakdowns`` (``modelName``, …, ``cost``)."""
    plural, key = _JSON_KEY[t.view]
    entries: list[dict[str, Any]] = []
    for r in t.rows:
        if r.group is None:
            e = {
                key: r.key,
                **usage_json(r),
                "modelsUsed": r.models,
                "sessions": r.sessions,
                "partial": r.partial,
                "start": r.start,
                "end": r.end,
            }
            if t.view == "session":
                e["user"] = r.user
                e["lastActivity"] = r.end
                e["langfuseUrl"] = r.url
            if t.breakdown:
                e["breakdown"] = []
                if t.breakdown == "model":
                    e["modelBreakdowns"] = []
            entries.append(e)
        else:
            sub = {"name": r.group, **usage_json(r)}
            entries[-1]["breakdown"].append(sub)
            if t.breakdown == "model":
                entries[-1]["modelBreakdowns"].append(
                    {
                        "modelName": r.group,
                        "inputTokens": r.input_tokens,
                        "outputTokens": r.output_tokens,
                        "cacheCreationTokens": r.cache_creation_tokens,
                        "cacheReadTokens": r.cache_read_tokens,
                        "cost": round(r.cost_nanos / 1e9, 9),
                    }
                )
    out = {
        plural: entries,
        "totals": usage_json(t.totals),
        "tenant": t.tenant,
        "timezone": t.timezone,
        "since": t.since,
        "until": t.until,
        "breakdownBy": t.breakdown,
        "scope": t.scope,
    }
    return json.dumps(out, indent=2, ensure_ascii=False) + "\n"


#: Columns of the tidy CSV.
TABLE_CSV_HEADER = [
    "view",
    "key",
    "start",
    "end",
    "partial",
    "breakdown",
    "group",
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
    "total_tokens",
    "cost_usd",
    "api_calls",
    "sessions",
    "users",
]


def render_table_csv(t: UsageTable) -> str:
    """Tidy CSV (:data:`TABLE_CSV_HEADER`): one row per key (period, session, user) × group — with a breakdown
    only the group rows (their sum is the key's total), without one the key's own row. Numbers only: cost in USD
    with six decimals, counts as integers, ``partial`` as 0/1."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TABLE_CSV_HEADER)
    for r in t.rows:
        if t.breakdown and r.group is None:
            continue
        w.writerow(
            [
                t.view,
                r.key,
                r.start,
                r.end,
                int(r.partial),
                t.breakdown or "",
                r.group or "",
                r.input_tokens,
                r.output_tokens,
                r.cache_creation_tokens,
                r.cache_read_tokens,
                r.total_tokens,
                f"{r.cost_nanos / 1e9:.9f}",
                r.api_calls,
                r.sessions,
                r.users,
            ]
        )
    return buf.getvalue()
