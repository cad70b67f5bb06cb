"""Shared pieces of relay's benchmarks: the fake Langfuse in its own process, relay as a measured subprocess,
Prometheus scraping and percentile helpers.

Everything runs on loopback (127.0.0.1). Units used throughout: seconds (s) for durations unless a name ends in
``_ms`` (milliseconds); memory in MiB; CPU as a percentage of ONE core (100 % = one core fully busy).

Run benchmarks from the repository root (``python bench/<name>.py``); this module puts the repository root on
``sys.path`` so ``relay`` and ``tests.*`` import without installation tricks.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402  (after the sys.path set-up above)

from tests.support.relay_proc import RelayProcess  # noqa: E402

__all__ = [
    "ROOT",
    "FakeLangfuseProcess",
    "FakeStats",
    "MiB",
    "RelayUnderTest",
    "ResourceSample",
    "counts",
    "cpu_count",
    "percentile",
    "scrape_metrics",
]

MiB = 1024 * 1024
PUBLIC_KEY, SECRET_KEY, PROJECT = "pk-lf-test", "sk-lf-test", "project-test"


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0–100) of ``values`` by linear interpolation; NaN for an empty list."""
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# ------------------------------------------------------------------------------------------------ fake Langfuse
@dataclass
class FakeStats:
    """What the fake Langfuse received since the last reset.

    ``spans`` counts every accepted span (duplicates included), ``unique_spans`` distinct span ids,
    ``requests`` trace-export requests by HTTP status, ``last_span_at`` the wall-clock time (``time.time()``)
    the latest span arrived (0 when none). ``cpu_s`` is the fake process's total CPU time so far (s).
    """

    spans: int = 0
    unique_spans: int = 0
    requests: dict[int, int] = field(default_factory=dict)
    last_span_at: float = 0.0
    cpu_s: float = 0.0

    @property
    def duplicates(self) -> int:
        """Spans received more than once (each extra copy counts)."""
        return self.spans - self.unique_spans


def _fake_main(conn: Any, ready: Any, score_arrays: bool = False) -> None:  # runs in the child process
    """Serve ``tests.fakes.langfuse.FakeLangfuse`` and answer ``stats`` / ``reset`` / ``stop`` on ``conn``.

    The fake records every span it accepts (parsed into Python objects); to keep its memory flat over a long
    run, the spans are harvested every 100 ms into counters and a set of span ids, then cleared. Harvest and
    clear happen under the fake's own lock (a re-entrant Condition), so no span is lost between them.
    """
    sys.path.insert(0, str(ROOT))
    from tests.fakes.langfuse import FakeLangfuse

    fake = FakeLangfuse.run_in_thread(projects={PUBLIC_KEY: (SECRET_KEY, PROJECT)})
    fake.fake.score_batches = score_arrays  # a newer server: POST /scores takes arrays
    me = psutil.Process()
    stats = FakeStats()
    seen: set[str] = set()

    def harvest() -> None:
        with fake.fake._lock:
            spans, reqs = fake.spans(), fake.requests
            fake.clear()
        stats.spans += len(spans)
        seen.update(s.span_id for s in spans)
        stats.unique_spans = len(seen)
        for r in reqs:
            if r.path.endswith("/v1/traces"):
                stats.requests[r.status or 0] = stats.requests.get(r.status or 0, 0) + 1
                if r.accepted and r.span_count:
                    stats.last_span_at = max(stats.last_span_at, r.received_at)

    ready.send(fake.base_url)
    try:
        while True:
            if conn.poll(0.1):
                cmd = conn.recv()
                harvest()
                if cmd == "stats":
                    stats.cpu_s = sum(me.cpu_times()[:2])
                    conn.send(
                        FakeStats(
                            stats.spans, stats.unique_spans, dict(stats.requests), stats.last_span_at, stats.cpu_s
                        )
                    )
                elif cmd == "reset":
                    stats = FakeStats()
                    seen.clear()
                    conn.send(True)
                elif cmd == "stop":
                    conn.send(True)
                    break
            else:
                harvest()
    finally:
        fake.stop()


