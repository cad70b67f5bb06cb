"""relay's built-in scores: names, data types, ranges (declared once per project as Langfuse score configs,
``POST /api/public/score-configs``, https://api.reference.langfuse.com) and
how each is built from the figures (``relay.scores.figures``).

Score ids are deterministic — ``uuid5(tenant, subject kind, subject id, score name)`` — so sending a score again
(a late record, a resumed session, a restart, a replay) updates it in Langfuse and never duplicates it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from relay.scores.figures import OUTCOMES, Figures

__all__ = [
    "ScoreDef",
    "BUILTINS",
    "BUILTIN_NAMES",
    "INTERACTION_SCORES",
    "SESSION_SCORES",
    "GENAI_SCORES",
    "score_id",
    "config_body",
]

_NS = uuid.UUID("6f1d3c1e-8a52-4c55-9a8e-2b7c1f0d5e11")


@dataclass(frozen=True)
class ScoreDef:
    """A score's declaration: ``data_type`` NUMERIC / BOOLEAN / CATEGORICAL, ``min_value``/``max_value`` for
    numeric ones, ``categories`` (label, value) for categorical ones."""

    name: str
    data_type: str
    description: str
    min_value: float | None = None
    max_value: float | None = None
    categories: tuple[tuple[str, float], ...] = field(default=())


_RATE: dict[str, Any] = {"data_type": "NUMERIC", "min_value": 0.0, "max_value": 1.0}
_COUNT: dict[str, Any] = {"data_type": "NUMERIC", "min_value": 0.0}

BUILTINS: dict[str, ScoreDef] = {
    d.name: d
    for d in (
        ScoreDef("api_errors", description="Failed API calls (Claude Code api_error).", **_COUNT),
        ScoreDef("tool_failures", description="Tools that ran and failed (tool_result success=false).", **_COUNT),
        ScoreDef(
            "tool_accept_rate", description="Accepted ÷ decided tool uses (tool_decision accept/reject).", **_RATE
        ),
        ScoreDef("cost_usd", description="Cost in USD, equal to relay's usage ledger.", **_COUNT),
        ScoreDef(
            "duration_s", description="Wall-clock seconds from the first span start to the last span end.", **_COUNT
        ),
        ScoreDef("ttft_ms_p50", description="Median time to first token of successful API calls, ms.", **_COUNT),
        ScoreDef("api_error_rate", description="Failed ÷ all API calls of the session.", **_RATE),
        ScoreDef("tool_success_rate", description="Tools that ran without failing ÷ tools that ran.", **_RATE),
        ScoreDef("interactions", description="Interactions (prompts, traces) of the session.", **_COUNT),
        ScoreDef("retries_exhausted", description="API calls Claude Code gave up on after retrying.", **_COUNT),
        ScoreDef("lines_changed", description="Lines added + removed (claude_code.lines_of_code.count).", **_COUNT),
        ScoreDef("commits", description="Git commits made (claude_code.commit.count).", **_COUNT),
        ScoreDef("pull_requests", description="Pull requests created (claude_code.pull_request.count).", **_COUNT),
        ScoreDef(
            "outcome",
            data_type="CATEGORICAL",
            description="clean: no error; recovered: errors, but the last interaction succeeded; abandoned: the "
            "last interaction got no answer or ended on a rejected tool; failed: the last "
            "interaction's last API call failed or retries were exhausted.",
            categories=tuple((label, float(i)) for i, label in enumerate(OUTCOMES)),
        ),
        ScoreDef("error_rate", description="Failed ÷ all LLM calls of the trace (GenAI agents).", **_RATE),
        ScoreDef("latency_s", description="Trace latency in seconds (GenAI agents).", **_COUNT),
    )
}
BUILTIN_NAMES = frozenset(BUILTINS)

#: Claude Code interaction (trace) scores, each from the figure of the same name.
INTERACTION_SCORES = ("api_errors", "tool_failures", "tool_accept_rate", "cost_usd", "duration_s", "ttft_ms_p50")
#: Claude Code session scores (``outcome`` is computed separately; metrics-based ones only when present).
SESSION_SCORES = (
    "cost_usd",
    "api_error_rate",
    "tool_success_rate",
    "tool_accept_rate",
    "interactions",
    "retries_exhausted",
    "lines_changed",
    "commits",
    "pull_requests",
)
#: Scores of other agents' GenAI traces: figure names (``latency_s`` is the trace's ``duration_s``).
GENAI_SCORES = ("error_rate", "cost_usd", "latency_s")


def score_id(tenant: str, kind: str, subject: str, name: str) -> str:
    """The stable id of score ``name`` of a ``kind`` (``trace``/``session``) subject: a UUID v5 string."""
    return str(uuid.uuid5(_NS, f"{tenant}\x1f{kind}\x1f{subject}\x1f{name}"))


def config_body(d: ScoreDef) -> dict[str, Any]:
    """The ``POST /api/public/score-configs`` body declaring ``d`` (``name``, ``dataType``, range/categories,
    ``description``)."""
    body: dict[str, Any] = {"name": d.name, "dataType": d.data_type, "description": d.description}
    if d.min_value is not None:
        body["minValue"] = d.min_value
    if d.max_value is not None:
        body["maxValue"] = d.max_value
    if d.categories:
        body["categories"] = [{"label": label, "value": v} for label, v in d.categories]
    return body


def figure_value(name: str, figures: Figures) -> float | None:
    """The value of built-in score ``name`` from ``figures`` (None when undefined)."""
    key = "duration_s" if name == "latency_s" else name
    v = figures.get(key)
    return None if v is None else float(v)
