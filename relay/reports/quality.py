"""The report's "quality" section: Langfuse scores of the period from the ledger's score table
(``relay.usage.sqlite_scores``) — distributions per score with the change against the previous period, outcome
counts, and the sessions with the worst outcome (with Langfuse links).

Session scores (``sessionId`` subject) and trace scores are summarised separately: a score name used at both levels
(``cost_usd``, ``tool_accept_rate``) appears once per level. App scores (posted through relay) are included.
"""

from __future__ import annotations

import sqlite3
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from relay.matchers import Matcher
from relay.scores.figures import OUTCOMES
from relay.usage.sqlite_scores import ScoreRow, read_scores

__all__ = ["ScoreStat", "WorstSession", "Quality", "quality_section"]


@dataclass
class ScoreStat:
    """One numeric score over the period: ``level`` ``session`` or ``trace``; ``count``, ``mean``, ``p50``, ``min``,
    ``max`` of its values; ``prev_mean``/``prev_count`` of the previous period (None without data)."""

    name: str
    level: str
    count: int
    mean: float
    p50: float
    min: float
    max: float
    prev_count: int = 0
    prev_mean: float | None = None

    @property
    def change(self) -> float | None:
        """``mean − prev_mean`` (absolute, in the score's unit), None without a previous period."""
        return None if self.prev_mean is None else self.mean - self.prev_mean


@dataclass
class WorstSession:
    """A session with a bad ``outcome`` (``failed`` first, then ``abandoned``), its cost score and Langfuse link."""

    session_id: str
    outcome: str
    user: str | None
    cost_usd: float | None
    url: str | None = None


@dataclass
class Quality:
    """The quality section: ``scores`` (numeric), ``outcomes`` label → count (and ``prev_outcomes``), ``worst``."""

    scores: list[ScoreStat] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    prev_outcomes: dict[str, int] = field(default_factory=dict)
    worst: list[WorstSession] = field(default_factory=list)


def _rows(
    conn: sqlite3.Connection, tenant: str, start_ns: int, end_ns: int, matchers: Sequence[Matcher]
) -> list[ScoreRow]:
    try:
        rows = read_scores(conn, start_ns, end_ns, tenant)
    except sqlite3.OperationalError:  # no score table yet (scores never ran)
        return []
    if not matchers:
        return rows
    out = []
    for r in rows:
        labels = {
            **r.labels,
            "tenant": r.tenant,
            "user": r.user_id or "",
            "session": r.session_id or "",
            "score": r.name,
        }
        if all(m.matches(labels) for m in matchers):
            out.append(r)
    return out


def _level(r: ScoreRow) -> str:
    return "trace" if r.trace_id else "session"


def quality_section(
    conn: sqlite3.Connection,
    tenant: str,
    start_ns: int,
    end_ns: int,
    prev_start_ns: int,
    matchers: Sequence[Matcher] = (),
    top_n: int = 5,
    session_url: Callable[[str, str], str | None] | None = None,
) -> Quality | None:
    """The quality section of ``[start_ns, end_ns)`` (previous period ``[prev_start_ns, start_ns)``), or None when
    the period has no score."""
    cur = _rows(conn, tenant, start_ns, end_ns, matchers)
    if not cur:
        return None
    prev = _rows(conn, tenant, prev_start_ns, start_ns, matchers)
    q = Quality()
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    prev_values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for rows, into, outcomes in ((cur, values, q.outcomes), (prev, prev_values, q.prev_outcomes)):
        for r in rows:
            if r.value is not None:
                into[(r.name, _level(r))].append(r.value)
            elif r.name == "outcome" and r.string_value:
                outcomes[r.string_value] = outcomes.get(r.string_value, 0) + 1
    for (name, level), vals in sorted(values.items()):
        pv = prev_values.get((name, level))
        q.scores.append(
            ScoreStat(
                name,
                level,
                len(vals),
                statistics.fmean(vals),
                float(statistics.median(vals)),
                min(vals),
                max(vals),
                len(pv or ()),
                statistics.fmean(pv) if pv else None,
            )
        )
    cost: dict[str, float | None] = {
        r.session_id: r.value for r in cur if r.name == "cost_usd" and not r.trace_id and r.session_id
    }
    bad = [r for r in cur if r.name == "outcome" and r.session_id and r.string_value in ("failed", "abandoned")]
    rank = {label: i for i, label in enumerate(OUTCOMES)}
    bad.sort(key=lambda r: (-rank.get(r.string_value or "", 0), -(cost.get(r.session_id or "") or 0.0)))
    q.worst = [
        WorstSession(
            r.session_id or "",
            r.string_value or "",
            r.user_id,
            cost.get(r.session_id or ""),
            session_url(tenant, r.session_id or "") if session_url else None,
        )
        for r in bad[:top_n]
    ]
    return q
