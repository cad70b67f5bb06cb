"""Generated multi-user weeks for the report tests, and the expected figures computed from them in plain Python.

Nothing here uses relay's report code: periods are plain ``datetime`` arithmetic in ``zoneinfo``, sums are loops
over the generated records. (No tests in this module; the ``test_`` prefix keeps it in the report tests' files.)
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from relay.model import UsageRecord
from relay.store.sqlite import SqliteDB
from relay.usage.metrics import MetricPoint
from relay.usage.sqlite_store import SqliteLedgerStore

BERLIN = ZoneInfo("Europe/Berlin")
MODELS = ["claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5"]
TOOLS = ["Bash", "Read", "Edit", "Write", "Grep"]
#: user → team (None: no team label); plus records without any user.
USERS = {"alice": "platform", "bob": "platform", "carol": "web", "dave": "web", "erin": "data", "frank": None}
ERRORS = [("rate_limit", 429), ("repeated_529", None), ("server_error", 500)]


def ns(dt: datetime) -> int:
    """Unix ns of an aware datetime."""
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def week_start(year: int, week: int, tz: ZoneInfo = BERLIN) -> datetime:
    """Monday 00:00 local of ISO week ``year``-W``week``."""
    return datetime.fromisocalendar(year, week, 1).replace(tzinfo=tz)


@dataclass
class Ledger:
    """Generated records and metric points (all tenants)."""

    records: list[UsageRecord] = field(default_factory=list)
    points: list[MetricPoint] = field(default_factory=list)


def generate_week(
    ledger: Ledger,
    start: datetime,
    *,
    tenant: str = "acme",
    seed: int = 1,
    sessions_per_user: int = 3,
    tools: bool = True,
    metrics: bool = True,
    prefix: str = "",
) -> None:
    """Append one local week (from ``start``) of Claude Code usage: every user of :data:`USERS` runs sessions of
    a few prompts, each with LLM calls (some failing) and tool calls (some rejected or failing); plus a few
    records without user. Metric points (lines of code, commits, PRs) as DELTA points when ``metrics``."""
    rnd = random.Random(seed)
    tag = prefix or start.strftime("%Y%m%d")
    users = list(USERS) + [None]
    for user in users:
        team = USERS.get(user) if user else None
        labels = {"team.id": team} if team else {}
        for s in range(sessions_per_user if user else 1):
            sid = f"s-{tag}-{user or 'anon'}-{s}"
            t = start + timedelta(days=rnd.randrange(7), hours=rnd.randrange(8, 20), minutes=rnd.randrange(60))
            for p in range(rnd.randint(1, 3)):
                pid = f"p-{sid}-{p}"
                who = {"tenant": tenant, "session_id": sid, "prompt_id": pid, "user": user}  # on every record
                for c in range(rnd.randint(1, 4)):
                    t += timedelta(seconds=rnd.randint(5, 90))
                    model = rnd.choice(MODELS)
                    key = f"{sid}-{p}-{c}"
                    if rnd.random() < 0.15:
                        eclass, status = rnd.choice(ERRORS)
                        ledger.records.append(
                            UsageRecord(
                                key=f"llm-error:{key}",
                                kind="llm",
                                time_ns=ns(t),
                                **who,
                                labels=dict(labels),
                                model=model,
                                success=False,
                                status_code=status,
                                error_class=eclass,
                                source="claude_code.event",
                            )
                        )
                        continue
                    inp, out = rnd.randint(10, 5000), rnd.randint(10, 3000)
                    cr, cc = rnd.randint(0, 50_000), rnd.randint(0, 8000)
                    ledger.records.append(
                        UsageRecord(
                            key=f"llm:{key}",
                            kind="llm",
                            time_ns=ns(t),
                            **who,
                            labels=dict(labels),
                            model=model,
                            input_tokens=inp,
                            output_tokens=out,
                            cache_read_tokens=cr,
                            cache_creation_tokens=cc,
                            cache_creation_5m_tokens=cc,
                            cost_nanos=rnd.randint(1_000, 900_000) * 1000,
                            cost_source="reported",
                            source="claude_code.event",
                        )
                    )
                    if tools and rnd.random() < 0.7:
                        t += timedelta(seconds=rnd.randint(1, 20))
                        reject = rnd.random() < 0.1
                        ok = (not reject) and rnd.random() < 0.85
                        ledger.records.append(
                            UsageRecord(
                                key=f"tool:{key}",
                                kind="tool",
                                time_ns=ns(t),
                                **who,
                                labels=dict(labels),
                                tool_name=rnd.choice(TOOLS),
                                success=ok,
                                error_class="rejected" if reject else (None if ok else "ShellError"),
                                decision="reject" if reject else "accept",
                                source="claude_code.event",
                            )
                        )
            if metrics and user:
                attrs = {"session.id": sid, "user.id": user, **labels}
                for name, typ, value in (
                    ("claude_code.lines_of_code.count", "added", rnd.randint(0, 400)),
                    ("claude_code.lines_of_code.count", "removed", rnd.randint(0, 100)),
                    ("claude_code.commit.count", None, rnd.randint(0, 3)),
                    ("claude_code.pull_request.count", None, rnd.randint(0, 1)),
                ):
                    a = dict(attrs, **({"type": typ} if typ else {}))
                    blob = json.dumps(a, sort_keys=True)
                    ledger.points.append(
                        MetricPoint(
                            tenant,
                            name,
                            f"{sid}:{name}:{typ}",
                            ns(t) - 60_000_000_000,
                            ns(t),
                            float(value),
                            1,
                            "",
                            blob,
                            user,
                            labels,
                        )
                    )


def in_range(
    records: list[UsageRecord], start: datetime, end: datetime, tenant: str = "acme", team: str | None = None
) -> list[UsageRecord]:
    """Records of ``tenant`` with ``start <= time < end`` (and, with ``team``, that team label)."""
    lo, hi = ns(start), ns(end)
    return [
        r
        for r in records
        if r.tenant == tenant and lo <= r.time_ns < hi and (team is None or r.labels.get("team.id") == team)
    ]


def expected_figures(records: list[UsageRecord]) -> dict:
    """The report's headline figures computed from raw records (definitions as documented in the report)."""
    llm = [r for r in records if r.kind == "llm"]
    tools = [r for r in records if r.kind == "tool"]
    executed = [r for r in tools if r.decision != "reject"]
    by_session: dict[str, list[UsageRecord]] = defaultdict(list)
    for r in records:
        if r.session_id:
            by_session[r.session_id].append(r)
    return {
        "records": len(records),
        "cost_nanos": sum(r.cost_nanos for r in records),
        "input_tokens": sum(r.input_tokens for r in llm),
        "output_tokens": sum(r.output_tokens for r in llm),
        "cache_read_tokens": sum(r.cache_read_tokens for r in llm),
        "cache_creation_tokens": sum(r.cache_creation_tokens for r in llm),
        "api_calls": len(llm),
        "api_errors": sum(1 for r in llm if not r.success),
        "sessions": len(by_session),
        "interactions": len({r.prompt_id for r in records if r.prompt_id}),
        "active_users": len({r.user for r in records if r.user}),
        "records_without_user": sum(1 for r in records if not r.user),
        "tool_records": len(tools),
        "tool_calls": len(executed),
        "tool_failures": sum(1 for r in executed if not r.success),
        "decisions_accept": sum(1 for r in tools if r.decision == "accept"),
        "decisions_reject": sum(1 for r in tools if r.decision == "reject"),
        "session_seconds": sum(
            (max(x.time_ns for x in rs) - min(x.time_ns for x in rs)) / 1e9 for rs in by_session.values()
        ),
    }


