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
    args = p.parse_args(cli.normalize_argv(["report", *argv]))
    clock = (lambda: now.timestamp()) if now else None
    return args.fn(args, now=clock) if clock else args.fn(args)


def week_cost(led: Ledger, week: int) -> int:
    return sum(r.cost_nanos for r in in_range(led.records, week_start(2026, week), week_start(2026, week + 1)))


def test_markdown_of_a_past_week(setup, capsys):
    led, config, _ = setup
    argv = ["weekly", "--week", "2026-W47", "--tenant", "acme", "-c", str(config), "--tz", "Europe/Berlin"]
    assert relay_report(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Claude Code weekly report — acme — 2026-W47\n")
    assert f"| Cost | ${week_cost(led, 47) / 1e9:,.2f} | ${week_cost(led, 46) / 1e9:,.2f} |" in out


def test_json_and_default_period_is_the_current_week_so_far(setup, capsys):
    led, _, single = setup
    now = datetime(2026, 11, 20, 12, tzinfo=BERLIN)  # Friday noon of 2026-W47: the week is still running
    assert relay_report(["weekly", "--json", "-c", str(single), "--tz", "Europe/Berlin"], now) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["period"] == "2026-W47" and d["tenant"] == "acme" and d["partial"] is True
    assert d["title"].endswith("2026-W47 (so far)")
    elapsed = now - week_start(2026, 47)
    w46, w47 = week_start(2026, 46), week_start(2026, 47)
    assert d["current"]["cost_nanos"] == sum(r.cost_nanos for r in in_range(led.records, w47, now))
    # like for like: last week up to the same point (Friday noon), not the whole of it
    assert d["previous"]["cost_nanos"] == sum(r.cost_nanos for r in in_range(led.records, w46, w46 + elapsed))
    assert d["previous"]["cost_nanos"] < week_cost(led, 46)
    assert relay_report(["weekly", "--week", "last", "-c", str(single), "--tz", "Europe/Berlin"], now) == 0
    md = capsys.readouterr().out
    assert md.startswith("# Claude Code weekly report — acme — 2026-W46\n") and "so far" not in md
    assert "## Cost per day" in md and "| Mon |" in md


def test_tidy_csv_of_a_day_and_chart_beside_its_report(setup, capsys, tmp_path):
    led, _, single = setup
    day = datetime(2026, 11, 18, tzinfo=BERLIN)
    records = [r for r in in_range(led.records, day, datetime(2026, 11, 19, tzinfo=BERLIN)) if r.kind == "llm"]
    assert (
        relay_report(
            [
                "daily",
                "--day",
                "2026-11-18",
                "--format",
                "csv",
                "--breakdown",
                "model",
                "-c",
                str(single),
                "--tz",
                "Europe/Berlin",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(text)))
    assert "n/a" not in text
    assert {r["key"] for r in rows} == {"2026-11-18"} and {r["breakdown"] for r in rows} == {"model"}
    assert sorted(r["group"] for r in rows) == sorted({x.model for x in records})  # one row per day × model
    for r in rows:  # numbers only
        for col in ("input_tokens", "output_tokens", "total_tokens", "api_calls", "sessions", "partial"):
            int(r[col])
    assert round(sum(float(r["cost_usd"]) for r in rows), 6) == round(sum(x.cost_nanos for x in records) / 1e9, 6)
    chart = tmp_path / "day.png"
    assert (
        relay_report(
            ["daily", "--day", "2026-11-18", "--chart", str(chart), "-c", str(single), "--tz", "Europe/Berlin"]
        )
        == 0
    )
    data = chart.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1200, 600)


def test_monthly_and_output_file(setup, tmp_path, capsys):
    led, _, single = setup
    out = tmp_path / "nov.md"
    argv = ["monthly", "--month", "2026-11", "-o", str(out), "-c", str(single), "--tz", "Europe/Berlin"]
    assert relay_report(argv) == 0
    assert capsys.readouterr().out == ""
    text = out.read_text()
    total = sum(
        r.cost_nanos
        for r in in_range(led.records, datetime(2026, 11, 1, tzinfo=BERLIN), datetime(2026, 12, 1, tzinfo=BERLIN))
    )
    assert "monthly report — acme — 2026-11" in text and f"| Cost | ${total / 1e9:,.2f} |" in text


def test_empty_week_prints_a_short_message_and_no_chart(setup, capsys, tmp_path):
    _, _, single = setup
    chart = tmp_path / "none.png"
    assert relay_report(["weekly", "--week", "2026-W10", "--chart", str(chart), "-c", str(single)]) == 0
    cap = capsys.readouterr()
    assert "No Claude Code usage was recorded for acme in 2026-W10." in cap.out and "## Summary" not in cap.out
    assert not chart.exists() and "no chart" in cap.err


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["weekly", "--day", "2026-11-16"], 2, "--day is for daily reports"),
        (["weekly", "--week", "2026-47"], 2, "invalid weekly period"),
        (["weekly", "--tz", "Mars/Olympus"], 2, "unknown time zone"),
        (["weekly", "--scope", "team.id~platform"], 2, "bad matcher"),
        (["weekly", "--group-by", "team id"], 2, "invalid label name"),
    ],
)
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
    provider = _rule_budgets(
        SimpleNamespace(rules=SimpleNamespace(files=["rules/budgets.yaml"])), str(root / "config.yaml")
    )
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


