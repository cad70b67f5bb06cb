"""Claude Code interaction mapper: one interaction's events (+ beta spans) → one Langfuse trace + ledger records.

The picture is the same with the traces beta on and off (Claude Code docs "Traces (beta)",
https://code.claude.com/docs/en/monitoring-usage; ids and correlation as observed in Claude Code's exports,
``tests/fixtures/claude-code/``):

- trace ``claude_code.interaction``: id = Claude Code's trace id, else sha256(``claude-code/trace/<prompt.id>``);
- root AGENT ``claude_code.interaction`` (id = interaction span id, else derived from ``prompt.id``), input =
  the prompt, output = the last main-agent response;
- one GENERATION ``claude_code.llm_request`` per API call (``api_request`` event and ``llm_request`` span joined on
  ``request_id``, observed), one ERROR GENERATION per failed call (``api_error`` / ERROR span, joined by
  ``request_id`` or, for 529, by model/attempt/time), one ERROR EVENT ``claude_code.api_retries_exhausted``;
- one TOOL per ``tool_result`` (or ``claude_code.tool`` span) named by the tool, a WARNING TOOL per rejected
  ``tool_decision``; beta helper spans are folded into their TOOL; subagent calls nest under their Agent TOOL.

Observation ids are deterministic functions of Claude Code's own ids (span ids, ``request_id``,
``tool_use_id``, ``prompt.id``), so a later call with late records yields the same ids and the pipeline's
export-once filter drops what was already sent. Usage records follow Claude Code's events (``api_request`` is the ledger
source; a span-only call is recorded with ``cost_source="none"``). Parsing/dedupe lives in
``relay.pipeline.claude_code_events``; ledger records in ``relay.pipeline.claude_code_usage``.
"""

from __future__ import annotations

from typing import Any

from relay.model import Level, Observation, ObservationType, Outcome, TraceInfo
from relay.otlp.values import as_bool, as_int, as_str
from relay.pipeline.claude_code_events import (
    AGENT_TOOLS,
    SPAN_BLOCKED,
    SPAN_EXECUTION,
    SPAN_INTERACTION,
    SPAN_LLM,
    SPAN_TOOL,
    Collected,
    agent_key,
    clean,
    collect,
    cost_nanos,
    cost_usd,
    derive_span_id,
    derive_trace_id,
    error_class,
    error_span_compatible,
    extra_attributes,
    flat_usage,
    is_subagent,
    model_of,
    model_parameters,
    ms_to_ns,
    span_failed,
    span_request_id,
    tool_error,
    tool_name,
    usage_details,
)
from relay.pipeline.claude_code_usage import Ledger
from relay.pipeline.context import MappedTrace, MappingContext
from relay.pipeline.records import LogView, SpanView

__all__ = ["map_interaction", "TRACE_NAME", "ROOT_NAME", "GENERATION_NAME", "RETRIES_NAME"]

TRACE_NAME = "claude_code.interaction"
ROOT_NAME = "claude_code.interaction"
GENERATION_NAME = "claude_code.llm_request"
RETRIES_NAME = "claude_code.api_retries_exhausted"

_ToolRow = tuple[Observation, SpanView | None, str | None]  # (TOOL observation, its span, proposing request_id)


def map_interaction(
    logs: list[LogView], spans: list[SpanView], ctx: MappingContext, known: TraceInfo | None = None
) -> MappedTrace:
    """Map one Claude Code interaction to a Langfuse trace, its observations and usage records.

    ``logs``/``spans``: the interaction's Claude Code records in any order, duplicates allowed. ``known``: the
    trace info of an earlier export of the same interaction (fills user, session, tags, root id… that late records
    lack). Sets ``outcome`` (``forwarded``/``filtered``) on every input record. Returns ``MappedTrace(trace=None)``
    when nothing maps (e.g. only startup events). Times in the result are Unix ns; costs are USD in
    ``cost_details`` and nano-USD in usage records.
    """
    for lv in logs:
        lv.outcome = Outcome.FILTERED.value
    for sv in spans:
        sv.outcome = Outcome.FILTERED.value
    c = collect(logs, spans)
    if c.empty:
        return MappedTrace()
    result = _Mapper(c, ctx, known).run()
    if result.trace is not None:
        for lv in logs:
            if id(lv) in c.used:
                lv.outcome = Outcome.FORWARDED.value
        for sv in spans:
            if id(sv) in c.used:
                sv.outcome = Outcome.FORWARDED.value
    return result


