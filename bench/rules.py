"""Rules benchmark: 1,000 active alert rules over a usage ledger of 1,000,000 records (issue 3).

Figures (each with a baseline measured in the same run and the ratio to it):

* **ledger insert rate** — ``SqliteLedgerStore.write`` of ``--feed`` new records in batches of ``--batch`` (one
  awaited write per batch, as the pipeline does) into a copy of the 1M-record ledger; baseline: the same records
  into an empty ledger. The bulk load that built the cached ledger (batches of 1,000) is printed when it ran.
* **evaluation CPU per record** — in a fresh child process per rule set (so RSS is the engine's own): a
  ``RuleEngine`` with the rule files, backfilled from the 1M-record ledger (time, CPU, RSS growth), then fed the
  same ``--feed`` records as ``LedgerChange(None, record)`` in batches of ``--batch`` under a simulated clock (the
  records' own times, spread over ``--feed-span`` after now) with the periodic evaluation relay's ``RuleEngine.run``
  would do in between (timed separately); ``time.process_time`` per record (µs), of which cyclic-GC time
  (``gc.callbacks``) and spike-baseline recomputation (``WindowAgg.totals_before``, wrapped), and wall time of
  ``observe`` per batch. Baselines: 10 rules (same feed: ~1 % of the records
  reach a rule), 10 rules fed only by their own two teams at the same per-team rate and the same records per team
  per ``observe`` call (every record reaches 5 rules and as many groups are evaluated per record, as with 1,000
  rules), 0 rules; a diagnostic run of the big set with ``gc.freeze()`` after the backfill. Then
  ``--idle-rounds`` periodic evaluations without records: the CPU the rules cost when nothing happens (% of one
  core at the 10 s evaluation interval).
* **crossing record → Slack request latency** — relay as a subprocess (``python -m relay run``) on a copy of the
  ledger with the rule files, ``group_wait: 0s`` and a Slack receiver pointing at a fake Slack Web API served from a
  thread of this process; ``--crossings`` times (after ``--warmup`` unmeasured ones), one Claude Code
  ``api_request`` log event (OTLP/HTTP protobuf, ``tests/support/cc_traffic.py``) from a fresh user whose cost
  (1.05 × the $5 daily user budget) crosses that user's ``UserDailyBudget`` at once; latency = the moment the
  fake's handler starts on the matching ``chat.postMessage`` (matched by the user name in the message) minus (a)
  the moment the OTLP request was acknowledged and (b) the moment just before it was sent. p50/p90/p99/max; relay's
  CPU (% of one core) and RSS over the phase. Start-up: time from launch to ``/healthz`` (relay accepts telemetry)
  and to the "alerting: … windows backfilled in …" log line (alerts restored, every rule backfilled from the
  ledger; in the background since commit dbf7f7c), with a small event posted every ``--probe-interval`` s meanwhile
  and its acknowledgement timed (the backfill shares relay's event loop). Crossings start once the rules are ready.
  Baselines: the same with 10 rules (and start-up with 0 rules).
* **where the time goes** — one more relay with the big rule set, started through this file
  (``--_hooked-relay``), which wraps relay's hand-off points at run time (ingest handler, pipeline decode, ledger
  write, ``observe``, dispatcher ``put`` and flush, Slack notifier) to log ``perf_counter`` stamps: per-stage p50 /
  p90 / max of ``--breakdown-crossings`` fresh-session crossings, and of ``--same-session-crossings`` crossings sent
  50 ms after a small event of the same session and prompt (the early ledger's 0.2 s per-session interval).

The ledger (``--records`` over ``--days`` days ending at generation time; ``--teams`` teams × ``--users`` users with
skewed activity; 70 % LLM calls — three Claude models, tokens and reported cost, ttft, 3 % failures (429 / 500 /
overloaded) — and 30 % tool calls — six tools, 5 % rejected, 8 % of the rest failed —; sessions of 10–60 records,
a prompt every ~5 records, more traffic during Berlin working hours) is written through ``SqliteLedgerStore.write``
and cached in ``/tmp`` keyed by its parameters; a cache older than ``--max-age`` hours (default 24: the rules look
at the last 30 days) or ``--fresh`` regenerates it. Every run works on copies.

The rules: one file per team (``team-NNN.yaml``, 5 rules each, all matching ``team.id="team-NNN"`` so the engine's
equality index routes a record to its team's rules only): ``TeamMonthlyBudget`` (calendar month Europe/Berlin,
50/80/100 % and a forecast, limit ≥ 3 × the team's generated 30-day spend), ``UserDailyBudget`` (calendar day,
group_by team + user, $5, 100 %), ``ApiErrorRate`` (10 m, > 25 % of ≥ 20 calls, for 2m), ``SlowTimeToFirstToken``
(p95 ttft over 15 m > 30 s, ≥ 20 calls, per model, for 5m) and ``TeamCostSpike`` (the last day's spend against the
30 days before, z-score > 4, at least $500 — this rule makes every rule set need the whole ledger at start-up).
Nothing fires on the generated ledger at start-up; the crossings fire only ``UserDailyBudget`` (other Slack posts
are counted and printed); the feed — a simulated busy hour at ~70 × the ledger's average rate — pushes a few heavy
users over $5 (counted). ``--rules N`` uses the first N rules (teams in order); the baseline sets are the first 10 (teams 000 and
001) and 0; crossings alternate between teams 000 and 001 so every rule set sees the same crossings.

Run from the repository root::

    python bench/rules.py                         # defaults: ~5.5 min on 2 cores, + ~75 s the first time (ledger)
    python bench/rules.py --records 200000 --feed 20000 --crossings 30     # quick
    python bench/rules.py --phases latency --json out.json

Units: records/s, µs (CPU per record), ms (latency), MiB (memory), % of one core (CPU), s (durations), USD.
Relay's Langfuse export is off (no keys): only the ledger → rules → Slack path is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import http.client
import json
import math
import multiprocessing as mp
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import psutil
import yaml
from _common import MiB, cpu_count, percentile

from relay.model import UsageRecord
from relay.store.sqlite import SqliteDB
from relay.usage.sqlite_store import SqliteLedgerStore
from relay.usage.store import LedgerChange
from tests.fakes.slack import FakeSlack
from tests.support.cc_traffic import CCTraffic
from tests.support.relay_proc import RelayProcess

GEN_VERSION = 1
TENANT = "default"  # relay's default tenant (no tenants configured)
TZ = ZoneInfo("Europe/Berlin")
USER_DAILY_LIMIT = 5.0  # USD
CROSS_FACTOR = 1.05  # a crossing record costs this × the user daily limit
CHANNEL, TOKEN = "C0ALERTS", "xoxb-bench-token"
RULES_PER_TEAM = 5
GEN_BATCH = 1000  # records per ledger write while generating the cached ledger
PRICES = {  # USD per 1M tokens: input, output, cache read, cache write 5m (relay/usage/prices.yaml)
    "claude-opus-4-5": (5.0, 25.0, 0.5, 6.25),
    "claude-sonnet-4-5": (3.0, 15.0, 0.3, 3.75),
    "claude-haiku-4-5": (1.0, 5.0, 0.1, 1.25),
}
MODELS = list(PRICES)
MODEL_P = [0.30, 0.55, 0.15]
TOOLS = ["Bash", "Read", "Edit", "Write", "Grep", "Glob"]
DEPARTMENTS = ["engineering", "data", "platform", "security", "mobile", "web", "ml", "infra", "qa", "design"]


# ============================================================================================ data
class Population:
    """``teams`` teams of ``users`` users each (``team-NNN``, ``dev-NNN-UU``), deterministic from ``seed``: each
    user has an activity weight (lognormal, times a team factor in 0.5–1.5) and the identity labels relay would
    attach (``team.id``, ``department``, ``cost_center``, ``service.version``). ``only``: records come from the
    first ``only`` teams alone (same users and weights; None: all teams)."""

    def __init__(self, teams: int, users: int, seed: int = 7, only: int | None = None):
        rng = np.random.default_rng(seed)
        self.teams = [f"team-{t:03d}" for t in range(teams)]
        team_factor = rng.uniform(0.5, 1.5, teams)
        self.users: list[str] = []
        self.team_of: list[int] = []
        self.labels: list[dict[str, str]] = []
        weights = []
        for t in range(teams):
            dept = DEPARTMENTS[t % len(DEPARTMENTS)]
            for u in range(users):
                self.users.append(f"dev-{t:03d}-{u:02d}")
                self.team_of.append(t)
                self.labels.append(
                    {
                        "team.id": self.teams[t],
                        "department": dept,
                        "cost_center": f"cc-{t // 10:02d}",
                        "service.version": "2.1.329",
                    }
                )
                weights.append(team_factor[t] * rng.lognormal(0.0, 0.6))
        w = np.array(weights)
        if only is not None:
            w[only * users :] = 0.0
        self.p = w / w.sum()


def _hour_weight(hours: np.ndarray) -> np.ndarray:
    """Relative activity by local hour: working hours 8–18 weigh 1, evenings 0.35, nights 0.08."""
    return np.where((hours >= 8) & (hours < 18), 1.0, np.where((hours >= 18) & (hours < 23), 0.35, 0.08))


def record_stream(
    pop: Population, n: int, t_start: float, t_end: float, seed: int, prefix: str, chunk: int = 10_000
) -> Iterator[list[UsageRecord]]:
    """``n`` Claude-Code-shaped usage records (tenant set, labels shared per user) with times in
    ``[t_start, t_end)`` (unix seconds), in time order, ``chunk`` at a time. Keys start with ``prefix`` so streams
    never collide. Deterministic for the same arguments."""
    rng = np.random.default_rng(seed)
    # times: uniform, thinned by the local hour of day (Berlin, approximated as UTC+1), sorted
    times = np.empty(0)
    while len(times) < n:
        cand = rng.uniform(t_start, t_end, int(n * 2.5) + 100)
        keep = rng.random(len(cand)) < _hour_weight(((cand + 3600) // 3600) % 24)
        times = np.concatenate([times, cand[keep]])
    times = np.sort(times[:n])
    who = rng.choice(len(pop.users), size=n, p=pop.p)
    rnd = random.Random(seed)
    sessions: dict[int, list] = {}  # user → [session id, prompt id, records left, last time, prompt records left]
    nsess = 0
    out: list[UsageRecord] = []
    for i in range(n):
        t = float(times[i])
        u = int(who[i])
        s = sessions.get(u)
        if s is None or s[2] <= 0 or t - s[3] > 7200:
            nsess += 1
            s = sessions[u] = [f"{prefix}s{nsess:07d}", "", rnd.randint(10, 60), t, 0]
        if s[4] <= 0:
            s[1], s[4] = f"{s[0]}-p{rnd.getrandbits(32):08x}", rnd.randint(3, 8)
        s[2] -= 1
        s[3] = t
        s[4] -= 1
        t_ns = int(t * 1e9)
        common = dict(
            time_ns=t_ns,
            tenant=TENANT,
            session_id=s[0],
            prompt_id=s[1],
            user=pop.users[u],
            labels=pop.labels[u],
            source="claude_code.event",
        )
        x = rnd.random()
        if x < 0.70:  # LLM call
            model = rnd.choices(MODELS, MODEL_P)[0]
            if rnd.random() < 0.03:
                status, eclass = rnd.choice([(429, "rate_limit"), (500, "server_error"), (None, "overloaded")])
                out.append(
                    UsageRecord(
                        key=f"llm-error:{prefix}{i:09d}",
                        kind="llm",
                        model=model,
                        duration_ms=round(rnd.uniform(200, 30_000), 1),
                        success=False,
                        status_code=status,
                        error_class=eclass,
                        error=eclass.replace("_", " "),
                        **common,
                    )
                )
            else:
                inp, outp = rnd.randint(5, 600), int(rnd.lognormvariate(6.0, 0.9))
                cread, cwrite = rnd.randint(5_000, 90_000), (rnd.randint(0, 9_000) if rnd.random() < 0.6 else 0)
                pi, po, pr, pw = PRICES[model]
                micros = round(inp * pi + outp * po + cread * pr + cwrite * pw)  # tokens × USD/1M = micro-USD
                ttft = rnd.lognormvariate(7.2, 0.5)  # median ~1.3 s
                out.append(
                    UsageRecord(
                        key=f"llm:req_{prefix}{i:09d}",
                        kind="llm",
                        model=model,
                        input_tokens=inp,
                        output_tokens=outp,
                        cache_read_tokens=cread,
                        cache_creation_tokens=cwrite,
                        cache_creation_5m_tokens=cwrite,
                        cost_nanos=micros * 1000,
                        cost_source="reported",
                        duration_ms=round(ttft + outp * 12, 1),
                        ttft_ms=round(ttft, 1),
                        **common,
                    )
                )
        else:  # tool call
            tool = TOOLS[int(rnd.random() * len(TOOLS))]
            y = rnd.random()
            if y < 0.05:
                kw = dict(success=False, error_class="rejected", decision="reject", decision_source="user_reject")
            elif y < 0.05 + 0.95 * 0.08:
                err = "ShellError" if tool == "Bash" else "tool_error"
                kw = dict(success=False, error_class=err, error=err, decision="accept", decision_source="config")
            else:
                kw = dict(success=True, decision="accept", decision_source="config")
            out.append(
                UsageRecord(
                    key=f"tool:toolu_{prefix}{i:09d}",
                    kind="tool",
                    tool_name=tool,
                    duration_ms=round(rnd.lognormvariate(5.5, 1.2), 1),
                    **kw,
                    **common,
                )
            )
        if len(out) >= chunk:
            yield out
            out = []
    if out:
        yield out


def batches(stream: Iterator[list[UsageRecord]], size: int) -> Iterator[list[UsageRecord]]:
    """Re-cut a chunk stream into lists of ``size``."""
    buf: list[UsageRecord] = []
    for chunk in stream:
        buf.extend(chunk)
        while len(buf) >= size:
            yield buf[:size]
            buf = buf[size:]
    if buf:
        yield buf


# ============================================================================================ cached ledger
def _open_ledger(path: Path) -> tuple[SqliteDB, SqliteLedgerStore]:
    db = SqliteDB(path)
    db.open()
    return db, SqliteLedgerStore(db)


async def _write_all(
    store: SqliteLedgerStore, stream: Iterator[list[UsageRecord]], size: int, progress: int = 0
) -> dict:
    """Write ``stream`` in batches of ``size`` (each awaited); wall and CPU (process, all threads) of the writes,
    and the rate at each ``progress`` records."""
    wall = cpu = 0.0
    n = 0
    marks = []
    last = (0, 0.0)
    for b in batches(stream, size):
        t, c = time.perf_counter(), time.process_time()
        changes = await store.write(b)
        wall += time.perf_counter() - t
        cpu += time.process_time() - c
        assert len(changes) == len(b), f"{len(changes)} changes for {len(b)} records"
        n += len(b)
        if progress and n // progress != (n - len(b)) // progress:
            rate = (n - last[0]) / (wall - last[1]) if wall > last[1] else float("nan")
            marks.append((n, rate))
            print(f"    {n:>10,} records  {rate:>9,.0f} records/s (last {n - last[0]:,})", flush=True)
            last = (n, wall)
    return {
        "records": n,
        "wall_s": wall,
        "cpu_s": cpu,
        "rate": n / wall if wall else float("nan"),
        "cpu_us_per_record": 1e6 * cpu / n if n else float("nan"),
        "marks": marks,
    }


def ensure_ledger(a: argparse.Namespace, pop: Population) -> tuple[Path, dict]:
    """The cached ledger directory (``relay.db``) and its metadata (``t_end``, ``team_spend``, ``generate``)."""
    cache = Path(f"/tmp/relay-bench-rules-v{GEN_VERSION}-{a.records}r-{a.teams}x{a.users}-{a.days}d")
    meta_path = cache / "meta.json"
    if meta_path.exists() and not a.fresh:
        meta = json.loads(meta_path.read_text())
        age_h = (time.time() - meta["t_end"]) / 3600
        if age_h <= a.max_age:
            print(f"ledger: cached {cache} ({age_h:.1f} h old)")
            meta["generate"] = None
            return cache, meta
    shutil.rmtree(cache, ignore_errors=True)
    tmp = Path(str(cache) + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t_end = time.time()
    t_start = t_end - a.days * 86400
    print(
        f"ledger: generating {a.records:,} records over {a.days} days into {cache} "
        f"(SqliteLedgerStore.write, batches of {GEN_BATCH:,})",
        flush=True,
    )
    spend = [0] * len(pop.teams)

    def tally(stream):
        for chunk in stream:
            for r in chunk:
                spend[int(r.labels["team.id"][5:])] += r.cost_nanos
            yield chunk

    async def go() -> dict:
        db, store = _open_ledger(tmp / "relay.db")
        try:
            stream = tally(record_stream(pop, a.records, t_start, t_end, seed=11, prefix="g"))
            return await _write_all(store, stream, GEN_BATCH, progress=max(a.records // 10, 1))
        finally:
            db.close()

    began = time.perf_counter()
    gen = asyncio.run(go())
    gen["total_s"] = time.perf_counter() - began  # incl. making the records
    meta = {"t_end": t_end, "records": a.records, "team_spend_usd": [s / 1e6 for s in spend], "generate": gen}
    (tmp / "meta.json").write_text(json.dumps(meta))
    os.replace(tmp, cache)
    print(
        f"  bulk load: {gen['rate']:,.0f} records/s in write() ({gen['wall_s']:.1f} s; "
        f"{gen['total_s']:.1f} s with record generation)"
    )
    return cache, meta


def copy_ledger(cache: Path, dest: Path) -> float:
    """Copy the cached database into ``dest`` (a data dir); seconds."""
    t = time.perf_counter()
    dest.mkdir(parents=True, exist_ok=True)
    for f in cache.iterdir():
        if f.name.startswith("relay.db"):
            shutil.copyfile(f, dest / f.name)
    return time.perf_counter() - t


# ============================================================================================ rules
def team_rules(team: str, month_limit: float) -> list[dict]:
    """The five rules of one team (see the module docstring)."""
    m = [f'team.id="{team}"']
    return [
        {
            "alert": "TeamMonthlyBudget",
            "kind": "budget",
            "matchers": m,
            "group_by": ["team.id"],
            "limit_usd": month_limit,
            "window": {"calendar": "month", "timezone": "Europe/Berlin"},
            "thresholds": [
                {"percent": 50, "severity": "info"},
                {"percent": 80, "severity": "warning"},
                {"percent": 100, "severity": "critical"},
            ],
            "forecast": {"enabled": True, "min_elapsed": "3d", "severity": "warning"},
            "labels": {"scope": "team"},
            "annotations": {
                "summary": "Team {{ labels['team.id'] }}: {{ values.spend | usd }} of "
                "{{ values.limit | usd }} monthly budget ({{ values.percent | percent }})"
            },
        },
        {
            "alert": "UserDailyBudget",
            "kind": "budget",
            "matchers": m,
            "group_by": ["team.id", "user"],
            "limit_usd": USER_DAILY_LIMIT,
            "window": {"calendar": "day", "timezone": "Europe/Berlin"},
            "thresholds": [{"percent": 100, "severity": "critical"}],
            "labels": {"scope": "user"},
            "annotations": {
                "summary": "{{ labels.user }} ({{ labels['team.id'] }}) spent {{ values.spend | usd }} "
                "today ({{ values.percent | percent }} of {{ values.limit | usd }})"
            },
        },
        {
            "alert": "ApiErrorRate",
            "kind": "error_rate",
            "errors": {"kind": "llm"},
            "matchers": m,
            "group_by": ["team.id"],
            "window": "10m",
            "ratio": 0.25,
            "min_count": 20,
            "for": "2m",
            "labels": {"severity": "warning"},
            "annotations": {"summary": "{{ values.ratio | ratio }} of {{ labels['team.id'] }}'s API calls failed"},
        },
        {
            "alert": "SlowTimeToFirstToken",
            "kind": "threshold",
            "matchers": m + ['kind="llm"', 'success="true"'],
            "group_by": ["team.id", "model"],
            "field": "ttft_ms",
            "aggregate": "p95",
            "window": "15m",
            "op": ">",
            "value": 30000,
            "min_count": 20,
            "for": "5m",
            "labels": {"severity": "info"},
            "annotations": {
                "summary": "p95 time to first token of {{ labels.model }} is {{ (values.value / 1000) | round(1) }}s"
            },
        },
        {
            "alert": "TeamCostSpike",
            "kind": "spike",
            "matchers": m,
            "group_by": ["team.id"],
            "field": "cost_usd",
            "window": "1d",
            "baseline": {"windows": 30, "min_baseline": 1},
            "method": "zscore",
            "threshold": 4,
            "min_current": 500,
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "{{ labels['team.id'] }} spent {{ values.current | usd }} in the last day, "
                "{{ values.zscore | round(1) }} sd above its 30-day norm"
            },
        },
    ]


def write_rules(root: Path, n_rules: int, pop: Population, team_spend: list[float]) -> Path:
    """``n_rules`` rules as one file per team under ``root``; returns the directory (empty for 0 rules)."""
    d = root / f"rules-{n_rules}"
    d.mkdir(parents=True, exist_ok=True)
    if n_rules > RULES_PER_TEAM * len(pop.teams):
        raise SystemExit(f"--rules {n_rules}: at most {RULES_PER_TEAM} rules per team ({len(pop.teams)} teams)")
    left = n_rules
    for t, team in enumerate(pop.teams):
        if left <= 0:
            break
        limit = max(1000.0, math.ceil(3 * team_spend[t] / 500) * 500)
        rules = team_rules(team, limit)[:left]
        left -= len(rules)
        (d / f"{team}.yaml").write_text(yaml.safe_dump({"groups": [{"name": team, "rules": rules}]}, sort_keys=False))
    return d


def rule_files(d: Path) -> list[str]:
    """The rule files of a rules directory (sorted)."""
    return sorted(str(p) for p in d.glob("*.yaml"))


# ============================================================================================ engine (child process)
def _rss() -> float:
    return psutil.Process().memory_info().rss / MiB


class SimClock:
    """A settable clock (unix seconds) for the engine."""

    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


class GcTimer:
    """Time spent in the cyclic garbage collector (``gc.callbacks``), by generation: total and longest pause."""

    def __init__(self) -> None:
        self.total = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self.longest = [0.0, 0.0, 0.0]
        self._t = 0.0
        self.on = False

    def __call__(self, phase: str, info: dict) -> None:
        if not self.on:
            return
        if phase == "start":
            self._t = time.perf_counter()
        else:
            g, d = info["generation"], time.perf_counter() - self._t
            self.total[g] += d
            self.count[g] += 1
            self.longest[g] = max(self.longest[g], d)


def engine_worker(job: dict) -> dict:
    """Child process: backfill a ``RuleEngine`` from the ledger copy, feed it the records, time everything."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from relay.alerting.evaluation.engine import RuleEngine
    from relay.alerting.evaluation.windows import WindowAgg
    from relay.alerting.rules.load import RuleSet

    baseline_s = [0.0]
    totals_before = WindowAgg.totals_before

    def timed_totals_before(self, *args, **kwargs):  # spike baselines, recomputed when a window start moves
        t = time.perf_counter()
        try:
            return totals_before(self, *args, **kwargs)
        finally:
            baseline_s[0] += time.perf_counter() - t

    WindowAgg.totals_before = timed_totals_before
    pop = Population(job["teams"], job["users"], only=job.get("feed_teams"))
    ruleset = RuleSet.load(job["files"]) if job["files"] else RuleSet()
    clock = SimClock(job["t0"])
    alerts: list = []
    engine = RuleEngine(ruleset, on_alerts=alerts.extend, now=clock, evaluation_interval=10.0)
    db, store = _open_ledger(Path(job["db"]))
    res: dict = {"rules": len(ruleset.rules), "batch": job["batch"]}
    gc.collect()
    rss0 = _rss()
    t, c = time.perf_counter(), time.process_time()
    asyncio.run(engine.restore(store))
    res["backfill_s"] = time.perf_counter() - t
    res["backfill_cpu_s"] = time.process_time() - c
    gc.collect()
    res["rss_before_mib"], res["rss_after_backfill_mib"] = rss0, _rss()
    res["alerts_at_start"] = len(alerts)
    db.close()
    alerts.clear()
    if job.get("gc_freeze"):
        gc.freeze()  # diagnostic: move everything alive after the backfill out of the collector's reach
    gct = GcTimer()
    gc.callbacks.append(gct)
    gct.on = True
    baseline_s[0] = 0.0

    # feed: LedgerChange(None, r) per new record, batches of ``batch``, clock = newest record of the batch
    obs_cpu = obs_wall = ev_cpu = 0.0
    ev_n = 0
    per_batch: list[float] = []
    n = 0
    next_due = engine.next_wakeup(clock.t)
    stream = record_stream(pop, job["feed"], job["t0"], job["t0"] + job["feed_span"], seed=23, prefix="f")
    for b in batches(stream, job["batch"]):
        changes = [LedgerChange(None, r) for r in b]
        clock.t = b[-1].time_ns / 1e9
        while next_due <= clock.t:  # what RuleEngine.run would have done meanwhile
            now, clock.t = clock.t, next_due
            c = time.process_time()
            engine.evaluate(next_due, due_only=True)
            ev_cpu += time.process_time() - c
            clock.t = now
            ev_n += 1
            next_due = max(engine.next_wakeup(next_due), next_due + 0.01)
        t, c = time.perf_counter(), time.process_time()
        engine.observe(changes)
        dc, dw = time.process_time() - c, time.perf_counter() - t
        obs_cpu += dc
        obs_wall += dw
        per_batch.append(dw)
        n += len(b)
    gct.on = False
    res.update(
        feed=n,
        observe_cpu_s=obs_cpu,
        observe_wall_s=obs_wall,
        cpu_us_per_record=1e6 * obs_cpu / n,
        batch_ms_p50=1e3 * percentile(per_batch, 50),
        batch_ms_p99=1e3 * percentile(per_batch, 99),
        batch_ms_max=1e3 * max(per_batch),
        periodic_evals=ev_n,
        periodic_cpu_s=ev_cpu,
        alerts_during_feed=len(alerts),
        rss_after_feed_mib=_rss(),
        alert_names=sorted({a.labels.get("alertname", "?") for a in alerts}),
        gc_s=sum(gct.total),
        gc_us_per_record=1e6 * sum(gct.total) / n,
        gc_counts=gct.count,
        gc_gen2_longest_ms=1e3 * gct.longest[2],
        spike_baseline_us_per_record=1e6 * baseline_s[0] / n,
    )
    # idle: periodic evaluation rounds with no records (every rule due each round at the 10 s default interval)
    rounds = []
    for _ in range(job["idle_rounds"]):
        clock.t += 10.0
        c = time.process_time()
        engine.evaluate(clock.t, due_only=True)
        rounds.append(time.process_time() - c)
    res["idle_round_ms"] = 1e3 * percentile(rounds, 50) if rounds else float("nan")
    res["idle_cpu_pct"] = 100 * percentile(rounds, 50) / 10.0 if rounds else float("nan")
    return res


