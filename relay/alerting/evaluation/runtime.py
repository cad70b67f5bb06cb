"""The rules engine's in-memory state: aggregations with their groups, rules with their alert slots, and the
per-alert state machine (inactive → pending → firing → resolved; a pending alert whose condition clears is
dropped). See ``relay.alerting.evaluation.engine`` for how records and clock ticks drive it.

Times are unix seconds (floats).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from relay.alert import ALERTNAME, Alert, AlertState, fingerprint
from relay.alerting.evaluation.kinds import Aggregation, Evaluator, make_evaluator
from relay.alerting.evaluation.windows import WindowAgg
from relay.alerting.rules.load import Rule, rule_context
from relay.alerting.rules.templates import render
from relay.model import UsageRecord

__all__ = ["Group", "AggRuntime", "RuleRuntime", "Slot", "Links", "copy_alert", "step", "render_alert", "index_label"]

log = logging.getLogger("relay.alerting")

#: ``links(labels, sample_record) -> {title: url}``: builds an alert's links (e.g. Langfuse session/trace) from its
#: labels and the last record that fed its group (a failed one for error-rate rules); None when unknown.
Links = Callable[[dict[str, str], UsageRecord | None], dict[str, str]]

#: A firing alert is re-sent when its value moved by more than this fraction since it was last sent.
MATERIAL_CHANGE = 0.05


class Group:
    """One group of an aggregation: ``key`` = ``(tenant, *group_by values)`` (missing labels are ``""``),
    ``labels`` = the non-empty ones by name, ``agg`` its window figures, ``sample`` the last record that fed it."""

    __slots__ = ("key", "labels", "agg", "sample", "last_key")

    def __init__(self, key: tuple, labels: dict[str, str], agg: WindowAgg):
        self.key = key
        self.labels = labels
        self.agg = agg
        self.sample: UsageRecord | None = None
        #: Newest bucket key added; groups are kept in ``AggRuntime.groups`` in the order this last grew.
        self.last_key = -(2**62)


class AggRuntime:
    """An aggregation (shared by every rule with the same ``Rule.agg_key()``) and its groups, ordered by when their
    newest bucket last advanced (so expired groups are found at the front). ``loading`` while its backfill runs:
    live changes are then buffered, not applied."""

    def __init__(self, agg: Aggregation):
        self.agg = agg
        self.groups: dict[tuple, Group] = {}
        self.rules: list[RuleRuntime] = []
        self.loading = False
        self._since = self._until = 0.0
        self._lo = (0, 0)
        self.boundary: float | None = None
        #: Matchers a routed record still has to pass (the engine drops the one its index guarantees).
        self.check = agg.matchers
        self.group_key = _group_key_fn(agg.group_by)

    def lo(self, now: float) -> tuple[int, int]:
        """``(lo, history_lo)`` of the window at ``now`` (cached while they stay the same)."""
        if not self._since <= now < self._until:
            lo, history_lo, self._since, self._until = self.agg.window.lo_range(now)
            self._lo = (lo, history_lo)
        return self._lo

    def group(self, key: tuple) -> Group:
        """The group ``key`` (``(tenant, *group_by values)``), created when new."""
        g = self.groups.get(key)
        if g is None:
            names = self.agg.group_by
            glabels = {"tenant": key[0]}
            for name, v in zip(names, key[1:], strict=False):
                if v:
                    glabels[name] = v
            g = self.groups[key] = Group(key, glabels, WindowAgg(self.agg.n, self.agg.keep_values))
        return g


def _group_key_fn(names: tuple[str, ...]) -> Callable[[str, dict[str, str]], tuple]:
    """``(tenant, labels) -> group key`` for ``group_by`` ``names`` (missing labels are ``""``)."""
    if not names:
        return lambda tenant, labels: (tenant,)
    if len(names) == 1:
        (n,) = names
        return lambda tenant, labels: (tenant, labels.get(n, ""))
    return lambda tenant, labels: (tenant, *[labels.get(n, "") for n in names])


class Slot:
    """One alert identity of a rule (group × condition): cached ``labels`` and fingerprint ``fp``, the current
    ``alert`` (pending/firing; None when inactive) and when/at which value it was last sent."""

    __slots__ = ("labels", "fp", "alert", "sent_at", "sent_value")

    def __init__(self, labels: dict[str, str]):
        self.labels = labels
        self.fp = fingerprint(labels)
        self.alert: Alert | None = None
        self.sent_at: float | None = None
        self.sent_value: float | None = None


class RuleRuntime:
    """A rule bound to its aggregation: evaluator, slots per group, alerts carried over from persisted state or a
    previous version of the rule (``carried``: fingerprint → ``(alert, sent_at)``, adopted by the slot with the same
    labels, resolved when no slot claims them), and its schedule (``next_eval``, ``deadline`` of ``for:``)."""

    def __init__(self, rule: Rule, agg_runtime: AggRuntime):
        self.rule = rule
        self.agg_runtime = agg_runtime
        self.evaluator: Evaluator = make_evaluator(rule, agg_runtime.agg)
        self.slots: dict[tuple, list[Slot | None]] = {}
        self.carried: dict[str, tuple[Alert, float | None]] = {}
        self.next_eval = 0.0
        self.deadline = math.inf
        #: Keys of groups with a pending or firing alert of this rule.
        self.active_groups: set[tuple] = set()
        #: Last periodic evaluation, and when the evaluator next needs a full scan (``Evaluator.next_event``).
        self.last_eval = -math.inf
        self.event_at = math.inf
        self.for_s = rule.for_s
        self.window_desc = agg_runtime.agg.window.describe()
        self.context = rule_context(rule)

    def labels_for(self, g: Group, index: int) -> dict[str, str]:
        """The identity labels of condition ``index`` for group ``g``."""
        cond = self.evaluator.conditions[index]
        labels = dict(g.labels)
        labels.update(self.rule.model.labels)
        labels[ALERTNAME] = self.rule.name
        labels["severity"] = cond.severity
        labels.update(cond.labels)
        return labels

    def slot(self, g: Group, index: int) -> Slot:
        """The slot of (group, condition), created on first use (adopting a carried alert with its labels)."""
        slots = self.slots.get(g.key)
        if slots is None:
            slots = self.slots[g.key] = [None] * len(self.evaluator.conditions)
        s = slots[index]
        if s is None:
            s = slots[index] = Slot(self.labels_for(g, index))
            got = self.carried.pop(s.fp, None)
            if got is not None:
                s.alert, s.sent_at = got
                s.sent_value = s.alert.value
        return s

    def active(self) -> bool:
        """Whether any slot holds a pending or firing alert."""
        return any(s is not None and s.alert is not None for slots in self.slots.values() for s in slots)


def copy_alert(a: Alert) -> Alert:
    """A copy with its own dicts (what leaves the engine)."""
    return replace(
        a, labels=dict(a.labels), annotations=dict(a.annotations), values=dict(a.values), links=dict(a.links)
    )


def step(
    rrt: RuleRuntime, slot: Slot, active: bool, value: float, now: float, resend_interval: float
) -> tuple[bool, bool]:
    """Advance one alert's state machine; returns ``(emit, persist)``: emit when it became firing, resolved, or
    (firing) its value moved by more than :data:`MATERIAL_CHANGE` or ``resend_interval`` passed since it was last
    sent; persist on every state change and emission. When the condition no longer holds, ``slot.alert`` is
    cleared and the alert marked resolved (``fired_at`` None: a dropped pending alert, only deleted from storage)."""
    a = slot.alert
    if active:
        changed = False
        if a is None:
            a = slot.alert = Alert(
                labels=slot.labels, state=AlertState.PENDING, active_at=now, rule=rrt.rule.id, window=rrt.window_desc
            )
            slot.sent_at = slot.sent_value = None
            changed = True
        if a.state is AlertState.PENDING:
            due = a.active_at + rrt.for_s
            if now >= due:
                a.state = AlertState.FIRING
                a.fired_at = now
                changed = True
            elif due < rrt.deadline:
                rrt.deadline = due
        a.value = value
        if a.state is not AlertState.FIRING:
            return False, changed
        if changed or slot.sent_at is None or now - slot.sent_at >= resend_interval:
            return True, True
        old = slot.sent_value
        if old is None or abs(value - old) > MATERIAL_CHANGE * max(abs(old), 1e-12):
            return True, True
        return False, False
    if a is None:
        return False, False
    slot.alert = None
    was_firing = a.state is AlertState.FIRING
    a.state = AlertState.RESOLVED
    a.ends_at = now
    if not was_firing:  # a pending alert whose condition cleared: dropped without notification
        return False, True
    a.value = value
    return True, True


def render_alert(
    rrt: RuleRuntime, a: Alert, values: dict[str, float] | None, sample: UsageRecord | None, links: Links | None
) -> None:
    """Fill ``a.values`` (when given), ``a.annotations`` (templates; a failing template yields its error text and a
    warning) and ``a.links`` in place."""
    if values is not None:
        a.values = {k: float(v) for k, v in values.items()}
    ctx: dict[str, Any] = {"labels": a.labels, "values": a.values, "value": a.value, "rule": rrt.context}
    out = {}
    for key, tpl in rrt.rule.templates.items():
        try:
            out[key] = render(tpl, ctx)
        except Exception as e:
            from relay.alerting.rules.templates import explain

            why = explain(e, ctx)
            log.warning("rule %s: annotation %s failed to render: %s", rrt.rule.id, key, why)
            out[key] = f"(template error: {why})"
    a.annotations = out
    if links is not None:
        try:
            a.links = dict(links(dict(a.labels), sample))
        except Exception as e:
            log.warning("rule %s: links failed: %s", rrt.rule.id, e)


def index_label(agg: Aggregation) -> str | None:
    """The label an aggregation is indexed under (records are routed to it by that label's value): one of its
    equality constraints, preferring selective labels over ``kind``, ``success`` and the like; None when it has none."""
    idx = agg.index
    if not idx:
        return None
    low = ("kind", "success", "source", "cost_source", "agent", "tenant", "decision_source", "decision")
    for name in idx:
        if name not in low:
            return name
    for name in low:
        if name in idx:
            return name
    return next(iter(idx))
