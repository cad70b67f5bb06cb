"""The figures scores are made of, computed from usage-ledger records (``relay.model.UsageRecord``), and the
categorical session ``outcome``.

Per interaction (one Claude Code prompt = one Langfuse trace) and per session (Claude Code ``session.id`` =
Langfuse ``sessionId``), from the ledger's records of that trace or session:

| figure | meaning |
|---|---|
| ``api_calls`` | API calls: successful (``api_request``) + failed (``api_error``) |
| ``api_errors`` | failed API calls (``api_error`` events / ERROR ``llm_request`` spans) |
| ``api_error_rate`` | ``api_errors ÷ api_calls`` (absent without calls) |
| ``tool_uses`` | tools that ran (``tool_result``) |
| ``tool_failures`` | tools that ran and failed (``success=false``) |
| ``tool_success_rate`` | ``(tool_uses − tool_failures) ÷ tool_uses`` (absent without tool runs) |
| ``tool_decisions`` / ``tool_accepts`` / ``tool_rejects`` | tool uses with a permission decision (``tool_decision``) |
| ``tool_accept_rate`` | ``tool_accepts ÷ tool_decisions`` (absent without decisions) |
| ``cost_usd`` | Σ ledger cost, USD (exact: the ledger's integer cost ÷ its unit) |
| ``duration_s`` | interaction: first span start → last span end of the trace (seconds); session: Σ interactions |
| ``ttft_ms_p50`` | median time to first token of the successful calls, ms (mean of the two middle values) |
| ``retries_exhausted`` | ``api_retries_exhausted`` events (Claude Code gave up on a call) |
| ``input_tokens``, ``output_tokens``, ``cache_read_tokens``, ``cache_creation_tokens`` | token sums |
| ``interactions`` | session only: interactions (traces) of the session |
| ``lines_added`` / ``lines_removed`` / ``lines_changed`` / ``commits`` / ``pull_requests`` | session only, from
  the ``claude_code.lines_of_code.count`` / ``commit.count`` / ``pull_request.count`` metrics when present |

Claude Code telemetry reference: https://code.claude.com/docs/en/monitoring-usage (events and metrics).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from decimal import Decimal

from relay.model import UsageRecord

__all__ = ["Figures", "figures_of", "outcome_of", "OUTCOMES", "record_cost_usd", "FIGURE_NAMES"]

#: Every figure name a custom score may use.
FIGURE_NAMES = frozenset(
    {
        "api_calls",
        "api_errors",
        "api_error_rate",
        "tool_uses",
        "tool_failures",
        "tool_success_rate",
        "tool_decisions",
        "tool_accepts",
        "tool_rejects",
        "tool_accept_rate",
        "cost_usd",
        "duration_s",
        "ttft_ms_p50",
        "retries_exhausted",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_creation_tokens",
        "interactions",
        "lines_added",
        "lines_removed",
        "lines_changed",
        "commits",
        "pull_requests",
        "llm_errors",
        "error_rate",
        "latency_s",
    }
)

#: The categorical ``outcome`` values, best first; the category value Langfuse stores is the index (0 = clean).
OUTCOMES = ("clean", "recovered", "abandoned", "failed")

Figures = dict[str, float]


def record_cost_usd(r: UsageRecord) -> Decimal:
    """A record's ledger cost as an exact ``Decimal`` USD amount (the ledger keeps integer nano-USD)."""
    return Decimal(r.cost_nanos) / Decimal(1_000_000_000)


def _is_rejected(r: UsageRecord) -> bool:
    return r.kind == "tool" and (r.error_class == "rejected" or (r.decision == "reject" and not r.success))


def figures_of(records: Iterable[UsageRecord]) -> Figures:
    """The figures of one trace or session from its ledger records (any agent); rates only when defined."""
    calls = errors = uses = failures = decisions = accepts = rejects = exhausted = 0
    tokens = {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_creation_tokens": 0}
    cost = Decimal(0)
    ttfts: list[float] = []
    for r in records:
        cost += record_cost_usd(r)
        if r.kind == "llm":
            calls += 1
            if not r.success:
                errors += 1
            elif r.ttft_ms is not None:
                ttfts.append(float(r.ttft_ms))
            for k in tokens:
                tokens[k] += int(getattr(r, k) or 0)
        elif r.kind == "tool":
            if r.decision in ("accept", "reject"):
                decisions += 1
                accepts += r.decision == "accept"
                rejects += r.decision == "reject"
            if _is_rejected(r):
                continue
            uses += 1
            failures += not r.success
        elif r.kind == "retries_exhausted":
            exhausted += 1
    f: Figures = {
        "api_calls": calls,
        "api_errors": errors,
        "tool_uses": uses,
        "tool_failures": failures,
        "tool_decisions": decisions,
        "tool_accepts": accepts,
        "tool_rejects": rejects,
        "retries_exhausted": exhausted,
        "cost_usd": float(cost),
        **tokens,
    }
    f["llm_errors"] = errors
    if calls:
        f["api_error_rate"] = f["error_rate"] = errors / calls
    if uses:
        f["tool_success_rate"] = (uses - failures) / uses
    if decisions:
        f["tool_accept_rate"] = accepts / decisions
    if ttfts:
        f["ttft_ms_p50"] = float(statistics.median(ttfts))
    return f


def _last_interaction(records: Sequence[UsageRecord], last_trace: str | None) -> list[UsageRecord]:
    if last_trace is None:
        return []
    return sorted((r for r in records if r.trace_id == last_trace), key=lambda r: (r.time_ns, r.key))


def outcome_of(records: Sequence[UsageRecord], last_trace: str | None) -> str:
    """The session's categorical outcome, decided in this order:

    1. ``failed`` — the last interaction (``last_trace``) gave up: it had an ``api_retries_exhausted``, or its
       last API call failed;
    2. ``abandoned`` — the last interaction got no successful API answer, or it ended on a rejected tool use
       (the user stopped the agent and did not go on);
    3. ``recovered`` — the session had API errors, failed tools or exhausted retries, but its last interaction
       ended on a successful API call;
    4. ``clean`` — no API error, no failed tool, no exhausted retries (rejected tool uses are decisions, not
       errors).
    """
    last = _last_interaction(records, last_trace)
    calls = [r for r in last if r.kind == "llm"]
    if any(r.kind == "retries_exhausted" for r in last) or (calls and not calls[-1].success):
        return "failed"
    if not any(r.success for r in calls) or (last and _is_rejected(last[-1])):
        return "abandoned"
    troubled = any(
        (r.kind == "llm" and not r.success)
        or r.kind == "retries_exhausted"
        or (r.kind == "tool" and not r.success and not _is_rejected(r))
        for r in records
    )
    return "recovered" if troubled else "clean"
