"""A Langfuse score as a record of the rules engine's feed: :class:`ScoreRecord`, a ``UsageRecord`` of kind
``score`` (:data:`SCORE_KIND`) carrying the score's value. Built from the ledger's score table by
``relay.scores.records``; aggregated by ``kind: score`` rules (``relay.alerting.rules.schema.ScoreRule``)."""

from __future__ import annotations

from dataclasses import dataclass

from relay.model import UsageRecord

__all__ = ["SCORE_KIND", "ScoreRecord"]

#: The ``UsageRecord.kind`` of score records.
SCORE_KIND = "score"


@dataclass
class ScoreRecord(UsageRecord):
    """A score in the rules engine: ``value`` (numeric and boolean scores; None for categorical/text ones),
    ``string_value`` (the label or text), ``score`` (its name) and ``score_source`` (``relay`` or ``api``)."""

    value: float | None = None
    string_value: str | None = None
    score: str = ""
    score_source: str = ""

    def label_set(self) -> dict[str, str]:
        """The usage labels of the scored trace/session plus ``score``, ``score_source``, ``score_subject``
        (``trace``, ``session``, ``other``) and, for categorical scores, ``score_value``."""
        out = super().label_set()
        out.update(
            score=self.score,
            score_source=self.score_source,
            score_subject="trace" if self.trace_id else "session" if self.session_id else "other",
        )
        if self.string_value is not None:
            out["score_value"] = self.string_value
        return out
