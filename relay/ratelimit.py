"""Per-tenant rate limits (``tenants[].rate_limit``): a token bucket in items (spans, log records, metric data
points) per second. Over the limit receivers answer 429 + ``Retry-After`` (OTLP/HTTP) or ``RESOURCE_EXHAUSTED``
with ``RetryInfo`` (OTLP/gRPC), the throttling answers of the OTLP spec
(https://opentelemetry.io/docs/specs/otlp/#otlphttp-throttling, https://opentelemetry.io/docs/specs/otlp/#otlpgrpc-throttling).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["TokenBucket", "TenantLimiter"]


@dataclass
class TokenBucket:
    """``rate`` items per second, at most ``burst`` items saved up. A request of ``n`` items passes when the bucket
    holds ``min(n, burst)`` items (so a request larger than the burst still passes from a full bucket, leaving a
    debt that later requests wait for)."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, n: int, now: float) -> float:
        """Take ``n`` items; returns 0.0 when allowed, else the seconds until the request would pass."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        need = min(float(n), self.burst)
        if self.tokens >= need:
            self.tokens -= n
            return 0.0
        return (need - self.tokens) / self.rate


class TenantLimiter:
    """Token buckets per tenant from ``{tenant: (items_per_second, burst)}``; tenants not listed are unlimited.
    ``clock`` is a monotonic clock in seconds (injectable for tests)."""

    def __init__(self, limits: dict[str, tuple[float, float]], clock: Callable[[], float] = time.monotonic):
        now = clock()
        self._clock = clock
        self._buckets = {t: TokenBucket(rate, burst, burst, now) for t, (rate, burst) in limits.items()}

    def __bool__(self) -> bool:
        return bool(self._buckets)

    def take(self, tenant: str, items: int) -> float:
        """0.0 when ``tenant`` may send ``items`` now, else the seconds to wait (a ``Retry-After`` hint)."""
        bucket = self._buckets.get(tenant)
        return 0.0 if bucket is None else bucket.take(items, self._clock())
