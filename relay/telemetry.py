"""relay's own metrics: one :class:`Telemetry` object owning a ``prometheus_client.CollectorRegistry``.

Names follow the OpenTelemetry Collector's self-observability metrics where a concept exists there
(https://opentelemetry.io/docs/collector/internal-telemetry/ and ``docs/observability.md`` in
open-telemetry/opentelemetry-collector), so operators recognise them; relay-specific metrics use
the ``relay_`` prefix. ``prometheus_client`` appends ``_total`` to counter names on exposition.

Adding metrics: create them in ``__init__`` (or in a subclass / your component) with ``registry=self.registry``
and keep them as public attributes with a comment saying what they count, e.g.::

    self.exporter_sent_spans = Counter("otelcol_exporter_sent_spans", "…", ["exporter", "tenant"],
                                       registry=self.registry)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

from relay.model import Signal

__all__ = ["Telemetry", "OutcomeCounts", "RECEIVER", "CONTENT_TYPE_LATEST"]

log = logging.getLogger(__name__)

#: Value of the ``receiver`` label on receiver metrics.
RECEIVER = "otlp"

_ITEM_LABELS = ["receiver", "transport", "tenant"]
_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class OutcomeCounts:
    """``relay_items_total{tenant, signal, outcome, reason}``: every accepted item's one fate
    (:class:`relay.model.Outcome`).

    The totals are durable: the spool writes each increment in the same SQLite transaction that decides the
    items' fate (``outcomes`` table, ``relay.store.schema``) and loads the totals at start, so they survive
    restarts and a ``kill -9`` never counts an item twice or not at all. Exposed as a Prometheus counter through a
    custom collector; thread-safe. ``signal`` is ``traces``/``logs``/``metrics``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n: dict[tuple[str, str, str, str], int] = {}
        #: Durable writer of outcome rows (the spool sets it): ``await sink(rows)`` stores them and adds them here.
        self.sink: Callable[[list[tuple[str, str, str, str, int]]], Awaitable[None]] | None = None

    async def record(self, rows: list[tuple[str, str, str, str, int]]) -> None:
        """Count ``rows`` decided outside any other spool write (e.g. a request whose items were all invalid):
        through ``sink`` when set — if that write fails they are counted in memory only, and logged —, else in
        memory."""
        if self.sink is not None:
            try:
                await self.sink(rows)
                return
            except Exception as e:  # counting must never fail the request
                log.warning("outcomes could not be stored (%s: %s); counted in memory only", type(e).__name__, e)
        self.add(rows)

    def add(self, rows: Iterable[tuple[str, str, str, str, int]]) -> None:
        """Add ``(tenant, signal, outcome, reason, n)`` rows (n items each)."""
        with self._lock:
            for tenant, signal, outcome, reason, n in rows:
                if n:
                    key = (tenant, str(signal), str(outcome), reason)
                    self._n[key] = self._n.get(key, 0) + n

    def declare(self, tenants: Iterable[str], reasons: dict[str, tuple[str, ...]]) -> None:
        """Create series at 0 (so dashboards see 0, not "no data"): every tenant × signal × outcome × reason of
        ``reasons`` (outcome → reasons)."""
        with self._lock:
            for tenant in tenants:
                for signal in ("traces", "logs", "metrics"):
                    for outcome, rs in reasons.items():
                        for reason in rs:
                            self._n.setdefault((tenant, signal, str(outcome), reason), 0)

    def reset(self, rows: Iterable[tuple[str, str, str, str, int]]) -> None:
        """Replace the totals with ``rows`` (as loaded from the database at start)."""
        with self._lock:
            self._n.clear()
        self.add(rows)

    def total(
        self,
        signal: str | None = None,
        outcome: str | None = None,
        reason: str | None = None,
        tenant: str | None = None,
    ) -> int:
        """Sum of the counts matching the given labels (None: any)."""
        with self._lock:
            return sum(
                n
                for (t, s, o, r), n in self._n.items()
                if (signal is None or s == signal)
                and (outcome is None or o == outcome)
                and (reason is None or r == reason)
                and (tenant is None or t == tenant)
            )

    def snapshot(self) -> dict[tuple[str, str, str, str], int]:
        """A copy of ``{(tenant, signal, outcome, reason): n}``."""
        with self._lock:
            return dict(self._n)

    def collect(self) -> Iterator[CounterMetricFamily]:
        """prometheus_client collector protocol."""
        fam = CounterMetricFamily(
            "relay_items",
            "Accepted items by their one final outcome (forwarded, filtered, "
            "invalid, dead_lettered, quarantined) and reason.",
            labels=["tenant", "signal", "outcome", "reason"],
        )
        for (t, s, o, r), n in sorted(self.snapshot().items()):
            fam.add_metric([t, s, o, r], n)
        yield fam


