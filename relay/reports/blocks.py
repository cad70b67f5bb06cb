"""``relay report blocks``: Claude Code usage in 5-hour billing blocks, like ccusage's ``blocks`` command.

Semantics follow ccusage (https://github.com/ryoppippi/ccusage — ``ccusage blocks``, documented at
https://ccusage.com/guide/blocks-reports; the algorithm is ``identifySessionBlocks`` in its
``apps/ccusage/src/_session-blocks.ts``, since ported to ``rust/crates/ccusage/src/blocks.rs``; the command's
filters and JSON in ``apps/ccusage/src/commands/blocks.ts``):

- A **block** starts at its first record's time **floored to the hour in UTC** and lasts the session length
  (``--session-length``, default 5 hours): ``endTime = startTime + 5 h``.
- Records are taken in time order. A record joins the current block unless it comes **more than** the session
  length after the block's start or after the previous record; then the block closes and a new one starts at that
  record's time floored to the hour. So a record exactly at ``startTime + 5 h`` still belongs to the block (ccusage's
  ``>``, tested there as "no gap created when gap is exactly equal to session duration").
- When the pause after the previous record is longer than the session length, a **gap** block is put between the
  two: from ``last record + session length`` to the next record, with no usage.
- A block is **active** when ``now - last record < session length`` and ``now < endTime``. For the active block
  the **burn rate** is its tokens (all four types) per minute and its cost per hour over first → last record
  (none when they coincide), and the **projection** extends that rate to ``endTime``: ``totalTokens`` rounded to a
  token, ``remainingMinutes`` rounded. (ccusage rounds the projected cost to cents; relay keeps nano-USD.)
- ``--active`` keeps only active blocks; ``--recent`` blocks started in the last 3 days, plus active ones;
  ``--token-limit N|max`` adds each block's share of the limit and, on the active block, ``tokenLimitStatus``
  (``ok``, ``warning`` above 80 % of the limit, ``exceeds``) of the projection; ``max`` is the largest completed
  (neither active nor gap) block.

**Per user.** Claude's 5-hour limits are per account, and ccusage reads one machine's logs, i.e. one person's.
relay's ledger holds a whole tenant, so blocks are computed **per user** (``user_id``; records without a user form
one chain shown as ``(none)``), and ``max`` is each user's own largest completed block; narrow to one person with
``--scope 'user="alice"'`` for exactly ccusage's view. Only LLM records with usage count (``usage_records`` with
``kind = 'llm'`` and tokens or cost; failed calls without usage neither start nor extend a block), as ccusage only
sees responses with usage.

Range: blocks whose start lies on a local day in ``since``..``until`` (ccusage filters blocks by their start date in
the ``--timezone``), plus active blocks. Records are read up to ``now`` and from before the range as far as needed
to place the blocks as if the whole history had been read: back to each user's last pause longer than the session
length (after which a new block always starts), but at most :data:`LOOKBACK_DAYS` days before the range (a user
active without such a pause for longer than that — an agent running day and night — may see the range's first block
start at another hour than with the whole history; every record still counts once). ``--token-limit max`` is taken
over the blocks in the range (ccusage: over all history). Tokens are counts, cost nano-USD integers (shown as USD;
JSON ``costUSD`` exact to 1e-9). Times are UTC in the JSON (as ccusage's), local to ``--timezone`` in Markdown and
CSV.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from operator import itemgetter
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from relay.matchers import Matcher
from relay.reports.fmt import count, usage_json, usd
from relay.reports.periods import unix_ns
from relay.reports.sql import METRIC_SOURCE, scope_sql

__all__ = [
    "DEFAULT_SESSION_HOURS",
    "RECENT_DAYS",
    "WARNING_THRESHOLD",
    "LOOKBACK_DAYS",
    "Entry",
    "Block",
    "BlocksReport",
    "identify_blocks",
    "parse_token_limit",
    "compute_blocks",
    "render_blocks_md",
    "render_blocks_json",
    "render_blocks_csv",
]

#: ccusage ``DEFAULT_SESSION_DURATION_HOURS``.
DEFAULT_SESSION_HOURS = 5.0
#: ccusage ``DEFAULT_RECENT_DAYS`` (``--recent``).
RECENT_DAYS = 3
#: How far before the range records are read to place its first blocks (see the module docstring).
LOOKBACK_DAYS = 7
#: ccusage ``BLOCKS_WARNING_THRESHOLD``: a projection above this share of the token limit is a ``warning``.
WARNING_THRESHOLD = 0.8
_HOUR_NS = 3_600_000_000_000
_MIN_NS = 60_000_000_000


class Entry(NamedTuple):
    """One ledger LLM record as a block sees it: ``time_ns`` unix ns, tokens (counts), ``cost_nanos`` nano-USD,
    ``call`` False for records derived from Claude Code's cost/token metrics (usage, but not an API call)."""

    time_ns: int
    model: str | None
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int
    cost_nanos: int
    call: bool = True