def expected_metrics(points: list[MetricPoint], start: datetime, end: datetime, tenant: str = "acme") -> dict:
    """Sums of the DELTA metric points with ``start <= time < end``."""
    lo, hi = ns(start), ns(end)
    out: dict = defaultdict(int)
    for p in points:
        if p.tenant != tenant or not lo <= p.time_ns < hi:
            continue
        typ = json.loads(p.attributes).get("type")
        key = {
            "claude_code.lines_of_code.count": f"lines_{typ}",
            "claude_code.commit.count": "commits",
            "claude_code.pull_request.count": "pull_requests",
        }[p.name]
        out[key] += int(p.value)
    return dict(out)


def cost_by(records: list[UsageRecord], key) -> dict[str, int]:
    """Micro-USD of LLM records grouped by ``key(record)`` (None → ``(none)``)."""
    out: dict[str, int] = defaultdict(int)
    for r in records:
        if r.kind == "llm":
            out[key(r) or "(none)"] += r.cost_nanos
    return dict(out)


async def awrite_ledger(path, ledger: Ledger) -> None:
    """Write ``ledger`` into the SQLite ledger at ``path`` through relay's ledger store (the real write path)."""
    db = SqliteDB(path)
    db.open()
    try:
        store = SqliteLedgerStore(db)
        await store.write(ledger.records)
        await store.write_metric_points(ledger.points)
    finally:
        db.close()


def write_ledger(path, ledger: Ledger) -> None:
    """Blocking :func:`awrite_ledger` (outside an event loop)."""
    asyncio.run(awrite_ledger(path, ledger))
