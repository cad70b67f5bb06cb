"""The ``reports:`` config section: scheduled usage summaries (daily, weekly, monthly) posted to receivers.

Example (``config.yaml``)::

    reports:
      schedules:
        - name: weekly-platform
          period: weekly              # daily | weekly | monthly
          cron: "0 9 * * 1"           # when to post (default per period: 09:00 daily / Mondays / 1st of month)
          timezone: Europe/Berlin     # IANA zone of the cron and of the period boundaries
          receiver: team-slack        # a receiver (receivers[].name) with slack_configs and/or webhook_configs
          channel: "#claude-usage"    # optional: another channel than the receiver's (bot-token Slack only)
          tenant: acme                # optional: one tenant; default: every tenant, one post each
          matchers: ['team.id="platform"']   # optional: narrow the report to a label scope
          group_by: team.id           # breakdown label (team/project sections); null to leave it out
          chart_by: model             # stack the daily cost chart by model or by a label (e.g. team.id)
          top_n: 5

With no ``reports`` section there are no schedules (``relay report`` still works on the command line).
Cron syntax: five fields as in crontab(5), evaluated by croniter (https://github.com/kiorky/croniter) in
``timezone``. Durations as in ``relay.config`` (``30s``, ``10m``, ``1h``).
"""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from relay.config_types import Duration, _Model
from relay.matchers import parse_matchers

__all__ = ["ScheduleConfig", "ReportsConfig", "DEFAULT_CRON"]

#: The cron used when a schedule gives none: 09:00 every day / every Monday / on the 1st of the month.
DEFAULT_CRON = {"daily": "0 9 * * *", "weekly": "0 9 * * 1", "monthly": "0 9 1 * *"}


class ScheduleConfig(_Model):
    """One scheduled report: a period kind, a cron (in ``timezone``) and a destination receiver.

    Each cron firing posts the **last complete period** before it (a Monday 09:00 firing posts the previous ISO
    week). ``tenant`` None posts one report per tenant. ``matchers`` narrow the scope (Alertmanager matcher
    syntax over ledger labels). ``late_after`` (seconds): a post made later than this after its cron time (relay
    was down) is marked late.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    period: Literal["daily", "weekly", "monthly"] = "weekly"
    cron: str | None = None
    timezone: str = "UTC"
    receiver: str = Field(min_length=1)
    channel: str | None = None
    tenant: str | None = None
    matchers: list[str] = []
    group_by: str | None = "team.id"
    chart_by: str = "model"
    top_n: int = Field(5, ge=1, le=20)
    late_after: Duration = 3600.0

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Europe/Berlin or UTC)") from None
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        from croniter import croniter  # here: a relay without report schedules never loads it (~1.2 MiB)

        if v is not None and not croniter.is_valid(v):
            raise ValueError(f"invalid cron expression {v!r} (five fields, e.g. '0 9 * * 1')")
        return v

    @field_validator("group_by", "chart_by")
    @classmethod
    def _label(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_.\-]*$", v):
            raise ValueError(f"invalid label name {v!r}")
        return v

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, v: list[str]) -> list[str]:
        parse_matchers(v)  # raises ValueError naming the bad matcher
        return v

    @property
    def cron_expr(self) -> str:
        """The cron expression in force (the period's default when unset)."""
        return self.cron or DEFAULT_CRON[self.period]

    @property
    def tz(self) -> ZoneInfo:
        """``timezone`` as a ZoneInfo."""
        return ZoneInfo(self.timezone)


class ReportsConfig(_Model):
    """``reports``: scheduled summaries. ``check_interval``: the scheduler wakes at least this often (seconds);
    ``claim_timeout``: a run claimed by a replica that did not finish within it (crashed mid-post) is retried
    by another tick (so delivery is at-least-once only inside that window); ``retry_initial``/``retry_max``:
    backoff after a retryable delivery failure."""

    schedules: list[ScheduleConfig] = []
    check_interval: Duration = 60.0
    claim_timeout: Duration = 600.0
    retry_initial: Duration = 60.0
    retry_max: Duration = 3600.0

    @model_validator(mode="after")
    def _unique(self) -> ReportsConfig:
        names = [s.name for s in self.schedules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"report schedule names must be unique; repeated: {', '.join(dupes)}")
        return self

    def problems(self, receivers: list[str], tenants: list[str]) -> list[str]:
        """Cross-section checks for ``relay check`` / start-up: every schedule's ``receiver`` is one of
        ``receivers`` (``alerting.receivers[].name``) and its ``tenant``, when set, one of ``tenants``. Returns
        human-readable problems (empty when fine)."""
        out = []
        for i, s in enumerate(self.schedules):
            if s.receiver not in receivers:
                out.append(
                    f"reports.schedules[{i}].receiver ({s.name}): {s.receiver!r} is not defined in "
                    f"alerting.receivers (defined: {', '.join(receivers) or 'none'})"
                )
            if s.tenant is not None and s.tenant not in tenants:
                out.append(f"reports.schedules[{i}].tenant ({s.name}): unknown tenant {s.tenant!r}")
        return out
