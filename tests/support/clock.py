"""A manual clock for components that take ``now``/``clock`` callables (unix seconds)."""

from __future__ import annotations

__all__ = ["Clock", "T0"]

#: A fixed start time (2026-05-28), far from calendar boundaries that matter to the tests using it.
T0 = 1_780_000_000.0


class Clock:
    """``clock()`` returns ``t``; ``advance(s)`` moves it forward and returns the new time."""

    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; returns the new time."""
        self.t += seconds
        return self.t
