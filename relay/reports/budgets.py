"""Budget status for the report: each budget's spend in its window up to the report's end, burn rate and the
linear forecast at the window's end — and :func:`budget_specs`, the conversion of the rules engine's budget rules
(``kind: budget`` in rule files, ``relay.alerting.rules.schema.BudgetRule``) into :class:`BudgetSpec`.

The forecast is the same linear projection the budget rules' forecast alert uses: ``spend / elapsed × window
length``. Money is nano-USD; times unix nanoseconds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from relay.matchers import parse_matchers
from relay.reports.model import BudgetSpec, BudgetStatus
from relay.reports.periods import period_containing
from relay.reports.source import ReportSource

__all__ = ["budget_status", "budget_specs"]

_KINDS = {"day": "daily", "week": "weekly", "month": "monthly"}
_DAY_NS = 86_400e9


def budget_specs(rules: Iterable[Any]) -> list[BudgetSpec]:
    """:class:`BudgetSpec` of every budget rule in ``rules`` (``relay.alerting.rules.load.Rule`` objects; other
    kinds are skipped). The rule's ``alertname`` names the budget; its ``tenant`` grouping (always added by the
    engine) is implicit in a per-tenant report, so it is dropped from ``group_by``."""
    out = []
    for r in rules:
        if getattr(r, "kind", None) != "budget":
            continue
        m = r.model
        w = m.window
        out.append(
            BudgetSpec(
                name=m.alert,
                limit_usd=float(m.limit_usd),
                window=w.calendar or "month",
                matchers=tuple(m.matchers),
                timezone=w.timezone,
                rolling_s=w.rolling,
                group_by=tuple(g for g in m.group_by if g != "tenant"),
            )
        )
    return out


def _status(spend: int, limit: int, start_ns: int, upto: int, end_ns: int, rolling: bool) -> tuple[float, int, str]:
    elapsed_days = max(upto - start_ns, 1) / _DAY_NS
    burn = spend / elapsed_days
    forecast = spend if rolling else int(round(spend + burn * max((end_ns - start_ns) / _DAY_NS - elapsed_days, 0.0)))
    return burn, forecast, "over" if spend > limit else "forecast_over" if forecast > limit else "ok"


def budget_status(
    source: ReportSource, tenant: str, specs: Sequence[BudgetSpec], as_of_ns: int, scope: Sequence[str] = ()
) -> list[BudgetStatus]:
    """Each budget's spend in its window up to ``as_of_ns`` (unix ns), burn rate and forecast, in ``specs`` order.

    Calendar windows are the day/week/month containing ``as_of`` in the budget's time zone; a rolling window is
    ``[as_of - rolling_s, as_of)``. Budgets of another tenant are skipped; with a ``scope`` (matcher strings), only
    budgets whose matchers include every scope matcher are shown (a team's report shows the team's budgets), or
    whose ``group_by`` has the label of a scope equality matcher (a per-team budget shows that team's group).
    Budgets without ``group_by`` sharing a window cost one scan (a conditional sum each); a grouped budget one
    grouped scan. Raises ``ValueError`` on a bad matcher or time zone.
    """
    scope_ms = parse_matchers(list(scope))
    wanted: list[BudgetSpec] = []
    for b in specs:
        if b.tenant is not None and b.tenant != tenant:
            continue
        own = parse_matchers(list(b.matchers))
        extra = [m for m in scope_ms if m not in own]
        if all(m.op == "=" and m.name in b.group_by for m in extra):
            wanted.append(replace(b, matchers=b.matchers + tuple(str(m) for m in extra)) if extra else b)
    as_of = datetime.fromtimestamp(as_of_ns / 1e9, UTC)
    windows: list[tuple[int, int, ZoneInfo, str]] = []
    for b in wanted:
        tz = ZoneInfo(b.timezone)
        if b.rolling_s is not None:
            windows.append((as_of_ns - int(b.rolling_s * 1e9), as_of_ns, tz, f"last {b.rolling_s / 3600:g}h"))
        else:
            win = period_containing(_KINDS[b.window], as_of - timedelta(microseconds=1), tz)  # type: ignore[arg-type]
            windows.append((win.start_ns, win.end_ns, tz, f"{b.window} ({b.timezone})"))
    plain: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, b in enumerate(wanted):
        if not b.group_by:
            plain[windows[i][:2]].append(i)
    spends: dict[int, int] = {}
    for (start_ns, end_ns), idx in plain.items():
        got = source.spend(
            tenant, start_ns, min(as_of_ns, end_ns), [parse_matchers(list(wanted[i].matchers)) for i in idx]
        )
        spends.update(zip(idx, got, strict=False))
    out = []
    for i, b in enumerate(wanted):
        start_ns, end_ns, tz, desc = windows[i]
        upto = min(as_of_ns, end_ns)
        limit = int(round(b.limit_usd * 1e9))
        group = groups = groups_over = None
        if b.group_by:
            rows = source.spend_groups(tenant, start_ns, upto, parse_matchers(list(b.matchers)), b.group_by)
            spend = rows[0][1] if rows else 0
            if rows:
                group = ", ".join(f'{k}="{v}"' for k, v in sorted(rows[0][0].items())) or "(no label)"
            groups, groups_over = len(rows), sum(1 for _, c in rows if c > limit)
        else:
            spend = spends[i]
        burn, forecast, status = _status(spend, limit, start_ns, upto, end_ns, b.rolling_s is not None)
        scope_text = ", ".join(b.matchers) or "whole tenant"
        if b.group_by:
            scope_text += f" per {', '.join(b.group_by)}"

        def iso(ns: int, tz: ZoneInfo = tz) -> str:
            return datetime.fromtimestamp(ns / 1e9, tz).isoformat(timespec="seconds")

        out.append(
            BudgetStatus(
                b.name,
                scope_text,
                desc,
                iso(start_ns),
                iso(end_ns),
                iso(upto),
                limit,
                spend,
                burn,
                forecast,
                status,
                group,
                groups,
                groups_over,
            )
        )
    return out
