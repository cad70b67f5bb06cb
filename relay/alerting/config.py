"""The ``alerting:`` section of relay's config: Alertmanager's routing tree, receivers and inhibition rules.

The shape and defaults are Alertmanager's (https://prometheus.io/docs/alerting/latest/configuration/),
so an operator can copy a ``route:`` / ``receivers:`` / ``inhibit_rules:`` block::

    alerting:
      external_url: http://relay.internal:8888
      route:
        receiver: team-slack
        group_by: [alertname, team.id]
        group_wait: 30s          # default 30s
        group_interval: 5m       # default 5m
        repeat_interval: 4h      # default 4h
        routes:
          - matchers: ['severity="critical"']
            receiver: oncall
            continue: true
      receivers:
        - name: team-slack
          slack_configs: [{bot_token: "${env:SLACK_BOT_TOKEN}", channel: "#ai-costs"}]
        - name: oncall
          webhook_configs: [{url: "${env:ONCALL_WEBHOOK}"}]
      inhibit_rules:
        - source_matchers: ['alertname="BudgetExceeded"']
          target_matchers: ['alertname="BudgetWarning"']
          equal: [team.id]

Children inherit every unset setting (``receiver``, ``group_by``, the three timers) from their parent; ``matchers``
and ``continue`` are never inherited. ``group_by: ['...']`` groups by all labels (no aggregation). With no
receivers configured, alerts are still evaluated and listed by the API but nothing is sent.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator

from relay.config_types import Duration, _Model, parse_duration
from relay.matchers import parse_matchers
from relay.notify.config import ReceiverConfig

__all__ = [
    "RouteConfig",
    "InhibitRuleConfig",
    "AlertingConfig",
    "GROUP_BY_ALL",
    "DEFAULT_GROUP_WAIT",
    "DEFAULT_GROUP_INTERVAL",
    "DEFAULT_REPEAT_INTERVAL",
]

#: ``group_by: ['...']``: group by every label, i.e. one group per alert.
GROUP_BY_ALL = "..."
#: Alertmanager's defaults, seconds.
DEFAULT_GROUP_WAIT = 30.0
DEFAULT_GROUP_INTERVAL = 300.0
DEFAULT_REPEAT_INTERVAL = 4 * 3600.0


def _optional_duration(value: Any) -> Any:
    return None if value is None else parse_duration(value)


OptionalDuration = Annotated[float | None, BeforeValidator(_optional_duration)]


def _check_matchers(v: list[str]) -> list[str]:
    parse_matchers(v)  # raises ValueError naming the bad matcher
    return v


class RouteConfig(_Model):
    """A node of the routing tree (Alertmanager ``route``). Unset fields (None) inherit the parent's value; the
    root's unset timers take Alertmanager's defaults (group_wait 30s, group_interval 5m, repeat_interval 4h) and
    an unset root ``group_by`` means one group per route. ``matchers`` are label matcher strings
    (``name="v"``, ``!=``, ``=~``, ``!~``; see ``relay.matchers``)."""

    model_config = ConfigDict(populate_by_name=True)

    receiver: str | None = None
    group_by: list[str] | None = None
    matchers: list[str] = []
    continue_: bool = Field(False, alias="continue")
    group_wait: OptionalDuration = None
    group_interval: OptionalDuration = None
    repeat_interval: OptionalDuration = None
    routes: list[RouteConfig] = []

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, v: list[str]) -> list[str]:
        return _check_matchers(v)

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if GROUP_BY_ALL in v and len(v) > 1:
            raise ValueError("cannot have wildcard group_by ('...') and other labels at the same time")
        dupes = sorted({x for x in v if v.count(x) > 1})
        if dupes:
            raise ValueError(f"duplicated label in group_by: {', '.join(dupes)}")
        return v

    @field_validator("group_interval", "repeat_interval")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("must be greater than zero")
        return v


class InhibitRuleConfig(_Model):
    """While an alert matching ``source_matchers`` fires, alerts matching ``target_matchers`` whose ``equal``
    labels have the same values as the source's (a missing label counts as empty) are muted. An alert never
    inhibits itself."""

    source_matchers: list[str] = Field(min_length=1)
    target_matchers: list[str] = Field(min_length=1)
    equal: list[str] = []

    @field_validator("source_matchers", "target_matchers")
    @classmethod
    def _matchers(cls, v: list[str]) -> list[str]:
        return _check_matchers(v)


class AlertingConfig(_Model):
    """``alerting:`` — the routing tree, receivers and inhibition rules, plus relay's own settings:
    ``external_url`` (relay's admin URL as reachable by people, used for links in notifications) and
    ``data_retention`` (how long notification-log entries and expired silences are kept; Alertmanager's
    ``--data.retention``, default 120h).

    Validation: receiver names are unique; every route's receiver exists; the root route has a receiver when any
    receiver is configured, and has no matchers and no ``continue`` (as in Alertmanager).
    """

    route: RouteConfig = RouteConfig()
    receivers: list[ReceiverConfig] = []
    inhibit_rules: list[InhibitRuleConfig] = []
    external_url: str = ""
    data_retention: Duration = 120 * 3600.0

    @field_validator("external_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _check(self) -> AlertingConfig:
        names = [r.name for r in self.receivers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"receiver names must be unique; repeated: {', '.join(dupes)}")
        root = self.route
        if root.matchers:
            raise ValueError("route: the root route must not have any matchers")
        if root.continue_:
            raise ValueError("route: the root route cannot have continue set")
        if self.receivers and not root.receiver:
            raise ValueError("route: the root route must have a receiver")
        known = set(names)

        def walk(r: RouteConfig, path: str) -> None:
            if r.receiver is not None and r.receiver not in known:
                hint = f" (known: {', '.join(sorted(known))})" if known else " (no receivers are configured)"
                raise ValueError(f"{path}.receiver: unknown receiver {r.receiver!r}{hint}")
            for i, child in enumerate(r.routes):
                walk(child, f"{path}.routes[{i}]")

        walk(root, "route")
        return self

    def receiver(self, name: str) -> ReceiverConfig | None:
        """The receiver called ``name``, or None."""
        return next((r for r in self.receivers if r.name == name), None)
