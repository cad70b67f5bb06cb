"""The alert and notification data model shared by the rules engine, the dispatcher and the notifiers.

Terms and semantics follow Prometheus Alertmanager (https://prometheus.io/docs/alerting/latest/alertmanager/,
https://prometheus.io/docs/alerting/latest/configuration/ and ``prometheus/common`` ``model/signature.go``):

- an :class:`Alert` is identified by its **labels** (``alertname``, the rule's static labels, its ``group_by``
  label values, ``severity``…); **annotations** are text, never identity;
- the **fingerprint** is 64-bit FNV-1a over the label set sorted by name, each name and value followed by the
  byte 0xFF, shown as 16 hex digits;
- an alert is ``pending`` (condition true, ``for:`` not yet elapsed), ``firing`` or ``resolved``;
- a :class:`Notification` is what one receiver gets for one alert group at one flush: the group's firing alerts
  and (when the receiver has ``send_resolved``) the ones that resolved since the last notification.

Times are unix seconds (floats) throughout this package; money is USD (floats).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["AlertState", "Alert", "Notification", "fingerprint", "ALERTNAME"]

#: The label holding the rule's name (Prometheus convention).
ALERTNAME = "alertname"

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_SEP = 0xFF


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's fingerprint of a label set: FNV-1a 64 over ``name 0xFF value 0xFF`` for every label,
    sorted by name; 16 lower-case hex digits. Same labels ⇒ same fingerprint whatever the annotations.

    Source: ``prometheus/common`` ``model/signature.go`` (``labelSetToFingerprint``) and ``model/fnv.go``.
    """
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for b in part.encode():
                h ^= b
                h = (h * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
            h ^= _SEP
            h = (h * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


class AlertState(str, enum.Enum):
    """Lifecycle of an alert: pending → firing → resolved (a pending alert whose condition clears is dropped)."""

    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass
class Alert:
    """One alert instance: one rule (and threshold) for one group of ledger labels.

    ``labels`` is the identity (includes ``alertname``, ``severity``, the rule's ``labels`` and ``group_by``
    values, and ``tenant``); ``annotations`` are rendered templates (``summary``, ``description``,
    ``runbook_url``…). ``value`` is the figure the rule compared (USD for budgets, a ratio 0..1 for error
    rates, the aggregate for thresholds, a ratio or z-score for spikes). ``values`` holds the other named figures
    a message shows (e.g. ``spend``, ``limit``, ``percent``, ``threshold``, ``count``, ``forecast``), all
    floats. ``links`` maps a title to a URL (Langfuse session/trace, runbook). Times are unix seconds:
    ``active_at`` when the condition first held, ``fired_at`` when it became firing, ``ends_at`` when resolved.
    ``rule`` is the rule's unique id (``<file>:<rule name>``); ``window`` a human description of its window
    (e.g. ``"month (Europe/Berlin)"``, ``"last 10m"``).
    """

    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    state: AlertState = AlertState.PENDING
    active_at: float = 0.0
    fired_at: float | None = None
    ends_at: float | None = None
    value: float = 0.0
    values: dict[str, float] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    rule: str = ""
    window: str = ""
    generator_url: str = ""

    @property
    def fingerprint(self) -> str:
        """Alertmanager fingerprint of ``labels`` (16 hex digits)."""
        return fingerprint(self.labels)

    @property
    def name(self) -> str:
        """The ``alertname`` label."""
        return self.labels.get(ALERTNAME, "")

    @property
    def severity(self) -> str:
        """The ``severity`` label (``info``/``warning``/``critical``), ``warning`` when unset."""
        return self.labels.get("severity", "warning")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``state`` as its string value)."""
        d = asdict(self)
        d["state"] = self.state.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Alert:
        """Inverse of :meth:`to_dict`. Raises ``KeyError``/``ValueError`` on a malformed dict."""
        d = dict(d)
        d["state"] = AlertState(d["state"])
        return cls(**d)


@dataclass
class Notification:
    """What one receiver is sent for one alert group at one flush (Alertmanager's webhook payload, v4, is
    rendered from it by the webhook notifier).

    ``status`` is ``firing`` when any alert of the group fires, else ``resolved``. ``alerts`` holds the firing
    alerts and, when the receiver sends resolved notifications, those resolved since the last one (state
    ``resolved``). ``group_key`` is unique per route and group-label values (stable across restarts; notifiers
    use it as their dedup key, e.g. Slack thread or Jira issue). ``seq`` counts notifications of this group to
    this receiver (1 for the first). ``repeat`` is True when the firing set is unchanged since the last
    notification (a repeat_interval reminder). ``created_at`` is unix seconds. ``external_url`` is relay's own
    URL (alert API), ``truncated_alerts`` the number of alerts left out of ``alerts``.
    """

    receiver: str
    group_key: str
    group_labels: dict[str, str]
    status: str
    alerts: list[Alert]
    seq: int = 1
    repeat: bool = False
    created_at: float = 0.0
    external_url: str = ""
    truncated_alerts: int = 0

    @property
    def firing(self) -> list[Alert]:
        """The firing alerts."""
        return [a for a in self.alerts if a.state is AlertState.FIRING]

    @property
    def resolved(self) -> list[Alert]:
        """The resolved alerts."""
        return [a for a in self.alerts if a.state is AlertState.RESOLVED]

    @property
    def common_labels(self) -> dict[str, str]:
        """Labels with equal values on every alert."""
        return _common([a.labels for a in self.alerts])

    @property
    def common_annotations(self) -> dict[str, str]:
        """Annotations with equal values on every alert."""
        return _common([a.annotations for a in self.alerts])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (round-trips through :meth:`from_dict`; stored in the outbox)."""
        d = asdict(self)
        d["alerts"] = [a.to_dict() for a in self.alerts]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Notification:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["alerts"] = [Alert.from_dict(a) for a in d["alerts"]]
        return cls(**d)


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    out = dict(maps[0])
    for m in maps[1:]:
        out = {k: v for k, v in out.items() if m.get(k) == v}
    return out
