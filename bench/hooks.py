"""Budget hook latency: how fast relay answers Claude Code's hooks (the bar: under 50 ms), with many enforced
budgets and a populated ledger.

Setup: relay as a subprocess on loopback with ``--rules`` enforced budget rules (per user, per team, per session,
a third each) and ``--users`` users who each spent once (Claude Code ``api_request`` events over OTLP/HTTP).

Phases (each prints p50/p95/p99/max in ms):

- ``baseline``: ``GET /healthz`` on the admin port — a trivial aiohttp request, the floor of any HTTP answer;
- ``endpoint``: ``POST /hooks/claude-code`` (``UserPromptSubmit``, a random user and team), one keep-alive
  connection, sequential — relay's decision time as Claude Code's HTTP hook sees it; relay's CPU % (of one core)
  and RSS over the phase; event-loop lag: ``/healthz`` latency measured every 10 ms from a second connection while
  the hook calls run;
- ``command``: ``python -m relay hook claude-code`` end to end (process start, request, exit) as Claude Code runs the
  command hook, against ``python -c pass`` as the interpreter's own start-up.

    python bench/hooks.py [--rules 1000] [--users 2000] [--calls 2000] [--runs 30]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import yaml

from bench._common import ROOT, MiB, percentile
from tests.support.cc_traffic import CCTraffic
from tests.support.relay_proc import RelayProcess


def stats(ms: list[float]) -> str:
    return (
        f"p50 {percentile(ms, 50):7.2f}  p95 {percentile(ms, 95):7.2f}  p99 {percentile(ms, 99):7.2f}  "
        f"max {max(ms):7.2f} ms  (n={len(ms)})"
    )


def rules(n: int) -> dict:
    out = []
    for i in range(n):
        scope = ("user", "team.id", "session")[i % 3]
        out.append(
            {
                "alert": f"Budget{i}",
                "kind": "budget",
                "matchers": [f'{scope}!=""'],
                "group_by": [scope],
                "limit_usd": 5.0 + i,
                "window": {"calendar": "day"} if i % 2 else "1h",
                "enforce": "block" if i % 4 else "warn",
            }
        )
    return {"groups": [{"name": "budgets", "rules": out}]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-hooks-"))
    (tmp / "rules.yaml").write_text(yaml.safe_dump(rules(args.rules)))
    relay = RelayProcess(tmp / "data", overrides={"rules": {"files": [str(tmp / "rules.yaml")], "watch": False}})
    relay.start(timeout=60)
    ps = psutil.Process(relay.proc.pid)
    try:
        host, port = "127.0.0.1", relay.http_port
        conn = http.client.HTTPConnection(host, port, timeout=10)
        teams = [f"team-{i}" for i in range(50)]
        for u in range(args.users):  # one API call per user: the ledger and every rule's groups fill up
            t = CCTraffic(resource={"enduser.id": f"user-{u}", "team.id": teams[u % len(teams)]})
            conn.request(
                "POST",
                "/v1/logs",
                body=t.request(t.api_request(0.01 + (u % 7))),
                headers={"Content-Type": "application/x-protobuf"},
            )
            r = conn.getresponse()
            r.read()
            assert r.status == 200, r.status
        time.sleep(2.0)  # the ledger and the rules engine catch up

        admin = http.client.HTTPConnection("127.0.0.1", relay.admin_port, timeout=10)

        def healthz(c: http.client.HTTPConnection) -> float:
            t0 = time.perf_counter()
            c.request("GET", "/healthz")
            c.getresponse().read()
            return (time.perf_counter() - t0) * 1000

        base = [healthz(admin) for _ in range(args.calls)]

        lag: list[float] = []
        done = threading.Event()

        def probe() -> None:
            c = http.client.HTTPConnection("127.0.0.1", relay.admin_port, timeout=10)
            while not done.is_set():
                lag.append(healthz(c))
                time.sleep(0.01)

        prober = threading.Thread(target=probe, daemon=True)
        decisions: dict[str, int] = {}
        hook: list[float] = []
        cpu0, t0 = sum(ps.cpu_times()[:2]), time.monotonic()
        rss = [ps.memory_info().rss]
        prober.start()
        for i in range(args.calls):
            u = random.randrange(args.users)
            body = json.dumps(
                {
                    "session_id": str(uuid.uuid4()),
                    "prompt_id": str(uuid.uuid4()),
                    "hook_event_name": "UserPromptSubmit",
                    "prompt": "hello",
                }
            )
            headers = {
                "Content-Type": "application/json",
                "X-Relay-Resource-Attributes": f"enduser.id=user-{u},team.id={teams[u % len(teams)]}",
            }
            s = time.perf_counter()
            conn.request("POST", "/hooks/claude-code", body=body, headers=headers)
            r = conn.getresponse()
            out = json.loads(r.read())
            hook.append((time.perf_counter() - s) * 1000)
            kind = "block" if "decision" in out else "warn" if out else "allow"
            decisions[kind] = decisions.get(kind, 0) + 1
            if i % 200 == 0:
                rss.append(ps.memory_info().rss)
        done.set()
        prober.join(2)
        cpu = (sum(ps.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0) * 100

        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "RELAY_HOOK_URL": f"http://{host}:{port}/hooks/claude-code",
            "RELAY_HOOK_RESOURCE_ATTRIBUTES": "enduser.id=user-1,team.id=team-1",
            "HOME": str(tmp),
        }
        stdin = json.dumps({"session_id": "s", "hook_event_name": "UserPromptSubmit", "prompt": "x"}).encode()
        py, cmd = [], []
        for _ in range(args.runs):
            s = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            py.append((time.perf_counter() - s) * 1000)
            s = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "relay", "hook", "claude-code"], input=stdin, env=env, capture_output=True
            )
            cmd.append((time.perf_counter() - s) * 1000)

        print(f"relay: {args.rules} enforced budget rules, {args.users} users with spend; {args.calls} calls per phase")
        print(f"baseline  GET /healthz              {stats(base)}")
        print(f"endpoint  POST /hooks/claude-code   {stats(hook)}   decisions {decisions}")
        print(f"          relay CPU {cpu:.0f} % of one core, RSS peak {max(rss) / MiB:.0f} MiB")
        print(f"          event-loop lag (/healthz every 10 ms meanwhile) {stats(lag)}")
        print(f"command   python -c pass            {stats(py)}")
        print(f"command   relay hook claude-code    {stats(cmd)}")
    finally:
        relay.terminate()


if __name__ == "__main__":
    main()
