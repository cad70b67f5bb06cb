"""OTLP/JSON id rewriting: hex ``traceId``/``spanId`` → base64, so ``json_format.ParseDict`` can read them.

OTLP/JSON deviates from the proto3 JSON mapping (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding):
``traceId``, ``spanId`` and ``parentSpanId`` are case-insensitive hex strings, not base64. Only the id fields
at their known places are rewritten — spans and span links, log records, and exemplars of metric data
points — so a ``bytesValue`` attribute (which *is* base64) is never touched. The snake_case spellings
(``trace_id``) are tolerated as well, since ``ParseDict`` accepts them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

from relay.model import Signal
from relay.otlp.compression import CodecError

__all__ = ["hex_ids_to_base64"]

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_METRIC_KINDS = ("gauge", "sum", "histogram", "exponentialHistogram", "summary", "exponential_histogram")


def hex_ids_to_base64(signal: Signal, tree: dict[str, Any]) -> None:
    """Rewrite, in place, every hex id of an OTLP/JSON export request ``tree`` (from ``json.loads``) to base64.

    Raises :class:`CodecError` with ``field`` set (e.g. ``resourceSpans[0].scopeSpans[1].spans[2].spanId``)
    when an id is not a string of hex digit pairs. Structural problems (a list where an object belongs) are
    left for ``ParseDict`` to report.
    """
    if signal is Signal.TRACES:
        for path, span in _walk(tree, ("resourceSpans", "scopeSpans", "spans")):
            _rewrite(span, path)
            for i, link in _children(span, "links"):
                _rewrite(link, f"{path}.links[{i}]")
    elif signal is Signal.LOGS:
        for path, rec in _walk(tree, ("resourceLogs", "scopeLogs", "logRecords")):
            _rewrite(rec, path)
    else:
        for path, metric in _walk(tree, ("resourceMetrics", "scopeMetrics", "metrics")):
            for kind in _METRIC_KINDS:
                data = metric.get(kind)
                if not isinstance(data, dict):
                    continue
                for i, dp in _children(data, "dataPoints"):
                    for j, ex in _children(dp, "exemplars"):
                        _rewrite(ex, f"{path}.{kind}.dataPoints[{i}].exemplars[{j}]")


def _snake(key: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)


def _children(obj: dict[str, Any], key: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Dict elements of the list under ``key`` (or its snake_case spelling), with their indexes."""
    value = obj.get(key)
    if value is None:
        value = obj.get(_snake(key))
    if isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, dict):
                yield i, v


def _walk(tree: dict[str, Any], keys: tuple[str, str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
    a, b, c = keys
    for i, x in _children(tree, a):
        for j, y in _children(x, b):
            for k, z in _children(y, c):
                yield f"{a}[{i}].{b}[{j}].{c}[{k}]", z


def _rewrite(obj: dict[str, Any], path: str) -> None:
    for key in _ID_KEYS:
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not _HEX.fullmatch(value):
            raise CodecError(
                f"{path}.{key} must be a hex string (OTLP/JSON ids are hex, not base64), got {str(value)[:40]!r}",
                field=f"{path}.{key}",
            )
        obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
