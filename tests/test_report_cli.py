"""``relay report weekly|daily|monthly``: Markdown, JSON and CSV of any past period from the ledger file, the
chart written beside it, and clear usage errors."""

from __future__ import annotations

import argparse
import csv
import io
import json
import struct
from datetime import datetime
from pathlib import Path

import pytest

from relay.cli import report as cli
from tests.test_report_support import BERLIN, Ledger, generate_week, in_range, week_start, write_ledger


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    data.mkdir()
    led = Ledger()
    for w in (46, 47):
        generate_week(led, week_start(2026, w), seed=w)
    write_ledger(data / "relay.db", led)
    config = root / "config.yaml"
    config.write_text(f"storage:\n  directory: {data}\ntenants:\n  - name: acme\n  - name: other\n")
    single = root / "single.yaml"
    single.write_text(f"storage:\n  directory: {data}\nauth:\n  default_tenant: acme\n")
    return led, config, single


def relay_report(argv: list[str], now: datetime | None = None) -> int:
    """Parse ``relay report …`` as relay's CLI does and run it."""
    p = argparse.ArgumentParser(prog="relay")
    cli.add_subparser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["report", *argv])
    clock = (lambda: now.timestamp()) if now else None
    return args.fn(args, now=clock) if clock else args.fn(args)


def week_cost(led: Ledger, week: int) -> int:
    return sum(r.cost_micros for r in in_range(led.records, week_start(2026, week), week_start(2026, week + 1)))


def test_markdown_of_a_past_week(setup, capsys):
    led, config, _ = setup
    argv = ["weekly", "--week", "2026-W47", "--tenant", "acme", "-c", str(config), "--tz", "Europe/Berlin"]
    assert relay_report(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Claude Code weekly report — acme — 2026-W47\n")
    assert f"| Cost | ${week_cost(led, 47) / 1e6:,.2f} | ${week_cost(led, 46) / 1e6:,.2f} |" in out


def test_json_and_default_period_is_the_last_complete_week(setup, capsys):
    led, _, single = setup
    now = datetime(2026, 11, 25, 12, tzinfo=BERLIN)
    assert relay_report(["weekly", "--format", "json", "-c", str(single), "--tz", "Europe/Berlin"], now) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["period"] == "2026-W47" and d["tenant"] == "acme"
    assert d["current"]["cost_micros"] == week_cost(led, 47)
    assert d["previous"]["cost_micros"] == week_cost(led, 46)


def test_csv_daily_and_chart_beside_it(setup, capsys, tmp_path):
    led, _, single = setup
    chart = tmp_path / "day.png"
    day = datetime(2026, 11, 18, tzinfo=BERLIN)
    assert relay_report(["daily", "--day", "2026-11-18", "--format", "csv", "--chart", str(chart), "-c", str(single),
                         "--tz", "Europe/Berlin"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    summary = {r[1]: r[3] for r in rows if r[0] == "summary"}
    want = sum(r.cost_micros for r in in_range(led.records, day, datetime(2026, 11, 19, tzinfo=BERLIN)))
    assert summary["cost_usd"] == f"{want / 1e6:.2f}"
    data = chart.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1200, 600)


def test_monthly_and_output_file(setup, tmp_path, capsys):
    led, _, single = setup
    out = tmp_path / "nov.md"
    argv = ["monthly", "--month", "2026-11", "-o", str(out), "-c", str(single), "--tz", "Europe/Berlin"]
    assert relay_report(argv) == 0
    assert capsys.readouterr().out == ""
    text = out.read_text()
    total = sum(r.cost_micros for r in in_range(led.records, datetime(2026, 11, 1, tzinfo=BERLIN),
                                                  datetime(2026, 12, 1, tzinfo=BERLIN)))
    assert "monthly report — acme — 2026-11" in text and f"| Cost | ${total / 1e6:,.2f} |" in text


def test_empty_week_prints_a_short_message_and_no_chart(setup, capsys, tmp_path):
    _, _, single = setup
    chart = tmp_path / "none.png"
    assert relay_report(["weekly", "--week", "2026-W10", "--chart", str(chart), "-c", str(single)]) == 0
    cap = capsys.readouterr()
    assert "No Claude Code usage was recorded for acme in 2026-W10." in cap.out and "## Summary" not in cap.out
    assert not chart.exists() and "no chart" in cap.err


@pytest.mark.parametrize("argv, code, message", [
    (["weekly", "--day", "2026-11-16"], 2, "--day is for daily reports"),
    (["weekly", "--week", "2026-47"], 2, "invalid weekly period"),
    (["weekly", "--tz", "Mars/Olympus"], 2, "unknown time zone"),
    (["weekly", "--scope", "team.id~platform"], 2, "bad matcher"),
    (["weekly", "--group-by", "team id"], 2, "invalid label name"),
])
def test_usage_errors_exit_2(setup, capsys, argv, code, message):
    _, _, single = setup
    assert relay_report([*argv, "-c", str(single)]) == code
    assert message in capsys.readouterr().err


def test_several_tenants_need_a_choice(setup, capsys):
    _, config, _ = setup
    assert relay_report(["weekly", "-c", str(config)]) == 2
    assert "--tenant (acme, other)" in capsys.readouterr().err


def test_missing_ledger_exits_1(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"storage:\n  directory: {tmp_path / 'nothing'}\n")
    assert relay_report(["weekly", "-c", str(config)]) == 1
    assert "no ledger at" in capsys.readouterr().err


def test_budgets_come_from_the_configured_rule_files(setup, capsys, tmp_path):
    from types import SimpleNamespace

    from relay.cli.report import _rule_budgets

    root = Path(__file__).resolve().parents[1]
    provider = _rule_budgets(SimpleNamespace(rules=SimpleNamespace(files=["rules/budgets.yaml"])),
                             str(root / "config.yaml"))
    names = [b.name for b in provider("acme")]
    assert names[:3] == ["TeamMonthlyBudget", "UserDailyBudget", "TenantRollingWeekBudget"]
    assert _rule_budgets(SimpleNamespace(), None) is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups: [{name: x, rules: [{alert: A, kind: budget}]}]\n")
    assert _rule_budgets(SimpleNamespace(rules=SimpleNamespace(files=[str(bad)])), None) is None
    assert "budgets left out" in capsys.readouterr().err

    _, _, single = setup
    p = argparse.ArgumentParser(prog="relay")
    cli.add_subparser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["report", "weekly", "--week", "2026-W47", "-c", str(single), "--tz", "Europe/Berlin"])
    assert cli.run(args, budgets=provider) == 0
    out = capsys.readouterr().out
    assert "## Budgets" in out and "| TeamMonthlyBudget |" in out and "top: team.id=" in out
