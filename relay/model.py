"""relay's internal data model: the shapes that flow between receivers, pipeline, exporters and ledger.

Units: times are Unix **nanoseconds** (``*_ns``) as in OTLP; durations on usage records are **milliseconds**
(``*_ms``) as Claude Code reports them; money is **USD** (float) with an exact integer form in **nano-USD**
(``cost_nanos``) for the ledger; tokens are integer counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any

__all__ = [
    "usd_to_nanos",
    "NANOS_PER_USD",
    "Signal",
    "Outcome",
    "OUTCOME_REASONS",
    "ObservationType",
    "Level",
    "TraceInfo",
    "Observation",
    "UsageRecord",
]


#: nano-USD per USD: the ledger's integer money unit.
NANOS_PER_USD = 1_000_000_000


def usd_to_nanos(usd: float | str | Decimal) -> int:
    """A USD amount as integer nano-USD, rounded half-up on its shortest decimal form (``repr`` of a float), so
    float noise never moves it: exact for any amount with at most nine decimals (``0.0612345`` → ``61234500``).
    Raises ``decimal.InvalidOperation`` for a non-numeric string and ``ValueError`` for NaN/infinity."""
    d = Decimal(repr(float(usd))) if isinstance(usd, float) else Decimal(str(usd))
    if not d.is_finite():
        raise ValueError(f"not a finite USD amount: {usd!r}")
    return int((d * NANOS_PER_USD).quantize(Decimal(1), rounding=ROUND_HALF_UP))


class Signal(StrEnum):
    """An OTLP signal; the value is the path segment (``/v1/<value>``)."""

    TRACES = "traces"
    METRICS = "metrics"
    LOGS = "logs"

    @property
    def item_name(self) -> str:
        """The Collector's item name for this signal, used in metric names (spans, metric_points, log_records)."""
        return {"traces": "spans", "metrics": "metric_points", "logs": "log_records"}[self.value]


class Outcome(StrEnum):
    """The one fate every accepted item (span, log record, metric data point) ends in, counted once in
    ``relay_items_total{tenant, signal, outcome, reason}`` (the rule of Sentry Relay's outcomes,
    https://getsentry.github.io/relay/relay_server/services/outcome/index.html : every item that entered ends in
    exactly one outcome, emitted by the component that decided it).

    Outcomes and their reasons, with who emits them:

    - ``forwarded``: the item became (or was merged into) a span that Langfuse acknowledged with a 2xx.
      Reason ``langfuse``. Emitted by the Langfuse exporter, in the transaction that deletes the acknowledged
      batch (``Spool.ack_outbound``).
    - ``filtered``: deliberately not forwarded; emitted by the pipeline worker in the transaction that closes the
      item's trace or deletes its request. Reasons: ``ledger_only`` (metric data points: kept in the usage
      ledger, Langfuse stores traces only), ``no_trace`` (records that belong to no trace, e.g. Claude Code
      start-up events), ``not_mapped`` (records the mapper made no observation of), ``duplicate`` (their
      observations were already exported), ``export_disabled`` (the tenant has no Langfuse keys).
    - ``invalid``: rejected by the receiver per OTLP's field rules and reported in ``partial_success``. Reasons:
      ``trace_id``, ``span_id``, ``parent_span_id``, ``timestamp`` (a fixed64 time at or beyond 2^63 ns).
      Emitted by the OTLP receivers: in the spool write that stores the rest of the request, or on its own when no
      item of the request was valid.
    - ``dead_lettered``: Langfuse refused the span's batch permanently; kept in the dead-letter store for
      ``relay replay``. Reason ``http_<status>`` (e.g. ``http_400``) or ``no_status``. Emitted by the exporter
      (``Spool.dead_letter``).
    - ``quarantined``: the pipeline failed on the item deterministically (the same error ``max_attempts`` times:
      a poison item); its request is kept in the quarantine table for ``relay replay --quarantined``. Reasons
      ``decode``, ``mapping``, ``ledger``. Emitted by the pipeline worker (``Spool.quarantine``).

    Items of a byte-identical resend (recognised by the request's dedup key) are not accepted again and get no
    second outcome. Items replayed by an operator (``relay replay``) are counted again when they reach a fate.
    """

    FORWARDED = "forwarded"
    FILTERED = "filtered"
    INVALID = "invalid"
    DEAD_LETTERED = "dead_lettered"
    QUARANTINED = "quarantined"


#: The fixed reasons of each outcome (``dead_lettered`` reasons depend on the HTTP status: ``http_<status>``).
OUTCOME_REASONS: dict[Outcome, tuple[str, ...]] = {
    Outcome.FORWARDED: ("langfuse",),
    Outcome.FILTERED: ("ledger_only", "no_trace", "not_mapped", "duplicate", "export_disabled"),
    Outcome.INVALID: ("trace_id", "span_id", "parent_span_id", "timestamp"),
    Outcome.DEAD_LETTERED: (),
    Outcome.QUARANTINED: ("decode", "mapping", "ledger"),
}


