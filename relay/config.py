"""relay's configuration: YAML with ``${env:VAR}`` / ``${file:PATH}`` expansion, validated by pydantic.

Loading a file (``${env:…}``/``${file:…}`` expansion, ``LANGFUSE_*`` defaults, error locations) is in
``relay.config_load``.

The layout follows the OpenTelemetry Collector's config style (``receivers.otlp.protocols.{http,grpc}``,
``exporters.langfuse``, ``service``) so operators recognise it. Secrets are typed as ``SecretStr`` so they are never printed by
``repr`` or logged.

Durations accept Go-style strings (``500ms``, ``30s``, ``5m``, ``1h``) or numbers of seconds.
Sizes accept integers (bytes) or strings with a unit (``64MiB``, ``1GiB``, ``512KB``).
"""

from __future__ import annotations

import base64
import re
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from relay.config_security import (
    AdminAuthConfig,
    RateLimitConfig,
    RedactionConfig,
    TLSClientConfig,
    TLSServerConfig,
    parse_cidrs,
)
from relay.config_types import (
    Duration,
    OptionalSecret,
    OptionalStr,
    Size,
    _Model,
    compiled_patterns,
    parse_duration,
    parse_size,
)

__all__ = ["TenantConfig", "LangfuseConfig", "parse_duration", "parse_size"]


_HOST_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?|)$")


def check_endpoint(v: str) -> str:
    """A listen address ``host:port`` (``[v6]:port``; empty host or ``0.0.0.0`` = all interfaces; port 0..65535,
    0 = any free port). Raises ``ValueError`` naming what is wrong, so ``relay check`` catches what binding would."""
    if "://" in v:
        raise ValueError(
            f"invalid endpoint {v!r}: a listen address is host:port, without a scheme "
            f"(e.g. {v.split('://', 1)[1].split('/')[0] or '0.0.0.0:4318'!r})"
        )
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid endpoint {v!r}: expected host:port with a port from 0 to 65535 (e.g. 0.0.0.0:4318)")
    if not _HOST_RE.match(host):
        raise ValueError(f"invalid endpoint {v!r}: {host!r} is not a host name or IP address")
    return v


class HttpReceiverConfig(_Model):
    """OTLP/HTTP receiver (spec: https://opentelemetry.io/docs/specs/otlp/#otlphttp)."""

    enabled: bool = True
    endpoint: str = "localhost:4318"
    #: TLS (and mTLS with ``client_ca_file``); off when unset.
    tls: TLSServerConfig | None = None
    #: Cap on the request body in bytes, enforced on the wire and after decompression (spec: 413 over it).
    max_request_body_size: Size = 64 * 2**20
    #: Also serve ``/api/public/otel/v1/traces`` so the Langfuse SDKs can use relay as their base URL.
    langfuse_compatible_path: bool = True

    _endpoint = field_validator("endpoint")(classmethod(lambda cls, v: check_endpoint(v)))


class GrpcReceiverConfig(_Model):
    """OTLP/gRPC receiver (spec: https://opentelemetry.io/docs/specs/otlp/#otlpgrpc)."""

    enabled: bool = True
    endpoint: str = "localhost:4317"
    #: TLS (and mTLS with ``client_ca_file``); off when unset.
    tls: TLSServerConfig | None = None
    #: Cap on the (decompressed) message in bytes; over it → RESOURCE_EXHAUSTED.
    max_recv_msg_size: Size = 64 * 2**20

    _endpoint = field_validator("endpoint")(classmethod(lambda cls, v: check_endpoint(v)))

    @field_validator("tls")
    @classmethod
    def _tls_minimum(cls, v: TLSServerConfig | None) -> TLSServerConfig | None:
        """gRPC's Python server cannot raise its TLS minimum above 1.2 (gRPC core's; ``grpc.ssl_server_credentials``
        has no version option: https://grpc.github.io/grpc/python/grpc.html#create-server-credentials): a TLS 1.3
        minimum would not be enforced, so it is refused rather than ignored."""
        if v is not None and v.min_version != "1.2":
            raise ValueError(
                f'min_version "{v.min_version}" cannot be enforced on gRPC (gRPC\'s minimum is TLS 1.2): use "1.2" '
                "here, or put gRPC behind a proxy that enforces it; the HTTP receiver enforces any min_version"
            )
        return v


