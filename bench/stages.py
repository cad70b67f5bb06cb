"""Pipeline stages in one process: CPU time per span of each step a GenAI or Claude Code record takes between the
inbound spool and the outbound spool, without HTTP, SQLite or threads — the numbers to profile and optimise against
(``bench/ingest.py`` measures the whole daemon).

Stages, per request body (the same pre-generated bodies ``bench/ingest.py`` sends):

* ``parse``  — ``Export*ServiceRequest.FromString`` (upb);
* ``views``  — ``relay.pipeline.records.iter_spans`` / ``iter_logs`` (flattened views);
* ``attrs``  — attribute dicts of every span (``SpanView.attrs``, decoded lazily in the daemon);
* ``map``    — ``relay.pipeline.mapper.map_group`` per trace (observations, trace info, usage records);
* ``encode`` — ``relay.exporters.langfuse_encode.encode_request`` per trace (the serialised outbound spool payload);
* ``ceiling`` — ``FromString`` + ``SerializeToString`` of the same body: the raw protobuf cost no Python relay beats.

``--floor`` adds, for the GenAI workloads, the least CPython work any relay must do per span, whatever its design:
``parse`` (upb), ``walk`` (read every attribute value once: secret redaction must, and so must any mapping that
reads the attributes it needs), ``ledger`` (one usage-ledger row per LLM call: ``executemany`` of ready-made rows,
one transaction per request, into a file database with relay's ``usage_records`` schema, WAL and
``synchronous=NORMAL``). Their sum is the floor of a span's CPU time before HTTP, spooling, mapping and export.

Workloads: ``genai-512`` / ``genai-100`` (GenAI-semconv spans, 8 per trace, with content), and ``claude-code``
(the captured session ``tests/fixtures/claude-code/protobuf-tools``: 22 requests, traces and logs mapped as one
interaction per trace; metrics are ledger-only and not timed here). Figures are µs of CPU per span (per record for
claude-code), best of ``--repeat`` passes, plus ms per Claude Code session.

Run from the repository root: ``python bench/stages.py [--repeat 5] [--profile genai-512]`` (``--profile`` prints
cProfile's top functions of one workload's map + encode).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest import BatchFactory, ClaudeCodeFactory
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from relay.exporters.langfuse_encode import encode_request
from relay.pipeline.assembler import group_key
from relay.pipeline.context import MappingContext
from relay.pipeline.mapper import map_group
from relay.pipeline.records import LogView, SpanView, iter_logs, iter_spans
from relay.usage.pricing import Pricing
from relay.usage.sqlite_records import _INSERT, _values
from relay.usage.sqlite_schema import SCHEMA

STAGES = ("parse", "views", "attrs", "map", "encode")


def _bodies(workload: str, n: int) -> list[tuple[str, bytes]]:
    """``(signal, body)`` pairs of one workload: ``n`` GenAI requests, or ``n`` Claude Code sessions."""
    if workload.startswith("genai-"):
        f = BatchFactory(int(workload.split("-")[1]))
        return [("traces", f.make()) for _ in range(n)]
    cc = ClaudeCodeFactory()
    out = []
    for _ in range(n):
        for r in cc.make():
            sig = r.path.rsplit("/", 1)[-1]
            if sig in ("traces", "logs"):
                out.append((sig, r.body))
    return out


def run(bodies: list[tuple[str, bytes]], ctx: MappingContext) -> tuple[dict[str, float], int, float]:
    """One pass: seconds per stage, records handled, ceiling seconds."""
    t = dict.fromkeys(STAGES, 0.0)
    groups: dict[str, tuple[list[LogView], list[SpanView]]] = defaultdict(lambda: ([], []))
    n = 0
    ceiling = 0.0
    clock = time.process_time
    for seq, (signal, body) in enumerate(bodies):
        t0 = clock()
        if signal == "traces":
            req = ExportTraceServiceRequest.FromString(body)
            t1 = clock()
            views: list = list(iter_spans(req, seq))
        else:
            lreq = ExportLogsServiceRequest.FromString(body)
            t1 = clock()
            views = list(iter_logs(lreq, seq))
        t2 = clock()
        for v in views:
            v.attrs  # noqa: B018 - decodes lazily
        t3 = clock()
        for v in views:
            key = group_key(v)
            if key is not None:
                (groups[key][0] if isinstance(v, LogView) else groups[key][1]).append(v)
        n += len(views)
        t["parse"] += t1 - t0
        t["views"] += t2 - t1
        t["attrs"] += t3 - t2
        c0 = clock()
        cls = ExportTraceServiceRequest if signal == "traces" else ExportLogsServiceRequest
        cls.FromString(body).SerializeToString()
        ceiling += clock() - c0
    for logs, spans in groups.values():
        t0 = clock()
        result = map_group(logs, spans, ctx)
        t1 = clock()
        if result.trace is not None and result.observations:
            encode_request([(result.trace, result.observations)])
        t2 = clock()
        t["map"] += t1 - t0
        t["encode"] += t2 - t1
    return t, n, ceiling


def floor(bodies: list[tuple[str, bytes]], ctx: MappingContext) -> dict[str, float]:
    """One pass of the floor stages (module docstring) over GenAI ``bodies``: µs of CPU per span of each."""
    clock = time.process_time
    msgs = [ExportTraceServiceRequest.FromString(b) for _, b in bodies]
    spans = [sp for m in msgs for rs in m.resource_spans for ss in rs.scope_spans for sp in ss.spans]
    t0 = clock()
    for _, b in bodies:
        ExportTraceServiceRequest.FromString(b)
    t1 = clock()
    for sp in spans:
        for kv in sp.attributes:
            kv.value.string_value  # noqa: B018 - the read is the measurement
    t2 = clock()
    # the rows: the usage records the mapper makes of each request (unique keys per request and pass)
    rows: list[list[tuple]] = []
    for seq, (_, body) in enumerate(bodies):
        groups: dict[str, list[SpanView]] = defaultdict(list)
        for v in iter_spans(ExportTraceServiceRequest.FromString(body), seq):
            if (key := group_key(v)) is not None:
                groups[key].append(v)
        request_rows = []
        for g in groups.values():
            for u in map_group([], g, ctx).usage:
                u.tenant = "default"
                request_rows.append(_values(u))
        rows.append(request_rows)
    with tempfile.TemporaryDirectory() as d:
        conn = sqlite3.connect(Path(d) / "floor.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        t3 = clock()
        for request_rows in rows:
            conn.execute("BEGIN")
            conn.executemany(_INSERT, request_rows)
            conn.execute("COMMIT")
        t4 = clock()
        conn.close()
    n = len(spans)
    return {"parse": (t1 - t0) / n * 1e6, "walk": (t2 - t1) / n * 1e6, "ledger": (t4 - t3) / n * 1e6}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5, help="passes per workload; the best is printed (default 5)")
    p.add_argument("--requests", type=int, default=20, help="GenAI requests / Claude Code sessions per pass")
    p.add_argument("--workloads", default="genai-512,genai-100,claude-code")
    p.add_argument("--profile", metavar="WORKLOAD", help="print cProfile's top functions for one workload")
    p.add_argument("--floor", action="store_true", help="also the least work per span of any design (docstring)")
    args = p.parse_args(argv)
    ctx = MappingContext(tenant="default", pricing=Pricing.load())
    print(f"{'workload':<12} " + " ".join(f"{s:>8}" for s in STAGES) + f" {'total':>8} {'ceiling':>8}  µs/record")
    for w in args.workloads.split(","):
        bodies = _bodies(w, args.requests)
        best: dict[str, float] | None = None
        for _ in range(args.repeat):
            t, n, ceiling = run(bodies, ctx)
            per = {k: v / n * 1e6 for k, v in t.items()}
            per["total"] = sum(per.values())
            per["ceiling"] = ceiling / n * 1e6
            if best is None or per["total"] < best["total"]:
                best = per
        assert best is not None
        line = f"{w:<12} " + " ".join(f"{best[s]:8.2f}" for s in (*STAGES, "total", "ceiling"))
        if w == "claude-code":
            line += f"   = {best['total'] * n / args.requests / 1000:.2f} ms per session ({n // args.requests} records)"
        print(line)
    if args.floor:
        print(
            f"\nfloor (µs of CPU per span, best of {args.repeat}): parse + walk + ledger = the least any relay spends"
        )
        for w in args.workloads.split(","):
            if not w.startswith("genai-"):
                continue
            bodies = _bodies(w, args.requests)
            passes = [floor(bodies, ctx) for _ in range(args.repeat)]
            low = {k: min(p[k] for p in passes) for k in passes[0]}
            parts = "  ".join(f"{k} {v:5.2f}" for k, v in low.items())
            print(f"{w:<12} {parts}  = {sum(low.values()):5.2f}")
    if args.profile:
        bodies = _bodies(args.profile, args.requests)
        prof = cProfile.Profile()
        prof.enable()
        run(bodies, ctx)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(35)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