def run_engine(job: dict) -> dict:
    """``engine_worker`` in a fresh spawned process (clean RSS)."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(engine_worker, (job,))


# ============================================================================================ Slack + relay
_ARRIVAL: contextvars.ContextVar[float] = contextvars.ContextVar("arrival", default=0.0)


class TimedSlack(FakeSlack):
    """The fake Slack, also noting when each ``chat.postMessage`` request reached its handler (``perf_counter``,
    same clock as the load generator: the fake serves from a thread of this process)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.posts: list[tuple[float, int | None, str]] = []  # (arrival, status, JSON of the arguments)
        self.cond = threading.Condition()

    async def _api(self, request):
        _ARRIVAL.set(time.perf_counter())
        return await super()._api(request)

    def _record(self, rec, status, response):
        super()._record(rec, status, response)
        if rec.method == "chat.postMessage":
            with self.cond:
                self.posts.append((_ARRIVAL.get(), status, json.dumps(rec.args, default=str)))
                self.cond.notify_all()

    def wait_post(self, needle: str, start: int, timeout: float) -> float | None:
        """Arrival time of the first post from index ``start`` on whose arguments contain ``needle``."""
        deadline = time.monotonic() + timeout
        i = start
        with self.cond:
            while True:
                while i < len(self.posts):
                    arrival, _, text = self.posts[i]
                    if needle in text:
                        return arrival
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)