class OtlpProtocols(_Model):
    """The OTLP receiver's protocols (``receivers.otlp.protocols``)."""

    http: HttpReceiverConfig = HttpReceiverConfig()
    grpc: GrpcReceiverConfig = GrpcReceiverConfig()


class OtlpReceiverConfig(_Model):
    """``receivers.otlp``: the OTLP receiver, Collector style."""

    protocols: OtlpProtocols = OtlpProtocols()


class ReceiversConfig(_Model):
    """``receivers``: where telemetry comes in."""

    otlp: OtlpReceiverConfig = OtlpReceiverConfig()


class AuthConfig(_Model):
    """How a request is assigned to a tenant.

    - With no tokens configured anywhere, every request belongs to ``default_tenant``.
    - With tokens configured, a request must carry ``Authorization: Bearer <token>`` (or, for Langfuse SDK
      clients, Basic auth whose username is a tenant's Langfuse public key and password one of its tokens);
      otherwise 401 and nothing is stored.
    - ``tenant_header`` (e.g. ``X-Relay-Tenant``) names the tenant directly; only honour it behind a
      trusted proxy that sets it, hence ``trust_tenant_header`` must also be true.
    """

    default_tenant: str = "default"
    tenant_header: OptionalStr = None
    trust_tenant_header: bool = False
    #: Accept unauthenticated requests on a receiver listening beyond loopback (logged at every start).
    allow_unauthenticated: bool = False
    #: Peers (CIDRs) whose ``tenant_header`` is honoured when no tenant has tokens; required then.
    trusted_proxies: list[str] = []

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        parse_cidrs(v)
        return v


class RetryConfig(_Model):
    """Exponential backoff with jitter (Collector ``configretry`` names and defaults, but faster start)."""

    initial_interval: Duration = 1.0
    max_interval: Duration = 30.0
    multiplier: float = Field(1.5, ge=1.0)
    randomization_factor: float = Field(0.5, ge=0.0, le=1.0)
    #: Retries of a plain 500 before it is treated as permanent (Langfuse uses 500 for transient storage errors).
    max_500_retries: int = Field(3, ge=0)


class BatchConfig(_Model):
    """Batching of outbound spans into export requests, by size and by time."""

    max_spans: int = Field(512, ge=1)
    max_bytes: Size = 4 * 2**20
    flush_interval: Duration = 0.2


def _base_url(v: str | None) -> str | None:
    """A Langfuse base URL without trailing slash; raises ``ValueError`` without an http(s) scheme."""
    if v is None:
        return v
    if not v.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https:// (e.g. https://cloud.langfuse.com)")
    v = v.rstrip("/")
    for suffix in ("/api/public/otel/v1/traces", "/api/public/otel", "/v1/traces", "/api/public"):
        if v.endswith(suffix):  # the OTLP endpoint of Langfuse's docs: relay appends that path itself
            raise ValueError(
                f"must be the Langfuse host without a path: use {v[: -len(suffix)] or v!r} (relay "
                f"appends /api/public/otel/v1/traces itself), not {v!r}"
            )
    return v


class LangfuseConfig(_Model):
    """One Langfuse project's OTLP endpoint and keys (https://langfuse.com/integrations/native/opentelemetry).

    Export is on when all three of ``base_url``, ``public_key`` and ``secret_key`` are set.
    """

    base_url: OptionalStr = None
    public_key: OptionalSecret = None
    secret_key: OptionalSecret = None
    environment: OptionalStr = None
    release: OptionalStr = None

    @property
    def enabled(self) -> bool:
        """True when the endpoint and both keys are configured."""
        return bool(self.base_url and self.public_key and self.secret_key)

    def authorization(self) -> str:
        """The ``Authorization`` header value for Langfuse's public API and OTLP endpoint: HTTP Basic (RFC 7617)
        with ``public_key:secret_key``, as the Langfuse SDKs send (https://api.reference.langfuse.com,
        authentication). ``ValueError`` when a key is missing. Never log it."""
        if self.public_key is None or self.secret_key is None:
            raise ValueError("Langfuse public_key and secret_key are both needed")
        raw = f"{self.public_key.get_secret_value()}:{self.secret_key.get_secret_value()}"
        return "Basic " + base64.b64encode(raw.encode()).decode("ascii")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _base_url(v)


