"""At most one copy of each span reaches Langfuse across kill -9: the send state is recorded before each request
and interrupted sends are reconciled with Langfuse's Observations API v2 after the restart."""

from __future__ import annotations

import random

import pytest

from tests.fakes.langfuse import FakeLangfuse
from tests.support.kill_trials import run_kill_trials


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_kill_9_during_exports_sends_no_span_twice(tmp_path):
    """Langfuse stores each request and answers 150 ms later, so every kill lands while an export's answer is
    outstanding (the worst moment: stored, not acknowledged). Over 10 kills no span id arrives twice, none is
    lost, and relay_items_total accounts for every acknowledged span exactly once."""
    with FakeLangfuse.run_in_thread() as lf:
        lf.slow(0.15, times=None)
        res = run_kill_trials(tmp_path, lf, trials=10, rng=random.Random(15), max_pause=0.12)
    assert res.kills == 10 and res.acked
    assert res.duplicates == {}, res.logs[-3000:]
    assert res.missing == set()
    assert "in Langfuse; not sending them again" in res.logs or "are in Langfuse; sending the other" in res.logs
    assert res.outcomes["forwarded"] == len(res.acked)
    assert sum(res.outcomes.values()) == len(res.acked), res.outcomes
