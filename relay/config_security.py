"""Security-related config models: TLS (the OpenTelemetry Collector's ``configtls`` keys), admin API auth,
per-tenant rate limits, redaction, and the loopback test used by the "closed by default" rules.

``configtls`` reference: https://github.com/open-telemetry/opentelemetry-collector/blob/main/config/configtls/README.md
(server: ``cert_file``, ``key_file``, ``client_ca_file``, ``min_version``, ``reload_interval``; client:
``ca_file``, ``insecure_skip_verify``, ``cert_file``, ``key_file``).
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from relay.config_types import Duration, OptionalSecret, OptionalStr, _Model, compiled_patterns

__all__ = [
    "TLSServerConfig",
    "TLSClientConfig",
    "AdminAuthConfig",
    "RateLimitConfig",
    "RedactionConfig",
    "is_loopback_host",
    "parse_cidrs",
]


class TLSServerConfig(_Model):
    """TLS of a listener. ``cert_file``/``key_file`` are PEM files; with ``client_ca_file`` clients must present
    a certificate signed by that CA (mTLS). The files are re-read when they change, checked every
    ``reload_interval`` (0 = never)."""

    cert_file: str
    key_file: str
    client_ca_file: OptionalStr = None
    min_version: Literal["1.2", "1.3"] = "1.2"
    reload_interval: Duration = 60.0


class TLSClientConfig(_Model):
    """TLS of relay's own outbound connections (``exporters.langfuse.tls`` for every connection to Langfuse: export,
    scores, the public API proxy, link lookups, ``relay check --probe``, ``relay report``; each notifier has its
    own): a private CA (``ca_file``), a client certificate (``cert_file``/``key_file``), or — for tests only —
    ``insecure_skip_verify``."""

    ca_file: OptionalStr = None
    cert_file: OptionalStr = None
    key_file: OptionalStr = None
    insecure_skip_verify: bool = False


class AdminAuthConfig(_Model):
    """``service.admin.auth``: the bearer token the admin API requires (write ``${env:RELAY_ADMIN_TOKEN}`` or
    ``${file:…}``). Unset = no token (then the admin endpoint may only listen on loopback)."""

    token: OptionalSecret = None


class RateLimitConfig(_Model):
    """``tenants[].rate_limit``: a token bucket in items (spans, log records, data points) per second; over it
    receivers answer 429 + ``Retry-After`` (gRPC ``RESOURCE_EXHAUSTED`` + ``RetryInfo``)."""

    spans_per_second: float = Field(gt=0)
    #: Bucket size in items; default: one second's worth.
    burst: int | None = Field(None, ge=1)


class RedactionConfig(_Model):
    """``pipeline.redaction``: secret redaction applied to every string of every accepted request before it is
    spooled (``relay.redaction``)."""

    #: The built-in secret catalogue (a subset of gitleaks' rules plus relay's own), on by default.
    catalogue: bool = True
    #: Extra regexes (Python ``re``), each a rule named ``custom-<n>``; the whole match is replaced.
    patterns: list[str] = []
    #: Values never redacted (exact matched text), e.g. a well-known test key.
    allowlist: list[str] = []

    @field_validator("patterns")
    @classmethod
    def _compile(cls, v: list[str]) -> list[str]:
        return compiled_patterns(v)


def is_loopback_host(host: str) -> bool:
    """True when ``host`` (of a listen endpoint) only accepts connections from this machine: ``localhost``,
    127.0.0.0/8 or ::1. ``0.0.0.0``, ``::``, an empty host and any other name or address are not."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def parse_cidrs(values: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Parse CIDRs (``10.0.0.0/8``, a bare address = one host). Raises ``ValueError`` naming a bad entry."""
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(v.strip(), strict=False))
        except ValueError:
            raise ValueError(f"invalid CIDR {v!r} in auth.trusted_proxies (e.g. 10.0.0.0/8)") from None
    return out