class Telemetry:
    """All relay metrics, registered on ``self.registry`` (a fresh registry unless one is passed).

    Receiver metrics (labels: ``receiver`` = ``otlp``, ``transport`` = ``http``/``grpc``, ``tenant``):

    - ``otelcol_receiver_accepted_{spans,metric_points,log_records}_total``: items durably handed to the spool
      (duplicates of an already stored request are not counted again);
    - ``otelcol_receiver_refused_{…}_total``: items the spool refused (full / shutting down); the client got
      503 / UNAVAILABLE and may retry;
    - ``otelcol_receiver_failed_{…}_total``: items lost to an unexpected internal error of the sink;
    - ``relay_receiver_rejected_{…}_total``: items removed as invalid (partial success, never retried);
    - ``otelcol_receiver_requests_total{receiver,transport,signal,status}``: requests by outcome; ``status`` is
      the HTTP status code (``"200"``, ``"413"``…) or the gRPC status name (``"OK"``, ``"UNAVAILABLE"``…);
    - ``relay_receiver_duplicate_requests_total{receiver,transport,tenant,signal}``: byte-identical resends the
      sink recognised by their dedup key (answered with success, stored once);
    - ``relay_receiver_request_duration_seconds{transport,signal}``: time from request arrival (body read) to
      the answer being ready, seconds.

    Per-signal counters are also reachable as ``accepted[signal]``, ``refused[signal]``, ``failed[signal]`` and
    ``rejected[signal]``.

    Item fates: ``relay_items_total{tenant,signal,outcome,reason}`` (:class:`OutcomeCounts`, attribute ``outcomes``).
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        #: Every accepted item's final outcome (durable totals, fed by the spool).
        self.outcomes = OutcomeCounts()
        r.register(self.outcomes)

        def per_signal(prefix: str, what: str) -> dict[Signal, Counter]:
            return {
                s: Counter(
                    f"{prefix}_{s.item_name}", f"{what} ({s.item_name.replace('_', ' ')})", _ITEM_LABELS, registry=r
                )
                for s in Signal
            }

        #: Items accepted into the spool, per signal.
        self.accepted = per_signal(
            "otelcol_receiver_accepted", "Items successfully received and durably queued by the receiver"
        )
        #: Items refused because the spool could not take them (client told to retry), per signal.
        self.refused = per_signal(
            "otelcol_receiver_refused", "Items that could not be pushed into the pipeline (client told to retry)"
        )
        #: Items lost to internal errors of the sink, per signal.
        self.failed = per_signal("otelcol_receiver_failed", "Items that failed with an internal error")
        #: Items removed by validation and reported as partial success, per signal.
        self.rejected = per_signal("relay_receiver_rejected", "Invalid items rejected with a partial success")
        self.receiver_accepted_spans = self.accepted[Signal.TRACES]
        self.receiver_accepted_metric_points = self.accepted[Signal.METRICS]
        self.receiver_accepted_log_records = self.accepted[Signal.LOGS]
        self.receiver_refused_spans = self.refused[Signal.TRACES]
        self.receiver_refused_metric_points = self.refused[Signal.METRICS]
        self.receiver_refused_log_records = self.refused[Signal.LOGS]
        #: Requests by outcome.
        self.receiver_requests = Counter(
            "otelcol_receiver_requests",
            "Export requests received, by response status",
            ["receiver", "transport", "signal", "status"],
            registry=r,
        )
        #: Byte-identical resends answered with success and not stored again.
        self.receiver_duplicate_requests = Counter(
            "relay_receiver_duplicate_requests",
            "Export requests recognised as duplicates of a stored request",
            ["receiver", "transport", "tenant", "signal"],
            registry=r,
        )
        #: Time to answer an export request, seconds.
        self.receiver_request_duration = Histogram(
            "relay_receiver_request_duration_seconds",
            "Time from reading an export request to its answer",
            ["transport", "signal"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format (serve with :data:`CONTENT_TYPE_LATEST`)."""
        return generate_latest(self.registry)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Sum of the samples called ``name`` (e.g. ``"otelcol_receiver_accepted_spans_total"``) whose labels
        include ``labels`` (a partial match); 0.0 when none. Convenience for tests and health checks."""
        want = (labels or {}).items()
        return sum(
            s.value
            for metric in self.registry.collect()
            for s in metric.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in want)
        )