@dataclass
class Block:
    """A billing block of one user (``user`` None: records without a user). ``start_ns``/``end_ns`` unix ns
    (``end_ns`` = start + session length; for a gap: the next record). ``first_ns``/``last_ns`` the first and last
    record (None on gaps; ``last_ns`` is ccusage's ``actualEndTime``). Tokens are counts, ``cost_nanos`` nano-USD,
    ``entries`` the records, ``api_calls`` those that are calls, ``models`` in order of first use."""

    user: str | None
    start_ns: int
    end_ns: int
    is_gap: bool = False
    is_active: bool = False
    first_ns: int | None = None
    last_ns: int | None = None
    entries: int = 0
    api_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    cost_nanos: int = 0
    models: list[str] = field(default_factory=list)
    #: Token limit of this block's user (``--token-limit``), None without one.
    limit: int | None = None

    @property
    def total_tokens(self) -> int:
        """Input + output + cache creation + cache read tokens."""
        return self.input_tokens + self.output_tokens + self.cache_creation_tokens + self.cache_read_tokens

    def _span_ns(self) -> int:
        return (self.last_ns or 0) - (self.first_ns or 0)

    def tokens_per_minute(self) -> float | None:
        """Burn rate: all tokens per minute from the first to the last record; None on a gap or when they
        coincide (ccusage ``calculateBurnRate``)."""
        span = self._span_ns()
        return None if self.is_gap or span <= 0 else self.total_tokens * _MIN_NS / span

    def tokens_per_minute_for_indicator(self) -> float | None:
        """Input + output tokens per minute (ccusage's ``tokensPerMinuteForIndicator``, without cache tokens)."""
        span = self._span_ns()
        return None if self.is_gap or span <= 0 else (self.input_tokens + self.output_tokens) * _MIN_NS / span

    def cost_per_hour_nanos(self) -> int | None:
        """Burn rate: nano-USD per hour from the first to the last record (rounded to a nano-USD); None as
        :meth:`tokens_per_minute`."""
        span = self._span_ns()
        return None if self.is_gap or span <= 0 else _div_round(self.cost_nanos * _HOUR_NS, span)

    def projection(self, now_ns: int) -> tuple[int, int, int] | None:
        """``(total tokens, cost nano-USD, remaining minutes)`` at the block's end if the burn rate holds from
        ``now_ns``; None unless the block is active with a burn rate (ccusage ``projectBlockUsage``)."""
        span = self._span_ns()
        if not self.is_active or self.is_gap or span <= 0:
            return None
        remaining = max(0, self.end_ns - now_ns)
        tokens = self.total_tokens + _div_round(self.total_tokens * remaining, span)
        cost = self.cost_nanos + _div_round(self.cost_nanos * remaining, span)
        return tokens, cost, _div_round(remaining, _MIN_NS)


def _div_round(a: int, b: int) -> int:
    """``a / b`` rounded half up, in integers (exact for any size)."""
    return (2 * a + b) // (2 * b)