class RelayRun:
    """relay as a subprocess on ``data_dir`` with ``overrides``; start-up timing, CPU and RSS sampling."""

    def __init__(self, data_dir: Path, overrides: dict, events: Path | None = None):
        if events is None:
            self.proc = RelayProcess(data_dir, overrides=overrides)
        else:
            self.proc = HookedRelayProcess(data_dir, overrides=overrides)
            self.proc.events_path = events
        self.ps: psutil.Process | None = None
        self.rss: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout: float) -> dict:
        """Start and wait for ``/healthz`` (relay accepts telemetry); seconds since launch, CPU seconds and RSS."""
        self.t_launch = time.perf_counter()
        self.proc.start(timeout)
        healthz = time.perf_counter() - self.t_launch
        assert self.proc.proc is not None
        self.ps = psutil.Process(self.proc.proc.pid)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return {"healthz_s": healthz, "healthz_cpu_s": self.cpu_s(), "rss_at_healthz_mib": self.rss_mib()}

    def ready_message(self) -> str | None:
        """relay's "alerting: N rules from M files…" log message, logged once the rules engine has restored its
        alerts and backfilled its windows (in the background since dbf7f7c; before /healthz until then)."""
        for line in self.proc.logs().splitlines():
            if '"alerting: ' in line and "rules from" in line:
                try:
                    return json.loads(line).get("msg", line)
                except ValueError:
                    return line
        return None

    def _sample(self) -> None:
        assert self.ps is not None
        while not self._stop.is_set():
            try:
                self.rss.append((time.perf_counter(), self.ps.memory_info().rss))
            except psutil.Error:
                return
            self._stop.wait(0.1)

    def cpu_s(self) -> float:
        assert self.ps is not None
        ct = self.ps.cpu_times()
        return ct.user + ct.system

    def rss_mib(self) -> float:
        assert self.ps is not None
        return self.ps.memory_info().rss / MiB

    def peak_rss_mib(self, t0: float, t1: float) -> float:
        xs = [r for t, r in list(self.rss) if t0 <= t <= t1]
        return max(xs) / MiB if xs else float("nan")

    def backfill_log(self) -> str:
        """The engine's "rules: backfilled …" log message (JSON logs)."""
        for line in self.proc.logs().splitlines():
            if "rules: backfilled" in line:
                try:
                    return json.loads(line).get("msg", line)
                except ValueError:
                    return line
        return ""

    def stop(self) -> None:
        self._stop.set()
        if self.proc.proc is not None and self.proc.proc.poll() is None:
            try:
                self.proc.terminate(15)
            except Exception:
                self.proc.kill9()
        if self._thread:
            self._thread.join(2)


