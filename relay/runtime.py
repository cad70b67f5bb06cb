"""The process's own health under load: the event loop, garbage-collector tuning, event-loop lag, GC pauses and the
memory limiter.

- **Event loop** (``service.event_loop``, ``loop_factory``): uvloop (https://github.com/MagicStack/uvloop) where it is
  installed, asyncio's own loop otherwise or when configured.
- **GC**: after start-up every object alive (modules, config, compiled rules…) is moved to the permanent generation
  (``gc.freeze()``, https://docs.python.org/3/library/gc.html#gc.freeze) so full collections never walk it again,
  and the young generations are sized for short pauses (``GEN0_THRESHOLD``, ``GEN1_THRESHOLD``): the hot path
  allocates many short-lived containers (decoded attributes, observations), and collecting them every 700
  allocations (CPython's default) costs CPU for nothing; but a generation-1 collection walks every object that
  survived its ``GEN1_THRESHOLD`` generation-0 collections — under load the open traces and backlog — and with
  CPython's 10 those took 30–50 ms at 10k spans/s (10,000 × 10; 10–15 ms with 5,000 × 2). With 2,000 × 2 a
  generation-1 collection walks at most ~6,000 objects and stays under 10 ms (``bench/ingest.py``, GC pause max), for
  the same total GC work, and survivors reach generation 2 sooner, where only relay's scheduled full collections
  walk them.
  Full (generation-2) collections walk every live object — under load, the pipeline's open traces and backlog —
  and took 50–100 ms at 3k–10k spans/s, pausing acknowledgements; relay's data is freed by reference counting, so
  they are not left to the allocation counters: relay runs them itself when it holds no data (``busy`` false, at most
  every ``FULL_GC_INTERVAL``), when it is over its memory limit, and at the latest every ``FULL_GC_MAX_INTERVAL``
  (so cyclic garbage stays bounded however busy relay is).
  Every collection is timed (``gc.callbacks``): ``relay_gc_pause_seconds`` / ``relay_gc_pause_max_seconds``.
- **Event-loop lag**: a task asks to wake up every ``LAG_INTERVAL`` s and records how late it woke up
  (``relay_event_loop_lag_seconds`` / ``relay_event_loop_lag_max_seconds``): every pause of the loop (a GC, a long
  CPU step) delays acknowledgements by that much. Only while relay holds data (``busy``): idle, it asks every
  ``LAG_IDLE_INTERVAL`` s — 100 wake-ups a second cost an idle relay ~2.5 % of a core, and with nothing held
  there are no acknowledgements to delay; a pause longer than ``LAG_IDLE_INTERVAL`` is still seen.
- **Memory limiter** (``pipeline.memory_limit``, bytes of resident memory; the OpenTelemetry Collector's
  ``memory_limiter`` processor semantics, https://github.com/open-telemetry/opentelemetry-collector/blob/main/
  processor/memorylimiterprocessor/README.md): RSS is read every ``RSS_INTERVAL`` s from ``/proc/self/statm``;
  at or above the soft limit (``limit`` − ``spike``, ``spike`` = 20 % of it) relay collects the young GC generations,
  returns freed heap to the OS (``malloc_trim``) and
  refuses new data (receivers answer 503 + ``Retry-After`` / gRPC UNAVAILABLE, which OTLP exporters retry:
  https://opentelemetry.io/docs/specs/otlp/#failures) and the pipeline stops reading more requests into memory,
  until RSS is back below the soft limit or relay holds no data any more (``busy`` false: CPython keeps freed heap
  mapped, and new data reuses it). Accepted data is never dropped: it waits in the durable spool.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, Histogram

from relay.component import Component

__all__ = [
    "RuntimeMonitor",
    "loop_factory",
    "rss_bytes",
    "GEN0_THRESHOLD",
    "GEN1_THRESHOLD",
    "GEN2_THRESHOLD_OFF",
    "FULL_GC_INTERVAL",
    "FULL_GC_MAX_INTERVAL",
]

log = logging.getLogger(__name__)


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event-loop factory for ``asyncio.Runner`` per ``service.event_loop``: uvloop's for ``auto`` (when it is
    installed) and ``uvloop``, None (asyncio's default loop) for ``asyncio`` or when ``auto`` finds no uvloop.
    uvloop runs the loop's own work — socket reads and writes, callbacks, timers, thread wake-ups — in C: 10–20 %
    less CPU per record (``bench/ingest.py``, Claude Code and GenAI phases) for 2–3 MiB more RSS. Raises
    ``ImportError`` for ``uvloop`` when it is missing."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


#: ``gc.set_threshold`` generation-0 threshold: allocations between young collections (CPython's default is 700).
GEN0_THRESHOLD = 2_000
#: Generation-1 threshold: generation-0 collections between two generation-1 collections (CPython's default is 10).
GEN1_THRESHOLD = 2
#: Generation-2 threshold while relay schedules full collections itself (never reached: 10^9 young collections).
GEN2_THRESHOLD_OFF = 1_000_000_000
#: Seconds between two full collections while relay is idle; and the longest wait for one when it never is.
FULL_GC_INTERVAL = 60.0
FULL_GC_MAX_INTERVAL = 600.0
LAG_INTERVAL = 0.01  # s
LAG_IDLE_INTERVAL = 0.25  # s
#: ``sys.setswitchinterval`` (s): how long a thread may hold the GIL while another waits for it.
SWITCH_INTERVAL = 0.001
RSS_INTERVAL = 0.05  # s
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0)


def rss_bytes() -> int:
    """This process's resident set size in bytes (``/proc/self/statm``, Linux; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _load_trim():
    """glibc's ``malloc_trim`` (returns freed heap pages to the OS: https://man7.org/linux/man-pages/man3/
    malloc_trim.3.html), or None on other C libraries."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _load_trim()


def _trim() -> None:
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class RuntimeMonitor(Component):
    """GC tuning, loop-lag and GC-pause metrics, and the memory limiter (``memory_limit`` bytes, 0 = off).
    ``tune_process``: apply the process-wide settings (GC freeze and threshold, GIL switch interval) — only for the
    daemon, which owns its process.

    ``over_limit`` is True while RSS is at or above the soft limit; the ingest path refuses data then
    (``retry_after`` seconds) and the pipeline reads no more requests from the spool. ``busy`` says whether relay
    holds data (unprocessed requests, open traces; default: always): it paces the lag sampling, the idle full
    collections and the limiter (see the module docstring).
    """

    name = "runtime monitor"

    def __init__(
        self,
        registry: CollectorRegistry,
        memory_limit: int = 0,
        *,
        tune_process: bool = True,
        busy: Callable[[], bool] | None = None,
    ):
        self.memory_limit = memory_limit
        self.busy = busy or (lambda: True)
        self.soft_limit = memory_limit - memory_limit // 5 if memory_limit else 0
        self.retry_after = 1.0
        self.tune_process = tune_process
        self.over_limit = False
        self._saved_threshold: tuple[int, int, int] | None = None  # gc.get_threshold() before start()
        self.lag_max = 0.0
        self.gc_pause_max = 0.0
        self._gc_start = 0.0
        self._collected = 0.0
        self._full_gc_at = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self.lag = Histogram(
            "relay_event_loop_lag_seconds",
            "How late the event loop ran a timer (every 10 ms while relay holds data, else every 250 ms): pauses "
            "that delay acknowledgements, seconds.",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        Gauge(
            "relay_event_loop_lag_max_seconds", "Longest event-loop lag since start, seconds.", registry=registry
        ).set_function(lambda: self.lag_max)
        self.gc_pause = Histogram(
            "relay_gc_pause_seconds",
            "Duration of garbage collections, seconds.",
            ["generation"],
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        Gauge(
            "relay_gc_pause_max_seconds", "Longest garbage collection since start, seconds.", registry=registry
        ).set_function(lambda: self.gc_pause_max)
        Gauge(
            "relay_process_resident_memory_bytes",
            "Resident set size, bytes (pipeline.memory_limit bounds it).",
            registry=registry,
        ).set_function(rss_bytes)
        Gauge("relay_memory_limit_bytes", "pipeline.memory_limit (0: off).", registry=registry).set(memory_limit)
        Gauge(
            "relay_memory_limited",
            "1 while RSS is over the soft memory limit and new data is refused.",
            registry=registry,
        ).set_function(lambda: 1 if self.over_limit else 0)

    async def start(self) -> None:
        """Freeze the start-up heap, raise the GC threshold, start the lag and RSS watchers."""
        if self.tune_process:
            gc.collect()
            gc.freeze()
            self._saved_threshold = gc.get_threshold()
            gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD_OFF)  # full collections: _watch_full_gc
            # the writer thread (acknowledgements) must not wait 5 ms (CPython's default) for the GIL each time the
            # event loop is busy mapping: hand it over every ms
            sys.setswitchinterval(SWITCH_INTERVAL)
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        self._tasks = [asyncio.create_task(self._watch_lag(), name="relay-loop-lag")]
        if self.tune_process:
            self._full_gc_at = time.monotonic()
            self._tasks.append(asyncio.create_task(self._watch_full_gc(), name="relay-full-gc"))
        if self.memory_limit:
            self._tasks.append(asyncio.create_task(self._watch_rss(), name="relay-memory-limiter"))

    def full_collection_due(self, now: float) -> bool:
        """Whether relay should run a full collection at monotonic time ``now``: idle (``busy`` false) and the last
        one at least ``FULL_GC_INTERVAL`` ago, or the last one ``FULL_GC_MAX_INTERVAL`` ago whatever the load."""
        since = now - self._full_gc_at
        return since >= FULL_GC_MAX_INTERVAL or (since >= FULL_GC_INTERVAL and not self.busy())

    def full_collection(self) -> int:
        """Run a full collection now (timed like every collection); returns the unreachable objects it found."""
        self._full_gc_at = time.monotonic()
        return gc.collect(2)

    async def _watch_full_gc(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.full_collection_due(time.monotonic()):
                self.full_collection()

    async def shutdown(self, deadline: float) -> None:
        """Stop the watchers and the GC timing (the GC thresholds from before :meth:`start` are restored)."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self.tune_process and self._saved_threshold is not None:
            gc.set_threshold(*self._saved_threshold)  # automatic full collections again
            self._saved_threshold = None

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
            return
        pause = time.perf_counter() - self._gc_start
        self.gc_pause_max = max(self.gc_pause_max, pause)
        self.gc_pause.labels(str(info.get("generation", ""))).observe(pause)

    async def _watch_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            interval = LAG_INTERVAL if self.busy() else LAG_IDLE_INTERVAL
            t0 = loop.time()
            await asyncio.sleep(interval)
            lag = max(0.0, loop.time() - t0 - interval)
            self.lag.observe(lag)
            if lag > self.lag_max:
                self.lag_max = lag

    def check(self) -> bool:
        """Read RSS now and update ``over_limit`` (after a young collection and a heap trim when over); returns it."""
        if not self.memory_limit:
            return False
        rss = rss_bytes()
        now = time.monotonic()
        if rss >= self.soft_limit and now - self._collected >= 1.0:  # at most once a second
            self._collected = now
            gc.collect(1)  # the young generations first: a full collection pauses the loop for 0.1 s+
            _trim()
            rss = rss_bytes()
            if rss >= self.soft_limit and time.monotonic() - self._full_gc_at >= 10.0:
                self.full_collection()  # cyclic garbage only a full collection finds (at most every 10 s)
                _trim()
                rss = rss_bytes()
        # Python rarely gives freed heap back to the OS: once relay holds no data any more (nothing accepted but
        # unprocessed, no open trace), a high RSS is retained heap that new data reuses, so accept again
        over = rss >= self.soft_limit and self.busy()
        if over != self.over_limit:
            self.over_limit = over
            log.warning(
                "memory limiter: RSS %.0f MiB %s the soft limit %.0f MiB (pipeline.memory_limit %.0f MiB)%s",
                rss / 2**20,
                "over" if over else "back under",
                self.soft_limit / 2**20,
                self.memory_limit / 2**20,
                "; refusing new data with 503 + Retry-After" if over else "",
            )
        return over

    async def _watch_rss(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(RSS_INTERVAL)
