"""The security posture of a configuration, as ``relay check`` prints it: where relay listens, whether callers must
authenticate, whether TLS is on, and how many redaction rules apply."""

from __future__ import annotations

from relay.config_load import RelayConfig
from relay.config_security import is_loopback_host

__all__ = ["security_posture"]


def _tls(tls) -> str:
    if tls is None:
        return "TLS off"
    return f"TLS {tls.min_version}+" + (", mTLS (client_ca_file)" if tls.client_ca_file else "")


def _scope(endpoint: str) -> str:
    return "loopback only" if is_loopback_host(endpoint.rpartition(":")[0]) else "BEYOND LOOPBACK"


def security_posture(cfg: RelayConfig) -> list[str]:
    """Lines (English, no secrets) describing the posture of ``cfg``: one per listener, authentication, redaction."""
    from relay.app import build_redactor

    out = []
    tokens = sum(len(t.tokens) for t in cfg.tenants)
    if tokens:
        auth = f"bearer tokens required ({tokens} token(s) across {sum(1 for t in cfg.tenants if t.tokens)} tenant(s))"
    elif cfg.auth.allow_unauthenticated:
        auth = "OFF (auth.allow_unauthenticated: anyone who can reach the receivers can write)"
    else:
        auth = "off (no tenant tokens; receivers must stay on loopback)"
    proto = cfg.receivers.otlp.protocols
    for name, r in (("OTLP/HTTP", proto.http), ("OTLP/gRPC", proto.grpc)):
        if r.enabled:
            out.append(f"{name} {r.endpoint}: {_scope(r.endpoint)}, {_tls(r.tls)}, auth {auth}")
    if cfg.auth.trust_tenant_header:
        out.append(
            f"tenant header {cfg.auth.tenant_header}: honoured"
            + (f" from {', '.join(cfg.auth.trusted_proxies)}" if cfg.auth.trusted_proxies else " with tokens")
        )
    admin = cfg.service.admin
    if admin.enabled:
        token = "token required" if admin.auth.token else "no token"
        metrics = "/metrics needs the token" if admin.metrics_auth and admin.auth.token else "/metrics open"
        hosts = ", ".join(["loopback", *admin.allowed_hosts])
        out.append(
            f"admin {admin.endpoint}: {_scope(admin.endpoint)}, {_tls(admin.tls)}, {token}, {metrics}, Host: {hosts}"
        )
    red = build_redactor(cfg)
    rules = len(red) if red else 0
    out.append(
        f"redaction: {rules} rule(s) (catalogue {'on' if cfg.pipeline.redaction.catalogue else 'OFF'}, "
        f"{len(cfg.pipeline.redaction.patterns) + len(cfg.pipeline.redact_patterns)} custom, "
        f"{len(cfg.pipeline.redaction.allowlist)} allowlisted value(s))"
    )
    for t in cfg.resolved_tenants():
        limit = f"{t.rate_limit.spans_per_second:g} items/s" if t.rate_limit else "no rate limit"
        out.append(f"tenant {t.name}: spool share {t.max_spool_size} bytes, {limit}")
    return out
