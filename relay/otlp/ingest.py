"""The seam between the OTLP receivers and the durable spool.

The HTTP and gRPC receivers decode and validate a request, then hand it to an :data:`Ingest` callable and only
answer the client after that callable returned. The sink (the SQLite spool with group commit) decides whether it
can take the data now; a refusal becomes 503 + ``Retry-After`` (HTTP) or ``UNAVAILABLE`` + ``RetryInfo`` (gRPC),
as in the OTLP spec's "OTLP/HTTP Throttling" and "OTLP/gRPC Throttling"
(https://opentelemetry.io/docs/specs/otlp/#otlphttp-throttling, #otlpgrpc-throttling).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from relay.model import Signal

__all__ = ["IngestRequest", "IngestRefused", "IngestThrottled", "Ingest", "dedup_key"]


@dataclass(frozen=True)
class IngestRequest:
    """One accepted export request, ready to be stored.

    - ``tenant``: the tenant name (from :class:`relay.auth.TenantResolver`);
    - ``signal``: traces, metrics or logs;
    - ``payload``: the request as a serialized protobuf ``Export{Trace,Logs,Metrics}ServiceRequest`` (JSON
      requests are converted to protobuf), with rejected items removed;
    - ``items``: accepted item count (spans / log records / metric data points), always > 0;
    - ``dedup_key``: 32-byte sha256 over (tenant, signal, decompressed body as received), see :func:`dedup_key`;
      a byte-identical client retry yields the same key;
    - ``rejected_by``: items the receiver removed as invalid, per reason code (their ``invalid`` outcome is
      counted by the sink together with the stored request).
    """

    tenant: str
    signal: Signal
    payload: bytes
    items: int
    dedup_key: bytes
    rejected_by: dict[str, int] = field(default_factory=dict)


class IngestRefused(Exception):
    """Raised by the sink when it cannot take the data now (spool full, shutting down).

    ``retry_after`` is a hint in seconds (float, > 0) sent back to the client; ``reason`` is an English,
    developer-facing explanation that ends up in ``google.rpc.Status.message``.
    """

    def __init__(self, reason: str, retry_after: float = 1.0):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class IngestThrottled(IngestRefused):
    """Raised by the sink when the tenant is over its rate limit: HTTP 429 + ``Retry-After``, gRPC
    ``RESOURCE_EXHAUSTED`` + ``RetryInfo`` (retryable because RetryInfo is attached)."""


#: The sink: store the request durably and return True, return False when ``dedup_key`` was already seen
#: (a duplicate: the receiver answers success and nothing is stored), or raise :class:`IngestRefused`.
Ingest = Callable[[IngestRequest], Awaitable[bool]]


def dedup_key(tenant: str, signal: Signal, body: bytes) -> bytes:
    """sha256 (32 bytes) over ``tenant``, ``signal`` and the decompressed request body exactly as received.

    Fields are separated by NUL bytes (tenant names cannot contain NUL), so distinct triples never collide by
    concatenation.
    """
    h = hashlib.sha256()
    h.update(tenant.encode())
    h.update(b"\0")
    h.update(signal.value.encode())
    h.update(b"\0")
    h.update(body)
    return h.digest()
