"""Grouping of records into traces (Claude Code interactions or other agents' traces) until they are complete.

Claude Code exports each signal on its own timer, children before parents, and logs and spans of the same call in
different requests in either order (observed in Claude Code's exports, ``tests/fixtures/claude-code/``). A trace
is therefore mapped only when it looks complete:

- **group key**: the record's trace id when it has one (spans; log records when the traces beta is on), else
  ``prompt:<prompt.id>`` (beta off: events carry no ids, observed);
- **deadline**: ``idle_timeout`` after the last record arrived, shortened to ``root_grace`` once the root span
  arrived (``claude_code.interaction``, or a span without parent for other agents). Late records after a close
  start a new group with the same key; deterministic observation ids keep them in the same Langfuse trace.
- **by receive time, too**: the same deadline counted from when relay *received* the last record
  (``InboundItem.received_ns``) passes as soon as the pipeline has read a request received after it — then every
  request received before it has been read (the inbound spool is read in receive order). This is what closes a
  trace when the pipeline works through a backlog (after a burst, a restart or an outage): it closes once its
  grace period is behind it in the backlog, not a full grace period after the pipeline read it, so the records held
  in memory are those of about one read, not of every read within the grace period. The event-time watermark of
  stream processors (e.g. Apache Flink's), with the inbound spool's order as the guarantee.

The assembler holds records in memory only. Durability comes from the inbound spool: a request is deleted only
after every group holding one of its records has been committed (``InboundTracker``), so a crash re-delivers it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from relay.pipeline.records import LogView, SpanView

__all__ = ["Group", "Assembler", "InboundTracker", "group_key"]

CLAUDE_CODE_ROOT_SPAN = "claude_code.interaction"


def group_key(view: LogView | SpanView) -> str | None:
    """The grouping key of a record: ``trace:<hex>`` or ``prompt:<prompt.id>``; None when it belongs to no trace
    (Claude Code startup events such as ``plugin_loaded`` carry neither)."""
    if view.trace_id:
        return "trace:" + view.trace_id
    if isinstance(view, LogView):
        pid = view.attrs.get("prompt.id")
        if isinstance(pid, str) and pid:
            return "prompt:" + pid
    return None


def is_root(span: SpanView) -> bool:
    """True for a trace's root: Claude Code's interaction span (even with an inbound TRACEPARENT parent), or a
    span without parent."""
    if span.is_claude_code:
        return span.name == CLAUDE_CODE_ROOT_SPAN
    return span.parent_id is None


@dataclass
class Group:
    """The records of one trace gathered so far. ``deadline`` is a ``time.monotonic()`` value (seconds)."""

    tenant: str
    key: str
    logs: list[LogView] = field(default_factory=list)
    spans: list[SpanView] = field(default_factory=list)
    seqs: set[int] = field(default_factory=set)
    has_root: bool = False
    deadline: float = 0.0
    #: The deadline by receive time: Unix ns (the last record's ``received_ns`` plus the grace), or None when a
    #: record came without a receive time.
    due_ns: int | None = None

    @property
    def size(self) -> int:
        """Number of records held."""
        return len(self.logs) + len(self.spans)


class Assembler:
    """Open groups keyed by ``(tenant, key)`` with their close deadlines: ``deadline`` in seconds on the monotonic
    ``clock`` from when the record was added, ``due_ns`` in Unix ns from when it was received."""

    def __init__(self, idle_timeout: float, root_grace: float, clock=time.monotonic):
        self.idle_timeout = idle_timeout
        self.root_grace = root_grace
        self.clock = clock
        self.groups: dict[tuple[str, str], Group] = {}
        self.records = 0  # records held in all open groups

    def add(self, tenant: str, key: str, view: LogView | SpanView, received_ns: int | None = None) -> Group:
        """Add a record to its group (creating it) and push the group's deadlines; ``received_ns`` is when relay
        received the record's request (Unix ns). Returns the group."""
        g = self.groups.get((tenant, key))
        if g is None:
            g = self.groups[(tenant, key)] = Group(tenant, key)
        if isinstance(view, SpanView):
            g.spans.append(view)
            if is_root(view):
                g.has_root = True
        else:
            g.logs.append(view)
        g.seqs.add(view.seq)
        self.records += 1
        grace = self.root_grace if g.has_root else self.idle_timeout
        g.deadline = self.clock() + grace
        g.due_ns = None if received_ns is None else received_ns + int(grace * 1e9)
        return g

    def pop_due(self, now: float | None = None, read_upto_ns: int | None = None) -> list[Group]:
        """Remove and return the groups whose deadline has passed: on the clock (``now``), or by receive time when
        every request received up to ``read_upto_ns`` (Unix ns) has been read (see the module docstring)."""
        now = self.clock() if now is None else now
        upto = -1 if read_upto_ns is None else read_upto_ns
        due = [k for k, g in self.groups.items() if g.deadline <= now or (g.due_ns is not None and g.due_ns <= upto)]
        return self._pop(due)

    def pop_oldest(self, n: int) -> list[Group]:
        """Remove and return the ``n`` groups with the earliest deadlines (to bound memory under a backlog)."""
        keys = sorted(self.groups, key=lambda k: self.groups[k].deadline)[:n]
        return self._pop(keys)

    def _pop(self, keys: list[tuple[str, str]]) -> list[Group]:
        out = [self.groups.pop(k) for k in keys]
        self.records -= sum(g.size for g in out)
        return out

    def next_deadline(self) -> float | None:
        """The earliest deadline of the open groups, or None when there are none."""
        return min((g.deadline for g in self.groups.values()), default=None)


class InboundTracker:
    """Counts, per inbound request (``seq``), the open groups still holding its records.

    A request is *finished* when it has been fully fed and no open group holds its records; only then may it be
    deleted from the inbound spool.
    """

    def __init__(self) -> None:
        self._refs: dict[int, int] = {}

    def fed(self, seq: int, groups: Iterable[Group]) -> bool:
        """Record that ``seq`` was fed into ``groups``; True when it is already finished (no group holds it)."""
        n = len({id(g) for g in groups})
        if n == 0:
            return True
        self._refs[seq] = self._refs.get(seq, 0) + n
        return False

    def closed(self, group: Group) -> list[int]:
        """Release ``group``'s hold on its requests; returns the seqs that are now finished."""
        finished = []
        for seq in group.seqs:
            left = self._refs.get(seq, 0) - 1
            if left <= 0:
                self._refs.pop(seq, None)
                finished.append(seq)
            else:
                self._refs[seq] = left
        return finished

    @property
    def pending(self) -> int:
        """Number of requests held by open groups."""
        return len(self._refs)