# ----------------------------------------------------------------- issue 16: ccusage-like tables, links, so far
def llm_in(led: Ledger, start: datetime, end: datetime) -> list:
    return [r for r in in_range(led.records, start, end) if r.kind == "llm"]


def test_daily_table_over_a_range_marks_the_running_day_so_far(setup, capsys):
    led, _, single = setup
    now = datetime(2026, 11, 20, 15, tzinfo=BERLIN)
    assert relay_report(["daily", "--since", "-3d", "-c", str(single), "--tz", "Europe/Berlin"], now) == 0
    md = capsys.readouterr().out
    lines = [ln for ln in md.splitlines() if ln.startswith("| 2026-")]
    assert [ln.split(" | ")[0] for ln in lines] == [
        "| 2026-11-17",
        "| 2026-11-18",
        "| 2026-11-19",
        "| 2026-11-20 (so far)",
    ]
    for ln, d in zip(lines, (17, 18, 19), strict=False):
        want = sum(
            r.cost_nanos
            for r in llm_in(led, datetime(2026, 11, d, tzinfo=BERLIN), datetime(2026, 11, d + 1, tzinfo=BERLIN))
        )
        assert ln.endswith(f"| ${want / 1e9:,.2f} |")
    so_far = sum(r.cost_nanos for r in llm_in(led, datetime(2026, 11, 20, tzinfo=BERLIN), now))
    assert lines[-1].endswith(f"| ${so_far / 1e9:,.2f} |")  # only up to now
    # the same as ccusage-shaped JSON
    assert (
        relay_report(
            [
                "daily",
                "--since",
                "2026-11-17",
                "--until",
                "20261119",
                "--json",
                "-c",
                str(single),
                "--tz",
                "Europe/Berlin",
                "--breakdown",
                "model",
            ],
            now,
        )
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    assert [e["date"] for e in d["daily"]] == ["2026-11-17", "2026-11-18", "2026-11-19"]
    first = d["daily"][0]
    assert (
        first["totalTokens"]
        == first["inputTokens"] + first["outputTokens"] + first["cacheCreationTokens"] + first["cacheReadTokens"]
    )
    assert round(sum(m["cost"] for m in first["modelBreakdowns"]), 6) == round(first["totalCost"], 6)
    assert first["partial"] is False and sorted(first["modelsUsed"]) == sorted(
        m["modelName"] for m in first["modelBreakdowns"]
    )
    total = sum(
        r.cost_nanos for r in llm_in(led, datetime(2026, 11, 17, tzinfo=BERLIN), datetime(2026, 11, 20, tzinfo=BERLIN))
    )
    assert round(d["totals"]["totalCost"], 6) == round(total / 1e9, 6)


def test_weekly_table_by_team_and_user_view(setup, capsys):
    led, _, single = setup
    now = datetime(2026, 11, 30, 12, tzinfo=BERLIN)
    assert (
        relay_report(
            [
                "weekly",
                "--since",
                "2026-11-09",
                "--breakdown",
                "team",
                "--format",
                "csv",
                "-c",
                str(single),
                "--tz",
                "Europe/Berlin",
            ],
            now,
        )
        == 0
    )
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["key"] for r in rows} == {"2026-W46", "2026-W47"} and {r["breakdown"] for r in rows} == {"team.id"}
    w47 = llm_in(led, week_start(2026, 47), week_start(2026, 48))
    teams = {}
    for r in w47:
        k = r.labels.get("team.id") or "(none)"
        teams[k] = teams.get(k, 0) + r.cost_nanos
    got = {r["group"]: round(float(r["cost_usd"]), 6) for r in rows if r["key"] == "2026-W47"}
    assert got == {k: round(v / 1e9, 6) for k, v in teams.items()}
    assert (
        relay_report(
            [
                "user",
                "--since",
                "2026-11-16",
                "--until",
                "2026-11-22",
                "-c",
                str(single),
                "--tz",
                "Europe/Berlin",
                "--json",
            ],
            now,
        )
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    users = {}
    for r in w47:
        users[r.user or "(none)"] = users.get(r.user or "(none)", 0) + r.cost_nanos
    assert {e["user"]: round(e["totalCost"], 6) for e in d["users"]} == {u: round(c / 1e9, 6) for u, c in users.items()}


def test_session_view_and_period_report_link_to_langfuse(setup, capsys, tmp_path):
    from tests.fakes.langfuse import FakeLangfuse

    led, _, _ = setup
    data = Path(str(setup[2])).parent / "data"
    with FakeLangfuse.run_in_thread({"pk-lf-1": ("sk-lf-1", "proj-7", "Claude usage")}) as lf:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            f"storage: {{directory: {data}}}\nauth: {{default_tenant: acme}}\nexporters:\n  langfuse:\n"
            f"    base_url: {lf.base_url}\n    public_key: pk-lf-1\n    secret_key: sk-lf-1\n"
        )
        now = datetime(2026, 11, 30, 12, tzinfo=BERLIN)
        assert (
            relay_report(
                ["session", "--since", "2026-11-18", "--until", "2026-11-18", "-c", str(cfg), "--tz", "Europe/Berlin"],
                now,
            )
            == 0
        )
        md = capsys.readouterr().out
        sessions = {
            r.session_id
            for r in llm_in(led, datetime(2026, 11, 18, tzinfo=BERLIN), datetime(2026, 11, 19, tzinfo=BERLIN))
        }
        for sid in sessions:
            assert f"[{sid}]({lf.base_url}/project/proj-7/sessions/{sid})" in md
        assert relay_report(["weekly", "--week", "2026-W47", "-c", str(cfg), "--tz", "Europe/Berlin"], now) == 0
        md = capsys.readouterr().out
        assert f"]({lf.base_url}/project/proj-7/sessions/" in md  # the top sessions link to Langfuse


