"""Metric data points kept for the usage ledger (Langfuse stores traces only; metrics never go there).

Claude Code's metrics are monotonic Sums in ``asDouble``, DELTA by default or CUMULATIVE
(https://code.claude.com/docs/en/monitoring-usage "Metrics"; observed in Claude Code's exports,
``tests/fixtures/claude-code/``). Each Sum/Gauge data point becomes one row keyed by (tenant, metric name, series,
start, time), so a re-sent request adds nothing. ``series`` is a hash of the merged resource and point attributes.
Histogram, exponential histogram and summary points are not kept (counted as filtered).

Each point also carries its ledger identity — user and labels by the same rules as usage records (the tenant's
identity settings in ``MappingContext``, tenant labels merged by ``relay.usage.labels.ledger_labels``) — so the
ledger can group lines of code, commits and metric-derived usage by user and team like per-call records.
"""

from __future__ import annotations

import hashlib
import json

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from relay.otlp.values import attrs_to_dict
from relay.pipeline.context import MappingContext
from relay.usage.labels import ledger_labels
from relay.usage.metrics import MetricPoint

__all__ = ["metric_rows"]


def metric_rows(
    tenant: str, req: ExportMetricsServiceRequest, ctx: MappingContext | None = None
) -> tuple[list[MetricPoint], int]:
    """A ``MetricPoint`` (tenant, name, series, start_ns, time_ns, value, temporality, unit, attributes_json, user,
    labels, monotonic) for every Sum and Gauge data point, and the number of other data points skipped. Temporality
    is the OTLP enum (1 delta, 2 cumulative; 0 for gauges). ``ctx`` gives the identity rules and tenant labels;
    without it user and labels are empty."""
    rows: list[MetricPoint] = []
    skipped = 0
    for rm in req.resource_metrics:
        resource = attrs_to_dict(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                monotonic = True
                if kind == "sum":
                    points, temporality = m.sum.data_points, m.sum.aggregation_temporality
                    monotonic = m.sum.is_monotonic
                elif kind == "gauge":
                    points, temporality = m.gauge.data_points, 0
                else:
                    skipped += _count(m, kind)
                    continue
                for p in points:
                    point_attrs = attrs_to_dict(p.attributes)
                    attrs = {**resource, **point_attrs}
                    blob = json.dumps(attrs, sort_keys=True, default=str)
                    series = hashlib.sha1(blob.encode()).hexdigest()[:16]
                    value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
                    user, labels = None, {}
                    if ctx is not None:
                        ident = ctx.identity(point_attrs, resource)
                        user, labels = ident.user_id, ledger_labels(ident.metadata, ctx.labels)
                    rows.append(
                        MetricPoint(
                            tenant,
                            m.name,
                            series,
                            p.start_time_unix_nano,
                            p.time_unix_nano,
                            value,
                            temporality,
                            m.unit,
                            blob,
                            user,
                            labels,
                            monotonic,
                        )
                    )
    return rows, skipped


def _count(m, kind: str | None) -> int:
    if kind is None:
        return 0
    return len(getattr(m, kind).data_points)
