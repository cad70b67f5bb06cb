"""Helpers for the Jira and webhook notifier tests: a settable clock, alerts and notifications, and a
:class:`~relay.notify.jira.config.JiraConfig` pointing at a :class:`~tests.fakes.jira.FakeJira`."""

from __future__ import annotations

from typing import Any

from relay.alert import Alert, AlertState, Notification
from relay.notify.jira.config import JiraConfig
from tests.fakes.jira import FakeJira
from tests.support.clock import Clock

__all__ = ["Clock", "T0", "make_alert", "make_notification", "jira_config", "GROUP_KEY", "SESSION_URL", "RUNBOOK"]

#: 2026-05-28T… UTC: an arbitrary fixed start for the fake clocks.
T0 = 1_780_000_000.0
GROUP_KEY = '{}/{severity="critical"}:{alertname="BudgetExceeded", team="payments"}'
SESSION_URL = "https://langfuse.example.com/project/p1/sessions/sess-42"
RUNBOOK = "https://runbooks.example.com/budget"


def make_alert(
    value: float = 123.45,
    *,
    state: AlertState = AlertState.FIRING,
    severity: str = "critical",
    user: str = "alice@example.com",
    fired_at: float = T0 - 600,
    ends_at: float | None = None,
) -> Alert:
    """A budget alert of team ``payments`` for ``user`` with figures (USD) and a Langfuse link."""
    return Alert(
        labels={"alertname": "BudgetExceeded", "team": "payments", "user": user, "severity": severity},
        annotations={"summary": "Monthly budget exceeded", "runbook_url": RUNBOOK},
        state=state,
        active_at=fired_at - 60,
        fired_at=fired_at,
        ends_at=ends_at,
        value=value,
        values={"spend": value, "limit": 100.0, "percent": value},
        links={"Langfuse session": SESSION_URL},
        rule="budgets.yaml:team-monthly",
        window="month (UTC)",
        generator_url="http://relay.example.com/api/v1/alerts",
    )


def make_notification(
    *alerts: Alert,
    seq: int = 1,
    repeat: bool = False,
    created_at: float = T0,
    group_key: str = GROUP_KEY,
    receiver: str = "ops",
) -> Notification:
    """A notification of the ``BudgetExceeded``/``payments`` group; status from the alerts (firing if any)."""
    alerts_list = list(alerts) or [make_alert()]
    status = "firing" if any(a.state is AlertState.FIRING for a in alerts_list) else "resolved"
    return Notification(
        receiver=receiver,
        group_key=group_key,
        group_labels={"alertname": "BudgetExceeded", "team": "payments"},
        status=status,
        alerts=alerts_list,
        seq=seq,
        repeat=repeat,
        created_at=created_at,
        external_url="http://relay.example.com",
    )


def jira_config(fake: FakeJira, **overrides: Any) -> JiraConfig:
    """A valid config for ``fake``'s flavour and credentials, project ``OPS``; ``overrides`` win."""
    base: dict[str, Any] = {"flavor": fake.flavor, "api_url": fake.base_url, "project": "OPS", "timeout": 5}
    if fake.flavor == "cloud":
        base.update(user=fake.user, api_token=fake.api_token)
    else:
        base.update(personal_access_token=fake.pat)
    base.update(overrides)
    return JiraConfig(**base)
