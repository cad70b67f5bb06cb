"""Maps one group's records to a Langfuse trace: Claude Code records through ``claude_code``, other agents'
spans through ``genai``. A group can hold both when Claude Code joined a caller's trace via ``TRACEPARENT``
(observed in Claude Code's exports, ``tests/fixtures/claude-code/``): the Claude Code interaction's trace fields
win, gaps are filled from the caller's."""

from __future__ import annotations

from dataclasses import fields

from relay.model import Outcome, TraceInfo
from relay.pipeline import claude_code, genai
from relay.pipeline.context import MappedTrace, MappingContext
from relay.pipeline.records import LogView, SpanView

__all__ = ["map_group", "merge_info"]


def merge_info(primary: TraceInfo | None, secondary: TraceInfo | None) -> TraceInfo | None:
    """``primary`` with its empty fields filled from ``secondary`` (either may be None)."""
    if primary is None or secondary is None:
        return primary or secondary
    for f in fields(TraceInfo):
        if not getattr(primary, f.name) and getattr(secondary, f.name):
            setattr(primary, f.name, getattr(secondary, f.name))
    return primary


def map_group(
    logs: list[LogView], spans: list[SpanView], ctx: MappingContext, known: TraceInfo | None = None
) -> MappedTrace:
    """Map a group's records; sets ``outcome`` on every record. Non-Claude-Code log records are filtered
    (Langfuse has no logs endpoint: https://langfuse.com/integrations/native/opentelemetry)."""
    cc_logs = [v for v in logs if v.is_claude_code]
    for v in logs:
        if not v.is_claude_code:
            v.outcome = Outcome.FILTERED
    cc_spans = [s for s in spans if s.is_claude_code]
    other = [s for s in spans if not s.is_claude_code]
    result = MappedTrace()
    if cc_logs or cc_spans:
        result = claude_code.map_interaction(cc_logs, cc_spans, ctx, known)
    if other:
        g = genai.map_spans(other, ctx, known if result.trace is None else result.trace)
        result.trace = merge_info(result.trace, g.trace)
        if result.trace is not None:
            for o in g.observations:
                o.trace_id = result.trace.trace_id
        result.observations.extend(g.observations)
        result.usage.extend(g.usage)
    return result