@pytest.mark.parametrize("trusted", [True, False])
def test_langfuse_links_behind_a_private_ca(setup, capsys, tmp_path, trusted):
    """The project lookup for the links goes over the exporter's outbound TLS: a Langfuse with a private CA's
    certificate is asked with ``exporters.langfuse.tls.ca_file``; without it the report comes without links and a
    line on stderr names the untrusted certificate and the key to set."""
    from tests.fakes.langfuse import FakeLangfuse, ThreadedFakeLangfuse
    from tests.support.certs import CA

    data = Path(str(setup[2])).parent / "data"
    ca = CA(tmp_path / "pki", name="private CA")
    lf = FakeLangfuse({"pk-lf-1": ("sk-lf-1", "proj-7", "Claude usage")})
    lf.ssl_context = ca.server_context("langfuse")
    with ThreadedFakeLangfuse(lf):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            f"storage: {{directory: {data}}}\nauth: {{default_tenant: acme}}\nexporters:\n  langfuse:\n"
            f"    base_url: {lf.base_url}\n    public_key: pk-lf-1\n    secret_key: sk-lf-1\n"
            + (f"    tls: {{ca_file: {ca.ca_file}}}\n" if trusted else "")
        )
        now = datetime(2026, 11, 30, 12, tzinfo=BERLIN)
        argv = ["session", "--since", "2026-11-18", "--until", "2026-11-18", "-c", str(cfg), "--tz", "Europe/Berlin"]
        assert relay_report(argv, now) == 0
        out = capsys.readouterr()
    if trusted:
        assert f"]({lf.base_url}/project/proj-7/sessions/" in out.out
        assert "links left out" not in out.err
    else:
        assert "/project/" not in out.out
        assert "relay report: Langfuse links left out" in out.err
        assert "the server's certificate is not trusted" in out.err and "exporters.langfuse.tls.ca_file" in out.err
