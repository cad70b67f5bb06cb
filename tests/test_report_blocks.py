"""``relay report blocks``: ccusage's 5-hour billing blocks per user over a real ledger file — floored starts, the
5-hour length, a record exactly at the block's end, gaps, blocks placed from history before the range, the active
block's burn rate and projection at a fixed ``now``, ``--active``/``--recent``/``--token-limit``/
``--session-length``, and the Markdown, JSON (ccusage's shape) and CSV outputs through the CLI.

Expected figures are written out by hand from the records below (times in UTC), not computed by relay's code."""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from relay.cli import report as cli
from relay.model import UsageRecord
from relay.reports.blocks import Entry, identify_blocks
from tests.test_report_support import Ledger, ns, write_ledger

H = 3_600_000_000_000
NOW = datetime(2026, 11, 18, 12, 30, tzinfo=UTC)


def at(day: int, hh: int, mm: int = 0, ss: int = 0, ms: int = 0) -> datetime:
    return datetime(2026, 11, day, hh, mm, ss, ms * 1000, tzinfo=UTC)


def rec(key, when, user, *, i=0, o=0, cc=0, cr=0, cost=0, model="claude-opus-4-5", **kw) -> UsageRecord:
    return UsageRecord(
        key=key,
        kind="llm",
        time_ns=ns(when),
        tenant="acme",
        session_id=kw.pop("session_id", f"s-{user}-{when:%d}"),
        user=user,
        model=model,
        input_tokens=i,
        output_tokens=o,
        cache_creation_tokens=cc,
        cache_read_tokens=cr,
        cost_nanos=cost,
        cost_source="reported",
        source=kw.pop("source", "claude_code.event"),
        **kw,
    )


