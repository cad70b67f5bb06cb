"""Scores and the Langfuse public API through relay (issue 14): what they cost, with baselines in the same run.

```sh
python bench/scores.py                       # all phases, ~1 min
python bench/scores.py --duration 5 --sessions 200 --json out.json
```

Phases (relay as a subprocess, the fake Langfuse in its own process; ``bench/_common.py``):

- ``post``: closed loop, ``--concurrency`` clients POST single score objects to relay's ``/api/public/scores`` for
  ``--duration`` s → acks/s, ack latency percentiles (each ack = the score is in SQLite), relay CPU (% of one core)
  and RSS, then the drain time until relay delivered every acknowledged score (``relay_scores_sent_total``).
  **Baseline**: the same load straight at the fake Langfuse.
- ``proxy``: closed loop ``GET /api/public/projects`` through relay vs straight at the fake → latency overhead.
- ``scoring``: ``--sessions`` Claude Code sessions (3 interactions each, events only, in the captures' shapes) sent
  at once; time from the last request to every session's scores delivered, relay CPU per session scored.

Event-loop lag of relay cannot be observed from outside; the ack latency percentiles include it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from bench._common import PUBLIC_KEY, SECRET_KEY, FakeLangfuseProcess, RelayUnderTest, cpu_count, percentile
from tests.support.cc_traffic import CCTraffic

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{PUBLIC_KEY}:{SECRET_KEY}".encode()).decode()}


async def closed_loop(url: str, method: str, body_fn, concurrency: int, duration: float) -> tuple[list[float], int]:
    """``concurrency`` workers send requests back to back for ``duration`` s; returns 2xx latencies (ms) and the
    number of non-2xx answers."""
    lat: list[float] = []
    bad = 0
    end = time.monotonic() + duration
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def worker() -> None:
            nonlocal bad
            while time.monotonic() < end:
                t0 = time.perf_counter()
                kw = {"json": body_fn()} if body_fn else {}
                async with s.request(method, url, headers=AUTH, **kw) as r:
                    await r.read()
                    if 200 <= r.status < 300:
                        lat.append((time.perf_counter() - t0) * 1000)
                    else:
                        bad += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lat, bad


def pcts(lat: list[float]) -> dict[str, float]:
    return {f"p{p}": round(percentile(lat, p), 2) for p in (50, 90, 99)}


def score_body() -> dict:
    return {"name": "thumbs", "value": 1, "dataType": "BOOLEAN", "traceId": uuid.uuid4().hex}


def wait_metric(relay: RelayUnderTest, name: str, target: float, timeout: float) -> float | None:
    """Seconds until ``name`` reaches ``target`` (None on timeout)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if relay.metrics().get(name, 0.0) >= target:
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


def phase_post(fake: FakeLangfuseProcess, args) -> dict:
    base = asyncio.run(
        closed_loop(fake.base_url + "/api/public/scores", "POST", score_body, args.concurrency, args.duration)
    )
    relay = RelayUnderTest(fake.base_url, {"scores": {"check_interval": "200ms"}}).start()
    try:
        cpu0, t0 = relay.cpu_s(), time.monotonic()
        lat, bad = asyncio.run(
            closed_loop(relay.http_url + "/api/public/scores", "POST", score_body, args.concurrency, args.duration)
        )
        t1, cpu1 = time.monotonic(), relay.cpu_s()
        drain = wait_metric(relay, "relay_scores_sent_total", len(lat), args.drain_timeout)
        res = relay.window(t0, t1, cpu0, cpu1)
        return {
            "baseline_direct": {"rate_per_s": round(len(base[0]) / args.duration, 1), **pcts(base[0])},
            "relay": {
                "rate_per_s": round(len(lat) / args.duration, 1),
                "non_2xx": bad,
                **pcts(lat),
                "cpu_pct": round(res.cpu_pct, 1),
                "rss_peak_mib": round(res.rss_peak_mib, 1),
                "drain_s": None if drain is None else round(drain, 2),
                "acked": len(lat),
            },
        }
    finally:
        relay.stop()


def phase_proxy(fake: FakeLangfuseProcess, args) -> dict:
    base, _ = asyncio.run(
        closed_loop(fake.base_url + "/api/public/projects", "GET", None, args.concurrency, args.duration)
    )
    relay = RelayUnderTest(fake.base_url).start()
    try:
        cpu0, t0 = relay.cpu_s(), time.monotonic()
        lat, bad = asyncio.run(
            closed_loop(relay.http_url + "/api/public/projects", "GET", None, args.concurrency, args.duration)
        )
        res = relay.window(t0, time.monotonic(), cpu0, relay.cpu_s())
        return {
            "baseline_direct": {"rate_per_s": round(len(base) / args.duration, 1), **pcts(base)},
            "relay": {
                "rate_per_s": round(len(lat) / args.duration, 1),
                "non_2xx": bad,
                **pcts(lat),
                "cpu_pct": round(res.cpu_pct, 1),
                "rss_peak_mib": round(res.rss_peak_mib, 1),
            },
        }
    finally:
        relay.stop()


async def _send_sessions(url: str, n: int) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            t = CCTraffic()
            for _i in range(3):
                t.prompt = str(uuid.uuid4())
                body = t.request(
                    t.event("user_prompt", prompt_length="10"),
                    t.api_request(0.01, ttft_ms=500),
                    t.api_request(0.02, ttft_ms=400),
                )
                async with s.post(url + "/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"}) as r:
                    assert r.status == 200, r.status


def phase_scoring(fake: FakeLangfuseProcess, args) -> dict:
    relay = RelayUnderTest(fake.base_url, {"scores": {"session_idle": "1s", "check_interval": "200ms"}}).start()
    try:
        cpu0, t0 = relay.cpu_s(), time.monotonic()
        asyncio.run(_send_sessions(relay.http_url, args.sessions))
        t_sent = time.monotonic()
        # per interaction: api_errors, tool_failures, cost_usd, duration_s, ttft_ms_p50 (no tool decision → no
        # tool_accept_rate); per session: cost_usd, api_error_rate, interactions, retries_exhausted, outcome
        expected = args.sessions * (3 * 5 + 5)
        drain = wait_metric(relay, "relay_scores_sent_total", expected, args.drain_timeout)
        t1, cpu1 = time.monotonic(), relay.cpu_s()
        res = relay.window(t0, t1, cpu0, cpu1)
        return {
            "sessions": args.sessions,
            "scores_expected": expected,
            "send_s": round(t_sent - t0, 2),
            "last_request_to_all_delivered_s": None if drain is None else round(drain, 2),
            "note": "includes session_idle 1 s and the pipeline's idle_timeout 500 ms",
            "relay_cpu_s": round(res.cpu_s, 2),
            "cpu_ms_per_session": round(res.cpu_s * 1000 / args.sessions, 2),
            "rss_peak_mib": round(res.rss_peak_mib, 1),
        }
    finally:
        relay.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per closed-loop phase (default 10)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--sessions", type=int, default=300, help="Claude Code sessions in the scoring phase")
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--phases", default="post,proxy,scoring")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    print(f"cores: {cpu_count()}; relay, fake Langfuse and the load generator share them")
    out: dict = {}
    with FakeLangfuseProcess() as fake:
        for name in args.phases.split(","):
            fn = {"post": phase_post, "proxy": phase_proxy, "scoring": phase_scoring}[name]
            out[name] = fn(fake, args)
            print(f"\n== {name}")
            print(json.dumps(out[name], indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