class ObservationType(StrEnum):
    """Langfuse observation types (``langfuse.observation.type``), https://langfuse.com/docs/observability/features/observation-types."""

    SPAN = "span"
    GENERATION = "generation"
    EVENT = "event"
    AGENT = "agent"
    TOOL = "tool"
    CHAIN = "chain"
    EMBEDDING = "embedding"
    RETRIEVER = "retriever"
    GUARDRAIL = "guardrail"
    EVALUATOR = "evaluator"


class Level(StrEnum):
    """Langfuse observation levels (``langfuse.observation.level``)."""

    DEBUG = "DEBUG"
    DEFAULT = "DEFAULT"
    WARNING = "WARNING"
    ERROR = "ERROR"


@dataclass
class TraceInfo:
    """Trace-level fields. Langfuse v4 reads them per span, so the encoder copies them onto every span.

    ``trace_id`` is 32 lowercase hex characters. ``tags`` are strings; ``metadata`` values are strings.
    """

    trace_id: str
    name: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    environment: str | None = None
    release: str | None = None
    version: str | None = None
    #: OTLP resource attributes to send on the resource (plain Python values).
    resource: dict[str, Any] = field(default_factory=dict)


@dataclass
class Observation:
    """One Langfuse observation, to be encoded as one OTLP span.

    Ids are lowercase hex: ``id`` 16 chars (span id), ``trace_id`` 32 chars. ``usage_details`` maps Langfuse
    usage keys (``input``, ``output``, ``cache_read_input_tokens``, ``input_cache_creation_5m``,
    ``input_cache_creation_1h``) to token counts; ``cost_details`` maps keys (``total``) to USD.
    ``attributes`` are extra OTLP span attributes kept as-is (e.g. Claude Code's own attributes).
    """

    id: str
    trace_id: str
    name: str
    type: ObservationType
    start_ns: int
    end_ns: int
    parent_id: str | None = None
    level: Level = Level.DEFAULT
    status_message: str | None = None
    model: str | None = None
    model_parameters: dict[str, Any] | None = None
    usage_details: dict[str, int] | None = None
    cost_details: dict[str, float] | None = None
    completion_start_ns: int | None = None
    input: Any = None
    output: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    #: OTLP span events, each ``(name, time_ns, attributes)``.
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    status_error: bool = False
    #: The instrumentation scope ``(name, version)`` of the span this observation came from (Langfuse shows it as
    #: ``metadata.scope``); None for observations relay synthesises (exported under relay's own scope).
    scope: tuple[str, str] | None = None


@dataclass
class UsageRecord:
    """One LLM call or tool call for the usage ledger, counted once by ``key``.

    ``kind`` is ``llm`` or ``tool``. ``key`` is stable across duplicates (e.g. ``llm:<request_id>``,
    ``tool:<tool_use_id>``). Tokens are counts; ``input_tokens`` excludes cache reads and writes (Anthropic
    semantics). ``cost_nanos`` is nano-USD (exact); ``cost_source`` is ``reported`` (by the agent) or
    ``computed`` (by relay's price table) or ``none``.
    """

    key: str
    kind: str
    time_ns: int
    tenant: str = ""
    session_id: str | None = None
    trace_id: str | None = None
    prompt_id: str | None = None
    user: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    agent: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_creation_5m_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    cost_nanos: int = 0
    cost_source: str = "none"
    duration_ms: float | None = None
    ttft_ms: float | None = None
    success: bool = True
    status_code: int | None = None
    error_class: str | None = None
    error: str | None = None
    tool_name: str | None = None
    decision: str | None = None
    decision_source: str | None = None
    source: str = ""

    def label_set(self) -> dict[str, str]:
        """The labels rules match and group on (all strings; absent values omitted).

        Built-in: ``tenant``, ``kind`` (``llm``/``tool``), ``user``, ``session``, ``trace``, ``prompt``,
        ``agent``, ``model``, ``tool``, ``success`` (``true``/``false``), ``status_code``, ``error_class``,
        ``decision``, ``decision_source``, ``source``, ``cost_source``; plus every configured label of the record
        (``labels``: identity metadata such as ``team.id``, ``department``, ``cost_center``, and the tenant's
        labels), which never override a built-in one.
        """
        out = {k: v for k, v in self.labels.items() if v is not None}
        builtin = {
            "tenant": self.tenant,
            "kind": self.kind,
            "user": self.user,
            "session": self.session_id,
            "trace": self.trace_id,
            "prompt": self.prompt_id,
            "agent": self.agent,
            "model": self.model,
            "tool": self.tool_name,
            "success": "true" if self.success else "false",
            "status_code": None if self.status_code is None else str(self.status_code),
            "error_class": self.error_class,
            "decision": self.decision,
            "decision_source": self.decision_source,
            "source": self.source,
            "cost_source": self.cost_source,
        }
        out.update({k: str(v) for k, v in builtin.items() if v not in (None, "")})
        return out
