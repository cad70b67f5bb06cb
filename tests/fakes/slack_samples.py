"""Sample alerts and notifications for the Slack tests: one per rule kind (budget, error rate, threshold, spike),
with the value names of :mod:`relay.notify.slack.format`. Times are unix seconds around :data:`T0`."""

from __future__ import annotations

from typing import Any

from relay.alert import Alert, AlertState, Notification

__all__ = ["T0", "budget_alert", "error_rate_alert", "threshold_alert", "spike_alert", "notification", "resolved"]

T0 = 1_750_000_000.0


def _alert(default_labels: dict[str, str], values: dict[str, float], value: float, **kw: Any) -> Alert:
    """An alert firing since T0+60 (active since T0); ``kw`` overrides any field (``labels`` too)."""
    base: dict[str, Any] = dict(
        labels=kw.pop("labels", default_labels),
        state=AlertState.FIRING,
        active_at=T0,
        fired_at=T0 + 60,
        value=value,
        values=values,
    )
    base.update(kw)
    return Alert(**base)


def budget_alert(team: str = "platform", severity: str = "critical", **kw: Any) -> Alert:
    """Monthly team budget at 81.24 % ($812.40 of $1,000.00, 80 % threshold) with a forecast over the limit, a
    Langfuse session link and a runbook (value names as ``relay.alerting.evaluation.kinds.BudgetEvaluator``)."""
    kw.setdefault(
        "annotations",
        {
            "summary": f"Team {team} spent 81% of its monthly budget",
            "description": "Spend is rising faster than usual.",
            "runbook_url": "https://runbooks.example.com/budget",
        },
    )
    kw.setdefault("links", {"Langfuse session": "https://langfuse.example.com/project/p/sessions/s-1"})
    return _alert(
        {"alertname": "TeamBudget", "severity": severity, "team.id": team},
        {
            "spend": 812.4,
            "limit": 1000.0,
            "percent": 81.24,
            "threshold": 800.0,
            "threshold_percent": 80.0,
            "forecast": 1240.0,
            "projected_exceeded_at": T0 + 6 * 86400,
            "window_start": T0 - 14 * 86400,
            "window_end": T0 + 16 * 86400,
            "input_tokens": 1234567.0,
        },
        812.4,
        rule="budgets.yaml:team-monthly",
        window="month (Europe/Berlin)",
        **kw,
    )


def error_rate_alert(model: str = "claude-sonnet-4", severity: str = "warning", **kw: Any) -> Alert:
    """API error rate 12.5 % (25 of 200 calls) against a 5 % threshold over the last 10 minutes
    (``ErrorRateEvaluator`` value names)."""
    kw.setdefault("annotations", {"summary": f"API errors for {model} at 12.5%"})
    kw.setdefault("links", {"Langfuse trace": "https://langfuse.example.com/project/p/traces/t-1"})
    return _alert(
        {"alertname": "ApiErrorRate", "severity": severity, "model": model},
        {"ratio": 0.125, "failed": 25.0, "total": 200.0, "min_count": 20.0, "threshold": 0.05, "count_threshold": 0.0},
        0.125,
        rule="errors.yaml:api-error-rate",
        window="last 10m",
        **kw,
    )


def threshold_alert(user: str = "alice@example.com", severity: str = "info", **kw: Any) -> Alert:
    """A user's tokens today (1,234,567) over a 1,000,000 threshold; ``field`` annotation ``total_tokens``
    (``ThresholdEvaluator`` value names)."""
    kw.setdefault("annotations", {"summary": f"{user} used many tokens today", "field": "total_tokens"})
    return _alert(
        {"alertname": "UserTokens", "severity": severity, "user.email": user},
        {"value": 1_234_567.0, "threshold": 1_000_000.0, "count": 140.0},
        1_234_567.0,
        rule="usage.yaml:user-tokens",
        window="day (UTC)",
        **kw,
    )


def spike_alert(severity: str = "warning", method: str = "ratio", **kw: Any) -> Alert:
    """Hourly spend $3,840.00 against a $1,200.00 baseline (×3.2, z 4.1), rule method ``ratio`` (value 3.2) or
    ``zscore`` (value 4.1); ``unit`` annotation ``usd`` (``SpikeEvaluator`` value names)."""
    kw.setdefault("annotations", {"summary": "Spend spike", "unit": "usd"})
    values = {
        "current": 3840.0,
        "baseline": 1200.0,
        "stddev": 640.0,
        "ratio": 3.2,
        "zscore": 4.1,
        "threshold": 3.0 if method == "ratio" else 3.5,
    }
    return _alert(
        {"alertname": "SpendSpike", "severity": severity, "team.id": "data"},
        values,
        3.2 if method == "ratio" else 4.1,
        rule="spikes.yaml:hourly-spend",
        window="last 1h vs 7d",
        **kw,
    )


def resolved(alert: Alert, ends_at: float = T0 + 3600 + 720) -> Alert:
    """A copy of ``alert`` in state resolved at ``ends_at``."""
    return Alert.from_dict({**alert.to_dict(), "state": "resolved", "ends_at": ends_at})


def notification(
    alerts: list[Alert],
    *,
    group_labels: dict[str, str] | None = None,
    seq: int = 1,
    repeat: bool = False,
    group_key: str = '{}/{}:{team.id="platform"}',
    created_at: float = T0 + 90,
    truncated_alerts: int = 0,
) -> Notification:
    """A notification of ``alerts`` (status firing when any fires) to receiver ``oncall``."""
    status = "firing" if any(a.state is AlertState.FIRING for a in alerts) else "resolved"
    if group_labels is None:
        group_labels = {k: v for k, v in alerts[0].labels.items() if k not in ("alertname", "severity")}
    return Notification(
        "oncall",
        group_key,
        group_labels,
        status,
        alerts,
        seq=seq,
        repeat=repeat,
        created_at=created_at,
        truncated_alerts=truncated_alerts,
    )