def identify_blocks(
    entries: Iterable[Entry] | Iterable[Sequence[Any]], session_ns: int, now_ns: int, user: str | None = None
) -> list[Block]:
    """Blocks (with gap blocks between them) of one user's ``entries`` (:class:`Entry` or tuples in its field
    order; any order, sorted here by time), as
    ccusage's ``identifySessionBlocks``: start floored to the UTC hour, ``session_ns`` long, a new block when a
    record comes more than ``session_ns`` after the block's start or the previous record; active at ``now_ns``
    when the last record is less than ``session_ns`` ago and ``now_ns`` is before the block's end."""
    out: list[Block] = []
    cur: Block | None = None
    last = 0
    # running sums of the current block: entries, calls, input, output, cache creation, cache read, cost
    n = calls = i = o = cc = cr = c = 0

    def close(b: Block) -> None:
        b.last_ns = last
        b.entries, b.api_calls, b.input_tokens, b.output_tokens = n, calls, i, o
        b.cache_creation_tokens, b.cache_read_tokens, b.cost_nanos = cc, cr, c
        b.is_active = now_ns - last < session_ns and now_ns < b.end_ns
        out.append(b)

    for e in sorted(entries, key=itemgetter(0)):
        t = e[0]
        if cur is not None and (t - cur.start_ns > session_ns or t - last > session_ns):
            close(cur)
            if t - last > session_ns:
                out.append(Block(user, last + session_ns, t, is_gap=True))
            cur = None
        if cur is None:
            start = t - t % _HOUR_NS  # floored to the hour (UTC: unix time has no offset)
            cur = Block(user, start, start + session_ns, first_ns=t)
            n = calls = i = o = cc = cr = c = 0
        last = t
        n += 1
        calls += 1 if e[7] else 0
        i += e[2]
        o += e[3]
        cc += e[4]
        cr += e[5]
        c += e[6]
        if e[1] and e[1] not in cur.models:
            cur.models.append(e[1])
    if cur is not None:
        close(cur)
    return out


def parse_token_limit(text: str | None) -> int | str | None:
    """``--token-limit``: a positive number of tokens, ``max`` (the largest completed block), or None. Raises
    ``ValueError`` otherwise."""
    if text is None:
        return None
    t = text.strip().lower()
    if t == "max":
        return "max"
    try:
        n = int(t.replace("_", "").replace(",", ""))
    except ValueError:
        raise ValueError(f"invalid --token-limit {text!r}: use a number of tokens or max") from None
    if n <= 0:
        raise ValueError(f"invalid --token-limit {text!r}: must be positive")
    return n


@dataclass
class BlocksReport:
    """The blocks shown (chronological, gaps included), with what selected them. ``now_ns`` the clock of the
    active/projection figures; ``session_hours`` the block length; ``token_limit`` as given (int, ``max``, None)."""

    tenant: str
    timezone: str
    since: str
    until: str
    now_ns: int
    session_hours: float
    blocks: list[Block]
    token_limit: int | str | None = None
    active_only: bool = False
    recent: bool = False
    scope: list[str] = field(default_factory=list)

    def totals(self) -> Block:
        """Sum of the shown blocks (gaps are empty)."""
        t = Block(None, 0, 0)
        for b in self.blocks:
            t.entries += b.entries
            t.api_calls += b.api_calls
            t.input_tokens += b.input_tokens
            t.output_tokens += b.output_tokens
            t.cache_creation_tokens += b.cache_creation_tokens
            t.cache_read_tokens += b.cache_read_tokens
            t.cost_nanos += b.cost_nanos
        return t


#: A record counts for blocks when it carries usage (tokens or cost).
_USAGE = "(input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens > 0 OR cost_nanos > 0)"