def relay_overrides(rules_dir: Path | None, slack_api: str) -> dict:
    """relay's config for the latency phase: production pipeline timers, the rule files, Slack receiver."""
    return {
        "pipeline": {"idle_timeout": "10s", "root_grace": "2s"},
        "rules": {
            "files": [str(rules_dir / "*.yaml")] if rules_dir else [],
            "evaluation_interval": "10s",
            "watch": True,
        },
        "alerting": {
            "route": {
                "receiver": "slack",
                "group_by": ["alertname", "tenant", "team.id", "user", "threshold"],
                "group_wait": "0s",
                "group_interval": "1m",
                "repeat_interval": "4h",
            },
            "receivers": [
                {"name": "slack", "slack_configs": [{"bot_token": TOKEN, "channel": CHANNEL, "api_url": slack_api}]}
            ],
        },
        "service": {"log": {"level": "info", "format": "json"}},
    }


def latency_phase(
    label: str,
    cache: Path,
    rules_dir: Path | None,
    slack,
    a: argparse.Namespace,
    crossings: int,
    *,
    hooked: bool = False,
    same_session: int = 0,
) -> dict:
    """Start relay on a fresh ledger copy; ``crossings`` crossing records → Slack; timings. ``hooked``: relay with
    hand-off timestamps (:func:`hooked_relay_main`) and a per-stage breakdown; ``same_session``: that many more
    crossings, each 50 ms after a small ledger event of the same session and prompt."""
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-rules-"))
    try:
        copy_s = copy_ledger(cache, tmp / "data")
        events = tmp / "events.txt" if hooked else None
        relay = RelayRun(tmp / "data", relay_overrides(rules_dir, slack.api_url), events)
        try:
            res = relay.start(timeout=a.start_timeout)
            res["copy_s"] = copy_s
            res.update(_until_ready(relay, a))
            res["backfill_log"] = relay.backfill_log()
            print(
                f"  {label}: OTLP accepted after {res['healthz_s']:.1f} s, rules ready after {res['ready_s']:.1f} s "
                f"({res['ready_cpu_s']:.1f} s CPU), RSS {res['rss_ready_mib']:.0f} MiB; acks while backfilling: "
                f"{res['probe_acks']}, max {_fmt(res['probe_ack_ms']['max'])} ms; {res['ready_message']}",
                flush=True,
            )
            if crossings <= 0:
                return res
            samples: list[dict] = []
            res.update(_crossings(relay, slack, a, crossings, label, samples=samples))
            if same_session:
                more: list[dict] = []
                res["same_session"] = _crossings(
                    relay, slack, a, same_session, label + ", same session", prior=0.05, samples=more
                )
                samples += more
            if events is not None:
                time.sleep(0.2)
                res["breakdown"] = breakdown(events, [x for x in samples if not x["prior"]])
                if same_session:
                    res["same_session"]["breakdown"] = breakdown(events, [x for x in samples if x["prior"]])
            return res
        finally:
            relay.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _until_ready(relay: RelayRun, a: argparse.Namespace) -> dict:
    """Until relay logs that its rules are ready, post a small Claude Code event every ``a.probe_interval`` s and
    time its acknowledgement (the backfill runs on relay's event loop). Start-up figures."""
    cc = CCTraffic(resource={"team.id": "team-000", "enduser.id": f"probe-{int(time.time() * 10) % 1000000:06d}"})
    conn = http.client.HTTPConnection("127.0.0.1", relay.proc.http_port, timeout=30)
    headers = {"Content-Type": "application/x-protobuf"}
    acks: list[float] = []
    deadline = time.perf_counter() + a.start_timeout
    while True:
        msg = relay.ready_message()
        if msg is not None:
            t_ready = time.perf_counter()
            break
        if time.perf_counter() > deadline:
            raise TimeoutError(f"relay's rules not ready after {a.start_timeout} s")
        body = cc.request(cc.api_request(0.0001, model="claude-haiku-4-5"))
        t = time.perf_counter()
        conn.request("POST", "/v1/logs", body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        acks.append(time.perf_counter() - t)
        if r.status != 200:
            raise RuntimeError(f"relay answered {r.status} to a probe")
        time.sleep(max(0.0, a.probe_interval - acks[-1]))
    conn.close()
    m = re.search(r"backfilled in ([0-9.]+)s", msg)
    return {
        "ready_s": t_ready - relay.t_launch,
        "ready_cpu_s": relay.cpu_s(),
        "rss_ready_mib": relay.rss_mib(),
        "ready_message": msg,
        "backfill_logged_s": float(m.group(1)) if m else float("nan"),
        "probe_acks": len(acks),
        "probe_ack_ms": {
            "p50": 1e3 * percentile(acks, 50),
            "p99": 1e3 * percentile(acks, 99),
            "max": 1e3 * max(acks) if acks else float("nan"),
        },
    }


def _crossings(
    relay: RelayRun,
    slack,
    a: argparse.Namespace,
    crossings: int,
    label: str,
    *,
    prior: float | None = None,
    samples: list[dict] | None = None,
) -> dict:
    """``a.warmup`` + ``crossings`` crossing records, one at a time; with ``prior`` each is sent that many seconds
    after a $0.01 event of the same session and prompt (so the early ledger mapped that session just before).
    Measured ones are appended to ``samples`` (``user``, ``t_send``, ``t_ack``, ``arrival``, ``prior``)."""
    rnd = random.Random(5)
    conn = http.client.HTTPConnection("127.0.0.1", relay.proc.http_port, timeout=10)
    headers = {"Content-Type": "application/x-protobuf"}
    from_ack: list[float] = []
    from_send: list[float] = []
    acks: list[float] = []
    missed = 0
    first_post = len(slack.posts)
    run_tag = f"{int(time.time() * 10) % 1000000:06d}{'s' if prior is not None else 'f'}"
    t0 = cpu0 = None
    for k in range(a.warmup + crossings):
        if k == a.warmup:
            t0, cpu0 = time.perf_counter(), relay.cpu_s()
        team = f"team-{k % 2:03d}"
        user = f"xcross-{run_tag}-{k:04d}"
        cc = CCTraffic(
            resource={"team.id": team, "enduser.id": user, "department": "engineering", "cost_center": "cc-00"}
        )
        if prior is not None:
            conn.request(
                "POST", "/v1/logs", body=cc.request(cc.api_request(0.01, model="claude-opus-4-5")), headers=headers
            )
            r = conn.getresponse()
            r.read()
            time.sleep(prior)
        body = cc.request(cc.api_request(round(CROSS_FACTOR * USER_DAILY_LIMIT, 6), model="claude-opus-4-5"))
        start = len(slack.posts)
        t_send = time.perf_counter()
        conn.request("POST", "/v1/logs", body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        t_ack = time.perf_counter()
        if r.status != 200:
            raise RuntimeError(f"relay answered {r.status} to a crossing record")
        arrival = slack.wait_post(user, start, a.crossing_timeout)
        if k >= a.warmup:
            if arrival is None:
                missed += 1
            else:
                from_ack.append(arrival - t_ack)
                from_send.append(arrival - t_send)
                acks.append(t_ack - t_send)
                if samples is not None:
                    samples.append(
                        {"user": user, "t_send": t_send, "t_ack": t_ack, "arrival": arrival, "prior": prior is not None}
                    )
        time.sleep(rnd.uniform(a.gap / 2, a.gap * 1.5))
    t1, cpu1 = time.perf_counter(), relay.cpu_s()
    conn.close()
    time.sleep(0.5)
    users = [f"xcross-{run_tag}-{k:04d}" for k in range(a.warmup + crossings)]
    others = [p for p in slack.posts[first_post:] if not any(u in p[2] for u in users)]
    pct = {}
    for name, xs in (("from_ack", from_ack), ("from_send", from_send), ("ack", acks)):
        pct[name] = {f"p{p}": 1e3 * percentile(xs, p) for p in (50, 90, 99)} | {
            "max": 1e3 * max(xs) if xs else float("nan")
        }
    out = {
        "crossings": crossings,
        "received": len(from_ack),
        "missed": missed,
        "latency_ms": pct,
        "phase_s": t1 - t0,
        "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
        "rss_peak_mib": relay.peak_rss_mib(t0, t1),
        "rss_end_mib": relay.rss_mib(),
        "other_posts": len(others),
        "other_post_samples": [p[2][:300] for p in others[:3]],
    }
    f = pct["from_ack"]
    print(
        f"  {label}: {len(from_ack)}/{crossings} crossings reached Slack; ack → Slack p50 {f['p50']:.1f} ms, "
        f"p99 {f['p99']:.1f} ms; relay {out['cpu_pct']:.1f} % CPU",
        flush=True,
    )
    return out


# ============================================================================================ latency breakdown
HOOK_FLAG = "--_hooked-relay"

#: (name, from event, to event) of the crossing path, in order; ``send``/``arrival`` are the bench's own times.
STAGES = [
    ("client send → relay's ingest handler", "send", "ingest_in"),
    ("spool append + commit (ack path)", "ingest_in", "ingest_out"),
    ("spooled → pipeline decodes it", "ingest_out", "feed"),
    ("decode → ledger write (early-ledger map)", "feed", "ledger_in"),
    ("ledger write (SQLite job)", "ledger_in", "ledger_out"),
    ("ledger → rules engine", "ledger_out", "observe_in"),
    ("engine: evaluate + render alert", "observe_in", "put"),
    ("dispatcher: flush + outbox commit", "put", "flush_out"),
    ("outbox → Slack notifier", "flush_out", "notify_in"),
    ("slack-sdk chat.postMessage → fake Slack", "notify_in", "arrival"),
]


def hooked_relay_main(config: str, events: str) -> int:
    """Child process: ``relay run --config config`` with a timestamp (``perf_counter``, the same monotonic clock
    as the bench on Linux) written to ``events`` at each hand-off of the crossing path: the ingest handler, the
    pipeline's decode, the ledger write, the engine's ``observe``, the dispatcher's ``put`` and flush, the Slack
    notifier. Relay's code is wrapped at run time, not changed; each event costs a ``write(2)`` of one line."""
    from relay.alerting.dispatch.dispatcher import Dispatcher
    from relay.alerting.service import AlertingService
    from relay.app import Relay
    from relay.cli.main import main as relay_main
    from relay.notify.slack.notifier import SlackNotifier
    from relay.pipeline.worker import Pipeline
    from relay.usage.sqlite_store import SqliteLedgerStore

    fd = os.open(events, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def ev(stage: str, detail: str = "") -> None:
        os.write(fd, f"{time.perf_counter():.6f} {stage} {detail}\n".encode())

    def users(records) -> str:
        return ",".join(sorted({r.user for r in records if r is not None and r.user}))

    gc_start = [0.0]

    def gc_cb(phase: str, info: dict) -> None:  # full collections: their start time and duration (ms)
        if info.get("generation") != 2:
            return
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            os.write(fd, f"{gc_start[0]:.6f} gc2 {1e3 * (time.perf_counter() - gc_start[0]):.1f}\n".encode())

    gc.callbacks.append(gc_cb)
    close = Pipeline._close

    async def _close(self, groups):
        ev("close", str(len(groups)))
        return await close(self, groups)

    Pipeline._close = _close
    ingest, feed, write = Relay._ingest, Pipeline._feed, SqliteLedgerStore.write
    observe, put, flush, notify = AlertingService.observe, Dispatcher.put, Dispatcher.flush_due, SlackNotifier.notify

    async def _ingest(self, req):
        ev("ingest_in")
        try:
            return await ingest(self, req)
        finally:
            ev("ingest_out")

    def _feed(self, item, closed):
        ev("feed")
        return feed(self, item, closed)

    async def _write(self, records):
        ev("ledger_in", users(records))
        changes = await write(self, records)
        ev("ledger_out", users([c.new for c in changes]))
        return changes

    def _observe(self, changes):
        ev("observe_in", users([c.new for c in changes]))
        observe(self, changes)
        ev("observe_out")

    def _put(self, alerts):
        alerts = list(alerts)
        ev("put", ",".join(x.labels.get("user", "") for x in alerts))
        put(self, alerts)

    async def _flush(self):
        n = await flush(self)
        if n:
            ev("flush_out", str(n))
        return n

    async def _notify(self, notification, state):
        ev("notify_in", ",".join(x.labels.get("user", "") for x in notification.alerts))
        return await notify(self, notification, state)

    Relay._ingest, Pipeline._feed, SqliteLedgerStore.write = _ingest, _feed, _write
    AlertingService.observe, Dispatcher.put, Dispatcher.flush_due, SlackNotifier.notify = (
        _observe,
        _put,
        _flush,
        _notify,
    )
    return relay_main(["run", "--config", config])


class HookedRelayProcess(RelayProcess):
    """``RelayProcess`` running :func:`hooked_relay_main` (this file with ``--_hooked-relay``) instead of
    ``python -m relay``; set ``events_path`` before :meth:`start`."""

    events_path: Path | None = None

    def command(self) -> list[str]:
        """This file's hooked entry point instead of ``python -m relay run``."""
        return [sys.executable, str(Path(__file__).resolve()), HOOK_FLAG, str(self.config_path), str(self.events_path)]


def breakdown(events: Path, samples: list[dict]) -> dict:
    """Per-stage durations (ms: p50, p90, max) of the crossings in ``samples`` from the hooked relay's events.
    Each crossing's events are the first of each kind after it was sent (those naming a user must name its user);
    crossings are sent one at a time, so they do not interleave."""
    evs: list[tuple[float, str, str]] = []
    for line in events.read_text().splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2:
            evs.append((float(parts[0]), parts[1], parts[2] if len(parts) > 2 else ""))
    named = {"ledger_in", "ledger_out", "observe_in", "put", "notify_in"}
    per: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    complete = 0
    gcs = [(t, float(d)) for t, k, d in evs if k == "gc2"]
    closes = [t for t, k, _ in evs if k == "close"]
    hit_gc: list[float] = []  # longest gen-2 collection that started while a crossing was under way
    waits: dict[bool, list[float]] = {True: [], False: []}  # decode → ledger write, by "a group closed meanwhile"
    for smp in samples:
        t = {"send": smp["t_send"], "arrival": smp["arrival"]}
        cur = smp["t_send"]
        ok = True
        for _, _a, b in STAGES:
            if b in t:
                continue
            hit = next(
                (x for x in evs if x[0] >= cur and x[1] == b and (b not in named or smp["user"] in x[2].split(","))),
                None,
            )
            if hit is None or hit[0] > smp["arrival"]:
                ok = False
                break
            t[b] = cur = hit[0]
        if not ok:
            continue
        complete += 1
        for name, a, b in STAGES:
            per[name].append(t[b] - t[a])
        g = [d for ts, d in gcs if smp["t_send"] <= ts <= smp["arrival"]]
        if g:
            hit_gc.append(max(g))
        waits[any(t["feed"] < ts < t["ledger_in"] for ts in closes)].append(t["ledger_in"] - t["feed"])
    span = [x for x in gcs if samples and samples[0]["t_send"] <= x[0] <= samples[-1]["arrival"]]
    return {
        "crossings": len(samples),
        "complete": complete,
        "gc2": {
            "during_phase": len(span),
            "phase_ms_max": max((d for _, d in span), default=float("nan")),
            "crossings_hit": len(hit_gc),
            "hit_ms": hit_gc,
        },
        "early_wait_ms": {
            ("group closed meanwhile" if k else "no close meanwhile"): {"n": len(v), "p50": 1e3 * percentile(v, 50)}
            for k, v in waits.items()
        },
        "stages_ms": {
            k: {
                "p50": 1e3 * percentile(v, 50),
                "p90": 1e3 * percentile(v, 90),
                "max": 1e3 * max(v) if v else float("nan"),
            }
            for k, v in per.items()
        },
    }


# ============================================================================================ ledger phase
def ledger_phase(run_db: Path, a: argparse.Namespace, pop: Population, t0: float) -> dict:
    """Write the feed records into the ledger copy (1M) and into an empty ledger (baseline)."""
    out = {}
    for label, path in (
        ("empty", Path(tempfile.mkdtemp(prefix="relay-bench-rules-empty-")) / "relay.db"),
        ("big", run_db),
    ):

        async def go(path=path) -> dict:
            db, store = _open_ledger(path)
            try:
                stream = record_stream(pop, a.feed, t0, t0 + a.feed_span, seed=23, prefix="f")
                return await _write_all(store, stream, a.batch)
            finally:
                db.close()

        gc.collect()
        out[label] = asyncio.run(go())
        if label == "empty":
            shutil.rmtree(path.parent, ignore_errors=True)
        print(
            f"  ledger insert into {'the ' + format(a.records, ',') + '-record' if label == 'big' else 'an empty'} "
            f"ledger: {out[label]['rate']:,.0f} records/s, {out[label]['cpu_us_per_record']:.0f} µs CPU/record",
            flush=True,
        )
    return out


# ============================================================================================ main
def _fmt(x: float, spec: str = ".1f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _ratio(x: float, y: float) -> str:
    return "n/a" if not y or math.isnan(x) or math.isnan(y) else f"×{x / y:.2f}"


def print_report(a: argparse.Namespace, res: dict) -> None:
    """The figures as plain-text tables."""
    print("\n" + "=" * 100)
    print(
        f"relay rules benchmark — {a.records:,}-record ledger, {a.rules:,} rules (baseline {a.baseline_rules}), "
        f"{cpu_count()} CPUs, feed {a.feed:,} records in batches of {a.batch}"
    )
    gen = res.get("ledger_generation")
    if gen:
        print(
            f"\nledger generation (bulk load, batches of {GEN_BATCH:,}): {gen['rate']:,.0f} records/s in write(), "
            f"{gen['cpu_us_per_record']:.0f} µs CPU/record, {gen['wall_s']:.1f} s; by 10 % steps: "
            + ", ".join(f"{r:,.0f}" for _, r in gen["marks"])
        )
    led = res.get("ledger")
    if led:
        b, e = led["big"], led["empty"]
        print(f"\nledger insert (batches of {a.batch})      {'records/s':>12} {'µs CPU/rec':>11} {'wall s':>8}")
        for name, m in ((f"into the {a.records:,}-record ledger", b), ("baseline: into an empty ledger", e)):
            print(f"  {name:<38}{m['rate']:>12,.0f} {m['cpu_us_per_record']:>11.1f} {m['wall_s']:>8.2f}")
        print(
            f"  ratio big / empty: rate {_ratio(b['rate'], e['rate'])}, CPU per record "
            f"{_ratio(b['cpu_us_per_record'], e['cpu_us_per_record'])}"
        )
    eng = res.get("engine")
    if eng:
        print("\nrules engine (in-process, child per rule set)  " + "".join(f"{k:>14}" for k in eng))
        rows = [
            ("backfill wall s", "backfill_s", ".1f"),
            ("backfill CPU s", "backfill_cpu_s", ".1f"),
            ("RSS after backfill MiB", "rss_after_backfill_mib", ".0f"),
            ("  growth in backfill MiB", "rss_growth", ".0f"),
            ("observe CPU µs/record", "cpu_us_per_record", ".2f"),
            ("  → records/s on one core", "rate", ",.0f"),
            ("  of which GC µs/record", "gc_us_per_record", ".2f"),
            ("  of which spike baselines µs/record", "spike_baseline_us_per_record", ".2f"),
            ("  longest gen-2 GC pause ms", "gc_gen2_longest_ms", ".1f"),
            ("observe wall/batch p50 ms", "batch_ms_p50", ".2f"),
            ("observe wall/batch p99 ms", "batch_ms_p99", ".2f"),
            ("observe wall/batch max ms", "batch_ms_max", ".2f"),
            ("periodic evals during feed", "periodic_evals", "d"),
            ("  their CPU s", "periodic_cpu_s", ".2f"),
            ("idle eval round ms", "idle_round_ms", ".2f"),
            ("  idle CPU % (10 s interval)", "idle_cpu_pct", ".3f"),
            ("alerts at start / in feed", "alerts", "s"),
        ]
        for m in eng.values():
            m["rss_growth"] = m["rss_after_backfill_mib"] - m["rss_before_mib"]
            m["rate"] = 1e6 / m["cpu_us_per_record"] if m["cpu_us_per_record"] else float("nan")
            m["alerts"] = f"{m['alerts_at_start']} / {m['alerts_during_feed']}"
        for title, key, spec in rows:
            print(f"  {title:<45}" + "".join(f"{_fmt(m[key], spec):>14}" for m in eng.values()))
        print(f"  {'records fed':<45}" + "".join(f"{m['feed']:>14,}" for m in eng.values()))
        print(f"  {'records per observe call':<45}" + "".join(f"{m['batch']:>14,}" for m in eng.values()))
        keys = list(eng)
        big = eng[keys[0]]
        for other in keys[1:]:
            o = eng[other]
            print(
                f"  ratio {keys[0]} / {other}: CPU per record {_ratio(big['cpu_us_per_record'], o['cpu_us_per_record'])}"
                f", backfill {_ratio(big['backfill_s'], o['backfill_s'])}, RSS growth "
                f"{_ratio(big['rss_growth'], o['rss_growth'])}"
            )
    lat = res.get("latency")
    if lat:
        print("\ncrossing record → Slack chat.postMessage (relay subprocess)" + "".join(f"{k:>18}" for k in lat))
        rows2 = [
            ("start-up: OTLP accepted (/healthz) after s", lambda m: m["healthz_s"], ".1f"),
            ("  rules ready (restored+backfilled) after s", lambda m: m["ready_s"], ".1f"),
            ("  backfill, relay's own log s", lambda m: m["backfill_logged_s"], ".1f"),
            ("  CPU until ready s", lambda m: m["ready_cpu_s"], ".1f"),
            ("  RSS when ready MiB", lambda m: m["rss_ready_mib"], ".0f"),
            ("  OTLP acks sent while backfilling", lambda m: m["probe_acks"], "d"),
            ("    their ack p50 ms", lambda m: m["probe_ack_ms"]["p50"], ".1f"),
            ("    their ack p99 ms", lambda m: m["probe_ack_ms"]["p99"], ".1f"),
            ("    their ack max ms", lambda m: m["probe_ack_ms"]["max"], ".1f"),
        ]
        for p in ("p50", "p90", "p99", "max"):
            rows2.append(
                (f"ack → Slack {p} ms", lambda m, p=p: m.get("latency_ms", {}).get("from_ack", {}).get(p), ".1f")
            )
        for p in ("p50", "p99", "max"):
            rows2.append(
                (f"send → Slack {p} ms", lambda m, p=p: m.get("latency_ms", {}).get("from_send", {}).get(p), ".1f")
            )
        rows2 += [
            ("OTLP ack p50 ms", lambda m: m.get("latency_ms", {}).get("ack", {}).get("p50"), ".1f"),
            (
                "crossings received / sent",
                lambda m: f"{m['received']}/{m['crossings']}" if "received" in m else "-",
                "s",
            ),
            ("other Slack posts", lambda m: m.get("other_posts", "-"), ""),
            ("relay CPU % during crossings", lambda m: m.get("cpu_pct"), ".1f"),
            ("relay RSS peak MiB (crossings)", lambda m: m.get("rss_peak_mib"), ".0f"),
        ]
        for title, fn, spec in rows2:
            print(
                f"  {title:<42}"
                + "".join(f"{(_fmt(fn(m), spec) if fn(m) is not None else '-'):>18}" for m in lat.values())
            )
        keys = list(lat)
        if len(keys) > 1 and "latency_ms" in lat[keys[0]] and "latency_ms" in lat[keys[1]]:
            x, y = lat[keys[0]]["latency_ms"]["from_ack"], lat[keys[1]]["latency_ms"]["from_ack"]
            print(
                f"  ratio {keys[0]} / {keys[1]}: p50 {_ratio(x['p50'], y['p50'])}, p99 {_ratio(x['p99'], y['p99'])}, "
                f"rules ready {_ratio(lat[keys[0]]['ready_s'], lat[keys[1]]['ready_s'])}"
            )
        for k, m in lat.items():
            if m.get("other_post_samples"):
                print(f"  other posts ({k}): {m['other_post_samples']}")
    bd = res.get("breakdown")
    if bd and "breakdown" in bd:
        cols = [("fresh session", bd)] + (
            [("same session, +50 ms", bd["same_session"])] if "same_session" in bd else []
        )
        print(
            f"\nwhere the time goes: relay with {a.rules} rules, instrumented (send → Slack, ms)"
            + "".join(f"{name:>27}" for name, _ in cols)
        )
        print(f"  {'':<44}" + "".join(f"{'p50':>9}{'p90':>9}{'max':>9}" for _ in cols))
        for stage, _, _ in STAGES:
            print(
                f"  {stage:<44}"
                + "".join(
                    "".join(f"{_fmt(m['breakdown']['stages_ms'][stage][q], '.2f'):>9}" for q in ("p50", "p90", "max"))
                    for _, m in cols
                )
            )
        print(
            f"  {'total send → Slack':<44}"
            + "".join(
                "".join(f"{_fmt(m['latency_ms']['from_send'][q], '.2f'):>9}" for q in ("p50", "p90", "max"))
                for _, m in cols
            )
        )
        print(
            f"  {'total ack → Slack':<44}"
            + "".join(
                "".join(f"{_fmt(m['latency_ms']['from_ack'][q], '.2f'):>9}" for q in ("p50", "p90", "max"))
                for _, m in cols
            )
        )
        print(
            "  crossings with every stage found: "
            + ", ".join(f"{name} {m['breakdown']['complete']}/{m['breakdown']['crossings']}" for name, m in cols)
        )
        for name, m in cols:
            g = m["breakdown"]["gc2"]
            w = m["breakdown"]["early_wait_ms"]
            print(
                f"  {name}: relay's gen-2 GC passes during the phase {g['during_phase']} (longest "
                f"{_fmt(g['phase_ms_max'])} ms); crossings with one under way {g['crossings_hit']} "
                f"({', '.join(f'{x:.0f}' for x in g['hit_ms'])} ms); decode → ledger write p50 "
                + "; ".join(f"{k}: {_fmt(v['p50'])} ms (n={v['n']})" for k, v in w.items())
            )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints tables (and writes JSON with ``--json``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=1_000_000, help="records in the ledger (default 1M)")
    p.add_argument("--days", type=int, default=30, help="days the ledger spans, ending now (default 30)")
    p.add_argument("--teams", type=int, default=200, help="teams (default 200)")
    p.add_argument("--users", type=int, default=25, help="users per team (default 25)")
    p.add_argument("--rules", type=int, default=1000, help="rules (5 per team; default 1000)")
    p.add_argument("--baseline-rules", type=int, default=10, help="rules of the baseline (default 10)")
    p.add_argument("--feed", type=int, default=100_000, help="new records for the insert and engine phases")
    p.add_argument("--feed-span", type=float, default=3600.0, help="simulated seconds the feed spans (default 1 h)")
    p.add_argument("--batch", type=int, default=100, help="records per ledger write / observe call (default 100)")
    p.add_argument("--idle-rounds", type=int, default=30, help="periodic evaluation rounds without records")
    p.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="skip the diagnostic engine run with gc.freeze() after the backfill",
    )
    p.add_argument("--crossings", type=int, default=100, help="measured crossing records per rule set")
    p.add_argument("--baseline-crossings", type=int, default=None, help="crossings for the baseline (default same)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured crossings first")
    p.add_argument(
        "--breakdown-crossings",
        type=int,
        default=50,
        help="crossings through an instrumented relay for the per-stage breakdown (0: skip)",
    )
    p.add_argument(
        "--same-session-crossings",
        type=int,
        default=20,
        help="crossings 50 ms after an event of the same session (instrumented relay)",
    )
    p.add_argument("--gap", type=float, default=0.25, help="mean pause between crossings, s (uniform ±50 %%)")
    p.add_argument("--crossing-timeout", type=float, default=10.0, help="give up on one crossing after this, s")
    p.add_argument("--start-timeout", type=float, default=900.0, help="relay start-up limit, s")
    p.add_argument(
        "--probe-interval",
        type=float,
        default=0.05,
        help="while relay backfills, post a small event this often (s) and time its ack",
    )
    p.add_argument("--phases", default="ledger,engine,latency", help="comma-separated: ledger, engine, latency")
    p.add_argument("--max-age", type=float, default=24.0, help="regenerate a cached ledger older than this, h")
    p.add_argument("--fresh", action="store_true", help="regenerate the cached ledger")
    p.add_argument("--json", help="also write the figures as JSON to this file")
    a = p.parse_args(argv)
    phases = {x.strip() for x in a.phases.split(",") if x.strip()}
    began = time.perf_counter()
    try:
        import subprocess

        head = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parents[1]), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = "?"
    print(
        f"relay rules benchmark at {head}: {psutil.cpu_count()} CPUs; {a.records:,} records, {a.teams}×{a.users} users, "
        f"{a.rules} rules (baseline {a.baseline_rules}); phases {sorted(phases)}",
        flush=True,
    )
    pop = Population(a.teams, a.users)
    cache, meta = ensure_ledger(a, pop)
    res: dict = {"args": vars(a), "git": head, "ledger_generation": meta.get("generate")}
    work = Path(tempfile.mkdtemp(prefix="relay-bench-rules-work-"))
    try:
        sets = [a.rules, a.baseline_rules]
        dirs = {n: write_rules(work, n, pop, meta["team_spend_usd"]) for n in sets + [0]}
        t0 = time.time()
        run_db = work / "run" / "relay.db"
        if phases & {"engine", "ledger"}:
            print(
                f"copying the ledger for the engine and insert phases: {copy_ledger(cache, run_db.parent):.1f} s",
                flush=True,
            )
        if "engine" in phases:
            res["engine"] = {}
            own = max(1, math.ceil(a.baseline_rules / RULES_PER_TEAM))
            runs = [
                (f"{a.rules} rules", a.rules, None, a.feed),
                (f"{a.baseline_rules} rules", a.baseline_rules, None, a.feed),
                (f"{a.baseline_rules}r {own} teams", a.baseline_rules, own, max(1, a.feed * own // a.teams)),
                ("0 rules", 0, None, a.feed),
            ]
            if a.gc_freeze:
                runs.insert(1, (f"{a.rules} gc.freeze", a.rules, None, a.feed))
            for label, n, feed_teams, feed in runs:
                # the own-teams feed: same rate per team and same records per team per observe call
                batch = a.batch if feed_teams is None else max(1, round(a.batch * feed_teams / a.teams))
                job = {
                    "teams": a.teams,
                    "users": a.users,
                    "files": rule_files(dirs[n]),
                    "db": str(run_db),
                    "t0": t0,
                    "feed": feed,
                    "feed_teams": feed_teams,
                    "feed_span": a.feed_span,
                    "batch": batch,
                    "idle_rounds": a.idle_rounds,
                    "gc_freeze": "gc.freeze" in label,
                }
                m = run_engine(job)
                res["engine"][label] = m
                print(
                    f"  engine, {label}: backfill {m['backfill_s']:.1f} s, RSS {m['rss_before_mib']:.0f} → "
                    f"{m['rss_after_backfill_mib']:.0f} MiB; observe {m['feed']:,} records, "
                    f"{m['cpu_us_per_record']:.2f} µs CPU/record; alerts {m['alerts_at_start']}/"
                    f"{m['alerts_during_feed']} {m['alert_names']}",
                    flush=True,
                )
        if "ledger" in phases:
            res["ledger"] = ledger_phase(run_db, a, pop, t0)
        shutil.rmtree(run_db.parent, ignore_errors=True)
        if "latency" in phases:
            res["latency"] = {}
            slack = TimedSlack.run_in_thread(bot_tokens=(TOKEN,), channels={CHANNEL: "alerts"})
            try:
                for n, k in (
                    (a.rules, a.crossings),
                    (a.baseline_rules, a.crossings if a.baseline_crossings is None else a.baseline_crossings),
                    (0, 0),
                ):
                    res["latency"][f"{n} rules"] = latency_phase(
                        f"{n} rules", cache, dirs[n] if n else None, slack, a, k
                    )
                if a.breakdown_crossings > 0:
                    res["breakdown"] = latency_phase(
                        f"{a.rules} rules, instrumented",
                        cache,
                        dirs[a.rules],
                        slack,
                        a,
                        a.breakdown_crossings,
                        hooked=True,
                        same_session=a.same_session_crossings,
                    )
            finally:
                slack.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["total_s"] = time.perf_counter() - began
    print_report(a, res)
    print(f"\ntotal {res['total_s']:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == HOOK_FLAG:
        sys.exit(hooked_relay_main(sys.argv[2], sys.argv[3]))
    sys.exit(main())
