"""Grouping records into traces and holding inbound requests until every group holding them is committed."""

from __future__ import annotations

from relay.pipeline.assembler import Assembler, InboundTracker, group_key
from relay.pipeline.records import LogView, SpanView


def log(seq=1, trace=None, prompt="p1"):
    return LogView(
        resource={},
        scope_name="com.anthropic.claude_code.events",
        scope_version="",
        time_ns=1,
        trace_id=trace,
        span_id=None,
        body=None,
        attrs={"prompt.id": prompt} if prompt else {},
        event_name="api_request",
        seq=seq,
    )


def span(seq=1, trace="a" * 32, name="claude_code.llm_request", parent="b" * 16):
    return SpanView(
        resource={},
        scope_name="com.anthropic.claude_code.tracing",
        scope_version="",
        trace_id=trace,
        span_id="c" * 16,
        parent_id=parent,
        name=name,
        kind=1,
        start_ns=1,
        end_ns=2,
        attrs={},
        status_code=0,
        status_message="",
        seq=seq,
    )


def test_group_key_prefers_trace_id_then_prompt_id():
    assert group_key(log(trace="f" * 32)) == "trace:" + "f" * 32
    assert group_key(log()) == "prompt:p1"
    assert group_key(log(prompt=None)) is None  # startup events belong to no trace


def test_deadline_is_idle_timeout_then_root_grace():
    now = [100.0]
    a = Assembler(idle_timeout=10, root_grace=2, clock=lambda: now[0])
    g = a.add("t", "trace:x", span())
    assert g.deadline == 110
    now[0] = 101
    a.add("t", "trace:x", span(name="claude_code.interaction", parent=None))
    assert g.has_root and g.deadline == 103
    assert a.pop_due(102.9) == []
    assert a.pop_due(103) == [g]
    assert a.groups == {}


def test_generic_root_is_a_span_without_parent():
    a = Assembler(10, 1, clock=lambda: 0.0)
    s = span(name="agent", parent=None)
    s.scope_name = "my-agent"
    assert a.add("t", "trace:x", s).has_root


def test_tenants_never_share_a_group():
    a = Assembler(10, 1, clock=lambda: 0.0)
    assert a.add("t1", "trace:x", span()) is not a.add("t2", "trace:x", span())


def test_request_finishes_only_when_all_its_groups_closed():
    a = Assembler(10, 1, clock=lambda: 0.0)
    tr = InboundTracker()
    g1 = a.add("t", "prompt:p1", log(seq=7, prompt="p1"))
    g2 = a.add("t", "prompt:p2", log(seq=7, prompt="p2"))
    g3 = a.add("t", "prompt:p2", log(seq=8, prompt="p2"))
    assert tr.fed(7, [g1, g2, g2]) is False
    assert tr.fed(8, [g3]) is False
    assert tr.fed(9, []) is True  # nothing held it
    assert tr.closed(g1) == []
    assert sorted(tr.closed(g2)) == [7, 8]
    assert tr.pending == 0


def test_pop_oldest_bounds_memory_and_keeps_the_record_count():
    now = [0.0]
    a = Assembler(10, 1, clock=lambda: now[0])
    for i in range(5):
        now[0] = float(i)
        a.add("t", f"prompt:p{i}", log(seq=i, prompt=f"p{i}"))
    a.add("t", "prompt:p4", log(seq=9, prompt="p4"))
    assert a.records == 6
    oldest = a.pop_oldest(2)
    assert [g.key for g in oldest] == ["prompt:p0", "prompt:p1"]
    assert a.records == 4
    assert sum(g.size for g in a.pop_due(100)) == 4 and a.records == 0


def test_deadline_by_receive_time_passes_once_read_past_it():
    """A group is also due when its deadline counted from the records' receive time (Unix ns) is at or before what
    the pipeline has read up to; the clock deadline still applies, and a record without receive time has none."""
    now = [100.0]
    a = Assembler(idle_timeout=10, root_grace=2, clock=lambda: now[0])
    g = a.add("t", "trace:x", span(), received_ns=5_000_000_000)
    assert g.due_ns == 15_000_000_000 and g.deadline == 110
    a.add("t", "trace:x", span(name="claude_code.interaction", parent=None), received_ns=6_000_000_000)
    assert g.due_ns == 8_000_000_000  # root: root_grace from the newest record
    other = a.add("t", "trace:y", span(), received_ns=None)
    assert other.due_ns is None
    assert a.pop_due(101, read_upto_ns=7_999_999_999) == []
    assert a.pop_due(101, read_upto_ns=8_000_000_000) == [g]
    assert a.pop_due(101, read_upto_ns=10**20) == []  # no receive time: the clock only
    assert a.pop_due(110) == [other]