def compute_blocks(
    conn: sqlite3.Connection,
    tenant: str,
    tz: ZoneInfo,
    since: date,
    until: date,
    now: datetime,
    *,
    session_hours: float = DEFAULT_SESSION_HOURS,
    scope: Sequence[Matcher] = (),
    active_only: bool = False,
    recent: bool = False,
    token_limit: int | str | None = None,
) -> BlocksReport:
    """The blocks of ``tenant``'s users that start on local days ``since``..``until`` (inclusive, in ``tz``), plus
    the active ones, at ``now`` (aware); ``recent`` keeps those started in the last :data:`RECENT_DAYS` days (or
    active), ``active_only`` the active ones. ``conn``: a ledger connection (``relay_re`` registered for regex
    scopes). Raises ``ValueError`` for a range ending before it starts or a session length not above 0,
    ``sqlite3.Error`` for an unreadable ledger."""
    if until < since:
        raise ValueError(f"--until {until} is before --since {since}")
    if not (math.isfinite(session_hours) and round(session_hours * _HOUR_NS) > 0):
        raise ValueError("--session-length must be a positive number of hours")
    session_ns = round(session_hours * _HOUR_NS)
    now_ns = unix_ns(now)
    lo = unix_ns(datetime.combine(since, datetime.min.time(), tzinfo=tz))
    extra, sparams = scope_sql(tuple(scope))
    where = f"kind = 'llm' AND tenant = ? AND {_USAGE}{extra}"
    # Each user's chain is exact from their last pause longer than a block before the range (a record after such a
    # pause always starts a new block): read from the earliest of those, looking back at most LOOKBACK_DAYS.
    back = lo - LOOKBACK_DAYS * 24 * _HOUR_NS
    (first,) = conn.execute(
        f"SELECT MIN(t) FROM (SELECT MAX(time_ns) AS t FROM (SELECT user_id, time_ns, time_ns - LAG(time_ns) OVER "
        f"(PARTITION BY user_id ORDER BY time_ns) AS pause FROM usage_records WHERE {where} AND time_ns >= ? "
        "AND time_ns < ?) WHERE pause IS NULL OR pause > ? GROUP BY user_id)",
        [tenant, *sparams, back, lo, session_ns],
    ).fetchone()
    start = lo if first is None else min(first, lo)
    by_user: dict[str | None, list[Any]] = {}
    for row in conn.execute(
        "SELECT time_ns, model, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, cost_nanos, "
        f"source != ?, user_id FROM usage_records WHERE {where} AND time_ns >= ? AND time_ns <= ? ORDER BY time_ns",
        [METRIC_SOURCE, tenant, *sparams, start, now_ns],
    ):
        by_user.setdefault(row[8], []).append(row)  # rows in Entry's field order (then the user)
    recent_cut = now_ns - RECENT_DAYS * 24 * _HOUR_NS
    shown: list[Block] = []
    for user in sorted(by_user, key=lambda u: (u is None, u or "")):
        blocks = identify_blocks(by_user[user], session_ns, now_ns, user)
        kept = [
            b for b in blocks if b.is_active or since <= datetime.fromtimestamp(b.start_ns / 1e9, tz).date() <= until
        ]
        limit = token_limit
        if limit == "max":
            limit = max((b.total_tokens for b in kept if not b.is_gap and not b.is_active), default=0) or None
        for b in kept:
            b.limit = limit if isinstance(limit, int) else None
        if recent:
            kept = [b for b in kept if b.start_ns >= recent_cut or b.is_active]
        if active_only:
            kept = [b for b in kept if b.is_active]
        shown += kept
    shown.sort(key=lambda b: (b.start_ns, b.user is None, b.user or "", not b.is_gap))
    return BlocksReport(
        tenant,
        str(tz.key),
        since.isoformat(),
        until.isoformat(),
        now_ns,
        session_hours,
        shown,
        token_limit,
        active_only,
        recent,
        [str(m) for m in scope],
    )


# ------------------------------------------------------------------------------------------------ renderers
def _hm(ns: int) -> str:
    m = max(0, ns) // _MIN_NS
    return f"{m // 60}h {m % 60}m" if m >= 60 else f"{m}m"


def _local(t_ns: int, tz: ZoneInfo, spec: str = "minutes") -> str:
    return datetime.fromtimestamp(t_ns / 1e9, tz).replace(tzinfo=None).isoformat(sep=" ", timespec=spec)


def _status(b: Block, now_ns: int) -> str:
    if b.is_gap:
        return f"gap ({_hm(b.end_ns - b.start_ns)})"
    if b.is_active:
        return f"ACTIVE ({_hm(now_ns - b.start_ns)} elapsed, {_hm(b.end_ns - now_ns)} left)"
    return _hm((b.last_ns or b.start_ns) - b.start_ns)


def _user(b: Block) -> str:
    return b.user if b.user is not None else "(none)"