class LangfuseExporterConfig(_Model):
    """Exporter settings shared by all tenants (each tenant brings its own keys)."""

    timeout: Duration = 30.0
    #: Outbound TLS (private CA, client certificate) for a self-hosted Langfuse.
    tls: TLSClientConfig = TLSClientConfig()
    retry_on_failure: RetryConfig = RetryConfig()
    batch: BatchConfig = BatchConfig()
    #: Batches whose send was interrupted (relay died before Langfuse's answer, or the answer was lost to a timeout
    #: or a dropped connection) are checked against Langfuse's Observations API v2 before anything is re-sent; the
    #: check waits until this long after the send, the time Langfuse needs to make accepted spans readable.
    reconcile_delay: Duration = 10.0
    #: While retrying after connection errors or 5xx, relay probes ``GET /api/public/health`` this often and
    #: resumes as soon as it answers again (instead of waiting out the backoff).
    health_probe_interval: Duration = 0.25
    #: Defaults for tenants that do not override them (embedded default: the ``LANGFUSE_*`` env vars).
    base_url: OptionalStr = None
    public_key: OptionalSecret = None
    secret_key: OptionalSecret = None
    environment: OptionalStr = None
    release: OptionalStr = None

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _base_url(v)


class ExportersConfig(_Model):
    """``exporters``: where telemetry goes out (Langfuse)."""

    langfuse: LangfuseExporterConfig = LangfuseExporterConfig()


class IdentityConfig(_Model):
    """How Langfuse user ids, metadata and tags are derived from record/resource attributes.

    ``user_attributes`` is a precedence list; the first attribute present wins. Claude Code's ``user.id`` is an
    anonymous installation hash, so by default it is the last resort.
    """

    user_attributes: list[str] = ["enduser.id", "user.email", "user.account_uuid", "user.id"]
    metadata_attributes: list[str] = ["team.id", "department", "cost_center", "organization.id", "service.version"]
    tag_attributes: list[str] = ["team.id", "department"]


class PipelineConfig(_Model):
    """The pipeline that turns agent telemetry into Langfuse traces."""

    #: A Claude Code interaction (or a GenAI trace) is closed and exported after this long without new records.
    idle_timeout: Duration = 10.0
    #: After the root span of a trace arrived, wait this long for stragglers (late logs, async subagents). Both
    #: waits count from when relay received the records: in a backlog a trace closes once the pipeline has read
    #: what arrived up to its deadline (``relay.pipeline.assembler``).
    root_grace: Duration = 2.0
    #: Records held in traces still assembling; beyond it (a backlog) the oldest traces are closed early and
    #: reading pauses, which bounds memory. Late records still join their trace through deterministic ids.
    max_open_records: int = Field(200_000, ge=1)
    #: Resident memory bound (bytes, or "256MiB"; 0 = off): at 80 % of it relay forces a garbage collection,
    #: answers new data with 503 + Retry-After and stops reading requests into memory until it is back under
    #: (the OpenTelemetry Collector's memory_limiter semantics; ``relay.runtime``).
    memory_limit: Size = 256 * 2**20
    #: Forward prompts, responses and tool parameters when the agent sent them (Claude Code only sends them
    #: with OTEL_LOG_USER_PROMPTS / OTEL_LOG_TOOL_DETAILS).
    forward_content: bool = True
    #: Extra regexes whose matches are replaced by ``[REDACTED]`` in forwarded content (the secret catalogue of
    #: ``redaction`` already covers the common formats everywhere; these also apply before the spool).
    redact_patterns: list[str] = []
    #: Secret redaction of every forwarded string, before the spool (``relay.redaction``).
    redaction: RedactionConfig = RedactionConfig()
    environment: OptionalStr = None
    release: OptionalStr = None
    identity: IdentityConfig = IdentityConfig()

    @field_validator("redact_patterns")
    @classmethod
    def _compile(cls, v: list[str]) -> list[str]:
        return compiled_patterns(v)


