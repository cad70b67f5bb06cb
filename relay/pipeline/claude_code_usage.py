"""Usage-ledger records of one Claude Code interaction (``api_request`` / ``api_error`` events,
https://code.claude.com/docs/en/monitoring-usage "Events"; cost and error details as observed in Claude Code's
exports, ``tests/fixtures/claude-code/``).

One ``kind="llm"`` record per API call (``llm:<request_id>``; failed calls ``llm-error:…`` with ``success=False``
and no cost), one ``kind="tool"`` record per tool call or rejected tool (``tool:<tool_use_id>``) and one
``kind="retries_exhausted"`` record per ``api_retries_exhausted`` event. Tokens are
Anthropic counts (``input_tokens`` excludes cache), durations milliseconds, cost nano-USD as reported by Claude
Code (``cost_source="reported"``) or ``"none"`` when only the beta span was seen (the ledger store then prices it
from its tokens, ``"computed"``, and the ``api_request`` event's reported cost replaces that when it arrives).
``tenant`` is left empty and ``labels`` are the identity metadata: the pipeline sets the tenant and merges the
tenant's labels (``relay.usage.labels``).
"""

from __future__ import annotations

from typing import Any

from relay.model import UsageRecord
from relay.otlp.values import as_float, as_int, as_str
from relay.pipeline.context import Identity

__all__ = ["Ledger"]

SOURCE_EVENT = "claude_code.event"
SOURCE_SPAN = "claude_code.span"


class Ledger:
    """Collects the usage records of one interaction; ``records`` is the result.

    ``identity`` gives the ledger user and labels (identity metadata, e.g. ``team.id``); ``trace_id``,
    ``prompt_id`` and ``session_id`` are copied onto every record.
    """

    def __init__(self, identity: Identity, trace_id: str | None, prompt_id: str | None, session_id: str | None):
        self.identity = identity
        self.trace_id, self.prompt_id, self.session_id = trace_id, prompt_id, session_id
        self.records: list[UsageRecord] = []

    def _record(self, key: str, kind: str, time_ns: int, agent: str | None, from_span: bool, **kw: Any) -> UsageRecord:
        r = UsageRecord(
            key=key,
            kind=kind,
            time_ns=time_ns,
            session_id=self.session_id,
            trace_id=self.trace_id,
            prompt_id=self.prompt_id,
            user=self.identity.user_id,
            labels=dict(self.identity.metadata),
            agent=agent,
            source=SOURCE_SPAN if from_span else SOURCE_EVENT,
            **kw,
        )
        self.records.append(r)
        return r

    def llm(
        self, rid: str, attrs: dict[str, Any], end_ns: int, agent: str | None, nanos: int | None, from_span: bool
    ) -> UsageRecord:
        """A successful API call from ``api_request`` attributes (or the flat ``llm_request`` span attributes,
        whose cache writes have no 5m/1h split: all counted as 5m). ``nanos`` = reported cost in nano-USD."""
        m5, h1 = as_int(attrs.get("cache_creation_5m_tokens")), as_int(attrs.get("cache_creation_1h_tokens"))
        creation = as_int(attrs.get("cache_creation_tokens"))
        if m5 is None and h1 is None:
            m5 = creation
        return self._record(
            f"llm:{rid}",
            "llm",
            end_ns,
            agent,
            from_span,
            model=as_str(attrs.get("model")),
            input_tokens=as_int(attrs.get("input_tokens")) or 0,
            output_tokens=as_int(attrs.get("output_tokens")) or 0,
            cache_read_tokens=as_int(attrs.get("cache_read_tokens")) or 0,
            cache_creation_tokens=creation if creation is not None else (m5 or 0) + (h1 or 0),
            cache_creation_5m_tokens=m5 or 0,
            cache_creation_1h_tokens=h1 or 0,
            cost_nanos=nanos or 0,
            cost_source="reported" if nanos is not None else "none",
            duration_ms=as_float(attrs.get("duration_ms")),
            ttft_ms=as_float(attrs.get("ttft_ms")),
            success=True,
        )

    def error(
        self,
        key: str,
        attrs: dict[str, Any],
        end_ns: int,
        agent: str | None,
        status: int | None,
        eclass: str,
        text: str | None,
        from_span: bool,
    ) -> UsageRecord:
        """A failed API call (``api_error`` or ERROR ``llm_request`` span): no tokens, no cost (observed)."""
        return self._record(
            key,
            "llm",
            end_ns,
            agent,
            from_span,
            model=as_str(attrs.get("model")),
            duration_ms=as_float(attrs.get("duration_ms")),
            success=False,
            status_code=status,
            error_class=eclass,
            error=text,
        )

    def tool(
        self,
        tool_use_id: str,
        name: str,
        end_ns: int,
        success: bool,
        meta: dict[str, Any],
        from_span: bool,
        rejected: bool = False,
        agent: str | None = None,
    ) -> UsageRecord:
        """A tool call (``tool_result`` / ``claude_code.tool`` span) or a rejected ``tool_decision``; ``meta`` is
        the TOOL observation's metadata (decision, duration, error type)."""
        duration = meta.get("duration_ms", meta.get("execution_ms"))
        eclass = "rejected" if rejected else (None if success else (meta.get("error_type") or "tool_error"))
        return self._record(
            f"tool:{tool_use_id}",
            "tool",
            end_ns,
            agent,
            from_span,
            tool_name=name,
            duration_ms=float(duration) if duration is not None else None,
            success=success,
            error_class=eclass,
            error=meta.get("error_type"),
            decision=meta.get("decision"),
            decision_source=meta.get("decision_source"),
        )

    def retries_exhausted(
        self,
        ev_attrs: dict[str, Any],
        time_ns: int,
        agent: str | None,
        status: int | None,
        eclass: str,
        text: str | None,
    ) -> UsageRecord:
        """An ``api_retries_exhausted`` event (Claude Code gave up on a call after its retries): its own record
        kind (``retries_exhausted``, never counted as a call), keyed by session, event sequence and time."""
        key = f"retries:{as_str(ev_attrs.get('session.id'))}:{as_int(ev_attrs.get('event.sequence'))}:{time_ns}"
        return self._record(
            key,
            "retries_exhausted",
            time_ns,
            agent,
            False,
            model=as_str(ev_attrs.get("model")),
            success=False,
            status_code=status,
            error_class=eclass,
            error=text,
        )