def render_blocks_md(r: BlocksReport) -> str:
    """A Markdown table like ccusage's: block start (local), user, status (``ACTIVE (… elapsed, … left)``, the
    duration to the last record, or ``gap (6h 40m)``), models, tokens by type, ``% of limit`` with ``--token-limit``,
    cost; under an active block its burn rate and projection to the block's end; a total row."""
    tz = ZoneInfo(r.timezone)
    scope = f" ({', '.join(r.scope)})" if r.scope else ""
    sel = "active blocks" if r.active_only else f"last {RECENT_DAYS} days" if r.recent else f"{r.since} → {r.until}"
    out = [
        f"# Claude Code usage by {r.session_hours:g}-hour block — {r.tenant}{scope}",
        "",
        f"{sel} ({r.timezone}); blocks per user, start floored to the UTC hour",
        "",
    ]
    if not r.blocks:
        out.append("No active block." if r.active_only else f"No usage recorded for {r.tenant} in this range.")
        return "\n".join(out) + "\n"
    limit = r.token_limit is not None and any(b.limit for b in r.blocks)
    head = ["Block start", "User", "Status", "Models", "Input", "Output", "Cache create", "Cache read"]
    head += ["Total tokens", *(["% of limit"] if limit else []), "Cost (USD)"]
    left = {"Block start", "User", "Status", "Models"}
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if h in left else "---:" for h in head) + "|"]

    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    for b in r.blocks:
        cells = [_local(b.start_ns, tz), cell(_user(b)), _status(b, r.now_ns)]
        if b.is_gap:
            cells += ["", "", "", "", "", "", *([""] if limit else []), ""]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        cells += [cell(", ".join(b.models)), count(b.input_tokens), count(b.output_tokens)]
        cells += [count(b.cache_creation_tokens), count(b.cache_read_tokens), count(b.total_tokens)]
        if limit:
            cells.append(f"{b.total_tokens / b.limit * 100:.1f}%" if b.limit else "")
        cells.append(usd(b.cost_nanos))
        lines.append("| " + " | ".join(cells) + " |")
        proj = b.projection(r.now_ns)
        if proj is not None:
            tpm, cph = b.tokens_per_minute(), b.cost_per_hour_nanos()
            note = f"  └ projected at {tpm:,.0f} tokens/min, {usd(cph or 0)}/h" if tpm is not None else ""
            pc = ["", "", cell(note), "", "", "", "", "", count(proj[0])]
            if limit:
                pc.append(f"{proj[0] / b.limit * 100:.1f}%" if b.limit else "")
            pc.append(usd(proj[1]))
            lines.append("| " + " | ".join(pc) + " |")
    tot = r.totals()
    cells = ["**Total**", "", "", "", count(tot.input_tokens), count(tot.output_tokens)]
    cells += [count(tot.cache_creation_tokens), count(tot.cache_read_tokens), count(tot.total_tokens)]
    cells += [*([""] if limit else []), f"**{usd(tot.cost_nanos)}**"]
    lines.append("| " + " | ".join(cells) + " |")
    out += lines
    if any(b.is_active for b in r.blocks):
        out += ["", "Projected: the active block's tokens and cost at its end if its burn rate holds."]
    return "\n".join(out) + "\n"