class StorageConfig(_Model):
    """Where relay keeps its durable state (spool, dedup keys, ledger)."""

    #: Directory of the SQLite database; in a config file, relative paths are relative to the file's directory.
    directory: str = "./data"
    #: fsync every commit (survives power loss). Off: survives process crashes (kill -9), not power loss.
    fsync: bool = False
    #: Upper bound of spooled data (inbound not yet processed + outbound not yet exported), in bytes.
    #: Beyond it receivers answer 503 with Retry-After instead of dropping.
    max_spool_size: Size = 2 * 2**30
    #: Free space kept on the file system of ``directory``, in bytes: below it receivers answer 503 with
    #: Retry-After, so exports (whose deletes need room) and the pipeline can still write and drain the spool.
    #: Admission reopens by itself when space is back. 0 disables the check.
    min_free_space: Size = 64 * 2**20
    #: How long exported observation ids and trace metadata are remembered (late records of a trace exported
    #: earlier reuse them; a replay of old data within this window is not exported twice). Request hashes (for
    #: byte-identical client retries) are kept for at most an hour.
    dedup_retention: Duration = 86400.0


class AdminConfig(_Model):
    """The admin HTTP endpoint: /metrics, /healthz, /readyz, the alert/silence API (``relay.admin_security``)."""

    enabled: bool = True
    endpoint: str = "127.0.0.1:8888"
    #: Bearer token required on every endpoint but /healthz, /readyz (and /metrics unless ``metrics_auth``).
    auth: AdminAuthConfig = AdminAuthConfig()
    #: Also require the token on /metrics.
    metrics_auth: bool = False
    #: ``Host`` names accepted besides loopback ones (DNS-rebinding guard), e.g. ``[relay.internal]``.
    allowed_hosts: list[str] = []
    tls: TLSServerConfig | None = None

    _endpoint = field_validator("endpoint")(classmethod(lambda cls, v: check_endpoint(v)))


class LogConfig(_Model):
    """``service.log``: relay's own log level and format."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    #: ``auto``: JSON when stderr is not a terminal, text otherwise.
    format: Literal["auto", "json", "text"] = "auto"


class ServiceConfig(_Model):
    """``service``: relay's own admin endpoint, logs and shutdown."""

    admin: AdminConfig = AdminConfig()
    log: LogConfig = LogConfig()
    #: Seconds SIGTERM waits for in-flight work (pipeline, exports) before exiting.
    shutdown_timeout: Duration = 10.0
    #: The asyncio event loop, like uvicorn's ``--loop``: ``auto`` is uvloop (libuv, https://github.com/MagicStack/
    #: uvloop) where it is installed (a dependency except on Windows), else asyncio's own; ``uvloop`` requires it.
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"


class TenantConfig(_Model):
    """A tenant: who may send (bearer tokens) and where its data goes (its own Langfuse project).

    ``tokens`` are secrets; write them as ``${env:…}`` or ``${file:…}`` references.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    tokens: list[SecretStr] = []
    langfuse: LangfuseConfig = LangfuseConfig()
    #: Extra labels attached to this tenant's ledger records and traces (e.g. ``{org: acme}``).
    labels: dict[str, str] = {}
    #: This tenant's share of the spool in bytes; default: ``storage.max_spool_size`` / number of tenants.
    max_spool_size: Size | None = None
    #: Items per second accepted from this tenant (429 + Retry-After over it); unlimited when unset.
    rate_limit: RateLimitConfig | None = None

    @field_validator("tokens", mode="before")
    @classmethod
    def _drop_empty(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [t for t in v if t is not None and not (isinstance(t, str) and t.strip() == "")]
        return v
