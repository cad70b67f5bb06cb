"""``scores:`` in relay's config: when relay scores sessions and interactions, and user-defined scores.

```yaml
scores:
  enabled: true              # default
  session_idle: 30m          # a session is scored once it had no new interaction for this long (default 30m)
  custom:                    # your own scores over the same figures (relay.scores.figures), no code
    - name: expensive_session
      level: session         # session | interaction
      figure: cost_usd
      threshold: {op: ">", value: 5}     # → BOOLEAN score: 1 when cost_usd > 5
    - name: rejects_per_call
      level: session
      ratio: [tool_rejects, api_calls]   # → NUMERIC score: tool_rejects ÷ api_calls (absent when ÷ 0)
```
"""

from __future__ import annotations

import operator
from typing import Literal

from pydantic import Field, model_validator

from relay.config_types import Duration, _Model
from relay.scores.figures import FIGURE_NAMES, Figures

__all__ = ["ScoresConfig", "CustomScore", "Threshold"]

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}


class Threshold(_Model):
    """Turns a figure into a BOOLEAN score: 1 when ``figure <op> value``."""

    op: Literal[">", ">=", "<", "<=", "==", "!="]
    value: float


class CustomScore(_Model):
    """A user-defined score: one ``figure`` or a ``ratio`` of two, optionally through a ``threshold``."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.\-]{0,34}$")  # Langfuse: score config names ≤ 35 chars
    level: Literal["session", "interaction"] = "session"
    figure: str | None = None
    ratio: tuple[str, str] | None = None
    threshold: Threshold | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _check(self) -> CustomScore:
        if (self.figure is None) == (self.ratio is None):
            raise ValueError(f"score {self.name!r}: give exactly one of 'figure' or 'ratio'")
        unknown = sorted({*(self.ratio or ()), *([self.figure] if self.figure else [])} - FIGURE_NAMES)
        if unknown:
            raise ValueError(
                f"score {self.name!r}: unknown figure(s) {', '.join(unknown)}; known: {', '.join(sorted(FIGURE_NAMES))}"
            )
        return self

    @property
    def data_type(self) -> str:
        """``BOOLEAN`` with a threshold, else ``NUMERIC``."""
        return "BOOLEAN" if self.threshold else "NUMERIC"

    def value(self, figures: Figures) -> float | None:
        """The score's value from ``figures``; None when a figure is absent or a ratio divides by zero."""
        if self.figure is not None:
            x = figures.get(self.figure)
        else:
            num, den = (figures.get(k) for k in self.ratio or ())
            x = None if num is None or not den else num / den
        if x is None:
            return None
        if self.threshold:
            return 1.0 if _OPS[self.threshold.op](x, self.threshold.value) else 0.0
        return float(x)


class ScoresConfig(_Model):
    """``scores``: Langfuse scores relay computes from the usage ledger (see ``relay.scores``)."""

    enabled: bool = True
    #: A session is scored once it was quiet (no interaction ended) for this long; re-scored if it resumes.
    session_idle: Duration = 1800.0
    #: How often relay looks for due sessions and interactions.
    check_interval: Duration = 1.0
    #: Score other agents' GenAI traces too (``error_rate``, ``cost_usd``, ``latency_s`` per trace). Off by default:
    #: Langfuse shows every trace's latency and cost itself, and a v4.16 server takes one score per request, so this
    #: is three requests per trace (at 2,000 spans/s in 8-span traces, 750 requests/s and about a third of relay's CPU,
    #: measured with bench/ingest.py) against the project's API rate limits. Claude Code's scores are not affected.
    genai_traces: bool = False
    custom: list[CustomScore] = []

    @model_validator(mode="after")
    def _unique(self) -> ScoresConfig:
        from relay.scores.catalog import BUILTIN_NAMES

        names = [c.name for c in self.custom]
        clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & BUILTIN_NAMES))
        if clash:
            raise ValueError(f"custom score names must be unique and not built-in: {', '.join(clash)}")
        return self
