"""The ``reports:`` config section: defaults, validation messages, cross-checks against receivers and tenants,
and which period each cron firing posts (croniter in the schedule's time zone, across DST)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import yaml
from pydantic import ValidationError

from relay.reports.config import ReportsConfig, ScheduleConfig
from relay.reports.schedule import ReportScheduler

BERLIN = ZoneInfo("Europe/Berlin")

EXAMPLE = """
schedules:
  - name: weekly-platform
    period: weekly
    cron: "0 9 * * 1"
    timezone: Europe/Berlin
    receiver: team-slack
    channel: "#claude-usage"
    tenant: acme
    matchers: ['team.id="platform"']
    group_by: team.id
    chart_by: model
    top_n: 5
  - name: daily
    period: daily
    receiver: team-slack
  - name: monthly
    period: monthly
    timezone: America/New_York
    receiver: finance-hook
    group_by: null
"""


def test_the_documented_example_parses_with_defaults():
    cfg = ReportsConfig.model_validate(yaml.safe_load(EXAMPLE))
    weekly, daily, monthly = cfg.schedules
    assert weekly.matchers == ['team.id="platform"'] and weekly.tz == BERLIN
    assert daily.cron_expr == "0 9 * * *" and daily.timezone == "UTC" and daily.tenant is None
    assert monthly.cron_expr == "0 9 1 * *" and monthly.group_by is None and monthly.chart_by == "model"
    assert ReportsConfig().schedules == []  # no section: no schedules
    assert cfg.problems(["team-slack"], ["acme"]) == [
        "reports.schedules[2].receiver (monthly): 'finance-hook' is not defined in alerting.receivers "
        "(defined: team-slack)"
    ]
    assert cfg.problems(["team-slack", "finance-hook"], ["other"]) == [
        "reports.schedules[0].tenant (weekly-platform): unknown tenant 'acme'"
    ]


@pytest.mark.parametrize(
    "override, message",
    [
        ({"cron": "61 9 * * 1"}, "invalid cron expression"),
        ({"timezone": "Europe/Atlantis"}, "unknown time zone"),
        ({"period": "hourly"}, "Input should be 'daily', 'weekly' or 'monthly'"),
        ({"matchers": ['team.id=~"("']}, "invalid regex"),
        ({"group_by": "team id"}, "invalid label name"),
        ({"top_n": 0}, "greater than or equal to 1"),
        ({"receiver": ""}, "at least 1 character"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_schedules_are_rejected_with_the_reason(override, message):
    with pytest.raises(ValidationError, match=message):
        ScheduleConfig.model_validate({"name": "w", "receiver": "r", **override})


def test_schedule_names_are_unique():
    with pytest.raises(ValidationError, match="repeated: w"):
        ReportsConfig.model_validate({"schedules": [{"name": "w", "receiver": "r"}, {"name": "w", "receiver": "s"}]})


@pytest.mark.parametrize(
    "period, cron, now, fire, label",
    [
        ("weekly", "0 9 * * 1", datetime(2026, 11, 23, 9, 0), datetime(2026, 11, 23, 9, 0), "2026-W47"),
        ("weekly", "0 9 * * 1", datetime(2026, 11, 23, 8, 59), datetime(2026, 11, 16, 9, 0), "2026-W46"),
        ("weekly", "0 9 * * 1", datetime(2026, 11, 26, 15, 0), datetime(2026, 11, 23, 9, 0), "2026-W47"),
        ("daily", "30 6 * * *", datetime(2026, 10, 26, 7, 0), datetime(2026, 10, 26, 6, 30), "2026-10-25"),  # after DST
        ("monthly", "0 9 1 * *", datetime(2027, 1, 5, 0, 0), datetime(2027, 1, 1, 9, 0), "2026-12"),
        ("monthly", "0 9 2 * *", datetime(2026, 3, 2, 9, 0), datetime(2026, 3, 2, 9, 0), "2026-02"),
    ],
)
def test_each_firing_posts_the_last_complete_period(period, cron, now, fire, label):
    s = ScheduleConfig(name="s", period=period, cron=cron, timezone="Europe/Berlin", receiver="r")
    got_fire, got_period = ReportScheduler.due(s, now.replace(tzinfo=BERLIN).timestamp())
    assert got_fire == fire.replace(tzinfo=BERLIN).timestamp()
    assert got_period.label == label


_CHILD = """
import sys
from pathlib import Path
from relay.config_load import load_config
load_config(Path(sys.argv[1]))
print("croniter" in sys.modules)
from relay.reports.config import ScheduleConfig
ScheduleConfig(name="s", period="weekly", cron="0 9 * * 1", receiver="r")
print("croniter" in sys.modules)
"""


def test_croniter_is_loaded_only_for_report_schedules():
    """A relay without report schedules (the bundled config) never imports croniter (~1.2 MiB of RSS); validating
    a schedule's cron does. A fresh interpreter: the test process has it loaded."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root / "config.yaml")], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "True"]
