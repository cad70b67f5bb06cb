"""Time from Langfuse's recovery to relay's next successful export, after an outage (issue 15: "up to 45 s idle
after Langfuse recovers").

relay runs in this process with the default retry policy (1 s initial interval, ×1.5, 30 s max, ±50 % jitter);
the fake Langfuse stops listening for ``--outage`` seconds while Claude Code traffic is queued, then comes back on
the same port. Measured: seconds from the restart to the first span accepted by the fake. Two variants in the same
run, alternating: ``probe`` (``health_probe_interval: 250ms``, the default) and the baseline ``no probe``
(``health_probe_interval: 1h``: relay waits out its backoff as before issue 15).

Run: ``python -m bench.outage_resume [--trials 3] [--outage 15]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.langfuse import FakeLangfuse  # noqa: E402
from tests.support.inproc import replay, running_relay  # noqa: E402

DEFAULT_RETRY = {"initial_interval": "1s", "max_interval": "30s", "multiplier": 1.5, "randomization_factor": 0.5}


async def one(outage: float, probe: str) -> float:
    overrides = {"exporters": {"langfuse": {"retry_on_failure": DEFAULT_RETRY, "health_probe_interval": probe}}}
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeLangfuse() as lf:
            async with running_relay(Path(tmp) / "data", lf.base_url, overrides) as relay:
                await lf.outage()
                await replay(relay, "protobuf-tools")
                await asyncio.sleep(outage)
                await lf.restore()
                t0 = time.monotonic()
                while not lf.spans():
                    await asyncio.sleep(0.01)
                return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--outage", type=float, default=15.0)
    args = p.parse_args(argv)
    results: dict[str, list[float]] = {"probe": [], "no probe": []}
    for _ in range(args.trials):
        results["probe"].append(asyncio.run(one(args.outage, "250ms")))
        results["no probe"].append(asyncio.run(one(args.outage, "1h")))
    print(
        f"outage {args.outage:.0f} s, {args.trials} trials each: seconds from Langfuse's recovery to the first export"
    )
    for name, xs in results.items():
        print(
            f"  {name:9} median {statistics.median(xs):6.2f}  max {max(xs):6.2f}  all {' '.join(f'{x:.2f}' for x in xs)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
