"""Usage records before a trace closes: the ledger (and so the rules engine) hears about a Claude Code API call or
tool call within a fraction of a second of its event arriving, not when its interaction closes (which can be
minutes later, after ``idle_timeout`` or root + ``root_grace``).

An open group that received a ledger-relevant event (``api_request``, ``api_error``, ``tool_result``,
``tool_decision``, ``api_retries_exhausted``) is marked; at most every ``interval`` seconds the pipeline maps the
group as it stands and writes only the records whose ledger key cannot change when more records arrive — those
derived from an event (``llm:<request_id>``, ``tool:<tool_use_id>``, event-keyed errors, retries). Span-only
records (whose keys or cost may still change when their event arrives) wait for the close. The close writes every
record again; the ledger's idempotent upsert makes that a no-op for the early ones (or an upgrade to a better
cost source), so each call is still counted once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from relay.model import UsageRecord
from relay.pipeline.assembler import Group
from relay.pipeline.claude_code_usage import SOURCE_EVENT
from relay.pipeline.context import MappingContext
from relay.pipeline.mapper import map_group
from relay.pipeline.records import LogView

__all__ = ["EarlyLedger", "LEDGER_EVENTS"]

#: Claude Code event names (without the ``claude_code.`` prefix) that produce ledger records.
LEDGER_EVENTS = frozenset({"api_request", "api_error", "tool_result", "tool_decision", "api_retries_exhausted"})


class EarlyLedger:
    """Tracks open groups with new ledger-relevant events. ``interval`` is seconds between two partial mappings of
    one group (bounds the CPU a long interaction costs); ``clock`` is monotonic seconds."""

    def __init__(self, interval: float = 0.2, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self._dirty: dict[tuple[str, str], Group] = {}
        self._last: dict[tuple[str, str], float] = {}

    def mark(self, group: Group, view: LogView) -> None:
        """Note that ``view`` joined ``group`` (ignored unless it is a ledger-relevant event)."""
        if view.event_name in LEDGER_EVENTS:
            self._dirty[(group.tenant, group.key)] = group

    def forget(self, group: Group) -> None:
        """The group closed: its records are written by the close."""
        k = (group.tenant, group.key)
        if self._dirty.get(k) is group:
            del self._dirty[k]
        self._last.pop(k, None)

    @property
    def pending(self) -> bool:
        """True while some marked group waits for its partial mapping."""
        return bool(self._dirty)

    def wait(self) -> float:
        """Seconds until the first marked group is due (0 when one is due now; ``interval`` when none is marked)."""
        if not self._dirty:
            return self.interval
        now = self.clock()
        return max(0.0, min(self._last.get(k, -1e18) + self.interval - now for k in self._dirty))

    def due(self) -> list[Group]:
        """Marked groups whose last partial mapping is at least ``interval`` old; they are unmarked."""
        now = self.clock()
        out = []
        for k, g in list(self._dirty.items()):
            if now - self._last.get(k, -1e18) >= self.interval:
                del self._dirty[k]
                self._last[k] = now
                out.append(g)
        return out


def stable_usage(group: Group, ctx: MappingContext) -> list[UsageRecord]:
    """Map ``group`` as it stands and return its event-derived usage records (``tenant`` not yet set; span-only
    records, whose key may change when their event arrives, are left to the close). Leaves
    the records' outcomes unset, as the close maps them again. Raises what the mapper raises."""
    try:
        result = map_group(group.logs, group.spans, ctx)
    finally:
        for lv in group.logs:
            lv.outcome = None
        for sv in group.spans:
            sv.outcome = None
    return [u for u in result.usage if u.source == SOURCE_EVENT]
