"""Rule files at run time: hot reload on SIGHUP, on ``POST /-/reload`` and when a file changes, keeping the old
rules when the new ones are broken (like Prometheus and Alertmanager: "invalid config rejected, old one kept").

The manager is the rules engine's component (``relay.component``): :meth:`RulesManager.start` starts the periodic
evaluation (``RuleEngine.run``) and, with ``watch``, a poller that hashes the matched files every ``watch_interval`` seconds
(new files matching a glob count as a change). Reloads are serialised.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from relay.alerting.evaluation.engine import RuleEngine
from relay.alerting.rules.load import RulesError, RuleSet, expand_paths
from relay.component import Component
from relay.usage.store import LedgerStore

__all__ = ["RulesManager", "ReloadStatus"]

log = logging.getLogger("relay.alerting")


@dataclass
class ReloadStatus:
    """The outcome of the last (re)load: ``ok``; ``error`` (every problem, one per line) when not; ``at`` (unix
    seconds); ``rules`` loaded and ``files`` read by the rules in use."""

    ok: bool
    error: str | None = None
    at: float = 0.0
    rules: int = 0
    files: list[str] = field(default_factory=list)


class RulesManager(Component):
    """Reloads ``files`` (paths/globs, relative to ``base_dir``) into ``engine``; new aggregations are backfilled
    from ``ledger``. ``last_reload`` is what ``/-/reload`` and the status page report."""

    name = "rules manager"

    def __init__(
        self,
        files: Sequence[str],
        engine: RuleEngine,
        ledger: LedgerStore | None,
        *,
        base_dir: str | Path | None = None,
        watch_interval: float = 1.0,
        watch: bool = True,
    ):
        self.files = list(files)
        self.watch_files = watch
        self.engine = engine
        self.ledger = ledger
        self.base_dir = base_dir
        self.watch_interval = watch_interval
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._reloads: set[asyncio.Task[tuple[bool, str | None]]] = set()
        self._signature = self.signature()
        self.last_reload = ReloadStatus(
            True, at=time.time(), rules=len(engine.rule_ids()), files=list(engine.ruleset.files)
        )

    def signature(self) -> tuple[tuple[str, str], ...]:
        """``(path, content hash)`` of every file the patterns match now (missing files hash as ``-``)."""
        paths, _ = expand_paths(self.files, self.base_dir)
        out = []
        for p in paths:
            try:
                out.append((p, hashlib.sha256(Path(p).read_bytes()).hexdigest()))
            except OSError:
                out.append((p, "-"))
        return tuple(out)

    async def reload(self) -> tuple[bool, str | None]:
        """Load the files again and switch the engine to them; on any problem keep the current rules, log why and
        return ``(False, problems)``. Returns ``(True, None)`` on success."""
        async with self._lock:
            self._signature = self.signature()
            try:
                rules = await asyncio.to_thread(RuleSet.load, self.files, self.base_dir)  # off the event loop
            except RulesError as e:
                error = "\n".join(e.problems)
                log.error(
                    "rules: reload failed, keeping the previous rules (%d problem(s)):\n%s", len(e.problems), error
                )
                self.last_reload = ReloadStatus(
                    False, error, time.time(), len(self.engine.rule_ids()), list(self.engine.ruleset.files)
                )
                return False, error
            try:
                await self.engine.replace_rules(rules, self.ledger)
            except Exception as e:
                log.exception("rules: reload failed while switching rules")
                self.last_reload = ReloadStatus(
                    False,
                    f"switching rules failed: {e}",
                    time.time(),
                    len(self.engine.rule_ids()),
                    list(self.engine.ruleset.files),
                )
                return False, self.last_reload.error
            log.info("rules: loaded %d rule(s) from %d file(s)", len(rules.rules), len(rules.files))
            self.last_reload = ReloadStatus(True, None, time.time(), len(rules.rules), list(rules.files))
            return True, None

    def request_reload(self) -> None:
        """Schedule :meth:`reload` (for a SIGHUP handler; call from the event loop's thread)."""
        task = asyncio.ensure_future(self.reload())
        self._reloads.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._reload_done)

    def _reload_done(self, task: asyncio.Task[tuple[bool, str | None]]) -> None:
        self._reloads.discard(task)
        if not task.cancelled():
            task.exception()

    async def watch(self) -> None:
        """Reload whenever the matched files change (checked every ``watch_interval``), until cancelled."""
        while True:
            await asyncio.sleep(self.watch_interval)
            try:
                sig = await asyncio.to_thread(self.signature)
            except Exception:
                log.exception("rules: cannot check rule files")
                continue
            if sig != self._signature:
                log.info("rules: rule files changed, reloading")
                await self.reload()

    async def start(self) -> None:
        """Start the engine's periodic evaluation and (``watch``) the file poller as tasks. Call after
        ``await engine.restore(ledger)``."""
        if self._tasks:
            return
        self._tasks.append(asyncio.create_task(self.engine.run(), name="rules-eval"))
        if self.watch_files:
            self._tasks.append(asyncio.create_task(self.watch(), name="rules-watch"))

    async def shutdown(self, deadline: float) -> None:
        """Cancel the tasks and wait for the engine's pending sink calls and state writes."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.engine.drain()
