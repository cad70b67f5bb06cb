"""The SQLite writer thread in one process: its CPU per span for the database work one GenAI request causes, with
a baseline revision in the same run (issue 12, "relay at wire speed").

What one 512-span GenAI request costs the writer thread in the daemon, replayed here without HTTP or the pipeline's
CPU work (mapping happens before the timed part):

* ``append``        — the receiver stores the request in the inbound spool (request hash, payload, outcomes);
* ``pipeline``      — ``read_inbound``, ``closed_groups``, ``trace_states`` of its 64 traces, the usage ledger's
  ``write`` of their usage records, ``commit_traces`` (export batches, exported ids, trace metadata, closed marks),
  ``done_inbound``;
* ``scores``        — the scorer (``Scorer.step``: due subjects read) and the score sender's read of its outbox; with
  ``--genai-scores`` (``scores.genai_traces: true``; off by default, as in the daemon) the scorer is also told of
  every closed trace: traces marked, their ledger records read back, the scores upserted into the ledger's score
  table and the score outbox, and the sender's delete of each pass's delivered scores (100 per pass);
* ``export``        — the Langfuse exporter: ``read_outbound``, ``mark_sending``, ``ack_outbound``.

The stages of consecutive requests overlap as in the daemon (request *i+1* is appended while request *i* is in the
pipeline and request *i−1* is exported and scored), so the writer thread groups jobs into commits as it does under
load. Payloads are the bodies ``bench/ingest.py`` sends (``BatchFactory``), mapped by relay's own mapper and encoder;
LLM records keyed by the template's ``gen_ai.response.id`` (the same in every body) get a key per request, so the
ledger inserts new records as with real traffic (``--same-keys`` keeps them: every LLM record after the first
request is then a rewrite of a stored one, as in ``bench/ingest.py`` before it got fresh ids).

Figures: CPU seconds of the writer thread (``time.thread_time()`` around each group commit, measured inside the
thread, plus a final WAL checkpoint of what the run left in the WAL) per span, and per commit; wall time per request; number of group commits; database size at the end. The
baseline (``--baseline REF``, default ``main``) is the same script on relay's code at ``REF`` (``git archive``),
run first, on the same machine; the best of ``--repeat`` runs of each is printed.

Run from the repository root::

    python bench/db.py                      # this tree vs main, 3 runs each, ~1 min
    python bench/db.py --requests 60 --repeat 5 --baseline HEAD~3
    python bench/db.py --baseline ''        # this tree only

Units: µs of writer-thread CPU per span, ms per request / per commit, MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import cProfile
import functools
import hashlib
import json
import os
import pstats
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


STAGE: contextvars.ContextVar[str] = contextvars.ContextVar("stage", default="other")
STAGES = ("append", "pipeline", "scores", "sender", "export")


def _timed_groups(db, stats: dict[str, float], profile=None) -> None:
    """Wrap ``db._run_group`` so the writer thread adds its own CPU time per group commit to ``stats``, and each job
    (``db.run``) so its own CPU time (inside the transaction, without BEGIN/COMMIT) counts for the stage that
    submitted it (``STAGE``)."""
    run_group = db._run_group
    run = db.run

    def run_timed(fn, **kw):
        stage = STAGE.get()

        def job(conn):
            t0 = time.thread_time()
            try:
                return fn(conn)
            finally:
                stats[stage] += time.thread_time() - t0

        return run(job, **kw)

    db.run = run_timed

    def timed(conn, jobs):
        t0 = time.thread_time()
        if profile is not None:
            profile.enable()
        try:
            return run_group(conn, jobs)
        finally:
            if profile is not None:
                profile.disable()
            stats["cpu"] += time.thread_time() - t0
            stats["groups"] += 1
            stats["jobs"] += len(jobs)

    db._run_group = timed


def _prepare(n_requests: int, spans: int, same_keys: bool = False):
    """Bodies and what the pipeline makes of them: per request ``(body, [(group key, TraceCommit)], outcomes)``."""
    from ingest import BatchFactory
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from relay.exporters.langfuse_encode import encode_request
    from relay.pipeline.assembler import group_key
    from relay.pipeline.context import MappingContext
    from relay.pipeline.mapper import map_group
    from relay.pipeline.records import iter_spans
    from relay.spool import TraceCommit
    from relay.usage.labels import ledger_labels
    from relay.usage.pricing import Pricing

    ctx = MappingContext(tenant="default", pricing=Pricing.load())
    factory = BatchFactory(spans, fresh_response_ids=not same_keys)
    out = []
    for seq in range(n_requests):
        body = factory.make()
        req = ExportTraceServiceRequest.FromString(body)
        groups: dict[str, list] = defaultdict(list)
        for v in iter_spans(req, seq):
            key = group_key(v)
            if key is not None:
                groups[key].append(v)
        commits = []
        for key, views in groups.items():
            result = map_group([], views, ctx)
            assert result.trace is not None
            payload = encode_request([(result.trace, result.observations)])
            if not isinstance(payload, bytes):  # a baseline revision from before the wire encoder
                payload = payload.SerializeToString()
            for u in result.usage:
                u.tenant = "default"
                u.labels = ledger_labels(u.labels, ctx.labels)
            obs = result.observations
            commit = TraceCommit(
                tenant="default",
                trace_id=result.trace.trace_id,
                payload=payload,
                spans=len(obs),
                obs_ids=[o.id for o in obs],
                info=asdict(result.trace),
                usage=result.usage,
                items={"traces": len(views)},
                bounds=(min(o.start_ns for o in obs), max(o.end_ns for o in obs)),
            )
            commits.append((key, commit))
        out.append((body, commits))
    return out


async def _run(
    requests, directory: Path, profile=None, pragmas: Sequence[str] = (), genai_scores: bool = False
) -> dict[str, float]:
    """Drive the spool, ledger and scorer with ``requests``; the writer thread's figures."""
    from relay.model import Signal
    from relay.scores.config import ScoresConfig
    from relay.scores.service import ClosedTrace, Scorer
    from relay.spool import Spool
    from relay.usage.pricing import Pricing
    from relay.usage.sqlite_store import SqliteLedgerStore

    spool = Spool.open(directory)
    for pragma in pragmas:  # e.g. wal_autocheckpoint=10000, to measure a setting against the default
        spool.db.run_sync(lambda c, p=pragma: c.execute(f"PRAGMA {p}").fetchall())
    ledger = SqliteLedgerStore(spool.db, Pricing.load())
    scorer = Scorer(spool.db, ledger, ScoresConfig(), environments={}, deliver=lambda t: True)
    stats = {"cpu": 0.0, "groups": 0, "jobs": 0, **dict.fromkeys(STAGES, 0.0)}
    _timed_groups(spool.db, stats, profile)
    seqs: dict[int, int] = {}
    cursor = 0

    async def append(i: int) -> None:
        STAGE.set("append")
        body = requests[i][0]
        await spool.append("default", Signal.TRACES, body, 512, hashlib.sha256(body).digest())

    async def pipeline(i: int) -> None:
        nonlocal cursor
        STAGE.set("pipeline")
        items = await spool.read_inbound(cursor, 64, 4 * 2**20)
        item = items[0]
        cursor = item.seq
        seqs[i] = item.seq
        await spool.closed_groups([item.seq])
        commits = requests[i][1]
        await spool.trace_states({(c.tenant, c.trace_id) for _, c in commits})
        usage = [u for _, c in commits for u in c.usage]
        await ledger.write(usage)
        await spool.commit_traces([c for _, c in commits], closed=[(item.seq, k) for k, _ in commits])
        await spool.done_inbound([item.seq])
        for _, c in commits if genai_scores else ():
            start, end = c.bounds or (None, None)
            scorer.trace_closed(ClosedTrace(c.tenant, c.trace_id, c.info.get("session_id"), start, end, False))

    async def export() -> None:
        STAGE.set("export")
        while batches := await spool.read_outbound("default", 10_000, 4 * 2**20):
            await spool.mark_sending(batches)
            await spool.ack_outbound(batches)

    async def score() -> None:
        STAGE.set("scores")
        await scorer.step()
        STAGE.set("sender")
        now = time.time_ns()
        rows = await spool.db.run(
            lambda c: c.execute(
                "SELECT id, body, version, attempts, failures_500 FROM score_outbox WHERE tenant=? AND "
                "next_ns<=? ORDER BY id LIMIT 1000",
                ("default", now),
            ).fetchall()
        )
        # the score sender: one delete job per pass for the scores delivered (relay.scores.outbox.ScoreSender)
        for i in range(0, len(rows), 100):
            done = [(row_id, version) for row_id, _body, version, *_ in rows[i : i + 100]]
            await spool.db.run(
                functools.partial(_execute_many, "DELETE FROM score_outbox WHERE id=? AND version=?", done)
            )

    t0 = time.perf_counter()
    n = len(requests)
    await append(0)
    for i in range(n):
        work = [pipeline(i)]
        if i + 1 < n:
            work.append(append(i + 1))
        if i > 0:
            work += [export(), score()]
        await asyncio.gather(*work)
    await export()
    await score()
    await score()
    wall = time.perf_counter() - t0
    # the pages still only in the WAL are written to the database file at the next checkpoint: counted here (in
    # this thread, the writer being idle), so settings that defer checkpoints are not flattered by a short run
    t1 = time.thread_time()
    with contextlib.closing(sqlite3.connect(spool.db.path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    stats["checkpoint"] = time.thread_time() - t1
    stats["cpu"] += stats["checkpoint"]
    spool.close()
    size = sum(p.stat().st_size for p in directory.iterdir())
    return {**stats, "wall": wall, "db_bytes": size, "commits": spool.db.commits}


def _execute_many(sql: str, args: list[tuple], conn) -> None:
    conn.executemany(sql, args)


def worker(args: argparse.Namespace) -> None:
    """One variant (relay from ``sys.path``): prepare the requests, run ``--repeat`` times, print JSON."""
    requests = _prepare(args.requests, args.spans, args.same_keys)
    spans = sum(c.spans for _, commits in requests for _, c in commits)
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="relay-bench-db-") as d:
            runs.append(asyncio.run(_run(requests, Path(d), pragmas=args.pragma, genai_scores=args.genai_scores)))
    if args.profile:
        prof = cProfile.Profile(time.thread_time)  # CPU time of the writer thread, not wall time
        with tempfile.TemporaryDirectory(prefix="relay-bench-db-") as d:
            asyncio.run(_run(requests, Path(d), prof, args.pragma, args.genai_scores))
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(40)
    print(json.dumps({"spans": spans, "requests": len(requests), "runs": runs}))


def _variant(root: Path, args: argparse.Namespace) -> dict:
    """Run ``worker`` in a subprocess with relay imported from ``root``."""
    cmd = [sys.executable, str(HERE / "db.py"), "--worker", str(root)]
    cmd += ["--requests", str(args.requests), "--repeat", str(args.repeat), "--spans", str(args.spans)]
    cmd += ["--profile"] if args.profile else []
    cmd += ["--same-keys"] if args.same_keys else []
    cmd += ["--genai-scores"] if args.genai_scores else []
    for pragma in args.pragma:
        cmd += ["--pragma", pragma]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"bench worker for {root} failed:\n{out.stderr}")
    if args.profile:
        print(out.stderr, file=sys.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _line(name: str, res: dict) -> tuple[str, float]:
    best = min(res["runs"], key=lambda r: r["cpu"])
    spans = res["spans"]
    cpu_us = best["cpu"] / spans * 1e6
    cpus = sorted(r["cpu"] / spans * 1e6 for r in res["runs"])
    line = (
        f"{name:<22} {cpu_us:9.2f} {cpus[len(cpus) // 2]:9.2f} {best['cpu'] / best['groups'] * 1e3:9.3f} "
        f"{best['groups']:>7} {best['jobs']:>7} {best['wall'] / res['requests'] * 1e3:9.2f} "
        f"{best['db_bytes'] / 2**20:8.1f}  "
    )
    jobs = sum(best[s] for s in STAGES)
    line += " ".join(f"{best[s] / spans * 1e6:8.2f}" for s in STAGES) + f" {(best['cpu'] - jobs) / spans * 1e6:8.2f}"
    return line, cpu_us


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=40, help="512-span requests per run (default 40)")
    p.add_argument("--spans", type=int, default=512, help="spans per request (default 512)")
    p.add_argument("--repeat", type=int, default=3, help="runs per variant; the best is printed (default 3)")
    p.add_argument("--baseline", default="main", help="git revision to compare with ('' for none; default main)")
    p.add_argument("--pragma", action="append", default=[], help="a PRAGMA to run on the connection first (repeatable)")
    p.add_argument(
        "--same-keys",
        action="store_true",
        help="keep the template's response ids (LLM ledger keys repeat in every request, as in bench/ingest.py)",
    )
    p.add_argument(
        "--genai-scores",
        action="store_true",
        help="score every closed GenAI trace (scores.genai_traces: true; off by default, as in the daemon)",
    )
    p.add_argument("--profile", action="store_true", help="print cProfile's top functions of the writer thread")
    p.add_argument("--worker", metavar="ROOT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        sys.path.insert(0, args.worker)
        import relay  # bound to ROOT now: bench/_common.py puts this tree's root first on sys.path later

        assert Path(relay.__file__).resolve().is_relative_to(Path(args.worker).resolve()), relay.__file__
        sys.path.insert(1, str(HERE))
        worker(args)
        return 0
    sys.path.insert(0, str(HERE))
    from ingest import _commit, _export_revision

    variants: list[tuple[str, Path]] = []
    tmp = None
    if args.baseline:
        tmp = tempfile.TemporaryDirectory(prefix="relay-baseline-")
        _export_revision(args.baseline, Path(tmp.name))
        variants.append((f"{args.baseline} ({_commit(args.baseline)})", Path(tmp.name)))
    variants.append((f"this tree ({_commit()}+)", ROOT))
    print(
        f"{args.requests} requests × {args.spans} spans{' (same LLM keys)' if args.same_keys else ''}"
        f"{', GenAI trace scores' if args.genai_scores else ''}, "
        f"best of {args.repeat}; machine: {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'variant':<22} {'µs/span':>9} {'median':>9} {'ms/commit':>9} {'commits':>7} {'jobs':>7} "
        f"{'ms/req':>9} {'db MiB':>8}  " + " ".join(f"{s:>8}" for s in (*STAGES, "commit"))
    )
    figures = []
    for name, root in variants:
        line, cpu = _line(name, _variant(root, args))
        figures.append(cpu)
        print(line, flush=True)
    if len(figures) == 2:
        print(f"writer-thread CPU per span: {figures[1] / figures[0]:.2f}× the baseline")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
