"""Residual duplicate rate of the Langfuse export across kill -9: N trials of "start relay, post traces, SIGKILL it
while exports are under way, restart on the same data directory", then a draining run; counts the span ids the
fake Langfuse received more than once, and any acknowledged span that never arrived.

Two timings per run:

- ``natural``: the fake answers at once; the kill lands at a random moment (0–30 ms) after the first export of the
  trial reached Langfuse, so only some kills hit the window between "Langfuse stored it" and "relay recorded the
  answer";
- ``slow-answer``: the fake stores each request and answers 150 ms later, so nearly every kill lands in that
  window (the worst case for duplicates).

Baseline: relay ``main`` before issue 15 re-sent the whole in-flight batch after a restart (the issue measured
3,070 duplicate span ids, 8.9 % of deliveries, over 20 kills). Run: ``python -m bench.export_once [--trials 20]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.langfuse import FakeLangfuse  # noqa: E402
from tests.support.kill_trials import run_kill_trials  # noqa: E402


def one(trials: int, slow: float, max_pause: float, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp, FakeLangfuse.run_in_thread() as lf:
        if slow:
            lf.slow(slow, times=None)
        t0 = time.monotonic()
        res = run_kill_trials(Path(tmp), lf, trials, requests=6, spans=5, max_pause=max_pause, rng=random.Random(seed))
        wall = time.monotonic() - t0
    dup_copies = sum(n - 1 for n in res.duplicates.values())
    return {
        "kills": res.kills,
        "acked spans": len(res.acked),
        "received": len(res.received),
        "duplicate ids": len(res.duplicates),
        "duplicate rate": f"{100 * dup_copies / max(len(res.received), 1):.2f} %",
        "missing": len(res.missing),
        "reconciled (all in LF)": res.logs.count("not sending them again"),
        "reconciled (split)": res.logs.count("sending the other"),
        "outcome sum = acked": sum(res.outcomes.values()) == len(res.acked),
        "wall s": f"{wall:.1f}",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=15)
    args = p.parse_args(argv)
    rows = {"natural": one(args.trials, 0.0, 0.03, args.seed), "slow-answer": one(args.trials, 0.15, 0.12, args.seed)}
    keys = list(next(iter(rows.values())))
    print(f"{'':24}" + "".join(f"{name:>16}" for name in rows))
    for k in keys:
        print(f"{k:24}" + "".join(f"{str(r[k]):>16}" for r in rows.values()))
    bad = any(r["duplicate ids"] or r["missing"] for r in rows.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
