"""Backfilling rule windows from the ledger while live changes keep arriving, counting every record once.

A backfill reads ``LedgerStore.scan`` (time order, in batches, live data) while the pipeline keeps writing and
calling ``RuleEngine.observe``. Changes for the aggregations being filled are not applied directly; the tracker
keeps, per record key, the first ``old`` and the latest ``new`` seen during the scan. After the scan it corrects
each such key: subtract what the scan added for it, add the latest version. What the scan added is known exactly
for records the scan read while they were watched (a change had been observed) or that are recent
(``recent`` seconds, the common case for upgrades and retractions); for others it is nothing when the scan had not
reached the record's time when its first change arrived, else the version before that change. (The one case left
inexact: a change to a record older than ``recent``, written in the instant between the scan reading it and the
change being observed.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from relay.model import UsageRecord
from relay.usage.store import LedgerChange, LedgerStore

__all__ = ["BackfillTracker", "END_NS"]

#: Exclusive end of a scan that reads everything (records stamped in the future included).
END_NS = 2**63 - 1

#: ``apply(record, sign)``: add (1) or subtract (-1) a record in the aggregations being filled.
Apply = Callable[[UsageRecord, int], None]


class BackfillTracker:
    """Watches live changes during one backfill (see the module docstring). ``recent`` in seconds."""

    def __init__(self, recent: float = 3600.0):
        self.recent = recent
        self.scan_pos = -1  # time_ns of the last record the scan read
        self._changes: dict[tuple[str, str], list[Any]] = {}

    def note(self, ch: LedgerChange) -> None:
        """Record a live change (call for every change observed while the scan runs)."""
        rec = ch.new if ch.new is not None else ch.old
        assert rec is not None
        k = (rec.tenant, rec.key)
        entry = self._changes.get(k)
        if entry is None:  # [first old, latest new, had the scan already passed this record's time]
            self._changes[k] = [ch.old, ch.new, rec.time_ns <= self.scan_pos]
        else:
            entry[1] = ch.new

    async def fill(self, ledger: LedgerStore, start_ns: int, now: float, apply: Apply) -> int:
        """Scan ``ledger`` from ``start_ns`` (unix ns) applying every record, then reconcile the changes noted
        meanwhile; returns the number of records read. Yields to the event loop between batches of 1,000
        records (a few ms), so acknowledgements are not held up by a long backfill."""
        recent_ns = int((now - self.recent) * 1e9)
        seen: dict[tuple[str, str], UsageRecord] = {}
        watched = self._changes
        count = 0
        async for batch in ledger.scan(max(start_ns, 0), END_NS, batch=1_000):
            for rec in batch:
                k = (rec.tenant, rec.key)
                if rec.time_ns >= recent_ns or k in watched:
                    prev = seen.get(k)
                    if prev is not None:  # read twice (an upgrade moved it past the cursor): keep the latest
                        apply(prev, -1)
                    seen[k] = rec
                apply(rec, 1)
            if batch:
                self.scan_pos = max(self.scan_pos, batch[-1].time_ns)
            count += len(batch)
            await asyncio.sleep(0)
        self.scan_pos = END_NS
        for k, (first_old, latest_new, passed) in list(watched.items()):
            scanned: UsageRecord | None
            if k in seen:
                scanned = seen[k]
            else:
                t_ns = (latest_new if latest_new is not None else first_old).time_ns
                scanned = first_old if passed and t_ns < recent_ns else None
            if scanned is not None:
                apply(scanned, -1)
            if latest_new is not None:
                apply(latest_new, 1)
        watched.clear()
        return count