RECORDS = [
    # alice: block 09:00–14:00 (first record 09:17, floored); 14:00:00 exactly still joins it (ccusage's ">")
    rec("a1", at(16, 9, 17), "alice", i=1000, o=500, cc=200, cr=3000, cost=12_345_678),
    rec("a2", at(16, 11, 40), "alice", i=10, o=20, cc=0, cr=0, cost=1, model="claude-sonnet-4-5"),
    # derived from Claude Code's cost/token metrics (a session without per-call records): usage, not an API call
    rec("a3", at(16, 14, 0), "alice", i=5, o=5, cost=7, source="claude_code.metric", session_id="s-metrics-only"),
    # 14:30 is > 5 h after 09:00 but 30 min after the last record: a new block at 14:00, no gap
    rec("a4", at(16, 14, 30), "alice", i=1, o=2, cc=3, cr=4, cost=999_999_999),
    # a failed call without usage neither starts nor extends a block
    rec("a-err", at(16, 20, 0), "alice", success=False, status_code=529, error_class="repeated_529"),
    # 11 h 40 m after 14:30: a gap from 19:30 to 02:10 and a new block at 02:00
    rec("a5", at(17, 2, 10), "alice", i=100, o=100, cost=3),
    # bob: a completed block on the 16th and the active one on the 18th (10:20 → 11:20, 6,000 tokens, $0.50)
    rec("b1", at(16, 10, 5), "bob", i=10_000, o=5_000, cr=10_000, cost=40_000_000),
    rec("b2", at(18, 10, 20), "bob", i=1_000, o=1_000, cost=200_000_000),
    rec("b3", at(18, 11, 20), "bob", i=1_000, o=1_000, cc=1_000, cr=1_000, cost=300_000_000),
    rec("b-future", at(18, 13, 0), "bob", i=10**6, cost=10**9),  # after NOW: not yet happened
    # carol: activity every ~4 h from the 15th; the block holding 00:30 on the 16th started on the 15th at 20:00,
    # so 01:20 (> 5 h after 20:00) starts the 16th's only block at 01:00 — visible only when history is read
    rec("c1", at(15, 20, 10), "carol", i=1, cost=1),
    rec("c2", at(16, 0, 30), "carol", i=2, cost=2),
    rec("c3", at(16, 1, 20), "carol", i=4, cost=4),
    # dave: a block on the 10th (outside --recent)
    rec("d1", at(10, 8, 0), "dave", i=7, cost=70),
    # no user: its own chain
    rec("n1", at(16, 9, 30), None, i=9, cost=90),
    # another tenant is never counted
    UsageRecord(key="x1", kind="llm", time_ns=ns(at(16, 9, 0)), tenant="other", user="alice", input_tokens=5),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("blocks")
    data = root / "data"
    data.mkdir()
    write_ledger(data / "relay.db", Ledger(records=list(RECORDS)))
    config = root / "single.yaml"
    config.write_text(f"storage:\n  directory: {data}\nauth:\n  default_tenant: acme\n")
    return config


def relay_report(argv: list[str], now: datetime = NOW) -> int:
    """Parse ``relay report …`` as relay's CLI does and run it at ``now``."""
    p = argparse.ArgumentParser(prog="relay")
    cli.add_subparser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(cli.normalize_argv(["report", *argv]))
    return args.fn(args, now=lambda: now.timestamp())


def blocks_json(config, capsys, *argv: str, now: datetime = NOW) -> dict:
    assert relay_report(["blocks", "--json", "-c", str(config), *argv], now) == 0
    return json.loads(capsys.readouterr().out)


def of(d: dict, user: str | None) -> list[dict]:
    return [b for b in d["blocks"] if b["user"] == user]


# ------------------------------------------------------------------------------------------- the algorithm alone
def e(t: datetime, tokens: int = 1) -> Entry:
    return Entry(ns(t), "m", tokens, 0, 0, 0, tokens * 10)


def test_identify_blocks_floors_to_the_utc_hour_and_keeps_a_record_at_the_exact_end():
    got = identify_blocks([e(at(1, 9, 59, 59, 999)), e(at(1, 14, 0)), e(at(1, 14, 0, 0, 1))], 5 * H, ns(at(2, 0)))
    # 09:59:59.999 floors to 09:00; 14:00:00.000 is exactly 5 h after the start: same block; 1 ms later: a new one
    assert [(b.start_ns, b.entries, b.is_gap) for b in got] == [(ns(at(1, 9)), 2, False), (ns(at(1, 14)), 1, False)]
    assert got[0].end_ns - got[0].start_ns == 5 * H and got[0].last_ns == ns(at(1, 14))


def test_identify_blocks_puts_a_gap_after_a_pause_longer_than_the_block():
    got = identify_blocks([e(at(1, 10, 30)), e(at(1, 15, 30)), e(at(1, 20, 31))], 5 * H, ns(at(2, 0)))
    # 15:30 is exactly 5 h after 10:30 (no gap) but > 5 h after the 10:00 start: a new block at 15:00, no gap;
    # 20:31 is 5 h 1 m after 15:30: a gap from 20:30 to 20:31 and a block at 20:00
    assert [(b.start_ns, b.end_ns, b.is_gap) for b in got] == [
        (ns(at(1, 10)), ns(at(1, 15)), False),
        (ns(at(1, 15)), ns(at(1, 20)), False),
        (ns(at(1, 20, 30)), ns(at(1, 20, 31)), True),
        (ns(at(1, 20)), ns(at(2, 1)), False),
    ]
    assert got[2].entries == 0 and got[2].total_tokens == 0 and got[2].tokens_per_minute() is None


def test_active_block_burn_rate_and_projection_are_exact():
    entries = [e(at(1, 10, 0), 3), e(at(1, 10, 30), 4)]  # 7 tokens, 70 nano-USD over 30 min
    (b,) = identify_blocks(entries, 5 * H, ns(at(1, 12, 0)))
    assert b.is_active
    assert b.tokens_per_minute() == pytest.approx(7 / 30)
    assert b.cost_per_hour_nanos() == 140  # 70 nano-USD per 30 min
    # 180 minutes left: 7 + 7 * 180 / 30 = 49 tokens; 70 + 70 * 6 = 490 nano-USD
    assert b.projection(ns(at(1, 12, 0))) == (49, 490, 180)
    # not active once the block has ended, nor 5 h after its last record
    (done,) = identify_blocks(entries, 5 * H, ns(at(1, 15, 0)))
    assert not done.is_active and done.projection(ns(at(1, 15, 0))) is None
    # a single record has no burn rate, so no projection, though active
    (one,) = identify_blocks(entries[:1], 5 * H, ns(at(1, 11)))
    assert one.is_active and one.tokens_per_minute() is None and one.projection(ns(at(1, 11))) is None


# ------------------------------------------------------------------------------------------- over the ledger
def test_blocks_per_user_with_exact_totals_gaps_and_history(setup, capsys):
    d = blocks_json(setup, capsys, "--since", "2026-11-16", "--until", "2026-11-17", "--tz", "UTC")
    alice = of(d, "alice")
    assert [(b["startTime"], b["endTime"], b["isGap"]) for b in alice] == [
        ("2026-11-16T09:00:00.000Z", "2026-11-16T14:00:00.000Z", False),
        ("2026-11-16T14:00:00.000Z", "2026-11-16T19:00:00.000Z", False),
        ("2026-11-16T19:30:00.000Z", "2026-11-17T02:10:00.000Z", True),
        ("2026-11-17T02:00:00.000Z", "2026-11-17T07:00:00.000Z", False),
    ]
    first, second, gap, third = alice
    assert first["id"] == "2026-11-16T09:00:00.000Z" and gap["id"] == "gap-2026-11-16T19:30:00.000Z"
    assert first["actualEndTime"] == "2026-11-16T14:00:00.000Z"  # the record exactly at the end joined the block
    assert first["tokenCounts"] == {
        "inputTokens": 1015,
        "outputTokens": 525,
        "cacheCreationInputTokens": 200,
        "cacheReadInputTokens": 3000,
    }
    assert first["totalTokens"] == 4740 and first["costUSD"] == 0.012345686  # 12,345,678 + 1 + 7 nano-USD
    assert first["entries"] == 3 and first["apiCalls"] == 2  # the metric-derived record is usage, not a call
    assert first["models"] == ["claude-opus-4-5", "claude-sonnet-4-5"]
    assert second["costUSD"] == 0.999999999 and second["totalTokens"] == 10 and second["entries"] == 1
    assert gap["entries"] == 0 and gap["totalTokens"] == 0 and gap["actualEndTime"] is None
    assert third["totalTokens"] == 200 and not any(b["isActive"] for b in alice)
    # carol's 16th: one block at 01:00 — 00:30 belongs to the block that started on the 15th at 20:00
    assert [(b["startTime"], b["entries"]) for b in of(d, "carol")] == [("2026-11-16T01:00:00.000Z", 1)]
    # records without a user form their own chain; bob's active block (the 18th) is shown with any range
    assert [b["startTime"] for b in of(d, None)] == ["2026-11-16T09:00:00.000Z"]
    assert [(b["startTime"], b["isGap"], b["isActive"]) for b in of(d, "bob")] == [
        ("2026-11-16T10:00:00.000Z", False, False),
        ("2026-11-16T15:05:00.000Z", True, False),  # 5 h after 10:05
        ("2026-11-18T10:00:00.000Z", False, True),
    ]
    assert not of(d, "dave")  # the 10th is outside the range
    # chronological, gaps between; totals over the shown blocks, exact
    starts = [b["startTime"] for b in d["blocks"]]
    assert starts == sorted(starts)
    shown = [r for r in RECORDS if r.key in {"a1", "a2", "a3", "a4", "a5", "b1", "b2", "b3", "c3", "n1"}]
    assert d["totals"]["totalCost"] == round(sum(r.cost_nanos for r in shown) / 1e9, 9)
    assert d["totals"]["inputTokens"] == sum(r.input_tokens for r in shown)
    assert d["totals"]["apiCalls"] == len(shown) - 1
    assert (d["tenant"], d["since"], d["until"], d["sessionLengthHours"]) == ("acme", "2026-11-16", "2026-11-17", 5.0)


def test_active_block_json_has_ccusage_burn_rate_projection_and_limit_status(setup, capsys):
    d = blocks_json(setup, capsys, "--active", "--token-limit", "max")
    (b,) = d["blocks"]
    assert (b["user"], b["startTime"], b["endTime"], b["isActive"]) == (
        "bob",
        "2026-11-18T10:00:00.000Z",
        "2026-11-18T15:00:00.000Z",
        True,
    )
    # 6,000 tokens and $0.50 from 10:20 to 11:20 (the 13:00 record is after now)
    assert b["totalTokens"] == 6000 and b["costUSD"] == 0.5 and b["actualEndTime"] == "2026-11-18T11:20:00.000Z"
    assert b["burnRate"] == {
        "tokensPerMinute": 100.0,
        "tokensPerMinuteForIndicator": 66.66666666666667,
        "costPerHour": 0.5,
    }
    # 150 minutes left at 12:30: 6,000 + 100 × 150 tokens, $0.50 + $0.50 × 2.5
    assert b["projection"] == {"totalTokens": 21000, "totalCost": 1.75, "remainingMinutes": 150}
    # max: bob's largest completed block (the 16th: 25,000 tokens); 21,000 is 84 % of it, above 80 %
    assert b["tokenLimitStatus"] == {"limit": 25000, "projectedUsage": 21000, "percentUsed": 84.0, "status": "warning"}
    d = blocks_json(setup, capsys, "--active", "-t", "20000")
    assert d["blocks"][0]["tokenLimitStatus"]["status"] == "exceeds"
    d = blocks_json(setup, capsys, "--active", "-t", "100000")
    assert d["blocks"][0]["tokenLimitStatus"]["status"] == "ok"
    # later that day nothing is active any more
    d = blocks_json(setup, capsys, "--active", now=at(18, 16, 30))
    assert d["blocks"] == [] and d["message"] == "No active block"


def test_recent_keeps_the_last_three_days_and_the_default_is_this_month(setup, capsys):
    recent = blocks_json(setup, capsys, "--recent")  # since 2026-11-15 12:30 UTC
    assert {(b["user"], b["startTime"][:13]) for b in recent["blocks"] if not b["isGap"]} == {
        ("carol", "2026-11-15T20"),
        ("carol", "2026-11-16T01"),
        ("alice", "2026-11-16T09"),
        ("alice", "2026-11-16T14"),
        ("alice", "2026-11-17T02"),
        ("bob", "2026-11-16T10"),
        ("bob", "2026-11-18T10"),
        (None, "2026-11-16T09"),
    }
    month = blocks_json(setup, capsys)
    assert month["since"] == "2026-11-01" and month["until"] == "2026-11-18"
    assert [b["startTime"] for b in of(month, "dave")] == ["2026-11-10T08:00:00.000Z"]
    assert len(month["blocks"]) == len(recent["blocks"]) + 1
    # another tenant's records are not there
    assert month["totals"]["inputTokens"] == sum(
        r.input_tokens for r in RECORDS if r.tenant == "acme" and r.key != "b-future"
    )


def test_session_length_and_scope(setup, capsys):
    # 2-hour blocks: alice's 09:17 and 11:40 are 2 h 23 m apart → separate blocks, with a gap (11:17 → 11:40);
    # as in ccusage the gap is listed by its start, after the next block's floored start (11:00)
    d = blocks_json(setup, capsys, "--since", "2026-11-16", "--until", "2026-11-16", "--session-length", "2")
    assert d["sessionLengthHours"] == 2.0
    assert [(b["startTime"][11:16], b["endTime"][11:16], b["isGap"]) for b in of(d, "alice")][:3] == [
        ("09:00", "11:00", False),
        ("11:00", "13:00", False),
        ("11:17", "11:40", True),
    ]
    d = blocks_json(setup, capsys, "--since", "2026-11-16", "--scope", 'user="bob"')
    assert {b["user"] for b in d["blocks"]} == {"bob"} and d["scope"] == ['user="bob"']
    # blocks are per user anyway: --breakdown user is the same report
    assert blocks_json(setup, capsys, "--since", "2026-11-16", "--scope", 'user="bob"', "-b", "user") == d


def test_markdown_in_local_time_with_the_active_projection_and_limit(setup, capsys):
    argv = ["blocks", "--since", "2026-11-16", "--tz", "Europe/Berlin", "-t", "max", "-c", str(setup)]
    assert relay_report(argv) == 0
    md = capsys.readouterr().out
    assert md.startswith("# Claude Code usage by 5-hour block — acme\n")
    head = "| Block start | User | Status | Models | Input | Output | Cache create | Cache read | Total tokens |"
    assert head + " % of limit | Cost (USD) |" in md
    # alice's first block: 09:00 UTC is 10:00 in Berlin; 5 h to the record at its end; 4,740 of her max 4,740
    line = (
        "| 2026-11-16 10:00 | alice | 5h 0m | claude-opus-4-5, claude-sonnet-4-5 | 1,015 | 525 | 200 | 3,000 | 4,740 "
        "| 100.0% | $0.01 |"
    )
    assert line in md
    assert "| 2026-11-16 20:30 | alice | gap (6h 40m) |" in md  # 19:30 → 02:10 UTC
    assert "| 2026-11-18 11:00 | bob | ACTIVE (2h 30m elapsed, 2h 30m left) |" in md
    assert "|  |  |   └ projected at 100 tokens/min, $0.50/h |  |  |  |  |  | 21,000 | 84.0% | $1.75 |" in md
    # carol's 01:00 UTC block is 02:00 in Berlin; her block of the 15th (21:00 in Berlin) is before the range
    assert "| 2026-11-16 02:00 | carol | 20m |" in md and "| 2026-11-15" not in md
    assert md.rstrip().endswith("Projected: the active block's tokens and cost at its end if its burn rate holds.")
    assert relay_report(["blocks", "--active", "-c", str(setup)], at(18, 16, 30)) == 0
    assert "No active block." in capsys.readouterr().out


def test_csv_is_tidy_one_row_per_block(setup, capsys):
    assert relay_report(["blocks", "--since", "2026-11-18", "--format", "csv", "-c", str(setup)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    (b,) = rows
    assert b["user"] == "bob" and b["start"] == "2026-11-18T10:00:00+00:00" and b["active"] == "1"
    assert (b["total_tokens"], b["cost_usd"], b["api_calls"], b["gap"]) == ("6000", "0.500000000", "2", "0")
    assert (b["tokens_per_minute"], b["cost_per_hour_usd"]) == ("100.000", "0.500000000")
    assert (b["projected_total_tokens"], b["projected_cost_usd"], b["remaining_minutes"]) == (
        "21000",
        "1.750000000",
        "150",
    )
    assert b["models"] == "claude-opus-4-5" and b["token_limit"] == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["daily", "--active"], "--active is for blocks"),
        (["session", "-t", "max"], "--token-limit is for blocks"),
        (["blocks", "-t", "lots"], "invalid --token-limit 'lots'"),
        (["blocks", "--session-length", "0"], "--session-length must be a positive number"),
        (["blocks", "--session-length", "inf"], "--session-length must be a positive number"),
        (["blocks", "--breakdown", "model"], "blocks are always per user"),
        (["blocks", "--since", "2026-11-18", "--until", "2026-11-17"], "is before --since"),
        (["blocks", "--week", "2026-W47"], "use --since/--until with blocks"),
    ],
)
def test_usage_errors_exit_2(setup, capsys, argv, message):
    assert relay_report([*argv, "-c", str(setup)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_relay_report_blocks_as_a_command(setup):
    """The installed CLI end to end (real clock: every block is long over, none active)."""
    r = subprocess.run(
        [sys.executable, "-m", "relay", "report", "blocks", "--since", "2026-11-16", "--until", "2026-11-16"]
        + ["--json", "-c", str(setup), "--scope", 'user="alice"'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [b["startTime"] for b in d["blocks"]] == [
        "2026-11-16T09:00:00.000Z",
        "2026-11-16T14:00:00.000Z",
        "2026-11-16T19:30:00.000Z",
    ]
    assert not any(b["isActive"] for b in d["blocks"]) and d["blocks"][0]["burnRate"] is None
