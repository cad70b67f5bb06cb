"""SQLite access from asyncio: one dedicated thread owns the connection and commits work in groups.

Why a thread: sqlite3 calls block, and the OTLP ack path must stay fast. Why group commit: every accepted request
must be durable before it is acknowledged; committing many small writes in one transaction keeps that cheap.

Each job is a function ``fn(conn) -> T`` submitted with ``await db.run(fn)``. The thread takes every job waiting
in its queue (up to ``max_group``), runs each inside its own SAVEPOINT (a failing job rolls back alone and its
exception is raised to its caller), then COMMITs once and resolves all the futures. A job's future resolves only
after the COMMIT, so "``await db.run(write)`` returned" means "the write is in the WAL".

Durability: WAL journal; ``synchronous=NORMAL`` survives a process crash (``kill -9``), ``synchronous=FULL``
(``fsync=True``) also survives power loss. See https://www.sqlite.org/wal.html and
https://www.sqlite.org/pragma.html#pragma_synchronous.

Settings measured with ``bench/db.py`` (the writer thread's CPU per span for the database work of 512-span GenAI
requests: spool, ledger, scores, export; shared 2-CPU VM, 2026-12-06), none of which touches durability:

- ``wal_autocheckpoint=4000`` (16 MiB of WAL, default 1000 pages): −25–35 % of the commit overhead (~26 → ~17
  µs/span, the deferred checkpoint included). The same hot pages (the inbound spool's, index leaves, the freelist)
  are copied into the database file once per checkpoint instead of every ~0.3 s at 10k spans/s; 10000 pages
  measured no better. The WAL file keeps its largest size on disk (~16 MiB).
- a **checkpointer thread** (``CHECKPOINT_INTERVAL``, ``SqliteDB._checkpoints``) copies committed WAL pages into the
  database file every 0.5 s with a PASSIVE checkpoint on its own connection, concurrently with the writer: the
  writer's automatic checkpoint then has little left to copy, and a commit (the acknowledgement waiting for it)
  no longer pays for copying up to 16 MiB. ``bench/ingest.py`` genai-100 at 2k spans/s with an append-wait probe:
  the append's wait for the writer, p99 25 / 20 / 17 / 14 ms without, 3.5 / 17 / 7 / 15 ms with.
- ``secure_delete=FAST`` (https://www.sqlite.org/pragma.html#pragma_secure_delete): Debian's SQLite is built with
  ``SQLITE_SECURE_DELETE``, which overwrites every freed page with zeros — each inbound request and outbound batch
  was written to the WAL a second time when deleted. FAST still zeroes deleted content on the b-tree pages a
  commit writes anyway; freed overflow pages keep their bytes until reused (soon: the spool churns). About −5–10 %.
- ``cache_size`` 8 MiB instead of 2 MiB: no measurable change (the hot pages fit); left at the default.
- ``synchronous`` stays NORMAL (FULL with ``fsync``), ``journal_mode`` WAL, page size 4 KiB.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence, Sized
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["SqliteDB", "execute_script", "chunks", "marks", "IN_CHUNK"]

T = TypeVar("T")
#: Values per ``IN (…)`` list (SQLite allows 32,766 host parameters since 3.32,
#: https://www.sqlite.org/limits.html#max_variable_number).
IN_CHUNK = 500
#: Pages (4 KiB) the WAL may hold before a commit checkpoints it into the database file (SQLite's default: 1000).
WAL_AUTOCHECKPOINT = 4000
#: Seconds between the checkpointer thread's PASSIVE checkpoints (when something was committed; ``_checkpoints``).
CHECKPOINT_INTERVAL = 0.5
log = logging.getLogger(__name__)
_STOP = object()
_WAKE = object()  # an urgent job is waiting in SqliteDB._urgent


class SqliteDB:
    """A SQLite database served by one writer thread with group commit.

    ``path`` is the database file (its directory is created). ``schema`` is a SQL script run once at open
    (``CREATE TABLE IF NOT EXISTS …``). Raises ``sqlite3.Error`` from ``open`` when the file cannot be used.
    """

    def __init__(
        self,
        path: Path,
        *,
        schema: str = "",
        fsync: bool = False,
        max_group: int = 256,
        checkpoint_interval: float | None = CHECKPOINT_INTERVAL,
    ):
        self.path = Path(path)
        self._checkpoint_interval = checkpoint_interval
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_stop = threading.Event()
        self._schema = schema
        self._fsync = fsync
        self._max_group = max_group
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._urgent: collections.deque[Any] = collections.deque()  # urgent jobs (a _WAKE in _queue for each)
        self._thread: threading.Thread | None = None
        self._ready: Future[None] = Future()
        self.commits = 0  # number of group commits (for benchmarks and metrics)
        #: Fault injection for tests (None in production): called before each COMMIT of a group that changed
        #: rows; an exception it returns fails the group like a failed COMMIT (e.g. ``sqlite3.OperationalError(
        #: "database or disk is full")`` to stand in for SQLITE_FULL where no small file system can be mounted).
        self.fault: Callable[[], BaseException | None] | None = None

    def open(self) -> None:
        """Start the thread and create the schema; blocks until ready; raises what sqlite raised."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._main, name=f"sqlite:{self.path.name}", daemon=True)
        self._thread.start()
        self._ready.result()
        if self._checkpoint_interval:
            self._checkpoint_stop.clear()
            self._checkpointer = threading.Thread(
                target=self._checkpoints, name=f"sqlite-checkpoint:{self.path.name}", daemon=True
            )
            self._checkpointer.start()

    def close(self) -> None:
        """Stop the checkpointer, finish queued jobs, close the connection (the last one: SQLite checkpoints the WAL
        into the database) and join the thread."""
        if self._checkpointer is not None:
            self._checkpoint_stop.set()
            self._checkpointer.join()
            self._checkpointer = None
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, urgent: bool = False) -> T:
        """Run ``fn(conn)`` on the database thread inside the next group commit; return its result. Cancelling the
        caller before the job started skips the job; once it started, it commits (the result is then dropped).

        ``urgent`` jobs (small writes a client waits for, e.g. the spool append behind an acknowledgement) are
        committed in a group of their own, before the other jobs waiting with them (e.g. a pipeline commit of
        hundreds of traces)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if urgent:
            self._urgent.append((fn, fut, loop))
            self._queue.put(_WAKE)
        else:
            self._queue.put((fn, fut, loop))
        return await fut

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking form of ``run`` for CLI commands and start-up code outside the event loop."""
        fut: Future[T] = Future()
        self._queue.put((fn, fut, None))
        return fut.result()

    def apply_schema(self, script: str) -> None:
        """Run the ``CREATE … IF NOT EXISTS`` statements of ``script`` (a component's own tables) on the writer
        thread, inside one transaction. Blocking; call at start-up. Raises ``sqlite3.Error``."""

        self.run_sync(lambda conn: execute_script(conn, script))

    # ------------------------------------------------------------------ thread

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA secure_delete=FAST")  # see the module docstring
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
        conn.execute("PRAGMA foreign_keys=ON")
        if self._schema:
            conn.executescript(self._schema)
        return conn

    @property
    def _synchronous(self) -> str:
        return "FULL" if self._fsync else "NORMAL"

    def _checkpoints(self) -> None:
        """The checkpointer thread: every ``checkpoint_interval`` s after commits, a PASSIVE checkpoint on a
        connection of its own copies the WAL's new pages into the database file alongside the writer (SQLite runs
        a checkpoint concurrently with one writer, https://www.sqlite.org/wal.html#concurrency). The writer's own
        automatic checkpoint (``WAL_AUTOCHECKPOINT``, which also lets it restart the WAL from its beginning) then
        finds little left to copy, so a commit — and the acknowledgement waiting for it — no longer pays for
        copying up to 16 MiB. Errors (a full disk, a busy checkpoint lock) are logged and retried next time; the
        writer's checkpoint remains the fallback."""
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=100")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
        except sqlite3.Error as e:
            log.warning("sqlite checkpointer of %s not started: %s", self.path.name, e)
            return
        done = -1  # the commit count the WAL was last fully copied at
        try:
            while not self._checkpoint_stop.wait(self._checkpoint_interval):
                seen = self.commits
                if seen == done:
                    continue
                try:
                    busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as e:
                    log.debug("sqlite checkpoint of %s failed: %s", self.path.name, e)
                    continue
                if not busy and copied >= frames:  # else: again next time
                    done = seen
        finally:
            conn.close()

    def _main(self) -> None:
        try:
            conn = self._connect()
        except BaseException as e:  # report to open()
            self._ready.set_exception(e)
            return
        self._ready.set_result(None)
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            jobs = [] if first is _WAKE else [first]
            while len(jobs) < self._max_group:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                if nxt is not _WAKE:
                    jobs.append(nxt)
            urgent = self._take_urgent()
            if urgent:
                self._run_group(conn, urgent)
            while jobs:
                self._run_group(conn, jobs)
                jobs = self._take_urgent()  # those that came while the group ran go next
        conn.close()

    def _take_urgent(self) -> list[Any]:
        out: list[Any] = []
        while self._urgent and len(out) < self._max_group:
            out.append(self._urgent.popleft())
        return out

    def _run_group(self, conn: sqlite3.Connection, jobs: list[tuple[Callable[..., Any], Any, Any]]) -> None:
        """Run ``jobs`` (``(fn, future, loop)``; ``loop`` is None for ``run_sync``'s blocking futures) in one
        transaction, then resolve their futures: one ``call_soon_threadsafe`` per event loop and group (waking the
        loop once, not once per job)."""
        results: list[tuple[Any, Any, bool, Any]] = []  # (future, loop, ok, value or exception)
        try:
            conn.execute("BEGIN IMMEDIATE")
            changes = conn.total_changes
            for fn, fut, loop in jobs:
                if loop is None:
                    if not fut.set_running_or_notify_cancel():
                        continue
                elif fut.cancelled():  # the caller gave up before the job started: skip it
                    continue
                conn.execute("SAVEPOINT job")
                try:
                    value = fn(conn)
                except BaseException as e:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append((fut, loop, False, e))
                else:
                    conn.execute("RELEASE job")
                    results.append((fut, loop, True, value))
            if self.fault is not None and conn.total_changes != changes and (err := self.fault()) is not None:
                raise err
            conn.execute("COMMIT")
            self.commits += 1
        except BaseException as e:  # the commit itself failed: every job fails
            log.error("sqlite group commit failed: %s", e)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            results = [(fut, loop, False, e) for _, fut, loop in jobs]
        by_loop: dict[Any, list[tuple[Any, bool, Any]]] = {}
        for fut, loop, ok, value in results:
            by_loop.setdefault(loop, []).append((fut, ok, value))
        for loop, done in by_loop.items():
            if loop is None:  # run_sync's thread-safe futures
                _resolve(done)
                continue
            try:
                loop.call_soon_threadsafe(_resolve, done)
            except RuntimeError:  # the loop was closed meanwhile: nobody waits for these results
                pass


def _resolve(done: list[tuple[Any, bool, Any]]) -> None:
    """Set the results of finished jobs (on the event loop for asyncio futures); futures already done — cancelled
    meanwhile, or skipped as cancelled — are left alone."""
    for fut, ok, value in done:
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run the statements of ``script`` one by one on ``conn``, inside the caller's transaction (unlike
    ``Connection.executescript``, which commits first). Raises ``sqlite3.Error``, and ``sqlite3.ProgrammingError`` for
    a trailing incomplete statement."""
    stmt = ""
    for line in script.splitlines(keepends=True):
        stmt += line
        if sqlite3.complete_statement(stmt):
            conn.execute(stmt)
            stmt = ""
    if stmt.strip():
        raise sqlite3.ProgrammingError(f"incomplete SQL statement: {stmt.strip()[:80]}")


def chunks(values: Sequence[T]) -> Iterator[Sequence[T]]:
    """``values`` in slices of at most ``IN_CHUNK`` (one ``IN (…)`` list each)."""
    for i in range(0, len(values), IN_CHUNK):
        yield values[i : i + IN_CHUNK]


def marks(values: Sized) -> str:
    """``?,?,…`` for an ``IN (…)`` list of ``values``."""
    return ",".join("?" * len(values))