def _iso_utc(t_ns: int | None) -> str | None:
    if t_ns is None:
        return None
    return (
        datetime.fromtimestamp(t_ns // 1_000_000_000, UTC)
        .replace(microsecond=(t_ns % 1_000_000_000) // 1000)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _block_json(b: Block, now_ns: int) -> dict[str, Any]:
    burn: dict[str, Any] | None = None
    proj: dict[str, Any] | None = None
    projection = b.projection(now_ns)
    if b.is_active and b.tokens_per_minute() is not None:
        burn = {
            "tokensPerMinute": b.tokens_per_minute(),
            "tokensPerMinuteForIndicator": b.tokens_per_minute_for_indicator(),
            "costPerHour": round((b.cost_per_hour_nanos() or 0) / 1e9, 9),
        }
    if projection is not None:
        proj = {
            "totalTokens": projection[0],
            "totalCost": round(projection[1] / 1e9, 9),
            "remainingMinutes": projection[2],
        }
    start = _iso_utc(b.start_ns) or ""
    e: dict[str, Any] = {
        "id": f"gap-{start}" if b.is_gap else start,
        "user": b.user,
        "startTime": start,
        "endTime": _iso_utc(b.end_ns),
        "actualEndTime": _iso_utc(b.last_ns),
        "isActive": b.is_active,
        "isGap": b.is_gap,
        "entries": b.entries,
        "apiCalls": b.api_calls,
        "tokenCounts": {
            "inputTokens": b.input_tokens,
            "outputTokens": b.output_tokens,
            "cacheCreationInputTokens": b.cache_creation_tokens,
            "cacheReadInputTokens": b.cache_read_tokens,
        },
        "totalTokens": b.total_tokens,
        "costUSD": round(b.cost_nanos / 1e9, 9),
        "models": b.models,
        "burnRate": burn,
        "projection": proj,
    }
    if projection is not None and b.limit:
        status = (
            "exceeds" if projection[0] > b.limit else "warning" if projection[0] > b.limit * WARNING_THRESHOLD else "ok"
        )
        e["tokenLimitStatus"] = {
            "limit": b.limit,
            "projectedUsage": projection[0],
            "percentUsed": projection[0] / b.limit * 100,
            "status": status,
        }
    return e


def render_blocks_json(r: BlocksReport) -> str:
    """ccusage's ``blocks --json`` shape: ``{"blocks": [{id, startTime, endTime, actualEndTime (UTC ISO-8601 with
    ms, ``Z``), isActive, isGap, entries, tokenCounts: {inputTokens, outputTokens, cacheCreationInputTokens,
    cacheReadInputTokens}, totalTokens, costUSD (USD), models, burnRate: {tokensPerMinute,
    tokensPerMinuteForIndicator, costPerHour (USD)} | null, projection: {totalTokens, totalCost (USD),
    remainingMinutes} | null, tokenLimitStatus?: {limit, projectedUsage, percentUsed, status}}]}``; relay adds
    ``user`` and ``apiCalls`` per block, and ``totals``, ``tenant``, ``timezone``, ``since``, ``until``,
    ``sessionLengthHours``, ``tokenLimit``, ``scope``; ``message: "No active block"`` when ``--active`` finds none."""
    tot = r.totals()
    out: dict[str, Any] = {"blocks": [_block_json(b, r.now_ns) for b in r.blocks]}
    if r.active_only and not r.blocks:
        out["message"] = "No active block"
    out |= {
        "totals": usage_json(tot),
        "tenant": r.tenant,
        "timezone": r.timezone,
        "since": r.since,
        "until": r.until,
        "sessionLengthHours": r.session_hours,
        "tokenLimit": r.token_limit,
        "scope": r.scope,
    }
    return json.dumps(out, indent=2, ensure_ascii=False) + "\n"


#: Columns of the blocks CSV.
BLOCKS_CSV_HEADER = [
    "view",
    "user",
    "start",
    "end",
    "last_activity",
    "active",
    "gap",
    "entries",
    "api_calls",
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
    "total_tokens",
    "cost_usd",
    "models",
    "tokens_per_minute",
    "cost_per_hour_usd",
    "projected_total_tokens",
    "projected_cost_usd",
    "remaining_minutes",
    "token_limit",
]


def render_blocks_csv(r: BlocksReport) -> str:
    """Tidy CSV (:data:`BLOCKS_CSV_HEADER`), one row per block (gaps included, ``gap`` 1): times ISO-8601 in the
    report's time zone, cost in USD with nine decimals, ``active``/``gap`` 0/1, models ``;``-separated; burn rate
    and projection only on the active block, else empty cells (never ``n/a``)."""
    tz = ZoneInfo(r.timezone)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(BLOCKS_CSV_HEADER)

    def iso(t: int | None) -> str:
        return "" if t is None else datetime.fromtimestamp(t / 1e9, tz).isoformat(timespec="seconds")

    for b in r.blocks:
        proj = b.projection(r.now_ns)
        tpm, cph = (b.tokens_per_minute(), b.cost_per_hour_nanos()) if proj else (None, None)
        w.writerow(
            [
                "blocks",
                _user(b),
                iso(b.start_ns),
                iso(b.end_ns),
                iso(b.last_ns),
                int(b.is_active),
                int(b.is_gap),
                b.entries,
                b.api_calls,
                b.input_tokens,
                b.output_tokens,
                b.cache_creation_tokens,
                b.cache_read_tokens,
                b.total_tokens,
                f"{b.cost_nanos / 1e9:.9f}",
                ";".join(b.models),
                "" if tpm is None else f"{tpm:.3f}",
                "" if cph is None else f"{cph / 1e9:.9f}",
                "" if proj is None else proj[0],
                "" if proj is None else f"{proj[1] / 1e9:.9f}",
                "" if proj is None else proj[2],
                b.limit or "",
            ]
        )
    return buf.getvalue()