class FakeLangfuseProcess:
    """The loopback fake Langfuse (``tests/fakes/langfuse.py``) in a separate process, so that its work (it
    parses every span into Python objects) does not share the bench process's GIL with the load generator.

    Project keys: ``pk-lf-test`` / ``sk-lf-test``. ``base_url`` is known after :meth:`start`. Use as a context
    manager or call :meth:`start` / :meth:`stop`. ``score_arrays``: answer ``POST /scores`` arrays like newer
    servers (202/207) instead of v4.16's 400.
    """

    def __init__(self, score_arrays: bool = False) -> None:
        self._ctx = mp.get_context("spawn")
        self._conn, child = self._ctx.Pipe()
        ready_r, self._ready_w = self._ctx.Pipe(duplex=False)
        self._ready_r = ready_r
        self._proc = self._ctx.Process(
            target=_fake_main, args=(child, self._ready_w, score_arrays), name="fake-langfuse", daemon=True
        )
        self._lock = threading.Lock()
        self.base_url = ""

    @property
    def pid(self) -> int:
        """The child process id."""
        assert self._proc.pid is not None
        return self._proc.pid

    def start(self, timeout: float = 30.0) -> FakeLangfuseProcess:
        """Start the child and wait (up to ``timeout`` s) until it listens."""
        self._proc.start()
        if not self._ready_r.poll(timeout):
            self._proc.kill()
            raise TimeoutError("fake Langfuse did not start")
        self.base_url = self._ready_r.recv()
        return self

    def _ask(self, cmd: str, timeout: float = 10.0) -> Any:
        with self._lock:
            self._conn.send(cmd)
            if not self._conn.poll(timeout):
                raise TimeoutError(f"fake Langfuse did not answer {cmd!r}")
            return self._conn.recv()

    def stats(self) -> FakeStats:
        """Counters since the last :meth:`reset`."""
        return self._ask("stats")

    def reset(self) -> None:
        """Zero the counters and forget the span ids seen."""
        self._ask("reset")

    def stop(self) -> None:
        """Stop the server and the child (kills it after 5 s)."""
        if self._proc.is_alive():
            try:
                self._ask("stop", 5.0)
            except (TimeoutError, OSError, EOFError):
                pass
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------------ relay process
def scrape_metrics(admin_url: str, timeout: float = 5.0) -> dict[str, float]:
    """relay's ``/metrics`` as ``{sample name: value summed over all label sets}``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(admin_url + "/metrics", timeout=timeout) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name
            if s.name == "relay_spool_bytes":
                key = f"relay_spool_bytes_{s.labels.get('queue')}"
            elif s.name == "relay_items_total":
                key = f"relay_items_total_{s.labels.get('outcome')}"
            out[key] = out.get(key, 0.0) + s.value
    return out


def scrape_buckets(admin_url: str, name: str, timeout: float = 5.0) -> dict[float, float]:
    """Cumulative bucket counts ``{le: count}`` of histogram ``name`` in relay's ``/metrics`` (summed over other
    labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(admin_url + "/metrics", timeout=timeout) as r:
        text = r.read().decode()
    out: dict[float, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name + "_bucket":
                le = float(s.labels["le"])
                out[le] = out.get(le, 0.0) + s.value
    return out


def bucket_max(before: dict[float, float], after: dict[float, float]) -> tuple[float, int]:
    """From two scrapes of a histogram: the upper bound of the highest bucket that got observations in between
    (inf when one went over the last finite bound; nan when none), and the number of observations."""
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    if total <= 0:
        return float("nan"), 0
    highest = float("inf")
    for le in sorted(after):
        if after[le] - before.get(le, 0.0) >= total:
            highest = le
            break
    return highest, int(total)


def bucket_over(before: dict[float, float], after: dict[float, float], bound: float) -> int:
    """Observations between two scrapes greater than ``bound`` (which must be a bucket bound)."""
    inf = float("inf")
    return int((after.get(inf, 0) - before.get(inf, 0)) - (after.get(bound, 0) - before.get(bound, 0)))


@dataclass
class ResourceSample:
    """CPU and memory of a process over a window: ``cpu_pct`` is CPU time / wall time × 100 (% of one core;
    threads of the process included, child processes excluded), ``rss_peak_mib`` / ``rss_avg_mib`` from samples
    every ``interval`` s."""

    wall_s: float
    cpu_s: float
    rss_peak_mib: float
    rss_avg_mib: float
    samples: int

    @property
    def cpu_pct(self) -> float:
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else float("nan")


class RelayUnderTest:
    """relay as a subprocess (``python -m relay run --config <yaml>``, via ``tests.support.relay_proc``) with a
    fresh temp data dir, exporting to ``langfuse_url``, plus a sampler thread that reads its RSS every
    ``interval`` s (psutil) so peak memory can be reported per measurement window.

    ``overrides`` deep-merge into the generated config (see ``RelayProcess.config``); ``root`` is the source tree
    whose ``relay`` runs (default: this repository).
    """

    def __init__(
        self, langfuse_url: str, overrides: dict | None = None, interval: float = 0.1, root: Path | None = None
    ):
        self._tmp = tempfile.TemporaryDirectory(prefix="relay-bench-")
        env = {"LANGFUSE_BASE_URL": langfuse_url, "LANGFUSE_PUBLIC_KEY": PUBLIC_KEY, "LANGFUSE_SECRET_KEY": SECRET_KEY}
        self.proc = RelayProcess(Path(self._tmp.name) / "data", overrides=overrides or {}, env=env, root=root)
        self.interval = interval
        self._ps: psutil.Process | None = None
        self._rss: list[tuple[float, int]] = []  # (monotonic time, rss bytes)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def http_url(self) -> str:
        return self.proc.http_url

    @property
    def pid(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid

    def start(self) -> RelayUnderTest:
        """Start relay, wait for ``/healthz``, start sampling."""
        self.proc.start()
        self._ps = psutil.Process(self.pid)
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()
        self._pyspy = None
        prof_dir = os.environ.get("RELAY_BENCH_PYSPY")  # profiling aid: py-spy record every relay to this dir
        # (samples/s: RELAY_BENCH_PYSPY_RATE, default 100; only samples holding the GIL: RELAY_BENCH_PYSPY_GIL=1;
        # with C frames: RELAY_BENCH_PYSPY_NATIVE=1, which pauses relay for every sample)
        if prof_dir:
            out = Path(prof_dir) / f"relay-{self.pid}.txt"
            mode = "--gil" if os.environ.get("RELAY_BENCH_PYSPY_GIL") else "--nonblocking"
            if os.environ.get("RELAY_BENCH_PYSPY_NATIVE"):
                mode = "--native"
            self._pyspy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(self.pid),
                    "--rate",
                    os.environ.get("RELAY_BENCH_PYSPY_RATE", "100"),
                    "--format",
                    "raw",
                    "--threads",
                    mode,
                    "-o",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        return self

    def _sample(self) -> None:
        assert self._ps is not None
        while not self._stop.is_set():
            try:
                self._rss.append((time.monotonic(), self._ps.memory_info().rss))
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def cpu_s(self) -> float:
        """relay's CPU time so far, user + system, all threads, no children (s)."""
        assert self._ps is not None
        t = self._ps.cpu_times()
        return t.user + t.system

    def rss_mib(self) -> float:
        """Current RSS (MiB)."""
        assert self._ps is not None
        return self._ps.memory_info().rss / MiB

    def window(self, t0: float, t1: float, cpu0: float, cpu1: float) -> ResourceSample:
        """Resource use between monotonic times ``t0`` and ``t1`` given the CPU times read at both ends."""
        rss = [r for t, r in list(self._rss) if t0 <= t <= t1]
        return ResourceSample(
            wall_s=t1 - t0,
            cpu_s=cpu1 - cpu0,
            rss_peak_mib=max(rss) / MiB if rss else float("nan"),
            rss_avg_mib=sum(rss) / len(rss) / MiB if rss else float("nan"),
            samples=len(rss),
        )

    def metrics(self) -> dict[str, float]:
        """relay's ``/metrics`` (see :func:`scrape_metrics`)."""
        return scrape_metrics(self.proc.admin_url)

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM relay and wait up to ``grace`` s for its exit code; SIGKILL it after that (returns None then).
        Stops sampling and deletes the data dir."""
        self._stop.set()
        if getattr(self, "_pyspy", None) is not None:
            self._pyspy.send_signal(2)  # SIGINT: py-spy writes its profile and exits
            self._pyspy.wait(10)
        code = None
        if self.proc.proc is not None and self.proc.proc.poll() is None:
            try:
                code = self.proc.terminate(grace)
            except Exception:
                self.proc.kill9()
        if self._thread:
            self._thread.join(2)
        self._tmp.cleanup()
        return code

    def logs_tail(self, n: int = 20) -> str:
        """The last ``n`` lines of relay's output (for error reports)."""
        return "\n".join(self.proc.logs().splitlines()[-n:])


def counts(values: list[Any]) -> dict[Any, int]:
    """``Counter`` as a plain, sorted dict (for printing)."""
    return dict(sorted(Counter(values).items(), key=lambda kv: str(kv[0])))


def cpu_count() -> int:
    """Logical CPUs available to this process."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
