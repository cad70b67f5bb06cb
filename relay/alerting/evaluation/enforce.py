"""Budget enforcement: where a caller (an agent's hook, before a prompt or a tool call) stands against the budget
rules marked ``enforce: block`` or ``enforce: warn``, read from the rules engine's in-memory windows — no
database query, so an answer takes microseconds per rule.

The caller is described by the labels it can know *before* a call: ``tenant``, ``user``, ``session``,
``prompt`` and its identity labels (``team.id``, ``department``…, plus the tenant's configured labels). A rule
applies when its matchers on those labels match; matchers on labels only a finished call has (``kind``,
``model``, ``tool``, ``success``…) cannot be decided beforehand and are ignored. The group is found as the
engine groups records (``group_by`` values, a missing label is ``""``), so a budget per user, team, session or
tenant is checked against exactly the spend its alerts report.

Units: USD, unix seconds.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from relay.alerting.evaluation.runtime import RuleRuntime
from relay.alerting.evaluation.windows import CalendarWindow, RollingWindow
from relay.alerting.rules.schema import BudgetRule

__all__ = ["BudgetStanding", "budget_standings"]


@dataclass(frozen=True)
class BudgetStanding:
    """One enforced budget that applies to a caller.

    ``rule`` is the ``alertname``, ``rule_id`` ``<file>:<alert>``; ``enforce`` ``block`` or ``warn``; ``group`` the
    group's labels (``tenant`` and the ``group_by`` values present); ``spend`` and ``limit`` USD in the current
    window (``window``: ``day (Europe/Berlin)``, ``last 7d``); ``over`` when ``spend >= limit``; ``resets_at``
    (unix seconds) when the spend falls below the limit again with no new spend — the end of a calendar window,
    or, for a rolling window, when enough of the spend has left it; None when not over. ``partial``: the rule's
    windows are still being filled from the ledger at start-up, so ``spend`` may be too low (never too high).
    """

    rule: str
    rule_id: str
    enforce: str
    group: dict[str, str]
    spend: float
    limit: float
    window: str
    over: bool
    resets_at: float | None
    partial: bool = False


def budget_standings(
    runtimes: Iterable[RuleRuntime], tenant: str, labels: Mapping[str, str], known: Collection[str], now: float
) -> list[BudgetStanding]:
    """The enforced budgets (``enforce`` set) that apply to a caller with ``labels`` in ``tenant``, with its
    spend in each. ``known`` names the labels the caller can know before a call (matchers on other labels are
    ignored; see the module docstring); ``labels`` holds the known ones that are set. ``now``: unix seconds."""
    scope = dict(labels)
    scope["tenant"] = tenant
    known = set(known) | {"tenant"}
    out: list[BudgetStanding] = []
    for rule_rt in runtimes:
        m = rule_rt.rule.model
        if not isinstance(m, BudgetRule) or m.enforce is None:
            continue
        if not all(x.matches(scope) for x in rule_rt.rule.matchers if x.name in known):
            continue
        agg_rt = rule_rt.agg_runtime
        gkey = agg_rt.group_key(tenant, scope)
        g = agg_rt.groups.get(gkey)
        spend, resets_at = 0.0, None
        if g is not None:
            g.agg.advance(*agg_rt.lo(now))
            spend = g.agg.run[0] / 1e9
        over = spend >= m.limit_usd - 1e-9
        if over and g is not None:
            resets_at = _resets_at(agg_rt.agg.window, g.agg.buckets, g.agg.lo, spend, m.limit_usd, now)
        group = {"tenant": tenant}
        group.update({n: v for n, v in zip(m.group_by, gkey[1:], strict=False) if v})
        out.append(
            BudgetStanding(
                rule=m.alert,
                rule_id=rule_rt.rule.id,
                enforce=m.enforce,
                group=group,
                spend=spend,
                limit=m.limit_usd,
                window=rule_rt.window_desc,
                over=over,
                resets_at=resets_at,
                partial=agg_rt.loading,
            )
        )
    return out


def _resets_at(
    window: object, buckets: Mapping[int, list], lo: int | None, spend: float, limit: float, now: float
) -> float | None:
    """When the window's spend falls below ``limit`` without new spend: a calendar window's end; for a rolling
    window the time the oldest buckets leave it (bucket ``k`` covers ``[k·b, (k+1)·b)`` and stays in the window
    while ``now < (k+1)·b + length``) until what is left is under the limit."""
    if isinstance(window, CalendarWindow):
        return window.bounds(now)[1]
    if not isinstance(window, RollingWindow):
        return None
    left = spend
    for k in sorted(k for k in buckets if lo is None or k >= lo):
        left -= buckets[k][0] / 1e9
        if left < limit - 1e-9:
            return (k + 1) * window.b + window.length
    return None
