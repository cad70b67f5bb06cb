"""The rules engine: ledger changes and clock ticks in, alert state changes out.

- **Event-driven**: :meth:`RuleEngine.observe` takes the ledger's change feed (``LedgerChange``: new, upgraded —
  subtract ``old``, add ``new`` — and retracted records), updates the incremental window figures of the rules the
  record can match, and evaluates just the touched groups at once, so an alert fires as soon as the record that
  crosses its threshold is written. Records reach rules through an index on each rule's equality matchers (and an
  error-rate rule's call kind), so a record costs matcher checks only for plausible rules.
- **Periodic**: :meth:`RuleEngine.evaluate` (driven by :meth:`RuleEngine.run` every group ``interval``, at the exact
  ``for:`` deadlines and at calendar window boundaries) handles ``for:``, window roll-over and resolution.
- **Backfill**: :meth:`RuleEngine.start` and :meth:`RuleEngine.replace_rules` fill new rules' windows from one
  ``LedgerStore.scan`` over the longest window they need, while live changes are buffered and reconciled by
  record key (so a record written during the scan is counted once).
- **Alerts**: one per rule × group (``tenant`` + ``group_by`` values) × condition (e.g. each budget threshold);
  pending → firing after ``for:`` → resolved. Firing and resolved alerts go to ``on_alerts`` (also re-sent while
  firing every ``resend_interval`` or when their value moves by more than 5 %); pending ones are only listed by
  :meth:`RuleEngine.alerts`. With an :class:`~relay.alerting.evaluation.state.AlertStateStore`, active and recently resolved
  alerts survive restarts: a restored firing alert keeps its ``active_at``/``fired_at`` (same fingerprint) and is
  re-sent once at start-up, so the dispatcher knows it again; its notification log keeps it from being notified
  again. A restored pending alert keeps counting ``for:`` from its original ``active_at``.

Times: the clock ``now()`` and all alert times are unix seconds; records carry unix nanoseconds (``time_ns``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from relay.alert import Alert, AlertState
from relay.alerting.evaluation.backfill import BackfillTracker
from relay.alerting.evaluation.emit import AlertSink, Emitter
from relay.alerting.evaluation.kinds import make_aggregation
from relay.alerting.evaluation.runtime import (
    AggRuntime,
    Group,
    Links,
    RuleRuntime,
    copy_alert,
    index_label,
    render_alert,
    step,
)
from relay.alerting.evaluation.state import AlertStateStore
from relay.alerting.rules.load import RuleSet
from relay.model import UsageRecord
from relay.usage.store import LedgerChange, LedgerStore

__all__ = ["RuleEngine", "AlertSink"]

log = logging.getLogger("relay.alerting")

#: During a backfill, scanned records this recent (seconds) are remembered by key, so a change written before the
#: scan read it but observed after is reconciled exactly; for older records the scan is assumed to have read the
#: version before the first change observed during the backfill (changes to old records are rare and quick).
BACKFILL_RECENT = 3600.0


class RuleEngine:
    """Evaluates a :class:`RuleSet` over the ledger's change feed.

    ``on_alerts`` gets firing/resolved alerts (see module docstring); ``now`` is the clock (unix seconds);
    ``links(labels, sample_record)`` builds ``Alert.links``; ``state`` persists alerts across restarts;
    ``evaluation_interval`` is the default periodic evaluation (a group's ``interval`` overrides it);
    ``resend_interval`` re-sends firing alerts; ``resolved_retention`` keeps resolved alerts listed (seconds).
    """

    def __init__(
        self,
        rules: RuleSet,
        *,
        on_alerts: AlertSink,
        now: Callable[[], float] = time.time,
        links: Links | None = None,
        state: AlertStateStore | None = None,
        evaluation_interval: float = 10.0,
        resend_interval: float = 60.0,
        resolved_retention: float = 3600.0,
    ):
        self._now = now
        self._links = links
        self._state = state
        self._emit = Emitter(on_alerts, state, links, resolved_retention)
        self.evaluation_interval = evaluation_interval
        self.resend_interval = resend_interval
        self.resolved_retention = resolved_retention
        self._agg_runtimes: dict[str, AggRuntime] = {}
        self._rules: dict[str, RuleRuntime] = {}
        self._index: dict[str, dict[str, list[AggRuntime]]] = {}
        self._unindexed: list[AggRuntime] = []
        self._tracker: BackfillTracker | None = None
        self._lock = asyncio.Lock()
        self.ruleset = rules
        #: Records observed (for relay's own metrics; ``alerts_sent`` counts what went to the sink).
        self.records_observed = 0
        self._install(rules, loading=True)

    # ------------------------------------------------------------------ public API

    async def restore(self, ledger: LedgerStore | None) -> None:
        """Restore persisted alerts (when a state store is set), backfill every rule from ``ledger`` (None: start
        empty) and run a first evaluation. Call once, before feeding :meth:`observe`."""
        if self._state is not None:
            for alert, _sent_at in await self._state.load():
                if alert.state is AlertState.RESOLVED:
                    self._emit.resolved.append(alert)
                    continue
                rule_rt = self._rules.get(alert.rule)
                if rule_rt is not None:  # a still-firing alert is re-sent once (same fired_at) so the dispatcher has it
                    rule_rt.carried[alert.fingerprint] = (alert, None)
                else:  # its rule is gone
                    self._emit.orphan(alert, self._now())
        agg_runtimes = [a for a in self._agg_runtimes.values() if a.loading]
        await self._backfill(ledger, agg_runtimes)

    def observe(self, changes: Sequence[LedgerChange]) -> None:
        """Apply ledger changes and evaluate the touched groups now (emitting to ``on_alerts``). Cheap; sync."""
        if not changes:
            return
        now = self._now()
        touched: dict[tuple[int, tuple], tuple[AggRuntime, Group]] = {}
        tracker = self._tracker
        for ch in changes:
            if tracker is not None:
                tracker.note(ch)
            if ch.old is not None:
                self._apply(ch.old, -1, now, touched, None)
            if ch.new is not None:
                self._apply(ch.new, 1, now, touched, None)
                self.records_observed += 1
        out: list[tuple[Any, ...]] = []
        for agg_rt, g in touched.values():
            self._eval_group(agg_rt, g, agg_rt.rules, now, out)
        self._emit.flush(out, now)

    def evaluate(self, now: float | None = None, *, due_only: bool = False) -> None:
        """Evaluate every group of every loaded rule at ``now`` (default: the clock): ``for:`` deadlines, window
        roll-over, resolution, re-sends; forget groups with nothing left. ``due_only``: only rules whose interval,
        ``for:`` deadline or window boundary has come (what :meth:`run` does)."""
        now = self._now() if now is None else now
        out: list[tuple[Any, ...]] = []
        for agg_rt in list(self._agg_runtimes.values()):
            if agg_rt.loading:
                continue
            rules = [r for r in agg_rt.rules if not due_only or self._due(r, now)]
            if not rules:
                continue
            self._evaluate_art(agg_rt, rules, now, out)
        self._emit.prune(now)
        self._emit.flush(out, now)

    def next_wakeup(self, now: float | None = None) -> float:
        """The earliest time (unix seconds) a rule is due: interval tick, ``for:`` deadline or window boundary."""
        now = self._now() if now is None else now
        best = now + self.evaluation_interval
        for r in self._rules.values():
            best = min(
                best,
                r.next_eval,
                r.deadline,
                r.event_at,
                r.agg_runtime.boundary if r.agg_runtime.boundary is not None else math.inf,
            )
        return best

    async def run(self) -> None:
        """Periodic evaluation until cancelled (wakes at :meth:`next_wakeup`, at least every evaluation interval)."""
        while True:
            try:
                self.evaluate(due_only=True)
            except Exception:
                log.exception("rule evaluation failed")
            delay = min(max(self.next_wakeup() - self._now(), 0.01), self.evaluation_interval)
            await asyncio.sleep(delay)

    async def replace_rules(self, rules: RuleSet, ledger: LedgerStore | None) -> None:
        """Hot reload: switch to ``rules``. Unchanged rules keep everything; rules whose aggregation is unchanged
        keep their window data; alerts of changed rules keep their state when their labels are unchanged; alerts of
        removed rules resolve. New aggregations are backfilled from ``ledger``."""
        async with self._lock:
            old = self._rules
            out: list[tuple[Any, ...]] = []
            now = self._now()
            self._install(rules, loading=True, previous=old)
            for rid, rule_rt in old.items():
                if self._rules.get(rid) is rule_rt:
                    continue
                new = self._rules.get(rid)
                for slots in rule_rt.slots.values():
                    for s in slots:
                        if s is None or s.alert is None:
                            continue
                        if new is not None:
                            new.carried[s.fp] = (s.alert, s.sent_at)
                        else:
                            self._resolve_dropped(rule_rt, s.alert, now, out)
                for alert, sent_at in rule_rt.carried.values():
                    if new is not None:
                        new.carried[alert.fingerprint] = (alert, sent_at)
                    else:
                        self._emit.orphan(alert, now)
            self._emit.flush(out, now)
            self.ruleset = rules
            await self._backfill(ledger, [a for a in self._agg_runtimes.values() if a.loading])

    def alerts(self) -> list[Alert]:
        """Copies of the pending and firing alerts, with values and annotations current, and of the resolved ones
        kept for ``resolved_retention`` (the latest per rule and fingerprint, unless active again) — for
        ``GET /api/v1/alerts``."""
        now = self._now()
        out: list[Alert] = []
        for rule_rt in self._rules.values():
            agg_rt = rule_rt.agg_runtime
            for gkey, slots in rule_rt.slots.items():
                g = agg_rt.groups.get(gkey)
                for i, s in enumerate(slots):
                    if s is None or s.alert is None:
                        continue
                    if g is not None and not agg_rt.loading:
                        g.agg.advance(*agg_rt.lo(now))
                        render_alert(rule_rt, s.alert, rule_rt.evaluator.values(g.agg, now, i), g.sample, self._links)
                    out.append(copy_alert(s.alert))
            out.extend(copy_alert(a) for a, _ in rule_rt.carried.values())
        latest: dict[tuple[str, str], Alert] = {}
        for a in self._emit.resolved:
            latest[(a.rule, a.fingerprint)] = a
        for a in out:
            latest.pop((a.rule, a.fingerprint), None)
        out.extend(copy_alert(a) for a in latest.values())
        return out

    def runtimes(self) -> list[RuleRuntime]:
        """The loaded rules bound to their aggregations (read them on the event loop, don't change them; budget
        enforcement reads its windows, ``relay.alerting.evaluation.enforce``)."""
        return list(self._rules.values())

    def rule_ids(self) -> list[str]:
        """Ids (``<file>:<alert>``) of the loaded rules."""
        return list(self._rules)

    @property
    def alerts_sent(self) -> int:
        """Alerts handed to ``on_alerts`` so far (for relay's own metrics)."""
        return self._emit.sent

    async def drain(self) -> None:
        """Wait for scheduled sink calls and state writes."""
        await self._emit.drain()

    # ------------------------------------------------------------------ install / index

    def _install(self, rules: RuleSet, *, loading: bool, previous: dict[str, RuleRuntime] | None = None) -> None:
        previous = previous or {}
        agg_runtimes: dict[str, AggRuntime] = {}
        rule_runtimes: dict[str, RuleRuntime] = {}
        for rule in rules.rules:
            key = rule.agg_key()
            agg_rt = agg_runtimes.get(key)
            if agg_rt is None:
                agg_rt = self._agg_runtimes.get(key)
                if agg_rt is None:
                    agg_rt = AggRuntime(make_aggregation(rule))
                    agg_rt.loading = loading
                agg_rt.rules = []
                agg_runtimes[key] = agg_rt
            old = previous.get(rule.id)
            if old is not None and old.agg_runtime is agg_rt and old.rule.definition_key() == rule.definition_key():
                rule_rt = old
                rule_rt.rule = rule
            else:
                rule_rt = RuleRuntime(rule, agg_rt)
            agg_rt.rules.append(rule_rt)
            rule_runtimes[rule.id] = rule_rt
        self._agg_runtimes, self._rules = agg_runtimes, rule_runtimes
        self._index, self._unindexed = {}, []
        for agg_rt in agg_runtimes.values():
            name = index_label(agg_rt.agg)
            agg_rt.check = agg_rt.agg.matchers
            if name is None:
                self._unindexed.append(agg_rt)
                continue
            values = agg_rt.agg.index[name]
            # the index lookup already guarantees this equality matcher
            agg_rt.check = tuple(
                m
                for m in agg_rt.agg.matchers
                if not (m.op == "=" and m.name == name and values == frozenset([m.value]))
            )
            table = self._index.setdefault(name, {})
            for v in values:
                table.setdefault(v, []).append(agg_rt)

    # ------------------------------------------------------------------ records

    def _apply(
        self,
        rec: UsageRecord,
        sign: int,
        now: float,
        touched: dict[tuple[int, tuple], tuple[AggRuntime, Group]] | None,
        only: set[int] | None,
    ) -> None:
        """Add (``sign=1``) or subtract a record in every aggregation it matches: ``only`` restricts to those ids
        (backfill); otherwise loading aggregations are skipped (their changes are buffered)."""
        labels = rec.label_set()
        cands = list(self._unindexed)
        for name, table in self._index.items():
            v = labels.get(name)
            if v is not None:
                hit = table.get(v)
                if hit:
                    cands.extend(hit)
        if not cands:
            return
        t = rec.time_ns / 1e9
        tenant = rec.tenant
        for agg_rt in cands:
            if only is not None:
                if id(agg_rt) not in only:
                    continue
            elif agg_rt.loading:
                continue
            ok = True
            for m in agg_rt.check:
                if not m.matches(labels):
                    ok = False
                    break
            if not ok:
                continue
            agg = agg_rt.agg
            contribution = agg.contribute(rec, labels)
            if contribution is None:
                continue
            vector, raw_value = contribution
            gkey = agg_rt.group_key(tenant, labels)
            groups = agg_rt.groups
            g = groups.get(gkey)
            if g is None:
                if sign < 0:
                    continue
                g = agg_rt.group(gkey)
            lo, history_lo = agg_rt.lo(now)
            window_agg = g.agg
            if window_agg.lo != lo:
                window_agg.advance(lo, history_lo)
            key = agg.window.key(t)
            if window_agg.add(key, vector, raw_value, sign, history_lo):
                if key > g.last_key:  # keep groups ordered by their newest data (expired ones come first)
                    g.last_key = key
                    del groups[gkey]
                    groups[gkey] = g
                # sample_failed aggregations keep a failed record as the sample (vector[1] counts failures)
                if sign > 0 and (g.sample is None or not agg.sample_failed or vector[1]):
                    g.sample = rec
                if touched is not None:
                    touched[(id(agg_rt), gkey)] = (agg_rt, g)

    async def _backfill(self, ledger: LedgerStore | None, agg_runtimes: list[AggRuntime]) -> None:
        """Fill ``agg_runtimes`` from one ledger scan, reconcile changes observed meanwhile, then evaluate them (and settle
        carried alerts, see :meth:`_settle`)."""
        if not agg_runtimes:
            self._settle([])
            return
        now = self._now()
        only = {id(a) for a in agg_runtimes}
        if ledger is not None:
            self._tracker = BackfillTracker(BACKFILL_RECENT)
            try:
                start = min(a.agg.window.oldest_needed(now) for a in agg_runtimes)
                count = await self._tracker.fill(
                    ledger, int(start * 1e9), now, lambda rec, sign: self._apply(rec, sign, now, None, only)
                )
                log.info("rules: backfilled %d rule aggregation(s) from %d ledger record(s)", len(agg_runtimes), count)
            finally:
                self._tracker = None
        for a in agg_runtimes:
            a.loading = False
        self._settle(agg_runtimes)

    def _settle(self, loaded: list[AggRuntime]) -> None:
        """Evaluate freshly loaded aggregations and every rule holding carried alerts (restored or from a previous
        version of the rule); carried alerts no group claimed no longer hold: resolve (or drop) them."""
        now = self._now()
        out: list[tuple[Any, ...]] = []
        agg_runtimes = {id(a): a for a in loaded}
        for r in self._rules.values():
            if r.carried and not r.agg_runtime.loading:
                agg_runtimes[id(r.agg_runtime)] = r.agg_runtime
        for agg_rt in agg_runtimes.values():
            self._evaluate_art(agg_rt, agg_rt.rules, now, out, full=True)
            for rule_rt in agg_rt.rules:
                for alert, _ in list(rule_rt.carried.values()):
                    self._resolve_dropped(rule_rt, alert, now, out)
                rule_rt.carried.clear()
        self._emit.flush(out, now)

    # ------------------------------------------------------------------ evaluation

    def _due(self, r: RuleRuntime, now: float) -> bool:
        b = r.agg_runtime.boundary
        return r.next_eval <= now or r.deadline <= now or r.event_at <= now or (b is not None and b <= now)

    def _evaluate_art(
        self, agg_rt: AggRuntime, rules: list[RuleRuntime], now: float, out: list, *, full: bool = False
    ) -> None:
        """Periodic evaluation of ``rules`` of one aggregation: every group for time-sensitive rules (and rules
        with carried alerts, or all with ``full``), only groups with active alerts for the others; then forget
        expired groups."""
        lo, history_lo = agg_rt.lo(now)
        for r in rules:
            r.deadline = math.inf
        scan: list[RuleRuntime] = []
        mono: list[RuleRuntime] = []
        for r in rules:
            (scan if full or r.carried or r.evaluator.full_scan(r.last_eval, now) else mono).append(r)
        groups = agg_rt.groups
        if scan:
            for g in list(groups.values()):
                g.agg.advance(lo, history_lo)
                self._eval_group(agg_rt, g, scan, now, out)
        if mono:
            for gkey in set().union(*(r.active_groups for r in mono)):
                group = groups.get(gkey)
                if group is not None:
                    group.agg.advance(lo, history_lo)
                    self._eval_group(agg_rt, group, mono, now, out)
        expired = []
        for gkey, g in groups.items():  # ordered by newest data: stop at the first group still in use
            if g.last_key >= history_lo:
                break
            if not any(gkey in r.active_groups for r in agg_rt.rules):
                expired.append(gkey)
        for gkey in expired:
            del groups[gkey]
            for r in agg_rt.rules:
                r.slots.pop(gkey, None)
        for r in rules:
            r.next_eval = now + (r.rule.interval or self.evaluation_interval)
            r.last_eval = now
            ev = r.evaluator.next_event(now)
            r.event_at = ev if ev is not None else math.inf
        agg_rt.boundary = agg_rt.agg.window.next_boundary(now)

    def _eval_group(self, agg_rt: AggRuntime, g: Group, rules: Iterable[RuleRuntime], now: float, out: list) -> None:
        resend = self.resend_interval
        for rule_rt in rules:
            results = rule_rt.evaluator.check(g.agg, now)
            slots = rule_rt.slots.get(g.key)
            if slots is None and not rule_rt.carried:
                for active, _ in results:
                    if active:
                        break
                else:
                    continue
            for i, (active, value) in enumerate(results):
                s = slots[i] if slots is not None else None
                if s is None:
                    if not active and not rule_rt.carried:
                        continue
                    s = rule_rt.slot(g, i)
                    slots = rule_rt.slots[g.key]
                before = s.alert
                emit, persist = step(rule_rt, s, active, value, now, resend)
                if emit or persist:
                    out.append((rule_rt, s, s.alert or before, g, i))
            if slots is not None:
                if any(s is not None and s.alert is not None for s in slots):
                    rule_rt.active_groups.add(g.key)
                else:
                    rule_rt.active_groups.discard(g.key)

    def _resolve_dropped(self, rule_rt: RuleRuntime, alert: Alert, now: float, out: list) -> None:
        """Resolve (firing) or drop (pending) an alert that no group evaluates any more."""
        alert.state, alert.ends_at = AlertState.RESOLVED, now
        out.append((rule_rt, None, alert, None, -1))