def _start(r: LogView | SpanView) -> int:
    return r.time_ns if isinstance(r, LogView) else r.start_ns


class _Mapper:
    """Builds one interaction's trace; a fresh instance per ``map_interaction`` call."""

    def __init__(self, c: Collected, ctx: MappingContext, known: TraceInfo | None):
        self.c, self.ctx, self.known = c, ctx, known
        self.obs: list[Observation] = []
        kmeta = known.metadata if known else {}
        self.first = c.prompts[0] if c.prompts else (c.logs[0] if c.logs else None)
        pids = [p for v in c.logs if (p := as_str(v.attrs.get("prompt.id")))]
        self.prompt_id = pids[0] if pids else kmeta.get("claude_code.prompt_id")
        tids = ([c.interaction.trace_id] if c.interaction else []) + [s.trace_id for s in c.by_id.values()]
        tids += [v.trace_id for v in c.logs if v.trace_id]
        self.trace_id = (
            (tids[0] if tids else None)
            or (known.trace_id if known else None)
            or (derive_trace_id(self.prompt_id) if self.prompt_id else None)
        )
        self.span_root = self._span_root_id() or kmeta.get("claude_code.interaction_span_id")
        self.root_id = self.span_root or derive_span_id("root", self.prompt_id or self.trace_id)
        self.exec_tool = {h.span_id: h.parent_id for h in c.helpers.values() if h.name == SPAN_EXECUTION}
        self.agent_tool: dict[str, str] = {}
        self.request_agent = {rid: k for rid, v in {**c.responses, **c.requests}.items() if (k := agent_key(v.attrs))}
        rec = self.first or c.interaction or next(iter(c.by_id.values()))
        self.attrs, self.resource = rec.attrs, rec.resource
        self.ledger = Ledger(ctx.identity(self.attrs, self.resource), self.trace_id, self.prompt_id, self._session_id())

    # --- ids and parents ------------------------------------------------------------------------------------------
    def _span_root_id(self) -> str | None:
        """The interaction span id (beta): from the span, else from the records that point at it (observed)."""
        c = self.c
        if c.interaction:
            return c.interaction.span_id
        for v in (*c.prompts, *c.requests.values(), *c.main_responses):
            if v.span_id and not is_subagent(v.attrs):
                return v.span_id
        for s in c.llm:
            if s.parent_id and as_str(s.attrs.get("llm_request.context")) == "interaction":
                return s.parent_id
        return None

    def _session_id(self) -> str | None:
        for rec in (self.first, self.c.interaction, *self.c.logs, *self.c.by_id.values()):
            if rec is not None:
                sid = as_str(rec.attrs.get("session.id")) or as_str(rec.attrs.get("gen_ai.conversation.id"))
                if sid:
                    return sid
        return self.known.session_id if self.known else None

    def parent_of(self, span_parent: str | None, depth: int = 0) -> str:
        """The observation id a span's parent maps to: helper spans fold into their TOOL, unknown → root."""
        s = self.c.by_id.get(span_parent or "")
        if s is None or depth > 8 or s.name == SPAN_INTERACTION:
            return self.root_id
        if s.name == SPAN_TOOL:
            return self.tool_obs_id(s)
        if s.name == SPAN_LLM:
            rid = span_request_id(s)
            return derive_span_id("llm", rid) if rid else s.span_id
        return self.parent_of(s.parent_id, depth + 1)

    def agent_parent(self, key: str | None, span: SpanView | None = None) -> str:
        """Parent of a record: its span's real parent, else its subagent's Agent TOOL, else the root."""
        parent = self.parent_of(span.parent_id) if span else self.root_id
        if parent == self.root_id and key:
            return self.agent_tool.get(key, self.root_id)
        return parent

    @staticmethod
    def tool_obs_id(sp: SpanView) -> str:
        """A tool span's observation id: derived from its ``tool_use_id`` (like the ``tool_result`` event's), so the
        event and the span of one tool call map to one id even when they are mapped in different calls."""
        tuid = as_str(sp.attrs.get("tool_use_id")) or as_str(sp.attrs.get("gen_ai.tool.call.id"))
        return derive_span_id("tool", tuid) if tuid else sp.span_id

    def _add(self, **kw: Any) -> Observation:
        o = Observation(trace_id=self._tid, **kw)
        self.obs.append(o)
        return o

    @property
    def _tid(self) -> str:
        """The trace id (always set once :meth:`run` is past its first check)."""
        assert self.trace_id is not None
        return self.trace_id

    # --- assembly -------------------------------------------------------------------------------------------------
    def run(self) -> MappedTrace:
        """Build every observation and usage record; root first, then by start time."""
        if self.trace_id is None:
            return MappedTrace()
        tools = [row for tuid in self._tool_ids() if (row := self._tool(tuid))]
        self._bind_agents(tools)
        for o, sp, rid in tools:
            parent = self.agent_parent(self.request_agent.get(rid or ""), sp)
            o.parent_id = self.root_id if parent == o.id else parent
        self._generations()
        self._errors()
        self._subagents_completed()
        root = self._root()
        rest = sorted((o for o in self.obs if o is not root), key=lambda o: (o.start_ns, o.id))
        return MappedTrace(trace=self._trace_info(), observations=[root, *rest], usage=self.ledger.records)

    def _tool_ids(self) -> list[str]:
        rejected = {t for t, d in self.c.decisions.items() if as_str(d.attrs.get("decision")) == "reject"}
        return sorted(set(self.c.results) | set(self.c.tools) | rejected)

    def _tool(self, tuid: str) -> _ToolRow | None:
        """One TOOL observation (parent set later) from ``tool_result`` + ``tool_decision`` + beta tool spans;
        None for an accepted tool whose result has not arrived."""
        c, ctx = self.c, self.ctx
        res, dec, sp = c.results.get(tuid), c.decisions.get(tuid), c.tools.get(tuid)
        kids = [h for h in c.helpers.values() if sp and h.parent_id == sp.span_id]
        blk = next((h for h in kids if h.name == SPAN_BLOCKED), None)
        exe = next((h for h in kids if h.name == SPAN_EXECUTION), None)
        da, ba = (dec.attrs if dec else {}), (blk.attrs if blk else {})
        decision, source = (
            as_str(da.get("decision") or ba.get("decision")),
            as_str(da.get("source") or ba.get("source")),
        )
        rejected = res is None and exe is None and decision == "reject"
        if res is None and sp is None and not rejected:
            return None
        ea = res.attrs if res else da
        if sp:
            start, end = sp.start_ns, sp.end_ns
        else:
            src = res or dec
            assert src is not None  # without a span there is a result or a rejected decision
            end = src.time_ns
            start = end - ms_to_ns(ea.get("duration_ms") if res else 0)
        ok = as_bool(ea.get("success")) if res else None
        if exe is not None:
            ok = False if span_failed(exe) else (True if ok is None else ok)
        level, status = Level.DEFAULT, None
        if rejected:
            level, status = Level.WARNING, f"rejected by {source or 'unknown'}"
        elif ok is False:
            level, status = Level.ERROR, tool_error(ea if res else {}, exe)
        out_ev = next((e[2] for e in (sp.events if sp else []) if e[0] == "tool.output"), {})
        output = next((x for k in ("output", "content", "diff") if (x := ctx.content(out_ev.get(k))) is not None), None)
        rid = as_str(ea.get("request_id"))
        meta = clean(
            {
                "tool_use_id": tuid,
                "tool_name": as_str(ea.get("tool_name")),
                "success": ok,
                "decision": decision,
                "decision_source": source,
                "tool_source": as_str(da.get("tool_source")),
                "permission_mode": as_str(da.get("permission_mode")),
                "request_id": rid,
                "error_type": as_str(ea.get("error_type")),
                "duration_ms": as_int(ea.get("duration_ms")) if res else None,
                "tool_input_size_bytes": as_int(ea.get("tool_input_size_bytes")),
                "tool_result_size_bytes": as_int(ea.get("tool_result_size_bytes")),
                "mcp_server_scope": as_str(ea.get("mcp_server_scope")),
                "blocked_on_user_ms": as_int(ba.get("duration_ms")),
                "execution_ms": as_int(exe.attrs.get("duration_ms")) if exe else None,
                **{k: as_str(v) for k, v in ea.items() if k.startswith("vcs.")},
            }
        )
        name = tool_name(sp, ea)
        o = self._add(
            id=derive_span_id("tool", tuid),
            name=name,
            type=ObservationType.TOOL,
            start_ns=start,
            end_ns=max(end, start),
            level=level,
            status_message=status,
            status_error=level == Level.ERROR,
            output=output,
            metadata=meta,
            input=ctx.content(ea.get("tool_input") or ea.get("tool_parameters") or da.get("tool_parameters")),
            attributes=extra_attributes(sp, ctx) if sp else {},
        )
        c.use(res, dec, sp, blk, exe)
        self.ledger.tool(
            tuid,
            name,
            o.end_ns,
            ok is not False and not rejected,
            meta,
            from_span=res is None and dec is None,
            rejected=rejected,
            agent=self.request_agent.get(rid or ""),
        )
        return o, sp, rid

    def _bind_agents(self, tools: list[_ToolRow]) -> None:
        """Map each subagent to its Agent TOOL: by the beta span tree when present (records point at the Agent's
        ``tool.execution`` span), else the i-th subagent (by first activity) to the i-th Agent call (by start)."""
        c = self.c
        first_seen: dict[str, int] = {}
        by_span = {sp.span_id: o.id for o, sp, _ in tools if sp}
        records: list[LogView | SpanView] = [
            *c.requests.values(),
            *c.responses.values(),
            *c.errors,
            *c.subagents.values(),
            *c.llm,
        ]
        for r in sorted(records, key=_start):
            key = agent_key(r.attrs)
            if not key:
                continue
            first_seen.setdefault(key, _start(r))
            anchor = r.span_id if isinstance(r, LogView) else r.parent_id
            tool_id = by_span.get(self.exec_tool.get(anchor or "") or "")
            if tool_id and key not in self.agent_tool:
                self.agent_tool[key] = tool_id
        bound = set(self.agent_tool.values())
        free = [
            o
            for o, _, _ in sorted(tools, key=lambda t: (t[0].start_ns, t[0].id))
            if o.name in AGENT_TOOLS and o.id not in bound and o.level != Level.WARNING
        ]
        pending = sorted((t, k) for k, t in first_seen.items() if k not in self.agent_tool)
        for (_, key), o in zip(pending, free, strict=False):
            self.agent_tool[key] = o.id

    def _generations(self) -> None:
        """One GENERATION per successful API call: event and span joined on ``request_id`` (never both)."""
        c, ctx = self.c, self.ctx
        spans = {span_request_id(s) or "span:" + s.span_id: s for s in reversed(c.llm) if not span_failed(s)}
        for rid in sorted(set(c.requests) | set(spans)):
            ev, sp = c.requests.get(rid), spans.get(rid)
            sa = sp.attrs if sp else {}
            if sp is not None:
                a = ev.attrs if ev else flat_usage(sp.attrs)
                start, end = sp.start_ns, sp.end_ns
            else:
                assert ev is not None  # rid comes from the events or the spans
                a = ev.attrs
                start, end = ev.time_ns - ms_to_ns(a.get("duration_ms")), ev.time_ns
            ttft = a.get("ttft_ms") if a.get("ttft_ms") is not None else sa.get("ttft_ms")
            nanos = cost_nanos(ev.attrs) if ev else None
            resp, key = c.responses.get(rid), agent_key(a)
            self._add(
                # Derived from request_id in both modes: the event and the span of one call get one id even when
                # they are mapped in different calls (export-once then drops the second).
                id=sp.span_id if sp is not None and rid.startswith("span:") else derive_span_id("llm", rid),
                name=GENERATION_NAME,
                type=ObservationType.GENERATION,
                start_ns=start,
                end_ns=end,
                parent_id=self.agent_parent(key, sp),
                model=model_of(a, sa),
                model_parameters=model_parameters(a, sa),
                usage_details=usage_details(a),
                cost_details={"total": usd} if (usd := cost_usd(ev.attrs) if ev else None) is not None else None,
                completion_start_ns=start + ms_to_ns(ttft) if as_int(ttft) is not None else None,
                output=ctx.content(resp.attrs.get("response")) if resp else None,
                metadata=clean(
                    {
                        "request_id": None if rid.startswith(("seq:", "span:")) else rid,
                        "query_source": as_str(a.get("query_source") or sa.get("query_source_safe")),
                        "agent_id": as_str(a.get("agent_id") or sa.get("agent_id")),
                        "agent_name": as_str(a.get("agent.name")),
                        "attempt": as_int(sa.get("attempt")),
                        "stop_reason": as_str(sa.get("stop_reason")),
                        "mcp_server.name": as_str(a.get("mcp_server.name")),
                        "mcp_tool.name": as_str(a.get("mcp_tool.name")),
                    }
                ),
                attributes=extra_attributes(sp, ctx) if sp else {},
            )
            c.use(ev, sp, resp)
            self.ledger.llm(rid, a, end, key, nanos, from_span=ev is None)

    def _error_pairs(self) -> list[tuple[LogView | None, SpanView | None]]:
        """``api_error`` events paired with ERROR ``llm_request`` spans (by request_id, else the compatible span
        ending closest to the event; observed: 529 has no request_id); unpaired spans come last with no event."""
        free = [s for s in self.c.llm if span_failed(s)]
        pairs: list[tuple[LogView | None, SpanView | None]] = []
        for ev in self.c.errors:
            rid = as_str(ev.attrs.get("request_id"))
            sp = next((s for s in free if rid and span_request_id(s) == rid), None)
            if sp is None and not rid:
                cands = [s for s in free if not span_request_id(s) and error_span_compatible(ev, s)]
                sp = min(cands, key=lambda s: (abs(s.end_ns - ev.time_ns), s.span_id), default=None)
            if sp is not None:
                free.remove(sp)
            pairs.append((ev, sp))
        return pairs + [(None, s) for s in free]

    def _errors(self) -> None:
        """ERROR GENERATIONs for failed calls and ERROR EVENTs for ``api_retries_exhausted`` (one per event)."""
        for ev, sp in self._error_pairs():
            a, sa = (ev.attrs if ev else {}), (sp.attrs if sp else {})
            rid = as_str(a.get("request_id")) or (span_request_id(sp) if sp else None)
            if rid:
                key = f"llm-error:{rid}"
            elif ev is not None:
                key = f"llm-error:{as_str(a.get('session.id'))}:{as_int(a.get('event.sequence'))}:{ev.time_ns}"
            else:
                assert sp is not None  # a pair has an event or a span
                key = f"llm-error:span:{sp.span_id}"
            text = as_str(a.get("error")) or ((sp.status_message or as_str(sa.get("error"))) if sp else None)
            status = as_int(a.get("status_code")) if a.get("status_code") is not None else as_int(sa.get("status_code"))
            eclass = error_class(status, text, as_str(sa.get("error_class")))
            if sp is not None:
                start, end = sp.start_ns, sp.end_ns
            else:
                assert ev is not None
                start, end = ev.time_ns - ms_to_ns(a.get("duration_ms")), ev.time_ns
            agent = agent_key(a or sa)
            self._add(
                id=sp.span_id if sp else derive_span_id("llm-error", key),
                name=GENERATION_NAME,
                type=ObservationType.GENERATION,
                start_ns=start,
                end_ns=end,
                parent_id=self.agent_parent(agent, sp),
                level=Level.ERROR,
                status_message=text,
                status_error=True,
                model=model_of(a, sa),
                model_parameters=model_parameters(a, sa),
                metadata=clean(
                    {
                        "request_id": rid,
                        "status_code": status,
                        "error_class": eclass,
                        "attempt": as_int(a.get("attempt") or sa.get("attempt")),
                        "query_source": as_str(a.get("query_source") or sa.get("query_source_safe")),
                        "agent_id": as_str(a.get("agent_id") or sa.get("agent_id")),
                    }
                ),
                attributes=extra_attributes(sp, self.ctx) if sp else {},
            )
            self.c.use(ev, sp)
            self.ledger.error(key, a or sa, end, agent, status, eclass, text, from_span=ev is None)
        for ev in self.c.exhausted:
            a, status, text = ev.attrs, as_int(ev.attrs.get("status_code")), as_str(ev.attrs.get("error"))
            self._add(
                id=derive_span_id("retries", as_str(a.get("session.id")), as_int(a.get("event.sequence")), ev.time_ns),
                name=RETRIES_NAME,
                type=ObservationType.EVENT,
                start_ns=ev.time_ns,
                end_ns=ev.time_ns,
                parent_id=self.agent_parent(agent_key(a)),
                level=Level.ERROR,
                status_message=text,
                status_error=True,
                model=as_str(a.get("model")),
                metadata=clean(
                    {
                        "status_code": status,
                        "error_class": error_class(status, text),
                        "total_attempts": as_int(a.get("total_attempts")),
                        "total_retry_duration_ms": as_int(a.get("total_retry_duration_ms")),
                        "query_source": as_str(a.get("query_source")),
                    }
                ),
            )
            self.c.use(ev)
            self.ledger.retries_exhausted(a, ev.time_ns, agent_key(a), status, error_class(status, text), text)

    def _subagents_completed(self) -> None:
        """``subagent_completed`` → metadata on the subagent's Agent TOOL (filtered when that TOOL is not here)."""
        by_id = {o.id: o for o in self.obs}
        for agent_id, ev in self.c.subagents.items():
            tool = by_id.get(self.agent_tool.get(agent_id, ""))
            if tool is None:
                continue
            a = ev.attrs
            tool.metadata.update(
                clean(
                    {
                        "agent_id": agent_id,
                        "agent_type": as_str(a.get("agent_type")),
                        "total_tokens": as_int(a.get("total_tokens")),
                        "total_tool_uses": as_int(a.get("total_tool_uses")),
                        "subagent_duration_ms": as_int(a.get("duration_ms")),
                        "is_async": as_bool(a.get("is_async")),
                        "final_model": as_str(a.get("final_model")),
                    }
                )
            )
            self.c.use(ev)

    def _root(self) -> Observation:
        """The AGENT root: prompt in, last main-agent response out; mid-turn prompts become span events. Times:
        the interaction span's, else earliest to latest record."""
        c, ctx, sp = self.c, self.ctx, self.c.interaction
        main = [p for p in c.prompts if as_str(p.attrs.get("delivery.mode")) != "mid_turn"] or c.prompts
        prompt = main[0] if main else None
        text = (prompt.attrs.get("prompt") or prompt.attrs.get("prompt_text")) if prompt else None
        if text is None and sp is not None:
            text = sp.attrs.get("user_prompt")
        last = max(c.main_responses, key=lambda v: v.time_ns, default=None)
        times = [t for o in self.obs for t in (o.start_ns, o.end_ns)] + [v.time_ns for v in c.logs if id(v) in c.used]
        times += [p.time_ns for p in c.prompts]
        start, end = (sp.start_ns, sp.end_ns) if sp else (min(times, default=0), max(times, default=0))
        events = [
            (
                "user_prompt",
                p.time_ns,
                clean(
                    {
                        "delivery.mode": as_str(p.attrs.get("delivery.mode")),
                        "prompt": ctx.content(p.attrs.get("prompt")),
                    }
                ),
            )
            for p in c.prompts
            if p is not prompt
        ]
        c.use(sp, *c.prompts, last)
        length = prompt.attrs.get("prompt_length") if prompt else (sp.attrs.get("user_prompt_length") if sp else None)
        return self._add(
            id=self.root_id,
            name=ROOT_NAME,
            type=ObservationType.AGENT,
            start_ns=start,
            end_ns=end,
            input=ctx.content(text),
            output=ctx.content(last.attrs.get("response")) if last else None,
            metadata=clean(
                {
                    "prompt_id": self.prompt_id,
                    "prompt_length": as_int(length),
                    "interaction_sequence": as_int(sp.attrs.get("interaction.sequence")) if sp else None,
                    "mid_turn_prompts": len(events) or None,
                }
            ),
            attributes=extra_attributes(sp, ctx) if sp else {},
            events=events,
        )

    def _trace_info(self) -> TraceInfo:
        """Trace-level fields (Langfuse v4 reads them per span: the encoder copies them onto every span); gaps
        filled from ``known``."""
        k = self.known or TraceInfo(trace_id=self._tid)
        ident, a, res = self.ledger.identity, self.attrs, self.resource
        meta = {**k.metadata, **ident.metadata}
        meta.update(
            {
                key: v
                for key, v in {
                    "claude_code.prompt_id": self.prompt_id,
                    "claude_code.interaction_span_id": self.span_root,
                    "terminal.type": as_str(a.get("terminal.type")),
                    "service.version": as_str(res.get("service.version")),
                    "app.entrypoint": as_str(a.get("app.entrypoint")),
                    "os.type": as_str(res.get("os.type")),
                }.items()
                if v
            }
        )
        return TraceInfo(
            trace_id=self._tid,
            name=TRACE_NAME,
            user_id=ident.user_id or k.user_id,
            session_id=self.ledger.session_id or k.session_id,
            tags=list(ident.tags or k.tags),
            metadata=meta,
            environment=self.ctx.environment_of(a, res) or k.environment,
            release=self.ctx.release or k.release,
            version=as_str(res.get("service.version")) or k.version,
            resource=dict(res) or dict(k.resource),
        )
